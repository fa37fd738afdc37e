//! The head: series in memory with compressed chunks, indexed by postings.

use std::collections::{BTreeMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;

use crate::chunk::{self, SAMPLES_PER_CHUNK, XorAppender};
use crate::postings::{Postings, SeriesId};
use crate::{Label, Labels, Matcher, Sample, SampleError, Timestamp, series_key};

/// Limits on what the head accepts; each rejection is counted and explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadLimits {
    /// Series held in memory at most.
    pub max_series: usize,
    /// Labels per series at most (including `__name__`).
    pub max_label_count: usize,
    /// Bytes in a label name at most.
    pub max_label_name_len: usize,
    /// Bytes in a label value at most.
    pub max_label_value_len: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits { max_series: 5_000_000, max_label_count: 64, max_label_name_len: 1024, max_label_value_len: 4096 }
    }
}

impl HeadLimits {
    /// Checks a label set against the per-series limits; the message names the offending label.
    /// Each refusal also counts in `vigil_tsdb_limit_hits_total{limit}`.
    pub fn check(&self, labels: &Labels) -> Result<(), String> {
        let refused = |limit: &'static str, reason: String| {
            metrics::counter!("vigil_tsdb_limit_hits_total", "limit" => limit).increment(1);
            Err(reason)
        };
        if labels.is_empty() {
            return Err("series has no labels".into());
        }
        if labels.len() > self.max_label_count {
            let reason =
                format!("series {labels} has {} labels, over the limit of {}", labels.len(), self.max_label_count);
            return refused("max_label_count", reason);
        }
        for label in labels.iter() {
            if label.name.len() > self.max_label_name_len {
                let reason = format!("label name {:?} is longer than {} bytes", label.name, self.max_label_name_len);
                return refused("max_label_name_length", reason);
            }
            if label.value.len() > self.max_label_value_len {
                let reason = format!(
                    "value of label {:?} is {} bytes, over the limit of {}",
                    label.name,
                    label.value.len(),
                    self.max_label_value_len
                );
                return refused("max_label_value_length", reason);
            }
        }
        Ok(())
    }
}

/// A series with the samples a query asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The series' labels.
    pub labels: Labels,
    /// Samples in time order, within the queried range.
    pub samples: Vec<Sample>,
}

#[derive(Debug)]
struct ClosedChunk {
    min_t: Timestamp,
    max_t: Timestamp,
    bytes: Box<[u8]>,
}

#[derive(Debug)]
pub(crate) struct MemSeries {
    labels: Labels,
    closed: Vec<ClosedChunk>,
    open: XorAppender,
    /// Samples that arrived behind `max_t` within the out-of-order window. Boxed so the common
    /// case (none) costs one pointer per series rather than a whole map header.
    #[allow(clippy::box_collection)]
    out_of_order: Option<Box<BTreeMap<Timestamp, u64>>>,
}

impl MemSeries {
    fn new(labels: Labels) -> Self {
        MemSeries { labels, closed: Vec::new(), open: XorAppender::default(), out_of_order: None }
    }

    /// Time of the newest in-order sample, `None` for a series without samples.
    fn max_time(&self) -> Option<Timestamp> {
        if !self.open.is_empty() {
            return Some(self.open.max_time());
        }
        self.closed.last().map(|chunk| chunk.max_t)
    }

    /// The stored value bits at `t`, if any.
    fn value_at(&self, t: Timestamp) -> Option<u64> {
        if let Some(bits) = self.out_of_order.as_ref().and_then(|ooo| ooo.get(&t)) {
            return Some(*bits);
        }
        let open_bytes;
        let chunks = self
            .closed
            .iter()
            .filter(|chunk| chunk.min_t <= t && t <= chunk.max_t)
            .map(|chunk| &chunk.bytes[..])
            .chain(if !self.open.is_empty() && self.open.min_time() <= t && t <= self.open.max_time() {
                open_bytes = self.open.bytes();
                Some(&open_bytes[..])
            } else {
                None
            });
        for bytes in chunks {
            let found = chunk::iter(bytes).ok()?.filter_map(Result::ok).find(|sample| sample.t == t);
            if let Some(sample) = found {
                return Some(sample.v.to_bits());
            }
        }
        None
    }

    /// Decides what a new sample does: `Ok(true)` stores it, `Ok(false)` is an identical duplicate.
    /// `pending_max` is the newest time among samples of this batch already accepted for this series.
    fn check(&self, sample: Sample, pending_max: Option<Timestamp>, window_ms: i64) -> Result<bool, SampleError> {
        let max_t = match (self.max_time(), pending_max) {
            (Some(a), Some(b)) => a.max(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => return Ok(true),
            },
        };
        if sample.t > max_t {
            return Ok(true);
        }
        if let Some(stored) = self.value_at(sample.t) {
            return if stored == sample.v.to_bits() { Ok(false) } else { Err(SampleError::DuplicateTimestamp) };
        }
        if sample.t < max_t.saturating_sub(window_ms) {
            return Err(SampleError::OutOfOrder);
        }
        Ok(true)
    }

