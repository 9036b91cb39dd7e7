//! The loop every per-request benchmark times: sequential requests through a
//! service inside one `block_on` of a current_thread runtime, so the
//! runtime's entry cost is paid once per batch, not once per request.

use std::{
    fmt,
    hint::black_box,
    time::{Duration, Instant},
};

use criterion::{measurement::WallTime, BenchmarkGroup};
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt};

/// Sends `iters` requests, the `n`th being `request(n)`, through `svc`, one
/// after another, each answered `Ok`, and returns the time they took.
pub fn run_ok<S>(rt: &Runtime, svc: &mut S, iters: u64, request: impl Fn(u64) -> u64) -> Duration
where
    S: Service<u64, Response = u64>,
    S::Error: fmt::Debug,
{
    run(rt, svc, iters, request, |res| {
        res.expect("every request of this case is answered Ok");
    })
}

/// Like [`run_ok`], for a case where every request is rejected.
pub fn run_err<S>(rt: &Runtime, svc: &mut S, iters: u64, request: impl Fn(u64) -> u64) -> Duration
where
    S: Service<u64, Response = u64>,
    S::Error: fmt::Debug,
{
    run(rt, svc, iters, request, |res| {
        res.expect_err("every request of this case is rejected");
    })
}

fn run<S>(
    rt: &Runtime,
    svc: &mut S,
    iters: u64,
    request: impl Fn(u64) -> u64,
    check: impl Fn(Result<u64, S::Error>),
) -> Duration
where
    S: Service<u64, Response = u64>,
    S::Error: fmt::Debug,
{
    rt.block_on(async {
        let start = Instant::now();
        for n in 0..iters {
            let ready = svc.ready().await.expect("the service is always ready");
            let res = ready.call(black_box(request(n))).await;
            check(black_box(res));
        }
        start.elapsed()
    })
}

/// Runs the case `name` of `group`, timed by `f` (criterion's `iter_custom`);
/// `false` if a filter on the command line left it out, so that the checks
/// made after it are skipped too.
pub fn case<F>(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, mut f: F) -> bool
where
    F: FnMut(u64) -> Duration,
{
    let mut ran = false;
    group.bench_function(name, |b| {
        ran = true;
        b.iter_custom(&mut f)
    });
    ran
}
