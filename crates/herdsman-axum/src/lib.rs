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
//!   `Retry-After` for an open breaker, an overloaded class or a full
//!   registry, 429 + `Retry-After` for a rate limit or a caller's or an
//!   address's budget of keys or streams, 414 for a key too long, 413,
//!   504).
//! - [`Admin`]: the operator routes — the stats JSON, Prometheus text, the
//!   switches, and the live dashboard page — behind [`AdminAccess`] (a
//!   bearer token in production and docker, loopback only in development
//!   and test).
//!
//! - [`Server`] ([`serve`]): serves an app over HTTP/1 and HTTP/2 with a
//!   deadline for each thing a client must send (request head, request
//!   body, next request on an idle connection), caps on connections and
//!   request-head bytes, graceful shutdown, and each request's
//!   [`ClientAddr`](herdsman::http::ClientAddr) and axum `ConnectInfo` in
//!   its extensions. Event streams are never cut by the deadlines.
//! - [`Shutdown`] ([`shutdown`]): one signal for the server's graceful
//!   shutdown and for [`Live`]'s streams, which end with a last
//!   `shutdown` event so that clients reconnect elsewhere at once.
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
pub mod serve;
pub mod shutdown;
mod sse;
mod stats;
mod streams;

pub use crate::{
    admin::{require_admin, AdminAccess},
    error::{error_response, PayloadTooLarge},
    live::{data_request, Live},
    poll::{etag, not_modified, poll_response},
    routes::{prometheus, Admin, AdminBuilder, Toggle},
    serve::Server,
    shutdown::Shutdown,
    sse::{
        event_id, sse, Encode, InvalidSseField, LastEventId, SseMessage, Until, UpdateEvents,
        KEEP_ALIVE,
    },
    stats::stats_document,
    streams::OpenStreams,
};
