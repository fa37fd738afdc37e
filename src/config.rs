//! The config file, and its merge with flags and env (flags > env > file > defaults).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use vigil_tsdb::{DbOptions, HeadLimits, WalSync};

use crate::cli::{AgentArgs, LogFormat, ServerArgs, UpArgs};

/// The YAML config file. Every key is optional; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// Logging.
    pub log: LogSection,
    /// The server (`server` and `up`).
    pub server: ServerSection,
    /// The agent (`agent`, and the local agent of `up`).
    pub agent: AgentSection,
    /// Prometheus's `global:` (rule evaluation interval, external labels).
    pub global: GlobalSection,
    /// Prometheus's `rule_files:` (globs).
    pub rule_files: Vec<String>,
    /// Rule files whose expressions are LogQL (globs), as Loki's ruler reads them.
    pub log_rule_files: Vec<String>,
    /// Prometheus's `alerting:`.
    pub alerting: AlertingSection,
    /// Webhook receivers notified straight from rule evaluation.
    pub webhooks: Vec<WebhookSection>,
}

/// `global:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GlobalSection {
    /// Interval of rule groups that set none, e.g. `1m`.
    pub evaluation_interval: Option<String>,
    /// Labels added to outgoing alerts and available as `$externalLabels`.
    pub external_labels: std::collections::BTreeMap<String, String>,
}

/// `alerting:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingSection {
    /// Alertmanagers, as Prometheus lists them.
    pub alertmanagers: Vec<AlertmanagerSection>,
}

/// One `alerting.alertmanagers:` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertmanagerSection {
    /// `http` or `https`.
    pub scheme: Option<String>,
    /// Prefix of the API path.
    pub path_prefix: Option<String>,
    /// Request timeout, e.g. `10s`.
    pub timeout: Option<String>,
    /// Only `v2` exists.
    pub api_version: Option<String>,
    /// `targets: [host:port]` groups.
    pub static_configs: Vec<StaticConfig>,
}

/// `static_configs:` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaticConfig {
    /// `host:port` of each target.
    pub targets: Vec<String>,
}

/// One `webhooks:` entry: Alertmanager's webhook receiver and route timing in one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSection {
    /// Receiver name [default: the URL].
    pub name: Option<String>,
    /// Where notifications are posted.
    pub url: String,
    /// Labels grouping alerts into one notification [default: alertname]; `...` for all.
    pub group_by: Option<Vec<String>>,
    /// [default: 30s]
    pub group_wait: Option<String>,
    /// [default: 5m]
    pub group_interval: Option<String>,
    /// [default: 4h]
    pub repeat_interval: Option<String>,
    /// [default: true]
    pub send_resolved: Option<bool>,
    /// [default: 0, all]
    pub max_alerts: Option<usize>,
    /// [default: 10s]
    pub timeout: Option<String>,
    /// `Authorization: Bearer` token.
    pub bearer_token: Option<String>,
    /// Basic auth.
    pub basic_auth: Option<BasicAuth>,
}

/// `basic_auth:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User.
    pub username: String,
    /// Password.
    pub password: String,
}

/// `log:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `human` or `json`.
    pub format: Option<LogFormat>,
    /// Filter such as `info`.
    pub level: Option<String>,
}

/// `server:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub data_dir: Option<PathBuf>,
    pub http_addr: Option<SocketAddr>,
    pub otlp_grpc_addr: Option<SocketAddr>,
    pub otlp_http_addr: Option<SocketAddr>,
    pub https_addr: Option<SocketAddr>,
    pub tls: TlsSection,
    pub auth: AuthSection,
    pub limits: LimitsSection,
    pub storage: StorageSection,
}

/// `server.tls:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// `server.auth:` bearer tokens; a scope without a token is open.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    pub ingest_token: Option<String>,
    pub query_token: Option<String>,
    pub admin_token: Option<String>,
}

/// `server.limits:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Largest request body, e.g. `32MiB`.
    pub max_body_size: Option<String>,
    /// Largest size a compressed body may expand to.
    pub max_decompressed_size: Option<String>,
    /// Series held at most.
    pub max_series: Option<usize>,
    /// Labels per series at most.
    pub max_label_count: Option<usize>,
    /// Bytes per label value at most.
    pub max_label_value_length: Option<usize>,
    /// Ingest requests handled at once; more get 429 (gRPC `UNAVAILABLE`).
    pub max_inflight_ingest: Option<usize>,
}

