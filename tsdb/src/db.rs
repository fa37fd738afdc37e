//! The database: blocks, head and WAL, behind the [`Appender`] and [`Queryable`] traits.
//!
//! Maintenance ([`Db::maintain`]) moves old head data into blocks, compacts blocks, and applies retention.
//! Each step is crash-safe: a block becomes visible only once renamed into place; the head is truncated
//! and the WAL checkpointed only after that; on open, partial (`.tmp`) blocks are deleted, blocks already
//! merged into a complete one are deleted, and WAL samples at or before the newest block time are skipped.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::block::{Block, BlockMeta, BlockWriter, TMP_SUFFIX};
use crate::head::Head;
use crate::postings::SeriesId;
use crate::varint::{put_uvarint, put_varint, uvarint, varint};
use crate::wal::{self, Wal, WalSync};
use crate::{
    Appender, CardinalityStats, Error, HeadLimits, Label, LabelReader, Labels, Matcher, MetricMetadata, Queryable,
    RefBatch, Sample, SampleError, Series, SeriesSamples, Timestamp,
};

const METADATA_FILE: &str = "metadata.json";

const RECORD_SERIES: u8 = 1;
const RECORD_SAMPLES: u8 = 2;

/// Storage settings.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// Samples up to this far behind a series' newest sample are accepted (0 rejects any out-of-order sample).
    pub out_of_order_window_ms: i64,
    /// Series and label limits.
    pub limits: HeadLimits,
    /// WAL fsync policy.
    pub wal_sync: WalSync,
    /// Bytes per WAL segment before a new one is started.
    pub wal_segment_size: u64,
    /// Time range of a block cut from the head; the head holds about 1.5 of these before a cut.
    pub block_duration_ms: i64,
    /// Blocks whose newest sample is older than this (relative to the newest data) are deleted.
    pub retention_ms: Option<i64>,
    /// Oldest blocks are deleted while blocks take more bytes than this.
    pub retention_bytes: Option<u64>,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            out_of_order_window_ms: 10 * 60 * 1000,
            limits: HeadLimits::default(),
            wal_sync: WalSync::Always,
            wal_segment_size: 128 << 20,
            block_duration_ms: 2 * 60 * 60 * 1000,
            retention_ms: Some(15 * 24 * 60 * 60 * 1000),
            retention_bytes: None,
        }
    }
}

/// What opening a data directory found.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Series restored.
    pub series: usize,
    /// Samples restored.
    pub samples: u64,
    /// Bytes of a torn final WAL record that were cut.
    pub truncated_bytes: u64,
    /// Corrupt WAL regions and unreadable blocks skipped (the rest is served).
    pub corruptions: Vec<Error>,
    /// Blocks opened.
    pub blocks: usize,
    /// Partial block directories (a crash while writing) deleted.
    pub partial_blocks_removed: usize,
}

/// What one [`Db::maintain`] pass did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MaintenanceReport {
    /// Blocks cut from the head.
    pub cut: Vec<BlockMeta>,
    /// Blocks written by compaction.
    pub compacted: Vec<BlockMeta>,
    /// Time ranges of blocks deleted by retention.
    pub deleted: Vec<(Timestamp, Timestamp)>,
}

/// One sample that was not stored, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedSample {
    /// The series it belonged to.
    pub labels: Labels,
    /// The sample.
    pub sample: Sample,
    /// The reason.
    pub error: SampleError,
}

/// Outcome of a batch append.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AppendSummary {
    /// Samples stored (identical duplicates count as stored).
    pub accepted: usize,
    /// Series created by this batch.
    pub series_created: usize,
    /// Samples refused, with reasons.
    pub rejected: Vec<RejectedSample>,
}

/// The metrics database: see the crate docs.
pub struct Db {
    head: RwLock<Head>,
    wal: Option<Arc<Wal>>,
    blocks: RwLock<Vec<Arc<Block>>>,
    /// One maintenance step at a time.
    maintenance: Mutex<()>,
    block_sequence: AtomicU64,
    /// Metric family metadata, persisted to `metadata.json` when it changes.
    metadata: RwLock<BTreeMap<String, MetricMetadata>>,
    options: DbOptions,
    dir: Option<PathBuf>,
}

/// A batch, validated against the head but not applied yet.
#[derive(Default)]
struct Plan {
    new_series: Vec<(SeriesId, Labels)>,
    samples: Vec<(SeriesId, Sample)>,
    summary: AppendSummary,
}

