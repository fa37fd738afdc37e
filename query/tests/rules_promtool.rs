//! Differential test of rule evaluation against real Prometheus: Vigil evaluates a rule file over input
//! series every minute for 40 minutes, and writes what it saw (firing alerts with labels and annotations,
//! the `ALERTS` and `ALERTS_FOR_STATE` series with pending alerts, the recorded series) as a promtool unit
//! test. Real `promtool test rules` then evaluates the same file over the same series and must agree at
//! every minute. A deliberately wrong expectation must make promtool fail, so the check can fail.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use vigil_query::promql::{Engine, EngineOptions, QueryControl, Value};
use vigil_query::rules::{AlertState, EvalContext, GroupRunner, RuleKind, load_files};
use vigil_tsdb::{Appender, Db, DbOptions, Labels, Sample, SeriesSamples};

mod common;
use common::{Point, parse_points, split_series};

const MINUTE_MS: i64 = 60_000;
const MINUTES: i64 = 40;

/// Input series in promtool's notation, one point per minute from t = 0.
const INPUT: &[(&str, &str)] = &[
    (r#"http_requests_total{job="api", instance="a:80", code="500"}"#, "0+10x40"),
    (r#"http_requests_total{job="api", instance="b:80", code="500"}"#, "0+1x10 10+50x10 510+1x20"),
    (r#"http_requests_total{job="api", instance="a:80", code="200"}"#, "0+100x40"),
    (r#"http_requests_total{job="web", instance="c:80", code="200"}"#, "0+60x40"),
    (r#"up{job="api", instance="a:80"}"#, "1x5 0x6 1x5 0x1 1x22"),
    (r#"up{job="api", instance="b:80"}"#, "1x40"),
    (r#"temperature{room="lab"}"#, "20 25 30 35 40 45 50 45 40 35 30 25 20 39 20x26"),
    (r#"temperature{room="hall"}"#, "21x40"),
    (r#"disk_free_bytes{dev="sda"}"#, "3e11-1e10x40"),
];

fn rules_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rules/differential.rules.yml")
}

fn load_input(db: &Db) {
    for (series, notation) in INPUT {
        let (labels, _) = split_series(series).expect("valid series");
        let samples = parse_points(notation)
            .expect("valid notation")
            .into_iter()
            .enumerate()
            .filter_map(|(i, point)| match point {
                Point::Value(v) => Some(Sample { t: i as i64 * MINUTE_MS, v }),
                _ => None,
            })
            .collect();
        db.append(&[SeriesSamples { labels, samples }]).unwrap();
    }
}

/// `name{a="b", ...}` as promtool's `labels:` field reads it.
fn series_text(labels: &Labels) -> String {
    let name = labels.metric_name().unwrap_or_default();
    let pairs: Vec<String> = labels
        .iter()
        .filter(|l| &*l.name != "__name__")
        .map(|l| format!("{}={}", l.name, serde_json::to_string(&*l.value).unwrap()))
        .collect();
    format!("{name}{{{}}}", pairs.join(", "))
}

fn yaml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

/// Vigil's view at one evaluation time, as promtool test cases.
fn cases_at(minute: i64, runners: &[GroupRunner], engine: &Engine, db: &Db, alerts: &mut String, exprs: &mut String) {
    let t = minute * MINUTE_MS;
    for runner in runners {
        for (rule, state) in runner.group.rules.iter().zip(&runner.states) {
            let RuleKind::Alerting(_) = rule.kind else { continue };
            let _ =
                writeln!(alerts, "      - eval_time: {minute}m\n        alertname: {}\n        exp_alerts:", rule.name);
            let firing: Vec<_> = state.alerts.values().filter(|a| a.state == AlertState::Firing).collect();
            if firing.is_empty() {
                alerts.truncate(alerts.len() - 1);
                alerts.push_str(" []\n");
            }
            for alert in firing {
                let labels: BTreeMap<String, String> = alert
                    .labels
                    .iter()
                    .filter(|l| &*l.name != "alertname")
                    .map(|l| (l.name.to_string(), l.value.to_string()))
                    .collect();
                let _ = writeln!(alerts, "          - exp_labels: {}", serde_json::to_string(&labels).unwrap());
                let _ = writeln!(
                    alerts,
                    "            exp_annotations: {}",
                    serde_json::to_string(&alert.annotations).unwrap()
                );
            }
        }
    }
    let recorded = ["job_code:http_requests:rate5m", "job:http_errors:ratio5m", "rooms:temperature:max"];
    for expr in ["ALERTS", "ALERTS_FOR_STATE"].iter().chain(&recorded) {
        let parsed = vigil_query::promql::parse(expr).unwrap();
        let Value::Vector(samples) = engine.instant(db, &parsed, t, &QueryControl::default()).unwrap().value else {
            panic!("{expr} is not a vector");
        };
        let _ = writeln!(exprs, "      - expr: {expr}\n        eval_time: {minute}m\n        exp_samples:");
        if samples.is_empty() {
            exprs.truncate(exprs.len() - 1);
            exprs.push_str(" []\n");
        }
        for sample in samples {
            let _ = writeln!(exprs, "          - labels: {}", yaml_string(&series_text(&sample.final_labels())));
            let _ = writeln!(exprs, "            value: {:?}", sample.v);
        }
    }
}

/// Evaluates the rule file every minute and returns promtool's test file text.
fn vigil_expectations() -> (String, usize) {
    let db = Db::in_memory(DbOptions::default());
    load_input(&db);
    let groups = load_files(&[rules_file()], MINUTE_MS).expect("the rule file loads");
    let mut runners: Vec<GroupRunner> = groups.into_iter().map(|g| GroupRunner::new(g, false)).collect();
    let engine = Engine::new(EngineOptions::default());
    let context = EvalContext::default();
    let (mut alerts, mut exprs) = (String::new(), String::new());
    for minute in 0..=MINUTES {
        for runner in &mut runners {
            runner.evaluate(&engine, &db, &db, minute * MINUTE_MS, &context);
            for state in &runner.states {
                assert_eq!(state.health.health, "ok", "{:?}", state.health.last_error);
            }
        }
        cases_at(minute, &runners, &engine, &db, &mut alerts, &mut exprs);
    }
    let mut input = String::new();
    for (series, values) in INPUT {
        let _ = writeln!(input, "      - series: {}\n        values: {}", yaml_string(series), yaml_string(values));
    }
    let cases = alerts.matches("eval_time").count() + exprs.matches("eval_time").count();
    let text = format!(
        "rule_files:\n  - {}\nevaluation_interval: 1m\ngroup_eval_order: [recording, alerts]\ntests:\n  - interval: 1m\n    input_series:\n{input}    alert_rule_test:\n{alerts}    promql_expr_test:\n{exprs}",
        rules_file().display()
    );
    (text, cases)
}

fn promtool(test_file: &Path) -> (bool, String) {
    let output = Command::new("promtool")
        .arg("test")
        .arg("rules")
        .arg(test_file)
        .output()
        .expect("promtool runs (Debian package `prometheus`; scripts/test.sh installs it)");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[test]
fn prometheus_agrees_with_vigil_at_every_evaluation() {
    let (text, cases) = vigil_expectations();
    let dir = tempfile::tempdir().unwrap();
    let test_file = dir.path().join("differential.test.yml");
    std::fs::write(&test_file, &text).unwrap();
    let (ok, output) = promtool(&test_file);
    assert!(ok, "promtool disagrees with Vigil:\n{output}\n(test file kept at {})", {
        let kept = std::env::temp_dir().join("vigil-differential.test.yml");
        std::fs::write(&kept, &text).unwrap();
        kept.display().to_string()
    });
    // The comparison covers alerts in every state: pending and firing ones, resolved and kept-firing ones.
    assert!(text.contains(r#"alertstate=\"pending\""#) && text.contains(r#"alertstate=\"firing\""#));
    println!("promtool agrees with Vigil on {cases} test cases over {} evaluations", MINUTES + 1);

    // A wrong expectation is caught: the check can fail.
    let wrong = text.replacen("is down", "is up", 1);
    assert_ne!(wrong, text);
    std::fs::write(&test_file, wrong).unwrap();
    let (ok, _) = promtool(&test_file);
    assert!(!ok, "promtool accepted a wrong annotation");
}

/// Every file under `tests/rules/invalid` is rejected by promtool and by Vigil, which names the file and
/// the line of the group or rule at fault; the differential file passes both.
#[test]
fn vigil_rejects_the_rule_files_promtool_rejects() {
    let check =
        |file: &Path| Command::new("promtool").args(["check", "rules"]).arg(file).output().unwrap().status.success();
    assert!(check(&rules_file()));
    load_files(&[rules_file()], MINUTE_MS).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rules/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 12);
    for file in &files {
        assert!(!check(file), "promtool accepts {}", file.display());
        let error =
            load_files(std::slice::from_ref(file), MINUTE_MS).expect_err(&file.display().to_string()).to_string();
        let prefix = format!("{}:", file.display());
        assert!(error.starts_with(&prefix), "{error}");
        let line: usize = error[prefix.len()..].split(':').next().unwrap().parse().unwrap();
        assert!(line > 0, "{error}: no line");
        println!("{}: {}", file.file_name().unwrap().to_string_lossy(), &error[prefix.len()..]);
    }
}
