//! The generic stacks compared in the `stack` benchmark, each a cache hit
//! on `u64` requests, built with `tower::ServiceBuilder` outer to inner:
//!
//! - herdsman: Stats → Cache → Dedup → Breaker → Limit (`DESIGN.md`'s order
//!   without the registry), every layer with its defaults, the cache as in
//!   [`caches::herdsman`](crate::caches::herdsman) ([`TTL`], keyed by
//!   [`key_of`]), the limit as in
//!   [`limiters::herdsman_concurrency`](crate::limiters::herdsman_concurrency);
//! - tower-resilience 0.13: cache → coalesce → circuit breaker → bulkhead,
//!   its four layers that do the same jobs (it has no stats layer; the
//!   breaker's error is put in an `Arc` for coalesce, which clones it), each as
//!   the single-layer benchmarks build it: the cache with [`TTL`], the
//!   breaker with its defaults, the bulkhead with
//!   [`MAX_CONCURRENT`] permits rejecting when full.

use std::{convert::Infallible, fmt, sync::Arc};

use herdsman::{
    breaker::BreakerLayer,
    cache::{CacheHandle, CacheLayer},
    class::AllDefault,
    dedup::DedupLayer,
    limit::{ClassLimits, LimitLayer},
    stats::Stats,
};
use tower::{Service, ServiceBuilder};
use tower_resilience::{
    bulkhead::BulkheadLayer, cache::CacheLayer as TrCacheLayer,
    circuitbreaker::CircuitBreakerLayer, coalesce::CoalesceLayer,
};

use crate::{caches::TTL, limiters::MAX_CONCURRENT, peers::key_of};

/// herdsman's generic stack over `inner`, with the handles to check that
/// every request after the first was a hit.
pub fn herdsman<S>(
    inner: S,
) -> (
    impl Service<u64, Response = u64, Error = impl fmt::Debug> + Clone + Send + 'static,
    Stats,
    CacheHandle<u64>,
)
where
    S: Service<u64, Response = u64, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let stats = Stats::new();
    let cache = CacheLayer::new(key_of)
        .with_ttl(TTL)
        .with_max_bytes(64 << 20);
    let handle = cache.handle();
    let svc = ServiceBuilder::new()
        .layer(stats.layer(AllDefault))
        .layer(cache)
        .layer(DedupLayer::new(key_of))
        .layer(BreakerLayer::new())
        .layer(LimitLayer::new(ClassLimits::new(MAX_CONCURRENT)))
        .service(inner);
    (svc, stats, handle)
}

/// tower-resilience's four-layer stack over `inner`.
pub fn tower_resilience<S>(
    inner: S,
) -> impl Service<u64, Response = u64, Error = impl fmt::Debug> + Clone + Send + 'static
where
    S: Service<u64, Response = u64, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    let cache = TrCacheLayer::builder()
        .max_size(1024)
        .ttl(TTL)
        .key_extractor(|req: &u64| *req)
        .build()
        .expect("a key extractor is set");
    let breaker = CircuitBreakerLayer::builder()
        .build()
        .expect("the default settings are valid");
    let bulkhead = BulkheadLayer::builder()
        .max_concurrent_calls(MAX_CONCURRENT)
        .reject_when_full()
        .build()
        .expect("the settings are valid");
    ServiceBuilder::new()
        .layer(cache)
        .layer(CoalesceLayer::new(|req: &u64| *req))
        // Coalesce shares one error among its waiters: it needs a `Clone`
        // error, which the breaker's is not.
        .map_err(Arc::new)
        .layer(breaker)
        .layer(bulkhead)
        .service(inner)
}
