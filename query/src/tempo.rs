//! Tempo's query API under `/tempo` (Grafana's Tempo datasource URL is `http://host:port/tempo`):
//! `echo`, `status/buildinfo`, trace by id (v1 and v2, protobuf or JSON), search by TraceQL
//! ([`crate::traceql`]) or logfmt `tags`, and the tag name and value pickers (v1 and v2).
//!
//! Search runs the query against the store (spans matching any selector, the service pinned when the
//! query names one), then checks each hit again against the whole trace, which trace intrinsics
//! (`rootServiceName`, `traceDuration`) and `minDuration`/`maxDuration` (trace durations, as in Tempo) need.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;
use serde_json::{Value, json};
use vigil_tsdb::traces::{
    Catalog, Span, SpanSearch, SpanStore, StatusCode as SpanStatus, attribute, hex, parse_hex_id,
};

use crate::BuildInfo;
use crate::params::Params;
use crate::traceql::{self, KIND_WORDS, STATUS_WORDS, SpansetExpr, TraceFacts, parse_duration_ns};
use crate::traces::{any_value, logfmt_pairs, resource_spans, resource_spans_json, tag_matches};

/// Traces a search returns when the request names no limit.
const DEFAULT_LIMIT: usize = 20;
/// Spans shown per span set when the request names no `spss`.
const DEFAULT_SPSS: usize = 3;
/// Intrinsic tags the v2 tag picker offers.
const INTRINSICS: [&str; 8] =
    ["duration", "kind", "name", "rootName", "rootServiceName", "status", "statusMessage", "traceDuration"];

/// `tempopb.Trace`: the same wire form as OTLP's `TracesData`.
#[derive(Clone, PartialEq, Message)]
pub struct TempoTrace {
    /// Spans by resource.
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

/// `tempopb.TraceByIDResponse` (without its metrics).
#[derive(Clone, PartialEq, Message)]
pub struct TraceByIdResponse {
    /// The trace.
    #[prost(message, optional, tag = "1")]
    pub trace: Option<TempoTrace>,
    /// 0 complete, 1 partial.
    #[prost(int32, tag = "3")]
    pub status: i32,
    /// Why partial.
    #[prost(string, tag = "4")]
    pub message: String,
}

#[derive(Clone)]
struct TempoState {
    spans: Arc<dyn SpanStore>,
    build: BuildInfo,
}

/// Tempo's routes over a span store.
pub fn routes(spans: Arc<dyn SpanStore>, build: BuildInfo) -> Router {
    Router::new()
        .route("/tempo/api/echo", get(|| async { "echo" }))
        .route("/tempo/api/status/buildinfo", get(buildinfo))
        .route("/tempo/api/traces/{id}", get(trace_v1))
        .route("/tempo/api/v2/traces/{id}", get(trace_v2))
        .route("/tempo/api/search", get(search))
        .route("/tempo/api/search/tags", get(tags_v1))
        .route("/tempo/api/v2/search/tags", get(tags_v2))
        .route("/tempo/api/search/tag/{name}/values", get(values_v1))
        .route("/tempo/api/v2/search/tag/{name}/values", get(values_v2))
        .with_state(TempoState { spans, build })
}

/// A Tempo error: plain text.
struct TempoError(StatusCode, String);

impl IntoResponse for TempoError {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

impl From<vigil_tsdb::Error> for TempoError {
    fn from(error: vigil_tsdb::Error) -> Self {
        TempoError(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
    }
}

impl From<crate::QueryError> for TempoError {
    fn from(error: crate::QueryError) -> Self {
        TempoError(StatusCode::BAD_REQUEST, error.to_string())
    }
}

fn bad(message: impl Into<String>) -> TempoError {
    TempoError(StatusCode::BAD_REQUEST, message.into())
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, TempoError> + Send + 'static,
) -> Result<T, TempoError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| TempoError(StatusCode::INTERNAL_SERVER_ERROR, format!("query task failed: {e}")))?
}

async fn buildinfo(State(state): State<TempoState>) -> Response {
    axum::Json(json!({"version": state.build.version, "revision": state.build.revision, "branch": "",
        "buildDate": "", "buildUser": "", "goVersion": ""}))
    .into_response()
}

fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("application/protobuf"))
}

fn protobuf(bytes: Vec<u8>) -> Response {
    let mut response = bytes.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/protobuf"));
    response
}

