//! Real Prometheus as the oracle: the same remote-write data goes to both, and Grafana's calls
//! (health check, label browser, instant and range queries) must give the same answers.
//! A real Prometheus scraping a real node-exporter remote-writes into Vigil, and every series reads the
//! same in both. The peers come from the Debian packages `prometheus` and `prometheus-node-exporter`,
//! installed by `scripts/test.sh`.

mod harness;

use std::time::{Duration, Instant};

use harness::{Peer, Vigil, client, free_port, get, remote_write_body, url_encode};
use serde_json::Value;

struct Prometheus {
    _peer: Peer,
    port: u16,
    _dir: tempfile::TempDir,
}

fn start_prometheus() -> Prometheus {
    start_prometheus_with("global:\n  scrape_interval: 1h\n")
}

fn start_prometheus_with(config_text: &str) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, config_text).unwrap();
    let port = free_port();
    let peer = Peer::start(
        "prometheus",
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--web.enable-remote-write-receiver".into(),
        ],
    );
    let prometheus = Prometheus { _peer: peer, port, _dir: dir };
    let http = client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut response) = http.get(format!("http://127.0.0.1:{port}/-/ready")).call()
            && response.status() == 200
            && response.body_mut().read_to_string().is_ok()
        {
            return prometheus;
        }
        assert!(Instant::now() < deadline, "prometheus did not become ready in 30 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

const STEP_MS: i64 = 15_000;
const POINTS: i64 = 240;

type OwnedSeries = (Vec<(String, String)>, Vec<(i64, f64)>);

/// An hour of node- and app-like series ending a minute ago, every 15 s.
fn dataset(start_ms: i64) -> Vec<OwnedSeries> {
    let mut out = Vec::new();
    let times =
        |f: &dyn Fn(i64) -> f64| -> Vec<(i64, f64)> { (0..POINTS).map(|i| (start_ms + i * STEP_MS, f(i))).collect() };
    for (job, instance, rate) in [("api", "a:1", 3.0), ("api", "b:1", 5.0), ("web", "c:1", 1.5)] {
        for (code, share) in [("200", 0.9), ("500", 0.1)] {
            let labels = vec![
                ("__name__".into(), "http_requests_total".into()),
                ("job".into(), job.into()),
                ("instance".into(), instance.into()),
                ("code".into(), code.into()),
            ];
            // A counter with a reset two thirds of the way through.
            let values = times(&|i| {
                let base = if i < 160 { i } else { i - 160 };
                (base as f64 * 15.0 * rate * share).floor()
            });
            out.push((labels, values));
        }
        for (le, fraction) in [("0.1", 0.5), ("0.5", 0.8), ("1", 0.95), ("+Inf", 1.0)] {
            let labels = vec![
                ("__name__".into(), "http_request_duration_seconds_bucket".into()),
                ("job".into(), job.into()),
                ("instance".into(), instance.into()),
                ("le".into(), le.into()),
            ];
            out.push((labels, times(&|i| (i as f64 * 15.0 * rate * fraction).floor())));
        }
        let up =
            vec![("__name__".into(), "up".into()), ("job".into(), job.into()), ("instance".into(), instance.into())];
        out.push((
            up,
            times(&|i| {
                if job == "web" && (100..120).contains(&i) { 0.0 } else { 1.0 }
            }),
        ));
        let temperature =
            vec![("__name__".into(), "node_temperature_celsius".into()), ("instance".into(), instance.into())];
        out.push((temperature, times(&|i| 40.0 + ((i as f64) / 7.0).sin() * 5.0 + rate)));
    }
    out
}

fn write_body(series: &[OwnedSeries]) -> Vec<u8> {
    let label_refs: Vec<Vec<(&str, &str)>> =
        series.iter().map(|(labels, _)| labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()).collect();
    let refs: Vec<harness::WireSeries<'_>> =
        label_refs.iter().zip(series).map(|(labels, (_, samples))| (labels.as_slice(), samples.as_slice())).collect();
    remote_write_body(&refs)
}

fn post_write(url: &str, body: &[u8]) -> u16 {
    let mut response = client()
        .post(url)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .send(body)
        .unwrap();
    let status = response.status().as_u16();
    let _ = response.body_mut().read_to_string();
    status
}

/// The `data` of a successful response with vector/matrix results keyed and sorted by labels.
fn normalised(body: &str) -> Value {
    let parsed: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(parsed["status"], "success", "{body}");
    let mut data = parsed["data"].clone();
    if let Some(result) = data.get_mut("result").and_then(Value::as_array_mut) {
        result.sort_by_key(|entry| entry["metric"].to_string());
    }
    data
}

fn numbers_close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => match (x.parse::<f64>(), y.parse::<f64>()) {
            (Ok(x), Ok(y)) => x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()) || (x.is_nan() && y.is_nan()),
            _ => x == y,
        },
        (Value::Number(x), Value::Number(y)) => (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-6,
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| numbers_close(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| numbers_close(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn grafana_calls_answer_like_prometheus() {
    let prometheus = start_prometheus();
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::server(dir.path(), &[]);
    let now_ms = chrono_now_ms();
    let start_ms = (now_ms - 61 * 60 * 1000) / 60_000 * 60_000;
    let body = write_body(&dataset(start_ms));
    let prometheus_base = format!("http://127.0.0.1:{}", prometheus.port);
    assert_eq!(post_write(&format!("{prometheus_base}/api/v1/write"), &body), 204);
    assert_eq!(post_write(&vigil.http("/api/v1/write"), &body), 204);

    // Between sample times, so closed- and open-left windows see the same samples.
    let at = |offset_s: i64| format!("{:.1}", (start_ms as f64 / 1000.0) + offset_s as f64 + 7.5);
    let (range_start, range_end) = (at(1200), at(3300));
    let instant_queries = [
        "1+1",
        "up",
        "count(up)",
        "sum by (job) (rate(http_requests_total[5m]))",
        "sum(increase(http_requests_total{code=\"500\"}[10m])) by (instance)",
        "irate(http_requests_total{job=\"api\"}[2m])",
        "histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))",
        "histogram_quantile(0.5, sum by (job, le) (rate(http_request_duration_seconds_bucket[10m])))",
        "topk(2, sum by (instance) (rate(http_requests_total[5m])))",
        "avg_over_time(node_temperature_celsius[10m])",
        "max_over_time(node_temperature_celsius[30m]) - min_over_time(node_temperature_celsius[30m])",
        "sum(rate(http_requests_total{code=\"500\"}[5m])) / sum(rate(http_requests_total[5m]))",
        "rate(http_requests_total[5m]) * on(instance) group_left up",
        "label_replace(up, \"host\", \"$1\", \"instance\", \"(.*):.*\")",
        "absent(nonexistent_metric{job=\"x\"})",
        "deriv(node_temperature_celsius[10m])",
        "quantile(0.5, node_temperature_celsius)",
        "count_values(\"value\", up)",
        "resets(http_requests_total[1h])",
        "predict_linear(node_temperature_celsius[15m], 600)",
    ];
    let http = client();
    let mut compared = 0;
    for query in instant_queries {
        for time in [at(1800), at(3000)] {
            let path = format!("/api/v1/query?query={}&time={time}", url_encode(query));
            let (_, theirs) = get(&http, &format!("{prometheus_base}{path}"), None);
            let (_, ours) = get(&http, &vigil.http(&path), None);
            let (theirs, ours) = (normalised(&theirs), normalised(&ours));
            assert!(numbers_close(&theirs, &ours), "{query} at {time}\nprometheus: {theirs}\nvigil:      {ours}");
            let empty = theirs["result"].as_array().is_some_and(Vec::is_empty);
            assert!(!empty, "{query}: every query is chosen to have a result: {theirs}");
            compared += 1;
        }
    }
    let range_queries = [
        "sum by (job) (rate(http_requests_total[5m]))",
        "histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))",
        "up",
        "avg_over_time(node_temperature_celsius[5m])",
    ];
    for query in range_queries {
        let path =
            format!("/api/v1/query_range?query={}&start={range_start}&end={range_end}&step=60", url_encode(query));
        let (_, theirs) = get(&http, &format!("{prometheus_base}{path}"), None);
        let (_, ours) = get(&http, &vigil.http(&path), None);
        let (theirs, ours) = (normalised(&theirs), normalised(&ours));
        assert!(numbers_close(&theirs, &ours), "{query}\nprometheus: {theirs}\nvigil:      {ours}");
        assert!(theirs["result"][0]["values"].as_array().is_some_and(|v| v.len() == 36), "{query}: {theirs}");
        compared += 1;
    }
    for path in [
        "/api/v1/labels".to_owned(),
        "/api/v1/label/__name__/values?limit=40000".to_owned(),
        "/api/v1/label/job/values?match[]=up".to_owned(),
        format!("/api/v1/series?match[]={}&limit=40000", url_encode("{__name__!=\"\"}")),
        format!("/api/v1/series?match[]={}", url_encode("http_requests_total{code=\"500\"}")),
    ] {
        let (_, theirs) = get(&http, &format!("{prometheus_base}{path}"), None);
        let (_, ours) = get(&http, &vigil.http(&path), None);
        let mut theirs = normalised_list(&theirs);
        let mut ours = normalised_list(&ours);
        theirs.sort_by_key(Value::to_string);
        ours.sort_by_key(Value::to_string);
        assert!(!theirs.is_empty(), "{path}");
        assert_eq!(theirs, ours, "{path}");
        compared += 1;
    }
    let (_, theirs) = get(&http, &format!("{prometheus_base}/api/v1/status/tsdb"), None);
    let (_, ours) = get(&http, &vigil.http("/api/v1/status/tsdb"), None);
    let (theirs, ours): (Value, Value) = (serde_json::from_str(&theirs).unwrap(), serde_json::from_str(&ours).unwrap());
    assert_eq!(theirs["data"]["headStats"]["numSeries"], ours["data"]["headStats"]["numSeries"]);
    let by_metric = |v: &Value| {
        let mut pairs: Vec<String> =
            v["data"]["seriesCountByMetricName"].as_array().unwrap().iter().map(Value::to_string).collect();
        pairs.sort();
        pairs
    };
    assert_eq!(by_metric(&theirs), by_metric(&ours));
    assert_eq!(compared, 2 * instant_queries.len() + range_queries.len() + 5);
}

fn normalised_list(body: &str) -> Vec<Value> {
    let parsed: Value = serde_json::from_str(body).unwrap();
    assert_eq!(parsed["status"], "success", "{body}");
    parsed["data"].as_array().cloned().unwrap_or_default()
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Every series of `selector` at `time` (Unix seconds) as label set → value text.
fn snapshot(url: &str, selector: &str, time: f64) -> std::collections::BTreeMap<String, String> {
    let mut request = client().get(format!("{url}/api/v1/query"));
    request = request.query("query", selector).query("time", format!("{time:.3}"));
    let mut response = request.call().unwrap();
    let body: Value = serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["metric"].to_string(), r["value"][1].as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn prometheus_scraping_node_exporter_remote_writes_the_same_series_into_vigil() {
    let data = tempfile::tempdir().unwrap();
    let vigil = Vigil::server(data.path(), &[]);
    let exporter_port = free_port();
    let _exporter =
        Peer::start("prometheus-node-exporter", &[format!("--web.listen-address=127.0.0.1:{exporter_port}")]);
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{exporter_port}']\nremote_write:\n  - url: http://{}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n",
        vigil.addr
    );
    let prometheus = start_prometheus_with(&config);
    let prometheus_url = format!("http://127.0.0.1:{}", prometheus.port);
    let vigil_url = format!("http://{}", vigil.addr);

    // Let a few scrapes land, then compare every series at a time both have all samples for.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        let scraped = snapshot(&prometheus_url, "up{job=\"node\"}", now);
        let received = snapshot(&vigil_url, "up{job=\"node\"}", now);
        if scraped.values().any(|v| v == "1") && !received.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no scrape reached Vigil in 30 s");
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(4));
    let at = chrono::Utc::now().timestamp_millis() as f64 / 1000.0 - 3.0;
    let expected = snapshot(&prometheus_url, "{job=\"node\"}", at);
    let actual = snapshot(&vigil_url, "{job=\"node\"}", at);
    assert!(expected.len() > 200, "node-exporter exposes hundreds of series: {}", expected.len());
    let missing: Vec<&String> = expected.keys().filter(|k| !actual.contains_key(*k)).take(5).collect();
    let differing: Vec<(&String, &String, Option<&String>)> = expected
        .iter()
        .filter(|(k, v)| actual.get(*k).is_some_and(|a| a != *v))
        .map(|(k, v)| (k, v, actual.get(k)))
        .take(5)
        .collect();
    assert!(missing.is_empty() && differing.is_empty(), "missing: {missing:?}; differing: {differing:?}");
    assert_eq!(expected.len(), actual.len());
    println!("{} node-exporter series agree between Prometheus and Vigil", expected.len());
}
