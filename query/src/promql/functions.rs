//! PromQL functions.

use chrono::{DateTime, Datelike, Timelike};
use promql_parser::parser::{Call, Expr};
use regex::Regex;
use vigil_tsdb::{Labels, METRIC_NAME, MatchOp, Sample};

use super::aggregate::{average, variance};
use super::eval::Evaluator;
use super::{FastMap, FastSet};
use super::{InstantSample, Value};
use crate::QueryError;

/// Neumaier-compensated sum, as Prometheus sums floats.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct KahanSum {
    sum: f64,
    compensation: f64,
}

impl KahanSum {
    pub(super) fn new(value: f64) -> Self {
        KahanSum { sum: value, compensation: 0.0 }
    }

    /// The running sum without its compensation term.
    pub(super) fn raw_sum(&self) -> f64 {
        self.sum
    }

    /// Both terms multiplied by `factor`.
    pub(super) fn scaled(&self, factor: f64) -> Self {
        KahanSum { sum: self.sum * factor, compensation: self.compensation * factor }
    }

    pub(super) fn add(&mut self, value: f64) {
        let total = self.sum + value;
        if total.is_infinite() {
            self.compensation = 0.0;
        } else if self.sum.abs() >= value.abs() {
            self.compensation += (self.sum - total) + value;
        } else {
            self.compensation += (value - total) + self.sum;
        }
        self.sum = total;
    }

    pub(super) fn value(&self) -> f64 {
        if self.sum.is_infinite() { self.sum } else { self.sum + self.compensation }
    }
}

/// The φ-quantile of `values` by linear interpolation between closest ranks.
pub(super) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // NaN sorts before every number, as Go's sort.Float64s orders it.
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0) as usize;
    let upper = ((lower + 1) as f64).min(n - 1.0) as usize;
    let weight = rank - rank.floor();
    values[lower] * (1.0 - weight) + values[upper] * weight
}

/// Formats a float as Prometheus prints sample values and `count_values` labels: the shortest
/// decimal that reads back exactly, never an exponent, and `NaN`, `+Inf`, `-Inf`.
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    format!("{v}")
}

/// A float as a label value, the way Prometheus 3 normalises `le` and `quantile`: `1.0`, `0.25`.
fn float_label_value(v: f64) -> String {
    let text = format_float(v);
    if text.contains(['.', 'e', 'I', 'N']) { text } else { format!("{text}.0") }
}

fn arg(call: &Call, index: usize) -> Result<&Expr, QueryError> {
    call.args
        .args
        .get(index)
        .map(|boxed| boxed.as_ref())
        .ok_or_else(|| QueryError::BadData(format!("function {:?} is missing argument {}", call.func.name, index + 1)))
}

pub(super) fn eval(evaluator: &mut Evaluator<'_>, call: &Call, t: i64) -> Result<Value, QueryError> {
    // Outputs keep their inputs' label sets (names are only marked for dropping), so they stay unique;
    // label_replace and label_join check their own, and `finalize` checks once names are dropped.
    eval_call(evaluator, call, t)
}

