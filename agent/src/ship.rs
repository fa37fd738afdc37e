//! Shipping: points become OTLP metric requests, queued in a bounded disk buffer under the state directory,
//! and sent to the server over OTLP/gRPC, oldest first, removed only once the server acknowledged them.
//!
//! When the server is down, batches accumulate on disk up to the size limit; beyond it the oldest are dropped
//! and counted (`vigil_agent_buffer_dropped_batches_total`). A batch is sent as the bytes it was buffered as,
//! without decoding it again; one that is corrupt on disk is refused by the server, and then dropped.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric,
    number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tokio::sync::watch;

use crate::{AgentError, Point};

/// Points of one job (`cadvisor`, `node`, ...), shipped as one OTLP resource.
#[derive(Debug, Clone)]
pub struct JobPoints {
    /// Becomes `service.name`, hence the `job` label.
    pub job: String,
    /// Becomes `service.instance.id`, hence the `instance` label; `None` for the node's name.
    pub instance: Option<String>,
    /// The points.
    pub points: Vec<Point>,
}

/// Encodes one collection as an OTLP request: a resource per job with `service.instance.id` = the node, a
/// `node` attribute on every point, `_total` names as cumulative monotonic sums and the rest as gauges.
pub fn encode(jobs: &[JobPoints], node: &str, time_unix_nano: u64) -> ExportMetricsServiceRequest {
    let resource_metrics = jobs
        .iter()
        .map(|job| ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    attribute("service.name", &job.job),
                    attribute("service.instance.id", job.instance.as_deref().unwrap_or(node)),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope { name: "vigil-agent".into(), ..Default::default() }),
                metrics: metrics_by_name(&job.points, node, time_unix_nano),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest { resource_metrics }
}

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_owned())) }),
    }
}

fn metrics_by_name(points: &[Point], node: &str, time_unix_nano: u64) -> Vec<Metric> {
    let mut sorted: Vec<&Point> = points.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted
        .chunk_by(|a, b| a.name == b.name)
        .map(|group| {
            let data_points: Vec<NumberDataPoint> = group
                .iter()
                .map(|point| NumberDataPoint {
                    attributes: point
                        .labels
                        .iter()
                        .map(|(k, v)| attribute(k, v))
                        .chain(std::iter::once(attribute("node", node)))
                        .collect(),
                    time_unix_nano,
                    value: Some(number_data_point::Value::AsDouble(point.value)),
                    // OTLP's "no recorded value" flag carries a staleness marker.
                    flags: u32::from(point.value.to_bits() == crate::STALE_NAN_BITS),
                    ..Default::default()
                })
                .collect();
            let name = group[0].name.clone();
            let data = if name.ends_with("_total") {
                metric::Data::Sum(Sum {
                    data_points,
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                })
            } else {
                metric::Data::Gauge(Gauge { data_points })
            };
            Metric { name, data: Some(data), ..Default::default() }
        })
        .collect()
}

/// Encoded, zstd-compressed requests as numbered files (`<sequence>.otlp`), oldest first, bounded in total
/// size. The directory is listed once, on open; afterwards the buffer keeps its own index of files and sizes.
pub struct DiskBuffer<T = ExportMetricsServiceRequest> {
    /// Kept across batches: a compression context is costly to set up.
    compressor: zstd::bulk::Compressor<'static>,
    /// Woken at every push, so the shipper waits for batches instead of polling.
    pushed: Arc<tokio::sync::Notify>,
    dir: PathBuf,
    max_bytes: u64,
    next_sequence: u64,
    /// Batch files and their sizes, oldest first.
    batches: VecDeque<(PathBuf, u64)>,
    total_bytes: u64,
    request: std::marker::PhantomData<T>,
}

