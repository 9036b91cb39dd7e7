use std::time::Duration;

use crate::share::Share;

/// How a request wants the cache to treat it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    /// Serve from the cache when fresh; store the response.
    Normal,
    /// Do not serve from the cache; fetch (coalesced below), then store.
    /// HTTP: request `Cache-Control: no-cache`.
    Refresh,
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

/// What the cache asks of requests and responses; the HTTP rules live in
/// [`HttpCachePolicy`](crate::http::HttpCachePolicy).
///
/// Every method has a default that suits plain `Clone` responses, so
/// `CloneShare` is a policy as it is: every response is stored for the TTL,
/// nothing is a failure, nothing invalidates.
pub trait CachePolicy<Req, T>: Share<T> {
    /// How `req` wants the cache.
    fn directive(&self, _req: &Req) -> Directive {
        Directive::Normal
    }

    /// How long to keep `response`, given the TTL configured for its class;
    /// `None` keeps it out of the cache.
    fn ttl(&self, _response: &T, configured: Duration) -> Option<Duration> {
        Some(configured)
    }

    /// Whether `response`, though not an `Err`, is a failure that a stale copy
    /// may stand in for (stale-if-error). HTTP: 500, 502, 503, 504.
    fn is_failure(&self, _response: &T) -> bool {
        false
    }

    /// The bytes one stored response holds (the store is bounded by the sum).
    /// The default is the [`Share`] policy's
    /// [`held_bytes`](Share::held_bytes): headers and body for
    /// [`HttpCachePolicy`](crate::http::HttpCachePolicy); otherwise the
    /// value's inline size, which undercounts values that own heap memory:
    /// give such caches a [`with_weigher`](super::CacheLayer::with_weigher).
    fn weigh(&self, shared: &Self::Shared) -> usize {
        self.held_bytes(shared)
    }

    /// Adds what the caller should see about the cache (HTTP: `Age`,
    /// `Cache-Status`).
    fn decorate(&self, _response: &mut T, _outcome: Outcome, _age: Duration) {}

    /// The path whose entries a successful `req` invalidates (HTTP: the path of
    /// a `POST`, `PUT`, `PATCH` or `DELETE`, RFC 9111 §4.4).
    fn invalidates(&self, _req: &Req) -> Option<Vec<u8>> {
        None
    }

    /// Whether `response` is a success, for invalidation by unsafe requests.
    fn succeeded(&self, _response: &T) -> bool {
        true
    }
}

impl<Req, T> CachePolicy<Req, T> for crate::share::CloneShare where T: Clone + Send + Sync + 'static {}
