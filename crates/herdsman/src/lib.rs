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
//! [`Config`][config::Config], in the order of the stack, with run-time
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
//!
//! # Feature flags
//!
//! Each layer, the HTTP adapter, the configuration and the Coordinator sit
//! behind a cargo feature, so that an application compiles only the layers
//! it uses and their dependencies. The default is `coordinator`, which
//! enables everything: turn `default-features` off and name the features
//! you need to compile less.
//!
//! ```toml
//! [dependencies]
//! # single-flight only: 12 packages in herdsman's tree instead of 78
//! herdsman = { version = "0.1", default-features = false, features = ["dedup"] }
//! ```
//!
//! | Feature | What it enables | Optional dependencies it adds |
//! |---|---|---|
//! | `dedup` | [`dedup`]: single-flight | slab |
//! | `cache` | [`cache`]: the response cache, and [`clock`] | quick_cache, http, quanta |
//! | `breaker` | [`breaker`]: circuit breakers | arc-swap, metrics |
//! | `limit` | [`limit`]: concurrency limits and rate rules | arc-swap, governor |
//! | `stats` | [`stats`]: counts, percentiles, alerts, `metrics` export, and [`clock`] | arc-swap, futures-core, hdrhistogram, metrics, quanta, serde, tokio-stream |
//! | `registry` | [`registry`]: shared poll loops and subscriptions | futures-core, slab |
//! | `http` | [`http`]: keys, buffering, sharing and error responses for `http` requests and responses, plus the HTTP glue of each layer also enabled (`cache::HttpCachePolicy`, `RegistryLayer::http`, `registry::HttpFingerprint`, [`switch::Rollout`]) | bytes, http, http-body, httpdate |
//! | `config` | [`config`]: the stack's settings, from TOML files and `HERDSMAN_*` variables, and serde for the settings types; enables `http`, `breaker`, `cache`, `limit`, `registry` and `stats`, whose settings it holds | figment, humantime-serde, serde, toml |
//! | `coordinator` (default) | [`coordinator`]: the whole stack from configuration; enables every feature above | |
//!
//! Without any feature, the core is there: [`key`], [`class`], [`error`],
//! [`event`], [`failure`], [`share`], [`switch`] and [`ServiceBuilderExt`]
//! (one method per enabled layer).
//!
//! `fuzzing` is not public API: it exposes crate-private parsers to the
//! fuzz targets in `fuzz/`.
//!
// Built without some features, the links above to what they enable lead to
// the table of features instead (CI runs rustdoc with `-D warnings` on each
// feature alone). Other modules' docs do the same.
#![cfg_attr(not(feature = "breaker"), doc = "[`breaker`]: crate#feature-flags")]
#![cfg_attr(not(feature = "cache"), doc = "[`cache`]: crate#feature-flags")]
#![cfg_attr(not(feature = "dedup"), doc = "[`dedup`]: crate#feature-flags")]
#![cfg_attr(not(feature = "limit"), doc = "[`limit`]: crate#feature-flags")]
#![cfg_attr(not(feature = "stats"), doc = "[`stats`]: crate#feature-flags")]
#![cfg_attr(not(feature = "registry"), doc = "[`registry`]: crate#feature-flags")]
#![cfg_attr(not(feature = "http"), doc = "[`http`]: crate#feature-flags")]
#![cfg_attr(
    not(feature = "http"),
    doc = "[`switch::Rollout`]: crate#feature-flags"
)]
#![cfg_attr(
    not(any(feature = "cache", feature = "stats")),
    doc = "[`clock`]: crate#feature-flags"
)]
#![cfg_attr(not(feature = "config"), doc = "[`config`]: crate#feature-flags")]
#![cfg_attr(not(feature = "config"), doc = "[config::Config]: crate#feature-flags")]
#![cfg_attr(
    not(feature = "coordinator"),
    doc = "[`coordinator`]: crate#feature-flags"
)]
#![cfg_attr(
    not(feature = "coordinator"),
    doc = "[`Coordinator`]: crate#feature-flags"
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// Compiles the items inside only when at least one layer is built: what
/// the layers share but the core alone does not use. The one place that
/// lists the layer features.
macro_rules! with_any_layer {
    ($($item:item)*) => {
        $(
            #[cfg(any(
                feature = "breaker",
                feature = "cache",
                feature = "dedup",
                feature = "limit",
                feature = "registry",
                feature = "stats"
            ))]
            $item
        )*
    };
}

