//! A TraceQL subset: span set selectors `{ ... }` joined by `&&` and `||`, with conditions on scoped
//! attributes (`span.`, `resource.`, unscoped `.`) and intrinsics (`name`, `status`, `statusMessage`,
//! `kind`, `duration`, `rootName`, `rootServiceName`, `traceDuration`, and their `span:`/`trace:` forms),
//! comparisons `= != > >= < <= =~ !~`, `&&`, `||`, `!` and parentheses within a selector. Structural
//! operators and pipelines are refused with a message saying so.
//!
//! A selector matches spans; `A && B` matches a trace holding spans of both, `A || B` one holding either,
//! and the spans of the trace's match are the union.

use regex::Regex;
use vigil_tsdb::traces::{AttrValue, Span, attribute, hex};

use crate::QueryError;

/// A parsed query: span sets combined.
#[derive(Debug, Clone)]
pub enum SpansetExpr {
    /// `{ condition }` (an empty selector matches every span).
    Selector(Option<Condition>),
    /// Traces with spans matching both.
    And(Box<SpansetExpr>, Box<SpansetExpr>),
    /// Traces with spans matching either.
    Or(Box<SpansetExpr>, Box<SpansetExpr>),
}

/// A condition on one span (and its trace, for trace intrinsics).
#[derive(Debug, Clone)]
pub enum Condition {
    /// Both hold.
    And(Box<Condition>, Box<Condition>),
    /// Either holds.
    Or(Box<Condition>, Box<Condition>),
    /// Does not hold.
    Not(Box<Condition>),
    /// `field op value`.
    Compare(Field, Op, Literal),
    /// A boolean attribute on its own (`{ span.cache_hit }`).
    Truthy(Field),
}

/// What a condition reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// `span.key`.
    Span(String),
    /// `resource.key`.
    Resource(String),
    /// `.key`: the span's attribute, else the resource's.
    Any(String),
    /// `name`.
    Name,
    /// `status`.
    Status,
    /// `statusMessage`.
    StatusMessage,
    /// `kind`.
    Kind,
    /// `duration` (ns).
    Duration,
    /// `rootName` (needs the whole trace).
    RootName,
    /// `rootServiceName`.
    RootService,
    /// `traceDuration` (ns).
    TraceDuration,
    /// `span:id`.
    SpanId,
    /// `trace:id`.
    TraceId,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `=~`
    Re,
    /// `!~`
    NotRe,
}

/// A literal on the right of a comparison.
#[derive(Debug, Clone)]
pub enum Literal {
    /// A string (or, for `=~`, the regex source with its compiled form).
    Str(String, Option<Regex>),
    /// A number; durations are nanoseconds.
    Number(f64),
    /// `true` / `false`.
    Bool(bool),
    /// `nil`.
    Nil,
    /// An enum word: `ok`, `error`, `unset`, `server`, `client`, ...
    Word(String),
}

/// Facts about the whole trace for trace intrinsics.
#[derive(Debug, Clone, Default)]
pub struct TraceFacts {
    /// Name of the root span.
    pub root_name: String,
    /// Service of the root span.
    pub root_service: String,
    /// Latest end minus earliest start, ns.
    pub duration_ns: i64,
}

impl TraceFacts {
    /// Facts of a whole trace (the root is the span without a parent, else the earliest).
    pub fn of(spans: &[Span]) -> TraceFacts {
        let root =
            spans.iter().find(|s| s.parent_span_id.is_none()).or_else(|| spans.iter().min_by_key(|s| s.start_ns));
        let start = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
        let end = spans.iter().map(|s| s.end_ns).max().unwrap_or(0);
        TraceFacts {
            root_name: root.map(|r| r.name.clone()).unwrap_or_default(),
            root_service: root.map(|r| r.service().to_owned()).unwrap_or_default(),
            duration_ns: end - start,
        }
    }
}

/// Parses Go-style durations (`100ms`, `1.5s`, `1m30s`, `250us`, `10ns`, `2h`) into nanoseconds.
pub fn parse_duration_ns(text: &str) -> Option<i64> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    Some(total.round() as i64)
}

