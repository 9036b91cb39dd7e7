//! Backends: where the state that a cluster of replicas would share lives.
//!
//! One process is the default, and each layer keeps its state in memory. A
//! distributed backend (Redis, in a crate of its own) keeps some of it
//! cluster-wide instead, behind the traits of this module. The layers only
//! know the traits; the in-memory implementations are the defaults, and
//! cost nothing extra on the request path.
//!
//! Each trait says what an implementation must guarantee. They share two
//! rules:
//!
//! - **Never fail a request because the backend is down.** A network call
//!   that fails or times out falls back to local coordination (this
//!   process polls, this process counts), as if the backend were the
//!   in-memory one.
//! - **Answer at once when you can.** Where an answer may need the network
//!   the trait returns an [`Answer`]: [`Answer::Now`] for an answer known
//!   at once (always, in memory), [`Answer::Later`] with a future
//!   otherwise, so the in-memory path neither allocates nor awaits.
//!
//! The seams:
//!
//! - [`FlightBackend`]: single-flight across replicas, asked by the one
//!   local leader of a key's call
//!   ([`DedupLayer::with_flight_backend`][crate::dedup::DedupLayer::with_flight_backend]);
//!   the default, [`LocalFlights`], coalesces within this process only.
//! - [`RateBackend`]: the budgets of the limit layer's rate rules
//!   ([`LimitLayer::with_rate_backend`][crate::limit::LimitLayer::with_rate_backend]);
//!   the default is GCRA in memory
//!   ([`GovernorRates`][crate::limit::GovernorRates]).
//! - [`LoopBackend`]: which replica polls a key of the registry, and how the
//!   others hear that its value changed
//!   ([`RegistryLayer::with_loop_backend`][crate::registry::RegistryLayer::with_loop_backend]);
//!   the default, [`LocalLoops`], polls every key in this process.
//! - [`StoreBackend`]: a second-level cache store behind each process's
//!   own, for the cache layer
//!   ([`CacheLayer::with_store_backend`][crate::cache::CacheLayer::with_store_backend]);
//!   the default, [`LocalStore`], has nothing behind the in-memory store.
//! - [`TripBackend`]: circuit breaker trips shared by replicas, so that
//!   one replica's trip opens the others' breakers of that class
//!   ([`BreakerLayer::with_trip_backend`][crate::breaker::BreakerLayer::with_trip_backend]);
//!   the default, [`LocalTrips`], shares nothing (off, as the `[redis]`
//!   setting `share_breaker` is by default).
//!
#![cfg_attr(
    not(feature = "dedup"),
    doc = "[crate::dedup::DedupLayer::with_flight_backend]: crate#feature-flags"
)]
#![cfg_attr(
    not(feature = "limit"),
    doc = "[crate::limit::LimitLayer::with_rate_backend]: crate#feature-flags"
)]
#![cfg_attr(
    not(feature = "limit"),
    doc = "[crate::limit::GovernorRates]: crate#feature-flags"
)]
#![cfg_attr(
    not(feature = "registry"),
    doc = "[crate::registry::RegistryLayer::with_loop_backend]: crate#feature-flags"
)]
#![cfg_attr(
    not(feature = "cache"),
    doc = "[crate::cache::CacheLayer::with_store_backend]: crate#feature-flags"
)]
#![cfg_attr(
    not(feature = "breaker"),
    doc = "[crate::breaker::BreakerLayer::with_trip_backend]: crate#feature-flags"
)]

use std::{fmt, future::Future, num::NonZeroU32, pin::Pin, sync::Arc, time::Duration};

use crate::{class::Class, event::Invalidation, key::Key};

#[cfg(feature = "coordinator")]
mod backends;
mod erased;

#[cfg(feature = "coordinator")]
#[cfg_attr(docsrs, doc(cfg(feature = "coordinator")))]
pub use self::backends::Backends;
pub use self::erased::{DynFlights, DynStore, RemoteInvalidations};

