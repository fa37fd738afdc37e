//! OTLP metrics over HTTP: `POST /v1/metrics` with a protobuf `ExportMetricsServiceRequest`, translated
//! to Prometheus series the way Prometheus's OTLP receiver does (names with unit and `_total` suffixes,
//! `job`/`instance` from the resource, `target_info`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, NumberDataPoint, metric::Data, number_data_point};
use prost::Message;
use vigil_tsdb::{Error as StorageError, Labels, METRIC_NAME, STALE_NAN_BITS, Sample, SeriesSamples};

use crate::{Ingest, IngestError};

/// `AggregationTemporality::Cumulative`.
const CUMULATIVE: i32 = 2;
/// `DataPointFlags::NoRecordedValueMask`: the point marks the end of a series (a staleness marker).
const NO_RECORDED_VALUE: u32 = 1;

/// Series from a request, and the points that could not be stored, with why.
#[derive(Debug, Default)]
pub struct Translated {
    /// Samples by series.
    pub series: Vec<SeriesSamples>,
    /// Data points refused (unsupported kinds, invalid labels).
    pub rejected: u64,
    /// The first refusal's reason.
    pub first_error: Option<String>,
}

impl Translated {
    fn reject(&mut self, points: usize, reason: String) {
        self.rejected += points as u64;
        self.first_error.get_or_insert(reason);
    }

    fn push(&mut self, labels: Vec<(String, String)>, t: i64, v: f64) {
        match Labels::new(labels) {
            Ok(labels) => self.series.push(SeriesSamples { labels, samples: vec![Sample { t, v }] }),
            Err(error) => self.reject(1, error.to_string()),
        }
    }
}

/// Replaces characters Prometheus names cannot hold with `_`.
fn sanitize(name: &str) -> String {
    let mut out: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == ':' { c } else { '_' }).collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn label_name(key: &str) -> String {
    let name = sanitize(key).replace(':', "_");
    if key.starts_with(|c: char| c.is_ascii_digit()) { format!("key{name}") } else { name }
}

/// OTLP unit → Prometheus suffix word (`s` → `seconds`, `By` → `bytes`, `m/s` → `meters_per_second`).
fn unit_suffix(unit: &str) -> Option<String> {
    let unit = unit.split('{').next().unwrap_or("").trim();
    if unit.is_empty() || unit == "1" {
        return None;
    }
    let word = |u: &str| -> String {
        match u {
            "d" => "days".into(),
            "h" => "hours".into(),
            "min" => "minutes".into(),
            "s" => "seconds".into(),
            "ms" => "milliseconds".into(),
            "us" => "microseconds".into(),
            "ns" => "nanoseconds".into(),
            "By" => "bytes".into(),
            "KiBy" => "kibibytes".into(),
            "MiBy" => "mebibytes".into(),
            "GiBy" => "gibibytes".into(),
            "KBy" => "kilobytes".into(),
            "MBy" => "megabytes".into(),
            "GBy" => "gigabytes".into(),
            "m" => "meters".into(),
            "V" => "volts".into(),
            "A" => "amperes".into(),
            "J" => "joules".into(),
            "W" => "watts".into(),
            "g" => "grams".into(),
            "Cel" => "celsius".into(),
            "Hz" => "hertz".into(),
            "%" => "percent".into(),
            other => sanitize(other),
        }
    };
    Some(match unit.split_once('/') {
        Some((numerator, per)) => {
            let per = match per {
                "s" => "second".to_owned(),
                "m" => "minute".to_owned(),
                "h" => "hour".to_owned(),
                "d" => "day".to_owned(),
                other => sanitize(other),
            };
            if numerator.is_empty() { format!("per_{per}") } else { format!("{}_per_{per}", word(numerator)) }
        }
        None => word(unit),
    })
}

/// The Prometheus name of a metric: sanitised, with its unit suffix, `_ratio` for unit `1` gauges and
/// `_total` for monotonic counters, each added only if not already there.
pub fn metric_name(metric: &Metric, counter: bool) -> String {
    let mut name = sanitize(&metric.name);
    let gauge = matches!(metric.data, Some(Data::Gauge(_)));
    let suffix = if metric.unit == "1" && gauge { Some("ratio".to_owned()) } else { unit_suffix(&metric.unit) };
    if let Some(suffix) = suffix
        && !name.ends_with(&format!("_{suffix}"))
    {
        name = format!("{name}_{suffix}");
    }
    if counter && !name.ends_with("_total") {
        name.push_str("_total");
    }
    name
}

