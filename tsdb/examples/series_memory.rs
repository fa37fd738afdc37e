//! Measures resident memory per active head series: appends N node-exporter-like series (default
//! 1,000,000), each with 4 samples 15 s apart, and prints RSS growth divided by N.
//!
//! cargo run --release -p vigil-tsdb --example series_memory [-- N]

use vigil_tsdb::{Appender, Db, DbOptions, Labels, Sample, SeriesSamples};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    kib.unwrap_or(0) * 1024
}

fn main() {
    let series: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    let db = Db::in_memory(DbOptions {
        limits: vigil_tsdb::HeadLimits { max_series: usize::MAX, ..Default::default() },
        ..DbOptions::default()
    });
    let before = rss_bytes();
    let modes = ["user", "system", "idle", "iowait", "irq", "softirq", "steal", "nice"];
    for round in 0..4i64 {
        for start in (0..series).step_by(10_000) {
            let batch: Vec<SeriesSamples> = (start..(start + 10_000).min(series))
                .map(|i| SeriesSamples {
                    labels: Labels::new([
                        ("__name__", "node_cpu_seconds_total".to_owned()),
                        ("instance", format!("10.{}.{}.{}:9100", i / 65536 % 256, i / 256 % 256, i % 256)),
                        ("job", "node".to_owned()),
                        ("cpu", (i / 8 % 64).to_string()),
                        ("mode", modes[i % 8].to_owned()),
                    ])
                    .unwrap(),
                    samples: vec![Sample {
                        t: 1_700_000_000_000 + round * 15_000,
                        v: (i as i64 * 3 + round) as f64 / 100.0,
                    }],
                })
                .collect();
            db.append(&batch).unwrap();
        }
    }
    let after = rss_bytes();
    let per_series = (after.saturating_sub(before)) as f64 / series as f64;
    println!(
        "{series} series: RSS grew {:.1} MiB, {per_series:.0} bytes per series",
        (after - before) as f64 / 1048576.0
    );
}
