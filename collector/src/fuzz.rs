//! Entry points for fuzzing each decoder with arbitrary bytes: decode, then translate what decoded, as a
//! request would, without storage. Each returns whether the input was accepted; none may panic. The
//! `cargo fuzz` targets under `fuzz/` call these, and a test feeds them mutated valid payloads.

use axum::http::{HeaderMap, HeaderValue, header};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use crate::otlp::{Compression, Encoding, decode_body};

/// Decompressed bytes a fuzzed body may expand to.
const MAX_BYTES: usize = 4 << 20;

/// Remote write 1.0: snappy, then `WriteRequest`, through the borrowing decoder the server uses (and the
/// generated one, which `vigil import` and tests use). Label sets are checked later, when stored.
pub fn remote_write_v1(data: &[u8]) -> bool {
    let _ = crate::remote_write::decode(data, MAX_BYTES);
    crate::remote_write::unsnappy_limited(data, MAX_BYTES).is_ok_and(|raw| {
        // Labels are read when the store does not know a series: the reader is fuzzed too.
        crate::remote_write::borrowed::decode(&raw).is_ok_and(|request| {
            request.batch.iter().all(|(labels, _)| crate::remote_write::borrowed::read_labels(labels).is_ok())
        })
    })
}

/// Remote write 2.0: snappy, then `io.prometheus.write.v2.Request` with symbol references.
pub fn remote_write_v2(data: &[u8]) -> bool {
    crate::remote_write::decode_version(data, MAX_BYTES, crate::remote_write::Version::V2).is_ok()
}

fn encoding(json: bool) -> (Encoding, Compression) {
    (if json { Encoding::Json } else { Encoding::Protobuf }, Compression::None)
}

/// OTLP metrics (protobuf or JSON), translated to series.
pub fn otlp_metrics(data: &[u8], json: bool) -> bool {
    let decoded = decode_body::<ExportMetricsServiceRequest>(data, encoding(json), MAX_BYTES, "metrics");
    decoded.map(crate::otlp::translate).is_ok()
}

/// OTLP logs (protobuf or JSON), mapped to log records.
pub fn otlp_logs(data: &[u8], json: bool) -> bool {
    let decoded = decode_body::<ExportLogsServiceRequest>(data, encoding(json), MAX_BYTES, "logs");
    decoded.map(crate::otlp_logs::records).is_ok()
}

/// OTLP traces (protobuf or JSON), mapped to spans.
pub fn otlp_traces(data: &[u8], json: bool) -> bool {
    let decoded = decode_body::<ExportTraceServiceRequest>(data, encoding(json), MAX_BYTES, "traces");
    decoded.map(crate::otlp_traces::spans).is_ok()
}

/// Loki push: snappy protobuf, or JSON.
pub fn loki(data: &[u8], json: bool) -> bool {
    let mut headers = HeaderMap::new();
    let content_type = if json { "application/json" } else { "application/x-protobuf" };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    crate::loki::decode(&headers, data, MAX_BYTES).is_ok()
}

/// Zipkin v2 JSON.
pub fn zipkin(data: &[u8]) -> bool {
    crate::zipkin::spans(data).is_ok()
}

/// Zipkin v2 protobuf (`ListOfSpans`).
pub fn zipkin_proto(data: &[u8]) -> bool {
    crate::zipkin::proto_spans(data).is_ok()
}

/// A decoder entry point: whether the bytes were accepted.
pub type Decoder = fn(&[u8]) -> bool;

