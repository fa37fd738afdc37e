//! The server: opens storage, builds the router, serves until SIGTERM/SIGINT, then flushes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use vigil_collector::{Ingest, IngestLimits};
use vigil_query::BuildInfo;
use vigil_query::promql::Engine;
use vigil_tsdb::logs::LogIndex;
use vigil_tsdb::traces::TraceStore;
use vigil_tsdb::{Db, Queryable};

use crate::alerting::Alerting;
use crate::config::{LocalAgentConfig, ServerConfig};
use crate::{http, local_agent, telemetry};

/// Queries evaluated at once, as Prometheus's `--query.max-concurrency` default.
const MAX_CONCURRENT_QUERIES: usize = 20;

/// How long in-flight requests get to finish after a stop signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);

#[derive(Clone)]
struct Probes {
    ready: Arc<AtomicBool>,
    metrics: PrometheusHandle,
    db: Arc<Db>,
}

/// Runs the server (and, for `vigil up`, the local agent) until a stop signal.
pub async fn run(config: ServerConfig, local_agent: Option<LocalAgentConfig>) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut stop_signals = StopSignals::register()?;
    let telemetry = telemetry::install()?;
    let db = open_storage(&config).await?;
    let logs = open_logs(&config).await?;
    let log_commits = spawn_log_commits(logs.clone());
    let traces = open_traces(&config).await?;
    let ready = Arc::new(AtomicBool::new(false));
    let probes = Probes { ready: ready.clone(), metrics: telemetry.clone(), db: db.clone() };
    let (stop_sender, stop) = watch::channel(false);
    let alerting = Alerting::open(&config, db.clone(), logs.clone(), stop.clone())?;
    let limits = IngestLimits {
        max_decompressed_bytes: config.max_decompressed_bytes,
        max_inflight: config.max_inflight_ingest,
    };
    let ingest = Ingest::new(db.clone(), limits).with_logs(logs.clone()).with_spans(Arc::new(traces.clone()));
    let stores = Stores { logs: logs.clone(), traces: traces.clone() };
    let app = router(&config, probes, &ingest, stores, alerting.routes());

    let (http_addr, server) = listen(&config, config.http_addr, "--http-addr", app.clone(), stop.clone()).await?;
    let otlp_app = otlp_http_router(&config, &ingest);
    let (otlp_http_addr, otlp_server) =
        listen(&config, config.otlp_http_addr, "--otlp-http-addr", otlp_app, stop.clone()).await?;
    let grpc_app = otlp_grpc_router(&config, &ingest);
    let (otlp_grpc_addr, grpc_server) =
        listen(&config, config.otlp_grpc_addr, "--otlp-grpc-addr", grpc_app, stop.clone()).await?;
    let https = match config.https_addr {
        Some(addr) => Some(listen_https(&config, addr, app.clone(), stop.clone()).await?),
        None => None,
    };
    // `vigil up` keeps its own log events; `vigil server` leaves that to whatever collects its stdout.
    let own_logs = local_agent.is_some().then(|| crate::own_logs::keep(logs.clone(), stop.clone()));
    let log_dir = local_agent.as_ref().and_then(|a| a.log_dir.clone()).map(|dir| {
        let checkpoint = config.data_dir.join("log-dir-offsets.json");
        tracing::info!(dir = %dir.display(), "following *.log files into the log store");
        tokio::spawn(local_agent::follow_log_dir(dir, checkpoint, logs.clone(), stop.clone()))
    });
    let agent = local_agent
        .map(|agent_config| tokio::spawn(local_agent::run(agent_config, db.clone(), telemetry.clone(), stop.clone())));
    let maintenance = tokio::spawn(maintain_storage(db.clone(), stop.clone()));
    let trace_maintenance = tokio::spawn(maintain_traces(traces.clone(), ingest.clone(), stop.clone()));

    alerting.start()?;
    ready.store(true, Ordering::Release);
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    tracing::info!(
        %http_addr,
        %otlp_http_addr,
        %otlp_grpc_addr,
        https_addr = https.as_ref().map(|(addr, _)| addr.to_string()),
        data_dir = %config.data_dir.display(),
        startup_ms = started.elapsed().as_millis() as u64,
        "vigil is ready"
    );
    print_urls(scheme, http_addr, otlp_http_addr, otlp_grpc_addr);

    stop_signals.wait().await;
    tracing::info!("stop signal received; draining requests");
    ready.store(false, Ordering::Release);
    let _ = stop_sender.send(true);
    let servers = async {
        if let Some((_, https_server)) = https {
            let _ = https_server.await;
        }
        (server.await, otlp_server.await, grpc_server.await)
    };
    match tokio::time::timeout(DRAIN_TIMEOUT, servers).await.map(|(main, _otlp_http, _otlp_grpc)| main) {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => tracing::error!(%error, "http server failed"),
        Ok(Err(error)) => tracing::error!(%error, "http server task failed"),
        Err(_) => tracing::warn!(
            seconds = DRAIN_TIMEOUT.as_secs(),
            "requests still in flight after the drain timeout; closing"
        ),
    }
    if let Some(agent) = agent {
        let _ = tokio::time::timeout(Duration::from_secs(1), agent).await;
    }
    alerting.finish().await;
    if let Some(log_dir) = log_dir {
        let _ = tokio::time::timeout(Duration::from_secs(2), log_dir).await;
    }
    if let Some(own_logs) = own_logs {
        let _ = tokio::time::timeout(Duration::from_secs(2), own_logs).await;
    }
    // A pass in progress finishes (a block being written is either renamed into place or left as .tmp).
    let _ = tokio::time::timeout(Duration::from_secs(5), maintenance).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), trace_maintenance).await;
    let final_span_metrics = ingest.clone();
    tokio::task::spawn_blocking(move || final_span_metrics.flush_span_metrics(now_ms()))
        .await?
        .context("final write of the span metrics failed")?;
    let flushed = db.clone();
    tokio::task::spawn_blocking(move || flushed.flush()).await?.context("final flush of the WAL failed")?;
    let flushed_traces = traces.clone();
    tokio::task::spawn_blocking(move || flushed_traces.flush()).await?.context("final flush of the span WAL failed")?;
    log_commits.stop();
    tokio::task::spawn_blocking(move || logs.commit()).await?.context("final commit of the log index failed")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// How often storage maintenance (cutting blocks, compaction, retention) runs.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(30);

