use std::collections::BTreeMap;

use proptest::prelude::*;

use super::codec::tests::span as any_span;
use super::*;

fn resource(service: &str) -> Arc<Resource> {
    Arc::new(Resource {
        service: service.into(),
        attributes: vec![Attribute::str("service.name", service), Attribute::str("host.name", "h1")],
        scope_name: "test".into(),
        scope_version: "1.0".into(),
    })
}

/// A trace of `n` spans: a root in `frontend`, children alternating between two services.
fn trace(seed: u8, n: usize, start_ns: i64) -> Vec<Span> {
    let trace_id = [seed; 16];
    (0..n)
        .map(|i| {
            let service = if i % 2 == 0 { "frontend" } else { "cart" };
            Span {
                trace_id,
                span_id: [seed, i as u8, 1, 1, 1, 1, 1, 1],
                parent_span_id: (i > 0).then_some([seed, 0, 1, 1, 1, 1, 1, 1]),
                trace_state: String::new(),
                flags: 1,
                name: format!("op{}", i % 3),
                kind: if i == 0 { SpanKind::Server } else { SpanKind::Client },
                status: if i == 3 { StatusCode::Error } else { StatusCode::Unset },
                status_message: String::new(),
                start_ns: start_ns + i as i64 * 1000,
                end_ns: start_ns + i as i64 * 1000 + 5_000_000 * (i as i64 + 1),
                resource: resource(service),
                attributes: vec![Attribute { key: "http.status_code".into(), value: AttrValue::Int(200 + i as i64) }],
                events: vec![],
                links: vec![],
            }
        })
        .collect()
}

fn everything() -> impl Fn(&Span) -> bool + Sync {
    |_| true
}

fn search<'a>(
    span_matches: &'a (dyn Fn(&Span) -> bool + Sync),
    trace_matches: &'a (dyn Fn(&[Span]) -> bool + Sync),
) -> SpanSearch<'a> {
    SpanSearch {
        start_ns: 0,
        end_ns: i64::MAX,
        service: None,
        min_duration_ns: None,
        max_duration_ns: None,
        span_matches,
        trace_matches,
        limit: 100,
    }
}

fn open(dir: &Path) -> TraceStore {
    TraceStore::open(dir, TraceOptions::default()).unwrap().0
}

#[test]
fn traces_come_back_whole_from_head_blocks_and_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append(trace(1, 10, 1_000)).unwrap();
    store.flush_head().unwrap();
    store.append(trace(2, 5, 2_000)).unwrap();
    // A late span of trace 1 lands in the head while the rest is in a block.
    let late = trace(1, 12, 1_000).pop().unwrap();
    store.append(vec![late]).unwrap();
    assert_eq!(store.trace(&[1; 16]).unwrap().len(), 11);
    assert_eq!(store.trace(&[2; 16]).unwrap(), trace(2, 5, 2_000));
    assert!(store.trace(&[9; 16]).unwrap().is_empty());
    drop(store);

    let (store, report) = TraceStore::open(dir.path(), TraceOptions::default()).unwrap();
    assert_eq!((report.blocks, report.replayed_spans), (1, 6));
    assert!(report.corruptions.is_empty());
    assert_eq!(store.trace(&[1; 16]).unwrap().len(), 11);
    let mut expected = trace(1, 10, 1_000);
    expected.push(trace(1, 12, 1_000).pop().unwrap());
    assert_eq!(store.trace(&[1; 16]).unwrap(), expected);
}

#[test]
fn a_crash_after_the_block_and_before_the_wal_trim_replays_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append(trace(3, 4, 1_000)).unwrap();
    let wal_copy: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    store.flush_head().unwrap();
    drop(store);
    // Put the trimmed segments back, as if the process died before deleting them.
    for (path, bytes) in wal_copy {
        std::fs::write(path, bytes).unwrap();
    }
    let (store, report) = TraceStore::open(dir.path(), TraceOptions::default()).unwrap();
    assert_eq!(report.replayed_spans, 0);
    assert_eq!(store.trace(&[3; 16]).unwrap().len(), 4);
}

