//! One circuit breaker: a state machine on atomics.
//!
//! The state, the number of trips in a row and the time the open state ends
//! live in one `AtomicU64`, so transitions are single compare-and-swaps. The
//! closed path reads it, bumps the window position and, only when an outcome
//! changes a bit, writes the window: no lock, no allocation, and no clock read
//! unless slow-call detection is on.
//!
//! Outcomes carry the generation they were admitted in; outcomes of an older
//! generation (a call admitted before the last transition) are ignored.

use std::{
    fmt,
    hash::BuildHasher,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use tokio::{sync::broadcast, time::Instant};

use super::{BreakerConfig, BreakerEvent, BreakerOpen, BreakerState, ClassStats};
use crate::{
    backend::TripBackend,
    class::Class,
    event::{Event, Observers, Rejection},
    sync::{AtomicBool, AtomicU32, AtomicU64},
};

const KIND_BITS: u64 = 3;
const TRIPS_SHIFT: u64 = KIND_BITS;
const TRIPS_BITS: u64 = 8;
const UNTIL_SHIFT: u64 = TRIPS_SHIFT + TRIPS_BITS;

fn pack(state: BreakerState, trips: u32, until_ms: u64) -> u64 {
    let kind = match state {
        BreakerState::Closed => 0,
        BreakerState::Open => 1,
        BreakerState::HalfOpen => 2,
        BreakerState::ForcedOpen => 3,
        BreakerState::Disabled => 4,
    };
    kind | (u64::from(trips.min(255)) << TRIPS_SHIFT) | (until_ms << UNTIL_SHIFT)
}

fn kind(word: u64) -> BreakerState {
    match word & ((1 << KIND_BITS) - 1) {
        0 => BreakerState::Closed,
        1 => BreakerState::Open,
        2 => BreakerState::HalfOpen,
        3 => BreakerState::ForcedOpen,
        _ => BreakerState::Disabled,
    }
}

fn trips(word: u64) -> u32 {
    ((word >> TRIPS_SHIFT) & ((1 << TRIPS_BITS) - 1)) as u32
}

fn until_ms(word: u64) -> u64 {
    word >> UNTIL_SHIFT
}

/// What a call was admitted as.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Admit {
    /// A call in the closed state; its outcome goes to the window.
    Closed { generation: u32 },
    /// A half-open probe holding one of the probe permits.
    Probe { generation: u32 },
    /// The breaker is disabled: nothing is recorded.
    Untracked,
}

/// How a call ended, as the breaker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) failure: bool,
    pub(crate) slow: bool,
}

pub(crate) struct Circuit {
    class: Class,
    config: BreakerConfig,
    word: AtomicU64,
    generation: AtomicU32,
    position: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
    consecutive: AtomicU32,
    /// The time-based window, when configured.
    buckets: Option<Buckets>,
    probes: AtomicU32,
    probe_successes: AtomicU32,
    /// Set by calls, cleared by the idle sweep.
    pub(crate) used: AtomicBool,
    /// Set when the idle sweep dropped this circuit from its set: services
    /// that cached it look it up again.
    pub(crate) retired: AtomicBool,
    subscribed: Arc<AtomicBool>,
    epoch: Instant,
    events: broadcast::Sender<BreakerEvent>,
    trips_total: AtomicU64,
    rejected_total: AtomicU64,
    metrics: Metrics,
    observers: Observers,
    /// Where this circuit's trips are announced, if they are shared.
    trips: Option<Arc<dyn TripBackend>>,
}

struct Metrics {
    state: [metrics::Gauge; 5],
    rejections: metrics::Counter,
    trips: metrics::Counter,
}

fn state_index(state: BreakerState) -> usize {
    match state {
        BreakerState::Closed => 0,
        BreakerState::Open => 1,
        BreakerState::HalfOpen => 2,
        BreakerState::ForcedOpen => 3,
        BreakerState::Disabled => 4,
    }
}