async fn load_trace(state: TempoState, raw_id: String) -> Result<Vec<Span>, TempoError> {
    let id = parse_hex_id::<16>(&raw_id).ok_or_else(|| bad(format!("invalid trace id {raw_id:?}")))?;
    let spans = blocking(move || Ok(state.spans.trace(&id)?)).await?;
    if spans.is_empty() {
        return Err(TempoError(StatusCode::NOT_FOUND, format!("trace not found: {raw_id}")));
    }
    Ok(spans)
}

async fn trace_v1(
    State(state): State<TempoState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, TempoError> {
    let spans = load_trace(state, id).await?;
    if wants_protobuf(&headers) {
        return Ok(protobuf(TempoTrace { resource_spans: resource_spans(&spans) }.encode_to_vec()));
    }
    Ok(axum::Json(json!({"batches": resource_spans_json(&spans)})).into_response())
}

async fn trace_v2(
    State(state): State<TempoState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, TempoError> {
    let spans = load_trace(state, id).await?;
    if wants_protobuf(&headers) {
        let trace = TempoTrace { resource_spans: resource_spans(&spans) };
        return Ok(protobuf(
            TraceByIdResponse { trace: Some(trace), status: 0, message: String::new() }.encode_to_vec(),
        ));
    }
    Ok(axum::Json(json!({"trace": {"resourceSpans": resource_spans_json(&spans)}})).into_response())
}

/// What a search asks: a TraceQL query, or logfmt tags that must all hold on one span.
enum Query {
    TraceQl(SpansetExpr),
    Tags(Vec<(String, String)>),
}

impl Query {
    fn span_may_match(&self, span: &Span) -> bool {
        match self {
            Query::TraceQl(expr) => expr.span_may_match(span, None),
            Query::Tags(tags) => tags.iter().all(|(k, v)| tag_matches(span, k, v)),
        }
    }

    /// The spans of a whole trace's match, or `None`.
    fn matched<'a>(&self, spans: &'a [Span], facts: &TraceFacts) -> Option<Vec<&'a Span>> {
        match self {
            Query::TraceQl(expr) => expr.evaluate(spans, Some(facts)),
            Query::Tags(_) => {
                let matched: Vec<&Span> = spans.iter().filter(|s| self.span_may_match(s)).collect();
                (!matched.is_empty()).then_some(matched)
            }
        }
    }

    fn service(&self) -> Option<String> {
        match self {
            Query::TraceQl(expr) => expr.required_service(),
            Query::Tags(tags) => tags.iter().find(|(k, _)| k == "service.name").map(|(_, v)| v.clone()),
        }
    }

    fn attribute_keys(&self) -> Vec<String> {
        match self {
            Query::TraceQl(expr) => expr.attribute_keys(),
            Query::Tags(tags) => tags.iter().map(|(k, _)| k.clone()).collect(),
        }
    }
}

/// Tempo's `start`/`end`: Unix seconds.
fn seconds_ns(params: &Params, name: &str) -> Result<Option<i64>, TempoError> {
    match params.get(name) {
        None | Some("") => Ok(None),
        Some(raw) => raw
            .parse::<f64>()
            .map(|s| Some((s * 1e9) as i64))
            .map_err(|_| bad(format!("invalid {name} {raw:?}; Unix seconds expected"))),
    }
}

fn count_param(params: &Params, name: &str, default: usize) -> Result<usize, TempoError> {
    match params.get(name) {
        None | Some("") | Some("0") => Ok(default),
        Some(raw) => raw.parse().map_err(|_| bad(format!("invalid {name} {raw:?}"))),
    }
}

struct SearchRequest {
    query: Query,
    start_ns: i64,
    end_ns: i64,
    min_trace_ns: Option<i64>,
    max_trace_ns: Option<i64>,
    limit: usize,
    spans_per_set: usize,
}

fn search_request(params: &Params) -> Result<SearchRequest, TempoError> {
    let query = match (params.get("q").filter(|q| !q.trim().is_empty()), params.get("tags")) {
        (Some(q), _) => Query::TraceQl(traceql::parse(q)?),
        (None, Some(tags)) => Query::Tags(logfmt_pairs(tags).map_err(bad)?),
        (None, None) => Query::TraceQl(SpansetExpr::Selector(None)),
    };
    let duration = |name: &str| -> Result<Option<i64>, TempoError> {
        match params.get(name) {
            None | Some("") => Ok(None),
            Some(raw) => parse_duration_ns(raw).map(Some).ok_or_else(|| bad(format!("invalid {name} {raw:?}"))),
        }
    };
    Ok(SearchRequest {
        query,
        start_ns: seconds_ns(params, "start")?.unwrap_or(i64::MIN),
        end_ns: seconds_ns(params, "end")?.unwrap_or(i64::MAX),
        min_trace_ns: duration("minDuration")?,
        max_trace_ns: duration("maxDuration")?,
        limit: count_param(params, "limit", DEFAULT_LIMIT)?,
        spans_per_set: count_param(params, "spss", DEFAULT_SPSS)?,
    })
}

