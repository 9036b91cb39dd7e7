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
use tokio::time::Instant;

use super::{
    layer::Settings,
    policy::{CachePolicy, Conditions, Outcome, UnsafeRequest, Vary},
    store::{variant_key, Count, Store},
};
use crate::{
    class::Class,
    error::BoxError,
    event::{Event, Invalidation as Announced, Observers},
    key::Key,
};

pin_project! {
    /// Response future of [`Cache`](super::Cache).
    pub struct ResponseFuture<F, Req, P, V>
    where
        F: Future,
    {
        #[pin]
        kind: Kind<F, P, V>,
        _req: PhantomData<fn(Req)>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, P, V>
    where
        F: Future,
    {
        Passthrough { #[pin] fut: F },
        Invalidating { #[pin] fut: F, invalidation: Option<Box<Invalidation<P, V>>> },
        // Boxed: only a miss needs it, and a hit should not carry its size.
        Fetching { #[pin] fut: F, fetch: Option<Box<Fetch<P, V>>> },
        Ready { result: Option<F::Output> },
    }
}

pub(super) struct Invalidation<P, V> {
    request: UnsafeRequest,
    store: Arc<Store<V>>,
    policy: P,
}

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
pub(super) struct Fetch<P, V> {
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
    /// When the inner call began, for the response's age.
    pub(super) started: Instant,
    /// The invalidation generation of the key's path when the call began.
    pub(super) generation: u64,
    pub(super) store: Arc<Store<V>>,
    pub(super) policy: P,
    pub(super) settings: Arc<Settings>,
    pub(super) observers: Observers,
}

impl<F, Req, P, V> ResponseFuture<F, Req, P, V>
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
        policy: P,
    ) -> Self {
        Self::with(Kind::Invalidating {
            fut,
            invalidation: Some(Box::new(Invalidation {
                request,
                store,
                policy,
            })),
        })
    }

    pub(super) fn fetching(fut: F, fetch: Box<Fetch<P, V>>) -> Self {
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

    fn with(kind: Kind<F, P, V>) -> Self {
        ResponseFuture {
            kind,
            _req: PhantomData,
        }
    }
}

impl<F, T, E, Req, P, V> Future for ResponseFuture<F, Req, P, V>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    P: CachePolicy<Req, T, Shared = V>,
    V: Clone,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
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
        }
    }
}

impl<P, V: Clone> Invalidation<P, V> {
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
            self.store
                .announce(|| Announced::Path(String::from_utf8_lossy(path).as_ref().into()));
        }
    }
}

impl<P, V: Clone> Fetch<P, V> {
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
        let delay = self.started.elapsed();
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
        let key = match (self.policy.vary(&response), &self.filing) {
            (Vary::None, _) => Some(self.key.clone()),
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

impl<F, Req, P, V> fmt::Debug for ResponseFuture<F, Req, P, V>
where
    F: Future,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Passthrough { .. } => "passthrough",
            Kind::Invalidating { .. } => "invalidating",
            Kind::Fetching { .. } => "fetching",
            Kind::Ready { .. } => "ready",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}
