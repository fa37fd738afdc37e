//! OTLP logs (HTTP `/v1/logs` and gRPC `LogsService/Export`) into the log store, mapped as Loki maps them:
//! a few well-known resource attributes become stream labels (dots as underscores, `service_name` always
//! present), the body becomes the line (JSON when it is not a string), and severity, trace and span ids,
//! scope and the other attributes become structured metadata.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use tonic::Status;
use vigil_tsdb::logs::{LogRecord, SourcePosition};

use crate::otlp::{body_format, decode_body, reply, value_text};
use crate::{Ingest, IngestError};

/// Resource attributes that become stream labels, as Loki's default OTLP configuration indexes them.
const STREAM_ATTRIBUTES: &[&str] = &[
    "service.name",
    "service.namespace",
    "service.instance.id",
    "deployment.environment",
    "deployment.environment.name",
    "cloud.region",
    "cloud.availability_zone",
    "k8s.cluster.name",
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.container.name",
    "container.name",
    "k8s.replicaset.name",
    "k8s.deployment.name",
    "k8s.statefulset.name",
    "k8s.daemonset.name",
    "k8s.cronjob.name",
    "k8s.job.name",
];

fn label_name(key: &str) -> String {
    key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// A body or attribute as text: strings as they are, everything else as JSON.
fn body_text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(other) => any_json(other).to_string(),
        None => String::new(),
    }
}

