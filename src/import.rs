//! `vigil import openmetrics FILE --data-dir DIR`: offline backfill into blocks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, IsTerminal, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use vigil_agent::exposition::{self, Format};
use vigil_tsdb::block::BlockWriter;
use vigil_tsdb::{Appender, Db, DbOptions, Labels, METRIC_NAME, MetricMetadata, Sample};

use crate::cli::ImportArgs;

/// Samples buffered before they are handed to the block writers.
const FLUSH_SAMPLES: usize = 2_000_000;

/// Counts bytes as they are read, for progress.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// What an import wrote.
#[derive(Debug, Default)]
struct Summary {
    series: usize,
    samples: u64,
    min_time: i64,
    max_time: i64,
    blocks: usize,
    bytes: u64,
    bytes_before_compaction: u64,
}

/// The series of the previous sample, as parsed, and its buffer entry.
struct LastSeries {
    name: String,
    labels: Vec<(String, String)>,
    slot: usize,
}

/// Buffers samples per series and writes them to one block writer per block-duration window.
struct Writers<'a> {
    blocks_dir: &'a Path,
    block_duration_ms: i64,
    /// Window start → (block name, writer).
    open: BTreeMap<i64, (String, BlockWriter)>,
    /// Samples not yet written, by series; `slots` finds a series' entry.
    buffered: Vec<(Labels, Vec<Sample>)>,
    slots: HashMap<Labels, usize, foldhash::fast::RandomState>,
    /// Consecutive samples of one series (the common case in OpenMetrics files) skip building and
    /// hashing the label set.
    last: Option<LastSeries>,
    buffered_samples: usize,
    series: HashSet<Labels, foldhash::fast::RandomState>,
    summary: Summary,
    sequence: u64,
}

impl Writers<'_> {
    fn push(&mut self, parsed: exposition::ParsedSample) -> Result<(), String> {
        let timestamp = parsed.timestamp_ms.ok_or("sample without a timestamp: backfill needs one on every sample")?;
        let sample = Sample { t: timestamp, v: parsed.value };
        self.summary.samples += 1;
        self.summary.min_time = self.summary.min_time.min(sample.t);
        self.summary.max_time = self.summary.max_time.max(sample.t);
        let slot = match &self.last {
            Some(last) if last.name == parsed.name && last.labels == parsed.labels => last.slot,
            _ => {
                let pairs =
                    parsed.labels.iter().cloned().chain(std::iter::once((METRIC_NAME.to_owned(), parsed.name.clone())));
                let labels = Labels::new(pairs).map_err(|e| e.to_string())?;
                let slot = match self.slots.get(&labels) {
                    Some(slot) => *slot,
                    None => {
                        self.buffered.push((labels.clone(), Vec::new()));
                        self.slots.insert(labels, self.buffered.len() - 1);
                        self.buffered.len() - 1
                    }
                };
                self.last = Some(LastSeries { name: parsed.name, labels: parsed.labels, slot });
                slot
            }
        };
        self.buffered[slot].1.push(sample);
        self.buffered_samples += 1;
        if self.buffered_samples >= FLUSH_SAMPLES {
            self.flush().map_err(|e| format!("{e:#}"))?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        let mut by_labels = std::mem::take(&mut self.buffered);
        self.slots.clear();
        self.last = None;
        self.buffered_samples = 0;
        by_labels.sort_by(|a, b| a.0.cmp(&b.0));
        for (labels, mut samples) in by_labels {
            samples.sort_by_key(|s| s.t);
            samples.dedup_by_key(|s| s.t);
            let mut rest = samples.as_slice();
            while let Some(first) = rest.first() {
                let window = first.t.div_euclid(self.block_duration_ms) * self.block_duration_ms;
                let end = rest.partition_point(|s| s.t < window + self.block_duration_ms);
                self.writer(window)?.add(&labels, &rest[..end])?;
                rest = &rest[end..];
            }
            self.series.insert(labels);
        }
        Ok(())
    }

    fn writer(&mut self, window: i64) -> anyhow::Result<&mut BlockWriter> {
        if !self.open.contains_key(&window) {
            self.sequence += 1;
            let name = format!("{:013}-import{:06}", chrono::Utc::now().timestamp_millis(), self.sequence);
            // Imported blocks do not move the head's floor, so live data in the same directory stays accepted.
            let writer = BlockWriter::create(self.blocks_dir, &name, 1, Vec::new(), i64::MIN)?;
            self.open.insert(window, (name, writer));
        }
        Ok(&mut self.open.get_mut(&window).expect("inserted above").1)
    }

    fn abort(self) {
        for (_, (_, writer)) in self.open {
            let _ = writer.abort();
        }
    }
}