pub(crate) fn value_text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(bytes)) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|kv| kv.key == key).map(|kv| value_text(&kv.value)).filter(|v| !v.is_empty())
}

/// `job` and `instance` from `service.namespace`/`service.name` and `service.instance.id`.
fn target(resource: &[KeyValue]) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    if let Some(name) = attribute(resource, "service.name") {
        let job = match attribute(resource, "service.namespace") {
            Some(namespace) => format!("{namespace}/{name}"),
            None => name,
        };
        labels.push(("job".to_owned(), job));
    }
    if let Some(instance) = attribute(resource, "service.instance.id") {
        labels.push(("instance".to_owned(), instance));
    }
    labels
}

fn point_labels(name: &str, target: &[(String, String)], attributes: &[KeyValue]) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> =
        attributes.iter().map(|kv| (label_name(&kv.key), value_text(&kv.value))).collect();
    labels.retain(|(key, _)| !target.iter().any(|(t, _)| t == key));
    labels.extend(target.iter().cloned());
    labels.push((METRIC_NAME.to_owned(), name.to_owned()));
    labels
}

fn millis(nanos: u64) -> i64 {
    (nanos / 1_000_000) as i64
}

fn value_or_stale(flags: u32, value: f64) -> f64 {
    if flags & NO_RECORDED_VALUE != 0 { f64::from_bits(STALE_NAN_BITS) } else { value }
}

/// A bucket bound as Prometheus 3 writes `le`: `0.5`, `1.0`, `+Inf`.
fn bound_text(bound: f64) -> String {
    if bound.is_infinite() {
        return if bound > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let text = format!("{bound}");
    if text.contains(['.', 'e']) { text } else { format!("{text}.0") }
}

/// Translates a request into series; unsupported points are counted, not dropped silently.
pub fn translate(request: ExportMetricsServiceRequest) -> Translated {
    let mut out = Translated::default();
    for resource_metrics in request.resource_metrics {
        let resource = resource_metrics.resource.map(|r| r.attributes).unwrap_or_default();
        let target = target(&resource);
        let mut newest = 0i64;
        for scope_metrics in resource_metrics.scope_metrics {
            for metric in scope_metrics.metrics {
                newest = newest.max(translate_metric(&metric, &target, &mut out));
            }
        }
        let promoted = ["service.name", "service.namespace", "service.instance.id"];
        let info: Vec<KeyValue> = resource.iter().filter(|kv| !promoted.contains(&kv.key.as_str())).cloned().collect();
        if !info.is_empty() && !target.is_empty() && newest > 0 {
            out.push(point_labels("target_info", &target, &info), newest, 1.0);
        }
    }
    out
}

/// Adds one metric's points; returns the newest point time (ms).
fn translate_metric(metric: &Metric, target: &[(String, String)], out: &mut Translated) -> i64 {
    let mut newest = 0;
    match &metric.data {
        Some(Data::Gauge(gauge)) => {
            newest = push_numbers(&metric_name(metric, false), &gauge.data_points, target, out);
        }
        Some(Data::Sum(sum)) => {
            if sum.aggregation_temporality != CUMULATIVE {
                out.reject(sum.data_points.len(), format!("metric {:?}: delta sums are not supported", metric.name));
                return 0;
            }
            newest = push_numbers(&metric_name(metric, sum.is_monotonic), &sum.data_points, target, out);
        }
        Some(Data::Histogram(histogram)) => {
            if histogram.aggregation_temporality != CUMULATIVE {
                let reason = format!("metric {:?}: delta histograms are not supported", metric.name);
                out.reject(histogram.data_points.len(), reason);
                return 0;
            }
            let name = metric_name(metric, false);
            for point in &histogram.data_points {
                let t = millis(point.time_unix_nano);
                newest = newest.max(t);
                let mut cumulative = 0u64;
                let bounds = point.explicit_bounds.iter().copied().chain(std::iter::once(f64::INFINITY));
                for (bound, count) in bounds.zip(&point.bucket_counts) {
                    cumulative += count;
                    let mut labels = point_labels(&format!("{name}_bucket"), target, &point.attributes);
                    labels.push(("le".to_owned(), bound_text(bound)));
                    out.push(labels, t, value_or_stale(point.flags, cumulative as f64));
                }
                out.push(
                    point_labels(&format!("{name}_count"), target, &point.attributes),
                    t,
                    value_or_stale(point.flags, point.count as f64),
                );
                if let Some(sum) = point.sum {
                    out.push(
                        point_labels(&format!("{name}_sum"), target, &point.attributes),
                        t,
                        value_or_stale(point.flags, sum),
                    );
                }
            }
        }
        Some(Data::Summary(summary)) => {
            let name = metric_name(metric, false);
            for point in &summary.data_points {
                let t = millis(point.time_unix_nano);
                newest = newest.max(t);
                for quantile in &point.quantile_values {
                    let mut labels = point_labels(&name, target, &point.attributes);
                    labels.push(("quantile".to_owned(), bound_text(quantile.quantile)));
                    out.push(labels, t, value_or_stale(point.flags, quantile.value));
                }
                out.push(
                    point_labels(&format!("{name}_count"), target, &point.attributes),
                    t,
                    value_or_stale(point.flags, point.count as f64),
                );
                out.push(
                    point_labels(&format!("{name}_sum"), target, &point.attributes),
                    t,
                    value_or_stale(point.flags, point.sum),
                );
            }
        }
        Some(Data::ExponentialHistogram(histogram)) => {
            metrics::counter!("vigil_ingest_points_unsupported_total", "receiver" => "otlp", "kind" => "exponential_histogram")
                .increment(histogram.data_points.len() as u64);
            let reason = format!(
                "metric {:?}: exponential histograms are kept for native-histogram support, not stored yet",
                metric.name
            );
            out.reject(histogram.data_points.len(), reason);
        }
        None => {}
    }
    newest
}

/// Decompresses a gzip body, refusing one that expands beyond `max_bytes`.
pub(crate) fn gunzip(body: &[u8], max_bytes: usize) -> Result<Vec<u8>, IngestError> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(max_bytes as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| IngestError::Malformed(format!("invalid gzip body: {e}")))?;
    if out.len() > max_bytes {
        return Err(IngestError::TooLarge(format!("body expands beyond the limit of {max_bytes} bytes")));
    }
    Ok(out)
}

