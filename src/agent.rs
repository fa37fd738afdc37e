//! `vigil agent`: the node agent (DaemonSet). Collects container and host metrics every interval, serves
//! them on its own `/metrics` (as the kubelet's cAdvisor endpoint would), and ships them to the server over
//! OTLP/gRPC through a disk buffer under `--state-dir`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;
use vigil_agent::cgroup::ContainerCollector;
use vigil_agent::discovery::ScrapeJob;
use vigil_agent::podlogs;
use vigil_agent::scrape::{Scraper, Target};
use vigil_agent::ship::{self, DiskBuffer, JobPoints, ShipTarget};
use vigil_agent::tail::Tailer;
use vigil_agent::{exposition, host};

use crate::config::AgentConfig;
use crate::server::{StopSignals, next_tick, serve, ticker};
use crate::telemetry;

/// What `/metrics` serves: the last collection (container points, then host points), rendered when
/// asked for, and the agent's own telemetry.
#[derive(Clone)]
struct Exposed {
    last_collection: Arc<RwLock<LastCollection>>,
    telemetry: PrometheusHandle,
}

/// The container points and the host points of the last collection.
type LastCollection = [Vec<vigil_agent::Point>; 2];

/// Runs until SIGTERM/SIGINT. Batches not yet shipped stay in the buffer for the next run.
pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut stop_signals = StopSignals::register()?;
    let telemetry = telemetry::install()?;
    let buffer_dir = config.state_dir.join("buffer/metrics");
    let buffer = DiskBuffer::open(&buffer_dir, config.buffer_max_bytes)
        .with_context(|| format!("cannot open the disk buffer in {}", buffer_dir.display()))?;
    let pending = buffer.len();
    let buffer = Arc::new(Mutex::new(buffer));
    let exposed = Exposed { last_collection: Arc::default(), telemetry };

    let (stop_sender, stop) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on {} (--http-addr)", config.http_addr))?;
    let http_addr = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/-/healthy", get(|| async { "Vigil agent is healthy.\n" }))
        .route("/-/ready", get(|| async { "Vigil agent is ready.\n" }))
        .with_state(exposed.clone());
    let http = tokio::spawn(serve(listener, app, stop.clone()));
    let ca_pem = match &config.tls_ca_file {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("cannot read --tls-ca-file {}", path.display()))?)
        }
        None => None,
    };
    let target = ShipTarget { endpoint: config.server.clone(), token: config.ingest_token.clone(), ca_pem };
    let shipper = tokio::spawn(ship::run_shipper(buffer.clone(), target.clone(), stop.clone()));
    let logs_dir = config.state_dir.join("buffer/logs");
    let logs_buffer: DiskBuffer<podlogs::LogsRequest> = DiskBuffer::open(&logs_dir, config.buffer_max_bytes)
        .with_context(|| format!("cannot open the disk buffer in {}", logs_dir.display()))?;
    let logs_buffer = Arc::new(Mutex::new(logs_buffer));
    let log_shipper = tokio::spawn(ship::run_shipper(logs_buffer.clone(), target, stop.clone()));
    let log_follower = tokio::spawn(follow_pod_logs(config.clone(), logs_buffer, stop.clone()));
    let scrapes =
        tokio::spawn(run_scrapes(config.scrape_jobs.clone(), config.node_name.clone(), buffer.clone(), stop.clone()));
    let collector = tokio::spawn(collect_loop(config.clone(), buffer, exposed, stop.clone()));
    tracing::info!(
        %http_addr,
        server = %config.server,
        node = %config.node_name,
        root = %config.root.display(),
        buffered_batches = pending,
        startup_ms = started.elapsed().as_millis() as u64,
        "vigil agent is ready"
    );

    stop_signals.wait().await;
    tracing::info!("stop signal received");
    let _ = stop_sender.send(true);
    let stopped = async {
        let _ = scrapes.await;
        (collector.await, shipper.await, http.await, log_follower.await, log_shipper.await)
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), stopped).await;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn render_metrics(State(exposed): State<Exposed>) -> impl axum::response::IntoResponse {
    let mut text = match exposed.last_collection.read() {
        Ok(points) => points.iter().map(|points| exposition::render(points, &[])).collect(),
        Err(_) => String::new(),
    };
    text.push_str(&exposed.telemetry.render());
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
}

/// A running scrape loop: its handle, and the sender that retires it when its target goes away.
type Running = (watch::Sender<bool>, tokio::task::JoinHandle<()>);