impl Circuit {
    pub(crate) fn new(
        class: Class,
        config: BreakerConfig,
        events: broadcast::Sender<BreakerEvent>,
        subscribed: Arc<AtomicBool>,
        observers: Observers,
        trips: Option<Arc<dyn TripBackend>>,
    ) -> Self {
        let endpoint = class.as_str().to_owned();
        let state = BreakerState::ALL.map(|s| {
            metrics::gauge!("herdsman_breaker_state", "endpoint" => endpoint.clone(), "state" => s.as_str())
        });
        state[0].set(1.0);
        let metrics = Metrics {
            state,
            rejections: metrics::counter!("herdsman_breaker_rejections_total", "endpoint" => endpoint.clone()),
            trips: metrics::counter!("herdsman_breaker_trips_total", "endpoint" => endpoint),
        };
        Circuit {
            class,
            config,
            word: AtomicU64::new(pack(BreakerState::Closed, 0, 0)),
            generation: AtomicU32::new(0),
            position: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            slow: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            buckets: config.time_window.map(Buckets::new),
            probes: AtomicU32::new(0),
            probe_successes: AtomicU32::new(0),
            used: AtomicBool::new(true),
            retired: AtomicBool::new(false),
            subscribed,
            epoch: Instant::now(),
            events,
            trips_total: AtomicU64::new(0),
            rejected_total: AtomicU64::new(0),
            metrics,
            observers,
            trips,
        }
    }

    pub(crate) fn class(&self) -> &Class {
        &self.class
    }

    pub(crate) fn config(&self) -> &BreakerConfig {
        &self.config
    }

    fn now_ms(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_millis() as u64
    }

    pub(crate) fn state(&self) -> BreakerState {
        kind(self.word.load(Ordering::Acquire))
    }

