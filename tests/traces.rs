//! Traces end to end: the real OpenTelemetry Python SDK exports a multi-service trace (nested spans,
//! events, links, errors) over OTLP/gRPC, OTLP/HTTP protobuf and OTLP/HTTP JSON into the real binary; the
//! trace comes back complete from the Jaeger and Tempo APIs, compared span by span with the SDK's own
//! record of what it sent. Also: search in both APIs, span metrics and the service graph by PromQL,
//! Jaeger dependencies, Zipkin spans, a 10k-span trace, bad input, and spans kept through SIGKILL.

mod harness;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use harness::{Vigil, client, instant_query, url_encode};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span as OtlpSpan;
use prost::Message;
use serde_json::{Value, json};
use vigil_query::tempo::{TempoTrace, TraceByIdResponse};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/otlp/export_traces.py");

/// What the SDK recorded: one entry per span.
fn export(endpoint: &str, spans: Option<usize>) -> Vec<Value> {
    let mut command = std::process::Command::new("python3");
    command.args([SCRIPT, endpoint]);
    if let Some(count) = spans {
        command.arg(count.to_string());
    }
    let output = command.output().expect("python3 runs");
    assert!(
        output.status.success(),
        "the OpenTelemetry SDK export failed (scripts/test.sh installs it): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints the recorded spans as JSON")
}

