//! The generic stack hit: what a cache hit costs through herdsman's layers
//! composed with `tower::ServiceBuilder` (Stats → Cache → Dedup → Breaker →
//! Limit), against tower-resilience 0.13's four-layer stack (cache →
//! coalesce → circuit breaker → bulkhead), both on `u64` requests
//! (`src/stacks.rs`).
//!
//! Every request asks for the same key, stored by a first request. Services
//! are driven like `cache_hit`: each sample runs a batch of sequential
//! requests inside one `block_on` of a current_thread runtime. After the
//! run herdsman's cache must have missed once and its stats counted every
//! request. Allocations per hit: the `hit_allocs` binary.
//!
//! ```text
//! cargo bench -p herdsman-bench --bench stack
//! ```

use std::{
    convert::Infallible,
    future::{ready, Ready},
    time::Duration,
};

use criterion::{criterion_group, criterion_main, Criterion};
use herdsman_bench::{
    harness::{case, run_ok},
    stacks,
};
use tokio::runtime::Builder;
use tower::service_fn;

/// The one key every request asks for.
const KEY: u64 = 7;

/// The inner service: ready at once, answers at once.
fn echo(req: u64) -> Ready<Result<u64, Infallible>> {
    ready(Ok(req))
}

fn stack_hit(c: &mut Criterion) {
    let rt = Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("stack_hit");

    let mut bare = service_fn(echo);
    case(&mut group, "bare", |iters| {
        run_ok(&rt, &mut bare, iters, |_| KEY)
    });

    let (mut herdsman, stats, cache) = rt.block_on(async { stacks::herdsman(service_fn(echo)) });
    run_ok(&rt, &mut herdsman, 1, |_| KEY);
    if case(&mut group, "herdsman_stack", |iters| {
        run_ok(&rt, &mut herdsman, iters, |_| KEY)
    }) {
        let requests = stats.snapshot().endpoints["default"].requests;
        assert_eq!(
            cache.stats().misses,
            1,
            "every request after the first hits"
        );
        assert_eq!(
            cache.stats().hits + 1,
            requests,
            "stats counted every request"
        );
    }

    let mut resilience = rt.block_on(async { stacks::tower_resilience(service_fn(echo)) });
    run_ok(&rt, &mut resilience, 1, |_| KEY);
    case(&mut group, "tower_resilience_stack", |iters| {
        run_ok(&rt, &mut resilience, iters, |_| KEY)
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(4));
    targets = stack_hit
}
criterion_main!(benches);
