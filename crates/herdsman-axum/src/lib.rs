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
//! - [`Live::routes`]: the router helper, a resource's polling and SSE
//!   routes in one call.
//! - [`Admin`]: the operator routes under one prefix (`/_herdsman` by
//!   default, never `/`) — the stats JSON, Prometheus text, the switches,
//!   and a dashboard of stats, alerts and switches that knows no
//!   application route — behind [`AdminAccess`] (a bearer token in
//!   production and docker, loopback only in development and test). Its
//!   script is also the engine of an application's own live page
//!   (`assets/README.md`).
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
//!
//! # Examples
//!
//! An app's handler behind the Coordinator's stack, with SSE and polling
//! for its route ([`Live::routes`]) and the admin routes under
//! `/_herdsman` ([`Admin`]): however many tabs poll or stream
//! `/api/active-users`, the handler runs once per poll interval.
//!
//! ```
//! use axum::{routing::get, Router};
//! use herdsman::{config::{Config, Environment}, Coordinator};
//! use herdsman_axum::{Admin, Live};
//! use tower::Layer;
//!
//! async fn active_users() -> &'static str {
//!     r#"{"users": ["ann", "bob"]}"#
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let env = Environment::detect()?;
//! let coordinator = Coordinator::builder().environment(env).config(Config::load(env)?).build()?;
//! let handlers = Router::new().route("/api/active-users", get(active_users));
//! let stack = coordinator.layer().layer(handlers);
//! let live = Live::new(move |req| stack.subscribe(req))
//!     .with_stats(coordinator.stats().clone(), coordinator.config().path_classes());
//! let admin = Admin::builder(coordinator.stats().clone(), env, None)
//!     .with_switches(coordinator.switches().clone());
//! let app: Router = Router::new()
//!     .merge(live.routes("/api/active-users", "/sse/active-users"))
//!     .merge(admin.router());
//! // herdsman_axum::Server::default().serve(listener, app).await?;
//! # let _ = app;
//! # Ok(())
//! # }
//! ```

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
#[path = "fuzz/mod.rs"]
pub mod __fuzz;
mod admin;
mod error;
mod live;
mod poll;
mod router;
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