async fn search(State(state): State<TempoState>, RawQuery(query): RawQuery) -> Result<Response, TempoError> {
    let params = Params::parse(query.as_deref(), b"");
    let request = search_request(&params)?;
    let (traces, inspected) = blocking(move || run_search(state.spans.as_ref(), &request)).await?;
    Ok(axum::Json(json!({"traces": traces,
        "metrics": {"inspectedTraces": inspected, "inspectedBytes": "0", "completedJobs": 1, "totalJobs": 1}}))
    .into_response())
}

fn run_search(store: &dyn SpanStore, request: &SearchRequest) -> Result<(Vec<Value>, usize), TempoError> {
    let query = &request.query;
    let span_matches = |span: &Span| query.span_may_match(span);
    let trace_matches = |spans: &[Span]| match query {
        Query::TraceQl(expr) => expr.evaluate(spans, None).is_some(),
        Query::Tags(_) => true,
    };
    let post_filtered = request.min_trace_ns.is_some() || request.max_trace_ns.is_some();
    let search = SpanSearch {
        start_ns: request.start_ns,
        end_ns: request.end_ns,
        service: query.service(),
        min_duration_ns: None,
        max_duration_ns: None,
        span_matches: &span_matches,
        trace_matches: &trace_matches,
        limit: if post_filtered { request.limit * 4 } else { request.limit },
    };
    let hits = store.search(&search)?;
    let inspected = hits.len();
    let keys = query.attribute_keys();
    let mut out = Vec::new();
    for hit in hits {
        if out.len() >= request.limit {
            break;
        }
        let spans = store.trace(&hit.trace_id)?;
        let facts = TraceFacts::of(&spans);
        let in_bounds = request.min_trace_ns.is_none_or(|min| facts.duration_ns >= min)
            && request.max_trace_ns.is_none_or(|max| facts.duration_ns <= max);
        let Some(matched) = query.matched(&spans, &facts).filter(|_| in_bounds) else {
            continue;
        };
        out.push(trace_summary(&spans, &facts, &matched, &keys, request.spans_per_set));
    }
    Ok((out, inspected))
}

/// One search result in Tempo's shape.
fn trace_summary(spans: &[Span], facts: &TraceFacts, matched: &[&Span], keys: &[String], spss: usize) -> Value {
    let start = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let shown: Vec<Value> = matched
        .iter()
        .take(spss)
        .map(|span| {
            let attributes: Vec<Value> = keys
                .iter()
                .filter_map(|key| {
                    let value =
                        attribute(&span.attributes, key).or_else(|| attribute(&span.resource.attributes, key))?;
                    Some(json!({"key": key, "value": serde_json::to_value(any_value(value)).expect("serializes")}))
                })
                .collect();
            json!({"spanID": hex(&span.span_id), "name": span.name, "startTimeUnixNano": span.start_ns.to_string(),
                "durationNanos": span.duration_ns().to_string(), "attributes": attributes})
        })
        .collect();
    let span_set = json!({"spans": shown, "matched": matched.len()});
    let mut stats: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for span in spans {
        let entry = stats.entry(span.service()).or_default();
        entry.0 += 1;
        if span.status == SpanStatus::Error {
            entry.1 += 1;
        }
    }
    let service_stats: serde_json::Map<String, Value> = stats
        .into_iter()
        .map(|(service, (count, errors))| {
            let stat = if errors > 0 {
                json!({"spanCount": count, "errorCount": errors})
            } else {
                json!({"spanCount": count})
            };
            (service.to_owned(), stat)
        })
        .collect();
    json!({
        "traceID": hex(&spans[0].trace_id),
        "rootServiceName": facts.root_service,
        "rootTraceName": facts.root_name,
        "startTimeUnixNano": start.to_string(),
        "durationMs": facts.duration_ns / 1_000_000,
        "spanSet": span_set,
        "spanSets": [span_set],
        "serviceStats": service_stats,
    })
}

async fn catalog(state: TempoState, params: &Params) -> Result<Catalog, TempoError> {
    let start = seconds_ns(params, "start")?.unwrap_or(i64::MIN);
    let end = seconds_ns(params, "end")?.unwrap_or(i64::MAX);
    blocking(move || Ok(state.spans.catalog(start, end)?)).await
}

