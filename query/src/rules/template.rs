//! The part of Go's `text/template` that Prometheus alert labels and annotations use: text, `{{ }}`
//! actions with `{{-`/`-}}` trimming and comments, pipelines of functions, variables (`$labels`, `$value`,
//! `$externalLabels`, `$externalURL`, and `$x := ...`), fields (`.Labels.job`), `if`/`else if`/`else`/`end`,
//! and Prometheus's functions (`humanize*`, `printf`, `toUpper`, `reReplaceAll`, comparisons, ...).
//! Missing map keys render empty (`missingkey=zero`); numbers print as Go's `%v` does.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

/// A template that failed to parse or to run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

type Result<T> = std::result::Result<T, TemplateError>;

fn fail<T>(message: impl Into<String>) -> Result<T> {
    Err(TemplateError(message.into()))
}

/// What `.` and the predefined variables hold while a rule's template runs.
#[derive(Debug, Clone, Default)]
pub struct TemplateData {
    /// The alert's (or sample's) labels: `.Labels`, `$labels`.
    pub labels: BTreeMap<String, String>,
    /// The server's external labels: `.ExternalLabels`, `$externalLabels`.
    pub external_labels: BTreeMap<String, String>,
    /// The server's external URL: `.ExternalURL`, `$externalURL`.
    pub external_url: String,
    /// The sample value: `.Value`, `$value`.
    pub value: f64,
    /// LogQL's `line_format` and `label_format`: `.name` is the label `name`, `.__line__` the line.
    pub dot_is_labels: bool,
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If { condition: Pipeline, then: Vec<Node>, otherwise: Vec<Node> },
}

#[derive(Debug, Clone)]
struct Pipeline {
    declares: Option<String>,
    commands: Vec<Vec<Operand>>,
}

#[derive(Debug, Clone)]
enum Operand {
    Dot(Vec<String>),
    Variable(String, Vec<String>),
    Function(String),
    Literal(Value),
    Nested(Pipeline),
}

/// A value inside a running template.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Nil,
    Bool(bool),
    Number(f64),
    Text(String),
    Map(BTreeMap<String, String>),
    Data,
}

const FUNCTIONS: &[&str] = &[
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "printf",
    "print",
    "toUpper",
    "toLower",
    "title",
    "stripPort",
    "reReplaceAll",
    "match",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "and",
    "or",
    "not",
    "len",
    "index",
    "ToUpper",
    "ToLower",
    "upper",
    "lower",
    "trim",
    "TrimSpace",
    "replace",
];

impl Template {
    /// Parses `text`; unknown functions and unbalanced `if`/`end` are errors.
    pub fn parse(text: &str) -> Result<Template> {
        let pieces = split_actions(text)?;
        let mut at = 0;
        let (nodes, stop) = parse_nodes(&pieces, &mut at)?;
        if let Some(stop) = stop {
            return fail(format!("unexpected {{{{{stop}}}}}"));
        }
        Ok(Template { nodes })
    }

    /// Runs the template over `data`.
    pub fn render(&self, data: &TemplateData) -> Result<String> {
        let mut scope = vec![
            ("$labels".to_owned(), Value::Map(data.labels.clone())),
            ("$externalLabels".to_owned(), Value::Map(data.external_labels.clone())),
            ("$externalURL".to_owned(), Value::Text(data.external_url.clone())),
            ("$value".to_owned(), Value::Number(data.value)),
            ("$".to_owned(), Value::Data),
        ];
        let mut out = String::new();
        run(&self.nodes, data, &mut scope, &mut out)?;
        Ok(out)
    }
}

/// Renders a LogQL `line_format`/`label_format` template, where `.name` reads a label and `__line__` the line.
pub fn expand_with_labels(text: &str, data: &TemplateData, line: &str) -> Result<String> {
    let mut data = data.clone();
    data.dot_is_labels = true;
    data.labels.insert("__line__".into(), line.to_owned());
    expand(text, &data)
}

