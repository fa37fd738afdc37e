//! Line shapes: a chunk's lines split into their shape (the line with every variable, a run of word
//! characters holding a digit, replaced by a slot mark) and their variables, stored column by column: the
//! distinct shapes once, a shape number per line, then each slot's values in line order. Lines of one
//! stream share few shapes, and a slot's values (times, ids, counters) sit next to their likes, so zstd
//! finds far more to reuse than in whole lines. A column of numbers may be kept against the record times
//! (a line's own timestamp). Decoding fills the slots back in, byte for byte.
//!
//! A line that holds the slot byte itself is kept whole, as a literal shape.

use std::collections::HashMap;

use super::chunk::{Parts, bytes, put_bytes};
use super::tokenizer::runs;
use crate::varint::{put_uvarint, uvarint};

/// Marks a variable's place in a shape (ASCII SUB, which log lines do not carry).
const SLOT: u8 = 0x1a;

/// A distinct shape: its text, and whether it is a literal line (slot bytes in it are the line's own).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Shape {
    pub literal: bool,
    pub text: String,
}

impl Shape {
    fn slots(&self) -> usize {
        if self.literal { 0 } else { self.text.bytes().filter(|&b| b == SLOT).count() }
    }
}

/// Lines split into shapes and slot values (borrowed from the lines).
pub(crate) struct Shaped<'a> {
    pub shapes: Vec<Shape>,
    /// Each line's shape number.
    pub ids: Vec<u32>,
    /// Per shape, per slot, the values in line order.
    pub values: Vec<Vec<Vec<&'a str>>>,
}

/// Whether a run is a variable: it holds an ASCII digit.
fn is_variable(run: &str) -> bool {
    run.bytes().any(|b| b.is_ascii_digit())
}

/// Splits `lines` into shapes and values.
pub(crate) fn shape<'a>(lines: impl Iterator<Item = &'a str>) -> Shaped<'a> {
    let mut numbers: HashMap<Shape, u32, foldhash::fast::FixedState> = HashMap::default();
    let mut shaped = Shaped { shapes: Vec::new(), ids: Vec::new(), values: Vec::new() };
    let mut text = String::new();
    let mut found: Vec<&'a str> = Vec::new();
    for line in lines {
        text.clear();
        found.clear();
        let literal = line.as_bytes().contains(&SLOT);
        if literal {
            text.push_str(line);
        } else {
            let mut at = 0;
            for (from, to) in runs(line).filter(|&(from, to)| is_variable(&line[from..to])) {
                text.push_str(&line[at..from]);
                text.push(SLOT as char);
                found.push(&line[from..to]);
                at = to;
            }
            text.push_str(&line[at..]);
        }
        // The lookup borrows the scratch text; only a new shape is copied.
        let key = Shape { literal, text: std::mem::take(&mut text) };
        let id = match numbers.get(&key) {
            Some(&id) => id,
            None => {
                let id = shaped.shapes.len() as u32;
                shaped.values.push(vec![Vec::new(); found.len()]);
                shaped.shapes.push(key.clone());
                numbers.insert(key.clone(), id);
                id
            }
        };
        text = key.text;
        shaped.ids.push(id);
        for (slot, value) in found.iter().enumerate() {
            shaped.values[id as usize][slot].push(value);
        }
    }
    shaped
}

/// Writes the shapes, the shape numbers and the slot columns; `times` are the lines' record times.
pub(crate) fn encode(shaped: &Shaped<'_>, times: &[u64], out: &mut Parts) {
    put_uvarint(&mut out.bytes, shaped.shapes.len() as u64);
    for shape in &shaped.shapes {
        out.bytes.push(u8::from(shape.literal));
        put_bytes(&mut out.bytes, shape.text.as_bytes());
    }
    out.end();
    for &id in &shaped.ids {
        put_uvarint(&mut out.bytes, u64::from(id));
    }
    out.end();
    let rows = times_by_shape(&shaped.ids, times, shaped.shapes.len());
    for (columns, times) in shaped.values.iter().zip(&rows) {
        for column in columns {
            encode_column(column, times, out);
        }
    }
}

