//! Limit: a concurrency limit per endpoint class, and keyed rate rules.
//!
//! One slow endpoint must not take every connection to the upstream, and no
//! hook or client may poll faster than the operator allows. [`Limit`] gives
//! each endpoint class (named by a [`Classify`](crate::class::Classify)) its
//! own permits, an optional first-come-first-served queue and an optional
//! [`RateRule`]. It sits innermost in the stack, so it bounds real upstream
//! work, and its rejections are not counted as upstream failures by the
//! breaker ([`is_rejection`](crate::error::is_rejection)).
//!
//! # Semantics
//!
//! - **Per class.** Each class has `max_concurrent` permits, a queue of
//!   `max_queue` (zero: reject at once when all permits are taken) and a
//!   `max_wait` ([`ClassLimits`]). Classes without limits of their own get the
//!   default limits, and still permits of their own: classes are isolated, and
//!   a class saturated by slow calls does not delay another. (Up to 256 such
//!   classes; past that they share the permits of one `"overflow"` class.)
//!   [`ClassLimits::unlimited`] gives a class a rate rule and no concurrency
//!   limit.
//! - **Queue.** Waiters are served first come, first served (in the order of
//!   their `call`s): a newcomer never takes a permit while anybody waits. A
//!   waiter that gets no permit within `max_wait` of its call is rejected.
//! - **Permits** are taken by the response future and given back when the
//!   inner call completes, when the response future is dropped (cancelled),
//!   and when the inner future panics, even if the panic is caught and the
//!   future kept. The service itself never holds one, so dropping it frees
//!   nothing and leaks nothing.
//! - **Shares per caller and per client address.** Within a class, one
//!   caller ([`LimitLayer::with_identity`]) may hold at most
//!   [`ClassLimits::with_max_concurrent_per_caller`] calls in flight or
//!   waiting, and one client address ([`LimitLayer::with_address`], usually
//!   [`ClientAddress`][crate::http::ClientAddress]) at most
//!   [`ClassLimits::with_max_concurrent_per_address`], so that one caller
//!   flooding distinct requests cannot take every permit from the others,
//!   and new credentials on every request do not make new shares. A request
//!   over either is refused at once with [`TooManyInFlight`], before it
//!   takes a permit or a place in the queue; its calls in the shares are
//!   given back with its permit (on completion, drop or panic). A request
//!   without an identity counts by address only, one without an address by
//!   identity only. Innermost in the stack, only misses reach the layer,
//!   and a miss coalesced by Dedup counts once, for the caller whose
//!   request went down.
//! - **Rejections** are typed, returned as [`BoxError`](crate::error::BoxError)
//!   and found with [`find`](crate::error::find): [`Overloaded`] (the HTTP
//!   adapter answers 503 with `Retry-After`), [`RateLimited`] and
//!   [`TooManyInFlight`] (429 with `Retry-After`).
//! - **Rate rules** ([`RateRule`]) are GCRA through the [governor] crate, per
//!   class, counted by class, by caller identity
//!   ([`LimitLayer::with_identity`]) or by both ([`RateKey`]), with a burst.
//!   They are checked before the concurrency limit: a request over its budget
//!   takes no permit. An alert-only rule ([`RateMode::AlertOnly`]) lets every
//!   request through, counts the would-be rejections
//!   ([`ClassStats::rate_alerts`]) and logs a warning at most once per key per
//!   period of the rule. The budgets live in memory ([`GovernorRates`]) unless
//!   the layer is given a [`RateBackend`](crate::backend::RateBackend)
//!   ([`LimitLayer::with_rate_backend`]), for rules kept cluster-wide.
//! - **Configuration.** [`ClassLimits`] (with its [`RateRule`]) is also
//!   the `[limit]` section of a [`Config`][crate::config::Config] and a
//!   class's `limit` table, with the `config` feature: what a file sets is
//!   what the layer gets, and a rule read from a file is checked as it is
//!   read.
//! - **Shared state.** All clones of a `Limit`, and all services made from
//!   one [`LimitLayer`] value, share its permits, queues and budgets: put one
//!   layer value on every service that reaches the same upstream.
//!
//! # Events
//!
//! With [`LimitLayer::with_observer`], each refused request reports
//! [`Event::Rejected`](crate::event::Event::Rejected) with
//! [`Rejection::Overloaded`](crate::event::Rejection::Overloaded) (no queue,
//! queue full, or wait timed out),
//! [`Rejection::RateLimited`](crate::event::Rejection::RateLimited) or
//! [`Rejection::InFlightCap`](crate::event::Rejection::InFlightCap), with its
//! class, where the class's counters are bumped. Alert-only breaches are let
//! through and report nothing. [`LimitHandle`] is the rate rules' key
//! stores' [`MemorySource`].
//!
//! # Back-pressure
//!
//! A request's class is known only in `call`, so `poll_ready` cannot wait for
//! *its* permit: `poll_ready` is the inner service's, and the permit is taken
//! by the response future (as hyper-util's keyed connection pool and axum's
//! per-route middleware do). A full class answers with an error or a wait in
//! its queue, not with `Poll::Pending`.
//!
//! When the whole service should push back as well, put tower's
//! `ConcurrencyLimit` (which waits in `poll_ready`) under `LoadShed` (which
//! turns that wait into an immediate error) around the stack:
//!
//! ```
//! use herdsman::limit::{ClassLimits, LimitLayer};
//! use std::convert::Infallible;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let svc = ServiceBuilder::new()
//!     .load_shed() // not ready: fail at once with tower's `Overloaded`
//!     .concurrency_limit(64) // at most 64 calls in all, taken in `poll_ready`
//!     .layer(LimitLayer::new(ClassLimits::new(16))) // at most 16 per class, taken in `call`
//!     .service(service_fn(|req: u32| async move { Ok::<_, Infallible>(req) }));
//! assert_eq!(svc.oneshot(7).await.unwrap(), 7);
//! # }
//! ```
//!
//! # Examples
//!
//! ```
//! use herdsman::{
//!     class::Class,
//!     error::find,
//!     limit::{ClassLimits, LimitLayer, Overloaded},
//! };
//! use std::{convert::Infallible, time::Duration};
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let class_of = |path: &&str| {
//!     if path.starts_with("/reports") { Class::new("reports") } else { Class::default() }
//! };
//! let limit = LimitLayer::new(ClassLimits::new(16))
//!     .with_class("reports", ClassLimits::new(1)) // one report at a time, no queue
//!     .with_classifier(class_of);
//! let mut svc = ServiceBuilder::new()
//!     .layer(limit.clone())
//!     .service(service_fn(|path: &'static str| async move {
//!         if path.starts_with("/reports") {
//!             tokio::time::sleep(Duration::from_secs(10)).await; // a slow endpoint
//!         }
//!         Ok::<_, Infallible>(path)
//!     }));
//!
//! let report = svc.ready().await.unwrap().call("/reports/2024"); // takes the permit
//! let err = svc.ready().await.unwrap().call("/reports/2025").await.unwrap_err();
//! assert!(find::<Overloaded>(&*err).is_some());
//! // Other classes are not held up by the slow one.
//! assert_eq!(svc.ready().await.unwrap().call("/boards").await.unwrap(), "/boards");
//! assert_eq!(report.await.unwrap(), "/reports/2024");
//! assert_eq!(limit.handle().stats().class("reports").unwrap().rejected_overloaded, 1);
//! # }
//! ```
//!
//! The operations plan's alarm, "more than 20 requests per minute per hook",
//! as a rule that reports without rejecting (drop `.alert_only()` to
//! enforce it):
//!
//! ```
//! use herdsman::{key::Key, limit::{ClassLimits, LimitLayer, RateKey, RateRule}};
//!
//! let hook_id = |req: &http::Request<()>| {
//!     req.headers().get("x-hook-id").map(|id| Key::new(id.as_bytes()))
//! };
//! let limit = LimitLayer::new(
//!     ClassLimits::new(32).with_rate(
//!         RateRule::per_minute(20).keyed_by(RateKey::ClassAndIdentity).alert_only(),
//!     ),
//! )
//! .with_identity(hook_id);
//! # let _ = limit;
//! ```
//!
//! One caller may hold a quarter of a class, one client address half of
//! it:
//!
//! ```
//! use herdsman::{
//!     error::find,
//!     http::{ClientAddr, ClientAddress},
//!     key::Key,
//!     limit::{ClassLimits, LimitLayer, TooManyInFlight},
//! };
//! use std::convert::Infallible;
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let api_key = |req: &http::Request<()>| {
//!     req.headers().get("x-api-key").map(|k| Key::new(k.as_bytes()))
//! };
//! let limit = LimitLayer::new(
//!     ClassLimits::new(32)
//!         .with_max_concurrent_per_caller(8)
//!         .with_max_concurrent_per_address(16),
//! )
//! .with_identity(api_key)
//! .with_address(ClientAddress::default()); // the `ClientAddr` the server inserted
//! let mut svc = ServiceBuilder::new()
//!     .layer(limit)
//!     .service(service_fn(|_: http::Request<()>| std::future::pending::<Result<(), Infallible>>()));
//!
//! let request = |key: &str| {
//!     let mut req = http::Request::builder().header("x-api-key", key).body(()).unwrap();
//!     req.extensions_mut().insert(ClientAddr("192.0.2.1:5000".parse().unwrap()));
//!     req
//! };
//! let mut in_flight = Vec::new();
//! for _ in 0..8 {
//!     in_flight.push(svc.ready().await.unwrap().call(request("one")));
//! }
//! // The caller's share is taken: its next call is refused at once.
//! let err = svc.ready().await.unwrap().call(request("one")).await.unwrap_err();
//! assert!(!find::<TooManyInFlight>(&*err).unwrap().by_address());
//! # }
//! ```
//!
//! # Tuning
//!
//! - `max_concurrent`: what the upstream can serve at once for that class,
//!   e.g. its share of the client's connection pool. A queue (with a
//!   `max_wait` below the caller's own timeout) absorbs short bursts; no
//!   queue sheds load at once, which suits callers that poll again anyway.
//! - Rate rules: `burst` is what a quiet caller may send at once; `1` spaces
//!   requests evenly. A rule tracks at most `max_keys` keys (default
//!   100,000, some 100 to 200 bytes each). Idle keys, whose budget has
//!   refilled, are pruned every `max_keys / 4` new keys, so memory stays
//!   bounded however many distinct callers come and go. If the store is
//!   still full of active keys, new keys pass untracked
//!   ([`LimitStats::rate_untracked`]); raise `max_keys` if that counter
//!   moves. A rule costs one clock read and a compare-and-swap per
//!   request, plus a sharded map lookup when it counts by caller; pruning
//!   scans the store on the request that triggers it.
//! - Shares: a caller's share is what one client needs in parallel (a
//!   page's requests, a worker pool); the Coordinator's defaults
//!   ([`Share::Auto`]) are a quarter of the class per caller and half per
//!   address (an address may be many honest callers behind a NAT), and
//!   follow each class's own limit. Each class keeps one small map
//!   per share, holding only the keys with calls in flight or waiting: it
//!   drains to empty when the class is idle, and never outgrows the
//!   class's requests ([`ClassStats::callers`], [`ClassStats::addresses`]).
//! - Cost: an admitted request with a free permit takes no lock, no
//!   allocation and no clock read in this layer: a map lookup of its class
//!   (none for the default class) and a compare-and-swap. A class without a
//!   queue (the default) counts its calls in flight with two atomic
//!   counters, so giving the permit back is one atomic add; a class with a
//!   queue uses a fair semaphore, whose give-back takes its short internal
//!   lock (as tower's `ConcurrencyLimit` does) to hand the permit to the
//!   next waiter. A wait in the queue allocates its future and reads the
//!   clock once. A class with
//!   shares adds, per request with an identity or an address, the key
//!   functions' work and one short lock of a map shard (of 16) to take each
//!   share and one to give it back (a new key allocates its map entry);
//!   a class without shares asks neither key function.
//!
#![cfg_attr(
    not(feature = "config"),
    doc = "[crate::config::Config]: crate#feature-flags"
)]
#![cfg_attr(
    not(feature = "http"),
    doc = "[crate::http::ClientAddress]: crate#feature-flags"
)]