/// Parses and renders in one go (for callers that keep no parsed form).
pub fn expand(text: &str, data: &TemplateData) -> Result<String> {
    if !text.contains("{{") {
        return Ok(text.to_owned());
    }
    Template::parse(text)?.render(data)
}

enum Piece {
    Text(String),
    Action(String),
}

/// Splits into text and action bodies, applying `{{-` and `-}}` trimming and dropping comments.
fn split_actions(text: &str) -> Result<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut rest = text;
    let mut trim_next = false;
    while let Some(open) = rest.find("{{") {
        let mut before = &rest[..open];
        if trim_next {
            before = before.trim_start();
        }
        let after_open = &rest[open + 2..];
        let trim_before =
            after_open.starts_with("- ") || after_open.starts_with("-\t") || after_open.starts_with("-\n");
        if trim_before {
            before = before.trim_end();
        }
        pieces.push(Piece::Text(before.to_owned()));
        let body_start = if trim_before { 1 } else { 0 };
        let Some(close) = find_close(&after_open[body_start..]) else { return fail("unclosed action") };
        let mut body = &after_open[body_start..body_start + close];
        trim_next = body.ends_with(" -") || body.ends_with("\t-") || body.ends_with("\n-");
        if trim_next {
            body = &body[..body.len() - 1];
        }
        let body = body.trim();
        if !(body.starts_with("/*") && body.ends_with("*/")) {
            pieces.push(Piece::Action(body.to_owned()));
        }
        rest = &after_open[body_start + close + 2..];
    }
    pieces.push(Piece::Text(if trim_next { rest.trim_start() } else { rest }.to_owned()));
    Ok(pieces)
}

/// The offset of the `}}` closing an action, skipping quoted strings.
fn find_close(body: &str) -> Option<usize> {
    let bytes = body.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        match (quote, bytes[i]) {
            (Some(b'"'), b'\\') => i += 1,
            (Some(q), c) if c == q => quote = None,
            (None, b'"' | b'`') => quote = Some(bytes[i]),
            (None, b'}') if bytes.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Parses nodes until `end`, `else` or the input's end; returns the stop keyword met, if any.
fn parse_nodes(pieces: &[Piece], at: &mut usize) -> Result<(Vec<Node>, Option<String>)> {
    let mut nodes = Vec::new();
    while *at < pieces.len() {
        let piece = &pieces[*at];
        *at += 1;
        let body = match piece {
            Piece::Text(text) => {
                if !text.is_empty() {
                    nodes.push(Node::Text(text.clone()));
                }
                continue;
            }
            Piece::Action(body) => body.as_str(),
        };
        if body == "end" || body == "else" || body.starts_with("else ") {
            return Ok((nodes, Some(body.to_owned())));
        }
        if let Some(condition) = body.strip_prefix("if ") {
            nodes.push(parse_if(condition, pieces, at)?);
            continue;
        }
        let keyword = body.split_whitespace().next().unwrap_or_default();
        if ["range", "with", "define", "template", "block", "break", "continue"].contains(&keyword) {
            return fail(format!("{{{{{keyword}}}}} is not supported in rule templates"));
        }
        nodes.push(Node::Action(parse_pipeline(body)?));
    }
    Ok((nodes, None))
}

fn parse_if(condition: &str, pieces: &[Piece], at: &mut usize) -> Result<Node> {
    let condition = parse_pipeline(condition)?;
    let (then, stop) = parse_nodes(pieces, at)?;
    let otherwise = match stop.as_deref() {
        Some("end") => Vec::new(),
        Some("else") => match parse_nodes(pieces, at)? {
            (nodes, Some(end)) if end == "end" => nodes,
            _ => return fail("{{else}} without {{end}}"),
        },
        Some(other) if other.starts_with("else if ") => vec![parse_if(&other["else if ".len()..], pieces, at)?],
        _ => return fail("{{if}} without {{end}}"),
    };
    Ok(Node::If { condition, then, otherwise })
}

fn parse_pipeline(text: &str) -> Result<Pipeline> {
    let tokens = tokenize(text)?;
    let mut position = 0;
    let pipeline = pipeline_from(&tokens, &mut position)?;
    if position != tokens.len() {
        return fail(format!("unexpected {:?} in {text:?}", tokens[position]));
    }
    Ok(pipeline)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Pipe,
    Open,
    Close,
    Declare,
}

fn tokenize(text: &str) -> Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '|' => tokens.push(Token::Pipe),
            '(' => tokens.push(Token::Open),
            ')' => tokens.push(Token::Close),
            ':' if chars.peek().map(|p| p.1) == Some('=') => {
                chars.next();
                tokens.push(Token::Declare);
            }
            '"' => {
                let mut value = String::new();
                loop {
                    match chars.next() {
                        None => return fail("unterminated quoted string"),
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.next().map(|p| p.1) {
                            Some('n') => value.push('\n'),
                            Some('t') => value.push('\t'),
                            Some(other) => value.push(other),
                            None => return fail("unterminated quoted string"),
                        },
                        Some((_, other)) => value.push(other),
                    }
                }
                tokens.push(Token::Text(value));
            }
            '`' => {
                let rest = &text[start + 1..];
                let Some(end) = rest.find('`') else { return fail("unterminated raw string") };
                tokens.push(Token::Text(rest[..end].to_owned()));
                for _ in 0..rest[..end].chars().count() + 1 {
                    chars.next();
                }
            }
            _ => {
                let mut end = start + c.len_utf8();
                while let Some(&(i, next)) = chars.peek() {
                    if next.is_whitespace() || "|()\"`".contains(next) || (next == ':' && text[i..].starts_with(":=")) {
                        break;
                    }
                    end = i + next.len_utf8();
                    chars.next();
                }
                tokens.push(Token::Word(text[start..end].to_owned()));
            }
        }
    }
    Ok(tokens)
}

