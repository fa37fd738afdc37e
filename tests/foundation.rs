//! The binary's lifecycle and security basics, end to end.

mod harness;

use std::io::Write;
use std::time::Duration;

use harness::{Vigil, client, command, get, remote_write, remote_write_body};
use serde_json::Value;
use vigil_tsdb::{Db, DbOptions, Matcher, Queryable};

#[test]
fn probes_ingest_and_own_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::server(dir.path(), &[]);
    let http = client();
    assert_eq!(get(&http, &vigil.http("/-/healthy"), None).0, 200);
    assert_eq!(get(&http, &vigil.http("/-/ready"), None).0, 200);
    let body = remote_write_body(&[(&[("__name__", "probe_metric"), ("job", "e2e")], &[(1_000, 1.5)])]);
    let (status, text) = remote_write(&http, &vigil, &body, None);
    assert_eq!(status, 204, "{text}");
    let (status, series) = get(&http, &vigil.http("/api/v1/series?match[]=probe_metric"), None);
    assert_eq!(status, 200);
    let series: Value = serde_json::from_str(&series).unwrap();
    assert_eq!(series["data"], serde_json::json!([{"__name__": "probe_metric", "job": "e2e"}]));
    let (_, metrics) = get(&http, &vigil.http("/metrics"), None);
    assert!(metrics.contains("vigil_ingest_samples_accepted_total{receiver=\"remote_write\"} 1"), "{metrics}");
    assert!(metrics.contains("vigil_http_requests_total{route=\"/api/v1/series\",code=\"200\"} 1"), "{metrics}");
    assert!(metrics.contains("vigil_tsdb_head_series 1"), "{metrics}");
}

#[test]
fn bearer_tokens_guard_each_scope() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::server(
        dir.path(),
        &["--ingest-token", "in-secret", "--query-token", "q-secret", "--admin-token", "adm-secret"],
    );
    let http = client();
    assert_eq!(get(&http, &vigil.http("/-/ready"), None).0, 200, "probes need no token");
    let (status, body) = get(&http, &vigil.http("/api/v1/labels"), None);
    assert_eq!(status, 401);
    assert!(body.contains("missing bearer token: the query API"), "{body}");
    let (status, body) = get(&http, &vigil.http("/api/v1/labels"), Some("in-secret"));
    assert_eq!(status, 401);
    assert!(body.contains("wrong bearer token for the query API"), "{body}");
    assert_eq!(get(&http, &vigil.http("/api/v1/labels"), Some("q-secret")).0, 200);
    assert_eq!(get(&http, &vigil.http("/metrics"), Some("q-secret")).0, 200);
    // The UI's pages and assets hold no data and load without a token; what they read needs one.
    let (status, page) = get(&http, &vigil.http("/ui/logs"), None);
    assert_eq!(status, 200);
    assert!(page.contains("/ui/assets/app.js"), "{page}");
    assert_eq!(get(&http, &vigil.http("/ui/assets/app.js"), None).0, 200);
    assert_eq!(get(&http, &vigil.http("/ui/api/dashboards"), None).0, 401);
    assert_eq!(get(&http, &vigil.http("/ui/api/dashboards"), Some("q-secret")).0, 200);

    let body = remote_write_body(&[(&[("__name__", "m")], &[(1, 1.0)])]);
    assert_eq!(remote_write(&http, &vigil, &body, None).0, 401);
    assert_eq!(remote_write(&http, &vigil, &body, Some("q-secret")).0, 401);
    assert_eq!(remote_write(&http, &vigil, &body, Some("in-secret")).0, 204);
    assert_eq!(get(&http, &vigil.http("/-/reload"), Some("q-secret")).0, 401);
}

#[test]
fn tls_listener_serves_https_only() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path, certified) = harness::self_signed(dir.path());
    let vigil = Vigil::server(
        &dir.path().join("data"),
        &["--tls-cert-file", cert_path.to_str().unwrap(), "--tls-key-file", key_path.to_str().unwrap()],
    );
    let https = harness::https_client(&certified.cert);
    let (status, body) = get(&https, &vigil.url("https", "/-/ready"), None);
    assert_eq!((status, body.as_str()), (200, "Vigil is ready.\n"));
    assert!(client().get(vigil.http("/-/ready")).call().is_err(), "plain HTTP to a TLS listener must fail");
    // A client that does not trust the certificate is refused.
    assert!(client().get(vigil.url("https", "/-/ready")).call().is_err());
}

