use std::io::Write;

use super::*;

fn record(ts_ns: i64, app: &str, line: &str) -> LogRecord {
    LogRecord {
        ts_ns,
        labels: BTreeMap::from([("app".to_owned(), app.to_owned()), ("env".to_owned(), "prod".to_owned())]),
        line: line.to_owned(),
        metadata: BTreeMap::new(),
        position: None,
    }
}

fn all(contains: &[&str]) -> LogQuery {
    LogQuery {
        start_ns: 0,
        end_ns: i64::MAX,
        contains: contains.iter().map(|s| (*s).to_owned()).collect(),
        ..LogQuery::default()
    }
}

fn lines(store: &LogIndex, query: &LogQuery) -> Vec<String> {
    store.select(query).unwrap().into_iter().map(|r| r.line).collect()
}

fn sample_store(dir: &Path) -> LogIndex {
    let store = LogIndex::open(dir).unwrap();
    store
        .append(&[
            record(1, "api", "GET /api/v1/users 200 12ms"),
            record(2, "api", "POST /api/v1/orders 500 connection timeout from 10.0.0.7"),
            record(3, "web", "served index.html in 3ms"),
            record(4, "api", "retrying after Timeout"),
        ])
        .unwrap();
    store
}

/// Runs `check` on records held in heads, then again once they are sealed into chunks.
fn in_heads_and_chunks(store: &LogIndex, check: impl Fn(&LogIndex)) {
    check(store);
    store.flush().unwrap();
    assert!(store.size_bytes() > 0, "sealed into a partition");
    check(store);
}

#[test]
fn records_are_searchable_at_once_with_exact_substring_semantics() {
    let dir = tempfile::tempdir().unwrap();
    in_heads_and_chunks(&sample_store(dir.path()), |store| {
        assert_eq!(lines(store, &all(&[])).len(), 4);
        assert_eq!(lines(store, &all(&["timeout"])), ["POST /api/v1/orders 500 connection timeout from 10.0.0.7"]);
        assert_eq!(lines(store, &all(&["imeou"])).len(), 2, "a substring inside tokens: both timeouts");
    });
}

#[test]
fn edges_of_a_filter_may_be_parts_of_longer_tokens() {
    let dir = tempfile::tempdir().unwrap();
    in_heads_and_chunks(&sample_store(dir.path()), |store| {
        assert_eq!(lines(store, &all(&["v1/us"])), ["GET /api/v1/users 200 12ms"]);
        assert_eq!(lines(store, &all(&["0.0.7"])).len(), 1);
        assert_eq!(lines(store, &all(&["500 connection"])).len(), 1);
        assert_eq!(lines(store, &all(&["Timeout"])), ["retrying after Timeout"], "the check is case-sensitive");
        assert!(lines(store, &all(&["nowhere"])).is_empty());
    });
}

#[test]
fn identifiers_are_found_through_the_bloom_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogIndex::open(dir.path()).unwrap();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    store
        .append(&[
            record(1, "api", &format!("done trace_id={trace} status=200")),
            record(2, "web", "done trace_id=00f067aa0ba902b7aaaaaaaaaaaaaaaa status=200"),
            record(3, "web", &format!("upstream {trace}ff status=200")),
        ])
        .unwrap();
    let narrowing = line_clauses(&partition::schema().1, &format!("={trace} "));
    assert!(narrowing.clauses.is_empty(), "an identifier is not looked up in the term dictionary");
    assert_eq!(narrowing.identifiers, [chunk::stable_hash(trace.as_bytes())]);
    in_heads_and_chunks(&store, |store| {
        assert_eq!(lines(store, &all(&[&format!("={trace} ")])), [format!("done trace_id={trace} status=200")]);
        assert_eq!(lines(store, &all(&[trace])).len(), 2, "at the filter's edges it may be part of a longer token");
        assert!(lines(store, &all(&[" 4bf92f3577b34da6a3ce929d0e0e4737 "])).is_empty());
    });
}

