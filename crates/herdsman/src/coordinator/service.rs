use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::{
    handle::Shared,
    layer::Stack,
    route::Routes,
    routed::{self, Routed},
};
use crate::{
    error::BoxError,
    http::{HttpBody, SharedBody},
    registry::{SubscribeOptions, Subscription, TooManySubscribers},
    switch::{Either, Rollout, Switch, Switched},
};

/// A service behind a [`Coordinator`](super::Coordinator)'s whole stack:
/// made by [`CoordinatorLayer`](super::CoordinatorLayer).
///
/// Each request goes, as a [`Switched`] decides:
///
/// - if the whole-stack switch is off, or the [rollout](crate::switch::Rollout)
///   does not admit its caller, straight to the inner service (its
///   response body wrapped, unread, in [`HttpBody`]: [`Plain`]);
/// - otherwise into the stack: [`Classified`] classifies it and computes
///   its key once, then Registry → Stats → Cache → Dedup → Breaker → Limit
///   → upstream Stats → body buffer → inner service, each layer passing it
///   straight on when its switch for the class is off.
///
/// Because the path is chosen in `call`, `poll_ready` drives both the stack
/// and the plain inner service to readiness (as [`Switched`] does). Errors
/// of the layers ([`BreakerOpen`](crate::breaker::BreakerOpen),
/// [`Overloaded`](crate::limit::Overloaded), ...) come out as [`BoxError`];
/// [`error_response`](crate::http::error_response) maps them to responses.
pub struct Coordinated<S> {
    switched: Switched<Stack<S>, Plain<S>, (Switch, Rollout)>,
    shared: Arc<Shared>,
    following: bool,
}

impl<S> Coordinated<S> {
    pub(crate) fn new(stack: Stack<S>, plain: S, shared: Arc<Shared>) -> Self {
        let following = shared.following.load(std::sync::atomic::Ordering::Acquire);
        let gate = (shared.stack.clone(), shared.rollout.clone());
        Coordinated {
            switched: Switched::new(stack, Plain { inner: plain }, gate),
            shared,
            following,
        }
    }

    /// The inner service, as the plain path calls it.
    pub fn get_ref(&self) -> &S {
        &self.switched.off_ref().inner
    }
}

impl<S> Coordinated<S> {
    /// Subscribes to the key of `req` in the coordinator's registry, at the
    /// interval of its endpoint class; see
    /// [`Registry::subscribe`](crate::registry::Registry::subscribe).
    pub fn subscribe<B, ResB>(
        &self,
        req: Request<B>,
    ) -> Result<Subscription<Response<SharedBody>>, TooManySubscribers>
    where
        S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
        B: Default + Send + 'static,
        ResB: Body<Data = Bytes> + Send + 'static,
        ResB::Error: Into<BoxError>,
    {
        self.subscribe_with(req, SubscribeOptions::new())
    }

    /// Subscribes to the key of `req` in the coordinator's registry; an
    /// interval not set in `options` is the class's. Must be called within
    /// a tokio runtime. The registry's switch turns off one-shot answers
    /// from the registry, not subscriptions.
    pub fn subscribe_with<B, ResB>(
        &self,
        req: Request<B>,
        options: SubscribeOptions,
    ) -> Result<Subscription<Response<SharedBody>>, TooManySubscribers>
    where
        S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
        B: Default + Send + 'static,
        ResB: Body<Data = Bytes> + Send + 'static,
        ResB::Error: Into<BoxError>,
    {
        self.shared.follow();
        let registry = self.switched.on_ref().get_ref();
        registry.subscribe_with(req.map(Routed::new), options)
    }
}

impl<S, B, ResB> Service<Request<B>> for Coordinated<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Default + Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<HttpBody<ResB>>;
    type Error = BoxError;
    type Future = Either<<Stack<S> as Service<Request<B>>>::Future, PlainFuture<S::Future>>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.switched.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Request<B>) -> Self::Future {
        if !self.following {
            self.following = self.shared.follow();
        }
        self.switched.call(req)
    }
}

