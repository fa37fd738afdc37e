//! Follows the `*.log` files of a directory: complete new lines since the last read, through rotation
//! and truncation. A file is known by its inode and a fingerprint of its first bytes, so a path that now
//! holds other content (rotated by rename, truncated by copytruncate and written again, or a new file
//! that reused the inode) is read from its start. Before that, the rest of the old file is read: from the
//! sibling that has its inode (renamed), from a sibling that starts with its fingerprint (copied, then
//! truncated), or from a sibling `.gz` whose content starts with it (renamed, then compressed). Every line
//! comes with its position: the file's source key (from its directory and first line, which all those
//! moves keep) and its byte offset, which the server uses to drop lines it already has. Offsets are checkpointed to a JSON file only after the caller
//! has stored what it read, so a restart neither loses nor repeats lines that were stored.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Most bytes read from one file per poll, so one busy file cannot starve the others.
const MAX_READ: u64 = 1024 * 1024;

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
    /// The file's source key (0 until it has a complete line).
    #[serde(default)]
    source: u64,
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

/// A directory entry that is a file (or a link to one), with the file's metadata. An entry's own metadata
/// is read relative to its directory, which costs less than a stat by path.
pub fn entry_file(entry: &std::fs::DirEntry) -> Option<(PathBuf, std::fs::Metadata)> {
    let mut meta = entry.metadata().ok()?;
    if meta.file_type().is_symlink() {
        meta = std::fs::metadata(entry.path()).ok()?;
    }
    meta.is_file().then(|| (entry.path(), meta))
}

/// What a file's lines are known by across rotations: a hash of its directory and of its first line (at
/// most [`FINGERPRINT_BYTES`] of it). Renaming, copying and compressing keep both.
fn source_key(dir: &Path, head: &[u8]) -> u64 {
    let first_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut context = md5::Context::new();
    context.consume(dir.as_os_str().as_encoded_bytes());
    context.consume([0]);
    context.consume(first_line);
    u64::from_le_bytes(context.compute().0[..8].try_into().expect("an MD5 digest has 16 bytes"))
}

/// Where a record the caller has begun, and not yet stored, starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// The source key of the file it is in.
    pub source: u64,
    /// The offset of its first line.
    pub offset: u64,
}

/// New lines of one file, read in one piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLines {
    /// The file.
    pub path: PathBuf,
    /// The file's source key (see [`Tailer`]): the same for the file wherever rotation moved it.
    pub source: u64,
    /// The complete lines (invalid UTF-8 replaced).
    text: String,
    /// Per line: the byte offset in the file where it starts, and its place in `text` (without its newline).
    spans: Vec<(u64, std::ops::Range<usize>)>,
    /// The file bytes the lines took, newlines included.
    consumed: u64,
}

impl FileLines {
    /// The complete lines of `bytes`, read from `path` at `offset` (a trailing partial line is left).
    pub fn new(path: PathBuf, source: u64, offset: u64, mut bytes: Vec<u8>) -> Self {
        let mut lines = FileLines { path, source, text: String::new(), spans: Vec::new(), consumed: 0 };
        let Some(last_newline) = memchr::memrchr(b'\n', &bytes) else { return lines };
        bytes.truncate(last_newline + 1);
        lines.consumed = bytes.len() as u64;
        match String::from_utf8(bytes) {
            Ok(text) => {
                lines.spans =
                    line_bounds(text.as_bytes()).map(|(start, end)| (offset + start as u64, start..end)).collect();
                lines.text = text;
            }
            Err(invalid) => {
                let raw = invalid.into_bytes();
                for (start, end) in line_bounds(&raw) {
                    let at = lines.text.len();
                    lines.text.push_str(&String::from_utf8_lossy(&raw[start..end]));
                    lines.spans.push((offset + start as u64, at..lines.text.len()));
                }
            }
        }
        lines
    }

    /// Each line with the byte offset in the file where it starts.
    pub fn lines(&self) -> impl Iterator<Item = (u64, &str)> {
        self.spans.iter().map(|(offset, range)| (*offset, &self.text[range.clone()]))
    }

    /// The number of lines.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when there is no complete line.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// A tailer over one directory.
#[derive(Debug)]
pub struct Tailer {
    dir: PathBuf,
    checkpoint: PathBuf,
    committed: BTreeMap<PathBuf, Position>,
    pending: BTreeMap<PathBuf, Position>,
    /// Whether the last poll left unread bytes in a file (it read as much as one poll may).
    backlog: bool,
}

impl Tailer {
    /// A tailer of `dir` keeping its offsets in `checkpoint` (read now if it exists).
    pub fn new(dir: &Path, checkpoint: &Path) -> Self {
        let committed = std::fs::read(checkpoint)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<BTreeMap<PathBuf, Position>>(&bytes).ok())
            .unwrap_or_default();
        Tailer {
            dir: dir.to_owned(),
            checkpoint: checkpoint.to_owned(),
            pending: committed.clone(),
            committed,
            backlog: false,
        }
    }

