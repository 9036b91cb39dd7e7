use std::{fmt, sync::Arc};

use tokio::{
    sync::broadcast::{self, error::RecvError},
    task::JoinHandle,
};

use super::{state::Core, HookInfo, RegistryStats};
use crate::{
    event::{Invalidation, MemorySource},
    key::Key,
};

/// Refreshes, inspects and measures one registry at run time, whatever its
/// service type.
///
/// Got from [`Registry::handle`](super::Registry::handle) or
/// [`RegistryLayer::handle`](super::RegistryLayer::handle); cheap to clone.
#[derive(Clone)]
pub struct RegistryHandle {
    pub(crate) core: Arc<Core>,
}

impl RegistryHandle {
    /// Polls `key` now, and pushes the result to its subscribers if it
    /// changed. A fetch in flight is followed by another, since it may have
    /// started before the change. `false` if no loop polls `key`.
    pub fn refresh(&self, key: &Key) -> bool {
        self.core.refresh(key)
    }

    /// Refreshes every polled key that `what` covers; returns how many.
    pub fn invalidate(&self, what: &Invalidation) -> usize {
        self.core.invalidate(what)
    }

    /// Applies every invalidation received on `invalidations` (as announced
    /// by the Cache layer) until the channel closes or the registry is gone.
    /// If the receiver lags behind and misses announcements, every key is
    /// refreshed. Must be called within a tokio runtime.
    pub fn follow(&self, mut invalidations: broadcast::Receiver<Invalidation>) -> JoinHandle<()> {
        let core = Arc::downgrade(&self.core);
        tokio::spawn(async move {
            loop {
                let what = match invalidations.recv().await {
                    Ok(what) => what,
                    Err(RecvError::Lagged(_)) => Invalidation::All,
                    Err(RecvError::Closed) => return,
                };
                let Some(core) = core.upgrade() else {
                    return;
                };
                core.invalidate(&what);
            }
        })
    }

    /// One row per polled key, for operators.
    pub fn hooks(&self) -> Vec<HookInfo> {
        self.core.hooks()
    }

    /// Counters and sizes.
    pub fn stats(&self) -> RegistryStats {
        self.core.stats()
    }
}

impl MemorySource for RegistryHandle {
    /// Every byte the registry holds for its keys: its tables (keys,
    /// budgets), each key's loop state, key, request template (for HTTP its
    /// URI and headers: a 60 KB query is 60 KB here) and task, its waker
    /// slots, the values each loop keeps (its latest, and after a failure
    /// its last good one, as the share policy's
    /// [`held_bytes`](crate::share::Share::held_bytes) weighs them: headers
    /// and body for HTTP), and each subscriber's handle.
    ///
    /// Kept up to date as keys come, change and go, so reading it is one
    /// atomic load; it is what the memory budget
    /// ([`RegistryLayer::with_max_memory`](super::RegistryLayer::with_max_memory))
    /// is checked against.
    fn memory_bytes(&self) -> u64 {
        self.core.memory_bytes()
    }
}

impl fmt::Debug for RegistryHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryHandle")
            .field("stats", &self.stats())
            .finish()
    }
}
