//! The Prometheus HTTP API (`/api/v1/...`) with Prometheus's JSON shapes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use vigil_tsdb::{Labels, Matcher, Queryable};

use crate::params::{MAX_TIME_MS, MIN_TIME_MS, Params};
use crate::promql::{self, Engine, InstantSample, QueryControl, RangeSeries, Value as PromValue};
use crate::selector::parse_selector;
use crate::{BuildInfo, QueryError};

/// Most points a range query may return per series, as in Prometheus.
const MAX_POINTS_PER_SERIES: i64 = 11_000;

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    storage: Arc<dyn Queryable>,
    build: BuildInfo,
    engine: Arc<Engine>,
    /// Bounds the queries evaluated at once.
    slots: Arc<tokio::sync::Semaphore>,
}

/// The Prometheus API routes over `storage`, evaluating PromQL with `engine`, at most
/// `max_concurrency` queries at once.
pub fn routes(storage: Arc<dyn Queryable>, build: BuildInfo, engine: Engine, max_concurrency: usize) -> Router {
    let slots = Arc::new(tokio::sync::Semaphore::new(max_concurrency.max(1)));
    let state = ApiState { storage, build, engine: Arc::new(engine), slots };
    Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/format_query", get(format_query).post(format_query))
        .route("/api/v1/metadata", get(metadata))
        .route("/api/v1/status/tsdb", get(tsdb_status))
        .route("/api/v1/query_exemplars", get(query_exemplars).post(query_exemplars))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .with_state(state)
}

fn success(data: Value) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

/// A success envelope with the query's `warnings` and `infos`, each present only when not empty.
fn success_annotated(data: Value, annotations: &promql::Annotations) -> Response {
    let mut body = json!({"status": "success", "data": data});
    if !annotations.warnings.is_empty() {
        body["warnings"] = json!(annotations.warnings);
    }
    if !annotations.infos.is_empty() {
        body["infos"] = json!(annotations.infos);
    }
    axum::Json(body).into_response()
}

/// The `series` response written straight to text: Grafana asks for up to 40,000 label sets, and building
/// a JSON value tree for each costs more than the lookup.
fn series_response(all: &[Labels]) -> Response {
    let mut out = String::with_capacity(all.len() * 128 + 64);
    out.push_str(r#"{"status":"success","data":["#);
    for (i, labels) in all.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_labels(&mut out, labels);
    }
    out.push_str("]}");
    ([(axum::http::header::CONTENT_TYPE, "application/json")], out).into_response()
}