/// Runs [`Db::maintain`] on the blocking pool every interval until `stop`.
async fn maintain_storage(db: Arc<Db>, mut stop: watch::Receiver<bool>) {
    let mut tick = ticker(MAINTENANCE_INTERVAL);
    while next_tick(&mut tick, &mut stop).await {
        let db = db.clone();
        let started = Instant::now();
        match tokio::task::spawn_blocking(move || db.maintain()).await {
            Ok(Ok(report)) => {
                if !(report.cut.is_empty() && report.compacted.is_empty() && report.deleted.is_empty()) {
                    tracing::info!(
                        blocks_cut = report.cut.len(),
                        blocks_compacted = report.compacted.len(),
                        blocks_deleted = report.deleted.len(),
                        took_ms = started.elapsed().as_millis() as u64,
                        "storage maintenance"
                    );
                }
            }
            Ok(Err(error)) => tracing::error!(%error, "storage maintenance failed; will retry"),
            Err(error) => tracing::error!(%error, "storage maintenance task failed"),
        }
        metrics::histogram!("vigil_tsdb_maintenance_duration_seconds").record(started.elapsed().as_secs_f64());
    }
}

/// How often span metrics are written to the metrics store.
const SPAN_METRICS_INTERVAL: Duration = Duration::from_secs(5);

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Writes the span metrics every few seconds and runs [`TraceStore::maintain`] every maintenance interval.
async fn maintain_traces(traces: TraceStore, ingest: Ingest, mut stop: watch::Receiver<bool>) {
    let mut tick = ticker(SPAN_METRICS_INTERVAL);
    let mut last_maintenance = Instant::now();
    while next_tick(&mut tick, &mut stop).await {
        let ingest = ingest.clone();
        match tokio::task::spawn_blocking(move || ingest.flush_span_metrics(now_ms())).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(%error, "writing span metrics failed; will retry"),
            Err(error) => tracing::error!(%error, "span metrics task failed"),
        }
        metrics::gauge!("vigil_traces_disk_bytes").set(traces.size_bytes() as f64);
        if last_maintenance.elapsed() < MAINTENANCE_INTERVAL {
            continue;
        }
        last_maintenance = Instant::now();
        let traces = traces.clone();
        match tokio::task::spawn_blocking(move || traces.maintain(now_ms() * 1_000_000)).await {
            Ok(Ok(dropped)) if !dropped.is_empty() => {
                tracing::info!(blocks_deleted = dropped.len(), "span retention applied")
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(%error, "span store maintenance failed; will retry"),
            Err(error) => tracing::error!(%error, "span store maintenance task failed"),
        }
    }
}

