//! Follows the `*.log` files of a directory: complete new lines since the last read, through rotation
//! and truncation. A file is known by its inode and a fingerprint of its first bytes, so a path that now
//! holds other content (rotated by rename, truncated by copytruncate and written again, or a new file
//! that reused the inode) is read from its start. Before that, the rest of the old file is read: from the
//! sibling that has its inode (renamed), or from a sibling `.gz` whose content starts with its
//! fingerprint (renamed, then compressed). Offsets are checkpointed to a JSON file only after the caller
//! has stored what it read, so a restart neither loses nor repeats lines that were stored.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Most bytes read from one file per poll, so one busy file cannot starve the others.
const MAX_READ: u64 = 4 * 1024 * 1024;

/// How many leading bytes identify a file.
const FINGERPRINT_BYTES: usize = 256;

/// Where a file was read up to, and what it started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    inode: u64,
    offset: u64,
    /// Hash of the first `head_len` bytes (0 when checkpointed before fingerprints were kept).
    #[serde(default)]
    head: u64,
    #[serde(default)]
    head_len: u64,
    /// The file's modification time when read (ns), so an unchanged file is passed over without opening it.
    #[serde(default)]
    mtime_ns: i64,
}

impl Position {
    /// Whether the file now at the path (its `inode` and first bytes `head`) is the file read so far.
    fn same_file(&self, inode: u64, head: &[u8]) -> bool {
        self.inode == inode && self.same_start(head)
    }

    /// Whether content beginning with `head` begins as the file read so far did (always, when no
    /// fingerprint was kept).
    fn same_start(&self, head: &[u8]) -> bool {
        let Ok(len) = usize::try_from(self.head_len) else { return false };
        self.head_len == 0 || head.get(..len).is_some_and(|prefix| fingerprint(prefix) == self.head)
    }
}

/// A 64-bit hash of `bytes` (the first half of their MD5).
fn fingerprint(bytes: &[u8]) -> u64 {
    let digest = md5::compute(bytes);
    u64::from_le_bytes(digest.0[..8].try_into().expect("an MD5 digest has 16 bytes"))
}

/// The first [`FINGERPRINT_BYTES`] of the file at `path` (fewer when it is shorter).
fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(FINGERPRINT_BYTES);
    std::fs::File::open(path)?.take(FINGERPRINT_BYTES as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// New lines of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLines {
    /// The file.
    pub path: PathBuf,
    /// Complete lines, without their newline.
    pub lines: Vec<String>,
}

/// A tailer over one directory.
#[derive(Debug)]
pub struct Tailer {
    dir: PathBuf,
    checkpoint: PathBuf,
    committed: BTreeMap<PathBuf, Position>,
    pending: BTreeMap<PathBuf, Position>,
}

