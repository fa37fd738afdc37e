//! Zipkin v2 JSON span lists.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vigil_collector::fuzz::zipkin(data);
});