/// `server.storage:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// `always`, `never` or an interval such as `1s`.
    pub wal_fsync: Option<String>,
    /// How far behind a series' newest sample a sample may arrive, e.g. `10m`.
    pub out_of_order_window: Option<String>,
    /// Blocks older than this are deleted, e.g. `15d`.
    pub retention_time: Option<String>,
    /// Oldest blocks are deleted while blocks take more than this, e.g. `50GiB`.
    pub retention_size: Option<String>,
    /// Time range of a block cut from memory, e.g. `2h`.
    pub block_duration: Option<String>,
    /// Log partitions older than this are dropped, e.g. `30d`.
    pub log_retention_time: Option<String>,
    /// Oldest log partitions are dropped while logs take more than this.
    pub log_retention_size: Option<String>,
    /// Span blocks older than this are dropped, e.g. `7d`.
    pub trace_retention_time: Option<String>,
    /// Oldest span blocks are dropped while spans take more than this.
    pub trace_retention_size: Option<String>,
}

/// `agent:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSection {
    pub server: Option<String>,
    pub root: Option<PathBuf>,
    pub node_name: Option<String>,
    pub state_dir: Option<PathBuf>,
    /// Collection interval, e.g. `15s`.
    pub interval: Option<String>,
    /// The standalone agent's own listener.
    pub http_addr: Option<SocketAddr>,
    /// Disk buffer limit, e.g. `256MiB`.
    pub buffer_max_size: Option<String>,
    /// `vigil up`: a directory whose `*.log` files are followed into the log store.
    pub log_dir: Option<PathBuf>,
    /// Bearer token for the server's ingest scope.
    pub ingest_token: Option<String>,
    /// CA certificate (PEM) trusted for an `https://` server.
    pub tls_ca_file: Option<PathBuf>,
    /// Multiline grouping: a pod log line not matching this regex joins the entry before it.
    pub log_multiline_start: Option<String>,
    /// Prometheus's `scrape_configs` (static targets).
    pub scrape_configs: Vec<ScrapeConfigSection>,
}

/// One `agent.scrape_configs:` entry, with Prometheus's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrapeConfigSection {
    pub job_name: String,
    /// [default: the agent's interval]
    pub scrape_interval: Option<String>,
    /// [default: 10s, at most the interval]
    pub scrape_timeout: Option<String>,
    /// [default: /metrics]
    pub metrics_path: Option<String>,
    /// `http` or `https` [default: http].
    pub scheme: Option<String>,
    pub honor_labels: bool,
    /// 0 for no limit.
    pub sample_limit: usize,
    /// e.g. `10MiB` [default: unlimited, 256MiB in practice].
    pub body_size_limit: Option<String>,
    /// Target groups written out (the same shape as a discovery file's).
    pub static_configs: Vec<vigil_agent::discovery::TargetGroup>,
    /// Files of target groups (JSON or YAML), read again every `refresh_interval`.
    pub file_sd_configs: Vec<FileSdSection>,
    /// The pods of the agent's node, from the Kubernetes API (`role: pod`).
    pub kubernetes_sd_configs: Vec<KubernetesSdSection>,
    /// Applied to each target's labels (`__address__`, `__scheme__`, `__metrics_path__`, `job`, static labels).
    pub relabel_configs: Vec<vigil_agent::relabel::RelabelConfig>,
    /// Applied to each scraped sample.
    pub metric_relabel_configs: Vec<vigil_agent::relabel::RelabelConfig>,
}

/// `kubernetes_sd_configs:` entry of a scrape config: Prometheus's keys, `role: pod` only. The agent
/// lists only the pods of its own node.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesSdSection {
    /// Must be `pod`.
    pub role: String,
    /// [default: in cluster: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, with the
    /// service account's token and CA]
    pub api_server: Option<String>,
    /// [default: all namespaces]
    pub namespaces: NamespacesSection,
    pub bearer_token_file: Option<PathBuf>,
    pub tls_config: TlsConfigSection,
    /// How often the pods are listed (a Vigil key) [default: 30s]
    pub refresh_interval: Option<String>,
}

/// `namespaces:` of a `kubernetes_sd_configs` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NamespacesSection {
    pub names: Vec<String>,
}

/// `tls_config:` of a `kubernetes_sd_configs` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfigSection {
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

