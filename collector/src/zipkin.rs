//! Zipkin v2 spans (`POST /api/v2/spans`, a JSON array, or `application/x-protobuf`: zipkin.proto3's
//! `ListOfSpans`, decoded with `prost` derive), mapped to the span model as OpenTelemetry's
//! Zipkin mapping reads them: `localEndpoint.serviceName` is the service, kinds keep their names (absent
//! is internal), a tag `error` makes the status an error with the tag as its message, `otel.status_code`
//! and `otel.scope.*` tags return to their fields, annotations become events, and times go from µs to ns.
//! Success is `202 Accepted`; a body that is not a JSON array of spans with valid ids refuses the whole
//! request (400) before anything is stored.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as HttpStatus, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use vigil_tsdb::traces::{AttrValue, Attribute, Resource, Span, SpanEvent, SpanKind, StatusCode, parse_hex_id};

use crate::{Ingest, IngestError};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ZipkinSpan {
    trace_id: String,
    id: String,
    parent_id: Option<String>,
    #[serde(default)]
    name: String,
    kind: Option<String>,
    timestamp: Option<i64>,
    duration: Option<i64>,
    local_endpoint: Option<Endpoint>,
    remote_endpoint: Option<Endpoint>,
    #[serde(default)]
    annotations: Vec<Annotation>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Endpoint {
    service_name: Option<String>,
    ipv4: Option<String>,
    ipv6: Option<String>,
    port: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct Annotation {
    timestamp: i64,
    value: String,
}

/// zipkin.proto3 `ListOfSpans`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListOfSpans {
    /// The spans.
    #[prost(message, repeated, tag = "1")]
    pub spans: Vec<ProtoSpan>,
}

/// zipkin.proto3 `Span`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoSpan {
    /// 8 or 16 bytes, big endian.
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    /// 8 bytes, or empty for a root span.
    #[prost(bytes = "vec", tag = "2")]
    pub parent_id: Vec<u8>,
    /// 8 bytes.
    #[prost(bytes = "vec", tag = "3")]
    pub id: Vec<u8>,
    /// 0 unspecified, 1 client, 2 server, 3 producer, 4 consumer.
    #[prost(int32, tag = "4")]
    pub kind: i32,
    /// The operation.
    #[prost(string, tag = "5")]
    pub name: String,
    /// Start, µs since the epoch.
    #[prost(fixed64, tag = "6")]
    pub timestamp: u64,
    /// µs.
    #[prost(uint64, tag = "7")]
    pub duration: u64,
    /// The service that recorded the span.
    #[prost(message, optional, tag = "8")]
    pub local_endpoint: Option<ProtoEndpoint>,
    /// The other side of an RPC.
    #[prost(message, optional, tag = "9")]
    pub remote_endpoint: Option<ProtoEndpoint>,
    /// Timestamped events.
    #[prost(message, repeated, tag = "10")]
    pub annotations: Vec<ProtoAnnotation>,
    /// String tags.
    #[prost(map = "string, string", tag = "11")]
    pub tags: std::collections::HashMap<String, String>,
}

/// zipkin.proto3 `Endpoint`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoEndpoint {
    /// Lower-case service name.
    #[prost(string, tag = "1")]
    pub service_name: String,
    /// 4 bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub ipv4: Vec<u8>,
    /// 16 bytes.
    #[prost(bytes = "vec", tag = "3")]
    pub ipv6: Vec<u8>,
    /// 0 when unknown.
    #[prost(int32, tag = "4")]
    pub port: i32,
}

/// zipkin.proto3 `Annotation`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoAnnotation {
    /// µs since the epoch.
    #[prost(fixed64, tag = "1")]
    pub timestamp: u64,
    /// The event.
    #[prost(string, tag = "2")]
    pub value: String,
}

fn endpoint(proto: ProtoEndpoint) -> Endpoint {
    let ipv4 = <[u8; 4]>::try_from(proto.ipv4.as_slice()).ok().map(|a| std::net::Ipv4Addr::from(a).to_string());
    let ipv6 = <[u8; 16]>::try_from(proto.ipv6.as_slice()).ok().map(|a| std::net::Ipv6Addr::from(a).to_string());
    Endpoint {
        service_name: Some(proto.service_name).filter(|s| !s.is_empty()),
        ipv4,
        ipv6,
        port: (proto.port != 0).then_some(i64::from(proto.port)),
    }
}