// ---- lexing ----

#[derive(Debug, Clone, PartialEq)]
enum Token {
    LBrace,
    RBrace,
    LParen,
    RParen,
    And,
    Or,
    Not,
    Op(Op),
    Str(String),
    Number(f64),
    Ident(String),
    Pipe,
    Structural(String),
}

fn bad(message: impl Into<String>) -> QueryError {
    QueryError::BadData(format!("invalid TraceQL query: {}", message.into()))
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | ':' | '-' | '/')
}

fn lex(text: &str) -> Result<Vec<Token>, QueryError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let two = |t: Token| (t, 2);
        let (token, len) = match (c, next) {
            (c, _) if c.is_whitespace() => {
                i += 1;
                continue;
            }
            ('{', _) => (Token::LBrace, 1),
            ('}', _) => (Token::RBrace, 1),
            ('(', _) => (Token::LParen, 1),
            (')', _) => (Token::RParen, 1),
            ('&', Some('&')) => two(Token::And),
            ('|', Some('|')) => two(Token::Or),
            ('|', _) => (Token::Pipe, 1),
            ('=', Some('~')) => two(Token::Op(Op::Re)),
            ('!', Some('~')) => two(Token::Op(Op::NotRe)),
            ('!', Some('=')) => two(Token::Op(Op::Ne)),
            ('>', Some('=')) => two(Token::Op(Op::Ge)),
            ('<', Some('=')) => two(Token::Op(Op::Le)),
            ('>', Some('>')) | ('<', Some('<')) | ('&', Some('>' | '<' | '~')) => {
                two(Token::Structural(format!("{c}{}", next.unwrap_or(' '))))
            }
            ('=', _) => (Token::Op(Op::Eq), 1),
            ('>', _) => (Token::Op(Op::Gt), 1),
            ('<', _) => (Token::Op(Op::Lt), 1),
            ('!', _) => (Token::Not, 1),
            ('~', _) => (Token::Structural("~".into()), 1),
            ('"' | '`', _) => {
                let (value, len) = lex_string(&chars[i..])?;
                (Token::Str(value), len)
            }
            (c, _) if c.is_ascii_digit() || (c == '-' && next.is_some_and(|n| n.is_ascii_digit())) => {
                let len = 1 + chars[i + 1..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == '.').count();
                let word: String = chars[i..i + len].iter().collect();
                let value = match word.parse::<f64>() {
                    Ok(n) => n,
                    Err(_) => parse_duration_ns(word.trim_start_matches('-'))
                        .map(|ns| if word.starts_with('-') { -(ns as f64) } else { ns as f64 })
                        .ok_or_else(|| bad(format!("cannot read {word:?} as a number or duration")))?,
                };
                (Token::Number(value), len)
            }
            (c, _) if is_ident_char(c) => {
                let mut len = chars[i..].iter().take_while(|c| is_ident_char(**c)).count();
                let mut word: String = chars[i..i + len].iter().collect();
                // A quoted attribute name after a scope: span."attr name".
                if word.ends_with('.') && chars.get(i + len) == Some(&'"') {
                    let (quoted, quoted_len) = lex_string(&chars[i + len..])?;
                    word.push_str(&quoted);
                    len += quoted_len;
                }
                (Token::Ident(word), len)
            }
            _ => return Err(bad(format!("unexpected character {c:?}"))),
        };
        tokens.push(token);
        i += len;
    }
    Ok(tokens)
}

/// A quoted string starting at `chars[0]`: its value and length in chars.
fn lex_string(chars: &[char]) -> Result<(String, usize), QueryError> {
    let quote = chars[0];
    let mut value = String::new();
    let mut i = 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote == '"' => {
                let escaped = chars.get(i + 1).ok_or_else(|| bad("unterminated string"))?;
                value.push(match escaped {
                    'n' => '\n',
                    't' => '\t',
                    other => *other,
                });
                i += 2;
            }
            c if c == quote => return Ok((value, i + 1)),
            c => {
                value.push(c);
                i += 1;
            }
        }
    }
    Err(bad("unterminated string"))
}

