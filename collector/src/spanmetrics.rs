//! Metrics derived from spans, with the names and labels Grafana's service map and RED views read
//! (Tempo's metrics generator): per-span calls and latency, and a service graph from client/server span
//! pairs. Counters accumulate in memory and are written to the metrics store as cumulative series at
//! every [`SpanMetrics::flush`]; a restart starts them from zero, which `rate()` reads as a counter reset.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use vigil_tsdb::traces::{AttrValue, Resource, Span, SpanId, SpanKind, StatusCode, TraceId, attribute};
use vigil_tsdb::{Labels, METRIC_NAME, MetricMetadata, Sample, SeriesSamples};

/// Tempo's default span-latency buckets, seconds.
const LATENCY_BUCKETS: [f64; 14] =
    [0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384];
/// Tempo's default service-graph buckets, seconds.
const GRAPH_BUCKETS: [f64; 8] = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8];
/// How long half of a client/server pair waits for the other half.
const PAIR_WAIT: Duration = Duration::from_secs(10);
/// Most halves waiting at once; more are dropped (and counted).
const MAX_PENDING: usize = 10_000;

/// A cumulative histogram.
#[derive(Debug, Clone, Default)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; bounds.len()];
        }
        for (bucket, bound) in self.buckets.iter_mut().zip(bounds) {
            if value <= *bound {
                *bucket += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EdgeKey {
    client: String,
    server: String,
    connection_type: &'static str,
}

#[derive(Debug, Default)]
struct Edge {
    requests: u64,
    failed: u64,
    server_seconds: Histogram,
    client_seconds: Histogram,
}

/// What the service graph needs of a span.
#[derive(Debug, Clone)]
struct Half {
    resource: Arc<Resource>,
    seconds: f64,
    failed: bool,
    /// For a client: the service or database it called, when the span names one.
    peer: Option<(String, &'static str)>,
    messaging: bool,
    since: Instant,
}

impl Half {
    fn service(&self) -> String {
        self.resource.service.clone()
    }
}

/// What the derived metrics need of one span, taken before the span is handed to storage.
#[derive(Debug, Clone)]
pub struct Observation {
    name: String,
    kind: SpanKind,
    status: StatusCode,
    trace_id: TraceId,
    span_id: SpanId,
    parent_span_id: Option<SpanId>,
    half: Half,
}

/// Database node name: the first of these attributes present.
const DATABASE_NAME_KEYS: [&str; 4] = ["peer.service", "server.address", "db.namespace", "db.name"];

fn text(span: &Span, key: &str) -> Option<String> {
    attribute(&span.attributes, key).map(AttrValue::text).filter(|t| !t.is_empty())
}

/// The virtual server a client span names: a database or a `peer.service`.
fn peer_of(span: &Span) -> Option<(String, &'static str)> {
    let database = ["db.system", "db.name", "db.namespace"].iter().any(|k| text(span, k).is_some());
    if database {
        let name = DATABASE_NAME_KEYS.iter().find_map(|k| text(span, k)).or_else(|| text(span, "db.system"))?;
        return Some((name, "database"));
    }
    text(span, "peer.service").map(|name| (name, "virtual_node"))
}

/// Derives what the metrics need from spans about to be stored.
pub fn observations(spans: &[Span]) -> Vec<Observation> {
    let now = Instant::now();
    spans
        .iter()
        .map(|span| Observation {
            name: span.name.clone(),
            kind: span.kind,
            status: span.status,
            trace_id: span.trace_id,
            span_id: span.span_id,
            parent_span_id: span.parent_span_id,
            half: Half {
                resource: span.resource.clone(),
                seconds: span.duration_ns() as f64 / 1e9,
                failed: span.status == StatusCode::Error,
                peer: matches!(span.kind, SpanKind::Client).then(|| peer_of(span)).flatten(),
                messaging: matches!(span.kind, SpanKind::Producer | SpanKind::Consumer),
                since: now,
            },
        })
        .collect()
}

/// Latency of one service's spans of one name, by kind and status.
type CallsByKind = HashMap<(SpanKind, StatusCode), Histogram>;

#[derive(Default)]
struct State {
    /// Service → span name → (kind, status) → latency.
    calls: HashMap<String, HashMap<String, CallsByKind>>,
    edges: HashMap<EdgeKey, Edge>,
    unpaired: HashMap<EdgeKey, u64>,
    dropped: HashMap<EdgeKey, u64>,
    /// Client (or producer) halves by (trace, their span id).
    clients: HashMap<(TraceId, SpanId), Half>,
    /// Server (or consumer) halves by (trace, their parent's span id).
    servers: HashMap<(TraceId, SpanId), Half>,
}

impl State {
    /// Counts a span in its calls and latency series (allocating only for a new service or name).
    fn count_call(&mut self, observation: &Observation) {
        let service = &observation.half.resource.service;
        if !self.calls.contains_key(service) {
            self.calls.insert(service.clone(), HashMap::new());
        }
        let names = self.calls.get_mut(service).expect("inserted above");
        if !names.contains_key(&observation.name) {
            names.insert(observation.name.clone(), HashMap::new());
        }
        let by_kind = names.get_mut(&observation.name).expect("inserted above");
        by_kind
            .entry((observation.kind, observation.status))
            .or_default()
            .observe(&LATENCY_BUCKETS, observation.half.seconds);
    }

    fn edge(&mut self, client: &Half, server: &Half, connection_type: &'static str) {
        let key = EdgeKey { client: client.service(), server: server.service(), connection_type };
        let edge = self.edges.entry(key).or_default();
        edge.requests += 1;
        if client.failed || server.failed {
            edge.failed += 1;
        }
        edge.server_seconds.observe(&GRAPH_BUCKETS, server.seconds);
        edge.client_seconds.observe(&GRAPH_BUCKETS, client.seconds);
    }

    /// A virtual edge with only one side observed.
    fn virtual_edge(
        &mut self,
        client: String,
        server: String,
        connection_type: &'static str,
        half: &Half,
        server_side: bool,
    ) {
        let edge = self.edges.entry(EdgeKey { client, server, connection_type }).or_default();
        edge.requests += 1;
        if half.failed {
            edge.failed += 1;
        }
        let histogram = if server_side { &mut edge.server_seconds } else { &mut edge.client_seconds };
        histogram.observe(&GRAPH_BUCKETS, half.seconds);
    }

    fn wait(&mut self, clients: bool, key: (TraceId, SpanId), half: Half) {
        let (pending, edge) = if clients {
            (&mut self.clients, EdgeKey { client: half.service(), server: String::new(), connection_type: "" })
        } else {
            (&mut self.servers, EdgeKey { client: String::new(), server: half.service(), connection_type: "" })
        };
        if pending.len() >= MAX_PENDING {
            *self.dropped.entry(edge).or_default() += 1;
            return;
        }
        pending.insert(key, half);
    }

    fn pair(&mut self, observation: Observation) {
        let Observation { kind, trace_id, span_id, parent_span_id, half, .. } = observation;
        match kind {
            SpanKind::Client | SpanKind::Producer => match self.servers.remove(&(trace_id, span_id)) {
                Some(server) => self.edge(&half, &server, connection_type(&half, &server)),
                None => self.wait(true, (trace_id, span_id), half),
            },
            SpanKind::Server | SpanKind::Consumer => match parent_span_id {
                None => self.virtual_edge("user".into(), half.service(), "virtual_node", &half, true),
                Some(parent) => match self.clients.remove(&(trace_id, parent)) {
                    Some(client) => self.edge(&client, &half, connection_type(&client, &half)),
                    None => self.wait(false, (trace_id, parent), half),
                },
            },
            _ => {}
        }
    }

    /// Halves whose pair did not come in time: virtual edges where the client names its server, else unpaired.
    fn expire(&mut self, now: Instant) {
        let expired = |half: &Half| now.duration_since(half.since) >= PAIR_WAIT;
        let clients: Vec<_> = self.clients.iter().filter(|(_, h)| expired(h)).map(|(k, _)| *k).collect();
        for key in clients {
            let half = self.clients.remove(&key).expect("listed");
            match half.peer.clone() {
                Some((server, connection_type)) => {
                    self.virtual_edge(half.service(), server, connection_type, &half, false)
                }
                None => {
                    let edge = EdgeKey { client: half.service(), server: String::new(), connection_type: "" };
                    *self.unpaired.entry(edge).or_default() += 1;
                }
            }
        }
        let servers: Vec<_> = self.servers.iter().filter(|(_, h)| expired(h)).map(|(k, _)| *k).collect();
        for key in servers {
            let half = self.servers.remove(&key).expect("listed");
            let edge = EdgeKey { client: String::new(), server: half.service(), connection_type: "" };
            *self.unpaired.entry(edge).or_default() += 1;
        }
    }
}

fn connection_type(client: &Half, server: &Half) -> &'static str {
    if client.messaging && server.messaging {
        return "messaging_system";
    }
    match &client.peer {
        Some((_, "database")) => "database",
        _ => "",
    }
}

/// The span-metrics and service-graph generator.
#[derive(Default)]
pub struct SpanMetrics {
    state: Mutex<State>,
}

fn kind_label(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Unspecified => "SPAN_KIND_UNSPECIFIED",
        SpanKind::Internal => "SPAN_KIND_INTERNAL",
        SpanKind::Server => "SPAN_KIND_SERVER",
        SpanKind::Client => "SPAN_KIND_CLIENT",
        SpanKind::Producer => "SPAN_KIND_PRODUCER",
        SpanKind::Consumer => "SPAN_KIND_CONSUMER",
    }
}

fn status_label(status: StatusCode) -> &'static str {
    match status {
        StatusCode::Unset => "STATUS_CODE_UNSET",
        StatusCode::Ok => "STATUS_CODE_OK",
        StatusCode::Error => "STATUS_CODE_ERROR",
    }
}

