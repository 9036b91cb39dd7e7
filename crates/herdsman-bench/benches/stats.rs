//! The Stats layer: what recording one request costs, latency included,
//! against tower-resilience's cost of its own metrics.
//!
//! tower-resilience's metrics are a compile-time feature, so the comparison
//! takes two builds of this bench, run one after the other:
//!
//! ```text
//! cargo bench -p herdsman-bench --bench stats
//! cargo bench -p herdsman-bench --bench stats --features tr-metrics
//! ```
//!
//! The second build turns on tower-resilience's `metrics` feature and
//! installs a Prometheus recorder (as an application serving `/metrics`
//! would); its case names end in `+metrics`. The Stats layer never calls
//! into `metrics` per request, so its cases should not move between builds.
//!
//! The inner service is always ready and answers at once; requests are sent
//! one after another on a current_thread runtime (see `harness`).

use std::{
    convert::Infallible,
    future::{ready, Ready},
};

use criterion::{criterion_group, criterion_main, Criterion};
use herdsman::{class::AllDefault, clock::Clock, stats::Stats, Key};
use herdsman_bench::{
    breakers,
    harness::{case, run_ok},
};
use tokio::runtime::Builder;
use tower::{service_fn, Layer};

fn echo(req: u64) -> Ready<Result<u64, Infallible>> {
    ready(Ok(req))
}

fn no_key(_: &u64) -> Option<Key> {
    None
}

/// `""` or `"+metrics"`: which build this is.
const METRICS: &str = if cfg!(feature = "tr-metrics") {
    "+metrics"
} else {
    ""
};

fn stats(c: &mut Criterion) {
    #[cfg(feature = "tr-metrics")]
    let _prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this process");

    let rt = Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("stats");

    let mut bare = service_fn(echo);
    case(&mut group, &format!("bare{METRICS}"), |iters| {
        run_ok(&rt, &mut bare, iters, |n| n)
    });

    // Ours: the client side (counters, in-flight, latency histogram), the
    // monitor running as in an application.
    let fast = Stats::new();
    let mut ours = rt.block_on(async { fast.layer(AllDefault).layer(service_fn(echo)) });
    case(&mut group, &format!("herdsman_stats{METRICS}"), |iters| {
        run_ok(&rt, &mut ours, iters, |n| n)
    });

    // Both sides: what a request that reaches the upstream records.
    let both = Stats::new();
    let mut ours_both = rt.block_on(async {
        both.layer(AllDefault).layer(
            both.upstream_layer(AllDefault, no_key)
                .layer(service_fn(echo)),
        )
    });
    case(
        &mut group,
        &format!("herdsman_stats_and_upstream{METRICS}"),
        |iters| run_ok(&rt, &mut ours_both, iters, |n| n),
    );

    // The same with the OS clock through tokio, for the clock's share.
    let tokio_clock = Stats::builder().with_clock(Clock::Tokio).build();
    let mut ours_tokio =
        rt.block_on(async { tokio_clock.layer(AllDefault).layer(service_fn(echo)) });
    case(
        &mut group,
        &format!("herdsman_stats_tokio_clock{METRICS}"),
        |iters| run_ok(&rt, &mut ours_tokio, iters, |n| n),
    );

    // tower-resilience's circuit breaker, closed: with the tr-metrics
    // feature it counts each call and records its duration in `metrics`.
    let (mut tr, _handle) = breakers::tower_resilience(service_fn(echo), false);
    case(
        &mut group,
        &format!("tower_resilience_breaker{METRICS}"),
        |iters| run_ok(&rt, &mut tr, iters, |n| n),
    );

    group.finish();

    let snap = both.snapshot();
    let e = &snap.endpoints["default"];
    assert_eq!(
        e.requests, e.upstream_calls,
        "every request was recorded twice"
    );
    assert_eq!(e.latency_ms.count, e.requests);
}

criterion_group!(benches, stats);
criterion_main!(benches);