mod caller;
mod error;
mod future;
mod layer;
mod rate;
mod service;
mod state;

pub use self::{
    error::{Overloaded, RateLimited, TooManyInFlight},
    future::ResponseFuture,
    layer::{
        ClassLimits, LimitLayer, NoIdentity, Share, DEFAULT_MAX_CONCURRENT, DEFAULT_MAX_WAIT,
        DEFAULT_RETRY_AFTER,
    },
    rate::{GovernorBudgets, GovernorRates, RateKey, RateMode, RateRule, DEFAULT_MAX_KEYS},
    service::Limit,
};

use std::{fmt, sync::Arc};

use crate::{class::Class, event::MemorySource};

/// The bytes one key of a rate rule is estimated to hold, for
/// [`MemorySource`]: the key store's record of the budget's key (class
/// index and caller identity) and its state, with the hash table's spare
/// room. Identity bytes beyond the 24 stored inline are not counted.
pub const RATE_KEY_ESTIMATE_BYTES: u64 = 160;

/// A handle to one [`LimitLayer`] value's state, from
/// [`LimitLayer::handle`]: its counters, and the memory its rate rules' key
/// stores hold for the Stats layer ([`LimitStats::rate_keys`] ×
/// [`RATE_KEY_ESTIMATE_BYTES`]; the per-class state is fixed and small).
/// Cheap to clone.
#[derive(Clone)]
pub struct LimitHandle {
    shared: Arc<state::Shared>,
}

