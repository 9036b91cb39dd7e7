//! Endpoint classes: names that group keys for TTLs, limits, breakers,
//! intervals and stats.
//!
//! A [`Classify`] maps a request to its [`Class`]; requests it does not
//! recognise belong to [`Class::default()`] (`"default"`). For HTTP,
//! [`PathClasses`](crate::http::PathClasses) matches path patterns such as
//! `/api/boards/{board}/events`.
//!
//! ```
//! use herdsman::class::{Class, Classify};
//!
//! let by_prefix = |path: &&str| {
//!     if path.starts_with("/api/active-users") { Class::new("active-users") } else { Class::default() }
//! };
//! assert_eq!(by_prefix.classify(&"/api/active-users"), Class::new("active-users"));
//! assert_eq!(by_prefix.classify(&"/health").as_str(), "default");
//! ```

use std::{borrow::Borrow, fmt, sync::Arc};

/// The name of an endpoint class. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Class(Arc<str>);

impl Class {
    /// The class called `name`.
    pub fn new(name: impl AsRef<str>) -> Self {
        Class(Arc::from(name.as_ref()))
    }

    /// The class's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Class {
    /// The class of requests no rule matched: `"default"`.
    fn default() -> Self {
        Class::new("default")
    }
}

impl fmt::Debug for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Borrow<str> for Class {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Class {
    fn from(name: &str) -> Self {
        Class::new(name)
    }
}

/// Maps a request to its endpoint [`Class`].
///
/// Implemented for every `Fn(&Req) -> Class`, and for [`AllDefault`], which
/// puts every request in the default class.
pub trait Classify<Req> {
    /// The class of `req`.
    fn classify(&self, req: &Req) -> Class;
}

impl<Req, F> Classify<Req> for F
where
    F: Fn(&Req) -> Class,
{
    fn classify(&self, req: &Req) -> Class {
        self(req)
    }
}

/// Puts every request in [`Class::default()`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AllDefault;

impl<Req> Classify<Req> for AllDefault {
    fn classify(&self, _: &Req) -> Class {
        Class::default()
    }
}
