//! What the layers report: one small observer interface.
//!
//! Each layer can be given an [`Observer`] (`with_observer`). It reports what
//! it does, per endpoint [`Class`]: a cache hit, a coalesced follower, a
//! breaker changing state, a local rejection, a registry poll. The layers
//! never import each other; they meet here and in the Coordinator.
//!
//! The Stats layer (`stats::Stats`) implements `Observer` and feeds the
//! `metrics` facade from it. An application can implement it too, to count
//! or log something herdsman does not:
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use herdsman::{class::Class, event::{Event, Observer}};
//!
//! #[derive(Default)]
//! struct CountHits(AtomicU64);
//!
//! impl Observer for CountHits {
//!     fn observe(&self, _class: &Class, event: Event) {
//!         if event == Event::CacheHit {
//!             self.0.fetch_add(1, Ordering::Relaxed);
//!         }
//!     }
//! }
//!
//! let hits = CountHits::default();
//! hits.observe(&Class::default(), Event::CacheHit);
//! assert_eq!(hits.0.load(Ordering::Relaxed), 1);
//! ```
//!
//! # Cost
//!
//! A layer without an observer pays one branch per event. With one, it pays
//! a virtual call; observers run on the request path and must not block.

use std::{fmt, sync::Arc};

use crate::{class::Class, key::Key};

/// The state of one circuit breaker, as
/// [`Event::BreakerState`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go through and are counted.
    Closed,
    /// Calls fail fast until the open duration ends.
    Open,
    /// A bounded number of probes go through.
    HalfOpen,
    /// Opened by hand: calls fail fast until reset.
    ForcedOpen,
    /// Turned off by hand: calls go through uncounted until reset.
    Disabled,
}

impl BreakerState {
    #[cfg(any(feature = "breaker", feature = "stats"))]
    pub(crate) const ALL: [BreakerState; 5] = [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
        BreakerState::ForcedOpen,
        BreakerState::Disabled,
    ];

    /// The state's name in metrics and logs: `closed`, `open`, `half_open`,
    /// `forced_open`, `disabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::ForcedOpen => "forced_open",
            BreakerState::Disabled => "disabled",
        }
    }
}

/// Something a layer did, reported to an [`Observer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Cache: answered from a fresh entry.
    CacheHit,
    /// Cache: answered from a fresh entry of the store backend (the second
    /// level, shared by replicas) after a miss of this process's store. A
    /// hit too: an observer counting hits counts both.
    CacheBackendHit,
    /// Cache: answered from a stale entry (stale-while-revalidate or
    /// stale-if-error).
    StaleServed,
    /// Cache: no usable entry; the request went down the stack.
    CacheMiss,
    /// Dedup: the request joined a call already in flight.
    Coalesced,
    /// Dedup: the request was answered from the reuse window.
    Reused,
    /// Breaker: a circuit moved to a new state.
    BreakerState(BreakerState),
    /// A request was refused locally, without reaching the upstream.
    Rejected(Rejection),
    /// Registry: a subscriber joined a key of this class.
    Subscribed,
    /// Registry: a subscriber left a key of this class.
    Unsubscribed,
    /// Registry: a poll loop fetched its key.
    Polled,
    /// Registry: a one-shot call was answered with a copy of a live poll
    /// loop's fresh value, above every other layer: a client request that
    /// made no call of its own.
    SharedAnswer,
}

/// Why a request was refused locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rejection {
    /// The circuit breaker is open.
    BreakerOpen,
    /// The concurrency limit and its queue were full, or the wait timed out.
    Overloaded,
    /// A rate rule refused the request.
    RateLimited,
    /// The Registry refused a subscription: one of its limits or budgets
    /// is reached (streams per caller among them: `herdsman-axum` answers
    /// its refusals).
    Subscription(Limit),
    /// A caller, or a client address, already has its share of a class's
    /// calls in flight (the Limit layer's `TooManyInFlight`, answered 429).
    InFlightCap,
    /// The process already has its most event streams open
    /// (`herdsman_axum::Live::with_max_streams`, answered 429).
    EventStreams,
}

impl Rejection {
    /// The label used in metrics and JSON: `breaker_open`, `overloaded`,
    /// `rate_limited`, `in_flight_cap`, `event_streams`, or for a subscription the
    /// [limit](Limit::as_str) that refused it.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::BreakerOpen => "breaker_open",
            Rejection::Overloaded => "overloaded",
            Rejection::RateLimited => "rate_limited",
            Rejection::Subscription(limit) => limit.as_str(),
            Rejection::InFlightCap => "in_flight_cap",
            Rejection::EventStreams => "event_streams",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which limit or budget of the Registry refused a subscriber
/// (`registry::TooManySubscribers::reason`).
///
/// Defined here, in the core, so that the Stats layer can count refusals by
/// reason without knowing the Registry; the Registry re-exports it as
/// `registry::Limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// The key's class already has its maximum number of keys
    /// (`RegistryLayer::with_max_keys`).
    Keys,
    /// The caller already holds its maximum number of keys of the class
    /// (`RegistryLayer::with_max_keys_per_caller`).
    KeysPerCaller,
    /// The client address already holds its maximum number of keys of the
    /// class (`RegistryLayer::with_max_keys_per_address`).
    KeysPerAddress,
    /// The key already has its maximum number of subscribers
    /// (`RegistryLayer::with_max_subscribers_per_key`).
    SubscribersPerKey,
    /// The caller already has its maximum number of subscriptions to the
    /// class open
    /// (`RegistryLayer::with_max_subscribers_per_caller`).
    SubscribersPerCaller,
    /// The client address already has its maximum number of subscriptions
    /// to the class open
    /// (`RegistryLayer::with_max_subscribers_per_address`).
    SubscribersPerAddress,
    /// The registry already has its maximum number of subscribers in total
    /// (`RegistryLayer::with_max_subscribers`).
    Subscribers,
    /// The registry's memory is over its budget: no new key until keys
    /// leave (`RegistryLayer::with_max_memory`).
    Memory,
    /// The request's key is longer than the registry accepts
    /// (`RegistryLayer::with_max_key_len`):
    /// retrying the same request cannot help.
    KeyTooLong,
}

