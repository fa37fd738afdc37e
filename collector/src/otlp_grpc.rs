//! OTLP over gRPC: `opentelemetry.proto.collector.metrics.v1.MetricsService/Export`, served as axum routes so
//! the gRPC listener shares TLS, bearer tokens and request telemetry with the HTTP listeners.
//!
//! The logs and trace services are registered beside it.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use tonic::codec::CompressionEncoding;
use tonic::{Code, Status};

use crate::otlp::store_metrics;
use crate::{Ingest, IngestError};

/// tonic answers codec failures itself, with codes OTLP clients would retry; these rewrite them by message
/// prefix: (tonic's code, message prefix, OTLP's code). An oversized message is `RESOURCE_EXHAUSTED` and bad
/// protobuf `INVALID_ARGUMENT`, both not retryable.
const CODEC_STATUS_REWRITES: [(&str, &str, &str); 2] =
    [("11", "Error, decoded message length too large", "8"), ("13", "failed to decode Protobuf message", "3")];

impl IngestError {
    /// The gRPC status this error maps to (OTLP's retryable codes only for `Unavailable`).
    pub fn grpc_status(&self) -> Status {
        let code = match self {
            IngestError::Malformed(_) | IngestError::UnsupportedMediaType(_) | IngestError::Rejected { .. } => {
                Code::InvalidArgument
            }
            IngestError::TooLarge(_) => Code::ResourceExhausted,
            IngestError::Unavailable(_) => Code::Unavailable,
        };
        Status::new(code, self.to_string())
    }
}

/// The metrics service over an [`Ingest`].
#[derive(Clone)]
struct MetricsReceiver {
    ingest: Ingest,
}

#[tonic::async_trait]
impl MetricsService for MetricsReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, Status> {
        metrics::counter!("vigil_ingest_requests_received_total", "receiver" => "otlp_grpc").increment(1);
        let sink = self.ingest.metrics.clone();
        let request = request.into_inner();
        let stored = tokio::task::spawn_blocking(move || store_metrics(sink.as_ref(), request, "otlp_grpc"))
            .await
            .map_err(|e| IngestError::Unavailable(format!("ingest task failed: {e}")))
            .and_then(|result| result);
        stored.map(tonic::Response::new).map_err(|error| {
            metrics::counter!("vigil_ingest_requests_rejected_total", "receiver" => "otlp_grpc").increment(1);
            error.grpc_status()
        })
    }
}

impl Ingest {
    /// Routes of the OTLP/gRPC listener (HTTP/2): the metrics, logs and trace services, gzip and zstd accepted.
    pub fn otlp_grpc_routes(&self, max_message_bytes: usize) -> axum::Router {
        let metrics = MetricsServiceServer::new(MetricsReceiver { ingest: self.clone() })
            .max_decoding_message_size(max_message_bytes)
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Gzip);
        let logs = crate::otlp_logs::LogsReceiver::server(self.clone())
            .max_decoding_message_size(max_message_bytes)
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Gzip);
        let traces = crate::otlp_traces::TracesReceiver::server(self.clone())
            .max_decoding_message_size(max_message_bytes)
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Gzip);
        let routes = tonic::service::Routes::new(metrics)
            .add_service(logs)
            .add_service(traces)
            .into_axum_router()
            .layer(axum::middleware::from_fn(rewrite_codec_statuses));
        self.backpressure(routes)
    }
}

/// Applies [`CODEC_STATUS_REWRITES`] to a trailers-only error response.
async fn rewrite_codec_statuses(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let status = headers.get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let message = headers.get("grpc-message").and_then(|v| v.to_str().ok()).map(percent_decoded).unwrap_or_default();
    let rewrite = CODEC_STATUS_REWRITES.iter().find(|(code, prefix, _)| *code == status && message.starts_with(prefix));
    if let Some((_, _, otlp_code)) = rewrite {
        headers.insert("grpc-status", HeaderValue::from_static(otlp_code));
    }
    response
}

/// `grpc-message` is percent-encoded; only spaces and commas matter for the prefix check.
fn percent_decoded(message: &str) -> String {
    message.replace("%20", " ").replace("%2C", ",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_otlp_grpc_codes() {
        assert_eq!(IngestError::Malformed("x".into()).grpc_status().code(), Code::InvalidArgument);
        assert_eq!(IngestError::TooLarge("x".into()).grpc_status().code(), Code::ResourceExhausted);
        assert_eq!(IngestError::Unavailable("x".into()).grpc_status().code(), Code::Unavailable);
    }
}
