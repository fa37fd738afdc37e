//! Immutable on-disk blocks: all series of a time range, densely encoded.
//!
//! A block is a directory with three files:
//! - `chunks`: zstd frames, each holding the [`series_codec`](crate::series_codec) encodings of
//!   consecutive series (in label order), read through mmap;
//! - `index`: the symbol table, every series (labels as symbol ids, frame, offset, time range, count) and
//!   every frame (offset, length, CRC-32 of the compressed bytes), ending with a CRC-32 of the index;
//! - `meta.json`: [`BlockMeta`].
//!
//! Blocks are written into `<name>.tmp` and renamed when complete, so a directory without `.tmp` is whole.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::postings::{Postings, SeriesId};
use crate::varint::{put_uvarint, put_varint, uvarint, varint};
use crate::{Error, Label, Labels, Matcher, Sample, Series, Timestamp, series_codec};

const INDEX_MAGIC: &[u8; 8] = b"VGLIDX01";
/// Uncompressed bytes gathered before a frame is compressed.
const FRAME_TARGET: usize = 64 << 10;
const ZSTD_LEVEL: i32 = 5;
/// Suffix of directories still being written.
pub const TMP_SUFFIX: &str = ".tmp";

/// What a block holds, stored as `meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockMeta {
    /// Format version of the block.
    pub version: u32,
    /// Earliest sample time (ms, inclusive).
    pub min_time: Timestamp,
    /// Latest sample time (ms, inclusive).
    pub max_time: Timestamp,
    /// Series in the block.
    pub series: u64,
    /// Samples in the block.
    pub samples: u64,
    /// 1 for blocks cut from the head, +1 per compaction.
    pub level: u32,
    /// Names of the blocks this one was compacted from (removed once this one is complete).
    pub sources: Vec<String>,
    /// Every sample at or before this time went to blocks when this one was written: the head's floor.
    pub covers_until: Timestamp,
}

#[derive(Debug, Clone, Copy)]
struct FrameRef {
    offset: u64,
    len: u32,
    raw_len: u32,
    crc: u32,
}

#[derive(Debug)]
struct SeriesEntry {
    labels: Labels,
    frame: u32,
    offset: u32,
    min_time: Timestamp,
    max_time: Timestamp,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

/// Writes series (given in label order) into a new block directory `dir/name`.
pub struct BlockWriter {
    tmp_dir: PathBuf,
    final_dir: PathBuf,
    chunks: BufWriter<File>,
    chunks_len: u64,
    frame: Vec<u8>,
    frames: Vec<FrameRef>,
    symbols: HashMap<String, u32>,
    symbol_list: Vec<String>,
    series: Vec<WrittenSeries>,
    meta: BlockMeta,
}

/// A series as the index will list it.
struct WrittenSeries {
    /// (name, value) symbol ids.
    label_refs: Vec<(u32, u32)>,
    frame: u32,
    offset: u32,
    min_time: Timestamp,
    max_time: Timestamp,
}

impl BlockWriter {
    /// Starts a block named `name` under `dir`; `covers_until` is recorded in its meta.
    pub fn create(
        dir: &Path,
        name: &str,
        level: u32,
        sources: Vec<String>,
        covers_until: Timestamp,
    ) -> Result<Self, Error> {
        let tmp_dir = dir.join(format!("{name}{TMP_SUFFIX}"));
        let final_dir = dir.join(name);
        if tmp_dir.exists() {
            fs::remove_dir_all(&tmp_dir).map_err(io(&tmp_dir))?;
        }
        fs::create_dir_all(&tmp_dir).map_err(io(&tmp_dir))?;
        let chunks_path = tmp_dir.join("chunks");
        let chunks = BufWriter::new(File::create(&chunks_path).map_err(io(&chunks_path))?);
        let meta = BlockMeta {
            version: 1,
            min_time: Timestamp::MAX,
            max_time: Timestamp::MIN,
            series: 0,
            samples: 0,
            level,
            sources,
            covers_until,
        };
        Ok(BlockWriter {
            tmp_dir,
            final_dir,
            chunks,
            chunks_len: 0,
            frame: Vec::with_capacity(FRAME_TARGET * 2),
            frames: Vec::new(),
            symbols: HashMap::new(),
            symbol_list: Vec::new(),
            series: Vec::new(),
            meta,
        })
    }

