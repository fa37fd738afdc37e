//! Label sets: a series' identity.

use std::fmt;
use std::hash::{Hash, Hasher};
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
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Labels(Arc<[Label]>);

/// Hashes a label set's pairs; [`Labels`] and [`LabelRefs`] both hash this way, so a borrowed set finds
/// the stored one in a map.
fn hash_pairs<'a, H: Hasher>(len: usize, pairs: impl Iterator<Item = (&'a str, &'a str)>, state: &mut H) {
    state.write_usize(len);
    for (name, value) in pairs {
        name.hash(state);
        value.hash(state);
    }
}

impl Hash for Labels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_pairs(self.0.len(), self.0.iter().map(|l| (&*l.name, &*l.value)), state);
    }
}

/// A label set borrowed from a request being decoded, sorted by name with no empty values, so a stored
/// [`Labels`] can be looked up without building one (hash and equality agree with it).
#[derive(Debug, Clone, Copy)]
pub struct LabelRefs<'a>(pub &'a [(&'a str, &'a str)]);

impl Hash for LabelRefs<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_pairs(self.0.len(), self.0.iter().copied(), state);
    }
}

impl hashbrown::Equivalent<Labels> for LabelRefs<'_> {
    fn equivalent(&self, key: &Labels) -> bool {
        key.0.len() == self.0.len()
            && key
                .0
                .iter()
                .zip(self.0)
                .all(|(stored, (name, value))| *stored.name == **name && *stored.value == **value)
    }
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
    fn a_borrowed_set_finds_its_stored_twin() {
        let stored = Labels::new([("__name__", "up"), ("job", "node")]).unwrap();
        let mut map: hashbrown::HashMap<Labels, u32, foldhash::fast::RandomState> = hashbrown::HashMap::default();
        map.insert(stored.clone(), 7);
        assert_eq!(map.get(&LabelRefs(&[("__name__", "up"), ("job", "node")])), Some(&7));
        assert_eq!(map.get(&LabelRefs(&[("__name__", "up"), ("job", "nod")])), None);
        assert_eq!(map.get(&LabelRefs(&[("__name__", "up")])), None);
        // Pairs that concatenate alike are different sets.
        let split = Labels::new([("a", "bc")]).unwrap();
        map.insert(split, 8);
        assert_eq!(map.get(&LabelRefs(&[("ab", "c")])), None);
        assert_eq!(map.get(&LabelRefs(&[("a", "bc")])), Some(&8));
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