pub(crate) fn any_json(value: &any_value::Value) -> serde_json::Value {
    match value {
        any_value::Value::StringValue(s) => s.clone().into(),
        any_value::Value::BoolValue(b) => (*b).into(),
        any_value::Value::IntValue(i) => (*i).into(),
        any_value::Value::DoubleValue(d) => (*d).into(),
        any_value::Value::ArrayValue(array) => {
            array.values.iter().filter_map(|v| v.value.as_ref()).map(any_json).collect::<Vec<_>>().into()
        }
        any_value::Value::KvlistValue(list) => list
            .values
            .iter()
            .map(|kv| {
                (
                    kv.key.clone(),
                    kv.value.as_ref().and_then(|v| v.value.as_ref()).map_or(serde_json::Value::Null, any_json),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into(),
        any_value::Value::BytesValue(bytes) => bytes.iter().map(|b| format!("{b:02x}")).collect::<String>().into(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn add_attributes<'a>(metadata: &mut BTreeMap<String, String>, attributes: impl IntoIterator<Item = &'a KeyValue>) {
    for kv in attributes {
        metadata.insert(label_name(&kv.key), value_text(&kv.value));
    }
}

/// The record attribute in which the node agent sends where it read a record:
/// `<source key, 16 hex digits>:<byte offset>` (see `vigil_agent::podlogs::POSITION_ATTRIBUTE`).
pub const POSITION_ATTRIBUTE: &str = "vigil.log.position";

/// The position in a [`POSITION_ATTRIBUTE`] value; `None` if it is not one.
fn source_position(text: &str) -> Option<SourcePosition> {
    let (source, offset) = text.split_once(':')?;
    Some(SourcePosition { source: u64::from_str_radix(source, 16).ok()?, offset: offset.parse().ok()? })
}

/// Log records of an export request.
pub fn records(request: ExportLogsServiceRequest) -> Vec<LogRecord> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64);
    let mut out = Vec::new();
    for resource_logs in request.resource_logs {
        let attributes = resource_logs.resource.map(|r| r.attributes).unwrap_or_default();
        let mut labels = BTreeMap::new();
        let mut resource_metadata = BTreeMap::new();
        for kv in &attributes {
            let text = value_text(&kv.value);
            if STREAM_ATTRIBUTES.contains(&kv.key.as_str()) && !text.is_empty() {
                labels.insert(label_name(&kv.key), text);
            } else {
                resource_metadata.insert(label_name(&kv.key), text);
            }
        }
        labels.entry("service_name".to_owned()).or_insert_with(|| "unknown_service".to_owned());
        for scope_logs in resource_logs.scope_logs {
            let scope_name = scope_logs.scope.as_ref().map(|s| s.name.clone()).unwrap_or_default();
            for log in scope_logs.log_records {
                let mut metadata = resource_metadata.clone();
                let is_position = |kv: &&KeyValue| kv.key == POSITION_ATTRIBUTE;
                let position = log.attributes.iter().find(is_position);
                let position = position.and_then(|kv| source_position(&value_text(&kv.value)));
                add_attributes(&mut metadata, log.attributes.iter().filter(|kv| !is_position(kv)));
                if !scope_name.is_empty() {
                    metadata.insert("scope_name".into(), scope_name.clone());
                }
                if !log.severity_text.is_empty() {
                    metadata.insert("severity_text".into(), log.severity_text.clone());
                }
                if log.severity_number != 0 {
                    metadata.insert("severity_number".into(), log.severity_number.to_string());
                }
                if !log.trace_id.is_empty() {
                    metadata.insert("trace_id".into(), hex(&log.trace_id));
                }
                if !log.span_id.is_empty() {
                    metadata.insert("span_id".into(), hex(&log.span_id));
                }
                let ts_ns = [log.time_unix_nano, log.observed_time_unix_nano]
                    .into_iter()
                    .find(|t| *t > 0)
                    .map_or(now, |t| t as i64);
                let line = body_text(&log.body);
                crate::log_level::annotate(&labels, &mut metadata, &line);
                out.push(LogRecord { ts_ns, labels: labels.clone(), line, metadata, position });
            }
        }
    }
    out
}

fn store(ingest: &Ingest, request: ExportLogsServiceRequest) -> Result<ExportLogsServiceResponse, IngestError> {
    let logs = ingest.logs.as_ref().ok_or_else(|| IngestError::Unavailable("no log store".into()))?;
    let records = records(request);
    logs.append(&records).map_err(|e| IngestError::Unavailable(e.to_string()))?;
    metrics::counter!("vigil_ingest_log_lines_total", "receiver" => "otlp").increment(records.len() as u64);
    Ok(ExportLogsServiceResponse::default())
}

/// `POST /v1/logs` (protobuf or JSON, optionally gzip).
pub async fn handle_logs(State(ingest): State<Ingest>, headers: HeaderMap, body: Bytes) -> Response {
    metrics::counter!("vigil_ingest_requests_received_total", "receiver" => "otlp_http_logs").increment(1);
    let format = match body_format(&headers) {
        Ok(format) => format,
        Err(error) => return error.into_response(),
    };
    let outcome = tokio::task::spawn_blocking(move || {
        let max_bytes = ingest.limits.max_decompressed_bytes;
        let request: ExportLogsServiceRequest = decode_body(&body, format, max_bytes, "ExportLogsServiceRequest")?;
        store(&ingest, request)
    })
    .await
    .map_err(|e| IngestError::Unavailable(format!("ingest task failed: {e}")))
    .and_then(|r| r);
    match outcome {
        Ok(response) => reply(&response, format.0),
        Err(error) => error.into_response(),
    }
}

/// The gRPC logs service.
#[derive(Clone)]
pub(crate) struct LogsReceiver {
    pub(crate) ingest: Ingest,
}

#[tonic::async_trait]
impl LogsService for LogsReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, Status> {
        let (ingest, request) = (self.ingest.clone(), request.into_inner());
        tokio::task::spawn_blocking(move || store(&ingest, request))
            .await
            .map_err(|e| IngestError::Unavailable(format!("ingest task failed: {e}")))
            .and_then(|r| r)
            .map(tonic::Response::new)
            .map_err(|error| error.grpc_status())
    }
}

impl LogsReceiver {
    /// The tonic server of this service.
    pub(crate) fn server(ingest: Ingest) -> LogsServiceServer<LogsReceiver> {
        LogsServiceServer::new(LogsReceiver { ingest })
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::logs::v1::{LogRecord as OtlpRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    use super::*;

    fn string(key: &str, value: &str) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }) }
    }

    #[test]
    fn otlp_json_logs_decode_with_hex_ids_and_string_integers() {
        let body =
            br#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}}]},
            "scopeLogs":[{"logRecords":[{"timeUnixNano":"1700000000000000000","severityText":"WARN",
            "traceId":"5b8efff798038103d269b633813fc60c","body":{"stringValue":"slow"},
            "attributes":[{"key":"retries","value":{"intValue":"3"}}]}]}]}]}"#;
        let format = (crate::otlp::Encoding::Json, crate::otlp::Compression::None);
        let request: ExportLogsServiceRequest = decode_body(body, format, 1 << 20, "ExportLogsServiceRequest").unwrap();
        let records = records(request);
        assert_eq!(records[0].line, "slow");
        assert_eq!(records[0].metadata["trace_id"], "5b8efff798038103d269b633813fc60c");
        assert_eq!(records[0].metadata["retries"], "3");
        assert_eq!(records[0].ts_ns, 1_700_000_000_000_000_000);
    }

    #[test]
    fn resource_attributes_split_into_labels_and_metadata() {
        let record = OtlpRecord {
            time_unix_nano: 1_700_000_000_000_000_000,
            severity_text: "ERROR".into(),
            body: Some(AnyValue { value: Some(any_value::Value::StringValue("boom".into())) }),
            attributes: vec![string("http.method", "GET")],
            trace_id: vec![0xab; 16],
            ..Default::default()
        };
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        string("service.name", "checkout"),
                        string("k8s.pod.name", "c-1"),
                        string("host.arch", "amd64"),
                    ],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs { log_records: vec![record], ..Default::default() }],
                ..Default::default()
            }],
        };
        let records = records(request);
        assert_eq!(records.len(), 1);
        let record = &records[0];
        assert_eq!(
            record.labels,
            BTreeMap::from([("k8s_pod_name".into(), "c-1".into()), ("service_name".into(), "checkout".into())])
        );
        assert_eq!(record.line, "boom");
        assert_eq!(record.metadata["severity_text"], "ERROR");
        assert_eq!(record.metadata["http_method"], "GET");
        assert_eq!(record.metadata["host_arch"], "amd64");
        assert_eq!(record.metadata["trace_id"], "ab".repeat(16));
        assert_eq!(record.ts_ns, 1_700_000_000_000_000_000);
    }
}
