//! The poll loop: one task per key.
//!
//! It fetches the key with the canonical request, publishes the result if it
//! changed, and sleeps until the next poll: the subscribers' shortest
//! interval (with jitter) after a success, an exponential backoff after a
//! failure, and never before the time an error says a retry can succeed
//! (an open breaker's probe). A refresh, a shorter interval, the last
//! subscriber leaving and a stop wake it early. A stop also drops a fetch in
//! flight. The time of the next fetch is recorded before each result is
//! published, so an answer made from the result can say when to retry.
//!
//! Each round, the registry's [`LoopBackend`] says whether this process
//! polls the key or follows another replica's loop. A follower fetches
//! when the other replica announces a change (or its claim ends), and does
//! not announce what it fetched. With the default backend every round
//! polls here.

use std::{
    future::{poll_fn, Future},
    hash::BuildHasher,
    mem,
    panic::{catch_unwind, AssertUnwindSafe},
    pin::pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, OnceLock,
    },
    task::Poll,
    time::Duration,
};

use tokio::time::{sleep_until, Instant};
use tower_service::Service;

use super::{
    cell::Polled,
    change::{Canonical, Fingerprint},
    error::{PollPanicked, StaleAnswer, Unshareable},
    memory::TASK_BYTES,
    state::{Config, Core, Hook, Meta, Table},
};
use crate::{
    backend::{LoopBackend, Role},
    error::{boxed, retry_at, BoxError, SharedError},
    failure::{FailureClassifier, Verdict},
    share::Share,
};

/// Everything one poll loop owns.
pub(crate) struct Loop<S, Req, P, F, Q, V, T> {
    pub(crate) core: Arc<Core>,
    /// The table of its value type, which holds its hook.
    pub(crate) table: Arc<Table<T>>,
    pub(crate) hook: Arc<Hook<T>>,
    pub(crate) svc: S,
    pub(crate) template: Req,
    pub(crate) share: P,
    pub(crate) fingerprint: F,
    pub(crate) canonical: Q,
    pub(crate) failures: V,
}

/// Ends a loop's bookkeeping however the task ends (stopped, retired,
/// panicked, or dropped with its runtime).
struct Guard<T> {
    core: Arc<Core>,
    table: Arc<Table<T>>,
    hook: Arc<Hook<T>>,
}

impl<T> Drop for Guard<T> {
    fn drop(&mut self) {
        let meta = &self.hook.meta;
        if !meta.stopped() {
            self.core.forget(&self.table, meta);
        }
        if !meta.private {
            self.core.config.loops.0.release(&meta.key);
        }
        self.hook.cell.close();
        self.core.task_ended();
    }
}