impl Db {
    /// A database held only in memory (no WAL): the in-memory implementation for tests.
    pub fn in_memory(options: DbOptions) -> Self {
        Db {
            head: RwLock::new(Head::default()),
            wal: None,
            blocks: RwLock::new(Vec::new()),
            maintenance: Mutex::new(()),
            block_sequence: AtomicU64::new(0),
            metadata: RwLock::new(BTreeMap::new()),
            options,
            dir: None,
        }
    }

    /// Opens (or creates) the database under `dir`: its blocks, then the WAL on top.
    pub fn open(dir: &Path, options: DbOptions) -> Result<(Self, OpenReport), Error> {
        let mut report = OpenReport::default();
        let blocks = open_blocks(&dir.join("blocks"), &mut report)?;
        let floor = blocks.iter().map(|b| b.meta().covers_until).max().unwrap_or(Timestamp::MIN);
        let wal_dir = dir.join("wal");
        std::fs::create_dir_all(&wal_dir).map_err(|e| Error::io(&wal_dir, e))?;
        let mut head = Head::default();
        if floor != Timestamp::MIN {
            head.truncate(floor);
        }
        let mut samples = 0u64;
        let mut undecodable = 0u64;
        let replay = wal::replay(&wal_dir, |record_type, payload| {
            let decoded = match record_type {
                RECORD_SERIES => replay_series(&mut head, payload),
                RECORD_SAMPLES => replay_samples(&mut head, payload).map(|n| samples += n),
                _ => None,
            };
            if decoded.is_none() {
                undecodable += 1;
            }
        })?;
        report.series = head.series_count();
        report.samples = samples;
        report.truncated_bytes = replay.truncated_bytes;
        report.corruptions.extend(replay.corruptions);
        report.blocks = blocks.len();
        if undecodable > 0 {
            report.corruptions.push(Error::Corruption {
                path: wal_dir.clone(),
                offset: 0,
                reason: format!("{undecodable} records with valid checksums did not decode"),
            });
        }
        let metadata = load_metadata(dir, &mut report);
        let wal = Wal::open(&wal_dir, options.wal_sync, options.wal_segment_size)?;
        let db = Db {
            head: RwLock::new(head),
            wal: Some(wal),
            blocks: RwLock::new(blocks),
            maintenance: Mutex::new(()),
            block_sequence: AtomicU64::new(0),
            metadata: RwLock::new(metadata),
            options,
            dir: Some(dir.to_owned()),
        };
        Ok((db, report))
    }

    /// The data directory, `None` in memory.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Forces everything acknowledged so far to disk (called on shutdown).
    pub fn flush(&self) -> Result<(), Error> {
        match &self.wal {
            Some(wal) => wal.flush(),
            None => Ok(()),
        }
    }

    fn plan(&self, head: &Head, grouped: Grouped<'_>) -> Plan {
        let mut plan = Plan::default();
        plan.samples.reserve(grouped.iter().map(|g| g.samples.len()).sum());
        let mut next_id = head.next_id();
        for Group { series, mut samples } in grouped {
            let (id, existing, new_labels) = match series {
                GroupSeries::Known(id) => (id, Some(id), None),
                GroupSeries::New(labels) => {
                    if let Err(reason) = self.admit_series(head, &labels, plan.new_series.len()) {
                        reject_all(&mut plan.summary, &labels, &samples, SampleError::SeriesRejected(reason));
                        continue;
                    }
                    let id = next_id;
                    next_id += 1;
                    plan.new_series.push((id, labels.clone()));
                    plan.summary.series_created += 1;
                    (id, None, Some(labels))
                }
            };
            let labels = || new_labels.clone().unwrap_or_else(|| head.labels(id).clone());
            if !samples.is_sorted_by_key(|sample| sample.t) {
                samples.to_mut().sort_by_key(|sample| sample.t);
            }
            let mut pending: Option<Sample> = None;
            for &sample in samples.iter() {
                let verdict = match pending {
                    Some(previous) if previous.t == sample.t => {
                        if previous.v.to_bits() == sample.v.to_bits() {
                            Ok(false)
                        } else {
                            Err(SampleError::DuplicateTimestamp)
                        }
                    }
                    _ => head.check(existing, sample, pending.map(|p| p.t), self.options.out_of_order_window_ms),
                };
                match verdict {
                    Ok(store) => {
                        plan.summary.accepted += 1;
                        if store {
                            plan.samples.push((id, sample));
                            pending = Some(sample);
                        }
                    }
                    Err(error) => plan.summary.rejected.push(RejectedSample { labels: labels(), sample, error }),
                }
            }
        }
        plan
    }

