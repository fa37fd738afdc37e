//! LogQL over a [`LogStore`]: log queries (selector, pipeline, limit, direction) and metric queries (range
//! aggregations such as `count_over_time`, `rate`, `bytes_over_time` and `*_over_time` with `unwrap`;
//! vector aggregations with `by`/`without`, `topk`; binary operators; `vector()`; `label_replace`).
//! `logql-parser` parses; evaluation is here. Line filters before any line rewrite are handed to the
//! store, whose index narrows the candidates.

pub mod pipeline;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use logql::{
    AggregationFunction, BinOp, BinaryExpr, Expr, Grouping, LabelMatcher, LogQuery, MetricQuery, RangeAggregation,
    RangeFunction, VectorAggregation,
};
use vigil_tsdb::logs::{LogQuery as StoreQuery, LogRecord, LogStore, ScanPart};
use vigil_tsdb::{MatchOp, Matcher};

use crate::QueryError;
use pipeline::{Entry, Pipeline};

/// Label set of a stream or series.
pub type LabelMap = BTreeMap<String, String>;

/// Entries of one stream (labels after the pipeline): `(ns, line)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    /// Labels.
    pub labels: LabelMap,
    /// Entries in the query's direction.
    pub entries: Vec<(i64, String)>,
    /// The structured metadata of each entry (same order as `entries`), for clients that ask for it
    /// apart from the labels (Loki's `categorize-labels` encoding).
    pub metadata: Vec<LabelMap>,
}

/// One series of a metric query: `(ms, value)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Labels.
    pub labels: LabelMap,
    /// Points in time order.
    pub points: Vec<(i64, f64)>,
}

/// A parsed LogQL query.
pub fn parse(query: &str) -> Result<Expr, QueryError> {
    logql::parse(query).map_err(|e| QueryError::BadData(format!("parse error: {e}")))
}

/// Evaluates LogQL against a store.
#[derive(Clone)]
pub struct LogqlEngine {
    store: Arc<dyn LogStore>,
}

impl std::fmt::Debug for LogqlEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogqlEngine")
    }
}

/// A value at one step.
#[derive(Debug, Clone)]
enum StepValue {
    Scalar(f64),
    Vector(Vec<(LabelMap, f64)>),
}

fn matchers(selector: &[LabelMatcher]) -> Result<Vec<Matcher>, QueryError> {
    selector
        .iter()
        .map(|m| {
            let op = match m.op {
                logql::MatchOp::Eq => MatchOp::Equal,
                logql::MatchOp::Neq => MatchOp::NotEqual,
                logql::MatchOp::Re => MatchOp::Regex,
                logql::MatchOp::Nre => MatchOp::NotRegex,
                _ => return Err(QueryError::BadData("unsupported matcher".into())),
            };
            Matcher::new(op, m.name.clone(), m.value.clone()).map_err(QueryError::from)
        })
        .collect()
}

/// The store matchers of a log query's stream selector.
pub fn selector_matchers(query: &LogQuery) -> Result<Vec<Matcher>, QueryError> {
    matchers(&query.selector.matchers)
}

impl LogqlEngine {
    /// An engine over `store`.
    pub fn new(store: Arc<dyn LogStore>) -> Self {
        LogqlEngine { store }
    }

    /// Runs a log query over `[start_ns, end_ns)`: at most `limit` entries, newest first when `backward`.
    pub fn logs(
        &self,
        query: &LogQuery,
        start_ns: i64,
        end_ns: i64,
        limit: usize,
        backward: bool,
    ) -> Result<Vec<Stream>, QueryError> {
        let pipeline = Pipeline::new(&query.pipeline)?;
        let store_query = StoreQuery {
            matchers: matchers(&query.selector.matchers)?,
            start_ns,
            end_ns,
            contains: Pipeline::required_substrings(&query.pipeline),
            limit: pipeline.only_line_filters().then_some(limit),
            backward,
        };
        let mut streams: BTreeMap<LabelMap, Stream> = BTreeMap::new();
        let mut taken = 0;
        for record in self.store.select(&store_query)? {
            if taken >= limit {
                break;
            }
            let ts_ns = record.ts_ns;
            let (entry, metadata) = Entry::of(record);
            if let Some(entry) = pipeline.run(entry) {
                let (entry, metadata) = entry.split_metadata(&metadata);
                let stream = streams.entry(entry.labels).or_insert_with_key(|labels| Stream {
                    labels: labels.clone(),
                    entries: Vec::new(),
                    metadata: Vec::new(),
                });
                stream.entries.push((ts_ns, entry.line));
                stream.metadata.push(metadata);
                taken += 1;
            }
        }
        Ok(streams.into_values().collect())
    }