impl Limit {
    /// Every limit, in documentation order.
    pub const ALL: [Limit; 9] = [
        Limit::Keys,
        Limit::KeysPerCaller,
        Limit::KeysPerAddress,
        Limit::SubscribersPerKey,
        Limit::SubscribersPerCaller,
        Limit::SubscribersPerAddress,
        Limit::Subscribers,
        Limit::Memory,
        Limit::KeyTooLong,
    ];

    /// The label in metrics and JSON: `keys`, `keys_per_caller`,
    /// `keys_per_address`, `subscribers_per_key`, `subscribers_per_caller`,
    /// `subscribers_per_address`, `subscribers`, `memory`, `key_too_long`.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Keys => "keys",
            Limit::KeysPerCaller => "keys_per_caller",
            Limit::KeysPerAddress => "keys_per_address",
            Limit::SubscribersPerKey => "subscribers_per_key",
            Limit::SubscribersPerCaller => "subscribers_per_caller",
            Limit::SubscribersPerAddress => "subscribers_per_address",
            Limit::Subscribers => "subscribers",
            Limit::Memory => "memory",
            Limit::KeyTooLong => "key_too_long",
        }
    }

    /// Whether it is one caller's (or one client address's) own share
    /// being used up, rather than the registry's capacity: the caller asks
    /// too much (HTTP 429), where otherwise the service is busy (503).
    pub fn is_per_caller(self) -> bool {
        matches!(
            self,
            Limit::KeysPerCaller
                | Limit::KeysPerAddress
                | Limit::SubscribersPerCaller
                | Limit::SubscribersPerAddress
        )
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Receives the [`Event`]s of the layers it is given to.
///
/// Implementations must be cheap and must not block: `observe` runs on the
/// request path, sometimes while a layer holds a shard lock.
pub trait Observer: Send + Sync + 'static {
    /// One event of one endpoint class.
    fn observe(&self, class: &Class, event: Event);
}

impl<O: Observer + ?Sized> Observer for Arc<O> {
    fn observe(&self, class: &Class, event: Event) {
        (**self).observe(class, event)
    }
}

/// A layer's optional observer: what each layer stores.
#[derive(Clone, Default)]
pub struct Observers(Option<Arc<dyn Observer>>);

impl Observers {
    /// No observer: events cost one branch.
    pub fn none() -> Self {
        Observers(None)
    }

    /// Report to `observer`.
    pub fn new(observer: impl Observer) -> Self {
        Observers(Some(Arc::new(observer)))
    }

    /// Whether an observer is set; lets a layer skip work (such as
    /// classifying a request) that only the observer needs.
    #[inline]
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Report `event` for `class`, if an observer is set.
    #[inline]
    pub fn observe(&self, class: &Class, event: Event) {
        if let Some(observer) = &self.0 {
            observer.observe(class, event);
        }
    }
}

impl fmt::Debug for Observers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observers")
            .field("set", &self.is_set())
            .finish()
    }
}

/// Memory a layer holds, as it estimates it: cache entries, in-flight maps,
/// registry keys. The Stats layer sums its sources for the memory alert.
pub trait MemorySource: Send + Sync + 'static {
    /// Bytes held now, estimated.
    fn memory_bytes(&self) -> u64;
}

impl<F> MemorySource for F
where
    F: Fn() -> u64 + Send + Sync + 'static,
{
    fn memory_bytes(&self) -> u64 {
        self()
    }
}

/// Whether a dependency outside this process (a Redis server, a database)
/// can be reached now, as the component that uses it sees it.
///
/// A backend that coordinates through another service reports its health
/// this way, and the Stats layer turns it into a `<name>_unavailable`
/// alert and a `herdsman_dependency_up{dependency}` gauge
/// (`Stats::track_dependency`). Read once per monitor tick and per
/// snapshot: it must answer at once, from what the component last saw
/// (its last operation failed or timed out: down; one succeeded: up).
pub trait DependencyHealth: Send + Sync + 'static {
    /// Whether the dependency can be reached now.
    fn is_up(&self) -> bool;
}

impl<F> DependencyHealth for F
where
    F: Fn() -> bool + Send + Sync + 'static,
{
    fn is_up(&self) -> bool {
        self()
    }
}

/// What was invalidated: the Cache layer announces it (by hand through its
/// handle, or on an unsafe method such as `POST`), and the Registry follows
/// it with an immediate poll of the keys it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalidation {
    /// One key.
    Key(Key),
    /// Every key of one endpoint class.
    Class(Class),
    /// Every key whose path (see [`KeyBuilder::path`](crate::key::KeyBuilder::path)) is exactly this one.
    Path(Arc<str>),
    /// Every key whose path starts with this prefix.
    Prefix(Arc<str>),
    /// Everything.
    All,
}

impl Invalidation {
    /// Whether a key of `class` is covered.
    pub fn covers(&self, key: &Key, class: &Class) -> bool {
        match self {
            Invalidation::Key(k) => k == key,
            Invalidation::Class(c) => c == class,
            Invalidation::Path(p) => key.path() == Some(p.as_bytes()),
            Invalidation::Prefix(p) => key
                .path()
                .is_some_and(|path| path.starts_with(p.as_bytes())),
            Invalidation::All => true,
        }
    }
}