/// Series being built for one flush.
struct Out {
    t: i64,
    series: Vec<SeriesSamples>,
}

impl Out {
    fn push(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let all = labels.iter().copied().chain([(METRIC_NAME, name)]);
        if let Ok(labels) = Labels::new(all.filter(|(_, v)| !v.is_empty())) {
            self.series.push(SeriesSamples { labels, samples: vec![Sample { t: self.t, v: value }] });
        }
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], bounds: &[f64], histogram: &Histogram) {
        for (bound, count) in bounds.iter().zip(&histogram.buckets) {
            let le = bound.to_string();
            let with_le: Vec<(&str, &str)> = labels.iter().copied().chain([("le", le.as_str())]).collect();
            self.push(&format!("{name}_bucket"), &with_le, *count as f64);
        }
        let with_inf: Vec<(&str, &str)> = labels.iter().copied().chain([("le", "+Inf")]).collect();
        self.push(&format!("{name}_bucket"), &with_inf, histogram.count as f64);
        self.push(&format!("{name}_sum"), labels, histogram.sum);
        self.push(&format!("{name}_count"), labels, histogram.count as f64);
    }
}

impl SpanMetrics {
    /// Counts stored spans.
    pub fn observe(&self, observations: Vec<Observation>) {
        let mut state = self.state.lock();
        for observation in observations {
            state.count_call(&observation);
            state.pair(observation);
        }
    }