#[test]
fn oversized_body_gets_413_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::server(dir.path(), &["--max-body-size", "1KiB"]);
    let http = client();
    let (status, body) = remote_write(&http, &vigil, &vec![7u8; 4096], None);
    assert_eq!(status, 413, "{body}");
    let small = remote_write_body(&[(&[("__name__", "m")], &[(1, 1.0)])]);
    assert_eq!(remote_write(&http, &vigil, &small, None).0, 204);
}

#[test]
fn sigterm_exits_zero_and_a_restart_keeps_acknowledged_data() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::server(dir.path(), &[]);
    let http = client();
    let samples: Vec<(i64, f64)> = (0..500).map(|i| (1_700_000_000_000 + i * 15_000, i as f64 * 0.5)).collect();
    let body = remote_write_body(&[(&[("__name__", "kept"), ("job", "restart")], &samples)]);
    assert_eq!(remote_write(&http, &vigil, &body, None).0, 204);
    let (status, took) = vigil.terminate(Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");

    let vigil = Vigil::server(dir.path(), &[]);
    assert_eq!(vigil.ready_event["message"], "vigil is ready");
    let (_, series) = get(&http, &vigil.http("/api/v1/series?match[]=kept"), None);
    assert!(series.contains("\"job\":\"restart\""), "{series}");
    let (status, _) = vigil.terminate(Duration::from_secs(10));
    assert!(status.success());

    // Every acknowledged sample is on disk, bit for bit.
    let (db, report) = Db::open(&dir.path().join("metrics"), DbOptions::default()).unwrap();
    assert!(report.corruptions.is_empty());
    let stored = db.select(&[Matcher::equal("__name__", "kept")], i64::MIN, i64::MAX).unwrap();
    let got: Vec<(i64, f64)> = stored[0].samples.iter().map(|s| (s.t, s.v)).collect();
    assert_eq!(got, samples);
}

#[test]
fn flags_win_over_env_and_env_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vigil.yaml");
    let from = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    std::fs::write(&config, format!("server:\n  data_dir: {}\n  http_addr: 127.0.0.1:0\n", from("file"))).unwrap();
    let data_dir_of = |env: Option<&str>, flag: Option<&str>| {
        let mut args = vec!["server", "--config", config.to_str().unwrap()];
        if let Some(flag) = flag {
            args.extend(["--data-dir", flag]);
        }
        let mut cmd = command(&args);
        if let Some(env) = env {
            cmd.env("VIGIL_DATA_DIR", env);
        }
        let vigil = Vigil::start(cmd);
        vigil.ready_event["data_dir"].as_str().unwrap().to_owned()
    };
    assert_eq!(data_dir_of(None, None), from("file"));
    assert_eq!(data_dir_of(Some(&from("env")), None), from("env"));
    assert_eq!(data_dir_of(Some(&from("env")), Some(&from("flag"))), from("flag"));
}

#[test]
fn unknown_config_key_stops_start_up_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vigil.yaml");
    std::fs::write(&config, "server:\n  data_dir: /tmp/x\n  listen_adress: 1\n").unwrap();
    let output = command(&["server", "--config", config.to_str().unwrap()]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown field `listen_adress`") && stderr.contains("vigil.yaml"), "{stderr}");
}

