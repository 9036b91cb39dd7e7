//! Subscriptions: one shared poll loop per key, however many subscribers.
//!
//! The bug that started herdsman: two client hooks for the same "active
//! users" endpoint were alive at once, each polled on its own timer, and
//! together they doubled the load; every open tab made it worse. The
//! [`Registry`] sits above every other layer and gives all concurrent
//! subscribers of one key (the same [`KeyFn`](crate::key::KeyFn) as the
//! other layers) **one poll loop and one inner call per interval**.
//!
//! # Semantics
//!
//! - **Subscribing.** [`Registry::subscribe`] returns a [`Subscription`], a
//!   `Stream` of [`Update`]s (the value or a shared error, the value's
//!   fingerprint, a version that grows only when the result changes, the
//!   time it was fetched). Dropping it unsubscribes. Subscribers are keyed
//!   by their *canonical* request (below), so nothing it leaves out (a
//!   caller's `If-None-Match`, its transport headers) splits a key.
//! - **One loop per key.** Its interval is the shortest any current
//!   subscriber asked for ([`SubscribeOptions::with_interval`], else the
//!   interval of the key's class), never below the floor
//!   ([`RegistryLayer::with_floor`]), each wait spread by a jitter (± 10 %
//!   by default, at most ± 50 %) so that keys do not poll in lockstep; the
//!   jitter never brings a wait under the floor.
//! - **Classes.** A key's class (named by the classifier from its first
//!   subscriber's request) may have settings of its own
//!   ([`RegistryLayer::with_class`]): the default interval, the jitter, the
//!   linger and the subscribers per key. The loop looks them up once, when
//!   it starts.
//! - **Joining.** A new subscriber gets the current value at once. If it is
//!   older than the interval the subscriber asked for, the loop polls now
//!   (no extra call otherwise); a subscriber arriving during a poll gets its
//!   result.
//! - **Only changes are sent.** Each result is compared by its
//!   [`Fingerprint`] (HTTP: the status and a strong `ETag`, else the status,
//!   the content headers and the body); an unchanged poll sends nothing. A
//!   slow subscriber skips to the latest update: it never buffers, never
//!   sees a version twice, never goes back.
//! - **Versions and ids.** [`Update::version`] orders one loop's updates in
//!   this process and starts again with the loop; what identifies content
//!   to clients is [`Update::fingerprint`], computed once per poll. The
//!   HTTP fingerprint is the same in every process, replica and release, so
//!   an `ETag` or SSE id made of it never repeats for different content,
//!   across loop restarts, process restarts and replicas.
//! - **One canonical request.** The loop polls with a request built by its
//!   [`Canonical`] from the key's parts only (HTTP: method, URI and the
//!   headers in the key): no subscriber's other headers are sent on behalf
//!   of the others.
//! - **Errors.** Subscribers get the error as an update, with the last good
//!   update still readable ([`Update::good`]). An answer the failure
//!   classifier calls a failure (the one the Breaker and Stats use:
//!   [`RegistryLayer::with_failure_classifier`]; HTTP: a 5xx, as an
//!   [`UpstreamStatus`]) is an error too, and so is
//!   a stale copy a cache answered with because the upstream failed
//!   ([`StaleAnswer`]), whose good value is that copy. While the upstream
//!   fails, the loop backs off exponentially (with jitter, up to a cap), and
//!   never polls before the time an error names (an open breaker's probe,
//!   [`error::retry_at`](crate::error::retry_at)); it returns to its
//!   interval on the first success. [`Subscription::next_attempt`] says when
//!   the next poll is due, so an answer can tell its client when to retry. A
//!   panic in the inner service is an error ([`PollPanicked`]) like any
//!   other.
//! - **Push.** [`RegistryHandle::refresh`] and [`RegistryHandle::invalidate`] poll at
//!   once and push the result to every subscriber; [`RegistryHandle::follow`]
//!   applies the invalidations a Cache layer announces (writes through
//!   `POST`, `PUT`, ...). This is how a card update reaches every board
//!   viewer without waiting for the interval. A lingering loop (no
//!   subscriber left) is not polled for nobody: it ends, since its kept
//!   value is out of date, and the next subscriber starts a fresh one.
//! - **Across replicas.** A [`LoopBackend`](crate::backend::LoopBackend)
//!   ([`RegistryLayer::with_loop_backend`]) decides each round whether this
//!   process polls a key or follows another replica's loop, fetching (through
//!   its own stack) when that replica announces a change. The default polls
//!   every key here.
//! - **Lifecycle.** The loop (one tokio task) starts with the first
//!   subscriber and stops when the last leaves, after its class's linger
//!   ([`RegistryLayer::with_linger`]); a fetch in flight is dropped. When
//!   every subscriber is gone the registry holds no key and no task.
//! - **Limits and budgets.** A coordination layer sits in front of
//!   everything, so no one client may exhaust it. Beyond any of these,
//!   `subscribe` fails with [`TooManySubscribers`], whose
//!   [`reason`](TooManySubscribers::reason) names the [`Limit`], holding
//!   nothing; the refusal is counted ([`RegistryStats::refused`]) and
//!   reported to the observer by class and reason
//!   ([`Rejection::Subscription`](crate::event::Rejection::Subscription)):
//!   - **per class** ([`ClassSettings`]): its keys
//!     ([`with_max_keys`](RegistryLayer::with_max_keys)), so a flood of keys
//!     in one class never refuses another class's; the subscribers of one
//!     key;
//!   - **per caller and per client address, within a class**
//!     ([`with_callers`](RegistryLayer::with_callers)): the keys each holds
//!     (those its subscribers created, until they leave, linger included)
//!     and the subscriptions each has open. A request with an identity
//!     counts for both, so new credentials on every request do not escape
//!     the address's budget; an anonymous one for its address;
//!   - **for the whole registry**: its subscribers, and its memory
//!     ([`with_max_memory`](RegistryLayer::with_max_memory)): over the
//!     budget no new key is polled, while the keys polled go on updating
//!     and take new subscribers;
//!   - **the key's length** ([`with_max_key_len`](RegistryLayer::with_max_key_len),
//!     the same for every layer): a subscription with a longer key is
//!     refused. It never gets a loop of its own, which would be one
//!     upstream call per subscriber per interval; a one-shot call with one
//!     passes through.
//!
//!   The budgets' counts live under the map's lock, with an entry only
//!   while a holder holds something: they drain to empty
//!   ([`RegistryStats::budget_holders`]).
//! - **Memory.** [`RegistryHandle`]'s figure counts every byte a key holds:
//!   the key, the request template (for HTTP its URI and headers, copied so
//!   that the caller's request head is not kept alive), the loop's task and
//!   state, the waker slots, the latest and the last good value, and each
//!   subscriber; the tables, which give their memory back as keys leave. It
//!   is kept as keys come, change and go, so reading it (on every new key,
//!   for the budget) is one atomic load.
//! - **One-shot calls.** `Registry` is a tower `Service`: a request whose
//!   key has a live loop with a fresh successful value is answered from it;
//!   any other goes to the inner service (put Dedup below to coalesce those).
//!   One-shot calls never add keys.
//! - **Introspection.** [`RegistryHandle::hooks`] lists each key with its class,
//!   subscribers, interval, start, last fetch, fetches and errors;
//!   [`RegistryHandle::stats`] counts; [`RegistryHandle`] is a
//!   [`MemorySource`](crate::event::MemorySource).
//!
//! # Examples
//!
//! ```
//! use herdsman::{key::Key, registry::{RegistryLayer, SubscribeOptions}};
//! use std::{convert::Infallible, sync::{atomic::{AtomicU64, Ordering}, Arc}, time::Duration};
//! use futures_util::StreamExt;
//! use tower::{service_fn, Layer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let calls = Arc::new(AtomicU64::new(0));
//! let counter = calls.clone();
//! let upstream = service_fn(move |endpoint: &'static str| {
//!     let n = counter.fetch_add(1, Ordering::SeqCst);
//!     async move { Ok::<_, Infallible>(format!("{endpoint}: {} online", n / 2)) }
//! });
//! let layer = RegistryLayer::new(|endpoint: &&'static str| Some(Key::from(*endpoint)))
//!     .with_interval(Duration::from_secs(5))
//!     .with_jitter(0.0);
//! let registry = layer.layer(upstream);
//!
//! // Two hooks on the same endpoint, one asking for a faster interval.
//! let mut a = registry.subscribe("/active-users").unwrap();
//! let mut b = registry
//!     .subscribe_with("/active-users", SubscribeOptions::new().with_interval(Duration::from_secs(2)))
//!     .unwrap();
//! assert_eq!(a.next().await.unwrap().value().unwrap(), "/active-users: 0 online");
//! assert_eq!(b.next().await.unwrap().version(), 1);
//!
//! // One call every 2 s for both; the value changes every other call.
//! tokio::time::sleep(Duration::from_secs(4) + Duration::from_millis(1)).await;
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//! let update = a.next().await.unwrap();
//! assert_eq!((update.version(), update.value().unwrap().as_str()), (2, "/active-users: 1 online"));
//!
//! drop((a, b));
//! tokio::task::yield_now().await;
//! assert_eq!(registry.handle().stats().keys, 0);
//! # }
//! ```
//!
//! For HTTP, [`RegistryLayer::http`] shares buffered responses (put
//! [`BufferLayer`][crate::http::BufferLayer] below), tells changes with
//! [`HttpFingerprint`], and keys and polls with
//! [`HttpKey::canonical_request`][crate::http::HttpKey::canonical_request].
//!
//! # Tuning and trade-offs
//!
//! - The floor protects the upstream from a subscriber asking for a very
//!   short interval; every other subscriber of the key gets that interval.
//! - A linger of a few seconds absorbs page reloads, at the price of
//!   holding the value (not polling) that long.
//! - Each subscriber costs its handle and one waker slot (well under 256
//!   bytes); a change wakes every subscriber of the key once, outside any
//!   lock. Each key costs about twice its length (the key and the request
//!   template), its value, and 3 to 5 KB of loop state and task: with
//!   8 KiB keys and small values, the 24 MiB default budget holds about
//!   1,200 keys; with short keys, several thousand.
//! - The budget is checked before a new key is added, with the key's own
//!   size estimated; its task and its first value are counted after, so
//!   the figure can pass the budget by about one key.
//! - Values are compared by a 64-bit fingerprint: a collision would hide
//!   one change until the next (about 2⁻⁶⁴ per poll).
//! - A subscription computes its canonical request once (for HTTP: a new
//!   request with the key's headers), also when it joins an existing loop.
//!
#![cfg_attr(
    not(feature = "http"),
    doc = "[`RegistryLayer::http`]: crate#feature-flags"
)]
#![cfg_attr(
    not(feature = "http"),
    doc = "[crate::http::BufferLayer]: crate#feature-flags"
)]
#![cfg_attr(
    not(feature = "http"),
    doc = "[`HttpFingerprint`]: crate#feature-flags"
)]
#![cfg_attr(
    not(feature = "http"),
    doc = "[crate::http::HttpKey::canonical_request]: crate#feature-flags"
)]

