//! Uncontended path: what one request costs when nobody shares its key.
//!
//! Every request has a new key and the inner service answers at once, so the
//! figures are the layers' own bookkeeping. Each sample runs a batch of
//! sequential requests inside one `block_on` of a current_thread runtime, so
//! the runtime's entry cost is paid once per batch, not once per request.
//!
//! ```text
//! cargo bench -p herdsman-bench --bench overhead
//! ```

use std::{
    convert::Infallible,
    fmt,
    future::{ready, Future, Ready},
    hint::black_box,
    pin::Pin,
    time::{Duration, Instant},
};

use criterion::{criterion_group, criterion_main, Criterion};
use herdsman::{dedup::DedupLayer, key::Key};
use herdsman_bench::{peers::key_of, singleflight::Singleflight};
use tokio::runtime::{Builder, Runtime};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_resilience::coalesce::CoalesceLayer;

/// The inner service: ready at once, answers at once.
fn echo(req: u64) -> Ready<Result<u64, Infallible>> {
    ready(Ok(req))
}

type BoxedFuture = Pin<Box<dyn Future<Output = Result<u64, Infallible>> + Send>>;

/// The inner service with its future boxed: the floor for a layer that must
/// box the inner future.
fn echo_boxed(req: u64) -> BoxedFuture {
    Box::pin(ready(Ok(req)))
}

/// Sends `iters` requests with fresh keys through `svc`, one after another,
/// and returns the time they took.
fn run<S>(rt: &Runtime, svc: &mut S, next_key: &mut u64, iters: u64) -> Duration
where
    S: Service<u64, Response = u64>,
    S::Error: fmt::Debug,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            let key = *next_key;
            *next_key += 1;
            let ready = svc.ready().await.expect("inner service is always ready");
            let res = ready.call(black_box(key)).await;
            black_box(res.expect("inner service never fails"));
        }
        start.elapsed()
    })
}

fn uncontended(c: &mut Criterion) {
    let rt = Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut next_key = 0;
    let mut group = c.benchmark_group("uncontended");

    let mut bare = service_fn(echo);
    group.bench_function("bare", |b| {
        b.iter_custom(|iters| run(&rt, &mut bare, &mut next_key, iters))
    });

    let mut boxed = service_fn(echo_boxed);
    group.bench_function("bare_boxed_future", |b| {
        b.iter_custom(|iters| run(&rt, &mut boxed, &mut next_key, iters))
    });

    let mut herdsman = DedupLayer::new(key_of).layer(service_fn(echo));
    group.bench_function("herdsman_dedup", |b| {
        b.iter_custom(|iters| run(&rt, &mut herdsman, &mut next_key, iters))
    });

    let mut coalesce = CoalesceLayer::new(|req: &u64| *req).layer(service_fn(echo));
    group.bench_function("tower_resilience_coalesce", |b| {
        b.iter_custom(|iters| run(&rt, &mut coalesce, &mut next_key, iters))
    });

    let mut singleflight = Singleflight::new(service_fn(echo));
    group.bench_function("async_singleflight", |b| {
        b.iter_custom(|iters| run(&rt, &mut singleflight, &mut next_key, iters))
    });

    group.finish();

    // One ingredient of herdsman's cost, for reading the figures above: the
    // key (a seeded SipHash of 8 bytes, copied inline).
    c.bench_function("parts/key_from_u64", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            black_box(Key::from(black_box(n)))
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(4));
    targets = uncontended
}
criterion_main!(benches);
