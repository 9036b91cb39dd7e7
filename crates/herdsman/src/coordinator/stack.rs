//! The services a [`CoordinatorLayer`](super::CoordinatorLayer) builds, each
//! nameable: [`Stack`] is the whole coordinated path.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower_service::Service;

use super::route::{ClassKey, ClassOf, Routes};
use crate::{
    breaker::Breaker,
    cache::{Cache, HttpCachePolicy},
    dedup::Dedup,
    error::BoxError,
    http::{Buffer, ClientAddress, HttpShare, PollFetch, ServerErrors, SharedBody},
    limit::Limit,
    registry::{HttpFingerprint, Registry},
    stats::{StatsService, UpstreamService},
    switch::{LayerName, ResponseFuture},
};

use super::route::CallerIdentity;

/// A herdsman layer's service whose inner service can be reached, so that a
/// request can go straight past the layer.
///
/// Implemented by the services of the layers a [`Coordinator`](super::Coordinator)
/// composes; each of them is ready exactly when its inner service is (their
/// `poll_ready` only forwards), which is what makes [`Bypass`] sound.
pub trait Wraps {
    /// The inner service.
    type Inner;

    /// The inner service, to call it directly after `poll_ready` on `self`.
    fn inner_mut(&mut self) -> &mut Self::Inner;
}

macro_rules! wraps {
    ($($ty:ident < S $(, $p:ident)* >),* $(,)?) => {
        $(
            impl<S $(, $p)*> Wraps for $ty<S $(, $p)*> {
                type Inner = S;

                #[inline]
                fn inner_mut(&mut self) -> &mut S {
                    self.get_mut()
                }
            }
        )*
    };
}

wraps!(
    Registry<S, K, C, P, F, Q, W, V>,
    StatsService<S, C, F>,
    Cache<S, K, V, P, C>,
    Dedup<S, K, P, C>,
    Breaker<S, C, K>,
    Limit<S, C, I, A>,
    UpstreamService<S, C, K, F>,
);

/// Sends each request through a layer's service, or straight to the
/// service inside it when the layer's switch for the request's class is
/// off: one atomic load per request.
///
/// The class is the one [`Coordinated`](super::Coordinated) put in the
/// request's extensions, or else the one its path matches. The client-side
/// Stats layer is also passed by a registry poll loop's fetches, which are
/// not client requests.
pub struct Bypass<T> {
    svc: T,
    layer: LayerName,
    routes: Arc<Routes>,
    /// Whether a poll loop's fetches go through the layer too.
    polls: bool,
}

impl<T> Bypass<T> {
    pub(crate) fn new(svc: T, layer: LayerName, routes: Arc<Routes>) -> Self {
        Bypass {
            svc,
            layer,
            routes,
            polls: true,
        }
    }

    /// A layer that only client requests go through: a poll loop's fetches
    /// pass it as if it were switched off.
    pub(crate) fn clients_only(svc: T, layer: LayerName, routes: Arc<Routes>) -> Self {
        Bypass {
            polls: false,
            ..Bypass::new(svc, layer, routes)
        }
    }

    /// The layer's service.
    pub fn get_ref(&self) -> &T {
        &self.svc
    }

    /// The layer's service, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.svc
    }

    /// Which switch decides.
    pub fn layer(&self) -> LayerName {
        self.layer
    }
}

impl<T, B> Service<Request<B>> for Bypass<T>
where
    T: Service<Request<B>> + Wraps,
    T::Error: Into<BoxError>,
    T::Inner: Service<Request<B>, Response = T::Response>,
    <T::Inner as Service<Request<B>>>::Error: Into<BoxError>,
{
    type Response = T::Response;
    type Error = BoxError;
    type Future = ResponseFuture<T::Future, <T::Inner as Service<Request<B>>>::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The layer forwards to its inner service: ready means both are.
        self.svc.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Request<B>) -> Self::Future {
        let on = self.routes.with(&req, |route| route.is_on(self.layer))
            && (self.polls || req.extensions().get::<PollFetch>().is_none());
        if on {
            ResponseFuture::On {
                future: self.svc.call(req),
            }
        } else {
            ResponseFuture::Off {
                future: self.svc.inner_mut().call(req),
            }
        }
    }
}

