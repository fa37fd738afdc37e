//! The block encoding of one series' samples: denser than head chunks because it sees them all at once.
//!
//! Layout: `count` (varint), `first_t` (varint), then `count - 1` delta-of-delta timestamps (zigzag
//! varints), one value-encoding byte, then the values:
//! - [`VALUES_DECIMAL`]: an exponent byte `e`; the number of staleness markers and their indexes
//!   (varints); then `round(v * 10^e)` of the other values as zigzag deltas from the previous one. Chosen
//!   when every value reads back bit for bit, which holds for counters and most gauges.
//! - [`VALUES_XOR`]: the byte length, then Gorilla XOR floats as in head chunks.

use crate::bitstream::{BitReader, BitWriter};
use crate::varint::{put_uvarint, put_varint, uvarint, varint};
use crate::{STALE_NAN_BITS, Sample};

/// Values as scaled integers with deltas.
pub const VALUES_DECIMAL: u8 = 1;
/// Values as XOR'd floats.
pub const VALUES_XOR: u8 = 2;

const MAX_EXPONENT: i32 = 12;
/// Integers beyond this lose precision in f64.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// The smallest decimal exponent at which `v` is an exact integer, if any within range.
fn decimal_exponent(v: f64) -> Option<i32> {
    if !v.is_finite() {
        return None;
    }
    let mut scale = 1.0f64;
    for exponent in 0..=MAX_EXPONENT {
        // Division by a power of ten is correctly rounded, so this asks whether `v` is the double
        // nearest to some integer / 10^exponent.
        let scaled = (v * scale).round();
        if scaled.abs() >= MAX_EXACT {
            return None;
        }
        if scaled / scale == v {
            return Some(exponent);
        }
        scale *= 10.0;
    }
    None
}

/// Scaled integers for all non-stale values, with the stale positions, if they all round-trip.
fn as_decimals(samples: &[Sample]) -> Option<(i32, Vec<i64>, Vec<usize>)> {
    let mut exponent = 0;
    let mut stale = Vec::new();
    for (index, sample) in samples.iter().enumerate() {
        if sample.v.to_bits() == STALE_NAN_BITS {
            stale.push(index);
            continue;
        }
        exponent = exponent.max(decimal_exponent(sample.v)?);
    }
    let scale = 10f64.powi(exponent);
    let mut ints = Vec::with_capacity(samples.len() - stale.len());
    for sample in samples.iter().filter(|s| s.v.to_bits() != STALE_NAN_BITS) {
        let scaled = (sample.v * scale).round();
        if scaled.abs() >= MAX_EXACT || scaled / scale != sample.v || (sample.v == 0.0 && sample.v.is_sign_negative()) {
            return None;
        }
        ints.push(scaled as i64);
    }
    Some((exponent, ints, stale))
}

/// Encodes samples (strictly increasing in time) and appends them to `out`.
pub fn encode(samples: &[Sample], out: &mut Vec<u8>) {
    put_uvarint(out, samples.len() as u64);
    let Some(first) = samples.first() else { return };
    put_varint(out, first.t);
    let mut previous_delta = 0i64;
    for pair in samples.windows(2) {
        let delta = pair[1].t - pair[0].t;
        put_varint(out, delta - previous_delta);
        previous_delta = delta;
    }
    match as_decimals(samples) {
        Some((exponent, ints, stale)) => {
            out.push(VALUES_DECIMAL);
            out.push(exponent as u8);
            put_uvarint(out, stale.len() as u64);
            for index in stale {
                put_uvarint(out, index as u64);
            }
            let mut previous = 0i64;
            for value in ints {
                put_varint(out, value.wrapping_sub(previous));
                previous = value;
            }
        }
        None => {
            out.push(VALUES_XOR);
            let mut bits = BitWriter::default();
            let mut previous = 0u64;
            let (mut leading, mut trailing) = (u8::MAX, 0u8);
            for sample in samples {
                let value = sample.v.to_bits();
                write_xor(&mut bits, value ^ previous, &mut leading, &mut trailing);
                previous = value;
            }
            let bytes = bits.bytes();
            put_uvarint(out, bytes.len() as u64);
            out.extend_from_slice(bytes);
        }
    }
}

fn write_xor(bits: &mut BitWriter, xor: u64, leading_window: &mut u8, trailing_window: &mut u8) {
    if xor == 0 {
        bits.write_bit(false);
        return;
    }
    bits.write_bit(true);
    let leading = (xor.leading_zeros() as u8).min(31);
    let trailing = xor.trailing_zeros() as u8;
    if *leading_window != u8::MAX && leading >= *leading_window && trailing >= *trailing_window {
        bits.write_bit(false);
        bits.write_bits(xor >> *trailing_window, 64 - *leading_window - *trailing_window);
        return;
    }
    bits.write_bit(true);
    let width = 64 - leading - trailing;
    bits.write_bits(u64::from(leading), 5);
    bits.write_bits(u64::from(width % 64), 6);
    bits.write_bits(xor >> trailing, width);
    *leading_window = leading;
    *trailing_window = trailing;
}

