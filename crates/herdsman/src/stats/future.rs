//! The response future and the guard that records on completion or drop.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{atomic::Ordering::Relaxed, Arc},
    task::{ready, Context, Poll},
};

use pin_project_lite::pin_project;

use super::recorder::{ClassRecorder, ErrorKind};
use crate::{
    breaker::{FailureClassifier, Verdict},
    error::BoxError,
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
}

impl Guard {
    pub(crate) fn new(rec: Arc<ClassRecorder>, start: u64, side: Side) -> Self {
        Guard {
            rec,
            start,
            side,
            done: false,
        }
    }

    fn finish_error(&mut self, kind: ErrorKind) {
        self.done = true;
        let rec = &*self.rec;
        rec.latency
            .record(rec.clock.now().saturating_sub(self.start));
        rec.finished.fetch_add(1, Relaxed);
        rec.error(kind);
    }

    fn finish<T>(&mut self, result: &Result<T, BoxError>, verdict: impl FnOnce() -> Verdict) {
        self.done = true;
        let rec = &*self.rec;
        let elapsed = rec.clock.now().saturating_sub(self.start);
        match self.side {
            Side::Client => {
                rec.latency.record(elapsed);
                rec.finished.fetch_add(1, Relaxed);
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
/// counted as a request and in flight now; [`ok`](Recording::ok) or
/// [`error`](Recording::error) records its latency and outcome; dropped
/// without either, it counts as cancelled.
///
/// [`Stats::start`]: super::Stats::start
pub struct Recording {
    guard: Guard,
}

impl Recording {
    pub(crate) fn new(guard: Guard) -> Self {
        Recording { guard }
    }

    /// The request succeeded.
    pub fn ok(mut self) {
        self.guard.finish::<()>(&Ok(()), || Verdict::Success);
    }

    /// The request failed with `kind`.
    pub fn error(mut self, kind: ErrorKind) {
        self.guard.finish_error(kind);
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
                self.rec.finished.fetch_add(1, Relaxed);
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
        guard: Guard,
        failures: F,
    }
}

impl<Fut, F> ResponseFuture<Fut, F> {
    pub(crate) fn new(inner: Fut, guard: Guard, failures: F) -> Self {
        ResponseFuture {
            inner,
            guard,
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

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx)).map_err(Into::into);
        let failures = &*this.failures;
        this.guard.finish(&result, || failures.verdict(&result));
        Poll::Ready(result)
    }
}

impl<Fut, F> fmt::Debug for ResponseFuture<Fut, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("class", &self.guard.rec.class)
            .field("side", &self.guard.side)
            .finish()
    }
}