/// Gauge and sum points as samples of `name`; returns the newest point time (ms).
fn push_numbers(name: &str, points: &[NumberDataPoint], target: &[(String, String)], out: &mut Translated) -> i64 {
    let mut newest = 0;
    for point in points {
        let t = millis(point.time_unix_nano);
        newest = newest.max(t);
        out.push(point_labels(name, target, &point.attributes), t, value_or_stale(point.flags, number(&point.value)));
    }
    newest
}

fn number(value: &Option<number_data_point::Value>) -> f64 {
    match value {
        Some(number_data_point::Value::AsDouble(v)) => *v,
        Some(number_data_point::Value::AsInt(v)) => *v as f64,
        None => f64::NAN,
    }
}

/// How an OTLP/HTTP body is encoded (the response uses the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json`: OTLP's JSON mapping (hex ids, 64-bit integers as strings).
    Json,
}

/// How an OTLP/HTTP body is compressed (`Content-Encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    /// Not compressed.
    None,
    /// `gzip`.
    Gzip,
    /// `zstd`.
    Zstd,
    /// `deflate` (zlib), which the OpenTelemetry SDKs offer beside gzip.
    Deflate,
}

/// Inflates a zlib (`deflate`) body, refusing one that expands beyond `max_bytes`.
fn inflate(body: &[u8], max_bytes: usize) -> Result<Vec<u8>, IngestError> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(body)
        .take(max_bytes as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| IngestError::Malformed(format!("invalid deflate body: {e}")))?;
    if out.len() > max_bytes {
        return Err(IngestError::TooLarge(format!("body expands beyond the limit of {max_bytes} bytes")));
    }
    Ok(out)
}

/// Decompresses a zstd body, refusing one that expands beyond `max_bytes`.
fn unzstd(body: &[u8], max_bytes: usize) -> Result<Vec<u8>, IngestError> {
    use std::io::Read;
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(body)
        .and_then(|decoder| decoder.take(max_bytes as u64 + 1).read_to_end(&mut out))
        .map_err(|e| IngestError::Malformed(format!("invalid zstd body: {e}")))?;
    if out.len() > max_bytes {
        return Err(IngestError::TooLarge(format!("body expands beyond the limit of {max_bytes} bytes")));
    }
    Ok(out)
}