#[test]
fn an_identifier_at_a_filter_edge_reads_only_chunks_that_may_hold_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogIndex::open(dir.path()).unwrap();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    store
        .append(&[
            record(1, "whole", &format!("done trace_id={trace} status=200")),
            record(2, "longer", &format!("upstream {trace}ff status=200")),
            record(3, "term", &format!("id x{trace} here")),
            record(4, "other", "done trace_id=00f067aa0ba902b7aaaaaaaaaaaaaaaa status=200"),
        ])
        .unwrap();
    store.flush().unwrap();
    let found: Vec<String> =
        store.select(&all(&[trace])).unwrap().into_iter().map(|r| r.labels["app"].clone()).collect();
    assert_eq!(found, ["whole", "longer", "term"], "the filter is a substring: inside longer tokens too");
    // Which chunks are read without their Bloom filter's say: those with a longer identifier, or a term
    // holding it.
    let (query, identifiers, edges) = store.build_query(&all(&[trace]));
    assert!(identifiers.is_empty());
    assert_eq!(edges.len(), 1);
    let snapshot = store.state.lock().published.values().next().unwrap().clone();
    let app_at = |offset: u64| {
        let entry = snapshot.entry(offset).unwrap();
        chunk::pairs(chunk::decode_entry(&entry).unwrap().labels, &mut 0).unwrap()["app"].clone()
    };
    let widened = BooleanQuery::new(vec![(Occur::Must, query.box_clone()), (Occur::Must, edges[0].widen.box_clone())]);
    let mut apps: Vec<String> = snapshot.chunks(&widened).unwrap().into_iter().map(|c| app_at(c.offset)).collect();
    apps.sort();
    assert_eq!(apps, ["longer", "term"]);
}

#[test]
fn selectors_ranges_direction_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());
    store.flush().unwrap();
    let api = LogQuery { matchers: vec![Matcher::equal("app", "api")], ..all(&[]) };
    assert_eq!(store.select(&api).unwrap().len(), 3);
    let regex = LogQuery { matchers: vec![Matcher::new(MatchOp::Regex, "app", "w.*").unwrap()], ..all(&[]) };
    assert_eq!(lines(&store, &regex), ["served index.html in 3ms"]);
    let window = LogQuery { start_ns: 2, end_ns: 4, ..all(&[]) };
    assert_eq!(store.select(&window).unwrap().iter().map(|r| r.ts_ns).collect::<Vec<_>>(), [2, 3]);
    let newest = LogQuery { backward: true, limit: Some(2), ..all(&[]) };
    assert_eq!(store.select(&newest).unwrap().iter().map(|r| r.ts_ns).collect::<Vec<_>>(), [4, 3]);
    assert_eq!(store.label_names(0, i64::MAX).unwrap(), ["app", "env"]);
    assert_eq!(store.label_values("app", 0, i64::MAX).unwrap(), ["api", "web"]);
    assert_eq!(store.streams(&[Matcher::equal("app", "web")], 0, i64::MAX).unwrap().len(), 1);
}

#[test]
fn acknowledged_records_survive_a_crash_before_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = sample_store(dir.path());
        // Dropped without a commit: only the write-ahead log holds the records.
        drop(store);
    }
    // Half a frame, as a crash mid-append leaves it.
    let mut wal = std::fs::OpenOptions::new().append(true).open(dir.path().join(WAL_FILE)).unwrap();
    wal.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
    drop(wal);
    let store = LogIndex::open(dir.path()).unwrap();
    assert_eq!(lines(&store, &all(&[])).len(), 4);
    store.append(&[record(5, "api", "after restart")]).unwrap();
    store.commit().unwrap();
    drop(store);
    let store = LogIndex::open(dir.path()).unwrap();
    assert_eq!(lines(&store, &all(&[])).len(), 5, "unsealed heads come back from the log");
    store.flush().unwrap();
    drop(store);
    let store = LogIndex::open(dir.path()).unwrap();
    assert_eq!(lines(&store, &all(&[])).len(), 5, "sealed records are not replayed twice");
}

