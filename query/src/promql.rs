//! The PromQL engine: parsing with `promql-parser`, evaluation here.
//!
//! A query first walks the expression to find every selector and the time span it needs, loads each
//! selector's series once, then evaluates step by step over those in-memory series. Range queries
//! evaluate the expression at every step and join the points per label set.

mod aggregate;
mod binary;
mod eval;
mod functions;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

pub use eval::{Engine, parse};
pub use functions::format_float;

/// A sample value as Prometheus's JSON API writes it: the shortest decimal that reads back exactly, in
/// exponent form (`5e-07`, `1.5e+21`) below 1e-6 or from 1e21 on, and `NaN`, `+Inf`, `-Inf`.
pub fn format_value(v: f64) -> String {
    let abs = v.abs();
    if !v.is_finite() || abs == 0.0 || (1e-6..1e21).contains(&abs) {
        return format_float(v);
    }
    go_exponent_form(&format!("{v:e}"))
}

/// Rust's exponent form (`5e-7`, `1.5e21`) as Go writes it: a sign and at least two digits (`5e-07`).
pub(crate) fn go_exponent_form(rust: &str) -> String {
    let (mantissa, exponent) = rust.split_once('e').expect("`e` formatting has an exponent");
    let exponent: i32 = exponent.parse().expect("integer exponent");
    format!("{mantissa}e{}{:02}", if exponent < 0 { '-' } else { '+' }, exponent.abs())
}
use vigil_tsdb::{Labels, Sample};

/// The engine's hash maps and sets: keys are label sets and identities; foldhash is seeded per process.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// See [`FastMap`].
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Default lookback window of instant selectors: 5 minutes.
pub const DEFAULT_LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// Limits and defaults of query evaluation.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How far back an instant selector looks for the latest sample.
    pub lookback_ms: i64,
    /// Samples a query may hold in memory at once before it fails.
    pub max_samples: usize,
    /// Wall-clock time a query may take.
    pub timeout: Duration,
    /// Resolution of subqueries that do not give one (`x[5m:]`).
    pub default_subquery_step_ms: i64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_ms: DEFAULT_LOOKBACK_MS,
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            default_subquery_step_ms: 60_000,
        }
    }
}

/// Warnings and infos a query raised, reported beside its data as Prometheus does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Annotations {
    /// Messages starting `PromQL warning: `.
    pub warnings: std::collections::BTreeSet<String>,
    /// Messages starting `PromQL info: `.
    pub infos: std::collections::BTreeSet<String>,
}

impl Annotations {
    pub(crate) fn warn(&mut self, message: impl std::fmt::Display) {
        self.warnings.insert(format!("PromQL warning: {message}"));
    }

    pub(crate) fn info(&mut self, message: impl std::fmt::Display) {
        self.infos.insert(format!("PromQL info: {message}"));
    }
}

/// A query result with the annotations raised while computing it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<T> {
    /// The result.
    pub value: T,
    /// Warnings and infos.
    pub annotations: Annotations,
}

/// Per-query settings and the cancellation switch.
#[derive(Debug, Clone, Default)]
pub struct QueryControl {
    /// Set to true to stop the query (the client went away); it then fails with `canceled`.
    pub cancel: Arc<AtomicBool>,
    /// Shorter timeout than the engine's, if any.
    pub timeout: Option<Duration>,
    /// Lookback window for this query, if not the engine's.
    pub lookback_ms: Option<i64>,
}

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct InstantSample {
    /// The series' labels.
    pub labels: Labels,
    /// The sample's own time for raw selector results, else the evaluation time (ms).
    pub t: i64,
    /// The value.
    pub v: f64,
    /// Set by operations that drop the metric name; the name stays visible to later label functions
    /// and grouping, and is removed when the query's result is finished (delayed name removal).
    pub drop_name: bool,
}

impl InstantSample {
    /// The labels as the result shows them: without `__name__` when it is marked for dropping.
    pub fn final_labels(&self) -> Labels {
        if self.drop_name { self.labels.without_metric_name() } else { self.labels.clone() }
    }
}

/// One series of a range vector or range-query result.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    /// The series' labels.
    pub labels: Labels,
    /// Points in time order.
    pub samples: Vec<Sample>,
    /// The metric name is marked for dropping (a subquery over a name-dropping expression).
    pub drop_name: bool,
}

/// The result of evaluating an expression at one time.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number.
    Scalar(f64),
    /// A string literal.
    String(String),
    /// An instant vector.
    Vector(Vec<InstantSample>),
    /// A range vector (only at the top of an instant query).
    Matrix(Vec<RangeSeries>),
}

impl Value {
    /// Prometheus's name for the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "scalar",
            Value::String(_) => "string",
            Value::Vector(_) => "instant vector",
            Value::Matrix(_) => "range vector",
        }
    }
}
