//! Heads: the records of one stream in one partition not yet sealed into a chunk, held in memory (and in
//! the write-ahead log) and searched there. A head is sealed once it holds enough text or is old enough.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use super::chunk::{ChunkRecord, Parts, bloom, compress, encode_columns, encode_entry, put_pairs, stable_hash};
use super::shapes::{self, Shaped};
use super::tokenizer::{is_high_cardinality, lowered, runs};
use super::wal::{self, WalRecord};
use super::{LogRecord, Matcher};
use crate::Error;

/// A stream's label set, shared by its heads and the records read from them.
pub(super) type StreamLabels = Arc<BTreeMap<String, String>>;

/// The key a stream's flushed sequence is kept under: a stable hash of its encoded labels.
pub(super) fn stream_key(labels: &BTreeMap<String, String>) -> u64 {
    let mut encoded = Vec::with_capacity(64);
    put_pairs(&mut encoded, labels);
    stable_hash(&encoded)
}

struct HeadRecord {
    ts_ns: i64,
    end: usize,
    metadata: BTreeMap<String, String>,
}

/// One stream's unsealed records in one partition.
pub(super) struct Head {
    pub labels: StreamLabels,
    text: String,
    records: Vec<HeadRecord>,
    pub min_ns: i64,
    pub max_ns: i64,
    /// The highest write-ahead log sequence among the records.
    pub max_seq: u64,
    pub opened: Instant,
}

/// A head sealed into a chunk entry, with what the index needs.
pub(super) struct Sealed {
    pub labels: StreamLabels,
    pub stream_key: u64,
    pub min_ns: i64,
    pub max_ns: i64,
    pub max_seq: u64,
    /// The chunk's distinct dictionary tokens.
    pub terms: Vec<String>,
    /// The length of its longest identifier (0 without any).
    pub longest_identifier: usize,
    /// The framed entry for `chunks.dat`.
    pub entry: Vec<u8>,
}

impl Head {
    pub(super) fn new(labels: StreamLabels) -> Self {
        Head {
            labels,
            text: String::new(),
            records: Vec::new(),
            min_ns: i64::MAX,
            max_ns: i64::MIN,
            max_seq: 0,
            opened: Instant::now(),
        }
    }

    pub(super) fn push(&mut self, record: &LogRecord, seq: u64) {
        self.text.push_str(&record.line);
        self.records.push(HeadRecord { ts_ns: record.ts_ns, end: self.text.len(), metadata: record.metadata.clone() });
        self.min_ns = self.min_ns.min(record.ts_ns);
        self.max_ns = self.max_ns.max(record.ts_ns);
        self.max_seq = self.max_seq.max(seq);
    }

    /// Bytes of line text held.
    pub(super) fn text_bytes(&self) -> usize {
        self.text.len()
    }

    fn chunk_records(&self) -> impl ExactSizeIterator<Item = ChunkRecord<'_>> {
        let mut start = 0;
        self.records.iter().map(move |r| {
            let line = &self.text[start..r.end];
            start = r.end;
            ChunkRecord { ts_ns: r.ts_ns, line, metadata: &r.metadata }
        })
    }

    /// Copies the records in `[start_ns, end_ns)` whose lines contain every string of `contains` to `out`.
    pub(super) fn matching(&self, start_ns: i64, end_ns: i64, contains: &[String], out: &mut Vec<LogRecord>) {
        if self.max_ns < start_ns || self.min_ns >= end_ns {
            return;
        }
        for record in self.chunk_records() {
            if (start_ns..end_ns).contains(&record.ts_ns) && contains.iter().all(|c| record.line.contains(c.as_str())) {
                out.push(LogRecord {
                    ts_ns: record.ts_ns,
                    labels: (*self.labels).clone(),
                    line: record.line.to_owned(),
                    metadata: record.metadata.clone(),
                    position: None,
                });
            }
        }
    }

    /// Whether the stream matches every matcher.
    pub(super) fn selected(&self, matchers: &[Matcher]) -> bool {
        matchers.iter().all(|m| m.matches(self.labels.get(&m.name).map_or("", String::as_str)))
    }

    /// A write-ahead log frame holding the records (under the head's highest sequence), for a rewrite.
    pub(super) fn frame(&self) -> Vec<u8> {
        wal::frame(
            self.max_seq,
            self.chunk_records().map(|r| WalRecord {
                ts_ns: r.ts_ns,
                labels: &self.labels,
                line: r.line,
                metadata: r.metadata,
                position: None,
            }),
        )
    }

    /// Seals the records into a compressed chunk entry with its tokens.
    pub(super) fn seal(&self, encoder: &mut zstd::stream::raw::Encoder<'_>) -> Result<Sealed, Error> {
        let records: Vec<ChunkRecord<'_>> = self.chunk_records().collect();
        let shaped = shapes::shape(records.iter().map(|r| r.line));
        let mut columns = Parts::default();
        columns.bytes.reserve(self.text.len() + records.len() * 4);
        encode_columns(&records, &shaped, &mut columns);
        let compressed = compress(encoder, &columns).map_err(|e| Error::Io { path: "log chunk".into(), source: e })?;
        let (terms, hashes, longest_identifier) = distinct_tokens(&shaped);
        let mut labels = Vec::with_capacity(64);
        put_pairs(&mut labels, &self.labels);
        Ok(Sealed {
            stream_key: stable_hash(&labels),
            entry: encode_entry(&labels, &bloom(&hashes), columns.bytes.len(), &compressed),
            labels: self.labels.clone(),
            min_ns: self.min_ns,
            max_ns: self.max_ns,
            max_seq: self.max_seq,
            terms,
            longest_identifier,
        })
    }
}

/// The distinct tokens of the shaped lines: dictionary tokens, the hashes of identifiers (for the Bloom
/// filter), and the length of the longest identifier. A line's tokens are its shape's runs and its
/// variables (each one whole run), so each shape is tokenized once and each distinct value once.
fn distinct_tokens(shaped: &Shaped<'_>) -> (Vec<String>, Vec<u64>, usize) {
    let mut borrowed: HashSet<&str, foldhash::fast::FixedState> = HashSet::default();
    let mut owned: HashSet<String, foldhash::fast::FixedState> = HashSet::default();
    for shape in &shaped.shapes {
        for (from, to) in runs(&shape.text) {
            owned.insert(lowered(&shape.text[from..to]).into_owned());
        }
    }
    for value in shaped.values.iter().flatten().flatten() {
        match lowered(value) {
            Cow::Borrowed(token) => {
                borrowed.insert(token);
            }
            Cow::Owned(token) => {
                owned.insert(token);
            }
        }
    }
    let all: HashSet<&str, foldhash::fast::FixedState> =
        borrowed.into_iter().chain(owned.iter().map(String::as_str)).collect();
    let (mut terms, mut hashes, mut longest) = (Vec::new(), Vec::new(), 0);
    for token in all {
        if is_high_cardinality(token) {
            hashes.push(stable_hash(token.as_bytes()));
            longest = longest.max(token.len());
        } else {
            terms.push(token.to_owned());
        }
    }
    (terms, hashes, longest)
}
