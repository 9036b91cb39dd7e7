//! What the poll loop sends upstream, and how it tells a change.

use std::{
    hash::{BuildHasher, Hash, Hasher},
    sync::OnceLock,
};

use http::{header, Request, Response};

use super::error::UpstreamStatus;
use crate::http::{HttpKey, SharedBody};

/// Tells whether a polled value changed: equal fingerprints mean "unchanged",
/// and subscribers are not notified.
///
/// Implemented for every `Fn(&T) -> u64`, for [`HashFingerprint`] (any
/// `T: Hash`) and for [`HttpFingerprint`] (HTTP responses). A 64-bit
/// fingerprint can collide; with a per-process random seed that is a chance
/// of about 2⁻⁶⁴ per poll of missing one change until the next.
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
#[derive(Debug, Clone, Copy, Default)]
pub struct HashFingerprint;

impl<T: Hash> Fingerprint<T> for HashFingerprint {
    fn fingerprint(&self, value: &T) -> u64 {
        hasher().hash_one(value)
    }
}

/// Fingerprints a shared HTTP response by its status and `ETag` when it has
/// one, otherwise by its status and body bytes. A 5xx response is a
/// [failure](Fingerprint::failure): subscribers keep the last good value.
///
/// Other headers (`Date`, `Age`, ...) change on every response and are left
/// out, so an unchanged resource produces no update.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpFingerprint;

impl Fingerprint<Response<SharedBody>> for HttpFingerprint {
    fn failure(&self, response: &Response<SharedBody>) -> Option<UpstreamStatus> {
        response
            .status()
            .is_server_error()
            .then(|| UpstreamStatus::new(response.status().as_u16()))
    }

    fn fingerprint(&self, response: &Response<SharedBody>) -> u64 {
        let mut h = hasher().build_hasher();
        response.status().as_u16().hash(&mut h);
        match response.headers().get(header::ETAG) {
            Some(etag) => {
                h.write_u8(1);
                etag.as_bytes().hash(&mut h);
            }
            None => {
                h.write_u8(0);
                response.body().data()[..].hash(&mut h);
            }
        }
        h.finish()
    }
}

/// Builds the one request a poll loop sends upstream for its key.
///
/// The loop keeps the canonical form of its first subscriber's request and
/// calls `canonical` on it before every poll, so an implementation must be
/// idempotent. It must keep only what the key is made of: the loop polls on
/// behalf of every subscriber of the key, and one subscriber's other headers
/// must never be sent for the others.
///
/// Implemented for every `Fn(&Req) -> Req`, for [`CloneRequest`] (requests
/// that are their key, such as an id) and for [`HttpKey`], which rebuilds an
/// `http::Request` from the method, URI and the headers in its key.
pub trait Canonical<Req> {
    /// The request to send upstream for the key of `req`.
    fn canonical(&self, req: &Req) -> Req;
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

impl<B: Default> Canonical<Request<B>> for HttpKey {
    fn canonical(&self, req: &Request<B>) -> Request<B> {
        self.canonical_request(req)
    }
}
