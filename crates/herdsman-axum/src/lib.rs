//! axum integration of [herdsman]: where a user meets it.
//!
//! - [`Live`]: Server-Sent Events and polling over a herdsman
//!   [`Registry`](herdsman::registry::Registry): one event per change (`id:`
//!   the content's fingerprint, the same in every process; `retry:` the
//!   poll interval; keep-alive comments every 15 s; `Last-Event-ID`
//!   honoured as untrusted input), and a polling answer with a content
//!   `ETag` and 304, the last good value marked stale while the upstream
//!   fails, or 503 with `Retry-After` until the next poll. However many
//!   tabs subscribe, the upstream sees one call per interval.
//! - [`error_response`]: herdsman's errors as responses (503 +
//!   `Retry-After` for an open breaker or an overloaded class, 429 +
//!   `Retry-After` for a rate limit or too many streams, 413, 504).
//! - [`Admin`]: the operator routes — the stats JSON, Prometheus text, the
//!   switches, and the live dashboard page — behind [`AdminAccess`] (a
//!   bearer token in production and docker, loopback only in development
//!   and test).
//!
//! `docs/HTTP.md` in the repository lists every route, header and status
//! code; `examples/active-users` puts it all together.

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
#[path = "fuzz/mod.rs"]
pub mod __fuzz;
mod admin;
mod error;
mod live;
mod poll;
mod routes;
mod sse;
mod stats;
mod streams;

pub use crate::{
    admin::{require_admin, AdminAccess},
    error::{error_response, PayloadTooLarge},
    live::{data_request, Live},
    poll::{etag, not_modified, poll_response},
    routes::{prometheus, Admin, AdminBuilder, Toggle},
    sse::{
        event_id, sse, Encode, InvalidSseField, LastEventId, SseMessage, UpdateEvents, KEEP_ALIVE,
    },
    stats::stats_document,
    streams::{StreamCap, StreamPermit, TooManyStreams},
};