// ---- parsing ----

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

/// Parses a TraceQL query of the supported subset.
pub fn parse(text: &str) -> Result<SpansetExpr, QueryError> {
    let tokens = lex(text)?;
    if let Some(Token::Structural(op)) = tokens.iter().find(|t| matches!(t, Token::Structural(_))) {
        return Err(bad(format!("structural operator {op} is not supported; use && and || between span sets")));
    }
    if tokens.contains(&Token::Pipe) {
        return Err(bad("pipelines (| count(), | select(), ...) are not supported"));
    }
    let mut parser = Parser { tokens, pos: 0 };
    let expr = parser.spanset_or()?;
    if parser.pos != parser.tokens.len() {
        return Err(bad(format!("unexpected {:?} after the query", parser.tokens[parser.pos])));
    }
    Ok(expr)
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        token
    }

    fn expect(&mut self, token: Token) -> Result<(), QueryError> {
        match self.next() {
            Some(t) if t == token => Ok(()),
            other => Err(bad(format!("expected {token:?}, found {other:?}"))),
        }
    }

    fn spanset_or(&mut self) -> Result<SpansetExpr, QueryError> {
        let mut left = self.spanset_and()?;
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            left = SpansetExpr::Or(Box::new(left), Box::new(self.spanset_and()?));
        }
        Ok(left)
    }

    fn spanset_and(&mut self) -> Result<SpansetExpr, QueryError> {
        let mut left = self.spanset_term()?;
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            left = SpansetExpr::And(Box::new(left), Box::new(self.spanset_term()?));
        }
        Ok(left)
    }

    fn spanset_term(&mut self) -> Result<SpansetExpr, QueryError> {
        match self.next() {
            Some(Token::LBrace) => {
                if self.peek() == Some(&Token::RBrace) {
                    self.pos += 1;
                    return Ok(SpansetExpr::Selector(None));
                }
                let condition = self.condition_or()?;
                self.expect(Token::RBrace)?;
                Ok(SpansetExpr::Selector(Some(condition)))
            }
            Some(Token::LParen) => {
                let inner = self.spanset_or()?;
                self.expect(Token::RParen)?;
                Ok(inner)
            }
            other => Err(bad(format!("expected a span set {{ ... }}, found {other:?}"))),
        }
    }

    fn condition_or(&mut self) -> Result<Condition, QueryError> {
        let mut left = self.condition_and()?;
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            left = Condition::Or(Box::new(left), Box::new(self.condition_and()?));
        }
        Ok(left)
    }

    fn condition_and(&mut self) -> Result<Condition, QueryError> {
        let mut left = self.condition_unary()?;
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            left = Condition::And(Box::new(left), Box::new(self.condition_unary()?));
        }
        Ok(left)
    }

    fn condition_unary(&mut self) -> Result<Condition, QueryError> {
        match self.next() {
            Some(Token::Not) => Ok(Condition::Not(Box::new(self.condition_unary()?))),
            Some(Token::LParen) => {
                let inner = self.condition_or()?;
                self.expect(Token::RParen)?;
                Ok(inner)
            }
            Some(Token::Ident(name)) => {
                let field = field(&name)?;
                let Some(Token::Op(op)) = self.peek().cloned() else {
                    return Ok(Condition::Truthy(field));
                };
                self.pos += 1;
                let literal = self.literal(op)?;
                Ok(Condition::Compare(field, op, literal))
            }
            other => Err(bad(format!("expected a condition, found {other:?}"))),
        }
    }

    fn literal(&mut self, op: Op) -> Result<Literal, QueryError> {
        let literal = match self.next() {
            Some(Token::Str(s)) if matches!(op, Op::Re | Op::NotRe) => {
                let regex = Regex::new(&format!("^(?:{s})$")).map_err(|e| bad(format!("invalid regex {s:?}: {e}")))?;
                Literal::Str(s, Some(regex))
            }
            Some(Token::Str(s)) => Literal::Str(s, None),
            Some(Token::Number(n)) => Literal::Number(n),
            Some(Token::Ident(word)) => match word.as_str() {
                "true" => Literal::Bool(true),
                "false" => Literal::Bool(false),
                "nil" => Literal::Nil,
                _ => Literal::Word(word),
            },
            other => return Err(bad(format!("expected a value, found {other:?}"))),
        };
        if matches!(op, Op::Re | Op::NotRe) && !matches!(literal, Literal::Str(..)) {
            return Err(bad("=~ and !~ take a string"));
        }
        Ok(literal)
    }
}

