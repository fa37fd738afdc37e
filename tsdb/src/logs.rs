//! The log store: records (time, stream labels, line, structured metadata) in tantivy indexes, one per time
//! partition. Stream labels are indexed as `name=value` terms, lines with a tokenizer for logs
//! ([`tokenizer`]), time as a fast field. Appends go to a write-ahead log first (fsynced before they are
//! acknowledged); a background commit makes them searchable within a second and empties the log. A crash
//! loses nothing acknowledged: the log is replayed into the indexes on open. Retention drops whole
//! partitions, by age and by total size. Records that carry a [`SourcePosition`] and that the store
//! already has are dropped ([`replays`]).

mod replays;
mod tokenizer;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tantivy::collector::DocSetCollector;
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, RegexQuery, TermQuery};
use tantivy::schema::{FAST, Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value};
use tantivy::store::{Compressor, ZstdCompressor};
use tantivy::{Index, IndexReader, IndexSettings, IndexWriter, ReloadPolicy, TantivyDocument, Term};

pub use tokenizer::{LogTokenizer, TokenSpan, tokens};

use crate::{Error, Labels, MatchOp, Matcher};

/// One log record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Nanoseconds since the epoch.
    pub ts_ns: i64,
    /// The stream's labels.
    pub labels: BTreeMap<String, String>,
    /// The line.
    pub line: String,
    /// Structured metadata (trace_id, span_id, level, attributes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Where a shipper that may send it again read it from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<SourcePosition>,
}

/// Where a record was read from: its source file (a key that stays the same across rotations) and its
/// byte offset there. Per stream and source, a record below the offset past the last one stored is a
/// replay, and is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    /// The source file's key.
    pub source: u64,
    /// The record's byte offset in it.
    pub offset: u64,
}

impl LogRecord {
    /// The stream labels as a label set.
    pub fn stream(&self) -> Labels {
        Labels::new(self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap_or_default()
    }
}

/// What to read: streams matching every matcher, `[start_ns, end_ns)`, lines containing every string of
/// `contains` (exactly, case-sensitive), newest first when `backward`, at most `limit`.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Stream selector.
    pub matchers: Vec<Matcher>,
    /// Inclusive start.
    pub start_ns: i64,
    /// Exclusive end.
    pub end_ns: i64,
    /// Substrings every line must contain; the index narrows the candidates, the check is exact.
    pub contains: Vec<String>,
    /// Most records returned.
    pub limit: Option<usize>,
    /// Newest first.
    pub backward: bool,
}

/// Where logs are kept and searched.
pub trait LogStore: Send + Sync {
    /// Stores records durably; when this returns they are acknowledged.
    fn append(&self, records: &[LogRecord]) -> Result<(), Error>;
    /// Records matching `query`, in time order (or reverse).
    fn select(&self, query: &LogQuery) -> Result<Vec<LogRecord>, Error>;
    /// Hands every record matching `query` to `visit`, in no particular order, without holding them all
    /// (`limit` and `backward` do not apply): what metric queries read.
    fn scan(&self, query: &LogQuery, visit: &mut dyn FnMut(LogRecord)) -> Result<(), Error> {
        self.select(&LogQuery { limit: None, ..query.clone() })?.into_iter().for_each(visit);
        Ok(())
    }
    /// Label names of streams with records in the range, sorted.
    fn label_names(&self, start_ns: i64, end_ns: i64) -> Result<Vec<String>, Error>;
    /// Values of one label in the range, sorted.
    fn label_values(&self, name: &str, start_ns: i64, end_ns: i64) -> Result<Vec<String>, Error>;
    /// Distinct streams matching `matchers` in the range.
    fn streams(&self, matchers: &[Matcher], start_ns: i64, end_ns: i64)
    -> Result<Vec<BTreeMap<String, String>>, Error>;
}

/// The fields of the index.
#[derive(Clone, Copy)]
struct Fields {
    ts: Field,
    label: Field,
    line: Field,
    record: Field,
}