impl<T: Message + Default> DiskBuffer<T> {
    /// Opens (creating) the buffer directory, keeping batches a previous run left; partial writes are removed.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, AgentError> {
        let read_error = |source| AgentError::Read { path: dir.to_owned(), source };
        std::fs::create_dir_all(dir).map_err(read_error)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_error)? {
            let entry = entry.map_err(read_error)?;
            let path = entry.path();
            if path.extension().is_some_and(|ext| ext == "tmp") {
                let _ = std::fs::remove_file(path);
                continue;
            }
            let sequence = path.file_name().and_then(|n| n.to_str()?.strip_suffix(".otlp")?.parse::<u64>().ok());
            if let Some(sequence) = sequence {
                found.push((sequence, path, entry.metadata().map_err(read_error)?.len()));
            }
        }
        found.sort();
        let next_sequence = found.last().map_or(0, |(sequence, _, _)| sequence + 1);
        let total_bytes = found.iter().map(|(_, _, size)| size).sum();
        let batches = found.into_iter().map(|(_, path, size)| (path, size)).collect();
        let compressor = zstd::bulk::Compressor::new(COMPRESSION_LEVEL).map_err(read_error)?;
        Ok(DiskBuffer {
            compressor,
            pushed: Arc::default(),
            dir: dir.to_owned(),
            max_bytes,
            next_sequence,
            batches,
            total_bytes,
            request: std::marker::PhantomData,
        })
    }

    /// Appends a batch (written to a temporary name, then renamed), then drops the oldest batches while the
    /// buffer is over its size limit. Returns how many were dropped.
    pub fn push(&mut self, request: &T) -> Result<usize, AgentError> {
        self.push_encoded_keeping(&request.encode_to_vec())?;
        let mut dropped = 0;
        while self.total_bytes > self.max_bytes && self.batches.len() > 1 {
            self.drop_oldest();
            dropped += 1;
        }
        if dropped > 0 {
            metrics::counter!("vigil_agent_buffer_dropped_batches_total").increment(dropped as u64);
        }
        metrics::gauge!("vigil_agent_buffer_bytes").set(self.total_bytes as f64);
        Ok(dropped)
    }

    /// Appends a batch already encoded (a `T` in protobuf) and drops nothing, even over the size limit:
    /// for a producer that checks [`DiskBuffer::is_full`] before reading more, and must not lose what it
    /// read (log tailing).
    pub fn push_encoded_keeping(&mut self, request: &[u8]) -> Result<(), AgentError> {
        let path = self.dir.join(format!("{:020}.otlp", self.next_sequence));
        let temporary = path.with_extension("tmp");
        let write_error = |source| AgentError::Read { path: temporary.clone(), source };
        let bytes = self.compressor.compress(request).map_err(write_error)?;
        std::fs::write(&temporary, &bytes).map_err(write_error)?;
        std::fs::rename(&temporary, &path).map_err(write_error)?;
        self.next_sequence += 1;
        self.batches.push_back((path, bytes.len() as u64));
        self.total_bytes += bytes.len() as u64;
        metrics::gauge!("vigil_agent_buffer_bytes").set(self.total_bytes as f64);
        self.pushed.notify_one();
        Ok(())
    }

    fn drop_oldest(&mut self) {
        if let Some((path, size)) = self.batches.pop_front() {
            self.total_bytes -= size;
            let _ = std::fs::remove_file(path);
        }
    }

    /// The oldest batch: its file and its encoded request, zstd-compressed (a batch an earlier version
    /// buffered uncompressed is compressed now).
    pub fn oldest(&mut self) -> Result<Option<(PathBuf, bytes::Bytes)>, AgentError> {
        let Some((path, _)) = self.batches.front() else { return Ok(None) };
        let error = |source| AgentError::Read { path: path.clone(), source };
        let mut bytes = std::fs::read(path).map_err(error)?;
        if !bytes.starts_with(&ZSTD_MAGIC) {
            bytes = self.compressor.compress(&bytes).map_err(error)?;
        }
        Ok(Some((path.clone(), bytes.into())))
    }

    /// Removes a batch the server has taken (or refused for good).
    pub fn remove(&mut self, path: &Path) {
        if let Some(index) = self.batches.iter().position(|(p, _)| p == path) {
            if let Some((path, size)) = self.batches.remove(index) {
                self.total_bytes -= size;
                let _ = std::fs::remove_file(path);
            }
        }
        metrics::gauge!("vigil_agent_buffer_bytes").set(self.total_bytes as f64);
    }

    /// True when the waiting batches take the whole size limit: a producer that must not lose data (log
    /// tailing) waits instead of pushing, since a push would drop the oldest batch.
    pub fn is_full(&self) -> bool {
        self.total_bytes >= self.max_bytes
    }

    /// Number of batches waiting.
    pub fn len(&self) -> usize {
        self.batches.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
}