    fn admit_series(&self, head: &Head, labels: &Labels, already_planned: usize) -> Result<(), String> {
        self.options.limits.check(labels)?;
        if head.series_count() + already_planned >= self.options.limits.max_series {
            metrics::counter!("vigil_tsdb_limit_hits_total", "limit" => "max_series").increment(1);
            return Err(format!("series limit of {} reached", self.options.limits.max_series));
        }
        Ok(())
    }
}

/// Which series a group's samples go to.
enum GroupSeries {
    /// One in the head.
    Known(SeriesId),
    /// One the batch creates.
    New(Labels),
}

/// One series' samples in a batch: borrowed from the batch, copied only when the series came twice.
struct Group<'a> {
    series: GroupSeries,
    samples: Cow<'a, [Sample]>,
}

/// A batch's samples per series, in first-seen order.
type Grouped<'a> = Vec<Group<'a>>;

/// Merges the entries of one series (the same labels given twice in a batch) into one.
struct Grouper<'a> {
    order: Grouped<'a>,
    by_id: HashMap<SeriesId, usize, foldhash::fast::RandomState>,
    new_series: HashMap<Labels, usize, foldhash::fast::RandomState>,
}

impl<'a> Grouper<'a> {
    fn with_capacity(entries: usize) -> Self {
        Grouper {
            order: Vec::with_capacity(entries),
            by_id: HashMap::with_capacity_and_hasher(entries, Default::default()),
            new_series: HashMap::default(),
        }
    }

    fn add(&mut self, series: GroupSeries, samples: &'a [Sample]) {
        let slot = match &series {
            GroupSeries::Known(id) => self.by_id.get(id),
            GroupSeries::New(labels) => self.new_series.get(labels),
        };
        if let Some(&position) = slot {
            self.order[position].samples.to_mut().extend_from_slice(samples);
            return;
        }
        match &series {
            GroupSeries::Known(id) => self.by_id.insert(*id, self.order.len()),
            GroupSeries::New(labels) => self.new_series.insert(labels.clone(), self.order.len()),
        };
        self.order.push(Group { series, samples: Cow::Borrowed(samples) });
    }
}

/// A batch's entries grouped by series (a series may appear more than once), each with its head id
/// if it exists. Label sets are hashed once: existing series are grouped by id.
fn group_by_series<'a>(head: &Head, batch: &'a [SeriesSamples]) -> Grouped<'a> {
    let mut grouper = Grouper::with_capacity(batch.len());
    for entry in batch {
        let series = match head.lookup(&entry.labels) {
            Some(id) => GroupSeries::Known(id),
            None => GroupSeries::New(entry.labels.clone()),
        };
        grouper.add(series, &entry.samples);
    }
    grouper.order
}

/// Like [`group_by_series`] for series given by label bytes: known series are found by their key without
/// decoding it; only unknown ones are read (with `read`) into labels, and checked.
fn group_refs<'a>(head: &Head, batch: &'a RefBatch<'_>, read: LabelReader<'_>) -> Result<Grouped<'a>, Error> {
    let mut grouper = Grouper::with_capacity(batch.series.len());
    for (key, samples) in batch.iter() {
        let series = match head.lookup_key(key) {
            Some(id) => GroupSeries::Known(id),
            None => {
                let labels = Labels::new(read(key).map_err(Error::InvalidSeries)?)?;
                // Bytes laid out otherwise (unsorted, empty values, other field order) miss the key lookup.
                match head.lookup(&labels) {
                    Some(id) => GroupSeries::Known(id),
                    None => GroupSeries::New(labels),
                }
            }
        };
        grouper.add(series, samples);
    }
    Ok(grouper.order)
}

fn reject_all(summary: &mut AppendSummary, labels: &Labels, samples: &[Sample], error: SampleError) {
    for sample in samples {
        summary.rejected.push(RejectedSample { labels: labels.clone(), sample: *sample, error: error.clone() });
    }
}

