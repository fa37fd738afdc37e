//! A log pipeline run over one record: line filters, parsers (`json`, `logfmt`, `regexp`, `pattern`,
//! `unpack`), label filters, `line_format`, `label_format`, `drop`, `keep`, `decolorize`. Parser failures
//! set `__error__` as Loki does, and later label filters may drop or keep such lines.

use std::collections::{BTreeMap, BTreeSet};

use logql::{
    FilterOp, FilterValue, LabelExtraction, LabelFilterExpr, LabelFilterPred, LabelFormatValue, LabelPredicate,
    LineFilterOp, MatchOp, PipelineStage,
};
use regex::Regex;

use crate::QueryError;
use crate::rules::template::{TemplateData, expand_with_labels};

/// A pipeline ready to run: regexes compiled once.
pub struct Pipeline {
    stages: Vec<Stage>,
    /// The only labels the caller reads from the results, when it reads few (see [`Pipeline::needing`]).
    needed: Option<BTreeSet<String>>,
}

enum Stage {
    Contains(String, bool),
    Regex(Regex, bool),
    Json(Vec<LabelExtraction>),
    Logfmt(Vec<LabelExtraction>),
    Regexp(Regex),
    Pattern(Vec<PatternPart>),
    Unpack,
    Decolorize,
    LabelFilter(LabelFilterExpr, Vec<(String, Regex)>),
    LineFormat(String),
    LabelFormat(Vec<logql::LabelFormat>),
    Drop(Vec<LabelPredicate>),
    Keep(Vec<LabelPredicate>),
    Distinct,
}

enum PatternPart {
    Literal(String),
    Capture(Option<String>),
}

/// A record as it moves through the pipeline.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The line (changed by `line_format`).
    pub line: String,
    /// Stream labels plus extracted ones.
    pub labels: BTreeMap<String, String>,
}

impl Entry {
    /// A stored record as the pipeline sees it: structured metadata (`trace_id`, ...) joins the stream
    /// labels, so label filters (`| trace_id="..."`) and `by (...)` groupings can use it. Returns the
    /// entry and the metadata it holds, for [`Entry::without_metadata`].
    pub fn of(record: vigil_tsdb::logs::LogRecord) -> (Entry, BTreeMap<String, String>) {
        let mut labels = record.labels;
        let mut added = BTreeMap::new();
        for (name, value) in record.metadata {
            if !labels.contains_key(&name) {
                labels.insert(name.clone(), value.clone());
                added.insert(name, value);
            }
        }
        (Entry { line: record.line, labels }, added)
    }

    /// The labels without the metadata [`Entry::of`] added (unless a stage changed them): results keep
    /// their stream and parsed labels, with structured metadata left out as before it was joined.
    pub fn without_metadata(self, metadata: &BTreeMap<String, String>) -> Entry {
        self.split_metadata(metadata).0
    }

    /// Like [`Entry::without_metadata`], also returning the metadata taken out of the labels.
    pub fn split_metadata(mut self, metadata: &BTreeMap<String, String>) -> (Entry, BTreeMap<String, String>) {
        let mut taken = BTreeMap::new();
        for (name, value) in metadata {
            if self.labels.get(name) == Some(value) {
                taken.insert(name.clone(), self.labels.remove(name).unwrap_or_default());
            }
        }
        (self, taken)
    }
}

fn unanchored(pattern: &str) -> Result<Regex, QueryError> {
    Regex::new(pattern).map_err(|e| QueryError::BadData(format!("invalid regex {pattern:?}: {e}")))
}

