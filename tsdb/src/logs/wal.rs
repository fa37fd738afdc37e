//! The log store's write-ahead log (`wal.bin`): every acknowledged batch, framed and checksummed, until
//! its records are in committed chunks.
//!
//! ```text
//! frame: u32 length of the payload | u32 crc32 of the payload | payload:
//!   u64 sequence | uvarint count | records (varint ts, labels, line, metadata, position)
//! ```
//!
//! A frame's sequence number orders it against the chunks: a partition's commit records, per stream, the
//! highest sequence its chunks hold, and replay skips what they hold.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::chunk::{pairs, put_bytes, put_pairs, text};
use super::{LogRecord, SourcePosition};
use crate::Error;
use crate::varint::{put_uvarint, put_varint, uvarint, varint};

/// One record as it goes into a frame, borrowed.
pub(super) struct WalRecord<'a> {
    pub ts_ns: i64,
    pub labels: &'a BTreeMap<String, String>,
    pub line: &'a str,
    pub metadata: &'a BTreeMap<String, String>,
    pub position: Option<SourcePosition>,
}

impl<'a> From<&'a LogRecord> for WalRecord<'a> {
    fn from(record: &'a LogRecord) -> Self {
        WalRecord {
            ts_ns: record.ts_ns,
            labels: &record.labels,
            line: &record.line,
            metadata: &record.metadata,
            position: record.position,
        }
    }
}

/// The open log.
pub(super) struct Wal {
    path: PathBuf,
    file: File,
    len: u64,
}

/// A frame read back: its sequence number and records.
pub(super) type Frame = (u64, Vec<LogRecord>);

impl Wal {
    /// Opens the log at `path`, returning the frames it holds. A torn or damaged frame ends the replay
    /// (what follows it cannot be framed reliably); the file is cut there so new frames follow good ones.
    pub(super) fn open(path: &Path) -> Result<(Wal, Vec<Frame>), Error> {
        let data = match std::fs::read(path) {
            Ok(data) => data,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(Error::io(path, error)),
        };
        let (frames, good) = read_frames(&data);
        if good < data.len() {
            tracing::warn!(path = %path.display(), dropped_bytes = data.len() - good, "torn or damaged log wal tail cut");
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        file.set_len(good as u64).map_err(|e| Error::io(path, e))?;
        let mut wal = Wal { path: path.to_owned(), file, len: good as u64 };
        wal.seek_end()?;
        Ok((wal, frames))
    }

    fn seek_end(&mut self) -> Result<(), Error> {
        use std::io::Seek;
        self.file.seek(std::io::SeekFrom::Start(self.len)).map_err(|e| Error::io(&self.path, e))?;
        Ok(())
    }

    /// Appends a frame and syncs it: once this returns, the records survive a crash. On failure (a full
    /// disk) nothing of the frame remains, so the next frame does not follow a torn one, which would end
    /// a replay before it.
    pub(super) fn append<'a>(
        &mut self,
        seq: u64,
        records: impl ExactSizeIterator<Item = WalRecord<'a>>,
    ) -> Result<(), Error> {
        let frame = frame(seq, records);
        if let Err(error) = self.file.write_all(&frame).and_then(|()| self.file.sync_data()) {
            let _ = self.file.set_len(self.len);
            let _ = self.seek_end();
            return Err(Error::io(&self.path, error));
        }
        self.len += frame.len() as u64;
        Ok(())
    }

    /// Bytes in the log.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Where the log is.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the log by `frames` (through a synced temporary file renamed over it).
    pub(super) fn rewrite(&mut self, frames: Vec<Vec<u8>>) -> Result<(), Error> {
        let replacement = Replacement::write(&self.path, frames, self.len)?;
        self.replace(replacement)
    }

    /// Replaces the log by `replacement`, whose frames stand for the first `replacement.from` bytes of
    /// the log, followed by what was appended since.
    pub(super) fn replace(&mut self, mut replacement: Replacement) -> Result<(), Error> {
        let temporary = replacement.path.clone();
        let mut tail = vec![0u8; (self.len - replacement.from) as usize];
        // The frames are synced already; only a tail appended meanwhile needs writing and syncing.
        if !tail.is_empty() {
            std::os::unix::fs::FileExt::read_exact_at(&self.file, &mut tail, replacement.from)
                .map_err(|e| Error::io(&self.path, e))?;
            replacement.file.write_all(&tail).map_err(|e| Error::io(&temporary, e))?;
            replacement.file.sync_data().map_err(|e| Error::io(&temporary, e))?;
        }
        let len = replacement.len + tail.len() as u64;
        std::fs::rename(&temporary, &self.path).map_err(|e| Error::io(&self.path, e))?;
        // The renamed file is the log from here on, whatever happens next.
        self.file = replacement.file;
        self.len = len;
        self.seek_end()?;
        match self.path.parent() {
            Some(dir) => File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e)),
            None => Ok(()),
        }
    }
}

/// A shorter log being written beside the log (to `wal.tmp`), without the store's lock: frames that stand
/// for the log's first `from` bytes. [`Wal::replace`] adds what was appended meanwhile and swaps it in.
pub(super) struct Replacement {
    path: PathBuf,
    file: File,
    len: u64,
    /// The length of the log the frames stand for.
    from: u64,
}