fn eval_call(evaluator: &mut Evaluator<'_>, call: &Call, t: i64) -> Result<Value, QueryError> {
    let name = call.func.name;
    if let Some(reducer) = range_reducer(name) {
        let keeps_name = matches!(name, "last_over_time" | "first_over_time");
        return per_window(evaluator, arg(call, 0)?, t, !keeps_name, |_, samples| reducer(samples));
    }
    match name {
        "rate" | "increase" | "delta" => {
            let matrix = arg(call, 0)?;
            let range_ms = range_of(matrix);
            let window_end = evaluator.range_end(matrix, t);
            let (is_counter, is_rate) = (name != "delta", name == "rate");
            let mut not_counters = std::collections::BTreeSet::new();
            let mut checked = std::mem::take(&mut evaluator.counter_names_checked);
            let value = per_window(evaluator, matrix, t, true, |labels, samples| {
                if is_counter && checked.insert(labels.identity()) {
                    note_if_not_counter(labels, &mut not_counters);
                }
                extrapolate(samples, window_end, range_ms, is_counter, is_rate)
            })?;
            evaluator.counter_names_checked = checked;
            report_not_counters(evaluator, not_counters);
            Ok(value)
        }
        "irate" | "idelta" => {
            let is_rate = name == "irate";
            let mut not_counters = std::collections::BTreeSet::new();
            let mut checked = std::mem::take(&mut evaluator.counter_names_checked);
            let value = per_window(evaluator, arg(call, 0)?, t, true, |labels, samples| {
                if is_rate && checked.insert(labels.identity()) {
                    note_if_not_counter(labels, &mut not_counters);
                }
                instant_rate(samples, is_rate)
            })?;
            evaluator.counter_names_checked = checked;
            report_not_counters(evaluator, not_counters);
            Ok(value)
        }
        "quantile_over_time" => {
            let q = evaluator.eval_scalar(arg(call, 0)?, t)?;
            check_quantile(evaluator, q);
            let series = evaluator.eval_range(arg(call, 1)?, t)?;
            Ok(Value::Vector(
                series
                    .into_iter()
                    .map(|s| {
                        let mut values: Vec<f64> = s.samples.iter().map(|p| p.v).collect();
                        InstantSample { labels: s.labels, drop_name: true, t, v: quantile(q, &mut values) }
                    })
                    .collect(),
            ))
        }
        "predict_linear" => {
            let series = evaluator.eval_range(arg(call, 0)?, t)?;
            let seconds = evaluator.eval_scalar(arg(call, 1)?, t)?;
            Ok(Value::Vector(
                series
                    .into_iter()
                    .filter(|s| s.samples.len() >= 2)
                    .map(|s| {
                        let (slope, intercept) = linear_regression(&s.samples, t);
                        InstantSample { labels: s.labels, drop_name: true, t, v: slope * seconds + intercept }
                    })
                    .collect(),
            ))
        }
        "double_exponential_smoothing" | "holt_winters" => {
            let series = evaluator.eval_range(arg(call, 0)?, t)?;
            let smoothing = evaluator.eval_scalar(arg(call, 1)?, t)?;
            let trend = evaluator.eval_scalar(arg(call, 2)?, t)?;
            if !(smoothing > 0.0 && smoothing < 1.0) {
                return Err(QueryError::Execution(format!(
                    "invalid smoothing factor. Expected: 0 < sf < 1, got: {smoothing}"
                )));
            }
            if !(trend > 0.0 && trend < 1.0) {
                return Err(QueryError::Execution(format!("invalid trend factor. Expected: 0 < tf < 1, got: {trend}")));
            }
            Ok(Value::Vector(
                series
                    .into_iter()
                    .filter_map(|s| {
                        let v = double_exponential_smoothing(&s.samples, smoothing, trend)?;
                        Some(InstantSample { labels: s.labels, drop_name: true, t, v })
                    })
                    .collect(),
            ))
        }
        "absent_over_time" => {
            let series = evaluator.eval_range(arg(call, 0)?, t)?;
            Ok(Value::Vector(if series.is_empty() { absent_labels(arg(call, 0)?, t) } else { Vec::new() }))
        }
        "absent" => {
            let vector = evaluator.eval_vector(arg(call, 0)?, t)?;
            Ok(Value::Vector(if vector.is_empty() { absent_labels(arg(call, 0)?, t) } else { Vec::new() }))
        }
        "time" => Ok(Value::Scalar(t as f64 / 1000.0)),
        "start" => Ok(Value::Scalar(evaluator.query_start() as f64 / 1000.0)),
        "end" => Ok(Value::Scalar(evaluator.query_end() as f64 / 1000.0)),
        "range" => Ok(Value::Scalar((evaluator.query_end() - evaluator.query_start()) as f64 / 1000.0)),
        "step" => Ok(Value::Scalar(evaluator.query_step() as f64 / 1000.0)),
        "min_of" | "max_of" => {
            let a = evaluator.eval_scalar(arg(call, 0)?, t)?;
            let b = evaluator.eval_scalar(arg(call, 1)?, t)?;
            if a.is_nan() || b.is_nan() {
                return Ok(Value::Scalar(f64::NAN));
            }
            Ok(Value::Scalar(if name == "min_of" { a.min(b) } else { a.max(b) }))
        }
        "pi" => Ok(Value::Scalar(std::f64::consts::PI)),
        "vector" => {
            let v = evaluator.eval_scalar(arg(call, 0)?, t)?;
            Ok(Value::Vector(vec![InstantSample { labels: Labels::default(), t, v, drop_name: false }]))
        }
        "scalar" => {
            let vector = evaluator.eval_vector(arg(call, 0)?, t)?;
            Ok(Value::Scalar(if vector.len() == 1 { vector[0].v } else { f64::NAN }))
        }
        "timestamp" => {
            let vector = evaluator.eval_vector(arg(call, 0)?, t)?;
            Ok(Value::Vector(
                vector
                    .into_iter()
                    .map(|s| InstantSample { labels: s.labels, drop_name: true, t, v: s.t as f64 / 1000.0 })
                    .collect(),
            ))
        }
        "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc" if evaluator.query_step() > 0 => {
            evaluator
                .annotations
                .warn("sort is ineffective for range queries since results are always ordered by labels");
            Ok(Value::Vector(evaluator.eval_vector(arg(call, 0)?, t)?))
        }
        "sort" | "sort_desc" => {
            let mut vector = evaluator.eval_vector(arg(call, 0)?, t)?;
            vector.sort_by(|a, b| sort_order(a.v, b.v, name == "sort_desc"));
            Ok(Value::Vector(vector))
        }
        "sort_by_label" | "sort_by_label_desc" => {
            let mut vector = evaluator.eval_vector(arg(call, 0)?, t)?;
            let mut names = Vec::new();
            for index in 1..call.args.args.len() {
                names.push(string_arg(evaluator, arg(call, index)?, t)?);
            }
            vector.sort_by(|a, b| {
                let mut ordering = std::cmp::Ordering::Equal;
                for name in &names {
                    ordering = natural_cmp(a.labels.get(name).unwrap_or(""), b.labels.get(name).unwrap_or(""));
                    if ordering.is_ne() {
                        break;
                    }
                }
                if ordering.is_eq() {
                    ordering = a.labels.cmp(&b.labels);
                }
                if name == "sort_by_label_desc" { ordering.reverse() } else { ordering }
            });
            Ok(Value::Vector(vector))
        }
        "label_replace" => label_replace(evaluator, call, t),
        "label_join" => label_join(evaluator, call, t),
        "round" => {
            let vector = evaluator.eval_vector(arg(call, 0)?, t)?;
            let to_nearest = match call.args.args.get(1) {
                Some(expr) => evaluator.eval_scalar(expr, t)?,
                None => 1.0,
            };
            let inverse = 1.0 / to_nearest;
            Ok(Value::Vector(map_values(vector, t, |v| (v * inverse + 0.5).floor() / inverse)))
        }
        "clamp" => {
            let vector = evaluator.eval_vector(arg(call, 0)?, t)?;
            let min = evaluator.eval_scalar(arg(call, 1)?, t)?;
            let max = evaluator.eval_scalar(arg(call, 2)?, t)?;
            if max < min {
                return Ok(Value::Vector(Vec::new()));
            }
            Ok(Value::Vector(map_values(vector, t, |v| v.max(min).min(max))))
        }
        "clamp_min" | "clamp_max" => {
            let vector = evaluator.eval_vector(arg(call, 0)?, t)?;
            let bound = evaluator.eval_scalar(arg(call, 1)?, t)?;
            let is_min = name == "clamp_min";
            Ok(Value::Vector(map_values(vector, t, |v| {
                if v.is_nan() || bound.is_nan() {
                    return f64::NAN;
                }
                if is_min { v.max(bound) } else { v.min(bound) }
            })))
        }
        "histogram_quantile" => {
            let q = evaluator.eval_scalar(arg(call, 0)?, t)?;
            check_quantile(evaluator, q);
            let vector = evaluator.eval_vector(arg(call, 1)?, t)?;
            histogram_quantile(evaluator, q, vector, t)
        }
        "histogram_quantiles" => {
            let vector = evaluator.eval_vector(arg(call, 0)?, t)?;
            let label = string_arg(evaluator, arg(call, 1)?, t)?;
            let mut quantiles = Vec::new();
            for index in 2..call.args.args.len() {
                let q = evaluator.eval_scalar(arg(call, index)?, t)?;
                check_quantile(evaluator, q);
                quantiles.push(q);
            }
            if vector.iter().any(|sample| sample.labels.get(&label).is_some()) {
                return Err(QueryError::Execution(format!("label {label:?} already exists on the input series")));
            }
            let mut out = Vec::new();
            for q in quantiles {
                let Value::Vector(samples) = histogram_quantile(evaluator, q, vector.clone(), t)? else { continue };
                let value = float_label_value(q);
                out.extend(samples.into_iter().map(|s| InstantSample { labels: s.labels.with(&label, &value), ..s }));
            }
            Ok(Value::Vector(out))
        }
        "histogram_avg" | "histogram_count" | "histogram_sum" | "histogram_stddev" | "histogram_stdvar"
        | "histogram_fraction" => {
            // These read native histograms only; float samples are ignored, as in Prometheus, and native
            // histograms are not stored yet.
            for index in 0..call.args.args.len() {
                evaluator.eval(arg(call, index)?, t)?;
            }
            Ok(Value::Vector(Vec::new()))
        }
        "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute" | "month" | "year" => {
            let vector = match call.args.args.first() {
                Some(expr) => evaluator.eval_vector(expr, t)?,
                None => vec![InstantSample { labels: Labels::default(), t, v: t as f64 / 1000.0, drop_name: false }],
            };
            Ok(Value::Vector(map_values(vector, t, |v| date_part(name, v))))
        }
        _ => match math_function(name) {
            Some(function) => {
                let vector = evaluator.eval_vector(arg(call, 0)?, t)?;
                Ok(Value::Vector(map_values(vector, t, function)))
            }
            None => Err(QueryError::Execution(format!("function {name:?} is not supported"))),
        },
    }
}

