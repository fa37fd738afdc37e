//! Loki push (`POST /loki/api/v1/push`): JSON (optionally gzip) and snappy-compressed protobuf
//! (`logproto.PushRequest`), with structured metadata. A stream without labels, an unparsable label
//! string or timestamp, and a line over the size limit refuse the whole request (400) before anything is
//! stored; nothing is acknowledged before the store has it durably.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost::Message;
use serde::Deserialize;
use vigil_tsdb::logs::LogRecord;

use crate::{Ingest, IngestError};

/// Longest line accepted, as Loki's default `max_line_size`.
pub const MAX_LINE_BYTES: usize = 256 * 1024;

/// `logproto.PushRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct PushRequest {
    /// Streams.
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

/// `logproto.StreamAdapter`: labels as `{a="b"}` text and entries.
#[derive(Clone, PartialEq, Message)]
pub struct StreamAdapter {
    /// `{name="value", ...}`.
    #[prost(string, tag = "1")]
    pub labels: String,
    /// Entries.
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
}

/// `logproto.EntryAdapter`.
#[derive(Clone, PartialEq, Message)]
pub struct EntryAdapter {
    /// When.
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    /// The line.
    #[prost(string, tag = "2")]
    pub line: String,
    /// Structured metadata.
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPair>,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, Message)]
pub struct Timestamp {
    /// Seconds.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds within the second.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `logproto.LabelPairAdapter`.
#[derive(Clone, PartialEq, Message)]
pub struct LabelPair {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Deserialize)]
struct JsonPush {
    streams: Vec<JsonStream>,
}

#[derive(Deserialize)]
struct JsonStream {
    stream: BTreeMap<String, String>,
    values: Vec<serde_json::Value>,
}

/// Handles a push: 204 once stored.
pub async fn handle(State(ingest): State<Ingest>, headers: HeaderMap, body: Bytes) -> Response {
    metrics::counter!("vigil_ingest_requests_received_total", "receiver" => "loki").increment(1);
    let Some(store) = ingest.logs.clone() else {
        return (StatusCode::NOT_FOUND, "no log store\n").into_response();
    };
    let max_bytes = ingest.limits.max_decompressed_bytes;
    let outcome = tokio::task::spawn_blocking(move || {
        let records = decode(&headers, &body, max_bytes)?;
        store.append(&records).map_err(|e| IngestError::Unavailable(e.to_string()))?;
        Ok::<usize, IngestError>(records.len())
    })
    .await;
    match outcome {
        Ok(Ok(count)) => {
            metrics::counter!("vigil_ingest_log_lines_total", "receiver" => "loki").increment(count as u64);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Err(error)) => {
            metrics::counter!("vigil_ingest_requests_rejected_total", "receiver" => "loki").increment(1);
            error.into_response()
        }
        Err(error) => IngestError::Unavailable(format!("push task failed: {error}")).into_response(),
    }
}

/// Decodes a push body by its content type.
pub fn decode(headers: &HeaderMap, body: &[u8], max_bytes: usize) -> Result<Vec<LogRecord>, IngestError> {
    let content_type =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/x-protobuf");
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("");
    if content_type.starts_with("application/json") {
        let text = match encoding {
            "gzip" => crate::otlp::gunzip(body, max_bytes)?,
            "" | "identity" => body.to_vec(),
            other => return Err(IngestError::UnsupportedMediaType(format!("content-encoding {other}"))),
        };
        return decode_json(&text);
    }
    if !content_type.starts_with("application/x-protobuf") {
        return Err(IngestError::UnsupportedMediaType(format!("content-type {content_type}")));
    }
    let raw = crate::remote_write::unsnappy_limited(body, max_bytes)?;
    let request = PushRequest::decode(raw.as_slice())
        .map_err(|e| IngestError::Malformed(format!("invalid logproto.PushRequest protobuf: {e}")))?;
    let mut records = Vec::new();
    for stream in request.streams {
        let labels = parse_labels(&stream.labels)?;
        for entry in stream.entries {
            let timestamp = entry.timestamp.unwrap_or_default();
            let ts_ns = timestamp.seconds.saturating_mul(1_000_000_000).saturating_add(i64::from(timestamp.nanos));
            let metadata = entry.structured_metadata.into_iter().map(|p| (p.name, p.value)).collect();
            records.push(record(&labels, ts_ns, entry.line, metadata)?);
        }
    }
    Ok(records)
}

