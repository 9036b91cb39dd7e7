//! Errors of the registry.

use std::{error::Error, fmt, time::Duration};

use tokio::time::Instant;

use crate::error::{Describe, ErrorKind};
pub use crate::event::Limit;
pub use crate::failure::UpstreamStatus;

/// `subscribe` refused a subscriber: one of the registry's limits or
/// budgets is reached, or its key is too long.
///
/// Nothing was started and nothing is held; the caller may retry after
/// [`retry_after`](Self::retry_after) or fall back to one-shot calls.
///
/// It [describes itself](Describe) as a [`Rejected`](ErrorKind::Rejected)
/// request when the caller's own budget is used up or the key is too long
/// (the HTTP answer is 429, or 414 for a key too long), and as
/// [`Overloaded`](ErrorKind::Overloaded) when the registry is at its
/// capacity (503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManySubscribers {
    reason: Limit,
    retry_after: Option<Duration>,
    made_at: Instant,
}

impl TooManySubscribers {
    pub(crate) fn new(reason: Limit, retry_after: Option<Duration>) -> Self {
        TooManySubscribers {
            reason,
            retry_after,
            made_at: Instant::now(),
        }
    }

    /// Which limit was reached.
    pub fn reason(&self) -> Limit {
        self.reason
    }

    /// How long until a retry may succeed: until keys leave (their class's
    /// linger, at least 1 s) for the key and memory budgets, 5 s for a
    /// caller's or an address's streams (they end when tabs close), 1 s for
    /// the registry's own subscriber limits. `None` for
    /// [`Limit::KeyTooLong`]: the same request never fits.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether one caller (or one client address) used up its own share,
    /// rather than the registry its capacity: see
    /// [`Limit::is_per_caller`].
    pub fn is_per_caller(&self) -> bool {
        self.reason.is_per_caller()
    }
}

impl fmt::Display for TooManySubscribers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.reason {
            Limit::Keys => "too many keys in this class",
            Limit::KeysPerCaller => "this caller holds too many keys in this class",
            Limit::KeysPerAddress => "this client address holds too many keys in this class",
            Limit::SubscribersPerKey => "too many subscribers for this key",
            Limit::SubscribersPerCaller => "this caller has too many subscriptions in this class",
            Limit::SubscribersPerAddress => {
                "this client address has too many subscriptions in this class"
            }
            Limit::Subscribers => "too many subscribers",
            Limit::Memory => "the registry is over its memory budget",
            Limit::KeyTooLong => "the request's key is too long",
        };
        write!(f, "subscription refused: {what}")
    }
}

impl Error for TooManySubscribers {}

impl Describe for TooManySubscribers {
    fn kind(&self) -> ErrorKind {
        if self.is_per_caller() || self.reason == Limit::KeyTooLong {
            ErrorKind::Rejected
        } else {
            ErrorKind::Overloaded
        }
    }

    fn retry_at(&self) -> Option<Instant> {
        self.retry_after.map(|after| self.made_at + after)
    }

    fn status(&self) -> Option<u16> {
        // 414 URI Too Long: the key is mostly the URI (a key made long by
        // credentials or varied headers is answered the same).
        (self.reason == Limit::KeyTooLong).then_some(414)
    }
}

/// The inner service panicked while a poll loop fetched its key.
///
/// Every subscriber of the key receives it as an update; the loop backs off
/// and polls again, as after any other error.
#[derive(Debug)]
pub struct PollPanicked {
    message: Option<String>,
}

impl PollPanicked {
    pub(crate) fn from_payload(payload: &(dyn std::any::Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&'static str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned());
        PollPanicked { message }
    }

    /// The panic message, when it was a string.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
}

impl fmt::Display for PollPanicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(msg) => write!(f, "inner service panicked while polling: {msg}"),
            None => f.write_str("inner service panicked while polling"),
        }
    }
}

impl Error for PollPanicked {}

impl Describe for PollPanicked {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Panicked
    }
}

/// The poll loop fetched a response that its share policy refuses to hand to
/// many callers (HTTP: a streamed body over the buffer limit, a
/// `Set-Cookie`).
///
/// Subscribers receive it as an update; the response itself is dropped,
/// since no subscriber may have it alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unshareable(());

impl Unshareable {
    pub(crate) fn new() -> Self {
        Unshareable(())
    }
}

impl fmt::Display for Unshareable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("polled response cannot be shared among subscribers")
    }
}

impl Error for Unshareable {}

/// The upstream answered, but with nothing its subscribers can have.
impl Describe for Unshareable {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Upstream
    }
}

/// The poll was answered with a stale copy because the upstream failed (a
/// cache's stale-if-error answer, as [`Fingerprint::stale`](super::Fingerprint::stale)
/// tells).
///
/// The poll counts as a failure: the loop backs off, and subscribers
/// receive this error as an update whose good value
/// ([`Update::good`](super::Update::good)) is that stale copy, so they can
/// serve it marked stale rather than as fresh data.
#[derive(Debug, Clone, Copy, Default)]
pub struct StaleAnswer(());

impl StaleAnswer {
    pub(crate) fn new() -> Self {
        StaleAnswer(())
    }
}

impl fmt::Display for StaleAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("upstream failing: the poll was answered with a stale copy")
    }
}

impl Error for StaleAnswer {}

impl Describe for StaleAnswer {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Upstream
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{boxed, is_rejection, retry_at, BoxError, SharedError};

    #[tokio::test(start_paused = true)]
    async fn refusals_are_rejections_for_a_caller_and_overloads_for_the_registry() {
        let after = Some(Duration::from_secs(5));
        for limit in Limit::ALL {
            let refused = TooManySubscribers::new(limit, after);
            let expected = if limit.is_per_caller() || limit == Limit::KeyTooLong {
                ErrorKind::Rejected
            } else {
                ErrorKind::Overloaded
            };
            assert_eq!(refused.kind(), expected, "{limit:?}");
            let status = refused.status();
            assert_eq!(
                status,
                (limit == Limit::KeyTooLong).then_some(414),
                "{limit:?}"
            );
            assert!(is_rejection(&*boxed(refused)), "{limit:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusals_hint_counts_from_when_it_was_made() {
        let made_at = Instant::now();
        let refused = TooManySubscribers::new(Limit::Memory, Some(Duration::from_secs(5)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(refused.retry_after(), Some(Duration::from_secs(5)));
        let shared: BoxError = Box::new(SharedError::new(boxed(refused)));
        assert_eq!(retry_at(&*shared), Some(made_at + Duration::from_secs(5)));
        let too_long = TooManySubscribers::new(Limit::KeyTooLong, None);
        assert_eq!(too_long.retry_at(), None);
    }

    #[test]
    fn poll_errors_are_upstream_failures_or_panics() {
        assert_eq!(Unshareable::new().kind(), ErrorKind::Upstream);
        assert_eq!(StaleAnswer::new().kind(), ErrorKind::Upstream);
        let panicked = PollPanicked::from_payload(&"boom");
        assert_eq!(panicked.kind(), ErrorKind::Panicked);
        assert_eq!(UpstreamStatus::new(502).kind(), ErrorKind::Upstream);
        assert_eq!(Describe::status(&UpstreamStatus::new(502)), Some(502));
    }
}
