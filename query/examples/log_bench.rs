//! The log store over generated, realistic logs (nginx access lines, JSON application logs, kubelet-style
//! text) across 60 streams: ingest + index throughput (commits on their own thread, as in the server),
//! append latencies, storage against the raw size, and median latencies of a rare-term search, a trace-id
//! search, the newest 1,000 lines of a stream, and `sum by (level) (count_over_time(...))` (an instant
//! `[5m]`, and a range over all the log time).
//!
//! usage: cargo run --release -p vigil-query --example log_bench -- [MEGABYTES] [DIR]   (default 1024 MB)

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil_query::logql::{LogqlEngine, parse};
use vigil_tsdb::logs::{LogIndex, LogRecord, LogStore};

/// The allocator the `vigil` binary runs with, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SECOND: i64 = 1_000_000_000;
const START_NS: i64 = 1_700_000_000 * SECOND;
const BATCH: usize = 20_000;

/// A small deterministic generator (xorshift), so runs are comparable.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const PATHS: &[&str] =
    &["/api/v1/users", "/api/v1/orders", "/api/v1/cart", "/static/app.js", "/healthz", "/login", "/search"];
const LEVELS: &[&str] = &["info", "info", "info", "info", "debug", "warn", "error"];
const MESSAGES: &[&str] = &[
    "request completed",
    "cache miss for key",
    "retrying upstream call",
    "connection pool exhausted",
    "user session refreshed",
    "payment authorized",
    "slow query detected",
];

fn line(random: &mut Random, kind: u64, ts_ns: i64, sequence: u64) -> (String, &'static str) {
    let level = random.pick(LEVELS);
    let text = match kind {
        0 => format!(
            "10.{}.{}.{} - - [14/Nov/2023:22:13:{:02} +0000] \"{} {} HTTP/1.1\" {} {} \"-\" \"Mozilla/5.0 (X11; Linux x86_64)\" rt={:.3}",
            random.next() % 256,
            random.next() % 256,
            random.next() % 256,
            (ts_ns / SECOND) % 60,
            random.pick(&["GET", "GET", "GET", "POST", "PUT"]),
            random.pick(PATHS),
            random.pick(&["200", "200", "200", "201", "304", "404", "500"]),
            random.next() % 50_000,
            (random.next() % 2000) as f64 / 1000.0
        ),
        1 => format!(
            r#"{{"ts":"{}","level":"{level}","msg":"{}","trace_id":"{:016x}{:016x}","user_id":{},"duration_ms":{},"seq":{sequence}}}"#,
            ts_ns,
            random.pick(MESSAGES),
            random.next(),
            random.next(),
            random.next() % 100_000,
            random.next() % 3000
        ),
        _ => format!(
            "I1114 22:13:{:02}.{:06} 1234 kubelet.go:{}] \"{}\" pod=\"shop/checkout-{:x}\" level={level} containerID=\"containerd://{:016x}\"",
            (ts_ns / SECOND) % 60,
            random.next() % 1_000_000,
            random.next() % 3000,
            random.pick(&[
                "SyncLoop (PLEG): event for pod",
                "Probe succeeded",
                "Killing container with a grace period",
                "Pulling image"
            ]),
            random.next() % 65_536,
            random.next()
        ),
    };
    (text, level)
}

