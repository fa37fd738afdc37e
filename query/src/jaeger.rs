//! Jaeger's query API under `/jaeger` (Grafana's Jaeger datasource URL is `http://host:port/jaeger`):
//! the v1 JSON API (services, operations, trace search, trace by id, dependencies) with Jaeger's shapes,
//! and the `/api/v3` endpoints answering OTLP/JSON.
//!
//! Search conditions (operation, tags, durations, span kind) hold on one span of the trace, as in Jaeger;
//! each hit is returned whole. Without `start`/`end` or a `lookback`, a search covers all stored data.
//! Dependencies are read from the service-graph counters in the metrics store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use vigil_tsdb::traces::{
    AttrValue, Attribute, Resource, Span, SpanKind, SpanSearch, SpanStore, StatusCode as SpanStatus, hex, parse_hex_id,
};
use vigil_tsdb::{METRIC_NAME, MatchOp, Matcher, Queryable};

use crate::params::Params;
use crate::traceql::parse_duration_ns;
use crate::traces::{resource_spans_json, tag_matches};

/// Traces a search returns when the request names no limit.
const DEFAULT_LIMIT: usize = 20;
/// The counter `/api/dependencies` reads.
const GRAPH_REQUESTS: &str = "traces_service_graph_request_total";

#[derive(Clone)]
struct JaegerState {
    spans: Arc<dyn SpanStore>,
    metrics: Arc<dyn Queryable>,
}

/// Jaeger's routes over a span store, with dependencies from `metrics`.
pub fn routes(spans: Arc<dyn SpanStore>, metrics: Arc<dyn Queryable>) -> Router {
    Router::new()
        .route("/jaeger/api/services", get(services))
        .route("/jaeger/api/services/{service}/operations", get(service_operations))
        .route("/jaeger/api/operations", get(operations))
        .route("/jaeger/api/traces", get(search))
        .route("/jaeger/api/traces/{id}", get(trace))
        .route("/jaeger/api/dependencies", get(dependencies))
        .route("/jaeger/api/v3/services", get(v3_services))
        .route("/jaeger/api/v3/operations", get(v3_operations))
        .route("/jaeger/api/v3/traces", get(v3_search))
        .route("/jaeger/api/v3/traces/{id}", get(v3_trace))
        .with_state(JaegerState { spans, metrics })
}

/// A Jaeger error: the envelope with `errors`, and the same HTTP status.
struct JaegerError(StatusCode, String);

impl IntoResponse for JaegerError {
    fn into_response(self) -> Response {
        let body = json!({"data": null, "total": 0, "limit": 0, "offset": 0,
            "errors": [{"code": self.0.as_u16(), "msg": self.1}]});
        (self.0, axum::Json(body)).into_response()
    }
}

impl From<vigil_tsdb::Error> for JaegerError {
    fn from(error: vigil_tsdb::Error) -> Self {
        JaegerError(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
    }
}

fn bad(message: impl Into<String>) -> JaegerError {
    JaegerError(StatusCode::BAD_REQUEST, message.into())
}

fn envelope(data: Value) -> Response {
    let total = data.as_array().map_or(0, Vec::len);
    axum::Json(json!({"data": data, "total": total, "limit": 0, "offset": 0, "errors": null})).into_response()
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, JaegerError> + Send + 'static,
) -> Result<T, JaegerError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| JaegerError(StatusCode::INTERNAL_SERVER_ERROR, format!("query task failed: {e}")))?
}

async fn services(State(state): State<JaegerState>) -> Result<Response, JaegerError> {
    let catalog = blocking(move || Ok(state.spans.catalog(i64::MIN, i64::MAX)?)).await?;
    Ok(envelope(json!(catalog.operations.keys().collect::<Vec<_>>())))
}

/// Operations of a service as (name, kind), optionally only of one kind.
fn operation_list(
    state: &JaegerState,
    service: &str,
    kind: Option<&str>,
) -> Result<Vec<(String, String)>, JaegerError> {
    let catalog = state.spans.catalog(i64::MIN, i64::MAX)?;
    Ok(catalog
        .operations_of(service)
        .into_iter()
        .map(|(name, kind)| (name, kind_name(kind).to_owned()))
        .filter(|(_, k)| kind.is_none_or(|wanted| wanted.is_empty() || wanted == k))
        .collect())
}

