//! The log store: records (time, stream labels, line, structured metadata) kept per stream in compressed
//! chunks, indexed with tantivy, one index per time partition.
//!
//! - Appends go to a write-ahead log ([`wal`], fsynced before they are acknowledged) and to the stream's
//!   head ([`head`]), which queries read at once.
//! - A head that reaches [`LogOptions::chunk_bytes`] of text is set aside, and a commit seals it (and
//!   any head older than [`LogOptions::chunk_max_age`]) into a chunk ([`chunk`]: columns in one zstd
//!   frame, part by part) appended to the partition's `chunks.dat`, with one tantivy document per chunk ([`partition`]): stream labels as
//!   `name=value` terms, the chunk's distinct tokens ([`tokenizer`]), its time span as fast fields.
//!   Identifier-like tokens go to a per-chunk Bloom filter instead of the term dictionary.
//! - A search narrows the chunks through the index and the filters, then checks every line exactly.
//! - A crash loses nothing acknowledged: the log is replayed on open, skipping what committed chunks
//!   already hold. Retention drops whole partitions, by age and by total size. Records that carry a
//!   [`SourcePosition`] and that the store already has are dropped ([`replays`]).

mod chunk;
mod head;
mod legacy;
mod partition;
mod replays;
mod shapes;
mod tokenizer;
mod wal;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};
use tantivy::Term;
use tantivy::query::{BooleanQuery, Occur, Query, QueryClone, RangeQuery, RegexQuery, TermQuery};
use tantivy::schema::{Field, IndexRecordOption};

use head::{Head, StreamLabels, stream_key};
use partition::{Fields, Partition, Snapshot};
pub use tokenizer::{TokenSpan, tokens};

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

/// One part of a scan: the time span its records lie in, and how to read them into a visitor.
pub struct ScanPart {
    /// No record of the part is older.
    pub min_ns: i64,
    /// No record of the part is newer.
    pub max_ns: i64,
    read: Box<ReadPart>,
}

/// Reads a part's records within `[start_ns, end_ns]` (a narrowing of the query's range) into a visitor.
type ReadPart = dyn FnOnce(i64, i64, &mut dyn FnMut(LogRecord)) -> Result<(), Error> + Send;

impl ScanPart {
    /// A part whose records lie in `[min_ns, max_ns]`, read by `read`.
    pub fn new(
        min_ns: i64,
        max_ns: i64,
        read: impl FnOnce(i64, i64, &mut dyn FnMut(LogRecord)) -> Result<(), Error> + Send + 'static,
    ) -> Self {
        ScanPart { min_ns, max_ns, read: Box::new(read) }
    }

    /// Hands the part's records to `visit`.
    pub fn read(self, visit: &mut dyn FnMut(LogRecord)) -> Result<(), Error> {
        (self.read)(i64::MIN, i64::MAX, visit)
    }

    /// Hands the part's records in `[start_ns, end_ns]` to `visit`; the others are not even built.
    pub fn read_within(self, start_ns: i64, end_ns: i64, visit: &mut dyn FnMut(LogRecord)) -> Result<(), Error> {
        (self.read)(start_ns, end_ns, visit)
    }
}

/// Where logs are kept and searched.
pub trait LogStore: Send + Sync {
    /// Stores records durably; when this returns they are acknowledged.
    fn append(&self, records: &[LogRecord]) -> Result<(), Error>;
    /// Records matching `query`, in time order (or reverse).
    fn select(&self, query: &LogQuery) -> Result<Vec<LogRecord>, Error>;
    /// Every record matching `query`, in no particular order, as independent parts that may be read on
    /// different threads, each handing its records to a visitor without holding them all (`limit` and
    /// `backward` do not apply): what metric queries read.
    fn scan(&self, query: &LogQuery) -> Result<Vec<ScanPart>, Error>;
    /// Label names of streams with records in the range, sorted.
    fn label_names(&self, start_ns: i64, end_ns: i64) -> Result<Vec<String>, Error>;
    /// Values of one label in the range, sorted.
    fn label_values(&self, name: &str, start_ns: i64, end_ns: i64) -> Result<Vec<String>, Error>;
    /// Distinct streams matching `matchers` in the range.
    fn streams(&self, matchers: &[Matcher], start_ns: i64, end_ns: i64)
    -> Result<Vec<BTreeMap<String, String>>, Error>;
}