fn pipeline_from(tokens: &[Token], position: &mut usize) -> Result<Pipeline> {
    let mut declares = None;
    if let (Some(Token::Word(name)), Some(Token::Declare)) = (tokens.get(*position), tokens.get(*position + 1)) {
        if !name.starts_with('$') {
            return fail(format!("cannot declare {name:?}: variables start with $"));
        }
        declares = Some(name.clone());
        *position += 2;
    }
    let mut commands = vec![Vec::new()];
    while let Some(token) = tokens.get(*position) {
        *position += 1;
        let operand = match token {
            Token::Close => {
                *position -= 1;
                break;
            }
            Token::Pipe => {
                commands.push(Vec::new());
                continue;
            }
            Token::Declare => return fail("unexpected :="),
            Token::Open => {
                let nested = pipeline_from(tokens, position)?;
                if tokens.get(*position) != Some(&Token::Close) {
                    return fail("unclosed (");
                }
                *position += 1;
                Operand::Nested(nested)
            }
            Token::Text(text) => Operand::Literal(Value::Text(text.clone())),
            Token::Word(word) => operand(word)?,
        };
        commands.last_mut().expect("one command at least").push(operand);
    }
    if commands.iter().any(Vec::is_empty) {
        return fail("missing command in pipeline");
    }
    Ok(Pipeline { declares, commands })
}

fn operand(word: &str) -> Result<Operand> {
    if let Some(path) = word.strip_prefix('.') {
        let fields = if path.is_empty() { Vec::new() } else { path.split('.').map(str::to_owned).collect() };
        return Ok(Operand::Dot(fields));
    }
    if word.starts_with('$') {
        let mut parts = word.split('.');
        let name = parts.next().unwrap_or_default().to_owned();
        return Ok(Operand::Variable(name, parts.map(str::to_owned).collect()));
    }
    match word {
        "true" => return Ok(Operand::Literal(Value::Bool(true))),
        "false" => return Ok(Operand::Literal(Value::Bool(false))),
        "nil" => return Ok(Operand::Literal(Value::Nil)),
        _ => {}
    }
    if let Ok(number) = word.parse::<f64>() {
        return Ok(Operand::Literal(Value::Number(number)));
    }
    if FUNCTIONS.contains(&word) {
        return Ok(Operand::Function(word.to_owned()));
    }
    fail(format!("function {word:?} not defined"))
}