    /// Every series at its current value, stamped `now_ms`; also settles pairs that waited too long.
    pub fn flush(&self, now_ms: i64) -> Vec<SeriesSamples> {
        let mut state = self.state.lock();
        state.expire(Instant::now());
        let mut out = Out { t: now_ms, series: Vec::new() };
        for (service, names) in &state.calls {
            for (name, by_kind) in names {
                for ((kind, status), histogram) in by_kind {
                    let labels = [
                        ("service", service.as_str()),
                        ("span_name", name.as_str()),
                        ("span_kind", kind_label(*kind)),
                        ("status_code", status_label(*status)),
                    ];
                    out.push("traces_spanmetrics_calls_total", &labels, histogram.count as f64);
                    out.histogram("traces_spanmetrics_latency", &labels, &LATENCY_BUCKETS, histogram);
                }
            }
        }
        for (key, edge) in &state.edges {
            let labels = edge_labels(key);
            out.push("traces_service_graph_request_total", &labels, edge.requests as f64);
            out.push("traces_service_graph_request_failed_total", &labels, edge.failed as f64);
            for (name, histogram) in [
                ("traces_service_graph_request_server_seconds", &edge.server_seconds),
                ("traces_service_graph_request_client_seconds", &edge.client_seconds),
            ] {
                if histogram.count > 0 {
                    out.histogram(name, &labels, &GRAPH_BUCKETS, histogram);
                }
            }
        }
        for (name, counts) in [
            ("traces_service_graph_unpaired_spans_total", &state.unpaired),
            ("traces_service_graph_dropped_spans_total", &state.dropped),
        ] {
            for (key, count) in counts {
                out.push(name, &edge_labels(key), *count as f64);
            }
        }
        out.series
    }

    /// Type and help of the derived metric families.
    pub fn metadata() -> Vec<(String, MetricMetadata)> {
        let family = |name: &str, metric_type: &str, help: &str, unit: &str| {
            let metadata = MetricMetadata { metric_type: metric_type.into(), help: help.into(), unit: unit.into() };
            (name.to_owned(), metadata)
        };
        vec![
            family("traces_spanmetrics_calls_total", "counter", "Spans by service, name, kind and status.", ""),
            family("traces_spanmetrics_latency", "histogram", "Span durations.", "seconds"),
            family("traces_service_graph_request_total", "counter", "Requests between two services.", ""),
            family("traces_service_graph_request_failed_total", "counter", "Failed requests between two services.", ""),
            family(
                "traces_service_graph_request_server_seconds",
                "histogram",
                "Request durations seen by the server.",
                "seconds",
            ),
            family(
                "traces_service_graph_request_client_seconds",
                "histogram",
                "Request durations seen by the client.",
                "seconds",
            ),
            family("traces_service_graph_unpaired_spans_total", "counter", "Spans whose pair never came.", ""),
            family("traces_service_graph_dropped_spans_total", "counter", "Spans dropped while waiting.", ""),
        ]
    }
}

