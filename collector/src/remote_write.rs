//! Prometheus remote write 1.0: snappy-compressed protobuf `WriteRequest` at `POST /api/v1/write`.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost::Message;
use vigil_tsdb::{Error as StorageError, Labels, MetricMetadata, Sample, SeriesSamples};

use crate::{Ingest, IngestError};

pub(crate) mod borrowed;

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
    /// Native histograms received (2.0), not stored yet.
    pub histograms: usize,
    /// Exemplars received (2.0), not stored.
    pub exemplars: usize,
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
const PROTO_V2: &str = "io.prometheus.write.v2.Request";

/// `io.prometheus.write.v2.Request` (remote write 2.0): series refer to a symbols table.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RequestV2 {
    /// Every string of the request; `symbols[0]` is "".
    #[prost(string, repeated, tag = "4")]
    pub symbols: Vec<String>,
    /// The series.
    #[prost(message, repeated, tag = "5")]
    pub timeseries: Vec<TimeSeriesV2>,
}

/// `io.prometheus.write.v2.TimeSeries`, fields this receiver reads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeriesV2 {
    /// Alternating name and value indexes into the symbols.
    #[prost(uint32, repeated, tag = "1")]
    pub labels_refs: Vec<u32>,
    /// Float samples (`start_timestamp`, field 3, is not used).
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<WireSample>,
    /// Native histograms, kept as raw messages: counted, not stored yet.
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub histograms: Vec<Vec<u8>>,
    /// Exemplars, kept as raw messages: counted, not stored.
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub exemplars: Vec<Vec<u8>>,
    /// Type, help and unit.
    #[prost(message, optional, tag = "5")]
    pub metadata: Option<MetadataV2>,
}

/// `io.prometheus.write.v2.Metadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetadataV2 {
    /// Same codes as 1.0's metric types.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    /// Symbol index of the help text.
    #[prost(uint32, tag = "3")]
    pub help_ref: u32,
    /// Symbol index of the unit.
    #[prost(uint32, tag = "4")]
    pub unit_ref: u32,
}

/// Which remote-write message a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `prometheus.WriteRequest`.
    V1,
    /// `io.prometheus.write.v2.Request`.
    V2,
}

/// Checks the content type (protobuf; `proto=` chooses 1.0 or 2.0, absent means 1.0) and snappy encoding.
fn check_content_type(headers: &HeaderMap) -> Result<Version, IngestError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut parts = content_type.split(';').map(str::trim);
    if parts.next() != Some("application/x-protobuf") {
        return Err(IngestError::UnsupportedMediaType(format!(
            "content type {content_type:?}; remote write needs application/x-protobuf"
        )));
    }
    let mut version = Version::V1;
    for parameter in parts {
        let Some(proto) = parameter.strip_prefix("proto=") else { continue };
        version = match proto {
            PROTO_V1 => Version::V1,
            PROTO_V2 => Version::V2,
            other => {
                return Err(IngestError::UnsupportedMediaType(format!(
                    "remote write message {other:?}; this receiver speaks {PROTO_V1} and {PROTO_V2}"
                )));
            }
        };
    }
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("snappy");
    if encoding != "snappy" {
        return Err(IngestError::UnsupportedMediaType(format!(
            "content encoding {encoding:?}; remote write needs snappy"
        )));
    }
    Ok(version)
}

/// Decodes a snappy block-compressed request of either version, refusing bodies that expand beyond `max_bytes`.
pub fn decode_version(body: &[u8], max_bytes: usize, version: Version) -> Result<Decoded, IngestError> {
    match version {
        Version::V1 => decode(body, max_bytes),
        Version::V2 => decode_v2(&unsnappy(body, max_bytes)?),
    }
}

/// A snappy block expanded, refused when it would expand beyond `max_bytes`.
pub(crate) fn unsnappy_limited(body: &[u8], max_bytes: usize) -> Result<Vec<u8>, IngestError> {
    unsnappy(body, max_bytes)
}

fn unsnappy(body: &[u8], max_bytes: usize) -> Result<Vec<u8>, IngestError> {
    let expanded_len =
        snap::raw::decompress_len(body).map_err(|e| IngestError::Malformed(format!("invalid snappy block: {e}")))?;
    if expanded_len > max_bytes {
        return Err(IngestError::TooLarge(format!(
            "body expands to {expanded_len} bytes, over the limit of {max_bytes}"
        )));
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| IngestError::Malformed(format!("invalid snappy block: {e}")))
}