/// Where a pod's service account token and CA are mounted.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The Kubernetes discovery of one `kubernetes_sd_configs` entry, for the pods of `node`.
fn kubernetes_sd(
    section: &KubernetesSdSection,
    node: &str,
    job: &str,
) -> anyhow::Result<vigil_agent::kubernetes::KubernetesSd> {
    use vigil_agent::kubernetes::{DEFAULT_REFRESH, KubernetesSd};
    anyhow::ensure!(
        section.role == "pod",
        "agent.scrape_configs {job:?}: kubernetes_sd_configs role {:?} is not supported (only \"pod\")",
        section.role
    );
    let in_cluster = section.api_server.is_none();
    let api_server = match &section.api_server {
        Some(url) => url.clone(),
        None => {
            let host = std::env::var("KUBERNETES_SERVICE_HOST").with_context(|| {
                format!(
                    "agent.scrape_configs {job:?}: no api_server, and not in a cluster (no KUBERNETES_SERVICE_HOST)"
                )
            })?;
            let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
            let host = if host.contains(':') { format!("[{host}]") } else { host };
            format!("https://{host}:{port}")
        }
    };
    let mounted = |name: &str| Some(Path::new(SERVICE_ACCOUNT_DIR).join(name)).filter(|_| in_cluster);
    Ok(KubernetesSd {
        api_server,
        namespaces: section.namespaces.names.clone(),
        node: Some(node.to_owned()),
        bearer_token_file: section.bearer_token_file.clone().or_else(|| mounted("token")),
        ca_file: section.tls_config.ca_file.clone().or_else(|| mounted("ca.crt")),
        insecure_skip_verify: section.tls_config.insecure_skip_verify,
        refresh_interval: section
            .refresh_interval
            .as_deref()
            .map(parse_duration)
            .transpose()?
            .unwrap_or(DEFAULT_REFRESH),
        last_known: Default::default(),
    })
}

/// `file_sd_configs:` entry of a scrape config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileSdSection {
    /// Paths; the last path element may be a glob (`targets/*.json`).
    pub files: Vec<String>,
    /// [default: 5m]
    pub refresh_interval: Option<String>,
}

impl FileConfig {
    /// Reads and validates a config file; errors name the file, and serde's message names the key and line.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses config text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        if text.trim().is_empty() {
            return Ok(FileConfig::default());
        }
        Ok(serde_yaml::from_str(text)?)
    }

    /// The file named by `--config`, or an empty config.
    pub fn load_optional(path: Option<&Path>) -> anyhow::Result<Self> {
        path.map_or_else(|| Ok(FileConfig::default()), Self::load)
    }
}

/// Bearer tokens by scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    pub ingest: Option<String>,
    pub query: Option<String>,
    pub admin: Option<String>,
}

/// Everything the server needs, resolved.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub http_addr: SocketAddr,
    pub otlp_grpc_addr: SocketAddr,
    pub otlp_http_addr: SocketAddr,
    /// The extra TLS listener of the HTTP routes, if any.
    pub https_addr: Option<SocketAddr>,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub tokens: Tokens,
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    /// Ingest requests handled at once.
    pub max_inflight_ingest: usize,
    pub db: DbOptions,
    /// Log store partitioning and retention.
    pub logs: vigil_tsdb::logs::LogOptions,
    /// Span store flushing and retention.
    pub traces: vigil_tsdb::traces::TraceOptions,
    /// Rules and where alerts go.
    pub alerting: AlertingConfig,
}

/// Rule files, evaluation defaults and alert receivers, resolved.
#[derive(Debug, Clone)]
pub struct AlertingConfig {
    /// Rule file patterns: the file's `rule_files:` then `--rule-file`.
    pub rule_patterns: Vec<String>,
    /// Log rule file patterns: `log_rule_files:` then `--log-rule-file`.
    pub log_rule_patterns: Vec<String>,
    /// Interval of groups that set none.
    pub evaluation_interval: Duration,
    /// Labels added to outgoing alerts.
    pub external_labels: std::collections::BTreeMap<String, String>,
    /// This server's URL as alert links give it; `None` derives it from the HTTP address.
    pub external_url: Option<String>,
    /// Alertmanager base URLs and timeouts.
    pub alertmanagers: Vec<vigil_query::rules::notify::AlertmanagerTarget>,
    /// Webhook receivers.
    pub webhooks: Vec<vigil_query::rules::webhook::WebhookConfig>,
}

