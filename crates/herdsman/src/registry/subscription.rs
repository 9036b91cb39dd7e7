//! A subscriber's handle: a stream of the updates of one key.

use std::{
    fmt, mem,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures_core::Stream;

use super::{
    budget::Who,
    cell::Update,
    state::{Core, Hook, Table},
};
use crate::{event::Event, key::Key};

/// Bytes a subscriber's handle takes (its waker slot is counted with its
/// key's hook), counted in the registry's memory figure while it is open.
pub(crate) const SUBSCRIPTION_BYTES: usize = mem::size_of::<Subscription<()>>();

/// Options of one subscriber.
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    interval: Option<Duration>,
}

impl SubscribeOptions {
    /// The registry's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks for a poll at least every `interval`. The key's loop polls at the
    /// shortest interval any of its subscribers asked for, never below the
    /// registry's floor.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval);
        self
    }

    pub(crate) fn interval(&self) -> Option<Duration> {
        self.interval
    }
}

/// The updates of one key, from [`Registry::subscribe`](super::Registry::subscribe).
///
/// A [`Stream`] of [`Update`]s: the key's current value first (if there is
/// one), then each change. A subscriber that polls slowly skips to the
/// latest update; it never sees a version twice or an older one. The stream
/// ends only if the key's poll loop ends abnormally (its task panicked, or
/// the runtime shut down).
///
/// Dropping it unsubscribes; the key's loop stops when its last subscriber
/// leaves (after the registry's linger).
pub struct Subscription<T: Send + Sync + 'static> {
    core: Arc<Core>,
    /// The table of its value type, which it leaves when dropped.
    table: Arc<Table<T>>,
    hook: Arc<Hook<T>>,
    slot: usize,
    seen: u64,
    /// What this subscriber asked for (clamped); counted by the key's loop.
    asked: Duration,
    /// Whose budgets it counts in.
    who: Who,
}

impl<T: Send + Sync + 'static> Subscription<T> {
    pub(crate) fn new(
        core: Arc<Core>,
        table: Arc<Table<T>>,
        hook: Arc<Hook<T>>,
        asked: Duration,
        who: Who,
    ) -> Self {
        let (slot, grown) = hook.cell.register();
        hook.account.charge(grown);
        core.observers.observe(&hook.meta.class, Event::Subscribed);
        Subscription {
            core,
            table,
            hook,
            slot,
            seen: 0,
            asked,
            who,
        }
    }

    /// The key this subscription follows (empty for a request without a key,
    /// which has a poll loop of its own).
    pub fn key(&self) -> &Key {
        &self.hook.meta.key
    }

    /// The interval the key's loop polls at now: the shortest any of its
    /// subscribers asked for, never below the registry's floor.
    pub fn interval(&self) -> Duration {
        self.hook.meta.interval()
    }

    /// When the key's loop will poll next, as it planned after its last
    /// fetch: the interval after a success; after a failure its backoff,
    /// or later if the error said so (an open breaker's probe time). A
    /// refresh or a shorter interval can make it sooner. `None` before the
    /// first fetch ended.
    ///
    /// An answer made from a failed update can tell its client to retry
    /// then (`Retry-After`), counted from the moment of the answer.
    pub fn next_attempt(&self) -> Option<tokio::time::Instant> {
        self.hook.meta.next_attempt()
    }

    /// The key's latest update, whether or not the stream has yielded it.
    pub fn current(&self) -> Option<Update<T>> {
        self.hook.cell.current()
    }
}

impl<T: Send + Sync + 'static> Stream for Subscription<T> {
    type Item = Update<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Update<T>>> {
        let this = self.get_mut();
        this.hook.cell.poll_next(this.slot, &mut this.seen, cx)
    }
}

impl<T: Send + Sync + 'static> Drop for Subscription<T> {
    fn drop(&mut self) {
        self.hook.cell.deregister(self.slot);
        self.core
            .leave(&self.table, &self.hook.meta, self.asked, self.who);
        self.core
            .observers
            .observe(&self.hook.meta.class, Event::Unsubscribed);
    }
}

impl<T: Send + Sync + 'static> fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("key", self.key())
            .field("interval", &self.interval())
            .field("seen", &self.seen)
            .finish()
    }
}
