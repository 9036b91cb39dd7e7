use std::{error::Error, time::Duration};

use http::{header, HeaderValue, Response, StatusCode};

use crate::error::{describe, Describe, ErrorKind};

/// The HTTP response for an error that [describes itself](Describe) (as
/// every herdsman layer's errors do), or `None` for any other error (an
/// upstream's, which the application maps itself) and for errors whose
/// description names no status ([`error_status`]).
///
/// - an open breaker ([`ErrorKind::BreakerOpen`]): `503 Service
///   Unavailable`, with `Retry-After` when the breaker will probe again;
/// - a timeout ([`ErrorKind::TimedOut`], a half-open probe's): `504 Gateway
///   Timeout`;
/// - an overload ([`ErrorKind::Overloaded`]: a full concurrency limit, a
///   registry at its capacity): `503 Service Unavailable` with
///   `Retry-After`;
/// - a rate limit ([`ErrorKind::RateLimited`]): `429 Too Many Requests`
///   with `Retry-After`;
/// - a rejection ([`ErrorKind::Rejected`]: a caller's or an address's share
///   used up): `429 Too Many Requests` with `Retry-After` (the caller's own
///   traffic is the cause, as for a rate rule), unless the error names its
///   own status (a registry key too long: `414 URI Too Long`);
/// - an upstream error that names a status (a registry poll answered 5xx):
///   that status.
///
/// Each `Retry-After` is the time left at the moment of this call (the
/// errors keep the [instant](Describe::retry_at), not a duration), in
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
    described_response(describe(err)?)
}

/// The HTTP response for `err`, as [`error_response`] makes it for an error
/// found in a chain: for a layer's error held by its own type (a Registry's
/// refused subscription).
pub fn described_response<B: Default>(err: &dyn Describe) -> Option<Response<B>> {
    let status = error_status(err)?;
    let retry_after = err
        .retry_at()
        .map(|at| at.saturating_duration_since(tokio::time::Instant::now()));
    Some(with_retry_after(status, retry_after))
}

/// The status that answers `err`: the one it [names](Describe::status),
/// else its kind's (see [`error_response`]). `None` for an upstream error
/// or a panic that names none: the application maps those.
pub fn error_status(err: &dyn Describe) -> Option<StatusCode> {
    if let Some(code) = err.status() {
        return StatusCode::from_u16(code).ok();
    }
    match err.kind() {
        ErrorKind::BreakerOpen | ErrorKind::Overloaded => Some(StatusCode::SERVICE_UNAVAILABLE),
        ErrorKind::RateLimited | ErrorKind::Rejected => Some(StatusCode::TOO_MANY_REQUESTS),
        ErrorKind::TimedOut => Some(StatusCode::GATEWAY_TIMEOUT),
        ErrorKind::Upstream | ErrorKind::Panicked => None,
    }
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
    use crate::{
        error::{boxed, BoxError, SharedError},
        failure::UpstreamStatus,
    };
    use std::fmt;
    use tokio::time::Instant;

    /// A layer's error, as the core sees it: through [`Describe`] only.
    #[derive(Debug)]
    struct Refusal {
        kind: ErrorKind,
        retry_at: Option<Instant>,
        status: Option<u16>,
    }

    impl fmt::Display for Refusal {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("refused")
        }
    }

    impl Error for Refusal {}

    impl Describe for Refusal {
        fn kind(&self) -> ErrorKind {
            self.kind
        }

        fn retry_at(&self) -> Option<Instant> {
            self.retry_at
        }

        fn status(&self) -> Option<u16> {
            self.status
        }
    }

    fn refusal(kind: ErrorKind, retry_in: Option<Duration>) -> BoxError {
        boxed(Refusal {
            kind,
            retry_at: retry_in.map(|d| Instant::now() + d),
            status: None,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn each_kind_has_its_status() {
        let cases = [
            (
                ErrorKind::BreakerOpen,
                Some(StatusCode::SERVICE_UNAVAILABLE),
            ),
            (ErrorKind::Overloaded, Some(StatusCode::SERVICE_UNAVAILABLE)),
            (ErrorKind::RateLimited, Some(StatusCode::TOO_MANY_REQUESTS)),
            (ErrorKind::Rejected, Some(StatusCode::TOO_MANY_REQUESTS)),
            (ErrorKind::TimedOut, Some(StatusCode::GATEWAY_TIMEOUT)),
            (ErrorKind::Panicked, None),
            (ErrorKind::Upstream, None),
        ];
        for (kind, status) in cases {
            let err = refusal(kind, None);
            let res = error_response::<String>(&*err).map(|r| r.status());
            assert_eq!(res, status, "{kind:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_the_time_left_rounded_up_when_answered() {
        let err = refusal(ErrorKind::Overloaded, Some(Duration::from_millis(2500)));
        let res: Response<String> = error_response(&*err).unwrap();
        assert_eq!(res.headers()[header::RETRY_AFTER], "3");
        tokio::time::advance(Duration::from_secs(2)).await;
        let shared: BoxError = Box::new(SharedError::new(err));
        let res: Response<String> = error_response(&*shared).unwrap();
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");

        let forced = refusal(ErrorKind::BreakerOpen, None);
        let res: Response<String> = error_response(&*forced).unwrap();
        assert!(res.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn a_status_the_error_names_wins_over_its_kind() {
        let too_long = boxed(Refusal {
            kind: ErrorKind::Rejected,
            retry_at: None,
            status: Some(414),
        });
        let res: Response<String> = error_response(&*too_long).unwrap();
        assert_eq!(res.status(), StatusCode::URI_TOO_LONG);

        let failed = boxed(UpstreamStatus::new(502));
        let res: Response<String> = error_response(&*failed).unwrap();
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn other_errors_are_left_to_the_application() {
        let err: BoxError = "upstream said no".into();
        assert!(error_response::<String>(&*err).is_none());
        // Of a type that describes itself, but boxed without `boxed`.
        let unwrapped: BoxError = Box::new(UpstreamStatus::new(500));
        assert!(error_response::<String>(&*unwrapped).is_none());
    }
}