    fn symbol(&mut self, text: &str) -> u32 {
        if let Some(id) = self.symbols.get(text) {
            return *id;
        }
        let id = self.symbol_list.len() as u32;
        self.symbols.insert(text.to_owned(), id);
        self.symbol_list.push(text.to_owned());
        id
    }

    /// Adds one series' samples (in increasing time order). Series may come in any order; a label set
    /// added twice is stored twice and merged when read.
    pub fn add(&mut self, labels: &Labels, samples: &[Sample]) -> Result<(), Error> {
        if samples.is_empty() {
            return Ok(());
        }
        let refs: Vec<(u32, u32)> = labels.iter().map(|l| (self.symbol(&l.name), self.symbol(&l.value))).collect();
        let offset = self.frame.len() as u32;
        series_codec::encode(samples, &mut self.frame);
        let (min_time, max_time) = (samples[0].t, samples[samples.len() - 1].t);
        self.series.push(WrittenSeries {
            label_refs: refs,
            frame: self.frames.len() as u32,
            offset,
            min_time,
            max_time,
        });
        self.meta.series += 1;
        self.meta.samples += samples.len() as u64;
        self.meta.min_time = self.meta.min_time.min(min_time);
        self.meta.max_time = self.meta.max_time.max(max_time);
        if self.frame.len() >= FRAME_TARGET {
            self.flush_frame()?;
        }
        Ok(())
    }

    fn flush_frame(&mut self) -> Result<(), Error> {
        if self.frame.is_empty() {
            return Ok(());
        }
        let path = self.tmp_dir.join("chunks");
        let compressed = zstd::bulk::compress(&self.frame, ZSTD_LEVEL).map_err(io(&path))?;
        self.chunks.write_all(&compressed).map_err(io(&path))?;
        self.frames.push(FrameRef {
            offset: self.chunks_len,
            len: compressed.len() as u32,
            raw_len: self.frame.len() as u32,
            crc: crc32fast::hash(&compressed),
        });
        self.chunks_len += compressed.len() as u64;
        self.frame.clear();
        Ok(())
    }

    /// Abandons the block, removing everything written so far.
    pub fn abort(self) -> Result<(), Error> {
        drop(self.chunks);
        fs::remove_dir_all(&self.tmp_dir).map_err(io(&self.tmp_dir))
    }

