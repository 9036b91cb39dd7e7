use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use pin_project_lite::pin_project;
use tower_service::Service;

use crate::error::BoxError;

pin_project! {
    /// One of two services or futures, as tower's `util::Either` (without
    /// its `util` feature): the one way a request goes down one of two
    /// paths, whose errors both come out as [`BoxError`].
    ///
    /// As a future it is the response future of [`Switched`](super::Switched)
    /// (and so of the [`Coordinated`](crate::Coordinated) stack). As a
    /// service it calls whichever service it holds.
    #[project = EitherProj]
    #[allow(missing_docs)] // the variants' one field, `inner`
    #[derive(Debug, Clone, Copy)]
    pub enum Either<A, B> {
        /// The first (`inner`): the coordinated path of a switch.
        Left { #[pin] inner: A },
        /// The second (`inner`): the plain path.
        Right { #[pin] inner: B },
    }
}

impl<A, B> Either<A, B> {
    /// The first of the two.
    pub fn left(inner: A) -> Self {
        Either::Left { inner }
    }

    /// The second of the two.
    pub fn right(inner: B) -> Self {
        Either::Right { inner }
    }
}

impl<A, B, T, EA, EB> Future for Either<A, B>
where
    A: Future<Output = Result<T, EA>>,
    B: Future<Output = Result<T, EB>>,
    EA: Into<BoxError>,
    EB: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            EitherProj::Left { inner } => inner.poll(cx).map_err(Into::into),
            EitherProj::Right { inner } => inner.poll(cx).map_err(Into::into),
        }
    }
}

impl<A, B, Req> Service<Req> for Either<A, B>
where
    A: Service<Req>,
    A::Error: Into<BoxError>,
    B: Service<Req, Response = A::Response>,
    B::Error: Into<BoxError>,
{
    type Response = A::Response;
    type Error = BoxError;
    type Future = Either<A::Future, B::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Either::Left { inner } => inner.poll_ready(cx).map_err(Into::into),
            Either::Right { inner } => inner.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self {
            Either::Left { inner } => Either::left(inner.call(req)),
            Either::Right { inner } => Either::right(inner.call(req)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{service_fn, ServiceExt};

    #[tokio::test]
    async fn either_calls_the_service_it_holds_and_boxes_its_errors() {
        let double = service_fn(|n: u32| async move { Ok::<_, Infallible>(n * 2) });
        let fail = service_fn(|_: u32| async move { Err::<u32, _>("no") });
        let pick = |left: bool| {
            if left {
                Either::left(double)
            } else {
                Either::right(fail)
            }
        };
        assert_eq!(pick(true).oneshot(21).await.unwrap(), 42);
        assert_eq!(pick(false).oneshot(21).await.unwrap_err().to_string(), "no");
    }
}
