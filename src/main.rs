//! The `vigil` binary: the only place that reads flags, environment and the config file.

mod agent;
mod alerting;
mod cli;
mod config;
mod http;
mod import;
mod local_agent;
mod own_logs;
mod query_cli;
mod server;
mod telemetry;
mod top;

use std::process::ExitCode;

/// mimalloc: ingestion decodes into many short-lived small allocations (label strings, spans), where
/// glibc's allocator spent over half the CPU of a remote-write load in its own bookkeeping.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::cli::{Cli, Command, LogFormat};
use crate::config::FileConfig;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Version => {
            println!("vigil {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Server(args) => {
            let file = FileConfig::load_optional(args.config.as_deref())?;
            init_logging(&cli, &file)?;
            let config = config::server_config(args, &file)?;
            runtime()?.block_on(server::run(config, None))
        }
        Command::Up(args) => {
            let file = FileConfig::load_optional(args.server.config.as_deref())?;
            init_logging(&cli, &file)?;
            let config = config::server_config(&args.server, &file)?;
            let agent = config::local_agent_config(args, &file)?;
            runtime()?.block_on(server::run(config, Some(agent)))
        }
        Command::Agent(args) => {
            return_memory_promptly();
            let file = FileConfig::load_optional(args.config.as_deref())?;
            init_logging(&cli, &file)?;
            let config = config::agent_config(args, &file)?;
            runtime()?.block_on(agent::run(config))
        }
        Command::Top(args) => top::run(args),
        Command::Import(args) => import::run(args),
        Command::Query(args) => query_cli::run(args),
    }
}

/// The agent runs beside every workload on a node, so it trades a little CPU for memory: freed memory
/// goes back to the OS at once (mimalloc's `purge_delay` 0) and arenas are committed as they are used
/// (`arena_eager_commit` 0). Set here, after start-up, this takes the agent's resident memory over the
/// 100-container fixture from 74 MiB to about 40 MiB; the same options set from the start through
/// `MIMALLOC_PURGE_DELAY=0` and `MIMALLOC_ARENA_EAGER_COMMIT=0`, as the DaemonSet does, to 25 MiB. The
/// option numbers are the positions in mimalloc 3's `mi_option_e`, which the Rust bindings do not name.
fn return_memory_promptly() {
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: setting an option is a plain store into mimalloc's option table, valid at any time.
    unsafe {
        libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

fn init_logging(cli: &Cli, file: &FileConfig) -> anyhow::Result<()> {
    let format = cli.log_format.or(file.log.format).unwrap_or(LogFormat::Human);
    let level = cli.log_level.clone().or_else(|| file.log.level.clone()).unwrap_or_else(|| "info".into());
    let filter = EnvFilter::try_new(&level).with_context(|| format!("invalid log level {level:?}"))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let stdout = tracing_subscriber::fmt::layer().with_writer(std::io::stdout).with_ansi(ansi);
    let registry = tracing_subscriber::registry().with(filter).with(own_logs::OwnLogsLayer);
    match format {
        LogFormat::Human => registry.with(stdout).init(),
        LogFormat::Json => registry.with(stdout.json().flatten_event(true).with_current_span(false)).init(),
    }
    Ok(())
}