/// Compares strings with runs of digits ordered by their number ("2" before "10").
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        match (a.chars().next(), b.chars().next()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let a_len = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
                let b_len = b.find(|c: char| !c.is_ascii_digit()).unwrap_or(b.len());
                let (a_digits, b_digits) = (a[..a_len].trim_start_matches('0'), b[..b_len].trim_start_matches('0'));
                let ordering = a_digits.len().cmp(&b_digits.len()).then_with(|| a_digits.cmp(b_digits));
                if ordering.is_ne() {
                    return ordering;
                }
                a = &a[a_len..];
                b = &b[b_len..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(&y);
                }
                a = &a[x.len_utf8()..];
                b = &b[y.len_utf8()..];
            }
        }
    }
}

fn string_arg(evaluator: &mut Evaluator<'_>, expr: &Expr, t: i64) -> Result<String, QueryError> {
    match evaluator.eval(expr, t)? {
        Value::String(s) => Ok(s),
        other => Err(QueryError::Execution(format!("expected string, got {}", other.type_name()))),
    }
}

pub(super) fn sort_order(a: f64, b: f64, descending: bool) -> std::cmp::Ordering {
    // NaN sorts last in both directions.
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ if descending => b.partial_cmp(&a).unwrap_or(std::cmp::Ordering::Equal),
        _ => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
    }
}