fn encode_plan(plan: &Plan) -> Vec<u8> {
    let mut framed = Vec::new();
    if !plan.new_series.is_empty() {
        let mut payload = Vec::new();
        for (id, labels) in &plan.new_series {
            put_uvarint(&mut payload, u64::from(*id));
            put_uvarint(&mut payload, labels.len() as u64);
            for label in labels.iter() {
                put_uvarint(&mut payload, label.name.len() as u64);
                payload.extend_from_slice(label.name.as_bytes());
                put_uvarint(&mut payload, label.value.len() as u64);
                payload.extend_from_slice(label.value.as_bytes());
            }
        }
        wal::frame(RECORD_SERIES, &payload, &mut framed);
    }
    if !plan.samples.is_empty() {
        let mut payload = Vec::with_capacity(plan.samples.len() * 14);
        for (id, sample) in &plan.samples {
            put_uvarint(&mut payload, u64::from(*id));
            put_varint(&mut payload, sample.t);
            payload.extend_from_slice(&sample.v.to_bits().to_le_bytes());
        }
        wal::frame(RECORD_SAMPLES, &payload, &mut framed);
    }
    framed
}

/// WAL records (series, then samples) for everything the head still holds: a checkpoint's content.
fn encode_snapshot(head: &Head) -> Vec<u8> {
    let mut plan = Plan::default();
    for (id, labels, samples) in head.snapshot() {
        plan.new_series.push((id, labels.clone()));
        plan.samples.extend(samples.into_iter().map(|sample| (id, sample)));
    }
    encode_plan(&plan)
}

fn load_metadata(dir: &Path, report: &mut OpenReport) -> BTreeMap<String, MetricMetadata> {
    let path = dir.join(METADATA_FILE);
    let Ok(bytes) = std::fs::read(&path) else { return BTreeMap::new() };
    match serde_json::from_slice(&bytes) {
        Ok(metadata) => metadata,
        Err(error) => {
            report.corruptions.push(Error::Corruption { path, offset: 0, reason: error.to_string() });
            BTreeMap::new()
        }
    }
}

/// Opens every complete block under `dir`, deleting partial ones and ones already compacted into another.
fn open_blocks(dir: &Path, report: &mut OpenReport) -> Result<Vec<Arc<Block>>, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut blocks = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if !path.is_dir() {
            continue;
        }
        if path.to_string_lossy().ends_with(TMP_SUFFIX) {
            tracing::warn!(path = %path.display(), "removing partially written block");
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            report.partial_blocks_removed += 1;
            continue;
        }
        match Block::open(&path) {
            Ok(block) => blocks.push(Arc::new(block)),
            Err(error) => {
                tracing::error!(%error, "block skipped");
                report.corruptions.push(error);
            }
        }
    }
    let replaced: Vec<String> = blocks.iter().flat_map(|b| b.meta().sources.clone()).collect();
    let (superseded, kept): (Vec<_>, Vec<_>) = blocks.into_iter().partition(|b| replaced.contains(&b.name()));
    for block in superseded {
        tracing::info!(block = block.name(), "removing block already compacted into another");
        remove_block_dir(block.dir())?;
    }
    let mut kept = kept;
    kept.sort_by_key(|b| b.meta().min_time);
    Ok(kept)
}

/// Renames a block directory to a `.tmp` name first, so a crash mid-delete leaves a partial block that
/// the next open removes rather than a broken one it would try to read.
fn remove_block_dir(dir: &Path) -> Result<(), Error> {
    let doomed = PathBuf::from(format!("{}.deleting{TMP_SUFFIX}", dir.display()));
    std::fs::rename(dir, &doomed).map_err(|e| Error::io(dir, e))?;
    std::fs::remove_dir_all(&doomed).map_err(|e| Error::io(&doomed, e))
}

/// How many series' samples are copied out of the head per read-lock hold while writing a block.
const CUT_BATCH: usize = 1024;

