//! The response future of [`Dedup`](super::Dedup).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

use pin_project_lite::pin_project;
use tower_service::Service;

use super::state::{Driver, Follower, Outcome, Woken};
use crate::{
    error::{boxed, BoxError, SharedError},
    share::Share,
};

type Shared<S, Req, P> = <P as Share<<S as Service<Req>>::Response>>::Shared;

pin_project! {
    /// Response future of [`Dedup`](super::Dedup).
    ///
    /// A caller is either the driver of its key's call (it polls the inner
    /// future), a follower (parked until the driver publishes the outcome, or
    /// until it is handed the call because the driver was dropped), or passes
    /// through uncoordinated.
    pub struct ResponseFuture<S, Req, P>
    where
        S: Service<Req>,
        P: Share<S::Response>,
    {
        #[pin]
        kind: Kind<S, Req, P>,
        share: P,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, Req, P>
    where
        S: Service<Req>,
        P: Share<S::Response>,
    {
        Passthrough { #[pin] fut: S::Future },
        Leading { driver: Driver<S::Future, Shared<S, Req, P>> },
        Following {
            follower: Follower<S::Future, Shared<S, Req, P>>,
            retry: Option<(S, Req)>,
        },
        Retrying { svc: S, req: Option<Req> },
        Ready { result: Option<Result<S::Response, BoxError>> },
    }
}

impl<S, Req, P> ResponseFuture<S, Req, P>
where
    S: Service<Req>,
    P: Share<S::Response>,
{
    pub(super) fn passthrough(fut: S::Future, share: P) -> Self {
        ResponseFuture {
            kind: Kind::Passthrough { fut },
            share,
        }
    }

    pub(super) fn leading(driver: Driver<S::Future, Shared<S, Req, P>>, share: P) -> Self {
        ResponseFuture {
            kind: Kind::Leading { driver },
            share,
        }
    }

    pub(super) fn following(
        follower: Follower<S::Future, Shared<S, Req, P>>,
        retry: (S, Req),
        share: P,
    ) -> Self {
        ResponseFuture {
            kind: Kind::Following {
                follower,
                retry: Some(retry),
            },
            share,
        }
    }

    pub(super) fn ready(result: Result<S::Response, BoxError>, share: P) -> Self {
        ResponseFuture {
            kind: Kind::Ready {
                result: Some(result),
            },
            share,
        }
    }
}

impl<S, Req, P> Future for ResponseFuture<S, Req, P>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    P: Share<S::Response>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.kind.as_mut().project() {
                KindProj::Passthrough { fut } => return fut.poll(cx).map_err(Into::into),
                KindProj::Leading { driver } => {
                    let out = ready!(driver.poll(cx));
                    return Poll::Ready(finish(driver, out, this.share));
                }
                KindProj::Following { follower, retry } => match ready!(follower.poll(cx)) {
                    Woken::Outcome(outcome) => match &*outcome {
                        Outcome::Ok(shared) => return Poll::Ready(Ok(this.share.unshare(shared))),
                        Outcome::Err(err) => return Poll::Ready(Err(Box::new(err.clone()))),
                        Outcome::NotShared => {
                            let (svc, req) = retry.take().expect("retry is taken once");
                            this.kind.set(Kind::Retrying {
                                svc,
                                req: Some(req),
                            });
                        }
                    },
                    Woken::Promoted(driver) => this.kind.set(Kind::Leading { driver }),
                },
                KindProj::Retrying { svc, req } => {
                    if let Err(err) = ready!(svc.poll_ready(cx)) {
                        return Poll::Ready(Err(err.into()));
                    }
                    let fut = svc.call(req.take().expect("request is sent once"));
                    this.kind.set(Kind::Passthrough { fut });
                }
                KindProj::Ready { result } => {
                    return Poll::Ready(result.take().expect("polled after completion"))
                }
            }
        }
    }
}

/// Publishes the driver's outcome and returns the driver's own result.
fn finish<T, E, P>(
    driver: &mut Driver<impl Future + Send + 'static, P::Shared>,
    out: Result<Result<T, E>, super::error::Panicked>,
    share: &P,
) -> Result<T, BoxError>
where
    E: Into<BoxError>,
    P: Share<T>,
{
    let err = match out {
        Ok(Ok(value)) => {
            if driver.finish_alone() {
                return Ok(value);
            }
            return match share.share(value) {
                Ok(shared) => {
                    let mine = share.unshare(&shared);
                    driver.finish(Outcome::Ok(shared), |kept| share.held_bytes(kept));
                    Ok(mine)
                }
                Err(value) => {
                    driver.finish(Outcome::NotShared, |_| 0);
                    Ok(value)
                }
            };
        }
        Ok(Err(err)) => SharedError::new(err),
        Err(panicked) => SharedError::new(boxed(panicked)),
    };
    driver.finish(Outcome::Err(err.clone()), |_| 0);
    Err(Box::new(err))
}

impl<S, Req, P> fmt::Debug for ResponseFuture<S, Req, P>
where
    S: Service<Req>,
    P: Share<S::Response>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Passthrough { .. } => "passthrough",
            Kind::Leading { .. } => "leading",
            Kind::Following { .. } => "following",
            Kind::Retrying { .. } => "retrying",
            Kind::Ready { .. } => "ready",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}