fn map_values(vector: Vec<InstantSample>, t: i64, function: impl Fn(f64) -> f64) -> Vec<InstantSample> {
    vector.into_iter().map(|s| InstantSample { labels: s.labels, drop_name: true, t, v: function(s.v) }).collect()
}

fn math_function(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sgn" => |v: f64| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        },
        "acos" => f64::acos,
        "acosh" => f64::acosh,
        "asin" => f64::asin,
        "asinh" => f64::asinh,
        "atan" => f64::atan,
        "atanh" => f64::atanh,
        "cos" => f64::cos,
        "cosh" => f64::cosh,
        "sin" => f64::sin,
        "sinh" => f64::sinh,
        "tan" => f64::tan,
        "tanh" => f64::tanh,
        "deg" => f64::to_degrees,
        "rad" => f64::to_radians,
        _ => return None,
    })
}

fn date_part(name: &str, seconds: f64) -> f64 {
    if !seconds.is_finite() {
        return f64::NAN;
    }
    let Some(time) = DateTime::from_timestamp(seconds.floor() as i64, 0) else {
        return f64::NAN;
    };
    f64::from(match name {
        "day_of_month" => time.day(),
        "day_of_week" => time.weekday().num_days_from_sunday(),
        "day_of_year" => time.ordinal(),
        "hour" => time.hour(),
        "minute" => time.minute(),
        "month" => time.month(),
        "year" => return f64::from(time.year()),
        _ => {
            let (year, month) = (time.year(), time.month());
            let next = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
            let first_next = chrono::NaiveDate::from_ymd_opt(next.0, next.1, 1).expect("valid date");
            first_next.pred_opt().expect("valid date").day()
        }
    })
}

