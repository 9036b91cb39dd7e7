//! Circuit breaker: fail fast while an upstream is sick, and let one probe
//! find out when it has recovered.
//!
//! One breaker per endpoint class (or per key: a [`Classify`](crate::class::Classify)
//! that names a class per key), in the shape of resilience4j's, tuned for
//! coalesced traffic: with Dedup and the registry above it an upstream sees
//! about one call per poll interval, so the defaults trip within a handful of
//! failures (resilience4j's minimum of 100 calls would never trip).
//!
//! # States
//!
//! - **Closed**: calls go through; their outcomes fill a sliding window: the
//!   last [`window`](BreakerConfig::window) calls (a ring of bits), or the
//!   calls of the last [`time_window`](BreakerConfig::time_window) (ten
//!   buckets of fixed size). The breaker opens when,
//!   once [`minimum_calls`](BreakerConfig::minimum_calls) are in the window,
//!   the failure rate or the slow-call rate reaches its threshold (exactly at
//!   the threshold opens), or after
//!   [`consecutive_failures`](BreakerConfig::consecutive_failures) in a row.
//! - **Open**: calls fail at once with [`BreakerOpen`], which carries
//!   `retry_after`. The first call after the open duration moves it to
//!   half-open. Each trip without a recovery in between multiplies the open
//!   duration by [`backoff`](BreakerConfig::backoff), up to a cap, plus jitter.
//! - **Half-open**: up to [`half_open_probes`](BreakerConfig::half_open_probes)
//!   calls at once go through as probes; that many successes close the
//!   breaker, one failure opens it again. Other calls are rejected and change
//!   nothing. A probe whose caller goes away returns its permit; a probe that
//!   does not answer within [`probe_timeout`](BreakerConfig::probe_timeout)
//!   counts as a failure, so half-open never wedges.
//! - **Forced open** and **disabled**, set by hand through [`BreakerHandle`]
//!   (`force_open`, `disable`, `reset`) to isolate an upstream or bypass the
//!   breaker without a restart.
//!
//! # What counts as a failure
//!
//! [`DefaultFailures`]: an error, except local rejections (the limit layer's
//! `Overloaded` and `RateLimited`, another breaker's [`BreakerOpen`]), which
//! are not counted at all. For HTTP, [`ServerErrors`][crate::http::ServerErrors]
//! also counts 5xx responses and not 4xx. Any
//! `Fn(&Result<T, BoxError>) -> Verdict` overrides it.
//!
//! # Events and metrics
//!
//! Every transition and rejection is sent to [`BreakerHandle::subscribe`]rs,
//! logged with `tracing` (a warning when a breaker opens), and exported
//! through `metrics`: `herdsman_breaker_state{endpoint, state}` (1 for the
//! current state; the previous state's series is set back to 0),
//! `herdsman_breaker_trips_total{endpoint}` and
//! `herdsman_breaker_rejections_total{endpoint}`. Metric handles are
//! registered when a breaker is first used, with the recorder installed then.
//!
//! With [`BreakerLayer::with_observer`], the same places report
//! [`Event::BreakerState`](crate::event::Event::BreakerState) on each change
//! of state (a reset to the state a breaker is in is not a change) and
//! [`Event::Rejected`](crate::event::Event::Rejected)`(BreakerOpen)` for each
//! call failed fast, with the breaker's class: nothing is classified twice.
//!
//! # Shared trips (replicas)
//!
//! Off by default, each replica's breakers trip on their own. With
//! [`BreakerLayer::with_trip_backend`] and a
//! [`TripBackend`](crate::backend::TripBackend) (`herdsman_redis::RedisTrips`
//! shares them through Redis), each trip of this layer's breakers (a
//! closed breaker that opens, or a half-open one whose probe failed) is
//! announced with its open time, and a trip another replica announces
//! opens this layer's closed or half-open breaker of that class for the
//! time the trip has left: its callers fail fast at once instead of each
//! replica paying for its own failures first. The breaker then probes as
//! usual, on its own. A trip heard is not announced again (no echo), not
//! counted in [`ClassStats::trips`], and leaves a breaker that is open
//! already, forced open or disabled as it is; it does report its
//! transition (events, `herdsman_breaker_state`, the `breaker_trip` alert)
//! like any other.
//!
//! # Hot path
//!
//! Closed, the breaker reads one atomic word to admit a call and, when it
//! ends, bumps the window position and writes the window only where a bit
//! changes: no lock, no allocation, nothing awaited, and no clock read unless
//! slow-call detection is on (two reads per call). Finding the class's breaker
//! reads an immutable map through `ArcSwap`. Open, a rejection reads the clock
//! once.
//!
//! Outcomes are counted against the state they were admitted in: a call
//! admitted while closed that ends after the breaker opened is not counted.
//!
//! # Examples
//!
//! ```
//! use herdsman::breaker::{BreakerConfig, BreakerLayer, BreakerOpen, BreakerState};
//! use herdsman::{class::Class, error::find};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let breaker = BreakerLayer::new();
//! let svc = ServiceBuilder::new()
//!     .layer(breaker.clone())
//!     .service(service_fn(|_: ()| async { Err::<(), _>("upstream down") }));
//!
//! for _ in 0..3 {
//!     assert!(svc.clone().oneshot(()).await.is_err()); // three failures in a row
//! }
//! assert_eq!(breaker.handle().state(&Class::default()), BreakerState::Open);
//! let err = svc.clone().oneshot(()).await.unwrap_err();
//! assert!(find::<BreakerOpen>(&*err).unwrap().retry_after().is_some());
//! # }
//! ```
//!
#![cfg_attr(
    not(feature = "http"),
    doc = "[crate::http::ServerErrors]: crate#feature-flags"
)]