fn field(name: &str) -> Result<Field, QueryError> {
    Ok(match name {
        "name" | "span:name" => Field::Name,
        "status" | "span:status" => Field::Status,
        "statusMessage" | "span:statusMessage" => Field::StatusMessage,
        "kind" | "span:kind" => Field::Kind,
        "duration" | "span:duration" => Field::Duration,
        "rootName" | "trace:rootName" => Field::RootName,
        "rootServiceName" | "trace:rootService" => Field::RootService,
        "traceDuration" | "trace:duration" => Field::TraceDuration,
        "span:id" => Field::SpanId,
        "trace:id" => Field::TraceId,
        _ => {
            if let Some(key) = name.strip_prefix("span.") {
                Field::Span(key.to_owned())
            } else if let Some(key) = name.strip_prefix("resource.") {
                Field::Resource(key.to_owned())
            } else if let Some(key) = name.strip_prefix('.') {
                Field::Any(key.to_owned())
            } else {
                return Err(bad(format!(
                    "unknown field {name:?}; use span.<attr>, resource.<attr>, .<attr> or an intrinsic"
                )));
            }
        }
    })
}

// ---- evaluation ----

/// A field's value on one span.
enum Value<'a> {
    Attr(&'a AttrValue),
    Text(String),
    Number(f64),
    Word(&'static str),
    /// A trace intrinsic asked without trace facts: treated as matching (checked again with the trace).
    Unknown,
}

fn value<'a>(field: &Field, span: &'a Span, trace: Option<&TraceFacts>) -> Option<Value<'a>> {
    Some(match field {
        Field::Span(key) => Value::Attr(attribute(&span.attributes, key)?),
        Field::Resource(key) => match key.as_str() {
            "service.name" => Value::Text(span.service().to_owned()),
            _ => Value::Attr(attribute(&span.resource.attributes, key)?),
        },
        Field::Any(key) => match attribute(&span.attributes, key) {
            Some(value) => Value::Attr(value),
            None if key == "service.name" => Value::Text(span.service().to_owned()),
            None => Value::Attr(attribute(&span.resource.attributes, key)?),
        },
        Field::Name => Value::Text(span.name.clone()),
        Field::Status => Value::Word(span.status.name()),
        Field::StatusMessage => Value::Text(span.status_message.clone()),
        Field::Kind => Value::Word(span.kind.name()),
        Field::Duration => Value::Number(span.duration_ns() as f64),
        Field::SpanId => Value::Text(hex(&span.span_id)),
        Field::TraceId => Value::Text(hex(&span.trace_id)),
        Field::RootName => trace.map_or(Value::Unknown, |t| Value::Text(t.root_name.clone())),
        Field::RootService => trace.map_or(Value::Unknown, |t| Value::Text(t.root_service.clone())),
        Field::TraceDuration => trace.map_or(Value::Unknown, |t| Value::Number(t.duration_ns as f64)),
    })
}

fn compare_order(op: Op, ordering: Option<std::cmp::Ordering>) -> bool {
    use std::cmp::Ordering::*;
    match (op, ordering) {
        (_, None) => false,
        (Op::Eq, Some(o)) => o == Equal,
        (Op::Ne, Some(o)) => o != Equal,
        (Op::Gt, Some(o)) => o == Greater,
        (Op::Ge, Some(o)) => o != Less,
        (Op::Lt, Some(o)) => o == Less,
        (Op::Le, Some(o)) => o != Greater,
        (Op::Re | Op::NotRe, _) => false,
    }
}

