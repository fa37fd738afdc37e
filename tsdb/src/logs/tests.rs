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

#[test]
fn records_are_searchable_after_commit_with_exact_substring_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());
    assert!(lines(&store, &all(&[])).is_empty(), "not searchable before the commit");
    store.commit().unwrap();
    assert_eq!(lines(&store, &all(&[])).len(), 4);
    assert_eq!(lines(&store, &all(&["timeout"])), ["POST /api/v1/orders 500 connection timeout from 10.0.0.7"]);
    assert_eq!(lines(&store, &all(&["imeou"])).len(), 2, "a substring inside tokens: both timeouts");
}

#[test]
fn edges_of_a_filter_may_be_parts_of_longer_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());
    store.commit().unwrap();
    assert_eq!(lines(&store, &all(&["v1/us"])), ["GET /api/v1/users 200 12ms"]);
    assert_eq!(lines(&store, &all(&["0.0.7"])).len(), 1);
    assert_eq!(lines(&store, &all(&["500 connection"])).len(), 1);
    assert_eq!(lines(&store, &all(&["Timeout"])), ["retrying after Timeout"], "the check is case-sensitive");
    assert!(lines(&store, &all(&["nowhere"])).is_empty());
}

#[test]
fn selectors_ranges_direction_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());
    store.commit().unwrap();
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
    // A torn last line, as a crash mid-append leaves it.
    let mut wal = std::fs::OpenOptions::new().append(true).open(dir.path().join(WAL_FILE)).unwrap();
    wal.write_all(b"{\"ts_ns\":9,\"labels\":{\"app\"").unwrap();
    drop(wal);
    let store = LogIndex::open(dir.path()).unwrap();
    assert_eq!(lines(&store, &all(&[])).len(), 4);
    store.append(&[record(5, "api", "after restart")]).unwrap();
    store.commit().unwrap();
    drop(store);
    let store = LogIndex::open(dir.path()).unwrap();
    assert_eq!(lines(&store, &all(&[])).len(), 5, "committed records are not replayed twice");
}

#[test]
fn retention_drops_whole_partitions_by_age_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let hour = 3_600 * 1_000_000_000i64;
    let options = LogOptions { partition_ns: hour, retention_ns: Some(3 * hour), max_bytes: None };
    let store = LogIndex::open_with(dir.path(), options).unwrap();
    // One record in each of six hourly partitions; a query spanning several reads them all.
    let records: Vec<LogRecord> = (0..6).map(|h| record(h * hour + 1, "api", &format!("hour {h}"))).collect();
    store.append(&records).unwrap();
    store.commit().unwrap();
    assert_eq!(lines(&store, &all(&[])).len(), 6);
    assert_eq!(std::fs::read_dir(dir.path().join("partitions")).unwrap().count(), 6);
    // At 6h, partitions that ended at or before 3h go: hours 0, 1 and 2.
    assert_eq!(store.apply_retention(6 * hour).unwrap(), [0, hour, 2 * hour]);
    assert_eq!(lines(&store, &all(&[])), ["hour 3", "hour 4", "hour 5"]);
    assert_eq!(std::fs::read_dir(dir.path().join("partitions")).unwrap().count(), 3);
    drop(store);

    // A size limit below what the three left take keeps only the newest partition.
    let options = LogOptions { partition_ns: hour, retention_ns: None, max_bytes: Some(1) };
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
    let options = LogOptions { partition_ns: hour, retention_ns: Some(hour), max_bytes: None };
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

#[test]
fn a_partition_written_with_time_indexed_still_opens_and_reads() {
    // The schema of earlier versions: time indexed as well as fast; fields in the same order.
    let dir = tempfile::tempdir().unwrap();
    let partition = dir.path().join("partitions/0");
    std::fs::create_dir_all(&partition).unwrap();
    let mut builder = Schema::builder();
    let ts = builder.add_i64_field("ts", tantivy::schema::INDEXED | FAST);
    let label = builder.add_text_field("label", STRING);
    let line_options = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default().set_tokenizer(TOKENIZER).set_index_option(IndexRecordOption::Basic),
    );
    let line = builder.add_text_field("line", line_options);
    let stored = builder.add_text_field("record", STORED);
    let index = Index::create_in_dir(&partition, builder.build()).unwrap();
    index.tokenizers().register(TOKENIZER, tantivy::tokenizer::TextAnalyzer::from(LogTokenizer));
    let mut writer: IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
    let old = record(5, "api", "written by an earlier version");
    let json = serde_json::to_string(&old).unwrap();
    writer.add_document(document(&Fields { ts, label, line, record: stored }, &old, &json)).unwrap();
    writer.commit().unwrap();
    drop(writer);

    let store = LogIndex::open(dir.path()).unwrap();
    store.append(&[record(7, "api", "written now")]).unwrap();
    store.commit().unwrap();
    assert_eq!(lines(&store, &all(&["written"])), ["written by an earlier version", "written now"]);
}

#[test]
fn a_scan_visits_what_select_returns() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());
    store.commit().unwrap();
    let query = LogQuery {
        matchers: vec![Matcher::new(MatchOp::Equal, "app", "api").unwrap()],
        contains: vec!["0".into()],
        limit: Some(1),
        ..all(&[])
    };
    let mut scanned = Vec::new();
    store.scan(&query, &mut |record| scanned.push(record.line)).unwrap();
    scanned.sort();
    let mut selected = lines(&store, &LogQuery { limit: None, ..query.clone() });
    selected.sort();
    assert_eq!(scanned, selected, "a scan ignores the limit");
    assert_eq!(scanned.len(), 2, "{scanned:?}");
}
