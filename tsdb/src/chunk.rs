//! Compressed sample chunks.
//!
//! A chunk is a self-describing byte string: one encoding byte, a `u16` sample count (big endian), then
//! the encoded samples. Encoding [`ENCODING_XOR`] is delta-of-delta timestamps and XOR'd floats in the
//! style of Facebook's Gorilla paper; later encodings (native histograms, decimal floats) take new
//! encoding bytes, so stored chunks never change meaning.

use crate::bitstream::{BitReader, BitWriter};
use crate::varint::{put_uvarint, put_varint, uvarint, varint};
use crate::{Sample, Timestamp};

/// Encoding byte of float chunks: delta-of-delta timestamps, XOR values.
pub const ENCODING_XOR: u8 = 1;

const HEADER_LEN: usize = 3;

/// Samples a head chunk takes before it is closed and a new one is started.
pub const SAMPLES_PER_CHUNK: usize = 120;

/// Appends samples in increasing time order to a chunk under construction.
#[derive(Debug, Clone)]
pub struct XorAppender {
    bits: BitWriter,
    count: u16,
    last_t: Timestamp,
    last_delta: i64,
    last_value_bits: u64,
    leading: u8,
    trailing: u8,
    min_t: Timestamp,
}

impl Default for XorAppender {
    fn default() -> Self {
        let mut bits = BitWriter::default();
        bits.write_bits(u64::from(ENCODING_XOR), 8);
        bits.write_bits(0, 16);
        XorAppender {
            bits,
            count: 0,
            last_t: 0,
            last_delta: 0,
            last_value_bits: 0,
            leading: u8::MAX,
            trailing: 0,
            min_t: 0,
        }
    }
}

impl XorAppender {
    /// Number of samples so far.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// True before the first append.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Time of the first sample (meaningless when empty).
    pub fn min_time(&self) -> Timestamp {
        self.min_t
    }

    /// Time of the last sample (meaningless when empty).
    pub fn max_time(&self) -> Timestamp {
        self.last_t
    }

    /// Appends a sample; `t` must be greater than the previous sample's.
    pub fn append(&mut self, t: Timestamp, v: f64) {
        debug_assert!(self.count == 0 || t > self.last_t, "samples must be appended in time order");
        let value_bits = v.to_bits();
        match self.count {
            0 => {
                let mut header = Vec::with_capacity(18);
                put_varint(&mut header, t);
                header.extend_from_slice(&value_bits.to_be_bytes());
                for byte in header {
                    self.bits.write_bits(u64::from(byte), 8);
                }
                self.min_t = t;
            }
            1 => {
                let delta = t - self.last_t;
                let mut header = Vec::with_capacity(10);
                put_uvarint(&mut header, delta as u64);
                for byte in header {
                    self.bits.write_bits(u64::from(byte), 8);
                }
                self.write_value(value_bits);
                self.last_delta = delta;
            }
            _ => {
                let delta = t - self.last_t;
                self.write_delta_of_delta(delta - self.last_delta);
                self.write_value(value_bits);
                self.last_delta = delta;
            }
        }
        self.last_t = t;
        self.last_value_bits = value_bits;
        self.count += 1;
    }

    fn write_delta_of_delta(&mut self, dod: i64) {
        let bits = &mut self.bits;
        match dod {
            0 => bits.write_bit(false),
            -8191..=8192 => {
                bits.write_bits(0b10, 2);
                bits.write_bits(dod as u64, 14);
            }
            -65535..=65536 => {
                bits.write_bits(0b110, 3);
                bits.write_bits(dod as u64, 17);
            }
            -524287..=524288 => {
                bits.write_bits(0b1110, 4);
                bits.write_bits(dod as u64, 20);
            }
            _ => {
                bits.write_bits(0b1111, 4);
                bits.write_bits(dod as u64, 64);
            }
        }
    }

    fn write_value(&mut self, value_bits: u64) {
        let xor = value_bits ^ self.last_value_bits;
        if xor == 0 {
            self.bits.write_bit(false);
            return;
        }
        self.bits.write_bit(true);
        let leading = (xor.leading_zeros() as u8).min(31);
        let trailing = xor.trailing_zeros() as u8;
        if self.leading != u8::MAX && leading >= self.leading && trailing >= self.trailing {
            // The meaningful bits fit in the previous window: reuse it.
            self.bits.write_bit(false);
            let width = 64 - self.leading - self.trailing;
            self.bits.write_bits(xor >> self.trailing, width);
            return;
        }
        self.bits.write_bit(true);
        let width = 64 - leading - trailing;
        self.bits.write_bits(u64::from(leading), 5);
        // A width of 64 is written as 0: it cannot otherwise occur (xor != 0).
        self.bits.write_bits(u64::from(width % 64), 6);
        self.bits.write_bits(xor >> trailing, width);
        self.leading = leading;
        self.trailing = trailing;
    }