impl LimitHandle {
    pub(crate) fn new(shared: Arc<state::Shared>) -> Self {
        LimitHandle { shared }
    }

    /// The counters of the layer's classes.
    pub fn stats(&self) -> LimitStats {
        self.shared.stats()
    }
}

impl MemorySource for LimitHandle {
    fn memory_bytes(&self) -> u64 {
        self.shared.rate_keys() * RATE_KEY_ESTIMATE_BYTES
    }
}

impl fmt::Debug for LimitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitHandle")
            .field("shared", &self.shared)
            .finish()
    }
}

/// Counters of one layer value's classes, for the stats layer and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitStats {
    /// One entry per class seen or configured, sorted by class name.
    pub classes: Vec<ClassStats>,
    /// Keys the rate rules hold now.
    pub rate_keys: u64,
    /// Requests a rate rule decided without keeping their key, its key store
    /// being full of active keys.
    pub rate_untracked: u64,
}

impl LimitStats {
    /// The counters of the class called `name`.
    pub fn class(&self, name: &str) -> Option<&ClassStats> {
        self.classes.iter().find(|c| c.class.as_str() == name)
    }
}

/// Counters of one endpoint class.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClassStats {
    /// The class.
    pub class: Class,
    /// Requests that got a permit (at once or after waiting).
    pub admitted: u64,
    /// Requests that had to wait in the queue.
    pub queued: u64,
    /// Requests rejected with [`Overloaded`] (no queue, queue full, or timed
    /// out).
    pub rejected_overloaded: u64,
    /// Of those, requests that waited `max_wait` in vain.
    pub timed_out: u64,
    /// Requests rejected with [`RateLimited`].
    pub rejected_rate: u64,
    /// Requests over an alert-only rule's budget, let through.
    pub rate_alerts: u64,
    /// Warnings logged for them: at most one per key per period.
    pub rate_warnings: u64,
    /// Permits taken now.
    pub in_flight: u64,
    /// Requests waiting now.
    pub waiting: u64,
    /// Requests refused with [`TooManyInFlight`]: their caller or client
    /// address held its share of the class.
    pub rejected_in_flight_cap: u64,
    /// Callers holding calls of the class (in flight or waiting) now, when
    /// the class caps them: zero when the class is idle.
    pub callers: u64,
    /// Client addresses holding calls of the class now, likewise.
    pub addresses: u64,
}
