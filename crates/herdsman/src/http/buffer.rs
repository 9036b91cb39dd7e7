use std::{
    collections::VecDeque,
    fmt,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::{Buf, Bytes, BytesMut};
use http::{header, response::Parts, HeaderMap, Method, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::HttpBody;
use crate::error::BoxError;

/// Bodies up to this many bytes are buffered (1 MiB).
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// Buffers response bodies so that a coordinating layer above can share them.
///
/// Responses to `GET` and `HEAD` are read whole into memory, up to the limit.
/// Bodies over the limit, responses whose `Content-Length` is over it, and
/// event streams (`text/event-stream`, asked for or answered) are streamed to
/// their own caller unbuffered. Responses to other methods are never buffered.
///
/// An error while reading a buffered body is returned as the response's error.
#[derive(Debug, Clone, Copy)]
pub struct BufferLayer {
    limit: usize,
}

impl BufferLayer {
    /// Buffers up to [`DEFAULT_BODY_LIMIT`] bytes.
    pub fn new() -> Self {
        BufferLayer {
            limit: DEFAULT_BODY_LIMIT,
        }
    }

    /// Buffers up to `limit` bytes; larger bodies stream to their own caller.
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }
}

impl Default for BufferLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for BufferLayer {
    type Service = Buffer<S>;

    fn layer(&self, inner: S) -> Buffer<S> {
        Buffer {
            inner,
            limit: self.limit,
        }
    }
}

/// Buffers response bodies; see [`BufferLayer`].
#[derive(Debug, Clone)]
pub struct Buffer<S> {
    inner: S,
    limit: usize,
}

impl<S> Buffer<S> {
    /// Wraps `inner` with the default limit.
    pub fn new(inner: S) -> Self {
        BufferLayer::new().layer(inner)
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

/// Whether the header `name` of `headers` names an event stream: checked
/// on every request's `Accept` (and every response's `Content-Type`), so
/// compared in place, without a lowercase copy.
pub(super) fn is_event_stream(headers: &HeaderMap, name: header::HeaderName) -> bool {
    const EVENT_STREAM: &[u8] = b"text/event-stream";
    headers.get(name).is_some_and(|value| {
        let value = value.as_bytes().trim_ascii_start();
        value
            .get(..EVENT_STREAM.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(EVENT_STREAM))
    })
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Buffer<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ResB: Body,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<HttpBody<ResB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let head = req.method() == Method::HEAD;
        let buffer = (head || req.method() == Method::GET)
            && !is_event_stream(req.headers(), header::ACCEPT);
        ResponseFuture {
            fut: self.inner.call(req),
            limit: self.limit,
            buffer,
            head,
            reading: None,
        }
    }
}

pin_project! {
    /// Response future of [`Buffer`].
    pub struct ResponseFuture<F, B> {
        #[pin]
        fut: F,
        limit: usize,
        buffer: bool,
        // A HEAD response has no body, whatever its Content-Length says.
        head: bool,
        reading: Option<Reading<B>>,
    }
}

struct Reading<B> {
    parts: Parts,
    body: Pin<Box<B>>,
    chunks: VecDeque<Bytes>,
    size: usize,
    trailers: Option<HeaderMap>,
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<HttpBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            if let Some(reading) = this.reading.as_mut() {
                match ready!(reading.body.as_mut().poll_frame(cx)) {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(mut data) => {
                            let data = data.copy_to_bytes(data.remaining());
                            reading.size += data.len();
                            reading.chunks.push_back(data);
                            if reading.size > *this.limit {
                                let r = this.reading.take().expect("reading");
                                let body = HttpBody::partial_pinned(r.chunks, r.body);
                                return Poll::Ready(Ok(Response::from_parts(r.parts, body)));
                            }
                        }
                        Err(frame) => {
                            if let Ok(trailers) = frame.into_trailers() {
                                reading.trailers = Some(trailers);
                            }
                        }
                    },
                    Some(Err(err)) => {
                        *this.reading = None;
                        return Poll::Ready(Err(err.into()));
                    }
                    None => {
                        let r = this.reading.take().expect("reading");
                        let data = concat(r.chunks, r.size);
                        let body = HttpBody::buffered(data, r.trailers);
                        return Poll::Ready(Ok(Response::from_parts(r.parts, body)));
                    }
                }
                continue;
            }
            let response = ready!(this.fut.as_mut().poll(cx)).map_err(Into::into)?;
            let too_long = !*this.head
                && response
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .is_some_and(|len| len > *this.limit as u64);
            if !*this.buffer
                || too_long
                || is_event_stream(response.headers(), header::CONTENT_TYPE)
            {
                return Poll::Ready(Ok(response.map(HttpBody::streaming)));
            }
            let (parts, body) = response.into_parts();
            *this.reading = Some(Reading {
                parts,
                body: Box::pin(body),
                chunks: VecDeque::new(),
                size: 0,
                trailers: None,
            });
        }
    }
}

fn concat(mut chunks: VecDeque<Bytes>, size: usize) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop_front().expect("one chunk"),
        _ => {
            let mut all = BytesMut::with_capacity(size);
            for chunk in chunks {
                all.extend_from_slice(&chunk);
            }
            all.freeze()
        }
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("limit", &self.limit)
            .field("buffer", &self.buffer)
            .field("reading", &self.reading.is_some())
            .finish_non_exhaustive()
    }
}
