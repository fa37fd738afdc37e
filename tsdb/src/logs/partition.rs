//! One time partition of the log store: sealed chunks appended to `chunks.dat`, and a tantivy index with a
//! document per chunk (stream labels as `name=value` terms, the chunk's distinct tokens, its time span as
//! fast fields, its offset in `chunks.dat`). Each commit records, per stream, the highest write-ahead log
//! sequence the partition's chunks hold (the commit payload), so a replay skips what is already here.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tantivy::collector::DocSetCollector;
use tantivy::query::Query;
use tantivy::schema::{FAST, Field, INDEXED, IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions};
use tantivy::store::Compressor;
use tantivy::tokenizer::{PreTokenizedString, Token};
use tantivy::{Index, IndexReader, IndexSettings, IndexWriter, ReloadPolicy, Searcher, TantivyDocument};

use super::head::Sealed;
use crate::Error;

const CHUNKS_FILE: &str = "chunks.dat";
/// Memory the tantivy writer may use before it flushes a segment.
const WRITER_MEMORY: usize = 32 * 1024 * 1024;

/// The fields of a partition's index.
#[derive(Clone, Copy)]
pub(super) struct Fields {
    pub label: Field,
    pub body: Field,
    pub min_ts: Field,
    pub max_ts: Field,
    pub offset: Field,
    /// The length of the chunk's longest identifier.
    pub longest_identifier: Field,
}

pub(super) fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let label = builder.add_text_field("label", STRING);
    let body_options = TextOptions::default()
        .set_indexing_options(TextFieldIndexing::default().set_index_option(IndexRecordOption::Basic));
    let body = builder.add_text_field("body", body_options);
    let min_ts = builder.add_i64_field("min_ts", FAST);
    let max_ts = builder.add_i64_field("max_ts", FAST);
    let offset = builder.add_u64_field("offset", FAST);
    let longest_identifier = builder.add_u64_field("longest_identifier", INDEXED);
    (builder.build(), Fields { label, body, min_ts, max_ts, offset, longest_identifier })
}

pub(super) fn tantivy_error(dir: &Path, error: impl std::fmt::Display) -> Error {
    Error::Io { path: dir.to_owned(), source: std::io::Error::other(error.to_string()) }
}

/// An open partition.
pub(super) struct Partition {
    pub dir: PathBuf,
    index: Index,
    reader: IndexReader,
    writer: Option<IndexWriter>,
    chunks: Arc<File>,
    chunks_len: u64,
    dirty: bool,
    /// Per stream key, the highest sequence this partition's chunks hold (committed or not).
    flushed: HashMap<u64, u64>,
    /// The same, as of the last commit.
    committed: HashMap<u64, u64>,
    /// Whether the reader has yet to see the last commit.
    stale_reader: bool,
}

/// What a query reads a partition through, without the store's lock: its chunks as of a commit.
#[derive(Clone)]
pub(super) struct Snapshot {
    pub dir: PathBuf,
    pub searcher: Searcher,
    pub chunks: Arc<File>,
    /// The length of `chunks.dat` when the snapshot was taken: every chunk the searcher finds ends before.
    pub chunks_len: u64,
}

impl Partition {
    pub(super) fn open(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let (schema, _) = schema();
        let directory = tantivy::directory::MmapDirectory::open(dir).map_err(|e| tantivy_error(dir, e))?;
        // Nothing is stored in tantivy (chunks live in `chunks.dat`, already compressed).
        let settings = IndexSettings { docstore_compression: Compressor::None, ..IndexSettings::default() };
        let existing = Index::exists(&directory).map_err(|e| tantivy_error(dir, e))?;
        let index = if existing { Index::open(directory) } else { Index::create(directory, schema, settings) };
        let index = index.map_err(|e| tantivy_error(dir, e))?;
        let reader =
            index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(|e| tantivy_error(dir, e))?;
        let payload = index.load_metas().map_err(|e| tantivy_error(dir, e))?.payload;
        let flushed = match payload.as_deref().map(serde_json::from_str::<HashMap<String, u64>>) {
            None => HashMap::new(),
            Some(Ok(map)) => {
                map.into_iter().filter_map(|(k, v)| Some((u64::from_str_radix(&k, 16).ok()?, v))).collect()
            }
            Some(Err(error)) => return Err(tantivy_error(dir, format!("unreadable commit payload: {error}"))),
        };
        let path = dir.join(CHUNKS_FILE);
        let chunks = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let chunks_len = chunks.metadata().map_err(|e| Error::io(&path, e))?.len();
        Ok(Partition {
            dir: dir.to_owned(),
            index,
            reader,
            writer: None,
            chunks: Arc::new(chunks),
            chunks_len,
            dirty: false,
            committed: flushed.clone(),
            flushed,
            stale_reader: false,
        })
    }

    /// The highest sequence this partition holds for a stream.
    pub(super) fn flushed(&self, stream_key: u64) -> u64 {
        self.flushed.get(&stream_key).copied().unwrap_or(0)
    }

    /// The highest sequence any stream's chunks hold here.
    pub(super) fn highest_flushed(&self) -> u64 {
        self.flushed.values().copied().max().unwrap_or(0)
    }

    fn writer(&mut self) -> Result<&mut IndexWriter, Error> {
        if self.writer.is_none() {
            let writer =
                self.index.writer_with_num_threads(1, WRITER_MEMORY).map_err(|e| tantivy_error(&self.dir, e))?;
            self.writer = Some(writer);
        }
        Ok(self.writer.as_mut().expect("set above"))
    }