impl Db {
    fn blocks_dir(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|dir| dir.join("blocks"))
    }

    fn next_block_name(&self) -> String {
        let sequence = self.block_sequence.fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        format!("{:013}-{:06}", now.as_millis(), sequence)
    }

    /// The open blocks, oldest first.
    pub fn blocks(&self) -> Vec<BlockMeta> {
        self.blocks.read().iter().map(|b| b.meta().clone()).collect()
    }

    /// Moves head samples at or before `cut` into a new block, then frees them from memory and
    /// checkpoints the WAL. Appends at or before `cut` are refused from the moment this starts.
    /// Returns the new block's meta, `None` when there was nothing to move (or no data directory).
    pub fn flush_head_before(&self, cut: Timestamp) -> Result<Option<BlockMeta>, Error> {
        let _maintenance = self.maintenance.lock();
        let Some(blocks_dir) = self.blocks_dir() else {
            return Ok(None);
        };
        let (previous_floor, ids) = {
            let mut head = self.head.write();
            let previous_floor = head.append_floor();
            if cut <= previous_floor {
                return Ok(None);
            }
            head.set_append_floor(cut);
            (previous_floor, head.ids_by_labels())
        };
        let written = self.write_head_block(&blocks_dir, &ids, previous_floor.saturating_add(1), cut);
        let written = match written {
            Ok(written) => written,
            Err(error) => {
                self.head.write().set_append_floor(previous_floor);
                return Err(error);
            }
        };
        let Some((name, meta)) = written else {
            // Nothing at or before `cut`: no block, and the floor goes back so nothing is refused for it.
            self.head.write().set_append_floor(previous_floor);
            return Ok(None);
        };
        let block = Block::open(&blocks_dir.join(name))?;
        {
            let mut blocks = self.blocks.write();
            blocks.push(Arc::new(block));
            blocks.sort_by_key(|b| b.meta().min_time);
        }
        self.truncate_head_and_checkpoint(cut)?;
        metrics::counter!("vigil_tsdb_blocks_cut_total").increment(1);
        Ok(Some(meta))
    }

    fn write_head_block(
        &self,
        blocks_dir: &Path,
        ids: &[SeriesId],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Option<(String, BlockMeta)>, Error> {
        let name = self.next_block_name();
        let mut writer = BlockWriter::create(blocks_dir, &name, 1, Vec::new(), maxt)?;
        for batch in ids.chunks(CUT_BATCH) {
            let copied: Vec<(Labels, Vec<Sample>)> = {
                let head = self.head.read();
                batch
                    .iter()
                    .filter_map(|id| head.series_samples(*id, mint, maxt))
                    .map(|(labels, samples)| (labels.clone(), samples))
                    .collect()
            };
            for (labels, samples) in copied {
                writer.add(&labels, &samples)?;
            }
        }
        Ok(writer.finish()?.map(|meta| (name, meta)))
    }

    fn truncate_head_and_checkpoint(&self, cut: Timestamp) -> Result<(), Error> {
        let (closed_segment, snapshot) = {
            let mut head = self.head.write();
            head.truncate(cut);
            match &self.wal {
                Some(wal) => (Some(wal.rotate()?), encode_snapshot(&head)),
                None => (None, Vec::new()),
            }
        };
        if let (Some(wal), Some(closed)) = (&self.wal, closed_segment) {
            wal::write_checkpoint(wal.dir(), closed, &snapshot)?;
        }
        Ok(())
    }

    /// Merges blocks that lie in one window of a larger range (see `compaction_candidates`) until none
    /// are left to merge. Returns the blocks written.
    pub fn compact(&self) -> Result<Vec<BlockMeta>, Error> {
        let _maintenance = self.maintenance.lock();
        let Some(blocks_dir) = self.blocks_dir() else {
            return Ok(Vec::new());
        };
        let mut written = Vec::new();
        while let Some(group) = self.compaction_candidates() {
            let level = group.iter().map(|b| b.meta().level).max().unwrap_or(1) + 1;
            let sources: Vec<String> = group.iter().map(|b| b.name()).collect();
            let mut merged: BTreeMap<Labels, Vec<Sample>> = BTreeMap::new();
            for block in &group {
                for series in block.all_series()? {
                    merged.entry(series.labels).or_default().extend(series.samples);
                }
            }
            let name = self.next_block_name();
            let covers_until = group.iter().map(|b| b.meta().covers_until).max().unwrap_or(Timestamp::MIN);
            let mut writer = BlockWriter::create(&blocks_dir, &name, level, sources, covers_until)?;
            for (labels, mut samples) in merged {
                samples.sort_by_key(|s| s.t);
                samples.dedup_by_key(|s| s.t);
                writer.add(&labels, &samples)?;
            }
            let Some(meta) = writer.finish()? else { break };
            let block = Arc::new(Block::open(&blocks_dir.join(&name))?);
            {
                let mut blocks = self.blocks.write();
                blocks.retain(|b| !group.iter().any(|g| Arc::ptr_eq(b, g)));
                blocks.push(block);
                blocks.sort_by_key(|b| b.meta().min_time);
            }
            for source in &group {
                remove_block_dir(source.dir())?;
            }
            metrics::counter!("vigil_tsdb_compactions_total").increment(1);
            written.push(meta);
        }
        Ok(written)
    }

    /// The first group to merge: for windows of 3, 9, 27 and 81 block durations (smallest first), all
    /// blocks lying inside one window, when there are at least two and the window is complete.
    fn compaction_candidates(&self) -> Option<Vec<Arc<Block>>> {
        let blocks = self.blocks.read();
        // A window is complete once blocks hold data past it or the head's floor (`covers_until`) passed it.
        let newest = blocks.iter().map(|b| b.meta().max_time.max(b.meta().covers_until)).max()?;
        for power in 1..=4u32 {
            let range = self.options.block_duration_ms.saturating_mul(3i64.pow(power));
            let mut windows: BTreeMap<i64, Vec<Arc<Block>>> = BTreeMap::new();
            for block in blocks.iter() {
                let window = block.meta().min_time.div_euclid(range);
                let window_end = window.saturating_add(1).saturating_mul(range);
                if block.meta().max_time < window_end {
                    windows.entry(window).or_default().push(block.clone());
                }
            }
            for (window, group) in windows {
                let window_end = window.saturating_add(1).saturating_mul(range);
                if group.len() >= 2 && newest >= window_end - 1 {
                    return Some(group);
                }
            }
        }
        None
    }

    /// Deletes blocks past the time or size retention; `reference` is the newest time the data has.
    /// Returns the deleted blocks' time ranges.
    pub fn apply_retention(&self, reference: Timestamp) -> Result<Vec<(Timestamp, Timestamp)>, Error> {
        let _maintenance = self.maintenance.lock();
        let doomed: Vec<Arc<Block>> = {
            let blocks = self.blocks.read();
            let mut doomed: Vec<Arc<Block>> = match self.options.retention_ms {
                Some(retention) => {
                    blocks.iter().filter(|b| b.meta().max_time < reference.saturating_sub(retention)).cloned().collect()
                }
                None => Vec::new(),
            };
            if let Some(limit) = self.options.retention_bytes {
                let mut total: u64 =
                    blocks.iter().filter(|b| !doomed.iter().any(|d| Arc::ptr_eq(d, b))).map(|b| b.size_bytes()).sum();
                for block in blocks.iter() {
                    if total <= limit {
                        break;
                    }
                    if !doomed.iter().any(|d| Arc::ptr_eq(d, block)) {
                        total -= block.size_bytes();
                        doomed.push(block.clone());
                    }
                }
            }
            doomed
        };
        if doomed.is_empty() {
            return Ok(Vec::new());
        }
        self.blocks.write().retain(|b| !doomed.iter().any(|d| Arc::ptr_eq(b, d)));
        let mut deleted = Vec::new();
        for block in doomed {
            remove_block_dir(block.dir())?;
            deleted.push((block.meta().min_time, block.meta().max_time));
        }
        metrics::counter!("vigil_tsdb_blocks_deleted_total").increment(deleted.len() as u64);
        Ok(deleted)
    }

    /// One maintenance pass: cut the head while it spans 1.5 block ranges, compact, apply retention.
    pub fn maintain(&self) -> Result<MaintenanceReport, Error> {
        let mut report = MaintenanceReport::default();
        let duration = self.options.block_duration_ms;
        loop {
            let Some((min, max)) = self.head.read().time_range() else {
                break;
            };
            if max - min < duration + duration / 2 {
                break;
            }
            let cut = min.div_euclid(duration) * duration + duration - 1;
            match self.flush_head_before(cut)? {
                Some(meta) => report.cut.push(meta),
                None => break,
            }
        }
        report.compacted = self.compact()?;
        let newest = self.head.read().time_range().map(|(_, max)| max);
        let newest_block = self.blocks.read().iter().map(|b| b.meta().max_time).max();
        if let Some(reference) = newest.max(newest_block) {
            report.deleted = self.apply_retention(reference)?;
        }
        Ok(report)
    }

    /// Bytes the blocks take on disk.
    pub fn blocks_size_bytes(&self) -> u64 {
        self.blocks.read().iter().map(|b| b.size_bytes()).sum()
    }
}