    /// Evaluates a metric query at every step from `start_ms` to `end_ms`.
    pub fn range(
        &self,
        query: &MetricQuery,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<Series>, QueryError> {
        if step_ms <= 0 {
            return Err(QueryError::BadData("zero or negative query resolution step widths are not accepted".into()));
        }
        let steps: Vec<i64> = (0..).map(|i| start_ms + i * step_ms).take_while(|t| *t <= end_ms).collect();
        let values = self.eval(query, &steps)?;
        let mut series: BTreeMap<LabelMap, Vec<(i64, f64)>> = BTreeMap::new();
        for (t, value) in steps.iter().zip(values) {
            match value {
                StepValue::Scalar(v) => series.entry(LabelMap::new()).or_default().push((*t, v)),
                StepValue::Vector(vector) => {
                    for (labels, v) in vector {
                        series.entry(labels).or_default().push((*t, v));
                    }
                }
            }
        }
        Ok(series.into_iter().map(|(labels, points)| Series { labels, points }).collect())
    }

    /// Evaluates a metric query at `time_ms`; a scalar result is one element without labels.
    pub fn instant(&self, query: &MetricQuery, time_ms: i64) -> Result<Vec<(LabelMap, f64)>, QueryError> {
        Ok(match self.eval(query, &[time_ms])?.pop() {
            Some(StepValue::Vector(vector)) => vector,
            Some(StepValue::Scalar(v)) => vec![(LabelMap::new(), v)],
            None => Vec::new(),
        })
    }

    fn eval(&self, query: &MetricQuery, steps: &[i64]) -> Result<Vec<StepValue>, QueryError> {
        match query {
            MetricQuery::Literal(v) => Ok(steps.iter().map(|_| StepValue::Scalar(*v)).collect()),
            MetricQuery::VectorLiteral(v) => {
                Ok(steps.iter().map(|_| StepValue::Vector(vec![(LabelMap::new(), *v)])).collect())
            }
            MetricQuery::Range(range) => self.range_aggregation(range, steps),
            MetricQuery::Vector(aggregation) => {
                if let Some(pushed) = sum_pushdown(aggregation) {
                    return self.range_aggregation(&pushed, steps);
                }
                let inner = self.eval(&aggregation.inner, steps)?;
                Ok(inner.into_iter().map(|value| StepValue::Vector(aggregate(aggregation, to_vector(value)))).collect())
            }
            MetricQuery::Binary(binary) => {
                let (left, right) = (self.eval(&binary.left, steps)?, self.eval(&binary.right, steps)?);
                left.into_iter().zip(right).map(|(l, r)| binary_step(binary, l, r)).collect()
            }
            MetricQuery::LabelReplace(replace) => {
                let regex = regex::Regex::new(&format!("^(?:{})$", replace.regex))
                    .map_err(|e| QueryError::BadData(format!("invalid regex in label_replace: {e}")))?;
                let inner = self.eval(&replace.inner, steps)?;
                Ok(inner
                    .into_iter()
                    .map(|value| {
                        let vector = to_vector(value)
                            .into_iter()
                            .map(|(mut labels, v)| {
                                let source = labels.get(&replace.src_label).cloned().unwrap_or_default();
                                if let Some(captures) = regex.captures(&source) {
                                    let mut value = String::new();
                                    captures.expand(&replace.replacement, &mut value);
                                    if value.is_empty() {
                                        labels.remove(&replace.dst_label);
                                    } else {
                                        labels.insert(replace.dst_label.clone(), value);
                                    }
                                }
                                (labels, v)
                            })
                            .collect();
                        StepValue::Vector(vector)
                    })
                    .collect())
            }
            _ => Err(QueryError::BadData("unsupported metric expression".into())),
        }
    }

    /// Reads every record any step's window needs once, then computes each step from its window.
    fn range_aggregation(&self, aggregation: &RangeAggregation, steps: &[i64]) -> Result<Vec<StepValue>, QueryError> {
        let range_ns = aggregation.range.as_nanos() as i64;
        let offset_ns = aggregation.offset.map_or(0, |o| o.as_nanos() as i64);
        let (first, last) = (steps[0] * 1_000_000, steps[steps.len() - 1] * 1_000_000);
        let query = &aggregation.log_query;
        let mut pipeline = Pipeline::new(&query.pipeline)?;
        let unwrap = aggregation.unwrap.as_ref().or_else(|| {
            query.pipeline.iter().find_map(|s| match s {
                logql::PipelineStage::Unwrap(u) => Some(u),
                _ => None,
            })
        });
        // Grouped `by` labels are all a step reads, besides an unwrapped one.
        if let Some(Grouping { without: false, labels }) = &aggregation.grouping {
            let mut needed = labels.clone();
            needed.extend(unwrap.map(|u| u.label.clone()));
            pipeline = pipeline.needing(&needed);
        }
        let store_query = StoreQuery {
            matchers: matchers(&query.selector.matchers)?,
            start_ns: first - offset_ns - range_ns,
            end_ns: last - offset_ns + 1,
            contains: Pipeline::required_substrings(&query.pipeline),
            limit: None,
            backward: false,
        };
        // Records stream through (none is held after its point is taken), chunk by chunk on every core;
        // each thread keeps its own points, merged at the end.
        let per_thread = scan_in_parallel(self.store.scan(&store_query)?, |points: &mut Points, record| {
            let ts_ns = record.ts_ns;
            let (entry, metadata) = Entry::of(record);
            let Some(mut entry) = pipeline.run(entry) else { return };
            let value = match unwrap {
                None if matches!(aggregation.function, RangeFunction::BytesOverTime | RangeFunction::BytesRate) => {
                    entry.line.len() as f64
                }
                None => 1.0,
                Some(unwrap) => {
                    let Some(raw) = entry.labels.remove(&unwrap.label) else { return };
                    match unwrap_value(&raw, unwrap.conversion.as_deref()) {
                        Some(v) => v,
                        None => return,
                    }
                }
            };
            let labels = match &aggregation.grouping {
                Some(grouping) => group_labels(&entry.labels, grouping),
                None => entry.without_metadata(&metadata).labels,
            };
            points.entry(labels).or_default().push((ts_ns, value));
        })?;
        let mut points = Points::default();
        for thread_points in per_thread {
            for (labels, mut series) in thread_points {
                points.entry(labels).or_default().append(&mut series);
            }
        }
        for series in points.values_mut() {
            series.sort_by_key(|(ts, _)| *ts);
        }
        let range_s = aggregation.range.as_secs_f64();
        Ok(steps
            .iter()
            .map(|t| {
                let end = t * 1_000_000 - offset_ns;
                let start = end - range_ns;
                let mut vector = Vec::new();
                for (labels, series) in &points {
                    let from = series.partition_point(|(ts, _)| *ts <= start);
                    let to = series.partition_point(|(ts, _)| *ts <= end);
                    let window: Vec<f64> = series[from..to].iter().map(|(_, v)| *v).collect();
                    if window.is_empty() {
                        continue;
                    }
                    if let Some(v) = range_function(aggregation, &window, range_s) {
                        vector.push((labels.clone(), v));
                    }
                }
                if aggregation.function == RangeFunction::AbsentOverTime {
                    let present = !vector.is_empty();
                    vector = if present { Vec::new() } else { vec![(equality_labels(&query.selector.matchers), 1.0)] };
                }
                StepValue::Vector(vector)
            })
            .collect())
    }
}

/// Points per output series, as a range aggregation collects them.
type Points = HashMap<LabelMap, Vec<(i64, f64)>, foldhash::fast::RandomState>;

/// Reads the scan's parts on every core (each thread taking the next part left), folding records into
/// one state per thread.
fn scan_in_parallel<S: Default + Send>(
    parts: Vec<ScanPart>,
    fold: impl Fn(&mut S, LogRecord) + Sync,
) -> Result<Vec<S>, QueryError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(parts.len()).max(1);
    let queue = std::sync::Mutex::new(parts.into_iter());
    let next = || queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).next();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<S, QueryError> {
                    let mut state = S::default();
                    while let Some(part) = next() {
                        part.read(&mut |record| fold(&mut state, record))?;
                    }
                    Ok(state)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a scan thread does not panic")).collect()
    })
}