type Scope = Vec<(String, Value)>;

fn run(nodes: &[Node], data: &TemplateData, scope: &mut Scope, out: &mut String) -> Result<()> {
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Action(pipeline) => {
                let value = eval_pipeline(pipeline, data, scope)?;
                if pipeline.declares.is_none() {
                    out.push_str(&display(&value, data));
                }
            }
            Node::If { condition, then, otherwise } => {
                let depth = scope.len();
                let chosen = if truthy(&eval_pipeline(condition, data, scope)?) { then } else { otherwise };
                run(chosen, data, scope, out)?;
                scope.truncate(depth);
            }
        }
    }
    Ok(())
}

fn eval_pipeline(pipeline: &Pipeline, data: &TemplateData, scope: &mut Scope) -> Result<Value> {
    let mut piped: Option<Value> = None;
    for command in &pipeline.commands {
        piped = Some(eval_command(command, piped.take(), data, scope)?);
    }
    let value = piped.unwrap_or(Value::Nil);
    if let Some(name) = &pipeline.declares {
        scope.push((name.clone(), value.clone()));
    }
    Ok(value)
}

fn eval_command(command: &[Operand], piped: Option<Value>, data: &TemplateData, scope: &mut Scope) -> Result<Value> {
    let Operand::Function(name) = &command[0] else {
        if command.len() > 1 || piped.is_some() {
            return fail("can't give arguments to a non-function");
        }
        return eval_operand(&command[0], data, scope);
    };
    let mut args = Vec::with_capacity(command.len());
    for operand in &command[1..] {
        args.push(eval_operand(operand, data, scope)?);
    }
    args.extend(piped);
    call(name, &args, data)
}

fn eval_operand(operand: &Operand, data: &TemplateData, scope: &mut Scope) -> Result<Value> {
    match operand {
        Operand::Literal(value) => Ok(value.clone()),
        Operand::Dot(fields) => walk(Value::Data, fields, data),
        Operand::Variable(name, fields) => {
            let Some((_, value)) = scope.iter().rev().find(|(n, _)| n == name) else {
                return fail(format!("undefined variable {name:?}"));
            };
            walk(value.clone(), fields, data)
        }
        Operand::Function(name) => call(name, &[], data),
        Operand::Nested(pipeline) => eval_pipeline(pipeline, data, scope),
    }
}

/// Follows `.A.b` through the data and maps; a missing map key is the empty string.
fn walk(mut value: Value, fields: &[String], data: &TemplateData) -> Result<Value> {
    for field in fields {
        value = match (&value, field.as_str()) {
            (Value::Data, key) if data.dot_is_labels => Value::Text(data.labels.get(key).cloned().unwrap_or_default()),
            (Value::Data, "Labels") => Value::Map(data.labels.clone()),
            (Value::Data, "ExternalLabels") => Value::Map(data.external_labels.clone()),
            (Value::Data, "ExternalURL") => Value::Text(data.external_url.clone()),
            (Value::Data, "Value") => Value::Number(data.value),
            (Value::Map(map), key) => Value::Text(map.get(key).cloned().unwrap_or_default()),
            _ => return fail(format!("can't evaluate field {field}")),
        };
    }
    Ok(value)
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Nil => false,
        Value::Bool(b) => *b,
        Value::Number(n) => *n != 0.0,
        Value::Text(s) => !s.is_empty(),
        Value::Map(m) => !m.is_empty(),
        Value::Data => true,
    }
}