    /// Admits a call, or says how long the breaker stays open.
    pub(crate) fn admit(&self) -> Result<Admit, BreakerOpen> {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
        loop {
            let word = self.word.load(Ordering::Acquire);
            match kind(word) {
                BreakerState::Closed => {
                    return Ok(Admit::Closed {
                        generation: self.generation.load(Ordering::Acquire),
                    })
                }
                BreakerState::Disabled => return Ok(Admit::Untracked),
                BreakerState::ForcedOpen => return Err(self.reject(None)),
                BreakerState::Open => {
                    let now = self.now_ms();
                    let until = until_ms(word);
                    if now < until {
                        let probe_at = self.epoch + Duration::from_millis(until);
                        return Err(self.reject(Some(probe_at)));
                    }
                    // The wait is over: the first caller moves it to half-open.
                    let half_open = pack(BreakerState::HalfOpen, trips(word), 0);
                    self.transition(word, half_open);
                }
                BreakerState::HalfOpen => {
                    let generation = self.generation.load(Ordering::Acquire);
                    let max = self.config.half_open_probes.max(1);
                    let took = self
                        .probes
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                            (n < max).then_some(n + 1)
                        })
                        .is_ok();
                    if took {
                        if self.generation.load(Ordering::Acquire) == generation {
                            return Ok(Admit::Probe { generation });
                        }
                        // The breaker moved on while the permit was taken:
                        // give it back and look again.
                        let _ =
                            self.probes
                                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                                    n.checked_sub(1)
                                });
                        continue;
                    }
                    // Every probe permit is out; rejected calls change
                    // nothing. A verdict comes within the probe timeout.
                    let verdict_by = Instant::now() + self.config.probe_timeout;
                    return Err(self.reject(Some(verdict_by)));
                }
            }
        }
    }

    fn reject(&self, retry_at: Option<Instant>) -> BreakerOpen {
        self.rejected_total.fetch_add(1, Ordering::Relaxed);
        self.metrics.rejections.increment(1);
        self.observers
            .observe(&self.class, Event::Rejected(Rejection::BreakerOpen));
        // A broadcast send takes the channel's lock even with nobody
        // listening: skip it until someone subscribed.
        if self.subscribed.load(Ordering::Relaxed) {
            let _ = self.events.send(BreakerEvent::Rejected {
                class: self.class.clone(),
            });
        }
        BreakerOpen::new(self.class.clone(), retry_at)
    }

    /// Whether slow-call detection needs the call's start time.
    pub(crate) fn times_calls(&self) -> bool {
        self.config.slow_call_duration.is_some()
    }

    pub(crate) fn is_slow(&self, elapsed: Duration) -> bool {
        self.config
            .slow_call_duration
            .is_some_and(|slow| elapsed >= slow)
    }

    /// Records the outcome of an admitted call.
    pub(crate) fn record(&self, admit: Admit, outcome: Outcome) {
        match admit {
            Admit::Untracked => {}
            Admit::Closed { generation } => self.record_closed(generation, outcome),
            Admit::Probe { generation } => self.record_probe(generation, outcome),
        }
    }

    fn record_closed(&self, generation: u32, outcome: Outcome) {
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        let tally = match &self.buckets {
            Some(buckets) => {
                let now = self.now_ms();
                buckets.record(now, outcome);
                (outcome.failure || outcome.slow).then(|| buckets.tally(now))
            }
            None => {
                let window = u64::from(self.config.window_len());
                let n = self.position.fetch_add(1, Ordering::AcqRel);
                let bit = 1u64 << (n % window);
                set_bit(&self.failures, bit, outcome.failure);
                set_bit(&self.slow, bit, outcome.slow);
                (outcome.failure || outcome.slow).then(|| self.count_tally(n + 1))
            }
        };
        let consecutive = if outcome.failure {
            self.consecutive.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            if self.consecutive.load(Ordering::Relaxed) != 0 {
                self.consecutive.store(0, Ordering::Release);
            }
            0
        };
        let Some(Tally {
            calls,
            failures,
            slow,
        }) = tally
        else {
            return;
        };
        let rate = |n: u64| n as f64 / calls.max(1) as f64;
        let rate_rules = calls >= u64::from(self.config.minimum_calls.max(1));
        let trip = self
            .config
            .consecutive_failures
            .is_some_and(|n| consecutive >= n.max(1))
            || (rate_rules && outcome.failure && rate(failures) >= self.config.failure_rate)
            || (rate_rules
                && outcome.slow
                && self.config.slow_call_duration.is_some()
                && rate(slow) >= self.config.slow_call_rate);
        if trip {
            let word = self.word.load(Ordering::Acquire);
            if kind(word) == BreakerState::Closed
                && self.generation.load(Ordering::Acquire) == generation
            {
                self.open(word, 1);
            }
        }
    }

    fn record_probe(&self, generation: u32, outcome: Outcome) {
        if !self.release_probe(generation) {
            return;
        }
        let word = self.word.load(Ordering::Acquire);
        if kind(word) != BreakerState::HalfOpen {
            return;
        }
        if outcome.failure || outcome.slow {
            self.open(word, trips(word).saturating_add(1));
        } else {
            let successes = self.probe_successes.fetch_add(1, Ordering::AcqRel) + 1;
            if successes >= self.config.half_open_probes.max(1) {
                self.transition(word, pack(BreakerState::Closed, 0, 0));
            }
        }
    }

    /// A probe ended without an outcome (its caller went away): its permit
    /// is returned and nothing is recorded.
    pub(crate) fn cancel(&self, admit: Admit) {
        if let Admit::Probe { generation } = admit {
            self.release_probe(generation);
        }
    }

    /// Gives a probe permit back, if the half-open state it was taken in is
    /// still the current one; `false` if the breaker has moved on since (its
    /// permits were renewed when it entered its new state, and this one must
    /// not be taken from them).
    fn release_probe(&self, generation: u32) -> bool {
        if self.generation.load(Ordering::Acquire) != generation {
            return false;
        }
        // Saturating: a reset racing with this release leaves zero, never a
        // wrapped count that would refuse every probe.
        let _ = self
            .probes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        true
    }

    fn open(&self, from: u64, trips: u32) -> bool {
        let mut wait = self.config.open_for(trips);
        let jitter = self.config.jitter.clamp(0.0, 1.0);
        if jitter > 0.0 {
            wait += wait.mul_f64(jitter * random_unit());
        }
        let until = self.now_ms() + wait.as_millis().max(1) as u64;
        let opened = self.transition(from, pack(BreakerState::Open, trips, until));
        if opened {
            self.trips_total.fetch_add(1, Ordering::Relaxed);
            self.metrics.trips.increment(1);
            if let Some(backend) = &self.trips {
                backend.announce(&self.class, wait);
            }
        }
        opened
    }

    /// Another replica's breaker of this class tripped and stays open
    /// `open_for` more: a closed or half-open breaker opens until then, as
    /// if it had tripped (not counted in `trips`, not announced again). One
    /// open already, forced open or disabled is left alone.
    pub(crate) fn open_remote(&self, open_for: Duration) {
        let until = self.now_ms() + open_for.as_millis().max(1) as u64;
        loop {
            let word = self.word.load(Ordering::Acquire);
            let trips = match kind(word) {
                BreakerState::Closed => 1,
                BreakerState::HalfOpen => trips(word).saturating_add(1),
                _ => return,
            };
            if self.transition(word, pack(BreakerState::Open, trips, until)) {
                tracing::info!(endpoint = %self.class, ?open_for, "circuit breaker opened by another replica's trip");
                return;
            }
        }
    }

    /// Moves from the state `from` to `to`; `false` if another thread moved
    /// it first.
    fn transition(&self, from: u64, to: u64) -> bool {
        if self
            .word
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        self.entered(kind(from), kind(to));
        true
    }

    /// Resets what the new state starts with, then tells the world.
    fn entered(&self, from: BreakerState, to: BreakerState) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        // Probe permits are renewed on every transition, half-open included:
        // a permit leaked by a caller racing a transition can never outlive
        // the state it was taken in, so half-open cannot wedge. (The price:
        // in that race one extra probe may be let through.)
        self.probes.store(0, Ordering::Release);
        self.probe_successes.store(0, Ordering::Release);
        if to == BreakerState::Closed {
            self.failures.store(0, Ordering::Release);
            self.slow.store(0, Ordering::Release);
            self.position.store(0, Ordering::Release);
            self.consecutive.store(0, Ordering::Release);
            if let Some(buckets) = &self.buckets {
                buckets.clear();
            }
        }
        if from != to {
            self.metrics.state[state_index(from)].set(0.0);
            // A state change, not a reset to the state it was in.
            self.observers.observe(&self.class, Event::BreakerState(to));
        }
        self.metrics.state[state_index(to)].set(1.0);
        match to {
            BreakerState::Open | BreakerState::ForcedOpen => {
                tracing::warn!(endpoint = %self.class, ?from, ?to, "circuit breaker opened")
            }
            _ => {
                tracing::info!(endpoint = %self.class, ?from, ?to, "circuit breaker changed state")
            }
        }
        let _ = self.events.send(BreakerEvent::Transition {
            class: self.class.clone(),
            from,
            to,
        });
    }

    /// Sets the state by hand (force open, disable, reset to closed).
    pub(crate) fn set(&self, to: BreakerState) {
        let word = pack(to, 0, 0);
        let from = self.word.swap(word, Ordering::AcqRel);
        self.entered(kind(from), to);
    }

    /// The count-based window's totals after `recorded` outcomes.
    fn count_tally(&self, recorded: u64) -> Tally {
        let window = u64::from(self.config.window_len());
        let mask = if window == 64 {
            u64::MAX
        } else {
            (1 << window) - 1
        };
        let ones = |bits: &AtomicU64| u64::from((bits.load(Ordering::Acquire) & mask).count_ones());
        Tally {
            calls: recorded.min(window),
            failures: ones(&self.failures),
            slow: ones(&self.slow),
        }
    }

    pub(crate) fn stats(&self) -> ClassStats {
        let tally = match &self.buckets {
            Some(buckets) => buckets.tally(self.now_ms()),
            None => self.count_tally(self.position.load(Ordering::Acquire)),
        };
        ClassStats {
            class: self.class().clone(),
            state: self.state(),
            calls_in_window: saturate(tally.calls),
            failures_in_window: saturate(tally.failures),
            slow_in_window: saturate(tally.slow),
            consecutive_failures: self.consecutive.load(Ordering::Acquire),
            trips: self.trips_total.load(Ordering::Relaxed),
            rejected: self.rejected_total.load(Ordering::Relaxed),
        }
    }
}

