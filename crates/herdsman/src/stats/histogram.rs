//! Latency histograms: hdrhistogram's bucket layout, recorded lock-free.
//!
//! A request records its latency with one relaxed `fetch_add` on one
//! counter: the counters are laid out exactly as an hdrhistogram with the
//! same bounds and precision lays out its own, so a snapshot copies them into
//! an `hdrhistogram::Histogram` and takes its percentiles from there. The
//! counters are independent (no protocol between them), so there is nothing
//! to model-check: a snapshot taken during traffic may miss requests that
//! land while it copies, never miscounts them.

use std::{
    cell::Cell,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        OnceLock,
    },
};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, from 1 µs to one hour, with two
/// significant figures: every percentile is within 1 % of the true value.
pub const SIGNIFICANT_FIGURES: u8 = 2;
const HIGHEST_MICROS: u64 = 3_600_000_000;

// hdrhistogram's layout for 2 significant figures and a lowest value of 1:
// 256 sub-buckets (the smallest power of two ≥ 2 × 10²), half of them per
// bucket after the first, unit magnitude 0.
const SUB_BUCKET_HALF_MAGNITUDE: u32 = 7;
const SUB_BUCKET_HALF: usize = 1 << SUB_BUCKET_HALF_MAGNITUDE;
const SUB_BUCKET_MASK: u64 = (2 * SUB_BUCKET_HALF as u64) - 1;
const LEADING_ZERO_BASE: u32 = 64 - SUB_BUCKET_HALF_MAGNITUDE - 1;
/// Counters per histogram: the index of [`HIGHEST_MICROS`], plus one.
const COUNTS: usize = index(HIGHEST_MICROS) + 1;

/// The counter of `micros` (at least 1): hdrhistogram's `index_for`.
const fn index(micros: u64) -> usize {
    let bucket = LEADING_ZERO_BASE - (micros | SUB_BUCKET_MASK).leading_zeros();
    let sub_bucket = (micros >> bucket) as usize;
    ((bucket as usize) << SUB_BUCKET_HALF_MAGNITUDE) + sub_bucket
}

/// The lowest value counted by counter `i`.
fn lowest(i: usize) -> u64 {
    if i < 2 * SUB_BUCKET_HALF {
        return i as u64;
    }
    let bucket = (i >> SUB_BUCKET_HALF_MAGNITUDE) - 1;
    let sub_bucket = i - (bucket << SUB_BUCKET_HALF_MAGNITUDE);
    (sub_bucket as u64) << bucket
}

/// Stripes per histogram. Each thread records into one stripe (assigned
/// round-robin on first use), so two worker threads recording the same
/// latency rarely bounce one cache line between cores; reads add the
/// stripes up.
const STRIPES: usize = 4;

thread_local! {
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    STRIPE.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
            s.set(i);
        }
        i
    })
}

/// Each stripe's counters (26 KiB) are allocated on its first record, so
/// classes and sides that never record (a class seen only through events,
/// the upstream side of a class always answered from cache) cost nothing.
pub(crate) struct Latency {
    stripes: [OnceLock<Box<[AtomicU64]>>; STRIPES],
}

fn empty() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_MICROS, SIGNIFICANT_FIGURES)
        .expect("constant bounds are valid")
}

impl Latency {
    pub(crate) fn new() -> Self {
        Latency {
            stripes: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Records one latency, given in nanoseconds.
    #[inline]
    pub(crate) fn record(&self, nanos: u64) {
        let micros = (nanos / 1_000).clamp(1, HIGHEST_MICROS);
        let counts =
            self.stripes[stripe()].get_or_init(|| (0..COUNTS).map(|_| AtomicU64::new(0)).collect());
        counts[index(micros)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn merged(&self) -> Histogram<u64> {
        let mut all = empty();
        for counts in self.stripes.iter().filter_map(OnceLock::get) {
            for (i, n) in counts.iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    all.saturating_record_n(lowest(i), n);
                }
            }
        }
        all
    }

    pub(crate) fn percentiles(&self) -> Percentiles {
        Percentiles::of(&self.merged())
    }

    /// Approximate heap bytes held.
    pub(crate) fn memory_bytes(&self) -> u64 {
        let allocated = self.stripes.iter().filter(|s| s.get().is_some()).count();
        (allocated * COUNTS * std::mem::size_of::<AtomicU64>()) as u64
    }
}

/// Latency percentiles in milliseconds, within the histogram's precision
/// ([`SIGNIFICANT_FIGURES`]: 1 %) and never below 1 µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Percentiles {
    /// Latencies recorded.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// The largest latency.
    pub max: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |micros: u64| micros as f64 / 1_000.0;
        Percentiles {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_hdrhistograms() {
        let h = empty();
        assert!(COUNTS <= h.distinct_values());
        // Distinct values land in distinct counters exactly when hdrhistogram
        // tells them apart.
        let mut last = 0;
        for v in 1..100_000u64 {
            let i = index(v);
            assert!(i == last || i == last + 1, "no counter skipped at {v}");
            assert_eq!(i != last, h.lowest_equivalent(v) == v, "boundary at {v}");
            last = i;
        }
        for v in [
            1,
            2,
            127,
            128,
            255,
            256,
            257,
            1_000,
            65_535,
            1 << 20,
            999_999_937,
            HIGHEST_MICROS,
        ] {
            assert_eq!(lowest(index(v)), h.lowest_equivalent(v), "counter of {v}");
        }
    }
}
