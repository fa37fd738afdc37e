//! OTLP traces (HTTP `/v1/traces` and gRPC `TraceService/Export`) into the span store. Spans with an
//! invalid trace or span id (not 16/8 bytes, or all zero) are refused one by one and reported in the
//! partial success; the rest are stored. Stored spans feed the span metrics ([`crate::spanmetrics`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span as OtlpSpan;
use tonic::Status;
use vigil_tsdb::traces::{AttrValue, Attribute, Resource, Span, SpanEvent, SpanKind, SpanLink, StatusCode};

use crate::otlp::{body_format, decode_body, reply};
use crate::otlp_logs::any_json;
use crate::{Ingest, IngestError};

/// An OTLP value as a span attribute value (moved, not copied); arrays and maps become their JSON text.
fn attr_value(value: Option<AnyValue>) -> AttrValue {
    match value.and_then(|v| v.value) {
        Some(any_value::Value::StringValue(s)) => AttrValue::Str(s),
        Some(any_value::Value::BoolValue(b)) => AttrValue::Bool(b),
        Some(any_value::Value::IntValue(i)) => AttrValue::Int(i),
        Some(any_value::Value::DoubleValue(d)) => AttrValue::Float(d),
        Some(any_value::Value::BytesValue(bytes)) => AttrValue::Bytes(bytes),
        Some(other) => AttrValue::Str(any_json(&other).to_string()),
        None => AttrValue::Str(String::new()),
    }
}

fn attributes(key_values: Vec<KeyValue>) -> Vec<Attribute> {
    key_values.into_iter().map(|kv| Attribute { key: kv.key, value: attr_value(kv.value) }).collect()
}

fn id<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    let id: [u8; N] = bytes.try_into().ok()?;
    (id != [0; N]).then_some(id)
}

/// Spans of an export request, and the number refused with the first reason.
pub fn spans(request: ExportTraceServiceRequest) -> (Vec<Span>, i64, Option<String>) {
    let (mut out, mut rejected, mut first_error) = (Vec::new(), 0i64, None);
    for resource_spans in request.resource_spans {
        let resource_attributes = attributes(resource_spans.resource.map(|r| r.attributes).unwrap_or_default());
        let service = match vigil_tsdb::traces::attribute(&resource_attributes, "service.name") {
            Some(value) => value.text(),
            None => "unknown_service".to_owned(),
        };
        for scope_spans in resource_spans.scope_spans {
            let scope = scope_spans.scope.unwrap_or_default();
            let resource = Arc::new(Resource {
                service: service.clone(),
                attributes: resource_attributes.clone(),
                scope_name: scope.name,
                scope_version: scope.version,
            });
            for span in scope_spans.spans {
                match span_of(span, &resource) {
                    Ok(span) => out.push(span),
                    Err(reason) => {
                        rejected += 1;
                        first_error.get_or_insert(reason);
                    }
                }
            }
        }
    }
    (out, rejected, first_error)
}

fn span_of(span: OtlpSpan, resource: &Arc<Resource>) -> Result<Span, String> {
    let trace_id = id::<16>(&span.trace_id).ok_or_else(|| format!("span {:?}: invalid trace id", span.name))?;
    let span_id = id::<8>(&span.span_id).ok_or_else(|| format!("span {:?}: invalid span id", span.name))?;
    let parent_span_id = match span.parent_span_id.len() {
        0 => None,
        _ => Some(id::<8>(&span.parent_span_id).ok_or_else(|| format!("span {:?}: invalid parent id", span.name))?),
    };
    let status = span.status.unwrap_or_default();
    let links = span
        .links
        .into_iter()
        .filter_map(|link| {
            Some(SpanLink {
                trace_id: id::<16>(&link.trace_id)?,
                span_id: id::<8>(&link.span_id)?,
                trace_state: link.trace_state,
                attributes: attributes(link.attributes),
            })
        })
        .collect();
    Ok(Span {
        trace_id,
        span_id,
        parent_span_id,
        trace_state: span.trace_state,
        flags: span.flags,
        name: span.name,
        kind: SpanKind::from_number(i64::from(span.kind)),
        status: StatusCode::from_number(i64::from(status.code)),
        status_message: status.message,
        start_ns: span.start_time_unix_nano as i64,
        end_ns: span.end_time_unix_nano.max(span.start_time_unix_nano) as i64,
        resource: resource.clone(),
        attributes: attributes(span.attributes),
        events: span
            .events
            .into_iter()
            .map(|event| SpanEvent {
                time_ns: event.time_unix_nano as i64,
                name: event.name,
                attributes: attributes(event.attributes),
            })
            .collect(),
        links,
    })
}

