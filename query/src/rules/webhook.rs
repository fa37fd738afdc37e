//! Webhook receivers fed straight from rule evaluation, with Alertmanager's behaviour: alerts grouped by
//! `group_by` labels, a group's first notification after `group_wait`, later ones on `group_interval`
//! ticks when something changed or `repeat_interval` has passed, resolved notifications, and Alertmanager's
//! webhook JSON (version 4). A failed post is retried with backoff on 5xx, timeouts and connection errors
//! (never on 4xx) until the group's next tick; what still could not be delivered is counted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::notify::{AlertSink, OutgoingAlert, rfc3339};

/// One `webhooks:` entry.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Receiver name, sent as `receiver`.
    pub name: String,
    /// Where notifications are posted.
    pub url: String,
    /// Labels that split alerts into groups; `...` groups by every label.
    pub group_by: Vec<String>,
    /// Wait before a new group's first notification.
    pub group_wait: Duration,
    /// Wait between notifications of a group that changed.
    pub group_interval: Duration,
    /// Wait before repeating an unchanged notification.
    pub repeat_interval: Duration,
    /// Whether resolved alerts are notified.
    pub send_resolved: bool,
    /// Most alerts in one notification (0: all); the rest are counted in `truncatedAlerts`.
    pub max_alerts: usize,
    /// Timeout of one post.
    pub timeout: Duration,
    /// `Authorization: Bearer` token.
    pub bearer_token: Option<String>,
    /// Basic auth user and password.
    pub basic_auth: Option<(String, String)>,
}

impl WebhookConfig {
    /// Alertmanager's defaults for `url`.
    pub fn new(name: &str, url: &str) -> Self {
        WebhookConfig {
            name: name.to_owned(),
            url: url.to_owned(),
            group_by: vec!["alertname".into()],
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(4 * 3600),
            send_resolved: true,
            max_alerts: 0,
            timeout: Duration::from_secs(10),
            bearer_token: None,
            basic_auth: None,
        }
    }
}

/// Every configured webhook receiver.
pub struct WebhookSink {
    receivers: Vec<Arc<Receiver>>,
}

struct Receiver {
    config: WebhookConfig,
    external_url: String,
    groups: Mutex<HashMap<String, Group>>,
}

/// An aggregation group: alerts sharing the `group_by` labels.
struct Group {
    labels: BTreeMap<String, String>,
    alerts: BTreeMap<String, OutgoingAlert>,
    next_flush: Instant,
    in_flight: bool,
    last: Option<Notified>,
}

/// What the last delivered notification of a group held.
#[derive(Clone)]
struct Notified {
    at: Instant,
    firing: BTreeSet<String>,
    resolved: BTreeSet<String>,
}

impl WebhookSink {
    /// Receivers for `configs`; `external_url` goes into each notification.
    pub fn new(configs: Vec<WebhookConfig>, external_url: &str) -> Arc<Self> {
        let receivers = configs
            .into_iter()
            .map(|config| {
                Arc::new(Receiver { config, external_url: external_url.to_owned(), groups: Mutex::new(HashMap::new()) })
            })
            .collect();
        Arc::new(WebhookSink { receivers })
    }

    /// Flushes due groups until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            for receiver in &self.receivers {
                receiver.flush_due();
            }
        }
    }
}

impl AlertSink for WebhookSink {
    fn send(&self, alerts: &[OutgoingAlert]) {
        for receiver in &self.receivers {
            receiver.ingest(alerts);
        }
    }
}

/// Alertmanager's fingerprint form: 16 hex digits of a hash over the sorted labels.
fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let bytes = labels.iter().flat_map(|(name, value)| name.bytes().chain([0xff]).chain(value.bytes()).chain([0xff]));
    format!("{:016x}", super::fnv(bytes))
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

impl Receiver {
    fn group_labels(&self, labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        if self.config.group_by.iter().any(|l| l == "...") {
            return labels.clone();
        }
        self.config.group_by.iter().filter_map(|name| Some((name.clone(), labels.get(name)?.clone()))).collect()
    }

