use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::{sync::broadcast, task::JoinHandle, time::Instant};
use tower_service::Service;

use super::{
    change::{Canonical, CloneRequest, Fingerprint, HashFingerprint},
    error::TooManySubscribers,
    future::ResponseFuture,
    handle::RegistryHandle,
    poll::Loop,
    state::{Core, Joined},
    HookInfo, RegistryLayer, RegistryStats, SubscribeOptions, Subscription,
};
use crate::{
    class::{AllDefault, Classify},
    error::BoxError,
    event::Invalidation,
    key::{Key, KeyFn},
    share::{CloneShare, Share},
};

/// One shared poll loop per key, however many subscribers; and, as a
/// `Service`, one-shot calls answered from a live loop's fresh value.
///
/// Clones share one registry. See the [module docs](crate::registry).
pub struct Registry<S, K, C = AllDefault, P = CloneShare, F = HashFingerprint, Q = CloneRequest> {
    pub(super) inner: S,
    pub(super) key: K,
    pub(super) classify: C,
    pub(super) share: P,
    pub(super) fingerprint: F,
    pub(super) canonical: Q,
    pub(super) core: Arc<Core>,
}

impl<S, K> Registry<S, K> {
    /// A [`RegistryLayer`] keyed by `key`.
    pub fn layer(key: K) -> RegistryLayer<K> {
        RegistryLayer::new(key)
    }
}

impl<S, K, C, P, F, Q> Registry<S, K, C, P, F, Q> {
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
    /// Fails, holding nothing, when a limit is reached.
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
    {
        // Keyed by what the loop will send: nothing the canonical request
        // leaves out (a caller's validators, its transport headers) can
        // split the key.
        let canonical = self.canonical.canonical(&req);
        let key = self.key.key(&canonical);
        let (joined, asked) = self.core.join::<P::Shared>(
            key,
            options.interval(),
            || self.classify.classify(&req),
            || {
                let share = self.share.clone();
                Arc::new(move |value| Share::<S::Response>::held_bytes(&share, value))
            },
        )?;
        match joined {
            Joined::Existing(hook) => {
                let meta = &hook.meta;
                if meta.last_fetch().is_some() && !meta.fresh(Instant::now(), asked) {
                    meta.request_refresh();
                }
                Ok(Subscription::new(self.core.clone(), hook, asked))
            }
            Joined::Started(hook) => {
                // Made first: if spawning panics (no runtime), dropping it
                // undoes the join.
                let subscription = Subscription::new(self.core.clone(), hook.clone(), asked);
                Loop {
                    core: self.core.clone(),
                    hook,
                    svc: self.inner.clone(),
                    template: canonical,
                    share: self.share.clone(),
                    fingerprint: self.fingerprint.clone(),
                    canonical: self.canonical.clone(),
                }
                .spawn();
                Ok(subscription)
            }
        }
    }

    /// See [`RegistryHandle::refresh`].
    pub fn refresh(&self, key: &Key) -> bool {
        self.core.refresh(key)
    }

    /// See [`RegistryHandle::invalidate`].
    pub fn invalidate(&self, what: &Invalidation) -> usize {
        self.core.invalidate(what)
    }

    /// See [`RegistryHandle::follow`].
    pub fn follow(&self, invalidations: broadcast::Receiver<Invalidation>) -> JoinHandle<()> {
        self.handle().follow(invalidations)
    }

    /// See [`RegistryHandle::hooks`].
    pub fn hooks(&self) -> Vec<HookInfo> {
        self.core.hooks()
    }

    /// See [`RegistryHandle::stats`].
    pub fn stats(&self) -> RegistryStats {
        self.core.stats()
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

impl<S, K, C, P, F, Q, Req> Service<Req> for Registry<S, K, C, P, F, Q>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: KeyFn<Req>,
    P: Share<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let fresh = self
            .key
            .key(&req)
            .and_then(|key| self.core.hook::<P::Shared>(&key))
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

impl<S: Clone, K: Clone, C: Clone, P: Clone, F: Clone, Q: Clone> Clone
    for Registry<S, K, C, P, F, Q>
{
    fn clone(&self) -> Self {
        Registry {
            inner: self.inner.clone(),
            key: self.key.clone(),
            classify: self.classify.clone(),
            share: self.share.clone(),
            fingerprint: self.fingerprint.clone(),
            canonical: self.canonical.clone(),
            core: self.core.clone(),
        }
    }
}

impl<S: fmt::Debug, K, C, P, F, Q> fmt::Debug for Registry<S, K, C, P, F, Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("inner", &self.inner)
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}