/// What the local agent of `vigil up` reads.
#[derive(Debug, Clone)]
pub struct LocalAgentConfig {
    pub node_name: String,
    pub root: PathBuf,
    pub interval: Duration,
    /// `*.log` files here are followed into the log store.
    pub log_dir: Option<PathBuf>,
}

/// What the standalone agent reads.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    pub root: PathBuf,
    pub interval: Duration,
    /// OTLP/gRPC endpoint of the server, `http://host:4317`.
    pub server: String,
    pub state_dir: PathBuf,
    pub http_addr: SocketAddr,
    pub buffer_max_bytes: u64,
    /// Bearer token sent with every batch.
    pub ingest_token: Option<String>,
    /// CA certificate (PEM) trusted for an `https://` server.
    pub tls_ca_file: Option<PathBuf>,
    /// Targets scraped.
    pub scrape_jobs: Vec<vigil_agent::discovery::ScrapeJob>,
    /// Multiline grouping of pod logs: where an entry starts.
    pub multiline_start: Option<regex::Regex>,
}

/// Parses `32MiB`, `512KiB`, `1GB`, `1048576`.
pub fn parse_size(raw: &str) -> anyhow::Result<usize> {
    let text = raw.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number.parse().with_context(|| format!("invalid size {raw:?}"))?;
    let multiplier: usize = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        other => bail!("invalid size {raw:?}: unknown unit {other:?} (use B, KiB, MiB, GiB, KB, MB or GB)"),
    };
    number.checked_mul(multiplier).with_context(|| format!("size {raw:?} is too large"))
}

