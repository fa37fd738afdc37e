//! The span store: a WAL-backed in-memory head for recent spans, and immutable Parquet blocks
//! ([`block`]) it is flushed into.
//!
//! An append is written to the WAL (and synced per policy) before it is acknowledged, then lands in the
//! head, where it is searchable at once. When the head holds `head_max_spans` spans, or is older than
//! `head_max_age`, the WAL is rotated, the head is frozen (still served) and a background thread writes it
//! as a block sorted by trace id; then the WAL segments it came from are deleted. The block's footer
//! names the last WAL segment it covers, so a crash between the two steps replays nothing twice. Two heads
//! waiting to be written is the most the store keeps: beyond that appends are refused as retryable.
//! Retention drops whole blocks by age and by total size.

mod block;
mod codec;
mod model;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use block::BlockMeta;
pub use model::{
    AttrValue, Attribute, Resource, Span, SpanEvent, SpanId, SpanKind, SpanLink, StatusCode, TraceId, attribute, hex,
    parse_hex_id,
};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::wal::{self, Wal, WalSync};

/// Distinct values kept per tag in a catalog; tags with more (ids, timestamps) stop growing there.
const MAX_TAG_VALUES: usize = 200;
/// Distinct tag names kept per scope in a catalog.
const MAX_TAG_NAMES: usize = 500;
/// WAL record type of a span batch.
const SPANS_RECORD: u8 = 1;

/// What the tag and name pickers read: services with their operations, and tag names with some values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// Service → operation name → the span kinds seen, as bits (`1 << kind`).
    pub operations: BTreeMap<String, BTreeMap<String, u8>>,
    /// Span attribute names → values (at most a few hundred each).
    pub span_tags: BTreeMap<String, BTreeSet<String>>,
    /// Resource attribute names → values.
    pub resource_tags: BTreeMap<String, BTreeSet<String>>,
}

fn add_tags(tags: &mut BTreeMap<String, BTreeSet<String>>, attributes: &[Attribute]) {
    for attribute in attributes {
        if let Some(values) = tags.get_mut(&attribute.key) {
            if values.len() < MAX_TAG_VALUES && !matches!(&attribute.value, AttrValue::Str(t) if values.contains(t)) {
                values.insert(attribute.value.text());
            }
            continue;
        }
        if tags.len() < MAX_TAG_NAMES {
            tags.insert(attribute.key.clone(), BTreeSet::from([attribute.value.text()]));
        }
    }
}

fn merge_tags(into: &mut BTreeMap<String, BTreeSet<String>>, from: &BTreeMap<String, BTreeSet<String>>) {
    for (key, values) in from {
        let into = into.entry(key.clone()).or_default();
        into.extend(values.iter().take(MAX_TAG_VALUES.saturating_sub(into.len())).cloned());
    }
}

impl Catalog {
    /// Records a span's service, operation and tags.
    pub fn add(&mut self, span: &Span) {
        self.add_span(span);
        add_tags(&mut self.resource_tags, &span.resource.attributes);
    }

    /// Records a span's service, operation and span tags, not its resource's.
    fn add_span(&mut self, span: &Span) {
        if !self.operations.contains_key(span.service()) {
            self.operations.insert(span.service().to_owned(), BTreeMap::new());
        }
        let operations = self.operations.get_mut(span.service()).expect("inserted above");
        let kind_bit = 1u8 << (span.kind as u8);
        match operations.get_mut(&span.name) {
            Some(kinds) => *kinds |= kind_bit,
            None => {
                operations.insert(span.name.clone(), kind_bit);
            }
        }
        add_tags(&mut self.span_tags, &span.attributes);
    }

    /// The operations of `service` with each kind they were seen with, sorted by name then kind.
    pub fn operations_of(&self, service: &str) -> Vec<(String, SpanKind)> {
        let mut out = Vec::new();
        for (name, kinds) in self.operations.get(service).into_iter().flatten() {
            for kind in 0..6 {
                if kinds & (1 << kind) != 0 {
                    out.push((name.clone(), SpanKind::from_number(kind)));
                }
            }
        }
        out
    }

