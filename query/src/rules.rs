//! Recording and alerting rules with Prometheus's semantics: rule files ([`load_files`]), one group's
//! evaluation at a timestamp ([`GroupRunner::evaluate`]) with the alert state machine (inactive → pending →
//! firing → resolved), `ALERTS` and `ALERTS_FOR_STATE`, staleness markers, and `for` state restored from
//! storage after a restart. Rule results are the only writes this crate makes, through the [`Appender`]
//! it is handed.

pub mod api;
mod file;
pub mod manager;
pub mod notify;
pub mod template;
pub mod webhook;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use promql_parser::parser::Expr;
use vigil_tsdb::{Appender, Labels, MatchOp, Matcher, Queryable, STALE_NAN_BITS, Sample, SeriesSamples};

pub use file::{load_files, load_files_as, parse_file, parse_file_as};
use template::{TemplateData, expand};

use crate::promql::{Engine, QueryControl, Value};

/// How long a resolved alert is kept (and re-sent as resolved).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;
/// How far back `for` state is restored from after a restart.
pub const OUTAGE_TOLERANCE_MS: i64 = 60 * 60 * 1000;
/// The least time an alert restored after a restart waits before firing again.
pub const FOR_GRACE_PERIOD_MS: i64 = 10 * 60 * 1000;

/// Errors of loading and running rules.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// A rule file cannot be read or is invalid.
    #[error("{}:{line}: {reason}", file.display())]
    File {
        /// The file.
        file: PathBuf,
        /// 1-based line of the group or rule at fault; 0 when unknown.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A glob in `rule_files` is malformed.
    #[error("invalid rule file pattern {pattern:?}: {reason}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// What is wrong.
        reason: String,
    },
}

/// A group of rules evaluated in order at one interval.
#[derive(Debug, Clone)]
pub struct RuleGroup {
    /// Group name, unique within its file.
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// Evaluation interval.
    pub interval_ms: i64,
    /// How far behind the evaluation time queries look (`query_offset`).
    pub query_offset_ms: i64,
    /// Most series (recording) or alerts (alerting) one rule may produce; 0 for no limit.
    pub limit: usize,
    /// Labels added to every rule's output (the rule's own win).
    pub labels: BTreeMap<String, String>,
    /// The rules, in evaluation order.
    pub rules: Vec<Rule>,
}

/// One rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The recorded metric name or the alert name.
    pub name: String,
    /// The expression as written.
    pub expr_text: String,
    /// The parsed expression.
    pub expr: RuleExpr,
    /// Labels added to the output (templates for alerts).
    pub labels: BTreeMap<String, String>,
    /// Recording or alerting.
    pub kind: RuleKind,
}

/// The language of a rule file's expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// Prometheus rule files.
    PromQL,
    /// Log rule files (Loki's ruler): LogQL metric queries over the log store.
    LogQL,
}

/// A parsed rule expression.
#[derive(Debug, Clone)]
pub enum RuleExpr {
    /// Over the metrics store.
    PromQL(Expr),
    /// Over the log store.
    LogQL(Box<logql::MetricQuery>),
}

/// What a rule produces.
#[derive(Debug, Clone)]
pub enum RuleKind {
    /// Writes its result as series named after the rule.
    Recording,
    /// Keeps alerts.
    Alerting(AlertingSpec),
}

/// The parts of an alerting rule.
#[derive(Debug, Clone)]
pub struct AlertingSpec {
    /// `for`: how long an alert is pending before it fires.
    pub for_ms: i64,
    /// `keep_firing_for`: how long a firing alert outlives its condition.
    pub keep_firing_for_ms: i64,
    /// Annotation templates.
    pub annotations: BTreeMap<String, String>,
}

/// An alert's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    /// Resolved (kept for a while to notify).
    Inactive,
    /// Active for less than `for`.
    Pending,
    /// Active for at least `for`.
    Firing,
}

