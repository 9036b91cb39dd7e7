//! How much the stack's maps hold now, for checks that they drain.

use serde::Serialize;

use super::Coordinator;

/// The number of entries each of a coordinator's maps holds now
/// ([`Coordinator::sizes`]).
///
/// A map that keeps growing under steady load, or that does not come back
/// to zero once the load stops, is a leak; the memory figures of the
/// [`Snapshot`](crate::stats::Snapshot) are estimates, these are counts.
/// After the last request, once the registry's `linger` and the dedup
/// reuse `window` have passed, every figure falls to zero; the cache's
/// once its entries have expired and been swept (`cache.sweep_interval`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Sizes {
    /// Registry keys with a poll loop, lingering ones included.
    pub registry_keys: u64,
    /// Live registry subscriptions (open streams, polls in progress).
    pub registry_subscribers: u64,
    /// Registry poll-loop tasks running.
    pub registry_tasks: u64,
    /// Registry loops of their own, for subscriptions without a key.
    pub registry_private_loops: u64,
    /// Callers and client addresses the registry's budgets count keys or
    /// subscriptions for.
    pub registry_budget_holders: u64,
    /// Cache entries held.
    pub cache_entries: u64,
    /// Cache bytes held (the sum of entry weights).
    pub cache_bytes: u64,
    /// Dedup keys held, over every class's reuse window: in flight, or kept
    /// for the window.
    pub dedup_entries: u64,
    /// Limit permits taken, over every class.
    pub limit_in_flight: u64,
    /// Requests waiting in a limit queue, over every class.
    pub limit_waiting: u64,
    /// Keys the rate rules hold.
    pub rate_keys: u64,
    /// Callers and client addresses with calls in flight or queued (the
    /// limit's shares), over every class.
    pub limit_callers: u64,
}

impl Coordinator {
    /// How many entries each of the stack's maps holds now; cheap enough
    /// for a stats route (a short lock per map at most).
    pub fn sizes(&self) -> Sizes {
        let shared = &self.shared;
        let registry = shared.registry.handle().stats();
        let cache = shared.cache.handle().stats();
        let limit = shared.limit.handle().stats();
        Sizes {
            registry_keys: registry.keys,
            registry_subscribers: registry.subscribers,
            registry_tasks: registry.tasks,
            registry_private_loops: registry.private_loops,
            registry_budget_holders: registry.budget_holders,
            cache_entries: cache.entries,
            cache_bytes: cache.bytes,
            dedup_entries: shared.dedup.handle().stats().entries,
            limit_in_flight: limit.classes.iter().map(|c| c.in_flight).sum(),
            limit_waiting: limit.classes.iter().map(|c| c.waiting).sum(),
            rate_keys: limit.rate_keys,
            limit_callers: limit.classes.iter().map(|c| c.callers + c.addresses).sum(),
        }
    }
}
