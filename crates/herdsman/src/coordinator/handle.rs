use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use http::Response;

use super::{
    builder::CoordinatorBuilder,
    layer::{
        BreakerOf, CacheOf, CoordinatorLayer, DedupOf, LimitOf, RegistryOf, StatsOf, UpstreamOf,
    },
    route::Routes,
};
use crate::{
    backend::DynStore,
    breaker::BreakerHandle,
    cache::CacheHandle,
    config::{Config, Environment},
    dedup::DedupHandle,
    event::Invalidation,
    http::{BufferLayer, SharedBody},
    limit::LimitHandle,
    registry::RegistryHandle,
    stats::{Snapshot, Stats},
    switch::{Rollout, Switch, Switches},
};

/// The whole herdsman stack built from one configuration: its layer, its
/// registry, its switches and its stats.
///
/// Made by [`Coordinator::builder`]. Clones share everything, and so do all
/// the services its [`layer`](Coordinator::layer) makes: one cache store, one
/// set of breakers and limits, one registry, one set of stats. See the
/// [module docs](crate::coordinator).
#[derive(Clone)]
pub struct Coordinator {
    pub(crate) shared: Arc<Shared>,
}

/// What every service of one coordinator shares.
pub(crate) struct Shared {
    pub(crate) environment: Environment,
    pub(crate) config: Config,
    pub(crate) stats: Stats,
    pub(crate) switches: Switches,
    /// The whole-stack switch, read first by every request.
    pub(crate) stack: Switch,
    pub(crate) routes: Arc<Routes>,
    pub(crate) rollout: Rollout,
    pub(crate) registry: RegistryOf,
    pub(crate) stats_layer: StatsOf,
    pub(crate) cache: CacheOf,
    pub(crate) dedup: DedupOf,
    pub(crate) breaker: BreakerOf,
    pub(crate) limit: LimitOf,
    pub(crate) upstream: UpstreamOf,
    pub(crate) buffer: BufferLayer,
    /// Whether the registry follows the cache's invalidations yet.
    pub(crate) following: AtomicBool,
}

impl Shared {
    /// Makes the registry follow the cache's invalidations, and the cache
    /// apply other replicas' ones, once, if called within a tokio runtime;
    /// `true` once it does.
    pub(crate) fn follow(self: &Arc<Self>) -> bool {
        if self.following.load(Ordering::Acquire) {
            return true;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return false;
        }
        if !self.following.swap(true, Ordering::AcqRel) {
            // The task ends by itself when the cache's channel closes or the
            // registry is dropped.
            drop(
                self.registry
                    .handle()
                    .follow(self.cache.handle().invalidations()),
            );
            self.apply_remote_invalidations();
        }
        true
    }

    /// Applies the invalidations other replicas make (heard by the cache's
    /// store backend) to this one's cache, announcing each so that the
    /// registry polls the keys it covers; never sends them to the backend
    /// again. The task holds the coordinator weakly: it ends with it, or
    /// when the backend is gone.
    fn apply_remote_invalidations(self: &Arc<Self>) {
        let Some(mut remote) = self.cache.handle().remote_invalidations() else {
            return;
        };
        let shared = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(what) = remote.next().await {
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                shared.cache.handle().apply_remote(what);
            }
        });
    }
}

impl Coordinator {
    /// A builder: environment and configuration.
    pub fn builder() -> CoordinatorBuilder {
        CoordinatorBuilder::default()
    }

    /// The environment it was built for.
    pub fn environment(&self) -> Environment {
        self.shared.environment
    }

    /// The validated configuration it was built from.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The stats every layer reports to: the Stats layer's handle
    /// ([`Stats::snapshot`] reads them).
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// The run-time switches: one per layer per class, one for the stack.
    pub fn switches(&self) -> &Switches {
        &self.shared.switches
    }

    /// The registry's handle: refresh, invalidate, list hooks,
    /// [`stats`](RegistryHandle::stats).
    pub fn registry(&self) -> RegistryHandle {
        self.shared.registry.handle()
    }

    /// The cache's handle: invalidate entries (without the registry: see
    /// [`invalidate`](Self::invalidate)), sweep,
    /// [`stats`](CacheHandle::stats).
    pub fn cache(&self) -> CacheHandle<Response<SharedBody>, DynStore<Response<SharedBody>>> {
        self.shared.cache.handle()
    }

    /// The dedup layer's handle: its [`stats`](DedupHandle::stats), over
    /// every class's reuse window.
    pub fn dedup(&self) -> DedupHandle {
        self.shared.dedup.handle()
    }

    /// The breakers' handle: force a class's breaker open, reset it, read
    /// its state and [`stats`](BreakerHandle::stats).
    pub fn breaker(&self) -> BreakerHandle {
        self.shared.breaker.handle()
    }

    /// The limit layer's handle: its [`stats`](LimitHandle::stats), per
    /// class.
    pub fn limit(&self) -> LimitHandle {
        self.shared.limit.handle()
    }

    /// Removes the cache entries `what` covers and polls at once every
    /// registry key it covers (pushing changes to their subscribers).
    pub fn invalidate(&self, what: &Invalidation) {
        // Removed without the handle's announcement, which would make the
        // registry poll a second time.
        self.shared.cache.handle().remove(what);
        self.shared.registry.handle().invalidate(what);
    }

    /// Everything the stats know now.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.stats.snapshot()
    }

    /// The tower layer of the whole stack. Every service it makes shares this
    /// coordinator's state.
    pub fn layer(&self) -> CoordinatorLayer {
        self.shared.follow();
        CoordinatorLayer {
            shared: self.shared.clone(),
        }
    }
}

impl fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinator")
            .field("environment", &self.shared.environment)
            .field("routes", &self.shared.routes)
            .field("switches", &self.shared.switches)
            .field("rollout", &self.shared.rollout)
            .finish_non_exhaustive()
    }
}
