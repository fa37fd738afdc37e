//! Hot paths of the store: head chunk codec, block series codec, batch append.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vigil_tsdb::{Appender, Db, DbOptions, Labels, Sample, SeriesSamples, WalSync, chunk, series_codec};

fn counter_samples(count: i64) -> Vec<Sample> {
    (0..count).map(|i| Sample { t: 1_700_000_000_000 + i * 15_000, v: (i * 17 + i * i % 13) as f64 }).collect()
}

fn gauge_samples(count: i64) -> Vec<Sample> {
    (0..count).map(|i| Sample { t: 1_700_000_000_000 + i * 15_000, v: ((i as f64) / 9.0).sin() * 100.0 }).collect()
}

fn codecs(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    for (name, samples) in [("counter", counter_samples(120)), ("gauge", gauge_samples(120))] {
        group.throughput(Throughput::Elements(samples.len() as u64));
        group.bench_with_input(BenchmarkId::new("xor_chunk_encode", name), &samples, |b, s| {
            b.iter(|| chunk::encode(black_box(s)))
        });
        let encoded = chunk::encode(&samples);
        group.bench_with_input(BenchmarkId::new("xor_chunk_decode", name), &encoded, |b, e| {
            b.iter(|| chunk::decode(black_box(e)).unwrap())
        });
        let mut block_bytes = Vec::new();
        series_codec::encode(&samples, &mut block_bytes);
        group.bench_with_input(BenchmarkId::new("block_series_encode", name), &samples, |b, s| {
            b.iter(|| {
                let mut out = Vec::with_capacity(512);
                series_codec::encode(black_box(s), &mut out);
                out
            })
        });
        group.bench_with_input(BenchmarkId::new("block_series_decode", name), &block_bytes, |b, e| {
            b.iter(|| series_codec::decode(black_box(e), &mut 0).unwrap())
        });
    }
    group.finish();
}

/// Label sets built fresh, as a decoder hands them over (no strings shared with the head).
fn fresh_labels(series: usize) -> Vec<Labels> {
    let modes = ["user", "system", "idle", "iowait", "irq", "softirq", "steal", "nice"];
    (0..series)
        .map(|i| {
            Labels::new([
                ("__name__", "node_cpu_seconds_total".to_owned()),
                ("instance", format!("host-{}", i / 64)),
                ("cpu", format!("{}", i % 8)),
                ("mode", modes[i % 8].to_owned()),
            ])
            .unwrap()
        })
        .collect()
}

fn append(c: &mut Criterion) {
    let series = 10_000usize;
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(series as u64));
    group.sample_size(20);
    for (name, with_wal) in [("in_memory", false), ("wal_fsync_never", true)] {
        let dir = tempfile::tempdir().unwrap();
        let options = DbOptions { wal_sync: WalSync::Never, ..DbOptions::default() };
        let db = if with_wal { Db::open(dir.path(), options).unwrap().0 } else { Db::in_memory(options) };
        let mut t = 1_700_000_000_000i64;
        group.bench_function(BenchmarkId::new("10k_series_batch", name), |b| {
            b.iter_batched_ref(
                || {
                    t += 15_000;
                    fresh_labels(series)
                        .into_iter()
                        .enumerate()
                        .map(|(i, labels)| SeriesSamples { labels, samples: vec![Sample { t, v: i as f64 }] })
                        .collect::<Vec<_>>()
                },
                |batch| db.append(black_box(batch)).unwrap(),
                criterion::BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, codecs, append);
criterion_main!(benches);