mod circuit;
mod circuits;
mod config;
mod error;
mod future;
mod handle;
mod layer;
mod service;

pub use self::{
    config::BreakerConfig,
    error::{BreakerOpen, ProbeTimedOut},
    future::ResponseFuture,
    handle::BreakerHandle,
    layer::{BreakerLayer, DEFAULT_MAX_CIRCUITS},
    service::Breaker,
};
use crate::class::Class;
/// The failure verdict ([`crate::failure`]) and the breaker's state
/// ([`crate::event`]) live in the core, shared with the Stats layer;
/// re-exported here, where breaker users look for them.
pub use crate::{
    event::BreakerState,
    failure::{DefaultFailures, FailureClassifier, Verdict},
};

/// What a breaker did, for [`BreakerHandle::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerEvent {
    /// A breaker changed state.
    Transition {
        /// Its endpoint class.
        class: Class,
        /// The state it left.
        from: BreakerState,
        /// The state it entered.
        to: BreakerState,
    },
    /// A call was rejected.
    Rejected {
        /// Its endpoint class.
        class: Class,
    },
}

/// Counters of one layer value's breakers, from
/// [`BreakerHandle::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerStats {
    /// One entry per class whose breaker exists (has seen a call or been
    /// steered), sorted by class name.
    pub classes: Vec<ClassStats>,
}

impl BreakerStats {
    /// The counters of the breaker of the class called `name`, if it exists.
    pub fn class(&self, name: &str) -> Option<&ClassStats> {
        self.classes.iter().find(|c| c.class.as_str() == name)
    }
}

/// Counters of one class's breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClassStats {
    /// The class.
    pub class: Class,
    /// The current state.
    pub state: BreakerState,
    /// Outcomes in the window now.
    pub calls_in_window: u32,
    /// Failures among them.
    pub failures_in_window: u32,
    /// Slow calls among them.
    pub slow_in_window: u32,
    /// Failures in a row now.
    pub consecutive_failures: u32,
    /// Times the breaker opened on its own (not for another replica's
    /// trip: see [Shared trips](self#shared-trips-replicas)).
    pub trips: u64,
    /// Calls rejected.
    pub rejected: u64,
}
