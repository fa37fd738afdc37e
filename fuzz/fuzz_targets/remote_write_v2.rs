//! Remote write 2.0 bodies (snappy + `io.prometheus.write.v2.Request`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vigil_collector::fuzz::remote_write_v2(data);
});
