//! Errors of the limit layer.

use std::{error::Error, fmt, time::Duration};

use tokio::time::Instant;

use crate::{
    class::Class,
    error::{Describe, ErrorKind},
};

/// An endpoint class is at its concurrency limit, and the request could not
/// wait for a permit: the class has no queue, its queue was full, or no
/// permit came within its `max_wait`.
///
/// A rejection made on this side of the upstream: the circuit breaker does not
/// count it as an upstream failure ([`is_rejection`](crate::error::is_rejection)),
/// and the HTTP adapter answers `503 Service Unavailable` with `Retry-After`.
#[derive(Debug, Clone)]
pub struct Overloaded {
    class: Class,
    reason: Reason,
    retry_at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Every permit taken and the class has no queue.
    NoQueue,
    /// Every permit taken and the queue is full.
    QueueFull,
    /// Waited this long in the queue without getting a permit.
    TimedOut(Duration),
}

impl Overloaded {
    /// A rejection made now, whose retry has a fair chance `retry_after`
    /// from now.
    pub(crate) fn new(class: Class, reason: Reason, retry_after: Duration) -> Self {
        Overloaded {
            class,
            reason,
            retry_at: Instant::now() + retry_after,
        }
    }

    /// The endpoint class that is overloaded.
    pub fn class(&self) -> &Class {
        &self.class
    }

    /// How long from now until a retry has a fair chance: the class's
    /// configured hint
    /// ([`ClassLimits::with_retry_after`](super::ClassLimits::with_retry_after)),
    /// counted from the rejection, so an error held for a while (shared, or
    /// kept in a registry update) tells the time left (zero once passed).
    pub fn retry_after(&self) -> Duration {
        self.retry_at.saturating_duration_since(Instant::now())
    }

    /// When a retry has a fair chance: the rejection's time plus the
    /// class's hint.
    pub fn retry_at(&self) -> Instant {
        self.retry_at
    }

    /// Whether the request waited in the queue for `max_wait` without getting
    /// a permit (rather than being turned away at once).
    pub fn timed_out(&self) -> bool {
        matches!(self.reason, Reason::TimedOut(_))
    }
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "endpoint class `{}` is overloaded: ", self.class)?;
        match self.reason {
            Reason::NoQueue => f.write_str("concurrency limit reached"),
            Reason::QueueFull => f.write_str("concurrency limit reached and queue full"),
            Reason::TimedOut(waited) => write!(f, "no permit within {waited:?}"),
        }
    }
}

impl Error for Overloaded {}

impl Describe for Overloaded {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Overloaded
    }

    fn retry_at(&self) -> Option<Instant> {
        Some(self.retry_at)
    }
}

/// A rate rule turned the request away: its caller (or its class, depending
/// on the rule's [`RateKey`](super::RateKey)) sent more than the rule allows.
///
/// A rejection made on this side of the upstream: the circuit breaker does not
/// count it as an upstream failure ([`is_rejection`](crate::error::is_rejection)),
/// and the HTTP adapter answers `429 Too Many Requests` with `Retry-After`.
#[derive(Debug, Clone)]
pub struct RateLimited {
    class: Class,
    retry_at: Instant,
}

impl RateLimited {
    /// A rejection made now, whose retry would pass `retry_after` from now.
    pub(crate) fn new(class: Class, retry_after: Duration) -> Self {
        RateLimited {
            class,
            retry_at: Instant::now() + retry_after,
        }
    }

    /// The endpoint class of the rejected request.
    pub fn class(&self) -> &Class {
        &self.class
    }

    /// How long from now until the rule would let the same request
    /// through: never zero when the rejection is made, then counting down
    /// (zero once passed), so an error held for a while tells the time left.
    pub fn retry_after(&self) -> Duration {
        self.retry_at.saturating_duration_since(Instant::now())
    }

    /// When the rule would let the same request through.
    pub fn retry_at(&self) -> Instant {
        self.retry_at
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate limit of endpoint class `{}` exceeded; retry after {:?}",
            self.class,
            self.retry_after()
        )
    }
}

impl Error for RateLimited {}

impl Describe for RateLimited {
    fn kind(&self) -> ErrorKind {
        ErrorKind::RateLimited
    }

    fn retry_at(&self) -> Option<Instant> {
        Some(self.retry_at)
    }
}

