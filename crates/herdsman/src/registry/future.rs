//! The response future of [`Registry`](super::Registry)'s one-shot calls.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use pin_project_lite::pin_project;

use crate::error::BoxError;

pin_project! {
    /// Response future of a one-shot call through
    /// [`Registry`](super::Registry): answered from a live poll loop's fresh
    /// value, or the inner service's future.
    pub struct ResponseFuture<F, T> {
        #[pin]
        kind: Kind<F, T>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, T> {
        Inner { #[pin] fut: F },
        Ready { value: Option<T> },
    }
}

impl<F, T> ResponseFuture<F, T> {
    pub(super) fn inner(fut: F) -> Self {
        ResponseFuture {
            kind: Kind::Inner { fut },
        }
    }

    pub(super) fn ready(value: T) -> Self {
        ResponseFuture {
            kind: Kind::Ready { value: Some(value) },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { fut } => fut.poll(cx).map_err(Into::into),
            KindProj::Ready { value } => {
                Poll::Ready(Ok(value.take().expect("polled after completion")))
            }
        }
    }
}

impl<F, T> fmt::Debug for ResponseFuture<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { .. } => "inner",
            Kind::Ready { .. } => "ready",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}
