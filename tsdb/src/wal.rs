//! The write-ahead log: checksummed records in numbered segment files.
//!
//! A record is `len: u32 LE | crc32: u32 LE | type: u8 | payload`, where `len` counts the type byte and the
//! payload, and the CRC-32 (IEEE) covers them too.
//! Replay reads segments in order. A record that fails its checksum is skipped by searching for the next
//! valid record; if none follows in the last segment the bad bytes are a torn tail and are truncated,
//! otherwise the corruption is reported with file and offset and replay goes on.
//!
//! A checkpoint `checkpoint.NNNNNNNN` holds, in the same record format, everything still needed from
//! segments up to `NNNNNNNN`; replay reads the newest checkpoint and then only the segments after it.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::Error;

const HEADER_LEN: usize = 9;
/// Records larger than this are refused on write and treated as corrupt on read.
pub const MAX_RECORD_LEN: usize = 64 << 20;

/// When appended records are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalSync {
    /// Before every append is acknowledged; concurrent appends share one fsync (group commit).
    Always,
    /// Every interval in the background: a power loss may lose that much, a killed process nothing.
    Interval(Duration),
    /// Never explicitly; the OS writes back when it likes.
    Never,
}

/// What replay found.
#[derive(Debug, Default)]
pub struct ReplayReport {
    /// Valid records replayed.
    pub records: u64,
    /// Bytes cut from the end of the last segment (a torn write).
    pub truncated_bytes: u64,
    /// Corrupt regions skipped, each naming its file and offset.
    pub corruptions: Vec<Error>,
}

struct Segment {
    index: u32,
    file: Arc<File>,
    len: u64,
}

/// Appends records to the active segment; see the module docs for the format.
pub struct Wal {
    dir: PathBuf,
    segment_size: u64,
    sync: WalSync,
    active: Mutex<Segment>,
    /// Serialises fsyncs so concurrent appenders share one (group commit).
    sync_lock: Mutex<()>,
    written_seq: AtomicU64,
    synced_seq: AtomicU64,
}

fn segment_path(dir: &Path, index: u32) -> PathBuf {
    dir.join(format!("{index:08}"))
}

/// Segment indexes present in `dir`, ascending.
fn list_segments(dir: &Path) -> Result<Vec<u32>, Error> {
    let mut indexes = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if let Some(index) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) {
            indexes.push(index);
        }
    }
    indexes.sort_unstable();
    Ok(indexes)
}

/// Checks the record at `pos`; returns its type, payload and the offset after it.
fn parse_record(data: &[u8], pos: usize) -> Result<(u8, &[u8], usize), &'static str> {
    let header = data.get(pos..pos + HEADER_LEN).ok_or("truncated record header")?;
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if len == 0 || len > MAX_RECORD_LEN {
        return Err("invalid record length");
    }
    let body = data.get(pos + 8..pos + 8 + len).ok_or("truncated record")?;
    if crc32fast::hash(body) != crc {
        return Err("checksum mismatch");
    }
    Ok((body[0], &body[1..], pos + 8 + len))
}

fn next_valid_record(data: &[u8], from: usize) -> Option<usize> {
    (from..data.len().saturating_sub(HEADER_LEN - 1)).find(|pos| parse_record(data, *pos).is_ok())
}

/// Encodes one record's framing around `payload`.
pub fn frame(record_type: u8, payload: &[u8], out: &mut Vec<u8>) {
    let len = (payload.len() + 1) as u32;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[record_type]);
    hasher.update(payload);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.push(record_type);
    out.extend_from_slice(payload);
}

const CHECKPOINT_PREFIX: &str = "checkpoint.";

/// The newest complete checkpoint: the last segment index it covers.
fn latest_checkpoint(dir: &Path) -> Result<Option<u32>, Error> {
    let mut latest = None;
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(index) =
            name.to_str().and_then(|n| n.strip_prefix(CHECKPOINT_PREFIX)).and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        latest = latest.max(Some(index));
    }
    Ok(latest)
}

