//! Cache hit path: what one request costs when its response is in the cache.
//!
//! Every request asks for the same key, which was stored by a first request,
//! and the inner service is always ready. Services are driven like
//! `overhead`: each sample runs a batch of sequential requests inside one
//! `block_on` of a current_thread runtime. The bare stores (moka, quick_cache)
//! are read directly, without a service around them; moka's `future::Cache`
//! is awaited inside the same kind of batch. The `parts` group measures the
//! clock read that herdsman's hit path makes.
//!
//! ```text
//! cargo bench -p herdsman-bench --bench cache_hit
//! ```

use std::{
    convert::Infallible,
    fmt,
    future::{ready, Ready},
    hint::black_box,
    time::{Duration, Instant},
};

use criterion::{criterion_group, criterion_main, Criterion};
use herdsman::key::Key;
use herdsman_bench::{
    caches::{self, KeyHash},
    harness::run_ok,
};
use quick_cache::UnitWeighter;
use tokio::runtime::{Builder, Runtime};
use tower::{service_fn, Service};

/// The one key every request asks for.
const KEY: u64 = 7;

/// The inner service: ready at once, answers at once.
fn echo(req: u64) -> Ready<Result<u64, Infallible>> {
    ready(Ok(req))
}

/// Sends one request for [`KEY`], so that the next ones hit.
fn warm<S>(rt: &Runtime, svc: &mut S)
where
    S: Service<u64, Response = u64>,
    S::Error: fmt::Debug,
{
    run_ok(rt, svc, 1, |_| KEY);
}

fn hit(c: &mut Criterion) {
    let rt = Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("cache_hit");

    let mut bare = service_fn(echo);
    group.bench_function("bare", |b| {
        b.iter_custom(|iters| run_ok(&rt, &mut bare, iters, |_| KEY))
    });

    let (mut herdsman, handle) = caches::herdsman(service_fn(echo), 64 << 20);
    warm(&rt, &mut herdsman);
    group.bench_function("herdsman_cache", |b| {
        b.iter_custom(|iters| run_ok(&rt, &mut herdsman, iters, |_| KEY))
    });
    let stats = handle.stats();
    assert_eq!(stats.misses, 1, "every request after the first hits");

    let mut resilience = caches::tower_resilience(service_fn(echo), 1024, Some(caches::TTL));
    warm(&rt, &mut resilience);
    group.bench_function("tower_resilience_cache", |b| {
        b.iter_custom(|iters| run_ok(&rt, &mut resilience, iters, |_| KEY))
    });

    // Its default: no TTL, so one clock read fewer per hit.
    let mut resilience = caches::tower_resilience(service_fn(echo), 1024, None);
    warm(&rt, &mut resilience);
    group.bench_function("tower_resilience_cache_no_ttl", |b| {
        b.iter_custom(|iters| run_ok(&rt, &mut resilience, iters, |_| KEY))
    });

    let moka_sync = moka::sync::Cache::<u64, u64>::new(1024);
    moka_sync.insert(KEY, KEY);
    group.bench_function("moka_sync_get", |b| {
        b.iter(|| moka_sync.get(black_box(&KEY)).expect("stored"))
    });

    let moka_future = moka::future::Cache::<u64, u64>::new(1024);
    rt.block_on(moka_future.insert(KEY, KEY));
    group.bench_function("moka_future_get", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(moka_future.get(black_box(&KEY)).await.expect("stored"));
                }
                start.elapsed()
            })
        })
    });

    let quick = quick_cache::sync::Cache::<u64, u64>::new(1024);
    quick.insert(KEY, KEY);
    group.bench_function("quick_cache_get", |b| {
        b.iter(|| quick.get(black_box(&KEY)).expect("stored"))
    });

    group.finish();

    // The two stores keyed as herdsman keys its own: by `Key`, hashed by its
    // precomputed hash. The key is built once, outside the loop.
    let mut group = c.benchmark_group("store_by_key");
    let key = caches::key(KEY);

    let moka_sync = moka::sync::Cache::<Key, u64>::builder()
        .max_capacity(1024)
        .build_with_hasher(KeyHash::default());
    moka_sync.insert(key.clone(), KEY);
    group.bench_function("moka_sync_get", |b| {
        b.iter(|| moka_sync.get(black_box(&key)).expect("stored"))
    });

    let quick = quick_cache::sync::Cache::<Key, u64, UnitWeighter, KeyHash>::with(
        1024,
        1024,
        UnitWeighter,
        KeyHash::default(),
        Default::default(),
    );
    quick.insert(key.clone(), KEY);
    group.bench_function("quick_cache_get", |b| {
        b.iter(|| quick.get(black_box(&key)).expect("stored"))
    });
    group.finish();

    // Ingredients of herdsman's hit, for reading the figures above.
    let mut group = c.benchmark_group("parts");
    group.bench_function("std_instant_now", |b| b.iter(Instant::now));
    group.bench_function("tokio_instant_now", |b| b.iter(tokio::time::Instant::now));
    let mut n = 0u64;
    group.bench_function("key_from_u64", |b| {
        b.iter(|| {
            n += 1;
            Key::from(black_box(n))
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(4));
    targets = hit
}
criterion_main!(benches);
