use std::{
    fmt,
    sync::{atomic::Ordering, Arc},
    task::{Context, Poll},
};

use tower_service::Service;

use super::{
    circuit::Circuit, circuits::Circuits, future::ResponseFuture, BreakerHandle, FailureClassifier,
};
use crate::{class::Classify, error::BoxError, switch::LayerName};

/// Fails calls fast while the upstream of their endpoint class is sick; see
/// the [module docs](crate::breaker).
pub struct Breaker<S, C, K> {
    pub(super) inner: S,
    pub(super) classify: C,
    pub(super) classifier: K,
    pub(super) circuits: Arc<Circuits>,
    /// The circuit of the last call's class: most services see one class, and
    /// this skips the map on the next call.
    pub(super) last: Option<Arc<Circuit>>,
}

impl<S, C, K> Breaker<S, C, K> {
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

    /// A handle to watch and steer the breakers this service shares.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle {
            circuits: self.circuits.clone(),
        }
    }
}

impl<S, C, K, Req> Service<Req> for Breaker<S, C, K>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<Req>,
    K: FailureClassifier<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, K>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if !self.classify.is_on(&req, LayerName::Breaker) {
            return ResponseFuture::passthrough(self.inner.call(req));
        }
        let class = self.classify.classify(&req);
        let circuit = match &self.last {
            Some(last) if last.class() == &class && !last.retired.load(Ordering::Acquire) => {
                Arc::clone(last)
            }
            _ => {
                let circuit = self.circuits.get(&class);
                self.last = Some(Arc::clone(&circuit));
                circuit
            }
        };
        match circuit.admit() {
            Ok(admit) => ResponseFuture::admitted(
                self.inner.call(req),
                circuit,
                admit,
                self.classifier.clone(),
            ),
            Err(open) => ResponseFuture::rejected(open),
        }
    }
}

impl<S: Clone, C: Clone, K: Clone> Clone for Breaker<S, C, K> {
    fn clone(&self) -> Self {
        Breaker {
            inner: self.inner.clone(),
            classify: self.classify.clone(),
            classifier: self.classifier.clone(),
            circuits: self.circuits.clone(),
            last: self.last.clone(),
        }
    }
}

impl<S: fmt::Debug, C, K> fmt::Debug for Breaker<S, C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("inner", &self.inner)
            .field("circuits", &self.circuits.len())
            .finish_non_exhaustive()
    }
}
