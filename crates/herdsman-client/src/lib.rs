//! Consume herdsman's live endpoints, and any Server-Sent Events endpoint,
//! from Rust: the browser hook's behaviour (one shared connection,
//! `Last-Event-ID`, a polling fallback) for services.
//!
//! - [`event_stream`]: an incremental `text/event-stream` parser, exactly
//!   as WHATWG HTML §9.2 says, with bounded memory. Usable alone.
//! - [`Client`]: [`subscribe(url)`](Client::subscribe) returns a
//!   [`Subscription`], a `Stream` of [`Update`]s (data, event type, id,
//!   transport, stale flag), over any tower HTTP service ([`HttpService`];
//!   hyper-util's client by default), so that herdsman's own layers, or
//!   tower-http's, can wrap it.
//!
//! # Examples
//!
//! Against a server (herdsman-axum's demo: `cargo run -p active-users`):
//!
//! ```no_run
//! use herdsman_client::Client;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::shared(); // one connection per URL in the process
//! let mut users = client.subscribe("http://127.0.0.1:3000/sse/active-users")?;
//! while let Some(update) = users.recv().await {
//!     let update = update?; // Err: this subscriber fell behind
//!     println!("{} via {}: {}", update.id().unwrap_or("-"), update.transport(), update.data());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Over any tower service (here a function answering one event and then
//! 204, which ends the stream as the standard says):
//!
//! ```
//! use bytes::Bytes;
//! use herdsman_client::{BoxError, Client, ClientRequest, Transport};
//! use http::Response;
//! use http_body_util::Full;
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use std::sync::Arc;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let answered = Arc::new(AtomicBool::new(false));
//! let server = tower::service_fn(move |_req: ClientRequest| {
//!     let again = answered.swap(true, Ordering::SeqCst);
//!     async move {
//!         let mut response = Response::new(Full::new(Bytes::from("id: 1\ndata: hello\n\n")));
//!         if again {
//!             *response.status_mut() = http::StatusCode::NO_CONTENT;
//!         } else {
//!             let sse = http::HeaderValue::from_static("text/event-stream");
//!             response.headers_mut().insert(http::header::CONTENT_TYPE, sse);
//!         }
//!         Ok::<_, BoxError>(response)
//!     }
//! });
//! let client = Client::builder().build_with(server);
//! let mut a = client.subscribe("http://example.test/events")?;
//! let mut b = client.subscribe("http://example.test/events")?;
//! for sub in [&mut a, &mut b] {
//!     let update = sub.recv().await.expect("an update")?;
//!     assert_eq!((update.data(), update.id(), update.transport()), ("hello", Some("1"), Transport::Sse));
//!     assert!(sub.recv().await.is_none(), "204: the stream is over");
//! }
//! assert_eq!(client.stats().connects, 1, "one connection for both");
//! # Ok(())
//! # }
//! ```
//!
//! # One connection per URL
//!
//! The first subscriber of a URL opens its connection (a task on the
//! tokio runtime); every other subscriber of the same URL on the same
//! [`Client`] (clones share) joins it and gets the current value at once,
//! then each change. Every subscriber gets each update, numbered
//! ([`Update::sequence`]); one that falls more than
//! [`Builder::with_capacity`] updates behind gets a [`Lagged`] and goes
//! on from the oldest kept. Dropping the last subscription closes the
//! connection. [`Client::shared`] is the process's client.
//!
//! # Reconnection
//!
//! - A stream that ends or stalls (no byte, not even a keep-alive, for
//!   [`Builder::with_read_timeout`]) is reconnected after the server's
//!   `retry:` (else [`Builder::with_retry`]), with `Last-Event-ID`: the
//!   stream's last event id, as a browser keeps it, or the version of the
//!   last polling answer if that came later. The first event of a new
//!   connection is dropped if subscribers already have it.
//! - Failed attempts back off exponentially from that time, up to
//!   [`Builder::with_max_backoff`], each stretched by up to a quarter at
//!   random (never shorter than the server asked).
//! - HTTP 204 ends every subscription; 429 and 503 wait their
//!   `Retry-After`.
//!
//! # Falling back to polling, and back
//!
//! With a polling URL (herdsman-axum's scheme by default: `/sse/<rest>`
//! streams what `/api/<rest>` polls; [`Builder::with_poll_url`] for
//! others), the client polls instead of streaming when streaming fails:
//! after [`Builder::with_failures_before_fallback`] failed connections in a
//! row, or at once on a 503 (herdsman-axum's `sse` switch off), a 404 or
//! 405, an answer that is not `text/event-stream`, or a stream that sends
//! no first byte within [`Builder::with_first_byte_timeout`] (a proxy that
//! buffers). Polls carry `If-None-Match` and come every `X-Poll-Interval`;
//! an answer marked `X-Herdsman-Stale: 1` is delivered once, stale.
//!
//! Every [`Builder::with_probe_every`] (or the 503's `Retry-After`, if
//! longer) the client tries the stream again, polling on until it sends
//! its first byte, and returns to it. Across the switches subscribers see
//! no duplicate and no gap: the stream resumes with `Last-Event-ID` set to
//! the last polled version and polls ask `If-None-Match` the last streamed
//! one (herdsman-axum's SSE ids and `ETag`s name the same content the same
//! way), and the first update after a switch is dropped if subscribers
//! have that value.
//!
//! Checked against the demo (`cargo run -p active-users`, development;
//! `client-poller --subscribers 100 --duration 60s`, the `sse` switch off
//! at 10 s and on at 25 s): one stream served the 100 subscribers
//! (`sse_streams` 1 in the demo's stats); 5 s after the switch went off
//! (the stream's `retry:`) the reconnection got 503 and the client polled,
//! delivering the next change by polling; 15 s later (the 503's
//! `Retry-After`) the probe got the stream back and the following changes
//! came over SSE. Summary: 2 connections, 6 changes each delivered to all
//! 100 subscribers, 3 polls, 1 fallback, 1 return.
//!
//! # Tracing and metrics
//!
//! Each URL's task runs in a `herdsman_client` span with the URL;
//! fallbacks are warnings, returns and failures info. [`Client::stats`]
//! counts, and the `metrics` facade gets: `herdsman_client_connects_total`,
//! `herdsman_client_reconnects_total`, `herdsman_client_fallbacks_total`,
//! `herdsman_client_returns_total`, `herdsman_client_events_total{transport}`,
//! `herdsman_client_bytes_total{transport}`, `herdsman_client_polls_total`
//! and the gauge `herdsman_client_open_urls`.

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
#[path = "fuzz/mod.rs"]
pub mod __fuzz;
mod backoff;
mod client;
mod driver;
pub mod event_stream;
mod update;

pub use crate::{
    client::{Builder, Client, ClientRequest, ClientStats, HttpClient, HttpService, InvalidUrl},
    update::{Lagged, Subscription, Transport, Update},
};

/// The boxed error of tower services.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