    /// Writes the index and meta, syncs, and renames the directory into place. Returns the meta,
    /// or `None` if no samples were added (nothing is left on disk then).
    pub fn finish(mut self) -> Result<Option<BlockMeta>, Error> {
        self.flush_frame()?;
        let chunks_path = self.tmp_dir.join("chunks");
        let file = self.chunks.into_inner().map_err(|e| Error::io(&chunks_path, e.into_error()))?;
        if self.meta.series == 0 {
            drop(file);
            fs::remove_dir_all(&self.tmp_dir).map_err(io(&self.tmp_dir))?;
            return Ok(None);
        }
        file.sync_all().map_err(io(&chunks_path))?;

        let mut index = Vec::new();
        index.extend_from_slice(INDEX_MAGIC);
        put_uvarint(&mut index, self.symbol_list.len() as u64);
        for symbol in &self.symbol_list {
            put_uvarint(&mut index, symbol.len() as u64);
            index.extend_from_slice(symbol.as_bytes());
        }
        put_uvarint(&mut index, self.series.len() as u64);
        for series in &self.series {
            put_uvarint(&mut index, series.label_refs.len() as u64);
            for (name, value) in &series.label_refs {
                put_uvarint(&mut index, u64::from(*name));
                put_uvarint(&mut index, u64::from(*value));
            }
            put_uvarint(&mut index, u64::from(series.frame));
            put_uvarint(&mut index, u64::from(series.offset));
            put_varint(&mut index, series.min_time);
            put_varint(&mut index, series.max_time - series.min_time);
        }
        put_uvarint(&mut index, self.frames.len() as u64);
        for frame in &self.frames {
            put_uvarint(&mut index, frame.offset);
            put_uvarint(&mut index, u64::from(frame.len));
            put_uvarint(&mut index, u64::from(frame.raw_len));
            index.extend_from_slice(&frame.crc.to_le_bytes());
        }
        let crc = crc32fast::hash(&index);
        index.extend_from_slice(&crc.to_le_bytes());
        write_synced(&self.tmp_dir.join("index"), &index)?;
        let meta = serde_json::to_vec_pretty(&self.meta).expect("meta serialises");
        write_synced(&self.tmp_dir.join("meta.json"), &meta)?;
        sync_dir(&self.tmp_dir)?;
        fs::rename(&self.tmp_dir, &self.final_dir).map_err(io(&self.final_dir))?;
        if let Some(parent) = self.final_dir.parent() {
            sync_dir(parent)?;
        }
        Ok(Some(self.meta))
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut file = File::create(path).map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// An open block: index in memory, chunks mapped.
pub struct Block {
    dir: PathBuf,
    meta: BlockMeta,
    series: Vec<SeriesEntry>,
    postings: Postings,
    frames: Vec<FrameRef>,
    chunks: memmap2::Mmap,
    size_bytes: u64,
    /// Recently decompressed frames: dashboards repeat the same queries on every refresh.
    recent: parking_lot::Mutex<std::collections::VecDeque<(u32, Arc<Vec<u8>>)>>,
}

/// Decompressed frames a block keeps (64 KiB each).
const RECENT_FRAMES: usize = 32;

thread_local! {
    /// One decompression context per thread, reused across frames.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block").field("dir", &self.dir).field("meta", &self.meta).finish()
    }
}

fn corruption(path: &Path, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corruption { path: path.to_owned(), offset, reason: reason.into() }
}

impl Block {
    /// Opens a complete block directory, checking the index checksum.
    pub fn open(dir: &Path) -> Result<Block, Error> {
        let meta_path = dir.join("meta.json");
        let meta_bytes = fs::read(&meta_path).map_err(io(&meta_path))?;
        let meta: BlockMeta =
            serde_json::from_slice(&meta_bytes).map_err(|e| corruption(&meta_path, 0, e.to_string()))?;
        let index_path = dir.join("index");
        let index = fs::read(&index_path).map_err(io(&index_path))?;
        let (series, frames) =
            parse_index(&index).map_err(|(offset, reason)| corruption(&index_path, offset, reason))?;
        let chunks_path = dir.join("chunks");
        let chunks_file = File::open(&chunks_path).map_err(io(&chunks_path))?;
        // Safety: block files are immutable once renamed into place; nothing writes them while mapped.
        let chunks = unsafe { memmap2::Mmap::map(&chunks_file) }.map_err(io(&chunks_path))?;
        let mut postings = Postings::default();
        for (id, entry) in series.iter().enumerate() {
            postings.add(id as SeriesId, &entry.labels);
        }
        let size_bytes = (index.len() + meta_bytes.len() + chunks.len()) as u64;
        let recent = parking_lot::Mutex::new(std::collections::VecDeque::with_capacity(RECENT_FRAMES));
        Ok(Block { dir: dir.to_owned(), meta, series, postings, frames, chunks, size_bytes, recent })
    }

    /// The block's metadata.
    pub fn meta(&self) -> &BlockMeta {
        &self.meta
    }

    /// The block's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory name, which identifies the block.
    pub fn name(&self) -> String {
        self.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }

    /// Bytes on disk.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// A frame's decompressed bytes, from the recent-frames cache when there.
    fn frame(&self, index: u32) -> Result<Arc<Vec<u8>>, Error> {
        if let Some((_, bytes)) = self.recent.lock().iter().find(|(cached, _)| *cached == index) {
            return Ok(Arc::clone(bytes));
        }
        let bytes = Arc::new(self.decompress_frame(index)?);
        let mut recent = self.recent.lock();
        if recent.len() >= RECENT_FRAMES {
            recent.pop_front();
        }
        recent.push_back((index, Arc::clone(&bytes)));
        Ok(bytes)
    }

