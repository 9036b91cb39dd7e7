//! Allocations per hit: how many times the coordinated hit and the generic
//! stack hit (and an admitted request under a concurrency limit) call the
//! allocator (`malloc`, `realloc`), against their peers, counted by a
//! counting global allocator (`stats_alloc`).
//!
//! Each case first sends one request (a miss that fills the cache) and a
//! thousand hits to warm every map and buffer, then counts the allocator's
//! calls over 10,000 hits. Requests are built before the counted loop, so
//! the figures are the service's own. Counting makes every allocation
//! dearer, so the times are in the criterion benchmarks (`coordinated`,
//! `stack`), not here.
//!
//! ```text
//! cargo run --release -p herdsman-bench --bin hit_allocs
//! cargo run --release -p herdsman-bench --bin hit_allocs -- Coordinator   # cases whose name has every word
//! ```

//!
//! The one-case form is for profilers (`valgrind --tool=callgrind`).

use std::{
    alloc::System,
    convert::Infallible,
    fmt,
    future::{ready, Ready},
};

use herdsman_bench::{
    coordinated::{self, Upstream},
    limiters, stacks,
};
use stats_alloc::{Region, Stats, StatsAlloc, INSTRUMENTED_SYSTEM};
use tokio::runtime::{Builder, Runtime};
use tower::{service_fn, Layer, Service, ServiceExt};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Hits counted per case.
const HITS: u64 = 10_000;

/// Hits sent before counting.
const WARM: u64 = 1_000;

fn main() {
    let rt = Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let words: Vec<String> = std::env::args().skip(1).collect();
    let wants = |case: &str| words.iter().all(|w| case.contains(w.as_str()));
    println!("| case | malloc / hit | realloc / hit | free / hit | bytes / hit |");
    println!("|---|---:|---:|---:|---:|");

    let case = "bare HTTP service";
    if wants(case) {
        report(case, http_hits(&rt, &mut Upstream::default()));
    }
    let case = "herdsman Coordinator hit";
    if wants(case) {
        let coordinator = rt.block_on(async { coordinated::coordinator() });
        let upstream = Upstream::default();
        let mut svc =
            rt.block_on(async { coordinated::coordinated(&coordinator, upstream.clone()) });
        report(case, http_hits(&rt, &mut svc));
        assert_eq!(upstream.calls(), 1, "every request after the first hit");
    }
    let case = "bare u64 service";
    if wants(case) {
        report(case, u64_hits(&rt, &mut service_fn(echo)));
    }
    let case = "herdsman generic stack hit";
    if wants(case) {
        let (mut svc, _stats, cache) = rt.block_on(async { stacks::herdsman(service_fn(echo)) });
        report(case, u64_hits(&rt, &mut svc));
        assert_eq!(cache.stats().misses, 1, "every request after the first hit");
    }
    let case = "tower-resilience stack hit";
    if wants(case) {
        let mut svc = rt.block_on(async { stacks::tower_resilience(service_fn(echo)) });
        report(case, u64_hits(&rt, &mut svc));
    }
    let case = "herdsman concurrency limit, admitted";
    if wants(case) {
        let mut svc = limiters::herdsman_concurrency().layer(service_fn(echo));
        report(case, u64_hits(&rt, &mut svc));
    }
    let case = "tower ConcurrencyLimit, admitted";
    if wants(case) {
        let mut svc = limiters::tower_concurrency().0.layer(service_fn(echo));
        report(case, u64_hits(&rt, &mut svc));
    }
}

fn echo(req: u64) -> Ready<Result<u64, Infallible>> {
    ready(Ok(req))
}

/// The allocator's calls over [`HITS`] coordinated-style requests.
fn http_hits<S, B>(rt: &Runtime, svc: &mut S) -> Stats
where
    S: Service<http::Request<coordinated::ReqBody>, Response = http::Response<B>>,
    S::Error: fmt::Debug,
{
    rt.block_on(async {
        let warm = (0..=WARM).map(|_| coordinated::browser_get()).collect();
        coordinated::send(svc, warm).await;
        let requests = (0..HITS).map(|_| coordinated::browser_get()).collect();
        let region = Region::new(GLOBAL);
        coordinated::send(svc, requests).await;
        let mut change = region.change();
        // The one vector of requests, freed at the end of `send`.
        change.deallocations -= 1;
        change
    })
}

/// The allocator's calls over [`HITS`] requests for one key.
fn u64_hits<S>(rt: &Runtime, svc: &mut S) -> Stats
where
    S: Service<u64, Response = u64>,
    S::Error: fmt::Debug,
{
    rt.block_on(async {
        for _ in 0..=WARM {
            svc.ready().await.expect("ready").call(7).await.expect("Ok");
        }
        let region = Region::new(GLOBAL);
        for _ in 0..HITS {
            svc.ready().await.expect("ready").call(7).await.expect("Ok");
        }
        region.change()
    })
}

fn report(case: &str, stats: Stats) {
    let per = |n: usize| n as f64 / HITS as f64;
    println!(
        "| {case} | {:.2} | {:.2} | {:.2} | {:.0} |",
        per(stats.allocations),
        per(stats.reallocations),
        per(stats.deallocations),
        per(stats.bytes_allocated + stats.bytes_reallocated.max(0) as usize),
    );
}
