//! Endpoint classes: names that group keys for TTLs, limits, breakers,
//! intervals and stats.
//!
//! A [`Classify`] maps a request to its [`Class`]; requests it does not
//! recognise belong to [`Class::default()`] (`"default"`). For HTTP,
//! [`PathClasses`][crate::http::PathClasses] matches path patterns such as
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
//!
#![cfg_attr(
    not(feature = "http"),
    doc = "[crate::http::PathClasses]: crate#feature-flags"
)]

use std::{
    cmp::Ordering,
    fmt,
    hash::{BuildHasher, Hash, Hasher},
    sync::{Arc, OnceLock},
};

use crate::switch::LayerName;

/// The name of an endpoint class. Cheap to clone (a copy for names known at
/// compile time, a reference count otherwise); its hash is computed once, so
/// per-class maps on the request path do not hash the name.
#[derive(Clone)]
pub struct Class {
    name: Name,
    hash: u64,
}

#[derive(Clone)]
enum Name {
    Static(&'static str),
    Shared(Arc<str>),
}

fn hash_name(name: &str) -> u64 {
    static STATE: OnceLock<foldhash::fast::RandomState> = OnceLock::new();
    STATE.get_or_init(Default::default).hash_one(name)
}

impl Class {
    /// The class called `name`.
    pub fn new(name: impl AsRef<str>) -> Self {
        let name = name.as_ref();
        Class {
            hash: hash_name(name),
            name: Name::Shared(Arc::from(name)),
        }
    }

    /// The class called `name`, known at compile time: cloning it copies a
    /// pointer, with no reference count to touch on the request path.
    pub fn from_static(name: &'static str) -> Self {
        Class {
            hash: hash_name(name),
            name: Name::Static(name),
        }
    }

    /// The class's name.
    pub fn as_str(&self) -> &str {
        match &self.name {
            Name::Static(name) => name,
            Name::Shared(name) => name,
        }
    }
}

impl Default for Class {
    /// The class of requests no rule matched: `"default"`. Cloning it is a
    /// copy.
    #[inline]
    fn default() -> Self {
        static DEFAULT: OnceLock<Class> = OnceLock::new();
        DEFAULT
            .get_or_init(|| Class::from_static("default"))
            .clone()
    }
}

impl PartialEq for Class {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.as_str(), other.as_str());
        // Same string in memory (the default class, a clone): no compare.
        (std::ptr::eq(a, b)) || (self.hash == other.hash && a == b)
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
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Debug for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Class {
    fn from(name: &str) -> Self {
        Class::new(name)
    }
}

/// Maps a request to its endpoint [`Class`], and tells a layer whether its
/// run-time switch for that class is on.
///
/// Implemented for every `Fn(&Req) -> Class`, and for [`AllDefault`], which
/// puts every request in the default class. Their layers are always on, at
/// no cost; [`WithSwitches`](crate::switch::WithSwitches) adds per-class
/// [`Switches`](crate::switch::Switches) to any classifier.
pub trait Classify<Req> {
    /// The class of `req`.
    fn classify(&self, req: &Req) -> Class;

    /// Whether `layer` handles `req`: its switch for the request's class is
    /// on. When it is off, the layer passes the request straight to its
    /// inner service. Every layer asks this of its classifier on each call,
    /// so it must be cheap (one atomic load, say); the default, always on,
    /// costs nothing.
    #[inline]
    fn is_on(&self, req: &Req, layer: LayerName) -> bool {
        let _ = (req, layer);
        true
    }
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
    #[inline]
    fn classify(&self, _: &Req) -> Class {
        Class::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn static_and_shared_names_are_the_same_class() {
        assert_eq!(Class::default(), Class::new("default"));
        assert_eq!(Class::from_static("a"), Class::new(String::from("a")));
        assert_ne!(Class::from_static("a"), Class::from_static("b"));
        let set: HashSet<Class> = [Class::new("a"), Class::from_static("a")].into();
        assert_eq!(set.len(), 1);
        assert_eq!(Class::default().to_string(), "default");
    }
}