/// `sum by (x) (count_over_time(...))` equals `count_over_time(...)` grouped by `x` while it reads the
/// records (counts, byte sums and plain rates add up), so extracted labels never multiply the series.
fn sum_pushdown(aggregation: &VectorAggregation) -> Option<RangeAggregation> {
    let MetricQuery::Range(range) = &aggregation.inner else { return None };
    let additive = matches!(
        range.function,
        RangeFunction::CountOverTime | RangeFunction::BytesOverTime | RangeFunction::BytesRate | RangeFunction::Rate
    );
    let unwrapped =
        range.unwrap.is_some() || range.log_query.pipeline.iter().any(|s| matches!(s, logql::PipelineStage::Unwrap(_)));
    if aggregation.function != AggregationFunction::Sum || !additive || unwrapped || range.grouping.is_some() {
        return None;
    }
    let mut pushed = (**range).clone();
    pushed.grouping = Some(aggregation.grouping.clone().unwrap_or(Grouping { without: false, labels: Vec::new() }));
    Some(pushed)
}

fn equality_labels(selector: &[LabelMatcher]) -> LabelMap {
    selector.iter().filter(|m| m.op == logql::MatchOp::Eq).map(|m| (m.name.clone(), m.value.clone())).collect()
}

fn unwrap_value(raw: &str, conversion: Option<&str>) -> Option<f64> {
    match conversion {
        Some("duration") | Some("duration_seconds") => crate::parse_duration_seconds(raw.trim()).ok(),
        Some("bytes") => {
            let text = raw.trim();
            let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
            let number: f64 = text[..split].parse().ok()?;
            let unit = match text[split..].to_ascii_lowercase().as_str() {
                "" | "b" => 1.0,
                "kb" => 1e3,
                "mb" => 1e6,
                "gb" => 1e9,
                "kib" => 1024.0,
                "mib" => 1_048_576.0,
                "gib" => 1_073_741_824.0,
                _ => return None,
            };
            Some(number * unit)
        }
        _ => raw.trim().parse().ok(),
    }
}