impl<S, Req, P, F, Q, V> Loop<S, Req, P, F, Q, V, P::Shared>
where
    S: Service<Req> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    S::Response: Send,
    Req: Send + 'static,
    P: Share<S::Response> + Send + 'static,
    F: Fingerprint<P::Shared> + Send + 'static,
    Q: Canonical<Req> + Send + 'static,
    V: FailureClassifier<S::Response> + Send + 'static,
{
    /// Spawns the loop on the current runtime; its task is charged to its
    /// key's account.
    pub(crate) fn spawn(self) {
        self.core.task_started();
        let hook = self.hook.clone();
        let task = self.run();
        hook.account.charge(mem::size_of_val(&task) + TASK_BYTES);
        tokio::spawn(task);
    }

    async fn run(mut self) {
        let _guard = Guard {
            core: self.core.clone(),
            table: self.table.clone(),
            hook: self.hook.clone(),
        };
        let loops = self.core.config.loops.0.clone();
        let mut failures = 0u32;
        loop {
            self.hook.meta.take_refresh();
            let role = claim(&*loops, &self.hook.meta).await;
            let Some(outcome) = self.fetch().await else {
                return;
            };
            let fetched_at = Instant::now();
            let polled = self.settle(outcome);
            failures = if polled.failed() {
                failures.saturating_add(1)
            } else {
                0
            };
            let not_before = match &polled {
                Polled::Failed { error, .. } => retry_at(error),
                Polled::Value { .. } => None,
            };
            let next = Next {
                fetched_at,
                failures,
                jitter: jitter_factor(self.hook.meta.settings.jitter),
                not_before,
            };
            // Before publishing: whoever answers from the update reads it.
            let meta = &self.hook.meta;
            meta.set_next_attempt(next.due(&self.core.config, meta.interval()));
            let changed = self.publish(polled, fetched_at);
            if let (Role::Poll, Some(fingerprint)) = (role, changed) {
                if !meta.private {
                    loops.announce(&meta.key, fingerprint);
                }
            }
            let go_on = match role {
                Role::Poll => wait(&self.core, &self.table, meta, &next).await,
                Role::Follow { for_at_most } => {
                    follow(&self.core, &self.table, &*loops, meta, &next, for_at_most).await
                }
            };
            if !go_on {
                return;
            }
        }
    }

    /// One inner call, or `None` if the loop was stopped meanwhile.
    async fn fetch(&mut self) -> Option<Result<S::Response, BoxError>> {
        let meta = &self.hook.meta;
        let req = self.canonical.canonical(&self.template);
        let svc = &mut self.svc;
        let call = async move {
            poll_fn(|cx| svc.poll_ready(cx)).await?;
            svc.call(req).await
        };
        let mut call = pin!(call);
        loop {
            let mut woken = pin!(meta.woken());
            woken.as_mut().enable();
            if meta.stopped() {
                return None;
            }
            let done = poll_fn(|cx| {
                match catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx))) {
                    Ok(Poll::Ready(out)) => return Poll::Ready(Some(out.map_err(Into::into))),
                    Err(payload) => {
                        let err = PollPanicked::from_payload(&*payload);
                        return Poll::Ready(Some(Err(boxed(err))));
                    }
                    Ok(Poll::Pending) => {}
                }
                woken.as_mut().poll(cx).map(|()| None)
            })
            .await;
            if let Some(out) = done {
                return Some(out);
            }
        }
    }

    /// Judges and shares one outcome: a good value and its fingerprint, or
    /// a failure (an error, an answer the failure classifier calls a
    /// failure, an unshareable response, or a stale copy standing in for
    /// the upstream).
    fn settle(&self, outcome: Result<S::Response, BoxError>) -> Polled<P::Shared> {
        let weigh = |value: &P::Shared| self.share.held_bytes(value);
        let failed = outcome.is_ok() && self.failures.verdict(&outcome) == Verdict::Failure;
        let answer = match outcome {
            Ok(answer) if failed => {
                let error = SharedError::new(self.failures.failure(&answer));
                return Polled::Failed { error, stale: None };
            }
            Ok(answer) => answer,
            Err(error) => {
                let error = SharedError::new(error);
                return Polled::Failed { error, stale: None };
            }
        };
        let Ok(value) = self.share.share(answer) else {
            let error = SharedError::new(boxed(Unshareable::new()));
            return Polled::Failed { error, stale: None };
        };
        let fp = &self.fingerprint;
        let fingerprint = fp.fingerprint(&value);
        if fp.stale(&value) {
            let error = SharedError::new(boxed(StaleAnswer::new()));
            let bytes = weigh(&value);
            let stale = Some((value, fingerprint, bytes));
            return Polled::Failed { error, stale };
        }
        let bytes = weigh(&value);
        Polled::Value {
            value,
            fingerprint,
            bytes,
        }
    }

    /// Publishes what the poll produced if it changed; returns the new
    /// update's fingerprint if it did.
    fn publish(&self, polled: Polled<P::Shared>, at: Instant) -> Option<u64> {
        let failed = polled.failed();
        let meta = &self.hook.meta;
        meta.fetched(at, failed);
        let published = self.hook.cell.publish(polled, at);
        if let Some((_, delta)) = published {
            self.hook.account.adjust(delta);
        }
        self.core.polled(meta, failed, published.is_some());
        published?;
        self.hook.cell.current().map(|update| update.fingerprint())
    }
}

