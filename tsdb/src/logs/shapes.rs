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
    for slots in &shaped.values {
        for column in slots {
            for value in column {
                put_uvarint(out, value.len() as u64);
            }
            for value in column {
                out.extend_from_slice(value.as_bytes());
            }
        }
    }
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
    let mut values: Vec<Vec<Vec<&str>>> = Vec::with_capacity(shape_count);
    for (shape, &used) in shapes.iter().zip(&uses) {
        let mut slots = Vec::with_capacity(shape.slots());
        for _ in 0..shape.slots() {
            let mut lengths = Vec::with_capacity(used);
            for _ in 0..used {
                lengths.push(uvarint(buf, pos)? as usize);
            }
            let mut column = Vec::with_capacity(used);
            for len in lengths {
                column.push(std::str::from_utf8(buf.get(*pos..pos.checked_add(len)?)?).ok()?);
                *pos += len;
            }
            slots.push(column);
        }
        values.push(slots);
    }
    // Each shape cut at its slots once; the text reserved at its final size.
    let parts: Vec<Vec<&str>> = shapes
        .iter()
        .map(|shape| if shape.literal { vec![shape.text.as_str()] } else { shape.text.split(SLOT as char).collect() })
        .collect();
    let fixed: usize = ids.iter().map(|&id| shapes[id].text.len() - shapes[id].slots()).sum();
    let variable: usize = values.iter().flatten().flatten().map(|v| v.len()).sum();
    text.reserve(fixed + variable);
    let mut next = vec![0usize; shape_count];
    let mut ends = Vec::with_capacity(count);
    for id in ids {
        let row = next[id];
        next[id] += 1;
        let (first, rest) = parts[id].split_first().expect("a split gives at least one part");
        text.push_str(first);
        for (column, part) in values[id].iter().zip(rest) {
            text.push_str(column[row]);
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

    proptest! {
        /// Decoding gives back every line, byte for byte.
        #[test]
        fn shapes_round_trip(lines in proptest::collection::vec("[a-c0-9 ._:=\u{1a}é]{0,24}", 0..30)) {
            let borrowed: Vec<&str> = lines.iter().map(String::as_str).collect();
            prop_assert_eq!(round_trip(&borrowed), lines);
        }
    }
}
