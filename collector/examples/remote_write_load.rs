//! Remote-write load generator for `bench/ingest.py`: node-exporter-like series (a metric name, `job`,
//! `instance` and two or three more labels), sent as Prometheus sends them: snappy `WriteRequest`s of
//! 2000 series with one sample each, every series advancing 15 s per round, over several connections.
//! Prints a JSON summary (samples sent, seconds, requests retried on 429/503).
//!
//! usage: remote_write_load URL SAMPLES [--series 200000] [--concurrency 4]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prost::Message;
use vigil_collector::remote_write::{Label, TimeSeries, WireSample, WriteRequest};

/// Series per request, Prometheus's `max_samples_per_send`.
const PER_REQUEST: usize = 2000;
const METRICS: [&str; 10] = [
    "node_cpu_seconds_total",
    "node_memory_MemAvailable_bytes",
    "node_network_receive_bytes_total",
    "node_disk_read_bytes_total",
    "node_filesystem_avail_bytes",
    "container_cpu_usage_seconds_total",
    "container_memory_working_set_bytes",
    "http_requests_total",
    "http_request_duration_seconds_bucket",
    "process_resident_memory_bytes",
];

/// The labels of series `i`.
fn labels(i: usize) -> Vec<Label> {
    let label = |name: &str, value: String| Label { name: name.into(), value };
    let metric = METRICS[i % METRICS.len()];
    let host = i / 500;
    let mut labels = vec![
        label("__name__", metric.into()),
        label("instance", format!("10.0.{}.{}:9100", host / 250, host % 250)),
        label("job", if metric.starts_with("node_") { "node".into() } else { "kubernetes-pods".into() }),
        label("namespace", format!("team-{}", host % 20)),
        label("pod", format!("app-{}-{:05}", host % 50, i / 10 % 100_000)),
    ];
    if metric.ends_with("_bucket") {
        labels.push(label("le", ["0.005", "0.01", "0.05", "0.1", "0.5", "1", "+Inf"][i % 7].into()));
    }
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    labels
}

fn body(series: &[Vec<Label>], round: u64, base_ms: i64) -> Vec<u8> {
    let timestamp = base_ms + round as i64 * 15_000;
    let request = WriteRequest {
        timeseries: series
            .iter()
            .enumerate()
            .map(|(i, labels)| TimeSeries {
                labels: labels.clone(),
                samples: vec![WireSample { value: (round as f64) * 1.5 + i as f64, timestamp }],
            })
            .collect(),
        metadata: Vec::new(),
    };
    snap::raw::Encoder::new().compress_vec(&request.encode_to_vec()).expect("snappy")
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).expect("usage: remote_write_load URL SAMPLES").clone();
    let total: u64 = args.get(2).and_then(|s| s.parse().ok()).expect("SAMPLES");
    let series_count = arg(&args, "--series", 200_000);
    let concurrency = arg(&args, "--concurrency", 4);
    let all: Arc<Vec<Vec<Label>>> = Arc::new((0..series_count).map(labels).collect());
    let sent = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    // Start two hours back so every sample is recent enough for the head.
    let base_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
        - 2 * 3600 * 1000;
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (url, all, sent, retries) = (url.clone(), all.clone(), sent.clone(), retries.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
                // Each worker owns a slice of the series and sends its shards round after round.
                let mine: Vec<&[Vec<Label>]> = all
                    .chunks(PER_REQUEST)
                    .enumerate()
                    .filter(|(i, _)| i % concurrency == worker)
                    .map(|(_, c)| c)
                    .collect();
                let mut round = 0u64;
                while sent.load(Ordering::Relaxed) < total {
                    for shard in &mine {
                        let body = body(shard, round, base_ms);
                        loop {
                            let response = agent
                                .post(&url)
                                .header("Content-Type", "application/x-protobuf")
                                .header("Content-Encoding", "snappy")
                                .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                                .send(&body[..])
                                .expect("the server answers");
                            match response.status().as_u16() {
                                200..=299 => break,
                                429 | 503 => {
                                    retries.fetch_add(1, Ordering::Relaxed);
                                    std::thread::sleep(Duration::from_millis(20));
                                }
                                other => panic!("remote write answered {other}"),
                            }
                        }
                        sent.fetch_add(shard.len() as u64, Ordering::Relaxed);
                        if sent.load(Ordering::Relaxed) >= total {
                            return;
                        }
                    }
                    round += 1;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker");
    }
    let summary = serde_json::json!({
        "samples": sent.load(Ordering::Relaxed),
        "seconds": started.elapsed().as_secs_f64(),
        "retries": retries.load(Ordering::Relaxed),
        "series": series_count,
    });
    println!("{summary}");
}
