//! Property test: the database against a `BTreeMap` model over random operation sequences,
//! including crashes (drop without flush) and reopening from disk.

use std::collections::BTreeMap;

use proptest::prelude::*;
use vigil_tsdb::{
    Appender, Db, DbOptions, Labels, MatchOp, Matcher, Queryable, RefBatch, Sample, SeriesSamples, WalSync,
    parse_series_key, series_key,
};

const WINDOW_MS: i64 = 50;

#[derive(Debug, Clone)]
enum Op {
    /// Samples for series `series` at the given times (relative to that series' newest time) and values;
    /// `borrowed` sends them as a [`RefBatch`] (labels borrowed, as remote write does), split in two entries.
    Append { series: u8, samples: Vec<(i64, u8)>, borrowed: bool },
    /// Drop the database without flushing and open it again; optionally leave a half-written block behind.
    Crash { partial_block: bool },
    /// Move head samples at or before this time into a block.
    Cut(i64),
    /// Merge adjacent blocks.
    Compact,
    /// Apply retention with this reference time.
    Retention(i64),
}

type Model = BTreeMap<Labels, BTreeMap<i64, u64>>;

fn labels_for(series: u8) -> Labels {
    Labels::new([("__name__", format!("m{}", series % 3)), ("instance", format!("i{series}"))]).unwrap()
}

/// Applies the same acceptance rules the store documents: newer than the newest sample is stored;
/// an equal timestamp with equal value is a no-op; else a stored timestamp is a duplicate error;
/// else within the window it is stored, otherwise it is out of order.
fn model_append(model: &mut Model, labels: &Labels, samples: &[Sample], floor: i64) -> usize {
    let series = model.entry(labels.clone()).or_default();
    let mut sorted = samples.to_vec();
    sorted.sort_by_key(|s| s.t);
    let mut accepted = 0;
    for sample in sorted {
        let bits = sample.v.to_bits();
        let newest = series.keys().next_back().copied();
        match (series.get(&sample.t), newest) {
            _ if sample.t <= floor => {}
            (Some(stored), _) => accepted += usize::from(*stored == bits),
            (None, Some(newest)) if sample.t < newest - WINDOW_MS => {}
            (None, _) => {
                series.insert(sample.t, bits);
                accepted += 1;
            }
        }
    }
    accepted
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..6, prop::collection::vec((-80i64..40, 0u8..4), 1..12), any::<bool>())
            .prop_map(|(series, samples, borrowed)| Op::Append { series, samples, borrowed }),
        1 => any::<bool>().prop_map(|partial_block| Op::Crash { partial_block }),
        1 => (0i64..400).prop_map(Op::Cut),
        1 => Just(Op::Compact),
        1 => (0i64..600).prop_map(Op::Retention),
    ]
}

fn check_equal(db: &Db, model: &Model) -> Result<(), TestCaseError> {
    let all = [Matcher::new(MatchOp::Regex, "__name__", "m.*").unwrap()];
    let got = db.select(&all, i64::MIN, i64::MAX).unwrap();
    let expected: Vec<(&Labels, &BTreeMap<i64, u64>)> = model.iter().filter(|(_, s)| !s.is_empty()).collect();
    prop_assert_eq!(got.len(), expected.len());
    for (series, (labels, samples)) in got.iter().zip(expected) {
        prop_assert_eq!(&series.labels, labels);
        let got_samples: Vec<(i64, u64)> = series.samples.iter().map(|s| (s.t, s.v.to_bits())).collect();
        let want: Vec<(i64, u64)> = samples.iter().map(|(t, v)| (*t, *v)).collect();
        prop_assert_eq!(got_samples, want);
    }
    // A narrower time range returns exactly the model's samples inside it.
    let narrow = db.select(&[Matcher::equal("__name__", "m0")], 20, 60).unwrap();
    for series in narrow {
        let want: Vec<i64> = model[&series.labels].range(20..=60).map(|(t, _)| *t).collect();
        prop_assert_eq!(series.samples.iter().map(|s| s.t).collect::<Vec<_>>(), want);
    }
    Ok(())
}

