use std::{fmt, sync::Arc};

use tokio::sync::broadcast;

use super::{circuits::Circuits, BreakerEvent, BreakerState, BreakerStats};
use crate::class::Class;

/// Watches and steers the breakers of one [`BreakerLayer`](super::BreakerLayer)
/// at run time: operators can isolate an upstream or bypass its breaker
/// without a restart. Cheap to clone.
#[derive(Clone)]
pub struct BreakerHandle {
    pub(super) circuits: Arc<Circuits>,
}

impl BreakerHandle {
    /// The state of `class`'s breaker (`Closed` if it has seen no call yet).
    pub fn state(&self, class: &Class) -> BreakerState {
        self.circuits
            .find(class)
            .map_or(BreakerState::Closed, |c| c.state())
    }

    /// Opens `class`'s breaker until [`reset`](Self::reset): every call fails
    /// fast with [`BreakerOpen`](super::BreakerOpen).
    pub fn force_open(&self, class: &Class) {
        self.circuits.get(class).set(BreakerState::ForcedOpen);
    }

    /// Turns `class`'s breaker off until [`reset`](Self::reset): every call
    /// goes through and nothing is recorded.
    pub fn disable(&self, class: &Class) {
        self.circuits.get(class).set(BreakerState::Disabled);
    }

    /// Closes `class`'s breaker with an empty window.
    pub fn reset(&self, class: &Class) {
        self.circuits.get(class).set(BreakerState::Closed);
    }

    /// Every transition and rejection from now on. A receiver that falls more
    /// than 1,024 events behind skips the oldest (`RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<BreakerEvent> {
        self.circuits
            .subscribed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.circuits.events.subscribe()
    }

    /// The counters of every breaker, by class; one class's with
    /// [`BreakerStats::class`].
    pub fn stats(&self) -> BreakerStats {
        let mut classes: Vec<_> = self.circuits.all().iter().map(|c| c.stats()).collect();
        classes.sort_by(|a, b| a.class.cmp(&b.class));
        BreakerStats { classes }
    }
}

impl fmt::Debug for BreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerHandle")
            .field("circuits", &self.circuits.len())
            .finish()
    }
}
