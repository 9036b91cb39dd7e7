//! The Registry's HTTP glue: a fingerprint of HTTP responses that is the
//! same in every process, the canonical poll request of an [`HttpKey`], and
//! [`RegistryLayer::http`], which puts them together with the adapter's
//! sharing and failure classifier.

use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response};

use super::{
    change::{Canonical, Fingerprint},
    RegistryLayer,
};
use crate::{
    class::AllDefault,
    http::{request_bytes, HttpKey, HttpShare, ServedStale, ServerErrors, SharedBody},
    stable_hash::StableHasher,
};

impl RegistryLayer<HttpKey, AllDefault, HttpShare, HttpFingerprint, HttpKey, (), ServerErrors> {
    /// A registry for HTTP services (with [`BufferLayer`](crate::http::BufferLayer)
    /// below it): keyed by `key`, sharing buffered responses, telling
    /// changes with [`HttpFingerprint`] (the same in every process), judging
    /// a 5xx answer a failure with [`ServerErrors`], and keying and polling
    /// with a request rebuilt from the key's parts only
    /// ([`HttpKey::canonical_request`]).
    pub fn http(key: HttpKey) -> Self {
        RegistryLayer::new(key.clone())
            .with_share(HttpShare)
            .with_fingerprint(HttpFingerprint)
            .with_canonical(key)
            .with_failure_classifier(ServerErrors)
    }
}

/// Fingerprints a shared HTTP response so that the same content has the
/// same fingerprint in every process, replica and release, and different
/// content a different one.
///
/// - With a strong `ETag` ([`strong_etag`](Self::strong_etag)): the status
///   and that `ETag`, since the upstream vouches that it identifies the
///   content.
/// - Otherwise: the status, the [content headers](Self::CONTENT_HEADERS)
///   and the body bytes. Headers that change on every response (`Date`,
///   `Age`, `Cache-Status`, `Set-Cookie`, ...) are left out, so an
///   unchanged resource produces no update.
///
/// The hash is XXH3-64 with seed 0 over length-prefixed parts, fixed by its
/// specification. A response marked [`ServedStale`] (a cache's
/// stale-if-error copy) is [stale](Fingerprint::stale): subscribers keep a
/// good value and the loop backs off. Whether an answer is a failure (a 5xx)
/// is not the fingerprint's to say but the failure classifier's
/// ([`RegistryLayer::with_failure_classifier`](RegistryLayer::with_failure_classifier)).
///
/// ```
/// use herdsman::{http::{HttpBody, HttpShare}, registry::{Fingerprint, HttpFingerprint}, share::Share};
/// use http::Response;
///
/// let fingerprint = |date: &str, body: &'static str| {
///     let answer = Response::builder()
///         .header("content-type", "application/json")
///         .header("date", date)
///         .body(HttpBody::<()>::full(body))
///         .unwrap();
///     HttpFingerprint.fingerprint(&HttpShare.share(answer).unwrap())
/// };
/// assert_eq!(fingerprint("Mon", "[]"), fingerprint("Tue", "[]"));
/// assert_ne!(fingerprint("Mon", "[]"), fingerprint("Mon", "[1]"));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpFingerprint;

impl HttpFingerprint {
    /// The headers that describe the content itself (RFC 9110 §8 and
    /// RFC 6266), fingerprinted with the body when there is no strong
    /// `ETag`, and copied onto the polling answers of `herdsman-axum`.
    pub const CONTENT_HEADERS: [HeaderName; 6] = [
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
        header::CONTENT_LANGUAGE,
        header::CONTENT_LOCATION,
        header::CONTENT_RANGE,
        header::CONTENT_DISPOSITION,
    ];

    /// The response's `ETag` if there is exactly one and it is a strong,
    /// well-formed entity tag (RFC 9110 §8.8.3: `"` then `%x21`, `%x23-7E`
    /// or obs-text, then `"`). A weak tag (`W/"..."`) or a malformed one
    /// says nothing certain about the bytes, so the content is
    /// fingerprinted instead.
    ///
    /// ```
    /// use herdsman::registry::HttpFingerprint;
    /// use http::{HeaderMap, HeaderValue};
    ///
    /// let etag = |v: &'static str| {
    ///     let mut h = HeaderMap::new();
    ///     h.insert("etag", HeaderValue::from_static(v));
    ///     HttpFingerprint::strong_etag(&h).is_some()
    /// };
    /// assert!(etag("\"v1\""));
    /// assert!(!etag("W/\"v1\""));
    /// assert!(!etag("v1"));
    /// ```
    pub fn strong_etag(headers: &HeaderMap) -> Option<&HeaderValue> {
        let mut values = headers.get_all(header::ETAG).iter();
        let etag = values.next()?;
        if values.next().is_some() {
            return None;
        }
        let inner = etag.as_bytes().strip_prefix(b"\"")?.strip_suffix(b"\"")?;
        inner
            .iter()
            .all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
            .then_some(etag)
    }
}

impl Fingerprint<Response<SharedBody>> for HttpFingerprint {
    fn stale(&self, response: &Response<SharedBody>) -> bool {
        response.extensions().get::<ServedStale>().is_some()
    }

    fn fingerprint(&self, response: &Response<SharedBody>) -> u64 {
        let mut h = StableHasher::new();
        h.u64(u64::from(response.status().as_u16()));
        if let Some(etag) = Self::strong_etag(response.headers()) {
            return h.u64(1).part(etag.as_bytes()).finish();
        }
        h.u64(0);
        for name in &Self::CONTENT_HEADERS {
            let values = response.headers().get_all(name);
            h.u64(values.iter().count() as u64);
            for value in values {
                h.part(value.as_bytes());
            }
        }
        h.part(response.body().data()).finish()
    }
}

impl<B: Default> Canonical<Request<B>> for HttpKey {
    fn canonical(&self, req: &Request<B>) -> Request<B> {
        self.canonical_request(req)
    }

    fn held_bytes(&self, req: &Request<B>) -> usize {
        request_bytes(req)
    }
}