fn get(vigil: &Vigil, path: &str) -> (u16, Value) {
    let (status, body) = harness::get(&client(), &vigil.http(path), None);
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

fn get_bytes(vigil: &Vigil, path: &str, accept: &str) -> (u16, Vec<u8>) {
    let mut response = client().get(vigil.http(path)).header("Accept", accept).call().unwrap();
    (response.status().as_u16(), response.body_mut().read_to_vec().unwrap())
}

/// Polls the Jaeger API until the trace has `count` spans (at most 10 s).
fn jaeger_trace(vigil: &Vigil, trace_id: &str, count: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(vigil, &format!("/jaeger/api/traces/{trace_id}"));
        if status == 200 && body["data"][0]["spans"].as_array().map_or(0, Vec::len) == count {
            return body["data"][0].clone();
        }
        assert!(Instant::now() < deadline, "trace {trace_id} not complete in 10 s: {status} {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tag<'a>(tags: &'a Value, key: &str) -> Option<&'a Value> {
    tags.as_array()?.iter().find(|t| t["key"] == key).map(|t| &t["value"])
}

/// Every recorded span is in Jaeger's answer with the same ids, parent, service, kind, status, times,
/// attributes (typed), events and links.
fn assert_jaeger_matches(trace: &Value, expected: &[Value]) {
    let spans: BTreeMap<&str, &Value> =
        trace["spans"].as_array().unwrap().iter().map(|s| (s["spanID"].as_str().unwrap(), s)).collect();
    assert_eq!(spans.len(), expected.len());
    for want in expected {
        let got = spans[want["span_id"].as_str().unwrap()];
        let name = &want["name"];
        assert_eq!(got["operationName"], *name);
        assert_eq!(got["traceID"], want["trace_id"]);
        let process = &trace["processes"][got["processID"].as_str().unwrap()];
        assert_eq!(process["serviceName"], want["service"], "{name}");
        assert_eq!(tag(&process["tags"], "k8s.namespace.name"), Some(&json!("shop")), "{name}");
        let parent = got["references"].as_array().unwrap().iter().find(|r| r["refType"] == "CHILD_OF");
        assert_eq!(parent.map(|p| p["spanID"].clone()).unwrap_or(Value::Null), want["parent_id"], "{name}");
        assert_eq!(got["startTime"], json!(want["start_ns"].as_i64().unwrap() / 1000), "{name}");
        let duration = (want["end_ns"].as_i64().unwrap() - want["start_ns"].as_i64().unwrap()) / 1000;
        assert_eq!(got["duration"], json!(duration), "{name}");
        assert_eq!(tag(&got["tags"], "span.kind"), Some(&want["kind"]), "{name}");
        assert_eq!(tag(&got["tags"], "otel.scope.name"), Some(&json!("shop.instrumentation")), "{name}");
        let error = want["status"] == "error";
        assert_eq!(tag(&got["tags"], "error") == Some(&json!(true)), error, "{name}");
        if error {
            assert_eq!(tag(&got["tags"], "otel.status_description"), Some(&want["status_message"]), "{name}");
        }
        for (key, value) in want["attributes"].as_object().unwrap() {
            assert_eq!(tag(&got["tags"], key), Some(value), "{name}: attribute {key}");
        }
        let events: Vec<&Value> =
            got["logs"].as_array().unwrap().iter().map(|l| tag(&l["fields"], "event").unwrap()).collect();
        assert_eq!(events, want["events"].as_array().unwrap().iter().collect::<Vec<_>>(), "{name}");
        let links: Vec<&Value> = got["references"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["refType"] == "FOLLOWS_FROM")
            .map(|r| &r["spanID"])
            .collect();
        assert_eq!(links, want["links"].as_array().unwrap().iter().collect::<Vec<_>>(), "{name}");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn otlp_kind(name: &str) -> i32 {
    ["unspecified", "internal", "server", "client", "producer", "consumer"].iter().position(|k| *k == name).unwrap()
        as i32
}

/// Tempo's protobuf answer holds every recorded span with the same fields.
fn assert_tempo_matches(trace: &TempoTrace, expected: &[Value]) {
    let mut spans: BTreeMap<String, (&OtlpSpan, String)> = BTreeMap::new();
    for resource_spans in &trace.resource_spans {
        let service = resource_spans.resource.as_ref().unwrap().attributes.iter().find(|kv| kv.key == "service.name");
        let service = match service.and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            other => panic!("service.name missing: {other:?}"),
        };
        for scope in &resource_spans.scope_spans {
            assert_eq!(scope.scope.as_ref().unwrap().version, "1.2.3");
            for span in &scope.spans {
                spans.insert(hex(&span.span_id), (span, service.clone()));
            }
        }
    }
    assert_eq!(spans.len(), expected.len());
    for want in expected {
        let (got, service) = &spans[want["span_id"].as_str().unwrap()];
        let name = want["name"].as_str().unwrap();
        assert_eq!(got.name, name);
        assert_eq!(hex(&got.trace_id), want["trace_id"].as_str().unwrap());
        assert_eq!(service, want["service"].as_str().unwrap());
        let parent = (!got.parent_span_id.is_empty()).then(|| hex(&got.parent_span_id));
        assert_eq!(parent.as_deref(), want["parent_id"].as_str(), "{name}");
        assert_eq!(got.kind, otlp_kind(want["kind"].as_str().unwrap()), "{name}");
        assert_eq!(got.start_time_unix_nano as i64, want["start_ns"].as_i64().unwrap(), "{name}");
        assert_eq!(got.end_time_unix_nano as i64, want["end_ns"].as_i64().unwrap(), "{name}");
        let status = got.status.as_ref().unwrap();
        let code = ["unset", "ok", "error"].iter().position(|s| *s == want["status"]).unwrap() as i32;
        assert_eq!((status.code, status.message.as_str()), (code, want["status_message"].as_str().unwrap()), "{name}");
        for (key, value) in want["attributes"].as_object().unwrap() {
            let attribute = got.attributes.iter().find(|kv| &kv.key == key).unwrap_or_else(|| panic!("{name}: {key}"));
            let got_value = match attribute.value.as_ref().unwrap().value.as_ref().unwrap() {
                any_value::Value::StringValue(s) => json!(s),
                any_value::Value::IntValue(i) => json!(i),
                any_value::Value::DoubleValue(d) => json!(d),
                any_value::Value::BoolValue(b) => json!(b),
                other => panic!("{name}: unexpected {other:?}"),
            };
            assert_eq!(&got_value, value, "{name}: {key}");
        }
        let events: Vec<&str> = got.events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(events, want["events"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect::<Vec<_>>());
        let links: Vec<String> = got.links.iter().map(|l| hex(&l.span_id)).collect();
        assert_eq!(links, want["links"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect::<Vec<_>>());
    }
}

/// Exports the shop trace through `endpoint` and checks it in both APIs; returns the recorded spans.
fn shop_trace_round_trips(vigil: &Vigil, endpoint: &str) -> Vec<Value> {
    let expected = export(endpoint, None);
    assert_eq!(expected.len(), 7, "the shop trace has 7 spans");
    let trace_id = expected[0]["trace_id"].as_str().unwrap().to_owned();
    assert!(expected.iter().all(|s| s["trace_id"] == trace_id));
    let trace = jaeger_trace(vigil, &trace_id, expected.len());
    assert_jaeger_matches(&trace, &expected);

    let (status, body) = get_bytes(vigil, &format!("/tempo/api/v2/traces/{trace_id}"), "application/protobuf");
    assert_eq!(status, 200);
    let response = TraceByIdResponse::decode(body.as_slice()).expect("a tempopb.TraceByIDResponse");
    assert_eq!(response.status, 0, "complete");
    assert_tempo_matches(response.trace.as_ref().unwrap(), &expected);
    let (status, body) = get_bytes(vigil, &format!("/tempo/api/traces/{trace_id}"), "application/protobuf");
    assert_eq!(status, 200);
    assert_tempo_matches(&TempoTrace::decode(body.as_slice()).unwrap(), &expected);
    let (status, json_trace) = get(vigil, &format!("/tempo/api/traces/{trace_id}"));
    assert_eq!(status, 200);
    let json_spans: usize = json_trace["batches"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["scopeSpans"].as_array().unwrap())
        .map(|s| s["spans"].as_array().unwrap().len())
        .sum();
    assert_eq!(json_spans, expected.len());
    let first_id = json_trace["batches"][0]["scopeSpans"][0]["spans"][0]["traceId"].as_str().unwrap();
    assert_eq!(first_id, trace_id, "OTLP/JSON ids are hex");
    expected
}

#[test]
fn a_trace_over_otlp_grpc_comes_back_whole_and_is_searchable() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::server(dir.path(), &[]);
    let expected = shop_trace_round_trips(&vigil, &format!("grpc://{}", vigil.otlp_grpc_addr));
    let trace_id = expected[0]["trace_id"].as_str().unwrap();

    let (_, services) = get(&vigil, "/jaeger/api/services");
    assert_eq!(services["data"], json!(["cart", "frontend", "payments"]));
    let (_, operations) = get(&vigil, "/jaeger/api/operations?service=cart&spanKind=server");
    assert_eq!(operations["data"], json!([{"name": "load cart", "spanKind": "server"}]));
    let (_, names) = get(&vigil, "/jaeger/api/services/frontend/operations");
    assert_eq!(names["data"].as_array().unwrap().len(), 4);

    // Jaeger search: conditions on one span, the whole trace returned.
    let tags = url_encode(r#"{"retried":"true"}"#);
    let (status, found) =
        get(&vigil, &format!("/jaeger/api/traces?service=payments&tags={tags}&minDuration=1us&limit=5"));
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["data"].as_array().unwrap().len(), 1);
    assert_eq!(found["data"][0]["traceID"], trace_id);
    assert_eq!(found["data"][0]["spans"].as_array().unwrap().len(), 7);
    let (_, none) = get(&vigil, &format!("/jaeger/api/traces?service=cart&tags={tags}"));
    assert_eq!(none["data"], json!([]));
    let (_, none) = get(&vigil, "/jaeger/api/traces?service=payments&minDuration=1h");
    assert_eq!(none["data"], json!([]));
    let (status, error) = get(&vigil, "/jaeger/api/traces");
    assert_eq!(status, 400);
    assert_eq!(error["errors"][0]["code"], 400);
    let (status, missing) = get(&vigil, "/jaeger/api/traces/0123456789abcdef0123456789abcdef");
    assert_eq!((status, missing["errors"][0]["msg"].as_str()), (404, Some("trace not found")));

    // Tempo search with TraceQL and with tags.
    let query = url_encode(r#"{ resource.service.name = "payments" && status = error && span.amount > 10 }"#);
    let (status, found) = get(&vigil, &format!("/tempo/api/search?q={query}&limit=20&spss=3"));
    assert_eq!(status, 200, "{found}");
    let traces = found["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 1, "{found}");
    assert_eq!(traces[0]["traceID"], trace_id);
    assert_eq!(traces[0]["rootServiceName"], "frontend");
    assert_eq!(traces[0]["rootTraceName"], "GET /checkout");
    assert_eq!(traces[0]["spanSets"][0]["matched"], 1);
    assert_eq!(traces[0]["spanSets"][0]["spans"][0]["name"], "charge");
    assert_eq!(traces[0]["serviceStats"]["payments"], json!({"spanCount": 1, "errorCount": 1}));
    let query = url_encode(r#"{ name = "SELECT carts" } && { kind = server && rootServiceName = "frontend" }"#);
    let (_, found) = get(&vigil, &format!("/tempo/api/search?q={query}"));
    assert_eq!(found["traces"][0]["spanSets"][0]["matched"], 4, "{found}");
    let query = url_encode(r#"{ span.http.status_code >= 500 && duration > 1h }"#);
    let (_, found) = get(&vigil, &format!("/tempo/api/search?q={query}"));
    assert_eq!(found["traces"], json!([]));
    let (_, found) = get(&vigil, &format!("/tempo/api/search?tags={}", url_encode("service.name=cart cart.items=3")));
    assert_eq!(found["traces"][0]["traceID"], trace_id);
    let (status, _) = get(&vigil, &format!("/tempo/api/search?q={}", url_encode("{ a } >> { b }")));
    assert_eq!(status, 400);

    // Tag pickers.
    let (_, tags) = get(&vigil, "/tempo/api/v2/search/tags");
    let scope =
        |name: &str| tags["scopes"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()["tags"].clone();
    assert!(scope("span").as_array().unwrap().contains(&json!("http.method")));
    assert!(scope("resource").as_array().unwrap().contains(&json!("service.name")));
    assert!(scope("intrinsic").as_array().unwrap().contains(&json!("status")));
    let (_, values) = get(&vigil, "/tempo/api/v2/search/tag/resource.service.name/values");
    assert_eq!(values["tagValues"].as_array().unwrap().len(), 3);
    assert_eq!(values["tagValues"][0], json!({"type": "string", "value": "cart"}));
    let (_, values) = get(&vigil, "/tempo/api/search/tag/http.status_code/values");
    assert_eq!(values["tagValues"], json!(["500"]));
    let (_, echo) = get(&vigil, "/tempo/api/echo");
    assert_eq!(echo, json!("echo"));
}

#[test]
fn a_trace_over_otlp_http_protobuf_comes_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::server(dir.path(), &[]);
    shop_trace_round_trips(&vigil, &format!("http://{}/v1/traces", vigil.otlp_http_addr));
}

#[test]
fn a_trace_over_otlp_http_json_comes_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::server(dir.path(), &[]);
    shop_trace_round_trips(&vigil, &format!("json+http://{}/v1/traces", vigil.otlp_http_addr));
}

fn query_value(vigil: &Vigil, expr: &str) -> Option<f64> {
    instant_query(vigil, expr).first().and_then(|s| s["value"][1].as_str()?.parse().ok())
}

/// Waits (at most `wait`) for `expr` to have the value `want`.
fn eventually(vigil: &Vigil, expr: &str, want: f64, wait: Duration) {
    let deadline = Instant::now() + wait;
    loop {
        let got = query_value(vigil, expr);
        if got == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{expr} = {got:?}, wanted {want}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn span_metrics_and_the_service_graph_are_queryable_by_promql() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::server(dir.path(), &[]);
    export(&format!("grpc://{}", vigil.otlp_grpc_addr), None);
    let wait = Duration::from_secs(12);
    eventually(&vigil, r#"traces_service_graph_request_total{client="frontend",server="cart"}"#, 1.0, wait);
    eventually(&vigil, r#"traces_service_graph_request_total{client="frontend",server="payments"}"#, 1.0, wait);
    eventually(&vigil, r#"traces_service_graph_request_failed_total{client="frontend",server="payments"}"#, 1.0, wait);
    eventually(&vigil, r#"traces_service_graph_request_failed_total{client="frontend",server="cart"}"#, 0.0, wait);
    let user = r#"traces_service_graph_request_total{client="user",server="frontend",connection_type="virtual_node"}"#;
    eventually(&vigil, user, 1.0, wait);
    let calls = r#"traces_spanmetrics_calls_total{service="payments",span_name="charge",span_kind="SPAN_KIND_SERVER",status_code="STATUS_CODE_ERROR"}"#;
    eventually(&vigil, calls, 1.0, wait);
    eventually(&vigil, r#"sum(traces_spanmetrics_calls_total)"#, 7.0, wait);
    eventually(&vigil, r#"sum(traces_spanmetrics_latency_count{service="frontend"})"#, 4.0, wait);
    eventually(&vigil, r#"count(traces_spanmetrics_latency_bucket{service="cart",span_name="load cart"})"#, 15.0, wait);
    // The database call has no server span: after the pairing wait it becomes a database edge.
    let database = r#"traces_service_graph_request_total{client="cart",server="carts",connection_type="database"}"#;
    eventually(&vigil, database, 1.0, Duration::from_secs(25));

    let (status, dependencies) = get(&vigil, "/jaeger/api/dependencies?lookback=3600000");
    assert_eq!(status, 200);
    let mut links: Vec<(String, String, u64)> = dependencies["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["parent"].as_str().unwrap().into(),
                d["child"].as_str().unwrap().into(),
                d["callCount"].as_u64().unwrap(),
            )
        })
        .collect();
    links.sort();
    assert_eq!(
        links,
        [
            ("cart".into(), "carts".into(), 1),
            ("frontend".into(), "cart".into(), 1),
            ("frontend".into(), "payments".into(), 1)
        ]
    );
}

#[test]
fn a_ten_thousand_span_trace_is_returned_whole() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::server(dir.path(), &[]);
    let expected = export(&format!("grpc://{}", vigil.otlp_grpc_addr), Some(10_000));
    assert_eq!(expected.len(), 10_000);
    let trace_id = expected[0]["trace_id"].as_str().unwrap();
    let trace = jaeger_trace(&vigil, trace_id, 10_000);
    let ids: std::collections::BTreeSet<&str> =
        trace["spans"].as_array().unwrap().iter().map(|s| s["spanID"].as_str().unwrap()).collect();
    assert_eq!(ids, expected.iter().map(|s| s["span_id"].as_str().unwrap()).collect());
    let (status, body) = get_bytes(&vigil, &format!("/tempo/api/v2/traces/{trace_id}"), "application/protobuf");
    assert_eq!(status, 200);
    let trace = TraceByIdResponse::decode(body.as_slice()).unwrap().trace.unwrap();
    let count: usize = trace.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
    assert_eq!(count, 10_000);
}

fn post(url: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    let mut response = client().post(url).header("Content-Type", content_type).send(body).unwrap();
    (response.status().as_u16(), response.body_mut().read_to_string().unwrap())
}

#[test]
fn zipkin_spans_and_bad_input_and_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::server(dir.path(), &[]);
    let now_us = chrono::Utc::now().timestamp_micros();
    let zipkin = json!([
        {"traceId": "4e441824ec2b6a44ffdc9bb9a6453df3", "id": "ffdc9bb9a6453df3", "name": "get /cart", "kind": "SERVER",
         "timestamp": now_us, "duration": 150_000, "localEndpoint": {"serviceName": "cart"},
         "annotations": [{"timestamp": now_us + 50_000, "value": "ws"}], "tags": {"http.method": "GET", "error": "timeout"}},
        {"traceId": "4e441824ec2b6a44ffdc9bb9a6453df3", "id": "0000000000000002", "parentId": "ffdc9bb9a6453df3",
         "name": "query", "kind": "CLIENT", "timestamp": now_us + 1000, "duration": 20_000,
         "localEndpoint": {"serviceName": "cart"}, "remoteEndpoint": {"serviceName": "postgres", "port": 5432}}
    ]);
    let (status, body) = post(&vigil.http("/api/v2/spans"), "application/json", zipkin.to_string().as_bytes());
    assert_eq!(status, 202, "{body}");
    let trace = jaeger_trace(&vigil, "4e441824ec2b6a44ffdc9bb9a6453df3", 2);
    let root = trace["spans"].as_array().unwrap().iter().find(|s| s["spanID"] == "ffdc9bb9a6453df3").unwrap();
    assert_eq!((root["startTime"].as_i64(), root["duration"].as_i64()), (Some(now_us), Some(150_000)));
    assert_eq!(tag(&root["tags"], "error"), Some(&json!(true)));
    assert_eq!(tag(&root["tags"], "otel.status_description"), Some(&json!("timeout")));
    assert_eq!(tag(&root["logs"][0]["fields"], "event"), Some(&json!("ws")));
    let child = trace["spans"].as_array().unwrap().iter().find(|s| s["spanID"] == "0000000000000002").unwrap();
    assert_eq!(tag(&child["tags"], "peer.service"), Some(&json!("postgres")));

    // Bad input gets the right status and a message; nothing else is lost.
    let (status, body) = post(&vigil.http("/api/v2/spans"), "application/json", br#"[{"traceId":"zz","id":"1"}]"#);
    assert_eq!(status, 400);
    assert!(body.contains("invalid traceId"), "{body}");
    let traces = format!("http://{}/v1/traces", vigil.otlp_http_addr);
    let (status, body) = post(&traces, "application/x-protobuf", &[0x0a, 0xff, 0xff]);
    assert_eq!(status, 400);
    assert!(body.contains("invalid ExportTraceServiceRequest protobuf"), "{body}");
    let (status, _) = post(&traces, "text/plain", b"hello");
    assert_eq!(status, 415);
    let (status, body) = post(
        &traces,
        "application/json",
        br#"{"resourceSpans":[{"scopeSpans":[{"spans":[
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"0000000000000000","name":"bad"},
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"good",
         "startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}"#,
    );
    assert_eq!(status, 200, "{body}");
    let partial: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(partial["partialSuccess"]["rejectedSpans"], json!(1), "{body}");
    jaeger_trace(&vigil, "5b8efff798038103d269b633813fc60c", 1);

    // Acknowledged spans survive a SIGKILL (replayed from the WAL).
    vigil.kill();
    let vigil = Vigil::server(dir.path(), &[]);
    jaeger_trace(&vigil, "4e441824ec2b6a44ffdc9bb9a6453df3", 2);
    jaeger_trace(&vigil, "5b8efff798038103d269b633813fc60c", 1);
}