/// Runs the import.
pub fn run(args: &ImportArgs) -> anyhow::Result<()> {
    if args.format != "openmetrics" {
        bail!("unknown import format {:?}: the supported format is openmetrics", args.format);
    }
    let started = Instant::now();
    let file = File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let read = Arc::new(AtomicU64::new(0));
    let reader = BufReader::with_capacity(1 << 20, Counting { inner: file, read: read.clone() });
    let blocks_dir = args.data_dir.join("metrics").join("blocks");
    std::fs::create_dir_all(&blocks_dir).with_context(|| format!("cannot create {}", blocks_dir.display()))?;
    let mut writers = Writers {
        blocks_dir: &blocks_dir,
        block_duration_ms: DbOptions::default().block_duration_ms,
        open: BTreeMap::new(),
        buffered: Vec::new(),
        slots: HashMap::default(),
        last: None,
        buffered_samples: 0,
        series: HashSet::default(),
        summary: Summary { min_time: i64::MAX, max_time: i64::MIN, ..Summary::default() },
        sequence: 0,
    };
    let progress = Progress::new(total, read.clone());
    let parsed = exposition::parse_stream(reader, Format::OpenMetrics, |_, _, sample| {
        writers.push(sample)?;
        progress.tick(writers.summary.samples);
        Ok(())
    });
    let families = match parsed {
        Ok(families) => families,
        Err(error) => {
            writers.abort();
            bail!("{}: {error}; nothing was imported", args.file.display());
        }
    };
    if let Err(error) = writers.flush() {
        writers.abort();
        return Err(error.context("import failed; nothing was imported"));
    }
    progress.done();
    let mut summary = std::mem::take(&mut writers.summary);
    summary.series = writers.series.len();
    let mut finished = Vec::new();
    for (_, (name, writer)) in std::mem::take(&mut writers.open) {
        match writer.finish() {
            Ok(Some(_)) => finished.push(blocks_dir.join(name)),
            Ok(None) => {}
            Err(error) => {
                for dir in finished {
                    let _ = std::fs::remove_dir_all(dir);
                }
                return Err(anyhow::Error::new(error).context("writing blocks failed; nothing was imported"));
            }
        }
    }
    let written: u64 = finished.iter().map(|dir| dir_size(dir)).sum();
    // Compact right away, as the server would later, so the data lands in its long-term shape.
    let metrics_dir = args.data_dir.join("metrics");
    let (db, _) = Db::open(&metrics_dir, DbOptions::default()).context("cannot open the imported data")?;
    db.compact().context("compacting imported blocks failed")?;
    let metadata: Vec<(String, MetricMetadata)> = families
        .into_iter()
        .filter(|family| family.help.is_some() || family.metric_type != exposition::MetricType::Unknown)
        .map(|family| {
            let entry = MetricMetadata {
                metric_type: family.metric_type.as_str().to_owned(),
                help: family.help.unwrap_or_default(),
                unit: family.unit.unwrap_or_default(),
            };
            (family.name, entry)
        })
        .collect();
    db.set_metadata(&metadata).context("saving metric metadata failed")?;
    summary.blocks = db.blocks().len();
    summary.bytes = db.blocks_size_bytes();
    summary.bytes_before_compaction = written;
    print_summary(&summary, started.elapsed(), &args.data_dir);
    Ok(())
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339()).unwrap_or_else(|| ms.to_string())
}

fn print_summary(summary: &Summary, took: Duration, data_dir: &Path) {
    let seconds = took.as_secs_f64().max(1e-9);
    println!("imported into {}", data_dir.display());
    println!("  series:        {}", summary.series);
    println!("  samples:       {}", summary.samples);
    if summary.samples > 0 {
        println!("  time range:    {} .. {}", rfc3339(summary.min_time), rfc3339(summary.max_time));
    }
    println!("  blocks:        {}", summary.blocks);
    let per_sample = |bytes: u64| bytes as f64 / summary.samples.max(1) as f64;
    println!("  bytes on disk: {} ({:.3} bytes/sample)", summary.bytes, per_sample(summary.bytes));
    println!(
        "  before compaction: {} ({:.3} bytes/sample)",
        summary.bytes_before_compaction,
        per_sample(summary.bytes_before_compaction)
    );
    println!("  took:          {:.2}s ({:.0} samples/s)", seconds, summary.samples as f64 / seconds);
}

/// Progress on stderr (bytes, samples/s, ETA), only when stderr is a terminal.
struct Progress {
    total: u64,
    read: Arc<AtomicU64>,
    started: Instant,
    last: std::cell::Cell<Instant>,
    enabled: bool,
}

impl Progress {
    fn new(total: u64, read: Arc<AtomicU64>) -> Self {
        let now = Instant::now();
        Progress {
            total,
            read,
            started: now,
            last: std::cell::Cell::new(now),
            enabled: std::io::stderr().is_terminal(),
        }
    }

    fn tick(&self, samples: u64) {
        if !self.enabled || samples % 65_536 != 0 || self.last.get().elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last.set(Instant::now());
        let read = self.read.load(Ordering::Relaxed);
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = read as f64 / elapsed.max(1e-9);
        let eta = (self.total.saturating_sub(read)) as f64 / rate.max(1.0);
        eprint!(
            "\r{:>8.1} / {:.1} MiB  {:>10.0} samples/s  ETA {:>4.0}s ",
            read as f64 / 1048576.0,
            self.total as f64 / 1048576.0,
            samples as f64 / elapsed.max(1e-9),
            eta
        );
    }

    fn done(&self) {
        if self.enabled {
            eprintln!();
        }
    }
}
