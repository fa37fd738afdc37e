//! Vigil's metric storage: series, compressed chunks, an inverted index and a write-ahead log.
//!
//! The entry point is [`Db`]: [`Db::open`] replays the WAL under a data directory and serves appends
//! ([`Appender`]) and reads ([`Queryable`]); [`Db::in_memory`] is the same engine without a WAL, for
//! tests of the crates above. Logs live in [`logs`] (tantivy) and spans in [`traces`] (Parquet).
//! This crate knows nothing about HTTP, wire protocols or query languages.

mod bitstream;
pub mod block;
pub mod chunk;
mod db;
mod error;
mod head;
mod labels;
pub mod logs;
mod matcher;
mod postings;
pub mod series_codec;
pub mod traces;
mod varint;
pub mod wal;

pub use block::BlockMeta;
pub use db::{AppendSummary, Db, DbOptions, MaintenanceReport, OpenReport, RejectedSample};
pub use error::{Error, SampleError};
pub use head::{HeadLimits, Series};
pub use labels::{Label, Labels, METRIC_NAME, parse_series_key, series_key};
pub use matcher::{MatchOp, Matcher};
pub use wal::WalSync;

/// Milliseconds since the Unix epoch, the time unit of every sample.
pub type Timestamp = i64;

/// Bit pattern of Prometheus's staleness marker, a NaN that means "this series ended here".
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// True when `value` is the staleness marker (not just any NaN).
pub fn is_stale_marker(value: f64) -> bool {
    value.to_bits() == STALE_NAN_BITS
}

/// One float sample of a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub t: Timestamp,
    /// The value; NaN bit patterns (the staleness marker among them) are kept exactly.
    pub v: f64,
}

/// Samples for one series, the unit of a batch append.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    /// The series' identity.
    pub labels: Labels,
    /// Samples in any order; the store sorts them out per its out-of-order rules.
    pub samples: Vec<Sample>,
}

/// A batch whose series are given by their label bytes, borrowed from the request being decoded: each
/// entry of `series` is a series key candidate (see [`series_key`]) and a range of `samples`. The
/// store looks known series up by those bytes, without decoding them; only a key it does not know is
/// read into labels (by the caller's reader, since the bytes may be laid out in any way the wire allows).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RefBatch<'a> {
    /// Every series' samples, one after another.
    pub samples: Vec<Sample>,
    /// Per series: its label bytes and its samples.
    pub series: Vec<(std::borrow::Cow<'a, [u8]>, std::ops::Range<usize>)>,
}

/// Reads label bytes of a [`RefBatch`] into pairs (any order; empty values are dropped afterwards).
pub type LabelReader<'r> = &'r dyn Fn(&[u8]) -> Result<Vec<(&str, &str)>, String>;

impl<'a> RefBatch<'a> {
    /// Each series' label bytes and samples.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[Sample])> {
        self.series.iter().map(|(key, samples)| (&**key, &self.samples[samples.clone()]))
    }

    /// The same batch with owned label sets (what [`Appender::append`] takes).
    pub fn to_owned_batch(&self, read: LabelReader<'_>) -> Result<Vec<SeriesSamples>, Error> {
        self.iter()
            .map(|(key, samples)| {
                let pairs = read(key).map_err(Error::InvalidSeries)?;
                Ok(SeriesSamples { labels: Labels::new(pairs)?, samples: samples.to_vec() })
            })
            .collect()
    }
}

/// Type, help and unit of a metric family, as its exporter declared them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MetricMetadata {
    /// `counter`, `gauge`, `histogram`, `summary`, ... or `unknown`.
    pub metric_type: String,
    /// Help text.
    pub help: String,
    /// Unit, often empty.
    pub unit: String,
}

/// Cardinality of the in-memory series, as `/api/v1/status/tsdb` reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CardinalityStats {
    /// Series in memory.
    pub series: usize,
    /// Distinct label name/value pairs.
    pub label_pairs: usize,
    /// Oldest and newest sample times in memory.
    pub time_range: Option<(Timestamp, Timestamp)>,
    /// Metric names with the most series.
    pub series_by_metric_name: Vec<(String, usize)>,
    /// Label names with the most distinct values.
    pub values_by_label_name: Vec<(String, usize)>,
    /// `name=value` pairs with the most series.
    pub series_by_label_pair: Vec<(String, usize)>,
    /// Label names by bytes of their values.
    pub bytes_by_label_name: Vec<(String, usize)>,
}

/// What ingestion writes through: a batch of samples, durable once `append` returns `Ok`.
pub trait Appender: Send + Sync {
    /// Appends a batch; individual samples may be rejected (reported in the summary) while the rest land.
    fn append(&self, batch: &[SeriesSamples]) -> Result<AppendSummary, Error>;

    /// Like [`Appender::append`] for a batch of series given by label bytes, which `read` turns into
    /// pairs when the store does not know them; an invalid label set refuses the whole batch. The default
    /// builds owned label sets first.
    fn append_refs(&self, batch: &RefBatch<'_>, read: LabelReader<'_>) -> Result<AppendSummary, Error> {
        self.append(&batch.to_owned_batch(read)?)
    }

    /// Records metric families' metadata (latest wins).
    fn set_metadata(&self, entries: &[(String, MetricMetadata)]) -> Result<(), Error>;
}

/// What queries read through.
pub trait Queryable: Send + Sync {
    /// Series matching every matcher that have samples in `[mint, maxt]`, with those samples.
    fn select(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Result<Vec<Series>, Error>;
    /// Label names of series matching `matchers` (all series when empty), sorted, at most `limit`.
    fn label_names(&self, matchers: &[Matcher], limit: Option<usize>) -> Result<Vec<String>, Error>;
    /// Values of label `name` over series matching `matchers`, sorted, at most `limit`.
    fn label_values(&self, name: &str, matchers: &[Matcher], limit: Option<usize>) -> Result<Vec<String>, Error>;
    /// Label sets of series matching `matchers`, sorted, at most `limit`.
    fn series_labels(&self, matchers: &[Matcher], limit: Option<usize>) -> Result<Vec<Labels>, Error>;
    /// Number of series in memory.
    fn series_count(&self) -> usize;
    /// Metadata of metric families, by name (all when `metric` is `None`), at most `limit` families.
    fn metadata(&self, metric: Option<&str>, limit: Option<usize>) -> Vec<(String, MetricMetadata)>;
    /// Cardinality of the in-memory series, top `limit` of each list.
    fn cardinality(&self, limit: usize) -> CardinalityStats;
}