impl Pipeline {
    /// Compiles `stages`.
    pub fn new(stages: &[PipelineStage]) -> Result<Pipeline, QueryError> {
        let mut out = Vec::with_capacity(stages.len());
        for stage in stages {
            out.push(match stage {
                PipelineStage::LineFilter(filter) => match filter.op {
                    LineFilterOp::Contains => Stage::Contains(filter.value.clone(), true),
                    LineFilterOp::NotContains => Stage::Contains(filter.value.clone(), false),
                    LineFilterOp::Regex => Stage::Regex(unanchored(&filter.value)?, true),
                    LineFilterOp::NotRegex => Stage::Regex(unanchored(&filter.value)?, false),
                    _ => return Err(QueryError::BadData("unsupported line filter".into())),
                },
                PipelineStage::Json(extractions) => Stage::Json(extractions.clone()),
                PipelineStage::Logfmt(logfmt) => Stage::Logfmt(logfmt.extractions.clone()),
                PipelineStage::Regexp(pattern) => Stage::Regexp(unanchored(pattern)?),
                PipelineStage::Pattern(pattern) => Stage::Pattern(parse_pattern(pattern)),
                PipelineStage::Unpack => Stage::Unpack,
                PipelineStage::Decolorize => Stage::Decolorize,
                PipelineStage::LabelFilter(expr) => Stage::LabelFilter(expr.clone(), filter_regexes(expr)?),
                PipelineStage::LineFormat(template) => Stage::LineFormat(template.clone()),
                PipelineStage::LabelFormat(formats) => Stage::LabelFormat(formats.clone()),
                PipelineStage::Drop(predicates) => Stage::Drop(predicates.clone()),
                PipelineStage::Keep(predicates) => Stage::Keep(predicates.clone()),
                PipelineStage::Distinct(_) => Stage::Distinct,
                PipelineStage::Unwrap(_) => continue,
                _ => return Err(QueryError::BadData("unsupported pipeline stage".into())),
            });
        }
        Ok(Pipeline { stages: out, needed: None })
    }

    /// Tells the pipeline that only `labels` (and `__error__`) of its results are read, as when a metric
    /// query groups `by` them. When every stage is a line filter or a parser (no later stage reads other
    /// labels), the `json` parser then skips every other key's value instead of building labels from it.
    pub fn needing(mut self, labels: &[String]) -> Pipeline {
        let parsers_only =
            self.stages.iter().all(|s| matches!(s, Stage::Contains(..) | Stage::Regex(..) | Stage::Json(_)));
        if parsers_only {
            self.needed = Some(labels.iter().cloned().collect());
        }
        self
    }

    /// Line substrings every kept line contains, from the filters before any stage that rewrites the line:
    /// what the store's index can narrow on.
    pub fn required_substrings(stages: &[PipelineStage]) -> Vec<String> {
        let mut out = Vec::new();
        for stage in stages {
            match stage {
                PipelineStage::LineFilter(filter)
                    if filter.op == LineFilterOp::Contains && !filter.value.is_empty() =>
                {
                    out.push(filter.value.clone())
                }
                PipelineStage::LineFormat(_) | PipelineStage::Decolorize => break,
                _ => {}
            }
        }
        out
    }

    /// True when every stage only filters lines by their text (so a store limit may be pushed down).
    pub fn only_line_filters(&self) -> bool {
        self.stages.iter().all(|s| matches!(s, Stage::Contains(..) | Stage::Regex(..)))
    }

    /// Runs the pipeline; `None` when the record is filtered out.
    pub fn run(&self, mut entry: Entry) -> Option<Entry> {
        for stage in &self.stages {
            match stage {
                Stage::Contains(text, wanted) => {
                    if entry.line.contains(text.as_str()) != *wanted {
                        return None;
                    }
                }
                Stage::Regex(regex, wanted) => {
                    if regex.is_match(&entry.line) != *wanted {
                        return None;
                    }
                }
                Stage::Json(extractions) => match &self.needed {
                    Some(needed) if extractions.is_empty() => json_needed(&mut entry, needed),
                    _ => json(&mut entry, extractions),
                },
                Stage::Logfmt(extractions) => logfmt(&mut entry, extractions),
                Stage::Regexp(regex) => {
                    match regex.captures(&entry.line) {
                        Some(captures) => {
                            for name in regex.capture_names().flatten() {
                                if let Some(value) = captures.name(name) {
                                    add_label(&mut entry.labels, name, value.as_str().to_owned());
                                }
                            }
                        }
                        None => continue,
                    };
                }
                Stage::Pattern(parts) => pattern(&mut entry, parts),
                Stage::Unpack => unpack(&mut entry),
                Stage::Decolorize => entry.line = strip_ansi(&entry.line),
                Stage::LabelFilter(expr, regexes) => {
                    if !label_filter(expr, &entry.labels, regexes) {
                        return None;
                    }
                }
                Stage::LineFormat(template) => {
                    let data = TemplateData { labels: entry.labels.clone(), ..TemplateData::default() };
                    entry.line = expand_with_labels(template, &data, &entry.line)
                        .unwrap_or_else(|error| format!("<line_format error: {error}>"));
                }
                Stage::LabelFormat(formats) => label_format(&mut entry, formats),
                Stage::Drop(predicates) => entry.labels.retain(|name, value| !predicate_hits(predicates, name, value)),
                Stage::Keep(predicates) => entry.labels.retain(|name, value| predicate_hits(predicates, name, value)),
                Stage::Distinct => {}
            }
        }
        Some(entry)
    }
}

