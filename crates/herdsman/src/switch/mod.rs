//! Run-time switches and gradual rollout: turning layers off without a
//! restart.
//!
//! The rollback plan for any change in how requests are coordinated is "send
//! them the plain way again", and it must not need a deploy. [`Switches`]
//! holds one switch per layer per endpoint class plus one for the whole
//! stack; the request path reads a [`Switch`] (one atomic load) and an
//! operator (the admin endpoints) flips it. [`Switched`] routes each request
//! through the coordinated stack or straight to the inner service, as a
//! [`Gate`] decides: a switch, a [`Rollout`] that admits a stable share of
//! callers, or both.
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

#[cfg(feature = "http")]
mod rollout;
mod service;
mod switches;

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use self::rollout::Rollout;
pub use self::{
    service::{Gate, ResponseFuture, Switched, SwitchedLayer},
    switches::{LayerName, Switch, SwitchState, Switches, UnknownSwitch},
};
