//! Errors shared by every layer.
//!
//! Layers follow tower's convention: they return [`BoxError`], and each
//! failure mode they add is its own small error type that callers find by
//! downcasting. When one result is handed to many callers (dedup, cache,
//! registry), the error is shared behind an `Arc` as a [`SharedError`];
//! [`find`] looks through that wrapper and the `source()` chain, so callers
//! need not care whether their error was shared.

use std::{error::Error, fmt, sync::Arc};

use tokio::time::Instant;

/// A type-erased error, as used throughout tower.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// One error handed to many callers.
///
/// Cloning is cheap (an `Arc`). `Display` and `source()` are those of the
/// wrapped error, so the wrapper is transparent in logs.
#[derive(Clone)]
pub struct SharedError {
    inner: Arc<dyn Error + Send + Sync>,
}

impl SharedError {
    /// Wraps `err` to be shared.
    pub fn new(err: impl Into<BoxError>) -> Self {
        let err: BoxError = err.into();
        SharedError {
            inner: Arc::from(err),
        }
    }

    /// The shared error.
    pub fn get_ref(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.inner
    }

    /// Whether two handles share the same error value.
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl fmt::Debug for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedError").field(&self.inner).finish()
    }
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl Error for SharedError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.inner.source()
    }
}

/// Finds an error of type `T` in `err`, looking inside [`SharedError`]s and
/// along the `source()` chain.
///
/// ```
/// use herdsman::error::{find, BoxError, SharedError};
/// use std::fmt;
///
/// #[derive(Debug)]
/// struct Upstream;
/// impl fmt::Display for Upstream {
///     fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str("upstream failed") }
/// }
/// impl std::error::Error for Upstream {}
///
/// let err: BoxError = Box::new(SharedError::new(Upstream));
/// assert!(find::<Upstream>(&*err).is_some());
/// ```
pub fn find<'a, T: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a T> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(shared) = err.downcast_ref::<SharedError>() {
            if let Some(found) = find::<T>(shared.get_ref()) {
                return Some(found);
            }
        }
        next = err.source();
    }
    None
}

/// Whether `err` is a rejection made by a herdsman layer on this side of the
/// upstream (a load limit, a caller's share of one, a rate limit, an open
/// breaker), rather than a failure of the upstream itself.
///
/// Neither the circuit breaker nor the stats count such rejections as
/// upstream failures ([`DefaultFailures`](crate::failure::DefaultFailures)).
pub fn is_rejection(err: &(dyn Error + 'static)) -> bool {
    matches!(
        layer_error(err),
        Some(
            LayerError::BreakerOpen
                | LayerError::Overloaded
                | LayerError::RateLimited
                | LayerError::InFlightCap
        )
    )
}

/// A herdsman layer's own error, as found in an error's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LayerError {
    BreakerOpen,
    Overloaded,
    RateLimited,
    InFlightCap,
    Panicked,
    ProbeTimedOut,
}

/// Which herdsman layer's own error `err` is, if any: the one place that
/// knows every layer's error types (rejections, the stats' error kinds).
pub(crate) fn layer_error(err: &(dyn Error + 'static)) -> Option<LayerError> {
    // Only the layers compiled in can have made an error.
    #[cfg(feature = "breaker")]
    if find::<crate::breaker::BreakerOpen>(err).is_some() {
        return Some(LayerError::BreakerOpen);
    }
    #[cfg(feature = "limit")]
    if find::<crate::limit::Overloaded>(err).is_some() {
        return Some(LayerError::Overloaded);
    }
    #[cfg(feature = "limit")]
    if find::<crate::limit::RateLimited>(err).is_some() {
        return Some(LayerError::RateLimited);
    }
    #[cfg(feature = "limit")]
    if find::<crate::limit::TooManyInFlight>(err).is_some() {
        return Some(LayerError::InFlightCap);
    }
    #[cfg(feature = "dedup")]
    if find::<crate::dedup::Panicked>(err).is_some() {
        return Some(LayerError::Panicked);
    }
    #[cfg(feature = "breaker")]
    if find::<crate::breaker::ProbeTimedOut>(err).is_some() {
        return Some(LayerError::ProbeTimedOut);
    }
    let _ = err;
    None
}

/// When a retry of the call that failed with `err` can succeed, if a
/// herdsman layer said so: the probe time of an open breaker (the breaker's
/// `BreakerOpen`), or the time a load or rate limit suggested (the limit's
/// `Overloaded`, `TooManyInFlight` and `RateLimited`). `None` for any other error
/// (an upstream's), and for a breaker forced open by hand.
///
/// It is an instant, not a duration, so that a hint read long after the
/// error was made (a shared error, a registry update) still counts down:
/// the Registry's poll loop waits for it, and an HTTP answer tells its
/// client the time left at the moment it answers.
///
/// ```
/// use herdsman::error::{retry_at, BoxError};
///
/// let err: BoxError = "upstream said no".into();
/// assert!(retry_at(&*err).is_none());
/// ```
pub fn retry_at(err: &(dyn Error + 'static)) -> Option<Instant> {
    // Each layer whose errors carry a retry hint lists its types here.
    #[cfg(feature = "breaker")]
    if let Some(open) = find::<crate::breaker::BreakerOpen>(err) {
        return open.retry_at();
    }
    #[cfg(feature = "limit")]
    if let Some(overloaded) = find::<crate::limit::Overloaded>(err) {
        return Some(overloaded.retry_at());
    }
    #[cfg(feature = "limit")]
    if let Some(capped) = find::<crate::limit::TooManyInFlight>(err) {
        return Some(capped.retry_at());
    }
    #[cfg(feature = "limit")]
    if let Some(limited) = find::<crate::limit::RateLimited>(err) {
        return Some(limited.retry_at());
    }
    let _ = err;
    None
}