/// A backend's answer: known at once, or after a network call.
pub enum Answer<T> {
    /// Known at once; nothing to await.
    Now(T),
    /// Known when the future completes. It must complete, and must not
    /// fail: on a backend error it resolves to the local fallback.
    Later(Pin<Box<dyn Future<Output = T> + Send>>),
}

impl<T> Answer<T> {
    /// The answer, awaiting it if need be.
    pub async fn get(self) -> T {
        match self {
            Answer::Now(value) => value,
            Answer::Later(future) => future.await,
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Answer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Now(value) => f.debug_tuple("Now").field(value).finish(),
            Answer::Later(_) => f.debug_tuple("Later").finish_non_exhaustive(),
        }
    }
}

/// What the local leader of a key's call learns from a [`FlightBackend`].
#[derive(Debug)]
pub enum Lead<V> {
    /// Make the call (and report it with [`FlightBackend::finish`]).
    Call,
    /// Another replica made the call: its value, for this replica's callers.
    Answered(V),
}

/// Single flight across replicas: of all the replicas' callers of one key,
/// one calls the upstream and the others get its value.
///
/// Within one process a `Dedup` layer always coalesces a key's callers
/// into one leader; the leader then asks the backend whether to make the
/// call, and the callers waiting on it share whatever it gets. An
/// implementation must:
///
/// - answer [`Lead::Call`] to at most one replica for a key at a time (a
///   claim that expires, so that a leader that is dropped or dies without
///   [`finish`](Self::finish) is replaced), and [`Lead::Answered`] only
///   with the value of a call that was running, or started, after the
///   question was asked, or that ended a moment before it (within a short
///   bound the implementation documents: a replica that asks just after
///   the call ended gets its value instead of calling again). Never an
///   older value: caching is the cache layer's job;
/// - answer [`Lead::Call`] when the backend cannot be reached, or the
///   replica that leads does not answer in time: callers then get their
///   own call rather than an error;
/// - if [`Answer::Later`], complete promptly (bounded by its own timeout).
///
/// Waiting replicas do not get errors: when the leading replica's call
/// fails, [`finish`](Self::finish) releases the claim and they call
/// themselves.
pub trait FlightBackend<V>: Clone + Send + Sync + 'static {
    /// Whether other replicas may wait for this one's values: when `false`
    /// (the in-memory default), [`finish`](Self::finish) is only called
    /// when the value is shared anyway, and a caller alone keeps its
    /// response unshared.
    const ANSWERS: bool;

    /// Whether other replicas may wait for this one's values, as the layer
    /// reads it: [`ANSWERS`](Self::ANSWERS) unless a backend that holds
    /// another (such as [`DynFlights`]) asks it.
    #[inline]
    fn answers(&self) -> bool {
        Self::ANSWERS
    }

    /// Asks to make the call of `key`; called by the local leader before it
    /// calls the inner service.
    fn lead(&self, key: &Key) -> Answer<Lead<V>>;

    /// The end of a call this replica made after [`Lead::Call`]: its value
    /// is handed to the replicas waiting for it, and the claim released.
    /// `None` when there is no value to hand over (the call failed, or its
    /// response cannot be shared): the waiting replicas call themselves.
    fn finish(&self, key: &Key, value: Option<&V>);
}

/// The in-memory [`FlightBackend`], the default: every local leader makes
/// its call, so callers coalesce within this process only.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalFlights;

impl<V> FlightBackend<V> for LocalFlights {
    const ANSWERS: bool = false;

    #[inline]
    fn lead(&self, _: &Key) -> Answer<Lead<V>> {
        Answer::Now(Lead::Call)
    }

    #[inline]
    fn finish(&self, _: &Key, _: Option<&V>) {}
}

/// What one budget of a rate rule is kept under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BudgetKey {
    /// The endpoint class's index in its layer (stable for the layer's
    /// life), or `u32::MAX` for a budget shared by classes.
    pub class: u32,
    /// The caller's identity, for a rule by caller.
    pub identity: Option<Key>,
}

/// Names one rule's budgets the same way in every process built from one
/// configuration, whatever order the rules are built in: the endpoint
/// class whose limits hold the rule, and which budgets of the rule (`0`:
/// its budgets; `1`: an alert-only rule's warnings). A distributed
/// [`RateBackend`] keys the rule's shared state by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleId(u64);

