//! The Prometheus HTTP API (`/api/v1/...`) with Prometheus's JSON shapes.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use vigil_tsdb::{Labels, Matcher, Queryable};

use crate::params::{MAX_TIME_MS, MIN_TIME_MS, Params};
use crate::selector::parse_selector;
use crate::{BuildInfo, QueryError};

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    storage: Arc<dyn Queryable>,
    build: BuildInfo,
}

/// The Prometheus API routes over `storage`.
pub fn routes(storage: Arc<dyn Queryable>, build: BuildInfo) -> Router {
    let state = ApiState { storage, build };
    Router::new()
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .with_state(state)
}

fn success(data: Value) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

fn labels_json(labels: &Labels) -> Value {
    let map: Map<String, Value> = labels
        .iter()
        .map(|l| (l.name.clone(), Value::String(l.value.clone())))
        .collect();
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
    let names = merged(&alternatives, limit, |matchers| {
        state.storage.label_names(matchers, limit)
    })?;
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
    let values = merged(&alternatives, limit, |matchers| {
        state.storage.label_values(&name, matchers, limit)
    })?;
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
    Ok(success(Value::Array(all.iter().map(labels_json).collect())))
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
        let batch: Vec<SeriesSamples> = [
            ("up", "node", "a"),
            ("up", "api", "b"),
            ("http_requests_total", "api", "b"),
        ]
        .iter()
        .map(|(name, job, instance)| SeriesSamples {
            labels: Labels::new([("__name__", *name), ("job", *job), ("instance", *instance)]).unwrap(),
            samples: vec![Sample { t: 1000, v: 1.0 }],
        })
        .collect();
        db.append(&batch).unwrap();
        routes(
            Arc::new(db),
            BuildInfo {
                version: "0.1.0".into(),
                revision: "abc".into(),
            },
        )
    }

    async fn get_json(uri: &str) -> (StatusCode, Value) {
        let response = app()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn labels_and_values() {
        let (_, body) = get_json("/api/v1/labels").await;
        assert_eq!(
            body,
            json!({"status": "success", "data": ["__name__", "instance", "job"]})
        );
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
        assert!(
            body["error"].as_str().unwrap().contains("invalid parameter \"start\""),
            "{body}"
        );
    }
}
