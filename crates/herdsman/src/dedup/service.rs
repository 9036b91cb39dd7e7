use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tower_service::Service;

use super::{
    future::ResponseFuture,
    layer::Windows,
    state::{Join, Outcome},
    DedupHandle, DedupLayer,
};
use crate::{
    class::{AllDefault, Classify},
    error::BoxError,
    event::{Event, Observers},
    key::{KeyFn, DEFAULT_MAX_KEY_LEN},
    share::{CloneShare, Share},
    switch::LayerName,
};

/// Coalesces concurrent identical requests into one inner call.
///
/// See the [module docs](crate::dedup).
pub struct Dedup<S, K, P = CloneShare, C = AllDefault> {
    inner: S,
    key: K,
    share: P,
    classify: C,
    observers: Observers,
    windows: Arc<Windows>,
}

impl<S, K> Dedup<S, K> {
    /// Wraps `inner`, keyed by `key`, with its own in-flight map.
    pub fn new(inner: S, key: K) -> Self {
        let windows = Windows::new(Duration::ZERO, &[], DEFAULT_MAX_KEY_LEN);
        Dedup::from_parts(inner, key, CloneShare, Arc::new(windows))
    }

    /// A [`DedupLayer`] keyed by `key`.
    pub fn layer(key: K) -> DedupLayer<K> {
        DedupLayer::new(key)
    }
}

impl<S, K, P> Dedup<S, K, P> {
    pub(super) fn from_parts(inner: S, key: K, share: P, windows: Arc<Windows>) -> Self {
        Dedup {
            inner,
            key,
            share,
            classify: AllDefault,
            observers: Observers::none(),
            windows,
        }
    }

    pub(super) fn with_events<C>(self, classify: C, observers: Observers) -> Dedup<S, K, P, C> {
        Dedup {
            inner: self.inner,
            key: self.key,
            share: self.share,
            classify,
            observers,
            windows: self.windows,
        }
    }
}

impl<S, K, P, C> Dedup<S, K, P, C> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// A handle to the in-flight maps this service shares.
    pub fn handle(&self) -> DedupHandle {
        DedupHandle::new(self.windows.clone())
    }
}

impl<S, K, P, C, Req> Service<Req> for Dedup<S, K, P, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    K: KeyFn<Req>,
    P: Share<S::Response> + Clone,
    C: Classify<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if !self.classify.is_on(&req, LayerName::Dedup) {
            return ResponseFuture::passthrough(self.inner.call(req), self.share.clone());
        }
        let state = self.windows.of(&req, &self.classify);
        let key = match self.key.key(&req) {
            Some(key) if key.len() <= state.max_key_len() => key,
            _ => return ResponseFuture::passthrough(self.inner.call(req), self.share.clone()),
        };
        match state.join::<S::Future, P::Shared>(key) {
            Join::Lead(mut driver) => {
                // If `call` panics, dropping the driver tells the followers.
                driver.start(Box::pin(self.inner.call(req)));
                ResponseFuture::leading(driver, self.share.clone())
            }
            Join::Follow(follower) => {
                self.observe(&req, Event::Coalesced);
                // Kept in case the response cannot be shared and this caller
                // must make its own call.
                let retry = (self.inner.clone(), req);
                ResponseFuture::following(follower, retry, self.share.clone())
            }
            Join::Reuse(outcome) => {
                self.observe(&req, Event::Reused);
                let result = match &*outcome {
                    Outcome::Ok(shared) => Ok(self.share.unshare(shared)),
                    Outcome::Err(err) => Err(Box::new(err.clone()) as BoxError),
                    Outcome::NotShared => unreachable!("only successes are kept for reuse"),
                };
                ResponseFuture::ready(result, self.share.clone())
            }
            Join::Bypass => ResponseFuture::passthrough(self.inner.call(req), self.share.clone()),
        }
    }
}

impl<S, K, P, C> Dedup<S, K, P, C> {
    /// Reports `event` for `req`'s class; the request is classified only
    /// when an observer is set.
    #[inline]
    fn observe<Req>(&self, req: &Req, event: Event)
    where
        C: Classify<Req>,
    {
        if self.observers.is_set() {
            self.observers.observe(&self.classify.classify(req), event);
        }
    }
}

impl<S: Clone, K: Clone, P: Clone, C: Clone> Clone for Dedup<S, K, P, C> {
    fn clone(&self) -> Self {
        Dedup {
            inner: self.inner.clone(),
            key: self.key.clone(),
            share: self.share.clone(),
            classify: self.classify.clone(),
            observers: self.observers.clone(),
            windows: self.windows.clone(),
        }
    }
}

impl<S: fmt::Debug, K, P, C> fmt::Debug for Dedup<S, K, P, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dedup")
            .field("inner", &self.inner)
            .field("maps", &self.windows.all())
            .field("observers", &self.observers)
            .finish_non_exhaustive()
    }
}
