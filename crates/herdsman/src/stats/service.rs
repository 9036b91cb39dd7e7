use std::{
    fmt,
    sync::{atomic::Ordering::Relaxed, Arc},
    task::{Context, Poll},
};

use tower_service::Service;

use super::{
    future::{Guard, ResponseFuture, Side},
    handle::Stats,
    recorder::ClassRecorder,
    scope::{self, Answer, Scope},
};
use crate::{
    class::{Class, Classify},
    error::BoxError,
    failure::FailureClassifier,
    key::KeyFn,
    switch::LayerName,
};

/// The recorder of the last class seen: requests of one class in a row (the
/// common case) skip the class-map lookup.
#[derive(Clone, Default)]
struct LastClass(Option<Arc<ClassRecorder>>);

impl LastClass {
    #[inline]
    fn get(&mut self, stats: &Stats, class: &Class) -> Arc<ClassRecorder> {
        match &self.0 {
            Some(rec) if rec.class == *class => rec.clone(),
            _ => {
                let rec = stats.recorder(class);
                self.0 = Some(rec.clone());
                rec
            }
        }
    }
}

/// Records client requests: built by [`StatsLayer`](super::StatsLayer).
#[derive(Clone)]
pub struct StatsService<S, C, F> {
    inner: S,
    stats: Stats,
    classify: C,
    failures: F,
    last: LastClass,
}

impl<S, C, F> StatsService<S, C, F> {
    pub(crate) fn new(inner: S, stats: Stats, classify: C, failures: F) -> Self {
        StatsService {
            inner,
            stats,
            classify,
            failures,
            last: LastClass::default(),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The stats this service records into: its handle.
    pub fn handle(&self) -> Stats {
        self.stats.clone()
    }
}

impl<S, C, F, Req> Service<Req> for StatsService<S, C, F>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<Req>,
    F: FailureClassifier<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, F>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if !self.classify.is_on(&req, LayerName::Stats) {
            return ResponseFuture::passthrough(self.inner.call(req), self.failures.clone());
        }
        let class = self.classify.classify(&req);
        let rec = self.last.get(&self.stats, &class);
        rec.requests.fetch_add(1, Relaxed);
        let start = rec.clock.now();
        // A cache hit or a coalesced follower is decided in `call`: the
        // events the layers below report meanwhile are this request's.
        let scope = Scope::enter(Answer::Forwarded);
        let inner = self.inner.call(req);
        let guard = Guard::client(rec, start, scope.exit());
        ResponseFuture::new(inner, guard, self.failures.clone())
    }
}

impl<S: fmt::Debug, C, F> fmt::Debug for StatsService<S, C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatsService")
            .field("inner", &self.inner)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Records upstream calls: built by [`UpstreamLayer`](super::UpstreamLayer).
#[derive(Clone)]
pub struct UpstreamService<S, C, K, F> {
    inner: S,
    stats: Stats,
    classify: C,
    key: K,
    failures: F,
    last: LastClass,
}

impl<S, C, K, F> UpstreamService<S, C, K, F> {
    pub(crate) fn new(inner: S, stats: Stats, classify: C, key: K, failures: F) -> Self {
        UpstreamService {
            inner,
            stats,
            classify,
            key,
            failures,
            last: LastClass::default(),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, K, F, Req> Service<Req> for UpstreamService<S, C, K, F>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<Req>,
    K: KeyFn<Req>,
    F: FailureClassifier<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, F>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if !self.classify.is_on(&req, LayerName::Stats) {
            return ResponseFuture::passthrough(self.inner.call(req), self.failures.clone());
        }
        let class = self.classify.classify(&req);
        let rec = self.last.get(&self.stats, &class);
        rec.upstream_calls.fetch_add(1, Relaxed);
        rec.upstream_in_flight.fetch_add(1, Relaxed);
        // The client request this call is made for (if one is running on
        // this thread) reached the upstream itself.
        scope::mark(Answer::Upstream);
        let start = rec.clock.now();
        if self.stats.rules().upstream_calls_per_minute().is_some() {
            let key = self.key.key(&req);
            self.stats.upstream_call(&rec, key.as_ref(), start);
        }
        let guard = Guard::new(rec, start, Side::Upstream);
        ResponseFuture::new(self.inner.call(req), guard, self.failures.clone())
    }
}

impl<S: fmt::Debug, C, K, F> fmt::Debug for UpstreamService<S, C, K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamService")
            .field("inner", &self.inner)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}