/// An extracted label never overwrites a stream label: Loki adds `_extracted` to its name.
fn add_label(labels: &mut BTreeMap<String, String>, name: &str, value: String) {
    let name = sanitize(name);
    if name.is_empty() {
        return;
    }
    if labels.contains_key(&name) && !labels.contains_key(&format!("{name}_extracted")) {
        labels.insert(format!("{name}_extracted"), value);
    } else {
        labels.insert(name, value);
    }
}

fn sanitize(name: &str) -> String {
    sanitized(name).collect()
}

fn set_error(labels: &mut BTreeMap<String, String>, error: &str) {
    labels.entry("__error__".into()).or_insert_with(|| error.to_owned());
}

fn json(entry: &mut Entry, extractions: &[LabelExtraction]) {
    let Ok(serde_json::Value::Object(object)) = serde_json::from_str::<serde_json::Value>(&entry.line) else {
        set_error(&mut entry.labels, "JSONParserErr");
        return;
    };
    if extractions.is_empty() {
        flatten("", &serde_json::Value::Object(object), &mut entry.labels);
        return;
    }
    let root = serde_json::Value::Object(object);
    for extraction in extractions {
        let path = extraction.expr.clone().unwrap_or_else(|| extraction.name.clone());
        let mut current = Some(&root);
        for part in path.split('.').filter(|p| !p.is_empty()) {
            let (key, index) = match part.split_once('[') {
                Some((key, rest)) => (key, rest.trim_end_matches(']').trim_matches('"').parse::<usize>().ok()),
                None => (part, None),
            };
            current = current.and_then(|v| if key.is_empty() { Some(v) } else { v.get(key) });
            if let Some(index) = index {
                current = current.and_then(|v| v.get(index));
            }
        }
        if let Some(value) = current {
            add_label(&mut entry.labels, &extraction.name, json_text(value));
        }
    }
}

/// `json` without extractions when only `needed` labels are read: the line is still checked whole (a
/// malformed line sets `__error__`), but only keys whose label could be needed are turned into labels.
fn json_needed(entry: &mut Entry, needed: &BTreeSet<String>) {
    let mut wanted = Vec::new();
    let seed = WantedKeys { needed, wanted: &mut wanted };
    let mut deserializer = serde_json::Deserializer::from_str(&entry.line);
    let parsed = serde::de::DeserializeSeed::deserialize(seed, &mut deserializer).and_then(|()| deserializer.end());
    if parsed.is_err() {
        set_error(&mut entry.labels, "JSONParserErr");
        return;
    }
    for (name, value) in wanted {
        flatten(&name, &value, &mut entry.labels);
    }
}

/// Reads a JSON object, keeping the values of the keys a needed label could come from (the key itself, or
/// a nested key joined to it with `_`) and skipping the rest unparsed.
struct WantedKeys<'a> {
    needed: &'a BTreeSet<String>,
    wanted: &'a mut Vec<(String, serde_json::Value)>,
}

impl WantedKeys<'_> {
    /// Whether a needed label is the key's label name, or starts with it and `_` (a nested key's).
    fn could_need(&self, key: &str) -> bool {
        self.needed.iter().any(|needed| {
            let mut rest = needed.chars();
            sanitized(key).all(|c| rest.next() == Some(c)) && matches!(rest.next(), None | Some('_'))
        })
    }
}

/// The characters of [`sanitize`]`(name)`, without building it.
fn sanitized(name: &str) -> impl Iterator<Item = char> + '_ {
    let lead = name.starts_with(|c: char| c.is_ascii_digit()).then_some('_');
    lead.into_iter().chain(name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }))
}

