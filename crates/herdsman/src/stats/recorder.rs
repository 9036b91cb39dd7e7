//! One endpoint class's counters.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering::Relaxed},
        Mutex, OnceLock, PoisonError,
    },
};

use super::{
    histogram::Latency,
    scope::{Answer, PARTS},
};
use crate::{
    class::Class,
    clock::Stopwatch,
    event::{BreakerState, Limit, Rejection},
};

/// What kind of error a client got: the core's kinds, which every error
/// [describes itself](crate::error::Describe) with.
pub use crate::error::ErrorKind;

/// Every rejection counted: the layers' own, the event streams' cap, then
/// the Registry's refused subscriptions, one per [`Limit`].
pub(crate) const REJECTIONS: [Rejection; 5 + Limit::ALL.len()] = {
    let mut all = [Rejection::BreakerOpen; 5 + Limit::ALL.len()];
    all[1] = Rejection::Overloaded;
    all[2] = Rejection::RateLimited;
    all[3] = Rejection::InFlightCap;
    all[4] = Rejection::EventStreams;
    let mut i = 0;
    while i < Limit::ALL.len() {
        all[5 + i] = Rejection::Subscription(Limit::ALL[i]);
        i += 1;
    }
    all
};

fn rejection_index(r: Rejection) -> usize {
    REJECTIONS.iter().position(|k| *k == r).unwrap_or(0)
}

/// Whether a class's breaker is switched on, as the Coordinator tells it.
pub(crate) type BreakerSwitch = Box<dyn Fn() -> bool + Send + Sync>;

/// Cumulative totals sampled once per monitor tick, for sliding rates.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sample {
    pub(crate) at_sec: u64,
    pub(crate) requests: u64,
    pub(crate) upstream_calls: u64,
    pub(crate) errors: u64,
}

pub(crate) struct ClassRecorder {
    pub(crate) class: Class,
    pub(crate) clock: Stopwatch,
    // Written on every client request.
    pub(crate) requests: AtomicU64,
    /// Requests that completed, failed or were cancelled, by what answered
    /// them ([`Answer::part`]): in flight is `requests` minus their sum, one
    /// atomic addition at each end.
    pub(crate) answered: [AtomicU64; PARTS],
    pub(crate) errors: AtomicU64,
    pub(crate) errors_by_kind: [AtomicU64; ErrorKind::ALL.len()],
    pub(crate) cancelled: AtomicU64,
    pub(crate) latency: Latency,
    // Written on upstream calls.
    pub(crate) upstream_calls: AtomicU64,
    pub(crate) upstream_errors: AtomicU64,
    pub(crate) upstream_in_flight: AtomicI64,
    pub(crate) upstream_latency: Latency,
    // Written by events from the other layers.
    pub(crate) cache_hits: AtomicU64,
    /// Of `cache_hits`, those the store backend answered.
    pub(crate) cache_backend_hits: AtomicU64,
    pub(crate) cache_misses: AtomicU64,
    pub(crate) stale_served: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) reused: AtomicU64,
    pub(crate) rejections: [AtomicU64; REJECTIONS.len()],
    pub(crate) subscribers: AtomicI64,
    pub(crate) polls: AtomicU64,
    pub(crate) breaker: AtomicU8,
    /// Set once, by the Coordinator: whether the class's breaker is on.
    pub(crate) breaker_switch: OnceLock<BreakerSwitch>,
    // Written by the monitor.
    pub(crate) history: Mutex<VecDeque<Sample>>,
}

const NO_BREAKER: u8 = u8::MAX;

