use std::{sync::Arc, time::Duration};

use http::{HeaderMap, HeaderName, HeaderValue};
#[cfg(feature = "config")]
use serde::{Deserialize, Serialize};

use super::ClassSettings;
use crate::share::Share;

/// How a request wants the cache to treat it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    /// Serve from the cache when fresh; store the response.
    Normal,
    /// Do not serve from the cache; fetch (coalesced below), then store.
    /// HTTP: request `Cache-Control: no-cache`.
    Refresh,
    /// Serve from the cache when fresh; a stale entry is never served while
    /// revalidating: the request waits for the fetch (revalidation), and
    /// gets the stale copy only where stale-if-error stands in for a
    /// failure. For callers that keep the answer and refresh it on their own
    /// schedule, such as a registry poll loop. HTTP: a request carrying
    /// [`PollFetch`][crate::http::PollFetch].
    ///
    #[cfg_attr(
        not(feature = "http"),
        doc = "[crate::http::PollFetch]: crate#feature-flags"
    )]
    Current,
    /// Neither read nor write the cache. HTTP: request `Cache-Control: no-store`.
    Bypass,
}

/// How a response was answered, for [`CachePolicy::decorate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Served fresh from the cache.
    Hit,
    /// Fetched from the inner service; `stored` says whether it was kept.
    Miss {
        /// Whether the response was stored.
        stored: bool,
    },
    /// Fetched because the request asked for a refresh.
    Refreshed {
        /// Whether the response was stored.
        stored: bool,
    },
    /// A stored response was revalidated and the inner service said it had
    /// not changed: the stored response, refreshed, answered.
    Revalidated {
        /// Whether the refreshed response was stored again.
        stored: bool,
    },
    /// Served stale while one background refresh runs.
    StaleWhileRevalidate {
        /// How long ago the entry turned stale.
        staleness: Duration,
    },
    /// Served stale because the inner call failed.
    StaleIfError {
        /// How long ago the entry turned stale.
        staleness: Duration,
    },
}

/// Who decides how long a stored response is fresh.
///
/// Set per class ([`ClassSettings::mode`]) or for the whole cache
/// ([`CacheLayer::with_mode`](super::CacheLayer::with_mode)); the
/// configuration's `cache.mode`. The policy reads it: with
/// [`HttpCachePolicy`][super::HttpCachePolicy], responses carry their
/// own freshness; the default policy has none, so the class TTL decides in
/// both modes.
///
#[cfg_attr(
    not(feature = "http"),
    doc = "[super::HttpCachePolicy]: crate#feature-flags"
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "config", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "config", serde(rename_all = "lowercase"))]
pub enum CacheMode {
    /// The application decides: the class TTL, capped by the response's own
    /// lifetime (`max-age`, `Expires`). For an app's own endpoints, whose
    /// responses usually say nothing about caching.
    #[default]
    App,
    /// The origin decides, as a shared HTTP cache does (RFC 9111 §4.2): the
    /// response's explicit lifetime, else a heuristic one where §4.2.2 allows
    /// it, else none (stored only to be revalidated, when it has a
    /// validator); the class TTL caps it. For a cache in front of an API
    /// that sends `Cache-Control`.
    Origin,
}

/// How long a response may be used, as the policy decides it for
/// [`CachePolicy::freshness`]. All durations count from when the response
/// was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Freshness {
    /// How long it is fresh (zero: every use needs a revalidation).
    pub ttl: Duration,
    /// How long after it turns stale it may be served while one refresh
    /// runs.
    pub stale_while_revalidate: Duration,
    /// How long after it turns stale it may stand in for a failed call.
    pub stale_if_error: Duration,
    /// Its age when received (added to the time stored for `Age`).
    pub age: Duration,
    /// It can be revalidated ([`CachePolicy::revalidate`]): it is kept once
    /// stale, and a request that finds it stale asks the inner service
    /// whether it changed.
    pub revalidate: bool,
}

