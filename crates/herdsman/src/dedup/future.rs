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
    backend::{FlightBackend, Lead, LocalFlights},
    error::{boxed, BoxError, SharedError},
    share::Share,
};

type Shared<S, Req, P> = <P as Share<<S as Service<Req>>::Response>>::Shared;

/// The flight backend's answer, awaited by a leader.
type Claim<V> = Pin<Box<dyn Future<Output = Lead<V>> + Send>>;

pin_project! {
    /// Response future of [`Dedup`](super::Dedup).
    ///
    /// A caller is either the driver of its key's call (it polls the inner
    /// future, once the flight backend let it), a follower (parked until the
    /// driver publishes the outcome, or until it is handed the call because
    /// the driver was dropped), or passes through uncoordinated.
    pub struct ResponseFuture<S, Req, P, B = LocalFlights>
    where
        S: Service<Req>,
        P: Share<S::Response>,
    {
        #[pin]
        kind: Kind<S, Req, P>,
        share: P,
        backend: B,
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
        // Boxed: only a leader whose flight backend answers later needs it,
        // and every other caller's future should not carry its size.
        Claiming { claiming: Box<Claiming<S, Req, Shared<S, Req, P>>> },
        Following {
            follower: Follower<S::Future, Shared<S, Req, P>>,
            retry: Option<(S, Req)>,
        },
        Retrying { svc: S, req: Option<Req> },
        Ready { result: Option<Result<S::Response, BoxError>> },
    }
}

/// A leader waiting for the flight backend's answer.
struct Claiming<S: Service<Req>, Req, V> {
    // Taken when the call starts.
    driver: Option<Driver<S::Future, V>>,
    claim: Claim<V>,
    call: Option<(S, Req)>,
}

impl<S, Req, P, B> ResponseFuture<S, Req, P, B>
where
    S: Service<Req>,
    P: Share<S::Response>,
{
    pub(super) fn passthrough(fut: S::Future, share: P, backend: B) -> Self {
        ResponseFuture {
            kind: Kind::Passthrough { fut },
            share,
            backend,
        }
    }

    pub(super) fn leading(
        driver: Driver<S::Future, Shared<S, Req, P>>,
        share: P,
        backend: B,
    ) -> Self {
        ResponseFuture {
            kind: Kind::Leading { driver },
            share,
            backend,
        }
    }

    /// A leader waiting for the flight backend's answer, with the (ready)
    /// inner service and the request to call it with.
    pub(super) fn claiming(
        mut driver: Driver<S::Future, Shared<S, Req, P>>,
        claim: Claim<Shared<S, Req, P>>,
        call: (S, Req),
        share: P,
        backend: B,
    ) -> Self {
        driver.defer();
        ResponseFuture {
            kind: Kind::Claiming {
                claiming: Box::new(Claiming {
                    driver: Some(driver),
                    claim,
                    call: Some(call),
                }),
            },
            share,
            backend,
        }
    }

    pub(super) fn following(
        follower: Follower<S::Future, Shared<S, Req, P>>,
        retry: (S, Req),
        share: P,
        backend: B,
    ) -> Self {
        ResponseFuture {
            kind: Kind::Following {
                follower,
                retry: Some(retry),
            },
            share,
            backend,
        }
    }

    pub(super) fn ready(result: Result<S::Response, BoxError>, share: P, backend: B) -> Self {
        ResponseFuture {
            kind: Kind::Ready {
                result: Some(result),
            },
            share,
            backend,
        }
    }
}

impl<S, Req, P, B> Future for ResponseFuture<S, Req, P, B>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    P: Share<S::Response>,
    B: FlightBackend<P::Shared>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.kind.as_mut().project() {
                KindProj::Passthrough { fut } => return fut.poll(cx).map_err(Into::into),
                KindProj::Leading { driver } => {
                    let out = ready!(driver.poll(cx));
                    return Poll::Ready(finish(driver, out, this.share, this.backend));
                }
                KindProj::Claiming { claiming } => match ready!(claiming.claim.as_mut().poll(cx)) {
                    Lead::Call => {
                        let mut driver = claiming.driver.take().expect("the call starts once");
                        let (mut svc, req) = claiming.call.take().expect("the call starts once");
                        // If `call` panics, dropping the driver tells the
                        // followers.
                        driver.resume();
                        driver.start(Box::pin(svc.call(req)));
                        this.kind.set(Kind::Leading { driver });
                    }
                    Lead::Answered(value) => {
                        let driver = claiming.driver.as_mut().expect("answered once");
                        return Poll::Ready(Ok(answered(driver, value, this.share)));
                    }
                },
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

/// Hands another replica's answer to the followers and returns the
/// leader's copy.
fn answered<T, P: Share<T>>(
    driver: &mut Driver<impl Future + Send + 'static, P::Shared>,
    value: P::Shared,
    share: &P,
) -> T {
    let mine = share.unshare(&value);
    driver.finish(Outcome::Ok(value), |kept| share.held_bytes(kept));
    mine
}

/// Publishes the driver's outcome (to the flight backend too) and returns
/// the driver's own result.
fn finish<T, E, P, B>(
    driver: &mut Driver<impl Future + Send + 'static, P::Shared>,
    out: Result<Result<T, E>, super::error::Panicked>,
    share: &P,
    backend: &B,
) -> Result<T, BoxError>
where
    E: Into<BoxError>,
    P: Share<T>,
    B: FlightBackend<P::Shared>,
{
    let err = match out {
        Ok(Ok(value)) => {
            if !backend.answers() && driver.finish_alone() {
                return Ok(value);
            }
            return match share.share(value) {
                Ok(shared) => {
                    backend.finish(driver.key(), Some(&shared));
                    let mine = share.unshare(&shared);
                    driver.finish(Outcome::Ok(shared), |kept| share.held_bytes(kept));
                    Ok(mine)
                }
                Err(value) => {
                    backend.finish(driver.key(), None);
                    driver.finish(Outcome::NotShared, |_| 0);
                    Ok(value)
                }
            };
        }
        Ok(Err(err)) => SharedError::new(err),
        Err(panicked) => SharedError::new(boxed(panicked)),
    };
    backend.finish(driver.key(), None);
    driver.finish(Outcome::Err(err.clone()), |_| 0);
    Err(Box::new(err))
}

impl<S, Req, P, B> fmt::Debug for ResponseFuture<S, Req, P, B>
where
    S: Service<Req>,
    P: Share<S::Response>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Passthrough { .. } => "passthrough",
            Kind::Leading { .. } => "leading",
            Kind::Claiming { .. } => "claiming",
            Kind::Following { .. } => "following",
            Kind::Retrying { .. } => "retrying",
            Kind::Ready { .. } => "ready",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}
