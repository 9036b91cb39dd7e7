//! herdsman errors as HTTP responses.

use std::error::Error;

use axum::{
    body::Body,
    http::{header, HeaderValue, Response, StatusCode},
};
use herdsman::{
    error::find,
    http::retry_after_secs,
    registry::{Limit, TooManySubscribers, UpstreamStatus},
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
/// | `TooManySubscribers`: a caller's or a client address's budget of keys or subscriptions (`Limit::KeysPerCaller`, `KeysPerAddress`, `SubscribersPerCaller`, `SubscribersPerAddress`) | 429 + `Retry-After` |
/// | `TooManySubscribers`: the key is longer than `keys.max_len` (`Limit::KeyTooLong`) | 414 |
/// | `TooManySubscribers`: the registry's capacity (its keys per class, subscribers, memory) | 503 + `Retry-After` |
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
    } else if let Some(refused) = find::<TooManySubscribers>(err) {
        refusal(refused)
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

/// A subscription the registry refused: the caller asks too much (429), its
/// URI is too long (414: the key is mostly the URI; a key made long by
/// credentials or varied headers is answered the same), or the registry is
/// full (503). A key too long never fits, so it has no `Retry-After`.
fn refusal(refused: &TooManySubscribers) -> (Response<Body>, &'static str) {
    let (code, reason) = match refused.reason() {
        Limit::KeyTooLong => (StatusCode::URI_TOO_LONG, "the request's key is too long"),
        Limit::KeysPerCaller | Limit::KeysPerAddress => (
            StatusCode::TOO_MANY_REQUESTS,
            "too many distinct resources followed by this client",
        ),
        _ if refused.is_per_caller() => (
            StatusCode::TOO_MANY_REQUESTS,
            "too many event streams for this client",
        ),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "too many subscribers"),
    };
    let mut r = status(code);
    if let Some(after) = refused.retry_after() {
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs(after)),
        );
    }
    (r, reason)
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
