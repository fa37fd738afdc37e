//! OTLP/gRPC load generator for the trace bench (`bench/traces.py`): realistic traces from ten services
//! (20–200 spans each: HTTP server and client pairs, database calls, internal work, 2% errors) sent as
//! `ExportTraceServiceRequest`s over several connections. Deterministic for a seed; retries a request
//! refused as `UNAVAILABLE`. Prints a JSON summary, with sample trace ids for the query phase.
//!
//! usage: trace_load ENDPOINT SPANS [--concurrency 4] [--seed 1]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

const SERVICES: [&str; 10] =
    ["frontend", "checkout", "cart", "payments", "shipping", "catalog", "recommendation", "currency", "email", "ads"];
const ROUTES: [&str; 8] =
    ["/", "/cart", "/checkout", "/product/{id}", "/api/items", "/login", "/search", "/orders/{id}"];
const TABLES: [&str; 5] = ["orders", "carts", "products", "users", "payments"];
/// Traces per request.
const TRACES_PER_REQUEST: usize = 8;

/// xorshift64*: deterministic and fast.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A duration in ns, log-uniform between 100 µs and 2 s.
    fn duration(&mut self) -> u64 {
        let exponent = 5.0 + (self.below(10_000) as f64 / 10_000.0) * 4.3;
        10f64.powf(exponent) as u64
    }
}

fn string(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }) }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::IntValue(value)) }) }
}

fn resource(service: &str, replica: u64) -> Resource {
    Resource {
        attributes: vec![
            string("service.name", service),
            string("service.version", "1.4.2"),
            string("service.namespace", "shop"),
            string("k8s.namespace.name", "shop"),
            string("k8s.pod.name", format!("{service}-7d9f8b-{replica}")),
            string("host.name", format!("node-{}", replica % 3)),
            string("telemetry.sdk.language", "go"),
            string("telemetry.sdk.name", "opentelemetry"),
            string("telemetry.sdk.version", "1.28.0"),
        ],
        ..Default::default()
    }
}

/// One generated trace: spans by service index.
struct TraceBuilder<'a> {
    rng: &'a mut Rng,
    trace_id: Vec<u8>,
    spans: Vec<(usize, Span)>,
    budget: usize,
}

impl TraceBuilder<'_> {
    fn span(
        &mut self,
        service: usize,
        parent: Option<&[u8]>,
        name: String,
        kind: i32,
        start: u64,
        duration: u64,
    ) -> Vec<u8> {
        let span_id = self.rng.next().to_le_bytes().to_vec();
        let span = Span {
            trace_id: self.trace_id.clone(),
            span_id: span_id.clone(),
            parent_span_id: parent.map(<[u8]>::to_vec).unwrap_or_default(),
            name,
            kind,
            start_time_unix_nano: start,
            end_time_unix_nano: start + duration,
            flags: 1,
            ..Default::default()
        };
        self.spans.push((service, span));
        self.budget = self.budget.saturating_sub(1);
        span_id
    }

    fn last_mut(&mut self) -> &mut Span {
        &mut self.spans.last_mut().expect("a span").1
    }

    /// A server span of `service` and what it calls, within `[start, start + duration]`.
    fn serve(
        &mut self,
        service: usize,
        parent: Option<&[u8]>,
        route: &str,
        start: u64,
        duration: u64,
        depth: u32,
    ) -> Vec<u8> {
        let server = self.span(service, parent, format!("GET {route}"), 2, start, duration);
        let failed = self.rng.chance(2);
        let code = if failed { 500 } else { [200, 200, 200, 201, 204, 304, 404][self.rng.below(7) as usize] };
        let user = self.rng.below(50_000);
        let span = self.last_mut();
        span.attributes = vec![
            string("http.request.method", "GET"),
            string("http.route", route),
            int("http.response.status_code", code),
            string("url.scheme", "http"),
            string("enduser.id", format!("user-{user}")),
        ];
        if failed {
            span.status = Some(Status { code: 2, message: "internal error".into() });
        }
        let calls = 1 + self.rng.below(6);
        let mut at = start + duration / 20;
        for _ in 0..calls {
            if self.budget == 0 {
                break;
            }
            let call_duration = (duration / (calls + 1)).max(1000);
            match self.rng.below(10) {
                0..=4 if depth < 4 => {
                    let callee = 1 + self.rng.below(SERVICES.len() as u64 - 1) as usize;
                    let route = ROUTES[self.rng.below(ROUTES.len() as u64) as usize];
                    let client = self.span(service, Some(&server), format!("GET {route}"), 3, at, call_duration);
                    let peer = SERVICES[callee];
                    let span = self.last_mut();
                    span.attributes = vec![
                        string("http.request.method", "GET"),
                        string("server.address", format!("{peer}.shop.svc")),
                        int("server.port", 8080),
                        string("url.full", format!("http://{peer}.shop.svc:8080{route}")),
                    ];
                    self.serve(
                        callee,
                        Some(&client),
                        route,
                        at + call_duration / 10,
                        call_duration * 8 / 10,
                        depth + 1,
                    );
                }
                5..=7 => {
                    let table = TABLES[self.rng.below(TABLES.len() as u64) as usize];
                    let id = self.rng.below(1_000_000);
                    self.span(service, Some(&server), format!("SELECT {table}"), 3, at, call_duration / 3 + 1);
                    self.last_mut().attributes = vec![
                        string("db.system", "postgresql"),
                        string("db.name", "shop"),
                        string("db.statement", format!("SELECT * FROM {table} WHERE id = {id}")),
                        string("server.address", "postgres.shop.svc"),
                    ];
                }
                _ => {
                    let work = ["render", "serialize", "validate", "cache lookup"][self.rng.below(4) as usize];
                    self.span(service, Some(&server), work.into(), 1, at, call_duration / 4 + 1);
                }
            }
            at += call_duration;
        }
        server
    }
}

