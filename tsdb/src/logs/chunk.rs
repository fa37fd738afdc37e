//! Sealed chunks: the records of one stream over a stretch of time, laid out column by column (times,
//! line shapes and slot values, metadata) and zstd-compressed together, each part of a column (a byte
//! plane, a column's lengths, its text) in blocks of its own, with the stream's labels and a Bloom filter
//! of the chunk's high-cardinality tokens in front.
//!
//! An entry in a partition's `chunks.dat`:
//!
//! ```text
//! u32 length of the rest | u32 crc32 of the rest | rest:
//!   uvarint labels length, labels | uvarint bloom length, bloom | uvarint raw length
//!   | zstd frame of the columns
//! ```

use std::collections::BTreeMap;

use super::shapes::{self, Shaped};
use crate::varint::{put_uvarint, uvarint};

/// A stable 64-bit hash (the same in every build): Bloom filters and stream keys are kept on disk.
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut hash = 0x9e37_79b9_7f4a_7c15 ^ bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        hash = (hash.rotate_left(5) ^ u64::from_le_bytes(word.try_into().expect("8 bytes"))).wrapping_mul(K);
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    hash = (hash.rotate_left(5) ^ u64::from_le_bytes(tail)).wrapping_mul(K);
    // splitmix64's finalizer spreads every input bit over the output.
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// Bits per key and probes: about a 2% false-positive rate (a chunk read for nothing now and then, against
/// a filter that is a tenth of the store at 10 bits).
const BLOOM_BITS_PER_KEY: usize = 8;
const BLOOM_PROBES: u64 = 6;

/// The bit positions a key's hash sets in a filter of `bits` bits (double hashing).
fn probes(hash: u64, bits: u64) -> impl Iterator<Item = u64> {
    let (first, step) = (hash & 0xffff_ffff, (hash >> 32) | 1);
    (0..BLOOM_PROBES).map(move |i| first.wrapping_add(i.wrapping_mul(step)) % bits)
}

/// Builds a Bloom filter over key hashes, as bytes.
pub(crate) fn bloom(hashes: &[u64]) -> Vec<u8> {
    if hashes.is_empty() {
        return Vec::new();
    }
    let mut filter = vec![0u8; (hashes.len() * BLOOM_BITS_PER_KEY).div_ceil(8)];
    let bits = filter.len() as u64 * 8;
    for &hash in hashes {
        for bit in probes(hash, bits) {
            filter[(bit / 8) as usize] |= 1 << (bit % 8);
        }
    }
    filter
}

/// Whether a filter may hold the key with `hash` (an empty filter holds nothing).
pub(crate) fn bloom_may_contain(filter: &[u8], hash: u64) -> bool {
    if filter.is_empty() {
        return false;
    }
    let bits = filter.len() as u64 * 8;
    probes(hash, bits).all(|bit| filter[(bit / 8) as usize] & (1 << (bit % 8)) != 0)
}

/// One record of a chunk, borrowed from where it is held.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ChunkRecord<'a> {
    pub ts_ns: i64,
    pub line: &'a str,
    pub metadata: &'a BTreeMap<String, String>,
}

/// Writes labels (or metadata) as a count and length-prefixed names and values.
pub(crate) fn put_pairs(out: &mut Vec<u8>, pairs: &BTreeMap<String, String>) {
    put_uvarint(out, pairs.len() as u64);
    for (name, value) in pairs {
        put_bytes(out, name.as_bytes());
        put_bytes(out, value.as_bytes());
    }
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_uvarint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

pub(crate) fn bytes<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let len = uvarint(buf, pos)? as usize;
    let slice = buf.get(*pos..pos.checked_add(len)?)?;
    *pos += len;
    Some(slice)
}

pub(crate) fn text<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a str> {
    std::str::from_utf8(bytes(buf, pos)?).ok()
}

pub(crate) fn pairs(buf: &[u8], pos: &mut usize) -> Option<BTreeMap<String, String>> {
    let count = uvarint(buf, pos)?;
    let mut out = BTreeMap::new();
    for _ in 0..count {
        let name = text(buf, pos)?.to_owned();
        out.insert(name, text(buf, pos)?.to_owned());
    }
    Some(out)
}