/// The record times of each shape's lines, in line order.
fn times_by_shape(ids: &[u32], times: &[u64], shapes: usize) -> Vec<Vec<u64>> {
    let mut rows = vec![Vec::new(); shapes];
    for (&id, &time) in ids.iter().zip(times) {
        rows[id as usize].push(time);
    }
    rows
}

/// How a slot column is kept.
const TEXT: u8 = 0;
/// Decimal numbers, all of one width (zero-padded or not).
const FIXED_WIDTH: u8 = 1;
/// Decimal numbers without leading zeros, of any width.
const PLAIN_NUMBERS: u8 = 2;
/// The most digits a column of numbers may have (every such number fits a u64).
const MAX_DIGITS: usize = 19;

/// Writes a column: as numbers (see [`put_numbers`], against the `times` of its lines) when every value is
/// one, else as lengths then text.
fn encode_column(values: &[&str], times: &[u64], out: &mut Parts) {
    let digits = |v: &&str| (1..=MAX_DIGITS).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit());
    let numeric = !values.is_empty() && values.iter().all(digits);
    let width = values.first().map_or(0, |v| v.len());
    let kind = match numeric {
        true if values.iter().all(|v| v.len() == width) => FIXED_WIDTH,
        true if values.iter().all(|v| v.len() == 1 || !v.starts_with('0')) => PLAIN_NUMBERS,
        _ => TEXT,
    };
    out.bytes.push(kind);
    if kind == TEXT {
        for value in values {
            put_uvarint(&mut out.bytes, value.len() as u64);
        }
        out.end();
        for value in values {
            out.bytes.extend_from_slice(value.as_bytes());
        }
        out.end();
        return;
    }
    if kind == FIXED_WIDTH {
        out.bytes.push(width as u8);
    }
    let numbers: Vec<u64> = values.iter().map(|v| v.parse().expect("checked to be digits")).collect();
    put_numbers(&numbers, Some(times), out);
}

/// Zigzag form of a signed difference.
fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// How [`put_numbers`] keeps numbers: as they are, as steps from the one before, or as differences from
/// their record's time in seconds, milliseconds, microseconds or nanoseconds (a time a line carries).
const AS_VALUES: u8 = 0;
const AS_STEPS: u8 = 1;
const FROM_RECORD_TIME: u8 = 2;
/// The units [`FROM_RECORD_TIME`] tries, as divisors of nanoseconds.
const TIME_UNITS: [u64; 4] = [1_000_000_000, 1_000_000, 1_000, 1];

/// Bytes the widest of `values` needs (at least one).
fn width_of(values: &[u64]) -> u8 {
    values.iter().map(|v| (64 - v.leading_zeros()).div_ceil(8)).max().unwrap_or(0).max(1) as u8
}

/// Numbers as byte planes (every value's lowest byte, then every value's next byte, ...), of the values,
/// their steps, or their differences from the record `times` in some unit, whichever needs the fewest
/// bytes: counters and times become small steps, a time a line carries becomes next to nothing, and the
/// high planes of small numbers are nearly constant. Each plane is a part of its own (see [`Parts`]).
pub(crate) fn put_numbers(numbers: &[u64], times: Option<&[u64]>, out: &mut Parts) {
    // Fewest bytes first, then the smallest largest value (a column of zeros over one of small steps).
    let cost = |values: &[u64]| (width_of(values), values.iter().max().copied().unwrap_or(0));
    let steps: Vec<u64> = numbers.windows(2).map(|w| zigzag(w[1].wrapping_sub(w[0]) as i64)).collect();
    let mut best = (cost(numbers), AS_VALUES, 0u8);
    let steps_cost = cost(&steps);
    if steps_cost < best.0 {
        best = (steps_cost, AS_STEPS, 0);
    }
    let mut differences = Vec::new();
    for (unit, &divisor) in TIME_UNITS.iter().enumerate() {
        let Some(times) = times else { break };
        let difference = |(n, t): (&u64, &u64)| zigzag(n.wrapping_sub(t / divisor) as i64);
        // A column whose first value is already too far from its record time is no time in this unit.
        if numbers.iter().zip(times).next().is_none_or(|first| width_of(&[difference(first)]) > best.0.0) {
            continue;
        }
        let candidate: Vec<u64> = numbers.iter().zip(times).map(difference).collect();
        let candidate_cost = cost(&candidate);
        if candidate_cost < best.0 {
            best = (candidate_cost, FROM_RECORD_TIME, unit as u8);
            differences = candidate;
        }
    }
    let ((width, _), how, unit) = best;
    out.bytes.extend([how, width]);
    match how {
        AS_STEPS => {
            put_uvarint(&mut out.bytes, numbers[0]);
            put_planes(&steps, width, out);
        }
        FROM_RECORD_TIME => {
            out.bytes.push(unit);
            put_planes(&differences, width, out);
        }
        _ => put_planes(numbers, width, out),
    }
}

