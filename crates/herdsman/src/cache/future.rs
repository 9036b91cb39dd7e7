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

use pin_project_lite::pin_project;

use super::{
    layer::Settings,
    policy::{CachePolicy, Outcome},
    store::{Count, Store, Windows},
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
    path: Vec<u8>,
    store: Arc<Store<V>>,
    policy: P,
}

pub(super) struct Fetch<P, V> {
    key: Key,
    class: Class,
    fallback: Option<(V, Duration, Duration)>,
    forced: bool,
    store: Arc<Store<V>>,
    policy: P,
    settings: Arc<Settings>,
    observers: Observers,
}

impl<F, Req, P, V> ResponseFuture<F, Req, P, V>
where
    F: Future,
{
    pub(super) fn passthrough(fut: F) -> Self {
        Self::with(Kind::Passthrough { fut })
    }

    pub(super) fn invalidating(fut: F, path: Vec<u8>, store: Arc<Store<V>>, policy: P) -> Self {
        Self::with(Kind::Invalidating {
            fut,
            invalidation: Some(Box::new(Invalidation {
                path,
                store,
                policy,
            })),
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn fetching(
        fut: F,
        key: Key,
        class: Class,
        fallback: Option<(V, Duration, Duration)>,
        forced: bool,
        store: Arc<Store<V>>,
        policy: P,
        settings: Arc<Settings>,
        observers: Observers,
    ) -> Self {
        Self::with(Kind::Fetching {
            fut,
            fetch: Some(Box::new(Fetch {
                key,
                class,
                fallback,
                forced,
                store,
                policy,
                settings,
                observers,
            })),
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
                    let path = &inv.path[..];
                    let removed = inv.store.remove_if(|key, _| key.path() == Some(path));
                    tracing::debug!(removed, "unsafe request invalidated cached entries");
                    inv.store.announce(|| {
                        Announced::Path(String::from_utf8_lossy(path).as_ref().into())
                    });
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

impl<P, V: Clone> Fetch<P, V> {
    fn finish<Req, T>(self, result: Result<T, BoxError>) -> Result<T, BoxError>
    where
        P: CachePolicy<Req, T, Shared = V>,
    {
        let failed = match &result {
            Ok(response) => self.policy.is_failure(response),
            Err(_) => true,
        };
        if failed {
            if let Some((value, age, staleness)) = self.fallback {
                match &result {
                    Err(err) => {
                        tracing::warn!(error = %err, "inner call failed; serving a stale copy")
                    }
                    Ok(_) => tracing::warn!("inner call answered a failure; serving a stale copy"),
                }
                self.store.count(Count::StaleIfError);
                self.observers.observe(&self.class, Event::StaleServed);
                let mut response = self.policy.unshare_owned(value);
                let outcome = Outcome::StaleIfError { staleness };
                self.policy.decorate(&mut response, outcome, age);
                return Ok(response);
            }
        }
        let response = result?;
        let (mut response, stored) = if failed {
            self.store.count(Count::NotStored);
            (response, false)
        } else {
            store_response(
                &self.store,
                &self.policy,
                &self.settings,
                self.key,
                &self.class,
                response,
            )
        };
        let outcome = if self.forced {
            Outcome::Refreshed { stored }
        } else {
            Outcome::Miss { stored }
        };
        self.policy.decorate(&mut response, outcome, Duration::ZERO);
        Ok(response)
    }
}

/// Stores `response` if the policy allows; returns the caller's copy and
/// whether it was stored.
pub(super) fn store_response<Req, T, P, V>(
    store: &Store<V>,
    policy: &P,
    settings: &Settings,
    key: Key,
    class: &Class,
    response: T,
) -> (T, bool)
where
    P: CachePolicy<Req, T, Shared = V>,
    V: Clone,
{
    let windows = settings.windows(class);
    let ttl = match policy.ttl(&response, windows.ttl) {
        Some(ttl) if !ttl.is_zero() => ttl,
        _ => {
            store.count(Count::NotStored);
            return (response, false);
        }
    };
    match policy.share(response) {
        Ok(shared) => {
            let mine = policy.unshare(&shared);
            let weight = match &store.weigher {
                Some(weigh) => weigh(&shared),
                None => policy.weigh(&shared),
            };
            let stored = store.insert(key, shared, weight, Windows { ttl, ..windows }, class);
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
