use std::{fmt, sync::Arc};

use tower_layer::Layer;

use super::{handle::Shared, stack::Bypass, stack::Dedups, Coordinated};
use crate::switch::LayerName;

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
        let routes = &shared.routes;
        let buffered = shared.buffer.layer(inner.clone());
        let upstream = Bypass::new(
            shared.upstream.layer(buffered),
            LayerName::Stats,
            routes.clone(),
        );
        let limited = Bypass::new(
            shared.limit.layer(upstream),
            LayerName::Limit,
            routes.clone(),
        );
        let guarded = Bypass::new(
            shared.breaker.layer(limited),
            LayerName::Breaker,
            routes.clone(),
        );
        let deduped = Dedups::new(
            shared
                .dedups
                .iter()
                .map(|dedup| dedup.layer(guarded.clone()))
                .collect(),
            routes.clone(),
        );
        let cached = Bypass::new(
            shared.cache.layer(deduped),
            LayerName::Cache,
            routes.clone(),
        );
        let counted = Bypass::clients_only(
            shared.stats_layer.layer(cached),
            LayerName::Stats,
            routes.clone(),
        );
        let stack = Bypass::new(
            shared.registry.layer(counted),
            LayerName::Registry,
            routes.clone(),
        );
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
