use std::{
    any::Any,
    fmt,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
};

use tokio::time::Instant;
use tower_service::Service;

use super::{
    budget::Who,
    callers::Callers,
    change::{Canonical, CloneRequest, Fingerprint, HashFingerprint},
    error::TooManySubscribers,
    future::ResponseFuture,
    handle::RegistryHandle,
    poll::Loop,
    state::{Core, Joining, Table},
    RegistryLayer, SubscribeOptions, Subscription,
};
use crate::{
    class::{AllDefault, Classify},
    error::BoxError,
    failure::{DefaultFailures, FailureClassifier},
    key::KeyFn,
    share::{CloneShare, Share},
    switch::LayerName,
};

/// One shared poll loop per key, however many subscribers; and, as a
/// `Service`, one-shot calls answered from a live loop's fresh value.
///
/// Clones share one registry. See the [module docs](crate::registry).
pub struct Registry<
    S,
    K,
    C = AllDefault,
    P = CloneShare,
    F = HashFingerprint,
    Q = CloneRequest,
    W = (),
    V = DefaultFailures,
> {
    pub(super) inner: S,
    pub(super) key: K,
    pub(super) classify: C,
    pub(super) share: P,
    pub(super) fingerprint: F,
    pub(super) canonical: Q,
    pub(super) callers: W,
    pub(super) failures: V,
    pub(super) core: Arc<Core>,
    /// This service's table of loops (of its first value type), found in
    /// the core once and shared by its clones.
    pub(super) table: Arc<OnceLock<Arc<dyn Any + Send + Sync>>>,
}

impl<S, K> Registry<S, K> {
    /// A [`RegistryLayer`] keyed by `key`.
    pub fn layer(key: K) -> RegistryLayer<K> {
        RegistryLayer::new(key)
    }
}

impl<S, K, C, P, F, Q, W, V> Registry<S, K, C, P, F, Q, W, V> {
    /// Subscribes to the key of `req` at the interval of its class;
    /// see [`subscribe_with`](Registry::subscribe_with).
    pub fn subscribe<Req>(&self, req: Req) -> Result<Subscription<P::Shared>, TooManySubscribers>
    where
        S: Service<Req> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
        S::Response: Send,
        Req: Send + 'static,
        K: KeyFn<Req>,
        C: Classify<Req>,
        P: Share<S::Response> + Clone + Send + Sync + 'static,
        F: Fingerprint<P::Shared> + Clone + Send + 'static,
        Q: Canonical<Req> + Clone + Send + 'static,
        W: Callers<Req>,
        V: FailureClassifier<S::Response> + Clone + Send + 'static,
    {
        self.subscribe_with(req, SubscribeOptions::new())
    }

