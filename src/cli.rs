//! Command-line flags. Every flag also reads a `VIGIL_*` environment variable; flags win over env,
//! env over the config file (merged in `config`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Metrics, logs and traces for Kubernetes in one binary.
#[derive(Debug, Parser)]
#[command(name = "vigil", version, about)]
pub struct Cli {
    /// Log output: human-readable lines or one JSON object per event.
    #[arg(long, global = true, env = "VIGIL_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `vigil=debug,info`.
    #[arg(long, global = true, env = "VIGIL_LOG_LEVEL")]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per event.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// All in one: the server plus an agent observing this machine.
    Up(UpArgs),
    /// The server: ingestion, storage, query APIs and UI.
    Server(ServerArgs),
    /// The node agent (DaemonSet), shipping to a server over OTLP.
    Agent(AgentArgs),
    /// Resource usage of nodes and pods, like `kubectl top`.
    Top(TopArgs),
    /// Offline backfill into a data directory.
    Import(ImportArgs),
    /// Runs a PromQL query against a server and prints the result.
    Query(QueryArgs),
    /// Prints the version.
    Version,
}

/// Flags of `server` (and `up`).
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// YAML config file; flags and env override it.
    #[arg(long, env = "VIGIL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where data is stored [default: ./vigil-data].
    #[arg(long, env = "VIGIL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The one HTTP listener: UI, query APIs, remote write, Loki push [default: 0.0.0.0:9090].
    #[arg(long, env = "VIGIL_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// OTLP gRPC listener [default: 0.0.0.0:4317].
    #[arg(long, env = "VIGIL_OTLP_GRPC_ADDR")]
    pub otlp_grpc_addr: Option<SocketAddr>,
    /// OTLP HTTP listener [default: 0.0.0.0:4318].
    #[arg(long, env = "VIGIL_OTLP_HTTP_ADDR")]
    pub otlp_http_addr: Option<SocketAddr>,
    /// A second listener serving the HTTP routes over TLS, e.g. for the Kubernetes API aggregator; it uses
    /// --tls-cert-file and --tls-key-file, or a self-signed certificate made at start when they are absent.
    #[arg(long, env = "VIGIL_HTTPS_ADDR")]
    pub https_addr: Option<SocketAddr>,
    /// PEM certificate chain; with --tls-key-file, every listener speaks TLS.
    #[arg(long, env = "VIGIL_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for --tls-cert-file.
    #[arg(long, env = "VIGIL_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Bearer token required by the ingestion endpoints.
    #[arg(long, env = "VIGIL_INGEST_TOKEN", hide_env_values = true)]
    pub ingest_token: Option<String>,
    /// Bearer token required by the query APIs and /metrics.
    #[arg(long, env = "VIGIL_QUERY_TOKEN", hide_env_values = true)]
    pub query_token: Option<String>,
    /// Bearer token required by the admin endpoints.
    #[arg(long, env = "VIGIL_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Largest request body accepted, e.g. `32MiB` [default: 32MiB].
    #[arg(long, env = "VIGIL_MAX_BODY_SIZE")]
    pub max_body_size: Option<String>,
    /// WAL fsync policy: `always`, `never` or an interval like `1s` [default: always].
    #[arg(long, env = "VIGIL_WAL_FSYNC")]
    pub wal_fsync: Option<String>,
    /// A Prometheus rule file (recording and alerting rules); repeatable, globs allowed. Adds to the
    /// config file's `rule_files:`.
    #[arg(long = "rule-file", value_name = "FILE")]
    pub rule_files: Vec<String>,
    /// A log rule file (LogQL metric queries as alert and record expressions, as Loki's ruler reads them);
    /// repeatable, globs allowed. Adds to the config file's `log_rule_files:`.
    #[arg(long = "log-rule-file", value_name = "FILE")]
    pub log_rule_files: Vec<String>,
    /// The URL this server is reached at, for alert links and `$externalURL` [default: http://<host>:<port>].
    #[arg(long, env = "VIGIL_EXTERNAL_URL")]
    pub external_url: Option<String>,
    /// Delete metric blocks older than this, e.g. `15d` [default: 15d].
    #[arg(long, env = "VIGIL_RETENTION_TIME")]
    pub retention_time: Option<String>,
    /// Delete the oldest metric blocks while blocks take more than this, e.g. `50GiB` [default: unlimited].
    #[arg(long, env = "VIGIL_RETENTION_SIZE")]
    pub retention_size: Option<String>,
    /// Drop log partitions (one a day) older than this, e.g. `30d` [default: 15d].
    #[arg(long, env = "VIGIL_LOG_RETENTION_TIME")]
    pub log_retention_time: Option<String>,
    /// Drop the oldest log partitions while logs take more than this, e.g. `100GiB` [default: unlimited].
    #[arg(long, env = "VIGIL_LOG_RETENTION_SIZE")]
    pub log_retention_size: Option<String>,
    /// Drop span blocks older than this, e.g. `7d` [default: 15d].
    #[arg(long, env = "VIGIL_TRACE_RETENTION_TIME")]
    pub trace_retention_time: Option<String>,
    /// Drop the oldest span blocks while spans take more than this, e.g. `100GiB` [default: unlimited].
    #[arg(long, env = "VIGIL_TRACE_RETENTION_SIZE")]
    pub trace_retention_size: Option<String>,
}

