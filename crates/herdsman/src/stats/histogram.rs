//! Latency histograms: hdrhistogram, striped so that concurrent requests
//! rarely meet on one lock.

use std::{
    cell::Cell,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex, PoisonError,
    },
};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, from 1 µs to one hour, with two
/// significant figures: every percentile is within 1 % of the true value.
pub const SIGNIFICANT_FIGURES: u8 = 2;
const HIGHEST_MICROS: u64 = 3_600_000_000;

/// Stripes per histogram. Each thread records into one stripe (assigned
/// round-robin on first use), so two worker threads contend only when they
/// share a stripe; reads merge the stripes.
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

/// Each stripe's histogram (about 26 KiB) is allocated on its first record,
/// so classes and sides that never record (a class seen only through
/// events, the upstream side of a class always answered from cache) cost
/// nothing.
pub(crate) struct Latency {
    stripes: [Mutex<Option<Histogram<u64>>>; STRIPES],
}

fn empty() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_MICROS, SIGNIFICANT_FIGURES)
        .expect("constant bounds are valid")
}

impl Latency {
    pub(crate) fn new() -> Self {
        Latency {
            stripes: std::array::from_fn(|_| Mutex::new(None)),
        }
    }

    /// Records one latency, given in nanoseconds.
    #[inline]
    pub(crate) fn record(&self, nanos: u64) {
        let micros = (nanos / 1_000).clamp(1, HIGHEST_MICROS);
        let mut h = self.stripes[stripe()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        h.get_or_insert_with(empty).saturating_record(micros);
    }

    pub(crate) fn merged(&self) -> Histogram<u64> {
        let mut all = empty();
        for s in &self.stripes {
            if let Some(h) = &*s.lock().unwrap_or_else(PoisonError::into_inner) {
                // Same bounds on both sides: adding cannot fail.
                let _ = all.add(h);
            }
        }
        all
    }

    pub(crate) fn percentiles(&self) -> Percentiles {
        Percentiles::of(&self.merged())
    }

    /// Approximate heap bytes held.
    pub(crate) fn memory_bytes(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                    .map_or(0, |h| {
                        (h.distinct_values() * std::mem::size_of::<u64>()) as u64
                    })
            })
            .sum()
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