impl<T: Clone> Clone for Bypass<T> {
    fn clone(&self) -> Self {
        Bypass {
            svc: self.svc.clone(),
            layer: self.layer,
            routes: self.routes.clone(),
            polls: self.polls,
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Bypass<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bypass")
            .field("layer", &self.layer)
            .field("svc", &self.svc)
            .finish()
    }
}

/// The dedup layer of the stack: one [`Dedup`] per distinct reuse window
/// among the classes (usually one), each class served by the one with its
/// window, and bypassed when the class's dedup switch is off.
///
/// `poll_ready` drives every one of them to readiness.
pub struct Dedups<S> {
    groups: Vec<Dedup<S, ClassKey, HttpShare, ClassOf>>,
    routes: Arc<Routes>,
}

impl<S> Dedups<S> {
    pub(crate) fn new(
        groups: Vec<Dedup<S, ClassKey, HttpShare, ClassOf>>,
        routes: Arc<Routes>,
    ) -> Self {
        assert!(!groups.is_empty(), "at least one dedup window");
        Dedups { groups, routes }
    }
}

impl<S, B, ResB> Service<Request<B>> for Dedups<S>
where
    S: Service<Request<B>, Response = Response<crate::http::HttpBody<ResB>>> + Clone,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    HttpShare: crate::share::Share<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<
        <Dedup<S, ClassKey, HttpShare, ClassOf> as Service<Request<B>>>::Future,
        S::Future,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let mut pending = false;
        for group in &mut self.groups {
            match group.poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => pending = true,
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (on, group) = self
            .routes
            .with(&req, |route| (route.is_on(LayerName::Dedup), route.dedup));
        let last = self.groups.len() - 1;
        let dedup = &mut self.groups[group.min(last)];
        if on {
            ResponseFuture::On {
                future: dedup.call(req),
            }
        } else {
            ResponseFuture::Off {
                future: dedup.get_mut().call(req),
            }
        }
    }
}

impl<S: Clone> Clone for Dedups<S> {
    fn clone(&self) -> Self {
        Dedups {
            groups: self.groups.clone(),
            routes: self.routes.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Dedups<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dedups")
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

/// The upstream-side stats layer (switched with [`LayerName::Stats`]) over
/// the body buffer and the inner service.
pub type Upstream<S> = Bypass<UpstreamService<Buffer<S>, ClassOf, ClassKey, ServerErrors>>;
/// The limit layer over [`Upstream`].
pub type Limited<S> = Bypass<Limit<Upstream<S>, ClassOf, CallerIdentity, ClientAddress>>;
/// The breaker layer over [`Limited`].
pub type Guarded<S> = Bypass<Breaker<Limited<S>, ClassOf, ServerErrors>>;
/// The dedup layer over [`Guarded`].
pub type Deduped<S> = Dedups<Guarded<S>>;
/// The cache layer over [`Deduped`].
pub type Cached<S> =
    Bypass<Cache<Deduped<S>, ClassKey, Response<SharedBody>, HttpCachePolicy, ClassOf>>;
/// The client-side stats layer over [`Cached`] (passed by poll loops'
/// fetches, which are not client requests).
pub type Counted<S> = Bypass<StatsService<Cached<S>, ClassOf, ServerErrors>>;
/// Who subscribes to the registry, for its budgets: the rollout's caller
/// identity and the client address.
pub type Subscribers = (CallerIdentity, ClientAddress);
/// The whole coordinated path: the registry over [`Counted`].
pub type Stack<S> = Bypass<
    Registry<
        Counted<S>,
        ClassKey,
        ClassOf,
        HttpShare,
        HttpFingerprint,
        ClassKey,
        Subscribers,
        ServerErrors,
    >,
>;
