//! Tokens of log lines: runs of letters, digits and `_`, lowercased; and, where such runs are joined by
//! `.`, `:`, `/`, `-` or `@` (IPs, UUIDs, paths, hosts, error codes like `ERR-42`), the joined whole as
//! well, so `10.0.0.1` and `/api/v1/users` are findable both whole and by their parts.

use tantivy::tokenizer::{Token, TokenStream, Tokenizer};

/// A token and where it sits in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpan {
    /// Lowercased text.
    pub text: String,
    /// Byte offset of its start.
    pub from: usize,
    /// Byte offset past its end.
    pub to: usize,
    /// A joined whole (`10.0.0.1`) rather than one run.
    pub compound: bool,
}

const JOINERS: &[char] = &['.', ':', '/', '-', '@'];

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every token of `text`, runs and joined wholes, in order of their start.
pub fn tokens(text: &str) -> Vec<TokenSpan> {
    let mut out = Vec::new();
    let mut compound_start: Option<usize> = None;
    let mut parts = 0;
    let mut chars = text.char_indices().peekable();
    let mut last_end = 0;
    while let Some((start, c)) = chars.next() {
        if !is_word(c) {
            let joins = JOINERS.contains(&c) && chars.peek().is_some_and(|&(_, next)| is_word(next)) && parts > 0;
            if !joins {
                close_compound(text, &mut out, &mut compound_start, &mut parts, last_end);
            }
            continue;
        }
        let mut end = start + c.len_utf8();
        while let Some(&(i, next)) = chars.peek() {
            if !is_word(next) {
                break;
            }
            end = i + next.len_utf8();
            chars.next();
        }
        out.push(TokenSpan { text: text[start..end].to_lowercase(), from: start, to: end, compound: false });
        compound_start.get_or_insert(start);
        parts += 1;
        last_end = end;
    }
    close_compound(text, &mut out, &mut compound_start, &mut parts, last_end);
    out
}

fn close_compound(text: &str, out: &mut Vec<TokenSpan>, start: &mut Option<usize>, parts: &mut usize, end: usize) {
    if let Some(from) = start.take() {
        if *parts > 1 {
            out.push(TokenSpan { text: text[from..end].to_lowercase(), from, to: end, compound: true });
        }
    }
    *parts = 0;
}

/// The tantivy tokenizer over [`tokens`].
#[derive(Clone, Default)]
pub struct LogTokenizer;

/// Tokens of one text, handed out one by one.
pub struct LogTokenStream {
    tokens: Vec<Token>,
    next: usize,
}

impl Tokenizer for LogTokenizer {
    type TokenStream<'a> = LogTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> LogTokenStream {
        let tokens = tokens(text)
            .into_iter()
            .enumerate()
            .map(|(position, span)| Token {
                offset_from: span.from,
                offset_to: span.to,
                position,
                text: span.text,
                position_length: 1,
            })
            .collect();
        LogTokenStream { tokens, next: 0 }
    }
}

impl TokenStream for LogTokenStream {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }

    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(line: &str) -> Vec<String> {
        tokens(line).into_iter().map(|t| t.text).collect()
    }

    #[test]
    fn runs_and_joined_wholes() {
        assert_eq!(
            texts("GET /api/v1/users from 10.0.0.1: ERR-42 timeout"),
            [
                "get",
                "api",
                "v1",
                "users",
                "api/v1/users",
                "from",
                "10",
                "0",
                "0",
                "1",
                "10.0.0.1",
                "err",
                "42",
                "err-42",
                "timeout"
            ]
        );
        assert_eq!(texts("id=550e8400-e29b"), ["id", "550e8400", "e29b", "550e8400-e29b"]);
        assert_eq!(texts("a. b"), ["a", "b"], "a joiner before a space does not join");
        assert_eq!(texts(""), Vec::<String>::new());
    }
}