    fn decompress_frame(&self, index: u32) -> Result<Vec<u8>, Error> {
        let path = self.dir.join("chunks");
        let frame =
            self.frames.get(index as usize).ok_or_else(|| corruption(&path, 0, "series points past the last frame"))?;
        let start = frame.offset as usize;
        let bytes = self
            .chunks
            .get(start..start + frame.len as usize)
            .ok_or_else(|| corruption(&path, frame.offset, "frame extends past the end of the file"))?;
        if crc32fast::hash(bytes) != frame.crc {
            return Err(corruption(&path, frame.offset, "frame checksum mismatch"));
        }
        let decompressed = DECOMPRESSOR.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(zstd::bulk::Decompressor::new()?);
            }
            slot.as_mut().expect("just set").decompress(bytes, frame.raw_len as usize)
        });
        decompressed.map_err(|e| corruption(&path, frame.offset, e.to_string()))
    }

    /// Series matching `matchers` with samples in `[mint, maxt]`, in label order.
    pub fn select(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Result<Vec<Series>, Error> {
        if self.meta.max_time < mint || self.meta.min_time > maxt {
            return Ok(Vec::new());
        }
        let ids = self.postings.select(matchers, |id| &self.series[id as usize].labels);
        let mut out = Vec::new();
        let mut cached: Option<(u32, Arc<Vec<u8>>)> = None;
        for id in ids {
            let entry = &self.series[id as usize];
            if entry.max_time < mint || entry.min_time > maxt {
                continue;
            }
            if cached.as_ref().is_none_or(|(frame, _)| *frame != entry.frame) {
                cached = Some((entry.frame, self.frame(entry.frame)?));
            }
            let (_, bytes) = cached.as_ref().expect("just filled");
            let mut pos = entry.offset as usize;
            let samples = series_codec::decode(bytes, &mut pos)
                .ok_or_else(|| corruption(&self.dir.join("chunks"), entry.offset.into(), "undecodable series"))?;
            let samples: Vec<Sample> = samples.into_iter().filter(|s| s.t >= mint && s.t <= maxt).collect();
            if !samples.is_empty() {
                out.push(Series { labels: entry.labels.clone(), samples });
            }
        }
        Ok(out)
    }

    /// Label sets matching `matchers`.
    pub fn matching_labels(&self, matchers: &[Matcher]) -> Vec<&Labels> {
        let ids = self.postings.select(matchers, |id| &self.series[id as usize].labels);
        ids.into_iter().map(|id| &self.series[id as usize].labels).collect()
    }

    /// All label names.
    pub fn label_names(&self) -> impl Iterator<Item = &str> {
        self.postings.label_names()
    }

    /// All values of `name`.
    pub fn label_values(&self, name: &str) -> impl Iterator<Item = &str> {
        self.postings.label_values(name)
    }

    /// Every series with all its samples, in label order (for compaction).
    pub fn all_series(&self) -> Result<Vec<Series>, Error> {
        self.select(&[], Timestamp::MIN, Timestamp::MAX)
    }
}

type ParsedIndex = (Vec<SeriesEntry>, Vec<FrameRef>);