    /// Adds everything in `other`.
    pub fn merge(&mut self, other: &Catalog) {
        for (service, operations) in &other.operations {
            let into = self.operations.entry(service.clone()).or_default();
            for (name, kinds) in operations {
                *into.entry(name.clone()).or_default() |= kinds;
            }
        }
        merge_tags(&mut self.span_tags, &other.span_tags);
        merge_tags(&mut self.resource_tags, &other.resource_tags);
    }
}

/// A span search: spans starting in `[start_ns, end_ns]` that pass the cheap checks and `span_matches`,
/// grouped by trace; a trace is a hit when `trace_matches` accepts its matching spans. At most `limit`
/// traces, the most recent data first.
pub struct SpanSearch<'a> {
    /// Earliest span start, ns.
    pub start_ns: i64,
    /// Latest span start, ns.
    pub end_ns: i64,
    /// Only spans of this service (lets whole blocks be skipped).
    pub service: Option<String>,
    /// Shortest span duration, ns.
    pub min_duration_ns: Option<i64>,
    /// Longest span duration, ns.
    pub max_duration_ns: Option<i64>,
    /// The full per-span condition.
    pub span_matches: &'a (dyn Fn(&Span) -> bool + Sync),
    /// The per-trace condition over the trace's matching spans.
    pub trace_matches: &'a (dyn Fn(&[Span]) -> bool + Sync),
    /// Most traces returned.
    pub limit: usize,
}

/// A trace found by a search, with its matching spans.
#[derive(Debug, Clone)]
pub struct TraceHit {
    /// The trace.
    pub trace_id: TraceId,
    /// Its spans that matched.
    pub spans: Vec<Span>,
}

/// Where spans are kept and searched.
pub trait SpanStore: Send + Sync {
    /// Stores spans durably; when this returns they are acknowledged.
    fn append(&self, spans: Vec<Span>) -> Result<(), Error>;
    /// Every stored span of a trace, in start order, each span once.
    fn trace(&self, trace_id: &TraceId) -> Result<Vec<Span>, Error>;
    /// Traces with spans matching `search`.
    fn search(&self, search: &SpanSearch) -> Result<Vec<TraceHit>, Error>;
    /// Services, operations and tags of spans overlapping `[start_ns, end_ns]`.
    fn catalog(&self, start_ns: i64, end_ns: i64) -> Result<Catalog, Error>;
}

/// Spans in memory, indexed by trace.
#[derive(Default)]
struct Head {
    spans: Vec<Span>,
    by_trace: HashMap<TraceId, Vec<u32>>,
    catalog: Catalog,
    min_ns: i64,
    max_ns: i64,
    created: Option<Instant>,
    /// Resources whose tags the catalog has (by address: the head's spans keep them alive).
    catalogued_resources: HashSet<usize>,
}

impl Head {
    fn push(&mut self, spans: Vec<Span>) {
        if self.spans.is_empty() {
            self.created = Some(Instant::now());
            (self.min_ns, self.max_ns) = (i64::MAX, i64::MIN);
        }
        for span in spans {
            self.catalog.add_span(&span);
            if self.catalogued_resources.insert(Arc::as_ptr(&span.resource) as usize) {
                add_tags(&mut self.catalog.resource_tags, &span.resource.attributes);
            }
            self.min_ns = self.min_ns.min(span.start_ns);
            self.max_ns = self.max_ns.max(span.end_ns);
            self.by_trace.entry(span.trace_id).or_default().push(self.spans.len() as u32);
            self.spans.push(span);
        }
    }

    fn trace(&self, id: &TraceId, out: &mut Vec<Span>) {
        for index in self.by_trace.get(id).into_iter().flatten() {
            out.push(self.spans[*index as usize].clone());
        }
    }

    fn overlaps(&self, start_ns: i64, end_ns: i64) -> bool {
        !self.spans.is_empty() && self.max_ns >= start_ns && self.min_ns <= end_ns
    }