/// Flags of `up`: the server's, plus what the local agent reads.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Name this machine reports as [default: the hostname].
    #[arg(long, env = "VIGIL_NODE_NAME")]
    pub node_name: Option<String>,
    /// Prefix for /proc, /sys and /var/log [default: /].
    #[arg(long, env = "VIGIL_ROOT")]
    pub root: Option<PathBuf>,
    /// A directory whose `*.log` files are followed into the log store (`{job="logs", filename=...}`).
    #[arg(long, env = "VIGIL_LOG_DIR")]
    pub log_dir: Option<PathBuf>,
}

/// Flags of `agent`.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// YAML config file; flags and env override it.
    #[arg(long, env = "VIGIL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Server URL the agent ships OTLP to.
    #[arg(long, env = "VIGIL_SERVER")]
    pub server: Option<String>,
    /// Prefix for /proc, /sys and /var/log [default: /].
    #[arg(long, env = "VIGIL_ROOT")]
    pub root: Option<PathBuf>,
    /// Name this node reports as [default: the hostname].
    #[arg(long, env = "VIGIL_NODE_NAME")]
    pub node_name: Option<String>,
    /// Where checkpoints and the disk buffer live [default: ./vigil-agent-state].
    #[arg(long, env = "VIGIL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// The agent's own listener: `/metrics` (container, host and own metrics) and probes [default: 0.0.0.0:9101].
    #[arg(long, env = "VIGIL_AGENT_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Collection interval, e.g. `10s` [default: 10s].
    #[arg(long, env = "VIGIL_INTERVAL")]
    pub interval: Option<String>,
    /// Bearer token for the server's ingest scope (the server's `--ingest-token`).
    #[arg(long, env = "VIGIL_INGEST_TOKEN", hide_env_values = true)]
    pub ingest_token: Option<String>,
    /// PEM CA certificate trusted for an `https://` --server, beside the public roots.
    #[arg(long, env = "VIGIL_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// Multiline grouping of pod logs: a line that does not match this regex joins the entry before it
    /// (e.g. `^\S` groups indented stack-trace lines) [default: no grouping]
    #[arg(long, env = "VIGIL_LOG_MULTILINE_START")]
    pub log_multiline_start: Option<String>,
}

/// Flags of `top`, as `kubectl top` takes them.
#[derive(Debug, Clone, Args)]
pub struct TopArgs {
    /// `nodes` (`node`, `no`) or `pods` (`pod`, `po`).
    pub resource: String,
    /// One node or pod by name.
    pub name: Option<String>,
    /// Vigil server URL.
    #[arg(long, env = "VIGIL_SERVER", default_value = "http://127.0.0.1:9090")]
    pub server: String,
    /// Pods of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Pods of this namespace [default: default].
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// One row per container.
    #[arg(long)]
    pub containers: bool,
    /// Sort by `cpu` or `memory`, highest first.
    #[arg(long)]
    pub sort_by: Option<String>,
    /// A totals row under the pods.
    #[arg(long)]
    pub sum: bool,
    /// Label selector, e.g. `app=web`.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Leave out the header row.
    #[arg(long)]
    pub no_headers: bool,
    /// Bearer token for the query API.
    #[arg(long, env = "VIGIL_QUERY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Flags of `query`.
#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// The PromQL expression.
    pub expr: String,
    /// Vigil server URL.
    #[arg(long, env = "VIGIL_SERVER", default_value = "http://127.0.0.1:9090")]
    pub server: String,
    /// Evaluation time of an instant query (RFC 3339 or Unix seconds) [default: now].
    #[arg(long)]
    pub time: Option<String>,
    /// Start of a range query; with --end and --step.
    #[arg(long, requires_all = ["end", "step"])]
    pub start: Option<String>,
    /// End of a range query.
    #[arg(long, requires = "start")]
    pub end: Option<String>,
    /// Resolution of a range query, e.g. `15s`.
    #[arg(long, requires = "start")]
    pub step: Option<String>,
    /// Bearer token for the query API.
    #[arg(long, env = "VIGIL_QUERY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the raw JSON response instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// Input format: `openmetrics` (as `promtool tsdb create-blocks-from openmetrics` takes it).
    pub format: String,
    /// Input file: OpenMetrics text with a timestamp (seconds) on every sample, ending in `# EOF`.
    pub file: PathBuf,
    /// Data directory to fill.
    #[arg(long, env = "VIGIL_DATA_DIR")]
    pub data_dir: PathBuf,
}