fn saturate(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Calls, failures and slow calls in the window.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    calls: u64,
    failures: u64,
    slow: u64,
}

/// A time-based window: a ring of buckets, each three atomic words (calls,
/// failures, slow calls), and each word tagged with its bucket's number, so
/// recording is one compare-and-swap per count it changes (one for a
/// success) and memory is fixed.
///
/// The words of one bucket are independent: each starts afresh when it is
/// first written in a new period, and a tally adds only the words whose tag
/// is inside the window. Counts have 40 bits: a bucket would need 10¹² calls
/// to saturate, so a busy bucket keeps its exact failure rate.
struct Buckets {
    slots: Box<[[AtomicU64; 3]]>,
    bucket_ms: u64,
}

const BUCKETS: u64 = 10;
/// Never written: a written word holds a count of at least one.
const EMPTY: u64 = 0;
const ID_BITS: u32 = 24;
const ID_MASK: u64 = (1 << ID_BITS) - 1;
const COUNT_BITS: u32 = 40;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const CALLS: usize = 0;
const FAILURES: usize = 1;
const SLOW: usize = 2;

impl Buckets {
    fn new(span: Duration) -> Self {
        Buckets {
            slots: (0..BUCKETS)
                .map(|_| std::array::from_fn(|_| AtomicU64::new(EMPTY)))
                .collect(),
            bucket_ms: (span.as_millis() as u64 / BUCKETS).max(1),
        }
    }