/// The encoding and compression a request declares.
pub(crate) fn body_format(headers: &HeaderMap) -> Result<(Encoding, Compression), IngestError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let encoding = if content_type.starts_with("application/x-protobuf") {
        Encoding::Protobuf
    } else if content_type.starts_with("application/json") {
        Encoding::Json
    } else {
        return Err(IngestError::UnsupportedMediaType(format!(
            "content type {content_type:?}; this receiver takes application/x-protobuf or application/json"
        )));
    };
    let compression = match headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()) {
        None | Some("identity") => Compression::None,
        Some("gzip") => Compression::Gzip,
        Some("zstd") => Compression::Zstd,
        Some("deflate") => Compression::Deflate,
        Some(other) => {
            return Err(IngestError::UnsupportedMediaType(format!(
                "content encoding {other:?}; use gzip, zstd, deflate or none"
            )));
        }
    };
    Ok((encoding, compression))
}

/// Decompresses and decodes an OTLP/HTTP request body.
pub(crate) fn decode_body<T: Message + Default + serde::de::DeserializeOwned>(
    body: &[u8],
    (encoding, compression): (Encoding, Compression),
    max_bytes: usize,
    message: &str,
) -> Result<T, IngestError> {
    let body = match compression {
        Compression::None => body.to_vec(),
        Compression::Gzip => gunzip(body, max_bytes)?,
        Compression::Zstd => unzstd(body, max_bytes)?,
        Compression::Deflate => inflate(body, max_bytes)?,
    };
    match encoding {
        Encoding::Protobuf => {
            T::decode(body.as_slice()).map_err(|e| IngestError::Malformed(format!("invalid {message} protobuf: {e}")))
        }
        Encoding::Json => {
            let mut value: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| IngestError::Malformed(format!("invalid {message} JSON: {e}")))?;
            numbers_from_strings(&mut value);
            serde_json::from_value(value).map_err(|e| IngestError::Malformed(format!("invalid {message} JSON: {e}")))
        }
    }
}

/// 64-bit integer fields that OTLP/JSON writes as strings (proto3's JSON mapping) but whose generated
/// deserializers in `opentelemetry-proto` read only as numbers.
const INT64_KEYS: [&str; 4] = ["asInt", "intValue", "count", "zeroCount"];

/// 64-bit fields whose generated deserializers read only strings, which OTLP/JSON decoders must also
/// accept as numbers.
const STRING_U64_KEYS: [&str; 4] = ["startTimeUnixNano", "endTimeUnixNano", "timeUnixNano", "observedTimeUnixNano"];

/// Turns those string integers (and `bucketCounts` entries) into JSON numbers, and numeric times into
/// strings, anywhere in the tree.
fn numbers_from_strings(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                let as_number = |v: &serde_json::Value| v.as_str().and_then(|s| s.parse::<i128>().ok());
                if STRING_U64_KEYS.contains(&key.as_str()) {
                    if let Some(n) = inner.as_u64() {
                        *inner = serde_json::Value::String(n.to_string());
                    }
                } else if INT64_KEYS.contains(&key.as_str()) {
                    match as_number(inner) {
                        Some(n) if i64::try_from(n).is_ok() => *inner = serde_json::json!(n as i64),
                        Some(n) if u64::try_from(n).is_ok() => *inner = serde_json::json!(n as u64),
                        _ => {}
                    }
                } else if key == "bucketCounts" {
                    if let serde_json::Value::Array(items) = inner {
                        for item in items.iter_mut() {
                            if let Some(n) = as_number(item).and_then(|n| u64::try_from(n).ok()) {
                                *item = serde_json::json!(n);
                            }
                        }
                    }
                }
                numbers_from_strings(inner);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(numbers_from_strings),
        _ => {}
    }
}

/// A 200 with the export response in the request's encoding.
pub(crate) fn reply<T: Message + serde::Serialize>(response: &T, encoding: Encoding) -> Response {
    let (body, content_type) = match encoding {
        Encoding::Protobuf => (response.encode_to_vec(), "application/x-protobuf"),
        Encoding::Json => (serde_json::to_vec(response).expect("responses serialize"), "application/json"),
    };
    let mut reply = (StatusCode::OK, body).into_response();
    reply.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    reply
}