impl Replacement {
    /// Writes and syncs `frames`, which stand for the first `from` bytes of the log at `log_path`.
    pub(super) fn write(log_path: &Path, frames: Vec<Vec<u8>>, from: u64) -> Result<Replacement, Error> {
        let path = log_path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let mut len = 0;
        for frame in &frames {
            file.write_all(frame).map_err(|e| Error::io(&path, e))?;
            len += frame.len() as u64;
        }
        file.sync_data().map_err(|e| Error::io(&path, e))?;
        Ok(Replacement { path, file, len, from })
    }
}

/// A frame's bytes.
pub(super) fn frame<'a>(seq: u64, records: impl ExactSizeIterator<Item = WalRecord<'a>>) -> Vec<u8> {
    let mut payload = Vec::with_capacity(4096);
    payload.extend_from_slice(&seq.to_le_bytes());
    put_uvarint(&mut payload, records.len() as u64);
    for record in records {
        put_varint(&mut payload, record.ts_ns);
        put_pairs(&mut payload, record.labels);
        put_bytes(&mut payload, record.line.as_bytes());
        put_pairs(&mut payload, record.metadata);
        match record.position {
            None => payload.push(0),
            Some(position) => {
                payload.push(1);
                payload.extend_from_slice(&position.source.to_le_bytes());
                put_uvarint(&mut payload, position.offset);
            }
        }
    }
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// The frames of `data` up to the first torn or damaged one, and the bytes they take.
fn read_frames(data: &[u8]) -> (Vec<Frame>, usize) {
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some(header) = data.get(at..at + 8) {
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        let Some(payload) = data.get(at + 8..at + 8 + len) else { break };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Some(frame) = decode_payload(payload) else { break };
        frames.push(frame);
        at += 8 + len;
    }
    (frames, at)
}

fn decode_payload(payload: &[u8]) -> Option<Frame> {
    let seq = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let mut pos = 8;
    let count = uvarint(payload, &mut pos)? as usize;
    let mut records = Vec::with_capacity(count.min(payload.len()));
    for _ in 0..count {
        let ts_ns = varint(payload, &mut pos)?;
        let labels = pairs(payload, &mut pos)?;
        let line = text(payload, &mut pos)?.to_owned();
        let metadata = pairs(payload, &mut pos)?;
        let position = match *payload.get(pos)? {
            0 => {
                pos += 1;
                None
            }
            _ => {
                let source = u64::from_le_bytes(payload.get(pos + 1..pos + 9)?.try_into().ok()?);
                pos += 9;
                Some(SourcePosition { source, offset: uvarint(payload, &mut pos)? })
            }
        };
        records.push(LogRecord { ts_ns, labels, line, metadata, position });
    }
    Some((seq, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ts_ns: i64, line: &str, position: Option<SourcePosition>) -> LogRecord {
        LogRecord {
            ts_ns,
            labels: BTreeMap::from([("app".to_owned(), "api".to_owned())]),
            line: line.to_owned(),
            metadata: BTreeMap::from([("level".to_owned(), "info".to_owned())]),
            position,
        }
    }

    #[test]
    fn frames_come_back_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.bin");
        let first = [record(1, "one", None), record(-2, "two ✓", Some(SourcePosition { source: 7, offset: 99 }))];
        {
            let (mut wal, frames) = Wal::open(&path).unwrap();
            assert!(frames.is_empty());
            wal.append(3, first.iter().map(WalRecord::from)).unwrap();
            wal.append(4, [record(5, "three", None)].iter().map(WalRecord::from)).unwrap();
        }
        // A crash mid-append leaves half a frame.
        let whole = std::fs::metadata(&path).unwrap().len();
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&frame(5, [record(6, "torn", None)].iter().map(WalRecord::from))[..20]).unwrap();
        drop(file);
        let (mut wal, frames) = Wal::open(&path).unwrap();
        assert_eq!(frames, vec![(3, first.to_vec()), (4, vec![record(5, "three", None)])]);
        assert_eq!(wal.len(), whole, "the torn frame is cut");
        wal.append(6, [record(7, "after", None)].iter().map(WalRecord::from)).unwrap();
        wal.rewrite(vec![frame(4, [record(5, "three", None)].iter().map(WalRecord::from))]).unwrap();
        drop(wal);
        let (_, frames) = Wal::open(&path).unwrap();
        assert_eq!(frames, vec![(4, vec![record(5, "three", None)])]);
    }

    #[test]
    fn a_replacement_keeps_what_was_appended_while_it_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.bin");
        let (mut wal, _) = Wal::open(&path).unwrap();
        wal.append(1, [record(1, "flushed", None)].iter().map(WalRecord::from)).unwrap();
        wal.append(2, [record(2, "held", None)].iter().map(WalRecord::from)).unwrap();
        // The frames of what is still held stand for the log so far; appends go on meanwhile.
        let held = frame(2, [record(2, "held", None)].iter().map(WalRecord::from));
        let replacement = Replacement::write(&path, vec![held], wal.len()).unwrap();
        wal.append(3, [record(3, "meanwhile", None)].iter().map(WalRecord::from)).unwrap();
        wal.replace(replacement).unwrap();
        wal.append(4, [record(4, "after", None)].iter().map(WalRecord::from)).unwrap();
        drop(wal);
        let (_, frames) = Wal::open(&path).unwrap();
        let lines: Vec<(u64, &str)> = frames.iter().map(|(seq, records)| (*seq, records[0].line.as_str())).collect();
        assert_eq!(lines, [(2, "held"), (3, "meanwhile"), (4, "after")]);
    }
}
