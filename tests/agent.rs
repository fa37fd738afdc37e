//! `vigil agent` over a fixture node tree ships cAdvisor-compatible container metrics to a real server over
//! OTLP/gRPC, serves them on its own `/metrics`, and buffers on disk while the server is down.

mod harness;

use std::time::{Duration, Instant};

use harness::{Vigil, client, get, instant_query};
use serde_json::Value;
use vigil_agent::fixture::{CgroupVersion, Driver, NodeFixture};

/// Polls `expr` until it returns `count` series, for at most `limit`.
fn wait_for_series(vigil: &Vigil, expr: &str, count: usize, limit: Duration) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let result = instant_query(vigil, expr);
        if result.len() == count || Instant::now() > deadline {
            return result;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(vigil_agent::fixture::scratch_parent()).unwrap()
}

#[test]
fn container_metrics_arrive_with_cadvisor_names_and_labels() {
    let fixture = NodeFixture { version: CgroupVersion::V2, driver: Driver::Systemd, containers: 20 };
    let root = scratch();
    fixture.write(root.path()).unwrap();
    let (data, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let server = Vigil::server(data.path(), &[]);
    let agent = Vigil::agent(&server, root.path(), state.path(), &["--node-name", "node-a", "--interval", "1s"]);

    let selector =
        r#"container_memory_working_set_bytes{job="cadvisor",node="node-a",instance="node-a",container!=""}"#;
    let series = wait_for_series(&server, selector, 20, Duration::from_secs(15));
    assert_eq!(series.len(), 20, "{series:?}");
    for expected in fixture.containers().iter().filter(|c| !c.is_sandbox()) {
        let found = series.iter().find(|s| s["metric"]["id"] == expected.cgroup.as_str()).expect("every container");
        let metric = &found["metric"];
        assert_eq!(metric["namespace"], expected.namespace.as_str());
        assert_eq!(metric["pod"], expected.pod.as_str());
        assert_eq!(metric["container"], expected.container.as_str());
        assert_eq!(metric["image"], expected.image.as_str());
        assert_eq!(found["value"][1], expected.working_set().to_string());
    }
    let cpu = instant_query(&server, r#"container_cpu_usage_seconds_total{cpu="total",id="/"}"#);
    assert_eq!(cpu.len(), 1, "the root cgroup: {cpu:?}");
    let host = instant_query(&server, r#"node_load1{job="node",instance="node-a"}"#);
    assert_eq!(host[0]["value"][1], "0.5");

    let (status, exposition) = get(&client(), &agent.http("/metrics"), None);
    assert_eq!(status, 200);
    let sandbox = fixture.containers().into_iter().find(|c| c.is_sandbox()).unwrap();
    let line = exposition
        .lines()
        .find(|l| l.starts_with("container_memory_working_set_bytes{") && l.contains(&sandbox.cgroup))
        .expect("the agent's /metrics lists the sandbox too");
    assert!(line.contains(r#"image="registry.k8s.io/pause:3.10""#) && !line.contains("container="), "{line}");
    assert!(exposition.contains("# TYPE container_cpu_usage_seconds_total counter"));
}

#[test]
fn batches_wait_on_disk_while_the_server_is_down() {
    let fixture = NodeFixture { version: CgroupVersion::V1, driver: Driver::Cgroupfs, containers: 4 };
    let root = scratch();
    fixture.write(root.path()).unwrap();
    let (data, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let server = Vigil::server(data.path(), &[]);
    let grpc = server.otlp_grpc_addr.to_string();
    let agent = Vigil::agent(&server, root.path(), state.path(), &["--node-name", "node-b", "--interval", "500ms"]);
    let selector = r#"machine_cpu_cores{node="node-b"}"#;
    assert_eq!(wait_for_series(&server, selector, 1, Duration::from_secs(15)).len(), 1);
    let (status, _) = server.terminate(Duration::from_secs(10));
    assert!(status.success());

    std::thread::sleep(Duration::from_secs(3));
    let buffered = std::fs::read_dir(state.path().join("buffer/metrics")).unwrap().count();
    assert!(buffered >= 4, "collections while the server is down stay on disk: {buffered}");

    let server = Vigil::server(data.path(), &["--otlp-grpc-addr", &grpc]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut samples = 0;
    while Instant::now() < deadline {
        let points = instant_query(&server, r#"count_over_time(machine_cpu_cores{node="node-b"}[5m])"#);
        samples = points.first().map_or(0, |p| p["value"][1].as_str().unwrap().parse::<usize>().unwrap());
        let drained = std::fs::read_dir(state.path().join("buffer/metrics")).unwrap().count() <= 1;
        if drained && samples >= 8 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(samples >= 8, "the outage's collections arrived after the restart: {samples} samples");
    drop(agent);
}

/// Lines of a Loki query on `vigil`, in time order.
fn log_lines(vigil: &Vigil, query: &str) -> Vec<(Value, String)> {
    let path = format!("/loki/api/v1/query_range?direction=forward&limit=100&query={}", harness::url_encode(query));
    let (_, body) = get(&client(), &vigil.http(&path), None);
    let body: Value = serde_json::from_str(&body).unwrap_or_default();
    let mut out = Vec::new();
    for stream in body["data"]["result"].as_array().into_iter().flatten() {
        for value in stream["values"].as_array().unwrap() {
            out.push((stream["stream"].clone(), value[1].as_str().unwrap().to_owned()));
        }
    }
    out
}

#[test]
fn pod_logs_in_cri_and_docker_formats_reach_the_log_store() {
    use std::io::Write;
    let fixture = NodeFixture { version: CgroupVersion::V2, driver: Driver::Systemd, containers: 4 };
    let root = scratch();
    fixture.write(root.path()).unwrap();
    let app = fixture.containers().into_iter().find(|c| !c.is_sandbox()).unwrap();
    let log =
        root.path().join(format!("var/log/pods/{}_{}_{}/{}/0.log", app.namespace, app.pod, app.pod_uid, app.container));
    let now = chrono::Utc::now();
    let time = |offset_ms: i64| {
        (now + chrono::Duration::milliseconds(offset_ms)).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    };
    let append =
        |text: String| std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(text.as_bytes()).unwrap();
    append(format!("{} stdout F order placed\n{} stderr P payment fa\n", time(-3000), time(-2000)));

    let (data, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let server = Vigil::server(data.path(), &[]);
    let agent = Vigil::agent(&server, root.path(), state.path(), &["--node-name", "node-a", "--interval", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    append(format!("{} stderr F iled: card declined\n", time(-2000)));
    let docker =
        root.path().join(format!("var/log/pods/{}_{}_{}/{}/1.log", app.namespace, app.pod, app.pod_uid, app.container));
    std::fs::write(
        &docker,
        format!("{{\"log\":\"retrying\\n\",\"stream\":\"stdout\",\"time\":\"{}\"}}\n", time(-1000)),
    )
    .unwrap();

    let query = format!(r#"{{k8s_namespace_name="{}", k8s_pod_name="{}"}}"#, app.namespace, app.pod);
    let deadline = Instant::now() + Duration::from_secs(15);
    let lines = loop {
        let lines = log_lines(&server, &query);
        if lines.len() >= 3 || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let texts: Vec<&str> = lines.iter().map(|(_, text)| text.as_str()).collect();
    assert_eq!(texts, ["order placed", "payment failed: card declined", "retrying"], "{lines:?}");
    let stream = &lines[0].0;
    assert_eq!(stream["k8s_container_name"], app.container.as_str());
    assert_eq!(stream["service_name"], app.container.as_str());
    drop(agent);
}

#[test]
fn the_agent_ships_over_tls_with_the_ingest_token() {
    let fixture = NodeFixture { version: CgroupVersion::V2, driver: Driver::Systemd, containers: 2 };
    let root = scratch();
    fixture.write(root.path()).unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, certified) = harness::self_signed(certs.path());
    let (data, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let server = Vigil::server(
        data.path(),
        &[
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
            "--ingest-token",
            "s3cret",
        ],
    );
    let endpoint = format!("https://{}", server.otlp_grpc_addr);
    let args = [
        "agent",
        "--server",
        &endpoint,
        "--root",
        root.path().to_str().unwrap(),
        "--state-dir",
        state.path().to_str().unwrap(),
        "--http-addr",
        "127.0.0.1:0",
        "--interval",
        "1s",
        "--node-name",
        "tls-node",
        "--tls-ca-file",
        cert.to_str().unwrap(),
        "--ingest-token",
        "s3cret",
    ];
    let _agent = Vigil::start(harness::command(&args));
    // Read back over HTTPS, trusting the same certificate.
    let https = harness::https_client(&certified.cert);
    let url = format!("https://{}/api/v1/query?query=machine_cpu_cores%7Bnode%3D%22tls-node%22%7D", server.addr);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body = https.get(&url).call().ok().and_then(|mut r| r.body_mut().read_to_string().ok()).unwrap_or_default();
        if body.contains("tls-node") {
            break;
        }
        assert!(Instant::now() < deadline, "nothing arrived over TLS with the token: {body}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `name{...mountpoint="m"...} v` lines of an exposition, as mountpoint → value.
fn by_mountpoint(exposition: &str, name: &str) -> std::collections::BTreeMap<String, f64> {
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| {
            let mountpoint = l.split("mountpoint=\"").nth(1)?.split('"').next()?.to_owned();
            Some((mountpoint, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

#[test]
fn filesystems_match_real_node_exporter_on_this_machine() {
    let port = harness::free_port();
    let node_exporter = harness::Peer::start(
        "prometheus-node-exporter",
        &[
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--collector.disable-defaults".into(),
            "--collector.filesystem".into(),
        ],
    );
    let (data, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let server = Vigil::server(data.path(), &[]);
    let agent = Vigil::agent(&server, std::path::Path::new("/"), state.path(), &["--interval", "1s"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (expected, actual) = loop {
        let fetch = |url: String| client().get(url).call().ok().and_then(|mut r| r.body_mut().read_to_string().ok());
        let theirs = fetch(format!("http://127.0.0.1:{port}/metrics")).unwrap_or_default();
        let (_, ours) = get(&client(), &agent.http("/metrics"), None);
        let (expected, actual) =
            (by_mountpoint(&theirs, "node_filesystem_size_bytes"), by_mountpoint(&ours, "node_filesystem_size_bytes"));
        if (!expected.is_empty() && !actual.is_empty()) || Instant::now() > deadline {
            break (expected, actual);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(node_exporter);
    assert!(!expected.is_empty(), "node-exporter reports filesystems here");
    // The same filesystems, with the same sizes (sizes do not move; free space may).
    assert_eq!(actual, expected);
}

/// Every series of `selector` at `time` (Unix seconds), `node` left out, as labels → value.
fn series_at(url: &str, selector: &str, time: f64) -> std::collections::BTreeMap<String, f64> {
    let request =
        client().get(format!("{url}/api/v1/query")).query("query", selector).query("time", format!("{time:.3}"));
    let text = request.call().ok().and_then(|mut r| r.body_mut().read_to_string().ok()).unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or_default();
    let mut out = std::collections::BTreeMap::new();
    for result in body["data"]["result"].as_array().into_iter().flatten() {
        let mut metric = result["metric"].as_object().cloned().unwrap_or_default();
        metric.remove("node");
        out.insert(Value::Object(metric).to_string(), result["value"][1].as_str().unwrap().parse().unwrap());
    }
    out
}

#[test]
fn the_agent_scrapes_real_node_exporter_as_real_prometheus_does() {
    let exporter_port = harness::free_port();
    let target = format!("127.0.0.1:{exporter_port}");
    let _exporter = harness::Peer::start("prometheus-node-exporter", &[format!("--web.listen-address={target}")]);
    let dir = tempfile::tempdir().unwrap();
    let prometheus_port = harness::free_port();
    let scrape = format!(
        "scrape_configs:\n  - job_name: node\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['{target}']\n"
    );
    std::fs::write(dir.path().join("prometheus.yml"), &scrape).unwrap();
    let _prometheus = harness::Peer::start(
        "prometheus",
        &[
            format!("--config.file={}", dir.path().join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.path().join("prom").display()),
            format!("--web.listen-address=127.0.0.1:{prometheus_port}"),
        ],
    );
    std::fs::write(dir.path().join("agent.yml"), format!("agent:\n  {}", scrape.replace('\n', "\n  "))).unwrap();
    let (data, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let server = Vigil::server(data.path(), &[]);
    let root = scratch();
    let config = dir.path().join("agent.yml");
    let _agent =
        Vigil::agent(&server, root.path(), state.path(), &["--config", config.to_str().unwrap(), "--interval", "1s"]);

    let (prometheus_url, vigil_url) =
        (format!("http://127.0.0.1:{prometheus_port}"), format!("http://{}", server.addr));
    let selector = format!(r#"{{job="node",instance="{target}"}}"#);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (expected, actual) = loop {
        std::thread::sleep(Duration::from_millis(1000));
        let at = chrono::Utc::now().timestamp_millis() as f64 / 1000.0 - 2.0;
        let (expected, actual) = (series_at(&prometheus_url, &selector, at), series_at(&vigil_url, &selector, at));
        if (expected.len() > 100 && expected.len() == actual.len()) || Instant::now() > deadline {
            break (expected, actual);
        }
    };
    assert!(expected.len() > 100, "Prometheus scraped node-exporter: {} series", expected.len());
    let missing: Vec<&String> = expected.keys().filter(|k| !actual.contains_key(*k)).take(5).collect();
    let extra: Vec<&String> = actual.keys().filter(|k| !expected.contains_key(*k)).take(5).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}, extra {extra:?}");
    // Values that do not move between two scrapes a moment apart are equal; CPU counters are close.
    for (series, value) in &expected {
        let ours = actual[series];
        if ["node_memory_MemTotal_bytes", "node_filesystem_size_bytes", "\"up\""].iter().any(|n| series.contains(n)) {
            assert_eq!(ours, *value, "{series}");
        }
        if series.contains("node_cpu_seconds_total") {
            assert!((ours - value).abs() <= 5.0, "{series}: {ours} vs {value}");
        }
    }
    println!("{} series scraped from node-exporter agree between Prometheus and the agent", expected.len());
}

#[test]
fn file_discovery_adds_targets_and_their_removal_writes_staleness_markers() {
    let (data, state, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let server = Vigil::server(data.path(), &[]);
    // The target is the server's own /metrics, listed in a discovery file the test rewrites.
    let targets = dir.path().join("targets.json");
    let group = format!(r#"[{{"targets": ["{}"], "labels": {{"env": "test"}}}}]"#, server.addr);
    std::fs::write(&targets, &group).unwrap();
    let config = dir.path().join("agent.yml");
    let files = format!("{}/*.json", dir.path().display());
    let yaml = format!(
        "agent:\n  scrape_configs:\n    - job_name: files\n      scrape_interval: 1s\n      file_sd_configs:\n        \
         - files: ['{files}']\n          refresh_interval: 1s\n      relabel_configs:\n        \
         - {{source_labels: [__meta_filepath], regex: '.*/(.*)', target_label: file}}\n"
    );
    std::fs::write(&config, yaml).unwrap();
    let root = scratch();
    let _agent =
        Vigil::agent(&server, root.path(), state.path(), &["--config", config.to_str().unwrap(), "--interval", "1s"]);

    let up =
        wait_for_series(&server, r#"up{job="files", env="test", file="targets.json"}"#, 1, Duration::from_secs(20));
    assert_eq!(up[0]["value"][1], "1", "{up:?}");
    assert_eq!(up[0]["metric"]["instance"], server.addr.to_string());
    let scraped = wait_for_series(
        &server,
        r#"count(vigil_build_info{job="files", file="targets.json"})"#,
        1,
        Duration::from_secs(10),
    );
    assert_eq!(scraped[0]["value"][1], "1", "scraped samples arrive with the target's labels");

    // Emptied: the target goes away, and its series (up included) end with staleness markers instead of
    // lingering for the 5-minute lookback.
    std::fs::write(&targets, "[]").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !instant_query(&server, r#"up{job="files"}"#).is_empty() {
        assert!(Instant::now() < deadline, "up{{job=\"files\"}} still answers 20 s after its target went away");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(instant_query(&server, r#"vigil_build_info{job="files"}"#).is_empty());
}

/// Writes numbered CRI lines to the `0.log` of `streams` pod directories, one line per stream every 10 ms,
/// for `total` lines each. Every ninth line is written as a `P` piece and an `F` piece. Every `rotate_every`
/// lines a file is rotated, by rename (the previous renamed file is then gzipped and removed, as the kubelet
/// does) and by copytruncate, in turn. Lines are stamped `base_ns` + their number in milliseconds.
fn write_rotating_cri_logs(dirs: &[std::path::PathBuf], total: usize, rotate_every: usize, base_ns: i64) {
    use std::io::Write;
    let time = |n: usize| {
        chrono::DateTime::from_timestamp_nanos(base_ns + n as i64 * 1_000_000)
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    };
    let append = |dir: &std::path::Path, text: &str| {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("0.log")).unwrap();
        file.write_all(text.as_bytes()).unwrap();
    };
    let mut renamed: Vec<Option<std::path::PathBuf>> = vec![None; dirs.len()];
    for n in 0..total {
        for (stream, dir) in dirs.iter().enumerate() {
            let text = format!("seq={n:05} stream={stream} payload={}", "x".repeat(n % 40));
            if n % 9 == 4 {
                let (head, tail) = text.split_at(10);
                append(dir, &format!("{} stdout P {head}\n", time(n)));
                std::thread::sleep(Duration::from_millis(2));
                append(dir, &format!("{} stdout F {tail}\n", time(n)));
            } else {
                append(dir, &format!("{} stdout F {text}\n", time(n)));
            }
            if n > 0 && n % rotate_every == 0 {
                let rotated = dir.join(format!("0.log.{n:05}"));
                if (n / rotate_every) % 2 == 0 {
                    std::fs::copy(dir.join("0.log"), &rotated).unwrap();
                    std::fs::OpenOptions::new().write(true).open(dir.join("0.log")).unwrap().set_len(0).unwrap();
                } else {
                    std::fs::rename(dir.join("0.log"), &rotated).unwrap();
                    if let Some(previous) = renamed[stream].replace(rotated) {
                        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                        gz.write_all(&std::fs::read(&previous).unwrap()).unwrap();
                        std::fs::write(format!("{}.gz", previous.display()), gz.finish().unwrap()).unwrap();
                        std::fs::remove_file(previous).unwrap();
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every `seq=` number a Loki query returns, per stream label `pod`, in the order returned.
fn sequences(vigil: &Vigil, start_ns: i64, end_ns: i64) -> std::collections::BTreeMap<String, Vec<usize>> {
    let query = harness::url_encode(r#"{k8s_namespace_name="torture"}"#);
    let path =
        format!("/loki/api/v1/query_range?direction=forward&limit=100000&start={start_ns}&end={end_ns}&query={query}");
    let (_, body) = get(&client(), &vigil.http(&path), None);
    let body: Value = serde_json::from_str(&body).unwrap_or_default();
    let mut out: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for stream in body["data"]["result"].as_array().into_iter().flatten() {
        let pod = stream["stream"]["k8s_pod_name"].as_str().unwrap_or_default().to_owned();
        for value in stream["values"].as_array().unwrap() {
            let line = value[1].as_str().unwrap();
            let seq = line.strip_prefix("seq=").and_then(|rest| rest.get(..5)).and_then(|n| n.parse().ok());
            out.entry(pod.clone()).or_default().push(seq.unwrap_or(usize::MAX));
        }
    }
    out
}

#[test]
fn every_line_arrives_exactly_once_through_rotations_agent_kills_and_a_server_outage() {
    const TOTAL: usize = 1500;
    let root = scratch();
    let dirs: Vec<std::path::PathBuf> = (0..2)
        .map(|i| root.path().join(format!("var/log/pods/torture_writer-{i}_uid-{i}/app")))
        .inspect(|dir| std::fs::create_dir_all(dir).unwrap())
        .collect();
    let (data, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut server = Vigil::server(data.path(), &[]);
    let grpc = server.otlp_grpc_addr.to_string();
    let agent_args = ["--node-name", "node-t", "--interval", "30s"];
    let mut agent = Vigil::agent(&server, root.path(), state.path(), &agent_args);
    let base_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap() - 120_000_000_000;
    let writer = {
        let dirs = dirs.clone();
        std::thread::spawn(move || write_rotating_cri_logs(&dirs, TOTAL, 400, base_ns))
    };

    // SIGKILL at random moments (seeded, printed), restarting at once; the server away for 3 s.
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    println!("kill schedule seed {seed}");
    let mut random = seed | 1;
    let mut next_random = move |below: u64| {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random % below
    };
    let started = Instant::now();
    let mut kills = 0;
    let mut server_stopped = false;
    while !writer.is_finished() {
        std::thread::sleep(Duration::from_millis(1200 + next_random(2000)));
        if !server_stopped && started.elapsed() > Duration::from_secs(7) {
            let (status, _) = server.terminate(Duration::from_secs(10));
            assert!(status.success());
            std::thread::sleep(Duration::from_secs(3));
            server = Vigil::server(data.path(), &["--otlp-grpc-addr", &grpc]);
            server_stopped = true;
            continue;
        }
        agent.kill();
        kills += 1;
        agent = Vigil::agent(&server, root.path(), state.path(), &agent_args);
    }
    writer.join().unwrap();
    assert!(kills >= 3 && server_stopped, "the schedule ran: {kills} kills");

    let end_ns = base_ns + 3_600_000_000_000;
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut found = sequences(&server, base_ns - 1, end_ns);
    while found.values().map(Vec::len).sum::<usize>() < 2 * TOTAL && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        found = sequences(&server, base_ns - 1, end_ns);
    }
    let expected: Vec<usize> = (0..TOTAL).collect();
    assert_eq!(found.len(), 2, "both streams: {:?}", found.keys().collect::<Vec<_>>());
    for (pod, seqs) in &found {
        let missing: Vec<&usize> = expected.iter().filter(|n| !seqs.contains(n)).take(10).collect();
        let mut seen = std::collections::BTreeSet::new();
        let repeated: Vec<&usize> = seqs.iter().filter(|n| !seen.insert(**n)).take(10).collect();
        assert!(missing.is_empty() && repeated.is_empty(), "{pod}: missing {missing:?}, repeated {repeated:?}");
        assert_eq!(seqs, &expected, "{pod}: every line once, in order");
    }

    // The checkpoint lost: the agent reads the current files again from their start, and the server
    // drops every record it already has.
    agent.kill();
    std::fs::remove_file(state.path().join("pod-log-offsets.json")).unwrap();
    let agent = Vigil::agent(&server, root.path(), state.path(), &agent_args);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut replayed, mut before) = (0.0, -1.0);
    while (replayed == 0.0 || replayed != before) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1000));
        let (_, metrics) = get(&client(), &server.http("/metrics"), None);
        before = replayed;
        replayed = metrics
            .lines()
            .find_map(|l| l.strip_prefix("vigil_logs_replayed_records_dropped_total "))
            .map_or(0.0, |v| v.trim().parse().unwrap());
    }
    assert!(replayed > 0.0, "the re-read lines reached the server");
    assert_eq!(sequences(&server, base_ns - 1, end_ns).values().collect::<Vec<_>>(), [&expected, &expected]);
    println!("{kills} agent kills, one server outage: {TOTAL} lines each arrived exactly once, in order");
    println!("{replayed} records re-sent after the checkpoint was lost were dropped");
    drop(agent);
}

/// A stand-in for the Kubernetes API server's pod list: serves `pods` (replaceable while it runs) as a
/// `PodList` at `/api/v1/pods`, and records each request's target and `Authorization` header. No API server
/// can run on this machine, so this is the one stand-in of the suite; the pod list follows the API's shape.
struct PodApi {
    url: String,
    pods: std::sync::Arc<std::sync::Mutex<Value>>,
    requests: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl PodApi {
    fn start(pods: Value) -> PodApi {
        use std::io::{BufRead, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let pods = std::sync::Arc::new(std::sync::Mutex::new(pods));
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (served, recorded) = (pods.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                let _ = reader.read_line(&mut request_line);
                let mut authorization = String::new();
                for line in reader.by_ref().lines().map_while(Result::ok).take_while(|l| !l.is_empty()) {
                    if let Some(value) = line.strip_prefix("Authorization: ").or(line.strip_prefix("authorization: ")) {
                        authorization = value.to_owned();
                    }
                }
                let target = request_line.split(' ').nth(1).unwrap_or_default().to_owned();
                recorded.lock().unwrap().push((target.clone(), authorization));
                let list =
                    serde_json::json!({"kind": "PodList", "apiVersion": "v1", "items": served.lock().unwrap().clone()});
                let (status, body) = if target.starts_with("/api/v1/pods") {
                    ("200 OK", list.to_string())
                } else {
                    ("404 Not Found", String::new())
                };
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        PodApi { url, pods, requests }
    }
}

/// A running pod of node `node-k` in namespace `shop` at 127.0.0.1.
fn pod(name: &str, annotations: Value, ports: Value) -> Value {
    serde_json::json!({
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                     "labels": {"app": name}, "annotations": annotations},
        "spec": {"nodeName": "node-k", "containers": [{"name": "main", "image": "app:1", "ports": ports}]},
        "status": {"phase": "Running", "podIP": "127.0.0.1", "hostIP": "127.0.0.1",
                   "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

#[test]
fn annotated_pods_of_the_node_are_discovered_and_scraped_with_the_daemonsets_rules() {
    let (data, state, root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), scratch());
    let server = Vigil::server(data.path(), &[]);
    let port = server.addr.port().to_string();
    let scraped = pod(
        "scraped-0",
        serde_json::json!({"prometheus.io/scrape": "true", "prometheus.io/port": port, "prometheus.io/path": "/metrics"}),
        serde_json::json!([{"name": "http", "containerPort": 1}, {"name": "admin", "containerPort": 2}]),
    );
    let ignored = pod("ignored-0", serde_json::json!({}), serde_json::json!([{"containerPort": server.addr.port()}]));
    let mut pending = pod("pending-0", serde_json::json!({"prometheus.io/scrape": "true"}), serde_json::json!([]));
    pending["status"] = serde_json::json!({"phase": "Pending"});
    let api = PodApi::start(serde_json::json!([scraped, ignored, pending]));

    // The DaemonSet's own configuration, pointed at this API and asking again every second.
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes/agent-daemonset.yaml"))
            .unwrap();
    let config_map: serde_yaml::Value = serde_yaml::from_str(manifest.split("\n---\n").next().unwrap()).unwrap();
    let mut config: serde_yaml::Value =
        serde_yaml::from_str(config_map["data"]["agent.yaml"].as_str().unwrap()).unwrap();
    let token = state.path().join("token");
    std::fs::write(&token, "pod-reader-token\n").unwrap();
    let job = &mut config["agent"]["scrape_configs"][0];
    job["metrics_path"] = "/not-the-annotated-path".into();
    let sd = &mut job["kubernetes_sd_configs"][0];
    sd["api_server"] = api.url.clone().into();
    sd["bearer_token_file"] = token.display().to_string().into();
    sd["refresh_interval"] = "1s".into();
    let config_path = state.path().join("agent.yaml");
    std::fs::write(&config_path, serde_yaml::to_string(&config).unwrap()).unwrap();
    let args = ["--node-name", "node-k", "--interval", "1s", "--config", config_path.to_str().unwrap()];
    let agent = Vigil::agent(&server, root.path(), state.path(), &args);

    let up = wait_for_series(&server, r#"up{job="kubernetes-pods"} == 1"#, 1, Duration::from_secs(20));
    assert_eq!(up.len(), 1, "one target for the annotated pod's two ports: {up:?}");
    let metric = &up[0]["metric"];
    assert_eq!(metric["instance"], format!("127.0.0.1:{port}"), "the annotated port");
    assert_eq!(
        (&metric["namespace"], &metric["pod"], &metric["app"]),
        (&"shop".into(), &"scraped-0".into(), &"scraped-0".into())
    );
    let scraped_series =
        instant_query(&server, r#"count({job="kubernetes-pods",pod="scraped-0",__name__!~"up|scrape_.*"})"#);
    assert!(scraped_series[0]["value"][1].as_str().unwrap().parse::<usize>().unwrap() > 5, "{scraped_series:?}");
    let requests = api.requests.lock().unwrap().clone();
    assert!(
        requests.iter().all(|(target, auth)| {
            target == "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-k" && auth == "Bearer pod-reader-token"
        }),
        "{requests:?}"
    );

    // The pod goes away: its target is retired, and its series end with staleness markers.
    api.pods.lock().unwrap().as_array_mut().unwrap().remove(0);
    let gone = wait_for_series(&server, r#"up{job="kubernetes-pods"}"#, 0, Duration::from_secs(15));
    assert!(gone.is_empty(), "{gone:?}");
    drop(agent);
}