impl RuleId {
    /// The `index`th budgets of the rate rule in `class`'s limits (the
    /// default class's for the default limits).
    pub fn new(class: &str, index: u32) -> Self {
        let mut bytes = Vec::with_capacity(class.len() + 12);
        bytes.extend_from_slice(&(class.len() as u64).to_le_bytes());
        bytes.extend_from_slice(class.as_bytes());
        bytes.extend_from_slice(&index.to_le_bytes());
        RuleId(twox_hash::XxHash3_64::oneshot(&bytes))
    }

    /// Its value: a hash of the class and the index (XXH3, fixed by its
    /// specification: the same in every process and release).
    pub fn get(self) -> u64 {
        self.0
    }
}

/// What a rate rule allows, as a backend sees it: one request every
/// `interval` on average, up to `burst` at once after a quiet spell (GCRA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateQuota {
    /// Which rule (and which of its budgets) this is, the same in every
    /// replica.
    pub rule: RuleId,
    /// The time one request uses of the budget: the rule's period divided
    /// by its limit.
    pub interval: Duration,
    /// The most requests let through at once.
    pub burst: NonZeroU32,
    /// One budget per [`BudgetKey`] (`true`), or a single budget for every
    /// key (`false`: a rule by class, whose budgets belong to one class).
    pub keyed: bool,
    /// The most keys to keep budgets for; requests of other keys are
    /// decided by [`when_full`](Self::when_full) and counted as untracked.
    pub max_keys: usize,
    /// What to decide for a key the budgets cannot keep.
    pub when_full: WhenFull,
}

/// What budgets that are full decide for a key they do not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Let the request through, as for a key seen for the first time.
    Conform,
    /// Refuse it, as for a key far over its budget (used for the one
    /// warning per period of alert-only rules: no flood of warnings).
    Refuse,
}

/// The budgets of one rate rule.
///
/// An implementation must:
///
/// - take one request from `key`'s budget in [`check`](Self::check) and
///   return `Ok(())`, or, when the budget is spent, take nothing and return
///   how long until a request of that key would be let through (at least
///   1 ms);
/// - in any span of time `t`, let at most `burst + t / interval` requests of
///   one key through (cluster-wide for a distributed backend; a replica that
///   cannot reach the cluster enforces the quota locally);
/// - answer without blocking on the network: `check` runs on the request
///   path, inside `Service::call`. A distributed backend answers from local
///   state and reconciles with the cluster in the background (so a burst
///   may briefly pass on several replicas at once).
pub trait RateBudgets: Send + Sync + 'static {
    /// Takes one request from `key`'s budget, or tells how long until it
    /// could.
    fn check(&self, key: &BudgetKey) -> Result<(), Duration>;

    /// Keys held now, for the stats and the memory figure.
    fn keys(&self) -> u64 {
        0
    }

    /// Requests decided without keeping their key (the budgets were full).
    fn untracked(&self) -> u64 {
        0
    }
}

/// Makes the budgets of each rate rule of a limit layer.
///
/// Called once per rule (and once more for an alert-only rule's warnings)
/// when the layer's state is built, never per request.
pub trait RateBackend: Send + Sync + 'static {
    /// The budgets of one rule.
    type Budgets: RateBudgets;

    /// The budgets of a rule allowing `quota`.
    fn budgets(&self, quota: &RateQuota) -> Self::Budgets;
}

/// Who polls a key this round, as [`LoopBackend::claim`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// This process polls the key (the in-memory default, always; and the
    /// fallback whenever the backend cannot be reached).
    Poll,
    /// Another replica polls it: this one waits for its
    /// [`changed`](LoopBackend::changed) notice, or at most `for_at_most`,
    /// then fetches (through its own stack: with a shared cache, the other
    /// replica's answer) and claims again.
    Follow {
        /// How long the other replica's claim lasts: when it ends without
        /// a notice, this replica claims again (so a replica that died is
        /// replaced).
        for_at_most: Duration,
    },
}