    /// Matching spans grouped by trace, newest spans first.
    fn search(&self, search: &SpanSearch, hits: &mut Hits) {
        if !self.overlaps(search.start_ns, search.end_ns) {
            return;
        }
        let mut by_trace: Vec<(TraceId, Vec<Span>)> = Vec::new();
        let mut position: HashMap<TraceId, usize> = HashMap::new();
        for span in self.spans.iter().rev() {
            if !prefilter_accepts(search, span) || !(search.span_matches)(span) {
                continue;
            }
            let index = *position.entry(span.trace_id).or_insert_with(|| {
                by_trace.push((span.trace_id, Vec::new()));
                by_trace.len() - 1
            });
            by_trace[index].1.push(span.clone());
        }
        for (trace_id, spans) in by_trace {
            if hits.offer(search, trace_id, spans).is_break() {
                return;
            }
        }
    }
}

fn prefilter_accepts(search: &SpanSearch, span: &Span) -> bool {
    let duration = span.duration_ns();
    span.start_ns >= search.start_ns
        && span.start_ns <= search.end_ns
        && search.min_duration_ns.is_none_or(|min| duration >= min)
        && search.max_duration_ns.is_none_or(|max| duration <= max)
        && search.service.as_deref().is_none_or(|s| span.service() == s)
}

/// Search results being gathered, each trace once.
#[derive(Default)]
struct Hits {
    found: Vec<TraceHit>,
    seen: HashSet<TraceId>,
}

impl Hits {
    fn offer(&mut self, search: &SpanSearch, trace_id: TraceId, spans: Vec<Span>) -> ControlFlow<()> {
        if self.found.len() >= search.limit {
            return ControlFlow::Break(());
        }
        if !self.seen.contains(&trace_id) && (search.trace_matches)(&spans) {
            self.seen.insert(trace_id);
            self.found.push(TraceHit { trace_id, spans });
        }
        if self.found.len() >= search.limit { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    }
}

/// Sorts a trace's spans by start and drops repeats of a span id (a client's retry, or a block and WAL
/// both holding a span after a crash between writing one and trimming the other).
fn normalize_trace(spans: &mut Vec<Span>) {
    spans.sort_by_key(|s| (s.start_ns, s.span_id));
    let mut seen = HashSet::new();
    spans.retain(|span| seen.insert(span.span_id));
}

/// How the span store flushes and expires data.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    /// Spans the head holds before it is written as a block.
    pub head_max_spans: usize,
    /// Age at which a non-empty head is written as a block anyway.
    pub head_max_age: Duration,
    /// Blocks wholly older than this (before now) are dropped; `None` keeps everything.
    pub retention_ns: Option<i64>,
    /// While blocks take more bytes than this, the oldest are dropped; `None` for no limit.
    pub max_bytes: Option<u64>,
    /// When WAL writes are forced to disk.
    pub wal_sync: WalSync,
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            head_max_spans: 500_000,
            head_max_age: Duration::from_secs(600),
            retention_ns: None,
            max_bytes: None,
            wal_sync: WalSync::Always,
        }
    }
}

/// What opening the store found.
#[derive(Debug, Default)]
pub struct TraceOpenReport {
    /// Blocks opened.
    pub blocks: usize,
    /// Spans replayed from the WAL into the head.
    pub replayed_spans: usize,
    /// Unreadable blocks set aside (renamed `*.corrupt`) and WAL corruption skipped.
    pub corruptions: Vec<Error>,
}

struct State {
    head: Head,
    /// Heads being written as blocks, still served meanwhile, oldest first.
    frozen: Vec<Arc<Head>>,
    /// Blocks, oldest first.
    blocks: Vec<Arc<block::Block>>,
}

struct Inner {
    dir: PathBuf,
    options: TraceOptions,
    wal: Arc<Wal>,
    /// Orders WAL writes with head inserts and head cuts.
    write: Mutex<()>,
    state: RwLock<State>,
    next_block: std::sync::atomic::AtomicU64,
}

/// The on-disk [`SpanStore`] under one directory: `wal/` and `blocks/*.parquet`.
#[derive(Clone)]
pub struct TraceStore {
    inner: Arc<Inner>,
}

fn blocks_dir(dir: &Path) -> PathBuf {
    dir.join("blocks")
}