fn edge_labels(key: &EdgeKey) -> [(&str, &str); 3] {
    [("client", key.client.as_str()), ("server", key.server.as_str()), ("connection_type", key.connection_type)]
}

#[cfg(test)]
mod tests {
    use vigil_tsdb::traces::Attribute;

    use super::*;

    fn span(service: &str, id: u8, parent: Option<u8>, kind: SpanKind, ms: i64, status: StatusCode) -> Span {
        Span {
            trace_id: [7; 16],
            span_id: [id; 8],
            parent_span_id: parent.map(|p| [p; 8]),
            trace_state: String::new(),
            flags: 0,
            name: format!("{service}-op"),
            kind,
            status,
            status_message: String::new(),
            start_ns: 0,
            end_ns: ms * 1_000_000,
            resource: Arc::new(Resource { service: service.into(), ..Resource::default() }),
            attributes: vec![],
            events: vec![],
            links: vec![],
        }
    }

    fn value(series: &[SeriesSamples], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        series
            .iter()
            .find(|s| {
                s.labels.get(METRIC_NAME) == Some(name) && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            })
            .map(|s| s.samples[0].v)
    }

    #[test]
    fn client_server_pairs_make_edges_and_every_span_is_counted() {
        let metrics = SpanMetrics::default();
        let spans = vec![
            span("frontend", 1, None, SpanKind::Server, 300, StatusCode::Unset),
            span("frontend", 2, Some(1), SpanKind::Client, 200, StatusCode::Error),
            // The server half arrives in a later batch.
        ];
        metrics.observe(observations(&spans));
        metrics.observe(observations(&[span("cart", 3, Some(2), SpanKind::Server, 150, StatusCode::Error)]));
        let mut db_call = span("cart", 4, Some(3), SpanKind::Client, 20, StatusCode::Unset);
        db_call.attributes = vec![Attribute::str("db.system", "postgresql"), Attribute::str("db.name", "orders")];
        metrics.observe(observations(&[db_call]));
        let series = metrics.flush(1_000);
        let edge = [("client", "frontend"), ("server", "cart")];
        assert_eq!(value(&series, "traces_service_graph_request_total", &edge), Some(1.0));
        assert_eq!(value(&series, "traces_service_graph_request_failed_total", &edge), Some(1.0));
        let le = [("client", "frontend"), ("server", "cart"), ("le", "0.2")];
        assert_eq!(value(&series, "traces_service_graph_request_server_seconds_bucket", &le), Some(1.0));
        assert_eq!(value(&series, "traces_service_graph_request_client_seconds_bucket", &le), Some(1.0));
        let user = [("client", "user"), ("server", "frontend"), ("connection_type", "virtual_node")];
        assert_eq!(value(&series, "traces_service_graph_request_total", &user), Some(1.0));
        let calls = [("service", "cart"), ("span_kind", "SPAN_KIND_SERVER"), ("status_code", "STATUS_CODE_ERROR")];
        assert_eq!(value(&series, "traces_spanmetrics_calls_total", &calls), Some(1.0));
        let bucket = [("service", "frontend"), ("span_kind", "SPAN_KIND_SERVER"), ("le", "0.256")];
        assert_eq!(value(&series, "traces_spanmetrics_latency_bucket", &bucket), Some(0.0));
        let bucket = [("service", "frontend"), ("span_kind", "SPAN_KIND_SERVER"), ("le", "0.512")];
        assert_eq!(value(&series, "traces_spanmetrics_latency_bucket", &bucket), Some(1.0));
        // The database call waits for a server that never comes, then becomes a virtual database edge.
        let database = [("client", "cart"), ("server", "orders"), ("connection_type", "database")];
        assert_eq!(value(&series, "traces_service_graph_request_total", &database), None);
        {
            let mut state = metrics.state.lock();
            state.expire(Instant::now() + PAIR_WAIT);
        }
        let series = metrics.flush(2_000);
        assert_eq!(value(&series, "traces_service_graph_request_total", &database), Some(1.0));
    }
}
