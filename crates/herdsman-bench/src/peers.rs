//! The implementations compared, behind one boxed service type.

use std::convert::Infallible;

use herdsman::{dedup::DedupLayer, key::Key, BoxError};
use tower::{util::BoxCloneService, Layer, Service, ServiceExt};
use tower_resilience::coalesce::CoalesceLayer;

use crate::singleflight::Singleflight;

/// A type-erased service, so the scenarios run every peer through one code
/// path. The box costs a few nanoseconds per request: fine next to a 50 ms
/// inner call, not for the per-request overhead benchmark, which uses the
/// concrete types.
pub type BenchService = BoxCloneService<u64, u64, BoxError>;

/// One implementation under comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// The inner service alone, no coalescing: the reference.
    Bare,
    /// `herdsman::dedup`.
    Herdsman,
    /// `tower-resilience` 0.13, `coalesce` module.
    TowerResilience,
    /// `async_singleflight` 0.6, behind the [`Singleflight`] adapter.
    AsyncSingleflight,
}

impl Peer {
    /// The peers that coalesce.
    pub const COALESCING: [Peer; 3] = [
        Peer::Herdsman,
        Peer::TowerResilience,
        Peer::AsyncSingleflight,
    ];

    /// The name printed in result tables.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Bare => "bare inner service",
            Peer::Herdsman => "herdsman dedup",
            Peer::TowerResilience => "tower-resilience coalesce",
            Peer::AsyncSingleflight => "async_singleflight",
        }
    }

    /// Wraps `inner` in this peer's coalescing, keyed by the request itself.
    ///
    /// Each call builds fresh coalescing state: clones of the returned service
    /// share it, other calls do not.
    pub fn wrap<S>(self, inner: S) -> BenchService
    where
        S: Service<u64, Response = u64, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
    {
        match self {
            Peer::Bare => BoxCloneService::new(inner.map_err(BoxError::from)),
            Peer::Herdsman => BoxCloneService::new(DedupLayer::new(key_of).layer(inner)),
            Peer::TowerResilience => BoxCloneService::new(
                CoalesceLayer::new(|req: &u64| *req)
                    .layer(inner)
                    .map_err(BoxError::from),
            ),
            Peer::AsyncSingleflight => BoxCloneService::new(Singleflight::new(inner)),
        }
    }
}

/// The key function used for herdsman in every benchmark.
pub fn key_of(req: &u64) -> Option<Key> {
    Some(Key::from(*req))
}