/// Where and how batches go.
#[derive(Debug, Clone)]
pub struct ShipTarget {
    /// The server's OTLP/gRPC endpoint, `http://host:4317` or `https://host:4317`.
    pub endpoint: String,
    /// Bearer token for the server's ingest scope.
    pub token: Option<String>,
    /// PEM CA certificate(s) trusted for an `https://` endpoint, beside the public roots.
    pub ca_pem: Option<Vec<u8>>,
}

impl ShipTarget {
    async fn connect(&self) -> Result<tonic::transport::Channel, String> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(self.endpoint.clone()).map_err(|e| e.to_string())?;
        if self.endpoint.starts_with("https://") {
            let mut tls = tonic::transport::ClientTlsConfig::new().with_webpki_roots();
            if let Some(ca) = &self.ca_pem {
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(ca));
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
        }
        endpoint
            .connect()
            .await
            .map_err(|e| format!("{e} ({})", std::error::Error::source(&e).map_or(String::new(), |s| s.to_string())))
    }
}

/// Retry delays: doubling from 500 ms to 30 s, or what the server asked for.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Sends buffered batches to `endpoint` (`http://host:4317`) until `stop`, oldest first. A batch leaves the
/// buffer when the server acknowledged it, or refused it as invalid (retrying cannot help; counted).
pub async fn run_shipper<T: OtlpRequest>(
    buffer: Arc<Mutex<DiskBuffer<T>>>,
    target: ShipTarget,
    mut stop: watch::Receiver<bool>,
) {
    let mut client: Option<tonic::transport::Channel> = None;
    let mut backoff = FIRST_BACKOFF;
    let pushed = buffer.lock().map(|b| b.pushed.clone()).unwrap_or_default();
    loop {
        if *stop.borrow() {
            return;
        }
        let reader = buffer.clone();
        let next = tokio::task::spawn_blocking(move || reader.lock().ok().map(|mut b| b.oldest())).await;
        let (path, request) = match next {
            Ok(Some(Ok(Some(batch)))) => batch,
            Ok(Some(Ok(None))) => {
                // Empty: wait for a push (a push since the check left a permit, so none is missed).
                tokio::select! {
                    _ = pushed.notified() => {}
                    _ = stop.changed() => {}
                    _ = tokio::time::sleep(MAX_BACKOFF) => {}
                }
                continue;
            }
            Ok(Some(Err(error))) => {
                tracing::error!(%error, "cannot read the disk buffer");
                let _ = tokio::time::timeout(MAX_BACKOFF, stop.changed()).await;
                continue;
            }
            Ok(None) | Err(_) => return,
        };
        let outcome = send::<T>(&mut client, &target, request).await;
        let delay = match outcome {
            Sent::Acknowledged => {
                remove_batch(&buffer, path).await;
                metrics::counter!("vigil_agent_batches_shipped_total").increment(1);
                backoff = FIRST_BACKOFF;
                continue;
            }
            Sent::Refused(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "server refused a batch; dropping it");
                metrics::counter!("vigil_agent_batches_refused_total").increment(1);
                remove_batch(&buffer, path).await;
                continue;
            }
            Sent::RetryLater(reason, asked) => {
                tracing::debug!(%reason, "shipping failed; will retry");
                metrics::counter!("vigil_agent_ship_retries_total").increment(1);
                let delay = asked.unwrap_or(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                delay
            }
        };
        let _ = tokio::time::timeout(delay, stop.changed()).await;
    }
}