/// A JSON object key, borrowed from the line unless it holds escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object key")
            }

            fn visit_borrowed_str<E: serde::de::Error>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(key)))
            }

            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(key.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for WantedKeys<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for WantedKeys<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if self.could_need(&key) {
                let value: serde_json::Value = map.next_value()?;
                self.wanted.push((key.into_owned(), value));
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

fn json_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Nested keys join with `_`, as Loki's `json` does; arrays are skipped.
fn flatten(prefix: &str, value: &serde_json::Value, labels: &mut BTreeMap<String, String>) {
    match value {
        serde_json::Value::Object(object) => {
            for (key, inner) in object {
                let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}_{key}") };
                flatten(&name, inner, labels);
            }
        }
        serde_json::Value::Array(_) => {}
        other => add_label(labels, prefix, json_text(other)),
    }
}

fn logfmt(entry: &mut Entry, extractions: &[LabelExtraction]) {
    let pairs = match parse_logfmt(&entry.line) {
        Some(pairs) => pairs,
        None => {
            set_error(&mut entry.labels, "LogfmtParserErr");
            return;
        }
    };
    if extractions.is_empty() {
        for (key, value) in pairs {
            add_label(&mut entry.labels, &key, value);
        }
        return;
    }
    for extraction in extractions {
        let key = extraction.expr.as_deref().unwrap_or(&extraction.name);
        if let Some((_, value)) = pairs.iter().find(|(k, _)| k == key) {
            add_label(&mut entry.labels, &extraction.name, value.clone());
        }
    }
}

/// `key=value key="quoted value" flag`; `None` when a quote is left open.
fn parse_logfmt(line: &str) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(pairs);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => value.push(chars.next()?),
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        if !key.is_empty() {
            pairs.push((key, value));
        }
    }
}

fn parse_pattern(pattern: &str) -> Vec<PatternPart> {
    let mut parts = Vec::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else { break };
        let name = &rest[open + 1..open + close];
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            parts.push(PatternPart::Literal(rest[..open + close + 1].to_owned()));
            rest = &rest[open + close + 1..];
            continue;
        }
        if open > 0 {
            parts.push(PatternPart::Literal(rest[..open].to_owned()));
        }
        parts.push(PatternPart::Capture((name != "_").then(|| name.to_owned())));
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(PatternPart::Literal(rest.to_owned()));
    }
    parts
}

/// Loki's `pattern`: literals must appear in order; a capture takes what lies between them.
fn pattern(entry: &mut Entry, parts: &[PatternPart]) {
    let line = entry.line.clone();
    let mut rest = line.as_str();
    let mut captured = Vec::new();
    for (index, part) in parts.iter().enumerate() {
        match part {
            PatternPart::Literal(literal) => {
                let Some(at) = rest.find(literal.as_str()) else { return };
                if at != 0 && !matches!(parts.get(index.wrapping_sub(1)), Some(PatternPart::Capture(_))) {
                    return;
                }
                rest = &rest[at + literal.len()..];
            }
            PatternPart::Capture(name) => {
                let end = match parts.get(index + 1) {
                    Some(PatternPart::Literal(next)) => match rest.find(next.as_str()) {
                        Some(at) => at,
                        None => return,
                    },
                    _ => rest.len(),
                };
                if let Some(name) = name {
                    captured.push((name.clone(), rest[..end].to_owned()));
                }
                rest = &rest[end..];
            }
        }
    }
    for (name, value) in captured {
        add_label(&mut entry.labels, &name, value);
    }
}