#[test]
fn a_crash_between_sealing_and_shrinking_the_log_replays_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());
    store.append(&[record(9, "web", "in a later frame")]).unwrap();
    let wal_before = std::fs::read(dir.path().join(WAL_FILE)).unwrap();
    // The "api" stream is sealed and committed; "web" stays in its head.
    store.flush().unwrap();
    store.append(&[record(10, "web", "after the seal")]).unwrap();
    drop(store);
    // As if the process died after the partition's commit but before the log was emptied.
    let mut wal_after = std::fs::read(dir.path().join(WAL_FILE)).unwrap();
    let mut restored = wal_before;
    restored.append(&mut wal_after);
    std::fs::write(dir.path().join(WAL_FILE), restored).unwrap();
    let store = LogIndex::open(dir.path()).unwrap();
    let found = lines(&store, &all(&[]));
    assert_eq!(found.len(), 6, "{found:?}");
    assert_eq!(found.last().unwrap(), "after the seal");
}

#[test]
fn the_log_is_rewritten_to_what_the_heads_hold() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions { chunk_bytes: 1024, wal_rewrite_bytes: 1 << 20, ..LogOptions::default() };
    let store = LogIndex::open_with(dir.path(), options.clone()).unwrap();
    let big = "x".repeat(2048);
    // Enough for the log to pass the rewrite threshold; each batch fills a head, sealed at the commit.
    let batches = (options.wal_rewrite_bytes as usize / 2048) + 1;
    for i in 0..batches {
        store.append(&[record(i as i64, "bulk", &big)]).unwrap();
    }
    store.append(&[record(1_000_000, "small", "kept in a head")]).unwrap();
    store.commit().unwrap();
    let wal = std::fs::metadata(dir.path().join(WAL_FILE)).unwrap().len();
    assert!(wal < 1024, "the log keeps only the small head: {wal} bytes");
    drop(store);
    let store = LogIndex::open_with(dir.path(), options).unwrap();
    assert_eq!(lines(&store, &all(&["kept"])), ["kept in a head"]);
    assert_eq!(store.select(&all(&[])).unwrap().len(), batches + 1);
}

#[test]
fn retention_drops_whole_partitions_by_age_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let hour = 3_600 * 1_000_000_000i64;
    let options = LogOptions { partition_ns: hour, retention_ns: Some(3 * hour), ..LogOptions::default() };
    let store = LogIndex::open_with(dir.path(), options).unwrap();
    // One record in each of six hourly partitions; a query spanning several reads them all.
    let records: Vec<LogRecord> = (0..6).map(|h| record(h * hour + 1, "api", &format!("hour {h}"))).collect();
    store.append(&records).unwrap();
    store.flush().unwrap();
    assert_eq!(lines(&store, &all(&[])).len(), 6);
    assert_eq!(std::fs::read_dir(dir.path().join(PARTITIONS_DIR)).unwrap().count(), 6);
    // At 6h, partitions that ended at or before 3h go: hours 0, 1 and 2.
    assert_eq!(store.apply_retention(6 * hour).unwrap(), [0, hour, 2 * hour]);
    assert_eq!(lines(&store, &all(&[])), ["hour 3", "hour 4", "hour 5"]);
    assert_eq!(std::fs::read_dir(dir.path().join(PARTITIONS_DIR)).unwrap().count(), 3);
    drop(store);

    // A size limit below what the three left take keeps only the newest partition.
    let options = LogOptions { partition_ns: hour, max_bytes: Some(1), ..LogOptions::default() };
    let store = LogIndex::open_with(dir.path(), options).unwrap();
    assert_eq!(lines(&store, &all(&[])).len(), 3, "partitions reopen");
    assert_eq!(store.apply_retention(6 * hour).unwrap(), [3 * hour, 4 * hour]);
    assert_eq!(lines(&store, &all(&[])), ["hour 5"]);
    assert!(store.size_bytes() > 0);
}

