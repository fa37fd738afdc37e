//! The evaluator: selector loading, evaluation of each expression kind, range stepping.

use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use promql_parser::parser::{self, AtModifier, Expr, Offset, VectorSelector};
use vigil_tsdb::{Labels, Queryable, Sample, is_stale_marker};

use super::{
    Annotations, EngineOptions, InstantSample, Outcome, QueryControl, RangeSeries, Value, aggregate, binary, functions,
};
use super::{FastMap, FastSet};
use crate::QueryError;
use crate::selector::matcher_alternatives;

/// Parses a PromQL expression, mapping parse errors to `bad_data`.
pub fn parse(query: &str) -> Result<Expr, QueryError> {
    check_string_bytes(query)?;
    parser::parse(query).map_err(|e| QueryError::BadData(format!("invalid parameter \"query\": {e}")))
}

/// Rejects quoted strings whose byte escapes (`\xFF`, `\377`) do not form valid UTF-8. In PromQL such
/// escapes are bytes; `promql-parser` turns each into a character instead, so invalid UTF-8 (which
/// Prometheus carries until a label function rejects it) would pass unnoticed. Raw (backtick) strings
/// have no escapes.
fn check_string_bytes(query: &str) -> Result<(), QueryError> {
    let bytes = query.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let quote = bytes[i];
        if quote != b'"' && quote != b'\'' {
            i += 1;
            continue;
        }
        i += 1;
        let mut run: Vec<u8> = Vec::new();
        while i < bytes.len() && bytes[i] != quote {
            if bytes[i] != b'\\' || i + 1 >= bytes.len() {
                check_run(&mut run)?;
                i += 1;
                continue;
            }
            let escape = &query[i + 1..];
            let byte = if let Some(hex) = escape.strip_prefix('x').and_then(|h| h.get(..2)) {
                u8::from_str_radix(hex, 16).ok().map(|b| (b, 4))
            } else {
                escape.get(..3).and_then(|octal| u8::from_str_radix(octal, 8).ok()).map(|b| (b, 4))
            };
            match byte {
                Some((value, length)) => {
                    run.push(value);
                    i += length;
                }
                None => {
                    check_run(&mut run)?;
                    i += 2;
                }
            }
        }
        check_run(&mut run)?;
        i += 1;
    }
    Ok(())
}

fn check_run(run: &mut Vec<u8>) -> Result<(), QueryError> {
    if !run.is_empty() && std::str::from_utf8(run).is_err() {
        return Err(QueryError::BadData(
            "invalid parameter \"query\": a string literal's byte escapes are not valid UTF-8".into(),
        ));
    }
    run.clear();
    Ok(())
}

/// Evaluates PromQL over a [`Queryable`].
#[derive(Debug, Clone, Default)]
pub struct Engine {
    /// Limits and defaults.
    pub options: EngineOptions,
}

/// Canonical label sets of one query: equal contents share one allocation, so maps over many steps key
/// by identity instead of hashing contents, and derived label sets (group keys, name dropped) are computed
/// once per input series rather than once per step.
#[derive(Default)]
pub(super) struct Interner {
    by_content: FastSet<Labels>,
    by_identity: FastMap<usize, Labels>,
    derived: FastMap<(usize, usize), Labels>,
}

/// Operation id for "without `__name__`" in [`Interner::derived`] (no AST node lives at address 0).
pub(super) const DROP_NAME: usize = 0;

impl Interner {
    /// The canonical set with these contents.
    pub(super) fn canonical(&mut self, labels: &Labels) -> Labels {
        if let Some(found) = self.by_identity.get(&labels.identity()) {
            return found.clone();
        }
        if let Some(found) = self.by_content.get(labels) {
            return found.clone();
        }
        self.by_content.insert(labels.clone());
        self.by_identity.insert(labels.identity(), labels.clone());
        labels.clone()
    }

