use http::Response;

use crate::{
    error::{boxed, BoxError},
    failure::{DefaultFailures, FailureClassifier, UpstreamStatus, Verdict},
};

/// The failure classifier for HTTP, for every layer that asks (the
/// Breaker, Stats, the Registry): errors as [`DefaultFailures`] counts
/// them, and 5xx responses; 4xx and other responses are successes (the
/// upstream is working; the request was wrong). A 5xx response stands as an
/// [`UpstreamStatus`] error where a layer hands it on as one.
///
/// ```
/// use herdsman::{failure::{FailureClassifier, Verdict}, http::ServerErrors, BoxError};
/// use http::{Response, StatusCode};
///
/// let answer = |status: StatusCode| {
///     let mut res = Response::new(());
///     *res.status_mut() = status;
///     Ok::<_, BoxError>(res)
/// };
/// assert_eq!(ServerErrors.verdict(&answer(StatusCode::BAD_GATEWAY)), Verdict::Failure);
/// assert_eq!(ServerErrors.verdict(&answer(StatusCode::NOT_FOUND)), Verdict::Success);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerErrors;

impl<B> FailureClassifier<Response<B>> for ServerErrors {
    fn verdict(&self, result: &Result<Response<B>, BoxError>) -> Verdict {
        match result {
            Ok(response) if response.status().is_server_error() => Verdict::Failure,
            Ok(_) => Verdict::Success,
            Err(_) => DefaultFailures.verdict(result),
        }
    }

    fn failure(&self, answer: &Response<B>) -> BoxError {
        boxed(UpstreamStatus::new(answer.status().as_u16()))
    }
}
