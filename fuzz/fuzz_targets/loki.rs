//! Loki push bodies; the first byte picks snappy protobuf or JSON.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    vigil_collector::fuzz::loki(body, which & 1 == 1);
});