/// A range-query response written straight to text: thousands of points, where a JSON value tree per
/// point costs more than evaluating a light query.
fn matrix_response(series: &[RangeSeries], annotations: &promql::Annotations) -> Response {
    let points: usize = series.iter().map(|s| s.samples.len()).sum();
    let mut out = String::with_capacity(96 + series.len() * 128 + points * 32);
    out.push_str(r#"{"status":"success","data":{"resultType":"matrix","result":["#);
    for (i, s) in series.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"metric":"#);
        push_labels(&mut out, &s.labels);
        out.push_str(r#","values":["#);
        for (j, point) in s.samples.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push('[');
            push_time(&mut out, point.t);
            out.push_str(",\"");
            out.push_str(&promql::format_value(point.v));
            out.push_str("\"]");
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    for (key, messages) in [("warnings", &annotations.warnings), ("infos", &annotations.infos)] {
        if !messages.is_empty() {
            out.push_str(&format!(",\"{key}\":"));
            out.push_str(&serde_json::to_string(messages).expect("strings serialise"));
        }
    }
    out.push('}');
    ([(axum::http::header::CONTENT_TYPE, "application/json")], out).into_response()
}

fn push_labels(out: &mut String, labels: &Labels) {
    out.push('{');
    for (j, label) in labels.iter().enumerate() {
        if j > 0 {
            out.push(',');
        }
        push_json_string(out, &label.name);
        out.push(':');
        push_json_string(out, &label.value);
    }
    out.push('}');
}

/// Unix seconds as [`json_time`] writes them.
fn push_time(out: &mut String, ms: i64) {
    use std::fmt::Write;
    if ms % 1000 == 0 {
        let _ = write!(out, "{}", ms / 1000);
    } else {
        let _ = write!(out, "{}", ms as f64 / 1000.0);
    }
}

fn push_json_string(out: &mut String, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(text);
        out.push('"');
        return;
    }
    out.push_str(&serde_json::to_string(text).expect("strings serialise"));
}

fn labels_json(labels: &Labels) -> Value {
    let map: Map<String, Value> =
        labels.iter().map(|l| (l.name.to_string(), Value::String(l.value.to_string()))).collect();
    Value::Object(map)
}

/// The `match[]` selectors as matcher alternatives; an empty list when none was given.
fn match_params(params: &Params) -> Result<Vec<Vec<Matcher>>, QueryError> {
    let mut alternatives = Vec::new();
    for selector in params.all("match[]") {
        alternatives.extend(parse_selector(selector)?);
    }
    Ok(alternatives)
}

/// Runs `lookup` once per alternative (or once with no matchers), merging sorted, deduplicated results.
fn merged(
    alternatives: &[Vec<Matcher>],
    limit: Option<usize>,
    lookup: impl Fn(&[Matcher]) -> Result<Vec<String>, vigil_tsdb::Error>,
) -> Result<Vec<String>, QueryError> {
    let mut values = if alternatives.is_empty() {
        lookup(&[])?
    } else {
        let mut all = Vec::new();
        for matchers in alternatives {
            all.extend(lookup(matchers)?);
        }
        all.sort_unstable();
        all.dedup();
        all
    };
    if let Some(limit) = limit {
        values.truncate(limit);
    }
    Ok(values)
}

async fn labels(State(state): State<ApiState>, RawQuery(query): RawQuery, body: Bytes) -> Result<Response, QueryError> {
    let params = Params::parse(query.as_deref(), &body);
    let alternatives = match_params(&params)?;
    let limit = params.limit()?;
    let names = merged(&alternatives, limit, |matchers| state.storage.label_names(matchers, limit))?;
    Ok(success(json!(names)))
}

async fn label_values(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, QueryError> {
    let params = Params::parse(query.as_deref(), &[]);
    let alternatives = match_params(&params)?;
    let limit = params.limit()?;
    let values = merged(&alternatives, limit, |matchers| state.storage.label_values(&name, matchers, limit))?;
    Ok(success(json!(values)))
}

async fn series(State(state): State<ApiState>, RawQuery(query): RawQuery, body: Bytes) -> Result<Response, QueryError> {
    let params = Params::parse(query.as_deref(), &body);
    let alternatives = match_params(&params)?;
    if alternatives.is_empty() {
        return Err(QueryError::BadData("no match[] parameter provided".into()));
    }
    // Validated for the error message even though the head holds only recent data for now.
    params.time_ms("start", MIN_TIME_MS)?;
    params.time_ms("end", MAX_TIME_MS)?;
    let limit = params.limit()?;
    let mut all: Vec<Labels> = Vec::new();
    for matchers in &alternatives {
        all.extend(state.storage.series_labels(matchers, limit)?);
    }
    all.sort();
    all.dedup();
    if let Some(limit) = limit {
        all.truncate(limit);
    }
    Ok(series_response(&all))
}

/// Sets the cancel flag when dropped: a handler future dropped because the client left cancels its query.
struct CancelOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn control(params: &Params) -> Result<QueryControl, QueryError> {
    let mut control = QueryControl::default();
    if let Some(raw) = params.get("timeout").filter(|t| !t.is_empty()) {
        let seconds = crate::parse_duration_seconds(raw)
            .map_err(|e| QueryError::BadData(format!("invalid parameter \"timeout\": {e}")))?;
        control.timeout = Some(Duration::from_secs_f64(seconds));
    }
    if let Some(raw) = params.get("lookback_delta").filter(|t| !t.is_empty()) {
        let seconds = crate::parse_duration_seconds(raw)
            .map_err(|e| QueryError::BadData(format!("invalid parameter \"lookback_delta\": {e}")))?;
        control.lookback_ms = Some((seconds * 1000.0) as i64);
    }
    Ok(control)
}

fn query_text(params: &Params) -> Result<String, QueryError> {
    match params.get("query") {
        Some(text) if !text.trim().is_empty() => Ok(text.to_owned()),
        _ => Err(QueryError::BadData("invalid parameter \"query\": query must not be empty".into())),
    }
}

/// Runs blocking evaluation on the blocking pool, holding a concurrency slot, cancelling if dropped.
async fn evaluate<T: Send + 'static>(
    state: &ApiState,
    control: QueryControl,
    work: impl FnOnce(&Engine, &dyn Queryable, &QueryControl) -> Result<T, QueryError> + Send + 'static,
) -> Result<T, QueryError> {
    let _slot = state.slots.acquire().await.map_err(|e| QueryError::Internal(e.to_string()))?;
    let _cancel_guard = CancelOnDrop(control.cancel.clone());
    let engine = state.engine.clone();
    let storage = state.storage.clone();
    tokio::task::spawn_blocking(move || work(&engine, storage.as_ref(), &control))
        .await
        .map_err(|e| QueryError::Internal(format!("query task failed: {e}")))?
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A time as Prometheus writes it: Unix seconds, a JSON number without a fraction when whole.
fn json_time(ms: i64) -> Value {
    if ms % 1000 == 0 {
        return json!(ms / 1000);
    }
    json!(ms as f64 / 1000.0)
}

fn json_point(ms: i64, value: f64) -> Value {
    json!([json_time(ms), promql::format_value(value)])
}

fn vector_json(samples: &[InstantSample], t: i64) -> Value {
    Value::Array(
        samples.iter().map(|s| json!({"metric": labels_json(&s.labels), "value": json_point(t, s.v)})).collect(),
    )
}

async fn query(State(state): State<ApiState>, RawQuery(raw): RawQuery, body: Bytes) -> Result<Response, QueryError> {
    let params = Params::parse(raw.as_deref(), &body);
    let text = query_text(&params)?;
    let time = params.time_ms("time", now_ms())?;
    let limit = params.limit()?;
    let expr = promql::parse(&text)?;
    let control = control(&params)?;
    let outcome =
        evaluate(&state, control, move |engine, storage, control| engine.instant(storage, &expr, time, control))
            .await?;
    let data = match outcome.value {
        PromValue::Scalar(v) => json!({"resultType": "scalar", "result": json_point(time, v)}),
        PromValue::String(s) => json!({"resultType": "string", "result": [json_time(time), s]}),
        PromValue::Vector(mut samples) => {
            if let Some(limit) = limit {
                samples.truncate(limit);
            }
            json!({"resultType": "vector", "result": vector_json(&samples, time)})
        }
        PromValue::Matrix(mut series) => {
            if let Some(limit) = limit {
                series.truncate(limit);
            }
            return Ok(matrix_response(&series, &outcome.annotations));
        }
    };
    Ok(success_annotated(data, &outcome.annotations))
}

async fn query_range(
    State(state): State<ApiState>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, QueryError> {
    let params = Params::parse(raw.as_deref(), &body);
    let text = query_text(&params)?;
    let missing = |name: &str| QueryError::BadData(format!("invalid parameter \"{name}\": missing"));
    params.get("start").ok_or_else(|| missing("start"))?;
    params.get("end").ok_or_else(|| missing("end"))?;
    let start = params.time_ms("start", 0)?;
    let end = params.time_ms("end", 0)?;
    if end < start {
        return Err(QueryError::BadData("end timestamp must not be before start time".into()));
    }
    let step_raw = params.get("step").ok_or_else(|| missing("step"))?;
    let step_seconds = crate::parse_duration_seconds(step_raw)
        .map_err(|e| QueryError::BadData(format!("invalid parameter \"step\": {e}")))?;
    let step = (step_seconds * 1000.0).round() as i64;
    if step <= 0 {
        return Err(QueryError::BadData(
            "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
        ));
    }
    if (end - start) / step > MAX_POINTS_PER_SERIES {
        return Err(QueryError::BadData(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"
                .into(),
        ));
    }
    let limit = params.limit()?;
    let expr = promql::parse(&text)?;
    let control = control(&params)?;
    let mut outcome = evaluate(&state, control, move |engine, storage, control| {
        engine.range(storage, &expr, start, end, step, control)
    })
    .await?;
    if let Some(limit) = limit {
        outcome.value.truncate(limit);
    }
    Ok(matrix_response(&outcome.value, &outcome.annotations))
}

async fn format_query(RawQuery(raw): RawQuery, body: Bytes) -> Result<Response, QueryError> {
    use promql_parser::parser::Prettier;
    let params = Params::parse(raw.as_deref(), &body);
    let expr = promql::parse(&query_text(&params)?)?;
    Ok(success(json!(expr.pretty(0, 100))))
}

async fn metadata(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> Result<Response, QueryError> {
    let params = Params::parse(raw.as_deref(), &[]);
    let limit = params.limit()?;
    let metric = params.get("metric").filter(|m| !m.is_empty());
    let mut data = Map::new();
    for (name, entry) in state.storage.metadata(metric, limit) {
        let item = json!({"type": entry.metric_type, "help": entry.help, "unit": entry.unit});
        data.insert(name, Value::Array(vec![item]));
    }
    Ok(success(Value::Object(data)))
}

async fn tsdb_status(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> Result<Response, QueryError> {
    let params = Params::parse(raw.as_deref(), &[]);
    let limit = params.limit()?.unwrap_or(10);
    let stats = state.storage.cardinality(limit);
    let pairs = |entries: Vec<(String, usize)>| -> Value {
        Value::Array(entries.into_iter().map(|(name, value)| json!({"name": name, "value": value})).collect())
    };
    let (min_time, max_time) = stats.time_range.unwrap_or((0, 0));
    Ok(success(json!({
        "headStats": {
            "numSeries": stats.series,
            "numLabelPairs": stats.label_pairs,
            "chunkCount": 0,
            "minTime": min_time,
            "maxTime": max_time,
        },
        "seriesCountByMetricName": pairs(stats.series_by_metric_name),
        "labelValueCountByLabelName": pairs(stats.values_by_label_name),
        "memoryInBytesByLabelName": pairs(stats.bytes_by_label_name),
        "seriesCountByLabelValuePair": pairs(stats.series_by_label_pair),
    })))
}

/// Exemplars are not stored yet: a valid query gets an empty list, as from a Prometheus without exemplars.
async fn query_exemplars(RawQuery(raw): RawQuery, body: Bytes) -> Result<Response, QueryError> {
    let params = Params::parse(raw.as_deref(), &body);
    promql::parse(&query_text(&params)?)?;
    Ok(success(json!([])))
}

async fn buildinfo(State(state): State<ApiState>) -> Response {
    success(json!({
        "version": state.build.version,
        "revision": state.build.revision,
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    }))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;
    use vigil_tsdb::{Appender, Db, DbOptions, Sample, SeriesSamples};

    use super::*;

    fn app() -> Router {
        let db = Db::in_memory(DbOptions::default());
        let batch: Vec<SeriesSamples> = [("up", "node", "a"), ("up", "api", "b"), ("http_requests_total", "api", "b")]
            .iter()
            .map(|(name, job, instance)| SeriesSamples {
                labels: Labels::new([("__name__", *name), ("job", *job), ("instance", *instance)]).unwrap(),
                samples: vec![Sample { t: 1000, v: 1.0 }],
            })
            .collect();
        db.append(&batch).unwrap();
        let build = BuildInfo { version: "0.1.0".into(), revision: "abc".into() };
        routes(Arc::new(db), build, Engine::default(), 4)
    }

    async fn get_json(uri: &str) -> (StatusCode, Value) {
        let response = app().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn grafana_health_check_is_a_scalar() {
        let (status, body) = get_json("/api/v1/query?query=1%2B1&time=4").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({"status": "success", "data": {"resultType": "scalar", "result": [4, "2"]}}));
    }

    #[tokio::test]
    async fn instant_and_range_queries_have_prometheus_shapes() {
        let (_, body) = get_json("/api/v1/query?query=up%7Bjob%3D%22node%22%7D&time=1.5").await;
        assert_eq!(
            body["data"],
            json!({"resultType": "vector", "result": [{"metric": {"__name__": "up", "instance": "a", "job": "node"}, "value": [1.5, "1"]}]})
        );
        let (_, body) = get_json("/api/v1/query_range?query=sum(up)&start=0&end=2&step=1").await;
        assert_eq!(
            body["data"],
            json!({"resultType": "matrix", "result": [{"metric": {}, "values": [[1, "2"], [2, "2"]]}]})
        );
    }

    #[tokio::test]
    async fn query_errors_use_prometheus_error_types() {
        let (status, body) = get_json("/api/v1/query?query=sum(").await;
        assert_eq!((status, body["errorType"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_data")));
        assert!(body["error"].as_str().unwrap().starts_with("invalid parameter \"query\""), "{body}");
        let (status, body) = get_json("/api/v1/query_range?query=up&start=10&end=0&step=1").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "end timestamp must not be before start time");
        let (status, _) = get_json("/api/v1/query_range?query=up&start=0&end=100000&step=1").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, body) = get_json("/api/v1/query?query=label_replace(up,%22x%22,%22%22,%22job%22,%22(%22)").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }

    #[tokio::test]
    async fn series_json_escapes_what_needs_escaping() {
        let labels = Labels::new([("__name__", "m"), ("path", "a\"b\\c\nd"), ("plain", "x")]).unwrap();
        let response = series_response(std::slice::from_ref(&labels));
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body, json!({"status": "success", "data": [{"__name__": "m", "path": "a\"b\\c\nd", "plain": "x"}]}));
    }

    #[tokio::test]
    async fn annotations_are_reported_beside_the_data() {
        let (status, body) = get_json("/api/v1/query?query=quantile(2,up)&time=1").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["warnings"], json!(["PromQL warning: quantile value should be between 0 and 1, got 2"]));
        assert!(body.get("infos").is_none());
        let (_, body) = get_json("/api/v1/query?query=rate(up%5B5m%5D)&time=1").await;
        assert_eq!(
            body["infos"],
            json!([
                "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: \"up\""
            ])
        );
    }

    #[tokio::test]
    async fn status_tsdb_reports_cardinality() {
        let (status, body) = get_json("/api/v1/status/tsdb").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["data"]["headStats"]["numSeries"], 3);
        assert_eq!(body["data"]["seriesCountByMetricName"][0], json!({"name": "up", "value": 2}));
        let (_, body) = get_json("/api/v1/metadata").await;
        assert_eq!(body, json!({"status": "success", "data": {}}));
        let (_, body) = get_json("/api/v1/query_exemplars?query=up&start=0&end=10").await;
        assert_eq!(body["data"], json!([]));
    }

    #[tokio::test]
    async fn labels_and_values() {
        let (_, body) = get_json("/api/v1/labels").await;
        assert_eq!(body, json!({"status": "success", "data": ["__name__", "instance", "job"]}));
        let (_, body) = get_json("/api/v1/label/__name__/values?limit=40000").await;
        assert_eq!(body["data"], json!(["http_requests_total", "up"]));
        let (_, body) = get_json("/api/v1/label/job/values?match[]=up").await;
        assert_eq!(body["data"], json!(["api", "node"]));
    }

    #[tokio::test]
    async fn series_with_matchers_and_errors() {
        let (status, body) = get_json("/api/v1/series?match[]=%7Bjob%3D%22api%22%7D").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body["data"],
            json!([
                {"__name__": "http_requests_total", "instance": "b", "job": "api"},
                {"__name__": "up", "instance": "b", "job": "api"}
            ])
        );
        let (status, body) = get_json("/api/v1/series").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["errorType"], "bad_data");
        let (status, body) = get_json("/api/v1/series?match[]=up&start=yesterday").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"].as_str().unwrap().contains("invalid parameter \"start\""), "{body}");
    }
}