    /// Stores a sample that passed [`check`](Self::check) (or comes from the WAL, where it did).
    fn apply(&mut self, sample: Sample) {
        if self.max_time().is_some_and(|max_t| sample.t <= max_t) {
            self.out_of_order.get_or_insert_with(Default::default).insert(sample.t, sample.v.to_bits());
            return;
        }
        if self.open.len() >= SAMPLES_PER_CHUNK {
            let full = std::mem::take(&mut self.open);
            self.closed.push(ClosedChunk {
                min_t: full.min_time(),
                max_t: full.max_time(),
                bytes: full.bytes().into_boxed_slice(),
            });
        }
        self.open.append(sample.t, sample.v);
    }

    /// Stores a sample read back from the WAL, skipping one already present (a checkpoint and a
    /// segment may both hold it).
    fn apply_replayed(&mut self, sample: Sample) {
        if self.max_time().is_some_and(|max_t| sample.t <= max_t) && self.value_at(sample.t).is_some() {
            return;
        }
        self.apply(sample);
    }

    /// Drops data at or before `cut` that no longer needs to stay in memory: whole chunks and
    /// out-of-order samples. A chunk straddling `cut` stays; reads filter it by the read floor.
    fn truncate(&mut self, cut: Timestamp) {
        self.closed.retain(|chunk| chunk.max_t > cut);
        if !self.open.is_empty() && self.open.max_time() <= cut {
            self.open = XorAppender::default();
        }
        if let Some(ooo) = self.out_of_order.as_mut() {
            **ooo = ooo.split_off(&(cut + 1));
            if ooo.is_empty() {
                self.out_of_order = None;
            }
        }
    }

    /// Time of the oldest sample held.
    fn min_time(&self) -> Option<Timestamp> {
        let chunk_min = match self.closed.first() {
            Some(chunk) => Some(chunk.min_t),
            None => (!self.open.is_empty()).then(|| self.open.min_time()),
        };
        let ooo_min = self.out_of_order.as_ref().and_then(|ooo| ooo.keys().next().copied());
        match (chunk_min, ooo_min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn samples(&self, mint: Timestamp, maxt: Timestamp) -> Vec<Sample> {
        let mut out = Vec::new();
        let in_range = |chunk_min: Timestamp, chunk_max: Timestamp| chunk_min <= maxt && chunk_max >= mint;
        for chunk in self.closed.iter().filter(|chunk| in_range(chunk.min_t, chunk.max_t)) {
            decode_into(&chunk.bytes, mint, maxt, &mut out);
        }
        if !self.open.is_empty() && in_range(self.open.min_time(), self.open.max_time()) {
            decode_into(&self.open.bytes(), mint, maxt, &mut out);
        }
        if let Some(ooo) = &self.out_of_order {
            let before = out.len();
            out.extend(ooo.range(mint..=maxt).map(|(t, bits)| Sample { t: *t, v: f64::from_bits(*bits) }));
            if out.len() > before {
                out.sort_by_key(|sample| sample.t);
            }
        }
        out
    }
}

fn decode_into(bytes: &[u8], mint: Timestamp, maxt: Timestamp, out: &mut Vec<Sample>) {
    let Ok(samples) = chunk::iter(bytes) else {
        debug_assert!(false, "head chunks are written by this process");
        return;
    };
    for sample in samples.map_while(Result::ok) {
        if sample.t > maxt {
            break;
        }
        if sample.t >= mint {
            out.push(sample);
        }
    }
}

/// In-memory series and their index.
#[derive(Debug)]
/// Finds series by their labels. The table holds each series' hash and id; a candidate is compared with
/// the series' key (its labels as [`series_key`] lays them out), so a lookup reads the table slot and one
/// contiguous key, not a chain of shared strings. Remote write carries label bytes in that layout: under
/// its load nearly every sample looks a known series up from bytes it never decodes.
#[derive(Default)]
struct SeriesIndex {
    /// Seeded per process (foldhash's random state), so ingested label sets cannot aim for collisions.
    hasher: foldhash::fast::RandomState,
    table: hashbrown::HashTable<(u64, SeriesId)>,
    /// Each series' key, by id.
    keys: Vec<Box<[u8]>>,
}

/// The key of `labels`.
fn key_of(labels: &Labels) -> Vec<u8> {
    let mut key = Vec::with_capacity(labels.iter().map(|l| l.name.len() + l.value.len() + 6).sum());
    series_key(labels.iter().map(|l| (&*l.name, &*l.value)), &mut key);
    key
}

impl SeriesIndex {
    fn get_key(&self, key: &[u8]) -> Option<SeriesId> {
        let hash = self.hasher.hash_one(key);
        let keys = &self.keys;
        let found = self.table.find(hash, |(h, id)| *h == hash && *keys[*id as usize] == *key);
        found.map(|(_, id)| *id)
    }

    fn get(&self, labels: &Labels) -> Option<SeriesId> {
        self.get_key(&key_of(labels))
    }

    /// Adds series `id` (the next one) with `labels`; false (and nothing added) if it holds them already.
    fn insert(&mut self, id: SeriesId, labels: &Labels) -> bool {
        debug_assert_eq!(id as usize, self.keys.len());
        let key = key_of(labels);
        if self.get_key(&key).is_some() {
            return false;
        }
        let hash = self.hasher.hash_one(&*key);
        self.keys.push(key.into_boxed_slice());
        self.table.insert_unique(hash, (hash, id), |(h, _)| *h);
        true
    }
}

pub(crate) struct Head {
    series: Vec<MemSeries>,
    by_labels: SeriesIndex,
    /// The symbol table: one copy of each label name and value, shared by every series and the index.
    symbols: HashSet<Arc<str>, foldhash::fast::RandomState>,
    postings: Postings,
    /// Samples at or before this time belong to blocks: appends there are refused.
    append_floor: Timestamp,
    /// Reads return only samples after this time (it trails `append_floor` while a block is written).
    read_floor: Timestamp,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            series: Vec::new(),
            by_labels: SeriesIndex::default(),
            symbols: HashSet::default(),
            postings: Postings::default(),
            append_floor: Timestamp::MIN,
            read_floor: Timestamp::MIN,
        }
    }
}

