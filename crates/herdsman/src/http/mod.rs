//! HTTP adapter: keys, buffering and sharing for `http` requests and responses.
//!
//! Coordinating layers hand one response to many callers, so the response must
//! be cheap to clone. An `http::Response<B>` is not: its body is a stream.
//! This module provides the three pieces that make HTTP services coordinate:
//!
//! - [`HttpKey`]: the default [`KeyFn`](crate::key::KeyFn) for
//!   `http::Request`. Only `GET` and `HEAD` are coordinated, and never a
//!   request for an event stream. The key is the method, authority, path and
//!   query, the negotiation and conditional headers (`Accept`,
//!   `Accept-Encoding`, `Range`, `If-None-Match`, ...), the headers the
//!   endpoint varies on, and an **auth partition** (the full `Authorization`
//!   and `Cookie` values) unless the endpoint is declared public: one user's
//!   response is never handed to another user.
//! - [`BufferLayer`]: placed *below* the coordinating layer, it reads the
//!   response body of a `GET`/`HEAD` into [`Bytes`](bytes::Bytes), up to a
//!   limit (default 1 MiB). A larger body, an event stream, or a body whose
//!   `Content-Length` is over the limit is streamed to its own caller,
//!   uncoordinated: never failed, never truncated.
//! - [`HttpShare`]: the [`Share`](crate::share::Share) policy for the
//!   buffered responses. It refuses to share a streamed body or a response
//!   carrying `Set-Cookie`; the other callers then make their own calls.
//!
//! Responses come out as `Response<HttpBody<B>>`, where [`HttpBody`] is an
//! [`http_body::Body`] with `Bytes` data and `B`'s error type. axum accepts it
//! as a response directly.
//!
//! # Examples
//!
//! Around a hyper-util client (the same stack works around an axum `Router`):
//!
//! ```
//! use herdsman::{dedup::DedupLayer, http::{BufferLayer, HttpKey, HttpShare}};
//! use tower::ServiceBuilder;
//! # fn client() -> tower::util::BoxCloneService<http::Request<String>, http::Response<String>, std::convert::Infallible> {
//! #     tower::util::BoxCloneService::new(tower::service_fn(|_| async { Ok(http::Response::new(String::new())) }))
//! # }
//!
//! let client = ServiceBuilder::new()
//!     .layer(DedupLayer::new(HttpKey::new()).with_share(HttpShare))
//!     .layer(BufferLayer::new())
//!     .service(client());
//! # let _ = client;
//! ```
//!
//! # Trade-offs
//!
//! A coordinated response is delivered once it has been read whole (up to the
//! limit): the first byte reaches the caller later than it would uncoordinated.
//! Responses to `text/event-stream` requests are never buffered.

mod body;
mod buffer;
mod classes;
mod client;
pub(crate) mod conditional;
mod errors;
mod failures;
mod key;
mod proxies;
mod share;
mod target;

pub use self::{
    body::{HttpBody, SharedBody},
    buffer::{Buffer, BufferLayer, ResponseFuture, DEFAULT_BODY_LIMIT},
    classes::PathClasses,
    client::{ClientAddr, ClientAddress},
    conditional::if_none_match,
    errors::{described_response, error_response, error_status, retry_after_secs},
    failures::ServerErrors,
    key::HttpKey,
    proxies::{ForwardedHeader, InvalidProxy, TrustedProxies},
    share::HttpShare,
};
// For the layers' HTTP glue.
#[cfg(any(feature = "coordinator", feature = "registry"))]
pub(crate) use self::key::request_bytes;
#[cfg(feature = "cache")]
pub(crate) use self::share::{share_buffered, unshare, unshare_owned, weigh};

/// Marks a response, in its extensions, as a stale copy served because the
/// call for a fresh one failed (stale-if-error, RFC 5861 §4).
///
/// The cache's HTTP policy (`cache::HttpCachePolicy`) inserts it when it
/// answers with a stale copy, so that a layer above (the Registry's
/// `HttpFingerprint`) knows the upstream is failing although the answer is
/// a good value, without parsing `Cache-Status`. It is defined here, in the
/// adapter, so that neither layer needs the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ServedStale;

/// Marks a request, in its extensions, as a poll loop's fetch: its caller
/// keeps the answer and asks again on its own schedule.
///
/// [`HttpKey::canonical_request`] (what a Registry poll loop sends) inserts
/// it, and the cache's HTTP policy (`cache::HttpCachePolicy`) answers such a
/// request with `cache::Directive::Current`: a fresh entry answers it, a
/// stale one is never served while revalidating. Served
/// stale, the loop would get each change one interval late, and an upstream
/// that fails while the window lasts would go unseen, since the loop would
/// keep publishing the old copy as a success. A failed fetch still gets the
/// stale copy where stale-if-error allows, marked [`ServedStale`].
///
/// Clients cannot send it: it is an extension, not a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PollFetch;