fn compare_text(text: &str, op: Op, literal: &Literal) -> bool {
    match literal {
        Literal::Str(s, regex) => match op {
            Op::Re => regex.as_ref().is_some_and(|r| r.is_match(text)),
            Op::NotRe => regex.as_ref().is_some_and(|r| !r.is_match(text)),
            _ => compare_order(op, Some(text.cmp(s.as_str()))),
        },
        _ => false,
    }
}

fn compare(value: Option<Value>, op: Op, literal: &Literal) -> bool {
    let Some(value) = value else {
        return matches!(literal, Literal::Nil) && op == Op::Eq;
    };
    if matches!(literal, Literal::Nil) {
        return op == Op::Ne;
    }
    match value {
        Value::Unknown => true,
        Value::Text(text) => compare_text(&text, op, literal),
        Value::Word(word) => match literal {
            Literal::Word(w) => compare_order(op, Some(word.cmp(w.as_str()))),
            Literal::Str(..) => compare_text(word, op, literal),
            _ => false,
        },
        Value::Number(n) => match literal {
            Literal::Number(m) => compare_order(op, n.partial_cmp(m)),
            _ => false,
        },
        Value::Attr(attr) => match (attr, literal) {
            (AttrValue::Str(s), Literal::Str(..)) => compare_text(s, op, literal),
            (AttrValue::Bool(b), Literal::Bool(l)) => compare_order(op, Some(b.cmp(l))),
            (AttrValue::Int(_) | AttrValue::Float(_), Literal::Number(m)) => {
                compare_order(op, attr.number().and_then(|n| n.partial_cmp(m)))
            }
            _ => false,
        },
    }
}

impl Condition {
    /// True when `span` satisfies the condition; trace intrinsics hold when `trace` is `None`.
    pub fn matches(&self, span: &Span, trace: Option<&TraceFacts>) -> bool {
        match self {
            Condition::And(a, b) => a.matches(span, trace) && b.matches(span, trace),
            Condition::Or(a, b) => a.matches(span, trace) || b.matches(span, trace),
            Condition::Not(inner) => !inner.matches(span, trace),
            Condition::Compare(field, op, literal) => compare(value(field, span, trace), *op, literal),
            Condition::Truthy(field) => matches!(value(field, span, trace), Some(Value::Attr(AttrValue::Bool(true)))),
        }
    }
}

impl SpansetExpr {
    /// True when `span` could belong to a match (it satisfies some selector).
    pub fn span_may_match(&self, span: &Span, trace: Option<&TraceFacts>) -> bool {
        match self {
            SpansetExpr::Selector(None) => true,
            SpansetExpr::Selector(Some(condition)) => condition.matches(span, trace),
            SpansetExpr::And(a, b) | SpansetExpr::Or(a, b) => {
                a.span_may_match(span, trace) || b.span_may_match(span, trace)
            }
        }
    }

    /// The spans of a trace's match, or `None` when the trace does not match.
    pub fn evaluate<'a>(&self, spans: &'a [Span], trace: Option<&TraceFacts>) -> Option<Vec<&'a Span>> {
        match self {
            SpansetExpr::Selector(condition) => {
                let matched: Vec<&Span> =
                    spans.iter().filter(|s| condition.as_ref().is_none_or(|c| c.matches(s, trace))).collect();
                (!matched.is_empty()).then_some(matched)
            }
            SpansetExpr::And(a, b) => {
                let mut left = a.evaluate(spans, trace)?;
                union(&mut left, b.evaluate(spans, trace)?);
                Some(left)
            }
            SpansetExpr::Or(a, b) => match (a.evaluate(spans, trace), b.evaluate(spans, trace)) {
                (None, None) => None,
                (Some(only), None) | (None, Some(only)) => Some(only),
                (Some(mut left), Some(right)) => {
                    union(&mut left, right);
                    Some(left)
                }
            },
        }
    }

    /// Attribute keys the query's conditions read (what search results show of each span).
    pub fn attribute_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        self.collect_keys(&mut keys);
        keys
    }

    fn collect_keys(&self, keys: &mut Vec<String>) {
        match self {
            SpansetExpr::Selector(Some(condition)) => condition.collect_keys(keys),
            SpansetExpr::Selector(None) => {}
            SpansetExpr::And(a, b) | SpansetExpr::Or(a, b) => {
                a.collect_keys(keys);
                b.collect_keys(keys);
            }
        }
    }

    /// A service every matching trace must have a span of, when the query pins one (for pruning).
    pub fn required_service(&self) -> Option<String> {
        match self {
            SpansetExpr::Selector(Some(condition)) => condition.required_service(),
            SpansetExpr::And(a, b) => a.required_service().or_else(|| b.required_service()),
            _ => None,
        }
    }
}