impl AlertState {
    /// Prometheus's name for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One alert of an alerting rule.
#[derive(Debug, Clone)]
pub struct Alert {
    /// Labels, `alertname` included.
    pub labels: Labels,
    /// Expanded annotations.
    pub annotations: BTreeMap<String, String>,
    /// Current state.
    pub state: AlertState,
    /// The expression's value at the last evaluation that returned it.
    pub value: f64,
    /// When it became active (ms).
    pub active_at_ms: i64,
    /// When it started firing (ms).
    pub fired_at_ms: Option<i64>,
    /// When it was resolved (ms).
    pub resolved_at_ms: Option<i64>,
    /// When it was last handed to the notifier (ms).
    pub last_sent_ms: Option<i64>,
    /// `endsAt` of a firing alert at its last send (ms).
    pub valid_until_ms: i64,
    keep_firing_since_ms: Option<i64>,
}

impl Alert {
    /// Prometheus's resend rule: never pending alerts; resolved ones once more; firing ones every `resend_delay`.
    fn needs_sending(&self, ts: i64, resend_delay_ms: i64) -> bool {
        if self.state == AlertState::Pending {
            return false;
        }
        let last_sent = self.last_sent_ms.unwrap_or(i64::MIN);
        if self.resolved_at_ms.is_some_and(|resolved| resolved > last_sent) {
            return true;
        }
        last_sent.saturating_add(resend_delay_ms) < ts
    }
}

/// Health of a rule's last evaluation, as `/api/v1/rules` reports it.
#[derive(Debug, Clone, Default)]
pub struct RuleHealth {
    /// `ok`, `err` or `unknown` (not evaluated yet).
    pub health: &'static str,
    /// The last error, if it failed.
    pub last_error: Option<String>,
    /// When it last ran (ms).
    pub last_evaluation_ms: Option<i64>,
    /// How long that took (s).
    pub evaluation_seconds: f64,
}

/// A rule's state between evaluations.
#[derive(Debug, Clone, Default)]
pub struct RuleState {
    /// Alerts by label set (alerting rules only).
    pub alerts: BTreeMap<String, Alert>,
    /// Last evaluation's health.
    pub health: RuleHealth,
    written: HashSet<Labels>,
    restored: bool,
}

/// What evaluation needs besides storage.
#[derive(Debug, Clone, Default)]
pub struct EvalContext {
    /// Labels of this server, for `$externalLabels` and outgoing alerts.
    pub external_labels: BTreeMap<String, String>,
    /// This server's URL, for `$externalURL` and generator links.
    pub external_url: String,
    /// The LogQL engine log rules run on; `None` when there is no log store.
    pub logs: Option<crate::logql::LogqlEngine>,
}

/// A group and its rules' state.
#[derive(Debug, Clone)]
pub struct GroupRunner {
    /// The group.
    pub group: RuleGroup,
    /// One state per rule, in order.
    pub states: Vec<RuleState>,
    /// When the group last ran (ms) and how long it took (s).
    pub last_evaluation: Option<(i64, f64)>,
    restore_pending: bool,
}

impl GroupRunner {
    /// A runner for `group`; `restore` asks for `for` state to be restored from storage after the first evaluation.
    pub fn new(group: RuleGroup, restore: bool) -> Self {
        let states = group
            .rules
            .iter()
            .map(|_| RuleState {
                restored: !restore,
                health: RuleHealth { health: "unknown", ..Default::default() },
                ..Default::default()
            })
            .collect();
        GroupRunner { group, states, last_evaluation: None, restore_pending: restore }
    }

    /// `(file, name)`: what identifies a group across reloads.
    pub fn key(&self) -> (PathBuf, String) {
        (self.group.file.clone(), self.group.name.clone())
    }

    /// Takes over the alert state of same-named rules of `old` (a reload keeps pending and firing alerts).
    pub fn copy_state_from(&mut self, old: &GroupRunner) {
        let mut by_name: HashMap<(&str, &str), Vec<&RuleState>> = HashMap::new();
        for (rule, state) in old.group.rules.iter().zip(&old.states) {
            by_name.entry((rule.name.as_str(), rule.expr_text.as_str())).or_default().push(state);
        }
        for (rule, state) in self.group.rules.iter().zip(self.states.iter_mut()) {
            if let Some(previous) = by_name.get_mut(&(rule.name.as_str(), rule.expr_text.as_str())) {
                if !previous.is_empty() {
                    *state = previous.remove(0).clone();
                }
            }
        }
        self.last_evaluation = old.last_evaluation;
        self.restore_pending = old.restore_pending;
    }

