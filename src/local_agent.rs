//! The agent inside `vigil up`: collects this machine's metrics and Vigil's own, and appends them
//! straight to storage (no network hop).

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;
use vigil_agent::cgroup::ContainerCollector;
use vigil_agent::exposition::{self, Format};
use vigil_agent::{Point, host};
use vigil_tsdb::{Appender, Db, Labels, METRIC_NAME, Sample, SeriesSamples};

use crate::config::LocalAgentConfig;
use crate::server::{next_tick, ticker};

/// Collects every interval until `stop` turns true.
pub async fn run(config: LocalAgentConfig, db: Arc<Db>, telemetry: PrometheusHandle, mut stop: watch::Receiver<bool>) {
    let containers = Arc::new(std::sync::Mutex::new(ContainerCollector::new(&config.root)));
    let mut tick = ticker(config.interval);
    while next_tick(&mut tick, &mut stop).await {
        let (config, db, containers) = (config.clone(), db.clone(), containers.clone());
        crate::server::update_storage_gauges(&db);
        let own_metrics = telemetry.render();
        let collected =
            tokio::task::spawn_blocking(move || collect_once(&config, &db, &containers, &own_metrics)).await;
        match collected {
            Ok(Ok(samples)) => {
                metrics::counter!("vigil_agent_samples_collected_total", "source" => "local").increment(samples as u64)
            }
            Ok(Err(error)) => tracing::error!(error = %error, "storing local metrics failed"),
            Err(error) => tracing::error!(%error, "local collection task failed"),
        }
    }
}

/// Host metrics as `job="node"`, container metrics as `job="cadvisor"` and Vigil's own telemetry as
/// `job="vigil"`, each with an `up` series and, like the standalone agent's, a `node` label.
fn collect_once(
    config: &LocalAgentConfig,
    db: &Db,
    containers: &std::sync::Mutex<ContainerCollector>,
    own_metrics: &str,
) -> Result<usize, vigil_tsdb::Error> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let (host_points, host_errors) = host::collect(&config.root);
    let (container_points, container_errors) = containers.lock().expect("collector lock").collect();
    for error in host_errors.iter().chain(&container_errors) {
        tracing::warn!(%error, "metric source failed");
    }
    let own_points = match exposition::parse(own_metrics, Format::PrometheusText) {
        Ok(families) => families
            .into_iter()
            .flat_map(|family| family.samples)
            .map(|sample| Point { name: sample.name, labels: sample.labels, value: sample.value })
            .collect(),
        Err(error) => {
            tracing::warn!(%error, "own telemetry did not parse");
            Vec::new()
        }
    };
    let mut batch = Vec::with_capacity(host_points.len() + own_points.len() + 2);
    for (job, points) in [("node", host_points), ("cadvisor", container_points), ("vigil", own_points)] {
        let up = Point { name: "up".into(), labels: Vec::new(), value: if points.is_empty() { 0.0 } else { 1.0 } };
        let node = config.node_name.as_str();
        let target = [("job", job), ("instance", node), ("node", node)];
        for point in points.into_iter().chain(std::iter::once(up)) {
            let pairs = point
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .chain(target)
                .chain(std::iter::once((METRIC_NAME, point.name.as_str())));
            match Labels::new(pairs) {
                Ok(labels) => batch.push(SeriesSamples { labels, samples: vec![Sample { t: now_ms, v: point.value }] }),
                Err(error) => tracing::warn!(%error, metric = point.name, "local metric skipped"),
            }
        }
    }
    let summary = db.append(&batch)?;
    Ok(summary.accepted)
}

/// How often the log directory is read.
const LOG_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Follows the `*.log` files of `dir` into `store` until `stop`; offsets are checkpointed in `checkpoint`
/// once the lines are stored, so a restart repeats nothing stored and skips nothing.
pub async fn follow_log_dir(
    dir: std::path::PathBuf,
    checkpoint: std::path::PathBuf,
    store: Arc<dyn vigil_tsdb::logs::LogStore>,
    mut stop: watch::Receiver<bool>,
) {
    let tailer = Arc::new(std::sync::Mutex::new(vigil_agent::tail::Tailer::new(&dir, &checkpoint)));
    let mut tick = ticker(LOG_POLL);
    while next_tick(&mut tick, &mut stop).await {
        let (tailer, store) = (tailer.clone(), store.clone());
        let followed = tokio::task::spawn_blocking(move || {
            let mut tailer = tailer.lock().expect("tailer lock");
            let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
            let mut records = Vec::new();
            for file in tailer.poll() {
                let labels = std::collections::BTreeMap::from([
                    ("job".to_owned(), "logs".to_owned()),
                    ("filename".to_owned(), file.path.display().to_string()),
                ]);
                records.extend(file.lines().map(|(offset, line)| vigil_tsdb::logs::LogRecord {
                    ts_ns: now,
                    labels: labels.clone(),
                    line: line.to_owned(),
                    metadata: Default::default(),
                    position: Some(vigil_tsdb::logs::SourcePosition { source: file.source, offset }),
                }));
            }
            match store.append(&records) {
                Ok(()) => tailer.commit().map(|_| records.len()).map_err(|e| e.to_string()),
                Err(error) => {
                    tailer.rewind();
                    Err(error.to_string())
                }
            }
        })
        .await;
        match followed {
            Ok(Ok(lines)) if lines > 0 => metrics::counter!("vigil_agent_log_lines_total").increment(lines as u64),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(%error, "following the log directory failed; will retry"),
            Err(error) => tracing::error!(%error, "log directory task failed"),
        }
    }
}
