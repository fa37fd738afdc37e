//! Vigil's query side: the Prometheus HTTP API and the Kubernetes Metrics API over any
//! [`vigil_tsdb::Queryable`], Loki's API over a log store, and Jaeger's and Tempo's APIs over a span store.
//!
//! This crate reads storage; its only writes are rule results, through the appender the rule manager is
//! given. Handlers are plain axum routes built by
//! [`prometheus::routes`] and [`kubernetes::routes`].

mod error;
pub mod jaeger;
pub mod kubernetes;
pub mod logql;
pub mod loki;
mod params;
pub mod prometheus;
pub mod promql;
pub mod rules;
mod selector;
pub mod tempo;
pub mod traceql;
mod traces;

pub use error::QueryError;
pub use params::{parse_duration_seconds, parse_time_seconds};
pub use selector::parse_selector;

/// Version and build facts served by `status/buildinfo`.
#[derive(Debug, Clone)]
pub struct BuildInfo {
    /// Release version.
    pub version: String,
    /// Source revision, when known.
    pub revision: String,
}
