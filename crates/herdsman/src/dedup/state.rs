//! The in-flight map behind [`Dedup`](super::Dedup): hand-written
//! single-flight with baton passing.
//!
//! Layout: the map is split into shards, each a `Mutex<HashMap<Key, Slot>>`.
//! A slot records that a call for its key is running (or, with a reuse window,
//! has just finished). The first caller of a key is the *driver*: it owns the
//! boxed inner future and polls it with its own waker. Nothing else is
//! allocated unless a second caller arrives: that *follower* creates the
//! [`Flight`] (waiters, outcome, hand-off slot) and parks on it. Followers are
//! woken exactly once, when the outcome is published, or when they are chosen
//! to take over the inner future from a driver that was dropped.
//!
//! The flights are typed, as hyper-util's `pool/singleton.rs` types its
//! state by the service it wraps: one [`Flights<F, V>`] map for each inner
//! future type `F` and shared value type `V`, so that a slot holds an
//! `Arc<Flight<F, V>>` and a dropped driver hands its future over without
//! any downcast. A layer value does not know the types of the services it
//! will wrap (nor their request types), so [`State`] keeps the maps made so
//! far, one per type, and hands each service its own once
//! ([`State::flights`]); it also keeps the settings and the counters that
//! the maps share.
//!
//! Lock order: shard, then flight. No user code (inner futures, wakers,
//! clones of responses) runs while either lock is held.

