//! Aggregation operators: sum, avg, count, min, max, group, stddev, stdvar, topk, bottomk,
//! count_values, quantile, limitk, limit_ratio.

use promql_parser::parser::{AggregateExpr, LabelModifier};
use vigil_tsdb::{Labels, METRIC_NAME};

use super::FastMap;
use super::eval::{Evaluator, Interner};
use super::functions::{KahanSum, format_float, quantile, sort_order};
use super::{InstantSample, Value};
use crate::QueryError;

fn group_key(labels: &Labels, modifier: Option<&LabelModifier>) -> Labels {
    match modifier {
        Some(LabelModifier::Include(by)) => labels.retain(|name| by.labels.iter().any(|l| l == name)),
        Some(LabelModifier::Exclude(without)) => {
            labels.retain(|name| name != METRIC_NAME && !without.labels.iter().any(|l| l == name))
        }
        None => Labels::default(),
    }
}

/// Input samples grouped by key, groups in order of first appearance.
/// Group keys come from the query's interner: computed once per input series, compared by identity.
fn groups(
    interner: &mut Interner,
    operation: usize,
    samples: Vec<InstantSample>,
    modifier: Option<&LabelModifier>,
) -> Vec<(Labels, Vec<InstantSample>)> {
    let mut out: Vec<(Labels, Vec<InstantSample>)> = Vec::new();
    let mut index: FastMap<usize, usize> = FastMap::default();
    for sample in samples {
        let key = interner.derived(operation, &sample.labels, |labels| group_key(labels, modifier));
        let position = *index.entry(key.identity()).or_insert_with(|| {
            out.push((key, Vec::new()));
            out.len() - 1
        });
        out[position].1.push(sample);
    }
    out
}

pub(super) fn eval(evaluator: &mut Evaluator<'_>, aggregate: &AggregateExpr, t: i64) -> Result<Value, QueryError> {
    let op = aggregate.op.to_string();
    let modifier = aggregate.modifier.as_ref();
    let operation = aggregate as *const AggregateExpr as usize;
    let param = match &aggregate.param {
        Some(param) => Some(evaluator.eval(param, t)?),
        None => None,
    };
    let input = evaluator.eval_vector(&aggregate.expr, t)?;
    let scalar_param = || match &param {
        Some(Value::Scalar(v)) => Ok(*v),
        _ => Err(QueryError::Execution(format!("{op} needs a scalar parameter"))),
    };
    let result = match op.as_str() {
        "topk" | "bottomk" | "limitk" => {
            select_k(&mut evaluator.interner, operation, &op, input, scalar_param()?, modifier)?
        }
        "limit_ratio" => {
            let ratio = scalar_param()?;
            if ratio.abs() > 1.0 {
                let capped = ratio.clamp(-1.0, 1.0);
                evaluator.annotations.warn(format!(
                    "ratio value should be between -1 and 1, got {}, capping to {}",
                    format_float(ratio),
                    format_float(capped)
                ));
            }
            limit_ratio(input, ratio, modifier)?
        }
        "count_values" => {
            let Some(Value::String(label)) = &param else {
                return Err(QueryError::Execution("count_values needs a string parameter".into()));
            };
            count_values(input, label, modifier, t)?
        }
        "quantile" => {
            let q = scalar_param()?;
            super::functions::check_quantile(evaluator, q);
            groups(&mut evaluator.interner, operation, input, modifier)
                .into_iter()
                .map(|(labels, samples)| {
                    let mut values: Vec<f64> = samples.iter().map(|s| s.v).collect();
                    InstantSample { labels, t, v: quantile(q, &mut values), drop_name: any_dropped(&samples) }
                })
                .collect()
        }
        _ => groups(&mut evaluator.interner, operation, input, modifier)
            .into_iter()
            .map(|(labels, samples)| {
                Ok(InstantSample { labels, t, v: reduce(&op, &samples)?, drop_name: any_dropped(&samples) })
            })
            .collect::<Result<Vec<_>, QueryError>>()?,
    };
    Ok(Value::Vector(result))
}

/// An aggregate drops the name when any of its inputs was marked to.
fn any_dropped(samples: &[InstantSample]) -> bool {
    samples.iter().any(|sample| sample.drop_name)
}

fn reduce(op: &str, samples: &[InstantSample]) -> Result<f64, QueryError> {
    let values = samples.iter().map(|s| s.v);
    Ok(match op {
        "sum" => {
            let mut sum = KahanSum::default();
            values.for_each(|v| sum.add(v));
            sum.value()
        }
        "avg" => average(values),
        "count" => samples.len() as f64,
        "group" => 1.0,
        "min" => values.fold(f64::NAN, |acc, v| if acc.is_nan() || v < acc { v } else { acc }),
        "max" => values.fold(f64::NAN, |acc, v| if acc.is_nan() || v > acc { v } else { acc }),
        "stddev" => variance(values).sqrt(),
        "stdvar" => variance(values),
        other => {
            return Err(QueryError::Execution(format!("unknown aggregation {other:?}")));
        }
    })
}