fn display(value: &Value, data: &TemplateData) -> String {
    match value {
        Value::Nil => "<no value>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => go_float(*n, None),
        Value::Text(s) => s.clone(),
        Value::Map(map) => {
            let pairs: Vec<String> = map.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("map[{}]", pairs.join(" "))
        }
        Value::Data => {
            format!("{{{} {} {}}}", display(&Value::Map(data.labels.clone()), data), data.external_url, data.value)
        }
    }
}

/// A number from a number or a numeric string, as Prometheus's humanize functions accept.
fn number(value: &Value, function: &str) -> Result<f64> {
    match value {
        Value::Number(n) => Ok(*n),
        Value::Text(s) => s.trim().parse().map_err(|_| TemplateError(format!("{function}: {s:?} is not a number"))),
        other => fail(format!("{function}: expected a number, got {other:?}")),
    }
}

fn text<'a>(value: &'a Value, function: &str) -> Result<&'a str> {
    match value {
        Value::Text(s) => Ok(s),
        other => fail(format!("{function}: expected a string, got {other:?}")),
    }
}

fn call(name: &str, args: &[Value], data: &TemplateData) -> Result<Value> {
    let arity = |n: usize| -> Result<()> {
        if args.len() == n {
            Ok(())
        } else {
            fail(format!("wrong number of args for {name}: want {n} got {}", args.len()))
        }
    };
    let value = match name {
        "humanize" | "humanize1024" | "humanizeDuration" | "humanizePercentage" | "humanizeTimestamp" => {
            arity(1)?;
            let v = number(&args[0], name)?;
            Value::Text(match name {
                "humanize" => humanize(v),
                "humanize1024" => humanize_1024(v),
                "humanizeDuration" => humanize_duration(v),
                "humanizePercentage" => format!("{}%", go_float(v * 100.0, Some(4))),
                _ => humanize_timestamp(v),
            })
        }
        "printf" => {
            let Some((format, rest)) = args.split_first() else { return fail("printf needs a format") };
            Value::Text(printf(text(format, name)?, rest, data)?)
        }
        "print" => Value::Text(args.iter().map(|a| display(a, data)).collect()),
        "replace" => {
            arity(3)?;
            Value::Text(text(&args[2], name)?.replace(text(&args[0], name)?, text(&args[1], name)?))
        }
        "toUpper" | "toLower" | "title" | "stripPort" | "ToUpper" | "ToLower" | "upper" | "lower" | "trim"
        | "TrimSpace" => {
            arity(1)?;
            let s = text(&args[0], name)?;
            Value::Text(match name {
                "toUpper" | "ToUpper" | "upper" => s.to_uppercase(),
                "toLower" | "ToLower" | "lower" => s.to_lowercase(),
                "trim" | "TrimSpace" => s.trim().to_owned(),
                "title" => title(s),
                _ => strip_port(s),
            })
        }
        "reReplaceAll" | "match" => {
            let pattern = text(&args[0], name)?;
            let regex = regex::Regex::new(pattern).map_err(|e| TemplateError(format!("{name}: {e}")))?;
            if name == "match" {
                arity(2)?;
                Value::Bool(regex.is_match(text(&args[1], name)?))
            } else {
                arity(3)?;
                // Go and the regex crate read `$1`, `${1}` and `$name` alike (the longest name wins in both).
                Value::Text(regex.replace_all(text(&args[2], name)?, text(&args[1], name)?).into_owned())
            }
        }
        "eq" => {
            let Some((first, rest)) = args.split_first() else { return fail("eq needs arguments") };
            Value::Bool(rest.iter().any(|other| compare(first, other).is_some_and(|o| o.is_eq())))
        }
        "ne" | "lt" | "le" | "gt" | "ge" => {
            arity(2)?;
            let Some(order) = compare(&args[0], &args[1]) else {
                return fail(format!("{name}: incompatible types for comparison"));
            };
            Value::Bool(match name {
                "ne" => !order.is_eq(),
                "lt" => order.is_lt(),
                "le" => order.is_le(),
                "gt" => order.is_gt(),
                _ => order.is_ge(),
            })
        }
        "and" => args.iter().find(|a| !truthy(a)).or(args.last()).cloned().unwrap_or(Value::Nil),
        "or" => args.iter().find(|a| truthy(a)).or(args.last()).cloned().unwrap_or(Value::Nil),
        "not" => {
            arity(1)?;
            Value::Bool(!truthy(&args[0]))
        }
        "len" => {
            arity(1)?;
            match &args[0] {
                Value::Text(s) => Value::Number(s.len() as f64),
                Value::Map(m) => Value::Number(m.len() as f64),
                other => return fail(format!("len of {other:?}")),
            }
        }
        "index" => {
            arity(2)?;
            match (&args[0], &args[1]) {
                (Value::Map(map), Value::Text(key)) => Value::Text(map.get(key).cloned().unwrap_or_default()),
                _ => return fail("index: expected a map and a key"),
            }
        }
        other => return fail(format!("function {other:?} not defined")),
    };
    Ok(value)
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.partial_cmp(y),
        (Value::Text(x), Value::Text(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric() && c != '\'';
    }
    out
}

fn strip_port(host: &str) -> String {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_owned();
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => name.to_owned(),
        _ => host.to_owned(),
    }
}