/// Stores spans (blocking: the append waits for the WAL) and feeds the span metrics.
pub(crate) fn store_spans(ingest: &Ingest, spans: Vec<Span>) -> Result<(), IngestError> {
    let store = ingest.spans.as_ref().ok_or_else(|| IngestError::Unavailable("no span store".into()))?;
    let count = spans.len() as u64;
    let observations = ingest.span_metrics.as_ref().map(|_| crate::spanmetrics::observations(&spans));
    store.append(spans).map_err(|error| match error {
        vigil_tsdb::Error::LimitExceeded(_) => IngestError::Unavailable(error.to_string()),
        other => IngestError::Unavailable(other.to_string()),
    })?;
    if let (Some(span_metrics), Some(observations)) = (&ingest.span_metrics, observations) {
        span_metrics.observe(observations);
    }
    metrics::counter!("vigil_ingest_spans_total").increment(count);
    Ok(())
}

fn store(ingest: &Ingest, request: ExportTraceServiceRequest) -> Result<ExportTraceServiceResponse, IngestError> {
    let (spans, rejected, first_error) = spans(request);
    store_spans(ingest, spans)?;
    let partial_success = (rejected > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: rejected,
        error_message: first_error.unwrap_or_default(),
    });
    Ok(ExportTraceServiceResponse { partial_success })
}

/// `POST /v1/traces` (protobuf or JSON, optionally gzip).
pub async fn handle_traces(State(ingest): State<Ingest>, headers: HeaderMap, body: Bytes) -> Response {
    metrics::counter!("vigil_ingest_requests_received_total", "receiver" => "otlp_http_traces").increment(1);
    let format = match body_format(&headers) {
        Ok(format) => format,
        Err(error) => return error.into_response(),
    };
    let outcome = tokio::task::spawn_blocking(move || {
        let max_bytes = ingest.limits.max_decompressed_bytes;
        let request: ExportTraceServiceRequest = decode_body(&body, format, max_bytes, "ExportTraceServiceRequest")?;
        store(&ingest, request)
    })
    .await
    .map_err(|e| IngestError::Unavailable(format!("ingest task failed: {e}")))
    .and_then(|r| r);
    match outcome {
        Ok(response) => reply(&response, format.0),
        Err(error) => {
            metrics::counter!("vigil_ingest_requests_rejected_total", "receiver" => "otlp_http_traces").increment(1);
            error.into_response()
        }
    }
}

/// The gRPC trace service.
#[derive(Clone)]
pub(crate) struct TracesReceiver {
    ingest: Ingest,
}

#[tonic::async_trait]
impl TraceService for TracesReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, Status> {
        metrics::counter!("vigil_ingest_requests_received_total", "receiver" => "otlp_grpc_traces").increment(1);
        let (ingest, request) = (self.ingest.clone(), request.into_inner());
        tokio::task::spawn_blocking(move || store(&ingest, request))
            .await
            .map_err(|e| IngestError::Unavailable(format!("ingest task failed: {e}")))
            .and_then(|r| r)
            .map(tonic::Response::new)
            .map_err(|error| error.grpc_status())
    }
}

impl TracesReceiver {
    /// The tonic server of this service.
    pub(crate) fn server(ingest: Ingest) -> TraceServiceServer<TracesReceiver> {
        TraceServiceServer::new(TracesReceiver { ingest })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_json_spans_decode_with_hex_ids_string_times_and_integer_enums() {
        let body = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"cart"}}]},
          "scopeSpans":[{"scope":{"name":"my.lib","version":"1.0.0"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c",
          "spanId":"eee19b7ec3c1b174","parentSpanId":"eee19b7ec3c1b173","name":"GET /cart","kind":2,
          "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,
          "attributes":[{"key":"http.response.status_code","value":{"intValue":"200"}}],"status":{"code":2,"message":"x"},
          "events":[{"timeUnixNano":"1544712660500000000","name":"exception"}],
          "links":[{"traceId":"5b8efff798038103d269b633813fc60d","spanId":"eee19b7ec3c1b175"}]},
          {"traceId":"00000000000000000000000000000000","spanId":"eee19b7ec3c1b176","name":"bad"}]}]}]}"#;
        let format = (crate::otlp::Encoding::Json, crate::otlp::Compression::None);
        let request: ExportTraceServiceRequest =
            decode_body(body, format, 1 << 20, "ExportTraceServiceRequest").unwrap();
        let (spans, rejected, error) = spans(request);
        assert_eq!(rejected, 1);
        assert!(error.unwrap().contains("invalid trace id"));
        let span = &spans[0];
        assert_eq!(vigil_tsdb::traces::hex(&span.trace_id), "5b8efff798038103d269b633813fc60c");
        assert_eq!(span.parent_span_id.map(|p| vigil_tsdb::traces::hex(&p)).unwrap(), "eee19b7ec3c1b173");
        assert_eq!((span.kind, span.status), (SpanKind::Server, StatusCode::Error));
        assert_eq!(span.duration_ns(), 1_000_000_000);
        assert_eq!(span.service(), "cart");
        assert_eq!(span.resource.scope_name, "my.lib");
        assert_eq!(
            span.attributes,
            vec![Attribute { key: "http.response.status_code".into(), value: AttrValue::Int(200) }]
        );
        assert_eq!(span.events[0].name, "exception");
        assert_eq!(span.links.len(), 1);
    }
}
