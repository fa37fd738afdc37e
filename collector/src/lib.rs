//! Vigil's ingestion edge: decodes wire protocols and hands samples to storage.
//!
//! Each receiver is an axum handler over a sink trait ([`vigil_tsdb::Appender`] for metrics), so it can
//! be tested without a real store. Receivers validate and limit what they accept; nothing is acknowledged
//! before the sink returns, and the sink returns only once the data is durable.

mod error;
pub mod fuzz;
pub mod log_level;
pub mod loki;
pub mod otlp;
mod otlp_grpc;
pub mod otlp_logs;
pub mod otlp_traces;
pub mod remote_write;
pub mod spanmetrics;
pub mod zipkin;

use std::sync::Arc;

use axum::Router;
use axum::routing::post;
pub use error::IngestError;
use vigil_tsdb::Appender;
use vigil_tsdb::logs::LogStore;
use vigil_tsdb::traces::SpanStore;

/// Limits applied while decoding.
#[derive(Debug, Clone)]
pub struct IngestLimits {
    /// Bytes a request body may expand to after decompression.
    pub max_decompressed_bytes: usize,
    /// Ingest requests handled at once; more are refused as retryable (HTTP 429, gRPC `UNAVAILABLE`).
    pub max_inflight: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits { max_decompressed_bytes: 256 << 20, max_inflight: 64 }
    }
}

/// Shared state of the receivers.
#[derive(Clone)]
pub struct Ingest {
    metrics: Arc<dyn Appender>,
    logs: Option<Arc<dyn LogStore>>,
    spans: Option<Arc<dyn SpanStore>>,
    span_metrics: Option<Arc<spanmetrics::SpanMetrics>>,
    limits: IngestLimits,
    inflight: Arc<tokio::sync::Semaphore>,
}

impl Ingest {
    /// Receivers writing metrics to `metrics`.
    pub fn new(metrics: Arc<dyn Appender>, limits: IngestLimits) -> Self {
        let inflight = Arc::new(tokio::sync::Semaphore::new(limits.max_inflight.max(1)));
        Ingest { metrics, logs: None, spans: None, span_metrics: None, limits, inflight }
    }

    /// A layer refusing requests beyond [`IngestLimits::max_inflight`] with a retryable status, before any
    /// body is read: the backpressure clients (Prometheus, OTLP exporters, Promtail) retry on.
    fn backpressure(&self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn_with_state(self.inflight.clone(), limit_inflight))
    }

    /// The same receivers, with log pushes going to `logs`.
    pub fn with_logs(mut self, logs: Arc<dyn LogStore>) -> Self {
        self.logs = Some(logs);
        self
    }

    /// The same receivers, with spans going to `spans` and span metrics derived from them.
    pub fn with_spans(mut self, spans: Arc<dyn SpanStore>) -> Self {
        self.spans = Some(spans);
        self.span_metrics = Some(Arc::new(spanmetrics::SpanMetrics::default()));
        self
    }

    /// Writes the span-derived metrics at their current values (blocking: the append waits for the WAL).
    pub fn flush_span_metrics(&self, now_ms: i64) -> Result<usize, vigil_tsdb::Error> {
        let Some(span_metrics) = &self.span_metrics else {
            return Ok(0);
        };
        let series = span_metrics.flush(now_ms);
        if series.is_empty() {
            return Ok(0);
        }
        self.metrics.set_metadata(&spanmetrics::SpanMetrics::metadata())?;
        self.metrics.append(&series)?;
        Ok(series.len())
    }

    /// Routes served on the main HTTP listener: `/api/v1/write`, `/loki/api/v1/push` and Zipkin's
    /// `/api/v2/spans`.
    pub fn http_routes(&self) -> Router {
        let routes = Router::new()
            .route("/api/v1/write", post(remote_write::handle))
            .route("/loki/api/v1/push", post(loki::handle))
            .route("/api/v2/spans", post(zipkin::handle))
            .with_state(self.clone());
        self.backpressure(routes)
    }

    /// Routes of the OTLP/HTTP listener: `/v1/traces`, `/v1/metrics` and `/v1/logs`.
    pub fn otlp_http_routes(&self) -> Router {
        let routes = Router::new()
            .route("/v1/traces", post(otlp_traces::handle_traces))
            .route("/v1/metrics", post(otlp::handle_metrics))
            .route("/v1/logs", post(otlp_logs::handle_logs))
            .with_state(self.clone());
        self.backpressure(routes)
    }
}

async fn limit_inflight(
    axum::extract::State(inflight): axum::extract::State<Arc<tokio::sync::Semaphore>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Ok(_permit) = inflight.try_acquire() else {
        metrics::counter!("vigil_ingest_requests_throttled_total").increment(1);
        let grpc = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if grpc {
            let mut response = axum::http::StatusCode::OK.into_response();
            let headers = response.headers_mut();
            headers.insert("content-type", axum::http::HeaderValue::from_static("application/grpc"));
            headers.insert("grpc-status", axum::http::HeaderValue::from_static("14"));
            headers.insert("grpc-message", axum::http::HeaderValue::from_static("too%20many%20concurrent%20requests"));
            return response;
        }
        let mut response =
            (axum::http::StatusCode::TOO_MANY_REQUESTS, "too many concurrent ingest requests; retry later\n")
                .into_response();
        response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        return response;
    };
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::ServiceExt;
    use vigil_tsdb::{AppendSummary, MetricMetadata, SeriesSamples};

    use super::*;

    /// A sink that takes its time, so a request stays in flight.
    struct Slow;

    impl Appender for Slow {
        fn append(&self, _batch: &[SeriesSamples]) -> Result<AppendSummary, vigil_tsdb::Error> {
            std::thread::sleep(Duration::from_millis(600));
            Ok(AppendSummary::default())
        }

        fn set_metadata(&self, _entries: &[(String, MetricMetadata)]) -> Result<(), vigil_tsdb::Error> {
            Ok(())
        }
    }

    fn write_request() -> axum::http::Request<axum::body::Body> {
        let body = snap::raw::Encoder::new().compress_vec(&[]).unwrap();
        axum::http::Request::post("/api/v1/write")
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", "snappy")
            .body(axum::body::Body::from(body))
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_beyond_the_inflight_limit_get_a_retryable_429() {
        let ingest = Ingest::new(Arc::new(Slow), IngestLimits { max_inflight: 1, ..IngestLimits::default() });
        let routes = ingest.http_routes();
        let first = tokio::spawn(routes.clone().oneshot(write_request()));
        tokio::time::sleep(Duration::from_millis(150)).await;
        let second = routes.clone().oneshot(write_request()).await.unwrap();
        assert_eq!(second.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(second.headers()["retry-after"], "1");
        assert!(first.await.unwrap().unwrap().status().is_success());
        // Once the first is done, the next one goes through.
        assert!(routes.oneshot(write_request()).await.unwrap().status().is_success());
    }
}