/// Opens every block in `dir`, setting aside unreadable ones; removes unfinished `.tmp` files.
fn open_blocks(dir: &Path, report: &mut TraceOpenReport) -> Result<Vec<Arc<block::Block>>, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut blocks = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_owned();
        if name.ends_with(".tmp") {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            continue;
        }
        if !name.ends_with(".parquet") {
            continue;
        }
        match block::Block::open(&path) {
            Ok(block) => blocks.push(Arc::new(block)),
            Err(error) => {
                let aside = path.with_extension("parquet.corrupt");
                std::fs::rename(&path, &aside).map_err(|e| Error::io(&path, e))?;
                report.corruptions.push(error);
            }
        }
    }
    blocks.sort_by_key(|b| (b.meta.min_ns, b.path().to_owned()));
    Ok(blocks)
}

impl TraceStore {
    /// Opens (or creates) the store under `dir`, replaying the WAL into the head.
    pub fn open(dir: &Path, options: TraceOptions) -> Result<(TraceStore, TraceOpenReport), Error> {
        let mut report = TraceOpenReport::default();
        let blocks = open_blocks(&blocks_dir(dir), &mut report)?;
        report.blocks = blocks.len();
        let wal_dir = dir.join("wal");
        std::fs::create_dir_all(&wal_dir).map_err(|e| Error::io(&wal_dir, e))?;
        let covered = blocks.iter().map(|b| b.meta.wal_upto).max().unwrap_or(0);
        if covered > 0 {
            wal::write_checkpoint(&wal_dir, covered, &[])?;
        }
        let mut head = Head::default();
        let mut bad_records = 0usize;
        let replay = wal::replay(&wal_dir, |record_type, payload| {
            if record_type != SPANS_RECORD {
                return;
            }
            match codec::decode_batch(payload) {
                Ok(spans) => head.push(spans),
                Err(_) => bad_records += 1,
            }
        })?;
        report.corruptions.extend(replay.corruptions);
        if bad_records > 0 {
            report.corruptions.push(Error::Corruption {
                path: wal_dir.clone(),
                offset: 0,
                reason: format!("{bad_records} span records did not decode"),
            });
        }
        report.replayed_spans = head.spans.len();
        let wal = Wal::open(&wal_dir, options.wal_sync, 64 << 20)?;
        let next_block = blocks.len() as u64;
        let inner = Inner {
            dir: dir.to_owned(),
            options,
            wal,
            write: Mutex::new(()),
            state: RwLock::new(State { head, frozen: Vec::new(), blocks }),
            next_block: std::sync::atomic::AtomicU64::new(next_block),
        };
        Ok((TraceStore { inner: Arc::new(inner) }, report))
    }

    /// Writes the head as a block now (if it holds spans) and waits until it is on disk.
    pub fn flush_head(&self) -> Result<(), Error> {
        match self.cut()? {
            Some(frozen) => self.inner.write_block(frozen),
            None => Ok(()),
        }
    }

    /// Freezes the head and rotates the WAL; the caller writes the returned head as a block.
    fn cut(&self) -> Result<Option<(Arc<Head>, u32)>, Error> {
        let _write = self.inner.write.lock();
        if self.inner.state.read().head.spans.is_empty() {
            return Ok(None);
        }
        let closed_segment = self.inner.wal.rotate()?;
        let mut state = self.inner.state.write();
        let frozen = Arc::new(std::mem::take(&mut state.head));
        state.frozen.push(frozen.clone());
        Ok(Some((frozen, closed_segment)))
    }

    /// Cuts the head in the background when it is full.
    fn cut_in_background_if_full(&self) -> Result<(), Error> {
        let full = self.inner.state.read().head.spans.len() >= self.inner.options.head_max_spans;
        if !full {
            return Ok(());
        }
        if let Some(frozen) = self.cut()? {
            let inner = self.inner.clone();
            std::thread::Builder::new()
                .name("span-block".into())
                .spawn(move || {
                    if let Err(error) = inner.write_block(frozen) {
                        tracing::error!(%error, "writing a span block failed; its spans stay in the WAL and head");
                    }
                })
                .map_err(|e| Error::io(&self.inner.dir, e))?;
        }
        Ok(())
    }