impl Condition {
    fn collect_keys(&self, keys: &mut Vec<String>) {
        match self {
            Condition::And(a, b) | Condition::Or(a, b) => {
                a.collect_keys(keys);
                b.collect_keys(keys);
            }
            Condition::Not(inner) => inner.collect_keys(keys),
            Condition::Compare(field, ..) | Condition::Truthy(field) => {
                if let Field::Span(key) | Field::Resource(key) | Field::Any(key) = field
                    && !keys.contains(key)
                {
                    keys.push(key.clone());
                }
            }
        }
    }

    fn required_service(&self) -> Option<String> {
        match self {
            Condition::Compare(Field::Resource(key) | Field::Any(key), Op::Eq, Literal::Str(value, _))
                if key == "service.name" =>
            {
                Some(value.clone())
            }
            Condition::And(a, b) => a.required_service().or_else(|| b.required_service()),
            _ => None,
        }
    }
}

fn union<'a>(into: &mut Vec<&'a Span>, more: Vec<&'a Span>) {
    for span in more {
        if !into.iter().any(|s| s.span_id == span.span_id) {
            into.push(span);
        }
    }
}

/// `kind` words as TraceQL writes them, for the tag-value pickers.
pub const KIND_WORDS: [&str; 6] = ["unspecified", "internal", "server", "client", "producer", "consumer"];
/// `status` words.
pub const STATUS_WORDS: [&str; 3] = ["unset", "ok", "error"];

