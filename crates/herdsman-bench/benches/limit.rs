//! Limits: what one admitted request costs under a concurrency limit and
//! under a rate rule, when neither is ever reached.
//!
//! The inner service is always ready and answers at once. Services are
//! driven like `breaker`: each sample runs a batch of sequential requests
//! inside one `block_on` of a current_thread runtime, so the runtime's entry
//! cost is paid once per batch, not once per request. Every limit is far
//! above what the benchmark uses (`src/limiters.rs`), and every response
//! must be `Ok`. After each case the limiter's state is checked, so that no
//! case measured a rejection, a wait or a leaked permit.
//!
//! governor, which is not a tower layer, is measured bare: one `check` (or
//! `check_key`) per iteration, outside any service.
//!
//! ```text
//! cargo bench -p herdsman-bench --bench limit
//! ```

use std::{
    convert::Infallible,
    future::{ready, Future, Ready},
    hint::black_box,
    pin::Pin,
    time::{Duration, Instant},
};

use criterion::{criterion_group, criterion_main, Criterion};
use herdsman::{
    key::Key,
    limit::{ClassStats, LimitStats},
};
use herdsman_bench::{
    harness::{case, run_ok},
    limiters::{self, CALLERS, MAX_CONCURRENT},
};
use tokio::runtime::Builder;
use tower::{service_fn, Layer};

/// The inner service: ready at once, answers at once.
fn echo(req: u64) -> Ready<Result<u64, Infallible>> {
    ready(Ok(req))
}

type BoxedFuture = Pin<Box<dyn Future<Output = Result<u64, Infallible>> + Send>>;

/// The inner service with its future boxed: the floor for a layer that boxes
/// its future (tower-resilience does).
fn echo_boxed(req: u64) -> BoxedFuture {
    Box::pin(ready(Ok(req)))
}

/// The counters of the default class, the only one the herdsman cases use.
fn default_class(stats: &LimitStats) -> &ClassStats {
    assert_eq!(stats.classes.len(), 1, "one class: {stats:?}");
    stats.class("default").expect("the default class was used")
}

/// Checks that a herdsman case admitted every request at once and gave
/// every permit back.
fn assert_admitted_all(stats: &LimitStats) {
    let class = default_class(stats);
    assert!(class.admitted > 0, "requests were admitted: {class:?}");
    assert_eq!(
        (
            class.queued,
            class.rejected_overloaded,
            class.rejected_rate,
            class.rate_alerts,
            class.in_flight,
            class.waiting,
        ),
        (0, 0, 0, 0, 0, 0),
        "{class:?}"
    );
}

fn limit(c: &mut Criterion) {
    // With the time driver: tower-resilience's bulkhead sets a timer
    // (`tokio::time::timeout`) around each acquire.
    let rt = Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("limit");

    let mut bare = service_fn(echo);
    case(&mut group, "bare", |iters| {
        run_ok(&rt, &mut bare, iters, |n| n)
    });

    let mut boxed = service_fn(echo_boxed);
    case(&mut group, "bare_boxed_future", |iters| {
        run_ok(&rt, &mut boxed, iters, |n| n)
    });

    // Concurrency limits.

    let layer = limiters::herdsman_concurrency();
    let mut herdsman = layer.layer(service_fn(echo));
    if case(&mut group, "herdsman_concurrency", |iters| {
        run_ok(&rt, &mut herdsman, iters, |n| n)
    }) {
        let stats = layer.handle().stats();
        assert_admitted_all(&stats);
        assert_eq!(stats.rate_keys, 0);
    }

    let (layer, semaphore) = limiters::tower_concurrency();
    let mut tower = layer.layer(service_fn(echo));
    if case(&mut group, "tower_concurrency_limit", |iters| {
        run_ok(&rt, &mut tower, iters, |n| n)
    }) {
        assert_eq!(semaphore.available_permits(), MAX_CONCURRENT);
    }

    let (layer, handle) = limiters::tower_resilience_bulkhead();
    let mut resilience = layer.layer(service_fn(echo));
    if case(&mut group, "tower_resilience_bulkhead", |iters| {
        run_ok(&rt, &mut resilience, iters, |n| n)
    }) {
        assert_eq!(handle.active_calls(), 0);
        assert_eq!(handle.available_permits(), MAX_CONCURRENT);
    }

    // Rate limits.

    let layer = limiters::herdsman_rate_by_class();
    let mut herdsman = layer.layer(service_fn(echo));
    if case(&mut group, "herdsman_rate_by_class", |iters| {
        run_ok(&rt, &mut herdsman, iters, |n| n)
    }) {
        let stats = layer.handle().stats();
        assert_admitted_all(&stats);
        assert_eq!((stats.rate_keys, stats.rate_untracked), (0, 0));
    }

    let layer = limiters::herdsman_rate_by_caller();
    let mut herdsman = layer.layer(service_fn(echo));
    if case(&mut group, "herdsman_rate_by_caller", |iters| {
        run_ok(&rt, &mut herdsman, iters, |n| n)
    }) {
        let stats = layer.handle().stats();
        assert_admitted_all(&stats);
        // Every caller seen holds a budget (one in a smoke run, which sends
        // one request).
        let callers = default_class(&stats).admitted.min(CALLERS);
        assert_eq!((stats.rate_keys, stats.rate_untracked), (callers, 0));
    }

    let (layer, handle) = limiters::tower_resilience_ratelimiter();
    let mut resilience = layer.layer(service_fn(echo));
    if case(&mut group, "tower_resilience_ratelimiter", |iters| {
        run_ok(&rt, &mut resilience, iters, |n| n)
    }) {
        assert!(!handle.is_throttling());
    }

    let governor = limiters::governor_direct();
    case(&mut group, "governor_direct_check", |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(governor.check()).expect("the quota is never reached");
        }
        start.elapsed()
    });

    let governor = limiters::governor_keyed();
    let mut most_iters = 0;
    if case(&mut group, "governor_keyed_check", |iters| {
        most_iters = most_iters.max(iters);
        let start = Instant::now();
        for n in 0..iters {
            let caller = black_box(n) % CALLERS;
            black_box(governor.check_key(&caller)).expect("the quota is never reached");
        }
        start.elapsed()
    }) {
        assert_eq!(governor.len() as u64, most_iters.min(CALLERS));
    }

    group.finish();

    // Ingredients, for reading the figures above: the clock a rate rule
    // reads once per request (herdsman reads tokio's, governor's default
    // clock std's), and the caller key herdsman builds for a rule by caller.
    let mut group = c.benchmark_group("parts");
    group.bench_function("tokio_instant_now", |b| b.iter(tokio::time::Instant::now));
    group.bench_function("std_instant_now", |b| b.iter(Instant::now));
    group.bench_function("key_from_u64", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            Key::from(black_box(n) % CALLERS)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(4));
    targets = limit
}
criterion_main!(benches);
