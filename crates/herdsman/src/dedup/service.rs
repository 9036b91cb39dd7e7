use std::{
    any::Any,
    fmt, mem,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Duration,
};

use tower_service::Service;

use super::{
    future::ResponseFuture,
    layer::Windows,
    state::{Flights, Join, Outcome},
    DedupHandle, DedupLayer,
};
use crate::{
    backend::{Answer, FlightBackend, Lead, LocalFlights},
    class::{AllDefault, Classify},
    error::BoxError,
    event::{Event, Observers},
    key::{Key, KeyFn, DEFAULT_MAX_KEY_LEN},
    share::{CloneShare, Share},
    switch::LayerName,
};

/// Coalesces concurrent identical requests into one inner call.
///
/// See the [module docs](crate::dedup).
pub struct Dedup<S, K, P = CloneShare, C = AllDefault, B = LocalFlights> {
    inner: S,
    key: K,
    share: P,
    classify: C,
    observers: Observers,
    backend: B,
    windows: Arc<Windows>,
    /// This service's map of flights in each window's state, typed by its
    /// inner future and value (an `Arc<Flights<F, V>>`, boxed so that a
    /// call downcasts it by reference, without touching its count): looked
    /// up on its first call there and shared by its clones.
    flights: Arc<[OnceLock<Box<dyn Any + Send + Sync>>]>,
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
        let flights = windows.all().iter().map(|_| OnceLock::new()).collect();
        Dedup {
            inner,
            key,
            share,
            classify: AllDefault,
            observers: Observers::none(),
            backend: LocalFlights,
            windows,
            flights,
        }
    }

    pub(super) fn with_events<C, B>(
        self,
        classify: C,
        observers: Observers,
        backend: B,
    ) -> Dedup<S, K, P, C, B> {
        Dedup {
            inner: self.inner,
            key: self.key,
            share: self.share,
            classify,
            observers,
            backend,
            windows: self.windows,
            flights: self.flights,
        }
    }
}

impl<S, K, P, C, B> Dedup<S, K, P, C, B> {
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

impl<S, K, P, C, B, Req> Service<Req> for Dedup<S, K, P, C, B>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    K: KeyFn<Req>,
    P: Share<S::Response> + Clone,
    C: Classify<Req>,
    B: FlightBackend<P::Shared>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, P, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let (share, backend) = (self.share.clone(), self.backend.clone());
        if !self.classify.is_on(&req, LayerName::Dedup) {
            return ResponseFuture::passthrough(self.inner.call(req), share, backend);
        }
        let window = self.windows.of(&req, &self.classify);
        let key = match self.key.key(&req) {
            Some(key) if key.len() <= self.windows.all()[window].max_key_len() => key,
            _ => return ResponseFuture::passthrough(self.inner.call(req), share, backend),
        };
        match self.join::<S::Future, P::Shared>(window, key) {
            Join::Lead(mut driver) => match self.backend.lead(driver.key()) {
                Answer::Now(Lead::Call) => {
                    // If `call` panics, dropping the driver tells the followers.
                    driver.start(Box::pin(self.inner.call(req)));
                    ResponseFuture::leading(driver, share, backend)
                }
                Answer::Now(Lead::Answered(value)) => {
                    let mine = share.unshare(&value);
                    driver.finish(Outcome::Ok(value), |kept| share.held_bytes(kept));
                    ResponseFuture::ready(Ok(mine), share, backend)
                }
                Answer::Later(claim) => {
                    // The ready service goes with the call; this one is
                    // made ready again by the next `poll_ready`.
                    let clone = self.inner.clone();
                    let svc = mem::replace(&mut self.inner, clone);
                    ResponseFuture::claiming(driver, claim, (svc, req), share, backend)
                }
            },
            Join::Follow(follower) => {
                self.observe(&req, Event::Coalesced);
                // Kept in case the response cannot be shared and this caller
                // must make its own call.
                let retry = (self.inner.clone(), req);
                ResponseFuture::following(follower, retry, share, backend)
            }
            Join::Reuse(outcome) => {
                self.observe(&req, Event::Reused);
                let result = match &*outcome {
                    Outcome::Ok(shared) => Ok(share.unshare(shared)),
                    Outcome::Err(err) => Err(Box::new(err.clone()) as BoxError),
                    Outcome::NotShared => unreachable!("only successes are kept for reuse"),
                };
                ResponseFuture::ready(result, share, backend)
            }
        }
    }
}

impl<S, K, P, C, B> Dedup<S, K, P, C, B> {
    /// Joins the flight for `key` in this service's map of flights of inner
    /// future type `F` and value type `V` in the state of reuse window
    /// `window`. A service called with requests of more than one type keeps
    /// the first type's map here and looks up the others' in the layer's
    /// state on each call.
    #[inline]
    fn join<F, V>(&self, window: usize, key: Key) -> Join<F, V>
    where
        F: Send + 'static,
        V: Send + Sync + 'static,
    {
        let (state, cached) = (&self.windows.all()[window], &self.flights[window]);
        if let Some(map) = cached.get() {
            // Borrowed: the map's count is touched only by a leader or a
            // follower that keeps it.
            return match (**map).downcast_ref::<Arc<Flights<F, V>>>() {
                Some(map) => map.join(key),
                None => state.flights::<F, V>().join(key),
            };
        }
        let map = state.flights::<F, V>();
        let _ = cached.set(Box::new(map.clone()));
        map.join(key)
    }

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

impl<S: Clone, K: Clone, P: Clone, C: Clone, B: Clone> Clone for Dedup<S, K, P, C, B> {
    fn clone(&self) -> Self {
        Dedup {
            inner: self.inner.clone(),
            key: self.key.clone(),
            share: self.share.clone(),
            classify: self.classify.clone(),
            observers: self.observers.clone(),
            backend: self.backend.clone(),
            windows: self.windows.clone(),
            flights: self.flights.clone(),
        }
    }
}

impl<S: fmt::Debug, K, P, C, B> fmt::Debug for Dedup<S, K, P, C, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dedup")
            .field("inner", &self.inner)
            .field("maps", &self.windows.all())
            .field("observers", &self.observers)
            .finish_non_exhaustive()
    }
}