fn read_string(payload: &[u8], pos: &mut usize) -> Option<String> {
    let len = usize::try_from(uvarint(payload, pos)?).ok()?;
    let bytes = payload.get(*pos..pos.checked_add(len)?)?;
    *pos += len;
    String::from_utf8(bytes.to_vec()).ok()
}

fn replay_series(head: &mut Head, payload: &[u8]) -> Option<()> {
    let mut pos = 0;
    while pos < payload.len() {
        let id = SeriesId::try_from(uvarint(payload, &mut pos)?).ok()?;
        let count = uvarint(payload, &mut pos)?;
        let mut labels = Vec::new();
        for _ in 0..count {
            let name = read_string(payload, &mut pos)?;
            let value = read_string(payload, &mut pos)?;
            labels.push(Label { name: name.into(), value: value.into() });
        }
        if !head.create(id, Labels::from_sorted_unchecked(labels)) {
            tracing::warn!(id, "wal series record out of sequence, skipped");
        }
    }
    Some(())
}

fn replay_samples(head: &mut Head, payload: &[u8]) -> Option<u64> {
    let mut pos = 0;
    let mut count = 0;
    while pos < payload.len() {
        let id = SeriesId::try_from(uvarint(payload, &mut pos)?).ok()?;
        let t = varint(payload, &mut pos)?;
        let bits = u64::from_le_bytes(payload.get(pos..pos + 8)?.try_into().ok()?);
        pos += 8;
        if head.apply_replayed(id, Sample { t, v: f64::from_bits(bits) }) {
            count += 1;
        }
    }
    Some(count)
}

