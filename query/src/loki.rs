//! Loki's read API over the log store, with Loki's JSON shapes: `query_range` (streams or matrix),
//! `query` (streams or vector), `labels`, `label/<name>/values`, `series`, `index/stats`,
//! `status/buildinfo`, the `detected_labels` call Grafana makes, and `tail` (a websocket of new entries).
//! Errors are plain text with 400, as Loki answers them.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::DateTime;
use serde_json::{Value, json};
use vigil_tsdb::logs::{LogQuery, LogStore};

use crate::BuildInfo;
use crate::QueryError;
use crate::logql::{LabelMap, LogqlEngine, Series, Stream, parse};
use crate::params::Params;

#[derive(Clone)]
struct LokiState {
    engine: LogqlEngine,
    store: Arc<dyn LogStore>,
    build: BuildInfo,
}

/// Loki's read routes over `store`.
pub fn routes(store: Arc<dyn LogStore>, build: BuildInfo) -> Router {
    let state = LokiState { engine: LogqlEngine::new(store.clone()), store, build };
    Router::new()
        .route("/loki/api/v1/query_range", get(query_range).post(query_range))
        .route("/loki/api/v1/query", get(query).post(query))
        .route("/loki/api/v1/labels", get(labels).post(labels))
        .route("/loki/api/v1/label/{name}/values", get(label_values))
        .route("/loki/api/v1/series", get(series).post(series))
        .route("/loki/api/v1/index/stats", get(index_stats))
        .route("/loki/api/v1/detected_labels", get(detected_labels))
        .route("/loki/api/v1/status/buildinfo", get(buildinfo))
        .route("/loki/api/v1/tail", get(tail))
        .with_state(state)
}

/// A Loki error: plain text, 400 for bad input, 500 for storage failures.
struct LokiError(StatusCode, String);

impl From<QueryError> for LokiError {
    fn from(error: QueryError) -> Self {
        let status = match error {
            QueryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        LokiError(status, error.to_string())
    }
}

impl From<vigil_tsdb::Error> for LokiError {
    fn from(error: vigil_tsdb::Error) -> Self {
        QueryError::from(error).into()
    }
}

impl IntoResponse for LokiError {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

fn bad(message: String) -> LokiError {
    LokiError(StatusCode::BAD_REQUEST, message)
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Loki's time forms: nanoseconds as an integer, seconds with a fraction, or RFC 3339.
fn time_ns(params: &Params, name: &str, default: i64) -> Result<i64, LokiError> {
    let Some(raw) = params.get(name).filter(|r| !r.is_empty()) else { return Ok(default) };
    if let Ok(integer) = raw.parse::<i64>() {
        // Ten digits or fewer are seconds (Loki's heuristic); more are nanoseconds.
        return Ok(if raw.trim_start_matches('-').len() <= 10 { integer * 1_000_000_000 } else { integer });
    }
    if let Ok(seconds) = raw.parse::<f64>() {
        return Ok((seconds * 1e9) as i64);
    }
    DateTime::parse_from_rfc3339(raw)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| bad(format!("invalid {name}: cannot parse {raw:?}")))
}

/// `start`/`end` with Loki's defaults (the last hour).
fn range(params: &Params) -> Result<(i64, i64), LokiError> {
    let end = time_ns(params, "end", now_ns())?;
    let start = time_ns(params, "start", end - 3_600_000_000_000)?;
    if end < start {
        return Err(bad("the end timestamp must not be before the start time".into()));
    }
    Ok((start, end))
}

fn query_text(params: &Params) -> Result<String, LokiError> {
    params
        .get("query")
        .filter(|q| !q.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| bad("query must not be empty".into()))
}

fn limit(params: &Params) -> Result<usize, LokiError> {
    match params.get("limit") {
        None | Some("") => Ok(100),
        Some(raw) => raw.parse().map_err(|_| bad(format!("invalid limit {raw:?}"))),
    }
}

fn backward(params: &Params) -> Result<bool, LokiError> {
    match params.get("direction").map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("backward") => Ok(true),
        Some("forward") => Ok(false),
        Some(other) => Err(bad(format!("invalid direction {other:?}"))),
    }
}

/// `step` as a duration or seconds; Loki's default spreads the range over about 250 points, at least 1 s.
fn step_ms(params: &Params, start_ns: i64, end_ns: i64) -> Result<i64, LokiError> {
    match params.get("step").filter(|s| !s.is_empty()) {
        Some(raw) => crate::parse_duration_seconds(raw)
            .map(|s| (s * 1000.0).round() as i64)
            .map_err(|e| bad(format!("invalid step: {e}"))),
        None => Ok((((end_ns - start_ns) as f64 / 250.0 / 1e9).ceil() as i64).max(1) * 1000),
    }
}

/// The header a client asks for structured metadata apart from the labels with.
const ENCODING_FLAGS: &str = "x-loki-response-encoding-flags";

/// Whether the request asks for Loki's `categorize-labels` encoding.
fn categorize(headers: &HeaderMap) -> bool {
    headers
        .get_all(ENCODING_FLAGS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|flag| flag.trim() == "categorize-labels"))
}

