use std::{
    fmt,
    future::poll_fn,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tower_service::Service;

use super::{
    future::{Fetch, Filing, ResponseFuture, Stored},
    handle::CacheHandle,
    layer::Settings,
    policy::{CachePolicy, Conditions, Directive, Outcome},
    store::{variant_key, Count, Found, Store},
};
use crate::{
    backend::{Answer, LocalStore, StoreBackend},
    class::{Class, Classify},
    error::BoxError,
    event::{Event, Observers},
    key::{Key, KeyFn},
    switch::LayerName,
};

/// Answers requests from a bounded in-memory store; see the
/// [module docs](crate::cache).
pub struct Cache<S, K, V, P, C, B = LocalStore> {
    pub(super) inner: S,
    pub(super) key: K,
    pub(super) policy: P,
    pub(super) classify: C,
    pub(super) settings: Arc<Settings>,
    pub(super) observers: Observers,
    pub(super) store: Arc<Store<V>>,
    pub(super) backend: B,
}

impl<S, K, V, P, C, B> Cache<S, K, V, P, C, B> {
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

    /// A handle to inspect and invalidate the store this service shares.
    pub fn handle(&self) -> CacheHandle<V, B>
    where
        B: Clone,
    {
        CacheHandle {
            store: self.store.clone(),
            backend: self.backend.clone(),
        }
    }
}

impl<S, K, V, P, C, B, Req> Service<Req> for Cache<S, K, V, P, C, B>
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
    B: StoreBackend<V>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, Req, P, V, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        if !self.classify.is_on(&req, LayerName::Cache) {
            // Switched off: not even a write invalidates.
            return ResponseFuture::passthrough(self.inner.call(req));
        }
        if let Some(write) = self.policy.invalidates(&req) {
            let store = self.store.clone();
            // Invalidating requests are not looked up: no hit, no miss.
            return ResponseFuture::invalidating(
                self.inner.call(req),
                write,
                store,
                self.backend.clone(),
                self.policy.clone(),
            );
        }
        let directive = self.policy.directive(&req);
        if directive == Directive::Bypass {
            // A bypassed request keeps its headers, validators included.
            if self.keyed(&req).is_some() {
                self.store.count(Count::Bypassed);
            }
            return ResponseFuture::passthrough(self.inner.call(req));
        }
        let conditions = self.policy.take_conditions(&mut req);
        let Some(key) = self.keyed(&req) else {
            self.policy.restore_conditions(&mut req, conditions);
            return ResponseFuture::passthrough(self.inner.call(req));
        };
        self.serve(req, key, directive, conditions)
    }
}

impl<S, K, V, P, C, B> Cache<S, K, V, P, C, B> {
    /// Answers a keyed request from the store, or fetches it: a fresh hit
    /// (or a stale entry served while one background refresh runs) is
    /// answered here, anything else goes to [`fetch_for`](Self::fetch_for).
    #[inline]
    fn serve<Req>(
        &mut self,
        req: Req,
        key: Key,
        directive: Directive,
        conditions: Conditions,
    ) -> ResponseFuture<S::Future, Req, P, V, B>
    where
        S: Service<Req> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        S::Response: Send + 'static,
        Req: Send + 'static,
        C: Classify<Req>,
        P: CachePolicy<Req, S::Response, Shared = V> + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        B: StoreBackend<V>,
    {
        let (found, filing) = self.find(&key, &req, directive);
        let stored = match found {
            Found::Fresh { value, age } => {
                self.store.count(Count::Hit);
                self.observe(&req, Event::CacheHit);
                let response = self.answer(value, Outcome::Hit, age, &conditions);
                return ResponseFuture::ready(Ok(response));
            }
            Found::Stale {
                value,
                age,
                staleness,
                background: true,
                revalidate,
                ..
            } => {
                self.store.count(Count::StaleWhileRevalidate);
                self.observe(&req, Event::StaleServed);
                let refresh = revalidate.then(|| value.clone());
                let outcome = Outcome::StaleWhileRevalidate { staleness };
                let response = self.answer(value, outcome, age, &conditions);
                self.spawn_refresh(key, filing, req, refresh);
                return ResponseFuture::ready(Ok(response));
            }
            Found::Stale {
                value,
                age,
                staleness,
                if_error,
                revalidate,
                ..
            } => {
                let stored = Stored {
                    value,
                    age,
                    staleness,
                };
                Some((stored, if_error, revalidate))
            }
            Found::Varies(_) | Found::Missing => None,
        };
        self.fetch_for(req, (key, filing), directive, conditions, stored)
    }