    /// Periodic upkeep: writes an old head as a block, then applies retention. Returns the blocks dropped.
    pub fn maintain(&self, now_ns: i64) -> Result<Vec<PathBuf>, Error> {
        let old = self.inner.state.read().head.created.is_some_and(|c| c.elapsed() >= self.inner.options.head_max_age);
        if old {
            self.flush_head()?;
        }
        self.apply_retention(now_ns)
    }

    /// Drops blocks past the retention time, then the oldest while over the size limit.
    pub fn apply_retention(&self, now_ns: i64) -> Result<Vec<PathBuf>, Error> {
        let mut dropped = Vec::new();
        let mut state = self.inner.state.write();
        if let Some(retention) = self.inner.options.retention_ns {
            let cutoff = now_ns.saturating_sub(retention);
            state.blocks.retain(|block| {
                let keep = block.meta.max_ns >= cutoff;
                if !keep {
                    dropped.push(block.path().to_owned());
                }
                keep
            });
        }
        if let Some(max_bytes) = self.inner.options.max_bytes {
            let mut total: u64 = state.blocks.iter().map(|b| b.size_bytes()).sum();
            while total > max_bytes && !state.blocks.is_empty() {
                let oldest = state.blocks.remove(0);
                total -= oldest.size_bytes();
                dropped.push(oldest.path().to_owned());
            }
        }
        drop(state);
        for path in &dropped {
            std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
        }
        Ok(dropped)
    }

    /// Bytes of the blocks on disk.
    pub fn size_bytes(&self) -> u64 {
        self.inner.state.read().blocks.iter().map(|b| b.size_bytes()).sum()
    }

    /// Spans in memory (head and heads being written).
    pub fn head_spans(&self) -> usize {
        let state = self.inner.state.read();
        state.head.spans.len() + state.frozen.iter().map(|h| h.spans.len()).sum::<usize>()
    }

    /// Metadata of the blocks, oldest first.
    pub fn blocks(&self) -> Vec<BlockMeta> {
        self.inner.state.read().blocks.iter().map(|b| b.meta.clone()).collect()
    }

    /// Forces the WAL to disk (on shutdown).
    pub fn flush(&self) -> Result<(), Error> {
        self.inner.wal.flush()
    }
}

impl Inner {
    /// Writes a frozen head as a block, swaps it in, and deletes the WAL segments it covered.
    fn write_block(&self, (head, wal_upto): (Arc<Head>, u32)) -> Result<(), Error> {
        let number = self.next_block.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let started = Instant::now();
        let path = blocks_dir(&self.dir).join(format!("{:020}-{number:06}.parquet", head.min_ns.max(0)));
        let block = Arc::new(block::write(&path, &head.spans, &head.catalog, wal_upto)?);
        {
            let mut state = self.state.write();
            state.frozen.retain(|frozen| !Arc::ptr_eq(frozen, &head));
            state.blocks.push(block.clone());
            state.blocks.sort_by_key(|b| (b.meta.min_ns, b.path().to_owned()));
        }
        wal::write_checkpoint(self.wal.dir(), wal_upto, &[])?;
        tracing::info!(
            spans = head.spans.len(),
            bytes = block.size_bytes(),
            took_ms = started.elapsed().as_millis() as u64,
            "span block written"
        );
        metrics::counter!("vigil_traces_blocks_written_total").increment(1);
        Ok(())
    }
}

impl SpanStore for TraceStore {
    fn append(&self, spans: Vec<Span>) -> Result<(), Error> {
        if spans.is_empty() {
            return Ok(());
        }
        if self.inner.state.read().frozen.len() >= 2 {
            return Err(Error::LimitExceeded("span blocks are being written; retry shortly".into()));
        }
        let mut framed = Vec::new();
        wal::frame(SPANS_RECORD, &codec::encode_batch(&spans), &mut framed);
        let seq = {
            let _write = self.inner.write.lock();
            let seq = self.inner.wal.write(&framed)?;
            self.inner.state.write().head.push(spans);
            seq
        };
        self.inner.wal.commit(seq)?;
        self.cut_in_background_if_full()
    }