fn checkpoint_path(dir: &Path, upto: u32) -> PathBuf {
    dir.join(format!("{CHECKPOINT_PREFIX}{upto:08}"))
}

/// Writes a checkpoint standing for segments up to `upto`, then deletes those segments and older checkpoints.
pub fn write_checkpoint(dir: &Path, upto: u32, framed: &[u8]) -> Result<(), Error> {
    let path = checkpoint_path(dir, upto);
    let tmp = dir.join(format!("{CHECKPOINT_PREFIX}{upto:08}.tmp"));
    {
        let mut file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        file.write_all(framed).map_err(|e| Error::io(&tmp, e))?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    }
    fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))?;
    for index in list_segments(dir)?.into_iter().filter(|index| *index <= upto) {
        let segment = segment_path(dir, index);
        fs::remove_file(&segment).map_err(|e| Error::io(&segment, e))?;
    }
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let older = name
            .strip_prefix(CHECKPOINT_PREFIX)
            .is_some_and(|rest| rest.ends_with(".tmp") || rest.parse::<u32>().is_ok_and(|index| index < upto));
        if older {
            fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
        }
    }
    Ok(())
}

/// Replays the newest checkpoint and every later segment under `dir`, in order, through `apply(type, payload)`.
pub fn replay(dir: &Path, mut apply: impl FnMut(u8, &[u8])) -> Result<ReplayReport, Error> {
    let mut report = ReplayReport::default();
    let checkpoint = latest_checkpoint(dir)?;
    let mut files: Vec<PathBuf> = checkpoint.iter().map(|upto| checkpoint_path(dir, *upto)).collect();
    let after = checkpoint.unwrap_or(0);
    files.extend(
        list_segments(dir)?
            .into_iter()
            .filter(|index| checkpoint.is_none() || *index > after)
            .map(|i| segment_path(dir, i)),
    );
    for (position, path) in files.iter().enumerate() {
        let path = path.clone();
        let data = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let is_last = position + 1 == files.len();
        let mut pos = 0;
        while pos < data.len() {
            match parse_record(&data, pos) {
                Ok((record_type, payload, next)) => {
                    apply(record_type, payload);
                    report.records += 1;
                    pos = next;
                }
                Err(reason) => match next_valid_record(&data, pos + 1) {
                    Some(next) => {
                        report.corruptions.push(Error::Corruption {
                            path: path.clone(),
                            offset: pos as u64,
                            reason: format!("{reason}; skipped {} bytes to the next valid record", next - pos),
                        });
                        pos = next;
                    }
                    None if is_last => {
                        let file = OpenOptions::new().write(true).open(&path).map_err(|e| Error::io(&path, e))?;
                        file.set_len(pos as u64).map_err(|e| Error::io(&path, e))?;
                        file.sync_all().map_err(|e| Error::io(&path, e))?;
                        report.truncated_bytes = (data.len() - pos) as u64;
                        break;
                    }
                    None => {
                        report.corruptions.push(Error::Corruption {
                            path: path.clone(),
                            offset: pos as u64,
                            reason: format!(
                                "{reason}; the remaining {} bytes of the segment are unreadable",
                                data.len() - pos
                            ),
                        });
                        break;
                    }
                },
            }
        }
    }
    Ok(report)
}

