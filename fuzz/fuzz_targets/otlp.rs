//! OTLP metrics, logs and traces, protobuf and JSON; the first byte picks the decoder.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    let json = which & 1 == 1;
    match (which >> 1) % 3 {
        0 => vigil_collector::fuzz::otlp_metrics(body, json),
        1 => vigil_collector::fuzz::otlp_logs(body, json),
        _ => vigil_collector::fuzz::otlp_traces(body, json),
    };
});
