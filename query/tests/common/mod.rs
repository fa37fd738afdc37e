//! What the test files share: promtool's series notation (`metric{a="b"} 1 2+3x2 _ stale`).

use promql_parser::parser::{self, Expr};
use vigil_tsdb::{Labels, STALE_NAN_BITS};

/// A point of a series description: a value, a gap, or a native histogram (not loaded).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Point {
    Value(f64),
    Gap,
    Native,
}

pub fn parse_number(text: &str) -> Option<f64> {
    match text {
        "Inf" | "+Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        "stale" => Some(f64::from_bits(STALE_NAN_BITS)),
        other => other.parse().ok(),
    }
}

/// Expands the promtool series notation: `1 2+3x2 _ _x3 stale 5x2 -1-2x3 {{...}}`.
pub fn parse_points(text: &str) -> Option<Vec<Point>> {
    let mut points = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        if rest.starts_with("{{") {
            let end = rest.find("}}")? + 2;
            let after = &rest[end..];
            let (count, consumed) = match after.strip_prefix('x') {
                Some(tail) => {
                    let digits = tail.find(|c: char| !c.is_ascii_digit()).unwrap_or(tail.len());
                    (tail[..digits].parse::<usize>().ok()? + 1, 1 + digits)
                }
                None => (1, 0),
            };
            points.extend(std::iter::repeat_n(Point::Native, count));
            rest = after[consumed..].trim_start();
            continue;
        }
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let token = &rest[..end];
        rest = rest[end..].trim_start();
        if token == "_" {
            points.push(Point::Gap);
            continue;
        }
        if let Some(count) = token.strip_prefix("_x") {
            points.extend(std::iter::repeat_n(Point::Gap, count.parse().ok()?));
            continue;
        }
        let Some((head, times)) = token.rsplit_once('x') else {
            points.push(Point::Value(parse_number(token)?));
            continue;
        };
        let times: usize = times.parse().ok()?;
        // `a+bxn` / `a-bxn`: the operator is neither a leading sign nor part of an exponent.
        let bytes = head.as_bytes();
        let split =
            (1..bytes.len()).find(|&i| (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E'));
        let (start, step) = match split {
            Some(i) => {
                let step = parse_number(&head[i + 1..])?;
                (parse_number(&head[..i])?, if bytes[i] == b'-' { -step } else { step })
            }
            None => (parse_number(head)?, 0.0),
        };
        let mut value = start;
        points.push(Point::Value(value));
        for _ in 0..times {
            value += step;
            points.push(Point::Value(value));
        }
    }
    Some(points)
}

/// Splits `metric{a="b"} rest` into the label set and the rest.
pub fn split_series(line: &str) -> Option<(Labels, &str)> {
    let line = line.trim();
    let end = match line.find('{') {
        Some(open) if !line[..open].contains(char::is_whitespace) => {
            let mut in_quotes = false;
            let mut escaped = false;
            let mut close = None;
            for (i, c) in line[open..].char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => in_quotes = !in_quotes,
                    '}' if !in_quotes => {
                        close = Some(open + i + 1);
                        break;
                    }
                    _ => {}
                }
            }
            close?
        }
        _ => line.find(char::is_whitespace).unwrap_or(line.len()),
    };
    let (selector, rest) = line.split_at(end);
    if selector == "{}" {
        return Some((Labels::default(), rest));
    }
    let Ok(Expr::VectorSelector(parsed)) = parser::parse(selector) else {
        return None;
    };
    let mut pairs: Vec<(String, String)> =
        parsed.matchers.matchers.iter().map(|m| (m.name.clone(), m.value.clone())).collect();
    if let Some(name) = parsed.name {
        pairs.push(("__name__".into(), name));
    }
    Some((Labels::new(pairs).ok()?, rest))
}