async fn remove_batch<T: OtlpRequest>(buffer: &Arc<Mutex<DiskBuffer<T>>>, path: PathBuf) {
    let buffer = buffer.clone();
    let _ = tokio::task::spawn_blocking(move || buffer.lock().ok().map(|mut b| b.remove(&path))).await;
}

enum Sent {
    Acknowledged,
    Refused(tonic::Status),
    /// Why, and the delay the server asked for, if any.
    RetryLater(String, Option<Duration>),
}

/// An OTLP export request the shipper can send: metrics or logs.
pub trait OtlpRequest: Message + Default + Send + 'static {
    /// The gRPC method that takes it.
    const METHOD: &'static str;
    /// What the method answers.
    type Response: Message + Default + Send + 'static;
}

/// How batches are compressed, on disk and on the wire: zstd, which Vigil's and the OpenTelemetry Collector's
/// OTLP/gRPC receivers accept, at its fastest level (gzip's deflate was an eighth of the agent's CPU, and
/// zstd's default level three times level 1's cost for logs).
const COMPRESSION_LEVEL: i32 = 1;

/// The first bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

impl OtlpRequest for ExportMetricsServiceRequest {
    const METHOD: &'static str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    type Response = ExportMetricsServiceResponse;
}

impl OtlpRequest for ExportLogsServiceRequest {
    const METHOD: &'static str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
    type Response = ExportLogsServiceResponse;
}

async fn send<T: OtlpRequest>(
    client: &mut Option<tonic::transport::Channel>,
    target: &ShipTarget,
    request: bytes::Bytes,
) -> Sent {
    if client.is_none() {
        match target.connect().await {
            Ok(channel) => *client = Some(channel),
            Err(error) => return Sent::RetryLater(format!("cannot connect to {}: {error}", target.endpoint), None),
        }
    }
    let Some(channel) = client.clone() else { return Sent::RetryLater("no connection".into(), None) };
    let authorization = target.token.as_ref().map(|token| format!("Bearer {token}"));
    match crate::wire::unary(channel, T::METHOD, request, authorization.as_deref(), Duration::from_secs(30)).await {
        Ok(()) => Sent::Acknowledged,
        Err(status) => classify(status, client),
    }
}

