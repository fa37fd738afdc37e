//! The Prometheus exposition formats: OpenMetrics 1.0 text (strict) and Prometheus text 0.0.4 (lenient).
//!
//! Hand-written because no maintained crate parses OpenMetrics with its semantic rules (metric families,
//! grouping, histogram and summary invariants, exemplars); the OpenMetrics parser corpus in
//! `../shared/conformance/openmetrics` is the acceptance test.

use std::collections::HashSet;

/// Which format to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/openmetrics-text`: strict, ends with `# EOF`, timestamps in seconds.
    OpenMetrics,
    /// `text/plain; version=0.0.4`: lenient, timestamps in milliseconds.
    PrometheusText,
}

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    Unknown,
}

impl MetricType {
    fn parse(text: &str, format: Format) -> Option<MetricType> {
        Some(match text {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "gaugehistogram" => MetricType::GaugeHistogram,
            "summary" => MetricType::Summary,
            "info" => MetricType::Info,
            "stateset" => MetricType::StateSet,
            "unknown" => MetricType::Unknown,
            "untyped" if format == Format::PrometheusText => MetricType::Unknown,
            _ => return None,
        })
    }

    /// Name suffixes a sample of this type may carry.
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            MetricType::Counter => &["_total", "_created"],
            MetricType::Histogram => &["_bucket", "_count", "_sum", "_created"],
            MetricType::GaugeHistogram => &["_bucket", "_gcount", "_gsum"],
            MetricType::Summary => &["", "_count", "_sum", "_created"],
            MetricType::Info => &["_info"],
            MetricType::Gauge | MetricType::StateSet | MetricType::Unknown => &[""],
        }
    }

    /// The type name as Prometheus's metadata API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::GaugeHistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
            MetricType::Unknown => "unknown",
        }
    }
}

/// An exemplar attached to a sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// Seconds since the epoch.
    pub timestamp: Option<f64>,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedSample {
    /// Full sample name (`http_requests_total`).
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// Milliseconds since the epoch, if the line had a timestamp.
    pub timestamp_ms: Option<i64>,
    pub exemplar: Option<Exemplar>,
}

/// A metric family: metadata and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricFamily {
    pub name: String,
    pub metric_type: MetricType,
    pub help: Option<String>,
    pub unit: Option<String>,
    pub samples: Vec<ParsedSample>,
}

/// A parse failure: the 1-based line and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// Parses a whole exposition held in memory.
pub fn parse(text: &str, format: Format) -> Result<Vec<MetricFamily>, ParseError> {
    let mut collected: Vec<Vec<ParsedSample>> = Vec::new();
    let mut families = parse_stream(text.as_bytes(), format, |index, _, sample| {
        if collected.len() <= index {
            collected.resize_with(index + 1, Vec::new);
        }
        collected[index].push(sample);
        Ok(())
    })?;
    collected.resize_with(families.len(), Vec::new);
    for (family, samples) in families.iter_mut().zip(collected) {
        debug_assert!(family.samples.is_empty(), "every sample was handed over");
        family.samples = samples;
    }
    Ok(families)
}

/// What [`parse_stream`] calls for each validated sample: the family's index and metadata, and the sample.
/// An error stops parsing; it is reported at the current line.
pub type SampleSink<'a> = dyn FnMut(usize, &MetricFamily, ParsedSample) -> Result<(), String> + 'a;

/// Parses an exposition line by line, handing each sample to `sink` once its metric point is complete and
/// valid, so memory stays bounded by one metric point. Returns the families' metadata (without samples).
pub fn parse_stream(
    reader: impl std::io::BufRead,
    format: Format,
    mut sink: impl FnMut(usize, &MetricFamily, ParsedSample) -> Result<(), String>,
) -> Result<Vec<MetricFamily>, ParseError> {
    let parser = Parser {
        format,
        families: Vec::new(),
        family_has_samples: Vec::new(),
        names: HashSet::new(),
        typed: HashSet::new(),
        point: PointState::default(),
        sink: &mut sink,
    };
    parser.run(reader)
}

#[derive(Debug, Default)]
struct PointState {
    /// Labels of the current metric point (without le/quantile/state label).
    key: Option<Vec<(String, String)>>,
    /// Keys of points already finished in the current family.
    finished: HashSet<Vec<(String, String)>>,
    /// Index in the family's samples where the current point starts.
    start: usize,
    /// Timestamp of the current point's samples.
    timestamp: Option<i64>,
}