/// Words for kinds and statuses in the order OTLP numbers them, to check the lists stay in step.
#[cfg(test)]
fn words_follow_otlp_numbers() -> bool {
    use vigil_tsdb::traces::{SpanKind, StatusCode};
    (0..6).all(|n| SpanKind::from_number(n).name() == KIND_WORDS[n as usize])
        && (0..3).all(|n| StatusCode::from_number(n).name() == STATUS_WORDS[n as usize])
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vigil_tsdb::traces::{Attribute, Resource, SpanKind, StatusCode};

    use super::*;

    fn span(service: &str, id: u8, parent: Option<u8>, name: &str, status: StatusCode, ms: i64, code: i64) -> Span {
        Span {
            trace_id: [1; 16],
            span_id: [id; 8],
            parent_span_id: parent.map(|p| [p; 8]),
            trace_state: String::new(),
            flags: 0,
            name: name.into(),
            kind: if parent.is_none() { SpanKind::Server } else { SpanKind::Client },
            status,
            status_message: String::new(),
            start_ns: 0,
            end_ns: ms * 1_000_000,
            resource: Arc::new(Resource {
                service: service.into(),
                attributes: vec![Attribute::str("service.name", service), Attribute::str("k8s.cluster", "c1")],
                ..Resource::default()
            }),
            attributes: vec![
                Attribute { key: "http.status_code".into(), value: AttrValue::Int(code) },
                Attribute::str("http.route", "/cart/{id}"),
                Attribute { key: "cache_hit".into(), value: AttrValue::Bool(id % 2 == 0) },
            ],
            events: vec![],
            links: vec![],
        }
    }

    fn trace() -> Vec<Span> {
        vec![
            span("frontend", 1, None, "GET /cart", StatusCode::Unset, 300, 200),
            span("cart", 2, Some(1), "load", StatusCode::Error, 150, 503),
            span("cart", 3, Some(1), "save", StatusCode::Ok, 20, 201),
        ]
    }

    fn matched(query: &str) -> Option<Vec<u8>> {
        let spans = trace();
        let facts = TraceFacts::of(&spans);
        let expr = parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
        expr.evaluate(&spans, Some(&facts)).map(|m| m.iter().map(|s| s.span_id[0]).collect())
    }

    #[test]
    fn selectors_match_the_spans_their_conditions_hold_for() {
        assert_eq!(
            matched(r#"{ resource.service.name = "cart" && span.http.status_code >= 500 && duration > 100ms }"#),
            Some(vec![2])
        );
        assert_eq!(matched(r#"{ .service.name = "cart" }"#), Some(vec![2, 3]));
        assert_eq!(matched(r#"{ status = error || status = ok }"#), Some(vec![2, 3]));
        assert_eq!(matched(r#"{ kind = server }"#), Some(vec![1]));
        assert_eq!(matched(r#"{ span:kind = client && !(name = "save") }"#), Some(vec![2]));
        assert_eq!(matched(r#"{ name =~ "GET.*" }"#), Some(vec![1]));
        assert_eq!(matched(r#"{ name !~ "GET.*" }"#), Some(vec![2, 3]));
        assert_eq!(matched(r#"{ span.http.route = "/cart/{id}" && span.http.status_code < 300 }"#), Some(vec![1, 3]));
        assert_eq!(matched(r#"{ span.cache_hit }"#), Some(vec![2]));
        assert_eq!(matched(r#"{ span.missing = nil }"#), Some(vec![1, 2, 3]));
        assert_eq!(matched(r#"{ span.missing != nil }"#), None);
        assert_eq!(matched(r#"{ resource.k8s.cluster = "c1" && duration <= 20ms }"#), Some(vec![3]));
        assert_eq!(matched("{ }"), Some(vec![1, 2, 3]));
        assert_eq!(matched(r#"{ span."http.route" = "/cart/{id}" }"#).map(|m| m.len()), Some(3));
    }

    #[test]
    fn span_sets_combine_over_the_trace() {
        assert_eq!(matched(r#"{ status = error } && { kind = server }"#), Some(vec![2, 1]));
        assert_eq!(matched(r#"{ status = error } && { name = "nope" }"#), None);
        assert_eq!(matched(r#"{ name = "nope" } || { name = "save" }"#), Some(vec![3]));
        assert_eq!(matched(r#"{ rootServiceName = "frontend" && status = error }"#), Some(vec![2]));
        assert_eq!(
            matched(r#"{ trace:rootName = "GET /cart" && traceDuration > 250ms && kind = server }"#),
            Some(vec![1])
        );
        assert_eq!(matched(r#"{ rootServiceName = "cart" }"#), None);
    }

    #[test]
    fn unsupported_and_malformed_queries_say_what_is_wrong() {
        let error = |q: &str| parse(q).unwrap_err().to_string();
        assert!(error("{ a } >> { b }").contains("structural operator >>"), "{}", error("{ a } >> { b }"));
        assert!(error("{ status = error } | count() > 2").contains("pipelines"));
        assert!(error("{ foo = 1 }").contains("unknown field \"foo\""));
        assert!(error(r#"{ name = "x" "#).contains("expected RBrace"));
        assert!(error(r#"{ name =~ "(" }"#).contains("invalid regex"));
    }

    #[test]
    fn go_durations_parse_to_nanoseconds() {
        assert_eq!(parse_duration_ns("100ms"), Some(100_000_000));
        assert_eq!(parse_duration_ns("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration_ns("250us"), Some(250_000));
        assert_eq!(parse_duration_ns("7µs"), Some(7_000));
        assert_eq!(parse_duration_ns("10"), None);
        assert!(words_follow_otlp_numbers());
    }
}