/// Opens the span store under `<data-dir>/traces`, replaying its write-ahead log.
async fn open_traces(config: &ServerConfig) -> anyhow::Result<TraceStore> {
    let dir = config.data_dir.join("traces");
    let options = config.traces.clone();
    let opened = Instant::now();
    let (traces, report) = tokio::task::spawn_blocking(move || TraceStore::open(&dir, options))
        .await?
        .with_context(|| format!("cannot open the span store under {}", config.data_dir.display()))?;
    for corruption in &report.corruptions {
        tracing::error!(error = %corruption, "corrupt span data set aside; the rest is served");
    }
    tracing::info!(
        blocks = report.blocks,
        replayed_spans = report.replayed_spans,
        open_ms = opened.elapsed().as_millis() as u64,
        "span store opened"
    );
    Ok(traces)
}

async fn open_storage(config: &ServerConfig) -> anyhow::Result<Arc<Db>> {
    let dir = config.data_dir.join("metrics");
    let options = config.db.clone();
    let opened = Instant::now();
    let (db, report) = tokio::task::spawn_blocking(move || Db::open(&dir, options))
        .await?
        .with_context(|| format!("cannot open the metrics store under {}", config.data_dir.display()))?;
    for corruption in &report.corruptions {
        tracing::error!(error = %corruption, "corrupt wal data skipped; the rest is served");
    }
    if report.truncated_bytes > 0 {
        tracing::warn!(bytes = report.truncated_bytes, "torn wal tail truncated");
    }
    if report.partial_blocks_removed > 0 {
        tracing::warn!(count = report.partial_blocks_removed, "partially written blocks removed");
    }
    tracing::info!(
        blocks = report.blocks,
        series = report.series,
        samples = report.samples,
        replay_ms = opened.elapsed().as_millis() as u64,
        "metrics store opened"
    );
    metrics::counter!("vigil_tsdb_wal_corruptions_total").increment(report.corruptions.len() as u64);
    Ok(Arc::new(db))
}

/// Opens the log store under `<data-dir>/logs`, replaying its write-ahead log.
async fn open_logs(config: &ServerConfig) -> anyhow::Result<Arc<LogIndex>> {
    let dir = config.data_dir.join("logs");
    let opened = Instant::now();
    let options = config.logs.clone();
    let logs = tokio::task::spawn_blocking(move || LogIndex::open_with(&dir, options))
        .await?
        .with_context(|| format!("cannot open the log store under {}", config.data_dir.display()))?;
    tracing::info!(open_ms = opened.elapsed().as_millis() as u64, "log store opened");
    Ok(Arc::new(logs))
}

/// How often appended log records become searchable.
const LOG_COMMIT_INTERVAL: Duration = Duration::from_millis(500);

/// The thread committing the log index, and how to stop it.
struct LogCommits {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl LogCommits {
    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.thread.join();
    }
}

fn spawn_log_commits(logs: Arc<LogIndex>) -> LogCommits {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("log-commit".into())
        .spawn(move || logs.commit_loop(LOG_COMMIT_INTERVAL, move || flag.load(Ordering::Acquire)))
        .expect("a thread can be spawned");
    LogCommits { stop, thread }
}

/// The log and span stores the query routes read.
struct Stores {
    logs: Arc<LogIndex>,
    traces: TraceStore,
}

