//! The backends a Coordinator builds its stack on.

use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

use http::Response;

use super::{
    Answer, BudgetKey, DynFlights, DynStore, FlightBackend, LoopBackend, RateBackend, RateBudgets,
    RateQuota, Role, StoreBackend, TripBackend,
};
use crate::event::DependencyHealth;
use crate::http::SharedBody;
use crate::key::Key;

/// The responses the Coordinator's cache and single-flight hold.
type HttpValue = Response<SharedBody>;

/// Where a [`Coordinator`](crate::Coordinator) keeps the state a cluster
/// of replicas would share: its cache's second-level store, its
/// single-flight, its poll loops' ownership, its rate budgets and, when
/// asked for, its breakers' trips; and the dependencies they rely on,
/// whose health the coordinator's stats track (`<name>_unavailable`).
///
/// Each defaults to the in-memory one (everything in this process, the
/// embedded default); give them to
/// [`CoordinatorBuilder::backends`](crate::coordinator::CoordinatorBuilder::backends).
/// `herdsman-redis` makes the distributed set from the `[redis]` section
/// (`herdsman_redis::backends`). Cheap to clone: clones share each
/// backend.
///
/// ```
/// use herdsman::{backend::{Backends, LocalLoops}, Coordinator};
///
/// let backends = Backends::local().with_loops(LocalLoops);
/// assert!(!backends.is_local());
/// let coordinator = Coordinator::builder().backends(backends).build().unwrap();
/// # let _ = coordinator;
/// ```
#[derive(Clone, Default)]
pub struct Backends {
    pub(crate) store: DynStore<HttpValue>,
    pub(crate) flights: DynFlights<HttpValue>,
    pub(crate) loops: Option<SharedLoops>,
    pub(crate) rates: Option<SharedRates>,
    pub(crate) trips: Option<Arc<dyn TripBackend>>,
    pub(crate) dependencies: Vec<(String, Arc<dyn DependencyHealth>)>,
}

impl Backends {
    /// Every backend in memory: the embedded default.
    pub fn local() -> Self {
        Backends::default()
    }

    /// The cache's second-level store
    /// ([`CacheLayer::with_store_backend`](crate::cache::CacheLayer::with_store_backend)).
    /// Its [`remote_invalidations`](StoreBackend::remote_invalidations)
    /// are applied to the coordinator's cache and registry.
    pub fn with_store(mut self, store: impl StoreBackend<HttpValue>) -> Self {
        self.store = DynStore::new(store);
        self
    }

    /// Single-flight across replicas
    /// ([`DedupLayer::with_flight_backend`](crate::dedup::DedupLayer::with_flight_backend)).
    pub fn with_flights(mut self, flights: impl FlightBackend<HttpValue>) -> Self {
        self.flights = DynFlights::new(flights);
        self
    }

    /// Which replica polls each registry key
    /// ([`RegistryLayer::with_loop_backend`](crate::registry::RegistryLayer::with_loop_backend)).
    pub fn with_loops(mut self, loops: impl LoopBackend) -> Self {
        self.loops = Some(SharedLoops(Arc::new(loops)));
        self
    }

    /// The budgets of rate rules
    /// ([`LimitLayer::with_rate_backend`](crate::limit::LimitLayer::with_rate_backend)).
    pub fn with_rates(mut self, rates: impl RateBackend) -> Self {
        self.rates = Some(SharedRates::new(rates));
        self
    }

    /// Breaker trips shared with the other replicas
    /// ([`BreakerLayer::with_trip_backend`](crate::breaker::BreakerLayer::with_trip_backend)):
    /// a trip of one replica's breaker of a class opens the others' for
    /// the time it has left. Off (each breaker trips alone) unless given;
    /// `herdsman_redis::backends` gives it when `redis.share_breaker` is on.
    pub fn with_trips(mut self, trips: impl TripBackend) -> Self {
        self.trips = Some(Arc::new(trips));
        self
    }

    /// A dependency the backends rely on, named (`"redis"`): the
    /// coordinator's stats track its health
    /// ([`Stats::track_dependency`](crate::stats::Stats::track_dependency)),
    /// raising `<name>_unavailable` while it is down.
    pub fn with_dependency(
        mut self,
        name: impl Into<String>,
        health: impl DependencyHealth,
    ) -> Self {
        self.dependencies.push((name.into(), Arc::new(health)));
        self
    }

    /// Whether every backend is the in-memory one.
    pub fn is_local(&self) -> bool {
        self.store.is_local()
            && self.flights.is_local()
            && self.loops.is_none()
            && self.rates.is_none()
            && self.trips.is_none()
    }
}

impl fmt::Debug for Backends {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = |local: bool| if local { "local" } else { "shared" };
        f.debug_struct("Backends")
            .field("store", &kind(self.store.is_local()))
            .field("flights", &kind(self.flights.is_local()))
            .field("loops", &kind(self.loops.is_none()))
            .field("rates", &kind(self.rates.is_none()))
            .field("trips", &kind(self.trips.is_none()))
            .field(
                "dependencies",
                &self.dependencies.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A [`LoopBackend`] shared behind a pointer (the registry takes its
/// backend by value).
#[derive(Clone)]
pub(crate) struct SharedLoops(pub(crate) Arc<dyn LoopBackend>);

impl LoopBackend for SharedLoops {
    fn claim(&self, key: &Key, interval: Duration) -> Answer<Role> {
        self.0.claim(key, interval)
    }

    fn announce(&self, key: &Key, fingerprint: u64) {
        self.0.announce(key, fingerprint);
    }

    fn changed(&self, key: &Key) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        self.0.changed(key)
    }

    fn release(&self, key: &Key) {
        self.0.release(key);
    }
}

/// Makes one rule's budgets, whatever the [`RateBackend`].
pub(crate) type MakeBudgets = dyn Fn(&RateQuota) -> Box<dyn RateBudgets> + Send + Sync;

/// A [`RateBackend`] behind a pointer, its budgets boxed.
#[derive(Clone)]
pub(crate) struct SharedRates(pub(crate) Arc<MakeBudgets>);

impl SharedRates {
    pub(crate) fn new<B: RateBackend>(backend: B) -> Self {
        SharedRates(Arc::new(move |quota: &RateQuota| {
            Box::new(backend.budgets(quota)) as Box<dyn RateBudgets>
        }))
    }
}

/// One rule's budgets of a [`SharedRates`].
pub(crate) struct BoxedBudgets(Box<dyn RateBudgets>);

impl RateBudgets for BoxedBudgets {
    fn check(&self, key: &BudgetKey) -> Result<(), Duration> {
        self.0.check(key)
    }

    fn keys(&self) -> u64 {
        self.0.keys()
    }

    fn untracked(&self) -> u64 {
        self.0.untracked()
    }
}

impl RateBackend for SharedRates {
    type Budgets = BoxedBudgets;

    fn budgets(&self, quota: &RateQuota) -> BoxedBudgets {
        BoxedBudgets((self.0)(quota))
    }
}