async fn tags_v1(State(state): State<TempoState>, RawQuery(query): RawQuery) -> Result<Response, TempoError> {
    let params = Params::parse(query.as_deref(), b"");
    let catalog = catalog(state, &params).await?;
    let scope = params.get("scope").unwrap_or("");
    let mut names: Vec<&String> = Vec::new();
    if matches!(scope, "" | "all" | "span") {
        names.extend(catalog.span_tags.keys());
    }
    if matches!(scope, "" | "all" | "resource") {
        names.extend(catalog.resource_tags.keys());
    }
    names.sort();
    names.dedup();
    Ok(axum::Json(json!({"tagNames": names, "metrics": {}})).into_response())
}

async fn tags_v2(State(state): State<TempoState>, RawQuery(query): RawQuery) -> Result<Response, TempoError> {
    let params = Params::parse(query.as_deref(), b"");
    let catalog = catalog(state, &params).await?;
    let scope = params.get("scope").unwrap_or("");
    let mut scopes = Vec::new();
    for (name, tags) in
        [("resource", catalog.resource_tags.keys().collect::<Vec<_>>()), ("span", catalog.span_tags.keys().collect())]
    {
        if matches!(scope, "" | "all") || scope == name {
            scopes.push(json!({"name": name, "tags": tags}));
        }
    }
    if matches!(scope, "" | "all" | "intrinsic") {
        scopes.push(json!({"name": "intrinsic", "tags": INTRINSICS}));
    }
    Ok(axum::Json(json!({"scopes": scopes, "metrics": {}})).into_response())
}

/// Values of a tag: intrinsics from the catalog's names and fixed words, attributes from its tags.
/// Returns (type, value) pairs; attribute types are read off the text.
fn tag_values(catalog: &Catalog, name: &str) -> Vec<(&'static str, String)> {
    let (scope, key) = match name.split_once('.') {
        Some(("span", key)) => ("span", key),
        Some(("resource", key)) => ("resource", key),
        Some(("", key)) => ("any", key),
        _ => ("intrinsic", name.trim_start_matches("span:").trim_start_matches("trace:")),
    };
    let keyword = |words: &[&str]| words.iter().map(|w| ("keyword", (*w).to_owned())).collect();
    let typed = |values: Vec<&String>| values.into_iter().map(|v| (value_type(v), v.clone())).collect();
    match (scope, key) {
        ("intrinsic", "status") => keyword(&STATUS_WORDS),
        ("intrinsic", "kind") => keyword(&KIND_WORDS),
        ("intrinsic", "name" | "rootName") => {
            let mut names: Vec<String> = catalog.operations.values().flat_map(|ops| ops.keys().cloned()).collect();
            names.sort();
            names.dedup();
            names.into_iter().map(|n| ("string", n)).collect()
        }
        ("intrinsic", "rootServiceName" | "rootService") => {
            catalog.operations.keys().map(|s| ("string", s.clone())).collect()
        }
        ("intrinsic", other) => {
            typed(catalog.span_tags.get(other).into_iter().chain(catalog.resource_tags.get(other)).flatten().collect())
        }
        (scope, key) => {
            let mut values: Vec<&String> = Vec::new();
            if scope != "resource" {
                values.extend(catalog.span_tags.get(key).into_iter().flatten());
            }
            if scope != "span" {
                values.extend(catalog.resource_tags.get(key).into_iter().flatten());
            }
            values.sort();
            values.dedup();
            typed(values)
        }
    }
}

fn value_type(text: &str) -> &'static str {
    if text.parse::<i64>().is_ok() {
        "int"
    } else if text.parse::<f64>().is_ok() {
        "float"
    } else if text == "true" || text == "false" {
        "bool"
    } else {
        "string"
    }
}

async fn values_v1(
    State(state): State<TempoState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, TempoError> {
    let params = Params::parse(query.as_deref(), b"");
    let catalog = catalog(state, &params).await?;
    // v1 names are unscoped: `service.name`, `http.method`.
    let scoped = if INTRINSICS.contains(&name.as_str()) { name } else { format!(".{name}") };
    let values: Vec<String> = tag_values(&catalog, &scoped).into_iter().map(|(_, v)| v).collect();
    Ok(axum::Json(json!({"tagValues": values, "metrics": {}})).into_response())
}

async fn values_v2(
    State(state): State<TempoState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, TempoError> {
    let params = Params::parse(query.as_deref(), b"");
    let catalog = catalog(state, &params).await?;
    let values: Vec<Value> =
        tag_values(&catalog, &name).into_iter().map(|(kind, value)| json!({"type": kind, "value": value})).collect();
    Ok(axum::Json(json!({"tagValues": values, "metrics": {}})).into_response())
}