/// How the log store partitions, chunks and expires data.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Time span of one partition (one tantivy index and chunk file), in nanoseconds.
    pub partition_ns: i64,
    /// Partitions wholly older than this (before now) are dropped; `None` keeps everything.
    pub retention_ns: Option<i64>,
    /// While partitions take more bytes than this, the oldest are dropped; `None` for no limit.
    pub max_bytes: Option<u64>,
    /// A head holding this much line text is sealed into a chunk at the next commit.
    pub chunk_bytes: usize,
    /// A head opened this long ago is sealed at the next commit, however small.
    pub chunk_max_age: Duration,
    /// The write-ahead log is rewritten to hold only the heads once it is this large and twice their size.
    pub wal_rewrite_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            partition_ns: 24 * 3600 * 1_000_000_000,
            retention_ns: None,
            max_bytes: None,
            chunk_bytes: 2 * 1024 * 1024,
            chunk_max_age: Duration::from_secs(300),
            wal_rewrite_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The tantivy-indexed [`LogStore`] under one directory: one partition per time span
/// (`chunks/<start-ns>/`), one write-ahead log for all.
pub struct LogIndex {
    dir: PathBuf,
    fields: Fields,
    options: LogOptions,
    state: Mutex<State>,
    /// What writes chunks, held through a commit (so commits take turns); taken before `state` when both
    /// are.
    writer: Mutex<Writer>,
    /// Signalled when a head is set aside: the commit loop seals it without waiting for its interval.
    wake_sealer: Condvar,
    /// Signalled when set-aside heads are sealed: appends held back by a long backlog go on.
    room: Condvar,
    /// Whether a commit loop runs (only then do appends wait for a backlog to be sealed).
    sealing_in_background: std::sync::atomic::AtomicBool,
}

/// The zstd context chunks are sealed with, and each partition's chunk file and index writer.
struct Writer {
    encoder: zstd::stream::raw::Encoder<'static>,
    partitions: BTreeMap<i64, Partition>,
}

struct State {
    /// What queries read of each partition: its chunks as of its last commit.
    published: BTreeMap<i64, Snapshot>,
    /// Unsealed records, per partition and stream.
    heads: HashMap<i64, HashMap<StreamLabels, Head, foldhash::fast::RandomState>>,
    wal: wal::Wal,
    next_seq: u64,
    /// Every stream with the time span of its records: what the label APIs read.
    streams: BTreeMap<BTreeMap<String, String>, (i64, i64)>,
    streams_changed: bool,
    replays: replays::Replays,
    /// Heads taken out of `heads` to be sealed, which queries still read until their chunks are committed.
    sealing: Vec<SetAside>,
}

/// A head being sealed into a chunk, outside the lock.
struct SetAside {
    start: i64,
    head: Arc<Head>,
}

impl State {
    fn set_aside(&mut self, start: i64, head: Head) {
        self.sealing.push(SetAside { start, head: Arc::new(head) });
    }

    /// Bytes of line text waiting in set-aside heads.
    fn sealing_bytes(&self) -> usize {
        self.sealing.iter().map(|s| s.head.text_bytes()).sum()
    }

    /// Sets aside every head `due` says is due for sealing.
    fn set_aside_due(&mut self, due: impl Fn(&Head) -> bool) {
        let mut taken = Vec::new();
        for (start, heads) in self.heads.iter_mut() {
            let labels: Vec<StreamLabels> =
                heads.iter().filter(|(_, head)| due(head)).map(|(labels, _)| labels.clone()).collect();
            taken.extend(labels.iter().map(|labels| (*start, heads.remove(labels).expect("listed above"))));
        }
        self.heads.retain(|_, heads| !heads.is_empty());
        for (start, head) in taken {
            self.set_aside(start, head);
        }
    }

    /// Drops the set-aside heads `done` holds (their chunks are committed).
    fn sealed(&mut self, done: &[Arc<Head>]) {
        self.sealing.retain(|s| !done.iter().any(|head| Arc::ptr_eq(head, &s.head)));
    }

    /// Every head that still holds records no committed chunk holds, with its partition's start.
    fn held(&self) -> impl Iterator<Item = (i64, &Head)> {
        let open = self.heads.iter().flat_map(|(start, heads)| heads.values().map(move |head| (*start, head)));
        open.chain(self.sealing.iter().map(|s| (s.start, s.head.as_ref())))
    }
}

/// One entry of `streams.json`.
#[derive(Serialize, Deserialize)]
struct StreamSpan {
    labels: BTreeMap<String, String>,
    first_ns: i64,
    last_ns: i64,
}

const WAL_FILE: &str = "wal.bin";
const PARTITIONS_DIR: &str = "chunks";
const STREAMS_FILE: &str = "streams.json";
const REPLAYS_FILE: &str = "positions.json";
/// Set-aside heads, in chunks, past which appends wait for sealing to catch up.
const SEALING_BACKLOG_CHUNKS: usize = 32;
/// The longest an append waits for that.
const BACKLOG_PATIENCE: Duration = Duration::from_secs(10);
/// zstd level of sealed chunks: fast to write, and the columns of one stream compress well anyway.
const CHUNK_LEVEL: i32 = 3;

