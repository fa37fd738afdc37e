//! The agent over a fixture node + a server: real `kubectl top` pointed at Vigil prints the expected rows,
//! and `vigil top` prints the same tables byte for byte.

mod harness;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harness::{Vigil, client, get};
use serde_json::Value;
use vigil_agent::fixture::{CgroupVersion, Driver, NodeFixture};

const MIB: u64 = 1024 * 1024;

fn run(program: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(program).args(args).env("KUBECONFIG", "/dev/null").output().expect("runs");
    (output.status.success(), String::from_utf8(output.stdout).unwrap(), String::from_utf8(output.stderr).unwrap())
}

fn items(vigil: &Vigil, path: &str) -> usize {
    let (_, body) = get(&client(), &vigil.http(path), None);
    serde_json::from_str::<Value>(&body).ok().and_then(|b| b["items"].as_array().map(Vec::len)).unwrap_or(0)
}

/// Millicores from a `412m` cell.
fn millicores(cell: &str) -> f64 {
    cell.strip_suffix('m').unwrap().parse().unwrap()
}

#[test]
fn kubectl_top_reads_vigil_and_vigil_top_prints_the_same() {
    let fixture = NodeFixture { version: CgroupVersion::V2, driver: Driver::Systemd, containers: 12 };
    let root = tempfile::tempdir_in(vigil_agent::fixture::scratch_parent()).unwrap();
    fixture.write(root.path()).unwrap();
    let (data, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // The extra TLS listener with a self-signed certificate is what the API aggregator would call.
    let server = Vigil::server(data.path(), &["--https-addr", "127.0.0.1:0"]);

    // CPU counters advance in real time at each container's rate while the agent collects every second.
    let advancing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (advancing, root) = (advancing.clone(), root.path().to_owned());
        std::thread::spawn(move || {
            let started = Instant::now();
            while advancing.load(Ordering::Relaxed) {
                fixture.advance(&root, started.elapsed().as_secs_f64()).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let agent = Vigil::agent(&server, root.path(), state.path(), &["--node-name", "node-a", "--interval", "1s"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while items(&server, "/apis/metrics.k8s.io/v1beta1/pods") < 6
        || items(&server, "/apis/metrics.k8s.io/v1beta1/nodes") < 1
    {
        assert!(Instant::now() < deadline, "metrics did not appear");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(1500));
    // Freeze: no new samples, so every client below reads the same last two samples.
    agent.kill();
    advancing.store(false, Ordering::Relaxed);
    writer.join().unwrap();

    let url = format!("http://{}", server.addr);
    let server_flag = format!("--server={url}");
    let commands: [&[&str]; 6] = [
        &["top", "nodes"],
        &["top", "pods", "-A"],
        &["top", "pods", "-n", "shop", "--containers"],
        &["top", "pods", "-A", "--sort-by", "memory", "--sum"],
        &["top", "pods", "-A", "--sort-by", "cpu"],
        &["top", "node", "node-a"],
    ];
    for args in commands {
        let mut kubectl_args = vec![server_flag.as_str()];
        kubectl_args.extend_from_slice(args);
        let (ok, kubectl, stderr) = run("kubectl", &kubectl_args);
        assert!(ok, "kubectl {args:?} failed: {stderr}");
        let mut vigil_args = args.to_vec();
        vigil_args.extend(["--server", &url]);
        let (ok, vigil, stderr) = run(env!("CARGO_BIN_EXE_vigil"), &vigil_args);
        assert!(ok, "vigil {args:?} failed: {stderr}");
        assert_eq!(vigil, kubectl, "vigil {args:?} differs from kubectl");
    }

    // Over the self-signed TLS listener, as through the APIService, kubectl reads the same table.
    let https_flag = format!("--server=https://{}", server.https_addr.expect("--https-addr is bound"));
    // (A token, any token, stops kubectl prompting for a password on an https server; no scope needs one here.)
    let tls_args = [https_flag.as_str(), "--token=unused", "top", "pods", "-A"];
    let (ok, over_tls, stderr) = run("kubectl", &[&tls_args[..], &["--insecure-skip-tls-verify"]].concat());
    assert!(ok, "kubectl over TLS failed: {stderr}");
    let (_, plain, _) = run("kubectl", &[&server_flag, "top", "pods", "-A"]);
    assert_eq!(over_tls, plain);
    let (ok, _, stderr) = run("kubectl", &tls_args);
    assert!(!ok && stderr.contains("certificate"), "a verifying client rejects the self-signed certificate: {stderr}");

    // The rows hold what the fixture says.
    let (_, nodes, _) = run("kubectl", &[&server_flag, "top", "nodes"]);
    let lines: Vec<&str> = nodes.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
    );
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    let totals = fixture.totals();
    assert_eq!(cells[0], "node-a");
    let expected_cpu = totals.cpu_cores * 1000.0;
    assert!((millicores(cells[1]) - expected_cpu).abs() <= expected_cpu * 0.1 + 3.0, "{} vs {expected_cpu}", cells[1]);
    let working_set = totals.memory_usage - totals.inactive_file;
    assert_eq!(cells[3], format!("{}Mi", working_set / MIB));
    assert_eq!(cells[4], format!("{}%", working_set * 100 / totals.memory_total));

    let (_, pods, _) = run("kubectl", &[&server_flag, "top", "pods", "-A"]);
    let rows: Vec<Vec<&str>> = pods.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    let containers = fixture.containers();
    let mut pod_names: Vec<(&str, &str)> = containers.iter().map(|c| (c.namespace.as_str(), c.pod.as_str())).collect();
    pod_names.dedup();
    pod_names.sort();
    assert_eq!(rows.len(), pod_names.len());
    for (row, (namespace, pod)) in rows.iter().zip(&pod_names) {
        assert_eq!((row[0], row[1]), (*namespace, *pod), "sorted by namespace, then name");
        let members = containers.iter().filter(|c| c.pod == *pod && !c.is_sandbox());
        let (cores, bytes): (f64, u64) = members.fold((0.0, 0), |(c, b), m| (c + m.cpu_cores, b + m.working_set()));
        assert_eq!(row[3], format!("{}Mi", bytes / MIB), "{pod}");
        assert!((millicores(row[2]) - cores * 1000.0).abs() <= cores * 100.0 + 3.0, "{pod}: {} vs {cores}", row[2]);
    }
}