    fn pack(id: u64, count: u64) -> u64 {
        ((id & ID_MASK) << COUNT_BITS) | count.min(COUNT_MAX)
    }

    /// The bucket number and the count of a written word.
    fn unpack(word: u64) -> Option<(u64, u64)> {
        (word != EMPTY).then_some((word >> COUNT_BITS, word & COUNT_MAX))
    }

    /// Whether bucket `a` is later than bucket `b` (numbers wrap at
    /// `ID_BITS`; half the range counts as later).
    fn later(a: u64, b: u64) -> bool {
        let ahead = a.wrapping_sub(b) & ID_MASK;
        ahead != 0 && ahead < 1 << (ID_BITS - 1)
    }

    fn record(&self, now_ms: u64, outcome: Outcome) {
        let id = (now_ms / self.bucket_ms) & ID_MASK;
        let slot = &self.slots[(now_ms / self.bucket_ms % BUCKETS) as usize];
        // Calls first: a tally reads them last, so it never sees more
        // failures than calls.
        Self::bump(&slot[CALLS], id);
        if outcome.failure {
            Self::bump(&slot[FAILURES], id);
        }
        if outcome.slow {
            Self::bump(&slot[SLOW], id);
        }
    }

    fn bump(word: &AtomicU64, id: u64) {
        let _ = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
            match Self::unpack(word) {
                Some((bucket, count)) if bucket == id => Some(Self::pack(id, count + 1)),
                // A later period took the slot: this outcome's bucket has
                // left the window already.
                Some((bucket, _)) if Self::later(bucket, id) => None,
                // Empty, or an old period: start it afresh.
                _ => Some(Self::pack(id, 1)),
            }
        });
    }

    fn tally(&self, now_ms: u64) -> Tally {
        let id = now_ms / self.bucket_ms;
        let count = |word: &AtomicU64| match Self::unpack(word.load(Ordering::Acquire)) {
            // Buckets of the last `BUCKETS` periods, this one included.
            Some((bucket, count)) if (id.wrapping_sub(bucket) & ID_MASK) < BUCKETS => count,
            _ => 0,
        };
        let mut tally = Tally::default();
        for slot in self.slots.iter() {
            tally.failures += count(&slot[FAILURES]);
            tally.slow += count(&slot[SLOW]);
            tally.calls += count(&slot[CALLS]);
        }
        tally
    }

    fn clear(&self) {
        for word in self.slots.iter().flatten() {
            word.store(EMPTY, Ordering::Release);
        }
    }
}