/// Mean by compensated summation; if the running sum would overflow, it switches to an incremental
/// mean from there on, so large finite inputs still give a finite mean and infinities keep their sign.
pub(super) fn average(values: impl Iterator<Item = f64>) -> f64 {
    let mut values = values.peekable();
    let Some(first) = values.next() else { return f64::NAN };
    let mut count = 1.0;
    let mut sum = KahanSum::new(first);
    let mut incremental: Option<KahanSum> = None;
    for v in values {
        count += 1.0;
        let mean = match incremental.as_mut() {
            Some(mean) => mean,
            None => {
                let mut next = sum;
                next.add(v);
                if !next.raw_sum().is_infinite() {
                    sum = next;
                    continue;
                }
                incremental.insert(sum.scaled(1.0 / (count - 1.0)))
            }
        };
        let current = mean.raw_sum();
        if current.is_infinite() && (v.is_finite() || (v.is_infinite() && (current > 0.0) == (v > 0.0))) {
            continue;
        }
        let current_mean = mean.value();
        mean.add(v / count - current_mean / count);
    }
    match incremental {
        Some(mean) => mean.value(),
        None => sum.value() / count,
    }
}

/// Population variance (Welford).
pub(super) fn variance(values: impl Iterator<Item = f64>) -> f64 {
    let mut count = 0.0;
    let mut mean = 0.0;
    let mut m2 = 0.0;
    for v in values {
        count += 1.0;
        let delta = v - mean;
        mean += delta / count;
        m2 += delta * (v - mean);
    }
    m2 / count
}

fn select_k(
    interner: &mut Interner,
    operation: usize,
    op: &str,
    input: Vec<InstantSample>,
    k: f64,
    modifier: Option<&LabelModifier>,
) -> Result<Vec<InstantSample>, QueryError> {
    if k.is_nan() {
        return Err(QueryError::Execution(format!("Parameter value is NaN for {op}")));
    }
    if k < 1.0 {
        return Ok(Vec::new());
    }
    let k = if k >= usize::MAX as f64 { usize::MAX } else { k as usize };
    let mut out = Vec::new();
    for (_, mut samples) in groups(interner, operation, input, modifier) {
        match op {
            "topk" => samples.sort_by(|a, b| sort_order(a.v, b.v, true)),
            "bottomk" => samples.sort_by(|a, b| sort_order(a.v, b.v, false)),
            _ => {}
        }
        samples.truncate(k);
        out.extend(samples);
    }
    Ok(out)
}

/// Keeps a stable, label-determined subset: a series is kept when its label hash falls below the ratio
/// (or, for a negative ratio, at or above `1 + ratio`), so `limit_ratio(r)` and `limit_ratio(r - 1)` split the input.
fn limit_ratio(
    input: Vec<InstantSample>,
    ratio: f64,
    _modifier: Option<&LabelModifier>,
) -> Result<Vec<InstantSample>, QueryError> {
    if ratio.is_nan() {
        return Err(QueryError::Execution("Ratio value is NaN for limit_ratio".into()));
    }
    let ratio = ratio.clamp(-1.0, 1.0);
    Ok(input
        .into_iter()
        .filter(|sample| {
            let position = label_hash_fraction(&sample.labels);
            if ratio >= 0.0 { position < ratio } else { position >= 1.0 + ratio }
        })
        .collect())
}

fn label_hash_fraction(labels: &Labels) -> f64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    labels.hash(&mut hasher);
    hasher.finish() as f64 / u64::MAX as f64
}

fn count_values(
    input: Vec<InstantSample>,
    label: &str,
    modifier: Option<&LabelModifier>,
    t: i64,
) -> Result<Vec<InstantSample>, QueryError> {
    if label.is_empty() {
        return Err(QueryError::Execution(format!("invalid label name {label:?}")));
    }
    let mut out: Vec<InstantSample> = Vec::new();
    let mut index: FastMap<Labels, usize> = FastMap::default();
    for sample in input {
        let key = group_key(&sample.labels, modifier).with(label, &format_float(sample.v));
        match index.get(&key) {
            Some(position) => {
                out[*position].v += 1.0;
                out[*position].drop_name |= sample.drop_name;
            }
            None => {
                index.insert(key.clone(), out.len());
                out.push(InstantSample { labels: key, t, v: 1.0, drop_name: sample.drop_name });
            }
        }
    }
    Ok(out)
}
