//! The polling endpoint: one documented mapping from the state of a
//! registry key to the answer.

use axum::{
    body::Body,
    http::{header, HeaderMap, HeaderValue, Response, StatusCode},
};
use herdsman::{
    error::{find, SharedError},
    http::{if_none_match, retry_after_secs, SharedBody},
    registry::{HttpFingerprint, Update, UpstreamStatus},
};
use tokio::time::Instant;

/// A fingerprint as an id: 16 lowercase hexadecimal digits.
pub(crate) fn hex_id(fingerprint: u64) -> String {
    format!("{fingerprint:016x}")
}

/// The `ETag` of a good update's value, or `None` for a failed update.
///
/// It identifies the content, never a counter: the upstream's own `ETag`
/// when it is strong ([`HttpFingerprint::strong_etag`]), otherwise
/// `"<16 lowercase hex digits>"` of the update's
/// [fingerprint](Update::fingerprint) (status, content headers and body).
/// The same content has the same `ETag` in any process, after any restart
/// of the key's poll loop; different content has a different one.
pub fn etag(update: &Update<Response<SharedBody>>) -> Option<HeaderValue> {
    let value = update.value()?;
    if let Some(strong) = HttpFingerprint::strong_etag(value.headers()) {
        return Some(strong.clone());
    }
    let tag = format!("\"{}\"", hex_id(update.fingerprint()));
    Some(HeaderValue::from_str(&tag).expect("hex digits and quotes are valid"))
}

/// Whether `If-None-Match` in `headers` matches `etag` (RFC 9110 §13.1.2:
/// a list of entity tags or `*`, compared weakly): the Cache's own reading,
/// [`herdsman::http::if_none_match`].
pub fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    if_none_match(headers, etag)
}

/// The polling answer for the latest update of an HTTP registry key.
///
/// One mapping from the key's state to the answer, which holds as long as
/// the state does (so consecutive polls of a failing key never flip
/// between statuses):
///
/// | state of the key | answer |
/// |------------------|--------|
/// | fresh: its last poll succeeded | the value's status, body and [content headers](HttpFingerprint::CONTENT_HEADERS), [`ETag`](etag), `Cache-Control: no-cache` |
/// | fresh, and `If-None-Match` in `request` matches the `ETag` (a 2xx value) | 304, the same `ETag`, no body |
/// | failing (its last poll failed: an error, an open breaker, a 5xx, a cache's stale copy) with a good value (the last successful one, or the cache's stale copy) | that value's status, body and content headers, `X-Herdsman-Stale: 1`, `Cache-Status: herdsman; fwd=stale` (with `fwd-status` when the upstream answered 5xx), `Cache-Control: no-cache`, **no** `ETag` (never a 304) |
/// | failing, no good value | 503, `Retry-After` (the seconds until `next_attempt`, rounded up, at least 1), a plain-text reason; whatever the error |
///
/// `next_attempt` is when the key's loop polls next
/// ([`Subscription::next_attempt`](herdsman::registry::Subscription::next_attempt));
/// `Retry-After` is counted from the moment of this call, so it counts
/// down between polls and matches the loop's next attempt (backoff, or an
/// open breaker's probe time).
pub fn poll_response(
    update: &Update<Response<SharedBody>>,
    next_attempt: Option<Instant>,
    request: &HeaderMap,
) -> Response<Body> {
    match update.result() {
        Ok(value) => {
            let tag = etag(update).expect("a good update has an ETag");
            let mut response = if value.status().is_success() && not_modified(request, &tag) {
                let mut r = Response::new(Body::empty());
                *r.status_mut() = StatusCode::NOT_MODIFIED;
                r
            } else {
                content(value)
            };
            let headers = response.headers_mut();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            headers.insert(header::ETAG, tag);
            response
        }
        Err(err) => match update.last_good() {
            Some(value) => stale(value, err),
            None => unavailable(next_attempt),
        },
    }
}

/// The value's status, body and content headers.
fn content(value: &Response<SharedBody>) -> Response<Body> {
    let mut r = Response::new(Body::from(value.body().data().clone()));
    *r.status_mut() = value.status();
    for name in &HttpFingerprint::CONTENT_HEADERS {
        for v in value.headers().get_all(name) {
            r.headers_mut().append(name.clone(), v.clone());
        }
    }
    r
}

/// A good value served while the key fails, marked stale.
fn stale(value: &Response<SharedBody>, err: &SharedError) -> Response<Body> {
    let mut response = content(value);
    let cache_status = match find::<UpstreamStatus>(err) {
        Some(failed) => {
            let member = format!("herdsman; fwd=stale; fwd-status={}", failed.status());
            HeaderValue::from_str(&member).expect("ASCII")
        }
        None => HeaderValue::from_static("herdsman; fwd=stale"),
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-herdsman-stale", HeaderValue::from_static("1"));
    headers.append("cache-status", cache_status);
    response
}

/// 503 until the next attempt.
fn unavailable(next_attempt: Option<Instant>) -> Response<Body> {
    let wait = next_attempt.map_or(std::time::Duration::ZERO, |at| {
        at.saturating_duration_since(Instant::now())
    });
    let mut r = Response::new(Body::from("upstream unavailable; retry later"));
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = r.headers_mut();
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after_secs(wait)),
    );
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(inm: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(inm).unwrap());
        h
    }

    #[test]
    fn if_none_match_compares_lists_weakly_and_accepts_a_star() {
        let tag = HeaderValue::from_static("\"00000000000000a7\"");
        assert!(not_modified(&with("\"00000000000000a7\""), &tag));
        assert!(not_modified(&with("W/\"00000000000000a7\""), &tag));
        assert!(not_modified(&with("\"1\", \"00000000000000a7\""), &tag));
        assert!(not_modified(&with("*"), &tag));
        assert!(!not_modified(&with("\"00000000000000a70\""), &tag));
        assert!(!not_modified(&HeaderMap::new(), &tag));
    }

    #[test]
    fn ids_are_sixteen_lowercase_hex_digits() {
        assert_eq!(hex_id(0xa7), "00000000000000a7");
        assert_eq!(hex_id(u64::MAX), "ffffffffffffffff");
    }
}