/// Jaeger writes an unspecified kind as the empty string.
fn kind_name(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Unspecified => "",
        other => other.name(),
    }
}

async fn service_operations(
    State(state): State<JaegerState>,
    Path(service): Path<String>,
) -> Result<Response, JaegerError> {
    let operations = blocking(move || operation_list(&state, &service, None)).await?;
    let mut names: Vec<String> = operations.into_iter().map(|(name, _)| name).collect();
    names.dedup();
    Ok(envelope(json!(names)))
}

async fn operations(State(state): State<JaegerState>, RawQuery(query): RawQuery) -> Result<Response, JaegerError> {
    let params = Params::parse(query.as_deref(), b"");
    let service = params.get("service").ok_or_else(|| bad("parameter 'service' is required"))?.to_owned();
    let kind = params.get("spanKind").map(str::to_owned);
    let operations = blocking(move || operation_list(&state, &service, kind.as_deref())).await?;
    Ok(envelope(json!(
        operations.into_iter().map(|(name, kind)| json!({"name": name, "spanKind": kind})).collect::<Vec<_>>()
    )))
}

/// A search's conditions, parsed from v1 or v3 parameters.
#[derive(Debug, Default)]
struct Criteria {
    service: Option<String>,
    operation: Option<String>,
    tags: Vec<(String, String)>,
    kind: Option<String>,
    min_duration_ns: Option<i64>,
    max_duration_ns: Option<i64>,
    start_ns: i64,
    end_ns: i64,
    limit: usize,
}

impl Criteria {
    fn matches(&self, span: &Span) -> bool {
        self.service.as_deref().is_none_or(|s| span.service() == s)
            && self.operation.as_deref().is_none_or(|o| o.is_empty() || span.name == o)
            && self.kind.as_deref().is_none_or(|k| k.is_empty() || span.kind.name() == k)
            && self.tags.iter().all(|(key, value)| tag_matches(span, key, value))
    }

    /// Hits of the search, each trace whole, newest first.
    fn run(&self, store: &dyn SpanStore) -> Result<Vec<Vec<Span>>, JaegerError> {
        let span_matches = |span: &Span| self.matches(span);
        let search = SpanSearch {
            start_ns: self.start_ns,
            end_ns: self.end_ns,
            service: self.service.clone(),
            min_duration_ns: self.min_duration_ns,
            max_duration_ns: self.max_duration_ns,
            span_matches: &span_matches,
            trace_matches: &|_| true,
            limit: self.limit,
        };
        let mut traces = Vec::new();
        for hit in store.search(&search)? {
            let spans = store.trace(&hit.trace_id)?;
            if !spans.is_empty() {
                traces.push(spans);
            }
        }
        traces.sort_by_key(|spans| std::cmp::Reverse(spans.iter().map(|s| s.start_ns).min().unwrap_or(0)));
        Ok(traces)
    }
}

fn duration_param(params: &Params, name: &str) -> Result<Option<i64>, JaegerError> {
    match params.get(name) {
        None | Some("") => Ok(None),
        Some(raw) => parse_duration_ns(raw).map(Some).ok_or_else(|| bad(format!("invalid {name} {raw:?}"))),
    }
}

fn micros_param(params: &Params, name: &str) -> Result<Option<i64>, JaegerError> {
    match params.get(name) {
        None | Some("") => Ok(None),
        Some(raw) => raw
            .parse::<i64>()
            .map(|us| Some(us.saturating_mul(1000)))
            .map_err(|_| bad(format!("invalid {name} {raw:?}"))),
    }
}

