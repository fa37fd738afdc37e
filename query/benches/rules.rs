//! 1,000 recording and alerting rules over 10,000 series: the time one 100-rule group and the whole set
//! take to evaluate, against the 15 s interval they must fit in.
//!
//! Series: `http_requests_total{job="job-0..9", instance="inst-0..999"}`, a sample every 15 s for 10 minutes.
//! Each of the 10 groups has 50 recording rules (`sum by (job) (rate(...{instance="inst-N"}[5m]))`),
//! 49 alerting rules (`rate(...{instance="inst-N"}[5m]) > 0.5` with `for: 5m`; those on even instances
//! hold an alert per job) and one
//! rule over all 10,000 series (`sum by (job) (rate(http_requests_total[5m]))`).

use std::fmt::Write as _;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use vigil_query::promql::{Engine, EngineOptions};
use vigil_query::rules::{EvalContext, GroupRunner, parse_file};
use vigil_tsdb::{Appender, Db, DbOptions, Labels, Sample, SeriesSamples};

const STEP_MS: i64 = 15_000;
const NOW_MS: i64 = 1_700_000_000_000;

fn storage() -> Db {
    let db = Db::in_memory(DbOptions::default());
    let mut batch = Vec::new();
    for instance in 0..1000 {
        for job in 0..10 {
            let (instance, job) = (format!("inst-{instance}"), format!("job-{job}"));
            let labels =
                Labels::new([("__name__", "http_requests_total"), ("instance", &instance), ("job", &job)]).unwrap();
            // Even instances grow at 1/s, odd ones at 0.1/s: half the alerts fire.
            let rate = if instance.ends_with(['0', '2', '4', '6', '8']) { 1.0 } else { 0.1 };
            let samples =
                (0..40).map(|i| Sample { t: NOW_MS - (39 - i) * STEP_MS, v: i as f64 * 15.0 * rate }).collect();
            batch.push(SeriesSamples { labels, samples });
        }
    }
    db.append(&batch).unwrap();
    db
}

fn rules_yaml() -> String {
    let mut yaml = String::from("groups:\n");
    for group in 0..10 {
        let _ = writeln!(yaml, "  - name: group-{group}\n    interval: 15s\n    rules:");
        let _ = writeln!(
            yaml,
            "      - record: job:http_requests:rate5m\n        expr: sum by (job) (rate(http_requests_total[5m]))"
        );
        for n in 0..99 {
            let instance = group * 100 + n;
            if n < 50 {
                let _ = writeln!(
                    yaml,
                    "      - record: instance:http_requests:rate5m_{n}\n        expr: sum by (job) (rate(http_requests_total{{instance=\"inst-{instance}\"}}[5m]))"
                );
            } else {
                let _ = writeln!(
                    yaml,
                    "      - alert: HighRate{n}\n        expr: rate(http_requests_total{{instance=\"inst-{instance}\"}}[5m]) > 0.5\n        for: 5m\n        annotations:\n          summary: \"{{{{ $labels.instance }}}} at {{{{ $value | humanize }}}}/s\""
                );
            }
        }
    }
    yaml
}

fn rules(c: &mut Criterion) {
    let db = storage();
    let groups = parse_file(Path::new("bench.yml"), &rules_yaml(), STEP_MS).unwrap();
    assert_eq!(groups.iter().map(|g| g.rules.len()).sum::<usize>(), 1000);
    let engine = Engine::new(EngineOptions::default());
    let context = EvalContext::default();
    let mut runners: Vec<GroupRunner> = groups.into_iter().map(|g| GroupRunner::new(g, false)).collect();
    let mut bench = c.benchmark_group("rules");
    bench.sample_size(10);
    bench.bench_function("evaluate_one_group_100_rules", |b| {
        b.iter(|| runners[0].evaluate(&engine, &db, &db, NOW_MS, &context));
    });
    bench.bench_function("evaluate_all_1000_rules_10k_series", |b| {
        b.iter(|| {
            for runner in &mut runners {
                runner.evaluate(&engine, &db, &db, NOW_MS, &context);
            }
        });
    });
    bench.finish();
    let firing: usize = runners.iter().flat_map(|r| &r.states).map(|s| s.alerts.len()).sum();
    // The 250 alerting rules on even instances each hold one alert per job.
    assert_eq!(firing, 2500);
}

criterion_group!(benches, rules);
criterion_main!(benches);