#[test]
fn up_collects_this_machine_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(&[
        "up",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--http-addr",
        "127.0.0.1:0",
        "--node-name",
        "e2e-node",
    ]);
    cmd.current_dir(dir.path());
    let vigil = Vigil::start(cmd);
    let http = client();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, body) = get(&http, &vigil.http("/api/v1/series?match[]=up"), None);
        if body.contains("e2e-node") {
            assert!(body.contains("\"job\":\"node\""), "{body}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no up series after 5 s: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, names) = get(&http, &vigil.http("/api/v1/label/__name__/values"), None);
    assert!(names.contains("node_cpu_seconds_total") && names.contains("node_memory_MemAvailable_bytes"), "{names}");
    let (_, up) = get(&http, &vigil.http("/api/v1/query?query=up"), None);
    assert!(up.contains("\"job\":\"vigil\"") && up.contains("\"job\":\"node\""), "{up}");
    assert!(names.contains("vigil_build_info"), "own telemetry is recorded: {names}");

    // Its own log events are in its log store, as logfmt lines.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let query = "%7Bservice_name%3D%22vigil%22%7D%20%7C%3D%20%22vigil%20is%20ready%22";
    loop {
        let (_, body) = get(&http, &vigil.http(&format!("/loki/api/v1/query_range?query={query}")), None);
        if body.contains("vigil is ready") {
            assert!(body.contains("level=info target=vigil::server"), "{body}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "own logs not stored after 5 s: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn query_command_prints_results_from_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = Vigil::server(dir.path(), &[]);
    let http = client();
    let body = remote_write_body(&[(&[("__name__", "cli_metric"), ("job", "a")], &[(10_000, 3.0), (20_000, 4.0)])]);
    assert_eq!(remote_write(&http, &vigil, &body, None).0, 204);
    let server = vigil.http("");
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_vigil")).arg("query").args(args).output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stdout, _) = run(&["sum by (job) (cli_metric)", "--server", &server, "--time", "25"]);
    assert_eq!((code, stdout.as_str()), (Some(0), "{job=\"a\"} => 4 @ 25\n"));
    let (code, stdout, _) = run(&["cli_metric", "--server", &server, "--start", "10", "--end", "20", "--step", "10"]);
    assert_eq!(code, Some(0));
    assert_eq!(stdout, "cli_metric{job=\"a\"} =>\n  3 @ 10\n  4 @ 20\n");
    let (code, _, stderr) = run(&["sum(", "--server", &server]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("bad_data") && stderr.contains("invalid parameter \"query\""), "{stderr}");
}

#[test]
fn up_follows_a_log_directory_across_restarts_without_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let file = logs.path().join("app.log");
    std::fs::write(&file, "first line\nsecond line\n").unwrap();
    let start = || {
        let mut cmd = command(&[
            "up",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--http-addr",
            "127.0.0.1:0",
            "--log-dir",
            logs.path().to_str().unwrap(),
        ]);
        cmd.current_dir(dir.path());
        Vigil::start(cmd)
    };
    let lines = |vigil: &Vigil| -> Vec<String> {
        let path = "/loki/api/v1/query_range?query=%7Bjob%3D%22logs%22%7D&limit=100&direction=forward";
        let (_, body) = get(&client(), &vigil.http(path), None);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let mut out = Vec::new();
        for stream in body["data"]["result"].as_array().into_iter().flatten() {
            assert_eq!(stream["stream"]["filename"], file.to_str().unwrap());
            out.extend(stream["values"].as_array().unwrap().iter().map(|v| v[1].as_str().unwrap().to_owned()));
        }
        out
    };
    let wait_for = |vigil: &Vigil, count: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(6);
        while lines(vigil).len() < count && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        lines(vigil)
    };
    let vigil = start();
    assert_eq!(wait_for(&vigil, 2), ["first line", "second line"]);
    std::fs::OpenOptions::new().append(true).open(&file).unwrap().write_all(b"third line\n").unwrap();
    assert_eq!(wait_for(&vigil, 3).len(), 3);
    let (status, _) = vigil.terminate(Duration::from_secs(10));
    assert!(status.success());
    // Written while Vigil was down: read once after the restart; nothing before it is read again.
    std::fs::OpenOptions::new().append(true).open(&file).unwrap().write_all(b"fourth line\n").unwrap();
    let vigil = start();
    assert_eq!(wait_for(&vigil, 4), ["first line", "second line", "third line", "fourth line"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(lines(&vigil).len(), 4, "no line stored twice");
}
