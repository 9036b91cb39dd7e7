use std::{fmt, sync::Arc};

use http::Response;
use tower::ServiceBuilder;
use tower_layer::{layer_fn, Layer};

use super::{
    handle::Shared,
    route::{CallerIdentity, ClassKey, ClassOf},
    routed::Unrouted,
    service::Classified,
    Coordinated,
};
use crate::{
    backend::{DynFlights, DynStore},
    breaker::BreakerLayer,
    cache::{CacheLayer, HttpCachePolicy},
    dedup::DedupLayer,
    http::{Buffer, ClientAddress, HttpShare, ServerErrors, SharedBody},
    limit::LimitLayer,
    registry::{HttpFingerprint, RegistryLayer},
    stats::{StatsLayer, UpstreamLayer},
};

/// Who subscribes to the registry, for its budgets: the rollout's caller
/// identity and the client address.
pub(crate) type Subscribers = (CallerIdentity, ClientAddress);

// Each layer of the stack, its type parameters written once: the
// coordinator's shared state holds these, and [`Stack`] is what they make.
pub(crate) type RegistryOf = RegistryLayer<
    ClassKey,
    ClassOf,
    HttpShare,
    HttpFingerprint,
    ClassKey,
    Subscribers,
    ServerErrors,
>;
pub(crate) type StatsOf = StatsLayer<ClassOf, ServerErrors>;
pub(crate) type CacheOf =
    CacheLayer<ClassKey, Response<SharedBody>, HttpCachePolicy, ClassOf, StoreOf>;
pub(crate) type DedupOf = DedupLayer<ClassKey, HttpShare, ClassOf, FlightsOf>;
/// The backends of the cache and of dedup: the in-memory ones, or those
/// given to the builder ([`Backends`](crate::backend::Backends)).
pub(crate) type StoreOf = DynStore<Response<SharedBody>>;
pub(crate) type FlightsOf = DynFlights<Response<SharedBody>>;
pub(crate) type BreakerOf = BreakerLayer<ClassOf, ServerErrors>;
pub(crate) type LimitOf = LimitLayer<ClassOf, CallerIdentity, ClientAddress>;
pub(crate) type UpstreamOf = UpstreamLayer<ClassOf, ClassKey, ServerErrors>;

/// The service `L` makes of `S`.
type On<L, S> = <L as Layer<S>>::Service;

/// The coordinated path of a [`Coordinated`] service, as
/// [`CoordinatorLayer::layer`] builds it (outer to inner).
pub(crate) type Stack<S> = Classified<
    On<
        RegistryOf,
        On<
            StatsOf,
            On<
                CacheOf,
                On<DedupOf, On<BreakerOf, On<LimitOf, On<UpstreamOf, Buffer<Unrouted<S>>>>>>,
            >,
        >,
    >,
>;

/// The tower layer of a [`Coordinator`](super::Coordinator)'s whole stack:
/// made by [`Coordinator::layer`](super::Coordinator::layer).
///
/// Every service it makes, and every clone of it, shares the coordinator's
/// state.
#[derive(Clone)]
pub struct CoordinatorLayer {
    pub(crate) shared: Arc<Shared>,
}

impl<S: Clone> Layer<S> for CoordinatorLayer {
    type Service = Coordinated<S>;

    fn layer(&self, inner: S) -> Coordinated<S> {
        let shared = &self.shared;
        let routes = shared.routes.clone();
        // Outer to inner; each layer reads its own switch for the class.
        let stack = ServiceBuilder::new()
            .layer(layer_fn(move |svc| Classified::new(svc, routes.clone())))
            .layer(&shared.registry)
            .layer(&shared.stats_layer)
            .layer(&shared.cache)
            .layer(&shared.dedup)
            .layer(&shared.breaker)
            .layer(&shared.limit)
            .layer(&shared.upstream)
            .layer(&shared.buffer)
            .service(Unrouted::new(inner.clone()));
        Coordinated::new(stack, inner, shared.clone())
    }
}

impl fmt::Debug for CoordinatorLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoordinatorLayer")
            .field("routes", &self.shared.routes)
            .finish_non_exhaustive()
    }
}
