//! `detected_level`: the level of a log line, added as structured metadata at ingest so that log volume
//! can be grouped by level (Grafana asks for `sum by (level, detected_level) (count_over_time(...))`), as
//! Loki does. Found from, in order: a level label or metadata entry, the OTLP severity, a `level` field in
//! a logfmt or JSON line, then the first level word in the line.

use std::collections::BTreeMap;

/// The metadata key the level is stored under.
pub const DETECTED_LEVEL: &str = "detected_level";

const LEVEL_KEYS: [&str; 6] = ["level", "lvl", "severity", "loglevel", "log_level", "severity_text"];

/// Normalises a level name to one of `critical`, `error`, `warn`, `info`, `debug`, `trace`.
fn normalise(name: &str) -> Option<&'static str> {
    let level = match name.trim().to_ascii_lowercase().as_str() {
        "fatal" | "critical" | "crit" | "panic" | "emerg" | "emergency" | "alert" => "critical",
        "error" | "err" | "eror" => "error",
        "warn" | "warning" => "warn",
        "info" | "information" | "informational" | "notice" => "info",
        "debug" | "dbug" => "debug",
        "trace" => "trace",
        _ => return None,
    };
    Some(level)
}

/// Maps an OTLP severity number (1-24) to a level.
fn from_severity_number(number: &str) -> Option<&'static str> {
    let level = match number.parse::<u8>().ok()? {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "critical",
        _ => return None,
    };
    Some(level)
}

/// The value of `key=value`, `key="value"` or `"key":"value"` in `line`, for a level key.
fn field(line: &str) -> Option<&'static str> {
    for key in LEVEL_KEYS {
        for (at, _) in line.match_indices(key) {
            let boundary_before =
                at == 0 || !line.as_bytes()[at - 1].is_ascii_alphanumeric() && line.as_bytes()[at - 1] != b'_';
            if !boundary_before {
                continue;
            }
            let rest = line[at + key.len()..].trim_start_matches('"');
            let Some(rest) = rest.strip_prefix('=').or_else(|| rest.trim_start().strip_prefix(':')) else { continue };
            let value: String =
                rest.trim_start().trim_start_matches('"').chars().take_while(|c| c.is_ascii_alphabetic()).collect();
            if let Some(level) = normalise(&value) {
                return Some(level);
            }
        }
    }
    None
}

/// The first whole word of `line` that names a level in capitals (`ERROR`, `WARN`) or as `[error]`.
fn keyword(line: &str) -> Option<&'static str> {
    line.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| word.len() >= 4 && word.len() <= 8)
        .find_map(|word| if word.bytes().all(|b| b.is_ascii_uppercase()) { normalise(word) } else { None })
}

/// The detected level of a record, or `None` when nothing names one.
pub fn detect(
    labels: &BTreeMap<String, String>,
    metadata: &BTreeMap<String, String>,
    line: &str,
) -> Option<&'static str> {
    let named = LEVEL_KEYS.iter().find_map(|k| labels.get(*k).or_else(|| metadata.get(*k)));
    if let Some(level) = named.and_then(|name| normalise(name)) {
        return Some(level);
    }
    if let Some(level) = metadata.get("severity_number").and_then(|n| from_severity_number(n)) {
        return Some(level);
    }
    field(line).or_else(|| keyword(line))
}

/// Adds `detected_level` to `metadata` when a level is found and none is there yet.
pub fn annotate(labels: &BTreeMap<String, String>, metadata: &mut BTreeMap<String, String>, line: &str) {
    if labels.contains_key(DETECTED_LEVEL) || metadata.contains_key(DETECTED_LEVEL) {
        return;
    }
    if let Some(level) = detect(labels, metadata, line) {
        metadata.insert(DETECTED_LEVEL.into(), level.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(line: &str) -> Option<&'static str> {
        detect(&BTreeMap::new(), &BTreeMap::new(), line)
    }

    #[test]
    fn levels_come_from_fields_then_words() {
        assert_eq!(level(r#"ts=1 level=warn msg="disk almost full""#), Some("warn"));
        assert_eq!(level(r#"ts=1 level="ERROR" msg=x"#), Some("error"));
        assert_eq!(level(r#"{"ts":1,"level":"debug","msg":"error budget"}"#), Some("debug"));
        assert_eq!(level(r#"{"severity": "Warning"}"#), Some("warn"));
        assert_eq!(level("2026-01-01 12:00:00 ERROR connection refused"), Some("error"));
        assert_eq!(level("[main] INFO starting; 3 errors so far"), Some("info"));
        assert_eq!(level("GET /index.html 200"), None);
        assert_eq!(level("the error rate is fine"), None, "lower-case prose is not a level");
        assert_eq!(level("sublevel=error"), None, "a key must start at a word boundary");
    }

    #[test]
    fn labels_and_otlp_severity_win_over_the_text() {
        let labels = BTreeMap::from([("level".to_owned(), "Warning".to_owned())]);
        assert_eq!(detect(&labels, &BTreeMap::new(), "ERROR"), Some("warn"));
        let otlp = BTreeMap::from([("severity_number".to_owned(), "17".to_owned())]);
        assert_eq!(detect(&BTreeMap::new(), &otlp, "hello"), Some("error"));
        let mut metadata = BTreeMap::from([("detected_level".to_owned(), "info".to_owned())]);
        annotate(&BTreeMap::new(), &mut metadata, "ERROR");
        assert_eq!(metadata["detected_level"], "info", "an existing detected_level is kept");
    }
}