/// `POST /v1/metrics`.
pub async fn handle_metrics(State(ingest): State<Ingest>, headers: HeaderMap, body: Bytes) -> Response {
    metrics::counter!("vigil_ingest_requests_received_total", "receiver" => "otlp_http").increment(1);
    metrics::counter!("vigil_ingest_bytes_received_total", "receiver" => "otlp_http").increment(body.len() as u64);
    let outcome = match body_format(&headers) {
        Ok(format) => ingest_metrics(&ingest, format, body).await.map(|response| reply(&response, format.0)),
        Err(error) => Err(error),
    };
    outcome.unwrap_or_else(|error| {
        metrics::counter!("vigil_ingest_requests_rejected_total", "receiver" => "otlp_http").increment(1);
        error.into_response()
    })
}

async fn ingest_metrics(
    ingest: &Ingest,
    format: (Encoding, Compression),
    body: Bytes,
) -> Result<ExportMetricsServiceResponse, IngestError> {
    let sink = ingest.metrics.clone();
    let max_bytes = ingest.limits.max_decompressed_bytes;
    tokio::task::spawn_blocking(move || {
        let request: ExportMetricsServiceRequest =
            decode_body(&body, format, max_bytes, "ExportMetricsServiceRequest")?;
        store_metrics(sink.as_ref(), request, "otlp_http")
    })
    .await
    .map_err(|e| IngestError::Unavailable(format!("ingest task failed: {e}")))?
}