/// Loki's `unpack`: a JSON object's keys become labels; `_entry` becomes the line.
fn unpack(entry: &mut Entry) {
    let Ok(serde_json::Value::Object(object)) = serde_json::from_str::<serde_json::Value>(&entry.line) else {
        set_error(&mut entry.labels, "JSONParserErr");
        return;
    };
    for (key, value) in &object {
        if key == "_entry" {
            entry.line = json_text(value);
        } else if let serde_json::Value::String(text) = value {
            add_label(&mut entry.labels, key, text.clone());
        }
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Anchored regexes of the label filter's `=~`/`!~` predicates, by value.
fn filter_regexes(expr: &LabelFilterExpr) -> Result<Vec<(String, Regex)>, QueryError> {
    let mut out = Vec::new();
    let mut pending = vec![expr];
    while let Some(expr) = pending.pop() {
        match expr {
            LabelFilterExpr::Pred(pred) => {
                if let (FilterOp::Re | FilterOp::Nre, FilterValue::String(pattern)) = (pred.op, &pred.value) {
                    out.push((pattern.clone(), unanchored(&format!("^(?:{pattern})$"))?));
                }
            }
            LabelFilterExpr::And(a, b) | LabelFilterExpr::Or(a, b) => {
                pending.push(a);
                pending.push(b);
            }
            _ => return Err(QueryError::BadData("unsupported label filter".into())),
        }
    }
    Ok(out)
}

fn label_filter(expr: &LabelFilterExpr, labels: &BTreeMap<String, String>, regexes: &[(String, Regex)]) -> bool {
    match expr {
        LabelFilterExpr::Pred(pred) => predicate(pred, labels, regexes),
        LabelFilterExpr::And(a, b) => label_filter(a, labels, regexes) && label_filter(b, labels, regexes),
        LabelFilterExpr::Or(a, b) => label_filter(a, labels, regexes) || label_filter(b, labels, regexes),
        _ => false,
    }
}

fn predicate(pred: &LabelFilterPred, labels: &BTreeMap<String, String>, regexes: &[(String, Regex)]) -> bool {
    let actual = labels.get(&pred.name).map_or("", String::as_str);
    let compare = |ordering: Option<std::cmp::Ordering>| match (pred.op, ordering) {
        (_, None) => false,
        (FilterOp::Eq | FilterOp::CmpEq, Some(o)) => o.is_eq(),
        (FilterOp::Neq, Some(o)) => !o.is_eq(),
        (FilterOp::Gt, Some(o)) => o.is_gt(),
        (FilterOp::Gte, Some(o)) => o.is_ge(),
        (FilterOp::Lt, Some(o)) => o.is_lt(),
        (FilterOp::Lte, Some(o)) => o.is_le(),
        _ => false,
    };
    match &pred.value {
        FilterValue::String(expected) => match pred.op {
            FilterOp::Eq | FilterOp::CmpEq => actual == expected,
            FilterOp::Neq => actual != expected,
            FilterOp::Re | FilterOp::Nre => {
                let matched = regexes.iter().find(|(p, _)| p == expected).is_some_and(|(_, r)| r.is_match(actual));
                matched == (pred.op == FilterOp::Re)
            }
            _ => false,
        },
        FilterValue::Number(expected) => {
            compare(actual.trim().parse::<f64>().ok().and_then(|a| a.partial_cmp(expected)))
        }
        FilterValue::Duration(expected) => {
            compare(crate::parse_duration_seconds(actual).ok().and_then(|a| a.partial_cmp(&expected.as_secs_f64())))
        }
        FilterValue::Bytes(expected) => compare(parse_bytes(actual).map(|a| a.cmp(expected))),
        FilterValue::Ip(expected) => match pred.op {
            FilterOp::Eq | FilterOp::CmpEq => actual == expected,
            FilterOp::Neq => actual != expected,
            _ => false,
        },
        _ => false,
    }
}

/// `512`, `10KB`, `1.5MiB`.
fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let number: f64 = text[..split].parse().ok()?;
    let unit = match text[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "kib" | "ki" => 1024.0,
        "mib" | "mi" => 1024.0 * 1024.0,
        "gib" | "gi" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((number * unit) as u64)
}

fn label_format(entry: &mut Entry, formats: &[logql::LabelFormat]) {
    let before = entry.labels.clone();
    for format in formats {
        match &format.value {
            LabelFormatValue::Rename(source) => {
                if let Some(value) = entry.labels.remove(source) {
                    entry.labels.insert(format.dst.clone(), value);
                }
            }
            LabelFormatValue::Template(template) => {
                let data = TemplateData { labels: before.clone(), ..TemplateData::default() };
                let value = expand_with_labels(template, &data, &entry.line).unwrap_or_default();
                entry.labels.insert(format.dst.clone(), value);
            }
            _ => {}
        }
    }
}

fn predicate_hits(predicates: &[LabelPredicate], name: &str, value: &str) -> bool {
    predicates.iter().any(|p| {
        p.name == name
            && match &p.matcher {
                None => true,
                Some((MatchOp::Eq, expected)) => value == expected,
                Some((MatchOp::Neq, expected)) => value != expected,
                Some((MatchOp::Re, pattern)) => {
                    Regex::new(&format!("^(?:{pattern})$")).is_ok_and(|r| r.is_match(value))
                }
                Some((MatchOp::Nre, pattern)) => {
                    !Regex::new(&format!("^(?:{pattern})$")).is_ok_and(|r| r.is_match(value))
                }
                Some(_) => false,
            }
    })
}
