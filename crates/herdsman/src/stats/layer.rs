use std::fmt;

use tower_layer::Layer;

use super::{
    handle::Stats,
    service::{StatsService, UpstreamService},
};
use crate::failure::DefaultFailures;

/// Records client requests (outermost): see [`Stats::layer`].
#[derive(Clone)]
pub struct StatsLayer<C, F = DefaultFailures> {
    stats: Stats,
    classify: C,
    failures: F,
}

impl<C> StatsLayer<C> {
    /// Records into `stats`, per class from `classify`.
    pub fn new(stats: Stats, classify: C) -> Self {
        StatsLayer {
            stats,
            classify,
            failures: DefaultFailures,
        }
    }
}

impl<C, F> StatsLayer<C, F> {
    /// Which responses count as errors (default: every `Err`, no response;
    /// use [`ServerErrors`][crate::http::ServerErrors] for HTTP 5xx).
    ///
    #[cfg_attr(
        not(feature = "http"),
        doc = "[crate::http::ServerErrors]: crate#feature-flags"
    )]
    pub fn with_failure_classifier<F2>(self, failures: F2) -> StatsLayer<C, F2> {
        StatsLayer {
            stats: self.stats,
            classify: self.classify,
            failures,
        }
    }

    /// The stats this layer records into: its handle.
    pub fn handle(&self) -> Stats {
        self.stats.clone()
    }
}

impl<S, C: Clone, F: Clone> Layer<S> for StatsLayer<C, F> {
    type Service = StatsService<S, C, F>;

    fn layer(&self, inner: S) -> Self::Service {
        self.stats.start_monitor();
        StatsService::new(
            inner,
            self.stats.clone(),
            self.classify.clone(),
            self.failures.clone(),
        )
    }
}

impl<C, F> fmt::Debug for StatsLayer<C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatsLayer")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Records upstream calls (innermost): see [`Stats::upstream_layer`].
#[derive(Clone)]
pub struct UpstreamLayer<C, K, F = DefaultFailures> {
    stats: Stats,
    classify: C,
    key: K,
    failures: F,
}

impl<C, K> UpstreamLayer<C, K> {
    /// Records into `stats`, per class from `classify` and per key from
    /// `key`.
    pub fn new(stats: Stats, classify: C, key: K) -> Self {
        UpstreamLayer {
            stats,
            classify,
            key,
            failures: DefaultFailures,
        }
    }
}

impl<C, K, F> UpstreamLayer<C, K, F> {
    /// Which upstream responses count as failures (default: every `Err`).
    pub fn with_failure_classifier<F2>(self, failures: F2) -> UpstreamLayer<C, K, F2> {
        UpstreamLayer {
            stats: self.stats,
            classify: self.classify,
            key: self.key,
            failures,
        }
    }
}

impl<S, C: Clone, K: Clone, F: Clone> Layer<S> for UpstreamLayer<C, K, F> {
    type Service = UpstreamService<S, C, K, F>;

    fn layer(&self, inner: S) -> Self::Service {
        self.stats.start_monitor();
        UpstreamService::new(
            inner,
            self.stats.clone(),
            self.classify.clone(),
            self.key.clone(),
            self.failures.clone(),
        )
    }
}

impl<C, K, F> fmt::Debug for UpstreamLayer<C, K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamLayer")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}
