//! `vigil import openmetrics`: backfilled data is served by a server started on the directory, and a
//! malformed file stops the import with its line number, leaving nothing behind.

mod harness;

use harness::{Vigil, client, command, get};
use serde_json::Value;

fn write_openmetrics(path: &std::path::Path, start_s: i64, points: i64) {
    let mut text = String::from("# TYPE jobs_processed counter\n# HELP jobs_processed Jobs.\n");
    for worker in ["a", "b"] {
        for i in 0..points {
            text.push_str(&format!("jobs_processed_total{{worker=\"{worker}\"}} {} {}\n", i * 3, start_s + i * 15));
        }
    }
    text.push_str("# TYPE queue_depth gauge\n");
    for i in 0..points {
        text.push_str(&format!("queue_depth {}.5 {}\n", i % 7, start_s + i * 15));
    }
    text.push_str("# EOF\n");
    std::fs::write(path, text).unwrap();
}

#[test]
fn imported_data_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backfill.om");
    let start_s = 1_700_000_000;
    write_openmetrics(&file, start_s, 1440);
    let data_dir = dir.path().join("data");
    let output = command(&["import", "openmetrics", file.to_str().unwrap(), "--data-dir", data_dir.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("series:        3") && stdout.contains("samples:       4320"), "{stdout}");

    let vigil = Vigil::server(&data_dir, &[]);
    let http = client();
    let at = start_s + 1000 * 15;
    let (_, body) = get(&http, &vigil.http(&format!("/api/v1/query?query=jobs_processed_total&time={at}")), None);
    let body: Value = serde_json::from_str(&body).unwrap();
    let values: Vec<&str> =
        body["data"]["result"].as_array().unwrap().iter().map(|r| r["value"][1].as_str().unwrap()).collect();
    assert_eq!(values, ["3000", "3000"]);
    let query = format!("/api/v1/query?query=rate(jobs_processed_total%7Bworker%3D%22a%22%7D%5B5m%5D)&time={at}");
    let (_, body) = get(&http, &vigil.http(&query), None);
    let body: Value = serde_json::from_str(&body).unwrap();
    let rate: f64 = body["data"]["result"][0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!((rate - 0.2).abs() < 1e-9, "{body}");
    let (_, body) =
        get(&http, &vigil.http(&format!("/api/v1/query?query=queue_depth&time={}", start_s + 15 * 9)), None);
    assert!(body.contains("\"2.5\""), "{body}");
}

#[test]
fn malformed_line_stops_the_import_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.om");
    let mut text = String::from("# TYPE up gauge\n");
    for series in 0..50 {
        for i in 0..100 {
            text.push_str(&format!("up{{i=\"{series}\"}} 1 {}\n", 1_700_000_000 + i));
        }
    }
    text.push_str("up{i=\"x\" 1 1700009999\n# EOF\n");
    std::fs::write(&file, text).unwrap();
    let data_dir = dir.path().join("data");
    let output = command(&["import", "openmetrics", file.to_str().unwrap(), "--data-dir", data_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 5002") && stderr.contains("nothing was imported"), "{stderr}");
    let blocks = std::fs::read_dir(data_dir.join("metrics/blocks")).unwrap().count();
    assert_eq!(blocks, 0, "a failed import must leave no block or partial block behind");
}
