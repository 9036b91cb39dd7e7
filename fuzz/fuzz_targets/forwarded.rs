//! `herdsman::__fuzz::forwarded`: see that module for the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| herdsman::__fuzz::forwarded::run(data));