#[test]
fn a_full_head_is_written_in_the_background_and_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let options = TraceOptions { head_max_spans: 50, ..TraceOptions::default() };
    let store = TraceStore::open(dir.path(), options).unwrap().0;
    for seed in 0..20u8 {
        // While two heads wait to be written, appends are refused as retryable; a client retries.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match store.append(trace(seed, 10, i64::from(seed) * 1_000_000)) {
                Ok(()) => break,
                Err(Error::LimitExceeded(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(error) => panic!("{error}"),
            }
        }
        for check in 0..=seed {
            assert_eq!(store.trace(&[check; 16]).unwrap().len(), 10, "trace {check} after appending {seed}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.head_spans() > 50 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(store.blocks().len() >= 3, "{} blocks", store.blocks().len());
    assert_eq!(store.blocks().iter().map(|b| b.spans).sum::<u64>() + store.head_spans() as u64, 200);
}

#[test]
fn search_filters_by_service_duration_time_and_span_condition_up_to_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for seed in 1..=6u8 {
        store.append(trace(seed, 6, i64::from(seed) * 1_000_000_000)).unwrap();
        if seed == 3 {
            store.flush_head().unwrap();
        }
    }
    let errors = |span: &Span| span.status == StatusCode::Error;
    let any = |_: &[Span]| true;
    let hits = store.search(&search(&errors, &any)).unwrap();
    assert_eq!(hits.len(), 6);
    assert!(hits.iter().all(|hit| hit.spans.len() == 1 && hit.spans[0].service() == "cart"));

    let mut narrow = search(&errors, &any);
    narrow.service = Some("frontend".into());
    assert!(store.search(&narrow).unwrap().is_empty());

    let all = everything();
    let mut slow = search(&all, &any);
    slow.min_duration_ns = Some(26_000_000);
    let hits = store.search(&slow).unwrap();
    assert!(hits.iter().all(|hit| hit.spans.len() == 1 && hit.spans[0].duration_ns() == 30_000_000));
    assert_eq!(hits.len(), 6);

    let mut window = search(&all, &any);
    (window.start_ns, window.end_ns) = (2_000_000_000, 4_500_000_000);
    let mut found: Vec<u8> = store.search(&window).unwrap().iter().map(|h| h.trace_id[0]).collect();
    found.sort();
    assert_eq!(found, vec![2, 3, 4]);

    let mut limited = search(&all, &any);
    limited.limit = 2;
    assert_eq!(store.search(&limited).unwrap().len(), 2);

    // A trace-level condition sees every matching span of the trace.
    let many = |spans: &[Span]| spans.len() >= 6;
    assert_eq!(store.search(&search(&all, &many)).unwrap().len(), 6);
}

#[test]
fn the_catalog_lists_services_operations_and_tags() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append(trace(1, 4, 1_000)).unwrap();
    store.flush_head().unwrap();
    store.append(vec![Span { resource: resource("payments"), ..trace(2, 1, 5_000).remove(0) }]).unwrap();
    let catalog = store.catalog(0, i64::MAX).unwrap();
    assert_eq!(catalog.operations.keys().collect::<Vec<_>>(), ["cart", "frontend", "payments"]);
    assert_eq!(
        catalog.operations_of("cart"),
        [("op0".to_owned(), SpanKind::Client), ("op1".to_owned(), SpanKind::Client)]
    );
    assert_eq!(
        catalog.operations_of("frontend"),
        [("op0".to_owned(), SpanKind::Server), ("op2".to_owned(), SpanKind::Client)]
    );
    assert_eq!(catalog.span_tags["http.status_code"].len(), 4);
    assert_eq!(catalog.resource_tags["host.name"].iter().collect::<Vec<_>>(), ["h1"]);
    assert!(store.catalog(10_000_000_000, i64::MAX).unwrap().operations.is_empty());
}

