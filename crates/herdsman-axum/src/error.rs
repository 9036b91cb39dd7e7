//! herdsman errors as HTTP responses.

use std::error::Error;

use axum::{
    body::Body,
    http::{header, HeaderValue, Response, StatusCode},
};
use herdsman::error::{describe, Describe, ErrorKind};

/// The response for an error out of a herdsman stack, so an axum app gets
/// correct answers without glue. Every herdsman error
/// [describes itself](Describe), and is answered as
/// [`herdsman::http::error_response`] maps its kind:
///
/// | error | kind | status |
/// |-------|------|--------|
/// | `BreakerOpen` | breaker open | 503 + `Retry-After` |
/// | `Overloaded` | overloaded | 503 + `Retry-After` |
/// | `RateLimited` | rate limited | 429 + `Retry-After` |
/// | `TooManyInFlight` (a caller's or address's share of a class) | rejected | 429 + `Retry-After` |
/// | `ProbeTimedOut` | timed out | 504 |
/// | `TooManySubscribers`: a caller's or a client address's budget of keys or subscriptions (`Limit::KeysPerCaller`, `KeysPerAddress`, `SubscribersPerCaller`, `SubscribersPerAddress`) | rejected | 429 + `Retry-After` |
/// | `TooManySubscribers`: the key is longer than `keys.max_len` (`Limit::KeyTooLong`) | rejected | 414 (the status it names) |
/// | `TooManySubscribers`: the registry's capacity (its keys per class, subscribers, memory) | overloaded | 503 + `Retry-After` |
/// | [`PayloadTooLarge`] | rejected | 413 (the status it names) |
/// | `UpstreamStatus` (a registry poll answered 5xx) | upstream | that status |
/// | anything else (the upstream's own error, a panic) | upstream | 502 |
///
/// It is meant for one-shot errors; a polling answer maps the state of its
/// registry key instead ([`poll_response`](crate::poll_response): 503 with
/// `Retry-After` while a key without a good value fails, whatever the
/// error). Each `Retry-After` is computed when the response is made. The
/// body is the status's reason phrase; details go to the log, not to the
/// client.
pub fn error_response(err: &(dyn Error + 'static)) -> Response<Body> {
    // `PayloadTooLarge` is ours: found however the application boxed it.
    let described = describe(err)
        .or_else(|| herdsman::error::find::<PayloadTooLarge>(err).map(|e| e as &dyn Describe));
    described_response(err, described)
}

/// The response for an error held by its own type (a refused
/// subscription), as [`error_response`] answers it.
pub(crate) fn refusal_response(refused: &dyn Describe) -> Response<Body> {
    let err: &(dyn Error + 'static) = refused.as_error();
    described_response(err, Some(refused))
}

fn described_response(
    err: &(dyn Error + 'static),
    described: Option<&dyn Describe>,
) -> Response<Body> {
    let mut response = match described.and_then(herdsman::http::described_response::<Body>) {
        Some(r) => r,
        None => {
            tracing::warn!(error = %err, "herdsman: upstream error");
            status(StatusCode::BAD_GATEWAY)
        }
    };
    let reason = response.status().canonical_reason().unwrap_or("error");
    *response.body_mut() = Body::from(reason);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn status(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}

/// A request body over the size an endpoint accepts (answered 413).
#[derive(Debug, Clone, Copy, Default)]
pub struct PayloadTooLarge;

impl std::fmt::Display for PayloadTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("payload too large")
    }
}

impl Error for PayloadTooLarge {}

impl Describe for PayloadTooLarge {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Rejected
    }

    fn status(&self) -> Option<u16> {
        Some(413)
    }
}