fn limit_param(raw: Option<&str>) -> Result<usize, JaegerError> {
    match raw {
        None | Some("") | Some("0") => Ok(DEFAULT_LIMIT),
        Some(raw) => raw.parse().map_err(|_| bad(format!("invalid limit {raw:?}"))),
    }
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

fn v1_criteria(params: &Params) -> Result<Criteria, JaegerError> {
    let service =
        params.get("service").filter(|s| !s.is_empty()).ok_or_else(|| bad("parameter 'service' is required"))?;
    let mut tags = Vec::new();
    if let Some(raw) = params.get("tags").filter(|t| !t.is_empty()) {
        let map: BTreeMap<String, Value> =
            serde_json::from_str(raw).map_err(|e| bad(format!("malformed 'tags' parameter: {e}")))?;
        tags.extend(map.into_iter().map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned))));
    }
    for tag in params.all("tag") {
        let (key, value) = tag.split_once(':').ok_or_else(|| bad(format!("malformed 'tag' parameter {tag:?}")))?;
        tags.push((key.to_owned(), value.to_owned()));
    }
    let end_ns = micros_param(params, "end")?.unwrap_or(i64::MAX);
    let lookback = params.get("lookback").filter(|l| !l.is_empty() && *l != "custom").map(str::to_owned);
    let start_ns = match (micros_param(params, "start")?, lookback) {
        (Some(start), _) => start,
        (None, Some(lookback)) => {
            let span = parse_duration_ns(&lookback).ok_or_else(|| bad(format!("invalid lookback {lookback:?}")))?;
            end_ns.min(now_ns()).saturating_sub(span)
        }
        (None, None) => i64::MIN,
    };
    Ok(Criteria {
        service: Some(service.to_owned()),
        operation: params.get("operation").map(str::to_owned),
        tags,
        kind: params.get("spanKind").map(str::to_owned),
        min_duration_ns: duration_param(params, "minDuration")?,
        max_duration_ns: duration_param(params, "maxDuration")?,
        start_ns,
        end_ns,
        limit: limit_param(params.get("limit"))?,
    })
}

async fn search(State(state): State<JaegerState>, RawQuery(query): RawQuery) -> Result<Response, JaegerError> {
    let params = Params::parse(query.as_deref(), b"");
    let criteria = v1_criteria(&params)?;
    let traces = blocking(move || criteria.run(state.spans.as_ref())).await?;
    Ok(envelope(Value::Array(traces.iter().map(|spans| jaeger_trace(spans)).collect())))
}

fn trace_id(raw: &str) -> Result<[u8; 16], JaegerError> {
    parse_hex_id::<16>(raw).ok_or_else(|| bad(format!("malformed trace id {raw:?}")))
}

fn not_found() -> JaegerError {
    JaegerError(StatusCode::NOT_FOUND, "trace not found".into())
}

async fn trace(State(state): State<JaegerState>, Path(id): Path<String>) -> Result<Response, JaegerError> {
    let id = trace_id(&id)?;
    let spans = blocking(move || Ok(state.spans.trace(&id)?)).await?;
    if spans.is_empty() {
        return Err(not_found());
    }
    Ok(envelope(json!([jaeger_trace(&spans)])))
}

/// A Jaeger tag from an attribute.
fn tag(key: &str, value: &AttrValue) -> Value {
    match value {
        AttrValue::Str(s) => json!({"key": key, "type": "string", "value": s}),
        AttrValue::Bool(b) => json!({"key": key, "type": "bool", "value": b}),
        AttrValue::Int(i) => json!({"key": key, "type": "int64", "value": i}),
        AttrValue::Float(f) => json!({"key": key, "type": "float64", "value": f}),
        AttrValue::Bytes(bytes) => json!({"key": key, "type": "binary", "value": hex(bytes)}),
    }
}

fn tags(attributes: &[Attribute]) -> Vec<Value> {
    attributes.iter().map(|a| tag(&a.key, &a.value)).collect()
}

fn string_tag(key: &str, value: &str) -> Value {
    json!({"key": key, "type": "string", "value": value})
}

/// One trace in Jaeger's JSON: spans with tags, logs and references, and one process per resource.
pub(crate) fn jaeger_trace(spans: &[Span]) -> Value {
    let mut processes: Vec<&Resource> = Vec::new();
    let trace_id = spans.first().map(|s| hex(&s.trace_id)).unwrap_or_default();
    let json_spans: Vec<Value> = spans
        .iter()
        .map(|span| {
            let process = match processes
                .iter()
                .position(|p| p.service == span.resource.service && p.attributes == span.resource.attributes)
            {
                Some(index) => index,
                None => {
                    processes.push(&span.resource);
                    processes.len() - 1
                }
            };
            jaeger_span(span, &trace_id, format!("p{}", process + 1))
        })
        .collect();
    let processes: serde_json::Map<String, Value> = processes
        .iter()
        .enumerate()
        .map(|(i, resource)| {
            let tags: Vec<Value> =
                resource.attributes.iter().filter(|a| a.key != "service.name").map(|a| tag(&a.key, &a.value)).collect();
            (format!("p{}", i + 1), json!({"serviceName": resource.service, "tags": tags}))
        })
        .collect();
    json!({"traceID": trace_id, "spans": json_spans, "processes": processes, "warnings": null})
}