/// Every decoder by name, for the smoke test: (name, decoder).
pub const DECODERS: [(&str, Decoder); 10] = [
    ("remote_write_v1", remote_write_v1),
    ("remote_write_v2", remote_write_v2),
    ("otlp_metrics_protobuf", |d| otlp_metrics(d, false)),
    ("otlp_metrics_json", |d| otlp_metrics(d, true)),
    ("otlp_logs_protobuf", |d| otlp_logs(d, false)),
    ("otlp_logs_json", |d| otlp_logs(d, true)),
    ("otlp_traces_protobuf", |d| otlp_traces(d, false)),
    ("otlp_traces_json", |d| otlp_traces(d, true)),
    ("loki_protobuf", |d| loki(d, false)),
    ("loki_json", |d| loki(d, true)),
];

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use proptest::prelude::*;
    use prost::Message;

    use super::*;

    /// A valid payload for each decoder (and Zipkin), the seeds mutations start from.
    fn seeds() -> Vec<(&'static str, Decoder, Vec<u8>)> {
        let snappy = |raw: &[u8]| snap::raw::Encoder::new().compress_vec(raw).unwrap();
        let label = |name: &str, value: &str| crate::remote_write::Label { name: name.into(), value: value.into() };
        let v1 = crate::remote_write::WriteRequest {
            timeseries: vec![crate::remote_write::TimeSeries {
                labels: vec![label("__name__", "up"), label("job", "node")],
                samples: vec![crate::remote_write::WireSample { value: 1.0, timestamp: 1_700_000_000_000 }],
            }],
            metadata: vec![],
        };
        let v2 = crate::remote_write::RequestV2 {
            symbols: vec!["".into(), "__name__".into(), "up".into()],
            timeseries: vec![crate::remote_write::TimeSeriesV2 {
                labels_refs: vec![1, 2],
                samples: vec![crate::remote_write::WireSample { value: 1.0, timestamp: 1 }],
                ..Default::default()
            }],
        };
        let string = |v: &str| Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) });
        let traces = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue { key: "service.name".into(), value: string("cart") }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        name: "GET /".into(),
                        start_time_unix_nano: 1,
                        end_time_unix_nano: 2,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let metrics_json = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"queue","gauge":
            {"dataPoints":[{"timeUnixNano":"1700000000000000000","asInt":"7"}]}}]}]}]}"#;
        let logs_json =
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"1","body":{"stringValue":"x"}}]}]}]}"#;
        let loki_proto = crate::loki::PushRequest {
            streams: vec![crate::loki::StreamAdapter {
                labels: r#"{app="api"}"#.into(),
                entries: vec![crate::loki::EntryAdapter {
                    timestamp: Some(crate::loki::Timestamp { seconds: 1, nanos: 0 }),
                    line: "hello".into(),
                    structured_metadata: vec![],
                }],
            }],
        };
        let loki_json = br#"{"streams":[{"stream":{"app":"api"},"values":[["1","hello",{"trace_id":"ab"}]]}]}"#;
        let zipkin_json = br#"[{"traceId":"ab","id":"cd","name":"x","timestamp":1,"duration":2}]"#;
        let by_name = |name: &str| DECODERS.iter().find(|(n, _)| *n == name).unwrap().1;
        vec![
            ("remote_write_v1", by_name("remote_write_v1"), snappy(&v1.encode_to_vec())),
            ("remote_write_v2", by_name("remote_write_v2"), snappy(&v2.encode_to_vec())),
            ("otlp_metrics_json", by_name("otlp_metrics_json"), metrics_json.to_vec()),
            ("otlp_logs_json", by_name("otlp_logs_json"), logs_json.to_vec()),
            ("otlp_traces_protobuf", by_name("otlp_traces_protobuf"), traces.encode_to_vec()),
            ("otlp_traces_json", by_name("otlp_traces_json"), serde_json::to_vec(&traces).unwrap()),
            ("loki_protobuf", by_name("loki_protobuf"), snappy(&loki_proto.encode_to_vec())),
            ("loki_json", by_name("loki_json"), loki_json.to_vec()),
            ("zipkin", zipkin, zipkin_json.to_vec()),
            ("zipkin_proto", zipkin_proto, zipkin_proto_seed()),
        ]
    }

    fn zipkin_proto_seed() -> Vec<u8> {
        use crate::zipkin::{ListOfSpans, ProtoSpan};
        let span =
            ProtoSpan { trace_id: vec![1; 16], id: vec![2; 8], name: "x".into(), timestamp: 1, ..Default::default() };
        ListOfSpans { spans: vec![span] }.encode_to_vec()
    }

    #[test]
    fn every_decoder_accepts_its_valid_seed() {
        for (name, decoder, seed) in seeds() {
            assert!(decoder(&seed), "{name} refused its valid seed");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        /// Truncated, bit-flipped and spliced payloads are refused or accepted, never a panic.
        #[test]
        fn mutated_payloads_never_panic(
            which in 0usize..10, cut in any::<prop::sample::Index>(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
            junk in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let seeds = seeds();
            let (_, decoder, seed) = &seeds[which];
            let mut data = seed[..cut.index(seed.len() + 1)].to_vec();
            for (at, bits) in &flips {
                if !data.is_empty() {
                    let at = at.index(data.len());
                    data[at] ^= bits;
                }
            }
            data.extend(&junk);
            let _ = decoder(&data);
            // Every decoder also sees the raw junk.
            for (_, decoder) in DECODERS {
                let _ = decoder(&junk);
            }
            let _ = zipkin(&junk);
            let _ = zipkin_proto(&junk);
        }
    }
}