/// Go's `printf` for the verbs templates use: `%s %v %d %f %e %g %q %x %%`, with width and precision.
fn printf(format: &str, args: &[Value], data: &TemplateData) -> Result<String> {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        while let Some(&next) = chars.peek() {
            if next.is_ascii_digit() || "-+. #".contains(next) {
                spec.push(next);
                chars.next();
            } else {
                break;
            }
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.next() else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        let (flags_width, precision) = match spec.split_once('.') {
            Some((w, p)) => (w.to_owned(), Some(p.parse::<usize>().unwrap_or(0))),
            None => (spec.clone(), None),
        };
        let left = flags_width.contains('-');
        let width: usize = flags_width.trim_start_matches(['-', '+', ' ', '#', '0']).parse().unwrap_or(0);
        let formatted = match (verb, arg) {
            ('d', Value::Number(n)) => format!("{}", *n as i64),
            ('f' | 'F', Value::Number(n)) => format!("{:.*}", precision.unwrap_or(6), n),
            ('e', Value::Number(n)) => go_exponent(*n, precision.unwrap_or(6)),
            ('g', Value::Number(n)) => go_float(*n, precision),
            ('x', Value::Number(n)) => format!("{:x}", *n as i64),
            ('q', value) => format!("{:?}", display(value, data)),
            ('s' | 'v', value) => display(value, data),
            (verb, value) => format!("%!{verb}({})", display(value, data)),
        };
        let pad = width.saturating_sub(formatted.chars().count());
        if left {
            out.push_str(&formatted);
            out.push_str(&" ".repeat(pad));
        } else {
            let zero = flags_width.starts_with('0') && verb != 's';
            out.push_str(&(if zero { "0" } else { " " }).repeat(pad));
            out.push_str(&formatted);
        }
    }
    Ok(out)
}

/// Significant decimal digits (no trailing zeros) and the decimal point position of `v` (> 0), rounded
/// to `precision` significant digits or the shortest that reads back exactly.
fn digits(v: f64, precision: Option<usize>) -> (String, i32) {
    let scientific = match precision {
        Some(p) => format!("{:.*e}", p.max(1) - 1, v),
        None => format!("{v:e}"),
    };
    let (mantissa, exponent) = scientific.split_once('e').expect("`e` formatting has an exponent");
    let mut digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    (digits, exponent.parse::<i32>().expect("integer exponent") + 1)
}

