//! herdsman errors as HTTP responses.

use std::error::Error;

use axum::{
    body::Body,
    http::{header, HeaderValue, Response, StatusCode},
};
use herdsman::{
    error::find,
    registry::{TooManySubscribers, UpstreamStatus},
};

/// The response for an error out of a herdsman stack, so an axum app gets
/// correct answers without glue:
///
/// | error | status |
/// |-------|--------|
/// | `BreakerOpen` | 503 + `Retry-After` |
/// | `Overloaded` | 503 + `Retry-After` |
/// | `RateLimited` | 429 + `Retry-After` |
/// | `TooManyInFlight` (a caller's or address's share of a class) | 429 + `Retry-After` |
/// | `ProbeTimedOut` | 504 |
/// | `TooManySubscribers` | 503 + `Retry-After: 1` |
/// | [`TooManyStreams`](crate::TooManyStreams) | 429 + `Retry-After` |
/// | [`PayloadTooLarge`] | 413 |
/// | `UpstreamStatus` (a registry poll answered 5xx) | that status |
/// | anything else (the upstream's own error) | 502 |
///
/// It is meant for one-shot errors; a polling answer maps the state of its
/// registry key instead ([`poll_response`](crate::poll_response): 503 with
/// `Retry-After` while a key without a good value fails, whatever the
/// error). Each `Retry-After` is computed when the response is made. The
/// body is a short plain-text reason; details go to the log, not to the
/// client.
pub fn error_response(err: &(dyn Error + 'static)) -> Response<Body> {
    let (mut response, reason) = if let Some(r) = herdsman::http::error_response::<Body>(err) {
        let reason = r.status().canonical_reason().unwrap_or("error");
        (r, reason)
    } else if find::<TooManySubscribers>(err).is_some() {
        let mut r = status(StatusCode::SERVICE_UNAVAILABLE);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        (r, "too many subscribers")
    } else if let Some(cap) = find::<crate::TooManyStreams>(err) {
        let mut r = status(StatusCode::TOO_MANY_REQUESTS);
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(cap.retry_after_secs()),
        );
        (r, "too many event streams for this caller")
    } else if let Some(failed) = find::<UpstreamStatus>(err) {
        let code = StatusCode::from_u16(failed.status()).unwrap_or(StatusCode::BAD_GATEWAY);
        (status(code), "upstream error")
    } else if find::<PayloadTooLarge>(err).is_some() {
        (status(StatusCode::PAYLOAD_TOO_LARGE), "payload too large")
    } else {
        tracing::warn!(error = %err, "herdsman: upstream error");
        (status(StatusCode::BAD_GATEWAY), "upstream error")
    };
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