type Reducer = fn(&[Sample]) -> Option<f64>;

/// The `*_over_time` family and others that reduce each series of a range vector to one value.
fn range_reducer(name: &str) -> Option<Reducer> {
    Some(match name {
        "avg_over_time" => |s| Some(average(s.iter().map(|p| p.v))),
        "sum_over_time" => |s| {
            let mut sum = KahanSum::default();
            s.iter().for_each(|p| sum.add(p.v));
            Some(sum.value())
        },
        "min_over_time" => {
            |s| Some(s.iter().map(|p| p.v).fold(f64::NAN, |acc, v| if acc.is_nan() || v < acc { v } else { acc }))
        }
        "max_over_time" => {
            |s| Some(s.iter().map(|p| p.v).fold(f64::NAN, |acc, v| if acc.is_nan() || v > acc { v } else { acc }))
        }
        "count_over_time" => |s| Some(s.len() as f64),
        "last_over_time" => |s| s.last().map(|p| p.v),
        "first_over_time" => |s| s.first().map(|p| p.v),
        "present_over_time" => |_| Some(1.0),
        "stddev_over_time" => |s| Some(variance(s.iter().map(|p| p.v)).sqrt()),
        "stdvar_over_time" => |s| Some(variance(s.iter().map(|p| p.v))),
        "mad_over_time" => |s| {
            let mut values: Vec<f64> = s.iter().map(|p| p.v).collect();
            if values.iter().any(|v| v.is_nan()) {
                return Some(f64::NAN);
            }
            let median = quantile(0.5, &mut values);
            let mut deviations: Vec<f64> = values.iter().map(|v| (v - median).abs()).collect();
            Some(quantile(0.5, &mut deviations))
        },
        "changes" => {
            |s| Some(s.windows(2).filter(|w| w[0].v != w[1].v && !(w[0].v.is_nan() && w[1].v.is_nan())).count() as f64)
        }
        "resets" => |s| Some(s.windows(2).filter(|w| w[1].v < w[0].v).count() as f64),
        "deriv" => |s| (s.len() >= 2).then(|| linear_regression(s, s[0].t).0),
        "ts_of_last_over_time" => |s| s.last().map(|p| p.t as f64 / 1000.0),
        "ts_of_first_over_time" => |s| s.first().map(|p| p.t as f64 / 1000.0),
        "ts_of_max_over_time" => |s| extreme_time(s, |a, b| a > b),
        "ts_of_min_over_time" => |s| extreme_time(s, |a, b| a < b),
        _ => return None,
    })
}

/// Time (seconds) of the best sample by `better`; ties go to the latest, NaN loses to any number.
fn extreme_time(samples: &[Sample], better: fn(f64, f64) -> bool) -> Option<f64> {
    let mut best: Option<Sample> = None;
    for sample in samples {
        let replace = match best {
            None => true,
            Some(current) => current.v.is_nan() || better(sample.v, current.v) || sample.v == current.v,
        };
        if replace {
            best = Some(*sample);
        }
    }
    best.map(|s| s.t as f64 / 1000.0)
}

/// Collects metric names that do not look like counters (Prometheus's naming heuristic).
fn note_if_not_counter(labels: &Labels, names: &mut std::collections::BTreeSet<String>) {
    let Some(name) = labels.metric_name() else { return };
    if !["_total", "_sum", "_count", "_bucket"].iter().any(|suffix| name.ends_with(suffix)) {
        names.insert(name.to_owned());
    }
}

fn report_not_counters(evaluator: &mut Evaluator<'_>, names: std::collections::BTreeSet<String>) {
    for name in names {
        evaluator
            .annotations
            .info(format!("metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {name:?}"));
    }
}

/// Warns when a quantile argument is outside [0, 1] (NaN included).
pub(super) fn check_quantile(evaluator: &mut Evaluator<'_>, q: f64) {
    if !(0.0..=1.0).contains(&q) {
        evaluator.annotations.warn(format!("quantile value should be between 0 and 1, got {}", format_float(q)));
    }
}

