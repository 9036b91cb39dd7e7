//! herdsman: Tower middleware that turns N identical callers into one
//! upstream call.
//!
//! Each layer is its own [`tower_layer::Layer`] and works alone:
//!
//! - [`breaker`]: per-class circuit breakers that fail fast while an upstream
//!   is sick and probe it when it may have recovered;
//! - [`cache`]: answers repeated requests from a bounded store, with
//!   stale-while-revalidate and stale-if-error;
//! - [`dedup`]: single-flight; concurrent identical requests share one call;
//! - [`limit`]: a concurrency limit per endpoint class, with a queue, and
//!   keyed rate rules;
//! - [`stats`]: per-class counts, latency percentiles, sliding rates and
//!   alerts, exported through `metrics` and as a serializable snapshot;
//! - [`registry`]: one shared poll loop per endpoint key, however many
//!   subscribers.
//!
//! [`Coordinator`] builds all of them at once from a
//! [`Config`](config::Config), in the order of the stack, with run-time
//! [`switch`]es and a gradual rollout (see [`coordinator`]).
//!
//! [`ServiceBuilderExt`] adds them to `tower::ServiceBuilder` by name, and
//! [`event`] is how they report what they do (to the Stats layer, or to an
//! observer of your own).
//!
//! Shared concepts live here once: [`key`] (what makes two requests the
//! same), [`share`] (how one response reaches many callers), [`http`] (keys,
//! buffering and sharing for `http::Request`/`http::Response`), [`error`], and
//! [`event`] (the observer interface the layers report through).
//!
//! See `docs/ARCHITECTURE.md` in the repository for the whole stack.

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
#[path = "fuzz/mod.rs"]
pub mod __fuzz;
pub mod backend;
pub mod breaker;
pub mod builder;
pub mod cache;
pub mod class;
pub mod config;
pub mod coordinator;
pub mod dedup;
pub mod error;
pub mod event;
pub mod failure;
pub mod http;
pub mod key;
pub mod limit;
pub mod registry;
pub mod share;
mod stable_hash;
pub mod stats;
pub mod switch;
mod sync;

pub use crate::{
    builder::ServiceBuilderExt,
    coordinator::{BuildError, Coordinated, Coordinator, CoordinatorBuilder, CoordinatorLayer},
    dedup::{Dedup, DedupLayer},
    error::{BoxError, SharedError},
    key::{Key, KeyFn},
    registry::{Registry, RegistryLayer},
};

#[cfg(test)]
mod send_sync {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<crate::Key>();
        assert_send_sync::<crate::SharedError>();
        assert_send_sync::<crate::DedupLayer<crate::http::HttpKey, crate::http::HttpShare>>();
        assert_send_sync::<crate::http::HttpKey>();
        assert_send_sync::<crate::http::BufferLayer>();
        assert_send_sync::<crate::dedup::Panicked>();
        assert_send_sync::<crate::limit::LimitLayer<crate::http::PathClasses>>();
        assert_send_sync::<crate::limit::Limit<()>>();
        assert_send_sync::<crate::limit::ClassLimits>();
        assert_send_sync::<crate::limit::RateRule>();
        assert_send_sync::<crate::limit::LimitStats>();
        assert_send_sync::<crate::limit::Overloaded>();
        assert_send_sync::<crate::limit::RateLimited>();
        assert_send_sync::<crate::limit::TooManyInFlight>();
        assert_send_sync::<crate::stats::Stats>();
        assert_send_sync::<crate::stats::StatsLayer<crate::class::AllDefault>>();
        assert_send_sync::<crate::stats::Snapshot>();
        assert_send_sync::<crate::stats::AlertEvents>();
        assert_send_sync::<crate::event::Observers>();
        assert_send_sync::<crate::RegistryLayer<crate::http::HttpKey>>();
        assert_send_sync::<crate::Registry<(), crate::http::HttpKey>>();
        assert_send_sync::<crate::registry::Subscription<String>>();
        assert_send_sync::<crate::registry::Update<String>>();
        assert_send_sync::<crate::registry::RegistryHandle>();
        assert_send_sync::<crate::registry::TooManySubscribers>();
        assert_send_sync::<crate::limit::LimitHandle>();
        assert_send_sync::<crate::dedup::DedupHandle>();
        assert_send_sync::<crate::cache::CacheHandle<u64>>();
        assert_send_sync::<crate::event::Invalidation>();
    }
}