fn parse_index(index: &[u8]) -> Result<ParsedIndex, (u64, String)> {
    if index.len() < INDEX_MAGIC.len() + 4 || &index[..INDEX_MAGIC.len()] != INDEX_MAGIC {
        return Err((0, "not a Vigil block index".into()));
    }
    let body = &index[..index.len() - 4];
    let stored = u32::from_le_bytes(index[index.len() - 4..].try_into().expect("4 bytes"));
    if crc32fast::hash(body) != stored {
        return Err(((index.len() - 4) as u64, "index checksum mismatch".into()));
    }
    let mut pos = INDEX_MAGIC.len();
    let bad = |pos: usize, what: &str| (pos as u64, format!("malformed {what}"));
    let count = |pos: &mut usize, what: &str| -> Result<usize, (u64, String)> {
        let at = *pos;
        uvarint(body, pos)
            .and_then(|v| usize::try_from(v).ok())
            .filter(|v| *v <= body.len())
            .ok_or_else(|| bad(at, what))
    };
    let symbol_count = count(&mut pos, "symbol count")?;
    let mut symbols: Vec<Arc<str>> = Vec::with_capacity(symbol_count);
    for _ in 0..symbol_count {
        let len = count(&mut pos, "symbol length")?;
        let bytes = body.get(pos..pos + len).ok_or_else(|| bad(pos, "symbol"))?;
        symbols.push(std::str::from_utf8(bytes).map_err(|_| bad(pos, "symbol utf-8"))?.into());
        pos += len;
    }
    let series_count = count(&mut pos, "series count")?;
    let mut series = Vec::with_capacity(series_count);
    for _ in 0..series_count {
        let label_count = count(&mut pos, "label count")?;
        let mut labels = Vec::with_capacity(label_count);
        for _ in 0..label_count {
            let name = symbols.get(count(&mut pos, "label name")?).ok_or_else(|| bad(pos, "symbol reference"))?;
            let value = symbols.get(count(&mut pos, "label value")?).ok_or_else(|| bad(pos, "symbol reference"))?;
            labels.push(Label { name: Arc::clone(name), value: Arc::clone(value) });
        }
        let frame = count(&mut pos, "frame")? as u32;
        let offset = uvarint(body, &mut pos).ok_or_else(|| bad(pos, "offset"))? as u32;
        let min_time = varint(body, &mut pos).ok_or_else(|| bad(pos, "min time"))?;
        let span = varint(body, &mut pos).ok_or_else(|| bad(pos, "time span"))?;
        series.push(SeriesEntry {
            labels: Labels::from_sorted_unchecked(labels),
            frame,
            offset,
            min_time,
            max_time: min_time + span,
        });
    }
    let frame_count = count(&mut pos, "frame count")?;
    let mut frames = Vec::with_capacity(frame_count);
    for _ in 0..frame_count {
        let offset = uvarint(body, &mut pos).ok_or_else(|| bad(pos, "frame offset"))?;
        let len = uvarint(body, &mut pos).ok_or_else(|| bad(pos, "frame length"))? as u32;
        let raw_len = uvarint(body, &mut pos).ok_or_else(|| bad(pos, "frame size"))? as u32;
        let crc = body.get(pos..pos + 4).ok_or_else(|| bad(pos, "frame checksum"))?;
        frames.push(FrameRef { offset, len, raw_len, crc: u32::from_le_bytes(crc.try_into().expect("4 bytes")) });
        pos += 4;
    }
    Ok((series, frames))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(i: usize) -> Labels {
        Labels::new([("__name__", "m".to_owned()), ("i", format!("{i:05}"))]).unwrap()
    }

    fn write(dir: &Path, series: usize, samples: i64) -> BlockMeta {
        let mut writer = BlockWriter::create(dir, "b1", 1, Vec::new(), i64::MAX).unwrap();
        for i in 0..series {
            let points: Vec<Sample> =
                (0..samples).map(|k| Sample { t: k * 15_000, v: (k * i as i64) as f64 / 4.0 }).collect();
            writer.add(&labels(i), &points).unwrap();
        }
        writer.finish().unwrap().unwrap()
    }

    #[test]
    fn written_blocks_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let meta = write(dir.path(), 500, 240);
        assert_eq!((meta.series, meta.samples, meta.min_time, meta.max_time), (500, 120_000, 0, 239 * 15_000));
        let block = Block::open(&dir.path().join("b1")).unwrap();
        let found = block.select(&[Matcher::equal("i", "00123")], 15_000, 30_000).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].samples, [Sample { t: 15_000, v: 123.0 / 4.0 }, Sample { t: 30_000, v: 246.0 / 4.0 }]);
        assert_eq!(block.all_series().unwrap().len(), 500);
        assert!(!dir.path().join("b1.tmp").exists());
        let bytes_per_sample = block.size_bytes() as f64 / 120_000.0;
        assert!(bytes_per_sample < 1.0, "{bytes_per_sample} bytes per sample");
    }

    #[test]
    fn a_flipped_byte_is_reported_as_corruption() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 50, 100);
        let chunks = dir.path().join("b1/chunks");
        let mut bytes = fs::read(&chunks).unwrap();
        bytes[10] ^= 1;
        fs::write(&chunks, bytes).unwrap();
        let block = Block::open(&dir.path().join("b1")).unwrap();
        let error = block.all_series().unwrap_err();
        assert!(matches!(error, Error::Corruption { .. }), "{error}");
        let index = dir.path().join("b1/index");
        let mut bytes = fs::read(&index).unwrap();
        bytes[12] ^= 1;
        fs::write(&index, bytes).unwrap();
        let error = Block::open(&dir.path().join("b1")).unwrap_err();
        assert!(error.to_string().contains("index checksum mismatch"), "{error}");
    }

    #[test]
    fn an_empty_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let writer = BlockWriter::create(dir.path(), "empty", 1, Vec::new(), 0).unwrap();
        assert!(writer.finish().unwrap().is_none());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