    /// `derive(labels)`, canonical; cached per `operation` when `labels` is canonical (the interner keeps it
    /// alive, so its identity cannot be reused by another set).
    pub(super) fn derived(
        &mut self,
        operation: usize,
        labels: &Labels,
        derive: impl FnOnce(&Labels) -> Labels,
    ) -> Labels {
        let identity = labels.identity();
        let cacheable = self.by_identity.contains_key(&identity);
        if cacheable && let Some(found) = self.derived.get(&(operation, identity)) {
            return found.clone();
        }
        let result = self.canonical(&derive(labels));
        if cacheable {
            self.derived.insert((operation, identity), result.clone());
        }
        result
    }
}

/// A selector's series, loaded once per query.
struct Loaded {
    labels: Labels,
    samples: Vec<Sample>,
    /// Where the previous lookup ended: steps move forward, so the next lookup usually advances a few
    /// samples from here instead of binary-searching (whose scattered loads miss the cache).
    cursor: std::cell::Cell<Cursor>,
}

#[derive(Debug, Clone, Copy)]
struct Cursor {
    /// The time looked up last.
    time: i64,
    /// Number of samples at or before `window_start` / `time`.
    start: usize,
    end: usize,
    window_start: i64,
}

impl Loaded {
    fn new(labels: Labels, samples: Vec<Sample>) -> Self {
        let cursor = Cursor { time: i64::MIN, start: 0, end: 0, window_start: i64::MIN };
        Loaded { labels, samples, cursor: std::cell::Cell::new(cursor) }
    }

    /// `(start, end)` such that `samples[start..end]` are the samples in `(window_start, time]`.
    fn window(&self, window_start: i64, time: i64) -> (usize, usize) {
        let previous = self.cursor.get();
        let samples = &self.samples;
        let (start, end) = if time >= previous.time && window_start >= previous.window_start {
            let mut start = previous.start;
            while start < samples.len() && samples[start].t <= window_start {
                start += 1;
            }
            let mut end = previous.end.max(start);
            while end < samples.len() && samples[end].t <= time {
                end += 1;
            }
            (start, end)
        } else {
            (samples.partition_point(|s| s.t <= window_start), samples.partition_point(|s| s.t <= time))
        };
        self.cursor.set(Cursor { time, start, end, window_start });
        (start, end)
    }
}

/// State of one query's evaluation.
pub(super) struct Evaluator<'a> {
    pub(super) options: EngineOptions,
    control: &'a QueryControl,
    /// Query start and end (ms), for `@ start()` and `@ end()`.
    start: i64,
    end: i64,
    /// Range-query step (ms), 0 for instant queries.
    step: i64,
    loaded: FastMap<usize, Vec<Loaded>>,
    deadline: Instant,
    steps_since_check: u32,
    pub(super) interner: Interner,
    pub(super) annotations: Annotations,
    /// Label sets already checked by the counter-name heuristic (once per series, not per step).
    pub(super) counter_names_checked: FastSet<usize>,
}

fn selector_key(selector: &VectorSelector) -> usize {
    selector as *const VectorSelector as usize
}

fn duration_ms(duration: &std::time::Duration) -> i64 {
    duration.as_millis() as i64
}

fn offset_ms(offset: &Option<Offset>) -> i64 {
    match offset {
        Some(Offset::Pos(d)) => duration_ms(d),
        Some(Offset::Neg(d)) => -duration_ms(d),
        None => 0,
    }
}

fn system_time_ms(time: &SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_millis() as i64,
        Err(before) => -(before.duration().as_millis() as i64),
    }
}

impl Engine {
    /// An engine with these options.
    pub fn new(options: EngineOptions) -> Self {
        Engine { options }
    }

    /// Evaluates `expr` at `time_ms`.
    pub fn instant(
        &self,
        storage: &dyn Queryable,
        expr: &Expr,
        time_ms: i64,
        control: &QueryControl,
    ) -> Result<Outcome<Value>, QueryError> {
        let mut evaluator = Evaluator::new(&self.options, control, time_ms, time_ms, 0);
        evaluator.load(storage, expr)?;
        let value = match evaluator.eval(expr, time_ms)? {
            Value::Vector(samples) => Value::Vector(finalize(&mut evaluator.interner, samples)?),
            Value::Matrix(series) => Value::Matrix(
                series
                    .into_iter()
                    .map(|s| RangeSeries {
                        labels: if s.drop_name { s.labels.without_metric_name() } else { s.labels },
                        samples: s.samples,
                        drop_name: false,
                    })
                    .collect(),
            ),
            other => other,
        };
        Ok(Outcome { value, annotations: evaluator.annotations })
    }