/// Uncompressed columns, with where each part ends: a part holds one kind of byte (a plane of numbers, a
/// column's lengths, its text), and [`compress`] gives each its own zstd blocks, so each is
/// entropy-coded with its own statistics rather than those of its neighbours (random low bytes next to
/// nearly constant high ones).
#[derive(Default)]
pub(crate) struct Parts {
    pub bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Parts {
    /// Ends the current part.
    pub(crate) fn end(&mut self) {
        self.ends.push(self.bytes.len());
    }
}

/// Parts shorter than this are joined to the next: a block of their own would cost more than it saves.
const MIN_PART_BYTES: usize = 256;

/// Compresses `parts` into one zstd frame (one context, so later parts still reuse earlier ones), ending
/// a block after each part of at least [`MIN_PART_BYTES`].
pub(crate) fn compress(encoder: &mut zstd::stream::raw::Encoder<'_>, parts: &Parts) -> std::io::Result<Vec<u8>> {
    use zstd::stream::raw::{InBuffer, Operation};
    encoder.reinit()?;
    encoder.set_pledged_src_size(Some(parts.bytes.len() as u64))?;
    let bound = zstd::zstd_safe::compress_bound(parts.bytes.len());
    let mut out: Vec<u8> = Vec::with_capacity(bound + 64 * (parts.ends.len() + 1));
    let mut from = 0;
    for cut in parts.ends.iter().copied().chain([parts.bytes.len()]) {
        if cut < from + MIN_PART_BYTES && cut < parts.bytes.len() {
            continue;
        }
        let mut input = InBuffer::around(&parts.bytes[from..cut]);
        while input.pos() < input.src.len() {
            drain(&mut out, |buffer| encoder.run(&mut input, buffer).map(|_| 0))?;
        }
        from = cut;
        drain(&mut out, |buffer| encoder.flush(buffer))?;
    }
    drain(&mut out, |buffer| encoder.finish(buffer, true))?;
    Ok(out)
}

/// Runs a zstd step into the free room of `out` until it has nothing left to write, making room as
/// needed.
fn drain(
    out: &mut Vec<u8>,
    mut step: impl FnMut(&mut zstd::stream::raw::OutBuffer<'_, Vec<u8>>) -> std::io::Result<usize>,
) -> std::io::Result<()> {
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(64 * 1024);
        }
        let filled = out.len();
        if step(&mut zstd::stream::raw::OutBuffer::around_pos(out, filled))? == 0 {
            return Ok(());
        }
    }
}

/// The columns of `records`, uncompressed: times, the lines as [`shapes`], metadata. `shaped` holds the
/// records' lines split into shapes.
pub(crate) fn encode_columns(records: &[ChunkRecord<'_>], shaped: &Shaped<'_>, out: &mut Parts) {
    put_uvarint(&mut out.bytes, records.len() as u64);
    let times: Vec<u64> = records.iter().map(|r| r.ts_ns as u64).collect();
    if !records.is_empty() {
        shapes::put_numbers(&times, None, out);
    }
    shapes::encode(shaped, &times, out);
    for record in records {
        put_pairs(&mut out.bytes, record.metadata);
    }
}

/// A decoded chunk: times, lines (one text, cut at `ends`) and metadata.
pub(crate) struct Columns {
    pub times: Vec<i64>,
    text: String,
    ends: Vec<usize>,
    pub metadata: Vec<BTreeMap<String, String>>,
}

impl Columns {
    /// The buffer the lines were laid out in, for the next decoding.
    pub(crate) fn into_text(self) -> String {
        self.text
    }

    /// The lines, in record order.
    pub(crate) fn lines(&self) -> impl Iterator<Item = &str> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let line = &self.text[start..end];
            start = end;
            line
        })
    }
}

/// Reads the columns [`encode_columns`] wrote, laying the lines out in `text` (cleared first); `None` if
/// they are damaged.
pub(crate) fn decode_columns(buf: &[u8], mut text: String) -> Option<Columns> {
    let mut pos = 0;
    let count = uvarint(buf, &mut pos)? as usize;
    if count > buf.len() {
        return None;
    }
    let times: Vec<u64> = match count {
        0 => Vec::new(),
        _ => shapes::numbers(buf, &mut pos, count, None)?,
    };
    text.clear();
    let ends = shapes::decode(buf, &mut pos, &times, &mut text)?;
    let times = times.into_iter().map(|t| t as i64).collect();
    let mut metadata = Vec::with_capacity(count);
    for _ in 0..count {
        metadata.push(pairs(buf, &mut pos)?);
    }
    Some(Columns { times, text, ends, metadata })
}

/// The parts of an entry in front of its compressed columns.
pub(crate) struct EntryHead<'a> {
    pub labels: &'a [u8],
    pub bloom: &'a [u8],
    pub raw_len: usize,
    pub compressed: &'a [u8],
}

/// Frames an entry: length, checksum, labels, bloom, raw length, compressed columns.
pub(crate) fn encode_entry(labels: &[u8], bloom: &[u8], raw_len: usize, compressed: &[u8]) -> Vec<u8> {
    let mut rest = Vec::with_capacity(labels.len() + bloom.len() + compressed.len() + 32);
    put_bytes(&mut rest, labels);
    put_bytes(&mut rest, bloom);
    put_uvarint(&mut rest, raw_len as u64);
    rest.extend_from_slice(compressed);
    let mut entry = Vec::with_capacity(rest.len() + 8);
    entry.extend_from_slice(&(rest.len() as u32).to_le_bytes());
    entry.extend_from_slice(&crc32fast::hash(&rest).to_le_bytes());
    entry.extend_from_slice(&rest);
    entry
}

