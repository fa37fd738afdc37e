//! Tokens of log lines: runs of letters, digits and `_`, lowercased. Punctuation splits, so IPs, UUIDs,
//! paths, hosts and error codes (`10.0.0.1`, `/api/v1/users`, `ERR-42`) are found through their runs, and
//! the exact substring check after the index keeps the match precise.
//!
//! Runs that look like identifiers (six or more hex digits with at least one decimal digit: trace ids,
//! container ids, long numbers) are nearly unique per line; they would fill the term dictionary, so they
//! go to a per-chunk Bloom filter instead ([`is_high_cardinality`]).

use std::borrow::Cow;

/// A token and where it sits in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpan {
    /// Lowercased text.
    pub text: String,
    /// Byte offset of its start.
    pub from: usize,
    /// Byte offset past its end.
    pub to: usize,
}

/// Byte ranges of the runs of `text`, in order. ASCII is classified byte by byte; other characters by
/// `char::is_alphanumeric`.
pub fn runs(text: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let bytes = text.as_bytes();
    let mut at = 0;
    std::iter::from_fn(move || {
        let start = loop {
            if at >= bytes.len() {
                return None;
            }
            let (word, width) = classify(text, at);
            if word {
                break at;
            }
            at += width;
        };
        while at < bytes.len() {
            let (word, width) = classify(text, at);
            if !word {
                break;
            }
            at += width;
        }
        Some((start, at))
    })
}

/// Whether the character at byte `at` is a word character, and its width.
#[inline]
fn classify(text: &str, at: usize) -> (bool, usize) {
    let byte = text.as_bytes()[at];
    if byte.is_ascii() {
        return (byte.is_ascii_alphanumeric() || byte == b'_', 1);
    }
    let c = text[at..].chars().next().expect("at is a char boundary");
    (c.is_alphanumeric(), c.len_utf8())
}

/// A run lowercased, borrowed when it already is.
pub fn lowered(run: &str) -> Cow<'_, str> {
    if run.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        return Cow::Borrowed(run);
    }
    // Character by character (no final-sigma rule), so a run lowers the same wherever it is cut.
    Cow::Owned(run.chars().flat_map(char::to_lowercase).collect())
}

/// Every token of `text` with its place, in order.
pub fn tokens(text: &str) -> Vec<TokenSpan> {
    runs(text).map(|(from, to)| TokenSpan { text: lowered(&text[from..to]).into_owned(), from, to }).collect()
}

/// A token that goes to the Bloom filter rather than the term dictionary: six or more hex digits, at
/// least one of them decimal. A token with any other character can never be part of one, so a dictionary
/// scan for it is complete.
pub fn is_high_cardinality(token: &str) -> bool {
    token.len() >= 6 && is_hex(token) && token.bytes().any(|b| b.is_ascii_digit())
}

/// Whether every character of `token` is a lowercase hex digit.
pub fn is_hex(token: &str) -> bool {
    token.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn texts(line: &str) -> Vec<String> {
        tokens(line).into_iter().map(|t| t.text).collect()
    }

    #[test]
    fn runs_split_on_punctuation() {
        assert_eq!(
            texts("GET /api/v1/users from 10.0.0.1: ERR-42 Timeout"),
            ["get", "api", "v1", "users", "from", "10", "0", "0", "1", "err", "42", "timeout"]
        );
        assert_eq!(texts("id=550e8400-e29b"), ["id", "550e8400", "e29b"]);
        assert_eq!(texts("Ünïcode—split"), ["ünïcode", "split"], "an em dash is punctuation");
        assert_eq!(texts(""), Vec::<String>::new());
    }

    #[test]
    fn identifiers_are_high_cardinality_words_are_not() {
        assert!(is_high_cardinality("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(is_high_cardinality("1700000000123"));
        assert!(is_high_cardinality("7f3a9c"));
        assert!(!is_high_cardinality("deadbeef"), "no decimal digit: may be a word");
        assert!(!is_high_cardinality("12345"), "short numbers repeat");
        assert!(!is_high_cardinality("abc123x"), "not hex");
    }

    proptest! {
        /// Runs cover every word character and no other: splitting on them gives back only punctuation.
        #[test]
        fn runs_are_maximal_words(text in "[a-zA-Z0-9 ._/:=\\-ÄéßΣ—]{0,40}") {
            let mut at = 0;
            for (from, to) in runs(&text) {
                prop_assert!(text[at..from].chars().all(|c| !c.is_alphanumeric() && c != '_'));
                prop_assert!(text[from..to].chars().all(|c| c.is_alphanumeric() || c == '_'));
                at = to;
            }
            prop_assert!(text[at..].chars().all(|c| !c.is_alphanumeric() && c != '_'));
        }
    }
}
