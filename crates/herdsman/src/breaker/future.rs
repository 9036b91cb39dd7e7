//! The response future of [`Breaker`](super::Breaker).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::{
    circuit::{Admit, Circuit, Outcome},
    BreakerOpen, FailureClassifier, ProbeTimedOut, Verdict,
};
use crate::error::{boxed, BoxError};

pin_project! {
    /// Response future of [`Breaker`](super::Breaker).
    pub struct ResponseFuture<F, K> {
        #[pin]
        kind: Kind<F, K>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, K> {
        Rejected { open: Option<BreakerOpen> },
        Admitted { #[pin] fut: F, call: Call<K> },
        Passthrough { #[pin] fut: F },
    }
}

/// An admitted call: records its outcome, or returns its probe permit if it
/// is dropped first.
struct Call<K> {
    circuit: Arc<Circuit>,
    /// `Untracked` once the outcome is recorded: nothing is left to give
    /// back (a flag of its own would make the future a word larger).
    admit: Admit,
    start: Option<Instant>,
    /// Only probes have one.
    timeout: Option<Pin<Box<Sleep>>>,
    classifier: K,
}

impl<K> Call<K> {
    /// The admission, taken to record the call's outcome.
    fn take_admit(&mut self) -> Admit {
        std::mem::replace(&mut self.admit, Admit::Untracked)
    }
}

impl<K> Drop for Call<K> {
    fn drop(&mut self) {
        self.circuit.cancel(self.admit);
    }
}

impl<F, K> ResponseFuture<F, K> {
    pub(super) fn admitted(fut: F, circuit: Arc<Circuit>, admit: Admit, classifier: K) -> Self {
        let start = circuit.times_calls().then(Instant::now);
        let timeout = matches!(admit, Admit::Probe { .. })
            .then(|| Box::pin(tokio::time::sleep(circuit.config().probe_timeout)));
        ResponseFuture {
            kind: Kind::Admitted {
                fut,
                call: Call {
                    circuit,
                    admit,
                    start,
                    timeout,
                    classifier,
                },
            },
        }
    }

    /// A call the breaker is switched off for: neither admitted nor
    /// recorded.
    pub(super) fn passthrough(fut: F) -> Self {
        ResponseFuture {
            kind: Kind::Passthrough { fut },
        }
    }

    pub(super) fn rejected(open: BreakerOpen) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { open: Some(open) },
        }
    }
}

impl<F, T, E, K> Future for ResponseFuture<F, K>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    K: FailureClassifier<T>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Rejected { open } => {
                let open = open.take().expect("polled after completion");
                Poll::Ready(Err(boxed(open)))
            }
            KindProj::Passthrough { fut } => fut.poll(cx).map_err(Into::into),
            KindProj::Admitted { fut, call } => {
                let result = match fut.poll(cx) {
                    Poll::Ready(result) => result.map_err(Into::into),
                    Poll::Pending => {
                        if let Some(timeout) = call.timeout.as_mut() {
                            ready!(timeout.as_mut().poll(cx));
                            let outcome = Outcome {
                                failure: true,
                                slow: false,
                            };
                            let admit = call.take_admit();
                            call.circuit.record(admit, outcome);
                            let after = call.circuit.config().probe_timeout;
                            let err = ProbeTimedOut::new(call.circuit.class().clone(), after);
                            return Poll::Ready(Err(boxed(err)));
                        }
                        return Poll::Pending;
                    }
                };
                let admit = call.take_admit();
                let slow = call
                    .start
                    .is_some_and(|start| call.circuit.is_slow(start.elapsed()));
                match call.classifier.verdict(&result) {
                    Verdict::Success => call.circuit.record(
                        admit,
                        Outcome {
                            failure: false,
                            slow,
                        },
                    ),
                    Verdict::Failure => call.circuit.record(
                        admit,
                        Outcome {
                            failure: true,
                            slow,
                        },
                    ),
                    Verdict::Ignore => call.circuit.cancel(admit),
                }
                Poll::Ready(result)
            }
        }
    }
}

impl<F, K> fmt::Debug for ResponseFuture<F, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Rejected { .. } => "rejected",
            Kind::Admitted { .. } => "admitted",
            Kind::Passthrough { .. } => "passthrough",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}