/// Runs the scrape jobs until `stop`: discovers their targets (again every file discovery refresh
/// interval), keeps one scrape loop per target, and retires the loops of targets that went away, which
/// then write staleness markers for their series.
async fn run_scrapes(
    jobs: Vec<ScrapeJob>,
    node: String,
    buffer: Arc<Mutex<DiskBuffer>>,
    mut stop: watch::Receiver<bool>,
) {
    let refresh = jobs.iter().filter_map(ScrapeJob::refresh_interval).min();
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    loop {
        let jobs_now = jobs.clone();
        let discovered = tokio::task::spawn_blocking(move || discover(&jobs_now)).await.unwrap_or_default();
        let mut wanted: BTreeMap<String, Target> =
            discovered.into_iter().map(|t| (format!("{}|{}|{:?}", t.job, t.url, t.labels), t)).collect();
        let gone: Vec<String> = running.keys().filter(|key| !wanted.contains_key(*key)).cloned().collect();
        for key in gone {
            let (retire, handle) = running.remove(&key).expect("a running key");
            tracing::info!(target = %key, "scrape target went away");
            let _ = retire.send(true);
            let _ = handle.await;
        }
        for key in running.keys() {
            wanted.remove(key);
        }
        for (key, target) in wanted {
            let (retire, retired) = watch::channel(false);
            let scraper = Scraper::new(target);
            let handle = tokio::spawn(scrape_loop(scraper, node.clone(), buffer.clone(), stop.clone(), retired));
            running.insert(key, (retire, handle));
        }
        let Some(refresh) = refresh else { break };
        tokio::select! {
            _ = tokio::time::sleep(refresh) => {}
            _ = stop.wait_for(|stopped| *stopped) => break,
        }
    }
    for (_, (_, handle)) in running {
        let _ = handle.await;
    }
}

/// Every target of `jobs` now; discovery files that cannot be read are logged and skipped.
fn discover(jobs: &[ScrapeJob]) -> Vec<Target> {
    let mut targets = Vec::new();
    for job in jobs {
        let (groups, errors) = job.groups();
        for error in errors {
            tracing::warn!(job = %job.job, %error, "target discovery failed for a source");
        }
        targets.extend(job.targets(&groups));
    }
    targets
}

/// Scrapes `scraper`'s target every interval until `stop`, or until `retired`, when it writes staleness
/// markers for every series of the target first.
async fn scrape_loop(
    scraper: Scraper,
    node: String,
    buffer: Arc<Mutex<DiskBuffer>>,
    mut stop: watch::Receiver<bool>,
    mut retired: watch::Receiver<bool>,
) {
    let scraper = Arc::new(Mutex::new(scraper));
    let interval = scraper.lock().expect("scraper lock").target().interval;
    let mut tick = ticker(interval);
    loop {
        let retiring = tokio::select! {
            running = next_tick(&mut tick, &mut stop) => if running { false } else { return },
            _ = retired.wait_for(|retired| *retired) => true,
        };
        let (scraper, buffer, node) = (scraper.clone(), buffer.clone(), node.clone());
        let task = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut scraper = scraper.lock().expect("scraper lock");
            let time = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
            let points = if retiring { scraper.stale_all() } else { scraper.scrape() };
            // `job` and `instance` travel as the resource's service name and instance id.
            let points = points
                .into_iter()
                .map(|mut point| {
                    point.labels.retain(|(name, _)| name != "job" && name != "instance");
                    point
                })
                .collect();
            let target = scraper.target();
            let job = JobPoints { job: target.job.clone(), instance: Some(target.instance.clone()), points };
            buffer.lock().expect("buffer lock").push(&ship::encode(&[job], &node, time))?;
            Ok(())
        });
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "buffering a scrape failed"),
            Err(error) => tracing::error!(%error, "scrape task failed"),
        }
        if retiring {
            return;
        }
    }
}

/// How often pod log files are read (at once again while a file has more than one read takes).
const POD_LOG_POLL: Duration = Duration::from_secs(1);

/// Most text in one shipped logs request, well under the server's default body limit (32 MiB).
const MAX_LOGS_REQUEST_TEXT: usize = 1 << 20;

