//! Whether a call's result is an upstream failure: one verdict, read by the
//! [Breaker](crate::breaker) (what trips it) and [Stats](crate::stats)
//! (what counts as an upstream error) alike.

use crate::error::{is_rejection, BoxError};

/// How a call counts: for the breaker's failure rate, and the stats'
/// upstream errors.
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
/// [`ServerErrors`](crate::http::ServerErrors).
pub trait FailureClassifier<T> {
    /// The verdict on one result.
    fn verdict(&self, result: &Result<T, BoxError>) -> Verdict;
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
/// ([`is_rejection`]: the limit layer's
/// `Overloaded` and `RateLimited`, a breaker's `BreakerOpen`); every
/// response is a success.
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