    /// The chunk's bytes as they stand (the sample count in the header is current).
    pub fn bytes(&self) -> Vec<u8> {
        let mut bytes = self.bits.bytes().to_vec();
        bytes[1..HEADER_LEN].copy_from_slice(&self.count.to_be_bytes());
        bytes
    }

    /// Bytes used so far.
    pub fn size(&self) -> usize {
        self.bits.bytes().len()
    }
}

/// Why a chunk could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The encoding byte is not one this version knows.
    #[error("unknown chunk encoding {0}")]
    UnknownEncoding(u8),
    /// The bytes end before the header's sample count is reached.
    #[error("chunk truncated after {decoded} of {expected} samples")]
    Truncated {
        /// Samples decoded before the end.
        decoded: usize,
        /// Samples the header promised.
        expected: usize,
    },
}

/// Number of samples a chunk holds, from its header.
pub fn sample_count(chunk: &[u8]) -> usize {
    chunk.get(1..HEADER_LEN).map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])))
}

/// Decodes every sample of a chunk.
pub fn decode(chunk: &[u8]) -> Result<Vec<Sample>, ChunkError> {
    let mut samples = Vec::with_capacity(sample_count(chunk));
    for sample in iter(chunk)? {
        samples.push(sample?);
    }
    Ok(samples)
}

/// Iterates over a chunk's samples lazily.
pub fn iter(chunk: &[u8]) -> Result<XorIterator<'_>, ChunkError> {
    let encoding = chunk.first().copied().unwrap_or(0);
    if encoding != ENCODING_XOR {
        return Err(ChunkError::UnknownEncoding(encoding));
    }
    Ok(XorIterator {
        reader: BitReader::new(chunk),
        started: false,
        expected: sample_count(chunk),
        decoded: 0,
        t: 0,
        delta: 0,
        value_bits: 0,
        leading: 0,
        trailing: 0,
        body: chunk,
    })
}

/// Lazy decoder of an [`ENCODING_XOR`] chunk.
#[derive(Debug, Clone)]
pub struct XorIterator<'a> {
    reader: BitReader<'a>,
    body: &'a [u8],
    started: bool,
    expected: usize,
    decoded: usize,
    t: Timestamp,
    delta: i64,
    value_bits: u64,
    leading: u8,
    trailing: u8,
}

impl XorIterator<'_> {
    fn truncated(&self) -> ChunkError {
        ChunkError::Truncated { decoded: self.decoded, expected: self.expected }
    }

    fn read_varint_bytes(&mut self, signed: bool) -> Option<i64> {
        let mut buf = Vec::with_capacity(10);
        loop {
            let byte = self.reader.read_bits(8)? as u8;
            buf.push(byte);
            if byte < 0x80 || buf.len() == 10 {
                break;
            }
        }
        let mut pos = 0;
        if signed { varint(&buf, &mut pos) } else { uvarint(&buf, &mut pos).map(|v| v as i64) }
    }

    fn next_sample(&mut self) -> Option<Sample> {
        if !self.started {
            self.started = true;
            self.reader = BitReader::new(self.body);
            self.reader.read_bits(8 * HEADER_LEN as u8)?;
        }
        match self.decoded {
            0 => {
                self.t = self.read_varint_bytes(true)?;
                self.value_bits = self.reader.read_bits(64)?;
            }
            1 => {
                self.delta = self.read_varint_bytes(false)?;
                self.t += self.delta;
                self.read_value()?;
            }
            _ => {
                let dod = self.read_delta_of_delta()?;
                self.delta += dod;
                self.t += self.delta;
                self.read_value()?;
            }
        }
        Some(Sample { t: self.t, v: f64::from_bits(self.value_bits) })
    }

    fn read_delta_of_delta(&mut self) -> Option<i64> {
        let mut prefix = 0;
        while prefix < 4 && self.reader.read_bit()? {
            prefix += 1;
        }
        let width = match prefix {
            0 => return Some(0),
            1 => 14,
            2 => 17,
            3 => 20,
            _ => 64,
        };
        let raw = self.reader.read_bits(width)?;
        if width == 64 {
            return Some(raw as i64);
        }
        // The writer's ranges are -(2^(w-1) - 1) ..= 2^(w-1), so the pattern 2^(w-1) is the positive end,
        // not the negative one a plain sign extension would make it.
        let half = 1u64 << (width - 1);
        Some(if raw > half { raw as i64 - (1i64 << width) } else { raw as i64 })
    }

    fn read_value(&mut self) -> Option<()> {
        if !self.reader.read_bit()? {
            return Some(());
        }
        if self.reader.read_bit()? {
            self.leading = self.reader.read_bits(5)? as u8;
            let mut width = self.reader.read_bits(6)? as u8;
            if width == 0 {
                width = 64;
            }
            self.trailing = 64 - self.leading - width;
        }
        let width = 64 - self.leading - self.trailing;
        let meaningful = self.reader.read_bits(width)?;
        self.value_bits ^= meaningful << self.trailing;
        Some(())
    }
}