/// One output sample per series of a range-vector argument for which `compute` gives a value.
fn per_window(
    evaluator: &mut Evaluator<'_>,
    expr: &Expr,
    t: i64,
    drops_name: bool,
    mut compute: impl FnMut(&Labels, &[Sample]) -> Option<f64>,
) -> Result<Value, QueryError> {
    let mut out = Vec::new();
    evaluator.windows(expr, t, |labels, name_dropped, samples| {
        if let Some(v) = compute(labels, samples) {
            out.push(InstantSample { labels: labels.clone(), t, v, drop_name: name_dropped || drops_name });
        }
    })?;
    Ok(Value::Vector(out))
}

/// The window of a matrix selector or subquery argument, in ms.
fn range_of(expr: &Expr) -> i64 {
    match expr {
        Expr::MatrixSelector(matrix) => matrix.range.as_millis() as i64,
        Expr::Subquery(subquery) => subquery.range.as_millis() as i64,
        Expr::Paren(paren) => range_of(&paren.expr),
        _ => 0,
    }
}

/// `rate`, `increase` and `delta` of one window: the change, extrapolated towards the window's edges
/// (`window_end` is the evaluation time moved by `offset` and `@`).
fn extrapolate(samples: &[Sample], window_end: i64, range_ms: i64, is_counter: bool, is_rate: bool) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    let mut result = last.v - first.v;
    if is_counter {
        for pair in samples.windows(2) {
            if pair[1].v < pair[0].v {
                result += pair[0].v;
            }
        }
    }
    let range_start = window_end - range_ms;
    let mut to_start = (first.t - range_start) as f64 / 1000.0;
    let mut to_end = (window_end - last.t) as f64 / 1000.0;
    let sampled = (last.t - first.t) as f64 / 1000.0;
    let average_gap = sampled / (samples.len() - 1) as f64;
    let threshold = average_gap * 1.1;
    if to_start >= threshold {
        to_start = average_gap / 2.0;
    }
    if is_counter && result > 0.0 && first.v >= 0.0 {
        let to_zero = sampled * (first.v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = average_gap / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if is_rate {
        factor /= range_ms as f64 / 1000.0;
    }
    Some(result * factor)
}

/// `irate` and `idelta` of one window: from its last two samples.
fn instant_rate(samples: &[Sample], is_rate: bool) -> Option<f64> {
    let n = samples.len();
    if n < 2 {
        return None;
    }
    let (previous, last) = (samples[n - 2], samples[n - 1]);
    let value = if is_rate && last.v < previous.v { last.v } else { last.v - previous.v };
    if !is_rate {
        return Some(value);
    }
    let seconds = (last.t - previous.t) as f64 / 1000.0;
    (seconds != 0.0).then(|| value / seconds)
}

/// Least-squares slope and intercept, x in seconds relative to `intercept_time` (ms).
fn linear_regression(samples: &[Sample], intercept_time: i64) -> (f64, f64) {
    let (mut n, mut sum_x, mut sum_y, mut sum_xy, mut sum_x2) =
        (0.0, KahanSum::default(), KahanSum::default(), KahanSum::default(), KahanSum::default());
    let initial = samples[0].v;
    let mut constant = true;
    for (i, sample) in samples.iter().enumerate() {
        if constant && i > 0 && sample.v != initial {
            constant = false;
        }
        n += 1.0;
        let x = (sample.t - intercept_time) as f64 / 1000.0;
        sum_x.add(x);
        sum_y.add(sample.v);
        sum_xy.add(x * sample.v);
        sum_x2.add(x * x);
    }
    if constant {
        if initial.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, initial);
    }
    let (sx, sy, sxy, sx2) = (sum_x.value(), sum_y.value(), sum_xy.value(), sum_x2.value());
    let cov_xy = sxy - sx * sy / n;
    let var_x = sx2 - sx * sx / n;
    let slope = cov_xy / var_x;
    let intercept = sy / n - slope * sx / n;
    (slope, intercept)
}

/// Holt's linear smoothing: a level and a trend, each updated per sample; returns the last level.
fn double_exponential_smoothing(samples: &[Sample], smoothing: f64, trend_factor: f64) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let mut previous_level = 0.0;
    let mut level = samples[0].v;
    let mut trend = samples[1].v - samples[0].v;
    for (i, sample) in samples.iter().enumerate().skip(1) {
        if i > 1 {
            trend = trend_factor * (level - previous_level) + (1.0 - trend_factor) * trend;
        }
        let next = smoothing * sample.v + (1.0 - smoothing) * (level + trend);
        previous_level = level;
        level = next;
    }
    Some(level)
}

