//! Errors shared by every layer, and how an error says what it is.
//!
//! Layers follow tower's convention: they return [`BoxError`], and each
//! failure mode they add is its own small error type that callers find with
//! [`find`]. When one result is handed to many callers (dedup, cache,
//! registry), the error is shared behind an `Arc` as a [`SharedError`];
//! [`find`] looks through that wrapper and the `source()` chain, so callers
//! need not care whether their error was shared.
//!
//! # Errors that describe themselves
//!
//! The core knows no layer's error types. Each error a layer makes
//! implements [`Describe`]: its [`ErrorKind`] (a local rejection, an
//! overload, an open breaker, an upstream failure, ...), the time a retry
//! can succeed, and, where its kind does not say it, the HTTP status that
//! answers it. The circuit breaker and the stats ([`is_rejection`],
//! [`ErrorKind::of`]), the Registry's poll loop ([`retry_at`]) and the HTTP
//! answers read an error through it, so a new error type needs no edit
//! outside its own layer.
//!
//! On stable Rust a `&dyn Error` cannot be asked whether its type
//! implements a trait: only a concrete type can be downcast to. So a layer
//! boxes its errors with [`boxed`], which wraps them in a core type that is
//! transparent (its `Display`, `Debug` and `source()` are the error's own)
//! and that [`describe`] and [`find`] look through exactly as they look
//! through a [`SharedError`]. The other ways were worse: listing the layers'
//! types here (what this module did before: every new rejection meant an
//! edit here, and the core could not be built without every layer), a
//! registry of types filled at run time (global state on the error path), or
//! a marker hidden in `source()` (which would show up as a cause in every
//! log of the error chain).
//!
//! The price: the error at the top of a layer's `BoxError` is the wrapper,
//! so `err.downcast_ref::<BreakerOpen>()` finds nothing there; use
//! [`find`], which also finds errors that were shared or wrapped. An error
//! of a type that implements [`Describe`] but was boxed with `.into()`
//! rather than [`boxed`] counts as an upstream error.
//!
//! ```
//! use herdsman::error::{boxed, describe, find, is_rejection, BoxError, Describe, ErrorKind, SharedError};
//! use std::fmt;
//!
//! /// A quota of ours: a local rejection.
//! #[derive(Debug)]
//! struct OverQuota;
//! impl fmt::Display for OverQuota {
//!     fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str("over quota") }
//! }
//! impl std::error::Error for OverQuota {}
//! impl Describe for OverQuota {
//!     fn kind(&self) -> ErrorKind { ErrorKind::Rejected }
//! }
//!
//! let err: BoxError = boxed(OverQuota);
//! assert!(is_rejection(&*err));
//! assert_eq!(err.to_string(), "over quota");
//! // Shared with many callers, it says the same, and is still found.
//! let shared: BoxError = Box::new(SharedError::new(err));
//! assert_eq!(describe(&*shared).map(|d| d.kind()), Some(ErrorKind::Rejected));
//! assert!(find::<OverQuota>(&*shared).is_some());
//! ```

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

/// What kind of failure an error is: what the circuit breaker and the
/// stats count it as, and how the HTTP adapter answers it.
///
/// An error that does not [describe itself](Describe) is an
/// [`Upstream`](ErrorKind::Upstream) error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The upstream failed (an error, or a response the failure classifier
    /// calls a failure, such as a 5xx).
    Upstream,
    /// Refused on this side of the upstream because of the request or its
    /// caller, not the load of the service: a caller's or a client
    /// address's share used up, a key too long (HTTP: 429 unless the error
    /// names a status).
    Rejected,
    /// Refused on this side of the upstream because the service is at its
    /// capacity: a concurrency limit and its queue, the Registry's keys or
    /// memory (HTTP: 503).
    Overloaded,
    /// A rate rule refused the request (HTTP: 429).
    RateLimited,
    /// A circuit breaker was open (HTTP: 503).
    BreakerOpen,
    /// The call did not answer in time, such as a half-open breaker's
    /// probe (HTTP: 504).
    TimedOut,
    /// The inner call panicked.
    Panicked,
}

impl ErrorKind {
    /// Every kind, in documentation order.
    #[cfg(any(test, feature = "stats"))]
    pub(crate) const ALL: [ErrorKind; 7] = [
        ErrorKind::Upstream,
        ErrorKind::BreakerOpen,
        ErrorKind::Overloaded,
        ErrorKind::RateLimited,
        ErrorKind::Rejected,
        ErrorKind::Panicked,
        ErrorKind::TimedOut,
    ];

