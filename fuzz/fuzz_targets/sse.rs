//! `herdsman_axum::__fuzz::sse`: see that module for the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| herdsman_axum::__fuzz::sse::run(data));