/// Labels for `absent`: the equality matchers of a plain selector argument.
fn absent_labels(expr: &Expr, t: i64) -> Vec<InstantSample> {
    let selector = match expr {
        Expr::VectorSelector(selector) => Some(selector),
        Expr::MatrixSelector(matrix) => Some(&matrix.vs),
        _ => None,
    };
    let mut labels = Labels::default();
    if let Some(selector) = selector {
        let mut seen: Vec<&str> = Vec::new();
        let mut duplicated: Vec<&str> = Vec::new();
        for matcher in &selector.matchers.matchers {
            if matcher.name == METRIC_NAME {
                continue;
            }
            if seen.contains(&matcher.name.as_str()) {
                duplicated.push(&matcher.name);
            }
            seen.push(&matcher.name);
            if let Ok(converted) = crate::selector::convert(matcher)
                && converted.op == MatchOp::Equal
            {
                labels = labels.with(&matcher.name, &matcher.value);
            }
        }
        for name in duplicated {
            labels = labels.with(name, "");
        }
    }
    vec![InstantSample { labels, t, v: 1.0, drop_name: false }]
}

fn check_label_name(name: &str) -> Result<(), QueryError> {
    if name.is_empty() {
        return Err(QueryError::Execution(format!("invalid label name {name:?}")));
    }
    Ok(())
}

fn label_replace(evaluator: &mut Evaluator<'_>, call: &Call, t: i64) -> Result<Value, QueryError> {
    let vector = evaluator.eval_vector(arg(call, 0)?, t)?;
    let destination = string_arg(evaluator, arg(call, 1)?, t)?;
    let replacement = string_arg(evaluator, arg(call, 2)?, t)?;
    let source = string_arg(evaluator, arg(call, 3)?, t)?;
    let pattern = string_arg(evaluator, arg(call, 4)?, t)?;
    let regex = Regex::new(&format!("^(?s:{pattern})$"))
        .map_err(|e| QueryError::BadData(format!("invalid regular expression in label_replace(): {pattern}: {e}")))?;
    check_label_name(&destination)?;
    let mut out = Vec::with_capacity(vector.len());
    for sample in vector {
        let value = sample.labels.get(&source).unwrap_or("");
        // Writing `__name__` explicitly keeps the name, even if an earlier step marked it for dropping.
        let (labels, drop_name) = match regex.captures(value) {
            Some(captures) => {
                let mut expanded = String::new();
                captures.expand(&replacement, &mut expanded);
                (sample.labels.with(&destination, &expanded), sample.drop_name && destination != METRIC_NAME)
            }
            None => (sample.labels, sample.drop_name),
        };
        out.push(InstantSample { labels, t: sample.t, v: sample.v, drop_name });
    }
    check_unique(&out)?;
    Ok(Value::Vector(out))
}

fn label_join(evaluator: &mut Evaluator<'_>, call: &Call, t: i64) -> Result<Value, QueryError> {
    let vector = evaluator.eval_vector(arg(call, 0)?, t)?;
    let destination = string_arg(evaluator, arg(call, 1)?, t)?;
    let separator = string_arg(evaluator, arg(call, 2)?, t)?;
    let mut sources = Vec::new();
    for index in 3..call.args.args.len() {
        sources.push(string_arg(evaluator, arg(call, index)?, t)?);
    }
    check_label_name(&destination)?;
    let out: Vec<InstantSample> = vector
        .into_iter()
        .map(|sample| {
            let joined: Vec<&str> = sources.iter().map(|name| sample.labels.get(name).unwrap_or("")).collect();
            let labels = sample.labels.with(&destination, &joined.join(&separator));
            let drop_name = sample.drop_name && destination != METRIC_NAME;
            InstantSample { labels, t: sample.t, v: sample.v, drop_name }
        })
        .collect();
    check_unique(&out)?;
    Ok(Value::Vector(out))
}

pub(super) fn check_unique(samples: &[InstantSample]) -> Result<(), QueryError> {
    let mut seen = FastSet::default();
    for sample in samples {
        if !seen.insert(&sample.labels) {
            return Err(QueryError::Execution("vector cannot contain metrics with the same labelset".into()));
        }
    }
    Ok(())
}