#[test]
fn the_stream_registry_answers_label_calls_survives_reopen_and_follows_retention() {
    let dir = tempfile::tempdir().unwrap();
    let hour = 3_600 * 1_000_000_000i64;
    let options = LogOptions { partition_ns: hour, retention_ns: Some(hour), ..LogOptions::default() };
    let store = LogIndex::open_with(dir.path(), options.clone()).unwrap();
    store.append(&[record(1, "old", "gone soon"), record(2 * hour + 1, "new", "stays")]).unwrap();
    store.commit().unwrap();
    assert_eq!(store.label_values("app", 0, 3 * hour).unwrap(), ["new", "old"]);
    assert_eq!(store.label_values("app", hour, 3 * hour).unwrap(), ["new"], "time ranges apply");
    drop(store);
    let store = LogIndex::open_with(dir.path(), options).unwrap();
    assert_eq!(store.label_values("app", 0, 3 * hour).unwrap(), ["new", "old"], "saved with the commit");
    store.apply_retention(3 * hour).unwrap();
    assert_eq!(store.label_values("app", 0, 3 * hour).unwrap(), ["new"]);
    assert_eq!(store.streams(&[Matcher::equal("app", "new")], 0, 3 * hour).unwrap().len(), 1);
}

#[test]
fn positioned_records_the_store_has_are_dropped_across_commits_and_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let at = |offset: u64| LogRecord {
        position: Some(SourcePosition { source: 9, offset }),
        ..record(offset as i64 + 1, "api", &format!("line {offset}"))
    };
    let store = LogIndex::open(dir.path()).unwrap();
    store.append(&[at(0), at(10)]).unwrap();
    store.commit().unwrap();
    drop(store);
    let store = LogIndex::open(dir.path()).unwrap();
    store.append(&[at(10), at(20)]).unwrap();
    // Not committed: only in the write-ahead log when the store goes away.
    drop(store);
    let store = LogIndex::open(dir.path()).unwrap();
    store.append(&[at(20), at(30)]).unwrap();
    store.append(&[record(50, "api", "no position"), record(50, "api", "no position")]).unwrap();
    store.commit().unwrap();
    assert_eq!(lines(&store, &all(&[])), ["line 0", "line 10", "line 20", "line 30", "no position", "no position"]);
}

/// Writes what the previous version of the store left: a partition with a stored JSON record per
/// document, and a JSON-lines write-ahead log.
fn write_old_store(dir: &Path) {
    use tantivy::schema::{FAST, STORED, STRING, Schema};
    let partition = dir.join("partitions/0");
    std::fs::create_dir_all(&partition).unwrap();
    let mut builder = Schema::builder();
    let ts = builder.add_i64_field("ts", FAST);
    let label = builder.add_text_field("label", STRING);
    let line = builder.add_text_field("line", STRING);
    let stored = builder.add_text_field("record", STORED);
    let index = tantivy::Index::create_in_dir(&partition, builder.build()).unwrap();
    let mut writer: tantivy::IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
    for (ts_ns, text) in [(5, "written by an earlier version"), (6, "also written before")] {
        let old = record(ts_ns, "api", text);
        let mut doc = tantivy::TantivyDocument::default();
        doc.add_i64(ts, old.ts_ns);
        doc.add_text(label, "app=api");
        doc.add_text(line, text);
        doc.add_text(stored, serde_json::to_string(&old).unwrap());
        writer.add_document(doc).unwrap();
    }
    writer.commit().unwrap();
    let pending = serde_json::to_string(&record(7, "api", "in the old log")).unwrap();
    std::fs::write(dir.join("wal.jsonl"), format!("{pending}\n{{\"torn")).unwrap();
}