/// How the log store partitions and expires data.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Time span of one partition (one tantivy index), in nanoseconds.
    pub partition_ns: i64,
    /// Partitions wholly older than this (before now) are dropped; `None` keeps everything.
    pub retention_ns: Option<i64>,
    /// While partitions take more bytes than this, the oldest are dropped; `None` for no limit.
    pub max_bytes: Option<u64>,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions { partition_ns: 24 * 3600 * 1_000_000_000, retention_ns: None, max_bytes: None }
    }
}

/// Tantivy-backed [`LogStore`] under one directory: one index per time partition
/// (`partitions/<start-ns>/`), one write-ahead log for all.
pub struct LogIndex {
    dir: PathBuf,
    fields: Fields,
    options: LogOptions,
    state: Mutex<State>,
}

struct State {
    partitions: BTreeMap<i64, Partition>,
    wal: std::fs::File,
    pending: usize,
    /// Every stream with the time span of its records: what the label APIs read.
    streams: BTreeMap<BTreeMap<String, String>, (i64, i64)>,
    streams_changed: bool,
    replays: replays::Replays,
}

/// One entry of `streams.json`.
#[derive(Serialize, Deserialize)]
struct StreamSpan {
    labels: BTreeMap<String, String>,
    first_ns: i64,
    last_ns: i64,
}

struct Partition {
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    writer: Option<IndexWriter>,
    dirty: bool,
}

impl Partition {
    fn open(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let (schema, _) = schema();
        let directory = tantivy::directory::MmapDirectory::open(dir).map_err(|e| tantivy_error(dir, e))?;
        // Stored records compress well in large zstd blocks (log lines repeat their shapes).
        let settings = IndexSettings {
            docstore_compression: Compressor::Zstd(ZstdCompressor { compression_level: Some(DOCSTORE_LEVEL) }),
            docstore_blocksize: DOCSTORE_BLOCK,
            ..IndexSettings::default()
        };
        // A partition written by an earlier version keeps the schema it was created with (its fields have
        // the same numbers; only their index options differ).
        let existing = Index::exists(&directory).map_err(|e| tantivy_error(dir, e))?;
        let index = if existing { Index::open(directory) } else { Index::create(directory, schema, settings) };
        let index = index.map_err(|e| tantivy_error(dir, e))?;
        index.tokenizers().register(TOKENIZER, tantivy::tokenizer::TextAnalyzer::from(LogTokenizer));
        let reader =
            index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(|e| tantivy_error(dir, e))?;
        Ok(Partition { dir: dir.to_owned(), index, reader, writer: None, dirty: false })
    }

    fn writer(&mut self) -> Result<&mut IndexWriter, Error> {
        if self.writer.is_none() {
            let writer =
                self.index.writer_with_num_threads(1, WRITER_MEMORY).map_err(|e| tantivy_error(&self.dir, e))?;
            self.writer = Some(writer);
        }
        Ok(self.writer.as_mut().expect("set above"))
    }

    /// Waits for the writer's background merges (and drops the writer, reopened at the next write).
    fn settle(&mut self) -> Result<(), Error> {
        if let Some(writer) = self.writer.take() {
            writer.wait_merging_threads().map_err(|e| tantivy_error(&self.dir, e))?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), Error> {
        if !self.dirty {
            return Ok(());
        }
        if let Some(writer) = self.writer.as_mut() {
            writer.commit().map_err(|e| tantivy_error(&self.dir, e))?;
        }
        self.reader.reload().map_err(|e| tantivy_error(&self.dir, e))?;
        self.dirty = false;
        Ok(())
    }
}

const WAL_FILE: &str = "wal.jsonl";
const DOCSTORE_LEVEL: i32 = 7;
const DOCSTORE_BLOCK: usize = 1024 * 1024;
const STREAMS_FILE: &str = "streams.json";
const REPLAYS_FILE: &str = "positions.json";
const TOKENIZER: &str = "vigil_log";
/// Memory one partition's tantivy writer may use before it flushes a segment.
const WRITER_MEMORY: usize = 32 * 1024 * 1024;

fn tantivy_error(dir: &Path, error: impl std::fmt::Display) -> Error {
    Error::Io { path: dir.to_owned(), source: std::io::Error::other(error.to_string()) }
}

impl LogIndex {
    /// Opens (or creates) the store under `dir` with default options, replaying the write-ahead log.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        Self::open_with(dir, LogOptions::default())
    }