    /// The evaluation time at or before `now_ms`, as Prometheus aligns it: a multiple of the interval plus
    /// a per-group offset, so groups spread out over the interval.
    pub fn eval_timestamp(&self, now_ms: i64) -> i64 {
        let interval = self.group.interval_ms.max(1);
        let offset = (fnv(format!("{}\u{0}{}", self.group.name, self.group.file.display()).into_bytes())
            % interval as u64) as i64;
        let adjusted = now_ms - offset;
        adjusted - adjusted.rem_euclid(interval) + offset
    }

    /// Evaluates every rule at `ts` (ms), writes the results and markers through `appender`, and updates
    /// alert state. A failing rule is recorded in its health; the others still run.
    pub fn evaluate(
        &mut self,
        engine: &Engine,
        storage: &dyn Queryable,
        appender: &dyn Appender,
        ts: i64,
        context: &EvalContext,
    ) {
        let started = Instant::now();
        let query_ts = ts - self.group.query_offset_ms;
        for index in 0..self.group.rules.len() {
            let rule_started = Instant::now();
            let rule = &self.group.rules[index];
            let state = &mut self.states[index];
            let outcome = match &rule.kind {
                RuleKind::Recording => record(rule, &self.group, engine, storage, query_ts, context),
                RuleKind::Alerting(spec) => {
                    alert(rule, spec, &self.group, state, engine, storage, query_ts, ts, context)
                }
            };
            let produced = match outcome {
                Ok(series) => series,
                Err(error) => {
                    // Its earlier series are left as they are, as Prometheus leaves them.
                    state.health = health("err", Some(error), ts, rule_started);
                    continue;
                }
            };
            let mut batch = Vec::new();
            let now_written: HashSet<Labels> = produced.iter().map(|(labels, _)| labels.clone()).collect();
            for (labels, value) in produced {
                batch.push(SeriesSamples { labels, samples: vec![Sample { t: query_ts, v: value }] });
            }
            for gone in state.written.difference(&now_written) {
                let stale = f64::from_bits(STALE_NAN_BITS);
                batch.push(SeriesSamples { labels: gone.clone(), samples: vec![Sample { t: query_ts, v: stale }] });
            }
            state.written = now_written;
            if !batch.is_empty() {
                if let Err(error) = appender.append(&batch) {
                    state.health = health("err", Some(format!("writing results: {error}")), ts, rule_started);
                    continue;
                }
            }
            state.health = health("ok", None, ts, rule_started);
        }
        if std::mem::take(&mut self.restore_pending) {
            self.restore_for_state(storage, ts);
        }
        self.last_evaluation = Some((ts, started.elapsed().as_secs_f64()));
    }

    /// After a restart, gives pending alerts back the time they had already spent pending, from the
    /// `ALERTS_FOR_STATE` series written before (Prometheus's rules, `for` grace period included).
    fn restore_for_state(&mut self, storage: &dyn Queryable, ts: i64) {
        for (rule, state) in self.group.rules.iter().zip(self.states.iter_mut()) {
            state.restored = true;
            let RuleKind::Alerting(spec) = &rule.kind else { continue };
            if spec.for_ms < FOR_GRACE_PERIOD_MS {
                continue;
            }
            for alert in state.alerts.values_mut() {
                let Some((down_at_ms, active_at_s)) = last_for_state(storage, &alert.labels, ts) else { continue };
                let restored_active_at = active_at_s as i64 * 1000;
                let down_at = down_at_ms.div_euclid(1000) * 1000;
                let remaining = spec.for_ms - (down_at - restored_active_at);
                alert.active_at_ms = if remaining <= 0 {
                    restored_active_at
                } else if remaining < FOR_GRACE_PERIOD_MS {
                    ts.div_euclid(1000) * 1000 + FOR_GRACE_PERIOD_MS - spec.for_ms
                } else {
                    restored_active_at + (ts - down_at)
                };
            }
        }
    }