#[test]
fn what_an_earlier_version_left_is_moved_in_once() {
    let dir = tempfile::tempdir().unwrap();
    write_old_store(dir.path());
    let copy = tempfile::tempdir().unwrap();
    write_old_store(copy.path());
    let store = LogIndex::open(dir.path()).unwrap();
    let expected = ["written by an earlier version", "also written before", "in the old log"];
    assert_eq!(lines(&store, &all(&[])), expected);
    assert!(!dir.path().join("partitions").exists() && !dir.path().join("wal.jsonl").exists());
    drop(store);
    // A migration cut short before the old files went: running it again adds nothing.
    std::fs::rename(copy.path().join("partitions"), dir.path().join("partitions")).unwrap();
    std::fs::rename(copy.path().join("wal.jsonl"), dir.path().join("wal.jsonl")).unwrap();
    let store = LogIndex::open(dir.path()).unwrap();
    assert_eq!(lines(&store, &all(&[])), expected);
    assert_eq!(lines(&store, &all(&["earlier"])), ["written by an earlier version"], "and the index finds them");
}

#[test]
fn a_scan_visits_what_select_returns() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());
    store.flush().unwrap();
    let query = LogQuery {
        matchers: vec![Matcher::new(MatchOp::Equal, "app", "api").unwrap()],
        contains: vec!["0".into()],
        limit: Some(1),
        ..all(&[])
    };
    let mut scanned = Vec::new();
    let parts = store.scan(&query).unwrap();
    assert_eq!(parts.len(), 1, "one chunk (no head holds a record)");
    for part in parts {
        part.read(&mut |record| scanned.push(record.line)).unwrap();
    }
    scanned.sort();
    let mut selected = lines(&store, &LogQuery { limit: None, ..query.clone() });
    selected.sort();
    assert_eq!(scanned, selected, "a scan ignores the limit");
    assert_eq!(scanned.len(), 2, "{scanned:?}");
}

#[test]
fn a_limited_select_reads_chunks_in_time_order_and_returns_what_a_full_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions { chunk_bytes: 64, ..LogOptions::default() };
    let store = LogIndex::open_with(dir.path(), options).unwrap();
    // Three streams whose chunks overlap in time, sealed a few records at a time; some left in heads.
    let mut ts = 0;
    for round in 0..12 {
        let batch: Vec<LogRecord> = (0..9)
            .map(|i| {
                ts += [5, -3, 7][i % 3];
                record(ts, ["a", "b", "c"][i % 3], &format!("round {round} record {i} padding the line"))
            })
            .collect();
        store.append(&batch).unwrap();
        if round < 10 {
            store.commit().unwrap();
        }
    }
    for backward in [false, true] {
        let everything = store.select(&LogQuery { backward, ..all(&[]) }).unwrap();
        for limit in [0, 1, 5, 40, 200] {
            let limited = store.select(&LogQuery { backward, limit: Some(limit), ..all(&[]) }).unwrap();
            let expected: Vec<_> = everything.iter().take(limit).cloned().collect();
            assert_eq!(limited, expected, "limit {limit}, backward {backward}");
        }
    }
}

#[test]
fn a_damaged_chunk_is_skipped_and_the_others_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());
    store.flush().unwrap();
    let chunks = std::fs::read_dir(dir.path().join(PARTITIONS_DIR)).unwrap().next().unwrap().unwrap().path();
    let path = chunks.join("chunks.dat");
    let original = std::fs::read(&path).unwrap();
    // Two chunks (streams api and web): the first's body damaged, then its length.
    let first_len = u32::from_le_bytes(original[..4].try_into().unwrap()) as usize + 8;
    assert!(first_len < original.len(), "a second chunk follows");
    let mut body = original.clone();
    body[first_len - 3] ^= 0xff;
    let mut length = original.clone();
    length[2] = 0x7f;
    // No line of the api stream holds "web".
    let (lost, kept) = match original[..first_len].windows(3).any(|w| w == b"web") {
        true => ("web", 3),
        false => ("api", 1),
    };
    for damaged in [body, length] {
        std::fs::write(&path, &damaged).unwrap();
        let store = LogIndex::open(dir.path()).unwrap();
        let found = store.select(&all(&[])).unwrap();
        assert_eq!(found.len(), kept, "{found:?}");
        assert!(found.iter().all(|r| r.labels["app"] != lost));
    }
}