/// Which replica polls each key of a [`Registry`][crate::registry::Registry],
/// and how the others hear about changes (the fan-out across replicas).
///
/// Within one process the registry always runs one loop per key; this
/// trait decides, for that loop, whether it calls the upstream or follows
/// another replica's loop. An implementation must:
///
/// - let at most one replica hold a key at a time (with a claim that
///   expires, so a replica that dies is replaced), and give the key to
///   some replica while any asks;
/// - resolve [`claim`](Self::claim) to [`Role::Poll`] when the backend
///   cannot be reached: each replica then polls on its own, as without a
///   backend;
/// - after [`announce`](Self::announce), complete the futures from
///   [`changed`](Self::changed) of the same key in the other replicas
///   (best effort: a lost notice costs a follower at most one claim
///   period of staleness).
///
/// These calls are made once per poll round of a key, never per request.
///
#[cfg_attr(
    not(feature = "registry"),
    doc = "[crate::registry::Registry]: crate#feature-flags"
)]
pub trait LoopBackend: Send + Sync + 'static {
    /// Asks to poll `key` for the round starting now, `interval` long. A
    /// [`Answer::Later`] must complete promptly (bounded by the backend's
    /// own timeout, then [`Role::Poll`]): the loop waits for it.
    fn claim(&self, key: &Key, interval: Duration) -> Answer<Role>;

    /// Tells the other replicas that `key`'s value changed; `fingerprint`
    /// identifies the new content.
    fn announce(&self, key: &Key, fingerprint: u64);

    /// Completes when another replica announces a change of `key`.
    fn changed(&self, key: &Key) -> Pin<Box<dyn Future<Output = ()> + Send>>;

    /// Gives up `key`: its loop ended, so another replica may take it at
    /// once.
    fn release(&self, key: &Key);
}

/// The in-memory [`LoopBackend`]: this process polls every key, and its
/// subscribers hear about changes from the loop itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalLoops;

impl LoopBackend for LocalLoops {
    fn claim(&self, _: &Key, _: Duration) -> Answer<Role> {
        Answer::Now(Role::Poll)
    }

    fn announce(&self, _: &Key, _: u64) {}

    fn changed(&self, _: &Key) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        // Nobody else polls: no change is ever announced.
        Box::pin(std::future::pending())
    }

    fn release(&self, _: &Key) {}
}

/// Where a [`TripBackend`] hands the trips of other replicas: the class
/// whose breaker tripped, and how long it stays open from now. It answers
/// `false` once the breakers it feeds are gone, and is then dropped.
pub type TripListener = Arc<dyn Fn(&Class, Duration) -> bool + Send + Sync>;

/// Circuit breaker trips shared across replicas: when the breaker of a
/// class trips on one replica, the others open theirs for the rest of its
/// open time, instead of each finding out with failures of its own.
///
/// The breaker layer
/// ([`BreakerLayer::with_trip_backend`][crate::breaker::BreakerLayer::with_trip_backend])
/// announces each trip of its own (a closed breaker that opens, or a
/// half-open one whose probe failed) and listens for the others'. A trip
/// heard from another replica opens this replica's breaker of that class
/// as if it had tripped (half-open probing follows as usual) and is never
/// announced again. An implementation must:
///
/// - take [`announce`](Self::announce) without blocking (it runs when a
///   call's outcome trips the breaker, on the request path): send in the
///   background, best effort;
/// - hand every trip announced by another replica, never one of this
///   replica's own, to each listener given to [`listen`](Self::listen), with
///   the time the trip has left; and drop a listener that answers `false`;
/// - lose trips rather than fail when it cannot reach the other replicas:
///   each replica's breaker then trips on its own, as without a backend.
///
#[cfg_attr(
    not(feature = "breaker"),
    doc = "[crate::breaker::BreakerLayer::with_trip_backend]: crate#feature-flags"
)]
pub trait TripBackend: Send + Sync + 'static {
    /// This replica's breaker of `class` tripped, and stays open for
    /// `open_for`: tell the other replicas.
    fn announce(&self, class: &Class, open_for: Duration);

    /// From now on, hand the other replicas' trips to `listener`.
    fn listen(&self, listener: TripListener);
}