    /// Appends a sealed chunk and its document (searchable after the next commit).
    pub(super) fn add(&mut self, fields: &Fields, sealed: Sealed) -> Result<(), Error> {
        let path = self.dir.join(CHUNKS_FILE);
        self.chunks.write_all_at(&sealed.entry, self.chunks_len).map_err(|e| Error::io(&path, e))?;
        let offset = self.chunks_len;
        self.chunks_len += sealed.entry.len() as u64;
        let mut doc = TantivyDocument::default();
        for (name, value) in sealed.labels.iter() {
            doc.add_text(fields.label, format!("{name}={value}"));
        }
        let tokens = sealed
            .terms
            .into_iter()
            .enumerate()
            .map(|(position, text)| Token { offset_from: 0, offset_to: 0, position, text, position_length: 1 })
            .collect();
        doc.add_pre_tokenized_text(fields.body, PreTokenizedString { text: String::new(), tokens });
        doc.add_i64(fields.min_ts, sealed.min_ns);
        doc.add_i64(fields.max_ts, sealed.max_ns);
        doc.add_u64(fields.offset, offset);
        doc.add_u64(fields.longest_identifier, sealed.longest_identifier as u64);
        let dir = self.dir.clone();
        self.writer()?.add_document(doc).map_err(|e| tantivy_error(&dir, e))?;
        let flushed = self.flushed.entry(sealed.stream_key).or_default();
        *flushed = (*flushed).max(sealed.max_seq);
        self.dirty = true;
        Ok(())
    }

    /// Syncs the chunks, then commits the index with the flushed sequences, and reloads the reader. On
    /// failure the chunks added since the last commit are forgotten (their bytes stay unreferenced in
    /// `chunks.dat`): the caller adds them again. A reader that fails to reload is logged and reloaded at
    /// the next commit; what was committed stays committed.
    pub(super) fn commit(&mut self) -> Result<(), Error> {
        if self.dirty {
            if let Err(error) = self.write_commit() {
                self.writer = None;
                self.flushed = self.committed.clone();
                self.dirty = false;
                return Err(error);
            }
            self.committed = self.flushed.clone();
            self.dirty = false;
            self.stale_reader = true;
        }
        if self.stale_reader {
            match self.reader.reload() {
                Ok(()) => self.stale_reader = false,
                Err(error) => tracing::warn!(dir = %self.dir.display(), %error, "log partition reader not reloaded"),
            }
        }
        Ok(())
    }

    fn write_commit(&mut self) -> Result<(), Error> {
        self.chunks.sync_data().map_err(|e| Error::io(self.dir.join(CHUNKS_FILE), e))?;
        let payload: HashMap<String, u64> = self.flushed.iter().map(|(k, v)| (format!("{k:016x}"), *v)).collect();
        let payload = serde_json::to_string(&payload).expect("a map serializes");
        let dir = self.dir.clone();
        let writer = self.writer()?;
        let mut prepared = writer.prepare_commit().map_err(|e| tantivy_error(&dir, e))?;
        prepared.set_payload(&payload);
        prepared.commit().map_err(|e| tantivy_error(&dir, e))?;
        Ok(())
    }

    /// Waits for the writer's background merges (and drops the writer, reopened at the next write).
    pub(super) fn settle(&mut self) -> Result<(), Error> {
        if let Some(writer) = self.writer.take() {
            writer.wait_merging_threads().map_err(|e| tantivy_error(&self.dir, e))?;
        }
        Ok(())
    }

    pub(super) fn snapshot(&self) -> Snapshot {
        Snapshot {
            dir: self.dir.clone(),
            searcher: self.reader.searcher(),
            chunks: self.chunks.clone(),
            chunks_len: self.chunks_len,
        }
    }
}

/// Where a chunk is, and the time span of its records.
#[derive(Debug, Clone, Copy)]
pub(super) struct ChunkRef {
    pub offset: u64,
    pub min_ns: i64,
    pub max_ns: i64,
}

impl Snapshot {
    /// The chunks `query` matches, by offset in `chunks.dat`.
    pub(super) fn chunks(&self, query: &dyn Query) -> Result<Vec<ChunkRef>, Error> {
        let found = self.searcher.search(query, &DocSetCollector).map_err(|e| tantivy_error(&self.dir, e))?;
        let mut by_segment: HashMap<u32, Vec<u32>> = HashMap::new();
        for address in found {
            by_segment.entry(address.segment_ord).or_default().push(address.doc_id);
        }
        let mut chunks = Vec::new();
        let column_error = |e| tantivy_error(&self.dir, e);
        for (segment, docs) in by_segment {
            let fast = self.searcher.segment_reader(segment).fast_fields();
            let (offset, min_ns, max_ns) = (
                fast.u64("offset").map_err(column_error)?,
                fast.i64("min_ts").map_err(column_error)?,
                fast.i64("max_ts").map_err(column_error)?,
            );
            chunks.extend(docs.into_iter().filter_map(|doc| {
                Some(ChunkRef { offset: offset.first(doc)?, min_ns: min_ns.first(doc)?, max_ns: max_ns.first(doc)? })
            }));
        }
        chunks.sort_unstable_by_key(|c| c.offset);
        Ok(chunks)
    }

    /// The entry at `offset` (its checksum and the rest, after the length); empty, which no entry is, when
    /// its length is damaged and runs past the file.
    pub(super) fn entry(&self, offset: u64) -> Result<Vec<u8>, Error> {
        let path = || self.dir.join(CHUNKS_FILE);
        let mut len = [0u8; 4];
        self.chunks.read_exact_at(&mut len, offset).map_err(|e| Error::io(path(), e))?;
        let len = u64::from(u32::from_le_bytes(len)) + 4;
        if offset + 4 + len > self.chunks_len {
            return Ok(Vec::new());
        }
        let mut entry = vec![0u8; len as usize];
        self.chunks.read_exact_at(&mut entry, offset + 4).map_err(|e| Error::io(path(), e))?;
        Ok(entry)
    }
}