/// Sets or clears `bit`, writing only when it changes.
fn set_bit(bits: &AtomicU64, bit: u64, on: bool) {
    let set = bits.load(Ordering::Relaxed) & bit != 0;
    if on && !set {
        bits.fetch_or(bit, Ordering::AcqRel);
    } else if !on && set {
        bits.fetch_and(!bit, Ordering::AcqRel);
    }
}

/// A number in `0.0..1.0`, for jitter (no need for a good generator).
fn random_unit() -> f64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let hash = foldhash::fast::RandomState::default().hash_one(n);
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

impl fmt::Debug for Circuit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Circuit")
            .field("class", &self.class)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// Model checks of the probe permits with loom: every interleaving of two
/// callers racing through half-open.
///
/// `RUSTFLAGS="--cfg herdsman_loom" cargo test -p herdsman --lib --release breaker::circuit::loom`
#[cfg(all(test, herdsman_loom))]
mod loom {
    use super::*;

    fn circuit() -> Arc<Circuit> {
        let config = BreakerConfig {
            half_open_probes: 1,
            jitter: 0.0,
            ..BreakerConfig::default()
        };
        let (events, _) = broadcast::channel(16);
        Arc::new(Circuit::new(
            Class::default(),
            config,
            events,
            Arc::new(AtomicBool::new(false)),
            Observers::none(),
            None,
        ))
    }

    const FAILURE: Outcome = Outcome {
        failure: true,
        slow: false,
    };

    #[test]
    fn racing_probes_never_leave_the_next_half_open_without_its_permit() {
        ::loom::model(|| {
            let c = circuit();
            c.set(BreakerState::HalfOpen);
            let (c1, c2) = (c.clone(), c.clone());
            let failing = ::loom::thread::spawn(move || {
                if let Ok(admit) = c1.admit() {
                    c1.record(admit, FAILURE);
                }
            });
            let leaving = ::loom::thread::spawn(move || {
                if let Ok(admit) = c2.admit() {
                    c2.cancel(admit);
                }
            });
            failing.join().unwrap();
            leaving.join().unwrap();
            let before = (c.state(), c.probes.load(Ordering::SeqCst));
            c.set(BreakerState::HalfOpen);
            let admitted = c.admit();
            assert!(
                admitted.is_ok(),
                "the new half-open admits its probe: {before:?} {:?}",
                c.probes.load(Ordering::SeqCst)
            );
            assert!(c.admit().is_err(), "and only one");
        });
    }

    #[test]
    fn a_remote_trip_racing_a_failed_probe_opens_the_breaker_once() {
        ::loom::model(|| {
            let c = circuit();
            c.set(BreakerState::HalfOpen);
            let c1 = c.clone();
            let remote = ::loom::thread::spawn(move || c1.open_remote(Duration::from_secs(5)));
            if let Ok(admit) = c.admit() {
                c.record(admit, FAILURE);
            }
            remote.join().unwrap();
            assert_eq!(c.state(), BreakerState::Open);
            let word = c.word.load(Ordering::SeqCst);
            assert_eq!(trips(word), 1, "one trip past the half-open one");
        });
    }

    #[test]
    fn concurrent_callers_in_half_open_get_exactly_the_probe_limit() {
        ::loom::model(|| {
            let c = circuit();
            c.set(BreakerState::HalfOpen);
            let c1 = c.clone();
            let other = ::loom::thread::spawn(move || c1.admit().is_ok());
            let mine = c.admit().is_ok();
            let theirs = other.join().unwrap();
            assert!(mine ^ theirs, "exactly one probe: {mine} {theirs}");
        });
    }

    #[test]
    fn a_tally_racing_two_records_never_sees_more_failures_than_calls() {
        ::loom::model(|| {
            let buckets = Arc::new(Buckets::new(Duration::from_secs(10)));
            let (b1, b2) = (buckets.clone(), buckets.clone());
            let failing = ::loom::thread::spawn(move || b1.record(5, FAILURE));
            let ok = ::loom::thread::spawn(move || {
                b2.record(
                    5,
                    Outcome {
                        failure: false,
                        slow: false,
                    },
                )
            });
            let during = buckets.tally(5);
            assert!(during.failures <= during.calls, "{during:?}");
            failing.join().unwrap();
            ok.join().unwrap();
            let after = buckets.tally(5);
            assert_eq!((after.calls, after.failures), (2, 1));
        });
    }

