//! Circuit breakers: what one request costs when the breaker is closed, and
//! what a rejection costs when it is open.
//!
//! The inner service is always ready and answers at once. Services are
//! driven like `overhead`: each sample runs a batch of sequential requests
//! inside one `block_on` of a current_thread runtime, so the runtime's entry
//! cost is paid once per batch, not once per request. Every breaker has one
//! circuit for all requests. After each case the breaker's state is checked,
//! so that a closed case never measured rejections and an open one never let
//! a call through.
//!
//! ```text
//! cargo bench -p herdsman-bench --bench breaker
//! ```

use std::{
    convert::Infallible,
    future::{ready, Future, Ready},
    pin::Pin,
    time::{Duration, Instant},
};

use criterion::{criterion_group, criterion_main, Criterion};
use herdsman::{
    breaker::{BreakerConfig, BreakerLayer, BreakerState},
    class::Class,
};
use herdsman_bench::{
    breakers::{self, Failsafe, LONG_OPEN},
    harness::{case, run_err, run_ok},
};
use tokio::runtime::{Builder, Runtime};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_resilience::circuitbreaker::CircuitState;

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

/// An inner service that always fails, to trip breakers.
fn fail(_: u64) -> Ready<Result<u64, &'static str>> {
    ready(Err("upstream down"))
}

/// Sends `n` requests through `svc`, one after another, and drops their
/// results: used with an inner service that fails, to trip a breaker.
fn send<S>(rt: &Runtime, svc: &mut S, n: u64)
where
    S: Service<u64>,
{
    rt.block_on(async {
        for req in 0..n {
            if let Ok(ready) = svc.ready().await {
                let _ = ready.call(req).await;
            }
        }
    });
}

fn breaker(c: &mut Criterion) {
    let rt = Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let class = Class::default();
    let mut group = c.benchmark_group("breaker");

    let mut bare = service_fn(echo);
    case(&mut group, "bare", |iters| {
        run_ok(&rt, &mut bare, iters, |n| n)
    });

    let mut boxed = service_fn(echo_boxed);
    case(&mut group, "bare_boxed_future", |iters| {
        run_ok(&rt, &mut boxed, iters, |n| n)
    });

    // herdsman, closed: the default settings.
    let layer = BreakerLayer::new();
    let mut herdsman = layer.layer(service_fn(echo));
    if case(&mut group, "herdsman_closed", |iters| {
        run_ok(&rt, &mut herdsman, iters, |n| n)
    }) {
        let stats = layer
            .handle()
            .stats()
            .class(class.as_str())
            .cloned()
            .expect("the breaker was used");
        assert_eq!(stats.state, BreakerState::Closed);
        assert!(stats.calls_in_window > 0, "calls were recorded");
        assert_eq!(stats.rejected, 0);
    }

    // herdsman, closed, with slow-call detection: two clock reads per call.
    let layer = BreakerLayer::new().with_config(BreakerConfig {
        slow_call_duration: Some(Duration::from_secs(1)),
        ..BreakerConfig::default()
    });
    let mut herdsman = layer.layer(service_fn(echo));
    if case(&mut group, "herdsman_closed_slow_call", |iters| {
        run_ok(&rt, &mut herdsman, iters, |n| n)
    }) {
        let stats = layer
            .handle()
            .stats()
            .class(class.as_str())
            .cloned()
            .expect("the breaker was used");
        assert_eq!(stats.state, BreakerState::Closed);
        assert_eq!((stats.slow_in_window, stats.rejected), (0, 0));
    }

    // herdsman, forced open by hand: no clock read.
    let layer = BreakerLayer::new();
    layer.handle().force_open(&class);
    let mut herdsman = layer.layer(service_fn(echo));
    if case(&mut group, "herdsman_open_forced", |iters| {
        run_err(&rt, &mut herdsman, iters, |n| n)
    }) {
        let stats = layer
            .handle()
            .stats()
            .class(class.as_str())
            .cloned()
            .expect("the breaker was used");
        assert_eq!(stats.state, BreakerState::ForcedOpen);
        assert!(stats.rejected > 0);
    }

    // herdsman, tripped by three failures in a row: a rejection reads the
    // clock to tell whether the open time is over.
    let layer = BreakerLayer::new().with_config(BreakerConfig {
        open_duration: LONG_OPEN,
        max_open_duration: LONG_OPEN,
        ..BreakerConfig::default()
    });
    send(&rt, &mut layer.layer(service_fn(fail)), 3);
    assert_eq!(layer.handle().state(&class), BreakerState::Open);
    let mut herdsman = layer.layer(service_fn(echo));
    if case(&mut group, "herdsman_open_tripped", |iters| {
        run_err(&rt, &mut herdsman, iters, |n| n)
    }) {
        let stats = layer
            .handle()
            .stats()
            .class(class.as_str())
            .cloned()
            .expect("the breaker was used");
        assert_eq!((stats.state, stats.trips), (BreakerState::Open, 1));
    }

    // tower-resilience, closed: its defaults.
    let (mut resilience, handle) = breakers::tower_resilience(service_fn(echo), false);
    if case(&mut group, "tower_resilience_closed", |iters| {
        run_ok(&rt, &mut resilience, iters, |n| n)
    }) {
        assert_eq!(handle.state(), CircuitState::Closed);
    }

    let (mut resilience, handle) = breakers::tower_resilience(service_fn(echo), true);
    if case(&mut group, "tower_resilience_closed_slow_call", |iters| {
        run_ok(&rt, &mut resilience, iters, |n| n)
    }) {
        assert_eq!(handle.state(), CircuitState::Closed);
    }

    // tower-resilience, forced open through its handle: its ordinary open
    // state, which ends 30 s (its default) after forcing; a case takes less.
    let (mut resilience, handle) = breakers::tower_resilience(service_fn(echo), false);
    rt.block_on(handle.force_open());
    if case(&mut group, "tower_resilience_open_forced", |iters| {
        run_err(&rt, &mut resilience, iters, |n| n)
    }) {
        assert_eq!(handle.state(), CircuitState::Open);
    }

    // failsafe, closed: its defaults.
    let breaker = breakers::failsafe_default();
    let mut failsafe = Failsafe::new(service_fn(echo), breaker.clone());
    if case(&mut group, "failsafe_closed", |iters| {
        run_ok(&rt, &mut failsafe, iters, |n| n)
    }) {
        assert!(breaker.is_call_permitted());
    }

    // failsafe, tripped by three failures in a row (it cannot be forced open).
    let breaker = breakers::failsafe_long_open();
    send(
        &rt,
        &mut Failsafe::new(service_fn(fail), breaker.clone()),
        3,
    );
    assert!(!breaker.is_call_permitted());
    let mut failsafe = Failsafe::new(service_fn(echo), breaker.clone());
    if case(&mut group, "failsafe_open_tripped", |iters| {
        run_err(&rt, &mut failsafe, iters, |n| n)
    }) {
        assert!(!breaker.is_call_permitted());
    }

    group.finish();

    // Ingredients, for reading the figures above: the clock herdsman reads
    // (twice per call with slow-call detection, once per rejection when
    // tripped), and std's, which tower-resilience and failsafe read.
    let mut group = c.benchmark_group("parts");
    group.bench_function("tokio_instant_now", |b| b.iter(tokio::time::Instant::now));
    group.bench_function("std_instant_now", |b| b.iter(Instant::now));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(4));
    targets = breaker
}
criterion_main!(benches);