/// OTLP's retryable codes retry (with the server's `grpc-retry-pushback-ms` hint when given), and so do
/// `UNKNOWN` and `INTERNAL`, which is how tonic reports a connection that broke mid-call: dropping the batch
/// then would lose data the server never stored. Token refusals retry too (with backoff): the data waits
/// for the configuration to be fixed. The rest refuse.
fn classify(status: tonic::Status, client: &mut Option<tonic::transport::Channel>) -> Sent {
    use tonic::Code;
    let retryable = matches!(
        status.code(),
        Code::Unavailable
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::OutOfRange
            | Code::DataLoss
            | Code::Unknown
            | Code::Internal
            // A wrong or missing token is a configuration error that will be fixed: keep the data meanwhile.
            | Code::Unauthenticated
            | Code::PermissionDenied
    ) || (status.code() == Code::ResourceExhausted
        && status.metadata().get("grpc-retry-pushback-ms").is_some());
    if !retryable {
        return Sent::Refused(status);
    }
    if matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Internal) {
        *client = None;
    }
    let asked = status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .map(Duration::from_millis);
    Sent::RetryLater(status.to_string(), asked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(name: &str, value: f64) -> Point {
        Point { name: name.into(), labels: vec![("id".into(), "/".into())], value }
    }

    #[test]
    fn staleness_markers_travel_as_no_recorded_value() {
        let jobs = [JobPoints {
            job: "app".into(),
            instance: Some("10.0.0.1:80".into()),
            points: vec![point("gone", f64::from_bits(crate::STALE_NAN_BITS)), point("here", 1.0)],
        }];
        let request = encode(&jobs, "node-a", 1);
        let resource = &request.resource_metrics[0];
        assert_eq!(resource.resource.as_ref().unwrap().attributes[1].value, attribute("x", "10.0.0.1:80").value);
        let flags: Vec<(String, u32)> = resource.scope_metrics[0]
            .metrics
            .iter()
            .map(|m| match &m.data {
                Some(metric::Data::Gauge(gauge)) => (m.name.clone(), gauge.data_points[0].flags),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(flags, [("gone".to_owned(), 1), ("here".to_owned(), 0)]);
    }

    #[test]
    fn counters_become_monotonic_sums_and_the_rest_gauges() {
        let jobs = [JobPoints {
            job: "cadvisor".into(),
            instance: None,
            points: vec![point("container_cpu_usage_seconds_total", 5.0), point("container_memory_rss", 7.0)],
        }];
        let request = encode(&jobs, "node-a", 1_000);
        let resource = &request.resource_metrics[0];
        let attributes = &resource.resource.as_ref().unwrap().attributes;
        assert_eq!(attributes[0].key, "service.name");
        let metrics = &resource.scope_metrics[0].metrics;
        assert_eq!(metrics.len(), 2);
        let Some(metric::Data::Sum(sum)) = &metrics[0].data else { panic!("{:?}", metrics[0]) };
        assert!(sum.is_monotonic);
        assert_eq!(sum.data_points[0].attributes.last().unwrap().key, "node");
        assert!(matches!(metrics[1].data, Some(metric::Data::Gauge(_))));
    }

    #[test]
    fn the_buffer_keeps_order_survives_reopening_and_drops_oldest_beyond_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let batch = |value: f64| {
            encode(&[JobPoints { job: "node".into(), instance: None, points: vec![point("x", value)] }], "n", 1)
        };
        let mut buffer = DiskBuffer::<ExportMetricsServiceRequest>::open(dir.path(), 1 << 20).unwrap();
        for value in [1.0, 2.0, 3.0] {
            assert_eq!(buffer.push(&batch(value)).unwrap(), 0);
        }
        std::fs::write(dir.path().join("00000000000000000099.tmp"), b"partial").unwrap();
        let mut buffer = DiskBuffer::<ExportMetricsServiceRequest>::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(buffer.len(), 3);
        let (path, first) = buffer.oldest().unwrap().unwrap();
        assert_eq!(unzstd(&first), batch(1.0).encode_to_vec(), "sent as buffered");
        buffer.remove(&path);
        assert_eq!(unzstd(&buffer.oldest().unwrap().unwrap().1), batch(2.0).encode_to_vec());
        assert!(!dir.path().join("00000000000000000099.tmp").exists(), "partial writes are cleaned up");

        let size = std::fs::metadata(path.with_file_name("00000000000000000002.otlp")).unwrap().len();
        let mut small = DiskBuffer::open(dir.path(), size * 3).unwrap();
        let dropped: usize = (0..5).map(|n| small.push(&batch(10.0 + n as f64)).unwrap()).sum();
        assert_eq!(small.len(), 3);
        assert_eq!(dropped, 4, "two old batches and two new ones beyond the limit");
        assert_eq!(unzstd(&small.oldest().unwrap().unwrap().1), batch(12.0).encode_to_vec());

        // A batch buffered uncompressed (by an earlier version) is compressed when it is sent.
        let old = tempfile::tempdir().unwrap();
        std::fs::write(old.path().join("00000000000000000000.otlp"), batch(5.0).encode_to_vec()).unwrap();
        let mut reopened = DiskBuffer::<ExportMetricsServiceRequest>::open(old.path(), 1 << 20).unwrap();
        assert_eq!(unzstd(&reopened.oldest().unwrap().unwrap().1), batch(5.0).encode_to_vec());
    }

    fn unzstd(bytes: &[u8]) -> Vec<u8> {
        zstd::bulk::decompress(bytes, 1 << 20).unwrap()
    }
}