impl Head {
    pub(crate) fn append_floor(&self) -> Timestamp {
        self.append_floor
    }

    pub(crate) fn set_append_floor(&mut self, floor: Timestamp) {
        self.append_floor = floor;
    }

    /// Marks everything at or before `cut` as moved to a block: reads stop returning it and memory is freed.
    pub(crate) fn truncate(&mut self, cut: Timestamp) {
        self.read_floor = cut;
        self.append_floor = self.append_floor.max(cut);
        for series in &mut self.series {
            series.truncate(cut);
        }
    }

    /// Oldest and newest sample times readable from the head.
    pub(crate) fn time_range(&self) -> Option<(Timestamp, Timestamp)> {
        let mut range: Option<(Timestamp, Timestamp)> = None;
        for series in &self.series {
            let (Some(min), Some(max)) = (series.min_time(), series.max_time()) else {
                continue;
            };
            let min = min.max(self.read_floor.saturating_add(1));
            if max <= self.read_floor {
                continue;
            }
            range = Some(match range {
                Some((lo, hi)) => (lo.min(min), hi.max(max)),
                None => (min, max),
            });
        }
        range
    }

    /// Series ids in label order.
    pub(crate) fn ids_by_labels(&self) -> Vec<SeriesId> {
        let mut ids: Vec<SeriesId> = (0..self.series.len() as SeriesId).collect();
        ids.sort_by(|a, b| self.series[*a as usize].labels.cmp(&self.series[*b as usize].labels));
        ids
    }