/// When the fetch after one poll is due.
struct Next {
    fetched_at: Instant,
    /// Failures in a row, this poll included.
    failures: u32,
    jitter: f64,
    /// The poll's error says no retry can succeed before then.
    not_before: Option<Instant>,
}

impl Next {
    /// The due time for the loop's current interval.
    fn due(&self, config: &Config, interval: Duration) -> Instant {
        let due = after(
            self.fetched_at,
            delay(config, self.failures, interval, self.jitter),
        );
        self.not_before.map_or(due, |at| due.max(at))
    }
}

/// Sleeps until the next poll; `false` if the loop must end.
async fn wait<T>(core: &Core, table: &Table<T>, meta: &Meta, next: &Next) -> bool {
    let config = &core.config;
    let mut idle_since = None;
    loop {
        let mut woken = pin!(meta.woken());
        woken.as_mut().enable();
        if meta.stopped() {
            return false;
        }
        if meta.refresh_pending() {
            // Nobody listens: polling would be for no one and would start
            // the linger again (so a key written to often never left).
            // The kept value is out of date, so the loop ends; a subscriber
            // that comes back starts a fresh one.
            if meta.subscribers() == 0 && !meta.private && core.retire(table, meta) {
                return false;
            }
            return true;
        }
        let lingering = meta.subscribers() == 0;
        let deadline = if lingering {
            // No poll while nobody listens: the value is kept for a
            // subscriber that comes back within the linger.
            after(
                *idle_since.get_or_insert_with(Instant::now),
                meta.settings.linger,
            )
        } else {
            idle_since = None;
            let due = next.due(config, meta.interval());
            meta.set_next_attempt(due);
            due
        };
        let mut sleep = pin!(sleep_until(deadline));
        let timed_out = poll_fn(|cx| {
            if woken.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            sleep.as_mut().poll(cx).map(|()| true)
        })
        .await;
        if timed_out {
            if !lingering {
                return true;
            }
            if core.retire(table, meta) {
                return false;
            }
        }
    }
}

/// Who polls this round: always this process for a private loop.
async fn claim(loops: &dyn LoopBackend, meta: &Meta) -> Role {
    if meta.private {
        return Role::Poll;
    }
    loops.claim(&meta.key, meta.interval()).get().await
}

/// Waits, while another replica polls the key, for its change notice or the
/// end of its claim (then the next round fetches here and claims again), a
/// refresh (the next round fetches at once) or a stop; `false` if the loop
/// must end. With nobody subscribed it lingers as [`wait`] does.
async fn follow<T>(
    core: &Core,
    table: &Table<T>,
    loops: &dyn LoopBackend,
    meta: &Meta,
    next: &Next,
    for_at_most: Duration,
) -> bool {
    let deadline = after(Instant::now(), for_at_most);
    meta.set_next_attempt(deadline);
    let mut changed = loops.changed(&meta.key);
    let mut sleep = pin!(sleep_until(deadline));
    loop {
        let mut woken = pin!(meta.woken());
        woken.as_mut().enable();
        if meta.stopped() {
            return false;
        }
        if meta.subscribers() == 0 {
            return wait(core, table, meta, next).await;
        }
        if meta.refresh_pending() {
            return true;
        }
        let fetch = poll_fn(|cx| {
            if woken.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            if changed.as_mut().poll(cx).is_ready() {
                return Poll::Ready(true);
            }
            sleep.as_mut().poll(cx).map(|()| true)
        })
        .await;
        if fetch {
            return true;
        }
    }
}