mod budget;
mod callers;
mod cell;
mod change;
mod error;
mod future;
mod handle;
#[cfg(feature = "http")]
mod http;
mod layer;
mod memory;
mod poll;
mod service;
mod state;
mod subscription;

use std::time::Duration;

use tokio::time::Instant;

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use self::http::HttpFingerprint;
pub use self::{
    callers::Callers,
    cell::Update,
    change::{Canonical, CloneRequest, Fingerprint, HashFingerprint},
    error::{Limit, PollPanicked, StaleAnswer, TooManySubscribers, Unshareable, UpstreamStatus},
    future::ResponseFuture,
    handle::RegistryHandle,
    layer::{ClassSettings, RegistryLayer, DEFAULT_MAX_MEMORY, MAX_JITTER},
    service::Registry,
    subscription::{SubscribeOptions, Subscription},
};
use crate::{class::Class, key::Key};

/// One polled key, as operators see it ([`RegistryHandle::hooks`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HookInfo {
    /// The key (credentials redacted from its `Debug`).
    pub key: Key,
    /// The endpoint class of its first subscriber's request.
    pub class: Class,
    /// Current subscribers.
    pub subscribers: usize,
    /// The interval the loop polls at now.
    pub interval: Duration,
    /// When the loop started.
    pub started_at: Instant,
    /// When the last fetch ended, if any did.
    pub last_fetch: Option<Instant>,
    /// When the next fetch is due, as the loop last planned it.
    pub next_attempt: Option<Instant>,
    /// Fetches made.
    pub fetches: u64,
    /// Fetches that failed.
    pub errors: u64,
}

/// Counters and sizes of one registry ([`RegistryHandle::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegistryStats {
    /// Keys with a poll loop (lingering ones included).
    pub keys: u64,
    /// Live subscriptions.
    pub subscribers: u64,
    /// Loops of their own for subscriptions that could not share one (a
    /// request without a key).
    pub private_loops: u64,
    /// Poll loop tasks running.
    pub tasks: u64,
    /// Fetches made by every loop.
    pub polls: u64,
    /// Fetches that failed.
    pub errors: u64,
    /// Updates sent (polls whose result changed).
    pub updates: u64,
    /// Subscriptions refused by a limit or a budget (each also reported to
    /// the observer, by reason).
    pub refused: u64,
    /// Classes, callers and client addresses holding keys or subscriptions
    /// now: the entries of the budgets' counts, which drain to zero when
    /// every subscriber has left and every key has gone.
    pub budget_holders: u64,
}