    fn ingest(&self, alerts: &[OutgoingAlert]) {
        let mut groups = self.groups.lock().expect("groups lock");
        for alert in alerts {
            let labels = self.group_labels(&alert.labels);
            let key = labels_text(&labels);
            let group = groups.entry(key).or_insert_with(|| Group {
                labels,
                alerts: BTreeMap::new(),
                next_flush: Instant::now() + self.config.group_wait,
                in_flight: false,
                last: None,
            });
            group.alerts.insert(fingerprint(&alert.labels), alert.clone());
        }
    }

    /// Starts a delivery for every group whose tick has come and whose alerts need a notification.
    fn flush_due(self: &Arc<Self>) {
        let now = Instant::now();
        let wall_now = Utc::now();
        let mut groups = self.groups.lock().expect("groups lock");
        let mut empty = Vec::new();
        for (key, group) in groups.iter_mut() {
            if group.in_flight || group.next_flush > now {
                continue;
            }
            group.next_flush = now + self.config.group_interval;
            let (resolved, firing): (Vec<_>, Vec<_>) =
                group.alerts.iter().partition(|(_, alert)| alert.is_resolved_at(wall_now));
            let firing: BTreeSet<String> = firing.into_iter().map(|(fp, _)| fp.clone()).collect();
            let resolved: BTreeSet<String> = resolved.into_iter().map(|(fp, _)| fp.clone()).collect();
            if !self.needs_update(group.last.as_ref(), &firing, &resolved, now) {
                // Nothing to say; resolved alerts leave the group as after a notification.
                group.alerts.retain(|fp, _| !resolved.contains(fp));
                if group.alerts.is_empty() {
                    empty.push(key.clone());
                }
                continue;
            }
            let payload = self.payload(key, group, &firing, wall_now);
            group.in_flight = true;
            let (receiver, key) = (self.clone(), key.clone());
            let deadline = now + self.config.group_interval.max(self.config.timeout);
            tokio::task::spawn_blocking(move || {
                let delivered = receiver.deliver(&payload, deadline);
                receiver.finish(&key, delivered, Notified { at: Instant::now(), firing, resolved });
            });
        }
        for key in empty {
            groups.remove(&key);
        }
    }

    /// Alertmanager's deduplication rule.
    fn needs_update(
        &self,
        last: Option<&Notified>,
        firing: &BTreeSet<String>,
        resolved: &BTreeSet<String>,
        now: Instant,
    ) -> bool {
        let Some(last) = last else { return !firing.is_empty() };
        if !firing.is_subset(&last.firing) {
            return true;
        }
        if firing.is_empty() {
            return !last.firing.is_empty();
        }
        if self.config.send_resolved && !resolved.is_subset(&last.resolved) {
            return true;
        }
        now.duration_since(last.at) >= self.config.repeat_interval
    }

    fn payload(&self, key: &str, group: &Group, firing: &BTreeSet<String>, now: chrono::DateTime<Utc>) -> Value {
        let mut included: Vec<(&String, &OutgoingAlert)> =
            group.alerts.iter().filter(|(fp, _)| self.config.send_resolved || firing.contains(*fp)).collect();
        let truncated = match self.config.max_alerts {
            0 => 0,
            max => included.len().saturating_sub(max),
        };
        included.truncate(included.len() - truncated);
        let alerts: Vec<Value> = included
            .iter()
            .map(|(fp, alert)| {
                let status = if alert.is_resolved_at(now) { "resolved" } else { "firing" };
                json!({"status": status, "labels": alert.labels, "annotations": alert.annotations,
                    "startsAt": rfc3339(alert.starts_at), "endsAt": rfc3339(alert.ends_at),
                    "generatorURL": alert.generator_url, "fingerprint": fp})
            })
            .collect();
        let common = |pick: fn(&OutgoingAlert) -> &BTreeMap<String, String>| -> BTreeMap<String, String> {
            let mut iter = included.iter().map(|(_, a)| pick(a));
            let Some(first) = iter.next() else { return BTreeMap::new() };
            let mut shared = first.clone();
            for other in iter {
                shared.retain(|k, v| other.get(k) == Some(v));
            }
            shared
        };
        let status = if included.iter().any(|(_, a)| !a.is_resolved_at(now)) { "firing" } else { "resolved" };
        json!({"version": "4", "groupKey": format!("{{}}:{key}"), "truncatedAlerts": truncated,
            "status": status, "receiver": self.config.name, "groupLabels": group.labels,
            "commonLabels": common(|a| &a.labels), "commonAnnotations": common(|a| &a.annotations),
            "externalURL": self.external_url, "alerts": alerts})
    }