    /// Evaluates `expr` at every step from `start_ms` to `end_ms`; scalars become a series without labels.
    pub fn range(
        &self,
        storage: &dyn Queryable,
        expr: &Expr,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        control: &QueryControl,
    ) -> Result<Outcome<Vec<RangeSeries>>, QueryError> {
        if step_ms <= 0 {
            return Err(QueryError::BadData(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        let mut evaluator = Evaluator::new(&self.options, control, start_ms, end_ms, step_ms);
        evaluator.load(storage, expr)?;
        // Keyed by the identity of canonical label sets: no hashing of label contents per step.
        let mut by_labels: FastMap<usize, (Labels, Vec<Sample>)> = FastMap::default();
        let mut points = 0usize;
        let mut t = start_ms;
        while t <= end_ms {
            match evaluator.eval(expr, t)? {
                Value::Scalar(v) => {
                    let labels = evaluator.interner.canonical(&Labels::default());
                    by_labels.entry(labels.identity()).or_insert_with(|| (labels, Vec::new())).1.push(Sample { t, v });
                }
                Value::Vector(samples) => {
                    for sample in finalize(&mut evaluator.interner, samples)? {
                        let entry = by_labels.entry(sample.labels.identity());
                        entry.or_insert_with(|| (sample.labels, Vec::new())).1.push(Sample { t, v: sample.v });
                    }
                }
                other => {
                    return Err(QueryError::BadData(format!(
                        "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                        other.type_name()
                    )));
                }
            }
            points += by_labels.len();
            if points > self.options.max_samples {
                return Err(too_many_samples());
            }
            t += step_ms;
        }
        let mut series: Vec<RangeSeries> = by_labels
            .into_values()
            .map(|(labels, samples)| RangeSeries { labels, samples, drop_name: false })
            .collect();
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(Outcome { value: series, annotations: evaluator.annotations })
    }
}

/// Removes names marked for dropping and makes every label set canonical; two results that become equal
/// are an error, as in Prometheus.
fn finalize(interner: &mut Interner, samples: Vec<InstantSample>) -> Result<Vec<InstantSample>, QueryError> {
    let mut seen = FastSet::with_capacity_and_hasher(samples.len(), Default::default());
    let mut out = Vec::with_capacity(samples.len());
    for sample in samples {
        let labels = if sample.drop_name {
            interner.derived(DROP_NAME, &sample.labels, Labels::without_metric_name)
        } else {
            interner.canonical(&sample.labels)
        };
        if !seen.insert(labels.identity()) {
            return Err(QueryError::Execution(format!(
                "vector cannot contain metrics with the same labelset: {labels}"
            )));
        }
        out.push(InstantSample { labels, t: sample.t, v: sample.v, drop_name: false });
    }
    Ok(out)
}

fn strip_parens(expr: &Expr) -> &Expr {
    match expr {
        Expr::Paren(paren) => strip_parens(&paren.expr),
        other => other,
    }
}

pub(super) fn too_many_samples() -> QueryError {
    QueryError::Execution("query processing would load too many samples into memory in query execution".into())
}

impl<'a> Evaluator<'a> {
    fn new(options: &EngineOptions, control: &'a QueryControl, start: i64, end: i64, step: i64) -> Self {
        let mut options = options.clone();
        if let Some(timeout) = control.timeout {
            options.timeout = options.timeout.min(timeout);
        }
        if let Some(lookback) = control.lookback_ms {
            options.lookback_ms = lookback;
        }
        Evaluator {
            control,
            start,
            end,
            step,
            loaded: FastMap::default(),
            deadline: Instant::now() + options.timeout,
            options,
            steps_since_check: 0,
            interner: Interner::default(),
            annotations: Annotations::default(),
            counter_names_checked: FastSet::default(),
        }
    }

    pub(super) fn query_start(&self) -> i64 {
        self.start
    }

    pub(super) fn query_end(&self) -> i64 {
        self.end
    }

    pub(super) fn query_step(&self) -> i64 {
        self.step
    }

    /// Where the window of a matrix selector or subquery evaluated at `t` ends (after `offset` and `@`).
    pub(super) fn range_end(&self, expr: &Expr, t: i64) -> i64 {
        match expr {
            Expr::Paren(paren) => self.range_end(&paren.expr, t),
            Expr::MatrixSelector(matrix) => self.reference_time(&matrix.vs.at, &matrix.vs.offset, t),
            Expr::Subquery(subquery) => self.reference_time(&subquery.at, &subquery.offset, t),
            _ => t,
        }
    }

    /// The evaluation time a node with `at` and `offset` reads at, given the outer time `t`.
    fn reference_time(&self, at: &Option<AtModifier>, offset: &Option<Offset>, t: i64) -> i64 {
        let base = match at {
            Some(AtModifier::Start) => self.start,
            Some(AtModifier::End) => self.end,
            Some(AtModifier::At(time)) => system_time_ms(time),
            None => t,
        };
        base - offset_ms(offset)
    }

    /// Loads every selector's series for the whole span the query will read.
    fn load(&mut self, storage: &dyn Queryable, expr: &Expr) -> Result<(), QueryError> {
        let mut needs: Vec<(&VectorSelector, i64, i64)> = Vec::new();
        self.collect_spans(expr, self.start, self.end, &mut needs);
        let mut in_memory = 0usize;
        for (selector, mint, maxt) in needs {
            let mut series: Vec<Loaded> = Vec::new();
            let alternatives = matcher_alternatives(selector)?;
            for matchers in &alternatives {
                for found in storage.select(matchers, mint, maxt)? {
                    if alternatives.len() > 1 && series.iter().any(|s| s.labels == found.labels) {
                        continue;
                    }
                    in_memory += found.samples.len();
                    let labels = self.interner.canonical(&found.labels);
                    series.push(Loaded::new(labels, found.samples));
                }
            }
            if in_memory > self.options.max_samples {
                return Err(too_many_samples());
            }
            self.loaded.insert(selector_key(selector), series);
        }
        Ok(())
    }

    /// Finds each selector under `expr` and the sample span it needs when `expr` is evaluated at times in `[lo, hi]`.
    fn collect_spans<'e>(&self, expr: &'e Expr, lo: i64, hi: i64, needs: &mut Vec<(&'e VectorSelector, i64, i64)>) {
        let shifted = |at: &Option<AtModifier>, offset: &Option<Offset>| {
            (self.reference_time(at, offset, lo), self.reference_time(at, offset, hi))
        };
        match expr {
            Expr::VectorSelector(selector) => {
                let (lo, hi) = shifted(&selector.at, &selector.offset);
                needs.push((selector, lo - self.options.lookback_ms, hi));
            }
            Expr::MatrixSelector(matrix) => {
                let (lo, hi) = shifted(&matrix.vs.at, &matrix.vs.offset);
                needs.push((&matrix.vs, lo - duration_ms(&matrix.range), hi));
            }
            Expr::Subquery(subquery) => {
                let (lo, hi) = shifted(&subquery.at, &subquery.offset);
                self.collect_spans(&subquery.expr, lo - duration_ms(&subquery.range), hi, needs);
            }
            Expr::Aggregate(aggregate) => {
                self.collect_spans(&aggregate.expr, lo, hi, needs);
                if let Some(param) = &aggregate.param {
                    self.collect_spans(param, lo, hi, needs);
                }
            }
            Expr::Unary(unary) => self.collect_spans(&unary.expr, lo, hi, needs),
            Expr::Binary(binary) => {
                self.collect_spans(&binary.lhs, lo, hi, needs);
                self.collect_spans(&binary.rhs, lo, hi, needs);
            }
            Expr::Paren(paren) => self.collect_spans(&paren.expr, lo, hi, needs),
            Expr::Call(call) => {
                for arg in &call.args.args {
                    self.collect_spans(arg, lo, hi, needs);
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }

    fn check_deadline(&mut self) -> Result<(), QueryError> {
        self.steps_since_check += 1;
        if self.steps_since_check >= 64 {
            self.steps_since_check = 0;
            if self.control.cancel.load(Ordering::Relaxed) {
                return Err(QueryError::Canceled("query was canceled".into()));
            }
            if Instant::now() > self.deadline {
                return Err(QueryError::Timeout("query timed out in expression evaluation".into()));
            }
        }
        Ok(())
    }

    /// Evaluates `expr` at time `t` (ms).
    pub(super) fn eval(&mut self, expr: &Expr, t: i64) -> Result<Value, QueryError> {
        self.check_deadline()?;
        match expr {
            Expr::NumberLiteral(number) => Ok(Value::Scalar(number.val)),
            Expr::StringLiteral(string) => Ok(Value::String(string.val.clone())),
            Expr::Paren(paren) => self.eval(&paren.expr, t),
            Expr::Unary(unary) => match self.eval(&unary.expr, t)? {
                Value::Scalar(v) => Ok(Value::Scalar(-v)),
                Value::Vector(samples) => {
                    let negated: Vec<InstantSample> = samples
                        .into_iter()
                        .map(|s| InstantSample { labels: s.labels, drop_name: true, t, v: -s.v })
                        .collect();
                    Ok(Value::Vector(negated))
                }
                other => Err(QueryError::Execution(format!("unary minus on {}", other.type_name()))),
            },
            Expr::VectorSelector(selector) => Ok(Value::Vector(self.instant_selector(selector, t))),
            Expr::MatrixSelector(_) | Expr::Subquery(_) => Ok(Value::Matrix(self.eval_range(expr, t)?)),
            Expr::Binary(binary) => binary::eval(self, binary, t),
            Expr::Aggregate(aggregate) => aggregate::eval(self, aggregate, t),
            Expr::Call(call) => functions::eval(self, call, t),
            Expr::Extension(_) => Err(QueryError::Execution("extension expressions are not supported".into())),
        }
    }

    /// Evaluates an expression that must give an instant vector.
    pub(super) fn eval_vector(&mut self, expr: &Expr, t: i64) -> Result<Vec<InstantSample>, QueryError> {
        match self.eval(expr, t)? {
            Value::Vector(samples) => Ok(samples),
            other => Err(QueryError::Execution(format!("expected instant vector, got {}", other.type_name()))),
        }
    }

    /// Evaluates an expression that must give a scalar.
    pub(super) fn eval_scalar(&mut self, expr: &Expr, t: i64) -> Result<f64, QueryError> {
        match self.eval(expr, t)? {
            Value::Scalar(v) => Ok(v),
            other => Err(QueryError::Execution(format!("expected scalar, got {}", other.type_name()))),
        }
    }

    /// The newest non-stale sample of each series within the lookback window.
    fn instant_selector(&self, selector: &VectorSelector, t: i64) -> Vec<InstantSample> {
        let reference = self.reference_time(&selector.at, &selector.offset, t);
        let Some(series) = self.loaded.get(&selector_key(selector)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for loaded in series {
            let (_, end) = loaded.window(reference - self.options.lookback_ms, reference);
            let Some(latest) = end.checked_sub(1).map(|i| loaded.samples[i]) else {
                continue;
            };
            if latest.t <= reference - self.options.lookback_ms || is_stale_marker(latest.v) {
                continue;
            }
            out.push(InstantSample { labels: loaded.labels.clone(), t: latest.t, v: latest.v, drop_name: false });
        }
        out
    }

    /// Calls `visit(labels, name_dropped, window)` for each series of a range-vector expression at `t`.
    /// A plain matrix selector's windows are slices of the loaded samples (copied only to drop staleness
    /// markers); other expressions go through [`eval_range`](Self::eval_range).
    pub(super) fn windows(
        &mut self,
        expr: &Expr,
        t: i64,
        mut visit: impl FnMut(&Labels, bool, &[Sample]),
    ) -> Result<(), QueryError> {
        let Expr::MatrixSelector(matrix) = strip_parens(expr) else {
            for series in self.eval_range(expr, t)? {
                visit(&series.labels, series.drop_name, &series.samples);
            }
            return Ok(());
        };
        let reference = self.reference_time(&matrix.vs.at, &matrix.vs.offset, t);
        let from = reference - duration_ms(&matrix.range);
        let Some(series) = self.loaded.get(&selector_key(&matrix.vs)) else { return Ok(()) };
        let mut scratch = Vec::new();
        for loaded in series {
            let (first, last) = loaded.window(from, reference);
            let window = &loaded.samples[first..last];
            if !window.iter().any(|s| is_stale_marker(s.v)) {
                if !window.is_empty() {
                    visit(&loaded.labels, false, window);
                }
                continue;
            }
            scratch.clear();
            scratch.extend(window.iter().filter(|s| !is_stale_marker(s.v)));
            if !scratch.is_empty() {
                visit(&loaded.labels, false, &scratch);
            }
        }
        Ok(())
    }

    /// Evaluates a matrix selector or subquery (possibly in parentheses) at `t`.
    pub(super) fn eval_range(&mut self, expr: &Expr, t: i64) -> Result<Vec<RangeSeries>, QueryError> {
        match expr {
            Expr::Paren(paren) => self.eval_range(&paren.expr, t),
            Expr::MatrixSelector(matrix) => {
                let reference = self.reference_time(&matrix.vs.at, &matrix.vs.offset, t);
                let from = reference - duration_ms(&matrix.range);
                let Some(series) = self.loaded.get(&selector_key(&matrix.vs)) else {
                    return Ok(Vec::new());
                };
                let mut out = Vec::new();
                for loaded in series {
                    let (first, last) = loaded.window(from, reference);
                    let samples: Vec<Sample> =
                        loaded.samples[first..last].iter().filter(|s| !is_stale_marker(s.v)).copied().collect();
                    if !samples.is_empty() {
                        out.push(RangeSeries { labels: loaded.labels.clone(), samples, drop_name: false });
                    }
                }
                Ok(out)
            }
            Expr::Subquery(subquery) => {
                let reference = self.reference_time(&subquery.at, &subquery.offset, t);
                let step = subquery.step.as_ref().map_or(self.options.default_subquery_step_ms, duration_ms);
                if step <= 0 {
                    return Err(QueryError::BadData("subquery step must be positive".into()));
                }
                let from = reference - duration_ms(&subquery.range);
                let mut ts = from.div_euclid(step) * step;
                if ts <= from {
                    ts += step;
                }
                let mut by_labels: Vec<RangeSeries> = Vec::new();
                let mut index: FastMap<Labels, usize> = FastMap::default();
                while ts <= reference {
                    let points = match self.eval(&subquery.expr, ts)? {
                        Value::Scalar(v) => vec![(Labels::default(), v, false)],
                        Value::Vector(samples) => samples.into_iter().map(|s| (s.labels, s.v, s.drop_name)).collect(),
                        other => {
                            return Err(QueryError::Execution(format!(
                                "subquery of {} is not allowed",
                                other.type_name()
                            )));
                        }
                    };
                    for (labels, v, drop_name) in points {
                        let position = *index.entry(labels.clone()).or_insert_with(|| {
                            by_labels.push(RangeSeries { labels, samples: Vec::new(), drop_name: false });
                            by_labels.len() - 1
                        });
                        by_labels[position].drop_name |= drop_name;
                        by_labels[position].samples.push(Sample { t: ts, v });
                    }
                    ts += step;
                }
                Ok(by_labels)
            }
            other => match self.eval(other, t)? {
                Value::Matrix(series) => Ok(series),
                value => Err(QueryError::Execution(format!("expected range vector, got {}", value.type_name()))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_escapes_must_form_utf8() {
        assert!(parse(r#"label_replace(x, "\xff", "", "src", "(.*)")"#).is_err());
        assert!(parse(r#"x{a="\xc3\xbf"}"#).is_ok(), "a valid two-byte sequence");
        assert!(parse(r#"x{a="\377"}"#).is_err());
        assert!(parse(r#"x{a="plain \"quoted\" \n"}"#).is_ok());
        assert!(parse("x{a=`\\xff`}").is_ok(), "raw strings have no escapes");
    }
}
