//! Vigil's own metrics: one recorder for every crate's `metrics::` calls, served at `/metrics`.
//!
//! Names follow one scheme: `vigil_<component>_<what>_<unit>` with `_total` for counters, e.g.
//! `vigil_ingest_samples_accepted_total{receiver}`, `vigil_http_request_duration_seconds{route}`,
//! `vigil_tsdb_head_series`. ARCHITECTURE.md lists them.

use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const LATENCY_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Installs the global recorder and starts its upkeep; returns the handle `/metrics` renders.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
        .context("invalid histogram buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    metrics::gauge!("vigil_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}