    /// The label in metrics and JSON: `upstream`, `breaker_open`,
    /// `overloaded`, `rate_limited`, `rejected`, `panicked`, `timeout`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Upstream => "upstream",
            ErrorKind::BreakerOpen => "breaker_open",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Panicked => "panicked",
            ErrorKind::TimedOut => "timeout",
        }
    }

    /// Whether errors of this kind are local rejections, made on this side
    /// of the upstream (see [`is_rejection`]).
    pub fn is_rejection(self) -> bool {
        matches!(
            self,
            ErrorKind::Rejected
                | ErrorKind::Overloaded
                | ErrorKind::RateLimited
                | ErrorKind::BreakerOpen
        )
    }

    /// The kind of `err`, as the first error that [describes
    /// itself](Describe) in its chain says; [`Upstream`](ErrorKind::Upstream)
    /// when none does.
    ///
    /// ```
    /// use herdsman::error::{BoxError, ErrorKind};
    ///
    /// let err: BoxError = "connection reset".into();
    /// assert_eq!(ErrorKind::of(&*err), ErrorKind::Upstream);
    /// ```
    pub fn of(err: &(dyn Error + 'static)) -> ErrorKind {
        describe(err).map_or(ErrorKind::Upstream, |d| d.kind())
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error that says what it is: the one trait through which the core
/// reads the errors of every layer (see the [module docs](self)).
///
/// Box an error that implements it with [`boxed`], so that [`describe`]
/// finds it in a [`BoxError`].
pub trait Describe: Error + Send + Sync + 'static + as_error::AsError {
    /// What kind of failure this is.
    fn kind(&self) -> ErrorKind;

    /// When a retry of the call can succeed, if this error knows: an open
    /// breaker's probe time, a limit's hint. Default: `None`.
    ///
    /// An instant, not a duration, so that an error read long after it was
    /// made (shared, kept in a registry update) still counts down.
    fn retry_at(&self) -> Option<Instant> {
        None
    }

    /// The HTTP status that answers this error, when its
    /// [kind](Describe::kind) does not say it well enough: a key too long
    /// (414), the status an upstream answered with. Default: `None`, the
    /// kind decides.
    fn status(&self) -> Option<u16> {
        None
    }
}

mod as_error {
    use std::error::Error;

    /// Views a [`Describe`](super::Describe) as a plain error (trait
    /// upcasting is newer than the crate's minimum Rust version).
    /// Implemented for every error type, so it never needs implementing.
    pub trait AsError {
        /// `self` as a `dyn Error`.
        fn as_error(&self) -> &(dyn Error + Send + Sync + 'static);
    }

    impl<E: Error + Send + Sync + 'static> AsError for E {
        fn as_error(&self) -> &(dyn Error + Send + Sync + 'static) {
            self
        }
    }
}

/// Boxes an error that [describes itself](Describe), so that [`describe`]
/// (and [`find`]) find it in the box: how a layer turns its own errors into
/// a [`BoxError`].
///
/// The box holds a transparent wrapper: its `Display`, `Debug` and
/// `source()` are `err`'s own, but `downcast_ref` on the box does not see
/// `err`; use [`find`].
pub fn boxed<E: Describe>(err: E) -> BoxError {
    Box::new(Described(Box::new(err)))
}

/// The wrapper [`boxed`] makes.
struct Described(Box<dyn Describe>);

impl fmt::Debug for Described {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0.as_error(), f)
    }
}

impl fmt::Display for Described {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.0.as_error(), f)
    }
}

impl Error for Described {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

/// The error in `err`'s chain that [describes itself](Describe), if any:
/// the first one [`boxed`] made, looking inside [`SharedError`]s and along
/// the `source()` chain.
pub fn describe<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a dyn Describe> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(described) = err.downcast_ref::<Described>() {
            return Some(&*described.0);
        }
        if let Some(shared) = err.downcast_ref::<SharedError>() {
            if let Some(found) = describe(shared.get_ref()) {
                return Some(found);
            }
        }
        next = err.source();
    }
    None
}

