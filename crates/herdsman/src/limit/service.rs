use std::{
    cell::OnceCell,
    fmt,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use tower_service::Service;

use super::{
    future::{Held, ResponseFuture},
    layer::{ClassLimits, NoIdentity, Settings},
    state::Shared,
    LimitHandle, LimitLayer,
};
use crate::{
    class::{AllDefault, Class, Classify},
    error::{boxed, BoxError},
    event::Observers,
    key::KeyFn,
    switch::LayerName,
};

/// Limits the calls in flight per endpoint class, with an optional queue and
/// optional rate rules.
///
/// See the [module docs](crate::limit).
pub struct Limit<S, C = AllDefault, I = NoIdentity, A = NoIdentity> {
    inner: S,
    classify: C,
    identity: I,
    address: A,
    shared: Arc<Shared>,
}

impl<S> Limit<S> {
    /// Wraps `inner`, giving every request (all in the default class) `limits`,
    /// with state of its own.
    pub fn new(inner: S, limits: ClassLimits) -> Self {
        let settings = Settings {
            default: limits,
            classes: Vec::new(),
            observers: Observers::none(),
            rates: Default::default(),
        };
        Limit::from_parts(
            inner,
            AllDefault,
            (NoIdentity, NoIdentity),
            Arc::new(Shared::new(settings)),
        )
    }

    /// A [`LimitLayer`] giving every class `limits`.
    pub fn layer(limits: ClassLimits) -> LimitLayer {
        LimitLayer::new(limits)
    }
}

impl<S, C, I, A> Limit<S, C, I, A> {
    /// `who`: the caller identity and the client address [`KeyFn`]s.
    pub(crate) fn from_parts(inner: S, classify: C, who: (I, A), shared: Arc<Shared>) -> Self {
        let (identity, address) = who;
        Limit {
            inner,
            classify,
            identity,
            address,
            shared,
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

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// A handle to the state this service shares: its counters, per
    /// class.
    pub fn handle(&self) -> LimitHandle {
        LimitHandle::new(self.shared.clone())
    }
}

impl<S, C, I, A, Req> Service<Req> for Limit<S, C, I, A>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<Req>,
    I: KeyFn<Req>,
    A: KeyFn<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    /// The inner service's readiness: the class of a request, and so its
    /// permit, is known only in `call`.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    // Always inlined (its common case is a few lines; the rest is out of
    // line in `admit`): returned through memory, the future cost the
    // caller a store-forwarding stall, and the limit twice tower's time
    // (docs/BENCHMARKS.md, section 15).
    #[inline(always)]
    fn call(&mut self, req: Req) -> Self::Future {
        if !self.classify.is_on(&req, LayerName::Limit) {
            // Switched off: no rate rule, no share, no permit.
            return ResponseFuture::running(self.inner.call(req), Held::new(None, None));
        }
        let class = self.classify.classify(&req);
        if let Some(state) = self.shared.lookup(&class) {
            // The common case: a class with its own state, no rate rule or
            // share to check, a permit free.
            if state.is_plain() {
                if let Some(permit) = state.try_admit() {
                    // If `call` panics, the permit is dropped, and so given back.
                    return ResponseFuture::running(self.inner.call(req), Held::new(permit, None));
                }
            }
        }
        self.admit(req, &class)
    }
}

impl<S, C, I, A> Limit<S, C, I, A> {
    /// The rest of `call`: the rate rule, the shares, a permit, or the
    /// queue. Never inlined, so that `call`'s common case stays small.
    #[inline(never)]
    fn admit<Req>(&mut self, req: Req, class: &Class) -> ResponseFuture<S, Req>
    where
        S: Service<Req> + Clone,
        I: KeyFn<Req>,
        A: KeyFn<Req>,
    {
        let dynamic;
        let state = match self.shared.lookup(class) {
            Some(state) => state,
            None => {
                dynamic = self.shared.dynamic(class);
                &dynamic
            }
        };
        // Asked once, for the rate rule and the caller's share alike.
        let identity = OnceCell::new();
        let caller = || identity.get_or_init(|| self.identity.key(&req)).clone();
        if let Err(err) = state.check_rate(caller) {
            return ResponseFuture::rejected(boxed(err));
        }
        // Taken before the permit or the queue, so that a caller over its
        // share takes neither; given back with them (or at once on refusal).
        let slots = match state.take_slots(caller, || self.address.key(&req)) {
            Ok(slots) => slots,
            Err(err) => return ResponseFuture::rejected(boxed(err)),
        };
        if let Some(permit) = state.try_admit() {
            // If `call` panics, the permit is dropped, and so given back.
            return ResponseFuture::running(self.inner.call(req), Held::new(permit, slots));
        }
        let mut wait = match state.enqueue() {
            Ok(wait) => wait,
            Err(err) => return ResponseFuture::rejected(boxed(err)),
        };
        // Poll once now, so that the request takes its place in the queue in
        // the order of the calls, not of the first polls. Outside a runtime
        // the timer cannot be set: the first poll does it.
        if tokio::runtime::Handle::try_current().is_ok() {
            match wait.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(Ok(permit)) => {
                    let held = Held::new(Some(permit), slots);
                    return ResponseFuture::running(self.inner.call(req), held);
                }
                Poll::Ready(Err(err)) => return ResponseFuture::rejected(boxed(err)),
                Poll::Pending => {}
            }
        }
        // The service made ready goes with the request and is called once a
        // permit comes; a clone stays here for the next `poll_ready`.
        let ready = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, ready);
        ResponseFuture::waiting(wait, ready, req, slots)
    }
}

impl<S: Clone, C: Clone, I: Clone, A: Clone> Clone for Limit<S, C, I, A> {
    fn clone(&self) -> Self {
        Limit {
            inner: self.inner.clone(),
            classify: self.classify.clone(),
            identity: self.identity.clone(),
            address: self.address.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, C, I, A> fmt::Debug for Limit<S, C, I, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limit")
            .field("inner", &self.inner)
            .field("settings", self.shared.settings())
            .finish_non_exhaustive()
    }
}