impl LogIndex {
    /// Opens (or creates) the store under `dir` with default options, replaying the write-ahead log.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        Self::open_with(dir, LogOptions::default())
    }

    /// Opens (or creates) the store under `dir`, replaying the write-ahead log (and moving in what an
    /// earlier version of the store left).
    pub fn open_with(dir: &Path, options: LogOptions) -> Result<Self, Error> {
        let partitions_dir = dir.join(PARTITIONS_DIR);
        std::fs::create_dir_all(&partitions_dir).map_err(|e| Error::io(&partitions_dir, e))?;
        let mut partitions = BTreeMap::new();
        for entry in std::fs::read_dir(&partitions_dir).map_err(|e| Error::io(&partitions_dir, e))? {
            let path = entry.map_err(|e| Error::io(&partitions_dir, e))?.path();
            let Some(start) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<i64>().ok()) else {
                continue;
            };
            partitions.insert(start, Partition::open(&path)?);
        }
        let (wal, frames) = wal::Wal::open(&dir.join(WAL_FILE))?;
        let highest = frames.iter().map(|(seq, _)| *seq).chain(partitions.values().map(Partition::highest_flushed));
        let next_seq = highest.max().unwrap_or(0) + 1;
        let state = State {
            published: partitions.iter().map(|(start, p)| (*start, p.snapshot())).collect(),
            heads: HashMap::new(),
            wal,
            next_seq,
            streams: read_streams(&dir.join(STREAMS_FILE)),
            streams_changed: false,
            replays: replays::Replays::read(&dir.join(REPLAYS_FILE)),
            sealing: Vec::new(),
        };
        let encoder = zstd::stream::raw::Encoder::new(CHUNK_LEVEL).map_err(|e| Error::io(dir, e))?;
        let store = LogIndex {
            dir: dir.to_owned(),
            fields: partition::schema().1,
            options,
            state: Mutex::new(state),
            writer: Mutex::new(Writer { encoder, partitions }),
            wake_sealer: Condvar::new(),
            room: Condvar::new(),
            sealing_in_background: std::sync::atomic::AtomicBool::new(false),
        };
        store.replay(frames);
        legacy::migrate(&store, dir)?;
        Ok(store)
    }

    /// Puts the write-ahead log's records back into heads, except those committed chunks hold. They were
    /// acknowledged, so they are not sifted for replays again; the replay marks move past them.
    fn replay(&self, frames: Vec<wal::Frame>) {
        let writer = self.writer.lock();
        let mut state = self.state.lock();
        let mut replayed = 0;
        for (seq, records) in &frames {
            for record in records {
                let start = self.partition_start(record.ts_ns);
                let flushed = writer.partitions.get(&start).map_or(0, |p| p.flushed(stream_key(&record.labels)));
                if *seq <= flushed {
                    continue;
                }
                self.push(&mut state, start, record, *seq);
                replayed += 1;
            }
            state.replays.note(records);
        }
        if replayed > 0 {
            tracing::info!(records = replayed, "log write-ahead log replayed");
        }
    }

    fn partition_start(&self, ts_ns: i64) -> i64 {
        ts_ns.div_euclid(self.options.partition_ns) * self.options.partition_ns
    }

    /// Adds a record to its stream's head; a head that fills up is set aside for the next commit to seal,
    /// and the stream starts a new one.
    fn push(&self, state: &mut State, start: i64, record: &LogRecord, seq: u64) {
        let heads = state.heads.entry(start).or_default();
        let full = match heads.get_mut(&record.labels) {
            Some(head) => {
                head.push(record, seq);
                head.text_bytes() >= self.options.chunk_bytes
            }
            None => {
                let labels: StreamLabels = Arc::new(record.labels.clone());
                let mut head = Head::new(labels.clone());
                head.push(record, seq);
                let full = head.text_bytes() >= self.options.chunk_bytes;
                heads.insert(labels, head);
                full
            }
        };
        if full {
            let head = heads.remove(&record.labels).expect("pushed to above");
            state.set_aside(start, head);
            self.wake_sealer.notify_one();
        }
    }

    /// Widens the stream registry to the heads' spans (heads are read directly until then).
    fn register_heads(state: &mut State) {
        let spans: Vec<(StreamLabels, i64, i64)> =
            state.held().map(|(_, head)| (head.labels.clone(), head.min_ns, head.max_ns)).collect();
        for (labels, first, last) in spans {
            match state.streams.get_mut(labels.as_ref()) {
                Some(span) if span.0 <= first && last <= span.1 => {}
                Some(span) => {
                    *span = (span.0.min(first), span.1.max(last));
                    state.streams_changed = true;
                }
                None => {
                    state.streams.insert((*labels).clone(), (first, last));
                    state.streams_changed = true;
                }
            }
        }
    }

    /// Seals the heads that are full or old into chunks, commits the partitions, and shrinks the
    /// write-ahead log to what the heads still need.
    pub fn commit(&self) -> Result<(), Error> {
        self.seal(false)
    }

    /// Seals every head, however small, and commits: the write-ahead log ends up empty.
    pub fn flush(&self) -> Result<(), Error> {
        self.seal(true)
    }

    /// Sets the due heads aside (queries still read them); seals them into chunks, writes and commits them
    /// without holding the lock (appends and queries go on meanwhile); then, under the lock, publishes the
    /// partitions' new chunks and drops those heads at once, so that a query sees each record once: in a
    /// head or in a chunk. Last, the log shrinks.
    fn seal(&self, all: bool) -> Result<(), Error> {
        let mut writer = self.writer.lock();
        let pending: Vec<(i64, Arc<Head>)> = {
            let mut state = self.state.lock();
            Self::register_heads(&mut state);
            state.set_aside_due(|head: &Head| {
                all || head.text_bytes() >= self.options.chunk_bytes
                    || head.opened.elapsed() >= self.options.chunk_max_age
            });
            state.sealing.iter().map(|s| (s.start, s.head.clone())).collect()
        };
        let mut failure = None;
        let mut written: BTreeMap<i64, Vec<Arc<Head>>> = BTreeMap::new();
        for (start, head) in pending {
            // Heads are written oldest first, and none after one that fails: a stream's later chunk must not
            // be committed before an earlier one, whose records a replay would then skip.
            if let Err(error) = self.write_chunk(&mut writer, start, &head) {
                failure = Some(error);
                break;
            }
            written.entry(start).or_default().push(head);
        }
        // A partition that fails to commit forgets its new chunks; their heads stay set aside for the next
        // commit.
        let mut committed = Vec::new();
        for (start, heads) in written {
            match writer.partitions.get_mut(&start).expect("written to").commit() {
                Ok(()) => committed.push((start, heads)),
                Err(error) => failure = Some(error),
            }
        }
        let mut state = self.state.lock();
        for (start, heads) in committed {
            state.published.insert(start, writer.partitions[&start].snapshot());
            state.sealed(&heads);
        }
        self.room.notify_all();
        if let Some(error) = failure {
            return Err(error);
        }
        // The registry and the replay marks are saved before the log shrinks: a crash in between replays
        // into them again.
        self.save_streams(&mut state)?;
        state.replays.save(&self.dir.join(REPLAYS_FILE))?;
        self.shrink_wal(state)
    }

    /// Seals a head into a chunk and adds it to its partition (opened if new), uncommitted.
    fn write_chunk(&self, writer: &mut Writer, start: i64, head: &Head) -> Result<(), Error> {
        let partition = match writer.partitions.entry(start) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => {
                entry.insert(Partition::open(&self.dir.join(PARTITIONS_DIR).join(start.to_string()))?)
            }
        };
        partition.add(&self.fields, head.seal(&mut writer.encoder)?)
    }

    /// Empties the write-ahead log when no head is left, or rewrites it to hold only the heads once it has
    /// grown well past them: the heads' frames are taken under the lock, written beside the log without
    /// it, and swapped in under it again with what was appended meanwhile.
    fn shrink_wal(&self, mut state: parking_lot::MutexGuard<'_, State>) -> Result<(), Error> {
        if state.held().next().is_none() {
            if state.wal.len() > 0 {
                state.wal.rewrite(Vec::new())?;
            }
            return Ok(());
        }
        let held: u64 = state.held().map(|(_, head)| head.text_bytes() as u64).sum();
        if state.wal.len() < self.options.wal_rewrite_bytes || state.wal.len() < 2 * held {
            return Ok(());
        }
        let frames: Vec<Vec<u8>> = state.held().map(|(_, head)| head.frame()).collect();
        let (path, from) = (state.wal.path().to_owned(), state.wal.len());
        drop(state);
        let replacement = wal::Replacement::write(&path, frames, from)?;
        self.state.lock().wal.replace(replacement)
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

    /// Drops whole partitions (with their heads): those that ended before `now_ns - retention`, then the
    /// oldest while the rest take more than the size limit (the newest is always kept). Returns the starts
    /// of the dropped partitions.
    pub fn apply_retention(&self, now_ns: i64) -> Result<Vec<i64>, Error> {
        let mut writer = self.writer.lock();
        let mut state = self.state.lock();
        let span = self.options.partition_ns;
        let mut starts: Vec<i64> =
            state.held().map(|(start, _)| start).chain(writer.partitions.keys().copied()).collect();
        starts.sort_unstable();
        starts.dedup();
        let mut dropped: Vec<i64> = match self.options.retention_ns {
            Some(retention) => starts.iter().copied().filter(|start| start + span <= now_ns - retention).collect(),
            None => Vec::new(),
        };
        if let Some(max_bytes) = self.options.max_bytes {
            let mut sizes: Vec<(i64, u64)> = writer
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
        dropped.sort_unstable();
        // Streams whose records were all in dropped partitions leave the registry; the rest start no earlier
        // than the oldest partition left.
        if !dropped.is_empty() {
            let oldest = starts.iter().copied().find(|start| !dropped.contains(start)).unwrap_or(i64::MAX);
            state.replays.forget_before(oldest);
            state.streams.retain(|_, span| span.1 >= oldest);
            for span in state.streams.values_mut() {
                span.0 = span.0.max(oldest);
            }
            state.streams_changed = true;
        }
        let gone: Vec<Arc<Head>> =
            state.sealing.iter().filter(|s| dropped.contains(&s.start)).map(|s| s.head.clone()).collect();
        state.sealed(&gone);
        for start in &dropped {
            state.heads.remove(start);
            state.published.remove(start);
            if let Some(partition) = writer.partitions.remove(start) {
                let dir = partition.dir.clone();
                drop(partition);
                std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                tracing::info!(partition = start, "log partition dropped by retention");
            }
        }
        Ok(dropped)
    }

    /// Seals everything, then waits until every partition's background segment merges are done: the size
    /// on disk the store settles at once ingestion pauses (benchmarks measure it).
    pub fn settle(&self) -> Result<(), Error> {
        self.flush()?;
        for partition in self.writer.lock().partitions.values_mut() {
            partition.settle()?;
        }
        Ok(())
    }

    /// Bytes the partitions take on disk.
    pub fn size_bytes(&self) -> u64 {
        self.state.lock().published.values().map(|p| dir_size(&p.dir)).sum()
    }

    /// Commits every `interval` (and whenever a head fills up), and applies retention every minute, until
    /// `stop` returns true; then seals every head, so the next start has nothing to replay. Run on a thread
    /// of its own.
    pub fn commit_loop(self: Arc<Self>, interval: Duration, stop: impl Fn() -> bool) {
        let mut last_retention = std::time::Instant::now();
        metrics::gauge!("vigil_logs_disk_bytes").set(self.size_bytes() as f64);
        self.sealing_in_background.store(true, std::sync::atomic::Ordering::Release);
        let mut failed = false;
        while !stop() {
            // Woken early when a head fills up, unless the last commit failed.
            let mut state = self.state.lock();
            if (failed || state.sealing.is_empty()) && !stop() {
                self.wake_sealer.wait_for(&mut state, interval);
            }
            drop(state);
            failed = self
                .commit()
                .inspect_err(|error| {
                    tracing::error!(%error, "log commit failed; records stay in the write-ahead log");
                })
                .is_err();
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
        self.sealing_in_background.store(false, std::sync::atomic::Ordering::Release);
        self.room.notify_all();
        if let Err(error) = self.flush() {
            tracing::error!(%error, "log flush at shutdown failed; records stay in the write-ahead log");
        }
    }

    /// The records of heads that `query` matches, copied, and snapshots of the partitions overlapping its
    /// time range (read after the lock is released).
    fn gather(&self, query: &LogQuery) -> (Vec<LogRecord>, Vec<Snapshot>) {
        let state = self.state.lock();
        let span = self.options.partition_ns;
        let overlaps = |start: i64| start < query.end_ns && start.saturating_add(span) > query.start_ns;
        let mut records = Vec::new();
        for (_, head) in state.held().filter(|(start, head)| overlaps(*start) && head.selected(&query.matchers)) {
            head.matching(query.start_ns, query.end_ns, &query.contains, &mut records);
        }
        let snapshots = state.published.iter().filter(|(start, _)| overlaps(**start)).map(|(_, p)| p.clone()).collect();
        (records, snapshots)
    }

    /// The tantivy query for a selector, a time range and the line substrings, with the hashes of the
    /// identifiers a chunk's Bloom filter must hold, and the identifiers at the edges of the substrings.
    fn build_query(&self, query: &LogQuery) -> (BooleanQuery, Vec<u64>, Vec<EdgeIdentifier>) {
        let overlapping = [
            (self.fields.min_ts, Bound::Unbounded, Bound::Excluded(query.end_ns)),
            (self.fields.max_ts, Bound::Included(query.start_ns), Bound::Unbounded),
        ];
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = overlapping
            .into_iter()
            .map(|(field, lower, upper): (Field, Bound<i64>, Bound<i64>)| {
                let term = |v: i64| Term::from_field_i64(field, v);
                let range = RangeQuery::new(
                    lower.map(term).or_min(Term::from_field_i64(field, i64::MIN)),
                    upper.map(term).or_max(Term::from_field_i64(field, i64::MAX)),
                );
                (Occur::Must, Box::new(range) as Box<dyn Query>)
            })
            .collect();
        for matcher in query.matchers.iter().filter(|m| m.op == MatchOp::Equal && !m.value.is_empty()) {
            let term = Term::from_field_text(self.fields.label, &format!("{}={}", matcher.name, matcher.value));
            clauses.push((Occur::Must, Box::new(TermQuery::new(term, IndexRecordOption::Basic))));
        }
        let (mut identifiers, mut edges) = (Vec::new(), Vec::new());
        for text in &query.contains {
            let narrowing = line_clauses(&self.fields, text);
            clauses.extend(narrowing.clauses.into_iter().map(|clause| (Occur::Must, clause)));
            identifiers.extend(narrowing.identifiers);
            edges.extend(narrowing.edges);
        }
        (BooleanQuery::new(clauses), identifiers, edges)
    }
}

/// What reading a chunk needs besides the chunk, kept per thread: a zstd context, and the buffers of the
/// last chunk read (large enough for the next, so no fresh pages are faulted in for each).
#[derive(Default)]
struct Scratch {
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
    raw: Vec<u8>,
    text: String,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Decompresses `compressed` (`raw_len` bytes once decompressed) into the thread's buffer, and hands the
/// buffer back; `None` if the data is damaged.
fn decompress(compressed: &[u8], raw_len: usize) -> Option<(Vec<u8>, String)> {
    SCRATCH.with_borrow_mut(|scratch| {
        if scratch.decompressor.is_none() {
            scratch.decompressor = zstd::bulk::Decompressor::new().ok();
        }
        let mut raw = std::mem::take(&mut scratch.raw);
        raw.clear();
        raw.reserve(raw_len);
        let decompressor = scratch.decompressor.as_mut()?;
        decompressor.decompress_to_buffer(compressed, &mut raw).ok()?;
        Some((raw, std::mem::take(&mut scratch.text)))
    })
}

/// Hands the records of the chunk at `offset` that `query` wants, with times in `window`, to `visit`. A
/// damaged chunk is logged, counted and skipped.
fn read_chunk(
    snapshot: &Snapshot,
    offset: u64,
    query: &LogQuery,
    window: std::ops::RangeInclusive<i64>,
    identifiers: &[u64],
    visit: &mut dyn FnMut(LogRecord),
) -> Result<(), Error> {
    let entry = snapshot.entry(offset)?;
    let damaged = || {
        tracing::warn!(dir = %snapshot.dir.display(), offset, "damaged log chunk skipped");
        metrics::counter!("vigil_logs_damaged_chunks_total").increment(1);
    };
    let Some(head) = chunk::decode_entry(&entry) else {
        damaged();
        return Ok(());
    };
    if !identifiers.iter().all(|&hash| chunk::bloom_may_contain(head.bloom, hash)) {
        return Ok(());
    }
    let Some(labels) = chunk::pairs(head.labels, &mut 0) else {
        damaged();
        return Ok(());
    };
    if !query.matchers.iter().all(|m| m.matches(labels.get(&m.name).map_or("", String::as_str))) {
        return Ok(());
    }
    let Some((raw, text)) = decompress(head.compressed, head.raw_len) else {
        damaged();
        return Ok(());
    };
    let Some(columns) = chunk::decode_columns(&raw, text) else {
        damaged();
        return Ok(());
    };
    let lines = columns.lines();
    for ((ts_ns, line), metadata) in columns.times.iter().copied().zip(lines).zip(columns.metadata.iter()) {
        if !window.contains(&ts_ns) || !query.contains.iter().all(|text| line.contains(text.as_str())) {
            continue;
        }
        visit(LogRecord {
            ts_ns,
            labels: labels.clone(),
            line: line.to_owned(),
            metadata: metadata.clone(),
            position: None,
        });
    }
    SCRATCH.with_borrow_mut(|scratch| (scratch.raw, scratch.text) = (raw, columns.into_text()));
    Ok(())
}

/// Reads `parts` within `[start_ns, end_ns]`, each on a thread of its own when there are several.
fn read_parts(parts: Vec<ScanPart>, start_ns: i64, end_ns: i64) -> Vec<Result<Vec<LogRecord>, Error>> {
    let read = move |part: ScanPart| {
        let mut records = Vec::new();
        part.read_within(start_ns, end_ns, &mut |record| records.push(record)).map(|()| records)
    };
    if parts.len() == 1 {
        return parts.into_iter().map(read).collect();
    }
    std::thread::scope(|scope| {
        let readers: Vec<_> = parts.into_iter().map(|part| scope.spawn(move || read(part))).collect();
        readers.into_iter().map(|reader| reader.join().expect("a part reader does not panic")).collect()
    })
}

/// Sorts `records` in the order a query returns them (by time, then labels; newest first when `backward`)
/// and keeps the first `limit`.
fn keep_first(records: &mut Vec<LogRecord>, limit: usize, backward: bool) {
    records.sort_by(|a, b| a.ts_ns.cmp(&b.ts_ns).then_with(|| a.labels.cmp(&b.labels)));
    if backward {
        records.reverse();
    }
    records.truncate(limit);
}

/// `Bound` helpers for the range clauses.
trait BoundExt<T> {
    fn or_min(self, min: T) -> Bound<T>;
    fn or_max(self, max: T) -> Bound<T>;
}

impl<T> BoundExt<T> for Bound<T> {
    fn or_min(self, min: T) -> Bound<T> {
        match self {
            Bound::Unbounded => Bound::Included(min),
            bound => bound,
        }
    }

    fn or_max(self, max: T) -> Bound<T> {
        match self {
            Bound::Unbounded => Bound::Included(max),
            bound => bound,
        }
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

/// How the index narrows the chunks for a line substring.
struct Narrowing {
    /// Clauses every chunk holding such a line matches.
    clauses: Vec<Box<dyn Query>>,
    /// Hashes of identifiers the chunk's Bloom filter must hold.
    identifiers: Vec<u64>,
    /// Identifiers at the substring's edges.
    edges: Vec<EdgeIdentifier>,
}

/// An identifier at an edge of a line substring: a line holds it as a whole token (then its chunk's Bloom
/// filter holds it), or inside a longer one: a longer identifier or a dictionary term. `widen` matches the
/// chunks where the latter may be; the others are read only if their filter holds `hash`.
struct EdgeIdentifier {
    hash: u64,
    widen: Box<dyn Query>,
}

/// What a line containing `text` implies for its chunk. A token inside `text` is a whole token of the
/// line: an exact dictionary term, or an identifier for the filter. One at an edge may be a longer
/// token's end or start: a regex over the term dictionary, complete only when the token has a character
/// no identifier has; an identifier there is an [`EdgeIdentifier`]; other hex tokens give nothing.
fn line_clauses(fields: &Fields, text: &str) -> Narrowing {
    let found = tokens(text);
    let interior = |t: &TokenSpan| t.from > 0 && t.to < text.len();
    // Whole tokens are cheap and selective; the regexes scan the term dictionary, so they are used only when
    // the text has no whole token.
    let has_interior = found.iter().any(interior);
    let mut narrowing = Narrowing { clauses: Vec::new(), identifiers: Vec::new(), edges: Vec::new() };
    for token in &found {
        let high_cardinality = tokenizer::is_high_cardinality(&token.text);
        if interior(token) {
            if high_cardinality {
                narrowing.identifiers.push(chunk::stable_hash(token.text.as_bytes()));
            } else {
                let term = Term::from_field_text(fields.body, &token.text);
                narrowing.clauses.push(Box::new(TermQuery::new(term, IndexRecordOption::Basic)));
            }
            continue;
        }
        if has_interior || (tokenizer::is_hex(&token.text) && !high_cardinality) {
            continue;
        }
        let escaped = regex::escape(&token.text);
        let pattern = match (token.from == 0, token.to == text.len()) {
            (true, true) => format!(".*{escaped}.*"),
            (true, false) => format!(".*{escaped}"),
            _ => format!("{escaped}.*"),
        };
        let Ok(regex) = RegexQuery::from_pattern(&pattern, fields.body) else { continue };
        if !high_cardinality {
            narrowing.clauses.push(Box::new(regex));
            continue;
        }
        let longer = RangeQuery::new(
            Bound::Excluded(Term::from_field_u64(fields.longest_identifier, token.text.len() as u64)),
            Bound::Included(Term::from_field_u64(fields.longest_identifier, u64::MAX)),
        );
        let widen = BooleanQuery::new(vec![(Occur::Should, Box::new(regex)), (Occur::Should, Box::new(longer))]);
        narrowing
            .edges
            .push(EdgeIdentifier { hash: chunk::stable_hash(token.text.as_bytes()), widen: Box::new(widen) });
    }
    narrowing
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

impl LogStore for LogIndex {
    fn append(&self, records: &[LogRecord]) -> Result<(), Error> {
        if records.is_empty() {
            return Ok(());
        }
        let mut state = self.state.lock();
        // A backlog of set-aside heads holds appends back (for a while: records are never refused for it).
        let patience = std::time::Instant::now() + BACKLOG_PATIENCE;
        let backlog = SEALING_BACKLOG_CHUNKS * self.options.chunk_bytes;
        while state.sealing_bytes() > backlog && self.sealing_in_background.load(std::sync::atomic::Ordering::Acquire) {
            if self.room.wait_until(&mut state, patience).timed_out() {
                break;
            }
        }
        let (keep, advance) = state.replays.sift(records);
        let replayed = keep.iter().filter(|keep| !**keep).count();
        let records: Cow<'_, [LogRecord]> = if replayed == 0 {
            Cow::Borrowed(records)
        } else {
            metrics::counter!("vigil_logs_replayed_records_dropped_total").increment(replayed as u64);
            Cow::Owned(kept(records, &keep))
        };
        if records.is_empty() {
            return Ok(());
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        state.wal.append(seq, records.iter().map(wal::WalRecord::from))?;
        for record in records.iter() {
            let start = self.partition_start(record.ts_ns);
            self.push(&mut state, start, record, seq);
        }
        state.replays.apply(advance);
        Ok(())
    }

    fn select(&self, query: &LogQuery) -> Result<Vec<LogRecord>, Error> {
        let limit = query.limit.unwrap_or(usize::MAX);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut parts = self.scan(query)?;
        // Parts in the order of the records wanted first; once `limit` records are held, a part that
        // cannot hold a record to come before the last of them is not read.
        match query.backward {
            true => parts.sort_by_key(|p| std::cmp::Reverse(p.max_ns)),
            false => parts.sort_by_key(|p| p.min_ns),
        }
        // Read in waves of one part per core.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut parts = parts.into_iter().peekable();
        let mut records = Vec::new();
        loop {
            let (mut start_ns, mut end_ns) = (i64::MIN, i64::MAX);
            if records.len() >= limit {
                keep_first(&mut records, limit, query.backward);
                // Only records that may still come before the last one kept are built.
                let last = records[limit - 1].ts_ns;
                (start_ns, end_ns) = if query.backward { (last, i64::MAX) } else { (i64::MIN, last) };
            }
            let mut wave = Vec::with_capacity(threads);
            while wave.len() < threads {
                match parts.next_if(|p| p.max_ns >= start_ns && p.min_ns <= end_ns) {
                    Some(part) => wave.push(part),
                    None => break,
                }
            }
            if wave.is_empty() {
                break;
            }
            for read in read_parts(wave, start_ns, end_ns) {
                records.extend(read?);
            }
        }
        keep_first(&mut records, limit, query.backward);
        Ok(records)
    }

    fn scan(&self, query: &LogQuery) -> Result<Vec<ScanPart>, Error> {
        if query.start_ns >= query.end_ns {
            return Ok(Vec::new());
        }
        let (held, snapshots) = self.gather(query);
        let mut parts = Vec::new();
        let held_span = (held.iter().map(|r| r.ts_ns).min(), held.iter().map(|r| r.ts_ns).max());
        if let (Some(min_ns), Some(max_ns)) = held_span {
            parts.push(ScanPart::new(min_ns, max_ns, move |start_ns, end_ns, visit| {
                held.into_iter().filter(|r| (start_ns..=end_ns).contains(&r.ts_ns)).for_each(visit);
                Ok(())
            }));
        }
        let (tantivy_query, identifiers, edges) = self.build_query(query);
        let query = Arc::new(query.clone());
        for snapshot in snapshots {
            let chunks = snapshot.chunks(&tantivy_query)?;
            // Per edge identifier, the chunks that may hold it inside a longer token.
            let mut widened = Vec::with_capacity(edges.len());
            for edge in &edges {
                let clauses = vec![(Occur::Must, tantivy_query.box_clone()), (Occur::Must, edge.widen.box_clone())];
                let offsets = snapshot.chunks(&BooleanQuery::new(clauses))?.into_iter().map(|c| c.offset);
                widened.push(offsets.collect::<std::collections::HashSet<u64>>());
            }
            let snapshot = Arc::new(snapshot);
            for chunk in chunks {
                let mut required = identifiers.clone();
                let whole_only = edges.iter().zip(&widened).filter(|(_, widened)| !widened.contains(&chunk.offset));
                required.extend(whole_only.map(|(edge, _)| edge.hash));
                let (snapshot, query) = (snapshot.clone(), query.clone());
                parts.push(ScanPart::new(chunk.min_ns, chunk.max_ns, move |start_ns, end_ns, visit| {
                    let window = start_ns.max(query.start_ns)..=end_ns.min(query.end_ns - 1);
                    read_chunk(&snapshot, chunk.offset, &query, window, &required, visit)
                }));
            }
        }
        Ok(parts)
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
        // The registry, and the heads (which it covers from the next commit on).
        let heads = state.held().map(|(_, h)| (h.labels.as_ref(), (h.min_ns, h.max_ns)));
        let found: std::collections::BTreeSet<&BTreeMap<String, String>> = state
            .streams
            .iter()
            .map(|(labels, span)| (labels, *span))
            .chain(heads)
            .filter(|(_, (first, last))| *first < end_ns && *last >= start_ns)
            .filter(|(labels, _)| matchers.iter().all(|m| m.matches(labels.get(&m.name).map_or("", String::as_str))))
            .map(|(labels, _)| labels)
            .collect();
        Ok(found.into_iter().cloned().collect())
    }
}

#[cfg(test)]
mod tests;