fn range_function(aggregation: &RangeAggregation, window: &[f64], range_s: f64) -> Option<f64> {
    let n = window.len() as f64;
    let sum: f64 = window.iter().sum();
    let mean = sum / n;
    let variance = window.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    Some(match aggregation.function {
        RangeFunction::CountOverTime => n,
        RangeFunction::Rate if aggregation.unwrap.is_none() => n / range_s,
        RangeFunction::Rate | RangeFunction::BytesRate => sum / range_s,
        RangeFunction::RateCounter => {
            let mut increase = 0.0;
            for pair in window.windows(2) {
                increase += if pair[1] >= pair[0] { pair[1] - pair[0] } else { pair[1] };
            }
            increase / range_s
        }
        RangeFunction::BytesOverTime | RangeFunction::SumOverTime => sum,
        RangeFunction::AvgOverTime => mean,
        RangeFunction::MinOverTime => window.iter().copied().fold(f64::INFINITY, f64::min),
        RangeFunction::MaxOverTime => window.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        RangeFunction::StdvarOverTime => variance,
        RangeFunction::StddevOverTime => variance.sqrt(),
        RangeFunction::FirstOverTime => window[0],
        RangeFunction::LastOverTime => window[window.len() - 1],
        RangeFunction::QuantileOverTime => quantile(aggregation.param.unwrap_or(0.5), window),
        RangeFunction::AbsentOverTime => 1.0,
        _ => return None,
    })
}

