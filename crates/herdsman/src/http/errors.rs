use std::{error::Error, time::Duration};

use http::{header, HeaderValue, Response, StatusCode};

#[cfg(feature = "breaker")]
use crate::breaker::{BreakerOpen, ProbeTimedOut};
#[cfg(any(feature = "breaker", feature = "limit"))]
use crate::error::find;
#[cfg(feature = "limit")]
use crate::limit::{Overloaded, RateLimited, TooManyInFlight};

/// The HTTP response for an error a herdsman layer made, or `None` for any
/// other error (an upstream's, which the application maps itself).
///
/// - the breaker's `BreakerOpen`: `503 Service Unavailable`, with
///   `Retry-After` when the breaker will probe again;
/// - the breaker's `ProbeTimedOut`: `504 Gateway Timeout`;
/// - the limit's `Overloaded`: `503 Service Unavailable` with `Retry-After`;
/// - the limit's `RateLimited`: `429 Too Many Requests` with `Retry-After`;
/// - the limit's `TooManyInFlight`: `429 Too Many Requests` with
///   `Retry-After` (the caller's own traffic is the cause, as for a rate
///   rule).
///
/// Only the errors of the layers compiled in (their cargo features) are
/// recognized.
///
/// Each `Retry-After` is the time left at the moment of this call (the
/// errors keep the instant, not a duration), in
/// [whole seconds, rounded up, at least 1](retry_after_secs).
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
    #[cfg(feature = "breaker")]
    if let Some(open) = find::<BreakerOpen>(err) {
        return Some(with_retry_after(
            StatusCode::SERVICE_UNAVAILABLE,
            open.retry_after(),
        ));
    }
    #[cfg(feature = "breaker")]
    if find::<ProbeTimedOut>(err).is_some() {
        return Some(with_retry_after(StatusCode::GATEWAY_TIMEOUT, None));
    }
    #[cfg(feature = "limit")]
    if let Some(overloaded) = find::<Overloaded>(err) {
        let after = Some(overloaded.retry_after());
        return Some(with_retry_after(StatusCode::SERVICE_UNAVAILABLE, after));
    }
    #[cfg(feature = "limit")]
    if let Some(limited) = find::<RateLimited>(err) {
        let after = Some(limited.retry_after());
        return Some(with_retry_after(StatusCode::TOO_MANY_REQUESTS, after));
    }
    #[cfg(feature = "limit")]
    if let Some(capped) = find::<TooManyInFlight>(err) {
        let after = Some(capped.retry_after());
        return Some(with_retry_after(StatusCode::TOO_MANY_REQUESTS, after));
    }
    let _ = err;
    None
}

/// A wait as a `Retry-After` value: whole seconds, rounded up, and at
/// least 1 (a client told `0` would retry at once, while the time had only
/// not quite come).
///
/// ```
/// use herdsman::http::retry_after_secs;
/// use std::time::Duration;
///
/// assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
/// assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
/// assert_eq!(retry_after_secs(Duration::ZERO), 1);
/// ```
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

fn with_retry_after<B: Default>(status: StatusCode, retry_after: Option<Duration>) -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = status;
    if let Some(after) = retry_after {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs(after)),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoxError;

    fn paused() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    }

    #[cfg(feature = "breaker")]
    #[test]
    fn an_open_breaker_is_a_503_with_retry_after_rounded_up() {
        use crate::{class::Class, error::SharedError};

        let _runtime = paused().enter();
        let probe_at = tokio::time::Instant::now() + Duration::from_millis(1500);
        let err: BoxError = Box::new(BreakerOpen::new(Class::default(), Some(probe_at)));
        let res: Response<String> = error_response(&*err).unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[header::RETRY_AFTER], "2");

        let forced: BoxError = Box::new(SharedError::new(BreakerOpen::new(Class::default(), None)));
        let res: Response<String> = error_response(&*forced).unwrap();
        assert!(res.headers().get(header::RETRY_AFTER).is_none());
    }

    #[cfg(feature = "limit")]
    #[test]
    fn limit_rejections_are_503_and_429_with_retry_after() {
        use crate::limit::{ClassLimits, LimitLayer, RateRule};
        use tower::{service_fn, Layer, ServiceExt};

        paused().block_on(async {
            let limits = ClassLimits::new(0).with_retry_after(Duration::from_secs(3));
            let svc =
                LimitLayer::new(limits).layer(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
            let err = svc.oneshot(()).await.unwrap_err();
            let res: Response<String> = error_response(&*err).unwrap();
            assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(res.headers()[header::RETRY_AFTER], "3");
            // Answered later, the same error tells the time left then.
            tokio::time::advance(Duration::from_secs(2)).await;
            let res: Response<String> = error_response(&*err).unwrap();
            assert_eq!(res.headers()[header::RETRY_AFTER], "1");

            let rate = ClassLimits::unlimited().with_rate(RateRule::per_minute(1));
            let svc =
                LimitLayer::new(rate).layer(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
            svc.clone().oneshot(()).await.unwrap();
            let err = svc.oneshot(()).await.unwrap_err();
            let res: Response<String> = error_response(&*err).unwrap();
            assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
            assert!(res.headers().contains_key(header::RETRY_AFTER));
        });
    }

    #[test]
    fn other_errors_are_left_to_the_application() {
        let err: BoxError = "upstream said no".into();
        assert!(error_response::<String>(&*err).is_none());
    }
}
