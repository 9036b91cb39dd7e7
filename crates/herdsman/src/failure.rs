//! Whether a call's result is an upstream failure: one verdict, read by
//! every layer that asks (what trips the circuit breaker, what the stats
//! count as an upstream error, what a Registry poll loop hands its
//! subscribers as an error and backs off from).
//!
//! A [`FailureClassifier`] judges a result. [`DefaultFailures`] calls every
//! error a failure except local rejections, and every response a success;
//! the HTTP adapter's [`ServerErrors`][crate::http::ServerErrors] also calls
//! a 5xx response a failure. Give the same classifier to each layer (the
//! Coordinator gives `ServerErrors` to all of them) and they agree on every
//! answer. The shape follows tower-http's `classify` module, reduced to
//! what the layers need: a verdict, and for a response judged a failure, the
//! error that stands for it.
//!
#![cfg_attr(
    not(feature = "http"),
    doc = "[crate::http::ServerErrors]: crate#feature-flags"
)]

use std::{error::Error, fmt};

use crate::error::{boxed, is_rejection, BoxError, Describe, ErrorKind};

/// How a call counts: for the breaker's failure rate, the stats' upstream
/// errors and the Registry's poll loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The upstream answered well.
    Success,
    /// The upstream failed.
    Failure,
    /// Not the upstream's doing (a local rejection): not counted.
    Ignore,
}

/// Decides whether a call's result is an upstream failure.
///
/// Implemented for every `Fn(&Result<T, BoxError>) -> Verdict`, for
/// [`DefaultFailures`] and, in the HTTP adapter, for
/// [`ServerErrors`][crate::http::ServerErrors].
///
#[cfg_attr(
    not(feature = "http"),
    doc = "[crate::http::ServerErrors]: crate#feature-flags"
)]
pub trait FailureClassifier<T> {
    /// The verdict on one result.
    fn verdict(&self, result: &Result<T, BoxError>) -> Verdict;

    /// The error that stands for `answer`, a response this classifier
    /// judged a [`Failure`](Verdict::Failure), for a layer that hands the
    /// failure on as an error (the Registry gives it to its subscribers).
    /// Default: a [`FailedAnswer`]; `ServerErrors` gives an
    /// [`UpstreamStatus`] with the response's status.
    fn failure(&self, answer: &T) -> BoxError {
        let _ = answer;
        boxed(FailedAnswer(()))
    }
}

impl<T, F> FailureClassifier<T> for F
where
    F: Fn(&Result<T, BoxError>) -> Verdict,
{
    fn verdict(&self, result: &Result<T, BoxError>) -> Verdict {
        self(result)
    }
}

/// Errors are failures, except local rejections
/// ([`is_rejection`]: errors whose [kind](crate::error::ErrorKind) is a
/// rejection, such as a full concurrency limit, a rate limit or an open
/// breaker); every response is a success.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultFailures;

impl<T> FailureClassifier<T> for DefaultFailures {
    fn verdict(&self, result: &Result<T, BoxError>) -> Verdict {
        match result {
            Ok(_) => Verdict::Success,
            Err(err) if is_rejection(&**err) => Verdict::Ignore,
            Err(_) => Verdict::Failure,
        }
    }
}

/// The upstream answered, but with a failure status (an HTTP 5xx, as
/// [`ServerErrors`][crate::http::ServerErrors] judges it): what a Registry
/// poll loop's subscribers receive, with the last good value still
/// readable.
///
/// An [upstream](ErrorKind::Upstream) error whose HTTP answer is that
/// status.
///
#[cfg_attr(
    not(feature = "http"),
    doc = "[crate::http::ServerErrors]: crate#feature-flags"
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamStatus {
    status: u16,
}

impl UpstreamStatus {
    /// A failure with this status code.
    pub fn new(status: u16) -> Self {
        UpstreamStatus { status }
    }

    /// The status code the upstream answered.
    pub fn status(&self) -> u16 {
        self.status
    }
}