/// The in-memory [`TripBackend`], the default: each replica's breakers
/// trip on their own.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalTrips;

impl TripBackend for LocalTrips {
    fn announce(&self, _: &Class, _: Duration) {}

    fn listen(&self, _: TripListener) {}
}

/// A response a [`StoreBackend`] holds: its value, how old it is, and how
/// long it is fresh in all (so that it is fresh while `age < ttl`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shelved<V> {
    /// The stored response, in the cache layer's shared form.
    pub value: V,
    /// Its age now.
    pub age: Duration,
    /// How long it is fresh from when it was made.
    pub ttl: Duration,
}

/// A cache store behind the cache layer's own in-memory one: a second
/// level (L2) that replicas share.
///
/// The cache layer keeps its bounded in-memory store (the first level:
/// eviction, stale windows, `Vary` markers, counters, the sweep) in every
/// process, and asks the backend only what that store cannot answer. An
/// implementation must:
///
/// - in [`lookup`](Self::lookup), answer only a fresh response (`age <
///   ttl`) filed under exactly `key` (keys carry the auth partition and
///   the `Vary` variant, so one user's response is never another's), or
///   `None`; and `None` when the backend cannot be reached, so that the
///   request is answered by the inner service rather than failed. An
///   [`Answer::Later`] must complete promptly (bounded by the backend's
///   own timeout): the request waits for it before calling the inner
///   service;
/// - take [`insert`](Self::insert) and [`invalidate`](Self::invalidate)
///   without blocking (they run on the request path: send in the
///   background, best effort), and, after an invalidation, answer no
///   response stored before it.
///
/// The layer looks a key up in the backend whenever it would call the
/// inner service for it (a miss of its own store, a stale copy's
/// refresh, in the foreground or the background; not for a forced
/// refresh), files what the backend answers in its own store, and writes
/// every response it stores through to the backend. Stale windows stay local: a response
/// that the backend answers is kept for its freshness only.
pub trait StoreBackend<V>: Clone + Send + Sync + 'static {
    /// The response filed under `key`, asked on a miss of the local store.
    fn lookup(&self, key: &Key) -> Answer<Option<Shelved<V>>>;

    /// Files `value`, `age` old and fresh for `ttl` in all, under `key`:
    /// the local store just stored it.
    fn insert(&self, key: &Key, value: &V, age: Duration, ttl: Duration);

    /// Drops what `what` covers: the local store just did the same.
    ///
    /// Also called for one key right after [`insert`](Self::insert)ing it,
    /// when an invalidation landed while the cache was writing it through:
    /// an `invalidate` must take effect after the `insert`s made before it
    /// (a backend that sends its writes in the background keeps them in
    /// order).
    fn invalidate(&self, what: &Invalidation);

    /// The invalidations other replicas made, for this replica's own store
    /// and registry: a distributed backend hears them; the others (the
    /// default) have none. Asked once per coordinator; what it yields is
    /// applied to the local store and announced to the registry, never
    /// passed to [`invalidate`](Self::invalidate) (which would send it to
    /// the other replicas again).
    fn remote_invalidations(&self) -> Option<Box<dyn RemoteInvalidations>> {
        None
    }

    /// Bytes this process holds for the backend (buffers, connections),
    /// added to the cache's memory figure.
    fn memory_bytes(&self) -> u64 {
        0
    }
}

/// The in-memory [`StoreBackend`], the default: nothing behind the cache
/// layer's own store, which is the whole cache.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalStore;

impl<V> StoreBackend<V> for LocalStore {
    #[inline]
    fn lookup(&self, _: &Key) -> Answer<Option<Shelved<V>>> {
        Answer::Now(None)
    }

    #[inline]
    fn insert(&self, _: &Key, _: &V, _: Duration, _: Duration) {}

    #[inline]
    fn invalidate(&self, _: &Invalidation) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_later_answer_is_awaited() {
        let answer = Answer::Later(Box::pin(async { Role::Poll }));
        assert_eq!(answer.get().await, Role::Poll);
    }
}
