//! [`ServiceBuilderExt`]: one method per herdsman layer on
//! [`tower::ServiceBuilder`], as tower-http does for its middleware.

use tower::ServiceBuilder;
with_any_layer! {
    use tower_layer::Stack;
}

#[cfg(feature = "breaker")]
use crate::breaker::BreakerLayer;
#[cfg(feature = "cache")]
use crate::cache::CacheLayer;
#[cfg(feature = "dedup")]
use crate::dedup::DedupLayer;
#[cfg(feature = "limit")]
use crate::limit::LimitLayer;
#[cfg(feature = "registry")]
use crate::registry::RegistryLayer;
#[cfg(feature = "stats")]
use crate::stats::StatsLayer;

/// Adds herdsman's layers to [`tower::ServiceBuilder`].
///
/// Each method is `.layer(layer)` with the layer's type spelled out; the
/// order of the calls is the order of the stack, outermost first. The
/// recommended order is registry, stats, cache, dedup, breaker, limit (see
/// `DESIGN.md`), or all of them at once from configuration with a
/// `Coordinator` (the `coordinator` feature).
///
/// There is one method per layer whose feature is enabled.
///
/// The trait is sealed: it is implemented for `ServiceBuilder` only.
///
/// # Example
///
/// ```
/// use herdsman::{
///     breaker::BreakerLayer, builder::ServiceBuilderExt, cache::CacheLayer, class::AllDefault,
///     dedup::DedupLayer, key::Key, limit::{ClassLimits, LimitLayer}, registry::RegistryLayer,
///     stats::Stats,
/// };
/// use std::convert::Infallible;
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let key = |id: &u64| Some(Key::from(*id));
/// let cache = CacheLayer::new(key);
/// let stats = Stats::new();
/// let svc = ServiceBuilder::new()
///     .registry(RegistryLayer::new(key))
///     .stats(stats.layer(AllDefault))
///     .cache(cache.clone())
///     .dedup(DedupLayer::new(key))
///     .breaker(BreakerLayer::new())
///     .limit(LimitLayer::new(ClassLimits::new(16)))
///     .service(service_fn(|id: u64| async move { Ok::<_, Infallible>(id * 2) }));
///
/// assert_eq!(svc.clone().oneshot(21).await.unwrap(), 42); // a miss, stored
/// assert_eq!(svc.oneshot(21).await.unwrap(), 42); // a hit
/// assert_eq!(cache.handle().stats().hits, 1);
/// assert_eq!(stats.snapshot().endpoints["default"].requests, 2);
/// # }
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed<L> + Sized {
    /// Adds a [`DedupLayer`]: concurrent identical requests share one inner
    /// call. See [`crate::dedup`].
    #[cfg(feature = "dedup")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dedup")))]
    fn dedup<K, P, C>(
        self,
        layer: DedupLayer<K, P, C>,
    ) -> ServiceBuilder<Stack<DedupLayer<K, P, C>, L>>;

    /// Adds a [`CacheLayer`]: repeated requests are answered from memory.
    /// See [`crate::cache`].
    #[cfg(feature = "cache")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
    fn cache<K, V, P, C>(
        self,
        layer: CacheLayer<K, V, P, C>,
    ) -> ServiceBuilder<Stack<CacheLayer<K, V, P, C>, L>>;

    /// Adds a [`BreakerLayer`]: calls fail fast while their upstream is
    /// sick. See [`crate::breaker`].
    #[cfg(feature = "breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
    fn breaker<C, K>(
        self,
        layer: BreakerLayer<C, K>,
    ) -> ServiceBuilder<Stack<BreakerLayer<C, K>, L>>;

    /// Adds a [`LimitLayer`]: a concurrency limit and rate rules per
    /// endpoint class. See [`crate::limit`].
    #[cfg(feature = "limit")]
    #[cfg_attr(docsrs, doc(cfg(feature = "limit")))]
    fn limit<C, I, A>(
        self,
        layer: LimitLayer<C, I, A>,
    ) -> ServiceBuilder<Stack<LimitLayer<C, I, A>, L>>;

    /// Adds a [`StatsLayer`] (client requests; put
    /// [`Stats::upstream_layer`](crate::stats::Stats::upstream_layer) innermost
    /// for upstream calls). See [`crate::stats`].
    #[cfg(feature = "stats")]
    #[cfg_attr(docsrs, doc(cfg(feature = "stats")))]
    fn stats<C, F>(self, layer: StatsLayer<C, F>) -> ServiceBuilder<Stack<StatsLayer<C, F>, L>>;

    /// Adds a [`RegistryLayer`]: one shared poll loop per key, and one-shot
    /// calls answered from live loops. See [`crate::registry`].
    // The type is the layer's own, spelled out like the other methods'.
    #[allow(clippy::type_complexity)]
    #[cfg(feature = "registry")]
    #[cfg_attr(docsrs, doc(cfg(feature = "registry")))]
    fn registry<K, C, P, F, Q, V>(
        self,
        layer: RegistryLayer<K, C, P, F, Q, (), V>,
    ) -> ServiceBuilder<Stack<RegistryLayer<K, C, P, F, Q, (), V>, L>>;
}

impl<L> sealed::Sealed<L> for ServiceBuilder<L> {}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    #[cfg(feature = "dedup")]
    fn dedup<K, P, C>(
        self,
        layer: DedupLayer<K, P, C>,
    ) -> ServiceBuilder<Stack<DedupLayer<K, P, C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "cache")]
    fn cache<K, V, P, C>(
        self,
        layer: CacheLayer<K, V, P, C>,
    ) -> ServiceBuilder<Stack<CacheLayer<K, V, P, C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "breaker")]
    fn breaker<C, K>(
        self,
        layer: BreakerLayer<C, K>,
    ) -> ServiceBuilder<Stack<BreakerLayer<C, K>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "limit")]
    fn limit<C, I, A>(
        self,
        layer: LimitLayer<C, I, A>,
    ) -> ServiceBuilder<Stack<LimitLayer<C, I, A>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "stats")]
    fn stats<C, F>(self, layer: StatsLayer<C, F>) -> ServiceBuilder<Stack<StatsLayer<C, F>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "registry")]
    fn registry<K, C, P, F, Q, V>(
        self,
        layer: RegistryLayer<K, C, P, F, Q, (), V>,
    ) -> ServiceBuilder<Stack<RegistryLayer<K, C, P, F, Q, (), V>, L>> {
        self.layer(layer)
    }
}

mod sealed {
    #[allow(unreachable_pub)]
    pub trait Sealed<T> {}
}
