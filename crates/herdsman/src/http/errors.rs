use std::{error::Error, time::Duration};

use http::{header, HeaderValue, Response, StatusCode};

use crate::{
    breaker::{BreakerOpen, ProbeTimedOut},
    error::find,
};

/// The HTTP response for an error a herdsman layer made, or `None` for any
/// other error (an upstream's, which the application maps itself).
///
/// - [`BreakerOpen`]: `503 Service Unavailable`, with `Retry-After` in whole
///   seconds, rounded up, when the breaker will probe again;
/// - [`ProbeTimedOut`]: `504 Gateway Timeout`.
///
/// The body is `B::default()` (empty for the common body types). With axum,
/// use it from a `HandleErrorLayer`:
///
/// ```
/// use herdsman::{http::error_response, BoxError};
/// use http::{Response, StatusCode};
///
/// // e.g. `HandleErrorLayer::new(|err: BoxError| async move { handle(err) })`
/// fn handle(err: BoxError) -> Response<String> {
///     error_response(&*err).unwrap_or_else(|| {
///         let mut res = Response::new(err.to_string());
///         *res.status_mut() = StatusCode::BAD_GATEWAY;
///         res
///     })
/// }
/// # let res = handle(Box::new(std::io::Error::other("x")));
/// # assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
/// ```
pub fn error_response<B: Default>(err: &(dyn Error + 'static)) -> Option<Response<B>> {
    if let Some(open) = find::<BreakerOpen>(err) {
        return Some(with_retry_after(
            StatusCode::SERVICE_UNAVAILABLE,
            open.retry_after(),
        ));
    }
    if find::<ProbeTimedOut>(err).is_some() {
        return Some(with_retry_after(StatusCode::GATEWAY_TIMEOUT, None));
    }
    None
}

fn with_retry_after<B: Default>(status: StatusCode, retry_after: Option<Duration>) -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = status;
    if let Some(after) = retry_after {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{class::Class, error::SharedError, BoxError};

    #[test]
    fn an_open_breaker_is_a_503_with_retry_after_rounded_up() {
        let err: BoxError = Box::new(BreakerOpen::new(
            Class::default(),
            Some(Duration::from_millis(1500)),
        ));
        let res: Response<String> = error_response(&*err).unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[header::RETRY_AFTER], "2");

        let forced: BoxError = Box::new(SharedError::new(BreakerOpen::new(Class::default(), None)));
        let res: Response<String> = error_response(&*forced).unwrap();
        assert!(res.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn other_errors_are_left_to_the_application() {
        let err: BoxError = "upstream said no".into();
        assert!(error_response::<String>(&*err).is_none());
    }
}
