//! Line shapes: a chunk's lines split into their shape (the line with every variable, a run of word
//! characters holding a digit, replaced by a slot mark) and their variables, stored column by column: the
//! distinct shapes once, a shape number per line, then each slot's values in line order. Lines of one
//! stream share few shapes, and a slot's values (times, ids, counters) sit next to their likes, so zstd
//! finds far more to reuse than in whole lines. Decoding fills the slots back in, byte for byte.
//!
//! A line that holds the slot byte itself is kept whole, as a literal shape.

use std::collections::HashMap;

use super::chunk::{bytes, put_bytes};
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

/// Writes the shapes, the shape numbers and the slot columns.
pub(crate) fn encode(shaped: &Shaped<'_>, out: &mut Vec<u8>) {
    put_uvarint(out, shaped.shapes.len() as u64);
    for shape in &shaped.shapes {
        out.push(u8::from(shape.literal));
        put_bytes(out, shape.text.as_bytes());
    }
    for &id in &shaped.ids {
        put_uvarint(out, u64::from(id));
    }
    for column in shaped.values.iter().flatten() {
        encode_column(column, out);
    }
}

/// How a slot column is kept.
const TEXT: u8 = 0;
/// Decimal numbers, all of one width (zero-padded or not).
const FIXED_WIDTH: u8 = 1;
/// Decimal numbers without leading zeros, of any width.
const PLAIN_NUMBERS: u8 = 2;
/// The most digits a column of numbers may have (every such number fits a u64).
const MAX_DIGITS: usize = 19;

/// Writes a column: as numbers (see [`put_numbers`]) when every value is one, else as lengths then text.
fn encode_column(values: &[&str], out: &mut Vec<u8>) {
    let digits = |v: &&str| (1..=MAX_DIGITS).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit());
    let numeric = !values.is_empty() && values.iter().all(digits);
    let width = values.first().map_or(0, |v| v.len());
    let kind = match numeric {
        true if values.iter().all(|v| v.len() == width) => FIXED_WIDTH,
        true if values.iter().all(|v| v.len() == 1 || !v.starts_with('0')) => PLAIN_NUMBERS,
        _ => TEXT,
    };
    out.push(kind);
    if kind == TEXT {
        for value in values {
            put_uvarint(out, value.len() as u64);
        }
        for value in values {
            out.extend_from_slice(value.as_bytes());
        }
        return;
    }
    if kind == FIXED_WIDTH {
        out.push(width as u8);
    }
    let numbers: Vec<u64> = values.iter().map(|v| v.parse().expect("checked to be digits")).collect();
    put_numbers(&numbers, out);
}

/// Zigzag form of a signed difference.
fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Numbers as byte planes (every value's lowest byte, then every value's next byte, ...), of either the
/// values or their differences, whichever needs fewer bytes: counters and times become small steps, and
/// the high planes of small numbers are nearly constant, which zstd then takes for next to nothing.
pub(crate) fn put_numbers(numbers: &[u64], out: &mut Vec<u8>) {
    let steps: Vec<u64> = numbers.windows(2).map(|w| zigzag(w[1].wrapping_sub(w[0]) as i64)).collect();
    let bytes_for =
        |values: &[u64]| values.iter().map(|v| (64 - v.leading_zeros()).div_ceil(8)).max().unwrap_or(0).max(1) as u8;
    let (raw_width, step_width) = (bytes_for(numbers), bytes_for(&steps));
    if step_width < raw_width {
        // The first number, then the steps.
        out.push(1);
        out.push(step_width);
        put_uvarint(out, numbers[0]);
        put_planes(&steps, step_width, out);
    } else {
        out.push(0);
        out.push(raw_width);
        put_planes(numbers, raw_width, out);
    }
}

fn put_planes(values: &[u64], width: u8, out: &mut Vec<u8>) {
    for plane in 0..width {
        out.extend(values.iter().map(|v| (v >> (8 * plane)) as u8));
    }
}