/// Parses a Prometheus-style duration such as `15s` or `1h30m`.
pub fn parse_duration(raw: &str) -> anyhow::Result<Duration> {
    let seconds = vigil_query::parse_duration_seconds(raw).map_err(anyhow::Error::msg)?;
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_wal_sync(raw: &str) -> anyhow::Result<WalSync> {
    match raw {
        "always" => Ok(WalSync::Always),
        "never" => Ok(WalSync::Never),
        interval => parse_duration(interval)
            .map(WalSync::Interval)
            .with_context(|| format!("invalid wal_fsync {raw:?}: use always, never or an interval like 1s")),
    }
}

/// Rules and receivers from the file's Prometheus-shaped sections and `--rule-file`.
fn alerting_config(args: &ServerArgs, file: &FileConfig) -> anyhow::Result<AlertingConfig> {
    use vigil_query::rules::notify::AlertmanagerTarget;
    use vigil_query::rules::webhook::WebhookConfig;
    let mut alertmanagers = Vec::new();
    for section in &file.alerting.alertmanagers {
        if let Some(version) = section.api_version.as_deref().filter(|v| *v != "v2") {
            bail!("alerting.alertmanagers: api_version {version:?} is not supported; only v2 exists");
        }
        let scheme = section.scheme.as_deref().unwrap_or("http");
        let prefix = section.path_prefix.as_deref().unwrap_or("").trim_end_matches('/');
        let timeout = section.timeout.as_deref().map(parse_duration).transpose()?.unwrap_or(Duration::from_secs(10));
        for target in section.static_configs.iter().flat_map(|c| &c.targets) {
            alertmanagers.push(AlertmanagerTarget { base_url: format!("{scheme}://{target}{prefix}"), timeout });
        }
    }
    let mut webhooks = Vec::new();
    for section in &file.webhooks {
        anyhow::ensure!(!section.url.is_empty(), "webhooks: every receiver needs a url");
        let mut webhook = WebhookConfig::new(section.name.as_deref().unwrap_or(&section.url), &section.url);
        let duration = |raw: &Option<String>, default: Duration| -> anyhow::Result<Duration> {
            raw.as_deref().map(parse_duration).transpose().map(|d| d.unwrap_or(default))
        };
        webhook.group_wait = duration(&section.group_wait, webhook.group_wait)?;
        webhook.group_interval = duration(&section.group_interval, webhook.group_interval)?;
        webhook.repeat_interval = duration(&section.repeat_interval, webhook.repeat_interval)?;
        webhook.timeout = duration(&section.timeout, webhook.timeout)?;
        if let Some(group_by) = &section.group_by {
            webhook.group_by = group_by.clone();
        }
        webhook.send_resolved = section.send_resolved.unwrap_or(true);
        webhook.max_alerts = section.max_alerts.unwrap_or(0);
        webhook.bearer_token = section.bearer_token.clone();
        webhook.basic_auth = section.basic_auth.as_ref().map(|a| (a.username.clone(), a.password.clone()));
        webhooks.push(webhook);
    }
    let interval = file.global.evaluation_interval.as_deref().map(parse_duration).transpose()?;
    Ok(AlertingConfig {
        rule_patterns: file.rule_files.iter().chain(&args.rule_files).cloned().collect(),
        log_rule_patterns: file.log_rule_files.iter().chain(&args.log_rule_files).cloned().collect(),
        evaluation_interval: interval.unwrap_or(Duration::from_secs(60)),
        external_labels: file.global.external_labels.clone(),
        external_url: args.external_url.clone(),
        alertmanagers,
        webhooks,
    })
}

/// Merges flags (env already folded in by clap) over the file over defaults.
pub fn server_config(args: &ServerArgs, file: &FileConfig) -> anyhow::Result<ServerConfig> {
    let section = &file.server;
    let tls = match (
        args.tls_cert_file.clone().or_else(|| section.tls.cert_file.clone()),
        args.tls_key_file.clone().or_else(|| section.tls.key_file.clone()),
    ) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => bail!("TLS needs both a certificate and a key file (--tls-cert-file and --tls-key-file)"),
    };
    let max_body = args.max_body_size.as_deref().or(section.limits.max_body_size.as_deref()).unwrap_or("32MiB");
    let max_decompressed = section.limits.max_decompressed_size.as_deref().unwrap_or("256MiB");
    let wal_sync = args.wal_fsync.as_deref().or(section.storage.wal_fsync.as_deref()).unwrap_or("always");
    let mut db = DbOptions { wal_sync: parse_wal_sync(wal_sync)?, ..DbOptions::default() };
    if let Some(window) = &section.storage.out_of_order_window {
        db.out_of_order_window_ms = parse_duration(window)?.as_millis() as i64;
    }
    if let Some(retention) = args.retention_time.as_deref().or(section.storage.retention_time.as_deref()) {
        db.retention_ms = Some(parse_duration(retention)?.as_millis() as i64);
    }
    if let Some(size) = args.retention_size.as_deref().or(section.storage.retention_size.as_deref()) {
        db.retention_bytes = Some(parse_size(size)? as u64);
    }
    if let Some(duration) = &section.storage.block_duration {
        db.block_duration_ms = parse_duration(duration)?.as_millis() as i64;
        anyhow::ensure!(db.block_duration_ms >= 60_000, "storage.block_duration must be at least 1m");
    }
    let defaults = HeadLimits::default();
    db.limits = HeadLimits {
        max_series: section.limits.max_series.unwrap_or(defaults.max_series),
        max_label_count: section.limits.max_label_count.unwrap_or(defaults.max_label_count),
        max_label_value_len: section.limits.max_label_value_length.unwrap_or(defaults.max_label_value_len),
        ..defaults
    };
    let alerting = alerting_config(args, file)?;
    let mut logs = vigil_tsdb::logs::LogOptions::default();
    let log_retention =
        args.log_retention_time.as_deref().or(section.storage.log_retention_time.as_deref()).unwrap_or("15d");
    logs.retention_ns = Some(parse_duration(log_retention)?.as_nanos() as i64);
    if let Some(size) = args.log_retention_size.as_deref().or(section.storage.log_retention_size.as_deref()) {
        logs.max_bytes = Some(parse_size(size)? as u64);
    }
    let mut traces = vigil_tsdb::traces::TraceOptions { wal_sync: db.wal_sync, ..Default::default() };
    let trace_retention =
        args.trace_retention_time.as_deref().or(section.storage.trace_retention_time.as_deref()).unwrap_or("15d");
    traces.retention_ns = Some(parse_duration(trace_retention)?.as_nanos() as i64);
    if let Some(size) = args.trace_retention_size.as_deref().or(section.storage.trace_retention_size.as_deref()) {
        traces.max_bytes = Some(parse_size(size)? as u64);
    }
    Ok(ServerConfig {
        alerting,
        logs,
        traces,
        data_dir: args.data_dir.clone().or_else(|| section.data_dir.clone()).unwrap_or_else(|| "vigil-data".into()),
        http_addr: args.http_addr.or(section.http_addr).unwrap_or_else(|| ([0, 0, 0, 0], 9090).into()),
        otlp_grpc_addr: args.otlp_grpc_addr.or(section.otlp_grpc_addr).unwrap_or_else(|| ([0, 0, 0, 0], 4317).into()),
        otlp_http_addr: args.otlp_http_addr.or(section.otlp_http_addr).unwrap_or_else(|| ([0, 0, 0, 0], 4318).into()),
        https_addr: args.https_addr.or(section.https_addr),
        tls,
        tokens: Tokens {
            ingest: args.ingest_token.clone().or_else(|| section.auth.ingest_token.clone()),
            query: args.query_token.clone().or_else(|| section.auth.query_token.clone()),
            admin: args.admin_token.clone().or_else(|| section.auth.admin_token.clone()),
        },
        max_body_bytes: parse_size(max_body)?,
        max_decompressed_bytes: parse_size(max_decompressed)?,
        max_inflight_ingest: section.limits.max_inflight_ingest.unwrap_or(64),
        db,
    })
}

