//! Cache hit under contention: 1 thread, then 2 threads, hitting one key.
//!
//! Each thread (`std::thread`) makes the same number of hits on the same key,
//! through its own clone of one service (each thread drives it on its own
//! current_thread runtime, batched like `cache_hit`) or straight on one shared
//! store. The threads start together at a barrier. For each implementation
//! the table gives the hits per second of each thread and of both together;
//! perfect scaling would double the total. Each case runs 3 times and the run
//! with the median total is shown.
//!
//! Values are `u64`, then a 1 KiB `Bytes`: cloning a `Bytes` bumps a
//! reference count that both threads then write.
//!
//! ```text
//! cargo bench -p herdsman-bench --bench cache_contention
//! cargo bench -p herdsman-bench --bench cache_contention -- Bytes herdsman   # words the case name must contain
//! ```
//!
//! Without `--bench` (as under `cargo test --benches`) it runs a small smoke
//! version.

use std::{
    convert::Infallible,
    fmt,
    future::{ready, Ready},
    hint::black_box,
    sync::{Arc, Barrier, OnceLock},
    thread,
    time::{Duration, Instant},
};

use bytes::Bytes;
use herdsman_bench::caches;
use tokio::runtime::Builder;
use tower::{service_fn, Service, ServiceExt};

/// The one key every request asks for.
const KEY: u64 = 7;

/// How many runs of each case; the median one is shown.
const RUNS: usize = 3;

/// One thread's work: prepare, wait at the barrier, make `hits` hits, and
/// return how long the hits took.
type Hitter = Box<dyn FnOnce(&Barrier, u64) -> Duration + Send>;

/// Makes one [`Hitter`] per thread, all sharing one cache.
type MakeHitter = Box<dyn Fn() -> Hitter>;

/// A thread driving its clone of `svc` on its own current_thread runtime.
fn service_hitter<S, V>(svc: S) -> Hitter
where
    S: Service<u64, Response = V> + Send + 'static,
    S::Error: fmt::Debug,
{
    Box::new(move |barrier, hits| {
        let rt = Builder::new_current_thread().build().expect("runtime");
        let mut svc = svc;
        rt.block_on(async {
            barrier.wait();
            let start = Instant::now();
            for _ in 0..hits {
                let ready = svc.ready().await.expect("inner service is always ready");
                let res = ready.call(black_box(KEY)).await;
                black_box(res.expect("inner service never fails"));
            }
            start.elapsed()
        })
    })
}

/// A thread reading the shared store directly with `get`.
fn store_hitter<V>(get: impl Fn(&u64) -> Option<V> + Send + 'static) -> Hitter {
    Box::new(move |barrier, hits| {
        barrier.wait();
        let start = Instant::now();
        for _ in 0..hits {
            black_box(get(black_box(&KEY)).expect("stored"));
        }
        start.elapsed()
    })
}

/// The implementations, with responses of type `V` made by `value`.
fn cases<V>(value: fn(u64) -> V) -> Vec<(&'static str, MakeHitter)>
where
    V: Clone + Send + Sync + 'static,
{
    let inner =
        service_fn(move |req: u64| -> Ready<Result<V, Infallible>> { ready(Ok(value(req))) });
    let rt = Builder::new_current_thread().build().expect("runtime");

    let bare = inner;
    let (herdsman, handle) = caches::herdsman(inner, 64 << 20);
    rt.block_on(herdsman.clone().oneshot(KEY)).expect("stored");
    assert_eq!(handle.stats().entries, 1);
    let resilience = caches::tower_resilience(inner, 1024, Some(caches::TTL));
    rt.block_on(resilience.clone().oneshot(KEY))
        .expect("stored");
    let moka = moka::sync::Cache::<u64, V>::new(1024);
    moka.insert(KEY, value(KEY));
    // Not `Clone` itself (moka's is a handle to shared state).
    let quick = Arc::new(quick_cache::sync::Cache::<u64, V>::new(1024));
    quick.insert(KEY, value(KEY));

    vec![
        (
            "bare inner service (reference)",
            Box::new(move || service_hitter(bare)),
        ),
        (
            "herdsman cache",
            Box::new(move || service_hitter(herdsman.clone())),
        ),
        (
            "tower-resilience cache",
            Box::new(move || service_hitter(resilience.clone())),
        ),
        (
            "moka sync get",
            Box::new(move || {
                let moka = moka.clone();
                store_hitter(move |k| moka.get(k))
            }),
        ),
        (
            "quick_cache get",
            Box::new(move || {
                let quick = quick.clone();
                store_hitter(move |k| quick.get(k))
            }),
        ),
    ]
}

/// A clone of one shared 1 KiB payload, whatever the request: the bare
/// service then pays the same reference-count bump as a cache hit.
fn shared_payload(_: u64) -> Bytes {
    static PAYLOAD: OnceLock<Bytes> = OnceLock::new();
    PAYLOAD.get_or_init(|| caches::payload(KEY)).clone()
}

/// Runs `threads` hitters at once; returns each one's time.
fn measure(make: &MakeHitter, threads: usize, hits: u64) -> Vec<Duration> {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let hitter = make();
            let barrier = barrier.clone();
            thread::spawn(move || hitter(&barrier, hits))
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("hitter panicked"))
        .collect()
}

/// Hits per second of each thread, and of all together (all hits over the
/// slowest thread's time).
fn rates(times: &[Duration], hits: u64) -> (Vec<f64>, f64) {
    let each = times
        .iter()
        .map(|t| hits as f64 / t.as_secs_f64())
        .collect();
    let slowest = times.iter().max().expect("one thread at least");
    let total = hits as f64 * times.len() as f64 / slowest.as_secs_f64();
    (each, total)
}

/// The run (of [`RUNS`]) with the median total rate.
fn median_run(make: &MakeHitter, threads: usize, hits: u64) -> (Vec<f64>, f64) {
    let mut runs: Vec<(Vec<f64>, f64)> = (0..RUNS)
        .map(|_| rates(&measure(make, threads, hits), hits))
        .collect();
    runs.sort_by(|a, b| a.1.total_cmp(&b.1));
    runs.swap_remove(RUNS / 2)
}

/// Millions of hits per second, and the matching ns per hit.
fn mops(rate: f64) -> String {
    format!("{:.2} M/s ({:.0} ns)", rate / 1e6, 1e9 / rate)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|arg| arg == "--bench");
    let filters: Vec<&String> = args.iter().filter(|arg| !arg.starts_with("--")).collect();
    let hits: u64 = if full { 1_000_000 } else { 10_000 };

    println!(
        "\n## cache hit under contention: {hits} hits per thread on one key, median of {RUNS} runs\n"
    );
    println!(
        "| value | implementation | 1 thread | 2 threads: thread A | thread B | 2 threads: total | total, 2 / 1 |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    let values: [(&str, Vec<(&str, MakeHitter)>); 2] = [
        ("u64", cases(|n| n)),
        ("Bytes, 1 KiB", cases(shared_payload)),
    ];
    for (value, cases) in values {
        for (name, make) in cases {
            let case = format!("{value} {name}");
            if !filters.iter().all(|word| case.contains(word.as_str())) {
                continue;
            }
            let (_, one) = median_run(&make, 1, hits);
            let (each, two) = median_run(&make, 2, hits);
            println!(
                "| {value} | {name} | {} | {} | {} | {} | {:.2}× |",
                mops(one),
                mops(each[0]),
                mops(each[1]),
                mops(two),
                two / one,
            );
        }
    }
}