/// Reads `count` numbers [`put_numbers`] wrote.
pub(crate) fn numbers(buf: &[u8], pos: &mut usize, count: usize) -> Option<Vec<u64>> {
    let (stepped, width) = (*buf.get(*pos)? == 1, *buf.get(*pos + 1)? as usize);
    *pos += 2;
    if width > 8 || count == 0 {
        return None;
    }
    let first = if stepped { Some(uvarint(buf, pos)?) } else { None };
    let planned = if stepped { count - 1 } else { count };
    let planes = buf.get(*pos..pos.checked_add(planned.checked_mul(width)?)?)?;
    *pos += planes.len();
    let mut values = vec![0u64; planned];
    for (plane, bytes) in planes.chunks_exact(planned.max(1)).enumerate() {
        for (value, &byte) in values.iter_mut().zip(bytes) {
            *value |= u64::from(byte) << (8 * plane);
        }
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

/// Reads a column of `count` values [`encode_column`] wrote.
fn decode_column(buf: &[u8], pos: &mut usize, count: usize) -> Option<Column> {
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
            for number in numbers(buf, pos, count)? {
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

/// Reads `count` lines written by [`encode`] into `text`, returning where each ends; `None` if damaged.
pub(crate) fn decode(buf: &[u8], pos: &mut usize, count: usize, text: &mut String) -> Option<Vec<usize>> {
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
    let mut uses = vec![0usize; shape_count];
    for _ in 0..count {
        let id = uvarint(buf, pos)? as usize;
        *uses.get_mut(id)? += 1;
        ids.push(id);
    }
    // Per shape, per slot, the values.
    let mut values: Vec<Vec<Column>> = Vec::with_capacity(shape_count);
    for (shape, &used) in shapes.iter().zip(&uses) {
        let slots = (0..shape.slots()).map(|_| decode_column(buf, pos, used)).collect::<Option<Vec<Column>>>()?;
        values.push(slots);
    }
    // Each shape cut at its slots once; the text reserved at its final size.
    let parts: Vec<Vec<&str>> = shapes
        .iter()
        .map(|shape| if shape.literal { vec![shape.text.as_str()] } else { shape.text.split(SLOT as char).collect() })
        .collect();
    let fixed: usize = ids.iter().map(|&id| shapes[id].text.len() - shapes[id].slots()).sum();
    let variable: usize = values.iter().flatten().map(|c| c.text.len()).sum();
    text.reserve(fixed + variable);
    let mut next = vec![0usize; shape_count];
    let mut ends = Vec::with_capacity(count);
    for id in ids {
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

    fn round_trip(lines: &[&str]) -> Vec<String> {
        let shaped = shape(lines.iter().copied());
        let mut buf = Vec::new();
        encode(&shaped, &mut buf);
        let (mut text, mut pos) = (String::new(), 0);
        let ends = decode(&buf, &mut pos, lines.len(), &mut text).unwrap();
        assert_eq!(pos, buf.len(), "everything read");
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
        let mut mixed = Vec::new();
        encode_column(&["05", "5"], &mut mixed);
        assert_eq!(mixed[0], TEXT, "a leading zero in a column of varying widths keeps it text");
        let mut counter = Vec::new();
        let steps: Vec<String> = (0..100).map(|i| (1_700_000_000_000_000_000u64 + i * 37).to_string()).collect();
        encode_column(&steps.iter().map(String::as_str).collect::<Vec<_>>(), &mut counter);
        assert_eq!(&counter[..4], [FIXED_WIDTH, 19, 1, 1], "a counter is kept as one-byte steps");
        assert!(counter.len() < 4 + 10 + 100, "{} bytes", counter.len());
    }

    proptest! {
        /// Numbers of any size and width come back as they were written.
        #[test]
        fn number_columns_round_trip(numbers in proptest::collection::vec(any::<u64>(), 1..20), pad in 0usize..3) {
            let values: Vec<String> = numbers.iter().map(|n| format!("{n:0>pad$}", pad = pad * 8)).collect();
            let borrowed: Vec<&str> = values.iter().map(String::as_str).collect();
            let mut buf = Vec::new();
            encode_column(&borrowed, &mut buf);
            let column = decode_column(&buf, &mut 0, values.len()).unwrap();
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