/// The local agent's settings for `vigil up`.
pub fn local_agent_config(args: &UpArgs, file: &FileConfig) -> anyhow::Result<LocalAgentConfig> {
    let section = &file.agent;
    let root = args.root.clone().or_else(|| section.root.clone()).unwrap_or_else(|| "/".into());
    let node_name = node_name_or_hostname(args.node_name.clone().or_else(|| section.node_name.clone()), &root);
    let interval = agent_interval(None, section, "15s")?;
    let log_dir = args.log_dir.clone().or_else(|| section.log_dir.clone());
    Ok(LocalAgentConfig { node_name, root, interval, log_dir })
}

/// The scrape jobs of the scrape configs, with Prometheus's defaults.
fn scrape_jobs(
    configs: &[ScrapeConfigSection],
    agent_interval: Duration,
    node: &str,
) -> anyhow::Result<Vec<vigil_agent::discovery::ScrapeJob>> {
    use vigil_agent::discovery::{DEFAULT_FILE_REFRESH, FileSd, ScrapeJob};
    let mut jobs = Vec::new();
    for config in configs {
        anyhow::ensure!(!config.job_name.is_empty(), "agent.scrape_configs: every entry needs a job_name");
        let compile =
            |rules: &[vigil_agent::relabel::RelabelConfig]| -> anyhow::Result<Vec<vigil_agent::relabel::Rule>> {
                rules
                    .iter()
                    .map(|r| {
                        r.compile().map_err(|e| anyhow::anyhow!("agent.scrape_configs {:?}: {e}", config.job_name))
                    })
                    .collect()
            };
        let file_sd = config
            .file_sd_configs
            .iter()
            .map(|sd| -> anyhow::Result<FileSd> {
                let refresh = sd.refresh_interval.as_deref().map(parse_duration).transpose()?;
                Ok(FileSd { files: sd.files.clone(), refresh_interval: refresh.unwrap_or(DEFAULT_FILE_REFRESH) })
            })
            .collect::<anyhow::Result<_>>()?;
        jobs.push(ScrapeJob {
            job: config.job_name.clone(),
            interval: config.scrape_interval.as_deref().map(parse_duration).transpose()?.unwrap_or(agent_interval),
            timeout: config
                .scrape_timeout
                .as_deref()
                .map(parse_duration)
                .transpose()?
                .unwrap_or(Duration::from_secs(10)),
            scheme: config.scheme.clone().unwrap_or_else(|| "http".into()),
            metrics_path: config.metrics_path.clone().unwrap_or_else(|| "/metrics".into()),
            honor_labels: config.honor_labels,
            sample_limit: config.sample_limit,
            body_limit: config.body_size_limit.as_deref().map(parse_size).transpose()?.unwrap_or(256 << 20) as u64,
            relabel: compile(&config.relabel_configs)?,
            metric_relabel: compile(&config.metric_relabel_configs)?,
            static_groups: config.static_configs.clone(),
            file_sd,
            kubernetes_sd: config
                .kubernetes_sd_configs
                .iter()
                .map(|section| kubernetes_sd(section, node, &config.job_name))
                .collect::<anyhow::Result<_>>()?,
        });
    }
    Ok(jobs)
}

