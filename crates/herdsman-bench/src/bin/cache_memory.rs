//! Memory: 100,000 cached entries of 1 KiB, and the process's peak RSS.
//!
//! Takes the implementation as its argument: `herdsman`, `tower-resilience`,
//! `moka`, `quick_cache`, or `baseline` (a `Vec` holding the same payloads and
//! nothing else). It stores 100,000 distinct `u64` keys with a distinct 1 KiB
//! `Bytes` payload each (herdsman and tower-resilience through their service,
//! with an always-ready inner service making the payloads; the bare stores
//! with `insert`), checks that nothing was evicted, and prints the peak RSS
//! (`VmHWM` in `/proc/self/status`) after filling and at exit. Bookkeeping per
//! entry is (peak RSS − baseline's peak RSS) / 100,000.
//!
//! Every mode builds the same current_thread runtime, so its memory cancels
//! out, and each mode runs in a fresh process:
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-bench cargo build --release -p herdsman-bench --bin cache_memory
//! for m in baseline herdsman tower-resilience moka quick_cache; do
//!     /usr/bin/time -v /work/target-bench/release/cache_memory $m
//! done
//! ```

use std::{
    convert::Infallible,
    future::ready,
    hint::black_box,
    process::ExitCode,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use herdsman_bench::caches::{self, payload};
use quick_cache::UnitWeighter;
use tokio::runtime::{Builder, Runtime};
use tower::{service_fn, Service, ServiceExt};

/// How many entries are stored.
const ENTRIES: u64 = 100_000;

/// Checks that every entry is still held; it owns the filled cache, so the
/// cache lives until the check has run.
type Check<'a> = Box<dyn FnOnce() -> Result<(), String> + 'a>;

/// The implementations, by command-line name.
const MODES: [&str; 5] = [
    "baseline",
    "herdsman",
    "tower-resilience",
    "moka",
    "quick_cache",
];

/// A kB figure from `/proc/self/status`, e.g. `VmHWM` (peak RSS).
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().strip_suffix("kB")?.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

/// An inner service that answers request `n` with [`payload`]`(n)` and counts
/// its calls.
fn upstream(
    calls: Arc<AtomicU64>,
) -> impl Service<u64, Response = Bytes, Error = Infallible, Future: Send> + Clone + Send + 'static
{
    service_fn(move |n: u64| {
        calls.fetch_add(1, Ordering::Relaxed);
        ready(Ok::<_, Infallible>(payload(n)))
    })
}

/// Sends requests `0..ENTRIES` through `svc`, one after another.
async fn request_all<S>(svc: &mut S)
where
    S: Service<u64, Response = Bytes>,
    S::Error: std::fmt::Debug,
{
    for n in 0..ENTRIES {
        let res = svc.ready().await.expect("ready").call(n).await;
        black_box(res.expect("inner service never fails"));
    }
}

/// Fills the cache named `mode`; returns the check that every entry is still
/// held, to run after the peak RSS was read.
fn fill<'a>(mode: &str, rt: &'a Runtime) -> Check<'a> {
    match mode {
        "baseline" => {
            let mut held = Vec::with_capacity(ENTRIES as usize);
            for n in 0..ENTRIES {
                held.push(payload(n));
            }
            let check = move || {
                let len = held.len() as u64;
                (len == ENTRIES)
                    .then_some(())
                    .ok_or(format!("{len} payloads"))
            };
            Box::new(check)
        }
        "herdsman" => {
            let calls = Arc::new(AtomicU64::new(0));
            let (mut svc, handle) = caches::herdsman(upstream(calls.clone()), 1 << 30);
            rt.block_on(request_all(&mut svc));
            let check = move || {
                let entries = handle.stats().entries;
                rt.block_on(request_all(&mut svc));
                let stats = handle.stats();
                let calls = calls.load(Ordering::Relaxed);
                (entries == ENTRIES && stats.hits == ENTRIES && calls == ENTRIES)
                    .then_some(())
                    .ok_or(format!("{entries} entries, {stats:?}, {calls} inner calls"))
            };
            Box::new(check)
        }
        "tower-resilience" => {
            let calls = Arc::new(AtomicU64::new(0));
            let mut svc = caches::tower_resilience(
                upstream(calls.clone()),
                ENTRIES as usize,
                Some(caches::TTL),
            );
            rt.block_on(request_all(&mut svc));
            let check = move || {
                // No length accessor: a second pass must not reach the inner
                // service.
                rt.block_on(request_all(&mut svc));
                let calls = calls.load(Ordering::Relaxed);
                (calls == ENTRIES)
                    .then_some(())
                    .ok_or(format!("{calls} inner calls"))
            };
            Box::new(check)
        }
        "moka" => {
            let cache = moka::sync::Cache::<u64, Bytes>::new(ENTRIES);
            for n in 0..ENTRIES {
                cache.insert(n, payload(n));
            }
            cache.run_pending_tasks();
            let check = move || {
                cache.run_pending_tasks();
                let entries = cache.entry_count();
                let found = (0..ENTRIES).filter(|n| cache.get(n).is_some()).count() as u64;
                (entries == ENTRIES && found == ENTRIES)
                    .then_some(())
                    .ok_or(format!("{entries} entries, {found} found"))
            };
            Box::new(check)
        }
        "quick_cache" => {
            // Twice the entries as the bound: quick_cache splits it evenly
            // over its shards, which the keys do not fill evenly.
            let cache = quick_cache::sync::Cache::<u64, Bytes, UnitWeighter>::with_weighter(
                ENTRIES as usize,
                2 * ENTRIES,
                UnitWeighter,
            );
            for n in 0..ENTRIES {
                cache.insert(n, payload(n));
            }
            let check = move || {
                let entries = cache.len() as u64;
                let found = (0..ENTRIES).filter(|n| cache.get(n).is_some()).count() as u64;
                (entries == ENTRIES && found == ENTRIES)
                    .then_some(())
                    .ok_or(format!("{entries} entries, {found} found"))
            };
            Box::new(check)
        }
        _ => unreachable!("mode checked in main"),
    }
}

fn main() -> ExitCode {
    let mode = std::env::args().nth(1).unwrap_or_default();
    if !MODES.contains(&mode.as_str()) {
        eprintln!("usage: cache_memory <{}>", MODES.join("|"));
        return ExitCode::FAILURE;
    }
    let rt = Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let check = fill(&mode, &rt);
    let peak_filled = status_kb("VmHWM");
    let rss_filled = status_kb("VmRSS");
    let checked = check();
    let peak_exit = status_kb("VmHWM");
    match checked {
        Ok(()) => {
            println!(
                "{mode}: {ENTRIES} entries of {} B, nothing evicted; peak RSS after filling \
                 {peak_filled} kB (RSS {rss_filled} kB), peak RSS at exit {peak_exit} kB",
                caches::PAYLOAD_LEN
            );
            ExitCode::SUCCESS
        }
        Err(what) => {
            eprintln!("{mode}: entries lost: {what}");
            ExitCode::FAILURE
        }
    }
}