/// `histogram_quantile` over classic buckets (`le` label).
fn histogram_quantile(
    evaluator: &mut Evaluator<'_>,
    q: f64,
    vector: Vec<InstantSample>,
    t: i64,
) -> Result<Value, QueryError> {
    let mut groups: Vec<(Labels, Vec<(f64, f64)>)> = Vec::new();
    let mut index: FastMap<Labels, usize> = FastMap::default();
    for sample in vector {
        let le = sample.labels.get("le").unwrap_or("");
        let Ok(upper) = parse_bound(le) else {
            let name = sample.labels.metric_name().unwrap_or("");
            evaluator.annotations.warn(format!(
                "bucket label \"le\" is missing or has a malformed value of {le:?} for metric name {name:?}"
            ));
            continue;
        };
        // Grouped with the name, output without it: two histograms differing only by name collide.
        let key = sample.labels.retain(|name| name != "le");
        let position = *index.entry(key.clone()).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[position].1.push((upper, sample.v));
    }
    let mut out = Vec::with_capacity(groups.len());
    for (labels, mut buckets) in groups {
        let (v, fixed) = bucket_quantile(q, &mut buckets);
        if fixed {
            let name = labels.metric_name().unwrap_or("");
            evaluator.annotations.info(format!(
                "input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {name:?}"
            ));
        }
        out.push(InstantSample { labels, drop_name: true, t, v });
    }
    Ok(Value::Vector(out))
}

fn parse_bound(text: &str) -> Result<f64, std::num::ParseFloatError> {
    match text {
        "+Inf" | "Inf" | "+inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        other => other.parse(),
    }
}

/// The quantile, and whether bucket counts had to be made monotonic first.
fn bucket_quantile(q: f64, buckets: &mut [(f64, f64)]) -> (f64, bool) {
    let mut fixed = false;
    if q.is_nan() {
        return (f64::NAN, fixed);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, fixed);
    }
    if q > 1.0 {
        return (f64::INFINITY, fixed);
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return (f64::NAN, fixed);
    }
    // Merge buckets with the same bound, then force counts to be monotonic.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for (upper, count) in buckets.iter().copied() {
        match merged.last_mut() {
            Some(last) if last.0 == upper => last.1 += count,
            _ => merged.push((upper, count)),
        }
    }
    let mut max = f64::NEG_INFINITY;
    for bucket in merged.iter_mut() {
        if bucket.1 >= max {
            max = bucket.1;
        } else {
            bucket.1 = max;
            fixed = true;
        }
    }
    if merged.len() < 2 {
        return (f64::NAN, fixed);
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 || observations.is_nan() {
        return (f64::NAN, fixed);
    }
    let mut rank = q * observations;
    let b = merged.partition_point(|bucket| bucket.1 < rank);
    if b == merged.len() - 1 {
        return (merged[merged.len() - 2].0, fixed);
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return (merged[0].0, fixed);
    }
    let mut bucket_start = 0.0;
    let bucket_end = merged[b].0;
    let mut count = merged[b].1;
    if b > 0 {
        bucket_start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    (bucket_start + (bucket_end - bucket_start) * (rank / count), fixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate() {
        assert_eq!(quantile(0.5, &mut [1.0, 3.0, 2.0, 4.0]), 2.5);
        assert_eq!(quantile(-1.0, &mut [1.0]), f64::NEG_INFINITY);
    }

    #[test]
    fn floats_print_like_prometheus() {
        assert_eq!(format_float(1.0), "1");
        assert_eq!(format_float(0.25), "0.25");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(1e-7), "0.0000001");
        // The JSON API switches to exponents where Prometheus's marshaller does.
        assert_eq!(crate::promql::format_value(5e-7), "5e-07");
        assert_eq!(crate::promql::format_value(1e-6), "0.000001");
        assert_eq!(crate::promql::format_value(1.5e21), "1.5e+21");
        assert_eq!(crate::promql::format_value(123.25), "123.25");
        assert_eq!(crate::promql::format_value(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn bucket_quantile_interpolates_within_a_bucket() {
        let mut buckets = vec![(0.1, 10.0), (0.5, 30.0), (f64::INFINITY, 40.0)];
        assert!((bucket_quantile(0.5, &mut buckets).0 - 0.3).abs() < 1e-12);
    }
}
