//! Single-flight: concurrent identical requests share one inner call.
//!
//! [`Dedup`] asks a [`KeyFn`](crate::key::KeyFn) for each request's key. The
//! first request of a key (the *driver*) calls the inner service; requests with
//! the same key that arrive while that call runs (the *followers*) park until
//! it finishes, then each gets a clone of the response, or of the error behind
//! an `Arc` ([`SharedError`](crate::error::SharedError)). Requests without a
//! key, or with a key longer than the configured cap, pass through.
//!
//! # Semantics
//!
//! - **One call.** Concurrent requests with equal keys make exactly one inner
//!   call. Keys compare by full value, never by hash alone.
//! - **Reuse window** ([`DedupLayer::with_window`]): a successful result is kept
//!   for the window, and identical requests inside it get it without an inner
//!   call. Zero (the default) re-executes. Errors are never reused. A class
//!   may have a window of its own ([`DedupLayer::with_class_window`]): each
//!   distinct window has its own in-flight map in the one layer.
//! - **Switch.** A request whose classifier says the layer is off for it
//!   ([`Classify::is_on`](crate::class::Classify::is_on)) passes through.
//! - **Cancellation.** If the driver's caller drops its future, the inner call
//!   is handed to a waiting follower, which polls it on: no second inner call,
//!   no error (hyper-util's "baton passing"). When the last caller is gone,
//!   the inner future is dropped.
//! - **Panics.** A panic in the inner service (in `call` or while polling its
//!   future) reaches every caller of that key as a [`Panicked`] error; nothing
//!   hangs, and the key is free again at once.
//! - **Parking.** Followers are polled when they join and when they are woken
//!   by the outcome: no self-waking loops, whatever the number of waiters.
//! - **Shared state.** All clones of a `Dedup`, and all services made from one
//!   [`DedupLayer`] value, share one in-flight map: put one layer value on the
//!   services that should coalesce together, and key requests so that keys of
//!   different services cannot be equal when they must not share. (Services
//!   of different types behind one layer value each get a map of their own,
//!   typed by their future and value.)
//! - **Across replicas.** A [`FlightBackend`](crate::backend::FlightBackend)
//!   ([`DedupLayer::with_flight_backend`]) is asked by each key's local
//!   leader before it calls: make the call, or take the value another
//!   replica made. The default coalesces within this process only.
//! - **Unshareable responses.** The [`Share`](crate::share::Share) policy may
//!   refuse to share a response (HTTP: a body over the buffer limit, a
//!   `Set-Cookie`). Its own caller gets it; every follower then makes its own
//!   uncoordinated call.
//!
//! # Events
//!
//! With [`DedupLayer::with_observer`], each follower that joins a call in
//! flight is reported as [`Event::Coalesced`](crate::event::Event::Coalesced)
//! and each caller answered from the reuse window as
//! [`Event::Reused`](crate::event::Event::Reused), with the class named by
//! [`DedupLayer::with_classifier`] (the default class without one). Drivers
//! and pass-throughs report nothing. Requests are classified only when an
//! observer is set, after the shard lock is released; without one an event
//! costs a branch. [`DedupHandle`] is the map's
//! [`MemorySource`].
//!
//! # Back-pressure
//!
//! `poll_ready` is the inner service's. A follower does not use the readiness
//! it was given: the inner service stays ready for the next call.
//!
//! # Examples
//!
//! ```
//! use herdsman::{dedup::DedupLayer, key::Key};
//! use std::{convert::Infallible, time::Duration};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let layer = DedupLayer::new(|name: &String| Some(Key::from(name.as_str())));
//! let svc = ServiceBuilder::new()
//!     .layer(layer.clone())
//!     .service(service_fn(|name: String| async move {
//!         tokio::time::sleep(Duration::from_millis(50)).await; // a slow upstream
//!         Ok::<_, Infallible>(format!("hello, {name}"))
//!     }));
//!
//! let (a, b) = tokio::join!(
//!     svc.clone().oneshot("ada".to_string()),
//!     svc.clone().oneshot("ada".to_string()),
//! );
//! assert_eq!(a.unwrap(), "hello, ada");
//! assert_eq!(b.unwrap(), "hello, ada");
//! assert_eq!(layer.handle().stats().leaders, 1);
//! assert_eq!(layer.handle().stats().coalesced, 1);
//! # }
//! ```
//!
//! # Tuning
//!
//! - The window trades freshness for upstream load: with pollers on a 5 s
//!   interval, a window of 1 s absorbs callers that are slightly out of step.
//! - Keys are hashed once; the map is sharded, so unrelated keys rarely
//!   contend. The uncontended path takes two short critical sections and one
//!   allocation (the boxed inner future, which may have to change hands).