/// Decodes an uncompressed remote write 2.0 request, resolving symbol references.
pub fn decode_v2(raw: &[u8]) -> Result<Decoded, IngestError> {
    let request = RequestV2::decode(raw)
        .map_err(|e| IngestError::Malformed(format!("invalid io.prometheus.write.v2.Request protobuf: {e}")))?;
    if request.symbols.first().is_some_and(|first| !first.is_empty()) {
        return Err(IngestError::Malformed("symbols[0] must be the empty string".into()));
    }
    let symbol = |index: u32| -> Result<&str, IngestError> {
        request.symbols.get(index as usize).map(String::as_str).ok_or_else(|| {
            IngestError::Malformed(format!(
                "symbol reference {index} is out of range of {} symbols",
                request.symbols.len()
            ))
        })
    };
    let mut decoded = Decoded::default();
    for series in &request.timeseries {
        if series.labels_refs.len() % 2 != 0 {
            return Err(IngestError::Malformed("labels_refs must hold name/value pairs".into()));
        }
        let mut pairs = Vec::with_capacity(series.labels_refs.len() / 2);
        for pair in series.labels_refs.chunks(2) {
            pairs.push((symbol(pair[0])?.to_owned(), symbol(pair[1])?.to_owned()));
        }
        let labels = Labels::new(pairs).map_err(|e| IngestError::Malformed(e.to_string()))?;
        if let (Some(metadata), Some(name)) = (&series.metadata, labels.metric_name())
            && (metadata.r#type != 0 || metadata.help_ref != 0 || metadata.unit_ref != 0)
        {
            let entry = MetricMetadata {
                metric_type: metadata_type(metadata.r#type).into(),
                help: symbol(metadata.help_ref)?.to_owned(),
                unit: symbol(metadata.unit_ref)?.to_owned(),
            };
            decoded.metadata.push((name.to_owned(), entry));
        }
        decoded.histograms += series.histograms.len();
        decoded.exemplars += series.exemplars.len();
        let samples = series.samples.iter().map(|s| Sample { t: s.timestamp, v: s.value }).collect();
        decoded.series.push(SeriesSamples { labels, samples });
    }
    Ok(decoded)
}

/// Decodes a snappy block-compressed `WriteRequest`, refusing bodies that expand beyond `max_bytes`.
pub fn decode(body: &[u8], max_bytes: usize) -> Result<Decoded, IngestError> {
    let raw = unsnappy(body, max_bytes)?;
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
    Ok(Decoded { series: batch, metadata, ..Decoded::default() })
}

/// What a request wrote, and why the rest was refused (a partial write answers non-2xx).
struct Written {
    samples: usize,
    refused: Option<IngestError>,
}

/// `POST /api/v1/write` (remote write 1.0 and 2.0).
pub async fn handle(State(ingest): State<Ingest>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    metrics::counter!("vigil_ingest_requests_received_total", "receiver" => "remote_write").increment(1);
    metrics::counter!("vigil_ingest_bytes_received_total", "receiver" => "remote_write").increment(body.len() as u64);
    let outcome = ingest_body(&ingest, &headers, body).await;
    metrics::histogram!("vigil_ingest_request_duration_seconds", "receiver" => "remote_write")
        .record(started.elapsed().as_secs_f64());
    let (mut response, written) = match outcome {
        Ok(Written { samples, refused: None }) => (StatusCode::NO_CONTENT.into_response(), samples),
        Ok(Written { samples, refused: Some(error) }) => (reject(error), samples),
        Err(error) => (reject(error), 0),
    };
    // Exemplars are not stored, so none count as written.
    for (name, value) in [
        ("X-Prometheus-Remote-Write-Samples-Written", written),
        ("X-Prometheus-Remote-Write-Histograms-Written", 0),
        ("X-Prometheus-Remote-Write-Exemplars-Written", 0),
    ] {
        response.headers_mut().insert(name, HeaderValue::from(value));
    }
    response
}

fn reject(error: IngestError) -> Response {
    let reason = match error.status() {
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "media_type",
        _ => "invalid",
    };
    metrics::counter!("vigil_ingest_requests_rejected_total", "receiver" => "remote_write", "reason" => reason)
        .increment(1);
    tracing::debug!(%error, "remote write request refused");
    error.into_response()
}

async fn ingest_body(ingest: &Ingest, headers: &HeaderMap, body: Bytes) -> Result<Written, IngestError> {
    let version = check_content_type(headers)?;
    let max_bytes = ingest.limits.max_decompressed_bytes;
    let sink = ingest.metrics.clone();
    // Decompression, decoding and the durable append (fsync) are blocking work.
    tokio::task::spawn_blocking(move || {
        let storage_error = |error: StorageError| match error {
            StorageError::Io { .. } => IngestError::Unavailable(error.to_string()),
            other => IngestError::Malformed(other.to_string()),
        };
        let raw = unsnappy(&body, max_bytes)?;
        // 1.0 is read in place (labels borrowed from `raw`); 2.0 resolves symbols into owned labels.
        let (summary, total, histograms, exemplars) = match version {
            Version::V1 => {
                let request = borrowed::decode(&raw)?;
                if !request.metadata.is_empty() {
                    sink.set_metadata(&request.metadata).map_err(storage_error)?;
                }
                let total = request.batch.samples.len();
                let summary = sink.append_refs(&request.batch, &borrowed::read_labels).map_err(storage_error)?;
                (summary, total, request.histograms, request.exemplars)
            }
            Version::V2 => {
                let decoded = decode_v2(&raw)?;
                if !decoded.metadata.is_empty() {
                    sink.set_metadata(&decoded.metadata).map_err(storage_error)?;
                }
                let total: usize = decoded.series.iter().map(|series| series.samples.len()).sum();
                let summary = sink.append(&decoded.series).map_err(storage_error)?;
                (summary, total, decoded.histograms, decoded.exemplars)
            }
        };
        metrics::counter!("vigil_ingest_samples_accepted_total", "receiver" => "remote_write")
            .increment(summary.accepted as u64);
        let rejected = summary.rejected.len();
        metrics::counter!("vigil_ingest_samples_rejected_total", "receiver" => "remote_write")
            .increment(rejected as u64);
        let refused = match summary.rejected.first() {
            Some(first) => Some(IngestError::Rejected {
                rejected,
                total,
                first: format!("{} for series {} at {}", first.error, first.labels, first.sample.t),
            }),
            None if histograms > 0 => {
                metrics::counter!("vigil_ingest_points_unsupported_total", "receiver" => "remote_write", "kind" => "native_histogram")
                    .increment(histograms as u64);
                Some(IngestError::Malformed(format!(
                    "{} native histogram samples were not stored: native histograms are not supported yet",
                    histograms
                )))
            }
            None => None,
        };
        if exemplars > 0 {
            metrics::counter!("vigil_ingest_points_unsupported_total", "receiver" => "remote_write", "kind" => "exemplar")
                .increment(exemplars as u64);
        }
        Ok(Written { samples: summary.accepted, refused })
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
        let ingest = Ingest::new(db, IngestLimits { max_decompressed_bytes: 1 << 20, ..IngestLimits::default() });
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

    fn v2_body(symbols: &[&str], labels_refs: Vec<u32>, histograms: usize) -> Vec<u8> {
        let request = RequestV2 {
            symbols: symbols.iter().map(|s| (*s).to_owned()).collect(),
            timeseries: vec![TimeSeriesV2 {
                labels_refs,
                samples: vec![WireSample { value: 4.5, timestamp: 1000 }],
                histograms: vec![vec![]; histograms],
                exemplars: Vec::new(),
                metadata: Some(MetadataV2 { r#type: 2, help_ref: 5, unit_ref: 0 }),
            }],
        };
        snap::raw::Encoder::new().compress_vec(&request.encode_to_vec()).unwrap()
    }

    const V2: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";

    #[tokio::test]
    async fn remote_write_2_resolves_symbols() {
        let db = db();
        let body =
            v2_body(&["", "__name__", "temperature", "room", "kitchen", "Room temperature."], vec![1, 2, 3, 4], 0);
        let (status, text, headers) = post(db.clone(), V2, body).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
        assert_eq!(headers["X-Prometheus-Remote-Write-Samples-Written"], "1");
        let series = db.select(&[Matcher::equal("room", "kitchen")], 0, 5000).unwrap();
        assert_eq!(series[0].samples, [Sample { t: 1000, v: 4.5 }]);
        assert_eq!(db.metadata(Some("temperature"), None)[0].1.help, "Room temperature.");
    }

    #[tokio::test]
    async fn remote_write_2_bad_references_and_histograms() {
        let (status, text, _) = post(db(), V2, v2_body(&["", "__name__"], vec![1, 9], 0)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.contains("symbol reference 9 is out of range of 2 symbols"), "{text}");
        let (status, text, _) = post(db(), V2, v2_body(&["x"], vec![], 0)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.contains("symbols[0] must be the empty string"), "{text}");
        let symbols = ["", "__name__", "temperature", "room", "kitchen", "help"];
        let (status, text, headers) = post(db(), V2, v2_body(&symbols, vec![1, 2], 2)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "a partial write is non-2xx: {text}");
        assert_eq!(headers["X-Prometheus-Remote-Write-Samples-Written"], "1");
        assert!(text.contains("2 native histogram samples were not stored"), "{text}");
        let (status, _, _) = post(db(), "application/x-protobuf;proto=io.prometheus.write.v3.Request", vec![]).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
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
