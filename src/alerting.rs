//! Rule evaluation and alert delivery in the server: the rule manager over the metrics store, its sinks
//! (Alertmanagers, webhooks), the rule APIs, and reloads on `POST /-/reload` and SIGHUP.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vigil_query::logql::LogqlEngine;
use vigil_query::rules::manager::{RuleManager, RulesConfig};
use vigil_query::rules::notify::{AlertSink, AlertmanagerSink};
use vigil_query::rules::webhook::WebhookSink;
use vigil_query::rules::{EvalContext, api};
use vigil_tsdb::Db;
use vigil_tsdb::logs::LogStore;

use crate::config::ServerConfig;

/// How alerts keep being re-sent while they fire (Prometheus's `--rules.alert.resend-delay`).
const RESEND_DELAY: Duration = Duration::from_secs(60);

/// The rule manager and its delivery tasks.
pub struct Alerting {
    manager: RuleManager,
    stop: watch::Receiver<bool>,
    deliveries: Vec<JoinHandle<()>>,
}

impl Alerting {
    /// Loads the rule files (an invalid one fails start-up) and starts delivery; rules run after [`Alerting::start`].
    pub fn open(
        config: &ServerConfig,
        db: Arc<Db>,
        logs: Arc<dyn LogStore>,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let settings = &config.alerting;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned());
        let external_url = settings.external_url.clone().unwrap_or_else(|| {
            format!("http://{}:{}", host.unwrap_or_else(|_| "localhost".into()), config.http_addr.port())
        });
        let context = EvalContext {
            external_labels: settings.external_labels.clone(),
            external_url: external_url.clone(),
            logs: Some(LogqlEngine::new(logs)),
        };
        let mut sinks: Vec<Arc<dyn AlertSink>> = Vec::new();
        let mut deliveries = Vec::new();
        if !settings.alertmanagers.is_empty() {
            let sink = AlertmanagerSink::new(settings.alertmanagers.clone());
            deliveries.push(tokio::spawn(sink.clone().run(stop.clone())));
            sinks.push(sink);
        }
        if !settings.webhooks.is_empty() {
            let sink = WebhookSink::new(settings.webhooks.clone(), &external_url);
            deliveries.push(tokio::spawn(sink.clone().run(stop.clone())));
            sinks.push(sink);
        }
        let rules = RulesConfig {
            patterns: settings.rule_patterns.clone(),
            log_patterns: settings.log_rule_patterns.clone(),
            default_interval: settings.evaluation_interval,
            resend_delay: RESEND_DELAY,
            context,
        };
        let manager = RuleManager::new(rules, db.clone(), db, sinks);
        let count = manager.load(true).context("invalid rule files")?;
        tracing::info!(rules = count, files = manager.files().map_or(0, |f| f.len()), "rules loaded");
        Ok(Alerting { manager, stop, deliveries })
    }

    /// `/api/v1/rules`, `/api/v1/alerts` and `/-/reload`.
    pub fn routes(&self) -> Router {
        let reload_route = Router::new()
            .route("/-/reload", post(reload).put(reload))
            .with_state((self.manager.clone(), self.stop.clone()));
        api::routes(self.manager.clone()).merge(reload_route)
    }

    /// Starts evaluating, and reloads on SIGHUP until the stop signal.
    pub fn start(&self) -> anyhow::Result<()> {
        self.manager.start(self.stop.clone());
        let mut hangups =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("cannot handle SIGHUP")?;
        let (manager, mut stop) = (self.manager.clone(), self.stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = hangups.recv() => log_reload(reload_off_thread(&manager, &stop).await, "SIGHUP"),
                    _ = stop.changed() => return,
                }
            }
        });
        Ok(())
    }

    /// Waits (briefly) for queued alerts to go out after the stop signal.
    pub async fn finish(self) {
        for delivery in self.deliveries {
            let _ = tokio::time::timeout(Duration::from_secs(2), delivery).await;
        }
    }
}

fn log_reload(result: Result<usize, vigil_query::rules::RulesError>, trigger: &str) {
    match result {
        Ok(rules) => tracing::info!(rules, trigger, "rules reloaded"),
        Err(error) => tracing::error!(%error, trigger, "rule reload failed; the previous rules stay"),
    }
}

/// Reading and parsing files is blocking work: it runs on the blocking pool.
async fn reload_off_thread(
    manager: &RuleManager,
    stop: &watch::Receiver<bool>,
) -> Result<usize, vigil_query::rules::RulesError> {
    let (manager, stop) = (manager.clone(), stop.clone());
    tokio::task::spawn_blocking(move || manager.reload(&stop)).await.expect("reload does not panic")
}

async fn reload(State((manager, stop)): State<(RuleManager, watch::Receiver<bool>)>) -> impl IntoResponse {
    let result = reload_off_thread(&manager, &stop).await;
    let response = match &result {
        Ok(_) => (StatusCode::OK, String::new()),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("failed to reload config: {error}\n")),
    };
    log_reload(result, "/-/reload");
    response
}