#[cfg(all(any(test, feature = "fuzzing"), feature = "coordinator"))]
#[doc(hidden)]
#[path = "fuzz/mod.rs"]
pub mod __fuzz;
pub mod backend;
#[cfg(feature = "breaker")]
#[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
pub mod breaker;
pub mod builder;
#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
pub mod cache;
pub mod class;
#[cfg(any(feature = "cache", feature = "stats"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "cache", feature = "stats"))))]
pub mod clock;
#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub mod config;
#[cfg(feature = "coordinator")]
#[cfg_attr(docsrs, doc(cfg(feature = "coordinator")))]
pub mod coordinator;
#[cfg(feature = "dedup")]
#[cfg_attr(docsrs, doc(cfg(feature = "dedup")))]
pub mod dedup;
pub mod error;
pub mod event;
pub mod failure;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
pub mod key;
#[cfg(feature = "limit")]
#[cfg_attr(docsrs, doc(cfg(feature = "limit")))]
pub mod limit;
#[cfg(feature = "registry")]
#[cfg_attr(docsrs, doc(cfg(feature = "registry")))]
pub mod registry;
pub mod share;
mod stable_hash;
#[cfg(feature = "stats")]
#[cfg_attr(docsrs, doc(cfg(feature = "stats")))]
pub mod stats;
pub mod switch;
mod sync;

#[cfg(feature = "coordinator")]
pub use crate::coordinator::{
    BuildError, Coordinated, Coordinator, CoordinatorBuilder, CoordinatorLayer,
};
#[cfg(feature = "dedup")]
pub use crate::dedup::{Dedup, DedupLayer};
#[cfg(feature = "registry")]
pub use crate::registry::{Registry, RegistryLayer};
pub use crate::{
    builder::ServiceBuilderExt,
    error::{BoxError, SharedError},
    key::{Key, KeyFn},
};

#[cfg(test)]
mod send_sync {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<crate::Key>();
        assert_send_sync::<crate::SharedError>();
        assert_send_sync::<crate::event::Observers>();
        assert_send_sync::<crate::event::Invalidation>();
    }

    #[cfg(feature = "http")]
    #[test]
    fn http_types_are_send_and_sync() {
        assert_send_sync::<crate::http::HttpKey>();
        assert_send_sync::<crate::http::BufferLayer>();
    }

    #[cfg(all(feature = "dedup", feature = "http"))]
    #[test]
    fn dedup_types_are_send_and_sync() {
        assert_send_sync::<crate::DedupLayer<crate::http::HttpKey, crate::http::HttpShare>>();
        assert_send_sync::<crate::dedup::Panicked>();
        assert_send_sync::<crate::dedup::DedupHandle>();
    }

    #[cfg(all(feature = "limit", feature = "http"))]
    #[test]
    fn limit_types_are_send_and_sync() {
        assert_send_sync::<crate::limit::LimitLayer<crate::http::PathClasses>>();
        assert_send_sync::<crate::limit::Limit<()>>();
        assert_send_sync::<crate::limit::ClassLimits>();
        assert_send_sync::<crate::limit::RateRule>();
        assert_send_sync::<crate::limit::LimitStats>();
        assert_send_sync::<crate::limit::Overloaded>();
        assert_send_sync::<crate::limit::RateLimited>();
        assert_send_sync::<crate::limit::TooManyInFlight>();
        assert_send_sync::<crate::limit::LimitHandle>();
    }

    #[cfg(feature = "stats")]
    #[test]
    fn stats_types_are_send_and_sync() {
        assert_send_sync::<crate::stats::Stats>();
        assert_send_sync::<crate::stats::StatsLayer<crate::class::AllDefault>>();
        assert_send_sync::<crate::stats::Snapshot>();
        assert_send_sync::<crate::stats::AlertEvents>();
    }

    #[cfg(all(feature = "registry", feature = "http"))]
    #[test]
    fn registry_types_are_send_and_sync() {
        assert_send_sync::<crate::RegistryLayer<crate::http::HttpKey>>();
        assert_send_sync::<crate::Registry<(), crate::http::HttpKey>>();
        assert_send_sync::<crate::registry::Subscription<String>>();
        assert_send_sync::<crate::registry::Update<String>>();
        assert_send_sync::<crate::registry::RegistryHandle>();
        assert_send_sync::<crate::registry::TooManySubscribers>();
    }

    #[cfg(feature = "cache")]
    #[test]
    fn cache_types_are_send_and_sync() {
        assert_send_sync::<crate::cache::CacheHandle<u64>>();
    }
}