#[test]
fn retention_drops_old_blocks_and_then_the_oldest_over_the_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let options = TraceOptions { retention_ns: Some(10_000_000_000), ..TraceOptions::default() };
    let store = TraceStore::open(dir.path(), options.clone()).unwrap().0;
    for seed in 1..=3u8 {
        store.append(trace(seed, 5, i64::from(seed) * 10_000_000_000)).unwrap();
        store.flush_head().unwrap();
    }
    let dropped = store.apply_retention(25_000_000_000).unwrap();
    assert_eq!(dropped.len(), 1);
    assert!(store.trace(&[1; 16]).unwrap().is_empty());
    assert_eq!(store.trace(&[2; 16]).unwrap().len(), 5);
    drop(store);

    let one_block = {
        let store = TraceStore::open(dir.path(), TraceOptions::default()).unwrap().0;
        store.blocks().len()
    };
    assert_eq!(one_block, 2);
    let tight = TraceOptions { max_bytes: Some(1), ..TraceOptions::default() };
    let store = TraceStore::open(dir.path(), tight).unwrap().0;
    assert_eq!(store.apply_retention(0).unwrap().len(), 2);
    assert_eq!(store.size_bytes(), 0);
}

#[test]
fn a_corrupt_block_is_set_aside_and_the_rest_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append(trace(1, 3, 1_000)).unwrap();
    store.flush_head().unwrap();
    store.append(trace(2, 3, 2_000)).unwrap();
    store.flush_head().unwrap();
    let blocks: Vec<PathBuf> = store.inner.state.read().blocks.iter().map(|b| b.path().to_owned()).collect();
    drop(store);
    let bytes = std::fs::read(&blocks[0]).unwrap();
    std::fs::write(&blocks[0], &bytes[..bytes.len() / 2]).unwrap();
    let (store, report) = TraceStore::open(dir.path(), TraceOptions::default()).unwrap();
    assert_eq!(report.corruptions.len(), 1);
    assert!(report.corruptions[0].to_string().contains(".parquet"), "{}", report.corruptions[0]);
    assert!(blocks[0].with_extension("parquet.corrupt").exists());
    assert_eq!(store.trace(&[2; 16]).unwrap().len(), 3);
}

#[test]
fn a_torn_wal_tail_loses_only_the_torn_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append(trace(1, 3, 1_000)).unwrap();
    store.append(trace(2, 3, 2_000)).unwrap();
    drop(store);
    let segment = std::fs::read_dir(dir.path().join("wal")).unwrap().map(|e| e.unwrap().path()).max().unwrap();
    let len = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(len - 5).unwrap();
    let (store, report) = TraceStore::open(dir.path(), TraceOptions::default()).unwrap();
    assert_eq!(report.replayed_spans, 3);
    assert_eq!(store.trace(&[1; 16]).unwrap().len(), 3);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever mix of appends, block cuts and restarts, every trace reads back as a simple model holds it.
    #[test]
    fn the_store_agrees_with_a_map_of_traces(
        batches in proptest::collection::vec((proptest::collection::vec(any_span(), 1..8), 0u8..4), 1..8),
        trace_ids in proptest::collection::vec(any::<[u8; 2]>(), 1..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        let mut model: BTreeMap<TraceId, BTreeMap<SpanId, Span>> = BTreeMap::new();
        for (batch_index, (spans, action)) in batches.into_iter().enumerate() {
            // Few distinct traces, so traces span batches and blocks.
            let spans: Vec<Span> = spans.into_iter().enumerate().map(|(i, mut span)| {
                let short = trace_ids[(batch_index + i) % trace_ids.len()];
                span.trace_id = [short[0], short[1], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
                span
            }).collect();
            for span in &spans {
                model.entry(span.trace_id).or_default().entry(span.span_id).or_insert_with(|| span.clone());
            }
            store.append(spans).unwrap();
            match action {
                1 => store.flush_head().unwrap(),
                2 => {
                    drop(store);
                    store = open(dir.path());
                }
                _ => {}
            }
        }
        for (trace_id, spans) in &model {
            let got = store.trace(trace_id).unwrap();
            let mut expected: Vec<Span> = spans.values().cloned().collect();
            normalize_trace(&mut expected);
            prop_assert_eq!(got.len(), expected.len());
            let got_ids: BTreeSet<SpanId> = got.iter().map(|s| s.span_id).collect();
            prop_assert_eq!(got_ids, spans.keys().copied().collect::<BTreeSet<_>>());
            for span in &got {
                prop_assert_eq!(span, &spans[&span.span_id]);
            }
        }
    }
}