fn put_planes(values: &[u64], width: u8, out: &mut Parts) {
    out.end();
    for plane in 0..width {
        out.bytes.extend(values.iter().map(|v| (v >> (8 * plane)) as u8));
        out.end();
    }
}

/// Reads `count` numbers [`put_numbers`] wrote, given the same record `times`.
pub(crate) fn numbers(buf: &[u8], pos: &mut usize, count: usize, times: Option<&[u64]>) -> Option<Vec<u64>> {
    let (how, width) = (*buf.get(*pos)?, *buf.get(*pos + 1)? as usize);
    *pos += 2;
    if width > 8 || count == 0 {
        return None;
    }
    let first = if how == AS_STEPS { Some(uvarint(buf, pos)?) } else { None };
    let divisor = match how {
        FROM_RECORD_TIME => {
            *pos += 1;
            Some(*TIME_UNITS.get(*buf.get(*pos - 1)? as usize)?)
        }
        AS_VALUES | AS_STEPS => None,
        _ => return None,
    };
    let planned = if first.is_some() { count - 1 } else { count };
    let planes = buf.get(*pos..pos.checked_add(planned.checked_mul(width)?)?)?;
    *pos += planes.len();
    let mut values = vec![0u64; planned];
    for (plane, bytes) in planes.chunks_exact(planned.max(1)).enumerate() {
        for (value, &byte) in values.iter_mut().zip(bytes) {
            *value |= u64::from(byte) << (8 * plane);
        }
    }
    if let Some(divisor) = divisor {
        let times = times.filter(|t| t.len() == count)?;
        return Some(values.iter().zip(times).map(|(&d, t)| (t / divisor).wrapping_add(unzigzag(d) as u64)).collect());
    }
    let Some(first) = first else { return Some(values) };
    let mut out = Vec::with_capacity(count);
    out.push(first);
    for step in values {
        let previous = *out.last().expect("pushed above");
        out.push(previous.wrapping_add(unzigzag(step) as u64));
    }
    Some(out)
}

/// A decoded slot column: its values laid end to end.
struct Column {
    text: String,
    ends: Vec<usize>,
}

impl Column {
    fn get(&self, row: usize) -> &str {
        let start = if row == 0 { 0 } else { self.ends[row - 1] };
        &self.text[start..self.ends[row]]
    }
}

/// Reads a column [`encode_column`] wrote, of one value per record time in `times`.
fn decode_column(buf: &[u8], pos: &mut usize, times: &[u64]) -> Option<Column> {
    let count = times.len();
    let kind = *buf.get(*pos)?;
    *pos += 1;
    let mut column = Column { text: String::new(), ends: Vec::with_capacity(count) };
    match kind {
        TEXT => {
            let mut total = 0usize;
            for _ in 0..count {
                total = total.checked_add(uvarint(buf, pos)? as usize)?;
                column.ends.push(total);
            }
            column.text = std::str::from_utf8(buf.get(*pos..pos.checked_add(total)?)?).ok()?.to_owned();
            *pos += total;
            // Every value must end on a character boundary.
            if !column.ends.iter().all(|&end| column.text.is_char_boundary(end)) {
                return None;
            }
        }
        FIXED_WIDTH | PLAIN_NUMBERS => {
            let width = if kind == FIXED_WIDTH {
                *pos += 1;
                *buf.get(*pos - 1)? as usize
            } else {
                0
            };
            column.text.reserve(count * width.max(4));
            let mut digits = [0u8; 20];
            for number in numbers(buf, pos, count, Some(times))? {
                let written = decimal(number, &mut digits);
                for _ in written.len()..width {
                    column.text.push('0');
                }
                column.text.push_str(written);
                column.ends.push(column.text.len());
            }
        }
        _ => return None,
    }
    Some(column)
}