/// A batch holding `samples` of `labels` as two entries of the same series (merged by the store): the
/// first keyed as the store keys it, the second with its pairs in reverse order (found through its labels).
fn ref_batch(labels: &Labels, samples: &[Sample]) -> RefBatch<'static> {
    let pairs: Vec<(&str, &str)> = labels.iter().map(|l| (&*l.name, &*l.value)).collect();
    let (mut key, mut reversed) = (Vec::new(), Vec::new());
    series_key(pairs.iter().copied(), &mut key);
    series_key(pairs.iter().rev().copied(), &mut reversed);
    let half = samples.len() / 2;
    RefBatch { samples: samples.to_vec(), series: vec![(key.into(), 0..half), (reversed.into(), half..samples.len())] }
}

fn options() -> DbOptions {
    DbOptions { out_of_order_window_ms: WINDOW_MS, wal_sync: WalSync::Never, ..DbOptions::default() }
}

proptest! {
    // PROPTEST_CASES raises the count for a deeper run.
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96), ..ProptestConfig::default() })]

    #[test]
    fn db_matches_model(ops in prop::collection::vec(arb_op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(dir.path(), options()).unwrap().0;
        let mut model = Model::new();
        let mut newest: BTreeMap<u8, i64> = BTreeMap::new();
        let mut floor = i64::MIN;
        for op in ops {
            match op {
                Op::Append { series, samples, borrowed } => {
                    let base = newest.get(&series).copied().unwrap_or(100);
                    let samples: Vec<Sample> =
                        samples.iter().map(|(dt, v)| Sample { t: base + dt, v: f64::from(*v) }).collect();
                    let labels = labels_for(series);
                    let want_accepted = model_append(&mut model, &labels, &samples, floor);
                    if let Some(t) = model[&labels].keys().next_back() {
                        newest.insert(series, *t);
                    }
                    let summary = if borrowed {
                        db.append_refs(&ref_batch(&labels, &samples), &parse_series_key).unwrap()
                    } else {
                        db.append(&[SeriesSamples { labels, samples }]).unwrap()
                    };
                    prop_assert_eq!(summary.accepted, want_accepted);
                }
                Op::Crash { partial_block } => {
                    drop(db);
                    if partial_block {
                        let partial = dir.path().join("blocks/0000000000000-999999.tmp");
                        std::fs::create_dir_all(&partial).unwrap();
                        std::fs::write(partial.join("chunks"), b"half a block").unwrap();
                    }
                    let (reopened, report) = Db::open(dir.path(), options()).unwrap();
                    prop_assert!(report.corruptions.is_empty(), "{:?}", report.corruptions);
                    prop_assert_eq!(report.partial_blocks_removed, usize::from(partial_block));
                    db = reopened;
                }
                Op::Cut(cut) => {
                    if db.flush_head_before(cut).unwrap().is_some() {
                        floor = floor.max(cut);
                    }
                }
                Op::Compact => {
                    db.compact().unwrap();
                }
                Op::Retention(reference) => {
                    for (min, max) in db.apply_retention(reference).unwrap() {
                        prop_assert!(max <= floor, "retention deleted data newer than the blocks");
                        for series in model.values_mut() {
                            series.retain(|t, _| *t < min || *t > max);
                        }
                    }
                }
            }
            check_equal(&db, &model)?;
        }
    }
}

#[test]
fn limits_reject_with_reasons() {
    let mut options = options();
    options.limits.max_series = 2;
    options.limits.max_label_value_len = 8;
    let db = Db::in_memory(options);
    let sample = vec![Sample { t: 1, v: 1.0 }];
    let batch: Vec<SeriesSamples> = ["a", "b", "c", "much-too-long-value"]
        .iter()
        .map(|v| SeriesSamples {
            labels: Labels::new([("__name__", "x"), ("v", *v)]).unwrap(),
            samples: sample.clone(),
        })
        .collect();
    let summary = db.append(&batch).unwrap();
    assert_eq!(summary.accepted, 2);
    let reasons: Vec<String> = summary.rejected.iter().map(|r| r.error.to_string()).collect();
    assert_eq!(reasons.len(), 2);
    assert!(reasons[0].contains("series limit of 2"), "{reasons:?}");
    assert!(reasons[1].contains("over the limit of 8"), "{reasons:?}");
    assert_eq!(db.series_count(), 2);
}