/// Forty-odd kilobytes of records in batch `n`.
fn big_batch(n: usize) -> Vec<LogRecord> {
    (0..20).map(|i| record((n * 20 + i) as i64, "api", &format!("batch {n} record {i} {}", "x".repeat(400)))).collect()
}

/// Sets the file-size limit (standing in for a full disk: a write past it fails with EFBIG).
fn limit_file_size(bytes: u64) -> std::io::Result<()> {
    // SAFETY: plain system calls on a local struct; both are async-signal-safe.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit { rlim_cur: bytes, rlim_max: libc::RLIM_INFINITY };
        match libc::setrlimit(libc::RLIMIT_FSIZE, &limit) {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    }
}

const CHILD_DIR: &str = "VIGIL_TEST_CHILD_DIR";

/// Runs the test `name` again in a child process (which sees [`CHILD_DIR`] and does its part there, where
/// a file-size limit touches no other test), then reopens the store it left.
fn in_child(name: &str, dir: &Path) {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture"])
        .env(CHILD_DIR, dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
}

/// The batches the store holds, by the lines of their first records.
fn batches(store: &LogIndex) -> Vec<String> {
    lines(store, &all(&["record 0 "])).iter().map(|l| l[..l.find(" record").unwrap()].to_owned()).collect()
}

#[test]
fn a_full_disk_fails_the_append_and_loses_nothing_acknowledged() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        // Appends until the disk is full, makes room, appends once more, and stops as a crash would.
        let store = LogIndex::open(Path::new(&dir)).unwrap();
        limit_file_size(64 * 1024).unwrap();
        let mut acknowledged = 0;
        while store.append(&big_batch(acknowledged)).is_ok() {
            acknowledged += 1;
            assert!(acknowledged < 1000, "the limit never failed an append");
        }
        limit_file_size(libc::RLIM_INFINITY).unwrap();
        store.append(&big_batch(acknowledged + 1)).expect("with room again, appends succeed");
        std::fs::write(Path::new(&dir).join("acknowledged"), acknowledged.to_string()).unwrap();
        std::process::exit(0);
    }
    let dir = tempfile::tempdir().unwrap();
    in_child("logs::tests::a_full_disk_fails_the_append_and_loses_nothing_acknowledged", dir.path());
    let acknowledged: usize = std::fs::read_to_string(dir.path().join("acknowledged")).unwrap().parse().unwrap();
    assert!(acknowledged > 0);
    let store = LogIndex::open(dir.path()).unwrap();
    let mut expected: Vec<String> = (0..acknowledged).map(|n| format!("batch {n}")).collect();
    expected.push(format!("batch {}", acknowledged + 1));
    assert_eq!(batches(&store), expected, "every acknowledged batch, not the failed one, and the one after");
    assert_eq!(lines(&store, &all(&[])).len(), (acknowledged + 1) * 20);
}