/// Finds an error of type `T` in `err`, looking inside [`SharedError`]s,
/// inside the boxes [`boxed`] makes, and along the `source()` chain.
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
        // The wrapper's `source()` is its error's, so its error is looked
        // at here or never.
        if let Some(described) = err.downcast_ref::<Described>() {
            if let Some(found) = described.0.as_error().downcast_ref::<T>() {
                return Some(found);
            }
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

/// Whether `err` is a rejection made on this side of the upstream (a load
/// limit, a caller's share of one, a rate limit, an open breaker), rather
/// than a failure of the upstream itself: whether its
/// [kind](ErrorKind::is_rejection) says so.
///
/// Neither the circuit breaker nor the stats count such rejections as
/// upstream failures ([`DefaultFailures`](crate::failure::DefaultFailures)).
pub fn is_rejection(err: &(dyn Error + 'static)) -> bool {
    ErrorKind::of(err).is_rejection()
}

/// When a retry of the call that failed with `err` can succeed, if the
/// error [says so](Describe::retry_at): the probe time of an open breaker,
/// or the time a load or rate limit suggested. `None` for any other error
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
    describe(err)?.retry_at()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A layer's error, as the core sees it: through [`Describe`] only.
    #[derive(Debug)]
    struct Refused {
        kind: ErrorKind,
        retry_at: Option<Instant>,
        cause: Option<BoxError>,
    }

    impl fmt::Display for Refused {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "refused ({})", self.kind)
        }
    }

    impl Error for Refused {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.cause.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    impl Describe for Refused {
        fn kind(&self) -> ErrorKind {
            self.kind
        }

        fn retry_at(&self) -> Option<Instant> {
            self.retry_at
        }
    }

    /// An error around another, as an application's own error type would be.
    #[derive(Debug)]
    struct Context(BoxError);

    impl fmt::Display for Context {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("while fetching")
        }
    }

    impl Error for Context {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    fn refused(kind: ErrorKind) -> Refused {
        Refused {
            kind,
            retry_at: None,
            cause: None,
        }
    }

    #[test]
    fn a_boxed_error_is_found_through_the_wrapper_and_a_shared_error() {
        let err = boxed(refused(ErrorKind::Overloaded));
        assert!(
            err.downcast_ref::<Refused>().is_none(),
            "the box holds the wrapper"
        );
        assert!(find::<Refused>(&*err).is_some());
        assert_eq!(ErrorKind::of(&*err), ErrorKind::Overloaded);

        let shared: BoxError = Box::new(SharedError::new(err));
        assert!(find::<Refused>(&*shared).is_some());
        assert_eq!(ErrorKind::of(&*shared), ErrorKind::Overloaded);
        // Shared twice over, and behind an application's error.
        let twice: BoxError = Box::new(SharedError::new(shared));
        let wrapped: BoxError = Box::new(Context(twice));
        assert!(find::<Refused>(&*wrapped).is_some());
        assert_eq!(
            describe(&*wrapped).map(|d| d.kind()),
            Some(ErrorKind::Overloaded)
        );
    }

    #[test]
    fn the_wrapper_shows_the_errors_own_display_debug_and_source() {
        let err = boxed(Refused {
            kind: ErrorKind::Upstream,
            retry_at: None,
            cause: Some("connection reset".into()),
        });
        assert_eq!(err.to_string(), "refused (upstream)");
        assert!(format!("{err:?}").starts_with("Refused {"), "{err:?}");
        let source = err.source().expect("the error's own source");
        assert_eq!(source.to_string(), "connection reset");
    }

    #[test]
    fn an_error_that_does_not_describe_itself_is_an_upstream_error() {
        let plain: BoxError = "connection reset".into();
        assert!(describe(&*plain).is_none());
        assert_eq!(ErrorKind::of(&*plain), ErrorKind::Upstream);
        assert!(!is_rejection(&*plain));
        // Boxed with `into` rather than `boxed`: found by type, not described.
        let unwrapped: BoxError = Box::new(refused(ErrorKind::RateLimited));
        assert!(find::<Refused>(&*unwrapped).is_some());
        assert_eq!(ErrorKind::of(&*unwrapped), ErrorKind::Upstream);
    }

    #[test]
    fn only_refusals_made_on_this_side_are_rejections() {
        for kind in ErrorKind::ALL {
            let expected = matches!(
                kind,
                ErrorKind::Rejected
                    | ErrorKind::Overloaded
                    | ErrorKind::RateLimited
                    | ErrorKind::BreakerOpen
            );
            assert_eq!(is_rejection(&*boxed(refused(kind))), expected, "{kind:?}");
            assert_eq!(kind.to_string(), kind.as_str());
        }
    }

    #[test]
    fn the_first_described_error_of_a_chain_speaks_for_it() {
        let inner = boxed(refused(ErrorKind::Panicked));
        let outer = boxed(Refused {
            kind: ErrorKind::TimedOut,
            retry_at: None,
            cause: Some(inner),
        });
        assert_eq!(ErrorKind::of(&*outer), ErrorKind::TimedOut);
        // An error that describes nothing lets its cause speak.
        let inner = boxed(refused(ErrorKind::Panicked));
        let outer: BoxError = Box::new(Context(Box::new(Context(inner))));
        assert_eq!(ErrorKind::of(&*outer), ErrorKind::Panicked);
        assert!(find::<Refused>(&*outer).is_some());
    }

    #[test]
    fn retry_at_is_read_through_shared_errors() {
        let at = Instant::now() + Duration::from_secs(3);
        let err = boxed(Refused {
            kind: ErrorKind::RateLimited,
            retry_at: Some(at),
            cause: None,
        });
        assert_eq!(retry_at(&*err), Some(at));
        let shared = SharedError::new(err);
        assert_eq!(retry_at(&shared), Some(at));
        assert_eq!(retry_at(&*boxed(refused(ErrorKind::BreakerOpen))), None);
    }
}
