//! The inverted index: label name → value → sorted series ids.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use crate::{Labels, Matcher};

/// Series id inside the head; assigned in increasing order, so pushing keeps postings sorted.
pub(crate) type SeriesId = u32;

#[derive(Debug, Default)]
pub(crate) struct Postings {
    /// Keys share the label sets' strings (the head's symbol table), so the index adds no copies.
    by_label: BTreeMap<Arc<str>, BTreeMap<Arc<str>, Vec<SeriesId>>>,
    all: Vec<SeriesId>,
}

impl Postings {
    /// Indexes a new series; ids must be added in increasing order.
    pub(crate) fn add(&mut self, id: SeriesId, labels: &Labels) {
        debug_assert!(self.all.last().is_none_or(|last| *last < id));
        self.all.push(id);
        for label in labels.iter() {
            let values = self.by_label.entry(label.name.clone()).or_default();
            values.entry(label.value.clone()).or_default().push(id);
        }
    }

    /// Every label name with its values and their posting lists.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&str, impl Iterator<Item = (&str, usize)>)> {
        self.by_label.iter().map(|(name, values)| (&**name, values.iter().map(|(v, ids)| (&**v, ids.len()))))
    }

    /// All label names, sorted.
    pub(crate) fn label_names(&self) -> impl Iterator<Item = &str> {
        self.by_label.keys().map(|name| &**name)
    }

    /// All values of `name`, sorted.
    pub(crate) fn label_values(&self, name: &str) -> impl Iterator<Item = &str> {
        self.by_label.get(name).into_iter().flat_map(|values| values.keys().map(|value| &**value))
    }

    /// Ids of the series matching every matcher, sorted. `labels_of` reads a series' labels, used to
    /// filter a small candidate set instead of computing a large negative set.
    pub(crate) fn select<'a>(&self, matchers: &[Matcher], labels_of: impl Fn(SeriesId) -> &'a Labels) -> Vec<SeriesId> {
        let (positive, empty_matching): (Vec<&Matcher>, Vec<&Matcher>) =
            matchers.iter().partition(|matcher| !matcher.matches(""));
        let mut candidates: Option<Vec<SeriesId>> = None;
        for matcher in positive {
            let ids = self.matching_ids(matcher);
            candidates = Some(match candidates {
                None => ids,
                Some(previous) => intersect(&previous, &ids),
            });
            if candidates.as_ref().is_some_and(Vec::is_empty) {
                return Vec::new();
            }
        }
        let candidates = candidates.unwrap_or_else(|| self.all.clone());
        if empty_matching.is_empty() {
            return candidates;
        }
        candidates
            .into_iter()
            .filter(|id| {
                let labels = labels_of(*id);
                empty_matching.iter().all(|matcher| matcher.matches(labels.get(&matcher.name).unwrap_or("")))
            })
            .collect()
    }

    /// Series having label `matcher.name` with a value the matcher accepts (the matcher must not accept "").
    fn matching_ids(&self, matcher: &Matcher) -> Vec<SeriesId> {
        let Some(values) = self.by_label.get(matcher.name.as_str()) else {
            return Vec::new();
        };
        let mut lists: Vec<&Vec<SeriesId>> = Vec::new();
        if let Some(exact) = matcher.exact_values() {
            lists.extend(exact.into_iter().filter_map(|value| values.get(value)));
        } else if let Some(prefix) = matcher.literal_prefix() {
            let from: (Bound<&str>, Bound<&str>) = (Bound::Included(prefix), Bound::Unbounded);
            let in_range = values.range::<str, _>(from).take_while(|(value, _)| value.starts_with(prefix));
            lists.extend(in_range.filter(|(value, _)| matcher.matches(value)).map(|(_, ids)| ids));
        } else {
            lists.extend(values.iter().filter(|(value, _)| matcher.matches(value)).map(|(_, ids)| ids));
        }
        union(&lists)
    }
}

fn intersect(a: &[SeriesId], b: &[SeriesId]) -> Vec<SeriesId> {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let mut out = Vec::with_capacity(small.len());
    let mut rest = large;
    for id in small {
        // Galloping would help for very skewed sizes; binary search on the remainder is close enough.
        match rest.binary_search(id) {
            Ok(index) => {
                out.push(*id);
                rest = &rest[index + 1..];
            }
            Err(index) => rest = &rest[index..],
        }
    }
    out
}

fn union(lists: &[&Vec<SeriesId>]) -> Vec<SeriesId> {
    match lists {
        [] => Vec::new(),
        [only] => (*only).clone(),
        _ => {
            let mut out: Vec<SeriesId> = lists.iter().flat_map(|list| list.iter().copied()).collect();
            out.sort_unstable();
            out.dedup();
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MatchOp;

    fn index() -> (Postings, Vec<Labels>) {
        let series = vec![
            Labels::new([("__name__", "up"), ("job", "api")]).unwrap(),
            Labels::new([("__name__", "up"), ("job", "web"), ("env", "prod")]).unwrap(),
            Labels::new([("__name__", "http_requests_total"), ("job", "api"), ("env", "dev")]).unwrap(),
        ];
        let mut postings = Postings::default();
        for (id, labels) in series.iter().enumerate() {
            postings.add(id as SeriesId, labels);
        }
        (postings, series)
    }

    fn select(matchers: &[(&str, MatchOp, &str)]) -> Vec<SeriesId> {
        let (postings, series) = index();
        let matchers: Vec<Matcher> =
            matchers.iter().map(|(name, op, value)| Matcher::new(*op, *name, *value).unwrap()).collect();
        postings.select(&matchers, |id| &series[id as usize])
    }

    #[test]
    fn all_operators() {
        assert_eq!(select(&[("__name__", MatchOp::Equal, "up")]), [0, 1]);
        assert_eq!(select(&[("__name__", MatchOp::Equal, "up"), ("job", MatchOp::NotEqual, "api")]), [1]);
        assert_eq!(select(&[("job", MatchOp::Regex, "a.*")]), [0, 2]);
        assert_eq!(select(&[("job", MatchOp::Regex, "api|web"), ("env", MatchOp::NotRegex, "p.*")]), [0, 2]);
        // An empty-matching matcher also selects series without the label.
        assert_eq!(select(&[("env", MatchOp::Equal, "")]), [0]);
        assert_eq!(select(&[("env", MatchOp::NotEqual, "")]), [1, 2]);
        assert_eq!(select(&[("nope", MatchOp::Equal, "x")]), Vec::<SeriesId>::new());
    }

    #[test]
    fn intersect_and_union() {
        assert_eq!(intersect(&[1, 3, 5, 7], &[2, 3, 4, 7, 9]), [3, 7]);
        assert_eq!(union(&[&vec![1, 4], &vec![2, 4, 6]]), [1, 2, 4, 6]);
    }
}
