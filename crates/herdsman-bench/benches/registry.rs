//! Registry: 100,000 in-process subscribers on one key.
//!
//! - **Fan-out**: every subscriber is its own task waiting on `next()`; one
//!   change (a `refresh` whose poll returns a new value) must reach them all.
//!   Latency is from the `refresh` call to each subscriber's wake-up (its
//!   unsubscribe comes after, off the clock), on a
//!   current_thread runtime and on a 2-worker multi_thread runtime; the table
//!   gives p50, p99 and max over all subscribers, median of the runs. The
//!   same fan-out through a bare `tokio::sync::watch` channel (one receiver
//!   per task) shows what the runtime alone costs.
//! - **Memory**: resident memory (`VmRSS`) before and after 100,000
//!   `Subscription`s are made and held in a pre-allocated `Vec` (no task per
//!   subscriber), divided by 100,000; next to it, the registry's own estimate
//!   (`MemorySource::memory_bytes`).
//! - **Subscribe + unsubscribe**: ns per `subscribe` then `drop`, on a key
//!   that another subscriber keeps alive (the common case: a tab opens and
//!   closes), and on an idle key (the first subscriber starts the loop task,
//!   the last one stops it).
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-registry cargo bench -p herdsman-bench --bench registry
//! ```
//!
//! Without `--bench` (as under `cargo test --benches`) it runs a small smoke
//! version.

