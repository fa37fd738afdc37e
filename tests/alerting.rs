//! Alerting end to end: rules evaluated by the real binary over remote-written data, alerts delivered to
//! webhook receivers that fail, time out and recover (every firing and resolved notification arrives,
//! none twice), and through a real Alertmanager (Debian `prometheus-alertmanager`) to a webhook; the rule
//! APIs' shapes; reloads that reject invalid files and keep the old rules.

mod harness;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::{Vigil, client, get, remote_write, remote_write_body};
use serde_json::Value;

/// What a scripted receiver does with one request.
#[derive(Debug, Clone, Copy)]
enum Reply {
    Status(u16),
    /// Holds the request without answering, past the sender's timeout.
    Hang(Duration),
}

/// A webhook receiver: replies as scripted (then 200), and records the bodies it answered 200 to.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    script: Arc<Mutex<VecDeque<Reply>>>,
    accepted: Arc<Mutex<Vec<(Instant, Value)>>>,
    attempts: Arc<Mutex<Vec<(Instant, u16)>>>,
}

impl Receiver {
    fn start(script: &[Reply]) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let receiver = Receiver {
            addr: listener.local_addr().unwrap(),
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            accepted: Arc::default(),
            attempts: Arc::default(),
        };
        let shared = receiver.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let shared = shared.clone();
                std::thread::spawn(move || shared.serve(stream));
            }
        });
        receiver
    }

    fn serve(&self, stream: TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        loop {
            let mut length = 0usize;
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 {
                    return;
                }
                if header.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap();
                    }
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let reply = self.script.lock().unwrap().pop_front().unwrap_or(Reply::Status(200));
            let status = match reply {
                Reply::Hang(duration) => {
                    self.attempts.lock().unwrap().push((Instant::now(), 0));
                    std::thread::sleep(duration);
                    return;
                }
                Reply::Status(status) => status,
            };
            self.attempts.lock().unwrap().push((Instant::now(), status));
            if status == 200 {
                self.accepted.lock().unwrap().push((Instant::now(), serde_json::from_slice(&body).unwrap()));
            }
            let response = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
            if writer.write_all(response.as_bytes()).is_err() {
                return;
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn accepted(&self) -> Vec<Value> {
        self.accepted.lock().unwrap().iter().map(|(_, body)| body.clone()).collect()
    }

    /// Waits up to `limit` for `count` accepted notifications.
    fn wait_for(&self, count: usize, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        while self.accepted.lock().unwrap().len() < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.accepted()
    }
}

fn write_switch(vigil: &Vigil, value: f64) {
    let now = chrono::Utc::now().timestamp_millis();
    let body = remote_write_body(&[(&[("__name__", "switch"), ("instance", "a")], &[(now, value)])]);
    let (status, text) = remote_write(&client(), vigil, &body, None);
    assert_eq!(status, 204, "{text}");
}

const RULES: &str = r#"
groups:
  - name: switches
    interval: 1s
    rules:
      - alert: Switch
        expr: switch > 0
        labels:
          severity: page
        annotations:
          summary: "switch {{ $labels.instance }} is {{ $value }}"
      - record: switch:count
        expr: count(switch)
"#;

fn json_get(vigil: &Vigil, path: &str) -> Value {
    let (status, body) = get(&client(), &vigil.http(path), None);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn alert_states(vigil: &Vigil) -> Vec<String> {
    let alerts = json_get(vigil, "/api/v1/alerts");
    alerts["data"]["alerts"].as_array().unwrap().iter().map(|a| a["state"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn webhooks_get_every_notification_once_through_failures_and_timeouts() {
    // The flaky receiver fails, then times out, then takes the firing notification; fails once more,
    // then takes the resolved one. The strict receiver answers 400 once: not retried at once.
    let flaky = Receiver::start(&[
        Reply::Status(503),
        Reply::Hang(Duration::from_secs(3)),
        Reply::Status(200),
        Reply::Status(500),
    ]);
    let strict = Receiver::start(&[Reply::Status(400)]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/switches.yml"), RULES).unwrap();
    let config = format!(
        "global: {{external_labels: {{cluster: test}}}}\nrule_files: ['{}/rules/*.yml']\nwebhooks:\n{}{}",
        dir.path().display(),
        webhook_entry("flaky", &flaky.url("/hook")),
        webhook_entry("strict", &strict.url("/hook")),
    );
    std::fs::write(dir.path().join("vigil.yml"), config).unwrap();
    let data = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("vigil.yml");
    let vigil = Vigil::server(data.path(), &["--config", config_path.to_str().unwrap()]);

    write_switch(&vigil, 1.0);
    let firing = flaky.wait_for(1, Duration::from_secs(15));
    assert_eq!(firing.len(), 1, "the firing notification arrives through a 503 and a timeout");
    let notification = &firing[0];
    assert_eq!(notification["version"], "4");
    assert_eq!(notification["status"], "firing");
    assert_eq!(notification["receiver"], "flaky");
    assert_eq!(notification["groupLabels"], serde_json::json!({"alertname": "Switch"}));
    assert_eq!(notification["groupKey"], "{}:{alertname=\"Switch\"}");
    assert_eq!(notification["truncatedAlerts"], 0);
    let alert = &notification["alerts"][0];
    assert_eq!(alert["status"], "firing");
    assert_eq!(
        alert["labels"],
        serde_json::json!({"alertname": "Switch", "instance": "a", "severity": "page", "cluster": "test"})
    );
    assert_eq!(alert["annotations"]["summary"], "switch a is 1");
    assert_eq!(notification["commonLabels"], alert["labels"]);
    assert_eq!(notification["commonAnnotations"]["summary"], "switch a is 1");
    assert!(alert["generatorURL"].as_str().unwrap().contains("g0.expr=switch+%3E+0"), "{alert}");
    assert_eq!(alert_states(&vigil), ["firing"]);

    // The 400 was not retried within the backoff; the next group tick delivered it.
    assert!(wait_until(Duration::from_secs(10), || strict.accepted().len() == 1));
    let attempts = strict.attempts.lock().unwrap().clone();
    assert_eq!(attempts[0].1, 400);
    assert!(attempts[1].0 - attempts[0].0 >= Duration::from_millis(1500), "{attempts:?}");

    write_switch(&vigil, 0.0);
    let all = flaky.wait_for(2, Duration::from_secs(15));
    assert_eq!(all.len(), 2, "the resolved notification arrives through a 500");
    assert_eq!(all[1]["status"], "resolved");
    assert_eq!(all[1]["alerts"][0]["status"], "resolved");
    assert!(wait_until(Duration::from_secs(10), || strict.accepted().len() == 2));
    // Nothing more within the repeat interval (1h): no duplicates.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(flaky.accepted().len(), 2);
    assert_eq!(strict.accepted().len(), 2);

    let (_, metrics) = get(&client(), &vigil.http("/metrics"), None);
    let failed = metrics
        .lines()
        .find(|l| l.starts_with("vigil_webhook_notifications_failed_total{receiver=\"strict\"}"))
        .unwrap_or_else(|| panic!("no undelivered counter:\n{metrics}"));
    assert_eq!(failed.rsplit(' ').next().unwrap(), "1");
}

fn webhook_entry(name: &str, url: &str) -> String {
    format!(
        "  - name: {name}\n    url: {url}\n    group_wait: 1s\n    group_interval: 2s\n    repeat_interval: 1h\n    timeout: 1s\n"
    )
}

struct Alertmanager {
    _peer: harness::Peer,
    port: u16,
}

fn start_alertmanager(dir: &Path, webhook: &str) -> Alertmanager {
    let config = format!(
        "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: {webhook}\n        send_resolved: true\n"
    );
    std::fs::write(dir.join("alertmanager.yml"), config).unwrap();
    let port = harness::free_port();
    let peer = harness::Peer::start(
        "prometheus-alertmanager",
        &[
            format!("--config.file={}", dir.join("alertmanager.yml").display()),
            format!("--storage.path={}", dir.join("am-data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=".into(),
        ],
    );
    let manager = Alertmanager { _peer: peer, port };
    let ready = format!("http://127.0.0.1:{port}/-/ready");
    let up = || client().get(&ready).call().is_ok_and(|r| r.status() == 200);
    assert!(wait_until(Duration::from_secs(20), up), "alertmanager not ready");
    manager
}

#[test]
fn alertmanager_receives_vigils_alerts_and_forwards_them() {
    let hook = Receiver::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let alertmanager = start_alertmanager(dir.path(), &hook.url("/am"));
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES).unwrap();
    let config = format!(
        "global: {{external_labels: {{cluster: test}}}}\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{}']\n",
        alertmanager.port
    );
    let config_path = dir.path().join("vigil.yml");
    std::fs::write(&config_path, config).unwrap();
    let data = tempfile::tempdir().unwrap();
    let vigil = Vigil::server(
        data.path(),
        &["--config", config_path.to_str().unwrap(), "--rule-file", rules.to_str().unwrap()],
    );

    write_switch(&vigil, 1.0);
    let firing = hook.wait_for(1, Duration::from_secs(20));
    assert_eq!(firing.len(), 1, "alertmanager forwarded the firing alert");
    assert_eq!(firing[0]["status"], "firing");
    let labels = &firing[0]["alerts"][0]["labels"];
    assert_eq!(
        labels,
        &serde_json::json!({"alertname": "Switch", "instance": "a", "severity": "page", "cluster": "test"})
    );
    assert_eq!(firing[0]["alerts"][0]["annotations"]["summary"], "switch a is 1");
    // Alertmanager holds it as active, with the endsAt Vigil gave (4 × the 1m resend delay ahead).
    let (_, listed) = get(&client(), &format!("http://127.0.0.1:{}/api/v2/alerts", alertmanager.port), None);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["status"]["state"], "active");
    let starts = chrono::DateTime::parse_from_rfc3339(listed[0]["startsAt"].as_str().unwrap()).unwrap();
    let ends = chrono::DateTime::parse_from_rfc3339(listed[0]["endsAt"].as_str().unwrap()).unwrap();
    let ahead = (ends - starts).num_seconds();
    assert!((230..=245).contains(&ahead), "endsAt is {ahead}s after startsAt");

    write_switch(&vigil, 0.0);
    let all = hook.wait_for(2, Duration::from_secs(20));
    assert_eq!(all.len(), 2, "alertmanager forwarded the resolution");
    assert_eq!(all[1]["status"], "resolved");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(hook.accepted().len(), 2, "no duplicate notification");
}

#[test]
fn rule_apis_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES).unwrap();
    let data = tempfile::tempdir().unwrap();
    let vigil = Vigil::server(data.path(), &["--rule-file", rules.to_str().unwrap()]);
    write_switch(&vigil, 1.0);
    assert!(wait_until(Duration::from_secs(10), || alert_states(&vigil) == ["firing"]));

    let body = json_get(&vigil, "/api/v1/rules");
    let group = &body["data"]["groups"][0];
    assert_eq!((group["name"].as_str(), group["interval"].as_f64()), (Some("switches"), Some(1.0)));
    assert_eq!(group["file"], rules.to_str().unwrap());
    let alerting = &group["rules"][0];
    assert_eq!(alerting["type"], "alerting");
    assert_eq!(alerting["state"], "firing");
    assert_eq!(alerting["health"], "ok");
    assert_eq!(alerting["query"], "switch > 0");
    assert_eq!(alerting["alerts"][0]["value"], "1e+00");
    assert_eq!(alerting["alerts"][0]["labels"]["severity"], "page");
    assert_eq!(group["rules"][1]["type"], "recording");
    let only_records = json_get(&vigil, "/api/v1/rules?type=record");
    assert_eq!(only_records["data"]["groups"][0]["rules"].as_array().unwrap().len(), 1);
    // The recording rule wrote its series; ALERTS is queryable.
    assert!(wait_until(Duration::from_secs(5), || !harness::instant_query(&vigil, "switch:count").is_empty()));
    let alerts_series = || harness::instant_query(&vigil, "ALERTS{alertstate=\"firing\"}");
    assert!(wait_until(Duration::from_secs(5), || alerts_series().len() == 1), "ALERTS is written");

    // An invalid file is refused with file, line and reason; the old rules stay.
    std::fs::write(&rules, RULES.replace("expr: count(switch)", "expr: count(switch")).unwrap();
    let agent = client();
    let mut response = agent.post(vigil.http("/-/reload")).send("").unwrap();
    assert_eq!(response.status().as_u16(), 500);
    let text = response.body_mut().read_to_string().unwrap();
    let rule_line = RULES.lines().position(|l| l.contains("record: switch:count")).unwrap() + 1;
    let location = format!("{}:{rule_line}:", rules.display());
    assert!(text.contains(&location) && text.contains("could not parse expression"), "{text}");
    let body = json_get(&vigil, "/api/v1/rules");
    assert_eq!(body["data"]["groups"][0]["rules"].as_array().unwrap().len(), 2);
    assert_eq!(alert_states(&vigil), ["firing"], "alert state survives");

    // A valid change by POST /-/reload, then another by SIGHUP.
    let with_third = format!("{RULES}      - record: switch:sum\n        expr: sum(switch)\n");
    std::fs::write(&rules, &with_third).unwrap();
    let response = agent.post(vigil.http("/-/reload")).send("").unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let count =
        |vigil: &Vigil| json_get(vigil, "/api/v1/rules")["data"]["groups"][0]["rules"].as_array().unwrap().len();
    assert_eq!(count(&vigil), 3);
    assert_eq!(alert_states(&vigil), ["firing"], "reload keeps alert state");
    std::fs::write(&rules, RULES).unwrap();
    vigil.signal("HUP");
    assert!(wait_until(Duration::from_secs(5), || count(&vigil) == 2), "SIGHUP reloads");
}

#[test]
fn pending_time_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    // `for` at least the 10m grace period, so Prometheus's restore rule applies.
    let slow = "groups:\n  - name: slow\n    interval: 1s\n    rules:\n      - alert: Slow\n        expr: vector(1)\n        for: 1h\n";
    std::fs::write(&rules, slow).unwrap();
    let data = tempfile::tempdir().unwrap();
    let active_at = |vigil: &Vigil| -> Option<chrono::DateTime<chrono::FixedOffset>> {
        let alerts = json_get(vigil, "/api/v1/alerts");
        let text = alerts["data"]["alerts"][0]["activeAt"].as_str()?.to_owned();
        chrono::DateTime::parse_from_rfc3339(&text).ok()
    };
    let vigil = Vigil::server(data.path(), &["--rule-file", rules.to_str().unwrap()]);
    assert!(wait_until(Duration::from_secs(10), || active_at(&vigil).is_some()));
    let first = active_at(&vigil).unwrap();
    // Run long enough that a fresh start (no restore) would be clearly later, and ALERTS_FOR_STATE is written.
    assert!(wait_until(Duration::from_secs(10), || !harness::instant_query(&vigil, "ALERTS_FOR_STATE").is_empty()));
    std::thread::sleep(Duration::from_secs(5));
    let stopped = Instant::now();
    let (status, _) = vigil.terminate(Duration::from_secs(10));
    assert!(status.success());

    let vigil = Vigil::server(data.path(), &["--rule-file", rules.to_str().unwrap()]);
    let down = stopped.elapsed();
    assert!(wait_until(Duration::from_secs(10), || active_at(&vigil).is_some_and(|t| t != first)));
    let restored = active_at(&vigil).unwrap();
    // Restored: the original activeAt shifted by the time the server was down (whole seconds), not the
    // new start time (which would add the 5+ seconds it ran before).
    let shift = (restored - first).num_milliseconds();
    assert!(shift >= 0 && shift <= down.as_millis() as i64 + 2000, "shifted by {shift} ms, down {down:?}");
    let states = alert_states(&vigil);
    assert_eq!(states, ["pending"]);
}

#[test]
fn log_rules_alert_and_record_from_logql() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("log-rules.yml");
    let text = r#"
groups:
  - name: logs
    interval: 1s
    rules:
      - record: app:log_errors:count1m
        expr: sum by (app) (count_over_time({app="api"} |= "error" [1m]))
      - alert: ManyErrors
        expr: sum by (app) (count_over_time({app="api"} |= "error" [1m])) > 2
        annotations:
          summary: "{{ $labels.app }} logged {{ $value }} errors"
"#;
    std::fs::write(&rules, text).unwrap();
    let data = tempfile::tempdir().unwrap();
    let vigil = Vigil::server(data.path(), &["--log-rule-file", rules.to_str().unwrap()]);
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    let values: Vec<Value> = ["error: disk full", "info: ok", "error: timeout", "error: refused"]
        .iter()
        .enumerate()
        .map(|(i, line)| serde_json::json!([(now - 1_000_000_000 * (4 - i as i64)).to_string(), line]))
        .collect();
    let push = serde_json::json!({"streams": [{"stream": {"app": "api"}, "values": values}]});
    let response = client()
        .post(vigil.http("/loki/api/v1/push"))
        .header("Content-Type", "application/json")
        .send(push.to_string())
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);

    let firing = || {
        let alerts = json_get(&vigil, "/api/v1/alerts");
        alerts["data"]["alerts"].as_array().unwrap().iter().find(|a| a["state"] == "firing").cloned()
    };
    assert!(wait_until(Duration::from_secs(10), || firing().is_some()), "the log alert fires");
    let alert = firing().unwrap();
    assert_eq!(alert["labels"]["alertname"], "ManyErrors");
    assert_eq!(alert["annotations"]["summary"], "api logged 3 errors");
    let recorded = || harness::instant_query(&vigil, "app:log_errors:count1m");
    assert!(wait_until(Duration::from_secs(5), || !recorded().is_empty()), "the log rule records a metric");
    assert_eq!(recorded()[0]["value"][1], "3");
    assert_eq!(recorded()[0]["metric"]["app"], "api");
}
