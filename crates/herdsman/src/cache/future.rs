//! The response future of [`Cache`](super::Cache).

use std::{
    fmt,
    future::Future,
    marker::PhantomData,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
    time::Duration,
};

use http::HeaderMap;
use pin_project_lite::pin_project;

use super::{
    layer::Settings,
    policy::{CachePolicy, Conditions, Freshness, Outcome, UnsafeRequest, Vary},
    store::{variant_key, Count, Store},
};
use crate::{
    backend::{LocalStore, Shelved, StoreBackend},
    class::Class,
    error::BoxError,
    event::{Event, Invalidation as Announced, Observers},
    key::Key,
};

pin_project! {
    /// Response future of [`Cache`](super::Cache).
    pub struct ResponseFuture<F, Req, P, V, B = LocalStore>
    where
        F: Future,
    {
        #[pin]
        kind: Kind<F, P, V, B>,
        _req: PhantomData<fn(Req)>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, P, V, B>
    where
        F: Future,
    {
        Passthrough { #[pin] fut: F },
        Invalidating { #[pin] fut: F, invalidation: Option<Box<Invalidation<P, V, B>>> },
        // Boxed: only a miss needs it, and a hit should not carry its size.
        Fetching { #[pin] fut: F, fetch: Option<Box<Fetch<P, V, B>>> },
        // A miss of the local store, waiting for the store backend.
        Consulting { lookup: Lookup<V, F>, fetch: Option<Box<Fetch<P, V, B>>> },
        Ready { result: Option<F::Output> },
    }
}

pub(super) struct Invalidation<P, V, B> {
    request: UnsafeRequest,
    store: Arc<Store<V>>,
    backend: B,
    policy: P,
}

/// What the store backend answered for a miss: its response, or the inner
/// service's call, made once it said it has none.
enum Consulted<V, F> {
    Found(Shelved<V>),
    Missed(F),
}

type Lookup<V, F> = Pin<Box<dyn Future<Output = Consulted<V, F>> + Send>>;

/// The stored copy a fetch may fall back on or revalidate.
pub(super) struct Stored<V> {
    pub(super) value: V,
    pub(super) age: Duration,
    pub(super) staleness: Duration,
}

/// Where a fetched response is filed: under its primary key, or, for a
/// response that varies, under the variant its request's headers pick.
pub(super) enum Filing {
    /// No `Vary` marker was found: a varying response is filed by these
    /// headers (of the request, taken before it went down), when the policy
    /// has them.
    Primary { headers: Option<HeaderMap> },
    /// A marker was found: the request's variant key under it.
    Variant { variant: Key, epoch: u64 },
}

/// What a fetch needs once the inner service answers: to file the response,
/// to answer the caller, and to fall back on a stored copy.
pub(super) struct Fetch<P, V, B> {
    pub(super) key: Key,
    pub(super) filing: Filing,
    pub(super) class: Class,
    /// A stale copy: stands in for a failure when `if_error`, is refreshed by
    /// a "not changed" answer when `revalidating`.
    pub(super) stored: Option<Stored<V>>,
    pub(super) if_error: bool,
    pub(super) revalidating: bool,
    pub(super) forced: bool,
    pub(super) conditions: Conditions,
    /// When the inner call began (nanoseconds on the store's clock,
    /// [`Store::now_ns`]), for the response's age.
    pub(super) started: u64,
    /// The invalidation generation of the key's path when the call began.
    pub(super) generation: u64,
    pub(super) store: Arc<Store<V>>,
    pub(super) backend: B,
    pub(super) policy: P,
    pub(super) settings: Arc<Settings>,
    pub(super) observers: Observers,
}

impl<F, Req, P, V, B> ResponseFuture<F, Req, P, V, B>
where
    F: Future,
{
    pub(super) fn passthrough(fut: F) -> Self {
        Self::with(Kind::Passthrough { fut })
    }

    pub(super) fn invalidating(
        fut: F,
        request: UnsafeRequest,
        store: Arc<Store<V>>,
        backend: B,
        policy: P,
    ) -> Self {
        Self::with(Kind::Invalidating {
            fut,
            invalidation: Some(Box::new(Invalidation {
                request,
                store,
                backend,
                policy,
            })),
        })
    }

    /// Waits for the store backend's `lookup`, then answers from it or
    /// calls `inner` (ready) with `req`.
    pub(super) fn consulting<S>(
        lookup: Pin<Box<dyn Future<Output = Option<Shelved<V>>> + Send>>,
        mut inner: S,
        req: Req,
        fetch: Box<Fetch<P, V, B>>,
    ) -> Self
    where
        S: tower_service::Service<Req, Future = F> + Send + 'static,
        Req: Send + 'static,
        V: Send + 'static,
    {
        let lookup = Box::pin(async move {
            match lookup.await.filter(|shelved| shelved.age < shelved.ttl) {
                Some(shelved) => Consulted::Found(shelved),
                None => Consulted::Missed(inner.call(req)),
            }
        });
        Self::with(Kind::Consulting {
            lookup,
            fetch: Some(fetch),
        })
    }

    pub(super) fn fetching(fut: F, fetch: Box<Fetch<P, V, B>>) -> Self {
        Self::with(Kind::Fetching {
            fut,
            fetch: Some(fetch),
        })
    }

    pub(super) fn ready(result: F::Output) -> Self {
        Self::with(Kind::Ready {
            result: Some(result),
        })
    }

    fn with(kind: Kind<F, P, V, B>) -> Self {
        ResponseFuture {
            kind,
            _req: PhantomData,
        }
    }
}

impl<F, T, E, Req, P, V, B> Future for ResponseFuture<F, Req, P, V, B>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    P: CachePolicy<Req, T, Shared = V>,
    V: Clone,
    B: StoreBackend<V>,
{
    type Output = Result<T, BoxError>;

    // Always inlined: a hit (answered in `call`) is a few lines, and its
    // output returned through memory cost the caller a store-forwarding
    // stall (docs/BENCHMARKS.md, section 15). Every other state is polled
    // out of line.
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.project().kind;
        if let KindProj::Ready { result } = kind.as_mut().project() {
            let result = result.take().expect("polled after completion");
            return Poll::Ready(result.map_err(Into::into));
        }
        poll_kind::<F, T, E, Req, P, V, B>(kind, cx)
    }
}

/// Polls a response future that was not answered in `call`.
#[inline(never)]
fn poll_kind<F, T, E, Req, P, V, B>(
    mut kind: Pin<&mut Kind<F, P, V, B>>,
    cx: &mut Context<'_>,
) -> Poll<Result<T, BoxError>>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    P: CachePolicy<Req, T, Shared = V>,
    V: Clone,
    B: StoreBackend<V>,
{
    loop {
        return match kind.as_mut().project() {
            KindProj::Consulting { lookup, fetch } => {
                let consulted = ready!(lookup.as_mut().poll(cx));
                let fetch = fetch.take().expect("polled after completion");
                let fut = match consulted {
                    Consulted::Found(shelved) => return Poll::Ready(Ok(fetch.shelved(shelved))),
                    Consulted::Missed(fut) => fut,
                };
                fetch.missed();
                kind.set(Kind::Fetching {
                    fut,
                    fetch: Some(fetch),
                });
                continue;
            }
            KindProj::Passthrough { fut } => fut.poll(cx).map_err(Into::into),
            KindProj::Invalidating { fut, invalidation } => {
                let response = ready!(fut.poll(cx)).map_err(Into::into)?;
                let inv = invalidation.take().expect("polled after completion");
                if inv.policy.succeeded(&response) {
                    inv.finish(&response);
                }
                Poll::Ready(Ok(response))
            }
            KindProj::Fetching { fut, fetch } => {
                let result = ready!(fut.poll(cx));
                let fetch = fetch.take().expect("polled after completion");
                Poll::Ready(fetch.finish(result.map_err(Into::into)))
            }
            KindProj::Ready { result } => Poll::Ready(
                result
                    .take()
                    .expect("polled after completion")
                    .map_err(Into::into),
            ),
        };
    }
}

impl<P, V: Clone, B: StoreBackend<V>> Invalidation<P, V, B> {
    /// Drops the entries of the request's path and of the paths its response
    /// names (RFC 9111 §4.4), a new generation first for each.
    fn finish<Req, T>(self, response: &T)
    where
        P: CachePolicy<Req, T, Shared = V>,
    {
        let mut paths = self.policy.also_invalidates(&self.request, response);
        paths.push(self.request.path().to_vec());
        paths.sort_unstable();
        paths.dedup();
        for path in &paths {
            self.store.bump(Some(path));
        }
        let removed = self.store.remove_if(|key, _| {
            key.path()
                .is_some_and(|p| paths.iter().any(|path| path == p))
        });
        tracing::debug!(removed, "unsafe request invalidated cached entries");
        for path in &paths {
            let what = || Announced::Path(String::from_utf8_lossy(path).as_ref().into());
            self.backend.invalidate(&what());
            self.store.announce(what);
        }
    }
}

impl<P, V: Clone, B: StoreBackend<V>> Fetch<P, V, B> {
    /// The key to ask the store backend for: the primary key (responses
    /// that vary are kept locally only: a variant's key holds this
    /// process's marker epoch), unless the request is a forced refresh.
    /// Also when a stale copy is held here: another replica may have
    /// fetched a fresh one since (a poll loop's fetch, a refresh).
    pub(super) fn shelf_key(&self) -> Option<&Key> {
        let primary = matches!(self.filing, Filing::Primary { .. });
        (primary && !self.forced).then_some(&self.key)
    }

    /// Counts a miss of both stores, before the inner call.
    pub(super) fn missed(&self) {
        self.store.count(Count::Miss);
        self.observers.observe(&self.class, Event::CacheMiss);
    }

    /// Answers from the store backend's fresh `shelved` response, filing
    /// it in the local store for its freshness.
    pub(super) fn shelved<Req, T>(&self, shelved: Shelved<V>) -> T
    where
        P: CachePolicy<Req, T, Shared = V>,
    {
        let store = &*self.store;
        let mut response = self.policy.unshare(&shelved.value);
        let weight = match &store.weigher {
            Some(weigh) => weigh(&shelved.value),
            None => self.policy.weigh(&shelved.value),
        };
        let freshness = Freshness {
            age: shelved.age,
            ..Freshness::new(shelved.ttl)
        };
        store.insert(
            self.key.clone(),
            shelved.value,
            weight,
            &freshness,
            &self.class,
            self.generation,
        );
        store.count(Count::BackendHit);
        self.observers.observe(&self.class, Event::CacheBackendHit);
        self.policy
            .decorate(&mut response, Outcome::Hit, shelved.age);
        self.policy
            .answer_conditions(&mut response, &self.conditions);
        response
    }

    /// Writes an answer through to the store backend unless its path was
    /// invalidated since the fetch began (the local insert checks again).
    ///
    /// An invalidation landing between that check and the write has
    /// already dropped the key from the backend, and the write would bring
    /// the old answer back until its TTL. So the generation is read again
    /// after the write: if it moved, the key is dropped from the backend
    /// once more (at worst costing a newer answer written meanwhile a miss).
    /// Invalidations move the generation before they reach the backend, so
    /// one of the two reads sees every invalidation the write could undo.
    fn write_through(&self, key: &Key, shared: &V, freshness: &Freshness) {
        if self.store.generation(key) != self.generation {
            return;
        }
        self.backend
            .insert(key, shared, freshness.age, freshness.ttl);
        if self.store.generation(key) != self.generation {
            self.backend.invalidate(&Announced::Key(key.clone()));
        }
    }

    pub(super) fn finish<Req, T>(mut self, result: Result<T, BoxError>) -> Result<T, BoxError>
    where
        P: CachePolicy<Req, T, Shared = V>,
    {
        let failed = match &result {
            Ok(response) => self.policy.is_failure(response),
            Err(_) => true,
        };
        if failed && self.if_error {
            if let Some(stored) = self.stored.take() {
                return Ok(self.stale_if_error(stored, &result));
            }
        }
        let response = result?;
        if self.revalidating && self.policy.not_modified(&response) {
            if let Some(stored) = &self.stored {
                let refreshed = self.policy.freshen(&stored.value, response);
                self.store.count(Count::Revalidated);
                let (response, stored) = self.file(refreshed);
                return Ok(self.answer(response, Outcome::Revalidated { stored }));
            }
        }
        let (response, stored) = if failed {
            self.store.count(Count::NotStored);
            (response, false)
        } else {
            self.file(response)
        };
        let outcome = if self.forced {
            Outcome::Refreshed { stored }
        } else {
            Outcome::Miss { stored }
        };
        Ok(self.answer(response, outcome))
    }

    /// The stale copy, standing in for a failed call; moved into the
    /// caller's response, not cloned.
    fn stale_if_error<Req, T>(&self, stored: Stored<V>, result: &Result<T, BoxError>) -> T
    where
        P: CachePolicy<Req, T, Shared = V>,
    {
        match result {
            Err(err) => tracing::warn!(error = %err, "inner call failed; serving a stale copy"),
            Ok(_) => tracing::warn!("inner call answered a failure; serving a stale copy"),
        }
        self.store.count(Count::StaleIfError);
        self.observers.observe(&self.class, Event::StaleServed);
        let mut response = self.policy.unshare_owned(stored.value);
        let outcome = Outcome::StaleIfError {
            staleness: stored.staleness,
        };
        self.policy.decorate(&mut response, outcome, stored.age);
        self.policy
            .answer_conditions(&mut response, &self.conditions);
        response
    }

    fn answer<Req, T>(&self, mut response: T, outcome: Outcome) -> T
    where
        P: CachePolicy<Req, T, Shared = V>,
    {
        self.policy.decorate(&mut response, outcome, Duration::ZERO);
        self.policy
            .answer_conditions(&mut response, &self.conditions);
        response
    }

    /// Stores `response` if the policy allows, under the key its `Vary`
    /// picks; returns the caller's copy and whether it was stored.
    fn file<Req, T>(&self, response: T) -> (T, bool)
    where
        P: CachePolicy<Req, T, Shared = V>,
    {
        let store = &*self.store;
        let class = self.settings.class(&self.class);
        let delay = Duration::from_nanos(store.now_ns().saturating_sub(self.started));
        let Some(freshness) = self
            .policy
            .freshness(&response, &class, delay)
            .filter(|f| f.usable())
        else {
            store.count(Count::NotStored);
            return (response, false);
        };
        let marker =
            |names| store.vary_marker(&self.key, names, &freshness, &self.class, self.generation);
        let mut primary = false;
        let key = match (self.policy.vary(&response), &self.filing) {
            (Vary::None, _) => {
                primary = true;
                Some(self.key.clone())
            }
            (Vary::Any, _) => None,
            (Vary::Headers(names), Filing::Variant { variant, epoch }) => {
                // The marker's headers still hold: the variant is the one
                // computed when the request was looked up.
                match marker(&names) {
                    Some(now) if now == *epoch => Some(variant.clone()),
                    _ => None,
                }
            }
            (Vary::Headers(names), Filing::Primary { headers }) => {
                headers.as_ref().and_then(|headers| {
                    let epoch = marker(&names)?;
                    Some(variant_key(&self.key, epoch, &names, headers))
                })
            }
        };
        let Some(key) = key else {
            store.count(Count::NotStored);
            return (response, false);
        };
        match self.policy.share(response) {
            Ok(shared) => {
                let mine = self.policy.unshare(&shared);
                // Variants stay local.
                if primary {
                    self.write_through(&key, &shared, &freshness);
                }
                let weight = match &store.weigher {
                    Some(weigh) => weigh(&shared),
                    None => self.policy.weigh(&shared),
                };
                let stored = store.insert(
                    key,
                    shared,
                    weight,
                    &freshness,
                    &self.class,
                    self.generation,
                );
                store.count(if stored {
                    Count::Stored
                } else {
                    Count::NotStored
                });
                (mine, stored)
            }
            Err(response) => {
                store.count(Count::NotStored);
                (response, false)
            }
        }
    }
}

impl<F, Req, P, V, B> fmt::Debug for ResponseFuture<F, Req, P, V, B>
where
    F: Future,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Passthrough { .. } => "passthrough",
            Kind::Invalidating { .. } => "invalidating",
            Kind::Fetching { .. } => "fetching",
            Kind::Consulting { .. } => "consulting",
            Kind::Ready { .. } => "ready",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}