    fn trace(&self, trace_id: &TraceId) -> Result<Vec<Span>, Error> {
        let (mut spans, blocks) = {
            let state = self.inner.state.read();
            let mut spans = Vec::new();
            state.head.trace(trace_id, &mut spans);
            for frozen in &state.frozen {
                frozen.trace(trace_id, &mut spans);
            }
            (spans, state.blocks.clone())
        };
        for block in &blocks {
            spans.extend(block.trace(trace_id)?);
        }
        normalize_trace(&mut spans);
        Ok(spans)
    }

    fn search(&self, search: &SpanSearch) -> Result<Vec<TraceHit>, Error> {
        let mut hits = Hits::default();
        let blocks = {
            let state = self.inner.state.read();
            state.head.search(search, &mut hits);
            for frozen in state.frozen.iter().rev() {
                frozen.search(search, &mut hits);
            }
            state.blocks.clone()
        };
        let prefilter = block::Prefilter {
            start_ns: search.start_ns,
            end_ns: search.end_ns,
            service: search.service.clone(),
            min_duration_ns: search.min_duration_ns,
            max_duration_ns: search.max_duration_ns,
        };
        for block in blocks.iter().rev() {
            if hits.found.len() >= search.limit {
                break;
            }
            search_block(block, &prefilter, search, &mut hits)?;
        }
        Ok(hits.found)
    }

    fn catalog(&self, start_ns: i64, end_ns: i64) -> Result<Catalog, Error> {
        let state = self.inner.state.read();
        let mut catalog = Catalog::default();
        if state.head.overlaps(start_ns, end_ns) {
            catalog.merge(&state.head.catalog);
        }
        for frozen in state.frozen.iter().filter(|h| h.overlaps(start_ns, end_ns)) {
            catalog.merge(&frozen.catalog);
        }
        for block in state.blocks.iter().filter(|b| b.meta.max_ns >= start_ns && b.meta.min_ns <= end_ns) {
            catalog.merge(&block.meta.catalog);
        }
        Ok(catalog)
    }
}

/// Feeds a block's matching spans, trace by trace (blocks are sorted by trace), to `hits`.
fn search_block(
    block: &block::Block,
    prefilter: &block::Prefilter,
    search: &SpanSearch,
    hits: &mut Hits,
) -> Result<(), Error> {
    let mut current: Option<(TraceId, Vec<Span>)> = None;
    let mut stopped = false;
    block.search(prefilter, |span| {
        if !(search.span_matches)(&span) {
            return ControlFlow::Continue(());
        }
        match &mut current {
            Some((trace_id, spans)) if *trace_id == span.trace_id => spans.push(span),
            _ => {
                if let Some((trace_id, spans)) = current.replace((span.trace_id, vec![span]))
                    && hits.offer(search, trace_id, spans).is_break()
                {
                    stopped = true;
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    })?;
    if let Some((trace_id, spans)) = current.filter(|_| !stopped) {
        let _ = hits.offer(search, trace_id, spans);
    }
    Ok(())
}

/// A [`SpanStore`] in memory only, for tests of the crates above.
#[derive(Default)]
pub struct MemorySpanStore {
    head: RwLock<Head>,
}

impl SpanStore for MemorySpanStore {
    fn append(&self, spans: Vec<Span>) -> Result<(), Error> {
        self.head.write().push(spans);
        Ok(())
    }

    fn trace(&self, trace_id: &TraceId) -> Result<Vec<Span>, Error> {
        let mut spans = Vec::new();
        self.head.read().trace(trace_id, &mut spans);
        normalize_trace(&mut spans);
        Ok(spans)
    }

    fn search(&self, search: &SpanSearch) -> Result<Vec<TraceHit>, Error> {
        let mut hits = Hits::default();
        self.head.read().search(search, &mut hits);
        Ok(hits.found)
    }

    fn catalog(&self, start_ns: i64, end_ns: i64) -> Result<Catalog, Error> {
        let head = self.head.read();
        Ok(if head.overlaps(start_ns, end_ns) { head.catalog.clone() } else { Catalog::default() })
    }
}

#[cfg(test)]
mod tests;