/// `number` in decimal, written at the end of `buffer`.
fn decimal(mut number: u64, buffer: &mut [u8; 20]) -> &str {
    let mut at = buffer.len();
    loop {
        at -= 1;
        buffer[at] = b'0' + (number % 10) as u8;
        number /= 10;
        if number == 0 {
            break;
        }
    }
    std::str::from_utf8(&buffer[at..]).expect("digits")
}

/// Reads the lines of records at `times` written by [`encode`] into `text`, returning where each ends;
/// `None` if damaged.
pub(crate) fn decode(buf: &[u8], pos: &mut usize, times: &[u64], text: &mut String) -> Option<Vec<usize>> {
    let count = times.len();
    let shape_count = uvarint(buf, pos)? as usize;
    if shape_count > buf.len() {
        return None;
    }
    let mut shapes = Vec::with_capacity(shape_count);
    for _ in 0..shape_count {
        let literal = *buf.get(*pos)? != 0;
        *pos += 1;
        let text = std::str::from_utf8(bytes(buf, pos)?).ok()?;
        shapes.push(Shape { literal, text: text.to_owned() });
    }
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let id = uvarint(buf, pos)?;
        if id >= shape_count as u64 {
            return None;
        }
        ids.push(id as u32);
    }
    // Per shape, per slot, the values.
    let rows = times_by_shape(&ids, times, shape_count);
    let mut values: Vec<Vec<Column>> = Vec::with_capacity(shape_count);
    for (shape, times) in shapes.iter().zip(&rows) {
        let slots = (0..shape.slots()).map(|_| decode_column(buf, pos, times)).collect::<Option<Vec<Column>>>()?;
        values.push(slots);
    }
    // Each shape cut at its slots once; the text reserved at its final size.
    let parts: Vec<Vec<&str>> = shapes
        .iter()
        .map(|shape| if shape.literal { vec![shape.text.as_str()] } else { shape.text.split(SLOT as char).collect() })
        .collect();
    let fixed_lengths: Vec<usize> = parts.iter().map(|p| p.iter().map(|part| part.len()).sum()).collect();
    let fixed: usize = ids.iter().map(|&id| fixed_lengths[id as usize]).sum();
    let variable: usize = values.iter().flatten().map(|c| c.text.len()).sum();
    text.reserve(fixed + variable);
    let mut next = vec![0usize; shape_count];
    let mut ends = Vec::with_capacity(count);
    for id in ids {
        let id = id as usize;
        let row = next[id];
        next[id] += 1;
        let (first, rest) = parts[id].split_first().expect("a split gives at least one part");
        text.push_str(first);
        for (column, part) in values[id].iter().zip(rest) {
            text.push_str(column.get(row));
            text.push_str(part);
        }
        ends.push(text.len());
    }
    Some(ends)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Record times about 300 milliseconds apart.
    fn times(count: usize) -> Vec<u64> {
        (0..count as u64).map(|i| 1_700_000_000_000_000_000 + i * 300_000_000 + (i % 3) * 1_000_000).collect()
    }

    fn round_trip(lines: &[&str]) -> Vec<String> {
        let shaped = shape(lines.iter().copied());
        let mut parts = Parts::default();
        let times = times(lines.len());
        encode(&shaped, &times, &mut parts);
        let (mut text, mut pos) = (String::new(), 0);
        let ends = decode(&parts.bytes, &mut pos, &times, &mut text).unwrap();
        assert_eq!(pos, parts.bytes.len(), "everything read");
        let mut start = 0;
        ends.iter()
            .map(|&end| {
                let line = text[start..end].to_owned();
                start = end;
                line
            })
            .collect()
    }

    #[test]
    fn lines_of_a_kind_share_a_shape() {
        let lines = [
            "10.1.2.3 GET /api/v1/users 200 rt=0.012",
            "10.9.8.7 GET /api/v1/users 404 rt=1.5",
            "plain words only",
            "with \u{1a} its own slot byte 42",
        ];
        let shaped = shape(lines.iter().copied());
        assert_eq!(shaped.shapes.len(), 3);
        assert_eq!(shaped.ids, [0, 0, 1, 2]);
        assert_eq!(shaped.values[0][0], ["10", "10"]);
        assert_eq!(shaped.values[0][4], ["v1", "v1"], "a run with a digit is a variable");
        assert_eq!(shaped.values[0][5], ["200", "404"]);
        assert!(shaped.shapes[2].literal);
        assert_eq!(round_trip(&lines), lines);
    }

    #[test]
    fn numbers_keep_their_digits() {
        let lines = [
            "ts=1700000000000000001 seq=007 n=5 big=18446744073709551615",
            "ts=1700000000000000002 seq=010 n=120 big=9999999999999999999",
            "ts=1699999999999999999 seq=999 n=0 big=0",
        ];
        assert_eq!(round_trip(&lines), lines);
        let mut mixed = Parts::default();
        encode_column(&["05", "5"], &times(2), &mut mixed);
        assert_eq!(mixed.bytes[0], TEXT, "a leading zero in a column of varying widths keeps it text");
        let mut counter = Parts::default();
        let steps: Vec<String> = (0..100).map(|i| (1_000_000_000_000_000_000u64 + i * 37).to_string()).collect();
        encode_column(&steps.iter().map(String::as_str).collect::<Vec<_>>(), &times(100), &mut counter);
        assert_eq!(&counter.bytes[..4], [FIXED_WIDTH, 19, AS_STEPS, 1], "a counter is kept as one-byte steps");
        assert!(counter.bytes.len() < 4 + 10 + 100, "{} bytes", counter.bytes.len());
    }

    #[test]
    fn times_in_lines_are_kept_against_the_record_time() {
        let times = times(50);
        let lines: Vec<String> = times
            .iter()
            .enumerate()
            .map(|(i, t)| {
                format!("ts={t} ms={} s={} late_ms={}", t / 1_000_000, t / 1_000_000_000, t / 1_000_000 - i as u64)
            })
            .collect();
        let borrowed: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert_eq!(round_trip(&borrowed), lines);
        let shaped = shape(borrowed.iter().copied());
        for (slot, unit) in [(0, 3), (1, 1), (2, 0)] {
            let mut column = Parts::default();
            encode_column(&shaped.values[0][slot], &times, &mut column);
            assert_eq!(&column.bytes[..5], [FIXED_WIDTH, column.bytes[1], FROM_RECORD_TIME, 1, unit], "slot {slot}");
            assert!(column.bytes[5..].iter().all(|&b| b == 0), "slot {slot}: the line's time is the record's");
        }
        let mut late = Parts::default();
        encode_column(&shaped.values[0][3], &times, &mut late);
        assert_eq!(late.bytes[2..5], [FROM_RECORD_TIME, 1, 1], "{:?}", &late.bytes[..5]);
        assert!(late.bytes[5..].iter().any(|&b| b != 0));
    }

    proptest! {
        /// Numbers of any size and width come back as they were written.
        #[test]
        fn number_columns_round_trip(
            rows in proptest::collection::vec((any::<u64>(), any::<u64>()), 1..20),
            pad in 0usize..3,
            near in any::<bool>(),
        ) {
            // Numbers of any size, or near their record times (in some unit).
            let times: Vec<u64> = rows.iter().map(|r| r.1).collect();
            let values: Vec<String> = rows
                .iter()
                .map(|&(n, t)| if near { t / 1000 + n % 300 } else { n })
                .map(|n| format!("{n:0>pad$}", pad = pad * 8))
                .collect();
            let borrowed: Vec<&str> = values.iter().map(String::as_str).collect();
            let mut parts = Parts::default();
            encode_column(&borrowed, &times, &mut parts);
            let column = decode_column(&parts.bytes, &mut 0, &times).unwrap();
            prop_assert_eq!((0..values.len()).map(|i| column.get(i).to_owned()).collect::<Vec<_>>(), values);
        }

        /// Decoding gives back every line, byte for byte.
        #[test]
        fn shapes_round_trip(lines in proptest::collection::vec("[a-c0-9 ._:=\u{1a}é]{0,24}", 0..30)) {
            let borrowed: Vec<&str> = lines.iter().map(String::as_str).collect();
            prop_assert_eq!(round_trip(&borrowed), lines);
        }
    }
}
