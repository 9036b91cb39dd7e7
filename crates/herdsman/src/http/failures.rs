use http::Response;

use crate::{
    error::BoxError,
    failure::{DefaultFailures, FailureClassifier, Verdict},
};

/// The breaker's failure classifier for HTTP: errors as
/// [`DefaultFailures`] counts them, and 5xx responses; 4xx and other
/// responses are successes (the upstream is working; the request was wrong).
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
}
