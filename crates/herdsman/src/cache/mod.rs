//! Cache: answer repeated requests from memory, bounded by bytes, with
//! stale-while-revalidate, stale-if-error and revalidation; with
//! [`HttpCachePolicy`], a shared HTTP cache
//! (RFC 9111, RFC 5861).
//!
//! A cache hit is the most common request in a coordinated app, so it is the
//! cheapest path in the stack: one key, one sharded read lock, one clock read,
//! one clone of the stored response (for a request without validators whose
//! responses do not vary). [`Cache`] asks a [`KeyFn`](crate::key::KeyFn)
//! for the key, like every coordinating layer; requests without a key pass
//! through.
//!
//! # Freshness
//!
//! Each entry is, by its age (its age when received plus the time stored):
//!
//! - **fresh** (younger than its TTL): served from the cache;
//! - **stale, within stale-while-revalidate**: served at once, while exactly
//!   one background refresh per key runs through the layers below (so Dedup
//!   coalesces it with any concurrent miss); except to a request whose
//!   [`Directive`] is `Current` (HTTP: a registry poll loop's fetch) or
//!   `Refresh`, which waits for the fetch;
//! - **stale, within stale-if-error**: served only when the inner call fails
//!   (an `Err`, such as an open breaker, or a response the policy calls a
//!   failure: HTTP 500, 502, 503, 504); the failure is logged and counted;
//! - **stale, revalidatable** (HTTP: it has an `ETag` or `Last-Modified`):
//!   kept past both windows for one more sweep interval; the request goes
//!   down asking whether it changed (HTTP: `If-None-Match` /
//!   `If-Modified-Since` from the stored response, so identical
//!   revalidations coalesce in Dedup), and a "not changed" answer (`304`)
//!   refreshes the stored headers and serves the stored body;
//! - **beyond all that**: expired, and removed (see [Expiry](#expiry)).
//!
//! How long an entry is fresh and how long it may be served stale is the
//! policy's call ([`CachePolicy::freshness`]) within its class's
//! [`ClassSettings`]. Who decides is the class's [`CacheMode`]: in
//! [`App`](CacheMode::App) mode (the default) the class TTL, capped by what
//! the response says; in [`Origin`](CacheMode::Origin) mode what the
//! response says (RFC 9111), capped by the class TTL.
//!
//! Errors are never stored. With the HTTP policy, responses with listed
//! statuses can be stored for their own short TTL (negative caching).
//!
//! # Conditions and variants
//!
//! A caller's validators (HTTP `If-None-Match`, `If-Modified-Since`) are
//! taken out of its request before it is keyed ([`CachePolicy::take_conditions`]):
//! they never split an entry, the request goes down unconditional on a miss
//! (so its answer can be stored), and the cache answers them itself on the
//! way out (`304` when they match), as a shared cache does. A bypassed or
//! unkeyed request keeps them.
//!
//! A response that varies on request headers ([`CachePolicy::vary`], HTTP
//! `Vary`) is filed per combination of their values: the primary key holds
//! a marker with the header names, and each variant its own entry, weighed
//! and evicted like any other. A lookup that finds a marker computes the
//! request's variant key (a second key, for these responses only). `Vary:
//! *` is never stored.
//!
//! # Store
//!
//! The store is [quick_cache] (S3-FIFO eviction, sharded read/write locks),
//! bounded by the sum of entry weights: the policy's weight of the value (for
//! HTTP: headers and body), plus the key, plus a fixed per-entry overhead. An
//! optional entry limit is enforced by giving each entry a minimum weight of
//! `max_bytes / max_entries`. One store belongs to each [`CacheLayer`] value:
//! every service made from it, and every clone, share it.
//!
//! Behind it, a [`StoreBackend`](crate::backend::StoreBackend) set with
//! [`CacheLayer::with_store_backend`] is a second level that replicas
//! share: asked on a miss of the local store (the inner service is called
//! only if it has nothing), written through when the local store stores,
//! and invalidated with it. By default there is none
//! ([`LocalStore`](crate::backend::LocalStore)). Its answers are hits,
//! counted apart as well ([`CacheStats::backend_hits`],
//! [`Event::CacheBackendHit`](crate::event::Event::CacheBackendHit)). An
//! invalidation that lands while an answer fetched before it is being
//! written through is not undone by the write: the cache checks the
//! path's invalidation generation again after writing, and drops the key
//! from the backend once more if it moved.
//!
//! # Expiry
//!
//! An entry is expired when nothing can use it any more: past its TTL and
//! both stale windows, and, for one that can be revalidated, one sweep
//! interval ([`CacheLayer::with_sweep_interval`]) later. A validator lets
//! a `304` revive a stale entry, but holding every such entry until the byte
//! bound pushes it out would keep a flood of one-off keys in memory for as
//! long as nothing else is stored; one interval of grace keeps what is asked
//! for again soon. A `Vary` marker expires with the last of its variants; a
//! variant whose marker went first (evicted or invalidated), unreachable
//! from then on, expires in its own time.
//!
//! Expired entries are removed by the lookup that finds them, and by a
//! sweep: one task per store, started on the current tokio runtime by the
//! first miss (a hit never checks), that visits every entry once per
//! interval, under one shard's write lock at a time, and removes up to
//! 10,000 per pass, yielding to the runtime between passes. It holds the
//! store only while it sweeps, and ends at its next tick once the layer,
//! its services and its handles are dropped. The store's weight, and so
//! [`CacheHandle`]'s memory figure, drops with every removal; removals are
//! counted in [`CacheStats::expired`]. [`CacheHandle::sweep`] sweeps at
//! once.
//!
//! TTLs, stale windows are per endpoint class ([`CacheLayer::with_class`]),
//! with a [`Classify`](crate::class::Classify) naming each request's class.
//!
//! # Background refresh
//!
//! A stale-while-revalidate refresh is spawned on the current tokio runtime
//! with a clone of the inner service and the request that found the entry
//! stale (the key includes its credentials, so it fetches what that caller may
//! see). Outside a runtime no refresh is spawned: the stale copy is served
//! until the window ends.
//!
//! # Invalidation
//!
//! [`CacheHandle`] removes entries by key, by class, by path or by path
//! prefix; path and prefix scans visit every entry (they are for writes, not
//! for the request path). With the HTTP policy, a successful `POST`, `PUT`,
//! `PATCH` or `DELETE` invalidates the entries for its path, and for the
//! paths of a same-origin `Location` and `Content-Location` in its response
//! (RFC 9111 §4.4).
//!
//! **Write after read.** A fetch records the invalidation generation of its
//! key's path when its call begins; every invalidation moves the generation
//! of the paths it covers on before it removes their entries. A fetch that
//! began before a write therefore never stores its (possibly older) answer
//! after the write's invalidation: its caller gets it, the cache does not
//! keep it. Generations are counted in 64 stripes by path hash: two paths
//! sharing one only cost a fetch its store.
//!
//! Every invalidation, by hand or by an unsafe request, is announced on
//! [`CacheHandle::invalidations`] (the Registry follows it with an immediate
//! poll of the keys it covers).
//!
//! # Events
//!
//! With [`CacheLayer::with_observer`], each request with a key reports one of
//! [`Event::CacheHit`](crate::event::Event::CacheHit) (fresh),
//! [`Event::CacheBackendHit`](crate::event::Event::CacheBackendHit) (fresh,
//! from the store backend),
//! [`Event::StaleServed`](crate::event::Event::StaleServed)
//! (stale-while-revalidate) or [`Event::CacheMiss`](crate::event::Event::CacheMiss)
//! (sent down the stack, forced refreshes and revalidations included); a
//! miss whose failure is
//! answered with a stale copy (stale-if-error) then reports `StaleServed`
//! too, as the counters of [`CacheStats`] do. Bypassing and invalidating
//! requests report nothing. A hit classifies its request only when an
//! observer is set. [`CacheHandle`] is the store's
//! [`MemorySource`](crate::event::MemorySource) (its weight in bytes).
//!
//! # Time
//!
//! An entry's age is read on the store's clock, once per lookup. By default
//! that is [`Clock::Fast`](crate::clock::Clock::Fast), the CPU's
//! time-stamp counter (about 12 ns, against about 32 ns for the OS clock
//! `tokio::time::Instant` reads: the largest item of a hit's cost before).
//! It does not follow a paused tokio clock: tests that pause time and
//! expire entries with `tokio::time::advance` build the layer
//! [`with_clock`](CacheLayer::with_clock)`(`[`Clock::Tokio`](crate::clock::Clock::Tokio)`)`
//! (the Coordinator does in `Environment::Test`). The sweep task and a
//! background refresh's timing always run on tokio's timers.
//!
//! # Examples
//!
//! ```
//! use herdsman::{cache::CacheLayer, key::Key};
//! use std::{convert::Infallible, time::Duration};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let cache = CacheLayer::new(|id: &u64| Some(Key::from(*id)))
//!     .with_ttl(Duration::from_secs(5))
//!     .with_stale_while_revalidate(Duration::from_secs(30));
//! let svc = ServiceBuilder::new()
//!     .layer(cache.clone())
//!     .service(service_fn(|id: u64| async move { Ok::<_, Infallible>(format!("user {id}")) }));
//!
//! assert_eq!(svc.clone().oneshot(7).await.unwrap(), "user 7"); // miss: stored
//! assert_eq!(svc.clone().oneshot(7).await.unwrap(), "user 7"); // hit
//! let stats = cache.handle().stats();
//! assert_eq!((stats.hits, stats.misses), (1, 1));
//! # }
//! ```
//!
#![cfg_attr(
    not(feature = "http"),
    doc = "[`HttpCachePolicy`]: crate#feature-flags"
)]

