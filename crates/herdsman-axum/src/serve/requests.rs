//! The service one connection's requests go through: the client address
//! in the extensions, the body deadline, the request counted as in
//! progress until its response body is sent.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
    time::Duration,
};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request},
    http::{header, HeaderValue, StatusCode, Version},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use herdsman::http::TrustedProxies;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::{
    activity::{Activity, InFlight},
    error::BodyTimeout,
};

/// Wraps the application's service for one connection.
#[derive(Debug, Clone)]
pub(super) struct Requests<S> {
    inner: S,
    peer: SocketAddr,
    activity: Arc<Activity>,
    body_read_timeout: Duration,
    trusted_proxies: Arc<TrustedProxies>,
}

impl<S> Requests<S> {
    pub(super) fn new(
        inner: S,
        peer: SocketAddr,
        activity: Arc<Activity>,
        body_read_timeout: Duration,
        trusted_proxies: Arc<TrustedProxies>,
    ) -> Self {
        Requests {
            inner,
            peer,
            activity,
            body_read_timeout,
            trusted_proxies,
        }
    }
}

impl<S> Service<http::Request<Incoming>> for Requests<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = http::Response<Tracked>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.request(req.version());
        let (mut parts, body) = req.into_parts();
        let client = self.trusted_proxies.client_addr(self.peer, &parts.headers);
        parts.extensions.insert(ConnectInfo(self.peer));
        parts.extensions.insert(client);
        let (body, timed_out) = if body.is_end_stream() {
            (Body::new(body), None)
        } else {
            let timed_out = Arc::new(AtomicBool::new(false));
            let body = Deadline::new(body, self.body_read_timeout, Arc::clone(&timed_out));
            (Body::new(body), Some(timed_out))
        };
        let version = parts.version;
        ResponseFuture {
            inner: self.inner.call(Request::from_parts(parts, body)),
            in_flight: Some(in_flight),
            timed_out,
            version,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of [`Requests`]: the application's, or `408` if the
    /// request body missed its deadline.
    #[derive(Debug)]
    pub(super) struct ResponseFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
        // Set by the request body's deadline; none for an empty body.
        timed_out: Option<Arc<AtomicBool>>,
        version: Version,
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<http::Response<Tracked>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = ready!(this.inner.poll(cx));
        if this
            .timed_out
            .as_ref()
            .is_some_and(|t| t.load(Ordering::Acquire))
        {
            response = request_timeout(*this.version);
        }
        let in_flight = this.in_flight.take();
        Poll::Ready(Ok(response.map(|body| Tracked { body, in_flight })))
    }
}

/// `408`, and for HTTP/1 the end of the connection rather than reading
/// the rest of a late body.
fn request_timeout(version: Version) -> Response {
    let mut response = (StatusCode::REQUEST_TIMEOUT, BodyTimeout.to_string()).into_response();
    if version < Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

pin_project_lite::pin_project! {
    /// A request body that fails with [`BodyTimeout`] when it is not
    /// whole `timeout` after it was first read. The clock starts at the
    /// first read, not at the head: until the handler reads, the server
    /// does not read the socket either (nor sends `100 Continue`), and a
    /// client cannot be blamed for a body the server did not take.
    struct Deadline {
        #[pin]
        body: Incoming,
        #[pin]
        sleep: Sleep,
        timeout: Duration,
        started: bool,
        timed_out: Arc<AtomicBool>,
    }
}

impl Deadline {
    fn new(body: Incoming, timeout: Duration, timed_out: Arc<AtomicBool>) -> Self {
        Deadline {
            body,
            // Set again at the first read.
            sleep: tokio::time::sleep(timeout),
            timeout,
            started: false,
            timed_out,
        }
    }
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        if this.timed_out.load(Ordering::Acquire) {
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        if !*this.started {
            *this.started = true;
            this.sleep.as_mut().reset(Instant::now() + *this.timeout);
        }
        if let Poll::Ready(frame) = this.body.poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        ready!(this.sleep.poll(cx));
        this.timed_out.store(true, Ordering::Release);
        Poll::Ready(Some(Err(BodyTimeout.into())))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in progress until
    /// hyper is done with it.
    #[derive(Debug)]
    pub(super) struct Tracked {
        #[pin]
        body: Body,
        in_flight: Option<InFlight>,
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