    /// Opens (or creates) the store under `dir`, replaying the write-ahead log.
    pub fn open_with(dir: &Path, options: LogOptions) -> Result<Self, Error> {
        let partitions_dir = dir.join("partitions");
        std::fs::create_dir_all(&partitions_dir).map_err(|e| Error::io(&partitions_dir, e))?;
        let (_, fields) = schema();
        let mut partitions = BTreeMap::new();
        for entry in std::fs::read_dir(&partitions_dir).map_err(|e| Error::io(&partitions_dir, e))? {
            let path = entry.map_err(|e| Error::io(&partitions_dir, e))?.path();
            let Some(start) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<i64>().ok()) else {
                continue;
            };
            partitions.insert(start, Partition::open(&path)?);
        }
        let wal_path = dir.join(WAL_FILE);
        let replayed = replay(&wal_path)?;
        let wal = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&wal_path)
            .map_err(|e| Error::io(&wal_path, e))?;
        let streams = read_streams(&dir.join(STREAMS_FILE));
        let replays = replays::Replays::read(&dir.join(REPLAYS_FILE));
        let state = State { partitions, wal, pending: 0, streams, streams_changed: false, replays };
        let store = LogIndex { dir: dir.to_owned(), fields, options, state: Mutex::new(state) };
        if !replayed.is_empty() {
            let (records, jsons): (Vec<LogRecord>, Vec<String>) = replayed.into_iter().unzip();
            let mut state = store.state.lock();
            // Positions saved by a commit that stopped before emptying the log mark records it indexed.
            let (keep, advance) = state.replays.sift(&records);
            let (records, jsons) = (kept(&records, &keep), kept(&jsons, &keep));
            state.replays.apply(advance);
            store.index(&mut state, &records, &jsons)?;
            drop(state);
            store.commit()?;
            tracing::info!(records = jsons.len(), "log write-ahead log replayed");
        }
        Ok(store)
    }

    fn partition_start(&self, ts_ns: i64) -> i64 {
        ts_ns.div_euclid(self.options.partition_ns) * self.options.partition_ns
    }

    /// Adds records to their partitions' writers (not yet searchable). The caller holds the state lock
    /// from the WAL write through this, so a commit cannot empty the WAL between the two.
    /// `jsons` are the records' serialized forms (as written to the WAL), stored as they are.
    fn index(&self, state: &mut State, records: &[LogRecord], jsons: &[String]) -> Result<(), Error> {
        for (record, json) in records.iter().zip(jsons) {
            let start = self.partition_start(record.ts_ns);
            let partition = match state.partitions.entry(start) {
                std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::btree_map::Entry::Vacant(entry) => {
                    entry.insert(Partition::open(&self.dir.join("partitions").join(start.to_string()))?)
                }
            };
            let doc = document(&self.fields, record, json);
            let dir = partition.dir.clone();
            partition.writer()?.add_document(doc).map_err(|e| tantivy_error(&dir, e))?;
            partition.dirty = true;
            let ts = record.ts_ns;
            let changed = match state.streams.get_mut(&record.labels) {
                Some(span) if span.0 <= ts && ts <= span.1 => false,
                Some(span) => {
                    *span = (span.0.min(ts), span.1.max(ts));
                    true
                }
                None => {
                    state.streams.insert(record.labels.clone(), (ts, ts));
                    true
                }
            };
            state.streams_changed |= changed;
        }
        state.pending += records.len();
        Ok(())
    }

    /// Makes appended records searchable (a tantivy commit per changed partition) and empties the
    /// write-ahead log.
    pub fn commit(&self) -> Result<(), Error> {
        let mut state = self.state.lock();
        if state.pending == 0 {
            return Ok(());
        }
        for partition in state.partitions.values_mut() {
            partition.commit()?;
        }
        // The registry and the replay marks are saved before the WAL is emptied: a crash in between
        // replays into them again.
        self.save_streams(&mut state)?;
        state.replays.save(&self.dir.join(REPLAYS_FILE))?;
        let wal_path = self.dir.join(WAL_FILE);
        state.wal.set_len(0).map_err(|e| Error::io(&wal_path, e))?;
        state.wal.sync_data().map_err(|e| Error::io(&wal_path, e))?;
        state.pending = 0;
        Ok(())
    }

    fn save_streams(&self, state: &mut State) -> Result<(), Error> {
        if !state.streams_changed {
            return Ok(());
        }
        let spans: Vec<StreamSpan> = state
            .streams
            .iter()
            .map(|(labels, (first_ns, last_ns))| StreamSpan {
                labels: labels.clone(),
                first_ns: *first_ns,
                last_ns: *last_ns,
            })
            .collect();
        let path = self.dir.join(STREAMS_FILE);
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, serde_json::to_vec(&spans).expect("spans serialize"))
            .map_err(|e| Error::io(&temporary, e))?;
        std::fs::rename(&temporary, &path).map_err(|e| Error::io(&path, e))?;
        state.streams_changed = false;
        Ok(())
    }

    /// Drops whole partitions: those that ended before `now_ns - retention`, then the oldest while the
    /// partitions take more than the size limit (never the newest). Returns the dropped partitions' starts.
    pub fn apply_retention(&self, now_ns: i64) -> Result<Vec<i64>, Error> {
        let mut state = self.state.lock();
        let span = self.options.partition_ns;
        let mut dropped: Vec<i64> = match self.options.retention_ns {
            Some(retention) => {
                state.partitions.keys().copied().filter(|start| start + span <= now_ns - retention).collect()
            }
            None => Vec::new(),
        };
        if let Some(max_bytes) = self.options.max_bytes {
            let mut sizes: Vec<(i64, u64)> = state
                .partitions
                .iter()
                .filter(|(start, _)| !dropped.contains(start))
                .map(|(start, p)| (*start, dir_size(&p.dir)))
                .collect();
            let mut total: u64 = sizes.iter().map(|(_, size)| size).sum();
            sizes.pop();
            for (start, size) in sizes {
                if total <= max_bytes {
                    break;
                }
                total -= size;
                dropped.push(start);
            }
        }
        // Streams whose records were all in dropped partitions leave the registry; the rest start no earlier
        // than the oldest partition left.
        if !dropped.is_empty() {
            let oldest = state.partitions.keys().copied().find(|start| !dropped.contains(start)).unwrap_or(i64::MAX);
            state.replays.forget_before(oldest);
            state.streams.retain(|_, span| span.1 >= oldest);
            for span in state.streams.values_mut() {
                span.0 = span.0.max(oldest);
            }
            state.streams_changed = true;
        }
        for start in &dropped {
            if let Some(partition) = state.partitions.remove(start) {
                let dir = partition.dir.clone();
                drop(partition);
                std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                tracing::info!(partition = start, "log partition dropped by retention");
            }
        }
        Ok(dropped)
    }

    /// Commits, then waits until every partition's background segment merges are done: the size on disk
    /// the store settles at once ingestion pauses (benchmarks measure it).
    pub fn settle(&self) -> Result<(), Error> {
        self.commit()?;
        let mut state = self.state.lock();
        for partition in state.partitions.values_mut() {
            partition.settle()?;
        }
        Ok(())
    }

    /// Bytes the partitions take on disk.
    pub fn size_bytes(&self) -> u64 {
        self.state.lock().partitions.values().map(|p| dir_size(&p.dir)).sum()
    }

    /// Commits every `interval`, and applies retention every minute, until `stop` returns true; run on a
    /// thread of its own.
    pub fn commit_loop(self: Arc<Self>, interval: Duration, stop: impl Fn() -> bool) {
        let mut last_retention = std::time::Instant::now();
        metrics::gauge!("vigil_logs_disk_bytes").set(self.size_bytes() as f64);
        while !stop() {
            std::thread::sleep(interval);
            if let Err(error) = self.commit() {
                tracing::error!(%error, "log index commit failed; records stay in the write-ahead log");
            }
            if last_retention.elapsed() >= Duration::from_secs(60) {
                last_retention = std::time::Instant::now();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as i64);
                if let Err(error) = self.apply_retention(now) {
                    tracing::error!(%error, "log retention failed");
                }
                metrics::gauge!("vigil_logs_disk_bytes").set(self.size_bytes() as f64);
            }
        }
    }

    /// Records of every partition overlapping `[start_ns, end_ns)` that match `query`.
    /// Hands the stored records `query` matches in partitions overlapping `[start_ns, end_ns)` to `visit`,
    /// partition by partition in document order.
    fn visit(
        &self,
        query: &dyn Query,
        start_ns: i64,
        end_ns: i64,
        visit: &mut dyn FnMut(LogRecord),
    ) -> Result<(), Error> {
        let searchers: Vec<(PathBuf, tantivy::Searcher)> = {
            let state = self.state.lock();
            let span = self.options.partition_ns;
            state
                .partitions
                .range(..end_ns)
                .filter(|(start, _)| start.saturating_add(span) > start_ns)
                .map(|(_, p)| (p.dir.clone(), p.reader.searcher()))
                .collect()
        };
        for (dir, searcher) in searchers {
            let mut addresses: Vec<_> =
                searcher.search(query, &DocSetCollector).map_err(|e| tantivy_error(&dir, e))?.into_iter().collect();
            // In document order, each compressed store block is decompressed once (the store caches blocks).
            addresses.sort_unstable_by_key(|a| (a.segment_ord, a.doc_id));
            for address in addresses {
                let doc: TantivyDocument = searcher.doc(address).map_err(|e| tantivy_error(&dir, e))?;
                let Some(json) = doc.get_first(self.fields.record).and_then(|v| v.as_str()) else { continue };
                match serde_json::from_str::<LogRecord>(json) {
                    Ok(record) => visit(record),
                    Err(error) => tracing::warn!(%error, "unreadable stored log record skipped"),
                }
            }
        }
        Ok(())
    }

    /// The tantivy query for a selector, a time range and the line substrings.
    fn build_query(&self, matchers: &[Matcher], start_ns: i64, end_ns: i64, contains: &[String]) -> BooleanQuery {
        let range = RangeQuery::new(
            Bound::Included(Term::from_field_i64(self.fields.ts, start_ns)),
            Bound::Excluded(Term::from_field_i64(self.fields.ts, end_ns)),
        );
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, Box::new(range))];
        for matcher in matchers.iter().filter(|m| m.op == MatchOp::Equal && !m.value.is_empty()) {
            let term = Term::from_field_text(self.fields.label, &format!("{}={}", matcher.name, matcher.value));
            clauses.push((Occur::Must, Box::new(TermQuery::new(term, IndexRecordOption::Basic))));
        }
        for text in contains {
            for clause in line_clauses(self.fields.line, text) {
                clauses.push((Occur::Must, clause));
            }
        }
        BooleanQuery::new(clauses)
    }
}

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| match entry.file_type() {
                    Ok(kind) if kind.is_dir() => dir_size(&entry.path()),
                    _ => entry.metadata().map_or(0, |m| m.len()),
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Index clauses a line containing `text` must satisfy: a token inside `text` is a whole token of the line;
/// one at an edge may be a longer token's end or start (a regex over the term dictionary).
fn line_clauses(field: Field, text: &str) -> Vec<Box<dyn Query>> {
    let found = tokens(text);
    let interior = |t: &&TokenSpan| !t.compound && t.from > 0 && t.to < text.len();
    // Whole tokens are cheap and selective; the regexes scan the term dictionary, so they are used only when
    // the text has no whole token.
    let has_interior = found.iter().any(|t| interior(&t));
    let mut clauses: Vec<Box<dyn Query>> = Vec::new();
    for token in found.iter().filter(|t| !t.compound) {
        let open_start = token.from == 0;
        let open_end = token.to == text.len();
        if has_interior && (open_start || open_end) {
            continue;
        }
        let escaped = regex::escape(&token.text);
        let pattern = match (open_start, open_end) {
            (false, false) => {
                let term = Term::from_field_text(field, &token.text);
                clauses.push(Box::new(TermQuery::new(term, IndexRecordOption::Basic)));
                continue;
            }
            (true, true) => format!(".*{escaped}.*"),
            (true, false) => format!(".*{escaped}"),
            (false, true) => format!("{escaped}.*"),
        };
        if let Ok(query) = RegexQuery::from_pattern(&pattern, field) {
            clauses.push(Box::new(query));
        }
    }
    clauses
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    // Time ranges are read from the fast field (tantivy's range query uses it when the field is fast), so
    // time is not indexed: a term per distinct nanosecond filled the term dictionary.
    let ts = builder.add_i64_field("ts", FAST);
    let label = builder.add_text_field("label", STRING);
    let line_options = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default().set_tokenizer(TOKENIZER).set_index_option(IndexRecordOption::Basic),
    );
    let line = builder.add_text_field("line", line_options);
    let record = builder.add_text_field("record", STORED);
    (builder.build(), Fields { ts, label, line, record })
}