fn jaeger_span(span: &Span, trace_id: &str, process: String) -> Value {
    let mut references = Vec::new();
    if let Some(parent) = span.parent_span_id {
        references.push(json!({"refType": "CHILD_OF", "traceID": trace_id, "spanID": hex(&parent)}));
    }
    for link in &span.links {
        references
            .push(json!({"refType": "FOLLOWS_FROM", "traceID": hex(&link.trace_id), "spanID": hex(&link.span_id)}));
    }
    let mut span_tags = tags(&span.attributes);
    if span.kind != SpanKind::Unspecified {
        span_tags.push(string_tag("span.kind", span.kind.name()));
    }
    for (key, value) in
        [("otel.scope.name", &span.resource.scope_name), ("otel.scope.version", &span.resource.scope_version)]
    {
        if !value.is_empty() {
            span_tags.push(string_tag(key, value));
        }
    }
    match span.status {
        SpanStatus::Unset => {}
        SpanStatus::Ok => span_tags.push(string_tag("otel.status_code", "OK")),
        SpanStatus::Error => {
            span_tags.push(string_tag("otel.status_code", "ERROR"));
            span_tags.push(json!({"key": "error", "type": "bool", "value": true}));
        }
    }
    if !span.status_message.is_empty() {
        span_tags.push(string_tag("otel.status_description", &span.status_message));
    }
    let logs: Vec<Value> = span
        .events
        .iter()
        .map(|event| {
            let mut fields = vec![string_tag("event", &event.name)];
            fields.extend(tags(&event.attributes));
            json!({"timestamp": event.time_ns / 1000, "fields": fields})
        })
        .collect();
    json!({
        "traceID": trace_id,
        "spanID": hex(&span.span_id),
        "flags": span.flags,
        "operationName": span.name,
        "references": references,
        "startTime": span.start_ns / 1000,
        "duration": span.duration_ns() / 1000,
        "tags": span_tags,
        "logs": logs,
        "processID": process,
        "warnings": null,
    })
}

async fn dependencies(State(state): State<JaegerState>, RawQuery(query): RawQuery) -> Result<Response, JaegerError> {
    let params = Params::parse(query.as_deref(), b"");
    let millis = |name: &str, default: i64| -> Result<i64, JaegerError> {
        match params.get(name) {
            None | Some("") => Ok(default),
            Some(raw) => raw.parse().map_err(|_| bad(format!("invalid {name} {raw:?}"))),
        }
    };
    let end_ms = millis("endTs", now_ns() / 1_000_000)?;
    let lookback_ms = millis("lookback", 24 * 3600 * 1000)?;
    let links = blocking(move || dependency_links(state.metrics.as_ref(), end_ms - lookback_ms, end_ms)).await?;
    let data: Vec<Value> = links
        .into_iter()
        .map(|((parent, child), calls)| json!({"parent": parent, "child": child, "callCount": calls}))
        .collect();
    Ok(envelope(Value::Array(data)))
}

/// Calls between services in `[start_ms, end_ms]`: the increase of the service-graph request counters
/// (resets counted), leaving out the virtual `user` client.
fn dependency_links(
    metrics: &dyn Queryable,
    start_ms: i64,
    end_ms: i64,
) -> Result<BTreeMap<(String, String), u64>, JaegerError> {
    let matcher = Matcher::new(MatchOp::Equal, METRIC_NAME, GRAPH_REQUESTS)?;
    let mut links: HashMap<(String, String), f64> = HashMap::new();
    for series in metrics.select(&[matcher], start_ms.saturating_sub(3_600_000), end_ms)? {
        let (Some(client), Some(server)) = (series.labels.get("client"), series.labels.get("server")) else {
            continue;
        };
        if client == "user" || client.is_empty() || server.is_empty() {
            continue;
        }
        let samples = &series.samples;
        let mut previous = samples.iter().rev().find(|s| s.t < start_ms).map_or(0.0, |s| s.v);
        let mut increase = 0.0;
        for sample in samples.iter().filter(|s| s.t >= start_ms && s.t <= end_ms && !s.v.is_nan()) {
            increase += if sample.v >= previous { sample.v - previous } else { sample.v };
            previous = sample.v;
        }
        *links.entry((client.to_owned(), server.to_owned())).or_default() += increase;
    }
    Ok(links.into_iter().filter(|(_, calls)| *calls > 0.0).map(|(edge, calls)| (edge, calls.round() as u64)).collect())
}