    /// A series' labels and its samples in `[mint, maxt]`.
    pub(crate) fn series_samples(
        &self,
        id: SeriesId,
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Option<(&Labels, Vec<Sample>)> {
        let series = self.series.get(id as usize)?;
        Some((&series.labels, series.samples(mint, maxt)))
    }

    /// Every series (id, labels) and its readable samples, for a WAL checkpoint.
    pub(crate) fn snapshot(&self) -> impl Iterator<Item = (SeriesId, &Labels, Vec<Sample>)> {
        let floor = self.read_floor.saturating_add(1);
        self.series
            .iter()
            .enumerate()
            .map(move |(id, series)| (id as SeriesId, &series.labels, series.samples(floor, Timestamp::MAX)))
    }

    /// Stores a sample from the WAL: skipped if at or before the floor (it is in a block) or already present.
    pub(crate) fn apply_replayed(&mut self, id: SeriesId, sample: Sample) -> bool {
        if sample.t <= self.append_floor {
            return false;
        }
        match self.series.get_mut(id as usize) {
            Some(series) => {
                series.apply_replayed(sample);
                true
            }
            None => false,
        }
    }

    pub(crate) fn series_count(&self) -> usize {
        self.series.len()
    }

    pub(crate) fn lookup(&self, labels: &Labels) -> Option<SeriesId> {
        self.by_labels.get(labels)
    }

    /// The id of the series whose key is `key`, if it exists.
    pub(crate) fn lookup_key(&self, key: &[u8]) -> Option<SeriesId> {
        self.by_labels.get_key(key)
    }

    /// The labels of series `id` (which exists).
    pub(crate) fn labels(&self, id: SeriesId) -> &Labels {
        &self.series[id as usize].labels
    }

    /// The id the next created series will get.
    pub(crate) fn next_id(&self) -> SeriesId {
        self.series.len() as SeriesId
    }

    /// The shared copy of `text`, added to the symbol table if new.
    fn symbol(&mut self, text: &Arc<str>) -> Arc<str> {
        if let Some(shared) = self.symbols.get(&**text) {
            return Arc::clone(shared);
        }
        self.symbols.insert(Arc::clone(text));
        Arc::clone(text)
    }

    /// Creates a series with the next id, which must be `id` (WAL replay checks that ids line up).
    /// Its label strings come from the symbol table.
    pub(crate) fn create(&mut self, id: SeriesId, labels: Labels) -> bool {
        if id != self.next_id() || !self.by_labels.insert(id, &labels) {
            return false;
        }
        let shared: Vec<Label> =
            labels.iter().map(|l| Label { name: self.symbol(&l.name), value: self.symbol(&l.value) }).collect();
        let labels = Labels::from_sorted_unchecked(shared);
        self.postings.add(id, &labels);
        self.series.push(MemSeries::new(labels));
        true
    }

    pub(crate) fn check(
        &self,
        id: Option<SeriesId>,
        sample: Sample,
        pending_max: Option<Timestamp>,
        window_ms: i64,
    ) -> Result<bool, SampleError> {
        if sample.t <= self.append_floor {
            return Err(SampleError::OutOfBounds);
        }
        match id.and_then(|id| self.series.get(id as usize)) {
            Some(series) => series.check(sample, pending_max, window_ms),
            None => Ok(pending_max.is_none_or(|max| sample.t > max)),
        }
    }

    /// Stores a sample for an existing series; false for an unknown id.
    pub(crate) fn apply(&mut self, id: SeriesId, sample: Sample) -> bool {
        match self.series.get_mut(id as usize) {
            Some(series) => {
                series.apply(sample);
                true
            }
            None => false,
        }
    }

    pub(crate) fn select(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Vec<Series> {
        let mint = mint.max(self.read_floor.saturating_add(1));
        if mint > maxt {
            return Vec::new();
        }
        let ids = self.postings.select(matchers, |id| &self.series[id as usize].labels);
        let mut out: Vec<Series> = ids
            .into_iter()
            .filter_map(|id| {
                let series = &self.series[id as usize];
                let samples = series.samples(mint, maxt);
                (!samples.is_empty()).then(|| Series { labels: series.labels.clone(), samples })
            })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }

    pub(crate) fn matching_labels(&self, matchers: &[Matcher]) -> Vec<&Labels> {
        let ids = self.postings.select(matchers, |id| &self.series[id as usize].labels);
        ids.into_iter().map(|id| &self.series[id as usize].labels).collect()
    }

    /// Cardinality figures of the head's index, top `limit` of each.
    pub(crate) fn cardinality(&self, limit: usize) -> crate::CardinalityStats {
        fn top(mut entries: Vec<(String, usize)>, limit: usize) -> Vec<(String, usize)> {
            entries.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            entries.truncate(limit);
            entries
        }
        let (mut by_metric, mut by_name, mut by_pair, mut bytes) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut label_pairs = 0;
        for (name, values) in self.postings.entries() {
            let mut value_count = 0;
            let mut value_bytes = 0;
            for (value, series) in values {
                value_count += 1;
                value_bytes += value.len() * series;
                by_pair.push((format!("{name}={value}"), series));
                if name == crate::METRIC_NAME {
                    by_metric.push((value.to_owned(), series));
                }
            }
            label_pairs += value_count;
            by_name.push((name.to_owned(), value_count));
            bytes.push((name.to_owned(), value_bytes));
        }
        crate::CardinalityStats {
            series: self.series_count(),
            label_pairs,
            time_range: self.time_range(),
            series_by_metric_name: top(by_metric, limit),
            values_by_label_name: top(by_name, limit),
            series_by_label_pair: top(by_pair, limit),
            bytes_by_label_name: top(bytes, limit),
        }
    }

    pub(crate) fn label_names(&self) -> impl Iterator<Item = &str> {
        self.postings.label_names()
    }

    pub(crate) fn label_values(&self, name: &str) -> impl Iterator<Item = &str> {
        self.postings.label_values(name)
    }
}