#[test]
fn duplicate_timestamp_with_other_value_is_rejected() {
    let db = Db::in_memory(options());
    let labels = Labels::new([("__name__", "x")]).unwrap();
    let append =
        |v: f64| db.append(&[SeriesSamples { labels: labels.clone(), samples: vec![Sample { t: 10, v }] }]).unwrap();
    assert_eq!(append(1.0).accepted, 1);
    assert_eq!(append(1.0).accepted, 1, "an identical resend is accepted");
    let summary = append(2.0);
    assert_eq!(summary.rejected[0].error.to_string(), "duplicate sample for timestamp");
}

#[test]
fn label_names_values_and_series_honour_matchers_and_limits() {
    let db = Db::in_memory(options());
    let batch: Vec<SeriesSamples> = (0..5)
        .map(|i| SeriesSamples {
            labels: Labels::new([("__name__", if i < 3 { "up" } else { "down" }), ("i", &i.to_string())]).unwrap(),
            samples: vec![Sample { t: 1, v: 1.0 }],
        })
        .collect();
    db.append(&batch).unwrap();
    assert_eq!(db.label_names(&[], None).unwrap(), ["__name__", "i"]);
    assert_eq!(db.label_values("__name__", &[], None).unwrap(), ["down", "up"]);
    let up = [Matcher::equal("__name__", "up")];
    assert_eq!(db.label_values("i", &up, None).unwrap(), ["0", "1", "2"]);
    assert_eq!(db.label_values("i", &up, Some(2)).unwrap(), ["0", "1"]);
    assert_eq!(db.series_labels(&up, Some(1)).unwrap().len(), 1);
}

#[test]
fn metadata_survives_a_restart_and_cardinality_counts_the_index() {
    use vigil_tsdb::MetricMetadata;
    let dir = tempfile::tempdir().unwrap();
    let entry = MetricMetadata { metric_type: "counter".into(), help: "Requests.".into(), unit: String::new() };
    {
        let (db, _) = Db::open(dir.path(), options()).unwrap();
        db.set_metadata(&[("http_requests_total".into(), entry.clone())]).unwrap();
        let batch: Vec<SeriesSamples> = (0..6)
            .map(|i| SeriesSamples {
                labels: Labels::new([("__name__", if i < 4 { "a" } else { "b" }), ("pod", &format!("p{i}"))]).unwrap(),
                samples: vec![Sample { t: 1, v: 1.0 }],
            })
            .collect();
        db.append(&batch).unwrap();
        let stats = db.cardinality(10);
        assert_eq!(stats.series, 6);
        assert_eq!(stats.series_by_metric_name, [("a".to_owned(), 4), ("b".to_owned(), 2)]);
        assert_eq!(stats.values_by_label_name[0], ("pod".to_owned(), 6));
        assert_eq!(stats.label_pairs, 8);
    }
    let (db, report) = Db::open(dir.path(), options()).unwrap();
    assert!(report.corruptions.is_empty());
    assert_eq!(db.metadata(Some("http_requests_total"), None), [("http_requests_total".to_owned(), entry)]);
    assert!(db.metadata(Some("other"), None).is_empty());
}

#[test]
fn compaction_merges_a_window_of_blocks_and_keeps_every_sample() {
    let dir = tempfile::tempdir().unwrap();
    let options = DbOptions { block_duration_ms: 100, retention_ms: None, ..options() };
    let (db, _) = Db::open(dir.path(), options.clone()).unwrap();
    let labels = Labels::new([("__name__", "m")]).unwrap();
    let samples: Vec<Sample> = (0..400).map(|i| Sample { t: i * 2, v: f64::from(i as u16) }).collect();
    db.append(&[SeriesSamples { labels: labels.clone(), samples: samples.clone() }]).unwrap();
    for cut in [99, 199, 299] {
        assert!(db.flush_head_before(cut).unwrap().is_some(), "cut at {cut}");
    }
    assert_eq!(db.blocks().len(), 3);
    let before = db.select(&[Matcher::equal("__name__", "m")], i64::MIN, i64::MAX).unwrap();
    let written = db.compact().unwrap();
    assert_eq!(written.len(), 1, "the three blocks of window [0, 300) merge into one");
    assert_eq!((written[0].min_time, written[0].max_time, written[0].level), (0, 298, 2));
    assert_eq!(db.blocks().len(), 1);
    let after = db.select(&[Matcher::equal("__name__", "m")], i64::MIN, i64::MAX).unwrap();
    assert_eq!(before, after);
    assert_eq!(after[0].samples, samples);
    drop(db);
    let (reopened, report) = Db::open(dir.path(), options).unwrap();
    assert_eq!(report.blocks, 1);
    assert_eq!(reopened.select(&[Matcher::equal("__name__", "m")], i64::MIN, i64::MAX).unwrap(), after);
}

