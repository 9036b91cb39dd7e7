//! The response future of [`Limit`](super::Limit).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

use pin_project_lite::pin_project;
use tower_service::Service;

use super::{
    caller::Slots,
    state::{Permit, Wait},
};
use crate::error::{boxed, BoxError};

pin_project! {
    /// Response future of [`Limit`](super::Limit).
    ///
    /// Holds its class's permit (and its calls in its caller's and client
    /// address's shares) while the inner call runs, and gives them back as
    /// soon as the call completes, or when the future is dropped, or when
    /// the inner future panics. A request that found every permit taken waits
    /// here, in its class's queue, with the inner service that was made ready
    /// for it.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        kind: Kind<S, Req>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, Req>
    where
        S: Service<Req>,
    {
        Running { #[pin] fut: S::Future, held: Held },
        // Boxed: only a request that queues needs it (with the service and
        // the request), and an admitted one should not carry its size.
        Waiting { waiting: Box<Waiting<S, Req>> },
        Rejected { err: Option<BoxError> },
    }
}

/// A request waiting in its class's queue, with the inner service made
/// ready for it.
struct Waiting<S, Req> {
    wait: Wait,
    call: Option<(S, Req)>,
    slots: Option<Box<Slots>>,
}

/// What a running call holds, given back together when released or
/// dropped.
pub(super) struct Held {
    /// `None` for a class without a concurrency limit.
    permit: Option<Permit>,
    /// `None` when the class caps neither callers nor addresses.
    slots: Option<Box<Slots>>,
}

impl Held {
    pub(super) fn new(permit: Option<Permit>, slots: Option<Box<Slots>>) -> Self {
        Held { permit, slots }
    }

    /// Gives everything back now. Field by field, so that the common case
    /// (a permit, no slots) costs what the permit alone did.
    #[inline]
    fn release(&mut self) {
        self.permit.take();
        if self.slots.is_some() {
            self.slots.take();
        }
    }
}

impl<S, Req> ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    pub(super) fn running(fut: S::Future, held: Held) -> Self {
        Self::with(Kind::Running { fut, held })
    }

    pub(super) fn waiting(wait: Wait, svc: S, req: Req, slots: Option<Box<Slots>>) -> Self {
        Self::with(Kind::Waiting {
            waiting: Box::new(Waiting {
                wait,
                call: Some((svc, req)),
                slots,
            }),
        })
    }

    pub(super) fn rejected(err: BoxError) -> Self {
        Self::with(Kind::Rejected { err: Some(err) })
    }

    fn with(kind: Kind<S, Req>) -> Self {
        ResponseFuture { kind }
    }
}

/// Gives the permit and slots back if polling the inner future unwinds,
/// even when the panic is caught and this future is kept.
struct ReleaseOnUnwind<'a>(&'a mut Held);

impl Drop for ReleaseOnUnwind<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl<S, Req> ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    /// Moves a waiting request on once its permit comes (to `Running`), or
    /// ends a rejected one with its error. Out of line, so that `poll`'s
    /// running path stays small.
    #[inline(never)]
    fn advance(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let mut kind = self.project().kind;
        match kind.as_mut().project() {
            KindProj::Running { .. } => Poll::Ready(Ok(())),
            KindProj::Waiting { waiting } => {
                let permit = match ready!(waiting.wait.as_mut().poll(cx)) {
                    Ok(permit) => permit,
                    Err(err) => return Poll::Ready(Err(boxed(err))),
                };
                let (mut svc, req) = waiting.call.take().expect("a request is sent once");
                let held = Held::new(Some(permit), waiting.slots.take());
                // If `call` panics, the permit is dropped, and so given back.
                let fut = svc.call(req);
                kind.set(Kind::Running { fut, held });
                Poll::Ready(Ok(()))
            }
            KindProj::Rejected { err } => {
                Poll::Ready(Err(err.take().expect("polled after completion")))
            }
        }
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    // Always inlined, as `Limit::call` is, for the same reason: its
    // running path is a few lines; the rest is out of line in `advance`.
    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            if let KindProj::Running { fut, held } = self.as_mut().project().kind.project() {
                let guard = ReleaseOnUnwind(&mut *held);
                let out = fut.poll(cx);
                // Not unwinding: keep the permit until the call completes.
                std::mem::forget(guard);
                let out = ready!(out);
                // Given back on completion, not when the caller gets round
                // to dropping this future.
                held.release();
                return Poll::Ready(out.map_err(Into::into));
            }
            if let Err(err) = ready!(self.as_mut().advance(cx)) {
                return Poll::Ready(Err(err));
            }
        }
    }
}

impl<S, Req> fmt::Debug for ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Running { .. } => "running",
            Kind::Waiting { .. } => "waiting",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}