/// A protobuf span in the JSON model's shape, so both take one mapping.
fn from_proto(span: ProtoSpan) -> Result<ZipkinSpan, String> {
    let kind = match span.kind {
        0 => None,
        1 => Some("CLIENT"),
        2 => Some("SERVER"),
        3 => Some("PRODUCER"),
        4 => Some("CONSUMER"),
        other => return Err(format!("unknown span kind {other}")),
    };
    let id_bytes = |bytes: &[u8], what: &str, sizes: &[usize]| {
        if sizes.contains(&bytes.len()) {
            Ok(vigil_tsdb::traces::hex(bytes))
        } else {
            Err(format!("{what} has {} bytes", bytes.len()))
        }
    };
    Ok(ZipkinSpan {
        trace_id: id_bytes(&span.trace_id, "trace_id", &[8, 16])?,
        id: id_bytes(&span.id, "id", &[8])?,
        parent_id: if span.parent_id.is_empty() { None } else { Some(id_bytes(&span.parent_id, "parent_id", &[8])?) },
        name: span.name,
        kind: kind.map(str::to_owned),
        timestamp: i64::try_from(span.timestamp).ok().filter(|t| *t != 0),
        duration: i64::try_from(span.duration).ok().filter(|d| *d != 0),
        local_endpoint: span.local_endpoint.map(endpoint),
        remote_endpoint: span.remote_endpoint.map(endpoint),
        annotations: span
            .annotations
            .into_iter()
            .map(|a| Annotation { timestamp: i64::try_from(a.timestamp).unwrap_or(i64::MAX), value: a.value })
            .collect(),
        tags: span.tags.into_iter().collect(),
    })
}

fn kind(kind: Option<&str>) -> Result<SpanKind, String> {
    Ok(match kind {
        None => SpanKind::Internal,
        Some("CLIENT") => SpanKind::Client,
        Some("SERVER") => SpanKind::Server,
        Some("PRODUCER") => SpanKind::Producer,
        Some("CONSUMER") => SpanKind::Consumer,
        Some(other) => return Err(format!("unknown span kind {other:?}")),
    })
}

/// Resources by (service, scope name, scope version), shared by the spans of one request.
type Resources = HashMap<(String, String, String), Arc<Resource>>;

fn convert(span: ZipkinSpan, resources: &mut Resources) -> Result<Span, String> {
    let trace_id = parse_hex_id::<16>(&span.trace_id).ok_or_else(|| format!("invalid traceId {:?}", span.trace_id))?;
    let span_id = parse_hex_id::<8>(&span.id).ok_or_else(|| format!("invalid id {:?}", span.id))?;
    let parent_span_id = match span.parent_id.as_deref() {
        None | Some("") => None,
        Some(text) => Some(parse_hex_id::<8>(text).ok_or_else(|| format!("invalid parentId {text:?}"))?),
    };
    let kind = kind(span.kind.as_deref())?;
    let mut tags = span.tags;
    let error = tags.remove("error");
    let status = match (tags.remove("otel.status_code").as_deref(), &error) {
        (_, Some(_)) | (Some("ERROR"), _) => StatusCode::Error,
        (Some("OK"), _) => StatusCode::Ok,
        _ => StatusCode::Unset,
    };
    let status_message = tags.remove("otel.status_description").or(error).unwrap_or_default();
    let scope_name = tags.remove("otel.scope.name").unwrap_or_default();
    let scope_version = tags.remove("otel.scope.version").unwrap_or_default();
    let local = span.local_endpoint.unwrap_or_default();
    let service = local.service_name.filter(|s| !s.is_empty()).unwrap_or_else(|| "unknown_service".to_owned());
    let resource = resources
        .entry((service.clone(), scope_name.clone(), scope_version.clone()))
        .or_insert_with(|| {
            Arc::new(Resource {
                attributes: vec![Attribute::str("service.name", &service)],
                service,
                scope_name,
                scope_version,
            })
        })
        .clone();
    let mut attributes: Vec<Attribute> = tags.iter().map(|(k, v)| Attribute::str(k, v)).collect();
    if let Some(remote) = span.remote_endpoint {
        if let Some(name) = remote.service_name.filter(|s| !s.is_empty()) {
            attributes.push(Attribute::str("peer.service", &name));
        }
        if let Some(address) = remote.ipv4.or(remote.ipv6) {
            attributes.push(Attribute::str("network.peer.address", &address));
        }
        if let Some(port) = remote.port {
            attributes.push(Attribute { key: "network.peer.port".into(), value: AttrValue::Int(port) });
        }
    }
    let start_ns = span.timestamp.unwrap_or(0).saturating_mul(1000);
    Ok(Span {
        trace_id,
        span_id,
        parent_span_id,
        trace_state: String::new(),
        flags: 0,
        name: span.name,
        kind,
        status,
        status_message,
        start_ns,
        end_ns: start_ns.saturating_add(span.duration.unwrap_or(0).max(0).saturating_mul(1000)),
        resource,
        attributes,
        events: span
            .annotations
            .into_iter()
            .map(|a| SpanEvent { time_ns: a.timestamp.saturating_mul(1000), name: a.value, attributes: Vec::new() })
            .collect(),
        links: Vec::new(),
    })
}

