//! The coordinated hit: what a cache hit costs through the whole
//! Coordinator (as herdsman-axum or an application uses it), against the
//! bare HTTP service it wraps.
//!
//! Every request is the same browser `GET` (`src/coordinated.rs`); the
//! first one is a miss that fills the cache, every later one a hit. Each
//! sample sends a batch of sequential requests inside one `block_on` of a
//! current_thread runtime; the requests are built before their batch is
//! timed. After the run, the upstream behind the Coordinator must have been
//! called once. Allocations per hit are counted by the `hit_allocs`
//! binary (a counting allocator would slow every case here).
//!
//! ```text
//! cargo bench -p herdsman-bench --bench coordinated
//! cargo run --release -p herdsman-bench --bin hit_allocs
//! ```

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use herdsman_bench::coordinated::{self, Upstream};
use tokio::runtime::Builder;

fn coordinated_hit(c: &mut Criterion) {
    let rt = Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("coordinated");

    let mut bare = Upstream::default();
    group.bench_function("bare_http_service", |b| {
        b.iter_custom(|iters| coordinated::run(&rt, &mut bare, iters))
    });

    let coordinator = rt.block_on(async { coordinated::coordinator() });
    let upstream = Upstream::default();
    let mut svc = rt.block_on(async { coordinated::coordinated(&coordinator, upstream.clone()) });
    coordinated::run(&rt, &mut svc, 1);
    assert_eq!(upstream.calls(), 1, "the first request fills the cache");
    group.bench_function("herdsman_coordinated_hit", |b| {
        b.iter_custom(|iters| coordinated::run(&rt, &mut svc, iters))
    });
    assert_eq!(upstream.calls(), 1, "every later request is a hit");
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(4));
    targets = coordinated_hit
}
criterion_main!(benches);