impl ClassRecorder {
    pub(crate) fn new(class: Class, clock: Stopwatch) -> Self {
        ClassRecorder {
            class,
            clock,
            requests: AtomicU64::new(0),
            answered: Default::default(),
            errors: AtomicU64::new(0),
            errors_by_kind: Default::default(),
            cancelled: AtomicU64::new(0),
            latency: Latency::new(),
            upstream_calls: AtomicU64::new(0),
            upstream_errors: AtomicU64::new(0),
            upstream_in_flight: AtomicI64::new(0),
            upstream_latency: Latency::new(),
            cache_hits: AtomicU64::new(0),
            cache_backend_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            stale_served: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            rejections: Default::default(),
            subscribers: AtomicI64::new(0),
            polls: AtomicU64::new(0),
            breaker: AtomicU8::new(NO_BREAKER),
            breaker_switch: OnceLock::new(),
            history: Mutex::new(VecDeque::new()),
        }
    }

    #[inline]
    pub(crate) fn error(&self, kind: ErrorKind) {
        self.errors.fetch_add(1, Relaxed);
        let i = ErrorKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.errors_by_kind[i].fetch_add(1, Relaxed);
    }

    pub(crate) fn errors_of(&self, kind: ErrorKind) -> u64 {
        let i = ErrorKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.errors_by_kind[i].load(Relaxed)
    }

    pub(crate) fn rejected(&self, r: Rejection) {
        self.rejections[rejection_index(r)].fetch_add(1, Relaxed);
    }

    pub(crate) fn rejections_of(&self, r: Rejection) -> u64 {
        self.rejections[rejection_index(r)].load(Relaxed)
    }

    pub(crate) fn set_breaker(&self, state: BreakerState) {
        let i = BreakerState::ALL
            .iter()
            .position(|s| *s == state)
            .unwrap_or(0);
        self.breaker.store(i as u8, Relaxed);
    }

    pub(crate) fn breaker(&self) -> Option<BreakerState> {
        BreakerState::ALL
            .get(usize::from(self.breaker.load(Relaxed)))
            .copied()
    }

    /// Counts one finished client request in the part of the saving its
    /// answer falls in.
    #[inline]
    pub(crate) fn answered(&self, answer: Answer) {
        self.answered[answer.part()].fetch_add(1, Relaxed);
    }

    /// The finished requests by part ([`Answer::part`]).
    pub(crate) fn parts(&self) -> [u64; PARTS] {
        self.answered.each_ref().map(|n| n.load(Relaxed))
    }

    /// Client requests in flight now.
    pub(crate) fn in_flight(&self) -> i64 {
        // The parts first: a request finishing between the loads is then
        // counted in neither, never as -1.
        let finished: u64 = self.parts().iter().sum();
        let requests = self.requests.load(Relaxed);
        requests.saturating_sub(finished) as i64
    }

    /// Whether the class's breaker is switched off (as the Coordinator's
    /// switch says; `false` when nobody told).
    pub(crate) fn breaker_off(&self) -> bool {
        self.breaker_switch.get().is_some_and(|on| !on())
    }

    pub(crate) fn sample(&self, at_sec: u64) -> Sample {
        Sample {
            at_sec,
            requests: self.requests.load(Relaxed),
            upstream_calls: self.upstream_calls.load(Relaxed),
            errors: self.errors.load(Relaxed),
        }
    }

    /// Keeps one sample per tick, `keep_secs` back.
    pub(crate) fn push_sample(&self, sample: Sample, keep_secs: u64) {
        let mut h = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        while h
            .front()
            .is_some_and(|s| s.at_sec + keep_secs < sample.at_sec)
        {
            h.pop_front();
        }
        h.push_back(sample);
    }

    /// The totals as they were `secs` ago (the newest sample at or before
    /// then; zero before the first sample).
    pub(crate) fn ago(&self, now_sec: u64, secs: u64) -> Sample {
        if now_sec < secs {
            // Younger than the window: everything counted is inside it.
            return Sample::default();
        }
        let then = now_sec - secs;
        let h = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        h.iter()
            .rev()
            .find(|s| s.at_sec <= then)
            .copied()
            .unwrap_or_default()
    }

    pub(crate) fn memory_bytes(&self) -> u64 {
        std::mem::size_of::<Self>() as u64
            + self.latency.memory_bytes()
            + self.upstream_latency.memory_bytes()
    }
}
