//! What the poll loop sends upstream, and how it tells a change.

use std::{
    hash::{BuildHasher, Hash},
    mem,
    sync::OnceLock,
};

/// Tells whether a polled value changed, and whether it is good at all.
///
/// Equal fingerprints mean "unchanged": subscribers are not notified. The
/// fingerprint is also what identifies a value to clients (the HTTP
/// answers of `herdsman-axum` make their `ETag`s and SSE ids of it), so an
/// implementation whose fingerprints are the same in every process (as
/// [`HttpFingerprint`][super::HttpFingerprint]'s are) gives ids that hold across loop restarts,
/// processes and replicas.
///
/// Implemented for every `Fn(&T) -> u64`, for [`HashFingerprint`] (any
/// `T: Hash`, seeded per process) and for [`HttpFingerprint`][super::HttpFingerprint] (HTTP
/// responses, stable everywhere). A 64-bit fingerprint can collide: about
/// 2⁻⁶⁴ per poll of missing one change until the next.
///
#[cfg_attr(
    not(feature = "http"),
    doc = "[super::HttpFingerprint]: crate#feature-flags"
)]
pub trait Fingerprint<T> {
    /// The fingerprint of `value`.
    fn fingerprint(&self, value: &T) -> u64;

    /// Whether `value` is a stale copy that a layer below (a cache's
    /// stale-if-error) answered with because the upstream failed. The loop
    /// then counts the poll as a failure and backs off, and subscribers get
    /// a [`StaleAnswer`](super::StaleAnswer) error whose good value
    /// ([`Update::good`](super::Update::good)) is that copy. Default: never.
    /// [`HttpFingerprint`][super::HttpFingerprint] says so for a response marked
    /// [`ServedStale`][crate::http::ServedStale].
    ///
    #[cfg_attr(
        not(feature = "http"),
        doc = "[super::HttpFingerprint]: crate#feature-flags"
    )]
    #[cfg_attr(
        not(feature = "http"),
        doc = "[crate::http::ServedStale]: crate#feature-flags"
    )]
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
/// that are their key, such as an id) and for [`HttpKey`][crate::http::HttpKey], which rebuilds an
/// `http::Request` from the method, URI and the headers in its key.
///
#[cfg_attr(
    not(feature = "http"),
    doc = "[crate::http::HttpKey]: crate#feature-flags"
)]
pub trait Canonical<Req> {
    /// The request to send upstream for the key of `req`.
    fn canonical(&self, req: &Req) -> Req;

    /// The bytes a canonical request holds, its inline size included: the
    /// loop keeps one for as long as its key is polled, and the registry's
    /// memory figure counts it. Default: the inline size only.
    /// [`HttpKey`][crate::http::HttpKey] counts the URI, the headers and the extensions.
    ///
    #[cfg_attr(
        not(feature = "http"),
        doc = "[crate::http::HttpKey]: crate#feature-flags"
    )]
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