/// Streams as Loki writes them; with `categorize`, each value carries a third element holding the entry's
/// structured metadata (`{"structuredMetadata": {...}}`), as Loki's `categorize-labels` encoding does.
fn streams_json(streams: &[Stream], categorize: bool) -> Value {
    let value = |s: &Stream, i: usize| {
        let (ts, line) = &s.entries[i];
        if !categorize {
            return json!([ts.to_string(), line]);
        }
        let metadata = s.metadata.get(i).filter(|m| !m.is_empty());
        match metadata {
            Some(metadata) => json!([ts.to_string(), line, {"structuredMetadata": metadata}]),
            None => json!([ts.to_string(), line, {}]),
        }
    };
    json!(
        streams
            .iter()
            .map(
                |s| json!({"stream": s.labels, "values": (0..s.entries.len()).map(|i| value(s, i)).collect::<Vec<_>>()})
            )
            .collect::<Vec<_>>()
    )
}

/// A streams answer, flagged as categorized when it is.
fn streams_success(streams: &[Stream], categorize: bool) -> Response {
    let mut data = json!({"resultType": "streams", "result": streams_json(streams, categorize), "stats": {}});
    if categorize {
        data["encodingFlags"] = json!(["categorize-labels"]);
    }
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

fn seconds(ms: i64) -> Value {
    if ms % 1000 == 0 { json!(ms / 1000) } else { json!(ms as f64 / 1000.0) }
}

/// Values as Loki writes them (Go's `'f'` format: never an exponent).
fn matrix_json(series: &[Series]) -> Value {
    json!(
        series
            .iter()
            .map(|s| json!({"metric": s.labels,
                "values": s.points.iter().map(|(t, v)| json!([seconds(*t), crate::promql::format_float(*v)])).collect::<Vec<_>>()}))
            .collect::<Vec<_>>()
    )
}

fn success(result_type: &str, result: Value) -> Response {
    axum::Json(json!({"status": "success", "data": {"resultType": result_type, "result": result, "stats": {}}}))
        .into_response()
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, LokiError> + Send + 'static,
) -> Result<T, LokiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| LokiError(StatusCode::INTERNAL_SERVER_ERROR, format!("query task failed: {e}")))?
}

