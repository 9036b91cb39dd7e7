use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::{handle::Shared, route::Routed, stack::Stack};
use crate::{
    error::BoxError,
    http::{HttpBody, SharedBody},
    registry::{SubscribeOptions, Subscription, TooManySubscribers},
};

/// A service behind a [`Coordinator`](super::Coordinator)'s whole stack:
/// made by [`CoordinatorLayer`](super::CoordinatorLayer).
///
/// Each request is classified once (its class travels in its extensions),
/// then:
///
/// - if the whole-stack switch is off, or the [rollout](crate::switch::Rollout)
///   does not admit its caller, it goes straight to the inner service (its
///   response body wrapped, unread, in [`HttpBody`]);
/// - otherwise it goes down Registry → Stats → Cache → Dedup → Breaker →
///   Limit → upstream Stats → body buffer → inner service, each layer
///   skipped when its switch for the class is off.
///
/// Because the path is chosen in `call`, `poll_ready` drives both the stack
/// and the plain inner service to readiness (as [`Switched`](crate::switch::Switched)
/// does). Errors of the layers ([`BreakerOpen`](crate::breaker::BreakerOpen),
/// [`Overloaded`](crate::limit::Overloaded), ...) come out as [`BoxError`];
/// [`error_response`](crate::http::error_response) maps them to responses.
pub struct Coordinated<S> {
    stack: Stack<S>,
    plain: S,
    shared: Arc<Shared>,
    stack_ready: bool,
    plain_ready: bool,
    following: bool,
}

impl<S> Coordinated<S> {
    pub(crate) fn new(stack: Stack<S>, plain: S, shared: Arc<Shared>) -> Self {
        let following = shared.following.load(std::sync::atomic::Ordering::Acquire);
        Coordinated {
            stack,
            plain,
            shared,
            stack_ready: false,
            plain_ready: false,
            following,
        }
    }

    /// The coordinated path.
    pub fn stack(&self) -> &Stack<S> {
        &self.stack
    }

    /// The inner service, as the plain path calls it.
    pub fn get_ref(&self) -> &S {
        &self.plain
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
        self.stack.get_ref().subscribe_with(req, options)
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
    type Future = ResponseFuture<<Stack<S> as Service<Request<B>>>::Future, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if !self.stack_ready {
            ready!(self.stack.poll_ready(cx))?;
            self.stack_ready = true;
        }
        if !self.plain_ready {
            ready!(self.plain.poll_ready(cx)).map_err(Into::into)?;
            self.plain_ready = true;
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        assert!(
            self.stack_ready && self.plain_ready,
            "Coordinated::call before poll_ready returned Ready"
        );
        if !self.following {
            self.following = self.shared.follow();
        }
        let shared = &*self.shared;
        if shared.stack.is_on() && shared.rollout.admits_request(&req) {
            self.stack_ready = false;
            let route = shared.routes.of_path(req.uri().path()).clone();
            req.extensions_mut().insert(Routed { route });
            ResponseFuture {
                kind: Kind::Stack {
                    future: self.stack.call(req),
                },
            }
        } else {
            self.plain_ready = false;
            ResponseFuture {
                kind: Kind::Plain {
                    future: self.plain.call(req),
                },
            }
        }
    }
}

impl<S: Clone> Clone for Coordinated<S> {
    fn clone(&self) -> Self {
        // A clone has reserved nothing: it must be made ready itself.
        Coordinated {
            stack: self.stack.clone(),
            plain: self.plain.clone(),
            shared: self.shared.clone(),
            stack_ready: false,
            plain_ready: false,
            following: self.following,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Coordinated<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinated")
            .field("inner", &self.plain)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// The response future of [`Coordinated`].
    pub struct ResponseFuture<A, F> {
        #[pin]
        kind: Kind<A, F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<A, F> {
        Stack { #[pin] future: A },
        Plain { #[pin] future: F },
    }
}

impl<A, F, ResB, E> Future for ResponseFuture<A, F>
where
    A: Future<Output = Result<Response<HttpBody<ResB>>, BoxError>>,
    F: Future<Output = Result<Response<ResB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<HttpBody<ResB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Stack { future } => future.poll(cx),
            KindProj::Plain { future } => future
                .poll(cx)
                .map_ok(|response| response.map(HttpBody::streaming))
                .map_err(Into::into),
        }
    }
}

impl<A, F> fmt::Debug for ResponseFuture<A, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = match &self.kind {
            Kind::Stack { .. } => "stack",
            Kind::Plain { .. } => "plain",
        };
        f.debug_struct("ResponseFuture")
            .field("path", &path)
            .finish()
    }
}
