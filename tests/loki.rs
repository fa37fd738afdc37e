//! Logs end to end: Loki pushes (JSON and snappy protobuf) into the real binary, read back through Loki's
//! API as Grafana's Loki datasource calls it (health check, label browser, logs query, log volume), within
//! 2 s of the push; bad pushes refused whole; acknowledged lines kept through a SIGKILL.

mod harness;

use std::time::{Duration, Instant};

use harness::{Vigil, client};
use prost::Message;
use serde_json::{Value, json};
use vigil_collector::loki::{EntryAdapter, LabelPair, PushRequest, StreamAdapter, Timestamp};

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap()
}

fn push_json(vigil: &Vigil, body: &Value) -> (u16, String) {
    let mut response = client()
        .post(vigil.http("/loki/api/v1/push"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .unwrap();
    (response.status().as_u16(), response.body_mut().read_to_string().unwrap())
}

fn push_proto(vigil: &Vigil, request: &PushRequest) -> u16 {
    let body = snap::raw::Encoder::new().compress_vec(&request.encode_to_vec()).unwrap();
    let response = client()
        .post(vigil.http("/loki/api/v1/push"))
        .header("Content-Type", "application/x-protobuf")
        .send(&body[..])
        .unwrap();
    response.status().as_u16()
}

fn get_json(vigil: &Vigil, path: &str, params: &[(&str, &str)]) -> Value {
    let mut request = client().get(vigil.http(path));
    for (name, value) in params {
        request = request.query(*name, *value);
    }
    let mut response = request.call().unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    assert_eq!(status, 200, "{path} {params:?}: {text}");
    serde_json::from_str(&text).unwrap()
}

fn lines(result: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for stream in result["data"]["result"].as_array().unwrap() {
        for value in stream["values"].as_array().unwrap() {
            out.push(value[1].as_str().unwrap().to_owned());
        }
    }
    out.sort();
    out
}

fn query_range(vigil: &Vigil, query: &str) -> Value {
    get_json(vigil, "/loki/api/v1/query_range", &[("query", query), ("limit", "100")])
}

#[test]
fn pushed_lines_are_served_as_grafana_asks() {
    let data = tempfile::tempdir().unwrap();
    let vigil = Vigil::server(data.path(), &[]);
    let t = now_ns();
    let body = json!({"streams": [
        {"stream": {"app": "api", "env": "prod"}, "values": [
            [(t - 3_000_000_000).to_string(), "level=info msg=\"GET /users\" status=200"],
            [(t - 2_000_000_000).to_string(), "level=error msg=\"connection timeout\" status=504", {"trace_id": "4bf92f3577b34da6"}]]},
        {"stream": {"app": "web", "env": "prod"}, "values": [
            [(t - 1_000_000_000).to_string(), "{\"level\":\"warn\",\"path\":\"/missing\"}"]]}]});
    let pushed = Instant::now();
    assert_eq!(push_json(&vigil, &body).0, 204);
    let request = PushRequest {
        streams: vec![StreamAdapter {
            labels: r#"{app="worker", env="dev"}"#.into(),
            entries: vec![EntryAdapter {
                timestamp: Some(Timestamp { seconds: t / 1_000_000_000, nanos: (t % 1_000_000_000) as i32 }),
                line: "level=error msg=\"job failed\" status=500".into(),
                structured_metadata: vec![LabelPair { name: "job_id".into(), value: "42".into() }],
            }],
        }],
    };
    assert_eq!(push_proto(&vigil, &request), 204);

    // Searchable within 2 s of the push.
    let deadline = pushed + Duration::from_secs(2);
    loop {
        if lines(&query_range(&vigil, r#"{env=~".+"}"#)).len() == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "pushed lines not searchable within 2 s");
        std::thread::sleep(Duration::from_millis(50));
    }

    let result = query_range(&vigil, r#"{app="api"} |= "timeout""#);
    assert_eq!(result["status"], "success");
    assert_eq!(result["data"]["resultType"], "streams");
    assert_eq!(result["data"]["result"][0]["stream"], json!({"app": "api", "env": "prod"}));
    assert_eq!(result["data"]["result"][0]["values"][0][0], (t - 2_000_000_000).to_string());
    assert_eq!(lines(&result), ["level=error msg=\"connection timeout\" status=504"]);
    // Structured metadata stays out of the labels, unless the client asks for it apart (Grafana's
    // categorize-labels encoding): then each value carries it, with the level detected at ingest.
    let mut response = client()
        .get(vigil.http("/loki/api/v1/query_range"))
        .query("query", r#"{app="api"} |= "timeout""#)
        .header("X-Loki-Response-Encoding-Flags", "categorize-labels")
        .call()
        .unwrap();
    let categorized: Value = serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(categorized["data"]["encodingFlags"], json!(["categorize-labels"]));
    assert_eq!(categorized["data"]["result"][0]["stream"], json!({"app": "api", "env": "prod"}));
    assert_eq!(
        categorized["data"]["result"][0]["values"][0][2],
        json!({"structuredMetadata": {"detected_level": "error", "trace_id": "4bf92f3577b34da6"}})
    );
    // Beyond Loki: full-text search across every stream without a selector.
    assert_eq!(lines(&query_range(&vigil, r#"{} |= "error""#)).len(), 2);
    // Newest first by default; limit applies to entries.
    let newest = get_json(&vigil, "/loki/api/v1/query_range", &[("query", r#"{env="prod"}"#), ("limit", "1")]);
    assert_eq!(lines(&newest), ["{\"level\":\"warn\",\"path\":\"/missing\"}"]);

    // Grafana's health check.
    let health = get_json(&vigil, "/loki/api/v1/query", &[("query", "vector(1)+vector(1)")]);
    assert_eq!(health["data"]["resultType"], "vector");
    assert_eq!(health["data"]["result"][0]["value"][1], "2");
    // The label browser.
    assert_eq!(get_json(&vigil, "/loki/api/v1/labels", &[])["data"], json!(["app", "env"]));
    assert_eq!(get_json(&vigil, "/loki/api/v1/label/app/values", &[])["data"], json!(["api", "web", "worker"]));
    let prod_apps = get_json(&vigil, "/loki/api/v1/label/app/values", &[("query", r#"{env="prod"}"#)]);
    assert_eq!(prod_apps["data"], json!(["api", "web"]));
    let series = get_json(&vigil, "/loki/api/v1/series", &[("match[]", r#"{app="worker"}"#)]);
    assert_eq!(series["data"], json!([{"app": "worker", "env": "dev"}]));
    let stats = get_json(&vigil, "/loki/api/v1/index/stats", &[("query", r#"{env="prod"}"#)]);
    assert_eq!((stats["streams"].as_u64(), stats["entries"].as_u64()), (Some(2), Some(3)));
    // The labels Grafana's logs drilldown detects, and the build it reads the Loki version from.
    let detected = get_json(&vigil, "/loki/api/v1/detected_labels", &[("query", r#"{env="prod"}"#)]);
    assert_eq!(
        detected["detectedLabels"],
        json!([{"label": "app", "cardinality": 2}, {"label": "env", "cardinality": 1}])
    );
    let all = get_json(&vigil, "/loki/api/v1/detected_labels", &[]);
    assert_eq!(all["detectedLabels"][0], json!({"label": "app", "cardinality": 3}));
    let build = get_json(&vigil, "/loki/api/v1/status/buildinfo", &[]);
    assert!(build["version"].as_str().is_some_and(|v| !v.is_empty()), "{build}");
    // The log volume query Grafana sends, over a range: a matrix by level.
    let volume = get_json(
        &vigil,
        "/loki/api/v1/query_range",
        &[("query", r#"sum by (level) (count_over_time({env=~".+"} | logfmt | drop __error__ [1m]))"#), ("step", "60")],
    );
    assert_eq!(volume["data"]["resultType"], "matrix");
    let by_level: Vec<(String, String)> = volume["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["metric"]["level"].as_str().unwrap_or("").to_owned(),
                s["values"].as_array().unwrap().last().unwrap()[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(by_level.contains(&("error".to_owned(), "2".to_owned())), "{by_level:?}");
    assert!(by_level.contains(&("info".to_owned(), "1".to_owned())), "{by_level:?}");

    // A bad push is refused whole: the good stream in it is not stored either.
    let bad = json!({"streams": [
        {"stream": {"app": "api"}, "values": [[t.to_string(), "should not be stored"]]},
        {"stream": {}, "values": [[t.to_string(), "no labels"]]}]});
    let (status, text) = push_json(&vigil, &bad);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("at least one label"), "{text}");
    std::thread::sleep(Duration::from_millis(1200));
    assert!(lines(&query_range(&vigil, r#"{app="api"} |= "should not""#)).is_empty());
    let (status, _) = {
        let mut response = client().get(vigil.http("/loki/api/v1/query_range")).query("query", "{app=").call().unwrap();
        (response.status().as_u16(), response.body_mut().read_to_string().unwrap())
    };
    assert_eq!(status, 400, "a malformed query is a 400");
}

#[test]
fn acknowledged_lines_survive_a_kill() {
    let data = tempfile::tempdir().unwrap();
    let vigil = Vigil::server(data.path(), &[]);
    let t = now_ns();
    let values: Vec<Value> =
        (0..50).map(|i| json!([(t - 1_000_000 * (50 - i)).to_string(), format!("line {i}")])).collect();
    assert_eq!(push_json(&vigil, &json!({"streams": [{"stream": {"app": "crash"}, "values": values}]})).0, 204);
    vigil.kill();
    let vigil = Vigil::server(data.path(), &[]);
    let result = get_json(&vigil, "/loki/api/v1/query_range", &[("query", r#"{app="crash"}"#), ("limit", "1000")]);
    assert_eq!(lines(&result).len(), 50);
}

#[test]
fn python_sdk_logs_over_otlp_http_json_and_grpc_are_queryable() {
    let data = tempfile::tempdir().unwrap();
    let vigil = Vigil::server(data.path(), &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/otlp/export_logs.py");
    let endpoints = [
        (format!("http://{}/v1/logs", vigil.otlp_http_addr), "checkout"),
        (format!("grpc://{}", vigil.otlp_grpc_addr), "payments"),
        (format!("json+http://{}/v1/logs", vigil.otlp_http_addr), "shipping"),
    ];
    for (endpoint, service) in &endpoints {
        let output =
            std::process::Command::new("python3").args([script, endpoint, service]).output().expect("python3 runs");
        assert!(output.status.success(), "{endpoint}: {}", String::from_utf8_lossy(&output.stderr));
    }
    for &(_, service) in &endpoints {
        let query = format!(r#"{{service_name="{service}"}}"#);
        let deadline = Instant::now() + Duration::from_secs(3);
        let result = loop {
            let result = query_range(&vigil, &query);
            if lines(&result).len() == 3 || Instant::now() > deadline {
                break result;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(
            lines(&result),
            ["order placed", "payment failed: card declined", "payment slow: 1800ms"],
            "{service}"
        );
        // Well-known resource attributes are stream labels (the SDK adds service.instance.id); others are not.
        let stream = &result["data"]["result"][0]["stream"];
        assert_eq!(
            (stream["service_name"].as_str(), stream["k8s_namespace_name"].as_str()),
            (Some(service), Some("shop"))
        );
        assert!(stream.get("host_arch").is_none(), "{stream}");
    }
    let errors = query_range(&vigil, r#"{k8s_namespace_name="shop"} |= "failed""#);
    assert_eq!(lines(&errors).len(), endpoints.len());
}

#[test]
fn tail_delivers_a_pushed_line_within_two_seconds() {
    let data = tempfile::tempdir().unwrap();
    let vigil = Vigil::server(data.path(), &[]);
    let query: String = harness::url_encode(r#"{app="tail"} |= "wanted""#);
    let url = format!("ws://{}/loki/api/v1/tail?query={query}", vigil.addr);
    let (mut socket, response) = tungstenite::connect(url).expect("websocket upgrade");
    assert_eq!(response.status().as_u16(), 101);
    if let tungstenite::stream::MaybeTlsStream::Plain(stream) = socket.get_ref() {
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    let t = now_ns();
    let body = json!({"streams": [{"stream": {"app": "tail"}, "values": [
        [t.to_string(), "not this one"], [(t + 1).to_string(), "the wanted line"]]}]});
    let pushed = Instant::now();
    assert_eq!(push_json(&vigil, &body).0, 204);
    let message = socket.read().expect("a tail message within the read timeout");
    let elapsed = pushed.elapsed();
    let frame: Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
    assert_eq!(frame["streams"][0]["stream"], json!({"app": "tail"}));
    assert_eq!(frame["streams"][0]["values"], json!([[(t + 1).to_string(), "the wanted line"]]));
    assert!(elapsed < Duration::from_secs(2), "tail took {elapsed:?}");
    println!("tail delivered the line {} ms after the push", elapsed.as_millis());
    let _ = socket.close(None);
}