fn document(fields: &Fields, record: &LogRecord, json: &str) -> TantivyDocument {
    let mut doc = TantivyDocument::default();
    doc.add_i64(fields.ts, record.ts_ns);
    for (name, value) in &record.labels {
        doc.add_text(fields.label, format!("{name}={value}"));
    }
    doc.add_text(fields.line, &record.line);
    doc.add_text(fields.record, json);
    doc
}

/// The stream registry saved at the last commit; missing or unreadable means empty (it refills as records
/// arrive, and the WAL replay refills what the last commit did not save).
fn read_streams(path: &Path) -> BTreeMap<BTreeMap<String, String>, (i64, i64)> {
    let Ok(bytes) = std::fs::read(path) else { return BTreeMap::new() };
    match serde_json::from_slice::<Vec<StreamSpan>>(&bytes) {
        Ok(spans) => spans.into_iter().map(|s| (s.labels, (s.first_ns, s.last_ns))).collect(),
        Err(error) => {
            tracing::warn!(%error, path = %path.display(), "unreadable stream registry ignored");
            BTreeMap::new()
        }
    }
}

/// The items whose `keep` flag is set.
fn kept<T: Clone>(items: &[T], keep: &[bool]) -> Vec<T> {
    items.iter().zip(keep).filter(|(_, keep)| **keep).map(|(item, _)| item.clone()).collect()
}