// ---- /api/v3 ----

async fn v3_services(State(state): State<JaegerState>) -> Result<Response, JaegerError> {
    let catalog = blocking(move || Ok(state.spans.catalog(i64::MIN, i64::MAX)?)).await?;
    Ok(axum::Json(json!({"services": catalog.operations.keys().collect::<Vec<_>>()})).into_response())
}

async fn v3_operations(State(state): State<JaegerState>, RawQuery(query): RawQuery) -> Result<Response, JaegerError> {
    let params = Params::parse(query.as_deref(), b"");
    let service = params.get("service").ok_or_else(|| bad("parameter 'service' is required"))?.to_owned();
    let kind = params.get("spanKind").map(str::to_owned);
    let operations = blocking(move || operation_list(&state, &service, kind.as_deref())).await?;
    let operations: Vec<Value> =
        operations.into_iter().map(|(name, kind)| json!({"name": name, "spanKind": kind})).collect();
    Ok(axum::Json(json!({"operations": operations})).into_response())
}

/// A v3 parameter in snake_case or camelCase (`query.service_name` or `query.serviceName`).
fn v3_param<'a>(params: &'a Params, snake: &str) -> Option<&'a str> {
    let camel: String = {
        let mut out = String::new();
        let mut upper = false;
        for c in snake.chars() {
            if c == '_' {
                upper = true;
            } else if upper {
                out.extend(c.to_uppercase());
                upper = false;
            } else {
                out.push(c);
            }
        }
        out
    };
    params.get(snake).or_else(|| params.get(&camel)).filter(|v| !v.is_empty())
}

fn rfc3339_ns(raw: &str) -> Result<i64, JaegerError> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| bad(format!("invalid time {raw:?}; RFC 3339 expected")))
}

fn v3_criteria(params: &Params) -> Result<Criteria, JaegerError> {
    let required = |name: &str| v3_param(params, name).ok_or_else(|| bad(format!("parameter '{name}' is required")));
    let start_ns = rfc3339_ns(required("query.start_time_min")?)?;
    let end_ns = rfc3339_ns(required("query.start_time_max")?)?;
    let mut tags = Vec::new();
    if let Some(raw) = v3_param(params, "query.attributes") {
        let map: BTreeMap<String, Value> =
            serde_json::from_str(raw).map_err(|e| bad(format!("malformed query.attributes: {e}")))?;
        tags.extend(map.into_iter().map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned))));
    }
    let duration = |name: &str| -> Result<Option<i64>, JaegerError> {
        v3_param(params, name)
            .map(|raw| parse_duration_ns(raw).ok_or_else(|| bad(format!("invalid {name} {raw:?}"))))
            .transpose()
    };
    Ok(Criteria {
        service: v3_param(params, "query.service_name").map(str::to_owned),
        operation: v3_param(params, "query.operation_name").map(str::to_owned),
        tags,
        kind: None,
        min_duration_ns: duration("query.duration_min")?,
        max_duration_ns: duration("query.duration_max")?,
        start_ns,
        end_ns,
        limit: limit_param(v3_param(params, "query.search_depth"))?,
    })
}

async fn v3_search(State(state): State<JaegerState>, RawQuery(query): RawQuery) -> Result<Response, JaegerError> {
    let params = Params::parse(query.as_deref(), b"");
    let criteria = v3_criteria(&params)?;
    let traces = blocking(move || criteria.run(state.spans.as_ref())).await?;
    if traces.is_empty() {
        return Err(not_found());
    }
    let spans: Vec<Span> = traces.into_iter().flatten().collect();
    Ok(axum::Json(json!({"result": {"resourceSpans": resource_spans_json(&spans)}})).into_response())
}

async fn v3_trace(State(state): State<JaegerState>, Path(id): Path<String>) -> Result<Response, JaegerError> {
    let id = trace_id(&id)?;
    let spans = blocking(move || Ok(state.spans.trace(&id)?)).await?;
    if spans.is_empty() {
        return Err(not_found());
    }
    Ok(axum::Json(json!({"result": {"resourceSpans": resource_spans_json(&spans)}})).into_response())
}
