//! Sending alerts out: to Alertmanager's API v2 as Prometheus does (batches from a bounded queue, no retry:
//! the resend rule covers a failed send), and the shape both it and the webhooks take.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use tokio::sync::{Notify, watch};

use super::{Alert, EvalContext};

/// An alert as Alertmanager's `POST /api/v2/alerts` takes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutgoingAlert {
    /// Labels, external labels included.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// When it started firing.
    #[serde(rename = "startsAt", serialize_with = "serialize_time")]
    pub starts_at: DateTime<Utc>,
    /// Its resolution time, or how long it stays valid without a resend.
    #[serde(rename = "endsAt", serialize_with = "serialize_time")]
    pub ends_at: DateTime<Utc>,
    /// A link to the expression on this server.
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

impl OutgoingAlert {
    /// Prometheus's conversion: `startsAt` is when it fired, `endsAt` its resolution or validity; external
    /// labels are added where the alert has no such label.
    pub fn from_alert(alert: &Alert, expr: &str, context: &EvalContext) -> Self {
        let mut labels: BTreeMap<String, String> =
            alert.labels.iter().map(|l| (l.name.to_string(), l.value.to_string())).collect();
        for (name, value) in &context.external_labels {
            labels.entry(name.clone()).or_insert_with(|| value.clone());
        }
        let ends_ms = alert.resolved_at_ms.unwrap_or(alert.valid_until_ms);
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("g0.expr", expr)
            .append_pair("g0.tab", "1")
            .finish();
        OutgoingAlert {
            labels,
            annotations: alert.annotations.clone(),
            starts_at: time(alert.fired_at_ms.unwrap_or(alert.active_at_ms)),
            ends_at: time(ends_ms),
            generator_url: format!("{}/graph?{query}", context.external_url.trim_end_matches('/')),
        }
    }

    /// Resolved once its end time has passed.
    pub fn is_resolved_at(&self, now: DateTime<Utc>) -> bool {
        self.ends_at <= now
    }
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default()
}

fn serialize_time<S: serde::Serializer>(time: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&rfc3339(*time))
}

/// RFC 3339 with milliseconds, as Alertmanager prints times.
pub fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Where evaluated alerts go.
pub trait AlertSink: Send + Sync {
    /// Takes alerts without blocking; delivery happens elsewhere.
    fn send(&self, alerts: &[OutgoingAlert]);
}

/// Alertmanagers to notify: `alerting.alertmanagers[].static_configs[].targets` with scheme and path prefix.
#[derive(Debug, Clone)]
pub struct AlertmanagerTarget {
    /// Base URL, e.g. `http://127.0.0.1:9093`.
    pub base_url: String,
    /// Request timeout.
    pub timeout: Duration,
}

/// Most alerts queued for Alertmanager before the oldest are dropped.
const QUEUE_CAPACITY: usize = 10_000;
/// Most alerts in one request.
const MAX_BATCH: usize = 64;

/// Queues alerts and posts them to every Alertmanager.
pub struct AlertmanagerSink {
    targets: Vec<AlertmanagerTarget>,
    queue: Mutex<VecDeque<OutgoingAlert>>,
    more: Notify,
}

impl AlertmanagerSink {
    /// A sink for `targets`; call [`AlertmanagerSink::run`] to deliver.
    pub fn new(targets: Vec<AlertmanagerTarget>) -> Arc<Self> {
        Arc::new(AlertmanagerSink { targets, queue: Mutex::new(VecDeque::new()), more: Notify::new() })
    }

    /// Delivers queued alerts until `stop`, then once more to flush what is left.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let batch = self.take_batch();
            if batch.is_empty() {
                if *stop.borrow() {
                    return;
                }
                tokio::select! {
                    _ = self.more.notified() => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            let body = serde_json::to_vec(&batch).expect("alerts serialize");
            let posts = self.targets.iter().cloned().map(|target| {
                let body = body.clone();
                let count = batch.len() as u64;
                tokio::task::spawn_blocking(move || post_batch(&target, &body, count))
            });
            for post in posts.collect::<Vec<_>>() {
                let _ = post.await;
            }
        }
    }

    fn take_batch(&self) -> Vec<OutgoingAlert> {
        let mut queue = self.queue.lock().expect("queue lock");
        let take = queue.len().min(MAX_BATCH);
        metrics::gauge!("vigil_notifications_queue_length").set((queue.len() - take) as f64);
        queue.drain(..take).collect()
    }
}

impl AlertSink for AlertmanagerSink {
    fn send(&self, alerts: &[OutgoingAlert]) {
        if alerts.is_empty() || self.targets.is_empty() {
            return;
        }
        let mut queue = self.queue.lock().expect("queue lock");
        queue.extend(alerts.iter().cloned());
        let overflow = queue.len().saturating_sub(QUEUE_CAPACITY);
        if overflow > 0 {
            queue.drain(..overflow);
            metrics::counter!("vigil_notifications_dropped_total").increment(overflow as u64);
            tracing::warn!(dropped = overflow, "alert queue full; oldest alerts dropped");
        }
        drop(queue);
        self.more.notify_one();
    }
}

fn post_batch(target: &AlertmanagerTarget, body: &[u8], count: u64) {
    let url = format!("{}/api/v2/alerts", target.base_url.trim_end_matches('/'));
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(target.timeout)).http_status_as_error(false).build().into();
    let result = agent.post(&url).header("Content-Type", "application/json").send(body);
    let label = target.base_url.clone();
    match result {
        Ok(response) if response.status().is_success() => {
            metrics::counter!("vigil_notifications_sent_total", "alertmanager" => label).increment(count);
        }
        Ok(response) => {
            metrics::counter!("vigil_notifications_errors_total", "alertmanager" => label).increment(count);
            tracing::warn!(%url, status = response.status().as_u16(), alerts = count, "alertmanager refused alerts");
        }
        Err(error) => {
            metrics::counter!("vigil_notifications_errors_total", "alertmanager" => label).increment(count);
            tracing::warn!(%url, %error, alerts = count, "cannot send alerts to alertmanager");
        }
    }
}