impl Tailer {
    /// A tailer of `dir` keeping its offsets in `checkpoint` (read now if it exists).
    pub fn new(dir: &Path, checkpoint: &Path) -> Self {
        let committed = std::fs::read(checkpoint)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<BTreeMap<PathBuf, Position>>(&bytes).ok())
            .unwrap_or_default();
        Tailer { dir: dir.to_owned(), checkpoint: checkpoint.to_owned(), pending: committed.clone(), committed }
    }

    /// Complete lines written since the last [`Tailer::commit`]ted read. Unreadable files are skipped.
    pub fn poll(&mut self) -> Vec<FileLines> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "log") && p.is_file())
            .collect();
        self.poll_files(paths)
    }

    /// Like [`Tailer::poll`], over files the caller found (pod logs live two directories deep).
    pub fn poll_files(&mut self, mut paths: Vec<PathBuf>) -> Vec<FileLines> {
        let mut out = Vec::new();
        paths.sort();
        for path in paths {
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            let mtime_ns = meta.mtime().saturating_mul(1_000_000_000).saturating_add(meta.mtime_nsec());
            let previous = self.pending.get(&path).copied();
            let unchanged = |p: &Position| p.inode == meta.ino() && p.offset == meta.len() && p.mtime_ns == mtime_ns;
            if previous.as_ref().is_some_and(unchanged) {
                continue;
            }
            let Ok(head) = read_head(&path) else { continue };
            let same = previous.filter(|p| p.same_file(meta.ino(), &head) && p.offset <= meta.len());
            // Another file at the path now: the rest of the old one is read first, wherever it went.
            if let Some(old) = previous.filter(|_| same.is_none()) {
                if let Some(lines) = rest_of_moved(&path, old).filter(|lines| !lines.is_empty()) {
                    out.push(FileLines { path: path.clone(), lines });
                }
            }
            let mut offset = same.map_or(0, |p| p.offset);
            let Ok((lines, consumed)) = read_lines(&path, offset) else { continue };
            offset += consumed;
            let position =
                Position { inode: meta.ino(), offset, head: fingerprint(&head), head_len: head.len() as u64, mtime_ns };
            self.pending.insert(path.clone(), position);
            if !lines.is_empty() {
                out.push(FileLines { path, lines });
            }
        }
        out
    }

    /// Records that what [`Tailer::poll`] returned is stored: the offsets are checkpointed.
    pub fn commit(&mut self) -> std::io::Result<()> {
        if self.pending == self.committed {
            return Ok(());
        }
        let temporary = self.checkpoint.with_extension("tmp");
        std::fs::write(&temporary, serde_json::to_vec(&self.pending).expect("offsets serialize"))?;
        std::fs::rename(&temporary, &self.checkpoint)?;
        self.committed = self.pending.clone();
        Ok(())
    }

    /// Forgets reads since the last commit, so the next poll returns those lines again.
    pub fn rewind(&mut self) {
        self.pending = self.committed.clone();
    }
}

/// The lines of the file once at `path` after `old.offset`: from the sibling with its inode (renamed and
/// still there, same content), else from a sibling `.gz` whose content starts as it did (compressed after
/// the rename). `None` when it is gone (truncated in place, or deleted).
fn rest_of_moved(path: &Path, old: Position) -> Option<Vec<String>> {
    let entries = std::fs::read_dir(path.parent()?).ok()?;
    let siblings: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p != path).collect();
    let renamed = siblings.iter().find(|p| {
        let same_inode = std::fs::metadata(p).is_ok_and(|m| m.ino() == old.inode);
        same_inode && read_head(p).is_ok_and(|head| old.same_start(&head))
    });
    if let Some(renamed) = renamed {
        return read_lines(renamed, old.offset).ok().map(|(lines, _)| lines);
    }
    if old.head_len == 0 {
        return None;
    }
    siblings.iter().filter(|p| p.extension().is_some_and(|e| e == "gz")).find_map(|gz| {
        let content = gunzip_if(gz, |head| old.same_start(head))?;
        Some(complete_lines(content.get(usize::try_from(old.offset).ok()?..)?).0)
    })
}

/// The decompressed content (at most 1 GiB) of a gzip file whose first [`FINGERPRINT_BYTES`] satisfy
/// `wanted`; only those are decompressed for a file that is not the one sought. `None` if it is not
/// gzip or not wanted.
fn gunzip_if(path: &Path, wanted: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    let file = std::fs::File::open(path).ok()?;
    let mut decoder = flate2::read::MultiGzDecoder::new(file).take(1 << 30);
    let mut content = Vec::with_capacity(FINGERPRINT_BYTES);
    decoder.by_ref().take(FINGERPRINT_BYTES as u64).read_to_end(&mut content).ok()?;
    if !wanted(&content) {
        return None;
    }
    decoder.read_to_end(&mut content).ok()?;
    Some(content)
}

/// Complete lines from `offset` (at most [`MAX_READ`] bytes), and the bytes they took.
fn read_lines(path: &Path, offset: u64) -> std::io::Result<(Vec<String>, u64)> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.take(MAX_READ).read_to_end(&mut bytes)?;
    Ok(complete_lines(&bytes))
}

