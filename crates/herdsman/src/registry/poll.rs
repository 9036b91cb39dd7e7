//! The poll loop: one task per key.
//!
//! It fetches the key with the canonical request, publishes the result if it
//! changed, and sleeps until the next poll: the subscribers' shortest
//! interval (with jitter) after a success, an exponential backoff after a
//! failure. A refresh, a shorter interval, the last subscriber leaving and a
//! stop wake it early. A stop also drops a fetch in flight.

use std::{
    future::{poll_fn, Future},
    hash::BuildHasher,
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
    cell::Fp,
    change::{Canonical, Fingerprint},
    error::{PollPanicked, Unshareable},
    state::{Config, Core, Hook, Meta},
};
use crate::{
    error::{BoxError, SharedError},
    share::Share,
};

/// Everything one poll loop owns.
pub(crate) struct Loop<S, Req, P, F, Q, T> {
    pub(crate) core: Arc<Core>,
    pub(crate) hook: Arc<Hook<T>>,
    pub(crate) svc: S,
    pub(crate) template: Req,
    pub(crate) share: P,
    pub(crate) fingerprint: F,
    pub(crate) canonical: Q,
}

/// Ends a loop's bookkeeping however the task ends (stopped, retired,
/// panicked, or dropped with its runtime).
struct Guard<T> {
    core: Arc<Core>,
    hook: Arc<Hook<T>>,
}

impl<T> Drop for Guard<T> {
    fn drop(&mut self) {
        if !self.hook.meta.stopped() {
            self.core.forget(&self.hook.meta);
        }
        self.hook.cell.close();
        self.core.task_ended();
    }
}

impl<S, Req, P, F, Q> Loop<S, Req, P, F, Q, P::Shared>
where
    S: Service<Req> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    S::Response: Send,
    Req: Send + 'static,
    P: Share<S::Response> + Send + 'static,
    F: Fingerprint<P::Shared> + Send + 'static,
    Q: Canonical<Req> + Send + 'static,
{
    /// Spawns the loop on the current runtime.
    pub(crate) fn spawn(self) {
        self.core.task_started();
        tokio::spawn(self.run());
    }

    async fn run(mut self) {
        let _guard = Guard {
            core: self.core.clone(),
            hook: self.hook.clone(),
        };
        let mut failures = 0u32;
        loop {
            self.hook.meta.take_refresh();
            let Some(outcome) = self.fetch().await else {
                return;
            };
            let fetched_at = Instant::now();
            let failed = self.publish(outcome, fetched_at);
            failures = if failed {
                failures.saturating_add(1)
            } else {
                0
            };
            if !wait(&self.core, &self.hook.meta, fetched_at, failures).await {
                return;
            }
        }
    }

    /// One inner call, or `None` if the loop was stopped meanwhile.
    async fn fetch(&mut self) -> Option<Result<S::Response, SharedError>> {
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
                    Ok(Poll::Ready(out)) => {
                        return Poll::Ready(Some(out.map_err(SharedError::new)))
                    }
                    Err(payload) => {
                        let err = PollPanicked::from_payload(&*payload);
                        return Poll::Ready(Some(Err(SharedError::new(err))));
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

    /// Publishes the outcome if it changed; `true` if the poll failed.
    fn publish(&self, outcome: Result<S::Response, SharedError>, at: Instant) -> bool {
        let (result, fp) = match outcome.map(|r| self.share.share(r)) {
            Ok(Ok(value)) => match self.fingerprint.failure(&value) {
                None => {
                    let fp = Fp::Ok(self.fingerprint.fingerprint(&value));
                    (Ok(value), fp)
                }
                Some(failure) => {
                    let err = SharedError::new(failure);
                    let fp = Fp::Err(err.to_string());
                    (Err(err), fp)
                }
            },
            Ok(Err(_unshareable)) => {
                let err = SharedError::new(Unshareable::new());
                let fp = Fp::Err(err.to_string());
                (Err(err), fp)
            }
            Err(err) => {
                let fp = Fp::Err(err.to_string());
                (Err(err), fp)
            }
        };
        let failed = result.is_err();
        let meta = &self.hook.meta;
        meta.fetched(at, failed);
        let changed = self.hook.cell.publish(result, fp, at).is_some();
        self.core.polled(meta, failed, changed);
        failed
    }
}

/// Sleeps until the next poll; `false` if the loop must end.
async fn wait(core: &Core, meta: &Meta, fetched_at: Instant, failures: u32) -> bool {
    let settings = &meta.settings;
    let jitter = jitter_factor(settings.jitter);
    let mut idle_since = None;
    loop {
        let mut woken = pin!(meta.woken());
        woken.as_mut().enable();
        if meta.stopped() {
            return false;
        }
        if meta.refresh_pending() {
            return true;
        }
        let lingering = meta.subscribers() == 0;
        let deadline = if lingering {
            // No poll while nobody listens: the value is kept for a
            // subscriber that comes back within the linger.
            *idle_since.get_or_insert_with(Instant::now) + settings.linger
        } else {
            idle_since = None;
            fetched_at + delay(&core.config, failures, meta.interval(), jitter)
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
            if core.retire(meta) {
                return false;
            }
        }
    }
}

/// The time from one fetch to the next: the interval after a success; after
/// `failures` failures in a row, the backoff base doubled each time, never
/// shorter than the interval nor longer than the cap. Both scaled by
/// `jitter`; a backoff never exceeds the cap.
pub(crate) fn delay(config: &Config, failures: u32, interval: Duration, jitter: f64) -> Duration {
    if failures == 0 {
        return interval.mul_f64(jitter);
    }
    let doubled = config
        .backoff_base
        .saturating_mul(1u32 << (failures - 1).min(31));
    let cap = config.backoff_cap.max(interval);
    doubled.clamp(interval, cap).mul_f64(jitter).min(cap)
}

/// A factor in `[1 - fraction, 1 + fraction)`, different on every call.
fn jitter_factor(fraction: f64) -> f64 {
    static STATE: OnceLock<foldhash::fast::RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    if fraction <= 0.0 {
        return 1.0;
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let bits = STATE.get_or_init(Default::default).hash_one(n);
    // 53 random bits as a float in [0, 1).
    let unit = (bits >> 11) as f64 / (1u64 << 53) as f64;
    1.0 + fraction * (2.0 * unit - 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn backoff_doubles_from_the_interval_up_to_the_cap() {
        let config = Config {
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(30),
            ..Config::default()
        };
        let interval = Duration::from_secs(2);
        let secs: Vec<u64> = (0..8)
            .map(|n| delay(&config, n, interval, 1.0).as_secs())
            .collect();
        assert_eq!(secs, [2, 2, 2, 4, 8, 16, 30, 30]);
        assert_eq!(delay(&config, 40, interval, 1.1), Duration::from_secs(30));
        assert_eq!(
            delay(&config, 0, interval, 1.1),
            Duration::from_millis(2200)
        );
    }
}
