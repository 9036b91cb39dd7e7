//! Errors of the breaker layer.

use std::{error::Error, fmt, time::Duration};

use crate::class::Class;

/// The call was not made: the breaker of its endpoint class is open.
#[derive(Debug, Clone)]
pub struct BreakerOpen {
    class: Class,
    retry_after: Option<Duration>,
}

impl BreakerOpen {
    pub(crate) fn new(class: Class, retry_after: Option<Duration>) -> Self {
        BreakerOpen { class, retry_after }
    }

    /// How long until the breaker lets a probe through; `None` when it was
    /// forced open by hand.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
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

/// A half-open probe did not answer within the probe timeout. It counts as a
/// failure.
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
