//! Replay detection: a shipper that reads files (the node agent) may send a record again after a crash, so
//! its records carry their [`SourcePosition`]. Per stream and source file, the store keeps the offset past
//! the last record it took; a record below it is one it already has. Files are read in order, so one
//! offset per file is exact.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{LogRecord, SourcePosition};
use crate::Error;

type Stream = BTreeMap<String, String>;

/// The first offset not yet taken, per stream and source file, with the time of the last record taken.
#[derive(Debug, Default)]
pub(super) struct Replays {
    next: HashMap<Stream, HashMap<u64, Mark>>,
    changed: bool,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Mark {
    next_offset: u64,
    last_ns: i64,
}

/// One entry of the saved file.
#[derive(Serialize, Deserialize)]
struct SavedMark {
    labels: Stream,
    source: u64,
    next_offset: u64,
    last_ns: i64,
}

/// What a batch would move: (stream, source) to its new mark.
pub(super) type Advance<'a> = HashMap<(&'a Stream, u64), Mark>;

impl Replays {
    /// The marks saved in `path` (none if it is missing or unreadable, which is logged).
    pub(super) fn read(path: &Path) -> Self {
        let mut replays = Replays::default();
        let Ok(bytes) = std::fs::read(path) else { return replays };
        match serde_json::from_slice::<Vec<SavedMark>>(&bytes) {
            Ok(saved) => {
                for mark in saved {
                    let value = Mark { next_offset: mark.next_offset, last_ns: mark.last_ns };
                    replays.next.entry(mark.labels).or_default().insert(mark.source, value);
                }
            }
            Err(error) => tracing::warn!(%error, path = %path.display(), "unreadable replay marks ignored"),
        }
        replays
    }

    /// Which of `records` are new (`true`) rather than replays, and how the marks move if they are stored.
    /// Records without a position are always new.
    pub(super) fn sift<'a>(&self, records: &'a [LogRecord]) -> (Vec<bool>, Advance<'a>) {
        let mut advance: Advance<'a> = HashMap::new();
        let keep = records
            .iter()
            .map(|record| {
                let Some(SourcePosition { source, offset }) = record.position else { return true };
                let key = (&record.labels, source);
                let next = advance.get(&key).or_else(|| self.get(&record.labels, source)).map_or(0, |m| m.next_offset);
                if offset < next {
                    return false;
                }
                advance.insert(key, Mark { next_offset: offset + 1, last_ns: record.ts_ns });
                true
            })
            .collect();
        (keep, advance)
    }

    fn get(&self, stream: &Stream, source: u64) -> Option<&Mark> {
        self.next.get(stream)?.get(&source)
    }

    /// Moves the marks once the batch [`Replays::sift`] looked at is stored.
    pub(super) fn apply(&mut self, advance: Advance<'_>) {
        for ((stream, source), mark) in advance {
            self.changed = true;
            match self.next.get_mut(stream) {
                Some(sources) => {
                    sources.insert(source, mark);
                }
                None => {
                    self.next.insert(stream.clone(), HashMap::from([(source, mark)]));
                }
            }
        }
    }

    /// Moves the marks past positioned records known to be stored (those a write-ahead log replay puts
    /// back), never backwards.
    pub(super) fn note(&mut self, records: &[LogRecord]) {
        for record in records {
            let Some(SourcePosition { source, offset }) = record.position else { continue };
            let sources = self.next.entry(record.labels.clone()).or_default();
            let mark = sources.entry(source).or_insert(Mark { next_offset: 0, last_ns: record.ts_ns });
            if offset + 1 > mark.next_offset {
                *mark = Mark { next_offset: offset + 1, last_ns: record.ts_ns };
                self.changed = true;
            }
        }
    }

    /// Forgets files whose last record is older than `cutoff_ns`: a shipper does not replay that far back.
    pub(super) fn forget_before(&mut self, cutoff_ns: i64) {
        for sources in self.next.values_mut() {
            let before = sources.len();
            sources.retain(|_, mark| mark.last_ns >= cutoff_ns);
            self.changed |= sources.len() != before;
        }
        self.next.retain(|_, sources| !sources.is_empty());
    }

    /// Writes the marks to `path` (through a temporary file) if they changed since the last save.
    pub(super) fn save(&mut self, path: &Path) -> Result<(), Error> {
        if !self.changed {
            return Ok(());
        }
        let saved: Vec<SavedMark> = self
            .next
            .iter()
            .flat_map(|(labels, sources)| {
                sources.iter().map(|(source, mark)| SavedMark {
                    labels: labels.clone(),
                    source: *source,
                    next_offset: mark.next_offset,
                    last_ns: mark.last_ns,
                })
            })
            .collect();
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, serde_json::to_vec(&saved).expect("marks serialize"))
            .map_err(|e| Error::io(&temporary, e))?;
        std::fs::rename(&temporary, path).map_err(|e| Error::io(path, e))?;
        self.changed = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pod: &str, source: u64, offset: u64) -> LogRecord {
        LogRecord {
            ts_ns: offset as i64,
            labels: BTreeMap::from([("pod".to_owned(), pod.to_owned())]),
            line: format!("line at {offset}"),
            metadata: BTreeMap::new(),
            position: Some(SourcePosition { source, offset }),
        }
    }

    #[test]
    fn replays_are_recognised_per_stream_and_file_across_saves() {
        let mut replays = Replays::default();
        let first = [record("a", 1, 0), record("a", 1, 10), record("b", 1, 0)];
        let (keep, advance) = replays.sift(&first);
        assert_eq!(keep, [true, true, true]);
        replays.apply(advance);
        let again = [record("a", 1, 10), record("a", 1, 20), record("a", 1, 20), record("a", 2, 0)];
        let (keep, advance) = replays.sift(&again);
        assert_eq!(keep, [false, true, false, true], "below the mark, or repeated within the batch");
        replays.apply(advance);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("marks.json");
        replays.save(&path).unwrap();
        let mut reopened = Replays::read(&path);
        assert_eq!(reopened.sift(&[record("a", 1, 20), record("a", 1, 21)]).0, [false, true]);
        reopened.forget_before(15);
        assert_eq!(reopened.sift(&[record("a", 1, 20), record("b", 1, 0)]).0, [false, true], "b's file was forgotten");
        let unpositioned = LogRecord { position: None, ..record("a", 1, 0) };
        assert_eq!(reopened.sift(&[unpositioned.clone(), unpositioned]).0, [true, true]);
    }
}
