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

use std::{
    cmp::Ordering,
    fmt,
    hash::{BuildHasher, Hash, Hasher},
    sync::{Arc, OnceLock},
};

/// The name of an endpoint class. Cheap to clone (an `Arc`); its hash is
/// computed once, so per-class maps on the request path do not hash the name.
#[derive(Clone)]
pub struct Class {
    name: Arc<str>,
    hash: u64,
}

impl Class {
    /// The class called `name`.
    pub fn new(name: impl AsRef<str>) -> Self {
        static STATE: OnceLock<foldhash::fast::RandomState> = OnceLock::new();
        let name = name.as_ref();
        Class {
            hash: STATE.get_or_init(Default::default).hash_one(name),
            name: Arc::from(name),
        }
    }

    /// The class's name.
    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl Default for Class {
    /// The class of requests no rule matched: `"default"`. Made once per
    /// process; cloning it is a reference count.
    fn default() -> Self {
        static DEFAULT: OnceLock<Class> = OnceLock::new();
        DEFAULT.get_or_init(|| Class::new("default")).clone()
    }
}

impl PartialEq for Class {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.name, &other.name) || (self.hash == other.hash && self.name == other.name)
    }
}

impl Eq for Class {}

impl Hash for Class {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialOrd for Class {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Class {
    fn cmp(&self, other: &Self) -> Ordering {
        self.name.cmp(&other.name)
    }
}

impl fmt::Debug for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.name, f)
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
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
