//! Errors of the dedup layer.

use std::{any::Any, error::Error, fmt};

use crate::error::{boxed, BoxError, Describe, ErrorKind};

/// The inner service panicked while handling a coalesced call.
///
/// Every caller waiting on that call, its driver included, receives this
/// error (inside a [`SharedError`](crate::error::SharedError)); the key is
/// free again at once.
#[derive(Debug)]
pub struct Panicked {
    message: Option<String>,
}

impl Panicked {
    pub(crate) fn from_payload(payload: Box<dyn Any + Send>) -> Self {
        let message = payload
            .downcast_ref::<&'static str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned());
        Panicked { message }
    }

    /// A panic in the inner service's `call`, boxed for sharing.
    pub(crate) fn in_call() -> BoxError {
        boxed(Panicked {
            message: Some("panic in Service::call".into()),
        })
    }

    /// The panic message, when it was a string.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
}

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(msg) => write!(f, "inner service panicked: {msg}"),
            None => f.write_str("inner service panicked"),
        }
    }
}

impl Error for Panicked {}

impl Describe for Panicked {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Panicked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{find, is_rejection, SharedError};

    #[test]
    fn a_panic_is_a_panicked_failure_found_through_its_shared_error() {
        let shared: BoxError = Box::new(SharedError::new(Panicked::in_call()));
        assert_eq!(ErrorKind::of(&*shared), ErrorKind::Panicked);
        assert!(!is_rejection(&*shared));
        let panicked = find::<Panicked>(&*shared).expect("found through the wrapper");
        assert_eq!(panicked.message(), Some("panic in Service::call"));
    }
}