fn router(config: &ServerConfig, probes: Probes, ingest: &Ingest, stores: Stores, rules: Router) -> Router {
    let build = BuildInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        revision: option_env!("VIGIL_REVISION").unwrap_or("").into(),
    };
    let storage: Arc<dyn Queryable> = probes.db.clone();
    let runtime = runtime_info(config);
    let flags = flags_info(config);
    let own = Router::new()
        .route("/-/healthy", get(|| async { "Vigil is healthy.\n" }))
        .route("/-/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .route("/api/v1/status/runtimeinfo", get(move || std::future::ready(axum::Json(runtime.clone()))))
        .route("/api/v1/status/flags", get(move || std::future::ready(axum::Json(flags.clone()))))
        .with_state(probes);
    let app = Router::new()
        .merge(own)
        .merge(ingest.http_routes())
        .merge(vigil_query::prometheus::routes(
            storage.clone(),
            build.clone(),
            Engine::default(),
            MAX_CONCURRENT_QUERIES,
        ))
        .merge(vigil_query::kubernetes::routes(storage.clone()))
        .merge(vigil_query::loki::routes(stores.logs, build.clone()))
        .merge(vigil_query::jaeger::routes(Arc::new(stores.traces.clone()), storage))
        .merge(vigil_query::tempo::routes(Arc::new(stores.traces), build.clone()))
        .merge(rules)
        .merge(vigil_dashboards::routes(Some(config.data_dir.join("dashboards"))));
    with_common_layers(app, config)
}

/// The OTLP/HTTP listener's routes.
fn otlp_http_router(config: &ServerConfig, ingest: &Ingest) -> Router {
    with_common_layers(ingest.otlp_http_routes(), config)
}

/// The OTLP/gRPC listener's routes (HTTP/2); messages are bounded by `--max-body-size`.
fn otlp_grpc_router(config: &ServerConfig, ingest: &Ingest) -> Router {
    with_common_layers(ingest.otlp_grpc_routes(config.max_body_bytes), config)
}

/// What every listener applies: request telemetry, the body limit, bearer tokens.
fn with_common_layers(app: Router, config: &ServerConfig) -> Router {
    app.layer(axum::middleware::from_fn(http::record_request))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(Arc::new(config.tokens.clone()), http::require_token))
}

/// Binds `addr` and serves `app` on it (TLS when configured) until `stop`.
async fn listen(
    config: &ServerConfig,
    addr: SocketAddr,
    flag: &str,
    app: Router,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let tcp = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} ({flag})"))?;
    let bound = tcp.local_addr()?;
    let task = match &config.tls {
        Some((cert, key)) => {
            let listener = http::TlsListener::new(tcp, http::tls_config(cert, key)?)?;
            tokio::spawn(serve(listener, app, stop))
        }
        None => tokio::spawn(serve(tcp, app, stop)),
    };
    Ok((bound, task))
}

/// Binds the extra TLS listener of the HTTP routes: with the configured certificate, or a self-signed one.
async fn listen_https(
    config: &ServerConfig,
    addr: SocketAddr,
    app: Router,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let tls = match &config.tls {
        Some((cert, key)) => http::tls_config(cert, key)?,
        None => {
            tracing::info!(%addr, "no --tls-cert-file: --https-addr uses a self-signed certificate");
            tokio::task::spawn_blocking(http::self_signed_tls_config).await??
        }
    };
    let tcp = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} (--https-addr)"))?;
    let bound = tcp.local_addr()?;
    Ok((bound, tokio::spawn(serve(http::TlsListener::new(tcp, tls)?, app, stop))))
}

/// `/api/v1/status/runtimeinfo` in Prometheus's shape (Go-only fields are zero or empty).
fn runtime_info(config: &ServerConfig) -> serde_json::Value {
    let retention = config.db.retention_ms.map_or_else(|| "unlimited".to_owned(), |ms| format!("{}d", ms / 86_400_000));
    let cwd = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default();
    serde_json::json!({"status": "success", "data": {
        "startTime": chrono::Utc::now().to_rfc3339(),
        "CWD": cwd,
        "reloadConfigSuccess": true,
        "lastConfigTime": chrono::Utc::now().to_rfc3339(),
        "corruptionCount": 0,
        "goroutineCount": 0,
        "GOMAXPROCS": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "GOMEMLIMIT": 0,
        "GOGC": "",
        "GODEBUG": "",
        "storageRetention": retention,
    }})
}

