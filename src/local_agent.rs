//! The agent inside `vigil up`: collects this machine's metrics and appends them straight to storage.

use std::sync::Arc;

use tokio::sync::watch;
use vigil_agent::{Point, host};
use vigil_tsdb::{Appender, Db, Labels, METRIC_NAME, Sample, SeriesSamples};

use crate::config::LocalAgentConfig;

/// Collects every interval until `stop` turns true.
pub async fn run(config: LocalAgentConfig, db: Arc<Db>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let config = config.clone();
        let db = db.clone();
        let collected = tokio::task::spawn_blocking(move || collect_once(&config, &db)).await;
        match collected {
            Ok(Ok(samples)) => {
                metrics::counter!("vigil_agent_samples_collected_total", "source" => "host").increment(samples as u64)
            }
            Ok(Err(error)) => tracing::error!(error = %error, "storing host metrics failed"),
            Err(error) => tracing::error!(%error, "host collection task failed"),
        }
    }
}

fn collect_once(config: &LocalAgentConfig, db: &Db) -> Result<usize, vigil_tsdb::Error> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let (points, errors) = host::collect(&config.root);
    for error in &errors {
        tracing::warn!(%error, "host metric source failed");
    }
    let target = [("job", "node"), ("instance", config.node_name.as_str())];
    let up = Point { name: "up".into(), labels: Vec::new(), value: if points.is_empty() { 0.0 } else { 1.0 } };
    let mut batch = Vec::with_capacity(points.len() + 1);
    for point in points.into_iter().chain(std::iter::once(up)) {
        let pairs = point
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(target)
            .chain(std::iter::once((METRIC_NAME, point.name.as_str())));
        match Labels::new(pairs) {
            Ok(labels) => batch.push(SeriesSamples { labels, samples: vec![Sample { t: now_ms, v: point.value }] }),
            Err(error) => tracing::warn!(%error, metric = point.name, "host metric skipped"),
        }
    }
    let summary = db.append(&batch)?;
    Ok(summary.accepted)
}
