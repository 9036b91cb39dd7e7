//! The response future and the guard that records on completion or drop.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{atomic::Ordering::Relaxed, Arc},
    task::{ready, Context, Poll},
};

use pin_project_lite::pin_project;

use super::{
    recorder::{ClassRecorder, ErrorKind},
    scope::{Answer, Scope},
};
use crate::{
    error::BoxError,
    event::Rejection,
    failure::{FailureClassifier, Verdict},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Upstream,
}

/// Records the outcome of one request; a request dropped before it
/// completed is counted as cancelled (client side) and leaves in-flight.
pub(crate) struct Guard {
    rec: Arc<ClassRecorder>,
    start: u64,
    side: Side,
    done: bool,
    /// Client side: what answered the request so far.
    answer: Answer,
}

impl Guard {
    pub(crate) fn new(rec: Arc<ClassRecorder>, start: u64, side: Side) -> Self {
        Guard {
            rec,
            start,
            side,
            done: false,
            answer: Answer::Forwarded,
        }
    }

    /// A client request whose answer so far is `answer` (what the events
    /// during its `call` said).
    pub(crate) fn client(rec: Arc<ClassRecorder>, start: u64, answer: Answer) -> Self {
        Guard {
            rec,
            start,
            side: Side::Client,
            done: false,
            answer,
        }
    }

    fn finish_error(&mut self, kind: ErrorKind) {
        self.done = true;
        let rec = &*self.rec;
        rec.latency
            .record(rec.clock.now().saturating_sub(self.start));
        rec.answered(self.answer);
        rec.error(kind);
    }

    #[inline(never)]
    fn finish<T>(&mut self, result: &Result<T, BoxError>, verdict: impl FnOnce() -> Verdict) {
        self.done = true;
        let rec = &*self.rec;
        let elapsed = rec.clock.now().saturating_sub(self.start);
        match self.side {
            Side::Client => {
                rec.latency.record(elapsed);
                rec.answered(self.answer);
                match result {
                    Err(err) => rec.error(ErrorKind::of(&**err)),
                    Ok(_) if verdict() == Verdict::Failure => rec.error(ErrorKind::Upstream),
                    Ok(_) => {}
                }
            }
            Side::Upstream => {
                rec.upstream_latency.record(elapsed);
                rec.upstream_in_flight.fetch_sub(1, Relaxed);
                if result.is_err() || verdict() == Verdict::Failure {
                    rec.upstream_errors.fetch_add(1, Relaxed);
                }
            }
        }
    }
}

/// One client request served outside the Stats layer (an SSE or polling
/// endpoint answering from the Registry, say), from [`Stats::start`]:
/// counted as a request and in flight now; [`ok`](Recording::ok),
/// [`error`](Recording::error) or [`rejected`](Recording::rejected) records
/// its latency and outcome; dropped without any, it counts as cancelled.
///
/// It counts as `forwarded` in the saving unless
/// [`from_poll_loop`](Recording::from_poll_loop) says a shared poll loop's
/// value answered it.
///
/// ```
/// use herdsman::{class::Class, stats::Stats};
///
/// let stats = Stats::new();
/// let class = Class::new("active-users");
/// stats.start(&class).from_poll_loop().ok(); // a poll answered from the registry
/// let e = &stats.snapshot().endpoints["active-users"];
/// assert_eq!((e.requests, e.saved.poll_loop, e.forwarded), (1, 1, 0));
/// ```
///
/// [`Stats::start`]: super::Stats::start
pub struct Recording {
    guard: Guard,
}

impl Recording {
    pub(crate) fn new(guard: Guard) -> Self {
        Recording { guard }
    }

    /// The answer (or the error) comes from a shared poll loop's value, such
    /// as a Registry subscription's latest update: the request made no call
    /// of its own, and counts in `saved.poll_loop`.
    #[must_use = "a recording dropped without an outcome counts as cancelled"]
    pub fn from_poll_loop(mut self) -> Self {
        self.guard.answer = Answer::PollLoop;
        self
    }

    /// The request succeeded.
    pub fn ok(mut self) {
        self.guard.finish::<()>(&Ok(()), || Verdict::Success);
    }

    /// The request failed with `kind`.
    pub fn error(mut self, kind: ErrorKind) {
        self.guard.finish_error(kind);
    }

    /// The request was refused locally for `reason` (such as a
    /// [`Rejection::Subscription`] refused by one of the Registry's
    /// budgets): counted as a rejection, not as an error, so it never feeds
    /// the error-rate alert.
    pub fn rejected(mut self, reason: Rejection) {
        self.guard.rec.rejected(reason);
        self.guard.finish::<()>(&Ok(()), || Verdict::Success);
    }

    /// The request was refused by a layer that reported the rejection to
    /// these stats itself (the Registry reports each subscription it
    /// refuses): finished as [`rejected`](Self::rejected) finishes, without
    /// counting the rejection a second time.
    pub fn refused(mut self) {
        self.guard.finish::<()>(&Ok(()), || Verdict::Success);
    }
}

impl fmt::Debug for Recording {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recording")
            .field("class", &self.guard.rec.class)
            .finish()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        match self.side {
            Side::Client => {
                self.rec.answered(self.answer);
                self.rec.cancelled.fetch_add(1, Relaxed);
            }
            Side::Upstream => {
                self.rec.upstream_in_flight.fetch_sub(1, Relaxed);
            }
        }
    }
}

pin_project! {
    /// Response future of [`StatsService`](super::StatsService) and
    /// [`UpstreamService`](super::UpstreamService).
    pub struct ResponseFuture<Fut, F> {
        #[pin]
        inner: Fut,
        // `None` for a request the layer is switched off for: not recorded.
        guard: Option<Guard>,
        failures: F,
    }
}

impl<Fut, F> ResponseFuture<Fut, F> {
    pub(crate) fn new(inner: Fut, guard: Guard, failures: F) -> Self {
        ResponseFuture {
            inner,
            guard: Some(guard),
            failures,
        }
    }

    pub(crate) fn passthrough(inner: Fut, failures: F) -> Self {
        ResponseFuture {
            inner,
            guard: None,
            failures,
        }
    }
}

impl<Fut, F, T, E> Future for ResponseFuture<Fut, F>
where
    Fut: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    F: FailureClassifier<T>,
{
    type Output = Result<T, BoxError>;

    // Always inlined: its output returned through memory cost the caller
    // a store-forwarding stall (docs/BENCHMARKS.md, section 15); the
    // recording is out of line.
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(guard) = this.guard.as_mut() else {
            return this.inner.poll(cx).map_err(Into::into);
        };
        let polled = match guard.side {
            Side::Client => {
                // Events reported while the layers below work for this
                // request mark what answered it.
                let scope = Scope::enter(guard.answer);
                let polled = this.inner.poll(cx);
                guard.answer = scope.exit();
                polled
            }
            Side::Upstream => this.inner.poll(cx),
        };
        let result = ready!(polled).map_err(Into::into);
        let failures = &*this.failures;
        guard.finish(&result, || failures.verdict(&result));
        Poll::Ready(result)
    }
}

impl<Fut, F> fmt::Debug for ResponseFuture<Fut, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let guard = self.guard.as_ref();
        f.debug_struct("ResponseFuture")
            .field("class", &guard.map(|g| &g.rec.class))
            .field("side", &guard.map(|g| g.side))
            .finish()
    }
}