    /// Fetches `req` for a miss, or for a stale entry that cannot be served
    /// as it is (`stored`: the copy, whether it may stand in for a failure,
    /// whether it can be revalidated); the store backend is asked first.
    fn fetch_for<Req>(
        &mut self,
        mut req: Req,
        (key, filing): (Key, Filing),
        directive: Directive,
        conditions: Conditions,
        stored: Option<(Stored<V>, bool, bool)>,
    ) -> ResponseFuture<S::Future, Req, P, V, B>
    where
        S: Service<Req> + Clone + Send + 'static,
        Req: Send + 'static,
        C: Classify<Req>,
        P: CachePolicy<Req, S::Response, Shared = V> + Clone,
        V: Clone + Send + Sync + 'static,
        B: StoreBackend<V>,
    {
        self.store.ensure_sweep();
        let class = self.classify.classify(&req);
        let (stored, if_error, revalidating) = match stored {
            Some((stored, if_error, revalidate)) => {
                let revalidating = revalidate && self.policy.revalidate(&mut req, &stored.value);
                (Some(stored), if_error, revalidating)
            }
            None => (None, false, false),
        };
        let fetch = self.fetch(key, filing, class, stored, (if_error, revalidating));
        let fetch = Box::new(Fetch {
            forced: directive == Directive::Refresh,
            conditions,
            ..fetch
        });
        if let Some(shelf) = fetch.shelf_key() {
            match self.backend.lookup(shelf) {
                Answer::Now(Some(shelved)) if shelved.age < shelved.ttl => {
                    return ResponseFuture::ready(Ok(fetch.shelved(shelved)));
                }
                Answer::Now(_) => {}
                Answer::Later(lookup) => {
                    // The inner service is called once the backend has
                    // answered, if at all: take the one that is ready.
                    let clone = self.inner.clone();
                    let inner = std::mem::replace(&mut self.inner, clone);
                    return ResponseFuture::consulting(lookup, inner, req, fetch);
                }
            }
        }
        self.miss(req, fetch)
    }
}

impl<S, K, V, P, C, B> Cache<S, K, V, P, C, B> {
    /// Counts a miss and calls the inner service for `fetch`.
    fn miss<Req>(
        &mut self,
        req: Req,
        fetch: Box<Fetch<P, V, B>>,
    ) -> ResponseFuture<S::Future, Req, P, V, B>
    where
        S: Service<Req>,
        V: Clone,
        B: StoreBackend<V>,
    {
        fetch.missed();
        ResponseFuture::fetching(self.inner.call(req), fetch)
    }
}

impl<S, K, V, P, C, B> Cache<S, K, V, P, C, B> {
    /// The key of `req`, unless it has none or one over the length cap.
    #[inline]
    fn keyed<Req>(&self, req: &Req) -> Option<Key>
    where
        K: KeyFn<Req>,
    {
        self.key
            .key(req)
            .filter(|key| key.len() <= self.settings.max_key_len)
    }

    /// Looks `key` up, and `req`'s variant when the key's responses vary.
    /// A forced refresh never finds a fresh entry: a stored copy may still
    /// stand in for a failure, or be revalidated. Neither a forced refresh
    /// nor a current read ([`Directive::Current`]) is served a stale entry
    /// while it revalidates.
    #[inline]
    fn find<T, Req>(&self, key: &Key, req: &Req, directive: Directive) -> (Found<V>, Filing)
    where
        P: CachePolicy<Req, T, Shared = V>,
        V: Clone,
    {
        let (found, filing) = match self.store.lookup(key) {
            Found::Varies(marker) => match self.policy.request_headers(req) {
                Some(headers) => {
                    let epoch = marker.epoch;
                    let variant = variant_key(key, epoch, &marker.names, headers);
                    let found = self.store.lookup(&variant);
                    (found, Filing::Variant { variant, epoch })
                }
                None => (Found::Missing, Filing::Primary { headers: None }),
            },
            // A fresh hit files nothing: its headers are not copied. A
            // forced refresh of it does file its answer, which may vary.
            found @ Found::Fresh { .. } if directive != Directive::Refresh => {
                (found, Filing::Primary { headers: None })
            }
            found => {
                let headers = self.policy.request_headers(req).cloned();
                (found, Filing::Primary { headers })
            }
        };
        let mut found = match (directive, found) {
            // A forced refresh treats a fresh entry as stale.
            (Directive::Refresh, Found::Fresh { value, age }) => Found::Stale {
                value,
                age,
                staleness: Duration::ZERO,
                background: false,
                if_error: true,
                revalidate: true,
            },
            (_, found) => found,
        };
        // Neither it nor a current read is answered stale while the entry
        // revalidates: they wait for the fetch.
        if let Directive::Refresh | Directive::Current = directive {
            if let Found::Stale { background, .. } = &mut found {
                *background = false;
            }
        }
        (found, filing)
    }