impl Appender for Db {
    /// Writes `metadata.json` only when something changed (metadata arrives with every scrape).
    fn set_metadata(&self, entries: &[(String, MetricMetadata)]) -> Result<(), Error> {
        let mut metadata = self.metadata.write();
        let mut changed = false;
        for (name, entry) in entries {
            if metadata.get(name) != Some(entry) {
                metadata.insert(name.clone(), entry.clone());
                changed = true;
            }
        }
        if changed {
            self.save_metadata(&metadata)?;
        }
        Ok(())
    }

    /// Blocking (it may fsync): call it from `spawn_blocking` in async code.
    fn append(&self, batch: &[SeriesSamples]) -> Result<AppendSummary, Error> {
        self.append_grouped(|head| Ok(group_by_series(head, batch)))
    }

    /// Blocking, as [`Appender::append`]; known series are found from the borrowed labels.
    fn append_refs(&self, batch: &RefBatch<'_>, read: LabelReader<'_>) -> Result<AppendSummary, Error> {
        self.append_grouped(|head| group_refs(head, batch, read))
    }
}

impl Db {
    /// Plans the grouped batch under the head lock, writes it to the WAL, applies it, then waits for the
    /// WAL commit.
    fn append_grouped<'a>(
        &self,
        group: impl FnOnce(&Head) -> Result<Grouped<'a>, Error>,
    ) -> Result<AppendSummary, Error> {
        let (summary, sequence) = {
            let mut head = self.head.write();
            let plan = self.plan(&head, group(&head)?);
            // The WAL is written under the head lock so record order matches apply order.
            let sequence = match &self.wal {
                Some(wal) if !plan.new_series.is_empty() || !plan.samples.is_empty() => {
                    Some(wal.write(&encode_plan(&plan))?)
                }
                _ => None,
            };
            for (id, labels) in plan.new_series {
                let created = head.create(id, labels);
                debug_assert!(created, "planned ids are the next ones");
            }
            for (id, sample) in &plan.samples {
                head.apply(*id, *sample);
            }
            (plan.summary, sequence)
        };
        if let (Some(wal), Some(sequence)) = (&self.wal, sequence) {
            wal.commit(sequence)?;
        }
        metrics::counter!("vigil_tsdb_samples_appended_total").increment(summary.accepted as u64);
        metrics::counter!("vigil_tsdb_series_created_total").increment(summary.series_created as u64);
        for rejected in &summary.rejected {
            let reason = match rejected.error {
                SampleError::DuplicateTimestamp => "duplicate_timestamp",
                SampleError::OutOfOrder => "out_of_order",
                SampleError::OutOfBounds => "out_of_bounds",
                SampleError::SeriesRejected(_) => "series_rejected",
            };
            metrics::counter!("vigil_tsdb_samples_rejected_total", "reason" => reason).increment(1);
        }
        Ok(summary)
    }
}