/// Spans of a Zipkin v2 JSON body; any invalid span refuses the whole body.
pub fn spans(body: &[u8]) -> Result<Vec<Span>, IngestError> {
    let spans: Vec<ZipkinSpan> = serde_json::from_slice(body)
        .map_err(|e| IngestError::Malformed(format!("invalid Zipkin v2 JSON span list: {e}")))?;
    convert_all(spans)
}

/// Spans of a Zipkin v2 protobuf body (`ListOfSpans`); any invalid span refuses the whole body.
pub fn proto_spans(body: &[u8]) -> Result<Vec<Span>, IngestError> {
    let list = <ListOfSpans as prost::Message>::decode(body)
        .map_err(|e| IngestError::Malformed(format!("invalid Zipkin v2 protobuf ListOfSpans: {e}")))?;
    let spans = list
        .spans
        .into_iter()
        .enumerate()
        .map(|(i, span)| from_proto(span).map_err(|e| IngestError::Malformed(format!("span {i}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    convert_all(spans)
}

fn convert_all(spans: Vec<ZipkinSpan>) -> Result<Vec<Span>, IngestError> {
    let mut resources = Resources::new();
    spans
        .into_iter()
        .enumerate()
        .map(|(i, span)| convert(span, &mut resources).map_err(|e| IngestError::Malformed(format!("span {i}: {e}"))))
        .collect()
}

/// `POST /api/v2/spans`.
pub async fn handle(State(ingest): State<Ingest>, headers: HeaderMap, body: Bytes) -> Response {
    metrics::counter!("vigil_ingest_requests_received_total", "receiver" => "zipkin").increment(1);
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let decode: fn(&[u8]) -> Result<Vec<Span>, IngestError> = if content_type.starts_with("application/json") {
        spans
    } else if content_type.starts_with("application/x-protobuf") || content_type.starts_with("application/protobuf") {
        proto_spans
    } else {
        let message = format!(
            "content type {content_type:?}; this receiver takes Zipkin v2 JSON (application/json) or protobuf \
             (application/x-protobuf)"
        );
        return IngestError::UnsupportedMediaType(message).into_response();
    };
    let gzip = headers.get(header::CONTENT_ENCODING).is_some_and(|v| v.as_bytes() == b"gzip");
    let outcome = tokio::task::spawn_blocking(move || {
        let body = if gzip { crate::otlp::gunzip(&body, ingest.limits.max_decompressed_bytes)? } else { body.to_vec() };
        crate::otlp_traces::store_spans(&ingest, decode(&body)?)
    })
    .await
    .map_err(|e| IngestError::Unavailable(format!("ingest task failed: {e}")))
    .and_then(|r| r);
    match outcome {
        Ok(()) => HttpStatus::ACCEPTED.into_response(),
        Err(error) => {
            metrics::counter!("vigil_ingest_requests_rejected_total", "receiver" => "zipkin").increment(1);
            error.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipkin_spans_map_like_the_opentelemetry_mapping() {
        let body =
            br#"[{"traceId":"4e441824ec2b6a44ffdc9bb9a6453df3","id":"ffdc9bb9a6453df3","parentId":"a6453df3ffdc9bb9",
          "name":"get /cart","kind":"SERVER","timestamp":1722506400000000,"duration":150000,
          "localEndpoint":{"serviceName":"cart","ipv4":"10.0.0.7","port":8080},"remoteEndpoint":{"ipv4":"10.0.0.9"},
          "annotations":[{"timestamp":1722506400050000,"value":"ws"}],
          "tags":{"http.method":"GET","http.path":"/cart","error":"timeout","otel.scope.name":"lib"}},
          {"traceId":"ffdc9bb9a6453df3","id":"0000000000000001","name":"local"}]"#;
        let spans = spans(body).unwrap();
        let span = &spans[0];
        assert_eq!(span.service(), "cart");
        assert_eq!(
            (span.kind, span.status, span.status_message.as_str()),
            (SpanKind::Server, StatusCode::Error, "timeout")
        );
        assert_eq!((span.start_ns, span.duration_ns()), (1_722_506_400_000_000_000, 150_000_000));
        assert_eq!(span.events[0].name, "ws");
        assert_eq!(span.events[0].time_ns, 1_722_506_400_050_000_000);
        assert_eq!(span.resource.scope_name, "lib");
        assert!(span.attributes.contains(&Attribute::str("http.method", "GET")));
        assert!(span.attributes.contains(&Attribute::str("network.peer.address", "10.0.0.9")));
        assert!(!span.attributes.iter().any(|a| a.key == "error"));
        // A 64-bit trace id is the low half of a 128-bit one; no kind is internal.
        assert_eq!(vigil_tsdb::traces::hex(&spans[1].trace_id), "0000000000000000ffdc9bb9a6453df3");
        assert_eq!(spans[1].kind, SpanKind::Internal);
    }

    #[test]
    fn protobuf_spans_map_as_their_json_twins_do() {
        let span = ProtoSpan {
            trace_id: vec![
                0x4e, 0x44, 0x18, 0x24, 0xec, 0x2b, 0x6a, 0x44, 0xff, 0xdc, 0x9b, 0xb9, 0xa6, 0x45, 0x3d, 0xf3,
            ],
            parent_id: vec![0xa6, 0x45, 0x3d, 0xf3, 0xff, 0xdc, 0x9b, 0xb9],
            id: vec![0xff, 0xdc, 0x9b, 0xb9, 0xa6, 0x45, 0x3d, 0xf3],
            kind: 2,
            name: "get /cart".into(),
            timestamp: 1_722_506_400_000_000,
            duration: 150_000,
            local_endpoint: Some(ProtoEndpoint {
                service_name: "cart".into(),
                ipv4: vec![10, 0, 0, 7],
                ipv6: vec![],
                port: 8080,
            }),
            remote_endpoint: Some(ProtoEndpoint {
                service_name: String::new(),
                ipv4: vec![10, 0, 0, 9],
                ipv6: vec![],
                port: 0,
            }),
            annotations: vec![ProtoAnnotation { timestamp: 1_722_506_400_050_000, value: "ws".into() }],
            tags: [("http.method", "GET"), ("http.path", "/cart"), ("error", "timeout"), ("otel.scope.name", "lib")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        };
        let body = prost::Message::encode_to_vec(&ListOfSpans { spans: vec![span] });
        let from_proto = proto_spans(&body).unwrap();
        let json =
            br#"[{"traceId":"4e441824ec2b6a44ffdc9bb9a6453df3","id":"ffdc9bb9a6453df3","parentId":"a6453df3ffdc9bb9",
          "name":"get /cart","kind":"SERVER","timestamp":1722506400000000,"duration":150000,
          "localEndpoint":{"serviceName":"cart","ipv4":"10.0.0.7","port":8080},"remoteEndpoint":{"ipv4":"10.0.0.9"},
          "annotations":[{"timestamp":1722506400050000,"value":"ws"}],
          "tags":{"http.method":"GET","http.path":"/cart","error":"timeout","otel.scope.name":"lib"}}]"#;
        let mut from_json = spans(json).unwrap();
        let sorted =
            |spans: &mut Vec<Span>| spans.iter_mut().for_each(|s| s.attributes.sort_by(|a, b| a.key.cmp(&b.key)));
        let mut from_proto = from_proto;
        sorted(&mut from_proto);
        sorted(&mut from_json);
        assert_eq!(from_proto, from_json);
        let short_id =
            ListOfSpans { spans: vec![ProtoSpan { trace_id: vec![1; 8], id: vec![2; 3], ..Default::default() }] };
        let error = proto_spans(&prost::Message::encode_to_vec(&short_id)).unwrap_err().to_string();
        assert!(error.contains("span 0: id has 3 bytes"), "{error}");
        assert!(proto_spans(b"\xff\xff").unwrap_err().to_string().contains("invalid Zipkin v2 protobuf"));
    }

    #[test]
    fn invalid_zipkin_input_is_refused_whole_with_the_reason() {
        let bad_id = br#"[{"traceId":"xyz","id":"ffdc9bb9a6453df3"}]"#;
        assert!(spans(bad_id).unwrap_err().to_string().contains("span 0: invalid traceId"));
        let bad_kind = br#"[{"traceId":"ab","id":"cd","kind":"SIDEWAYS"}]"#;
        assert!(spans(bad_kind).unwrap_err().to_string().contains("unknown span kind"));
        assert!(spans(b"{}").unwrap_err().to_string().contains("invalid Zipkin v2 JSON"));
    }
}