use std::{
    convert::Infallible,
    future::ready,
    hint::black_box,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use herdsman::{
    event::MemorySource,
    key::Key,
    registry::{RegistryLayer, Subscription},
};
use tokio::runtime::{Builder, Runtime};
use tower::{service_fn, Layer};

/// The one key every subscriber follows.
const KEY: u64 = 7;

struct Settings {
    subscribers: usize,
    runs: usize,
    churn: u32,
}

impl Settings {
    fn from_args() -> Self {
        if std::env::args().any(|arg| arg == "--bench") {
            Settings {
                subscribers: 100_000,
                runs: 5,
                churn: 1_000_000,
            }
        } else {
            Settings {
                subscribers: 1_000,
                runs: 1,
                churn: 1_000,
            }
        }
    }
}

fn runtime(workers: usize) -> Runtime {
    let mut builder = if workers == 1 {
        Builder::new_current_thread()
    } else {
        let mut builder = Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    builder.enable_time().build().expect("runtime")
}

/// A registry over an upstream that answers a new number on every call,
/// instantly; it polls only when asked (the interval is an hour).
macro_rules! registry {
    () => {{
        let calls = Arc::new(AtomicU64::new(0));
        let upstream = service_fn(move |_: u64| {
            ready(Ok::<_, Infallible>(calls.fetch_add(1, Ordering::Relaxed)))
        });
        RegistryLayer::new(|k: &u64| Some(Key::from(*k)))
            .with_interval(Duration::from_secs(3600))
            .with_max_subscribers_per_key(usize::MAX)
            .with_max_subscribers(usize::MAX)
            .layer(upstream)
    }};
}

/// Latencies from the refresh to each subscriber's wake-up.
fn fan_out(rt: &Runtime, subscribers: usize) -> Vec<Duration> {
    rt.block_on(async {
        let registry = registry!();
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(1);
        let mut tasks = Vec::with_capacity(subscribers);
        for _ in 0..subscribers {
            let mut sub: Subscription<u64> = registry.subscribe(KEY).expect("subscribe");
            let ready_tx = ready_tx.clone();
            tasks.push(tokio::spawn(async move {
                use futures_util_lite::next;
                let first = next(&mut sub).await.expect("first value");
                drop(ready_tx);
                let changed = next(&mut sub).await.expect("the change");
                let at = Instant::now();
                assert!(changed.version() > first.version());
                // Unsubscribed after the measurement, not on its clock.
                (at, sub)
            }));
        }
        drop(ready_tx);
        // Every subscriber has its first value and is parked.
        let _ = ready_rx.recv().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t0 = Instant::now();
        registry.handle().refresh(&Key::from(KEY));
        let mut latencies = Vec::with_capacity(subscribers);
        let mut subs = Vec::with_capacity(subscribers);
        for task in tasks {
            let (at, sub) = task.await.expect("subscriber");
            latencies.push(at - t0);
            subs.push(sub);
        }
        drop(subs);
        latencies
    })
}

/// The same fan-out through a bare `tokio::sync::watch` channel (one
/// receiver per task, the value an `Arc`): the floor set by the runtime.
fn fan_out_watch(rt: &Runtime, subscribers: usize) -> Vec<Duration> {
    rt.block_on(async {
        let (tx, rx) = tokio::sync::watch::channel(Arc::new(0u64));
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(1);
        let mut tasks = Vec::with_capacity(subscribers);
        for _ in 0..subscribers {
            let mut rx = rx.clone();
            let ready_tx = ready_tx.clone();
            tasks.push(tokio::spawn(async move {
                let first = rx.borrow_and_update().clone();
                drop(ready_tx);
                rx.changed().await.expect("the change");
                let changed = rx.borrow_and_update().clone();
                let at = Instant::now();
                assert!(changed > first);
                (at, rx)
            }));
        }
        drop(ready_tx);
        let _ = ready_rx.recv().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t0 = Instant::now();
        tx.send_replace(Arc::new(1));
        let mut latencies = Vec::with_capacity(subscribers);
        let mut receivers = Vec::with_capacity(subscribers);
        for task in tasks {
            let (at, rx) = task.await.expect("subscriber");
            latencies.push(at - t0);
            receivers.push(rx);
        }
        drop(receivers);
        latencies
    })
}

/// Just enough of `StreamExt::next` for one `Unpin` stream.
mod futures_util_lite {
    use std::{future::poll_fn, pin::Pin};

    use futures_core::Stream;

    pub(crate) async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
        poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// (RSS bytes per subscriber, the registry's estimate per subscriber).
fn memory(subscribers: usize) -> (f64, f64) {
    let rt = runtime(1);
    rt.block_on(async {
        let registry = registry!();
        let mut subs: Vec<Subscription<u64>> = Vec::with_capacity(subscribers);
        subs.push(registry.subscribe(KEY).expect("subscribe"));
        tokio::task::yield_now().await;
        let before = rss_kb();
        for _ in 1..subscribers {
            subs.push(registry.subscribe(KEY).expect("subscribe"));
        }
        let after = rss_kb();
        let estimate = registry.handle().memory_bytes() as f64 / subscribers as f64;
        let rss = (after.saturating_sub(before) * 1024) as f64 / (subscribers - 1) as f64;
        drop(subs);
        (rss, estimate)
    })
}

/// ns per subscribe + unsubscribe: (on a live key, on an idle key).
fn churn(n: u32) -> (f64, f64) {
    let rt = runtime(1);
    rt.block_on(async {
        let registry = registry!();
        let _keeper = registry.subscribe(KEY).expect("subscribe");
        tokio::task::yield_now().await;
        let t = Instant::now();
        for _ in 0..n {
            drop(black_box(registry.subscribe(KEY).expect("subscribe")));
        }
        let live = t.elapsed().as_nanos() as f64 / f64::from(n);

        let idle = n / 10;
        let t = Instant::now();
        for _ in 0..idle {
            drop(black_box(registry.subscribe(KEY + 1).expect("subscribe")));
            // Let the stopped loop task end, as it would between tabs.
            tokio::task::yield_now().await;
        }
        let cold = t.elapsed().as_nanos() as f64 / f64::from(idle);
        assert_eq!(registry.handle().stats().tasks, 1, "stopped loops end");
        (live, cold)
    })
}

fn main() {
    let settings = Settings::from_args();
    let n = settings.subscribers;

    let (rss, estimate) = memory(n);
    println!("memory, {n} subscribers on one key:");
    println!("  resident: {rss:.0} B per subscriber; registry estimate: {estimate:.0} B");

    println!(
        "\nfan-out: one change to {n} subscribers (each its own task), {} runs",
        settings.runs
    );
    println!("| case | p50 | p99 | max (median of runs) | p99 of each run |");
    println!("|---|---:|---:|---:|---|");
    type FanOut = fn(&Runtime, usize) -> Vec<Duration>;
    let cases: [(&str, usize, FanOut); 4] = [
        ("herdsman, current_thread", 1, fan_out),
        ("tokio watch, current_thread", 1, fan_out_watch),
        ("herdsman, multi_thread, 2 workers", 2, fan_out),
        ("tokio watch, multi_thread, 2 workers", 2, fan_out_watch),
    ];
    for (name, workers, case) in cases {
        let rt = runtime(workers);
        let mut runs = Vec::new();
        for _ in 0..settings.runs {
            let mut latencies = case(&rt, n);
            latencies.sort();
            runs.push((
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99),
                *latencies.last().expect("subscribers"),
            ));
        }
        let median = |f: fn(&(Duration, Duration, Duration)) -> Duration| {
            let mut v: Vec<Duration> = runs.iter().map(f).collect();
            v.sort();
            v[v.len() / 2]
        };
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
        let p99s: Vec<String> = runs.iter().map(|r| ms(r.1)).collect();
        println!(
            "| {name} | {} | {} | {} | {} |",
            ms(median(|r| r.0)),
            ms(median(|r| r.1)),
            ms(median(|r| r.2)),
            p99s.join(", ")
        );
    }

    let (live, cold) = churn(settings.churn);
    println!("\nsubscribe + unsubscribe: {live:.0} ns on a live key, {cold:.0} ns on an idle key (starts and stops its loop)");
}