/// Go's `%v` (no precision) or `%.Ng` of a float: exponent form when the exponent is below -4 or at
/// least the precision (6 for the shortest form).
pub fn go_float(v: f64, precision: Option<usize>) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let sign = if v < 0.0 { "-" } else { "" };
    let (digits, point) = digits(v.abs(), precision);
    let count = digits.len() as i32;
    let limit = match precision {
        None => 6,
        Some(p) if (p as i32) > count && count >= point => count,
        Some(p) => p.max(1) as i32,
    };
    let exponent = point - 1;
    if exponent < -4 || exponent >= limit {
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{first}{fraction}e{exp_sign}{:02}", exponent.abs());
    }
    if point <= 0 {
        return format!("{sign}0.{}{digits}", "0".repeat((-point) as usize));
    }
    if point >= count {
        return format!("{sign}{digits}{}", "0".repeat((point - count) as usize));
    }
    let (whole, fraction) = digits.split_at(point as usize);
    format!("{sign}{whole}.{fraction}")
}

/// Go's `%.Ne`.
fn go_exponent(v: f64, precision: usize) -> String {
    crate::promql::go_exponent_form(&format!("{v:.precision$e}"))
}

/// Divides `v` by `base` while it is at least `base`, returning it with the last prefix used.
fn scale_up(mut v: f64, base: f64, prefixes: [&'static str; 8]) -> (f64, &'static str) {
    let mut prefix = "";
    for next in prefixes {
        if v.abs() < base {
            break;
        }
        prefix = next;
        v /= base;
    }
    (v, prefix)
}

/// Multiplies `v` by 1000 while it is below 1, returning it with the SI prefix of the last step.
fn scale_down(mut v: f64) -> (f64, &'static str) {
    let mut prefix = "";
    for next in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = next;
        v *= 1000.0;
    }
    (v, prefix)
}

/// Prometheus's `humanize`: SI prefixes, four significant digits.
fn humanize(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return go_float(v, Some(4));
    }
    let (scaled, prefix) =
        if v.abs() >= 1.0 { scale_up(v, 1000.0, ["k", "M", "G", "T", "P", "E", "Z", "Y"]) } else { scale_down(v) };
    format!("{}{prefix}", go_float(scaled, Some(4)))
}

/// Prometheus's `humanize1024`: binary prefixes from 1 up.
fn humanize_1024(v: f64) -> String {
    if v.abs() <= 1.0 || !v.is_finite() {
        return go_float(v, Some(4));
    }
    let (scaled, prefix) = scale_up(v, 1024.0, ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"]);
    format!("{}{prefix}", go_float(scaled, Some(4)))
}

/// Prometheus's `humanizeDuration` of seconds: `1d 2h 3m 4s`, or `1.5s`, `12ms`.
fn humanize_duration(v: f64) -> String {
    if !v.is_finite() {
        return go_float(v, Some(4));
    }
    if v == 0.0 {
        return "0s".into();
    }
    if v.abs() < 1.0 {
        let (scaled, prefix) = scale_down(v);
        return format!("{}{prefix}s", go_float(scaled, Some(4)));
    }
    let sign = if v < 0.0 { "-" } else { "" };
    let whole = v.abs() as i64;
    let (days, hours, minutes, seconds) = (whole / 86_400, (whole / 3600) % 24, (whole / 60) % 60, whole % 60);
    if days != 0 {
        return format!("{sign}{days}d {hours}h {minutes}m {seconds}s");
    }
    if hours != 0 {
        return format!("{sign}{hours}h {minutes}m {seconds}s");
    }
    if minutes != 0 {
        return format!("{sign}{minutes}m {seconds}s");
    }
    format!("{sign}{}s", go_float(v.abs(), Some(4)))
}

/// Prometheus's `humanizeTimestamp` of Unix seconds: Go's `time.Time` string in UTC.
fn humanize_timestamp(v: f64) -> String {
    if !v.is_finite() {
        return go_float(v, Some(4));
    }
    let nanos = (v * 1e9).round() as i64;
    let time = DateTime::<Utc>::from_timestamp_nanos(nanos);
    let fraction = time.format("%.9f").to_string();
    let fraction = fraction.trim_end_matches('0').trim_end_matches('.');
    format!("{}{fraction} +0000 UTC", time.format("%Y-%m-%d %H:%M:%S"))
}

#[cfg(test)]
mod tests;