#[cfg(feature = "http")]
pub(crate) mod freshness;
mod future;
mod handle;
#[cfg(feature = "http")]
mod http;
mod layer;
mod policy;
mod service;
mod store;
mod sweep;

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use self::http::HttpCachePolicy;
pub use self::{
    future::ResponseFuture,
    handle::CacheHandle,
    layer::{CacheLayer, ClassSettings, DEFAULT_MAX_BYTES, DEFAULT_TTL},
    policy::{
        CacheMode, CachePolicy, Conditions, Directive, Freshness, Outcome, UnsafeRequest, Vary,
    },
    service::Cache,
    sweep::DEFAULT_SWEEP_INTERVAL,
};

/// Counters and size of one cache store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Requests answered fresh from the cache: from this process's store,
    /// or from the store backend.
    pub hits: u64,
    /// Of `hits`, those the store backend (the second level, see
    /// [`CacheLayer::with_store_backend`]) answered after a miss of this
    /// process's store. Zero with the default [`LocalStore`](crate::backend::LocalStore).
    pub backend_hits: u64,
    /// Requests that went to the inner service (including forced refreshes).
    pub misses: u64,
    /// Stale responses served while a refresh ran.
    pub stale_while_revalidate: u64,
    /// Stale responses served because the inner call failed.
    pub stale_if_error: u64,
    /// Background refreshes started.
    pub refreshes: u64,
    /// Stale entries the inner service confirmed unchanged (HTTP: `304`),
    /// served from the cache with their headers refreshed.
    pub revalidated: u64,
    /// Responses stored.
    pub stored: u64,
    /// Responses the policy kept out of the cache (or too large to store).
    pub not_stored: u64,
    /// Requests that asked to bypass the cache.
    pub bypassed: u64,
    /// Entries removed by invalidation.
    pub invalidated: u64,
    /// Entries removed because nothing could use them any more (by the
    /// sweep, or by the lookup that found them so); see
    /// [Expiry](crate::cache#expiry).
    pub expired: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes held now (sum of entry weights).
    pub bytes: u64,
    /// The byte bound.
    pub max_bytes: u64,
}
