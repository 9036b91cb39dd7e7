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