/// The standalone agent's settings: flags, then env (both through clap), then the file's `agent:` section.
pub fn agent_config(args: &AgentArgs, file: &FileConfig) -> anyhow::Result<AgentConfig> {
    let section = &file.agent;
    let root = args.root.clone().or_else(|| section.root.clone()).unwrap_or_else(|| "/".into());
    let node_name = node_name_or_hostname(args.node_name.clone().or_else(|| section.node_name.clone()), &root);
    let interval = agent_interval(args.interval.as_deref(), section, "10s")?;
    let server =
        args.server.clone().or_else(|| section.server.clone()).unwrap_or_else(|| "http://127.0.0.1:4317".into());
    if !(server.starts_with("http://") || server.starts_with("https://")) {
        bail!("--server must be an http:// or https:// URL of the OTLP/gRPC listener, got {server:?}");
    }
    let buffer = section.buffer_max_size.as_deref().unwrap_or("256MiB");
    let scrape_jobs = scrape_jobs(&section.scrape_configs, interval, &node_name)?;
    Ok(AgentConfig {
        node_name,
        root,
        interval,
        server,
        state_dir: args
            .state_dir
            .clone()
            .or_else(|| section.state_dir.clone())
            .unwrap_or_else(|| "vigil-agent-state".into()),
        http_addr: args.http_addr.or(section.http_addr).unwrap_or_else(|| ([0, 0, 0, 0], 9101).into()),
        buffer_max_bytes: parse_size(buffer)? as u64,
        ingest_token: args.ingest_token.clone().or_else(|| section.ingest_token.clone()),
        tls_ca_file: args.tls_ca_file.clone().or_else(|| section.tls_ca_file.clone()),
        scrape_jobs,
        multiline_start: args
            .log_multiline_start
            .as_deref()
            .or(section.log_multiline_start.as_deref())
            .map(|pattern| {
                regex::Regex::new(pattern).with_context(|| format!("invalid --log-multiline-start {pattern:?}"))
            })
            .transpose()?,
    })
}

fn node_name_or_hostname(name: Option<String>, root: &Path) -> String {
    name.unwrap_or_else(|| {
        std::fs::read_to_string(root.join("proc/sys/kernel/hostname"))
            .map(|name| name.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into())
    })
}