    /// The caller's copy of a stored `value`, decorated, its conditions
    /// answered.
    #[inline]
    fn answer<Req, T>(
        &self,
        value: V,
        outcome: Outcome,
        age: Duration,
        conditions: &Conditions,
    ) -> T
    where
        P: CachePolicy<Req, T, Shared = V>,
    {
        let mut response = self.policy.unshare_owned(value);
        self.policy.decorate(&mut response, outcome, age);
        self.policy.answer_conditions(&mut response, conditions);
        response
    }

    /// A fetch of `key` beginning now (its generation and start time read).
    fn fetch(
        &self,
        key: Key,
        filing: Filing,
        class: Class,
        stored: Option<Stored<V>>,
        (if_error, revalidating): (bool, bool),
    ) -> Fetch<P, V, B>
    where
        P: Clone,
        V: Clone,
        B: Clone,
    {
        Fetch {
            generation: self.store.generation(&key),
            key,
            filing,
            class,
            stored,
            if_error,
            revalidating,
            forced: false,
            conditions: Conditions::none(),
            started: self.store.now_ns(),
            store: self.store.clone(),
            backend: self.backend.clone(),
            policy: self.policy.clone(),
            settings: self.settings.clone(),
            observers: self.observers.clone(),
        }
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

    /// Starts the one background refresh of `key`, unless one runs or there
    /// is no runtime to run it on. With a `stored` copy that can be
    /// revalidated, the refresh asks whether it changed.
    fn spawn_refresh<Req>(&self, key: Key, filing: Filing, mut req: Req, stored: Option<V>)
    where
        S: Service<Req> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        S::Response: Send + 'static,
        Req: Send + 'static,
        C: Classify<Req>,
        P: CachePolicy<Req, S::Response, Shared = V> + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        B: StoreBackend<V>,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.store.claim_refresh(&key) {
            return;
        }
        self.store.count(Count::Refresh);
        let class = self.classify.classify(&req);
        let revalidating = stored
            .as_ref()
            .is_some_and(|stored| self.policy.revalidate(&mut req, stored));
        let stored = stored.map(|value| Stored {
            value,
            age: Duration::ZERO,
            staleness: Duration::ZERO,
        });
        let release = Release {
            store: self.store.clone(),
            key: key.clone(),
        };
        let fetch = self.fetch(key, filing, class, stored, (false, revalidating));
        let mut inner = self.inner.clone();
        runtime.spawn(async move {
            // Released however the refresh ends, panics and runtime shutdown
            // included.
            let _release = release;
            // A fresh copy in the store backend (another replica's fetch)
            // is the refresh: no inner call. In memory, answered at once.
            if let Some(shelf) = fetch.shelf_key() {
                if let Some(shelved) = fetch.backend.lookup(shelf).get().await {
                    if shelved.age < shelved.ttl {
                        let _: S::Response = fetch.shelved(shelved);
                        return;
                    }
                }
            }
            let response = async {
                poll_fn(|cx| inner.poll_ready(cx)).await?;
                inner.call(req).await
            }
            .await
            .map_err(Into::into);
            match response {
                Ok(response) if !fetch.policy.is_failure(&response) => {
                    let _ = fetch.finish(Ok(response));
                }
                Ok(_) => tracing::debug!("background refresh got a failure; stale copy kept"),
                Err(err) => {
                    tracing::debug!(error = %err, "background refresh failed; stale copy kept")
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

impl<S: Clone, K: Clone, V, P: Clone, C: Clone, B: Clone> Clone for Cache<S, K, V, P, C, B> {
    fn clone(&self) -> Self {
        Cache {
            inner: self.inner.clone(),
            key: self.key.clone(),
            policy: self.policy.clone(),
            classify: self.classify.clone(),
            settings: self.settings.clone(),
            observers: self.observers.clone(),
            store: self.store.clone(),
            backend: self.backend.clone(),
        }
    }
}

impl<S: fmt::Debug, K, V, P, C, B> fmt::Debug for Cache<S, K, V, P, C, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("inner", &self.inner)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}
