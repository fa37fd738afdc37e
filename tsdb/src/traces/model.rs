//! The span model the store keeps: OTLP's span fields, without OTLP's wire types.

use std::sync::Arc;

/// A 16-byte trace id.
pub type TraceId = [u8; 16];
/// An 8-byte span id.
pub type SpanId = [u8; 8];

/// An attribute value. Arrays and maps arrive as their JSON text in [`AttrValue::Str`].
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// A double.
    Float(f64),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

impl AttrValue {
    /// The value as text: what tag searches and label values compare against.
    pub fn text(&self) -> String {
        match self {
            AttrValue::Str(s) => s.clone(),
            AttrValue::Bool(b) => b.to_string(),
            AttrValue::Int(i) => i.to_string(),
            AttrValue::Float(f) => f.to_string(),
            AttrValue::Bytes(bytes) => hex(bytes),
        }
    }

    /// The value as a number, when it is one.
    pub fn number(&self) -> Option<f64> {
        match self {
            AttrValue::Int(i) => Some(*i as f64),
            AttrValue::Float(f) => Some(*f),
            _ => None,
        }
    }
}

/// A key and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    /// The key, dotted as OpenTelemetry writes it (`http.status_code`).
    pub key: String,
    /// The value.
    pub value: AttrValue,
}

impl Attribute {
    /// A string attribute.
    pub fn str(key: &str, value: &str) -> Self {
        Attribute { key: key.to_owned(), value: AttrValue::Str(value.to_owned()) }
    }
}

/// The value of `key` among `attributes`.
pub fn attribute<'a>(attributes: &'a [Attribute], key: &str) -> Option<&'a AttrValue> {
    attributes.iter().find(|a| a.key == key).map(|a| &a.value)
}

/// What produced spans: the service and its resource attributes (`service.name` among them), and the
/// instrumentation scope. Spans of one export share one `Arc`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resource {
    /// `service.name`, or `unknown_service` when absent.
    pub service: String,
    /// All resource attributes.
    pub attributes: Vec<Attribute>,
    /// Instrumentation scope name.
    pub scope_name: String,
    /// Instrumentation scope version.
    pub scope_version: String,
}

/// OTLP's span kinds, numbered as in OTLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum SpanKind {
    /// Not set.
    #[default]
    Unspecified = 0,
    /// Internal operation.
    Internal = 1,
    /// Server side of a request.
    Server = 2,
    /// Client side of a request.
    Client = 3,
    /// Message producer.
    Producer = 4,
    /// Message consumer.
    Consumer = 5,
}

impl SpanKind {
    /// The kind numbered `n` (unknown numbers are `Unspecified`).
    pub fn from_number(n: i64) -> Self {
        match n {
            1 => SpanKind::Internal,
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }

    /// Lower-case name as Jaeger and TraceQL write it (`server`, `unspecified`).
    pub fn name(self) -> &'static str {
        match self {
            SpanKind::Unspecified => "unspecified",
            SpanKind::Internal => "internal",
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }
}

/// OTLP's status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum StatusCode {
    /// Not set.
    #[default]
    Unset = 0,
    /// Explicitly successful.
    Ok = 1,
    /// Failed.
    Error = 2,
}

impl StatusCode {
    /// The code numbered `n`.
    pub fn from_number(n: i64) -> Self {
        match n {
            1 => StatusCode::Ok,
            2 => StatusCode::Error,
            _ => StatusCode::Unset,
        }
    }

    /// Lower-case name as TraceQL writes it (`ok`, `error`, `unset`).
    pub fn name(self) -> &'static str {
        match self {
            StatusCode::Unset => "unset",
            StatusCode::Ok => "ok",
            StatusCode::Error => "error",
        }
    }
}

/// A timed event within a span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanEvent {
    /// Nanoseconds since the epoch.
    pub time_ns: i64,
    /// Event name (`exception`).
    pub name: String,
    /// Event attributes.
    pub attributes: Vec<Attribute>,
}

/// A link to another span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanLink {
    /// Linked trace.
    pub trace_id: TraceId,
    /// Linked span.
    pub span_id: SpanId,
    /// W3C trace state of the link.
    pub trace_state: String,
    /// Link attributes.
    pub attributes: Vec<Attribute>,
}

/// One span.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// The trace.
    pub trace_id: TraceId,
    /// This span.
    pub span_id: SpanId,
    /// The parent, absent on a root span.
    pub parent_span_id: Option<SpanId>,
    /// W3C trace state.
    pub trace_state: String,
    /// W3C trace flags.
    pub flags: u32,
    /// Operation name.
    pub name: String,
    /// Kind.
    pub kind: SpanKind,
    /// Status code.
    pub status: StatusCode,
    /// Status description.
    pub status_message: String,
    /// Start, nanoseconds since the epoch.
    pub start_ns: i64,
    /// End, nanoseconds since the epoch.
    pub end_ns: i64,
    /// Service, resource and scope.
    pub resource: Arc<Resource>,
    /// Span attributes.
    pub attributes: Vec<Attribute>,
    /// Events.
    pub events: Vec<SpanEvent>,
    /// Links.
    pub links: Vec<SpanLink>,
}

impl Span {
    /// `end - start`, never negative.
    pub fn duration_ns(&self) -> i64 {
        (self.end_ns - self.start_ns).max(0)
    }

    /// The service that produced the span.
    pub fn service(&self) -> &str {
        &self.resource.service
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// Parses hex into `N` bytes, left-padding shorter input with zeros (a 64-bit Zipkin or Jaeger trace id is
/// the low half of a 128-bit one). `None` for non-hex, too long, or all-zero input.
pub fn parse_hex_id<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.trim();
    if text.is_empty() || text.len() > N * 2 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let padded = format!("{text:0>width$}", width = N * 2);
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&padded[i * 2..i * 2 + 2], 16).ok()?;
    }
    (out != [0u8; N]).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids_round_trip_and_short_ids_pad_left() {
        let id: TraceId = parse_hex_id("5b8efff798038103d269b633813fc60c").unwrap();
        assert_eq!(hex(&id), "5b8efff798038103d269b633813fc60c");
        let short: TraceId = parse_hex_id("d269b633813fc60c").unwrap();
        assert_eq!(hex(&short), "0000000000000000d269b633813fc60c");
        assert_eq!(parse_hex_id::<8>("00000000"), None);
        assert_eq!(parse_hex_id::<8>("xyz"), None);
        assert_eq!(parse_hex_id::<8>("0123456789abcdef01"), None);
    }
}
