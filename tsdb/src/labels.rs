//! Label sets: a series' identity.

use std::fmt;
use std::sync::Arc;

use crate::Error;

/// The label that holds the metric name.
pub const METRIC_NAME: &str = "__name__";

/// One name/value pair. The strings are shared: the head's symbol table keeps one copy of each.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    /// Label name.
    pub name: Arc<str>,
    /// Label value, never empty in a stored set (an empty value means "absent").
    pub value: Arc<str>,
}

/// A label set sorted by name with unique names and no empty values.
///
/// Shared behind an `Arc`: cloning is a reference-count increment, which query evaluation does per
/// series per step. Equality compares contents (short-cutting on the same allocation).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(Arc<[Label]>);

/// Appends the series key of `pairs` (sorted by name, no empty values) to `out`: each pair as a protobuf
/// `Label` message (`0x0a <len> name 0x12 <len> value`) in field 1 (`0x0a <len> ...`). These are the bytes
/// remote write 1.0 carries for a series' labels, so a request's label bytes find a stored series
/// without being decoded (see [`crate::RefBatch`]).
pub fn series_key<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>, out: &mut Vec<u8>) {
    for (name, value) in pairs {
        let message = 2 + varint_len(name.len()) + name.len() + varint_len(value.len()) + value.len();
        out.push(0x0a);
        put_varint(message, out);
        for (tag, text) in [(0x0a, name), (0x12, value)] {
            out.push(tag);
            put_varint(text.len(), out);
            out.extend_from_slice(text.as_bytes());
        }
    }
}

/// The pairs of a key [`series_key`] wrote; an error for anything else (another layout, bad UTF-8).
pub fn parse_series_key(mut key: &[u8]) -> Result<Vec<(&str, &str)>, String> {
    let mut pairs = Vec::new();
    while !key.is_empty() {
        let message;
        (message, key) = field(key, 0x0a)?;
        let (name, rest) = field(message, 0x0a)?;
        let (value, rest) = field(rest, 0x12)?;
        if !rest.is_empty() {
            return Err("a label has more than a name and a value".into());
        }
        let text = |bytes| std::str::from_utf8(bytes).map_err(|_| "a label is not UTF-8".to_owned());
        pairs.push((text(name)?, text(value)?));
    }
    Ok(pairs)
}

/// The content of the length-delimited field `tag` at the start of `bytes`, and what follows it.
fn field(bytes: &[u8], tag: u8) -> Result<(&[u8], &[u8]), String> {
    let Some((_, mut rest)) = bytes.split_first().filter(|(first, _)| **first == tag) else {
        return Err(format!("expected field tag {tag:#04x}"));
    };
    let mut len = 0usize;
    for shift in (0..35).step_by(7) {
        let (&byte, tail) = rest.split_first().ok_or("a truncated length")?;
        rest = tail;
        len |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return if len <= rest.len() { Ok(rest.split_at(len)) } else { Err("a length beyond the key".into()) };
        }
    }
    Err("a length over 5 bytes".into())
}

fn varint_len(value: usize) -> usize {
    (usize::BITS - (value | 1).leading_zeros()).div_ceil(7) as usize
}

