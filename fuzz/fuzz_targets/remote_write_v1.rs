//! Remote write 1.0 bodies (snappy + `WriteRequest`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vigil_collector::fuzz::remote_write_v1(data);
});