/// Decodes what [`encode`] wrote at `*pos`, advancing it; `None` for malformed bytes.
pub fn decode(bytes: &[u8], pos: &mut usize) -> Option<Vec<Sample>> {
    let count = usize::try_from(uvarint(bytes, pos)?).ok()?;
    if count == 0 {
        return Some(Vec::new());
    }
    if count > bytes.len().saturating_mul(8) {
        return None;
    }
    let mut times = Vec::with_capacity(count);
    let mut t = varint(bytes, pos)?;
    times.push(t);
    let mut delta = 0i64;
    for _ in 1..count {
        delta = delta.checked_add(varint(bytes, pos)?)?;
        t = t.checked_add(delta)?;
        times.push(t);
    }
    let encoding = *bytes.get(*pos)?;
    *pos += 1;
    let values = match encoding {
        VALUES_DECIMAL => decode_decimals(bytes, pos, count)?,
        VALUES_XOR => decode_xor(bytes, pos, count)?,
        _ => return None,
    };
    Some(times.into_iter().zip(values).map(|(t, v)| Sample { t, v }).collect())
}

fn decode_decimals(bytes: &[u8], pos: &mut usize, count: usize) -> Option<Vec<f64>> {
    let exponent = i32::from(*bytes.get(*pos)?);
    *pos += 1;
    if exponent > MAX_EXPONENT {
        return None;
    }
    let scale = 10f64.powi(exponent);
    let stale_count = usize::try_from(uvarint(bytes, pos)?).ok()?;
    if stale_count > count {
        return None;
    }
    let mut stale = Vec::with_capacity(stale_count);
    for _ in 0..stale_count {
        stale.push(usize::try_from(uvarint(bytes, pos)?).ok()?);
    }
    let mut decoded = Vec::with_capacity(count);
    let mut previous = 0i64;
    let mut next_stale = stale.iter().peekable();
    for index in 0..count {
        if next_stale.next_if(|stale_index| **stale_index == index).is_some() {
            decoded.push(f64::from_bits(STALE_NAN_BITS));
            continue;
        }
        previous = previous.wrapping_add(varint(bytes, pos)?);
        decoded.push(previous as f64 / scale);
    }
    Some(decoded)
}

fn decode_xor(bytes: &[u8], pos: &mut usize, count: usize) -> Option<Vec<f64>> {
    let len = usize::try_from(uvarint(bytes, pos)?).ok()?;
    let body = bytes.get(*pos..pos.checked_add(len)?)?;
    *pos += len;
    let mut reader = BitReader::new(body);
    let mut values = Vec::with_capacity(count);
    let mut value = 0u64;
    let (mut leading, mut trailing) = (0u8, 0u8);
    for _ in 0..count {
        if reader.read_bit()? {
            if reader.read_bit()? {
                leading = reader.read_bits(5)? as u8;
                let mut width = reader.read_bits(6)? as u8;
                if width == 0 {
                    width = 64;
                }
                trailing = 64u8.checked_sub(leading)?.checked_sub(width)?;
            }
            let width = 64 - leading - trailing;
            value ^= reader.read_bits(width)? << trailing;
        }
        values.push(f64::from_bits(value));
    }
    Some(values)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn round_trip(samples: &[Sample]) -> Vec<Sample> {
        let mut bytes = Vec::new();
        encode(samples, &mut bytes);
        let mut pos = 0;
        let decoded = decode(&bytes, &mut pos).unwrap();
        assert_eq!(pos, bytes.len());
        decoded
    }

    fn same(a: &[Sample], b: &[Sample]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.t == y.t && x.v.to_bits() == y.v.to_bits())
    }

    #[test]
    fn decimal_values_take_the_dense_path() {
        let samples: Vec<Sample> =
            (0..240).map(|i| Sample { t: 1_700_000_000_000 + i * 15_000, v: (i * 37) as f64 / 100.0 }).collect();
        let mut bytes = Vec::new();
        encode(&samples, &mut bytes);
        assert!(bytes.contains(&VALUES_DECIMAL));
        assert!(bytes.len() < 240 * 3, "{} bytes", bytes.len());
        assert!(same(&round_trip(&samples), &samples));
    }

    #[test]
    fn stale_markers_keep_the_dense_path() {
        let samples =
            [Sample { t: 1, v: 1.5 }, Sample { t: 2, v: f64::from_bits(STALE_NAN_BITS) }, Sample { t: 3, v: 2.5 }];
        assert!(same(&round_trip(&samples), &samples));
    }

    #[test]
    fn awkward_floats_fall_back_to_xor() {
        let samples = [Sample { t: 1, v: 0.1 + 0.2 }, Sample { t: 2, v: f64::NAN }, Sample { t: 3, v: -0.0 }];
        assert!(same(&round_trip(&samples), &samples));
    }

    fn arb_value() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            (-1_000_000i64..1_000_000).prop_map(|v| v as f64),
            (-100_000i64..100_000).prop_map(|v| v as f64 / 100.0),
            Just(f64::from_bits(STALE_NAN_BITS)),
            Just(f64::INFINITY),
            Just(-0.0),
        ]
    }

    proptest! {
        #[test]
        fn any_series_round_trips(start in -1_000_000_000_000i64..1_000_000_000_000, steps in prop::collection::vec((1i64..1_000_000, arb_value()), 0..300)) {
            let mut t = start;
            let samples: Vec<Sample> = steps.into_iter().map(|(step, v)| { t += step; Sample { t, v } }).collect();
            prop_assert!(same(&round_trip(&samples), &samples));
        }
    }
}
