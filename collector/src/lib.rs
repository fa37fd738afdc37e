//! Vigil's ingestion edge: decodes wire protocols and hands samples to storage.
//!
//! Each receiver is an axum handler over a sink trait ([`vigil_tsdb::Appender`] for metrics), so it can
//! be tested without a real store. Receivers validate and limit what they accept; nothing is acknowledged
//! before the sink returns, and the sink returns only once the data is durable.

mod error;
pub mod loki;
pub mod otlp;
mod otlp_grpc;
pub mod otlp_logs;
pub mod remote_write;

use std::sync::Arc;

use axum::Router;
use axum::routing::post;
pub use error::IngestError;
use vigil_tsdb::Appender;
use vigil_tsdb::logs::LogStore;

/// Limits applied while decoding.
#[derive(Debug, Clone)]
pub struct IngestLimits {
    /// Bytes a request body may expand to after decompression.
    pub max_decompressed_bytes: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits { max_decompressed_bytes: 256 << 20 }
    }
}

/// Shared state of the receivers.
#[derive(Clone)]
pub struct Ingest {
    metrics: Arc<dyn Appender>,
    logs: Option<Arc<dyn LogStore>>,
    limits: IngestLimits,
}

impl Ingest {
    /// Receivers writing metrics to `metrics`.
    pub fn new(metrics: Arc<dyn Appender>, limits: IngestLimits) -> Self {
        Ingest { metrics, logs: None, limits }
    }

    /// The same receivers, with log pushes going to `logs`.
    pub fn with_logs(mut self, logs: Arc<dyn LogStore>) -> Self {
        self.logs = Some(logs);
        self
    }

    /// Routes served on the main HTTP listener: `/api/v1/write` and `/loki/api/v1/push`.
    pub fn http_routes(&self) -> Router {
        Router::new()
            .route("/api/v1/write", post(remote_write::handle))
            .route("/loki/api/v1/push", post(loki::handle))
            .with_state(self.clone())
    }

    /// Routes of the OTLP/HTTP listener: `/v1/metrics` and `/v1/logs`.
    pub fn otlp_http_routes(&self) -> Router {
        Router::new()
            .route("/v1/metrics", post(otlp::handle_metrics))
            .route("/v1/logs", post(otlp_logs::handle_logs))
            .with_state(self.clone())
    }
}