/// The median over seven runs of `run`, in milliseconds.
fn p50_ms(mut run: impl FnMut()) -> f64 {
    let mut samples: Vec<Duration> = (0..7)
        .map(|_| {
            let started = Instant::now();
            run();
            started.elapsed()
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let megabytes: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1024);
    let dir = args.get(2).map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("vigil-log-bench"));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(LogIndex::open(&dir).expect("the store opens"));
    let target = megabytes * 1024 * 1024;
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let (mut raw_bytes, mut records, mut ts_ns) = (0u64, 0u64, START_NS);
    let (mut checkout_records, mut checkout_bytes) = (0u64, 0u64);
    let mut trace = String::new();
    // A rare term: one line in about a million carries it.
    let rare = "rare-needle-7f3a9c";
    let started = Instant::now();
    let cpu_started = cpu_seconds();
    // Commits run on their own thread every 500 ms, as in the server; appends wait for none of them.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let committer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            store.commit_loop(Duration::from_millis(500), move || stop.load(std::sync::atomic::Ordering::Acquire))
        })
    };
    let mut append_times = Vec::new();
    // CPU spent making the records up is the client's, not the store's: it is measured and left out.
    let mut generating = Duration::ZERO;
    while raw_bytes < target {
        let generation_started = thread_cpu();
        let mut batch = Vec::with_capacity(BATCH);
        for _ in 0..BATCH {
            let stream = random.next() % 60;
            let kind = stream % 3;
            ts_ns += 50_000 + (random.next() % 100_000) as i64;
            let (mut text, _) = line(&mut random, kind, ts_ns, records);
            if records % 1_000_003 == 500_000 {
                text.push_str(&format!(" {rare}"));
            }
            raw_bytes += text.len() as u64;
            records += 1;
            if kind == 1 {
                checkout_records += 1;
                checkout_bytes += text.len() as u64;
                // A trace id from the middle of the data, searched below.
                if trace.is_empty() && records > 3_000_000 {
                    let at = text.find("\"trace_id\":\"").expect("JSON lines carry a trace id") + 12;
                    trace = text[at..at + 32].to_owned();
                }
            }
            let labels = BTreeMap::from([
                ("app".to_owned(), ["nginx", "checkout", "kubelet"][kind as usize].to_owned()),
                ("namespace".to_owned(), "shop".to_owned()),
                ("pod".to_owned(), format!("pod-{stream}")),
            ]);
            batch.push(LogRecord { ts_ns, labels, line: text, metadata: BTreeMap::new(), position: None });
        }
        generating += thread_cpu().saturating_sub(generation_started);
        let append_started = Instant::now();
        store.append(&batch).expect("append");
        append_times.push(append_started.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    committer.join().expect("the commit thread ends");
    // Sealing what heads still hold and waiting for background merges belong to ingestion's cost; then
    // the WAL is empty and the partitions are everything on disk.
    store.settle().expect("settle");
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_started - generating.as_secs_f64();
    let stored = store.size_bytes();
    let mb = raw_bytes as f64 / 1e6;
    println!("records: {records}, raw: {mb:.0} MB, span: {:.0} s of log time", (ts_ns - START_NS) as f64 / 1e9);
    println!(
        "ingest + index: {:.1} MB/s wall, {:.1} MB/s per CPU-second ({elapsed:.1} s, {cpu:.1} CPU-s, besides {:.1} \
         CPU-s generating the records)",
        mb / elapsed,
        mb / cpu,
        generating.as_secs_f64()
    );
    append_times.sort();
    let quantile = |q: f64| append_times[((append_times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
    println!(
        "append of {BATCH} records (about {:.1} MB): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        raw_bytes as f64 / records as f64 * BATCH as f64 / 1e6,
        quantile(0.5),
        quantile(0.99),
        quantile(1.0)
    );
    println!("storage: {:.0} MB on disk = {:.3} of raw", stored as f64 / 1e6, stored as f64 / raw_bytes as f64);
    let parts: Vec<String> =
        bytes_by_extension(&dir).iter().map(|(ext, bytes)| format!("{ext} {:.0} MB", *bytes as f64 / 1e6)).collect();
    println!("  by file kind: {}", parts.join(", "));

    let engine = LogqlEngine::new(store.clone() as Arc<dyn LogStore>);
    let end_ns = ts_ns + 1;
    let end_ms = end_ns / 1_000_000;
    // Entries a log query returns over everything, newest first.
    let entries = |query: &str, limit: usize| {
        let logql::Expr::Log(query) = parse(query).unwrap() else { unreachable!() };
        let streams = engine.logs(&query, START_NS, end_ns, limit, true).unwrap();
        streams.iter().map(|s| s.entries.len()).sum::<usize>()
    };

    let rare_search = format!(r#"{{}} |= "{rare}""#);
    let p50 = p50_ms(|| assert!(entries(&rare_search, 100) > 0, "the rare term is found"));
    println!("rare-term search over everything ({rare_search}): p50 {p50:.1} ms");

    // An identifier: one trace id, through the chunks' Bloom filters.
    let trace_search = format!(r#"{{}} |= "{trace}""#);
    let p50 = p50_ms(|| assert_eq!(entries(&trace_search, 100), 1, "the trace's one line"));
    println!("trace-id search over everything ({trace_search}): p50 {p50:.1} ms");

    // What Grafana's logs panel asks: the newest 1,000 lines of a selector over the whole range.
    let p50 = p50_ms(|| assert_eq!(entries(r#"{app="nginx"}"#, 1000), 1000));
    println!("newest 1,000 lines of {{app=\"nginx\"}} over everything: p50 {p50:.1} ms");

    let volume = parse(r#"sum by (level) (count_over_time({app="checkout"} | json [5m]))"#).unwrap();
    let logql::Expr::Metric(volume) = volume else { unreachable!() };
    let p50 = p50_ms(|| assert!(!engine.instant(&volume, end_ms).unwrap().is_empty()));
    println!("sum by (level) (count_over_time({{app=\"checkout\"}} | json [5m])): p50 {p50:.0} ms");

    // Grafana's log-volume histogram: the same query as a range over all the log time, a step a minute,
    // which reads every record of the stream.
    let whole = parse(r#"sum by (level) (count_over_time({app="checkout"} | json [1m]))"#).unwrap();
    let logql::Expr::Metric(whole) = whole else { unreachable!() };
    let start_ms = START_NS / 1_000_000 + 60_000;
    let p50 = p50_ms(|| {
        let series = engine.range(&whole, start_ms, end_ms + 60_000, 60_000).unwrap();
        let counted: f64 = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).sum();
        assert_eq!(counted as u64, checkout_records, "every checkout record is counted once");
    });
    println!(
        "the same, [1m] each minute over all {:.0} MB of checkout logs: p50 {p50:.0} ms",
        checkout_bytes as f64 / 1e6
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bytes on disk under `dir` per file extension (tantivy's `store`, `idx`, `term`, `fast`, ...).
fn bytes_by_extension(dir: &std::path::Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let ext = path.extension().map_or("other".into(), |e| e.to_string_lossy().into_owned());
            *out.entry(ext).or_default() += entry.metadata().map_or(0, |m| m.len());
        }
    }
    out
}

/// CPU time of the calling thread so far (the scheduler's count, in nanoseconds, from /proc).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    Duration::from_nanos(stat.split_whitespace().next().and_then(|ns| ns.parse().ok()).unwrap_or(0))
}

/// CPU time of this process (user + system), from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}