/// A request of `TRACES_PER_REQUEST` traces starting around `base_ns`; returns it and its span count.
fn request(rng: &mut Rng, base_ns: u64, samples: &mut Vec<String>) -> (ExportTraceServiceRequest, usize) {
    let mut by_service: Vec<Vec<Span>> = vec![Vec::new(); SERVICES.len()];
    let mut count = 0;
    for t in 0..TRACES_PER_REQUEST {
        let mut trace_id = rng.next().to_le_bytes().to_vec();
        trace_id.extend(rng.next().to_le_bytes());
        let budget = 20 + rng.below(181) as usize;
        let mut builder = TraceBuilder { rng, trace_id: trace_id.clone(), spans: Vec::new(), budget };
        let start = base_ns + t as u64 * 1_000_000;
        let route = ROUTES[builder.rng.below(ROUTES.len() as u64) as usize];
        let duration = builder.rng.duration();
        let root = builder.serve(0, None, route, start, duration, 0);
        // Work the root fans out to until the trace has its size.
        while builder.budget > 0 {
            let callee = 1 + builder.rng.below(SERVICES.len() as u64 - 1) as usize;
            let route = ROUTES[builder.rng.below(ROUTES.len() as u64) as usize];
            builder.serve(callee, Some(&root), route, start + duration / 10, duration / 2, 1);
        }
        let spans = std::mem::take(&mut builder.spans);
        if samples.len() < 2000 && rng.chance(5) {
            samples.push(trace_id.iter().map(|b| format!("{b:02x}")).collect());
        }
        for (service, span) in spans {
            count += 1;
            by_service[service].push(span);
        }
    }
    let replica = rng.below(3);
    let resource_spans = by_service
        .into_iter()
        .enumerate()
        .filter(|(_, spans)| !spans.is_empty())
        .map(|(service, spans)| ResourceSpans {
            resource: Some(resource(SERVICES[service], replica)),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "shop".into(),
                    version: "1.0.0".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        })
        .collect();
    (ExportTraceServiceRequest { resource_spans }, count)
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let endpoint = args.get(1).expect("usage: trace_load ENDPOINT SPANS").clone();
    let total: u64 = args.get(2).and_then(|s| s.parse().ok()).expect("SPANS");
    let concurrency = arg(&args, "--concurrency", 4);
    let seed = arg(&args, "--seed", 1);
    let sent = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let base_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        - 3_600_000_000_000;
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let (endpoint, sent, retries) = (endpoint.clone(), sent.clone(), retries.clone());
        workers.push(tokio::spawn(async move {
            let mut client =
                TraceServiceClient::connect(endpoint).await.expect("connects").max_encoding_message_size(64 << 20);
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (worker + 1));
            let mut samples = Vec::new();
            let mut request_number = 0u64;
            while sent.load(Ordering::Relaxed) < total {
                let base = base_ns + (request_number * concurrency + worker) * TRACES_PER_REQUEST as u64 * 1_000_000;
                request_number += 1;
                let (request, count) = request(&mut rng, base, &mut samples);
                loop {
                    match client.export(request.clone()).await {
                        Ok(_) => break,
                        Err(status) if status.code() == tonic::Code::Unavailable => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(status) => panic!("export failed: {status}"),
                    }
                }
                sent.fetch_add(count as u64, Ordering::Relaxed);
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for worker in workers {
        samples.extend(worker.await.expect("worker"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let summary = serde_json::json!({
        "spans": sent.load(Ordering::Relaxed),
        "seconds": elapsed,
        "retries": retries.load(Ordering::Relaxed),
        "services": SERVICES,
        "sample_trace_ids": samples,
    });
    println!("{summary}");
}