fn decode_json(text: &[u8]) -> Result<Vec<LogRecord>, IngestError> {
    let push: JsonPush =
        serde_json::from_slice(text).map_err(|e| IngestError::Malformed(format!("invalid push JSON: {e}")))?;
    let mut records = Vec::new();
    for stream in push.streams {
        for value in stream.values {
            let serde_json::Value::Array(parts) = value else {
                return Err(IngestError::Malformed("each value is [\"<ns>\", \"<line>\", {metadata}?]".into()));
            };
            let ts_ns = parts
                .first()
                .and_then(|t| t.as_str())
                .and_then(|t| t.parse::<i64>().ok())
                .ok_or_else(|| IngestError::Malformed("timestamps are strings of Unix nanoseconds".into()))?;
            let line =
                parts.get(1).and_then(|l| l.as_str()).ok_or_else(|| IngestError::Malformed("missing line".into()))?;
            let metadata = match parts.get(2) {
                Some(serde_json::Value::Object(map)) => map
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                    .collect(),
                _ => BTreeMap::new(),
            };
            records.push(record(&stream.stream, ts_ns, line.to_owned(), metadata)?);
        }
    }
    Ok(records)
}

fn record(
    labels: &BTreeMap<String, String>,
    ts_ns: i64,
    line: String,
    mut metadata: BTreeMap<String, String>,
) -> Result<LogRecord, IngestError> {
    if labels.is_empty() {
        return Err(IngestError::Malformed("a stream needs at least one label".into()));
    }
    if let Some(name) = labels.keys().find(|n| !valid_label_name(n)) {
        return Err(IngestError::Malformed(format!("invalid label name {name:?}")));
    }
    if line.len() > MAX_LINE_BYTES {
        return Err(IngestError::Malformed(format!(
            "a line of {} bytes is over the limit of {MAX_LINE_BYTES}",
            line.len()
        )));
    }
    crate::log_level::annotate(labels, &mut metadata, &line);
    Ok(LogRecord { ts_ns, labels: labels.clone(), line, metadata, position: None })
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `{name="value", other="x"}` as Loki's clients send stream labels; values may escape `\"` and `\\`.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, IngestError> {
    let invalid = || IngestError::Malformed(format!("invalid stream labels {text:?}"));
    let inner = text.trim().strip_prefix('{').and_then(|t| t.strip_suffix('}')).ok_or_else(invalid)?;
    let mut labels = BTreeMap::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(labels);
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            name.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') || chars.next() != Some('"') {
            return Err(invalid());
        }
        let mut value = String::new();
        loop {
            match chars.next().ok_or_else(invalid)? {
                '"' => break,
                '\\' => match chars.next().ok_or_else(invalid)? {
                    'n' => value.push('\n'),
                    't' => value.push('\t'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        }
        labels.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        headers
    }

    #[test]
    fn json_and_protobuf_pushes_decode_alike() {
        let json =
            br#"{"streams":[{"stream":{"app":"api"},"values":[["1700000000000000001","hello",{"trace_id":"abc"}]]}]}"#;
        let from_json = decode(&json_headers(), json, 1 << 20).unwrap();
        let request = PushRequest {
            streams: vec![StreamAdapter {
                labels: r#"{app="api"}"#.into(),
                entries: vec![EntryAdapter {
                    timestamp: Some(Timestamp { seconds: 1_700_000_000, nanos: 1 }),
                    line: "hello".into(),
                    structured_metadata: vec![LabelPair { name: "trace_id".into(), value: "abc".into() }],
                }],
            }],
        };
        let body = snap::raw::Encoder::new().compress_vec(&request.encode_to_vec()).unwrap();
        let from_proto = decode(&HeaderMap::new(), &body, 1 << 20).unwrap();
        assert_eq!(from_json, from_proto);
        assert_eq!(from_json[0].metadata["trace_id"], "abc");
    }

    #[test]
    fn bad_pushes_are_refused_whole() {
        let cases: [&[u8]; 5] = [
            br#"{"streams":[{"stream":{},"values":[["1","x"]]}]}"#,
            br#"{"streams":[{"stream":{"a":"b"},"values":[[1,"x"]]}]}"#,
            br#"{"streams":[{"stream":{"a":"b"},"values":[["1","ok"]]},{"stream":{"1x":"b"},"values":[["1","x"]]}]}"#,
            br#"{"streams": nope"#,
            br#"{"streams":[{"stream":{"a":"b"},"values":["x"]}]}"#,
        ];
        for body in cases {
            let error = decode(&json_headers(), body, 1 << 20).unwrap_err();
            assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(body));
        }
        let long = format!(
            r#"{{"streams":[{{"stream":{{"a":"b"}},"values":[["1","{}"]]}}]}}"#,
            "x".repeat(MAX_LINE_BYTES + 1)
        );
        assert!(decode(&json_headers(), long.as_bytes(), 1 << 20).unwrap_err().to_string().contains("over the limit"));
        assert_eq!(parse_labels(r#"{a="x\"y", b="2"}"#).unwrap()["a"], "x\"y");
        assert!(parse_labels("a=b").is_err());
    }
}
