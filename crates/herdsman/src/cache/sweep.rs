//! The sweep: a task per store that removes the entries nothing can use any
//! more, so that the memory a flood of one-off keys took is given back
//! without waiting for the byte bound to push them out.

use std::{
    sync::{atomic::Ordering, Arc, Weak},
    time::Duration,
};

use tokio::time::{interval_at, Instant, MissedTickBehavior};

use super::store::Store;

/// Default time between two sweeps of a store: 30 s.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Entries one pass removes at most; a pass that reaches it yields to the
/// runtime before the next, so that a huge backlog never holds a worker
/// thread for long.
pub(crate) const SWEEP_BATCH: u64 = 10_000;

impl<V: Clone + Send + Sync + 'static> Store<V> {
    /// Starts the sweep of this store on the current runtime unless it runs.
    /// Called on a miss, which is how entries come in: a hit never pays for
    /// it. Outside a runtime nothing starts, and the next miss tries again.
    #[inline]
    pub(crate) fn ensure_sweep(self: &Arc<Self>) {
        if !self.sweeping.load(Ordering::Relaxed) {
            self.start_sweep();
        }
    }

    #[cold]
    fn start_sweep(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        runtime.spawn(run(Arc::downgrade(self), self.sweep_every));
    }
}

/// Sweeps `store` every `every`, until the store is dropped (the task ends
/// at its next tick). It holds the store only while it sweeps.
async fn run<V: Clone>(store: Weak<Store<V>>, every: Duration) {
    let _running = Running(store.clone());
    let mut ticks = interval_at(Instant::now() + every, every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let mut removed = 0;
        loop {
            let Some(store) = store.upgrade() else {
                return;
            };
            let pass = store.sweep(SWEEP_BATCH);
            removed += pass;
            if pass < SWEEP_BATCH {
                break;
            }
            drop(store);
            tokio::task::yield_now().await;
        }
        if removed > 0 {
            tracing::debug!(removed, "cache sweep removed expired entries");
        }
    }
}

/// Lets the next miss start a new sweep if this one ends while the store
/// lives on (its runtime shut down).
struct Running<V>(Weak<Store<V>>);

impl<V> Drop for Running<V> {
    fn drop(&mut self) {
        if let Some(store) = self.0.upgrade() {
            store.sweeping.store(false, Ordering::Release);
        }
    }
}
