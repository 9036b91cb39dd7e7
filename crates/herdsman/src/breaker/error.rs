//! Errors of the breaker layer.

use std::{error::Error, fmt, time::Duration};

use tokio::time::Instant;

use crate::{
    class::Class,
    error::{Describe, ErrorKind},
};

/// The call was not made: the breaker of its endpoint class is open.
///
/// A local rejection ([`ErrorKind::BreakerOpen`]): the HTTP adapter answers
/// `503 Service Unavailable` with `Retry-After`
/// (the seconds until the breaker lets a probe through, counted when the
/// answer is made).
#[derive(Debug, Clone)]
pub struct BreakerOpen {
    class: Class,
    retry_at: Option<Instant>,
}

impl BreakerOpen {
    pub(crate) fn new(class: Class, retry_at: Option<Instant>) -> Self {
        BreakerOpen { class, retry_at }
    }

    /// How long from now until the breaker lets a probe through (zero once
    /// that time has passed); `None` when it was forced open by hand.
    ///
    /// Computed when asked, so an error held for a while (shared with other
    /// callers, kept in a registry update) still tells the time left.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// When the breaker lets a probe through; `None` when it was forced
    /// open by hand.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// The endpoint class whose breaker is open.
    pub fn class(&self) -> &Class {
        &self.class
    }
}

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit breaker for `{}` is open", self.class)
    }
}

impl Error for BreakerOpen {}

impl Describe for BreakerOpen {
    fn kind(&self) -> ErrorKind {
        ErrorKind::BreakerOpen
    }

    fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }
}

/// A half-open probe did not answer within the probe timeout. It counts as a
/// failure ([`ErrorKind::TimedOut`]; the HTTP adapter answers `504 Gateway
/// Timeout`).
#[derive(Debug, Clone)]
pub struct ProbeTimedOut {
    class: Class,
    after: Duration,
}

impl ProbeTimedOut {
    pub(crate) fn new(class: Class, after: Duration) -> Self {
        ProbeTimedOut { class, after }
    }

    /// The probe timeout that passed.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for ProbeTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "probe of the half-open breaker for `{}` did not answer within {:?}",
            self.class, self.after
        )
    }
}

impl Error for ProbeTimedOut {}

impl Describe for ProbeTimedOut {
    fn kind(&self) -> ErrorKind {
        ErrorKind::TimedOut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{boxed, is_rejection, retry_at, BoxError, SharedError};

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_is_a_rejection_that_says_when_it_probes() {
        let probe_at = Instant::now() + Duration::from_secs(4);
        let open = BreakerOpen::new(Class::default(), Some(probe_at));
        assert_eq!(open.kind(), ErrorKind::BreakerOpen);
        let shared: BoxError = Box::new(SharedError::new(boxed(open)));
        assert!(is_rejection(&*shared));
        assert_eq!(retry_at(&*shared), Some(probe_at));

        let forced = boxed(BreakerOpen::new(Class::default(), None));
        assert!(is_rejection(&*forced));
        assert_eq!(retry_at(&*forced), None);
    }

    #[test]
    fn a_probe_timeout_is_a_timed_out_failure_not_a_rejection() {
        let err = boxed(ProbeTimedOut::new(Class::default(), Duration::from_secs(1)));
        assert_eq!(ErrorKind::of(&*err), ErrorKind::TimedOut);
        assert!(!is_rejection(&*err));
    }

    #[cfg(feature = "http")]
    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_is_a_503_with_retry_after_rounded_up() {
        use http::{header, Response, StatusCode};

        use crate::http::error_response;

        let probe_at = Instant::now() + Duration::from_millis(1500);
        let err = boxed(BreakerOpen::new(Class::default(), Some(probe_at)));
        let res: Response<String> = error_response(&*err).unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[header::RETRY_AFTER], "2");

        let forced = SharedError::new(boxed(BreakerOpen::new(Class::default(), None)));
        let res: Response<String> = error_response(&forced).unwrap();
        assert!(res.headers().get(header::RETRY_AFTER).is_none());

        let timed_out = boxed(ProbeTimedOut::new(Class::default(), Duration::from_secs(1)));
        let res: Response<String> = error_response(&*timed_out).unwrap();
        assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    }
}