    #[test]
    fn a_late_record_never_wipes_the_later_bucket_that_took_its_slot() {
        ::loom::model(|| {
            // 1 s buckets: 3 s and 13 s share a slot.
            let buckets = Arc::new(Buckets::new(Duration::from_secs(10)));
            let b1 = buckets.clone();
            let late = ::loom::thread::spawn(move || b1.record(3_000, FAILURE));
            buckets.record(13_000, FAILURE);
            late.join().unwrap();
            let tally = buckets.tally(13_000);
            assert_eq!((tally.calls, tally.failures), (1, 1));
        });
    }

    #[test]
    fn a_probe_ending_across_a_reopen_does_not_take_a_later_permit() {
        ::loom::model(|| {
            let c = circuit();
            c.set(BreakerState::HalfOpen);
            let probe = c.admit().expect("the first probe");
            let c1 = c.clone();
            let operator = ::loom::thread::spawn(move || {
                c1.set(BreakerState::ForcedOpen);
                c1.set(BreakerState::HalfOpen);
            });
            c.cancel(probe);
            operator.join().unwrap();
            assert!(c.admit().is_ok(), "the new half-open admits its probe");
            assert!(c.admit().is_err(), "and only one");
        });
    }
}

#[cfg(all(test, not(herdsman_loom)))]
mod tests {
    use super::*;

    const OK: Outcome = Outcome {
        failure: false,
        slow: false,
    };
    const FAILED: Outcome = Outcome {
        failure: true,
        slow: false,
    };
    const SLOW: Outcome = Outcome {
        failure: false,
        slow: true,
    };

    #[test]
    fn one_bucket_counts_100_000_calls_and_their_failures_exactly() {
        let buckets = Buckets::new(Duration::from_secs(10));
        for i in 0..100_000u64 {
            let outcome = match i % 10 {
                0 => FAILED,
                1 => SLOW,
                _ => OK,
            };
            buckets.record(5, outcome);
        }
        let tally = buckets.tally(5);
        assert_eq!(
            (tally.calls, tally.failures, tally.slow),
            (100_000, 10_000, 10_000)
        );
    }

    #[test]
    fn buckets_of_the_span_add_up_and_older_ones_drop_out() {
        // Ten buckets of 100 ms: calls at 0..1000 ms, then one at 1050 ms
        // replaces the bucket of 0..100 ms.
        let buckets = Buckets::new(Duration::from_secs(1));
        for ms in (0..1_000).step_by(10) {
            buckets.record(ms, if ms < 100 { FAILED } else { OK });
        }
        let tally = buckets.tally(999);
        assert_eq!((tally.calls, tally.failures), (100, 10));
        buckets.record(1_050, OK);
        let tally = buckets.tally(1_050);
        assert_eq!((tally.calls, tally.failures), (91, 0));
        assert_eq!(buckets.tally(10_000).calls, 0, "all of it has aged out");
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_bucket_with_a_low_failure_rate_does_not_trip() {
        let config = BreakerConfig {
            time_window: Some(Duration::from_secs(10)),
            consecutive_failures: None,
            failure_rate: 0.5,
            ..BreakerConfig::default()
        };
        let (events, _) = broadcast::channel(16);
        let circuit = Circuit::new(
            Class::default(),
            config,
            events,
            Arc::new(AtomicBool::new(false)),
            Observers::none(),
            None,
        );
        // 100,000 calls in one bucket, one in ten failing: a 10 % rate.
        for i in 0..100_000u32 {
            let admit = circuit.admit().expect("closed");
            circuit.record(admit, if i % 10 == 0 { FAILED } else { OK });
        }
        assert_eq!(circuit.state(), BreakerState::Closed);
        let stats = circuit.stats();
        assert_eq!(
            (stats.calls_in_window, stats.failures_in_window),
            (100_000, 10_000)
        );
    }
}