/// The request's caller, or its client address, already has as many of its
/// endpoint class's calls in flight (or waiting for a permit) as it may:
/// its share of the class
/// ([`ClassLimits::with_max_concurrent_per_caller`](super::ClassLimits::with_max_concurrent_per_caller),
/// [`with_max_concurrent_per_address`](super::ClassLimits::with_max_concurrent_per_address)).
///
/// Refused at once, so that one caller flooding distinct requests cannot
/// take every permit of a class from the others. A rejection made on this
/// side of the upstream: the circuit breaker does not count it as an
/// upstream failure ([`is_rejection`](crate::error::is_rejection)), and the
/// HTTP adapter answers `429 Too Many Requests` with `Retry-After` (the
/// caller's own traffic is the cause, as for a rate rule; a `503` would
/// tell its well-behaved peers that the service is down).
#[derive(Debug, Clone)]
pub struct TooManyInFlight {
    class: Class,
    by: Holder,
    max: usize,
    retry_at: Instant,
}

/// Whose share was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    Caller,
    Address,
}

impl TooManyInFlight {
    /// A rejection made now, whose retry has a fair chance `retry_after`
    /// from now.
    pub(crate) fn new(class: Class, by: Holder, max: usize, retry_after: Duration) -> Self {
        TooManyInFlight {
            class,
            by,
            max,
            retry_at: Instant::now() + retry_after,
        }
    }

    /// The endpoint class of the rejected request.
    pub fn class(&self) -> &Class {
        &self.class
    }

    /// Whether the client address's share was full (rather than the
    /// caller's).
    pub fn by_address(&self) -> bool {
        self.by == Holder::Address
    }

    /// The share: calls of the class one caller (or address) may have in
    /// flight or waiting.
    pub fn max(&self) -> usize {
        self.max
    }

    /// How long from now until a retry has a fair chance: the class's
    /// configured hint, counted from the rejection (zero once passed).
    pub fn retry_after(&self) -> Duration {
        self.retry_at.saturating_duration_since(Instant::now())
    }

    /// When a retry has a fair chance.
    pub fn retry_at(&self) -> Instant {
        self.retry_at
    }
}

impl fmt::Display for TooManyInFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = match self.by {
            Holder::Caller => "caller",
            Holder::Address => "client address",
        };
        write!(
            f,
            "too many requests in flight from one {who} in endpoint class `{}` (at most {})",
            self.class, self.max
        )
    }
}

impl Error for TooManyInFlight {}

impl Describe for TooManyInFlight {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Rejected
    }

    fn retry_at(&self) -> Option<Instant> {
        Some(self.retry_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{is_rejection, retry_at};

    #[tokio::test(start_paused = true)]
    async fn each_limit_error_is_a_rejection_of_its_kind_with_its_hint() {
        let class = Class::default();
        let after = Duration::from_secs(2);
        let overloaded = Overloaded::new(class.clone(), Reason::QueueFull, after);
        let limited = RateLimited::new(class.clone(), after);
        let capped = TooManyInFlight::new(class, Holder::Caller, 1, after);
        let at = Instant::now() + after;
        for (kind, err) in [
            (ErrorKind::Overloaded, crate::error::boxed(overloaded)),
            (ErrorKind::RateLimited, crate::error::boxed(limited)),
            (ErrorKind::Rejected, crate::error::boxed(capped)),
        ] {
            assert_eq!(ErrorKind::of(&*err), kind);
            assert!(is_rejection(&*err), "{kind:?}");
            assert_eq!(retry_at(&*err), Some(at), "{kind:?}");
        }
    }

    #[cfg(feature = "http")]
    #[tokio::test(start_paused = true)]
    async fn limit_rejections_are_503_and_429_with_retry_after() {
        use http::{header, Response, StatusCode};
        use tower::{service_fn, Layer, ServiceExt};

        use crate::{
            error::{find, BoxError},
            http::error_response,
            limit::{ClassLimits, LimitLayer, RateRule},
        };

        let limits = ClassLimits::new(0).with_retry_after(Duration::from_secs(3));
        let svc =
            LimitLayer::new(limits).layer(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
        let err = svc.oneshot(()).await.unwrap_err();
        assert!(find::<Overloaded>(&*err).is_some());
        let res: Response<String> = error_response(&*err).unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[header::RETRY_AFTER], "3");
        // Answered later, the same error tells the time left then.
        tokio::time::advance(Duration::from_secs(2)).await;
        let res: Response<String> = error_response(&*err).unwrap();
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");

        let rate = ClassLimits::unlimited().with_rate(RateRule::per_minute(1));
        let svc = LimitLayer::new(rate).layer(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
        svc.clone().oneshot(()).await.unwrap();
        let err = svc.oneshot(()).await.unwrap_err();
        assert!(find::<RateLimited>(&*err).is_some());
        let res: Response<String> = error_response(&*err).unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(res.headers().contains_key(header::RETRY_AFTER));
    }
}