/// The time from one fetch to the next: the interval after a success; after
/// `failures` failures in a row, the backoff base doubled each time, never
/// shorter than the interval nor longer than the cap. Both scaled by
/// `jitter` (a factor near 1), then held between the floor and the cap: the
/// jitter never brings a poll under the floor, nor a backoff over its cap.
/// The floor wins over a cap set below it.
pub(crate) fn delay(config: &Config, failures: u32, interval: Duration, jitter: f64) -> Duration {
    let floor = config.floor;
    if failures == 0 {
        return scale(interval, jitter).max(floor);
    }
    let doubled = config
        .backoff_base
        .saturating_mul(1u32 << (failures - 1).min(31));
    let cap = config.backoff_cap.max(interval);
    scale(doubled.clamp(interval, cap), jitter)
        .min(cap)
        .max(floor)
}

/// `d` × `factor`, saturating instead of panicking as `mul_f64` does.
fn scale(d: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(if factor > 0.0 {
        Duration::MAX
    } else {
        Duration::ZERO
    })
}

/// `at + d`, at most about 30 years on (tokio's own "far future"): a
/// configured interval or linger may be too large for an `Instant`.
fn after(at: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);
    at + d.min(FAR)
}

/// A factor in `[1 - fraction, 1 + fraction)`, different on every call.
fn jitter_factor(fraction: f64) -> f64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    if fraction <= 0.0 {
        return 1.0;
    }
    let seed = *SEED.get_or_init(|| foldhash::fast::RandomState::default().hash_one(0u64));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    1.0 + fraction * (2.0 * jitter_unit(seed, n) - 1.0)
}