/// `/api/v1/status/flags`: the effective settings, with Prometheus's flag names where one exists.
fn flags_info(config: &ServerConfig) -> serde_json::Value {
    let retention = config.db.retention_ms.map_or_else(|| "0s".to_owned(), |ms| format!("{}s", ms / 1000));
    serde_json::json!({"status": "success", "data": {
        "storage.tsdb.path": config.data_dir.join("metrics").display().to_string(),
        "storage.tsdb.retention.time": retention,
        "web.listen-address": config.http_addr.to_string(),
        "query.lookback-delta": "5m",
        "query.max-concurrency": MAX_CONCURRENT_QUERIES.to_string(),
        "query.max-samples": "50000000",
        "query.timeout": "2m",
    }})
}

async fn ready(State(probes): State<Probes>) -> impl IntoResponse {
    if probes.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "Vigil is ready.\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Vigil is not ready.\n")
    }
}

/// Sets the gauges read off the metric store; called before every rendering of the telemetry.
pub(crate) fn update_storage_gauges(db: &Db) {
    metrics::gauge!("vigil_tsdb_head_series").set(db.series_count() as f64);
    metrics::gauge!("vigil_tsdb_blocks").set(db.blocks().len() as f64);
    metrics::gauge!("vigil_tsdb_blocks_bytes").set(db.blocks_size_bytes() as f64);
}

async fn render_metrics(State(probes): State<Probes>) -> impl IntoResponse {
    update_storage_gauges(&probes.db);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], probes.metrics.render())
}

pub(crate) async fn serve<L>(listener: L, app: Router, mut stop: watch::Receiver<bool>) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        })
        .await
}

/// An interval whose late ticks are delayed, not bunched up.
pub(crate) fn ticker(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Waits for the next tick; false once `stop` turns true.
pub(crate) async fn next_tick(tick: &mut tokio::time::Interval, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tick.tick() => true,
        _ = stop.wait_for(|stopped| *stopped) => false,
    }
}

/// SIGTERM and SIGINT handlers, registered before anything else so a stop during start-up is clean too.
pub(crate) struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub(crate) fn register() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    pub(crate) async fn wait(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

fn print_urls(scheme: &str, addr: SocketAddr, otlp_http: SocketAddr, otlp_grpc: SocketAddr) {
    let host = if addr.ip().is_unspecified() { "localhost".to_owned() } else { addr.ip().to_string() };
    let base = format!("{scheme}://{host}:{}", addr.port());
    println!("Vigil is up.");
    println!("  UI:              {base}/ui/");
    println!("  Prometheus API:  {base}/api/v1/  (Grafana Prometheus datasource URL: {base})");
    println!("  Remote write:    {base}/api/v1/write");
    println!("  Own metrics:     {base}/metrics");
    println!("  Loki API:        {base}/loki/api/v1/  (Grafana Loki datasource URL: {base}; push: /loki/api/v1/push)");
    println!("  Jaeger API:      {base}/jaeger/api/  (Grafana Jaeger datasource URL: {base}/jaeger)");
    println!("  Tempo API:       {base}/tempo/api/  (Grafana Tempo datasource URL: {base}/tempo)");
    println!("  Zipkin:          {base}/api/v2/spans");
    let otlp_host = if otlp_http.ip().is_unspecified() { "localhost".to_owned() } else { otlp_http.ip().to_string() };
    let otlp_base = format!("{scheme}://{otlp_host}:{}", otlp_http.port());
    println!("  OTLP/HTTP:       {otlp_base}/v1/traces  {otlp_base}/v1/metrics  {otlp_base}/v1/logs");
    let grpc_host = if otlp_grpc.ip().is_unspecified() { "localhost".to_owned() } else { otlp_grpc.ip().to_string() };
    println!("  OTLP/gRPC:       {grpc_host}:{} (traces, metrics, logs)", otlp_grpc.port());
    println!("  Probes:          {base}/-/healthy  {base}/-/ready");
}