impl fmt::Display for UpstreamStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream answered {}", self.status)
    }
}

impl Error for UpstreamStatus {}

impl Describe for UpstreamStatus {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Upstream
    }

    fn status(&self) -> Option<u16> {
        Some(self.status)
    }
}

/// The upstream answered, but a [`FailureClassifier`] judged the answer a
/// failure (and said no more about it: the default of
/// [`FailureClassifier::failure`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct FailedAnswer(());

impl fmt::Display for FailedAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("upstream answer judged a failure")
    }
}

impl Error for FailedAnswer {}

impl Describe for FailedAnswer {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Upstream
    }
}

// The tests compare the core's classifier with the HTTP adapter's.
#[cfg(all(test, feature = "http"))]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{error::SharedError, http::ServerErrors};

    /// An error of any kind, as a layer would make it.
    #[derive(Debug)]
    struct Of(ErrorKind);

    impl fmt::Display for Of {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0.as_str())
        }
    }

    impl Error for Of {}

    impl Describe for Of {
        fn kind(&self) -> ErrorKind {
            self.0
        }
    }

    fn kind() -> impl Strategy<Value = ErrorKind> {
        prop::sample::select(ErrorKind::ALL.to_vec())
    }

    fn answer(status: u16) -> Result<http::Response<()>, BoxError> {
        let mut res = http::Response::new(());
        *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
        Ok(res)
    }

    #[test]
    fn rejections_are_ignored_and_other_errors_are_failures() {
        for kind in ErrorKind::ALL {
            let err: Result<(), BoxError> = Err(boxed(Of(kind)));
            let expected = if kind.is_rejection() {
                Verdict::Ignore
            } else {
                Verdict::Failure
            };
            assert_eq!(DefaultFailures.verdict(&err), expected, "{kind:?}");
        }
        assert_eq!(
            DefaultFailures.verdict(&Ok::<_, BoxError>(())),
            Verdict::Success
        );
    }

    #[test]
    fn server_errors_are_failures_that_stand_as_their_status() {
        assert_eq!(ServerErrors.verdict(&answer(503)), Verdict::Failure);
        assert_eq!(ServerErrors.verdict(&answer(404)), Verdict::Success);
        assert_eq!(ServerErrors.verdict(&answer(200)), Verdict::Success);
        let failed = ServerErrors.failure(&answer(503).unwrap());
        assert_eq!(
            crate::error::find::<UpstreamStatus>(&*failed).map(|s| s.status()),
            Some(503)
        );
        assert_eq!(ErrorKind::of(&*failed), ErrorKind::Upstream);
    }

    #[test]
    fn a_classifier_without_its_own_failure_error_gives_a_failed_answer() {
        let judge = |r: &Result<u8, BoxError>| match r {
            Ok(0) => Verdict::Failure,
            _ => DefaultFailures.verdict(r),
        };
        assert_eq!(judge.verdict(&Ok(0)), Verdict::Failure);
        let failed = judge.failure(&0);
        assert!(crate::error::find::<FailedAnswer>(&*failed).is_some());
        assert_eq!(ErrorKind::of(&*failed), ErrorKind::Upstream);
    }

    proptest! {
        #[test]
        fn a_shared_error_gets_the_verdict_of_the_unshared_one(kind in kind(), times in 1..4usize) {
            let unshared: Result<http::Response<()>, BoxError> = Err(boxed(Of(kind)));
            let mut shared: BoxError = boxed(Of(kind));
            for _ in 0..times {
                shared = Box::new(SharedError::new(shared));
            }
            let shared: Result<http::Response<()>, BoxError> = Err(shared);
            prop_assert_eq!(DefaultFailures.verdict(&unshared), DefaultFailures.verdict(&shared));
            prop_assert_eq!(ServerErrors.verdict(&unshared), ServerErrors.verdict(&shared));
        }
    }
}