impl<S: Clone> Clone for Coordinated<S> {
    fn clone(&self) -> Self {
        Coordinated {
            switched: self.switched.clone(),
            shared: self.shared.clone(),
            following: self.following,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Coordinated<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinated")
            .field("inner", self.get_ref())
            .finish_non_exhaustive()
    }
}

/// The entry of a [`Coordinator`](super::Coordinator)'s stack: classifies
/// each request once and computes its class's key once, and carries both
/// with its body ([`Routed`]), where every layer below reads them (through
/// [`ClassOf`](super::ClassOf) and [`ClassKey`](super::ClassKey)).
pub struct Classified<S> {
    inner: S,
    routes: Arc<Routes>,
}

impl<S> Classified<S> {
    pub(crate) fn new(inner: S, routes: Arc<Routes>) -> Self {
        Classified { inner, routes }
    }

    /// The inner service: the stack's registry.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, B> Service<Request<B>> for Classified<S>
where
    S: Service<Request<Routed<B>>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> S::Future {
        let route = self.routes.of_path(req.uri().path()).clone();
        self.inner.call(routed::carry(req, route))
    }
}

impl<S: Clone> Clone for Classified<S> {
    fn clone(&self) -> Self {
        Classified {
            inner: self.inner.clone(),
            routes: self.routes.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Classified<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classified")
            .field("inner", &self.inner)
            .field("routes", &self.routes)
            .finish()
    }
}

/// The plain path of a [`Coordinated`] service: the inner service, its
/// response body wrapped unread in [`HttpBody`].
#[derive(Clone, Debug)]
pub struct Plain<S> {
    inner: S,
}

impl<S, B, ResB> Service<Request<B>> for Plain<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
{
    type Response = Response<HttpBody<ResB>>;
    type Error = S::Error;
    type Future = PlainFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Request<B>) -> Self::Future {
        PlainFuture {
            inner: self.inner.call(req),
        }
    }
}

pin_project! {
    /// The response future of [`Plain`].
    #[derive(Debug)]
    pub struct PlainFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, ResB, E> Future for PlainFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = Result<Response<HttpBody<ResB>>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project()
            .inner
            .poll(cx)
            .map_ok(|response| response.map(HttpBody::streaming))
    }
}

#[cfg(test)]
mod tests {
    use std::{
        convert::Infallible,
        sync::atomic::{AtomicUsize, Ordering::SeqCst},
    };

    use http::StatusCode;
    use http_body_util::Full;
    use tower::{service_fn, Layer, ServiceExt};

    use super::*;
    use crate::{
        config::{ClassConfig, Config, Environment},
        Coordinator,
    };

    #[tokio::test(start_paused = true)]
    async fn the_cache_keys_a_conditional_request_without_the_validators_its_carried_key_has() {
        let mut config = Config::profile(Environment::Test);
        let users = ClassConfig {
            paths: vec!["/users".into()],
            public: true,
            ..Default::default()
        };
        config.classes.insert("users".into(), users);
        let coordinator = Coordinator::builder()
            .environment(Environment::Test)
            .config(config)
            .build()
            .unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let svc = coordinator
            .layer()
            .layer(service_fn(move |_: Request<Full<Bytes>>| {
                counter.fetch_add(1, SeqCst);
                let response = Response::builder()
                    .header("etag", "\"v1\"")
                    .header("cache-control", "max-age=60")
                    .body(Full::new(Bytes::from_static(b"hi")))
                    .unwrap();
                async move { Ok::<_, Infallible>(response) }
            }));
        let get = || Request::get("/users").body(Full::default()).unwrap();
        svc.clone().oneshot(get()).await.unwrap();

        // Its carried key holds `If-None-Match`; the cache's must not.
        let mut conditional = get();
        conditional
            .headers_mut()
            .insert("if-none-match", "\"v1\"".parse().unwrap());
        let response = svc.clone().oneshot(conditional).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(calls.load(SeqCst), 1, "answered from the cache");
    }
}