impl Iterator for XorIterator<'_> {
    type Item = Result<Sample, ChunkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.decoded >= self.expected {
            return None;
        }
        let Some(sample) = self.next_sample() else {
            self.decoded = self.expected;
            return Some(Err(self.truncated()));
        };
        self.decoded += 1;
        Some(Ok(sample))
    }
}

/// Encodes samples (strictly increasing in time) into one chunk.
pub fn encode(samples: &[Sample]) -> Vec<u8> {
    let mut appender = XorAppender::default();
    for sample in samples {
        appender.append(sample.t, sample.v);
    }
    appender.bytes()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::STALE_NAN_BITS;

    fn same(a: &[Sample], b: &[Sample]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.t == y.t && x.v.to_bits() == y.v.to_bits())
    }

    #[test]
    fn delta_of_delta_range_ends_round_trip() {
        // 8192, 65536 and 524288 are the positive ends of the 14-, 17- and 20-bit ranges.
        for dod in [8192i64, -8191, 65536, -65535, 524288, -524287, 8193, -8192] {
            let delta = 1_000_000;
            let samples =
                [Sample { t: 1, v: 0.0 }, Sample { t: 1 + delta, v: 0.0 }, Sample { t: 1 + 2 * delta + dod, v: 0.0 }];
            assert!(same(&decode(&encode(&samples)).unwrap(), &samples), "delta of delta {dod}");
        }
    }

    #[test]
    fn regular_series_compress_well() {
        let samples: Vec<Sample> =
            (0..120).map(|i| Sample { t: 1_700_000_000_000 + i * 15_000, v: (i / 10) as f64 }).collect();
        let bytes = encode(&samples);
        assert!(bytes.len() < 120 * 2, "{} bytes for 120 regular samples", bytes.len());
        assert!(same(&decode(&bytes).unwrap(), &samples));
    }

    #[test]
    fn staleness_marker_survives_bit_exact() {
        let samples =
            [Sample { t: 1, v: 1.0 }, Sample { t: 2, v: f64::from_bits(STALE_NAN_BITS) }, Sample { t: 3, v: f64::NAN }];
        let decoded = decode(&encode(&samples)).unwrap();
        assert_eq!(decoded[1].v.to_bits(), STALE_NAN_BITS);
        assert!(same(&decoded, &samples));
    }

    #[test]
    fn truncated_chunk_is_an_error() {
        let samples: Vec<Sample> = (0..10).map(|i| Sample { t: i * 1000, v: i as f64 * 1.5 }).collect();
        let bytes = encode(&samples);
        let err = decode(&bytes[..bytes.len() - 3]).unwrap_err();
        assert!(matches!(err, ChunkError::Truncated { expected: 10, .. }), "{err}");
    }

    #[test]
    fn unknown_encoding_is_an_error() {
        assert_eq!(decode(&[9, 0, 0]).unwrap_err(), ChunkError::UnknownEncoding(9));
    }

    fn arb_samples() -> impl Strategy<Value = Vec<Sample>> {
        let value = prop_oneof![
            any::<f64>(),
            (0i64..1000).prop_map(|v| v as f64),
            Just(f64::from_bits(STALE_NAN_BITS)),
            Just(f64::INFINITY),
        ];
        let step = prop_oneof![1i64..100_000, Just(15_000), 1i64..(1 << 40)];
        (any::<i32>(), prop::collection::vec((step, value), 0..SAMPLES_PER_CHUNK)).prop_map(|(start, steps)| {
            let mut t = i64::from(start);
            steps
                .into_iter()
                .map(|(step, v)| {
                    t += step;
                    Sample { t, v }
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn round_trip(samples in arb_samples()) {
            let decoded = decode(&encode(&samples)).unwrap();
            prop_assert!(same(&decoded, &samples));
        }
    }
}