    /// Subscribes to the key of `req`.
    ///
    /// The key is that of the canonical form of `req` (its
    /// [`Canonical`]), so what the canonical form leaves out never splits a
    /// key. The first subscriber of a key starts its poll loop (a task on
    /// the current tokio runtime: call this within one), which polls with
    /// that canonical request. Later subscribers join it: they get its
    /// current value at once, and a value older than the interval they ask
    /// for triggers a poll; one arriving while the first poll is in flight
    /// gets its result. A request without a key gets a loop of its own.
    ///
    /// Fails, holding nothing, when a limit or a budget is reached (a new
    /// key must fit the budgets of its class, of its caller and of its
    /// client address, and the memory budget), or when the key is longer
    /// than the registry accepts: such a key gets no loop at all.
    pub fn subscribe_with<Req>(
        &self,
        req: Req,
        options: SubscribeOptions,
    ) -> Result<Subscription<P::Shared>, TooManySubscribers>
    where
        S: Service<Req> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
        S::Response: Send,
        Req: Send + 'static,
        K: KeyFn<Req>,
        C: Classify<Req>,
        P: Share<S::Response> + Clone + Send + Sync + 'static,
        F: Fingerprint<P::Shared> + Clone + Send + 'static,
        Q: Canonical<Req> + Clone + Send + 'static,
        W: Callers<Req>,
        V: FailureClassifier<S::Response> + Clone + Send + 'static,
    {
        // The caller and its address are read from the request as sent:
        // the canonical form keeps neither.
        let who = Who::new(self.callers.caller(&req), self.callers.address(&req));
        // Keyed by what the loop will send: nothing the canonical request
        // leaves out (a caller's validators, its transport headers) can
        // split the key.
        let canonical = self.canonical.canonical(&req);
        let template = self.canonical.held_bytes(&canonical);
        let joining = Joining {
            key: self.key.key(&canonical),
            asked: options.interval(),
            who,
            template,
        };
        let table = self.table::<P::Shared>();
        let joined = self
            .core
            .join(&table, joining, || self.classify.classify(&req))?;
        let (hook, asked) = (joined.hook, joined.interval);
        if !joined.started {
            let meta = &hook.meta;
            if meta.last_fetch().is_some() && !meta.fresh(Instant::now(), asked) {
                meta.request_refresh();
            }
            return Ok(Subscription::new(
                self.core.clone(),
                table,
                hook,
                asked,
                who,
            ));
        }
        // Made first: if spawning panics (no runtime), dropping it undoes
        // the join.
        let subscription =
            Subscription::new(self.core.clone(), table.clone(), hook.clone(), asked, who);
        // The template's inline part is counted with the loop's task.
        hook.account
            .charge(template.saturating_sub(std::mem::size_of::<Req>()));
        Loop {
            core: self.core.clone(),
            table,
            hook,
            svc: self.inner.clone(),
            template: canonical,
            share: self.share.clone(),
            fingerprint: self.fingerprint.clone(),
            canonical: self.canonical.clone(),
            failures: self.failures.clone(),
        }
        .spawn();
        Ok(subscription)
    }

    /// This service's table of loops of value type `T`. A service whose
    /// requests of more than one type give values of more than one type
    /// keeps the first type's table here and looks up the others' in the
    /// core on each call.
    #[inline]
    fn table<T: Send + Sync + 'static>(&self) -> Arc<Table<T>> {
        if let Some(table) = self.table.get() {
            if let Ok(table) = table.clone().downcast() {
                return table;
            }
            return self.core.table();
        }
        let table = self.core.table::<T>();
        let _ = self.table.set(table.clone());
        table
    }

    /// A handle on this registry, for operators and the Stats layer's
    /// memory alert (it is a [`MemorySource`](crate::event::MemorySource)).
    pub fn handle(&self) -> RegistryHandle {
        RegistryHandle {
            core: self.core.clone(),
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
}

impl<S, K, C, P, F, Q, W, V, Req> Service<Req> for Registry<S, K, C, P, F, Q, W, V>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: KeyFn<Req>,
    C: Classify<Req>,
    P: Share<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // Switched off, one-shot calls go through (subscriptions do not
        // read the switch).
        if !self.classify.is_on(&req, LayerName::Registry) {
            return ResponseFuture::inner(self.inner.call(req));
        }
        // A key over the maximum length is never polled: it passes through.
        let fresh = self
            .key
            .key(&req)
            .filter(|key| key.len() <= self.core.config.max_key_len)
            .and_then(|key| self.table::<P::Shared>().hook(&key))
            .filter(|hook| hook.meta.fresh(Instant::now(), hook.meta.interval()))
            .and_then(|hook| Some((hook.cell.current_value()?, hook)));
        match fresh {
            Some((value, hook)) => {
                self.core.shared_answer(&hook.meta);
                ResponseFuture::ready(self.share.unshare_owned(value))
            }
            None => ResponseFuture::inner(self.inner.call(req)),
        }
    }
}

impl<S: Clone, K: Clone, C: Clone, P: Clone, F: Clone, Q: Clone, W: Clone, V: Clone> Clone
    for Registry<S, K, C, P, F, Q, W, V>
{
    fn clone(&self) -> Self {
        Registry {
            inner: self.inner.clone(),
            key: self.key.clone(),
            classify: self.classify.clone(),
            share: self.share.clone(),
            fingerprint: self.fingerprint.clone(),
            canonical: self.canonical.clone(),
            callers: self.callers.clone(),
            failures: self.failures.clone(),
            core: self.core.clone(),
            table: self.table.clone(),
        }
    }
}

impl<S: fmt::Debug, K, C, P, F, Q, W, V> fmt::Debug for Registry<S, K, C, P, F, Q, W, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("inner", &self.inner)
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}