/// The `n`th of a process's uniform draws in `[0, 1)`: SplitMix64 of a
/// Weyl sequence started at `seed`. Hashing the counter with the process's
/// `foldhash` seed instead left consecutive draws bunched together for
/// about one process in ten (foldhash is built for hash tables, not for
/// uniform output), so that those loops never spread their polls.
fn jitter_unit(seed: u64, n: u64) -> f64 {
    let mut z = seed.wrapping_add(n.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    // 53 random bits as a float in [0, 1).
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::registry::MAX_JITTER;

    const SEC: Duration = Duration::from_secs(1);

    fn config(floor: Duration, base: Duration, cap: Duration) -> Config {
        Config {
            floor,
            backoff_base: base,
            backoff_cap: cap,
            ..Config::default()
        }
    }

    #[test]
    fn jitter_stays_within_its_fraction_and_varies() {
        let factors: Vec<f64> = (0..10_000).map(|_| jitter_factor(0.1)).collect();
        assert!(factors.iter().all(|f| (0.9..1.1).contains(f)));
        let min = factors.iter().cloned().fold(f64::MAX, f64::min);
        let max = factors.iter().cloned().fold(f64::MIN, f64::max);
        assert!(min < 0.91 && max > 1.09, "{min}..{max}");
        assert_eq!(jitter_factor(0.0), 1.0);
    }

    #[test]
    fn consecutive_draws_spread_over_the_range_whatever_the_seed() {
        // 30 polls in a row all within 40 % of the range: the bunching that
        // kept a loop's polls in step with its neighbours'.
        for seed in (0..1_000u64).map(|s| s.wrapping_mul(0x2545_f491_4f6c_dd1d)) {
            let draws: Vec<f64> = (0..300).map(|n| jitter_unit(seed, n)).collect();
            for window in draws.windows(30) {
                let min = window.iter().cloned().fold(f64::MAX, f64::min);
                let max = window.iter().cloned().fold(f64::MIN, f64::max);
                assert!(max - min > 0.4, "seed {seed}: {window:?}");
            }
        }
    }

    #[test]
    fn backoff_doubles_from_the_interval_up_to_the_cap() {
        let config = config(SEC, SEC, 30 * SEC);
        let interval = 2 * SEC;
        let secs: Vec<u64> = (0..8)
            .map(|n| delay(&config, n, interval, 1.0).as_secs())
            .collect();
        assert_eq!(secs, [2, 2, 2, 4, 8, 16, 30, 30]);
        assert_eq!(delay(&config, 40, interval, 1.1), 30 * SEC);
        assert_eq!(
            delay(&config, 0, interval, 1.1),
            Duration::from_millis(2200)
        );
    }

    #[test]
    fn jitter_never_brings_a_poll_under_the_floor() {
        let config = config(5 * SEC, SEC, 60 * SEC);
        // An interval at the floor, shortened by the largest jitter.
        assert_eq!(delay(&config, 0, 5 * SEC, 1.0 - MAX_JITTER), 5 * SEC);
        assert_eq!(delay(&config, 0, 8 * SEC, 0.5), 5 * SEC);
        assert_eq!(delay(&config, 0, 8 * SEC, 0.75), 6 * SEC);
        assert_eq!(delay(&config, 1, 5 * SEC, 0.5), 5 * SEC);
    }

    #[test]
    fn jitter_never_brings_a_backoff_over_its_cap() {
        let config = config(SEC, SEC, 30 * SEC);
        assert_eq!(delay(&config, 6, 2 * SEC, 1.5), 30 * SEC);
        assert_eq!(delay(&config, 5, 2 * SEC, 1.5), 24 * SEC);
        // A cap under the interval is raised to the interval.
        let config = super::tests::config(SEC, SEC, SEC);
        assert_eq!(delay(&config, 3, 4 * SEC, 1.5), 4 * SEC);
    }

    #[test]
    fn huge_intervals_saturate_instead_of_panicking() {
        let config = config(SEC, SEC, Duration::MAX);
        assert_eq!(delay(&config, 0, Duration::MAX, 1.5), Duration::MAX);
        assert_eq!(delay(&config, 64, Duration::MAX, 1.5), Duration::MAX);
        let now = Instant::now();
        assert!(after(now, Duration::MAX) > now + 365 * 86_400 * SEC);
    }

    fn millis(range: std::ops::Range<u64>) -> impl Strategy<Value = Duration> {
        range.prop_map(Duration::from_millis)
    }

    proptest! {
        #[test]
        fn a_delay_stays_between_the_floor_and_its_bounds(
            floor in millis(1..20_000),
            above_floor in millis(0..20_000),
            base in millis(1..10_000),
            cap in millis(1..300_000),
            failures in 0u32..80,
            fraction in 0.0..=MAX_JITTER,
            unit in 0.0..1.0f64,
        ) {
            // The registry clamps every loop's interval to the floor.
            let interval = floor + above_floor;
            let config = config(floor, base, cap);
            let factor = 1.0 + fraction * (2.0 * unit - 1.0);
            let d = delay(&config, failures, interval, factor);
            prop_assert!(d >= floor, "{d:?} under the floor {floor:?}");
            if failures == 0 {
                let lo = interval.mul_f64(1.0 - fraction).max(floor);
                let hi = interval.mul_f64(1.0 + fraction);
                prop_assert!(lo <= d && d <= hi + Duration::from_nanos(1), "{d:?} not in {lo:?}..={hi:?}");
            } else {
                let cap = cap.max(interval);
                prop_assert!(d <= cap, "{d:?} over the cap {cap:?}");
                prop_assert!(
                    d >= interval.mul_f64(1.0 - fraction).max(floor),
                    "{d:?} under the jittered interval"
                );
            }
        }

        #[test]
        fn without_jitter_a_backoff_never_shrinks_as_failures_grow(
            interval in millis(1..60_000),
            base in millis(1..10_000),
            cap in millis(1..300_000),
            failures in 1u32..70,
        ) {
            let config = config(interval, base, cap);
            let now = delay(&config, failures, interval, 1.0);
            let next = delay(&config, failures + 1, interval, 1.0);
            prop_assert!(now <= next, "{now:?} then {next:?}");
            prop_assert!(now >= interval);
        }

        #[test]
        fn jitter_factors_stay_within_their_fraction(fraction in 0.0..=MAX_JITTER) {
            let factor = jitter_factor(fraction);
            prop_assert!((1.0 - fraction..=1.0 + fraction).contains(&factor), "{factor}");
        }
    }
}
