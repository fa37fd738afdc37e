//! Binary operators: arithmetic, comparison (filtering or `bool`), set operators, vector matching.

use promql_parser::parser::{BinModifier, BinaryExpr, LabelModifier, VectorMatchCardinality};
use vigil_tsdb::{Labels, METRIC_NAME};

use super::eval::{Evaluator, Interner};
use super::{FastMap, FastSet};
use super::{InstantSample, Value};
use crate::QueryError;

/// The operator, decoded once from the parser's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
}

impl Op {
    fn from_token(token: &str) -> Result<Op, QueryError> {
        Ok(match token {
            "+" => Op::Add,
            "-" => Op::Sub,
            "*" => Op::Mul,
            "/" => Op::Div,
            "%" => Op::Mod,
            "^" => Op::Pow,
            "atan2" => Op::Atan2,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            ">" => Op::Gt,
            "<" => Op::Lt,
            ">=" => Op::Ge,
            "<=" => Op::Le,
            "and" => Op::And,
            "or" => Op::Or,
            "unless" => Op::Unless,
            other => {
                return Err(QueryError::Execution(format!("unknown binary operator {other:?}")));
            }
        })
    }

    fn is_comparison(self) -> bool {
        matches!(self, Op::Eq | Op::Ne | Op::Gt | Op::Lt | Op::Ge | Op::Le)
    }

    fn is_set(self) -> bool {
        matches!(self, Op::And | Op::Or | Op::Unless)
    }

    /// `(value, keep)`: for comparisons the value is the left operand and `keep` the outcome.
    fn apply(self, lhs: f64, rhs: f64) -> (f64, bool) {
        match self {
            Op::Add => (lhs + rhs, true),
            Op::Sub => (lhs - rhs, true),
            Op::Mul => (lhs * rhs, true),
            Op::Div => (lhs / rhs, true),
            Op::Mod => (lhs % rhs, true),
            Op::Pow => (lhs.powf(rhs), true),
            Op::Atan2 => (lhs.atan2(rhs), true),
            Op::Eq => (lhs, lhs == rhs),
            Op::Ne => (lhs, lhs != rhs),
            Op::Gt => (lhs, lhs > rhs),
            Op::Lt => (lhs, lhs < rhs),
            Op::Ge => (lhs, lhs >= rhs),
            Op::Le => (lhs, lhs <= rhs),
            Op::And | Op::Or | Op::Unless => (lhs, true),
        }
    }
}

pub(super) fn eval(evaluator: &mut Evaluator<'_>, binary: &BinaryExpr, t: i64) -> Result<Value, QueryError> {
    let op = Op::from_token(&binary.op.to_string())?;
    let return_bool = binary.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lhs = evaluator.eval(&binary.lhs, t)?;
    let rhs = evaluator.eval(&binary.rhs, t)?;
    match (lhs, rhs) {
        (Value::Scalar(l), Value::Scalar(r)) => {
            let (value, keep) = op.apply(l, r);
            if op.is_comparison() {
                return Ok(Value::Scalar(if keep { 1.0 } else { 0.0 }));
            }
            Ok(Value::Scalar(value))
        }
        (Value::Vector(vector), Value::Scalar(scalar)) => {
            Ok(Value::Vector(vector_scalar(op, vector, scalar, false, return_bool, t)))
        }
        (Value::Scalar(scalar), Value::Vector(vector)) => {
            Ok(Value::Vector(vector_scalar(op, vector, scalar, true, return_bool, t)))
        }
        (Value::Vector(lhs), Value::Vector(rhs)) => {
            let operation = binary as *const BinaryExpr as usize;
            let matching =
                Matching { interner: &mut evaluator.interner, operation, modifier: binary.modifier.as_ref() };
            vector_vector(matching, op, lhs, rhs, return_bool, t).map(Value::Vector)
        }
        (l, r) => Err(QueryError::Execution(format!(
            "binary operator between {} and {} is not allowed",
            l.type_name(),
            r.type_name()
        ))),
    }
}

fn vector_scalar(
    op: Op,
    vector: Vec<InstantSample>,
    scalar: f64,
    scalar_on_left: bool,
    return_bool: bool,
    t: i64,
) -> Vec<InstantSample> {
    let drop_name = !op.is_comparison() || return_bool;
    let mut out = Vec::with_capacity(vector.len());
    for sample in vector {
        let (lhs, rhs) = if scalar_on_left { (scalar, sample.v) } else { (sample.v, scalar) };
        let (mut value, keep) = op.apply(lhs, rhs);
        if op.is_comparison() {
            // The vector element's value is the result, whichever side it is on.
            value = sample.v;
        }
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
        } else if !keep {
            continue;
        }
        out.push(InstantSample { labels: sample.labels, t, v: value, drop_name: drop_name || sample.drop_name });
    }
    out
}

/// The labels two samples are matched on.
fn signature(labels: &Labels, matching: Option<&LabelModifier>) -> Labels {
    match matching {
        Some(LabelModifier::Include(on)) => labels.retain(|name| on.labels.iter().any(|l| l == name)),
        Some(LabelModifier::Exclude(ignoring)) => {
            labels.retain(|name| name != METRIC_NAME && !ignoring.labels.iter().any(|l| l == name))
        }
        None => labels.without_metric_name(),
    }
}

