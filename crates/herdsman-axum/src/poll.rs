//! The polling endpoint: the current value with an `ETag`, 304 when the
//! client is current.

use axum::{
    body::Body,
    http::{header, HeaderMap, HeaderValue, Response, StatusCode},
};
use herdsman::{http::SharedBody, registry::Update};

use crate::error::error_response;

/// The `ETag` of a version: `"<version>"` (a strong validator: one version
/// is one exact body).
pub fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits and quotes are valid")
}

/// Whether `If-None-Match` in `headers` matches `etag` (RFC 9110 §13.1.2:
/// a list of entity tags or `*`, compared weakly).
pub fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let etag = strip_weak(etag.as_bytes());
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || strip_weak(tag.as_bytes()) == etag)
}

fn strip_weak(tag: &[u8]) -> &[u8] {
    tag.strip_prefix(b"W/").unwrap_or(tag)
}

/// The polling response for one update of an HTTP registry key.
///
/// - The value: its status, `Content-Type` and body, with `ETag` from the
///   version and `Cache-Control: no-cache` (the client revalidates every
///   time, and a 304 costs no upstream call).
/// - `If-None-Match` matching the version: 304 with the same headers.
/// - An error: the last good value if there is one, served stale (no
///   `ETag`, and `X-Herdsman-Stale: 1`); otherwise the error's response
///   (503 + `Retry-After` while the breaker is open, ...).
pub fn poll_response(update: &Update<Response<SharedBody>>, request: &HeaderMap) -> Response<Body> {
    let tag = etag(update.version());
    let (value, stale) = match update.result() {
        Ok(value) => (value, false),
        Err(err) => match update.last_good() {
            Some(value) => (value, true),
            None => return error_response(err),
        },
    };
    let mut response = if !stale && value.status().is_success() && not_modified(request, &tag) {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Body::from(value.body().data().clone()));
        *r.status_mut() = value.status();
        if let Some(ct) = value.headers().get(header::CONTENT_TYPE) {
            r.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
        }
        r
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if !stale {
        headers.insert(header::ETAG, tag);
    } else {
        headers.insert("x-herdsman-stale", HeaderValue::from_static("1"));
    }
    response
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
        let tag = etag(7);
        assert!(not_modified(&with("\"7\""), &tag));
        assert!(not_modified(&with("W/\"7\""), &tag));
        assert!(not_modified(&with("\"1\", \"7\""), &tag));
        assert!(not_modified(&with("*"), &tag));
        assert!(!not_modified(&with("\"70\""), &tag));
        assert!(!not_modified(&HeaderMap::new(), &tag));
    }
}
