//! herdsman's peers in the breaker benchmark, built the same way in every
//! case: tower-resilience's circuit breaker, and a tower adapter for
//! `failsafe`, which is not a tower layer.

use std::{
    fmt,
    task::{Context, Poll},
    time::Duration,
};

use failsafe::{
    backoff::{self, Constant},
    failure_policy::{self, ConsecutiveFailures},
    futures::{CircuitBreaker as _, ResponseFuture},
    Any, FailurePolicy, Instrument, StateMachine,
};
use tower::{Layer, Service};
use tower_resilience::circuitbreaker::{
    CircuitBreaker, CircuitBreakerHandle, CircuitBreakerLayer, DefaultClassifier,
};

/// How long the breakers tripped by failures stay open in the open-state
/// benchmarks (herdsman's, failsafe's): longer than a benchmark case, so that
/// neither turns half-open (and lets a probe through) while it is measured.
pub const LONG_OPEN: Duration = Duration::from_secs(3600);

/// tower-resilience's circuit breaker over `inner`: its defaults (a
/// count-based window of 100 calls, 50 % failure rate, 30 s open), with
/// slow-call detection at 1 s when `slow_call` is set.
///
/// Built with `build_with_handle`, so that the handle can force it open.
pub fn tower_resilience<S>(
    inner: S,
    slow_call: bool,
) -> (
    CircuitBreaker<S, DefaultClassifier>,
    CircuitBreakerHandle<DefaultClassifier>,
) {
    let builder = CircuitBreakerLayer::builder();
    let builder = if slow_call {
        builder.slow_call_duration_threshold(Duration::from_secs(1))
    } else {
        builder
    };
    let (layer, handle) = builder
        .build_with_handle()
        .expect("the default settings are valid");
    (layer.layer(inner), handle)
}

/// failsafe's default breaker: `Config::new().build()`, whose policy opens on
/// an exponentially weighted success rate under 80 % over 30 s, or on 5
/// failures in a row, for 5–10 s at first.
pub fn failsafe_default() -> StateMachine<impl FailurePolicy + Send + Sync, ()> {
    failsafe::Config::new().build()
}

/// A failsafe breaker that opens after 3 failures in a row and stays open
/// for [`LONG_OPEN`]: the default one would turn half-open 5–10 s after
/// opening, within a benchmark case. A rejection does not consult the
/// policy, so this costs the same as the default one when open.
pub fn failsafe_long_open() -> StateMachine<ConsecutiveFailures<Constant>, ()> {
    failsafe::Config::new()
        .failure_policy(failure_policy::consecutive_failures(
            3,
            backoff::constant(LONG_OPEN),
        ))
        .build()
}

/// Runs each call of `S` through a failsafe breaker: the inner future goes
/// to `failsafe::futures::CircuitBreaker::call`, which asks the breaker for
/// permission when first polled and records the outcome (every error is a
/// failure) when the inner future ends.
///
/// This is the adapter a tower user would write with failsafe's `futures`
/// support: no boxing, and failsafe's own future and error type are passed
/// through. The inner service is called (its future built) even when the
/// breaker then rejects; for a lazy future, as here, that starts no work.
pub struct Failsafe<S, P, I> {
    inner: S,
    breaker: StateMachine<P, I>,
}

impl<S, P, I> Failsafe<S, P, I> {
    /// Wraps `inner` with `breaker`; clones of the breaker share its state.
    pub fn new(inner: S, breaker: StateMachine<P, I>) -> Self {
        Failsafe { inner, breaker }
    }
}

impl<S, P, I, Req> Service<Req> for Failsafe<S, P, I>
where
    S: Service<Req>,
    P: FailurePolicy + Send + Sync,
    I: Instrument + Send + Sync,
{
    type Response = S::Response;
    type Error = failsafe::Error<S::Error>;
    type Future = ResponseFuture<S::Future, P, I, Any>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(failsafe::Error::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.breaker.call(self.inner.call(req))
    }
}

impl<S: Clone, P, I> Clone for Failsafe<S, P, I> {
    fn clone(&self) -> Self {
        Failsafe {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
        }
    }
}

impl<S: fmt::Debug, P, I> fmt::Debug for Failsafe<S, P, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failsafe")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .finish()
    }
}