/// Translates and appends a decoded request (blocking: the append waits for the WAL). Points storage
/// refused are reported in the partial success, as OTLP asks.
pub(crate) fn store_metrics(
    sink: &dyn vigil_tsdb::Appender,
    request: ExportMetricsServiceRequest,
    receiver: &'static str,
) -> Result<ExportMetricsServiceResponse, IngestError> {
    let mut translated = translate(request);
    let summary = sink.append(&translated.series).map_err(|error| match error {
        StorageError::Io { .. } => IngestError::Unavailable(error.to_string()),
        other => IngestError::Malformed(other.to_string()),
    })?;
    metrics::counter!("vigil_ingest_samples_accepted_total", "receiver" => receiver).increment(summary.accepted as u64);
    if let Some(first) = summary.rejected.first() {
        translated.reject(summary.rejected.len(), format!("{} for series {}", first.error, first.labels));
    }
    if translated.rejected > 0 {
        metrics::counter!("vigil_ingest_samples_rejected_total", "receiver" => receiver).increment(translated.rejected);
    }
    let partial_success = (translated.rejected > 0).then(|| ExportMetricsPartialSuccess {
        rejected_data_points: translated.rejected as i64,
        error_message: translated.first_error.unwrap_or_default(),
    });
    Ok(ExportMetricsServiceResponse { partial_success })
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::metrics::v1::{Gauge, Sum};

    use super::*;

    fn metric(name: &str, unit: &str, data: Data) -> Metric {
        Metric { name: name.into(), unit: unit.into(), data: Some(data), ..Default::default() }
    }

    #[test]
    fn names_follow_prometheus_translation() {
        let sum = |monotonic| {
            Data::Sum(Sum { is_monotonic: monotonic, aggregation_temporality: CUMULATIVE, ..Default::default() })
        };
        assert_eq!(
            metric_name(&metric("http.server.duration", "ms", Data::Gauge(Gauge::default())), false),
            "http_server_duration_milliseconds"
        );
        assert_eq!(metric_name(&metric("requests", "1", sum(true)), true), "requests_total");
        assert_eq!(
            metric_name(&metric("cpu.utilization", "1", Data::Gauge(Gauge::default())), false),
            "cpu_utilization_ratio"
        );
        assert_eq!(metric_name(&metric("rx", "By/s", Data::Gauge(Gauge::default())), false), "rx_bytes_per_second");
        assert_eq!(metric_name(&metric("queue_bytes", "By", Data::Gauge(Gauge::default())), false), "queue_bytes");
        assert_eq!(metric_name(&metric("jobs", "{job}", sum(true)), true), "jobs_total");
    }

    async fn post(body: Vec<u8>, content_type: &str) -> (StatusCode, Vec<u8>) {
        use tower::ServiceExt;
        let db = std::sync::Arc::new(vigil_tsdb::Db::in_memory(vigil_tsdb::DbOptions::default()));
        let ingest = Ingest::new(db, crate::IngestLimits::default());
        let request = axum::http::Request::post("/v1/metrics")
            .header(header::CONTENT_TYPE, content_type)
            .body(axum::body::Body::from(body))
            .unwrap();
        let response = ingest.otlp_http_routes().oneshot(request).await.unwrap();
        let status = response.status();
        (status, axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap().to_vec())
    }

    #[tokio::test]
    async fn gzip_bodies_are_accepted_and_bombs_refused() {
        use std::io::Write;
        let gzip = |bytes: &[u8]| {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(bytes).unwrap();
            encoder.finish().unwrap()
        };
        assert_eq!(gunzip(&gzip(b"hello"), 10).unwrap(), b"hello");
        assert!(matches!(gunzip(&gzip(&vec![0u8; 1 << 20]), 1024), Err(IngestError::TooLarge(_))));
        assert!(matches!(gunzip(b"not gzip", 1024), Err(IngestError::Malformed(_))));
        let zstd = |bytes: &[u8]| zstd::bulk::compress(bytes, 3).unwrap();
        assert_eq!(unzstd(&zstd(b"hello"), 10).unwrap(), b"hello");
        assert!(matches!(unzstd(&zstd(&vec![0u8; 1 << 20]), 1024), Err(IngestError::TooLarge(_))));
        assert!(matches!(unzstd(b"not zstd", 1024), Err(IngestError::Malformed(_))));
        let zlib = |bytes: &[u8]| {
            let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut encoder, bytes).unwrap();
            encoder.finish().unwrap()
        };
        assert_eq!(inflate(&zlib(b"hello"), 10).unwrap(), b"hello");
        assert!(matches!(inflate(&zlib(&vec![0u8; 1 << 20]), 1024), Err(IngestError::TooLarge(_))));
    }

    #[tokio::test]
    async fn bad_inputs_get_the_right_status() {
        let (status, body) = post(vec![0x0a, 0x05, 0x01], "application/x-protobuf").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(String::from_utf8_lossy(&body).contains("invalid ExportMetricsServiceRequest"));
        let (status, body) = post(b"{\"resourceMetrics\": [".to_vec(), "application/json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(String::from_utf8_lossy(&body).contains("invalid ExportMetricsServiceRequest JSON"));
        let (status, _) = post(Vec::new(), "text/plain").await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[tokio::test]
    async fn otlp_json_is_decoded_with_its_mapping_and_answered_in_json() {
        use tower::ServiceExt;
        // OTLP's JSON mapping: camelCase keys, 64-bit integers as strings.
        let now_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let body = format!(
            r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"cart"}}}}]}},
            "scopeMetrics":[{{"metrics":[{{"name":"queue.depth","gauge":{{"dataPoints":[
            {{"timeUnixNano":"{now_ns}","asInt":"7","attributes":[{{"key":"queue","value":{{"stringValue":"q1"}}}}]}}]}}}}]}}]}}]}}"#
        );
        let db = std::sync::Arc::new(vigil_tsdb::Db::in_memory(vigil_tsdb::DbOptions::default()));
        let ingest = Ingest::new(db.clone(), crate::IngestLimits::default());
        let request = axum::http::Request::post("/v1/metrics")
            .header(header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from(body))
            .unwrap();
        let response = ingest.otlp_http_routes().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let matchers = [vigil_tsdb::Matcher::equal("__name__", "queue_depth")];
        let series = vigil_tsdb::Queryable::select(db.as_ref(), &matchers, 0, i64::MAX).unwrap();
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].labels.get("job"), Some("cart"));
        assert_eq!(series[0].samples[0].v, 7.0);
    }

    #[tokio::test]
    async fn unsupported_points_are_reported_in_partial_success() {
        use opentelemetry_proto::tonic::metrics::v1::{
            ExponentialHistogram, ExponentialHistogramDataPoint, ResourceMetrics, ScopeMetrics,
        };
        let histogram = ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint::default(); 2],
            aggregation_temporality: CUMULATIVE,
        };
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![metric("latency", "s", Data::ExponentialHistogram(histogram))],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let (status, body) = post(request.encode_to_vec(), "application/x-protobuf").await;
        assert_eq!(status, StatusCode::OK);
        let response = ExportMetricsServiceResponse::decode(body.as_slice()).unwrap();
        let partial = response.partial_success.unwrap();
        assert_eq!(partial.rejected_data_points, 2);
        assert!(partial.error_message.contains("exponential histograms"), "{}", partial.error_message);
    }

    #[test]
    fn bounds_are_written_as_prometheus_floats() {
        assert_eq!(bound_text(1.0), "1.0");
        assert_eq!(bound_text(0.25), "0.25");
        assert_eq!(bound_text(f64::INFINITY), "+Inf");
    }
}