    /// The alerts to hand to the notifier now, marking them sent (Prometheus's `resend_delay` rule; a
    /// firing alert's `endsAt` is four times the larger of the resend delay and the interval ahead).
    pub fn alerts_to_send(&mut self, ts: i64, resend_delay_ms: i64) -> Vec<(String, Alert)> {
        let delta = resend_delay_ms.max(self.group.interval_ms);
        let mut out = Vec::new();
        for (rule, state) in self.group.rules.iter().zip(self.states.iter_mut()) {
            for alert in state.alerts.values_mut() {
                if alert.needs_sending(ts, resend_delay_ms) {
                    alert.last_sent_ms = Some(ts);
                    alert.valid_until_ms = ts + 4 * delta;
                    out.push((rule.expr_text.clone(), alert.clone()));
                }
            }
        }
        out
    }
}

fn health(health: &'static str, last_error: Option<String>, ts: i64, started: Instant) -> RuleHealth {
    RuleHealth { health, last_error, last_evaluation_ms: Some(ts), evaluation_seconds: started.elapsed().as_secs_f64() }
}

/// 64-bit FNV-1a, a stable hash for spreading groups over their interval.
fn fnv(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// The instant vector of `rule` at `ts`; a scalar is one sample without labels.
fn query(
    rule: &Rule,
    engine: &Engine,
    storage: &dyn Queryable,
    ts: i64,
    context: &EvalContext,
) -> Result<Vec<(Labels, f64)>, String> {
    let expr = match &rule.expr {
        RuleExpr::PromQL(expr) => expr,
        RuleExpr::LogQL(query) => {
            let logs = context.logs.as_ref().ok_or("log rules need the log store")?;
            let vector = logs.instant(query, ts).map_err(|e| e.to_string())?;
            return vector
                .into_iter()
                .map(|(labels, v)| Ok((Labels::new(labels).map_err(|e| e.to_string())?, v)))
                .collect();
        }
    };
    let outcome = engine.instant(storage, expr, ts, &QueryControl::default()).map_err(|e| e.to_string())?;
    match outcome.value {
        Value::Vector(samples) => Ok(samples.into_iter().map(|s| (s.final_labels(), s.v)).collect()),
        Value::Scalar(v) => Ok(vec![(Labels::default(), v)]),
        other => Err(format!("rule result is not a vector or scalar: {}", other.type_name())),
    }
}

/// Group labels under the rule's own.
fn rule_labels<'a>(group: &'a RuleGroup, rule: &'a Rule) -> BTreeMap<&'a str, &'a str> {
    let mut labels: BTreeMap<&str, &str> = group.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    labels.extend(rule.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    labels
}

fn set_label(labels: Labels, name: &str, value: &str) -> Labels {
    if value.is_empty() { labels.retain(|n| n != name) } else { labels.with(name, value) }
}

fn record(
    rule: &Rule,
    group: &RuleGroup,
    engine: &Engine,
    storage: &dyn Queryable,
    ts: i64,
    context: &EvalContext,
) -> Result<Vec<(Labels, f64)>, String> {
    let samples = query(rule, engine, storage, ts, context)?;
    let extra = rule_labels(group, rule);
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(samples.len());
    for (labels, value) in samples {
        let mut labels = labels.with("__name__", &rule.name);
        for (name, value) in &extra {
            labels = set_label(labels, name, value);
        }
        if !seen.insert(labels.clone()) {
            return Err("vector contains metrics with the same labelset after applying rule labels".into());
        }
        out.push((labels, value));
    }
    if group.limit > 0 && out.len() > group.limit {
        return Err(format!("exceeded limit of {} with {} series", group.limit, out.len()));
    }
    Ok(out)
}

fn labels_map(labels: &Labels) -> BTreeMap<String, String> {
    labels.iter().map(|l| (l.name.to_string(), l.value.to_string())).collect()
}

/// Runs an alerting rule: updates its alerts and returns its `ALERTS` and `ALERTS_FOR_STATE` samples.
#[allow(clippy::too_many_arguments)]
fn alert(
    rule: &Rule,
    spec: &AlertingSpec,
    group: &RuleGroup,
    state: &mut RuleState,
    engine: &Engine,
    storage: &dyn Queryable,
    query_ts: i64,
    ts: i64,
    context: &EvalContext,
) -> Result<Vec<(Labels, f64)>, String> {
    let samples = query(rule, engine, storage, query_ts, context)?;
    let extra = rule_labels(group, rule);
    let mut current: BTreeMap<String, (Labels, BTreeMap<String, String>, f64)> = BTreeMap::new();
    for (sample_labels, value) in samples {
        let data = TemplateData {
            labels: labels_map(&sample_labels),
            external_labels: context.external_labels.clone(),
            external_url: context.external_url.clone(),
            value,
            dot_is_labels: false,
        };
        // As in Prometheus, a template that fails at run time leaves its error in the text; the alert stands.
        let expand_or_note =
            |text: &str| expand(text, &data).unwrap_or_else(|error| format!("<error expanding template: {error}>"));
        let mut labels = sample_labels.without_metric_name();
        for (name, text) in &extra {
            labels = set_label(labels, name, &expand_or_note(text));
        }
        labels = labels.with("alertname", &rule.name);
        let annotations = spec.annotations.iter().map(|(k, v)| (k.clone(), expand_or_note(v))).collect();
        let key = labels.to_string();
        if current.contains_key(&key) {
            return Err("vector contains metrics with the same labelset after applying alert labels".into());
        }
        current.insert(key, (labels, annotations, value));
    }
    for (key, (labels, annotations, value)) in &current {
        match state.alerts.get_mut(key) {
            Some(existing) if existing.state != AlertState::Inactive => {
                existing.value = *value;
                existing.annotations = annotations.clone();
            }
            _ => {
                let alert = Alert {
                    labels: labels.clone(),
                    annotations: annotations.clone(),
                    state: AlertState::Pending,
                    value: *value,
                    active_at_ms: ts,
                    fired_at_ms: None,
                    resolved_at_ms: None,
                    last_sent_ms: None,
                    valid_until_ms: 0,
                    keep_firing_since_ms: None,
                };
                state.alerts.insert(key.clone(), alert);
            }
        }
    }
    let mut active = 0;
    let mut output = Vec::new();
    let keys: Vec<String> = state.alerts.keys().cloned().collect();
    for key in keys {
        let alert = state.alerts.get_mut(&key).expect("key listed above");
        if current.contains_key(&key) {
            alert.keep_firing_since_ms = None;
        } else {
            let mut keep_firing = false;
            if alert.state == AlertState::Firing && spec.keep_firing_for_ms > 0 {
                let since = *alert.keep_firing_since_ms.get_or_insert(ts);
                keep_firing = ts - since < spec.keep_firing_for_ms;
            }
            let expired = alert.resolved_at_ms.is_some_and(|resolved| ts - resolved > RESOLVED_RETENTION_MS);
            let remove = alert.state == AlertState::Pending || expired;
            if alert.state != AlertState::Inactive && !keep_firing {
                alert.state = AlertState::Inactive;
                alert.resolved_at_ms = Some(ts);
            }
            if remove {
                state.alerts.remove(&key);
                continue;
            }
            if !keep_firing {
                continue;
            }
        }
        active += 1;
        if alert.state == AlertState::Pending && ts - alert.active_at_ms >= spec.for_ms {
            alert.state = AlertState::Firing;
            alert.fired_at_ms = Some(ts);
        }
        if state.restored {
            let series = alert.labels.with("alertstate", alert.state.as_str()).with("__name__", "ALERTS");
            output.push((series, 1.0));
            let for_state = alert.labels.with("__name__", "ALERTS_FOR_STATE");
            output.push((for_state, alert.active_at_ms.div_euclid(1000) as f64));
        }
    }
    if group.limit > 0 && active > group.limit {
        state.alerts.clear();
        return Err(format!("exceeded limit of {} with {} alerts", group.limit, active));
    }
    Ok(output)
}

/// The last `ALERTS_FOR_STATE` sample of an alert within the outage tolerance: (its time, its value).
fn last_for_state(storage: &dyn Queryable, labels: &Labels, ts: i64) -> Option<(i64, f64)> {
    let mut matchers = vec![Matcher::new(MatchOp::Equal, "__name__", "ALERTS_FOR_STATE").ok()?];
    for label in labels.iter() {
        matchers.push(Matcher::new(MatchOp::Equal, &*label.name, &*label.value).ok()?);
    }
    let series = storage.select(&matchers, ts - OUTAGE_TOLERANCE_MS, ts).ok()?;
    let exact = series.into_iter().find(|s| s.labels.len() == labels.len() + 1)?;
    let last = exact.samples.iter().rev().find(|s| !vigil_tsdb::is_stale_marker(s.v))?;
    Some((last.t, last.v))
}

#[cfg(test)]
mod tests;
