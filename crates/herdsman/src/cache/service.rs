use std::{
    fmt,
    future::poll_fn,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tower_service::Service;

use super::{
    future::{store_response, ResponseFuture},
    layer::Settings,
    policy::{CachePolicy, Directive, Outcome},
    store::{Count, Found, Store},
};
use crate::{
    class::Classify,
    error::BoxError,
    event::{Event, Observers},
    key::{Key, KeyFn},
};

/// Answers requests from a bounded in-memory store; see the
/// [module docs](crate::cache).
pub struct Cache<S, K, V, P, C> {
    pub(super) inner: S,
    pub(super) key: K,
    pub(super) policy: P,
    pub(super) classify: C,
    pub(super) settings: Arc<Settings>,
    pub(super) observers: Observers,
    pub(super) store: Arc<Store<V>>,
}

impl<S, K, V, P, C> Cache<S, K, V, P, C> {
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

impl<S, K, V, P, C, Req> Service<Req> for Cache<S, K, V, P, C>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    Req: Send + 'static,
    K: KeyFn<Req>,
    C: Classify<Req>,
    P: CachePolicy<Req, S::Response, Shared = V> + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, Req, P, V>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if let Some(path) = self.policy.invalidates(&req) {
            let store = self.store.clone();
            // Invalidating requests are not looked up: no hit, no miss.
            return ResponseFuture::invalidating(
                self.inner.call(req),
                path,
                store,
                self.policy.clone(),
            );
        }
        let key = match self.key.key(&req) {
            Some(key) if key.len() <= self.settings.max_key_len => key,
            _ => return ResponseFuture::passthrough(self.inner.call(req)),
        };
        let directive = self.policy.directive(&req);
        let found = match directive {
            Directive::Bypass => {
                self.store.count(Count::Bypassed);
                return ResponseFuture::passthrough(self.inner.call(req));
            }
            // Never answered from the cache; a stored copy may still stand in
            // for a failure.
            Directive::Refresh => match self.store.lookup(&key) {
                Found::Fresh { value, age } => Found::Stale {
                    value,
                    age,
                    staleness: Duration::ZERO,
                    revalidate: false,
                    if_error: true,
                },
                Found::Stale {
                    value,
                    age,
                    staleness,
                    if_error,
                    ..
                } => Found::Stale {
                    value,
                    age,
                    staleness,
                    revalidate: false,
                    if_error,
                },
                Found::Missing => Found::Missing,
            },
            Directive::Normal => self.store.lookup(&key),
        };
        let fallback = match found {
            Found::Fresh { value, age } => {
                self.store.count(Count::Hit);
                self.observe(&req, Event::CacheHit);
                let mut response = self.policy.unshare_owned(value);
                self.policy.decorate(&mut response, Outcome::Hit, age);
                return ResponseFuture::ready(Ok(response));
            }
            Found::Stale {
                value,
                age,
                staleness,
                revalidate: true,
                ..
            } => {
                self.store.count(Count::StaleWhileRevalidate);
                self.observe(&req, Event::StaleServed);
                let mut response = self.policy.unshare_owned(value);
                let outcome = Outcome::StaleWhileRevalidate { staleness };
                self.policy.decorate(&mut response, outcome, age);
                self.spawn_refresh(key, req);
                return ResponseFuture::ready(Ok(response));
            }
            Found::Stale {
                value,
                age,
                staleness,
                if_error,
                ..
            } => if_error.then_some((value, age, staleness)),
            Found::Missing => None,
        };
        self.store.count(Count::Miss);
        let class = self.classify.classify(&req);
        self.observers.observe(&class, Event::CacheMiss);
        let forced = directive == Directive::Refresh;
        ResponseFuture::fetching(
            self.inner.call(req),
            key,
            class,
            fallback,
            forced,
            self.store.clone(),
            self.policy.clone(),
            self.settings.clone(),
            self.observers.clone(),
        )
    }
}

impl<S, K, V, P, C> Cache<S, K, V, P, C> {
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

    /// Starts the one background refresh of `key`, unless one runs or there
    /// is no runtime to run it on.
    fn spawn_refresh<Req>(&self, key: Key, req: Req)
    where
        S: Service<Req> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        S::Response: Send + 'static,
        Req: Send + 'static,
        C: Classify<Req>,
        P: CachePolicy<Req, S::Response, Shared = V> + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.store.claim_refresh(&key) {
            return;
        }
        self.store.count(Count::Refresh);
        let class = self.classify.classify(&req);
        let mut inner = self.inner.clone();
        let release = Release {
            store: self.store.clone(),
            key: key.clone(),
        };
        let policy = self.policy.clone();
        let settings = self.settings.clone();
        runtime.spawn(async move {
            // Released however the refresh ends, panics and runtime shutdown
            // included.
            let release = release;
            let response = async {
                poll_fn(|cx| inner.poll_ready(cx)).await?;
                inner.call(req).await
            }
            .await;
            match response {
                Ok(response) if !policy.is_failure(&response) => {
                    store_response(&release.store, &policy, &settings, key, &class, response);
                }
                Ok(_) => tracing::debug!("background refresh got a failure; stale copy kept"),
                Err(err) => {
                    let err: BoxError = err.into();
                    tracing::debug!(error = %err, "background refresh failed; stale copy kept");
                }
            }
        });
    }
}

struct Release<V> {
    store: Arc<Store<V>>,
    key: Key,
}

impl<V> Drop for Release<V> {
    fn drop(&mut self) {
        self.store.release_refresh(&self.key);
    }
}

impl<S: Clone, K: Clone, V, P: Clone, C: Clone> Clone for Cache<S, K, V, P, C> {
    fn clone(&self) -> Self {
        Cache {
            inner: self.inner.clone(),
            key: self.key.clone(),
            policy: self.policy.clone(),
            classify: self.classify.clone(),
            settings: self.settings.clone(),
            observers: self.observers.clone(),
            store: self.store.clone(),
        }
    }
}

impl<S: fmt::Debug, K, V, P, C> fmt::Debug for Cache<S, K, V, P, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("inner", &self.inner)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}