/// Follows the kubelet's pod log files under the root into the logs buffer until `stop`. Offsets are
/// checkpointed (`pod-log-offsets.json` in the state directory) once the lines are in the disk buffer, and
/// never past an entry still being assembled; records carry their positions, so what a crash makes the
/// agent read and send again is dropped by the server.
async fn follow_pod_logs(
    config: AgentConfig,
    buffer: Arc<Mutex<DiskBuffer<podlogs::LogsRequest>>>,
    mut stop: watch::Receiver<bool>,
) {
    let checkpoint = config.state_dir.join("pod-log-offsets.json");
    let pods_dir = config.root.join("var/log/pods");
    let assembler = podlogs::Assembler::new(config.multiline_start.clone());
    let state = Arc::new(Mutex::new((Tailer::new(&pods_dir, &checkpoint), assembler)));
    let mut tick = ticker(POD_LOG_POLL);
    let mut backlog = false;
    while if backlog { !*stop.borrow() } else { next_tick(&mut tick, &mut stop).await } {
        let (config, buffer, state) = (config.clone(), buffer.clone(), state.clone());
        let task = tokio::task::spawn_blocking(move || -> anyhow::Result<(usize, bool)> {
            if buffer.lock().expect("buffer lock").is_full() {
                // The server is away and the buffer is at its limit: reading pauses, nothing is dropped.
                return Ok((0, false));
            }
            let mut state = state.lock().expect("tailer lock");
            let (tailer, assembler) = &mut *state;
            let read = tailer.poll_files(podlogs::files(&config.root));
            let found = assembler.entries(&read);
            let count: usize = found.values().map(Vec::len).sum();
            for request in podlogs::encode_batches(&found, &config.node_name, MAX_LOGS_REQUEST_TEXT) {
                if let Err(error) = buffer.lock().expect("buffer lock").push_encoded_keeping(&request) {
                    // Requests of this poll already buffered are read and sent again; the server drops them.
                    tailer.rewind();
                    assembler.reset();
                    return Err(error.into());
                }
            }
            tailer.commit_holding(&assembler.holds())?;
            Ok((count, tailer.backlog()))
        });
        backlog = false;
        match task.await {
            Ok(Ok((lines, more))) => {
                metrics::counter!("vigil_agent_log_lines_total").increment(lines as u64);
                backlog = more;
            }
            Ok(Err(error)) => tracing::error!(%error, "following pod logs failed; will retry"),
            Err(error) => tracing::error!(%error, "pod log task failed"),
        }
    }
}

/// Collects every interval (first at once) until `stop`.
async fn collect_loop(
    config: AgentConfig,
    buffer: Arc<Mutex<DiskBuffer>>,
    exposed: Exposed,
    mut stop: watch::Receiver<bool>,
) {
    let containers = Arc::new(Mutex::new(ContainerCollector::new(&config.root)));
    let mut tick = ticker(config.interval);
    while next_tick(&mut tick, &mut stop).await {
        let (config, buffer, containers) = (config.clone(), buffer.clone(), containers.clone());
        let exposed = exposed.last_collection.clone();
        let task = tokio::task::spawn_blocking(move || collect_once(&config, &buffer, &containers, &exposed));
        match task.await {
            Ok(Ok(points)) => metrics::counter!("vigil_agent_samples_collected_total").increment(points as u64),
            Ok(Err(error)) => tracing::error!(%error, "buffering a collection failed"),
            Err(error) => tracing::error!(%error, "collection task failed"),
        }
    }
}

/// One collection: container metrics as job `cadvisor`, host metrics as job `node`; buffered for shipping
/// and kept for `/metrics`. Returns the number of points.
fn collect_once(
    config: &AgentConfig,
    buffer: &Mutex<DiskBuffer>,
    containers: &Mutex<ContainerCollector>,
    exposed: &RwLock<LastCollection>,
) -> anyhow::Result<usize> {
    let collected_at = chrono::Utc::now();
    let (container_points, container_errors) = containers.lock().expect("collector lock").collect();
    let (host_points, host_errors) = host::collect(&config.root);
    for error in container_errors.iter().chain(&host_errors) {
        tracing::warn!(%error, "metric source failed");
    }
    let points = container_points.len() + host_points.len();
    let jobs = [
        JobPoints { job: "cadvisor".into(), instance: None, points: container_points },
        JobPoints { job: "node".into(), instance: None, points: host_points },
    ];
    let time = collected_at.timestamp_nanos_opt().unwrap_or_default() as u64;
    let request = ship::encode(&jobs, &config.node_name, time);
    *exposed.write().expect("exposition lock") = jobs.map(|job| job.points);
    let dropped = buffer.lock().expect("buffer lock").push(&request)?;
    if dropped > 0 {
        tracing::warn!(dropped, "disk buffer full; dropped the oldest batches");
    }
    Ok(points)
}