fn agent_interval(flag: Option<&str>, section: &AgentSection, default: &str) -> anyhow::Result<Duration> {
    let interval = parse_duration(flag.or(section.interval.as_deref()).unwrap_or(default))?;
    if interval.is_zero() {
        bail!("agent.interval must be greater than zero");
    }
    Ok(interval)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    const EXAMPLE: &str = include_str!("../vigil.example.yaml");

    fn server_args(argv: &[&str]) -> ServerArgs {
        let mut full = vec!["vigil", "server"];
        full.extend_from_slice(argv);
        match Cli::parse_from(full).command {
            Command::Server(args) => args,
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn example_config_parses_into_the_documented_values() {
        let file = FileConfig::parse(EXAMPLE).unwrap();
        let config = server_config(&server_args(&[]), &file).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/vigil"));
        assert_eq!(config.http_addr, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(config.max_body_bytes, 32 << 20);
        assert_eq!(config.db.wal_sync, WalSync::Always);
        assert_eq!(config.db.out_of_order_window_ms, 600_000);
        assert_eq!(config.db.limits.max_series, 2_000_000);
        assert_eq!(config.db.retention_ms, Some(15 * 86_400_000));
        assert_eq!(config.db.retention_bytes, Some(50 << 30));
        assert_eq!(config.db.block_duration_ms, 7_200_000);
        assert_eq!(file.log.format, Some(LogFormat::Json));
        assert_eq!(file.agent.interval.as_deref(), Some("15s"));
    }

    #[test]
    fn agent_flags_win_over_the_file_section() {
        let file = FileConfig::parse(EXAMPLE).unwrap();
        let argv = ["vigil", "agent", "--server", "http://10.0.0.1:4317", "--interval", "5s"];
        let Command::Agent(args) = Cli::parse_from(argv).command else { panic!("not agent") };
        let config = agent_config(&args, &file).unwrap();
        assert_eq!(config.server, "http://10.0.0.1:4317");
        assert_eq!(config.interval, Duration::from_secs(5));
        assert_eq!(config.root, PathBuf::from("/host"), "from the file");
        assert_eq!(config.http_addr, "0.0.0.0:9101".parse().unwrap());
        assert_eq!(config.buffer_max_bytes, 256 << 20);
        let Command::Agent(args) = Cli::parse_from(["vigil", "agent", "--server", "vigil:4317"]).command else {
            panic!("not agent")
        };
        let error = agent_config(&args, &FileConfig::default()).unwrap_err().to_string();
        assert!(error.contains("http:// or https://"), "{error}");
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let error = FileConfig::parse("server:\n  http_adress: 0.0.0.0:1\n").unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains("unknown field `http_adress`"), "{message}");
        assert!(message.contains("line 2"), "{message}");
    }

    #[test]
    fn flags_win_over_the_file() {
        let file = FileConfig::parse("server:\n  data_dir: /from/file\n  http_addr: 127.0.0.1:1111\n").unwrap();
        let config = server_config(&server_args(&["--http-addr", "127.0.0.1:2222"]), &file).unwrap();
        assert_eq!(config.http_addr.port(), 2222);
        assert_eq!(config.data_dir, PathBuf::from("/from/file"));
    }

    #[test]
    fn sizes_durations_and_fsync_policies() {
        assert_eq!(parse_size("32MiB").unwrap(), 32 << 20);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(format!("{:#}", parse_size("3 parsecs").unwrap_err()).contains("unknown unit"));
        assert_eq!(parse_wal_sync("2s").unwrap(), WalSync::Interval(Duration::from_secs(2)));
        assert!(parse_wal_sync("sometimes").is_err());
    }

    #[test]
    fn scrape_targets_are_relabeled_as_prometheus_relabels_them() {
        let yaml = r#"
agent:
  scrape_configs:
    - job_name: apps
      scrape_interval: 5s
      static_configs:
        - targets: ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:9999"]
          labels: {team: core}
      relabel_configs:
        - {source_labels: [__address__], regex: '.*:9999', action: drop}
        - {source_labels: [__address__], regex: '(.*):8080', target_label: __address__, replacement: '$1:9102'}
        - {source_labels: [team], target_label: owner}
        - {regex: team, action: labeldrop}
      metric_relabel_configs:
        - {source_labels: [__name__], regex: 'go_.*', action: drop}
"#;
        let file = FileConfig::parse(yaml).unwrap();
        let jobs = scrape_jobs(&file.agent.scrape_configs, Duration::from_secs(10), "node-a").unwrap();
        let targets = jobs[0].targets(&jobs[0].groups().0);
        let urls: Vec<&str> = targets.iter().map(|t| t.url.as_str()).collect();
        assert_eq!(urls, ["http://10.0.0.1:9102/metrics", "http://10.0.0.2:9102/metrics"]);
        let instances: Vec<&str> = targets.iter().map(|t| t.instance.as_str()).collect();
        assert_eq!(instances, ["10.0.0.1:9102", "10.0.0.2:9102"]);
        let owner = vec![("owner".to_owned(), "core".to_owned())];
        assert!(targets.iter().all(|t| t.labels == owner), "team relabeled to owner, then dropped");
        assert_eq!((targets[0].interval, targets[0].metric_relabel.len()), (Duration::from_secs(5), 1));
        let bad = "agent:\n  scrape_configs:\n    - job_name: x\n      relabel_configs: [{action: explode}]\n";
        let error =
            scrape_jobs(&FileConfig::parse(bad).unwrap().agent.scrape_configs, Duration::from_secs(1), "node-a");
        assert!(error.unwrap_err().to_string().contains("explode"));
    }

    #[test]
    fn kubernetes_discovery_lists_the_agents_node_and_only_pods() {
        let yaml = "agent:\n  scrape_configs:\n    - job_name: pods\n      kubernetes_sd_configs:\n        - {role: pod, api_server: 'https://10.0.0.1:6443', namespaces: {names: [shop]}}\n";
        let jobs =
            scrape_jobs(&FileConfig::parse(yaml).unwrap().agent.scrape_configs, Duration::from_secs(10), "node-a")
                .unwrap();
        let sd = &jobs[0].kubernetes_sd[0];
        assert_eq!((sd.node.as_deref(), sd.namespaces.as_slice()), (Some("node-a"), ["shop".to_owned()].as_slice()));
        assert_eq!((sd.bearer_token_file.as_ref(), jobs[0].refresh_interval()), (None, Some(Duration::from_secs(30))));
        let node_role = yaml.replace("role: pod", "role: node");
        let error =
            scrape_jobs(&FileConfig::parse(&node_role).unwrap().agent.scrape_configs, Duration::from_secs(1), "n");
        assert!(error.unwrap_err().to_string().contains("only \"pod\""));
    }

    #[test]
    fn half_a_tls_configuration_is_an_error() {
        let error = server_config(&server_args(&["--tls-cert-file", "c.pem"]), &FileConfig::default()).unwrap_err();
        assert!(error.to_string().contains("both a certificate and a key"), "{error}");
    }
}