fn truncate_sorted(mut values: Vec<String>, limit: Option<usize>) -> Vec<String> {
    values.sort_unstable();
    values.dedup();
    if let Some(limit) = limit {
        values.truncate(limit);
    }
    values
}

impl Db {
    fn blocks_overlapping(&self, mint: Timestamp, maxt: Timestamp) -> Vec<Arc<Block>> {
        let blocks = self.blocks.read();
        blocks.iter().filter(|b| b.meta().min_time <= maxt && b.meta().max_time >= mint).cloned().collect()
    }

    /// Label sets matching `matchers` across blocks and head, deduplicated, passed to `visit`.
    fn for_each_matching(&self, matchers: &[Matcher], mut visit: impl FnMut(&Labels)) {
        let blocks = self.blocks.read().clone();
        for block in &blocks {
            block.matching_labels(matchers).into_iter().for_each(&mut visit);
        }
        self.head.read().matching_labels(matchers).into_iter().for_each(&mut visit);
    }
}

impl Db {
    fn save_metadata(&self, metadata: &BTreeMap<String, MetricMetadata>) -> Result<(), Error> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let path = dir.join(METADATA_FILE);
        let tmp = dir.join(format!("{METADATA_FILE}.tmp"));
        let bytes = serde_json::to_vec(metadata).expect("metadata serialises");
        std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
    }
}

impl Queryable for Db {
    fn select(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Result<Vec<Series>, Error> {
        let blocks = self.blocks_overlapping(mint, maxt);
        if blocks.is_empty() {
            return Ok(self.head.read().select(matchers, mint, maxt));
        }
        let mut merged: BTreeMap<Labels, Vec<Sample>> = BTreeMap::new();
        for block in &blocks {
            for series in block.select(matchers, mint, maxt)? {
                merged.entry(series.labels).or_default().extend(series.samples);
            }
        }
        for series in self.head.read().select(matchers, mint, maxt) {
            merged.entry(series.labels).or_default().extend(series.samples);
        }
        Ok(merged
            .into_iter()
            .map(|(labels, mut samples)| {
                samples.sort_by_key(|s| s.t);
                samples.dedup_by_key(|s| s.t);
                Series { labels, samples }
            })
            .collect())
    }

    fn label_names(&self, matchers: &[Matcher], limit: Option<usize>) -> Result<Vec<String>, Error> {
        let mut names = Vec::new();
        if matchers.is_empty() {
            for block in self.blocks.read().iter() {
                names.extend(block.label_names().map(str::to_owned));
            }
            names.extend(self.head.read().label_names().map(str::to_owned));
        } else {
            self.for_each_matching(matchers, |labels| names.extend(labels.iter().map(|l| l.name.to_string())));
        }
        Ok(truncate_sorted(names, limit))
    }

    fn label_values(&self, name: &str, matchers: &[Matcher], limit: Option<usize>) -> Result<Vec<String>, Error> {
        let mut values = Vec::new();
        if matchers.is_empty() {
            for block in self.blocks.read().iter() {
                values.extend(block.label_values(name).map(str::to_owned));
            }
            values.extend(self.head.read().label_values(name).map(str::to_owned));
        } else {
            self.for_each_matching(matchers, |labels| values.extend(labels.get(name).map(str::to_owned)));
        }
        Ok(truncate_sorted(values, limit))
    }

    fn series_labels(&self, matchers: &[Matcher], limit: Option<usize>) -> Result<Vec<Labels>, Error> {
        let mut all: Vec<Labels> = Vec::new();
        self.for_each_matching(matchers, |labels| all.push(labels.clone()));
        all.sort();
        all.dedup();
        if let Some(limit) = limit {
            all.truncate(limit);
        }
        Ok(all)
    }

    fn series_count(&self) -> usize {
        self.head.read().series_count()
    }

    fn metadata(&self, metric: Option<&str>, limit: Option<usize>) -> Vec<(String, MetricMetadata)> {
        let metadata = self.metadata.read();
        let matching = metadata.iter().filter(|(name, _)| metric.is_none_or(|wanted| wanted == name.as_str()));
        matching.take(limit.unwrap_or(usize::MAX)).map(|(name, entry)| (name.clone(), entry.clone())).collect()
    }

    fn cardinality(&self, limit: usize) -> CardinalityStats {
        self.head.read().cardinality(limit)
    }
}