/// Reads the write-ahead log: one JSON record per line, kept with its text; a torn last line (a crash
/// mid-write) is dropped.
fn replay(path: &Path) -> Result<Vec<(LogRecord, String)>, Error> {
    let mut text = String::new();
    match std::fs::File::open(path) {
        Ok(mut file) => file.read_to_string(&mut text).map_err(|e| Error::io(path, e))?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(Error::io(path, error)),
    };
    let mut records = Vec::new();
    for (number, line) in text.lines().enumerate() {
        match serde_json::from_str(line) {
            Ok(record) => records.push((record, line.to_owned())),
            Err(error) => tracing::warn!(line = number + 1, %error, "torn or corrupt log wal record skipped"),
        }
    }
    Ok(records)
}

impl LogStore for LogIndex {
    fn append(&self, records: &[LogRecord]) -> Result<(), Error> {
        if records.is_empty() {
            return Ok(());
        }
        // Serialized once: the same text goes to the WAL and to the index's doc store.
        let jsons: Vec<String> = records.iter().map(|r| serde_json::to_string(r).expect("records serialize")).collect();
        let mut state = self.state.lock();
        let (keep, advance) = state.replays.sift(records);
        let replayed = keep.iter().filter(|keep| !**keep).count();
        let (records, jsons): (Cow<'_, [LogRecord]>, _) = if replayed == 0 {
            (Cow::Borrowed(records), jsons)
        } else {
            metrics::counter!("vigil_logs_replayed_records_dropped_total").increment(replayed as u64);
            (Cow::Owned(kept(records, &keep)), kept(&jsons, &keep))
        };
        if records.is_empty() {
            return Ok(());
        }
        let mut batch = jsons.join("\n");
        batch.push('\n');
        let wal_path = self.dir.join(WAL_FILE);
        state.wal.write_all(batch.as_bytes()).map_err(|e| Error::io(&wal_path, e))?;
        state.wal.sync_data().map_err(|e| Error::io(&wal_path, e))?;
        self.index(&mut state, &records, &jsons)?;
        state.replays.apply(advance);
        Ok(())
    }

