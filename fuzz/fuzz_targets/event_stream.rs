//! `herdsman_client::__fuzz::event_stream`: see that module for the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| herdsman_client::__fuzz::event_stream::run(data));