    /// Posts until it succeeds, gets a 4xx, or `deadline` passes; backoff doubles from 100 ms to 5 s.
    fn deliver(&self, payload: &Value, deadline: Instant) -> bool {
        let body = serde_json::to_vec(payload).expect("payload serializes");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(self.config.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut request = agent.post(&self.config.url).header("Content-Type", "application/json");
            if let Some(token) = &self.config.bearer_token {
                request = request.header("Authorization", &format!("Bearer {token}"));
            }
            if let Some((user, password)) = &self.config.basic_auth {
                request = request.header("Authorization", &basic_auth(user, password));
            }
            let retry = match request.send(&body[..]) {
                Ok(response) if response.status().is_success() => return true,
                Ok(response) if response.status().is_client_error() => {
                    tracing::warn!(receiver = %self.config.name, status = response.status().as_u16(), "webhook refused the notification; not retried");
                    false
                }
                Ok(response) => {
                    tracing::warn!(receiver = %self.config.name, status = response.status().as_u16(), "webhook failed; retrying");
                    true
                }
                Err(error) => {
                    tracing::warn!(receiver = %self.config.name, %error, "webhook unreachable; retrying");
                    true
                }
            };
            metrics::counter!("vigil_webhook_attempts_failed_total", "receiver" => self.config.name.clone())
                .increment(1);
            if !retry || Instant::now() + backoff >= deadline {
                return false;
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    fn finish(&self, key: &str, delivered: bool, notified: Notified) {
        let name = self.config.name.clone();
        if delivered {
            metrics::counter!("vigil_webhook_notifications_total", "receiver" => name).increment(1);
        } else {
            metrics::counter!("vigil_webhook_notifications_failed_total", "receiver" => name).increment(1);
        }
        let mut groups = self.groups.lock().expect("groups lock");
        let Some(group) = groups.get_mut(key) else { return };
        group.in_flight = false;
        if !delivered {
            return;
        }
        let now = Utc::now();
        group.alerts.retain(|fp, alert| !(notified.resolved.contains(fp) && alert.is_resolved_at(now)));
        group.last = Some(notified);
        if group.alerts.is_empty() {
            groups.remove(key);
        }
    }
}

fn basic_auth(user: &str, password: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}").into_bytes();
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_base64_of_user_and_password() {
        assert_eq!(basic_auth("Aladdin", "open sesame"), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert_eq!(basic_auth("a", "b"), "Basic YTpi");
    }

    #[test]
    fn deduplication_follows_alertmanager() {
        let receiver = Receiver {
            config: WebhookConfig::new("r", "http://127.0.0.1:1/"),
            external_url: String::new(),
            groups: Mutex::new(HashMap::new()),
        };
        let set = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let now = Instant::now();
        assert!(receiver.needs_update(None, &set(&["a"]), &set(&[]), now));
        assert!(!receiver.needs_update(None, &set(&[]), &set(&["a"]), now), "only resolved, never notified");
        let last = Notified { at: now, firing: set(&["a"]), resolved: set(&[]) };
        assert!(!receiver.needs_update(Some(&last), &set(&["a"]), &set(&[]), now), "unchanged, within repeat");
        assert!(receiver.needs_update(Some(&last), &set(&["a", "b"]), &set(&[]), now), "a new alert");
        assert!(receiver.needs_update(Some(&last), &set(&[]), &set(&["a"]), now), "all resolved");
        let later = now + Duration::from_secs(4 * 3600);
        assert!(receiver.needs_update(Some(&last), &set(&["a"]), &set(&[]), later), "repeat interval passed");
    }
}