fn vector_vector(
    mut matcher: Matching<'_>,
    op: Op,
    lhs: Vec<InstantSample>,
    rhs: Vec<InstantSample>,
    return_bool: bool,
    t: i64,
) -> Result<Vec<InstantSample>, QueryError> {
    let modifier = matcher.modifier;
    let matching = modifier.and_then(|m| m.matching.as_ref());
    if op.is_set() {
        return Ok(set_operation(&mut matcher, op, lhs, rhs));
    }
    let card = modifier.map_or(&VectorMatchCardinality::OneToOne, |m| &m.card);
    let (many, one, swapped, include) = match card {
        VectorMatchCardinality::OneToMany(include) => (rhs, lhs, true, include.labels.as_slice()),
        VectorMatchCardinality::ManyToOne(include) => (lhs, rhs, false, include.labels.as_slice()),
        _ => (lhs, rhs, false, &[][..]),
    };
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne | VectorMatchCardinality::ManyToMany);

    let one_keys = matcher.signatures(&one);
    let many_keys = matcher.signatures(&many);
    // Signatures are canonical label sets: keyed by identity.
    let mut one_side: FastMap<usize, &InstantSample> = FastMap::default();
    for (sample, key) in one.iter().zip(&one_keys) {
        if one_side.insert(key.identity(), sample).is_some() {
            let side = if swapped { "left" } else { "right" };
            return Err(QueryError::Execution(format!(
                "found duplicate series for the match group {key} on the {side} hand-side of the operation: [{}];many-to-many matching not allowed: matching labels must be unique on one side",
                sample.labels
            )));
        }
    }
    let drop_name = !op.is_comparison() || return_bool;
    let mut matched_keys: FastMap<usize, Labels> = FastMap::default();
    let mut out = Vec::new();
    let mut seen_labels: FastMap<usize, ()> = FastMap::default();
    for (sample, key) in many.iter().zip(&many_keys) {
        let Some(other) = one_side.get(&key.identity()) else {
            continue;
        };
        if one_to_one && let Some(previous) = matched_keys.insert(key.identity(), sample.labels.clone()) {
            return Err(QueryError::Execution(format!(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right); found {previous} and {}",
                sample.labels
            )));
        }
        let (l, r) = if swapped { (other.v, sample.v) } else { (sample.v, other.v) };
        let (mut value, keep) = op.apply(l, r);
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
        } else if !keep {
            continue;
        }
        if op.is_comparison() && !return_bool {
            value = if swapped { other.v } else { sample.v };
        }
        let labels =
            matcher.interner.canonical(&result_labels(&sample.labels, &other.labels, matching, one_to_one, include));
        if seen_labels.insert(labels.identity(), ()).is_some() {
            return Err(QueryError::Execution(format!(
                "vector cannot contain metrics with the same labelset; duplicate: {labels}"
            )));
        }
        out.push(InstantSample { labels, t, v: value, drop_name: drop_name || sample.drop_name });
    }
    Ok(out)
}

fn result_labels(
    many: &Labels,
    one: &Labels,
    matching: Option<&LabelModifier>,
    one_to_one: bool,
    include: &[String],
) -> Labels {
    let mut labels = many.clone();
    if one_to_one {
        labels = match matching {
            Some(LabelModifier::Include(on)) => labels.retain(|name| on.labels.iter().any(|l| l == name)),
            Some(LabelModifier::Exclude(ignoring)) => labels.retain(|name| !ignoring.labels.iter().any(|l| l == name)),
            None => labels,
        };
        return labels;
    }
    for name in include {
        labels = labels.with(name, one.get(name).unwrap_or(""));
    }
    labels
}

/// What vector matching needs: the query's interner, the operator node (to cache signatures per
/// series), and the `on`/`ignoring`/`group_*` modifier.
struct Matching<'a> {
    interner: &'a mut Interner,
    operation: usize,
    modifier: Option<&'a BinModifier>,
}

impl Matching<'_> {
    /// Each sample's canonical match signature.
    fn signatures(&mut self, samples: &[InstantSample]) -> Vec<Labels> {
        let matching = self.modifier.and_then(|m| m.matching.as_ref());
        samples.iter().map(|s| self.interner.derived(self.operation, &s.labels, |l| signature(l, matching))).collect()
    }
}

fn set_operation(
    matcher: &mut Matching<'_>,
    op: Op,
    lhs: Vec<InstantSample>,
    rhs: Vec<InstantSample>,
) -> Vec<InstantSample> {
    let left_keys = matcher.signatures(&lhs);
    let right_keys = matcher.signatures(&rhs);
    let right: FastSet<usize> = right_keys.iter().map(Labels::identity).collect();
    match op {
        Op::And => {
            lhs.into_iter().zip(&left_keys).filter(|(_, k)| right.contains(&k.identity())).map(|(s, _)| s).collect()
        }
        Op::Unless => {
            lhs.into_iter().zip(&left_keys).filter(|(_, k)| !right.contains(&k.identity())).map(|(s, _)| s).collect()
        }
        _ => {
            let left: FastSet<usize> = left_keys.iter().map(Labels::identity).collect();
            let mut out = lhs;
            out.extend(rhs.into_iter().zip(&right_keys).filter(|(_, k)| !left.contains(&k.identity())).map(|(s, _)| s));
            out
        }
    }
}