impl Freshness {
    /// Fresh for `ttl`, no stale windows, age zero, no revalidation.
    pub fn new(ttl: Duration) -> Self {
        Freshness {
            ttl,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            age: Duration::ZERO,
            revalidate: false,
        }
    }

    /// Sets the stale-while-revalidate window.
    pub fn with_stale_while_revalidate(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = window;
        self
    }

    /// Sets the stale-if-error window.
    pub fn with_stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = window;
        self
    }

    /// Sets the age the response had when received.
    pub fn with_age(mut self, age: Duration) -> Self {
        self.age = age;
        self
    }

    /// Marks the response as one that can be revalidated.
    pub fn with_revalidation(mut self, on: bool) -> Self {
        self.revalidate = on;
        self
    }

    /// Whether the response could ever be used: fresh for a while, servable
    /// stale, or revalidatable.
    pub(crate) fn usable(&self) -> bool {
        !self.ttl.is_zero()
            || !self.stale_while_revalidate.is_zero()
            || !self.stale_if_error.is_zero()
            || self.revalidate
    }
}

impl From<&ClassSettings> for Freshness {
    fn from(class: &ClassSettings) -> Self {
        Freshness::new(class.ttl)
            .with_stale_while_revalidate(class.stale_while_revalidate)
            .with_stale_if_error(class.stale_if_error)
    }
}

/// The validators a caller sent (HTTP: `If-None-Match`,
/// `If-Modified-Since`), taken out of its request by
/// [`CachePolicy::take_conditions`] so that they never split a cache entry,
/// and answered by the cache itself ([`CachePolicy::answer_conditions`]).
///
/// Empty (and free: nothing is allocated) for a request without them.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    pub(crate) if_none_match: Vec<HeaderValue>,
    pub(crate) if_modified_since: Option<HeaderValue>,
}

impl Conditions {
    /// No conditions.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.if_none_match.is_empty() && self.if_modified_since.is_none()
    }
}

/// The request headers a response varies on (HTTP `Vary`, RFC 9111 §4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vary {
    /// The response is the same whatever the request's headers.
    None,
    /// One stored response per combination of these request headers'
    /// values.
    Headers(Arc<[HeaderName]>),
    /// The response depends on more than headers (`Vary: *`): never reused.
    Any,
}

/// What the cache remembers of an unsafe request until its response says
/// whether it succeeded: the path it invalidates and where it was sent.
#[derive(Debug, Clone)]
pub struct UnsafeRequest {
    path: Vec<u8>,
    authority: Option<Vec<u8>>,
}

impl UnsafeRequest {
    /// A request whose success invalidates `path`.
    pub fn new(path: impl Into<Vec<u8>>) -> Self {
        UnsafeRequest {
            path: path.into(),
            authority: None,
        }
    }

    /// The authority it was sent to (HTTP: the URI's, else `Host`), to tell
    /// same-origin `Location`s from others.
    pub fn with_authority(mut self, authority: impl Into<Vec<u8>>) -> Self {
        self.authority = Some(authority.into());
        self
    }

    /// The path it invalidates.
    pub fn path(&self) -> &[u8] {
        &self.path
    }

    /// The authority it was sent to, if known.
    pub fn authority(&self) -> Option<&[u8]> {
        self.authority.as_deref()
    }
}

/// What the cache asks of requests and responses; the HTTP rules live in
/// [`HttpCachePolicy`][super::HttpCachePolicy].
///
/// Every method has a default that suits plain `Clone` responses, so
/// `CloneShare` is a policy as it is: every response is stored for the
/// class's TTL and windows, nothing is a failure, nothing invalidates, no
/// request carries conditions, nothing varies or revalidates.
///
#[cfg_attr(
    not(feature = "http"),
    doc = "[super::HttpCachePolicy]: crate#feature-flags"
)]
pub trait CachePolicy<Req, T>: Share<T> {
    /// How `req` wants the cache.
    fn directive(&self, _req: &Req) -> Directive {
        Directive::Normal
    }

