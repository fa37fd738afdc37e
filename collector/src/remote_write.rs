//! Prometheus remote write 1.0: snappy-compressed protobuf `WriteRequest` at `POST /api/v1/write`.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost::Message;
use vigil_tsdb::{Error as StorageError, Labels, MetricMetadata, Sample, SeriesSamples};

use crate::{Ingest, IngestError};

/// `prometheus.WriteRequest` (remote write 1.0), fields this receiver reads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series and their samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    /// Metric family metadata (Prometheus sends it in requests of its own).
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<WireMetadata>,
}

/// `prometheus.MetricMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WireMetadata {
    /// 0 unknown, 1 counter, 2 gauge, 3 histogram, 4 gaugehistogram, 5 summary, 6 info, 7 stateset.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    /// Family name.
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    /// Help text.
    #[prost(string, tag = "4")]
    pub help: String,
    /// Unit.
    #[prost(string, tag = "5")]
    pub unit: String,
}

fn metadata_type(code: i32) -> &'static str {
    match code {
        1 => "counter",
        2 => "gauge",
        3 => "histogram",
        4 => "gaugehistogram",
        5 => "summary",
        6 => "info",
        7 => "stateset",
        _ => "unknown",
    }
}

/// A decoded request: samples and metadata.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Samples by series.
    pub series: Vec<SeriesSamples>,
    /// Metadata by family name.
    pub metadata: Vec<(String, MetricMetadata)>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Labels, `__name__` among them.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Float samples.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<WireSample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WireSample {
    /// Value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

const PROTO_V1: &str = "prometheus.WriteRequest";

/// Checks the content type: protobuf, remote write 1.0 (the `proto` parameter absent or v1).
fn check_content_type(headers: &HeaderMap) -> Result<(), IngestError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut parts = content_type.split(';').map(str::trim);
    if parts.next() != Some("application/x-protobuf") {
        return Err(IngestError::UnsupportedMediaType(format!(
            "content type {content_type:?}; remote write needs application/x-protobuf"
        )));
    }
    for parameter in parts {
        if let Some(proto) = parameter.strip_prefix("proto=")
            && proto != PROTO_V1
        {
            return Err(IngestError::UnsupportedMediaType(format!(
                "remote write message {proto:?}; this receiver speaks {PROTO_V1}"
            )));
        }
    }
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("snappy");
    if encoding != "snappy" {
        return Err(IngestError::UnsupportedMediaType(format!(
            "content encoding {encoding:?}; remote write needs snappy"
        )));
    }
    Ok(())
}