/// Prometheus's quantile: linear interpolation between the closest ranks.
fn quantile(q: f64, values: &[f64]) -> f64 {
    if !(0.0..=1.0).contains(&q) {
        return if q < 0.0 { f64::NEG_INFINITY } else { f64::INFINITY };
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = q * (sorted.len() - 1) as f64;
    let (lower, upper) = (rank.floor() as usize, rank.ceil() as usize);
    let weight = rank - rank.floor();
    sorted[lower] * (1.0 - weight) + sorted[upper] * weight
}

fn group_labels(labels: &LabelMap, grouping: &Grouping) -> LabelMap {
    labels
        .iter()
        .filter(|(name, _)| grouping.labels.contains(name) != grouping.without)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn to_vector(value: StepValue) -> Vec<(LabelMap, f64)> {
    match value {
        StepValue::Vector(vector) => vector,
        StepValue::Scalar(v) => vec![(LabelMap::new(), v)],
    }
}

fn aggregate(aggregation: &VectorAggregation, input: Vec<(LabelMap, f64)>) -> Vec<(LabelMap, f64)> {
    let grouping = aggregation.grouping.clone().unwrap_or(Grouping { without: false, labels: Vec::new() });
    let mut groups: BTreeMap<LabelMap, Vec<(LabelMap, f64)>> = BTreeMap::new();
    for (labels, v) in input {
        groups.entry(group_labels(&labels, &grouping)).or_default().push((labels, v));
    }
    let mut out = Vec::new();
    for (key, members) in groups {
        let values: Vec<f64> = members.iter().map(|(_, v)| *v).collect();
        let n = values.len() as f64;
        let sum: f64 = values.iter().sum();
        let mean = sum / n;
        let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let value = match aggregation.function {
            AggregationFunction::Sum => sum,
            AggregationFunction::Avg => mean,
            AggregationFunction::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
            AggregationFunction::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            AggregationFunction::Count => n,
            AggregationFunction::Stdvar => variance,
            AggregationFunction::Stddev => variance.sqrt(),
            AggregationFunction::Topk | AggregationFunction::Bottomk => {
                let k = aggregation.param.unwrap_or(1.0).max(0.0) as usize;
                let mut members = members;
                members.sort_by(|a, b| b.1.total_cmp(&a.1));
                if aggregation.function == AggregationFunction::Bottomk {
                    members.reverse();
                }
                out.extend(members.into_iter().take(k));
                continue;
            }
            AggregationFunction::Sort | AggregationFunction::SortDesc => {
                out.extend(members);
                continue;
            }
            _ => continue,
        };
        out.push((key, value));
    }
    match aggregation.function {
        AggregationFunction::Sort => out.sort_by(|a, b| a.1.total_cmp(&b.1)),
        AggregationFunction::SortDesc => out.sort_by(|a, b| b.1.total_cmp(&a.1)),
        _ => {}
    }
    out
}

fn arithmetic(op: BinOp, a: f64, b: f64) -> Option<f64> {
    Some(match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => a / b,
        BinOp::Mod => a % b,
        BinOp::Pow => a.powf(b),
        _ => return None,
    })
}

fn comparison(op: BinOp, a: f64, b: f64) -> Option<bool> {
    Some(match op {
        BinOp::Eq => a == b,
        BinOp::Neq => a != b,
        BinOp::Gt => a > b,
        BinOp::Gte => a >= b,
        BinOp::Lt => a < b,
        BinOp::Lte => a <= b,
        _ => return None,
    })
}

/// `a op b` for one pair; `None` drops the element (a false comparison without `bool`).
fn apply(binary: &BinaryExpr, a: f64, b: f64, keep: f64) -> Option<f64> {
    if let Some(v) = arithmetic(binary.op, a, b) {
        return Some(v);
    }
    let holds = comparison(binary.op, a, b)?;
    match (binary.bool_modifier, holds) {
        (true, holds) => Some(if holds { 1.0 } else { 0.0 }),
        (false, true) => Some(keep),
        (false, false) => None,
    }
}

fn signature(labels: &LabelMap, binary: &BinaryExpr) -> LabelMap {
    match &binary.matching {
        Some(matching) => group_labels(labels, &Grouping { without: !matching.on, labels: matching.labels.clone() }),
        None => labels.clone(),
    }
}

fn binary_step(binary: &BinaryExpr, left: StepValue, right: StepValue) -> Result<StepValue, QueryError> {
    Ok(match (left, right) {
        (StepValue::Scalar(a), StepValue::Scalar(b)) => {
            StepValue::Scalar(apply(binary, a, b, a).unwrap_or(if binary.bool_modifier { 0.0 } else { f64::NAN }))
        }
        (StepValue::Vector(vector), StepValue::Scalar(b)) => {
            StepValue::Vector(vector.into_iter().filter_map(|(l, a)| Some((l, apply(binary, a, b, a)?))).collect())
        }
        (StepValue::Scalar(a), StepValue::Vector(vector)) => {
            StepValue::Vector(vector.into_iter().filter_map(|(l, b)| Some((l, apply(binary, a, b, b)?))).collect())
        }
        (StepValue::Vector(left), StepValue::Vector(right)) => {
            let right_by: HashMap<LabelMap, f64> = right.iter().map(|(l, v)| (signature(l, binary), *v)).collect();
            let vector = match binary.op {
                BinOp::And => left.into_iter().filter(|(l, _)| right_by.contains_key(&signature(l, binary))).collect(),
                BinOp::Unless => {
                    left.into_iter().filter(|(l, _)| !right_by.contains_key(&signature(l, binary))).collect()
                }
                BinOp::Or => {
                    let left_keys: Vec<LabelMap> = left.iter().map(|(l, _)| signature(l, binary)).collect();
                    let mut out = left;
                    out.extend(right.into_iter().filter(|(l, _)| !left_keys.contains(&signature(l, binary))));
                    out
                }
                _ => left
                    .into_iter()
                    .filter_map(|(labels, a)| {
                        let key = signature(&labels, binary);
                        let b = *right_by.get(&key)?;
                        let v = apply(binary, a, b, a)?;
                        let keep_labels =
                            if arithmetic(binary.op, a, b).is_some() || binary.bool_modifier { key } else { labels };
                        Some((keep_labels, v))
                    })
                    .collect(),
            };
            StepValue::Vector(vector)
        }
    })
}

#[cfg(test)]
mod tests;