    /// Takes the caller's validators out of `req` before it is keyed, so
    /// that they never split an entry and the request goes down
    /// unconditional (its answer storable). Called for requests that are not
    /// bypassed; given back with [`restore_conditions`](Self::restore_conditions)
    /// if the request turns out not to be cached.
    fn take_conditions(&self, _req: &mut Req) -> Conditions {
        Conditions::none()
    }

    /// Puts conditions taken from `req` back.
    fn restore_conditions(&self, _req: &mut Req, _conditions: Conditions) {}

    /// Answers the caller's conditions on the response it is about to get
    /// (HTTP: `304 Not Modified` when its validators match).
    fn answer_conditions(&self, _response: &mut T, _conditions: &Conditions) {}

    /// How long `response` may be used, given its class's settings and how
    /// long the inner call took; `None` keeps it out of the cache.
    fn freshness(
        &self,
        _response: &T,
        class: &ClassSettings,
        _delay: Duration,
    ) -> Option<Freshness> {
        Some(Freshness::from(class))
    }

    /// Whether `response`, though not an `Err`, is a failure that a stale copy
    /// may stand in for (stale-if-error). HTTP: 500, 502, 503, 504.
    fn is_failure(&self, _response: &T) -> bool {
        false
    }

    /// The bytes one stored response holds (the store is bounded by the sum).
    /// The default is the [`Share`] policy's
    /// [`held_bytes`](Share::held_bytes): headers and body for
    /// [`HttpCachePolicy`][super::HttpCachePolicy]; otherwise the
    /// value's inline size, which undercounts values that own heap memory:
    /// give such caches a [`with_weigher`](super::CacheLayer::with_weigher).
    ///
    #[cfg_attr(
        not(feature = "http"),
        doc = "[super::HttpCachePolicy]: crate#feature-flags"
    )]
    fn weigh(&self, shared: &Self::Shared) -> usize {
        self.held_bytes(shared)
    }

    /// Adds what the caller should see about the cache (HTTP: `Age`,
    /// `Cache-Status`).
    fn decorate(&self, _response: &mut T, _outcome: Outcome, _age: Duration) {}

    /// The request headers `response` varies on (HTTP: its `Vary`).
    fn vary(&self, _response: &T) -> Vary {
        Vary::None
    }

    /// The headers of `req` that a [`Vary`] names, to pick or file its
    /// variant. `None`: the request has no headers, and a varying response
    /// is not stored.
    fn request_headers<'a>(&self, _req: &'a Req) -> Option<&'a HeaderMap> {
        None
    }

    /// Makes `req` ask whether `stored` is still current (HTTP: adds
    /// `If-None-Match` and `If-Modified-Since` from its validators); `false`
    /// when it cannot.
    fn revalidate(&self, _req: &mut Req, _stored: &Self::Shared) -> bool {
        false
    }

    /// Whether `response` answers a revalidation with "not changed" (HTTP:
    /// `304`).
    fn not_modified(&self, _response: &T) -> bool {
        false
    }

    /// The stored response updated by a "not changed" answer (HTTP: the
    /// stored body with the `304`'s headers, RFC 9111 §4.3.4).
    fn freshen(&self, stored: &Self::Shared, _not_modified: T) -> T {
        self.unshare(stored)
    }

    /// What a successful `req` invalidates (HTTP: the path of a `POST`,
    /// `PUT`, `PATCH` or `DELETE`, RFC 9111 §4.4).
    fn invalidates(&self, _req: &Req) -> Option<UnsafeRequest> {
        None
    }

    /// Further paths a successful unsafe request invalidates, read from its
    /// response (HTTP: a same-origin `Location` and `Content-Location`).
    fn also_invalidates(&self, _request: &UnsafeRequest, _response: &T) -> Vec<Vec<u8>> {
        Vec::new()
    }

    /// Whether `response` is a success, for invalidation by unsafe requests.
    fn succeeded(&self, _response: &T) -> bool {
        true
    }
}

impl<Req, T> CachePolicy<Req, T> for crate::share::CloneShare where T: Clone + Send + Sync + 'static {}