async fn query_range(
    State(state): State<LokiState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, LokiError> {
    let categorize = categorize(&headers);
    let params = Params::parse(raw.as_deref(), &body);
    let text = query_text(&params)?;
    let (start, end) = range(&params)?;
    let (limit, backward, step) = (limit(&params)?, backward(&params)?, step_ms(&params, start, end)?);
    blocking(move || match parse(&text)? {
        logql::Expr::Log(query) => {
            let streams = state.engine.logs(&query, start, end, limit, backward)?;
            Ok(streams_success(&streams, categorize))
        }
        logql::Expr::Metric(query) => {
            let series = state.engine.range(&query, start / 1_000_000, end / 1_000_000, step)?;
            Ok(success("matrix", matrix_json(&series)))
        }
        _ => Err(bad("unsupported query".into())),
    })
    .await
}

async fn query(
    State(state): State<LokiState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, LokiError> {
    let categorize = categorize(&headers);
    let params = Params::parse(raw.as_deref(), &body);
    let text = query_text(&params)?;
    let time = time_ns(&params, "time", now_ns())?;
    let (limit, backward) = (limit(&params)?, backward(&params)?);
    blocking(move || match parse(&text)? {
        logql::Expr::Log(query) => {
            // An instant log query looks back an hour from `time`, as Loki's does.
            let streams = state.engine.logs(&query, time - 3_600_000_000_000, time + 1, limit, backward)?;
            Ok(streams_success(&streams, categorize))
        }
        logql::Expr::Metric(query) => {
            let time_ms = time / 1_000_000;
            let vector = state.engine.instant(&query, time_ms)?;
            let result: Vec<Value> = vector
                .iter()
                .map(|(labels, v)| json!({"metric": labels, "value": [seconds(time_ms), crate::promql::format_float(*v)]}))
                .collect();
            Ok(success("vector", json!(result)))
        }
        _ => Err(bad("unsupported query".into())),
    })
    .await
}

fn data(value: Value) -> Response {
    axum::Json(json!({"status": "success", "data": value})).into_response()
}

async fn labels(State(state): State<LokiState>, RawQuery(raw): RawQuery, body: Bytes) -> Result<Response, LokiError> {
    let params = Params::parse(raw.as_deref(), &body);
    let (start, end) = range(&params)?;
    blocking(move || Ok(data(json!(state.store.label_names(start, end)?)))).await
}

async fn label_values(
    State(state): State<LokiState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, LokiError> {
    let params = Params::parse(raw.as_deref(), &[]);
    let (start, end) = range(&params)?;
    let selector = params.get("query").map(str::to_owned);
    blocking(move || {
        let values: Vec<String> = match selector.filter(|q| !q.is_empty()) {
            None => state.store.label_values(&name, start, end)?,
            Some(selector) => {
                let matchers = selector_matchers(&selector)?;
                let mut values: Vec<String> = state
                    .store
                    .streams(&matchers, start, end)?
                    .into_iter()
                    .filter_map(|mut s| s.remove(&name))
                    .collect();
                values.sort();
                values.dedup();
                values
            }
        };
        Ok(data(json!(values)))
    })
    .await
}

fn selector_matchers(selector: &str) -> Result<Vec<vigil_tsdb::Matcher>, LokiError> {
    match parse(selector)? {
        logql::Expr::Log(query) => Ok(crate::logql::selector_matchers(&query)?),
        _ => Err(bad(format!("{selector:?} is not a stream selector"))),
    }
}

async fn series(State(state): State<LokiState>, RawQuery(raw): RawQuery, body: Bytes) -> Result<Response, LokiError> {
    let params = Params::parse(raw.as_deref(), &body);
    let (start, end) = range(&params)?;
    let selectors: Vec<String> =
        params.all("match[]").into_iter().chain(params.all("match")).map(str::to_owned).collect();
    blocking(move || {
        let mut found: Vec<LabelMap> = Vec::new();
        if selectors.is_empty() {
            found = state.store.streams(&[], start, end)?;
        }
        for selector in &selectors {
            found.extend(state.store.streams(&selector_matchers(selector)?, start, end)?);
        }
        found.sort();
        found.dedup();
        Ok(data(json!(found)))
    })
    .await
}

async fn index_stats(State(state): State<LokiState>, RawQuery(raw): RawQuery) -> Result<Response, LokiError> {
    let params = Params::parse(raw.as_deref(), &[]);
    let (start, end) = range(&params)?;
    let selector = params.get("query").unwrap_or("{}").to_owned();
    blocking(move || {
        let query =
            LogQuery { matchers: selector_matchers(&selector)?, start_ns: start, end_ns: end, ..LogQuery::default() };
        let records = state.store.select(&query)?;
        let streams: std::collections::BTreeSet<&BTreeMap<String, String>> =
            records.iter().map(|r| &r.labels).collect();
        let bytes: usize = records.iter().map(|r| r.line.len()).sum();
        let body = json!({"streams": streams.len(), "chunks": streams.len(), "entries": records.len(), "bytes": bytes});
        Ok(axum::Json(body).into_response())
    })
    .await
}

/// `GET /loki/api/v1/detected_labels`: each label of the streams `query` selects (all without one), with
/// its number of values.
async fn detected_labels(State(state): State<LokiState>, RawQuery(raw): RawQuery) -> Result<Response, LokiError> {
    let params = Params::parse(raw.as_deref(), &[]);
    let (start, end) = range(&params)?;
    let selector = params.get("query").filter(|q| !q.trim().is_empty()).map(str::to_owned);
    blocking(move || {
        let matchers = selector.as_deref().map(selector_matchers).transpose()?.unwrap_or_default();
        let streams = state.store.streams(&matchers, start, end)?;
        let mut cardinality: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
        for stream in streams {
            for (name, value) in stream {
                cardinality.entry(name).or_default().insert(value);
            }
        }
        let labels: Vec<Value> = cardinality
            .into_iter()
            .map(|(label, values)| json!({"label": label, "cardinality": values.len()}))
            .collect();
        Ok(axum::Json(json!({"detectedLabels": labels})).into_response())
    })
    .await
}

async fn buildinfo(State(state): State<LokiState>) -> Response {
    axum::Json(json!({"version": state.build.version, "revision": state.build.revision, "branch": "",
        "buildUser": "", "buildDate": "", "goVersion": ""}))
    .into_response()
}

/// How often a tail looks for new entries (entries are searchable within the store's commit interval).
const TAIL_POLL: std::time::Duration = std::time::Duration::from_millis(250);
/// How long a tail connection may live.
const TAIL_MAX: std::time::Duration = std::time::Duration::from_secs(3600);

/// `GET /loki/api/v1/tail` (websocket): entries from `start` (default an hour ago) on, then new ones as
/// they become searchable, as `{"streams": [...], "dropped_entries": null}` messages.
async fn tail(
    State(state): State<LokiState>,
    RawQuery(raw): RawQuery,
    upgrade: axum::extract::ws::WebSocketUpgrade,
) -> Result<Response, LokiError> {
    let params = Params::parse(raw.as_deref(), &[]);
    let text = query_text(&params)?;
    let query = match parse(&text)? {
        logql::Expr::Log(query) => query,
        _ => return Err(bad("tail takes a log query".into())),
    };
    let start = time_ns(&params, "start", now_ns() - 3_600_000_000_000)?;
    let limit = limit(&params)?;
    Ok(upgrade.on_upgrade(move |socket| follow(state, query, start, limit, socket)))
}

async fn follow(
    state: LokiState,
    query: logql::LogQuery,
    start: i64,
    limit: usize,
    mut socket: axum::extract::ws::WebSocket,
) {
    use axum::extract::ws::Message;
    let opened = std::time::Instant::now();
    let mut cursor = start;
    while opened.elapsed() < TAIL_MAX {
        let (engine, query_now) = (state.engine.clone(), query.clone());
        let from = cursor;
        let found =
            tokio::task::spawn_blocking(move || engine.logs(&query_now, from, now_ns() + 1, limit, false)).await;
        let Ok(Ok(streams)) = found else { return };
        if let Some(newest) = streams.iter().flat_map(|s| s.entries.iter().map(|(ts, _)| *ts)).max() {
            cursor = newest + 1;
            let message = json!({"streams": streams_json(&streams, false), "dropped_entries": null});
            if socket.send(Message::Text(message.to_string().into())).await.is_err() {
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(TAIL_POLL) => {}
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                _ => {}
            },
        }
    }
}