fn put_varint(mut value: usize, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

impl Default for Labels {
    fn default() -> Self {
        Labels(Arc::from(Vec::new()))
    }
}

impl Labels {
    /// Builds a set from pairs: sorts them, drops empty values, rejects empty or repeated names.
    pub fn new<N: Into<Arc<str>>, V: Into<Arc<str>>>(pairs: impl IntoIterator<Item = (N, V)>) -> Result<Self, Error> {
        let mut labels: Vec<Label> = pairs
            .into_iter()
            .map(|(name, value)| Label { name: name.into(), value: value.into() })
            .filter(|label| !label.value.is_empty())
            .collect();
        labels.sort();
        for pair in labels.windows(2) {
            if pair[0].name == pair[1].name {
                return Err(Error::InvalidSeries(format!("duplicate label name {:?}", pair[0].name)));
            }
        }
        if labels.iter().any(|label| label.name.is_empty()) {
            return Err(Error::InvalidSeries("empty label name".into()));
        }
        Ok(Labels(labels.into()))
    }

    /// Builds a set from pairs already known to be valid; panics in debug builds if they are not.
    pub fn from_sorted_unchecked(labels: Vec<Label>) -> Self {
        debug_assert!(labels.windows(2).all(|p| p[0].name < p[1].name));
        Labels(labels.into())
    }

    /// An identity for this allocation: equal for clones of one label set, distinct for sets alive at the
    /// same time that were built separately. For caches that also hold a clone (so the address stays taken).
    pub fn identity(&self) -> usize {
        Arc::as_ptr(&self.0) as *const Label as usize
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.binary_search_by(|label| (*label.name).cmp(name)).ok().map(|index| &*self.0[index].value)
    }

    /// The metric name, if any.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// A copy keeping only the labels whose name satisfies `keep`.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) -> Labels {
        Labels(self.0.iter().filter(|label| keep(&label.name)).cloned().collect::<Vec<_>>().into())
    }

    /// A copy without `__name__`.
    pub fn without_metric_name(&self) -> Labels {
        self.retain(|name| name != METRIC_NAME)
    }

    /// A copy with `name` set to `value`; an empty value removes the label.
    pub fn with(&self, name: &str, value: &str) -> Labels {
        let mut labels: Vec<Label> = self.0.iter().filter(|label| &*label.name != name).cloned().collect();
        if !value.is_empty() {
            let position = labels.partition_point(|label| &*label.name < name);
            labels.insert(position, Label { name: name.into(), value: value.into() });
        }
        Labels(labels.into())
    }

    /// The labels in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.0.iter()
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for the empty set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.metric_name().unwrap_or("");
        write!(f, "{name}{{")?;
        let mut first = true;
        for label in self.0.iter().filter(|label| &*label.name != METRIC_NAME) {
            if !first {
                write!(f, ", ")?;
            }
            first = false;
            write!(f, "{}={:?}", label.name, label.value)?;
        }
        write!(f, "}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_and_drops_empty_values() {
        let labels = Labels::new([("job", "node"), ("__name__", "up"), ("zone", "")]).unwrap();
        let names: Vec<_> = labels.iter().map(|l| &*l.name).collect();
        assert_eq!(names, ["__name__", "job"]);
        assert_eq!(labels.get("job"), Some("node"));
        assert_eq!(labels.get("zone"), None);
        assert_eq!(labels.to_string(), r#"up{job="node"}"#);
    }

    #[test]
    fn series_keys_read_back_and_tell_sets_apart() {
        let long = "v".repeat(200);
        let labels = Labels::new([("__name__", "up"), ("job", long.as_str()), ("a", "bc")]).unwrap();
        let mut key = Vec::new();
        series_key(labels.iter().map(|l| (&*l.name, &*l.value)), &mut key);
        let pairs: Vec<(&str, &str)> = labels.iter().map(|l| (&*l.name, &*l.value)).collect();
        assert_eq!(parse_series_key(&key).unwrap(), pairs);
        // Pairs that concatenate alike are different keys.
        let (mut split, mut joined) = (Vec::new(), Vec::new());
        series_key([("a", "bc")], &mut split);
        series_key([("ab", "c")], &mut joined);
        assert_ne!(split, joined);
        assert!(parse_series_key(&key[..key.len() - 1]).is_err());
        assert!(parse_series_key(&[0x0a, 0x06, 0x0a, 0x01, b'a', 0x12, 0x01, 0xff]).unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn derived_sets_stay_sorted() {
        let labels = Labels::new([("b", "2"), ("__name__", "m")]).unwrap();
        assert_eq!(labels.with("a", "1").to_string(), r#"m{a="1", b="2"}"#);
        assert_eq!(labels.with("b", "").to_string(), "m{}");
        assert_eq!(labels.without_metric_name().to_string(), r#"{b="2"}"#);
        assert_eq!(labels.retain(|name| name == "b").len(), 1);
    }

    #[test]
    fn rejects_duplicate_names() {
        let err = Labels::new([("a", "1"), ("a", "2")]).unwrap_err();
        assert!(err.to_string().contains("duplicate label name \"a\""), "{err}");
    }
}