/// Decodes a snappy block-compressed `WriteRequest`, refusing bodies that expand beyond `max_bytes`.
pub fn decode(body: &[u8], max_bytes: usize) -> Result<Decoded, IngestError> {
    let expanded_len =
        snap::raw::decompress_len(body).map_err(|e| IngestError::Malformed(format!("invalid snappy block: {e}")))?;
    if expanded_len > max_bytes {
        return Err(IngestError::TooLarge(format!(
            "body expands to {expanded_len} bytes, over the limit of {max_bytes}"
        )));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| IngestError::Malformed(format!("invalid snappy block: {e}")))?;
    let request = WriteRequest::decode(raw.as_slice())
        .map_err(|e| IngestError::Malformed(format!("invalid WriteRequest protobuf: {e}")))?;
    let mut batch = Vec::with_capacity(request.timeseries.len());
    for series in request.timeseries {
        let labels = Labels::new(series.labels.into_iter().map(|label| (label.name, label.value)))
            .map_err(|e| IngestError::Malformed(e.to_string()))?;
        let samples = series.samples.iter().map(|s| Sample { t: s.timestamp, v: s.value }).collect();
        batch.push(SeriesSamples { labels, samples });
    }
    let metadata = request
        .metadata
        .into_iter()
        .map(|m| {
            let entry = MetricMetadata { metric_type: metadata_type(m.r#type).into(), help: m.help, unit: m.unit };
            (m.metric_family_name, entry)
        })
        .collect();
    Ok(Decoded { series: batch, metadata })
}

/// `POST /api/v1/write`.
pub async fn handle(State(ingest): State<Ingest>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    metrics::counter!("vigil_ingest_requests_received_total", "receiver" => "remote_write").increment(1);
    metrics::counter!("vigil_ingest_bytes_received_total", "receiver" => "remote_write").increment(body.len() as u64);
    let outcome = ingest_body(&ingest, &headers, body).await;
    metrics::histogram!("vigil_ingest_request_duration_seconds", "receiver" => "remote_write")
        .record(started.elapsed().as_secs_f64());
    match outcome {
        Ok(samples) => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            let written = HeaderValue::from(samples);
            response.headers_mut().insert("X-Prometheus-Remote-Write-Samples-Written", written);
            response.headers_mut().insert("X-Prometheus-Remote-Write-Histograms-Written", HeaderValue::from(0));
            response.headers_mut().insert("X-Prometheus-Remote-Write-Exemplars-Written", HeaderValue::from(0));
            response
        }
        Err(error) => {
            let reason = match error.status() {
                StatusCode::SERVICE_UNAVAILABLE => "unavailable",
                StatusCode::PAYLOAD_TOO_LARGE => "too_large",
                StatusCode::UNSUPPORTED_MEDIA_TYPE => "media_type",
                _ => "invalid",
            };
            metrics::counter!("vigil_ingest_requests_rejected_total", "receiver" => "remote_write", "reason" => reason)
                .increment(1);
            tracing::debug!(%error, "remote write request rejected");
            error.into_response()
        }
    }
}

async fn ingest_body(ingest: &Ingest, headers: &HeaderMap, body: Bytes) -> Result<usize, IngestError> {
    check_content_type(headers)?;
    let max_bytes = ingest.limits.max_decompressed_bytes;
    let sink = ingest.metrics.clone();
    // Decompression, decoding and the durable append (fsync) are blocking work.
    tokio::task::spawn_blocking(move || {
        let decoded = decode(&body, max_bytes)?;
        let storage_error = |error: StorageError| match error {
            StorageError::Io { .. } => IngestError::Unavailable(error.to_string()),
            other => IngestError::Malformed(other.to_string()),
        };
        if !decoded.metadata.is_empty() {
            sink.set_metadata(&decoded.metadata).map_err(storage_error)?;
        }
        let batch = decoded.series;
        let total: usize = batch.iter().map(|series| series.samples.len()).sum();
        let summary = sink.append(&batch).map_err(storage_error)?;
        metrics::counter!("vigil_ingest_samples_accepted_total", "receiver" => "remote_write")
            .increment(summary.accepted as u64);
        let rejected = summary.rejected.len();
        metrics::counter!("vigil_ingest_samples_rejected_total", "receiver" => "remote_write")
            .increment(rejected as u64);
        match summary.rejected.first() {
            None => Ok(summary.accepted),
            Some(first) => Err(IngestError::Rejected {
                rejected,
                total,
                first: format!("{} for series {} at {}", first.error, first.labels, first.sample.t),
            }),
        }
    })
    .await
    .map_err(|e| IngestError::Unavailable(format!("ingest task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;
    use vigil_tsdb::{Db, DbOptions, Matcher, Queryable};

    use super::*;
    use crate::IngestLimits;

    fn request(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> Vec<u8> {
        let request = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: labels.iter().map(|(n, v)| Label { name: (*n).into(), value: (*v).into() }).collect(),
                samples: samples.iter().map(|(t, v)| WireSample { timestamp: *t, value: *v }).collect(),
            }],
            metadata: Vec::new(),
        };
        snap::raw::Encoder::new().compress_vec(&request.encode_to_vec()).unwrap()
    }

    async fn post(db: Arc<Db>, content_type: &str, body: Vec<u8>) -> (StatusCode, String, HeaderMap) {
        let ingest = Ingest::new(db, IngestLimits { max_decompressed_bytes: 1 << 20 });
        let request = Request::post("/api/v1/write")
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CONTENT_ENCODING, "snappy")
            .body(Body::from(body))
            .unwrap();
        let response = ingest.http_routes().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned(), headers)
    }

    fn db() -> Arc<Db> {
        Arc::new(Db::in_memory(DbOptions::default()))
    }

    #[tokio::test]
    async fn accepted_samples_are_stored() {
        let db = db();
        let body = request(&[("__name__", "up"), ("job", "node")], &[(1000, 1.0), (2000, 0.0)]);
        let (status, _, headers) = post(db.clone(), "application/x-protobuf", body).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(headers["X-Prometheus-Remote-Write-Samples-Written"], "2");
        let series = db.select(&[Matcher::equal("job", "node")], 0, 5000).unwrap();
        assert_eq!(series[0].samples, [Sample { t: 1000, v: 1.0 }, Sample { t: 2000, v: 0.0 }]);
    }

    #[tokio::test]
    async fn metadata_is_stored() {
        let db = db();
        let request = WriteRequest {
            timeseries: Vec::new(),
            metadata: vec![WireMetadata {
                r#type: 1,
                metric_family_name: "jobs_total".into(),
                help: "Jobs.".into(),
                unit: String::new(),
            }],
        };
        let body = snap::raw::Encoder::new().compress_vec(&request.encode_to_vec()).unwrap();
        let (status, _, _) = post(db.clone(), "application/x-protobuf", body).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(db.metadata(None, None)[0].1.metric_type, "counter");
    }

    #[tokio::test]
    async fn bad_inputs_get_the_right_status() {
        let good = request(&[("__name__", "up")], &[(1, 1.0)]);
        let (status, body, _) = post(db(), "application/json", good.clone()).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
        let (status, body, _) = post(db(), "application/x-protobuf", b"not snappy at all".to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("invalid snappy"), "{body}");
        let raw = snap::raw::Decoder::new().decompress_vec(&good).unwrap();
        let truncated = snap::raw::Encoder::new().compress_vec(&raw[..raw.len() - 3]).unwrap();
        let (status, body, _) = post(db(), "application/x-protobuf", truncated).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("invalid WriteRequest protobuf"), "{body}");
        let huge = snap::raw::Encoder::new().compress_vec(&vec![0u8; 2 << 20]).unwrap();
        let (status, _, _) = post(db(), "application/x-protobuf", huge).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn non_utf8_label_value_is_rejected() {
        // Field 1 (labels) → Label{name:"a", value:<0xff>}, hand-encoded since prost will not encode bad UTF-8.
        let label = [0x0a, 0x01, b'a', 0x12, 0x01, 0xff];
        let mut series = vec![0x0a, label.len() as u8];
        series.extend_from_slice(&label);
        let mut raw = vec![0x0a, series.len() as u8];
        raw.extend_from_slice(&series);
        let body = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
        let (status, body, _) = post(db(), "application/x-protobuf", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("invalid WriteRequest protobuf"), "{body}");
    }

    #[tokio::test]
    async fn out_of_order_samples_are_reported_and_the_rest_kept() {
        let db = Arc::new(Db::in_memory(DbOptions { out_of_order_window_ms: 0, ..DbOptions::default() }));
        let (status, _, _) =
            post(db.clone(), "application/x-protobuf", request(&[("__name__", "x")], &[(5000, 1.0)])).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let body = request(&[("__name__", "x")], &[(1000, 1.0), (6000, 2.0)]);
        let (status, body, _) = post(db.clone(), "application/x-protobuf", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("1 of 2 samples rejected; first: out of order sample"), "{body}");
        assert_eq!(db.select(&[Matcher::equal("__name__", "x")], 0, 10_000).unwrap()[0].samples.len(), 2);
    }
}