struct Parser<'s> {
    format: Format,
    /// Families so far; `samples` holds only those not yet handed to the sink (the current point).
    families: Vec<MetricFamily>,
    /// Whether each family had any sample (metadata after samples is an error).
    family_has_samples: Vec<bool>,
    /// Every family name used so far.
    names: HashSet<String>,
    /// Families that had a `# TYPE` line.
    typed: HashSet<usize>,
    point: PointState,
    sink: &'s mut SampleSink<'s>,
}

fn fail<T>(line: usize, reason: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError { line, reason: reason.into() })
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A number as the formats write it: decimal with optional exponent, or `NaN`/`+Inf`/`-Inf`/`Inf`.
fn parse_number(text: &str) -> Option<f64> {
    match text {
        "NaN" => return Some(f64::NAN),
        "+Inf" | "Inf" => return Some(f64::INFINITY),
        "-Inf" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    parse_real(text)
}

/// A finite decimal number (timestamps allow only these).
fn parse_real(text: &str) -> Option<f64> {
    let body = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => (&body[..at], Some(&body[at + 1..])),
        None => (body, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits_ok(whole) || !digits_ok(fraction) {
        return None;
    }
    if let Some(exponent) = exponent {
        let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
        if digits.is_empty() || !digits_ok(digits) {
            return None;
        }
    }
    text.parse().ok()
}

/// Label pairs in written order.
type LabelPairs = Vec<(String, String)>;

/// Reads `name="value",...}` after the opening brace; returns labels and the rest after `}`.
fn parse_labels(text: &str, line: usize) -> Result<(LabelPairs, &str), ParseError> {
    let mut labels: Vec<(String, String)> = Vec::new();
    let mut rest = text;
    if let Some(after) = rest.strip_prefix('}') {
        return Ok((labels, after));
    }
    loop {
        let equals = rest.find('=').ok_or_else(|| ParseError { line, reason: "label without '='".into() })?;
        let name = &rest[..equals];
        if !is_label_name(name) {
            return fail(line, format!("invalid label name {name:?}"));
        }
        rest = rest[equals + 1..]
            .strip_prefix('"')
            .ok_or_else(|| ParseError { line, reason: format!("value of label {name:?} is not quoted") })?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return fail(line, format!("unterminated value of label {name:?}")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, other)) => {
                        value.push('\\');
                        value.push(other);
                    }
                    None => return fail(line, "unterminated escape"),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.iter().any(|(existing, _)| existing == name) {
            return fail(line, format!("duplicate label {name:?}"));
        }
        labels.push((name.to_owned(), value));
        rest = &rest[end + 1..];
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        rest = rest
            .strip_prefix(',')
            .ok_or_else(|| ParseError { line, reason: "expected ',' or '}' after a label".into() })?;
        if rest.starts_with('}') {
            return fail(line, "trailing comma in labels");
        }
    }
}

fn unescape_help(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

impl Parser<'_> {
    fn run(mut self, mut reader: impl std::io::BufRead) -> Result<Vec<MetricFamily>, ParseError> {
        let strict = self.format == Format::OpenMetrics;
        let mut saw_eof = false;
        let mut buffer = Vec::new();
        let mut line = 0;
        loop {
            buffer.clear();
            let read = reader
                .read_until(b'\n', &mut buffer)
                .map_err(|e| ParseError { line: line + 1, reason: e.to_string() })?;
            if read == 0 {
                break;
            }
            line += 1;
            if saw_eof {
                return fail(line, "text after # EOF");
            }
            let had_newline = buffer.last() == Some(&b'\n');
            if had_newline {
                buffer.pop();
            }
            let raw = std::str::from_utf8(&buffer).map_err(|_| ParseError { line, reason: "invalid UTF-8".into() })?;
            let raw = if strict { raw } else { raw.trim_end_matches('\r') };
            if raw == "# EOF" {
                saw_eof = true;
                continue;
            }
            if strict && !had_newline {
                return fail(line, "missing # EOF");
            }
            if raw.trim().is_empty() {
                if strict {
                    return fail(line, "blank line");
                }
                continue;
            }
            if let Some(comment) = raw.strip_prefix('#') {
                self.metadata(comment, line)?;
                continue;
            }
            self.sample(raw, line)?;
        }
        if strict && !saw_eof {
            return fail(line.max(1), "missing # EOF");
        }
        self.finish_point(line)?;
        Ok(self.families)
    }

    /// Hands the pending samples of the last family to the sink.
    fn emit_pending(&mut self, line: usize) -> Result<(), ParseError> {
        let Some(index) = self.families.len().checked_sub(1) else {
            return Ok(());
        };
        let pending = std::mem::take(&mut self.families[index].samples);
        for sample in pending {
            (self.sink)(index, &self.families[index], sample).map_err(|reason| ParseError { line, reason })?;
        }
        self.point.start = 0;
        Ok(())
    }

    fn metadata(&mut self, comment: &str, line: usize) -> Result<(), ParseError> {
        let strict = self.format == Format::OpenMetrics;
        let Some(body) = comment.strip_prefix(' ') else {
            if strict {
                return fail(line, "a comment line must start with '# '");
            }
            return Ok(());
        };
        let (keyword, rest) = body.split_once(' ').unwrap_or((body, ""));
        if !matches!(keyword, "HELP" | "TYPE" | "UNIT") {
            if strict {
                return fail(line, format!("unknown metadata {keyword:?}"));
            }
            return Ok(());
        }
        let (name, text) = match rest.split_once(' ') {
            Some(split) => split,
            None if strict => return fail(line, format!("# {keyword} needs a metric name and a value")),
            None => (rest, ""),
        };
        if !is_metric_name(name) {
            return fail(line, format!("invalid metric name {name:?} in # {keyword}"));
        }
        let family = self.family_for_metadata(name, line)?;
        match keyword {
            "HELP" => {
                if self.families[family].help.is_some() {
                    return fail(line, format!("repeated # HELP for {name}"));
                }
                self.families[family].help = Some(unescape_help(text));
            }
            "TYPE" => {
                if !self.typed.insert(family) || self.family_has_samples[family] {
                    return fail(line, format!("repeated or late # TYPE for {name}"));
                }
                let text = if strict { text } else { text.trim() };
                let metric_type = MetricType::parse(text, self.format)
                    .ok_or_else(|| ParseError { line, reason: format!("unknown metric type {text:?}") })?;
                self.families[family].metric_type = metric_type;
                self.check_clashes(family, line)?;
            }
            _ => {
                if self.families[family].unit.is_some() {
                    return fail(line, format!("repeated # UNIT for {name}"));
                }
                if !text.is_empty() && !name.ends_with(&format!("_{text}")) {
                    return fail(line, format!("metric name {name:?} does not end with its unit {text:?}"));
                }
                self.families[family].unit = Some(text.to_owned());
            }
        }
        let family = &self.families[family];
        if family.unit.as_deref().is_some_and(|u| !u.is_empty())
            && matches!(family.metric_type, MetricType::Info | MetricType::StateSet)
        {
            return fail(line, format!("{} metrics cannot have a unit", family.metric_type.as_str()));
        }
        Ok(())
    }

    /// The family a metadata line belongs to: the current one if it has this name and no samples yet,
    /// else a new family.
    fn family_for_metadata(&mut self, name: &str, line: usize) -> Result<usize, ParseError> {
        if let Some(last) = self.families.last()
            && last.name == name
            && !self.family_has_samples[self.families.len() - 1]
        {
            return Ok(self.families.len() - 1);
        }
        self.start_family(name, line)
    }

    fn start_family(&mut self, name: &str, line: usize) -> Result<usize, ParseError> {
        self.finish_point(line)?;
        if self.names.contains(name) {
            return fail(line, format!("metric family {name:?} appears twice or is interleaved with another"));
        }
        self.names.insert(name.to_owned());
        self.family_has_samples.push(false);
        self.families.push(MetricFamily {
            name: name.to_owned(),
            metric_type: MetricType::Unknown,
            help: None,
            unit: None,
            samples: Vec::new(),
        });
        self.point = PointState::default();
        let index = self.families.len() - 1;
        self.check_clashes(index, line)?;
        Ok(index)
    }

    /// A family's possible sample names must not be another family's name, nor the other way round.
    fn check_clashes(&self, index: usize, line: usize) -> Result<(), ParseError> {
        if self.format != Format::OpenMetrics {
            return Ok(());
        }
        let family = &self.families[index];
        let own: Vec<String> = family.metric_type.suffixes().iter().map(|s| format!("{}{s}", family.name)).collect();
        for (other_index, other) in self.families.iter().enumerate() {
            if other_index == index {
                continue;
            }
            let theirs: Vec<String> =
                other.metric_type.suffixes().iter().map(|s| format!("{}{s}", other.name)).collect();
            if own.contains(&other.name) || theirs.contains(&family.name) {
                return fail(line, format!("metric family {:?} clashes with {:?}", family.name, other.name));
            }
        }
        Ok(())
    }

    fn sample(&mut self, raw: &str, line: usize) -> Result<(), ParseError> {
        let strict = self.format == Format::OpenMetrics;
        let name_end = raw.find(['{', ' ', '\t']).unwrap_or(raw.len());
        let name = &raw[..name_end];
        if !is_metric_name(name) {
            return fail(line, format!("invalid metric name {name:?}"));
        }
        let mut rest = &raw[name_end..];
        let labels = match rest.strip_prefix('{') {
            Some(after) => {
                let (labels, remaining) = parse_labels(after, line)?;
                rest = remaining;
                labels
            }
            None => Vec::new(),
        };
        let (sample_part, exemplar_part) = match rest.find(" # ") {
            Some(at) if strict => (&rest[..at], Some(&rest[at + 3..])),
            _ => (rest, None),
        };
        let fields: Vec<&str> = if strict {
            let Some(after) = sample_part.strip_prefix(' ') else {
                return fail(line, "expected a single space before the value");
            };
            after.split(' ').collect()
        } else {
            sample_part.split_whitespace().collect()
        };
        let value = match fields.first() {
            Some(text) => {
                parse_number(text).ok_or_else(|| ParseError { line, reason: format!("invalid value {text:?}") })?
            }
            None => return fail(line, "missing value"),
        };
        let timestamp_ms = match fields.get(1) {
            None => None,
            Some(text) if strict => {
                let seconds = parse_real(text)
                    .ok_or_else(|| ParseError { line, reason: format!("invalid timestamp {text:?}") })?;
                Some((seconds * 1000.0).round() as i64)
            }
            Some(text) => Some(
                text.parse::<i64>().map_err(|_| ParseError { line, reason: format!("invalid timestamp {text:?}") })?,
            ),
        };
        if fields.len() > 2 {
            return fail(line, "unexpected text after the timestamp");
        }
        let exemplar = match exemplar_part {
            Some(text) => Some(parse_exemplar(text, line)?),
            None => None,
        };
        let family = self.family_for_sample(name, line)?;
        let sample = ParsedSample { name: name.to_owned(), labels, value, timestamp_ms, exemplar };
        if strict {
            self.check_sample(family, &sample, line)?;
        }
        self.families[family].samples.push(sample);
        self.family_has_samples[family] = true;
        if !strict {
            self.emit_pending(line)?;
        }
        Ok(())
    }

    fn family_for_sample(&mut self, name: &str, line: usize) -> Result<usize, ParseError> {
        if let Some(last) = self.families.last() {
            let belongs = last
                .metric_type
                .suffixes()
                .iter()
                .any(|suffix| name.strip_suffix(suffix).is_some_and(|base| base == last.name));
            let loose_match = self.format == Format::PrometheusText && last.name == name;
            if belongs || loose_match {
                return Ok(self.families.len() - 1);
            }
        }
        self.start_family(name, line)
    }

    /// Type-specific rules of one sample, and metric-point grouping.
    fn check_sample(&mut self, family_index: usize, sample: &ParsedSample, line: usize) -> Result<(), ParseError> {
        let family = &self.families[family_index];
        let suffix = &sample.name[family.name.len()..];
        let kind = family.metric_type;
        let point_label = match (kind, suffix) {
            (MetricType::Histogram | MetricType::GaugeHistogram, "_bucket") => Some("le"),
            (MetricType::Summary, "") => Some("quantile"),
            (MetricType::StateSet, _) => Some(family.name.as_str()),
            _ => None,
        };
        if let Some(label) = point_label
            && !sample.labels.iter().any(|(name, _)| name == label)
        {
            return fail(line, format!("{} sample {} needs label {label:?}", kind.as_str(), sample.name));
        }
        if sample.exemplar.is_some() {
            let allowed = matches!(
                (kind, suffix),
                (MetricType::Counter, "_total") | (MetricType::Histogram | MetricType::GaugeHistogram, "_bucket")
            );
            if !allowed {
                return fail(line, format!("exemplars are not allowed on {}", sample.name));
            }
        }
        let v = sample.value;
        let non_negative = |what: &str| {
            if v.is_nan() || v < 0.0 {
                fail(line, format!("{what} must be a non-negative number, got {v}"))
            } else {
                Ok(())
            }
        };
        match (kind, suffix) {
            (MetricType::Counter, "_total") => non_negative("a counter")?,
            (MetricType::Histogram | MetricType::GaugeHistogram, "_bucket" | "_count" | "_gcount") => {
                non_negative("a bucket or count")?
            }
            (MetricType::Summary, "_count") => non_negative("a count")?,
            (MetricType::Summary, "_sum") => non_negative("a summary sum")?,
            (MetricType::Summary, "") => {
                if v < 0.0 {
                    return fail(line, "a quantile value must not be negative");
                }
                let quantile =
                    sample.labels.iter().find(|(n, _)| n == "quantile").map(|(_, q)| q.as_str()).unwrap_or("");
                match parse_number(quantile) {
                    Some(q) if (0.0..=1.0).contains(&q) => {}
                    _ => return fail(line, format!("invalid quantile {quantile:?}")),
                }
            }
            (MetricType::Histogram | MetricType::GaugeHistogram, "_sum" | "_gsum") if v.is_nan() => {
                return fail(line, "a histogram sum must not be NaN");
            }
            (MetricType::Info, _) if v != 1.0 => return fail(line, "an info sample's value must be 1"),
            (MetricType::StateSet, _) if v != 0.0 && v != 1.0 => return fail(line, "a stateset value must be 0 or 1"),
            _ => {}
        }
        let in_key = |(name, _): &&(String, String)| Some(name.as_str()) != point_label;
        // Compared in place; the key is materialised only when a new metric point starts.
        let same_point = self.point.key.as_ref().is_some_and(|key| key.iter().eq(sample.labels.iter().filter(in_key)));
        if !same_point {
            let key: Vec<(String, String)> = sample.labels.iter().filter(in_key).cloned().collect();
            self.finish_point(line)?;
            if self.point.finished.contains(&key) {
                return fail(line, "samples of one metric point must be contiguous");
            }
            self.point.key = Some(key);
            self.point.start = self.families[family_index].samples.len();
            self.point.timestamp = sample.timestamp_ms;
            return Ok(());
        }
        if sample.timestamp_ms == self.point.timestamp {
            return self.check_repeat(family_index, sample, line);
        }
        // The same series set at another time: a later metric point, which needs a later timestamp.
        match (self.point.timestamp, sample.timestamp_ms) {
            (Some(before), Some(now)) if now > before => {}
            _ => return fail(line, format!("{} repeated without increasing timestamps", sample.name)),
        }
        self.close_point(line)?;
        self.point.start = self.families[family_index].samples.len();
        self.point.timestamp = sample.timestamp_ms;
        Ok(())
    }

    /// Within one point: a sample name seen again starts a later point of the same series, which needs
    /// timestamps, not decreasing.
    fn check_repeat(&self, family_index: usize, sample: &ParsedSample, line: usize) -> Result<(), ParseError> {
        let family = &self.families[family_index];
        let previous = family.samples[self.point.start..]
            .iter()
            .rev()
            .find(|s| s.name == sample.name && s.labels == sample.labels);
        let Some(previous) = previous else { return Ok(()) };
        match (previous.timestamp_ms, sample.timestamp_ms) {
            (Some(before), Some(now)) if now >= before => Ok(()),
            _ => fail(line, format!("{} repeated without increasing timestamps", sample.name)),
        }
    }

    /// Checks the invariants of the metric point just finished.
    fn finish_point(&mut self, line: usize) -> Result<(), ParseError> {
        self.close_point(line)?;
        if let Some(key) = self.point.key.take() {
            self.point.finished.insert(key);
        }
        Ok(())
    }

    /// Validates the current metric point and hands its samples over, keeping its series set current.
    fn close_point(&mut self, line: usize) -> Result<(), ParseError> {
        self.check_point(line)?;
        self.emit_pending(line)
    }

    fn check_point(&mut self, line: usize) -> Result<(), ParseError> {
        if self.point.key.is_none() {
            return Ok(());
        }
        let Some(family) = self.families.last() else {
            return Ok(());
        };
        let samples = &family.samples[self.point.start..];
        match family.metric_type {
            MetricType::Histogram => check_histogram(&family.name, samples, "_count", "_sum", false, line),
            MetricType::GaugeHistogram => check_histogram(&family.name, samples, "_gcount", "_gsum", true, line),
            MetricType::Counter => {
                if samples.iter().any(|s| s.name.ends_with("_total")) {
                    Ok(())
                } else {
                    fail(line, format!("counter {} has no _total sample", family.name))
                }
            }
            _ => Ok(()),
        }
    }
}

fn check_order(
    name: &str,
    samples: &[ParsedSample],
    first: &str,
    after: &[&str],
    line: usize,
) -> Result<(), ParseError> {
    let mut seen_after = false;
    for sample in samples {
        let suffix = &sample.name[name.len()..];
        if after.contains(&suffix) {
            seen_after = true;
        } else if suffix == first && seen_after {
            return fail(line, format!("{name}{first} samples must come before the others of their point"));
        }
    }
    Ok(())
}

fn check_histogram(
    name: &str,
    samples: &[ParsedSample],
    count: &str,
    sum: &str,
    gauge: bool,
    line: usize,
) -> Result<(), ParseError> {
    check_order(name, samples, "_bucket", &[count, sum, "_created"], line)?;
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for sample in samples.iter().filter(|s| s.name.ends_with("_bucket")) {
        let le = sample.labels.iter().find(|(n, _)| n == "le").map(|(_, v)| v.as_str()).unwrap_or("");
        let bound = parse_number(le)
            .filter(|b| !b.is_nan())
            .ok_or_else(|| ParseError { line, reason: format!("invalid le {le:?}") })?;
        if let Some((previous_bound, previous_count)) = buckets.last() {
            if bound <= *previous_bound {
                return fail(line, "histogram buckets must be in increasing le order");
            }
            if sample.value < *previous_count {
                return fail(line, "histogram bucket counts must not decrease");
            }
        }
        buckets.push((bound, sample.value));
    }
    let Some((last_bound, infinity_count)) = buckets.last().copied() else {
        return fail(line, format!("histogram {name} has no buckets"));
    };
    if last_bound != f64::INFINITY {
        return fail(line, format!("histogram {name} has no +Inf bucket"));
    }
    let count_value = samples.iter().find(|s| s.name[name.len()..] == *count).map(|s| s.value);
    let sum_value = samples.iter().find(|s| s.name[name.len()..] == *sum).map(|s| s.value);
    if count_value.is_some() != sum_value.is_some() {
        return fail(line, format!("histogram {name} needs both {count} and {sum}, or neither"));
    }
    if let Some(count_value) = count_value
        && count_value != infinity_count
    {
        return fail(line, format!("{name}{count} differs from the +Inf bucket"));
    }
    let has_negative_buckets = buckets.iter().any(|(bound, _)| *bound < 0.0);
    if let Some(sum_value) = sum_value {
        if has_negative_buckets && !gauge {
            return fail(line, format!("histogram {name} with negative buckets cannot have a {sum}"));
        }
        if sum_value < 0.0 && !has_negative_buckets {
            return fail(line, format!("{name}{sum} is negative without negative buckets"));
        }
    }
    Ok(())
}

fn parse_exemplar(text: &str, line: usize) -> Result<Exemplar, ParseError> {
    let bad = |reason: &str| ParseError { line, reason: format!("invalid exemplar: {reason}") };
    let after = text.strip_prefix('{').ok_or_else(|| bad("labels must follow '# '"))?;
    let (labels, rest) = parse_labels(after, line)?;
    let length: usize = labels.iter().map(|(n, v)| n.chars().count() + v.chars().count()).sum();
    if length > 128 {
        return Err(bad("labels longer than 128 characters"));
    }
    let rest = rest.strip_prefix(' ').ok_or_else(|| bad("a single space must precede the value"))?;
    let fields: Vec<&str> = rest.split(' ').collect();
    let value = parse_number(fields[0]).ok_or_else(|| bad("invalid value"))?;
    let timestamp = match fields.get(1) {
        None => None,
        Some(text) => Some(parse_real(text).ok_or_else(|| bad("invalid timestamp"))?),
    };
    if fields.len() > 2 {
        return Err(bad("unexpected text"));
    }
    Ok(Exemplar { labels, value, timestamp })
}

/// Writes points in the Prometheus text format 0.0.4, one family per name (`counter` for `_total` names,
/// `gauge` otherwise), with `extra` labels appended to every sample.
pub fn render(points: &[crate::Point], extra: &[(&str, &str)]) -> String {
    use std::fmt::Write;
    let mut sorted: Vec<&crate::Point> = points.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::with_capacity(points.len() * 96);
    for family in sorted.chunk_by(|a, b| a.name == b.name) {
        let name = &family[0].name;
        let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for point in family {
            out.push_str(name);
            let labels = point.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).chain(extra.iter().copied());
            for (index, (key, value)) in labels.enumerate() {
                out.push(if index == 0 { '{' } else { ',' });
                let escaped = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(out, "{key}=\"{escaped}\"");
            }
            if !point.labels.is_empty() || !extra.is_empty() {
                out.push('}');
            }
            let _ = writeln!(out, " {}", format_value(point.value));
        }
    }
    out
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_points_parse_back_with_their_labels_and_types() {
        let points = vec![
            crate::Point { name: "a_total".into(), labels: vec![("path".into(), "C:\\x \"q\"\nz".into())], value: 2.5 },
            crate::Point { name: "b".into(), labels: vec![], value: f64::INFINITY },
        ];
        let text = render(&points, &[("node", "n1")]);
        let families = parse(&text, Format::PrometheusText).unwrap();
        assert_eq!(families.len(), 2);
        assert_eq!(families[0].metric_type, MetricType::Counter);
        let sample = &families[0].samples[0];
        assert_eq!(sample.labels, [("path".into(), "C:\\x \"q\"\nz".into()), ("node".into(), "n1".into())]);
        assert_eq!(sample.value, 2.5);
        assert_eq!(families[1].metric_type, MetricType::Gauge);
        assert_eq!(families[1].samples[0].value, f64::INFINITY);
    }

    #[test]
    fn parses_a_typical_exposition() {
        let text = "# TYPE http_requests counter\n# HELP http_requests Requests.\nhttp_requests_total{code=\"200\",path=\"/a\\\"b\"} 10 1700000000.5 # {trace_id=\"abc\"} 1\n# EOF\n";
        let families = parse(text, Format::OpenMetrics).unwrap();
        assert_eq!(families.len(), 1);
        let sample = &families[0].samples[0];
        assert_eq!(sample.labels[1], ("path".to_owned(), "/a\"b".to_owned()));
        assert_eq!(sample.timestamp_ms, Some(1_700_000_000_500));
        assert_eq!(sample.exemplar.as_ref().unwrap().labels[0].1, "abc");
    }

    #[test]
    fn prometheus_text_is_lenient() {
        let text = "# HELP up Up.\n# TYPE up untyped\nup{job=\"a\"}  1   1700000000000\nnode_load1 0.5\n";
        let families = parse(text, Format::PrometheusText).unwrap();
        assert_eq!(families.len(), 2);
        assert_eq!(families[0].samples[0].timestamp_ms, Some(1_700_000_000_000));
        assert!(parse(text, Format::OpenMetrics).is_err());
    }

    #[test]
    fn repeated_type_is_rejected_even_for_unknown() {
        let error = parse("# TYPE a unknown\n# TYPE a unknown\n# EOF\n", Format::OpenMetrics).unwrap_err();
        assert!(error.reason.contains("repeated"), "{error}");
    }

    #[test]
    fn errors_name_the_line() {
        let error = parse("a 1\nb x\n# EOF\n", Format::OpenMetrics).unwrap_err();
        assert_eq!(error.line, 2);
        assert!(error.reason.contains("invalid value"), "{error}");
    }

    #[test]
    fn streaming_hands_over_every_sample() {
        let mut seen = Vec::new();
        parse_stream(&b"# TYPE a gauge\na 1 1\na 2 2\n# EOF\n"[..], Format::OpenMetrics, |_, _, s| {
            seen.push(s.value);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [1.0, 2.0]);
    }

    #[test]
    fn histogram_points_repeat_with_later_timestamps() {
        let text = "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1 10\nh_count 1 10\nh_sum 2 10\nh_bucket{le=\"+Inf\"} 3 25\nh_count 3 25\nh_sum 4 25\n# EOF\n";
        let families = parse(text, Format::OpenMetrics).unwrap();
        assert_eq!(families[0].samples.len(), 6);
        let stale = "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1 10\nh_count 1 10\nh_sum 2 10\nh_bucket{le=\"+Inf\"} 3 5\n# EOF\n";
        assert!(parse(stale, Format::OpenMetrics).unwrap_err().reason.contains("increasing timestamps"));
    }
}