use std::{
    any::Any,
    collections::{hash_map::Entry, HashMap, VecDeque},
    fmt,
    future::Future,
    panic::{catch_unwind, AssertUnwindSafe},
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, PoisonError,
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use slab::Slab;
use tokio::time::Instant;

use super::{error::Panicked, DedupStats};
use crate::{
    error::SharedError,
    key::{Key, KeyBuildHasher},
    sync::{Mutex, MutexGuard},
};

const SHARDS: usize = 16;

type Map<F, V> = HashMap<Key, Slot<F, V>, KeyBuildHasher>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic never happens while our locks are held (no user code runs under
    // them), but if one did, the data is still consistent: keep going.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The state shared by every service made from one `DedupLayer` value:
/// settings, counters, and the typed maps of flights made so far.
pub(crate) struct State {
    shared: Arc<Shared>,
    /// One map per inner future and value type, each shared by every
    /// service of those types made from the layer value.
    maps: std::sync::Mutex<Vec<Arc<dyn AnyFlights>>>,
}

/// What the typed maps of one layer value share.
struct Shared {
    window: Duration,
    max_key_len: usize,
    cancelled: AtomicU64,
    abandoned: AtomicU64,
    handoffs: AtomicU64,
    panics: AtomicU64,
}

/// The in-flight map of one inner future type `F` and value type `V`.
pub(crate) struct Flights<F, V> {
    shared: Arc<Shared>,
    shards: Box<[Padded<F, V>]>,
}

/// A map of flights whatever its types: what [`State`] counts over.
trait AnyFlights: Send + Sync + 'static {
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    /// Adds the map's counters, keys and bytes to `stats` (purging expired
    /// reuse entries first when `now` is given); returns the bytes.
    fn tally(&self, now: Option<Instant>, stats: &mut DedupStats) -> u64;
}

#[repr(align(64))]
struct Padded<F, V>(Mutex<Shard<F, V>>);

struct Shard<F, V> {
    map: Map<F, V>,
    /// Finished slots kept for the reuse window, in expiry order (the window
    /// is the same for every slot, so completion order is expiry order).
    expiry: VecDeque<(Key, u64, Instant)>,
    next_gen: u64,
    leaders: u64,
    coalesced: u64,
    window_hits: u64,
    /// The sum of the slots' `bytes`.
    bytes: usize,
}

impl<F, V> Default for Shard<F, V> {
    fn default() -> Self {
        Shard {
            map: Map::default(),
            expiry: VecDeque::new(),
            next_gen: 0,
            leaders: 0,
            coalesced: 0,
            window_hits: 0,
            bytes: 0,
        }
    }
}

struct Slot<F, V> {
    gen: u64,
    /// What the slot holds beyond the fixed estimate per entry: the boxed
    /// inner future while the call runs, the kept value in the reuse
    /// window, and a long key's buffer.
    bytes: usize,
    /// Made when a second caller joins (or the result is kept for reuse).
    flight: Option<Arc<Flight<F, V>>>,
    /// Set once the call finished and its result is kept for reuse.
    done_until: Option<Instant>,
}

/// How one call ended, as seen by every follower.
pub(crate) enum Outcome<V> {
    Ok(V),
    Err(SharedError),
    /// The response could not be shared: followers make their own calls.
    NotShared,
}

/// What a new caller of a key becomes.
pub(crate) enum Join<F, V> {
    Lead(Driver<F, V>),
    Follow(Follower<F, V>),
    /// A finished call's outcome kept for the reuse window (always `Ok`).
    Reuse(Arc<Outcome<V>>),
}

pub(crate) struct Flight<F, V> {
    inner: Mutex<FlightInner<F, V>>,
    /// The key and generation of the slot the flight belongs to, kept here
    /// once rather than in each follower (whose response future stays
    /// small).
    key: Key,
    gen: u64,
}

struct FlightInner<F, V> {
    waiters: Slab<Option<Waker>>,
    /// Shared behind an `Arc` so that it is cloned under the lock by a
    /// reference count only; each caller clones the value outside.
    outcome: Option<Arc<Outcome<V>>>,
    /// An inner future whose driver was dropped, waiting for `heir`.
    orphan: Option<Pin<Box<F>>>,
    heir: Option<usize>,
}

impl<F, V> Flight<F, V> {
    fn new(key: Key, gen: u64) -> Self {
        Flight {
            inner: Mutex::new(FlightInner {
                waiters: Slab::new(),
                outcome: None,
                orphan: None,
                heir: None,
            }),
            key,
            gen,
        }
    }

    /// Stores the outcome and returns the wakers to wake (outside the lock).
    fn publish(&self, outcome: Outcome<V>) -> Vec<Waker> {
        let mut inner = lock(&self.inner);
        inner.outcome = Some(Arc::new(outcome));
        inner.orphan = None;
        inner.heir = None;
        inner
            .waiters
            .iter_mut()
            .filter_map(|(_, w)| w.take())
            .collect()
    }
}

fn first_waiter(waiters: &Slab<Option<Waker>>) -> Option<(usize, Option<Waker>)> {
    waiters
        .iter()
        .next()
        .map(|(idx, waker)| (idx, waker.clone()))
}

fn wake_all(wakers: Vec<Waker>) {
    for waker in wakers {
        waker.wake();
    }
}

impl State {
    pub(crate) fn new(window: Duration, max_key_len: usize) -> Self {
        State {
            shared: Arc::new(Shared {
                window,
                max_key_len,
                cancelled: AtomicU64::new(0),
                abandoned: AtomicU64::new(0),
                handoffs: AtomicU64::new(0),
                panics: AtomicU64::new(0),
            }),
            maps: std::sync::Mutex::default(),
        }
    }

    pub(crate) fn window(&self) -> Duration {
        self.shared.window
    }

    pub(crate) fn max_key_len(&self) -> usize {
        self.shared.max_key_len
    }

    /// The map of flights of inner future type `F` and value type `V`: the
    /// one made before, or a new one. Called once per service (and type),
    /// not per request.
    pub(crate) fn flights<F, V>(&self) -> Arc<Flights<F, V>>
    where
        F: Send + 'static,
        V: Send + Sync + 'static,
    {
        let mut maps = self.maps.lock().unwrap_or_else(PoisonError::into_inner);
        let found = maps
            .iter()
            .find_map(|map| map.clone().into_any().downcast::<Flights<F, V>>().ok());
        found.unwrap_or_else(|| {
            let map = Arc::new(Flights {
                shared: self.shared.clone(),
                shards: (0..SHARDS).map(|_| Padded(Mutex::default())).collect(),
            });
            maps.push(map.clone());
            map
        })
    }

    fn maps(&self) -> Vec<Arc<dyn AnyFlights>> {
        self.maps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Keys held now (in flight, or kept for the reuse window), and the
    /// bytes their slots hold beyond the fixed estimate per entry. Expired
    /// reuse entries are purged first, as in [`stats`](Self::stats).
    pub(crate) fn held(&self) -> (u64, u64) {
        let now = (!self.shared.window.is_zero()).then(Instant::now);
        let mut stats = DedupStats::default();
        let bytes = self
            .maps()
            .iter()
            .map(|map| map.tally(now, &mut stats))
            .sum();
        (stats.entries, bytes)
    }

    /// Counters, summed over the maps and their shards.
    pub(crate) fn stats(&self) -> DedupStats {
        let now = (!self.shared.window.is_zero()).then(Instant::now);
        let shared = &self.shared;
        let mut stats = DedupStats {
            cancelled: shared.cancelled.load(Ordering::Relaxed),
            abandoned: shared.abandoned.load(Ordering::Relaxed),
            handoffs: shared.handoffs.load(Ordering::Relaxed),
            panics: shared.panics.load(Ordering::Relaxed),
            ..DedupStats::default()
        };
        for map in self.maps() {
            map.tally(now, &mut stats);
        }
        stats
    }
}

impl<F, V> AnyFlights for Flights<F, V>
where
    F: Send + 'static,
    V: Send + Sync + 'static,
{
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    fn tally(&self, now: Option<Instant>, stats: &mut DedupStats) -> u64 {
        let mut bytes = 0;
        for shard in self.shards.iter() {
            let mut shard = lock(&shard.0);
            if let Some(now) = now {
                shard.purge(now);
            }
            stats.leaders += shard.leaders;
            stats.coalesced += shard.coalesced;
            stats.window_hits += shard.window_hits;
            stats.entries += shard.map.len() as u64;
            bytes += shard.bytes as u64;
        }
        bytes
    }
}

impl<F, V> Flights<F, V> {
    fn shard(&self, key: &Key) -> &Mutex<Shard<F, V>> {
        // The low bits pick the hashbrown bucket; use high bits for the shard.
        &self.shards[(key.hash_value() >> 58) as usize % SHARDS].0
    }

    /// Registers a caller of `key`.
    pub(crate) fn join(self: &Arc<Self>, key: Key) -> Join<F, V> {
        let mut guard = lock(self.shard(&key));
        let shard = &mut *guard;
        if !self.shared.window.is_zero() {
            shard.purge(Instant::now());
        }
        let mut slot = match shard.map.entry(key) {
            Entry::Occupied(slot) => slot,
            Entry::Vacant(vacant) => {
                let gen = shard.next_gen;
                shard.next_gen += 1;
                shard.leaders += 1;
                let key = vacant.key().clone();
                // The driver is about to box the inner future (`start`).
                let bytes = std::mem::size_of::<F>() + key.heap_bytes();
                shard.bytes += bytes;
                vacant.insert(Slot {
                    gen,
                    bytes,
                    flight: None,
                    done_until: None,
                });
                return Join::Lead(Driver {
                    flights: self.clone(),
                    key,
                    gen,
                    fut: None,
                    done: false,
                    deferred: false,
                });
            }
        };
        if slot.get().flight.is_none() {
            let flight = Flight::new(slot.key().clone(), slot.get().gen);
            slot.get_mut().flight = Some(Arc::new(flight));
        }
        let flight = slot.get().flight.clone().expect("set above");
        let mut inner = lock(&flight.inner);
        if let Some(outcome) = &inner.outcome {
            // A finished call kept for the reuse window (expired slots were
            // purged above). Only successes are kept.
            debug_assert!(matches!(**outcome, Outcome::Ok(_)));
            shard.window_hits += 1;
            return Join::Reuse(outcome.clone());
        }
        let idx = inner.waiters.insert(None);
        drop(inner);
        shard.coalesced += 1;
        Join::Follow(Follower {
            flights: self.clone(),
            flight,
            idx,
            done: false,
        })
    }
}

impl<F, V> Shard<F, V> {
    /// Drops reuse entries whose window has passed.
    fn purge(&mut self, now: Instant) {
        while let Some((_, _, until)) = self.expiry.front() {
            if *until > now {
                break;
            }
            let (key, gen, _) = self.expiry.pop_front().expect("front exists");
            if let Some(slot) = self.map.get(&key) {
                if slot.gen == gen && slot.done_until.is_some() {
                    self.remove(&key);
                }
            }
        }
    }

    /// Removes `key`'s slot, and its bytes from the shard's sum.
    fn remove(&mut self, key: &Key) -> Option<Slot<F, V>> {
        let slot = self.map.remove(key)?;
        self.bytes -= slot.bytes;
        Some(slot)
    }

    fn slot(&mut self, key: &Key, gen: u64) -> Option<&mut Slot<F, V>> {
        self.map.get_mut(key).filter(|slot| slot.gen == gen)
    }
}

/// Owns the inner future of one key and publishes its outcome.
pub(crate) struct Driver<F, V> {
    flights: Arc<Flights<F, V>>,
    key: Key,
    gen: u64,
    fut: Option<Pin<Box<F>>>,
    done: bool,
    /// The call waits for the flight backend's answer: if the driver is
    /// dropped meanwhile, its followers make their own calls.
    deferred: bool,
}

impl<F, V> Driver<F, V> {
    pub(crate) fn key(&self) -> &Key {
        &self.key
    }

    /// The call waits for the flight backend: a driver dropped before
    /// [`start`](Self::start) lets its followers make their own calls
    /// (rather than telling them that `Service::call` panicked).
    pub(crate) fn defer(&mut self) {
        self.deferred = true;
    }

    /// The backend answered: from now on, as any driver.
    pub(crate) fn resume(&mut self) {
        self.deferred = false;
    }
}

impl<F: Future, V> Driver<F, V> {
    pub(crate) fn start(&mut self, fut: Pin<Box<F>>) {
        self.fut = Some(fut);
    }

    /// Polls the inner future; a panic in it becomes [`Panicked`].
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<F::Output, Panicked>> {
        let fut = self.fut.as_mut().expect("driver polled after completion");
        let out = match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(out)) => Ok(out),
            Err(payload) => {
                self.flights.shared.panics.fetch_add(1, Ordering::Relaxed);
                Err(Panicked::from_payload(payload))
            }
        };
        self.fut = None;
        Poll::Ready(out)
    }

    /// The fast path: when nobody joined and nothing is kept for reuse, the
    /// slot is removed and the caller keeps its response unshared. Returns
    /// `false` when the outcome must be published with [`Driver::finish`].
    pub(crate) fn finish_alone(&mut self) -> bool {
        if !self.flights.shared.window.is_zero() {
            return false;
        }
        let mut shard = lock(self.flights.shard(&self.key));
        // One probe on the common path: remove, and put back in the rare case
        // that followers joined.
        match shard.remove(&self.key) {
            Some(slot) if slot.gen == self.gen && slot.flight.is_none() => {
                self.done = true;
                true
            }
            Some(slot) => {
                shard.bytes += slot.bytes;
                shard.map.insert(self.key.clone(), slot);
                false
            }
            None => {
                self.done = true;
                true
            }
        }
    }

    /// Ends the flight and hands `outcome` to every follower. A success kept
    /// for the reuse window is measured with `weigh` (before any lock is
    /// taken: it is the share policy's code).
    pub(crate) fn finish(&mut self, outcome: Outcome<V>, weigh: impl FnOnce(&V) -> usize) {
        self.done = true;
        let kept = match &outcome {
            Outcome::Ok(value) if !self.flights.shared.window.is_zero() => Some(weigh(value)),
            _ => None,
        };
        let flight = {
            let mut shard = lock(self.flights.shard(&self.key));
            if let Some(value_bytes) = kept {
                let until = Instant::now() + self.flights.shared.window;
                let bytes = value_bytes + self.key.heap_bytes();
                let shard = &mut *shard;
                let flight = shard
                    .map
                    .get_mut(&self.key)
                    .filter(|slot| slot.gen == self.gen)
                    .map(|slot| {
                        // The inner future is gone; the value stays.
                        shard.bytes = shard.bytes - slot.bytes + bytes;
                        slot.bytes = bytes;
                        slot.done_until = Some(until);
                        let flight = || Arc::new(Flight::new(self.key.clone(), self.gen));
                        slot.flight.get_or_insert_with(flight).clone()
                    });
                if flight.is_some() {
                    shard.expiry.push_back((self.key.clone(), self.gen, until));
                }
                flight
            } else {
                match shard.slot(&self.key, self.gen) {
                    Some(_) => shard.remove(&self.key).and_then(|slot| slot.flight),
                    None => None,
                }
            }
        };
        if let Some(flight) = flight {
            wake_all(flight.publish(outcome));
        }
    }
}