/// The complete lines in `bytes` (a trailing partial line is left), and the bytes they took.
fn complete_lines(bytes: &[u8]) -> (Vec<String>, u64) {
    let Some(last_newline) = bytes.iter().rposition(|b| *b == b'\n') else { return (Vec::new(), 0) };
    let complete = &bytes[..last_newline];
    let lines = complete
        .split(|b| *b == b'\n')
        .map(|line| String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line)).into_owned())
        .collect();
    (lines, last_newline as u64 + 1)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn append(path: &Path, text: &str) {
        std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
    }

    fn lines(batches: Vec<FileLines>) -> Vec<String> {
        batches.into_iter().flat_map(|b| b.lines).collect()
    }

    #[test]
    fn follows_appends_partial_lines_rotation_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let checkpoint = state.path().join("offsets.json");
        let file = dir.path().join("app.log");
        std::fs::write(dir.path().join("ignored.txt"), "not a log\n").unwrap();
        append(&file, "one\ntwo\npart");
        let mut tailer = Tailer::new(dir.path(), &checkpoint);
        assert_eq!(lines(tailer.poll()), ["one", "two"], "a partial last line waits");
        tailer.commit().unwrap();
        append(&file, "ial\nthree\n");
        assert_eq!(lines(tailer.poll()), ["partial", "three"]);
        tailer.commit().unwrap();
        assert!(tailer.poll().is_empty());

        // Rotation: lines written just before the rename are read from the renamed file, then the new one.
        append(&file, "just before\n");
        std::fs::rename(&file, dir.path().join("app.log.1")).unwrap();
        append(&file, "after rotation\n");
        assert_eq!(lines(tailer.poll()), ["just before", "after rotation"]);
        tailer.commit().unwrap();
        // Truncation: shorter than the offset, read from the start.
        std::fs::write(&file, "x\n").unwrap();
        assert_eq!(lines(tailer.poll()), ["x"]);

        // Copytruncate, then written again past the old offset before the next poll: other content
        // at the start, so everything is new.
        std::fs::write(&file, "").unwrap();
        append(&file, "a longer first line after the truncation\nsecond\n");
        assert_eq!(lines(tailer.poll()), ["a longer first line after the truncation", "second"]);
        std::fs::write(&file, "x\n").unwrap();
        assert_eq!(lines(tailer.poll()), ["x"]);

        // Not committed: a new tailer (a restart) reads it again; committed reads are not repeated.
        let mut restarted = Tailer::new(dir.path(), &checkpoint);
        assert_eq!(lines(restarted.poll()), ["x"]);
        restarted.rewind();
        assert_eq!(lines(restarted.poll()), ["x"], "rewind returns uncommitted lines again");
    }

    #[test]
    fn a_rotated_file_compressed_before_the_next_poll_is_read_from_the_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let file = dir.path().join("0.log");
        append(&file, "first\nsecond\n");
        let mut tailer = Tailer::new(dir.path(), &state.path().join("offsets.json"));
        assert_eq!(lines(tailer.poll()), ["first", "second"]);
        tailer.commit().unwrap();
        // An older rotation, already compressed: other content, so it is passed over.
        let mut older = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        older.write_all(b"from an earlier file\n").unwrap();
        std::fs::write(dir.path().join("0.log.20251231-000000.gz"), older.finish().unwrap()).unwrap();
        // The kubelet renames, then compresses the renamed file and removes it.
        append(&file, "written before the rotation\n");
        let rotated = dir.path().join("0.log.20260101-000000");
        std::fs::rename(&file, &rotated).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&std::fs::read(&rotated).unwrap()).unwrap();
        std::fs::write(dir.path().join("0.log.20260101-000000.gz"), gz.finish().unwrap()).unwrap();
        std::fs::remove_file(&rotated).unwrap();
        append(&file, "after\n");
        assert_eq!(lines(tailer.poll()), ["written before the rotation", "after"]);
        tailer.commit().unwrap();
        assert!(tailer.poll().is_empty(), "nothing is read twice");
    }
}