#[test]
fn a_full_disk_fails_the_commit_and_the_records_stay_readable() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        let store = LogIndex::open(Path::new(&dir)).unwrap();
        store.append(&big_batch(0)).unwrap();
        store.flush().unwrap();
        store.append(&big_batch(1)).unwrap();
        store.append(&big_batch(2)).unwrap();
        // No file may grow: the chunk cannot be written.
        limit_file_size(1).unwrap();
        assert!(store.flush().is_err(), "sealing into a full disk fails");
        assert_eq!(batches(&store), ["batch 0", "batch 1", "batch 2"], "held records are still read");
        limit_file_size(libc::RLIM_INFINITY).unwrap();
        store.commit().unwrap();
        assert_eq!(batches(&store), ["batch 0", "batch 1", "batch 2"]);
        store.flush().unwrap();
        std::process::exit(0);
    }
    let dir = tempfile::tempdir().unwrap();
    in_child("logs::tests::a_full_disk_fails_the_commit_and_the_records_stay_readable", dir.path());
    let store = LogIndex::open(dir.path()).unwrap();
    assert_eq!(batches(&store), ["batch 0", "batch 1", "batch 2"]);
    let state = store.state.lock();
    assert!(state.heads.is_empty() && state.sealing.is_empty(), "all sealed into chunks before the child stopped");
}

#[test]
fn queries_see_each_record_once_while_commits_seal_heads_and_rewrite_the_log() {
    let dir = tempfile::tempdir().unwrap();
    // Small chunks and a small log: commits seal and rewrite the log all the time.
    let options = LogOptions { chunk_bytes: 512, wal_rewrite_bytes: 4096, ..LogOptions::default() };
    let store = LogIndex::open_with(dir.path(), options.clone()).unwrap();
    let appended = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    let ordering = std::sync::atomic::Ordering::SeqCst;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for round in 0..300 {
                let batch: Vec<LogRecord> = (0..10)
                    .map(|i| record(round * 10 + i, ["a", "b", "c"][i as usize % 3], &format!("line {round}-{i}")))
                    .collect();
                store.append(&batch).unwrap();
                appended.fetch_add(batch.len(), ordering);
            }
            done.store(true, ordering);
        });
        scope.spawn(|| {
            while !done.load(ordering) {
                store.commit().unwrap();
            }
        });
        let mut queries = 0;
        while !done.load(ordering) || queries == 0 {
            let before = appended.load(ordering);
            let found = lines(&store, &all(&[]));
            let after = appended.load(ordering);
            let distinct: std::collections::HashSet<&String> = found.iter().collect();
            assert_eq!(distinct.len(), found.len(), "a record seen twice");
            assert!(before <= found.len() && found.len() <= after + 10, "{before} <= {} <= {after} + 10", found.len());
            queries += 1;
        }
    });
    // Reopened as after a crash: the chunks and the log hold every record once.
    drop(store);
    let store = LogIndex::open_with(dir.path(), options).unwrap();
    let found = lines(&store, &all(&[]));
    assert_eq!(found.iter().collect::<std::collections::HashSet<_>>().len(), 3000);
    assert_eq!(found.len(), 3000);
}

#[test]
fn a_full_head_is_sealed_at_once_by_the_commit_loop() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions { chunk_bytes: 1024, ..LogOptions::default() };
    let store = Arc::new(LogIndex::open_with(dir.path(), options).unwrap());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let committer = {
        let (store, stop) = (store.clone(), stop.clone());
        // An interval far longer than the test: only the head filling up wakes the loop.
        std::thread::spawn(move || {
            store.commit_loop(Duration::from_secs(600), move || stop.load(std::sync::atomic::Ordering::Acquire))
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    store.append(&[record(1, "api", &"x".repeat(2000)), record(2, "web", "small")]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while store.size_bytes() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(store.size_bytes() > 0, "the full head was sealed without waiting for the interval");
    assert_eq!(store.state.lock().heads.values().map(HashMap::len).sum::<usize>(), 1, "the small head waits");
    assert_eq!(lines(&store, &all(&[])).len(), 2);
    stop.store(true, std::sync::atomic::Ordering::Release);
    {
        let _state = store.state.lock();
        store.wake_sealer.notify_all();
    }
    committer.join().unwrap();
    assert!(store.state.lock().heads.is_empty(), "the loop seals every head as it stops");
}