    /// Complete lines written since the last [`Tailer::commit`]ted read. Unreadable files are skipped.
    pub fn poll(&mut self) -> Vec<FileLines> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let files = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|e| e == "log"))
            .filter_map(|e| entry_file(&e))
            .collect();
        self.poll_files(files)
    }

    /// Like [`Tailer::poll`], over files the caller found, with their metadata (pod logs live two
    /// directories deep).
    pub fn poll_files(&mut self, mut files: Vec<(PathBuf, std::fs::Metadata)>) -> Vec<FileLines> {
        let mut out = Vec::new();
        self.backlog = false;
        files.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, meta) in files {
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
                if let Some(rest) = rest_of_moved(&path, old).filter(|rest| !rest.is_empty()) {
                    out.push(rest);
                }
            }
            let offset = same.map_or(0, |p| p.offset);
            let source = source_key(path.parent().unwrap_or(Path::new("")), &head);
            let Ok((lines, read)) = read_lines(&path, source, offset, MAX_READ) else { continue };
            self.backlog |= read == MAX_READ;
            let position = Position {
                inode: meta.ino(),
                offset: offset + lines.consumed,
                head: fingerprint(&head),
                head_len: head.len() as u64,
                mtime_ns,
                source,
            };
            self.pending.insert(path, position);
            if !lines.is_empty() {
                out.push(lines);
            }
        }
        out
    }

    /// Whether the last poll read as much as one poll may from some file, which has more: the caller polls
    /// again at once rather than after its interval.
    pub fn backlog(&self) -> bool {
        self.backlog
    }

    /// Records that what [`Tailer::poll`] returned is stored: the offsets are checkpointed.
    pub fn commit(&mut self) -> std::io::Result<()> {
        self.commit_holding(&BTreeMap::new())
    }

    /// Like [`Tailer::commit`], but a file in `holds` is checkpointed no further than the offset held for
    /// it (when the file still has that source key): the start of a record the caller has begun and not
    /// yet stored, such as a CRI line whose last part has not been written.
    pub fn commit_holding(&mut self, holds: &BTreeMap<PathBuf, Hold>) -> std::io::Result<()> {
        let mut checkpoint = self.pending.clone();
        for (path, hold) in holds {
            if let Some(position) = checkpoint.get_mut(path).filter(|p| p.source == hold.source) {
                position.offset = position.offset.min(hold.offset);
                position.mtime_ns = 0;
            }
        }
        if checkpoint == self.committed {
            return Ok(());
        }
        let temporary = self.checkpoint.with_extension("tmp");
        std::fs::write(&temporary, serde_json::to_vec(&checkpoint).expect("offsets serialize"))?;
        std::fs::rename(&temporary, &self.checkpoint)?;
        self.committed = checkpoint;
        Ok(())
    }

    /// Forgets reads since the last commit, so the next poll returns those lines again.
    pub fn rewind(&mut self) {
        self.pending = self.committed.clone();
    }
}

