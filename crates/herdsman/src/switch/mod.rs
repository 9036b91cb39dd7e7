//! Run-time switches and gradual rollout: turning layers off without a
//! restart.
//!
//! The rollback plan for any change in how requests are coordinated is "send
//! them the plain way again", and it must not need a deploy. [`Switches`]
//! holds one switch per layer per endpoint class plus one for the whole
//! stack; the request path reads a [`Switch`] (one atomic load) and an
//! operator (the admin endpoints) flips it.
//!
//! Each layer asks its classifier whether it is on for a request
//! ([`Classify::is_on`](crate::class::Classify::is_on)) and, when it is
//! off, passes the request straight to its inner service. Classifiers are
//! always on unless they say otherwise: a layer used alone pays nothing.
//! [`WithSwitches`] gives any classifier per-class [`Switches`]; the
//! [`Coordinator`][crate::Coordinator]'s classifier reads the switches of
//! the class it carries in the request.
//!
//! [`Switched`] routes each request through the coordinated stack or
//! straight to the inner service, as a [`Gate`] decides: a switch, a
//! [`Rollout`] that admits a stable share of callers, or both. Its future,
//! [`Either`], is the one way herdsman sends a request down one of two
//! paths.
//!
//! # Examples
//!
//! ```
//! use herdsman::{class::Class, switch::{LayerName, Switches}};
//!
//! let switches = Switches::new(["active-users"]);
//! let cache = switches.switch(LayerName::Cache, &Class::new("active-users"));
//! assert!(cache.is_on());
//!
//! switches.set(LayerName::Cache, &Class::new("active-users"), false).unwrap();
//! assert!(!cache.is_on()); // the handle sees the flip at once
//!
//! switches.set_all(false); // bypass the whole stack
//! assert!(!switches.is_on(LayerName::Dedup, &Class::default()));
//! switches.set_all(true);
//! assert!(switches.is_on(LayerName::Dedup, &Class::default()));
//! assert!(!cache.is_on()); // its own switch is still off
//! ```
//!
#![cfg_attr(
    not(feature = "coordinator"),
    doc = "[crate::Coordinator]: crate#feature-flags"
)]
#![cfg_attr(not(feature = "http"), doc = "[`Rollout`]: crate#feature-flags")]

mod either;
#[cfg(feature = "http")]
mod rollout;
mod service;
mod switches;

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use self::rollout::Rollout;
pub use self::{
    either::Either,
    service::{Gate, Switched, SwitchedLayer},
    switches::{LayerName, Switch, SwitchState, Switches, UnknownSwitch, WithSwitches},
};