/// Splits the rest of an entry (after the length) into its parts; `None` if the checksum or a length is
/// wrong.
pub(crate) fn decode_entry(with_crc: &[u8]) -> Option<EntryHead<'_>> {
    let crc = u32::from_le_bytes(with_crc.get(..4)?.try_into().ok()?);
    let rest = &with_crc[4..];
    if crc32fast::hash(rest) != crc {
        return None;
    }
    let mut pos = 0;
    let labels = bytes(rest, &mut pos)?;
    let bloom = bytes(rest, &mut pos)?;
    let raw_len = uvarint(rest, &mut pos)? as usize;
    Some(EntryHead { labels, bloom, raw_len, compressed: &rest[pos..] })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_bloom_filter_holds_its_keys_and_rarely_others() {
        let keys: Vec<u64> = (0..1000u64).map(|i| stable_hash(format!("key-{i}").as_bytes())).collect();
        let filter = bloom(&keys);
        assert!(keys.iter().all(|&k| bloom_may_contain(&filter, k)));
        let false_positives =
            (0..10_000u64).filter(|i| bloom_may_contain(&filter, stable_hash(format!("other-{i}").as_bytes()))).count();
        assert!(false_positives < 350, "{false_positives} false positives in 10,000");
        assert!(!bloom_may_contain(&bloom(&[]), keys[0]));
    }

    #[test]
    fn the_hash_is_stable() {
        assert_eq!(stable_hash(b""), stable_hash(b""));
        assert_ne!(stable_hash(b"a"), stable_hash(b"b"));
        assert_ne!(stable_hash(b"12345678a"), stable_hash(b"12345678b"));
        // Fixed value: changing the function would misread every filter on disk.
        assert_eq!(stable_hash(b"trace"), 0x3f8b_a485_2b26_5581, "{:#x}", stable_hash(b"trace"));
    }

    /// A plane of random low bytes, then a plane of high bytes that take four values.
    fn planes() -> Parts {
        let mut parts = Parts::default();
        let values: Vec<u64> = (0..4096u64).map(|i| stable_hash(&i.to_le_bytes()) % 1024).collect();
        for plane in 0..2 {
            parts.bytes.extend(values.iter().map(|v| (v >> (8 * plane)) as u8));
            parts.end();
        }
        parts
    }

    #[test]
    fn each_part_is_compressed_on_its_own() {
        let mut encoder = zstd::stream::raw::Encoder::new(3).unwrap();
        let parts = planes();
        let by_part = compress(&mut encoder, &parts).unwrap();
        let whole = zstd::bulk::compress(&parts.bytes, 3).unwrap();
        assert!(by_part.len() + 256 < whole.len(), "{} bytes by part, {} whole", by_part.len(), whole.len());
        // The encoder starts a fresh frame each time.
        for _ in 0..2 {
            let again = compress(&mut encoder, &parts).unwrap();
            assert_eq!(zstd::bulk::decompress(&again, parts.bytes.len()).unwrap(), parts.bytes);
        }
        let tiny = Parts { bytes: b"abc".to_vec(), ends: vec![1, 2] };
        let compressed = compress(&mut encoder, &tiny).unwrap();
        assert_eq!(zstd::bulk::decompress(&compressed, 3).unwrap(), b"abc");
    }

    #[test]
    fn a_damaged_entry_is_refused() {
        let entry = encode_entry(b"labels", b"bloom", 3, b"abc");
        assert!(decode_entry(&entry[4..]).is_some());
        let mut damaged = entry.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(decode_entry(&damaged[4..]).is_none());
    }

    proptest! {
        /// Columns decode to the records they were made from.
        #[test]
        fn columns_round_trip(
            records in proptest::collection::vec(
                (any::<i64>(), ".{0,30}", proptest::collection::btree_map("[a-z]{1,5}", ".{0,8}", 0..3)),
                0..40,
            )
        ) {
            let borrowed: Vec<ChunkRecord<'_>> = records
                .iter()
                .map(|(ts_ns, line, metadata)| ChunkRecord { ts_ns: *ts_ns, line, metadata })
                .collect();
            let mut parts = Parts::default();
            encode_columns(&borrowed, &shapes::shape(borrowed.iter().map(|r| r.line)), &mut parts);
            let compressed = compress(&mut zstd::stream::raw::Encoder::new(3).unwrap(), &parts).unwrap();
            let raw = zstd::bulk::decompress(&compressed, parts.bytes.len()).unwrap();
            prop_assert_eq!(&raw, &parts.bytes);
            let columns = decode_columns(&raw, String::new()).unwrap();
            prop_assert_eq!(columns.lines().collect::<Vec<_>>(), records.iter().map(|r| r.1.as_str()).collect::<Vec<_>>());
            prop_assert_eq!(columns.times, records.iter().map(|r| r.0).collect::<Vec<_>>());
            prop_assert_eq!(columns.metadata, records.iter().map(|r| r.2.clone()).collect::<Vec<_>>());
        }
    }
}
