use std::path::Path;

use vigil_tsdb::{Db, DbOptions};

use super::*;
use crate::promql::EngineOptions;

const MINUTE: i64 = 60_000;

fn runner(yaml: &str, restore: bool) -> GroupRunner {
    let mut groups = parse_file(Path::new("test.yml"), yaml, MINUTE).unwrap();
    GroupRunner::new(groups.remove(0), restore)
}

fn set(db: &Db, series: &str, t: i64, v: f64) {
    let labels = Labels::new([("__name__", series), ("instance", "a")]).unwrap();
    db.append(&[SeriesSamples { labels, samples: vec![Sample { t, v }] }]).unwrap();
}

fn states(runner: &GroupRunner) -> Vec<AlertState> {
    runner.states[0].alerts.values().map(|a| a.state).collect()
}

#[test]
fn keep_firing_for_holds_a_firing_alert_after_its_condition_ends() {
    let db = Db::in_memory(DbOptions::default());
    let engine = Engine::new(EngineOptions::default());
    let yaml = "groups: [{name: g, rules: [{alert: A, expr: 'x > 0', keep_firing_for: 2m}]}]";
    let mut group = runner(yaml, false);
    let values = [1.0, 0.0, 0.0, 0.0];
    let mut seen = Vec::new();
    for (minute, v) in values.iter().enumerate() {
        let t = minute as i64 * MINUTE;
        set(&db, "x", t, *v);
        group.evaluate(&engine, &db, &db, t, &EvalContext::default());
        seen.push(states(&group));
    }
    use AlertState::*;
    assert_eq!(seen, [vec![Firing], vec![Firing], vec![Firing], vec![Inactive]]);
    assert_eq!(group.states[0].alerts.values().next().unwrap().resolved_at_ms, Some(3 * MINUTE));
}

#[test]
fn resend_follows_prometheus_rules() {
    let db = Db::in_memory(DbOptions::default());
    let engine = Engine::new(EngineOptions::default());
    let mut group = runner("groups: [{name: g, rules: [{alert: A, expr: 'x > 0'}]}]", false);
    let mut sent = Vec::new();
    for (minute, v) in [1.0, 1.0, 1.0, 0.0, 0.0].iter().enumerate() {
        let t = minute as i64 * MINUTE;
        set(&db, "x", t, *v);
        group.evaluate(&engine, &db, &db, t, &EvalContext::default());
        let batch = group.alerts_to_send(t, 2 * MINUTE);
        sent.push(batch.iter().map(|(_, a)| (a.state, a.valid_until_ms)).collect::<Vec<_>>());
    }
    // Firing at 0 (sent, endsAt 4 × max(resend 2m, interval 1m) ahead), not again until the resend delay has
    // passed, resolved at 3m and sent once as resolved, then quiet.
    use AlertState::*;
    assert_eq!(sent, [vec![(Firing, 8 * MINUTE)], vec![], vec![], vec![(Inactive, 11 * MINUTE)], vec![]]);
}

#[test]
fn limit_fails_the_rule_and_drops_its_alerts() {
    let db = Db::in_memory(DbOptions::default());
    let engine = Engine::new(EngineOptions::default());
    let mut group = runner(
        "groups: [{name: g, limit: 1, rules: [{alert: A, expr: 'vector(1) or label_replace(vector(1), \"a\", \"b\", \"\", \"\")'}]}]",
        false,
    );
    group.evaluate(&engine, &db, &db, 0, &EvalContext::default());
    let health = &group.states[0].health;
    assert_eq!(health.health, "err");
    assert!(health.last_error.as_deref().unwrap().contains("exceeded limit of 1 with 2 alerts"));
    assert!(group.states[0].alerts.is_empty());
}

#[test]
fn for_state_is_restored_after_a_restart() {
    let db = Db::in_memory(DbOptions::default());
    let engine = Engine::new(EngineOptions::default());
    let yaml = "groups: [{name: g, rules: [{alert: A, expr: 'x > 0', for: 30m}]}]";
    let mut before = runner(yaml, false);
    for minute in 0..=12 {
        let t = minute * MINUTE;
        set(&db, "x", t, 1.0);
        before.evaluate(&engine, &db, &db, t, &EvalContext::default());
    }
    // Down from 12m to 15m; the new process restores: 12 of 30 minutes were spent, so 18 remain from 15m.
    let mut after = runner(yaml, true);
    for minute in 15..=34 {
        let t = minute * MINUTE;
        set(&db, "x", t, 1.0);
        after.evaluate(&engine, &db, &db, t, &EvalContext::default());
        let alert = after.states[0].alerts.values().next().unwrap();
        if minute == 15 {
            assert_eq!(alert.active_at_ms, 3 * MINUTE, "active since 0, shifted by the 3 minutes down");
        }
        let expected = if minute < 33 { AlertState::Pending } else { AlertState::Firing };
        assert_eq!(alert.state, expected, "at {minute}m");
    }
}

#[test]
fn groups_are_spread_over_their_interval_and_reloads_keep_alerts() {
    let yaml = "groups: [{name: g, interval: 30s, rules: [{alert: A, expr: vector(1), for: 5m}]}]";
    let group = runner(yaml, false);
    let ts = group.eval_timestamp(1_000_000);
    assert!(ts <= 1_000_000 && 1_000_000 - ts < 30_000);
    assert_eq!(group.eval_timestamp(ts + 30_000), ts + 30_000);

    let db = Db::in_memory(DbOptions::default());
    let mut old = runner(yaml, false);
    old.evaluate(&Engine::new(EngineOptions::default()), &db, &db, 0, &EvalContext::default());
    let mut reloaded = runner(yaml, false);
    reloaded.copy_state_from(&old);
    assert_eq!(reloaded.states[0].alerts.len(), 1);
}

#[test]
fn log_rule_files_take_logql_metric_queries_only() {
    let ok =
        "groups: [{name: g, rules: [{alert: A, expr: 'sum(count_over_time({app=\"x\"} |= \"error\" [5m])) > 1'}]}]";
    let groups = parse_file_as(Path::new("logs.yml"), ok, MINUTE, Language::LogQL).unwrap();
    assert!(matches!(groups[0].rules[0].expr, RuleExpr::LogQL(_)));
    let not_metric = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: '{app=\"x\"}'\n";
    let error = parse_file_as(Path::new("logs.yml"), not_metric, MINUTE, Language::LogQL).unwrap_err().to_string();
    assert!(error.starts_with("logs.yml:4:") && error.contains("metric query"), "{error}");
    // The same LogQL is not PromQL.
    assert!(parse_file(Path::new("p.yml"), ok, MINUTE).is_err());
}
