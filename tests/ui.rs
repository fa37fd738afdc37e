//! The web UI in a real browser: `vigil up` is fed metrics (remote write, 10,800 samples of one series),
//! log lines (Loki push, one carrying a trace id), a multi-service trace (the OpenTelemetry Python SDK) and
//! an always-firing alert rule; then Playwright drives Debian's headless Chromium through every page
//! (`tests/ui/browser.mjs`): each page loads and shows that data, live tail shows a new line, the waterfall
//! shows the trace's spans, links go from logs to the trace and back. Screenshots land in
//! `target/ui-artifacts/`. The browser's own timings are checked: first page load under 1 s, a 10k-point
//! series rendered under 200 ms.

mod harness;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use harness::{Target, Vigil, client, command, remote_write, remote_write_body};
use serde_json::{Value, json};

const BROWSER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ui/browser.mjs");
const EXPORT_TRACES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/otlp/export_traces.py");
const SERIES: &str = "ui_test_series";
const LOG_JOB: &str = "ui-test";
const ALERT: &str = "UiTestAlwaysFiring";
/// One sample a second for three hours: the 3 h graph at a 1 s step has more than 10k points.
const SAMPLES: i64 = 10_800;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Writes [`SAMPLES`] samples of a wave, one a second, ending now.
fn write_series(vigil: &Vigil) {
    let end = now_ms() / 1000 * 1000;
    let samples: Vec<(i64, f64)> = (0..SAMPLES)
        .map(|i| {
            let t = end - (SAMPLES - 1 - i) * 1000;
            (t, 50.0 + 40.0 * (i as f64 / 600.0).sin() + (i % 7) as f64)
        })
        .collect();
    for chunk in samples.chunks(3600) {
        let labels: &[(&str, &str)] = &[("__name__", SERIES), ("job", "ui"), ("instance", "wave")];
        let (status, body) = remote_write(&client(), vigil, &remote_write_body(&[(labels, chunk)]), None);
        assert_eq!(status, 204, "remote write: {body}");
    }
}

/// Exports the SDK's shop trace over OTLP/gRPC; returns its trace id and span count.
fn export_trace(vigil: &Vigil) -> (String, usize) {
    let output = Command::new("python3")
        .args([EXPORT_TRACES, &format!("grpc://{}", vigil.otlp_grpc_addr)])
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "trace export failed: {}", String::from_utf8_lossy(&output.stderr));
    let spans: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    (spans[0]["trace_id"].as_str().unwrap().to_owned(), spans.len())
}

/// Pushes 60 logfmt lines over the last 10 minutes at mixed levels; line 30 carries `trace_id` only as
/// structured metadata, so the UI's link to the trace can only come from there.
fn push_logs(vigil: &Vigil, trace_id: &str) {
    let end_ns = now_ms() as i128 * 1_000_000;
    let levels = ["info", "info", "warn", "error", "debug"];
    let values: Vec<Value> = (0..60)
        .map(|i| {
            let ts = (end_ns - (60 - i) as i128 * 10_000_000_000).to_string();
            let level = levels[i % levels.len()];
            if i == 30 {
                let line = "level=error msg=\"checkout failed\" order=42";
                json!([ts, line, {"trace_id": trace_id}])
            } else {
                json!([ts, format!("level={level} msg=\"request {i}\" path=/api/items/{i} status=200")])
            }
        })
        .collect();
    let body = json!({"streams": [{"stream": {"job": LOG_JOB, "app": "shop"}, "values": values}]});
    let mut response = client()
        .post(vigil.http("/loki/api/v1/push"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .unwrap();
    assert_eq!(response.status().as_u16(), 204, "{}", response.body_mut().read_to_string().unwrap());
}

/// Writes a sample every half second until `writing` turns false, so ingest rates are above zero.
fn keep_writing(vigil: &Vigil, writing: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let target = Target { addr: vigil.addr };
    std::thread::spawn(move || {
        let agent = client();
        let labels: &[(&str, &str)] = &[("__name__", "ui_live"), ("job", "ui")];
        while writing.load(Ordering::Acquire) {
            let body = remote_write_body(&[(labels, &[(now_ms(), 1.0)])]);
            assert_eq!(target.write(&agent, &body), Some(204));
            std::thread::sleep(Duration::from_millis(500));
        }
    })
}

#[test]
fn every_page_works_in_a_real_browser() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).exists(), "{chromium} is missing: scripts/test.sh installs Debian's chromium");
    let playwright = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/node_modules/playwright-core");
    assert!(playwright.exists(), "playwright-core is missing: scripts/test.sh runs npm ci in tests/ui");

    let data = tempfile::tempdir().unwrap();
    let rules = data.path().join("ui-rules.yaml");
    let rule_text = format!(
        "groups:\n  - name: ui\n    interval: 1s\n    rules:\n      - alert: {ALERT}\n        expr: vector(1) > 0\n        \
         labels: {{severity: page}}\n        annotations: {{summary: always firing for the UI test}}\n"
    );
    std::fs::write(&rules, rule_text).unwrap();
    let data_dir = data.path().join("data");
    let vigil = Vigil::start(command(&[
        "up",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--http-addr",
        "127.0.0.1:0",
        "--otlp-http-addr",
        "127.0.0.1:0",
        "--rule-file",
        rules.to_str().unwrap(),
    ]));

    write_series(&vigil);
    let (trace_id, spans) = export_trace(&vigil);
    push_logs(&vigil, &trace_id);

    let writing = Arc::new(AtomicBool::new(true));
    let writer = keep_writing(&vigil, writing.clone());

    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let output = Command::new("node")
        .arg(BROWSER_SCRIPT)
        .env("VIGIL_URL", vigil.http(""))
        .env("ARTIFACTS", &artifacts)
        .env("TRACE_ID", &trace_id)
        .env("TRACE_SPANS", spans.to_string())
        .env("LOG_JOB", LOG_JOB)
        .env("SERIES", SERIES)
        .env("ALERT", ALERT)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs");
    writing.store(false, Ordering::Release);
    writer.join().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|_| {
        panic!("the browser script printed no report:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr))
    });
    println!("browser report: {report}");
    assert_eq!(report["failures"], json!([]), "browser checks failed (screenshots in {})", artifacts.display());
    assert!(output.status.success());
    assert_eq!(report["checks"].as_array().unwrap().len(), 8, "{report}");
    assert!(report["firstLoadMs"].as_f64().unwrap() < 1000.0, "{report}");
    assert!(report["points"].as_f64().unwrap() >= 10_000.0, "{report}");
    assert!(report["renderMs"].as_f64().unwrap() < 200.0, "{report}");
    assert!(report["tailMs"].as_f64().unwrap() < 2000.0, "{report}");
}
