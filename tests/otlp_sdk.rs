//! The real OpenTelemetry Python SDK exports metrics over OTLP/HTTP and OTLP/gRPC; they come back from the
//! query API with Prometheus's OTLP translation. Needs PyPI's `opentelemetry-sdk`,
//! `opentelemetry-exporter-otlp-proto-http` and `-grpc`, which `scripts/test.sh` installs.

mod harness;

use harness::{Vigil, client, get, instant_query};
use serde_json::Value;

fn query(vigil: &Vigil, expr: &str) -> Vec<(Value, f64)> {
    instant_query(vigil, expr)
        .iter()
        .map(|r| (r["metric"].clone(), r["value"][1].as_str().unwrap().parse().unwrap()))
        .collect()
}

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/otlp/export_metrics.py");

#[test]
fn python_sdk_metrics_over_http_are_translated_like_prometheus_does() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::server(dir.path(), &[]);
    let endpoint = format!("http://{}/v1/metrics", vigil.otlp_http_addr);
    exported_metrics_are_translated(&vigil, &endpoint);
}

#[test]
fn python_sdk_metrics_over_http_json_are_translated_like_prometheus_does() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::server(dir.path(), &[]);
    let endpoint = format!("json+http://{}/v1/metrics", vigil.otlp_http_addr);
    exported_metrics_are_translated(&vigil, &endpoint);
}

#[test]
fn python_sdk_metrics_over_grpc_are_translated_like_prometheus_does() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::server(dir.path(), &[]);
    let endpoint = format!("grpc://{}", vigil.otlp_grpc_addr);
    exported_metrics_are_translated(&vigil, &endpoint);
}

/// Runs the SDK script against `endpoint` (plain, then gzip as another service) and checks every series.
fn exported_metrics_are_translated(vigil: &Vigil, endpoint: &str) {
    let script = SCRIPT;
    let output = std::process::Command::new("python3").args([script, endpoint]).output().expect("python3 runs");
    assert!(
        output.status.success(),
        "the OpenTelemetry SDK export failed (scripts/test.sh installs it): {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let requests = query(vigil, r#"http_requests_total{job="shop/checkout",instance="pod-1"}"#);
    let mut by_method: Vec<(String, String, f64)> = requests
        .iter()
        .map(|(m, v)| {
            (m["http_method"].as_str().unwrap().to_owned(), m["http_status_code"].as_str().unwrap().to_owned(), *v)
        })
        .collect();
    by_method.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(by_method, [("GET".into(), "200".into(), 5.0), ("POST".into(), "500".into(), 2.0)]);

    let count = query(vigil, r#"http_server_duration_milliseconds_count{http_method="GET"}"#);
    assert_eq!(count[0].1, 3.0);
    let sum = query(vigil, r#"http_server_duration_milliseconds_sum{http_method="GET"}"#);
    assert_eq!(sum[0].1, 145.0);
    let buckets = query(vigil, r#"http_server_duration_milliseconds_bucket{le=~"5.0|25.0|250.0|\\+Inf"}"#);
    let mut cumulative: Vec<(String, f64)> =
        buckets.iter().map(|(m, v)| (m["le"].as_str().unwrap().to_owned(), *v)).collect();
    cumulative.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    assert_eq!(cumulative, [("5.0".into(), 1.0), ("25.0".into(), 2.0), ("+Inf".into(), 3.0), ("250.0".into(), 3.0)]);
    let p50 = query(vigil, "histogram_quantile(0.5, http_server_duration_milliseconds_bucket)");
    assert!(p50[0].1 > 10.0 && p50[0].1 <= 25.0, "{p50:?}");

    let queue = query(vigil, "queue_size");
    assert_eq!(queue[0].1, 7.0, "a non-monotonic sum keeps its name without _total");

    // The same export, compressed, as other services: gzip everywhere, and deflate over OTLP/HTTP protobuf.
    let compressions: &[&str] = if endpoint.starts_with("http://") { &["gzip", "deflate"] } else { &["gzip"] };
    for compression in compressions {
        let service = format!("checkout-{compression}");
        let output = std::process::Command::new("python3")
            .args([script, endpoint, &service])
            .env("OTEL_EXPORTER_OTLP_COMPRESSION", compression)
            .output()
            .expect("python3 runs");
        assert!(output.status.success(), "{compression} export failed: {}", String::from_utf8_lossy(&output.stderr));
        let compressed = query(vigil, &format!(r#"http_requests_total{{job="shop/{service}",http_method="GET"}}"#));
        assert_eq!(compressed.len(), 1, "{compression}");
        assert_eq!(compressed[0].1, 5.0, "{compression}");
    }

    let info = query(vigil, r#"target_info{job="shop/checkout"}"#);
    assert_eq!(info[0].0["deployment_environment"], "test");
    assert_eq!(info[0].0["job"], "shop/checkout");
}

/// What the server answers a raw gRPC Export call (status name and message), sent by grpcio.
fn grpc_export_raw(vigil: &Vigil, service: &str, payload: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/otlp/grpc_raw.py");
    let target = vigil.otlp_grpc_addr.to_string();
    let output = std::process::Command::new("python3").args([script, &target, service, payload]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[test]
fn grpc_bad_input_gets_otlp_status_codes_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::server(dir.path(), &["--max-body-size", "64KiB"]);
    // A ResourceMetrics field whose declared length runs past the end.
    let truncated = grpc_export_raw(&vigil, "metrics", "0a0501");
    assert!(truncated.starts_with("INVALID_ARGUMENT"), "{truncated}");
    assert!(truncated.contains("ExportMetricsServiceRequest"), "{truncated}");
    let oversized = grpc_export_raw(&vigil, "metrics", "zeros:200000");
    assert!(oversized.starts_with("RESOURCE_EXHAUSTED"), "{oversized}");
    let traces = grpc_export_raw(&vigil, "traces", "");
    assert!(traces.starts_with("UNIMPLEMENTED"), "no span store yet: {traces}");
    assert_eq!(grpc_export_raw(&vigil, "metrics", ""), "OK", "an empty request is valid");
    let (status, _) = get(&client(), &vigil.http("/-/ready"), None);
    assert_eq!(status, 200);
}
