//! What the poll loop sends upstream, and how it tells a change.

use std::{
    hash::{BuildHasher, Hash},
    mem,
    sync::OnceLock,
};

#[cfg(feature = "http")]
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response};

use super::error::UpstreamStatus;
#[cfg(feature = "http")]
use crate::{
    http::{request_bytes, HttpKey, ServedStale, SharedBody},
    stable_hash::StableHasher,
};

/// Tells whether a polled value changed, and whether it is good at all.
///
/// Equal fingerprints mean "unchanged": subscribers are not notified. The
/// fingerprint is also what identifies a value to clients (the HTTP
/// answers of `herdsman-axum` make their `ETag`s and SSE ids of it), so an
/// implementation whose fingerprints are the same in every process (as
/// [`HttpFingerprint`]'s are) gives ids that hold across loop restarts,
/// processes and replicas.
///
/// Implemented for every `Fn(&T) -> u64`, for [`HashFingerprint`] (any
/// `T: Hash`, seeded per process) and for [`HttpFingerprint`] (HTTP
/// responses, stable everywhere). A 64-bit fingerprint can collide: about
/// 2⁻⁶⁴ per poll of missing one change until the next.
pub trait Fingerprint<T> {
    /// The fingerprint of `value`.
    fn fingerprint(&self, value: &T) -> u64;

    /// Whether `value`, although the inner service returned it as `Ok`, is
    /// the upstream failing: then subscribers get it as an error (with the
    /// last good value still readable) and the loop backs off. Default:
    /// never. [`HttpFingerprint`] says so for a 5xx response.
    fn failure(&self, value: &T) -> Option<UpstreamStatus> {
        let _ = value;
        None
    }

    /// Whether `value` is a stale copy that a layer below (a cache's
    /// stale-if-error) answered with because the upstream failed. The loop
    /// then counts the poll as a failure and backs off, and subscribers get
    /// a [`StaleAnswer`](super::StaleAnswer) error whose good value
    /// ([`Update::good`](super::Update::good)) is that copy. Default: never.
    /// [`HttpFingerprint`] says so for a response marked
    /// [`ServedStale`].
    fn stale(&self, value: &T) -> bool {
        let _ = value;
        false
    }
}

impl<T, F> Fingerprint<T> for F
where
    F: Fn(&T) -> u64,
{
    fn fingerprint(&self, value: &T) -> u64 {
        self(value)
    }
}

fn hasher() -> &'static foldhash::fast::RandomState {
    static STATE: OnceLock<foldhash::fast::RandomState> = OnceLock::new();
    STATE.get_or_init(Default::default)
}

/// Fingerprints any `T: Hash` by hashing it (foldhash, seeded per process).
///
/// The seed is random for each process, so its fingerprints, and the ids
/// made of them, hold only within one process: a client that resumes on
/// another process (or after a restart) is simply sent the current value.
/// Use a stable function (`Fn(&T) -> u64`) where ids must agree across
/// processes.
#[derive(Debug, Clone, Copy, Default)]
pub struct HashFingerprint;

impl<T: Hash> Fingerprint<T> for HashFingerprint {
    fn fingerprint(&self, value: &T) -> u64 {
        hasher().hash_one(value)
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
/// specification. A 5xx response is a [failure](Fingerprint::failure), and a
/// response marked [`ServedStale`] (a cache's stale-if-error copy) is
/// [stale](Fingerprint::stale): subscribers keep a good value and the loop
/// backs off.
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
#[cfg(feature = "http")]
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpFingerprint;

#[cfg(feature = "http")]
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

#[cfg(feature = "http")]
impl Fingerprint<Response<SharedBody>> for HttpFingerprint {
    fn failure(&self, response: &Response<SharedBody>) -> Option<UpstreamStatus> {
        response
            .status()
            .is_server_error()
            .then(|| UpstreamStatus::new(response.status().as_u16()))
    }

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

/// Builds the one request a poll loop sends upstream for its key.
///
/// A subscription is keyed by the key of its request's canonical form, so
/// whatever `canonical` leaves out never splits a key. The loop keeps the
/// canonical form of its first subscriber's request and calls `canonical`
/// on it before every poll, so an implementation must be idempotent. It
/// must keep only what the key is made of: the loop polls on behalf of
/// every subscriber of the key, and one subscriber's other headers must
/// never be sent for the others.
///
/// Implemented for every `Fn(&Req) -> Req`, for [`CloneRequest`] (requests
/// that are their key, such as an id) and for [`HttpKey`], which rebuilds an
/// `http::Request` from the method, URI and the headers in its key.
pub trait Canonical<Req> {
    /// The request to send upstream for the key of `req`.
    fn canonical(&self, req: &Req) -> Req;

    /// The bytes a canonical request holds, its inline size included: the
    /// loop keeps one for as long as its key is polled, and the registry's
    /// memory figure counts it. Default: the inline size only.
    /// [`HttpKey`] counts the URI, the headers and the extensions.
    fn held_bytes(&self, req: &Req) -> usize {
        let _ = req;
        mem::size_of::<Req>()
    }
}

impl<Req, F> Canonical<Req> for F
where
    F: Fn(&Req) -> Req,
{
    fn canonical(&self, req: &Req) -> Req {
        self(req)
    }
}

/// Sends a clone of the first subscriber's request: for request types that
/// hold nothing but what their key is made of.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneRequest;

impl<Req: Clone> Canonical<Req> for CloneRequest {
    fn canonical(&self, req: &Req) -> Req {
        req.clone()
    }
}

#[cfg(feature = "http")]
impl<B: Default> Canonical<Request<B>> for HttpKey {
    fn canonical(&self, req: &Request<B>) -> Request<B> {
        self.canonical_request(req)
    }

    fn held_bytes(&self, req: &Request<B>) -> usize {
        request_bytes(req)
    }
}
