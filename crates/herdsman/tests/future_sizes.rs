//! The size of each layer's response future around a small inner one.
//!
//! A response future is returned by value and moved into each `.await`
//! above it; nested layers add up. A state only a slow path needs (a
//! queued request, a leader waiting for a flight backend) is boxed, so that
//! the fast path's future stays its inner future plus a word or two, and the
//! generic stack's fits in the 128 bytes a move copies inline (a larger one
//! is a call to `memcpy`, which was 14 % of the stack hit's time;
//! docs/BENCHMARKS.md, section 15).

use std::{
    convert::Infallible,
    future::{ready, Ready},
    mem::size_of,
    time::Duration,
};

use herdsman::{
    breaker::BreakerLayer,
    cache::CacheLayer,
    class::AllDefault,
    dedup::DedupLayer,
    key::Key,
    limit::{ClassLimits, LimitLayer},
    stats::Stats,
};
use tower::{limit::ConcurrencyLimitLayer, service_fn, Layer, Service};

fn key_of(req: &u64) -> Option<Key> {
    Some(Key::from(*req))
}

fn echo(req: u64) -> Ready<Result<u64, Infallible>> {
    ready(Ok(req))
}

fn future_size<S: Service<u64>>(_: &S) -> usize {
    size_of::<S::Future>()
}

#[tokio::test]
async fn each_layer_adds_a_few_words_and_the_stack_is_moved_inline() {
    let inner = service_fn(echo);
    let tower_limit = ConcurrencyLimitLayer::new(1_000).layer(inner);
    let limit = LimitLayer::new(ClassLimits::new(1_000)).layer(inner);
    let breaker = BreakerLayer::new().layer(limit.clone());
    let dedup = DedupLayer::new(key_of).layer(breaker.clone());
    let cache = CacheLayer::new(key_of)
        .with_ttl(Duration::from_secs(60))
        .layer(dedup.clone());
    let stack = Stats::new().layer(AllDefault).layer(cache.clone());

    // An admitted request holds its permit, as tower's does.
    assert!(future_size(&limit) <= future_size(&tower_limit));
    // The breaker's admitted call: its circuit, admission, start and timeout.
    assert!(future_size(&breaker) <= future_size(&limit) + 40);
    // A follower or a leader, without its key or the backend's wait.
    assert!(future_size(&dedup) <= future_size(&breaker) + 8);
    assert!(future_size(&cache) <= future_size(&dedup) + 16);
    assert!(
        future_size(&stack) <= 128,
        "the stack's future is {} bytes",
        future_size(&stack)
    );
}