#[test]
fn size_retention_deletes_the_oldest_blocks_first() {
    let dir = tempfile::tempdir().unwrap();
    let options = DbOptions { block_duration_ms: 100, retention_ms: None, ..options() };
    let (db, _) = Db::open(dir.path(), options.clone()).unwrap();
    let labels = Labels::new([("__name__", "m")]).unwrap();
    let samples: Vec<Sample> = (0..500).map(|i| Sample { t: i, v: f64::from(i as u16) * 1.5 }).collect();
    db.append(&[SeriesSamples { labels, samples }]).unwrap();
    for cut in [99, 199, 299, 399] {
        db.flush_head_before(cut).unwrap().unwrap();
    }
    assert_eq!(db.blocks().len(), 4);
    let total = db.blocks_size_bytes();
    drop(db);
    // Room for a little over two of the four blocks: the two oldest go.
    let limited = DbOptions { retention_bytes: Some(total / 2 + total / 10), ..options };
    let (db, _) = Db::open(dir.path(), limited).unwrap();
    let deleted = db.apply_retention(i64::MAX / 2).unwrap();
    assert_eq!(deleted, [(0, 99), (100, 199)]);
    let left: Vec<(i64, i64)> = db.blocks().iter().map(|b| (b.min_time, b.max_time)).collect();
    assert_eq!(left, [(200, 299), (300, 399)]);
    assert!(db.blocks_size_bytes() <= total / 2 + total / 10);
    let stored = db.select(&[Matcher::equal("__name__", "m")], i64::MIN, i64::MAX).unwrap();
    assert_eq!(stored[0].samples.first().unwrap().t, 200, "older samples went with their blocks");
}

#[test]
fn blocks_a_finished_compaction_replaced_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let options = DbOptions { block_duration_ms: 100, retention_ms: None, ..options() };
    let (db, _) = Db::open(dir.path(), options.clone()).unwrap();
    let labels = Labels::new([("__name__", "m")]).unwrap();
    let samples: Vec<Sample> = (0..400).map(|i| Sample { t: i, v: 1.0 }).collect();
    db.append(&[SeriesSamples { labels, samples: samples.clone() }]).unwrap();
    for cut in [99, 199, 299] {
        db.flush_head_before(cut).unwrap().unwrap();
    }
    let blocks_dir = dir.path().join("blocks");
    let before: Vec<std::path::PathBuf> = std::fs::read_dir(&blocks_dir).unwrap().map(|e| e.unwrap().path()).collect();
    // Keep copies of the sources, compact, then put the copies back: as if the process died after the
    // merged block was renamed into place but before its sources were deleted.
    let backup = tempfile::tempdir().unwrap();
    for source in &before {
        let copy = backup.path().join(source.file_name().unwrap());
        std::fs::create_dir_all(&copy).unwrap();
        for file in std::fs::read_dir(source).unwrap() {
            let file = file.unwrap().path();
            std::fs::copy(&file, copy.join(file.file_name().unwrap())).unwrap();
        }
    }
    assert_eq!(db.compact().unwrap().len(), 1);
    drop(db);
    for source in &before {
        std::fs::rename(backup.path().join(source.file_name().unwrap()), source).unwrap();
    }
    assert_eq!(std::fs::read_dir(&blocks_dir).unwrap().count(), 4);
    let (db, report) = Db::open(dir.path(), options).unwrap();
    assert_eq!(report.blocks, 1, "the three sources were recognised as merged and removed");
    assert_eq!(std::fs::read_dir(&blocks_dir).unwrap().count(), 1);
    let stored = db.select(&[Matcher::equal("__name__", "m")], i64::MIN, i64::MAX).unwrap();
    assert_eq!(stored[0].samples, samples);
}
