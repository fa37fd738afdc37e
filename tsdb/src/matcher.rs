//! Label matchers: `=`, `!=`, `=~`, `!~`.

use regex::Regex;

use crate::Error;

/// The four matcher operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`, a fully anchored RE2-style regex in which `.` also matches a newline.
    Regex,
    /// `!~`
    NotRegex,
}

/// A condition on one label; an absent label has the value "".
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Operator.
    pub op: MatchOp,
    /// Literal value or regex source.
    pub value: String,
    regex: Option<Regex>,
    /// For regexes that are a plain alternation of literals (`a|b|c`), those literals.
    literals: Option<Vec<String>>,
}

impl Matcher {
    /// Builds a matcher, compiling the regex for `=~` and `!~`.
    pub fn new(op: MatchOp, name: impl Into<String>, value: impl Into<String>) -> Result<Self, Error> {
        let value = value.into();
        let (regex, literals) = match op {
            MatchOp::Regex | MatchOp::NotRegex => {
                let anchored = format!("^(?s:{value})$");
                let regex = Regex::new(&anchored).map_err(|e| Error::InvalidMatcher(format!("{value:?}: {e}")))?;
                (Some(regex), literal_alternation(&value))
            }
            MatchOp::Equal | MatchOp::NotEqual => (None, None),
        };
        Ok(Matcher { name: name.into(), op, value, regex, literals })
    }

    /// Shorthand for an `=` matcher.
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Matcher { name: name.into(), op: MatchOp::Equal, value: value.into(), regex: None, literals: None }
    }

    /// True when `value` ("" for an absent label) satisfies the matcher.
    pub fn matches(&self, value: &str) -> bool {
        match self.op {
            MatchOp::Equal => value == self.value,
            MatchOp::NotEqual => value != self.value,
            MatchOp::Regex => self.regex_matches(value),
            MatchOp::NotRegex => !self.regex_matches(value),
        }
    }

    fn regex_matches(&self, value: &str) -> bool {
        if let Some(literals) = &self.literals {
            return literals.iter().any(|literal| literal == value);
        }
        self.regex.as_ref().is_some_and(|regex| regex.is_match(value))
    }

    /// For a positive matcher whose matching values are a known finite set, that set; lets the index
    /// look them up directly instead of scanning every value of the label.
    pub(crate) fn exact_values(&self) -> Option<Vec<&str>> {
        match self.op {
            MatchOp::Equal => Some(vec![self.value.as_str()]),
            MatchOp::Regex => self.literals.as_ref().map(|l| l.iter().map(String::as_str).collect()),
            _ => None,
        }
    }

    /// For a positive regex with a literal prefix (`api_.*`), that prefix; lets the index scan a range.
    pub(crate) fn literal_prefix(&self) -> Option<&str> {
        if self.op != MatchOp::Regex {
            return None;
        }
        let end = self.value.find(|c: char| is_regex_meta(c)).unwrap_or(self.value.len());
        let prefix = &self.value[..end];
        // A quantifier right after the prefix applies to its last character, so that one is not fixed.
        let next = self.value[end..].chars().next();
        if matches!(next, Some('?' | '*' | '{')) || prefix.is_empty() || self.value[end..].starts_with('|') {
            return None;
        }
        if self.value.contains('|') {
            return None;
        }
        Some(prefix)
    }
}

fn is_regex_meta(c: char) -> bool {
    matches!(c, '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$')
}

/// `a|b|c` with no metacharacters → `["a", "b", "c"]`.
fn literal_alternation(source: &str) -> Option<Vec<String>> {
    let alternatives: Vec<&str> = source.split('|').collect();
    if alternatives.iter().any(|alt| alt.chars().any(is_regex_meta)) {
        return None;
    }
    Some(alternatives.into_iter().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_is_anchored_and_dot_matches_newline() {
        let m = Matcher::new(MatchOp::Regex, "a", "fo.").unwrap();
        assert!(m.matches("foo"));
        assert!(m.matches("fo\n"));
        assert!(!m.matches("xfoo"));
        assert!(!m.matches("fooo"));
    }

    #[test]
    fn literal_alternations_are_recognised() {
        let m = Matcher::new(MatchOp::Regex, "job", "api|web").unwrap();
        assert_eq!(m.exact_values(), Some(vec!["api", "web"]));
        assert!(m.matches("web"));
        assert!(!m.matches("webx"));
        assert!(Matcher::new(MatchOp::Regex, "job", "api.*").unwrap().exact_values().is_none());
    }

    #[test]
    fn prefixes_are_found_only_when_fixed() {
        let prefix = |re: &str| Matcher::new(MatchOp::Regex, "n", re).unwrap().literal_prefix().map(str::to_owned);
        assert_eq!(prefix("node_.*").as_deref(), Some("node_"));
        assert_eq!(prefix("nodes?"), None);
        assert_eq!(prefix(".*x"), None);
        assert_eq!(prefix("a.*|b.*"), None);
    }

    #[test]
    fn bad_regex_is_an_error() {
        let err = Matcher::new(MatchOp::Regex, "a", "(").unwrap_err();
        assert!(err.to_string().contains("invalid matcher"), "{err}");
    }
}