mod error;
mod future;
mod layer;
mod service;
mod state;

pub use self::{error::Panicked, future::ResponseFuture, layer::DedupLayer, service::Dedup};

use std::{fmt, sync::Arc};

use crate::event::MemorySource;

/// The fixed bytes one entry of the in-flight map is estimated to hold, for
/// [`MemorySource`]: the map's record of the key and its slot (about 140
/// bytes with the hash table's spare room), the reuse window's expiry record
/// (about 90) and the shared part of a flight. What varies is counted at its
/// real size on top (see [`DedupHandle`]).
pub const ENTRY_ESTIMATE_BYTES: u64 = 256;

/// A handle to one [`DedupLayer`] value's in-flight map, from
/// [`DedupLayer::handle`]: its counters, and its memory for the Stats layer.
/// Cheap to clone.
///
/// The memory is, per entry, [`ENTRY_ESTIMATE_BYTES`] plus what the entry
/// holds at its real size: while its call is in flight the boxed inner
/// future (`size_of` the inner service's future), once finished and kept
/// for the reuse window the value (the share policy's
/// [`held_bytes`](crate::share::Share::held_bytes)), and in both a key
/// longer than the 24 bytes stored inline. Followers' waker slots (about 32
/// bytes each) are not counted.
#[derive(Clone)]
pub struct DedupHandle {
    windows: Arc<layer::Windows>,
}

impl DedupHandle {
    fn new(windows: Arc<layer::Windows>) -> Self {
        DedupHandle { windows }
    }

    /// The counters of the in-flight maps, summed over the layer's reuse
    /// windows.
    pub fn stats(&self) -> DedupStats {
        self.windows
            .all()
            .iter()
            .map(|state| state.stats())
            .fold(DedupStats::default(), DedupStats::plus)
    }
}

impl MemorySource for DedupHandle {
    fn memory_bytes(&self) -> u64 {
        self.windows
            .all()
            .iter()
            .map(|state| {
                let (entries, bytes) = state.held();
                entries * ENTRY_ESTIMATE_BYTES + bytes
            })
            .sum()
    }
}

impl fmt::Debug for DedupHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DedupHandle")
            .field("stats", &self.stats())
            .finish()
    }
}

/// Counters of one in-flight map, for the stats layer and for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DedupStats {
    /// Calls that reached the inner service as the first caller of their key.
    pub leaders: u64,
    /// Callers that joined a call already in flight.
    pub coalesced: u64,
    /// Callers served from the reuse window.
    pub window_hits: u64,
    /// Callers (drivers or followers) that dropped their future before it
    /// finished.
    pub cancelled: u64,
    /// Inner calls dropped unfinished because no caller was left to want them.
    pub abandoned: u64,
    /// Times a dropped driver handed its call to a follower.
    pub handoffs: u64,
    /// Inner calls that panicked.
    pub panics: u64,
    /// Keys currently held: in flight, or kept for the reuse window.
    pub entries: u64,
}

impl DedupStats {
    fn plus(self, other: DedupStats) -> DedupStats {
        DedupStats {
            leaders: self.leaders + other.leaders,
            coalesced: self.coalesced + other.coalesced,
            window_hits: self.window_hits + other.window_hits,
            cancelled: self.cancelled + other.cancelled,
            abandoned: self.abandoned + other.abandoned,
            handoffs: self.handoffs + other.handoffs,
            panics: self.panics + other.panics,
            entries: self.entries + other.entries,
        }
    }
}