/// The lines of the file once at `path` after `old.offset`: from the sibling with its inode (renamed and
/// still there, same content), else from a sibling that starts as it did and is at least as long (copied
/// before a copytruncate), else from a sibling `.gz` whose content starts as it did (compressed after the
/// rename). `None` when it is gone (truncated in place, or deleted).
fn rest_of_moved(path: &Path, old: Position) -> Option<FileLines> {
    let dir = path.parent()?;
    let entries = std::fs::read_dir(dir).ok()?;
    let siblings: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p != path).collect();
    let is_gz = |p: &Path| p.extension().is_some_and(|e| e == "gz");
    let renamed = siblings.iter().find(|p| std::fs::metadata(p).is_ok_and(|m| m.ino() == old.inode));
    let copies = siblings.iter().filter(|p| {
        let long_enough = std::fs::metadata(p).is_ok_and(|m| m.len() >= old.offset);
        old.head_len > 0 && !is_gz(p) && long_enough
    });
    for candidate in renamed.into_iter().chain(copies) {
        let Ok(head) = read_head(candidate) else { continue };
        if !old.same_start(&head) {
            continue;
        }
        let (mut lines, _) = read_lines(candidate, source_key(dir, &head), old.offset, u64::MAX).ok()?;
        lines.path = path.to_owned();
        return Some(lines);
    }
    if old.head_len == 0 {
        return None;
    }
    siblings.iter().filter(|p| is_gz(p)).find_map(|gz| {
        let mut content = gunzip_if(gz, |head| old.same_start(head))?;
        let source = source_key(dir, &content[..content.len().min(FINGERPRINT_BYTES)]);
        let offset = usize::try_from(old.offset).ok().filter(|offset| *offset <= content.len())?;
        let rest = content.split_off(offset);
        Some(FileLines::new(path.to_owned(), source, old.offset, rest))
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

/// Where each newline-terminated line of `bytes` starts and ends (without its newline and a CR before it).
fn line_bounds(bytes: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut start = 0;
    memchr::memchr_iter(b'\n', bytes).map(move |end| {
        let line = (start, end - usize::from(end > start && bytes[end - 1] == b'\r'));
        start = end + 1;
        line
    })
}

/// The complete lines of `path` from `offset`, of at most `limit` bytes, and how many bytes were read (a
/// trailing partial line included).
fn read_lines(path: &Path, source: u64, offset: u64, limit: u64) -> std::io::Result<(FileLines, u64)> {
    let mut file = std::fs::File::open(path)?;
    let available = file.metadata()?.len().saturating_sub(offset).min(limit);
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::with_capacity(usize::try_from(available).unwrap_or(0));
    file.take(limit).read_to_end(&mut bytes)?;
    let read = bytes.len() as u64;
    Ok((FileLines::new(path.to_owned(), source, offset, bytes), read))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn append(path: &Path, text: &str) {
        std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
    }

    fn lines(batches: Vec<FileLines>) -> Vec<String> {
        batches.iter().flat_map(|b| b.lines().map(|(_, line)| line.to_owned())).collect()
    }

    fn offsets(batch: &FileLines) -> Vec<u64> {
        batch.lines().map(|(offset, _)| offset).collect()
    }

    #[test]
    fn lines_keep_their_file_offsets_through_crlf_and_invalid_utf8() {
        let lines = FileLines::new("f".into(), 1, 100, b"ok\r\nbad \xff byte\n\nlast partial".to_vec());
        let read: Vec<(u64, &str)> = lines.lines().collect();
        assert_eq!(read, [(100, "ok"), (104, "bad \u{fffd} byte"), (115, "")]);
        assert_eq!(lines.consumed, 16);
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
    fn copytruncate_is_read_from_the_copy_and_positions_outlive_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let checkpoint = state.path().join("offsets.json");
        let file = dir.path().join("0.log");
        append(&file, "first\nsecond\n");
        let mut tailer = Tailer::new(dir.path(), &checkpoint);
        let read = tailer.poll();
        assert_eq!(offsets(&read[0]), [0, 6]);
        let source = read[0].source;
        tailer.commit().unwrap();
        // Written after the last poll, then copied and truncated: the rest comes from the copy, known by
        // the same source key and its offsets in the original.
        append(&file, "third\n");
        std::fs::copy(&file, dir.path().join("0.log.1")).unwrap();
        std::fs::write(&file, "").unwrap();
        append(&file, "fourth\n");
        let read = tailer.poll();
        let summary: Vec<(u64, Vec<String>, Vec<u64>)> =
            read.iter().map(|b| (b.source, lines(vec![b.clone()]), offsets(b))).collect();
        assert_eq!(summary[0], (source, vec!["third".to_owned()], vec![13]));
        assert_eq!((&summary[1].1, &summary[1].2), (&vec!["fourth".to_owned()], &vec![0]));
        assert_ne!(summary[1].0, source, "the file now at the path is another source");

        // A hold keeps the checkpoint at the start of an entry still being assembled.
        append(&file, "fifth\n");
        let read = tailer.poll();
        assert_eq!(offsets(&read[0]), [7]);
        let holds = BTreeMap::from([(file.clone(), Hold { source: read[0].source, offset: 7 })]);
        tailer.commit_holding(&holds).unwrap();
        assert!(tailer.poll().is_empty(), "the tailer itself reads on");
        let mut restarted = Tailer::new(dir.path(), &checkpoint);
        assert_eq!(lines(restarted.poll()), ["fifth"], "a restart reads the held entry again");
    }

    #[test]
    fn the_copy_is_found_among_older_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let file = dir.path().join("0.log");
        // An older rotation, long enough to pass for the copy, with other content.
        std::fs::write(dir.path().join("0.log.0"), "an older rotation, longer than the file\n").unwrap();
        append(&file, "first\n");
        let mut tailer = Tailer::new(dir.path(), &state.path().join("offsets.json"));
        assert_eq!(lines(tailer.poll()), ["first"]);
        tailer.commit().unwrap();
        append(&file, "second\n");
        std::fs::copy(&file, dir.path().join("0.log.1")).unwrap();
        std::fs::write(&file, "").unwrap();
        append(&file, "third\n");
        assert_eq!(lines(tailer.poll()), ["second", "third"]);
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
