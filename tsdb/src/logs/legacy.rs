//! Moving in what earlier versions of the store left: `wal.jsonl` (a JSON record per line) and
//! `partitions/<start>/` (tantivy indexes with a stored JSON record per document). Their records are
//! appended to the current store and sealed, then the old files are removed.
//!
//! Each moved record carries a position in a made-up source (one per old file), so a migration cut short
//! by a crash and run again drops what it already moved, as replays.

use std::path::Path;

use tantivy::schema::Value;
use tantivy::{Index, TantivyDocument};

use super::chunk::stable_hash;
use super::partition::tantivy_error;
use super::{LogIndex, LogRecord, LogStore, SourcePosition};
use crate::Error;

const OLD_WAL: &str = "wal.jsonl";
const OLD_PARTITIONS: &str = "partitions";
const BATCH: usize = 10_000;

/// Moves the old files under `dir` into `store`, if there are any.
pub(super) fn migrate(store: &LogIndex, dir: &Path) -> Result<(), Error> {
    let old_wal = dir.join(OLD_WAL);
    let old_partitions = dir.join(OLD_PARTITIONS);
    if !old_wal.exists() && !old_partitions.exists() {
        return Ok(());
    }
    let mut moved = 0;
    let mut batch = Batch { store, records: Vec::new(), source: 0, offset: 0, moved: &mut moved };
    if let Ok(text) = std::fs::read_to_string(&old_wal) {
        batch.start_source(&old_wal);
        for line in text.lines() {
            // A torn last line (a crash mid-write) is skipped, as the old replay did.
            if let Ok(record) = serde_json::from_str::<LogRecord>(line) {
                batch.push(record)?;
            }
        }
    }
    if old_partitions.is_dir() {
        for entry in std::fs::read_dir(&old_partitions).map_err(|e| Error::io(&old_partitions, e))? {
            let path = entry.map_err(|e| Error::io(&old_partitions, e))?.path();
            batch.start_source(&path);
            for_each_record(&path, &mut |record| batch.push(record))?;
        }
    }
    batch.finish()?;
    store.flush()?;
    if old_wal.exists() {
        std::fs::remove_file(&old_wal).map_err(|e| Error::io(&old_wal, e))?;
    }
    if old_partitions.exists() {
        std::fs::remove_dir_all(&old_partitions).map_err(|e| Error::io(&old_partitions, e))?;
    }
    tracing::info!(records = moved, "log records of an earlier store version moved in");
    Ok(())
}

struct Batch<'a> {
    store: &'a LogIndex,
    records: Vec<LogRecord>,
    source: u64,
    offset: u64,
    moved: &'a mut usize,
}

impl Batch<'_> {
    fn start_source(&mut self, path: &Path) {
        self.source = stable_hash(format!("legacy:{}", path.display()).as_bytes());
        self.offset = 0;
    }

    fn push(&mut self, mut record: LogRecord) -> Result<(), Error> {
        record.position = Some(SourcePosition { source: self.source, offset: self.offset });
        self.offset += 1;
        self.records.push(record);
        if self.records.len() >= BATCH {
            self.finish()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), Error> {
        *self.moved += self.records.len();
        self.store.append(&std::mem::take(&mut self.records))
    }
}

/// Hands every stored record of an old partition to `visit`, in document order.
fn for_each_record(path: &Path, visit: &mut dyn FnMut(LogRecord) -> Result<(), Error>) -> Result<(), Error> {
    let index = Index::open_in_dir(path).map_err(|e| tantivy_error(path, e))?;
    let field = index.schema().get_field("record").map_err(|e| tantivy_error(path, e))?;
    let reader = index.reader().map_err(|e| tantivy_error(path, e))?;
    let searcher = reader.searcher();
    for segment in searcher.segment_readers() {
        let documents = segment.get_store_reader(1).map_err(|e| tantivy_error(path, e))?;
        for doc in documents.iter::<TantivyDocument>(segment.alive_bitset()) {
            let doc = doc.map_err(|e| tantivy_error(path, e))?;
            let Some(json) = doc.get_first(field).and_then(|v| v.as_str()) else { continue };
            match serde_json::from_str::<LogRecord>(json) {
                Ok(record) => visit(record)?,
                Err(error) => tracing::warn!(%error, "unreadable old log record skipped"),
            }
        }
    }
    Ok(())
}