impl Wal {
    /// Opens the WAL in `dir` for appending to a fresh segment after the existing ones.
    /// Call [`replay`] first: writing starts a new segment and never touches old ones.
    pub fn open(dir: &Path, sync: WalSync, segment_size: u64) -> Result<Arc<Wal>, Error> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let next_index = list_segments(dir)?.last().map_or(1, |last| last + 1);
        let segment = Self::create_segment(dir, next_index)?;
        let wal = Arc::new(Wal {
            dir: dir.to_owned(),
            segment_size,
            sync,
            active: Mutex::new(segment),
            sync_lock: Mutex::new(()),
            written_seq: AtomicU64::new(0),
            synced_seq: AtomicU64::new(0),
        });
        if let WalSync::Interval(every) = sync {
            let weak = Arc::downgrade(&wal);
            std::thread::Builder::new()
                .name("wal-sync".into())
                .spawn(move || {
                    while let Some(wal) = weak.upgrade() {
                        if let Err(error) = wal.sync_to(wal.written_seq.load(Ordering::Acquire)) {
                            tracing::error!(%error, "periodic wal fsync failed");
                        }
                        drop(wal);
                        std::thread::sleep(every);
                    }
                })
                .map_err(|e| Error::io(dir, e))?;
        }
        Ok(wal)
    }

    fn create_segment(dir: &Path, index: u32) -> Result<Segment, Error> {
        let path = segment_path(dir, index);
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
        // Make the new file's directory entry durable too.
        if let Ok(dir_handle) = File::open(dir) {
            let _ = dir_handle.sync_all();
        }
        Ok(Segment { index, file: Arc::new(file), len: 0 })
    }

    /// Writes framed records (see [`frame`]) to the OS, returning a sequence number for [`commit`](Self::commit).
    /// On failure nothing of `framed` remains in the log.
    pub fn write(&self, framed: &[u8]) -> Result<u64, Error> {
        let mut active = self.active.lock();
        if active.len > 0 && active.len + framed.len() as u64 > self.segment_size {
            let path = segment_path(&self.dir, active.index);
            active.file.sync_data().map_err(|e| Error::io(&path, e))?;
            *active = Self::create_segment(&self.dir, active.index + 1)?;
        }
        let path = segment_path(&self.dir, active.index);
        if let Err(error) = (&*active.file).write_all(framed) {
            // Cut off whatever part was written so the next record does not follow garbage.
            let _ = active.file.set_len(active.len);
            return Err(Error::io(path, error));
        }
        active.len += framed.len() as u64;
        Ok(self.written_seq.fetch_add(1, Ordering::AcqRel) + 1)
    }

    /// Syncs the active segment and starts the next one; returns the index of the one just closed.
    /// Every write after this returns lands in the new segment.
    pub fn rotate(&self) -> Result<u32, Error> {
        let mut active = self.active.lock();
        let closed = active.index;
        let path = segment_path(&self.dir, closed);
        active.file.sync_data().map_err(|e| Error::io(&path, e))?;
        *active = Self::create_segment(&self.dir, closed + 1)?;
        Ok(closed)
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes the write numbered `seq` durable according to the sync policy.
    pub fn commit(&self, seq: u64) -> Result<(), Error> {
        match self.sync {
            WalSync::Always => self.sync_to(seq),
            WalSync::Interval(_) | WalSync::Never => Ok(()),
        }
    }

    fn sync_to(&self, seq: u64) -> Result<(), Error> {
        let _guard = self.sync_lock.lock();
        if self.synced_seq.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        let (target, file, index) = {
            let active = self.active.lock();
            (self.written_seq.load(Ordering::Acquire), Arc::clone(&active.file), active.index)
        };
        file.sync_data().map_err(|e| Error::io(segment_path(&self.dir, index), e))?;
        self.synced_seq.store(target, Ordering::Release);
        Ok(())
    }

    /// Forces everything written so far to disk, whatever the policy (used on shutdown).
    pub fn flush(&self) -> Result<(), Error> {
        self.sync_to(self.written_seq.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(dir: &Path) -> (Vec<Vec<u8>>, ReplayReport) {
        let mut seen = Vec::new();
        let report = replay(dir, |_, payload| seen.push(payload.to_vec())).unwrap();
        (seen, report)
    }

    fn write_records(dir: &Path, count: u8) -> Vec<u64> {
        let wal = Wal::open(dir, WalSync::Always, 1 << 20).unwrap();
        let mut ends = Vec::new();
        let mut total = 0u64;
        for i in 0..count {
            let mut framed = Vec::new();
            frame(2, &vec![i; 20 + usize::from(i)], &mut framed);
            total += framed.len() as u64;
            let seq = wal.write(&framed).unwrap();
            wal.commit(seq).unwrap();
            ends.push(total);
        }
        ends
    }

    #[test]
    fn torn_tail_at_every_offset_loses_only_the_last_record() {
        let source = tempfile::tempdir().unwrap();
        let ends = write_records(source.path(), 5);
        let full = fs::read(segment_path(source.path(), 1)).unwrap();
        let last_start = ends[3] as usize;
        for cut in last_start..full.len() {
            let dir = tempfile::tempdir().unwrap();
            fs::write(segment_path(dir.path(), 1), &full[..cut]).unwrap();
            let (seen, report) = records(dir.path());
            assert_eq!(seen.len(), 4, "cut at {cut}");
            assert_eq!(report.truncated_bytes as usize, cut - last_start, "cut at {cut}");
            assert!(report.corruptions.is_empty());
            assert_eq!(fs::metadata(segment_path(dir.path(), 1)).unwrap().len(), ends[3]);
        }
    }

    #[test]
    fn flipped_byte_in_last_record_at_every_offset_loses_only_it() {
        let source = tempfile::tempdir().unwrap();
        let ends = write_records(source.path(), 5);
        let full = fs::read(segment_path(source.path(), 1)).unwrap();
        for offset in ends[3] as usize..full.len() {
            let dir = tempfile::tempdir().unwrap();
            let mut bytes = full.clone();
            bytes[offset] ^= 0x5a;
            fs::write(segment_path(dir.path(), 1), &bytes).unwrap();
            let (seen, _) = records(dir.path());
            assert_eq!(seen.len(), 4, "flip at {offset}");
            assert!(seen.iter().enumerate().all(|(i, payload)| payload[0] == i as u8));
        }
    }

    #[test]
    fn corruption_in_the_middle_is_reported_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let ends = write_records(dir.path(), 5);
        let path = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&path).unwrap();
        let bad_offset = ends[1] as usize + 10;
        bytes[bad_offset] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let (seen, report) = records(dir.path());
        let firsts: Vec<u8> = seen.iter().map(|payload| payload[0]).collect();
        assert_eq!(firsts, [0, 1, 3, 4]);
        assert_eq!(report.corruptions.len(), 1);
        let message = report.corruptions[0].to_string();
        assert!(message.contains("00000001") && message.contains(&format!("offset {}", ends[1])), "{message}");
    }

    #[test]
    fn checkpoints_replace_the_segments_they_cover() {
        let dir = tempfile::tempdir().unwrap();
        write_records(dir.path(), 3);
        let wal = Wal::open(dir.path(), WalSync::Always, 1 << 20).unwrap();
        let closed = wal.rotate().unwrap();
        let mut framed = Vec::new();
        frame(2, &[42], &mut framed);
        write_checkpoint(dir.path(), closed, &framed).unwrap();
        let mut later = Vec::new();
        frame(2, &[43], &mut later);
        wal.write(&later).unwrap();
        wal.flush().unwrap();
        let (seen, _) = records(dir.path());
        assert_eq!(seen, [vec![42], vec![43]]);
        assert_eq!(list_segments(dir.path()).unwrap(), [closed + 1]);
    }

    #[test]
    fn reopening_starts_a_new_segment_and_keeps_order() {
        let dir = tempfile::tempdir().unwrap();
        write_records(dir.path(), 2);
        write_records(dir.path(), 3);
        assert_eq!(list_segments(dir.path()).unwrap(), [1, 2]);
        let (seen, _) = records(dir.path());
        let firsts: Vec<u8> = seen.iter().map(|payload| payload[0]).collect();
        assert_eq!(firsts, [0, 1, 0, 1, 2]);
    }
}