impl<F, V> Drop for Driver<F, V> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut fut = self.fut.take();
        let started = fut.is_some();
        let mut wake = Vec::new();
        {
            let shared = &*self.flights.shared;
            let mut shard = lock(self.flights.shard(&self.key));
            let Some(slot) = shard.slot(&self.key, self.gen) else {
                return;
            };
            let mut remove = true;
            if let Some(flight) = &slot.flight {
                let mut inner = lock(&flight.inner);
                if !started {
                    let outcome = if self.deferred {
                        // Dropped while waiting for the flight backend.
                        Outcome::NotShared
                    } else {
                        // `Service::call` panicked before the future existed.
                        shared.panics.fetch_add(1, Ordering::Relaxed);
                        Outcome::Err(SharedError::new(Panicked::in_call()))
                    };
                    inner.outcome = Some(Arc::new(outcome));
                    wake.extend(inner.waiters.iter_mut().filter_map(|(_, w)| w.take()));
                } else if let Some((heir, waker)) = first_waiter(&inner.waiters) {
                    // Baton passing: the first waiter takes over the call.
                    inner.heir = Some(heir);
                    inner.orphan = fut.take();
                    wake.extend(waker);
                    remove = false;
                    shared.handoffs.fetch_add(1, Ordering::Relaxed);
                }
            }
            if started || self.deferred {
                shared.cancelled.fetch_add(1, Ordering::Relaxed);
            }
            if remove {
                shard.remove(&self.key);
                if started {
                    shared.abandoned.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        wake_all(wake);
        // Dropped outside the locks: it is user code.
        drop(fut);
    }
}

/// A caller parked on another caller's flight (which knows the key and
/// the generation).
pub(crate) struct Follower<F, V> {
    flights: Arc<Flights<F, V>>,
    flight: Arc<Flight<F, V>>,
    idx: usize,
    done: bool,
}

/// What a follower got when it was woken.
pub(crate) enum Woken<F, V> {
    Outcome(Arc<Outcome<V>>),
    /// The driver was dropped; this follower now drives the call.
    Promoted(Driver<F, V>),
}

impl<F, V> Follower<F, V> {
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Woken<F, V>> {
        let mut inner = lock(&self.flight.inner);
        if let Some(outcome) = &inner.outcome {
            let outcome = Arc::clone(outcome);
            inner.waiters.remove(self.idx);
            self.done = true;
            return Poll::Ready(Woken::Outcome(outcome));
        }
        if inner.heir == Some(self.idx) {
            if let Some(fut) = inner.orphan.take() {
                inner.heir = None;
                inner.waiters.remove(self.idx);
                self.done = true;
                return Poll::Ready(Woken::Promoted(Driver {
                    flights: self.flights.clone(),
                    key: self.flight.key.clone(),
                    gen: self.flight.gen,
                    fut: Some(fut),
                    done: false,
                    deferred: false,
                }));
            }
        }
        let slot = &mut inner.waiters[self.idx];
        match slot {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<F, V> Drop for Follower<F, V> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let shared = &*self.flights.shared;
        shared.cancelled.fetch_add(1, Ordering::Relaxed);
        let mut wake = None;
        let mut abandoned = None;
        {
            let (key, gen) = (&self.flight.key, self.flight.gen);
            let mut shard = lock(self.flights.shard(key));
            let mut inner = lock(&self.flight.inner);
            inner.waiters.remove(self.idx);
            if inner.heir == Some(self.idx) {
                inner.heir = None;
                if inner.orphan.is_some() {
                    if let Some((next, waker)) = first_waiter(&inner.waiters) {
                        inner.heir = Some(next);
                        wake = waker;
                    } else {
                        // Nobody is left to want the result: drop the call.
                        abandoned = inner.orphan.take();
                        shared.abandoned.fetch_add(1, Ordering::Relaxed);
                        drop(inner);
                        if shard.slot(key, gen).is_some() {
                            shard.remove(key);
                        }
                    }
                }
            }
        }
        if let Some(waker) = wake {
            waker.wake();
        }
        drop(abandoned);
    }
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("window", &self.shared.window)
            .field("max_key_len", &self.shared.max_key_len)
            .finish_non_exhaustive()
    }
}

impl<F, V> fmt::Debug for Driver<F, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("key", &self.key)
            .field("gen", &self.gen)
            .finish_non_exhaustive()
    }
}

impl<F, V> fmt::Debug for Follower<F, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Follower")
            .field("key", &self.flight.key)
            .field("gen", &self.flight.gen)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_estimate_covers_a_slot_and_its_expiry_record() {
        // A slot's size does not depend on its types (the flight is behind
        // an `Arc`).
        let slot = std::mem::size_of::<(Key, Slot<(), ()>)>() + 1; // + hashbrown's control byte
        let with_spare_room = slot * 8 / 7;
        let expiry = std::mem::size_of::<(Key, u64, Instant)>();
        assert!(
            (with_spare_room + expiry) as u64 <= super::super::ENTRY_ESTIMATE_BYTES,
            "{with_spare_room} + {expiry}"
        );
    }
}
