//! Zipkin v2 protobuf span lists (`ListOfSpans`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vigil_collector::fuzz::zipkin_proto(data);
});
