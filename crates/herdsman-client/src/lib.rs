//! Consume herdsman's live endpoints (and any Server-Sent Events endpoint)
//! from Rust.
//!
//! - [`event_stream`]: an incremental parser of `text/event-stream`, as
//!   WHATWG HTML §9.2 says, with bounded memory.

pub mod event_stream;
