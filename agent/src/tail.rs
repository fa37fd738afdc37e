//! Follows the `*.log` files of a directory: complete new lines since the last read, through rotation
//! (a new file at the path, found by its inode; the renamed old file is read to its end first) and
//! truncation (a file shorter than the offset starts over). Offsets are checkpointed to a JSON file only after the caller has stored what it read, so a
//! restart neither loses nor repeats lines that were stored.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Most bytes read from one file per poll, so one busy file cannot starve the others.
const MAX_READ: u64 = 4 * 1024 * 1024;

/// Where a file was read up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    inode: u64,
    offset: u64,
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
            let previous = self.pending.get(&path).copied();
            // Rotated by rename: the old file, found by its inode beside the path, is read to its end first.
            if let Some(old) = previous.filter(|p| p.inode != meta.ino()) {
                let rest = renamed(&path, old.inode).and_then(|renamed| read_lines(&renamed, old.offset).ok());
                if let Some((lines, _)) = rest.filter(|(lines, _)| !lines.is_empty()) {
                    out.push(FileLines { path: path.clone(), lines });
                }
            }
            let mut offset = match previous {
                Some(p) if p.inode == meta.ino() && p.offset <= meta.len() => p.offset,
                _ => 0,
            };
            let Ok((lines, consumed)) = read_lines(&path, offset) else { continue };
            offset += consumed;
            self.pending.insert(path.clone(), Position { inode: meta.ino(), offset });
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

/// The file beside `path` with inode `inode` (where a rename rotation moved it), if it is still there.
fn renamed(path: &Path, inode: u64) -> Option<PathBuf> {
    let entries = std::fs::read_dir(path.parent()?).ok()?;
    entries.filter_map(Result::ok).map(|e| e.path()).find(|p| std::fs::metadata(p).is_ok_and(|m| m.ino() == inode))
}

/// Complete lines from `offset` (at most [`MAX_READ`] bytes), and the bytes they took.
fn read_lines(path: &Path, offset: u64) -> std::io::Result<(Vec<String>, u64)> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.take(MAX_READ).read_to_end(&mut bytes)?;
    let Some(last_newline) = bytes.iter().rposition(|b| *b == b'\n') else { return Ok((Vec::new(), 0)) };
    let complete = &bytes[..last_newline];
    let lines = complete
        .split(|b| *b == b'\n')
        .map(|line| String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line)).into_owned())
        .collect();
    Ok((lines, last_newline as u64 + 1))
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

        // Not committed: a new tailer (a restart) reads it again; committed reads are not repeated.
        let mut restarted = Tailer::new(dir.path(), &checkpoint);
        assert_eq!(lines(restarted.poll()), ["x"]);
        restarted.rewind();
        assert_eq!(lines(restarted.poll()), ["x"], "rewind returns uncommitted lines again");
    }
}
