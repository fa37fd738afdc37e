//! `/api/v1/rules` and `/api/v1/alerts` with Prometheus's JSON shapes.

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::manager::RuleManager;
use super::{Alert, AlertState, GroupRunner, Rule, RuleKind, RuleState};

/// The rule and alert read APIs over `manager`.
pub fn routes(manager: RuleManager) -> Router {
    Router::new().route("/api/v1/rules", get(rules)).route("/api/v1/alerts", get(alerts)).with_state(manager)
}

/// Go's `%e`-less float form Prometheus uses for alert values: `1e+00`, `2.5e-07`.
fn value_text(v: f64) -> String {
    if !v.is_finite() {
        return super::template::go_float(v, None);
    }
    crate::promql::go_exponent_form(&format!("{v:e}"))
}

fn time_text(ms: Option<i64>) -> String {
    match ms.and_then(DateTime::<Utc>::from_timestamp_millis) {
        Some(time) => time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None => "0001-01-01T00:00:00Z".into(),
    }
}

fn labels_json(alert: &Alert) -> Value {
    json!(
        alert
            .labels
            .iter()
            .map(|l| (l.name.to_string(), l.value.to_string()))
            .collect::<std::collections::BTreeMap<_, _>>()
    )
}

fn alert_json(alert: &Alert) -> Value {
    json!({"labels": labels_json(alert), "annotations": alert.annotations, "state": alert.state.as_str(),
        "activeAt": time_text(Some(alert.active_at_ms)), "value": value_text(alert.value)})
}

/// Alerts Prometheus lists: pending and firing ones (resolved ones are kept only to notify).
fn active(state: &RuleState) -> impl Iterator<Item = &Alert> {
    state.alerts.values().filter(|a| a.state != AlertState::Inactive)
}

/// Repeated `name[]` and `name` parameters.
struct Filters {
    kind: Option<String>,
    rule_names: Vec<String>,
    groups: Vec<String>,
    files: Vec<String>,
    exclude_alerts: bool,
}

impl Filters {
    fn parse(query: Option<&str>) -> Filters {
        let mut filters =
            Filters { kind: None, rule_names: vec![], groups: vec![], files: vec![], exclude_alerts: false };
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let value = value.into_owned();
            match key.trim_end_matches("[]") {
                "type" => filters.kind = Some(value),
                "rule_name" => filters.rule_names.push(value),
                "rule_group" => filters.groups.push(value),
                "file" => filters.files.push(value),
                "exclude_alerts" => filters.exclude_alerts = value == "true",
                _ => {}
            }
        }
        filters
    }

    fn keeps_group(&self, runner: &GroupRunner) -> bool {
        let file = runner.group.file.display().to_string();
        (self.groups.is_empty() || self.groups.contains(&runner.group.name))
            && (self.files.is_empty() || self.files.contains(&file))
    }

    fn keeps_rule(&self, rule: &Rule) -> bool {
        let kind_ok = !matches!(
            (self.kind.as_deref(), &rule.kind),
            (Some("alert"), RuleKind::Recording) | (Some("record"), RuleKind::Alerting(_))
        );
        kind_ok && (self.rule_names.is_empty() || self.rule_names.contains(&rule.name))
    }
}

fn rule_json(rule: &Rule, state: &RuleState, exclude_alerts: bool) -> Value {
    let health = &state.health;
    let mut out = json!({"name": rule.name, "query": rule.expr_text, "labels": rule.labels,
        "health": health.health, "evaluationTime": health.evaluation_seconds,
        "lastEvaluation": time_text(health.last_evaluation_ms)});
    if let Some(error) = &health.last_error {
        out["lastError"] = json!(error);
    }
    match &rule.kind {
        RuleKind::Recording => out["type"] = json!("recording"),
        RuleKind::Alerting(spec) => {
            let states: Vec<AlertState> = active(state).map(|a| a.state).collect();
            let overall = if states.contains(&AlertState::Firing) {
                "firing"
            } else if states.contains(&AlertState::Pending) {
                "pending"
            } else {
                "inactive"
            };
            out["type"] = json!("alerting");
            out["state"] = json!(overall);
            out["duration"] = json!(spec.for_ms / 1000);
            out["keepFiringFor"] = json!(spec.keep_firing_for_ms / 1000);
            out["annotations"] = json!(spec.annotations);
            if !exclude_alerts {
                out["alerts"] = json!(active(state).map(alert_json).collect::<Vec<_>>());
            }
        }
    }
    out
}

async fn rules(State(manager): State<RuleManager>, RawQuery(query): RawQuery) -> Response {
    let filters = Filters::parse(query.as_deref());
    let mut groups = Vec::new();
    for runner in manager.snapshot().iter().filter(|r| filters.keeps_group(r)) {
        let rules: Vec<Value> = runner
            .group
            .rules
            .iter()
            .zip(&runner.states)
            .filter(|(rule, _)| filters.keeps_rule(rule))
            .map(|(rule, state)| rule_json(rule, state, filters.exclude_alerts))
            .collect();
        if rules.is_empty() && (filters.kind.is_some() || !filters.rule_names.is_empty()) {
            continue;
        }
        let (last_ms, seconds) = runner.last_evaluation.map_or((None, 0.0), |(ms, s)| (Some(ms), s));
        groups.push(json!({"name": runner.group.name, "file": runner.group.file.display().to_string(),
            "rules": rules, "interval": runner.group.interval_ms as f64 / 1000.0, "limit": runner.group.limit,
            "evaluationTime": seconds, "lastEvaluation": time_text(last_ms)}));
    }
    axum::Json(json!({"status": "success", "data": {"groups": groups}})).into_response()
}

async fn alerts(State(manager): State<RuleManager>) -> Response {
    let mut alerts = Vec::new();
    for runner in manager.snapshot() {
        for state in &runner.states {
            alerts.extend(active(state).map(alert_json));
        }
    }
    axum::Json(json!({"status": "success", "data": {"alerts": alerts}})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_times_print_as_prometheus_prints_them() {
        assert_eq!(value_text(1.0), "1e+00");
        assert_eq!(value_text(0.25), "2.5e-01");
        assert_eq!(value_text(1234.5), "1.2345e+03");
        assert_eq!(time_text(None), "0001-01-01T00:00:00Z");
        assert_eq!(time_text(Some(1_700_000_000_500)), "2023-11-14T22:13:20.500Z");
    }
}
