//! The database: head plus WAL, behind the [`Appender`] and [`Queryable`] traits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::head::Head;
use crate::postings::SeriesId;
use crate::varint::{put_uvarint, put_varint, uvarint, varint};
use crate::wal::{self, Wal, WalSync};
use crate::{
    Appender, Error, HeadLimits, Label, Labels, Matcher, Queryable, Sample, SampleError, Series, SeriesSamples,
    Timestamp,
};

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
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            out_of_order_window_ms: 10 * 60 * 1000,
            limits: HeadLimits::default(),
            wal_sync: WalSync::Always,
            wal_segment_size: 128 << 20,
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
    /// Corrupt WAL regions skipped (the rest was served).
    pub corruptions: Vec<Error>,
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
            options,
            dir: None,
        }
    }

    /// Opens (or creates) the database under `dir`, replaying its WAL.
    pub fn open(dir: &Path, options: DbOptions) -> Result<(Self, OpenReport), Error> {
        let wal_dir = dir.join("wal");
        std::fs::create_dir_all(&wal_dir).map_err(|e| Error::io(&wal_dir, e))?;
        let mut head = Head::default();
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
        let mut report = OpenReport {
            series: head.series_count(),
            samples,
            truncated_bytes: replay.truncated_bytes,
            corruptions: replay.corruptions,
        };
        if undecodable > 0 {
            report.corruptions.push(Error::Corruption {
                path: wal_dir.clone(),
                offset: 0,
                reason: format!("{undecodable} records with valid checksums did not decode"),
            });
        }
        let wal = Wal::open(&wal_dir, options.wal_sync, options.wal_segment_size)?;
        let db = Db {
            head: RwLock::new(head),
            wal: Some(wal),
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

    fn plan(&self, head: &Head, batch: &[SeriesSamples]) -> Plan {
        let mut plan = Plan::default();
        let mut next_id = head.next_id();
        for (labels, mut samples) in group_by_series(batch) {
            let id = match head.lookup(labels) {
                Some(id) => id,
                None => {
                    if let Err(reason) = self.admit_series(head, labels, plan.new_series.len()) {
                        reject_all(&mut plan.summary, labels, &samples, SampleError::SeriesRejected(reason));
                        continue;
                    }
                    let id = next_id;
                    next_id += 1;
                    plan.new_series.push((id, labels.clone()));
                    plan.summary.series_created += 1;
                    id
                }
            };
            let existing = head.lookup(labels);
            samples.sort_by_key(|sample| sample.t);
            let mut pending: Option<Sample> = None;
            for sample in samples {
                let verdict = match pending {
                    Some(previous) if previous.t == sample.t => {
                        if previous.v.to_bits() == sample.v.to_bits() {
                            Ok(false)
                        } else {
                            Err(SampleError::DuplicateTimestamp)
                        }
                    }
                    _ => head.check(
                        existing,
                        sample,
                        pending.map(|p| p.t),
                        self.options.out_of_order_window_ms,
                    ),
                };
                match verdict {
                    Ok(store) => {
                        plan.summary.accepted += 1;
                        if store {
                            plan.samples.push((id, sample));
                            pending = Some(sample);
                        }
                    }
                    Err(error) => plan.summary.rejected.push(RejectedSample {
                        labels: labels.clone(),
                        sample,
                        error,
                    }),
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

fn group_by_series(batch: &[SeriesSamples]) -> Vec<(&Labels, Vec<Sample>)> {
    let mut order: Vec<(&Labels, Vec<Sample>)> = Vec::with_capacity(batch.len());
    let mut index: HashMap<&Labels, usize> = HashMap::new();
    for entry in batch {
        match index.get(&entry.labels) {
            Some(position) => order[*position].1.extend_from_slice(&entry.samples),
            None => {
                index.insert(&entry.labels, order.len());
                order.push((&entry.labels, entry.samples.clone()));
            }
        }
    }
    order
}

fn reject_all(summary: &mut AppendSummary, labels: &Labels, samples: &[Sample], error: SampleError) {
    for sample in samples {
        summary.rejected.push(RejectedSample {
            labels: labels.clone(),
            sample: *sample,
            error: error.clone(),
        });
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
            labels.push(Label { name, value });
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
        if head.apply(
            id,
            Sample {
                t,
                v: f64::from_bits(bits),
            },
        ) {
            count += 1;
        }
    }
    Some(count)
}

impl Appender for Db {
    /// Blocking (it may fsync): call it from `spawn_blocking` in async code.
    fn append(&self, batch: &[SeriesSamples]) -> Result<AppendSummary, Error> {
        let (summary, sequence) = {
            let mut head = self.head.write();
            let plan = self.plan(&head, batch);
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

impl Queryable for Db {
    fn select(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Result<Vec<Series>, Error> {
        Ok(self.head.read().select(matchers, mint, maxt))
    }

    fn label_names(&self, matchers: &[Matcher], limit: Option<usize>) -> Result<Vec<String>, Error> {
        let head = self.head.read();
        if matchers.is_empty() {
            return Ok(truncate_sorted(head.label_names().map(str::to_owned).collect(), limit));
        }
        let names = head
            .matching_labels(matchers)
            .into_iter()
            .flat_map(|labels| labels.iter().map(|l| l.name.clone()));
        Ok(truncate_sorted(names.collect(), limit))
    }

    fn label_values(&self, name: &str, matchers: &[Matcher], limit: Option<usize>) -> Result<Vec<String>, Error> {
        let head = self.head.read();
        if matchers.is_empty() {
            return Ok(truncate_sorted(
                head.label_values(name).map(str::to_owned).collect(),
                limit,
            ));
        }
        let values = head
            .matching_labels(matchers)
            .into_iter()
            .filter_map(|labels| labels.get(name).map(str::to_owned));
        Ok(truncate_sorted(values.collect(), limit))
    }

    fn series_labels(&self, matchers: &[Matcher], limit: Option<usize>) -> Result<Vec<Labels>, Error> {
        let head = self.head.read();
        let mut all: Vec<Labels> = head.matching_labels(matchers).into_iter().cloned().collect();
        all.sort();
        if let Some(limit) = limit {
            all.truncate(limit);
        }
        Ok(all)
    }

    fn series_count(&self) -> usize {
        self.head.read().series_count()
    }
}