    fn select(&self, query: &LogQuery) -> Result<Vec<LogRecord>, Error> {
        let mut records = Vec::new();
        self.scan(query, &mut |record| records.push(record))?;
        records.sort_by(|a, b| a.ts_ns.cmp(&b.ts_ns).then_with(|| a.labels.cmp(&b.labels)));
        if query.backward {
            records.reverse();
        }
        if let Some(limit) = query.limit {
            records.truncate(limit);
        }
        Ok(records)
    }

    fn scan(&self, query: &LogQuery, visit: &mut dyn FnMut(LogRecord)) -> Result<(), Error> {
        let tantivy_query = self.build_query(&query.matchers, query.start_ns, query.end_ns, &query.contains);
        let wanted = |r: &LogRecord| {
            (query.start_ns..query.end_ns).contains(&r.ts_ns)
                && query.matchers.iter().all(|m| m.matches(r.labels.get(&m.name).map_or("", String::as_str)))
                && query.contains.iter().all(|text| r.line.contains(text.as_str()))
        };
        self.visit(&tantivy_query, query.start_ns, query.end_ns, &mut |record| {
            if wanted(&record) {
                visit(record);
            }
        })
    }

    fn label_names(&self, start_ns: i64, end_ns: i64) -> Result<Vec<String>, Error> {
        let mut names: Vec<String> =
            self.streams(&[], start_ns, end_ns)?.into_iter().flat_map(|s| s.into_keys()).collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn label_values(&self, name: &str, start_ns: i64, end_ns: i64) -> Result<Vec<String>, Error> {
        let mut values: Vec<String> =
            self.streams(&[], start_ns, end_ns)?.into_iter().filter_map(|mut s| s.remove(name)).collect();
        values.sort();
        values.dedup();
        Ok(values)
    }

    fn streams(
        &self,
        matchers: &[Matcher],
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<BTreeMap<String, String>>, Error> {
        let state = self.state.lock();
        Ok(state
            .streams
            .iter()
            .filter(|(_, (first, last))| *first < end_ns && *last >= start_ns)
            .filter(|(labels, _)| matchers.iter().all(|m| m.matches(labels.get(&m.name).map_or("", String::as_str))))
            .map(|(labels, _)| labels.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests;
