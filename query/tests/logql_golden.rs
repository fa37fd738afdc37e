//! Golden LogQL cases (`tests/logql/golden.txt`): each query runs over the same records in a real log
//! store, and its rendered result must equal the expected text.

use std::collections::BTreeMap;
use std::sync::Arc;

use vigil_query::logql::{LabelMap, LogqlEngine, parse};
use vigil_tsdb::logs::{LogIndex, LogRecord, LogStore};

const SECOND: i64 = 1_000_000_000;

const RECORDS: &[(i64, &str, &str, &str)] = &[
    (1, "api", "prod", r#"level=info msg="GET /users" status=200 duration=12ms"#),
    (2, "api", "prod", r#"level=error msg="POST /orders" status=500 duration=340ms"#),
    (3, "web", "prod", r#"{"level":"info","status":200,"path":"/index.html","bytes":512}"#),
    (4, "web", "prod", r#"{"level":"warn","status":404,"path":"/missing","bytes":128}"#),
    (5, "api", "dev", r#"level=error msg="timeout talking to db" status=504 duration=2s"#),
    (6, "web", "prod", r#"{"level":"error","status":500,"path":"/checkout","bytes":64}"#),
    (7, "api", "prod", r#"level=info msg="GET /health" status=200 duration=1ms"#),
    (8, "proxy", "prod", "10.0.0.7 - - [GET /api/v1/users] 200 512"),
];

fn labels_text(labels: &LabelMap) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

fn run(engine: &LogqlEngine, query: &str, mode: &str) -> Vec<String> {
    let words: Vec<&str> = mode.split_whitespace().collect();
    let mut out = Vec::new();
    match (parse(query).unwrap_or_else(|e| panic!("{query}: {e}")), words[0]) {
        (logql::Expr::Log(log), "logs") => {
            let backward = words.contains(&"backward");
            let limit = words.iter().position(|w| *w == "limit").map_or(100, |i| words[i + 1].parse().unwrap());
            for stream in engine.logs(&log, 0, 20 * SECOND, limit, backward).unwrap() {
                for (ts, line) in &stream.entries {
                    out.push(format!("{} {} {line}", labels_text(&stream.labels), ts / SECOND));
                }
            }
        }
        (logql::Expr::Metric(metric), "at") => {
            let t: i64 = words[1].parse().unwrap();
            let mut vector = engine.instant(&metric, t * 1000).unwrap();
            vector.sort_by(|a, b| a.0.cmp(&b.0));
            out.extend(vector.iter().map(|(labels, v)| format!("{} {v}", labels_text(labels))));
        }
        (logql::Expr::Metric(metric), "range") => {
            let n: Vec<i64> = words[1..].iter().map(|w| w.parse::<i64>().unwrap() * 1000).collect();
            for series in engine.range(&metric, n[0], n[1], n[2]).unwrap() {
                let points: Vec<String> = series.points.iter().map(|(t, v)| format!("{}={v}", t / 1000)).collect();
                out.push(format!("{} {}", labels_text(&series.labels), points.join(" ")));
            }
        }
        (_, other) => panic!("{query}: mode {other} does not fit the query"),
    }
    out
}

#[test]
fn golden_cases() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LogIndex::open(dir.path()).unwrap());
    let records: Vec<LogRecord> = RECORDS
        .iter()
        .map(|(t, app, env, line)| LogRecord {
            ts_ns: t * SECOND,
            labels: BTreeMap::from([("app".to_owned(), (*app).to_owned()), ("env".to_owned(), (*env).to_owned())]),
            line: (*line).to_owned(),
            // Lines of failed requests carry a trace id as structured metadata.
            metadata: if line.contains("=50") || line.contains(":50") {
                BTreeMap::from([("trace_id".to_owned(), format!("{t:032x}"))])
            } else {
                BTreeMap::new()
            },
            position: None,
        })
        .collect();
    store.append(&records).unwrap();
    let engine = LogqlEngine::new(store.clone() as Arc<dyn LogStore>);
    // First with the records in the store's heads (in memory), then sealed into indexed chunks.
    for where_kept in ["heads", "chunks"] {
        if where_kept == "chunks" {
            store.flush().unwrap();
        }
        let (cases, failures) = run_cases(&engine);
        println!("{} of {cases} LogQL golden cases pass over records in {where_kept}", cases - failures.len());
        assert!(failures.is_empty(), "over records in {where_kept}:\n{}", failures.join("\n"));
        assert!(cases >= 30);
    }
}

/// Runs every case of `golden.txt`: how many there are, and the failures.
fn run_cases(engine: &LogqlEngine) -> (usize, Vec<String>) {
    let text = include_str!("logql/golden.txt");
    let mut cases = 0;
    let mut failures = Vec::new();
    for block in text.split("\n\n") {
        let lines: Vec<&str> = block.lines().filter(|l| !l.starts_with('#')).collect();
        if lines.first().is_none_or(|l| !l.starts_with("query: ")) {
            continue;
        }
        let query = lines[0].strip_prefix("query: ").unwrap();
        let expected: Vec<String> = lines[2..].iter().map(|l| (*l).to_owned()).collect();
        let actual = run(engine, query, lines[1]);
        cases += 1;
        if actual != expected {
            failures.push(format!("{query}\n  expected: {expected:#?}\n  actual:   {actual:#?}"));
        }
    }
    (cases, failures)
}
