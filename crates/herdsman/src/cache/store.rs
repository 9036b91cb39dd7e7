//! The bounded store behind [`Cache`](super::Cache): quick_cache (S3-FIFO
//! eviction, sharded locks) holding entries with their freshness windows.

use std::{
    cell::Cell,
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use http::{HeaderMap, HeaderName};
use quick_cache::{sync::Cache as QuickCache, OptionsBuilder, Weighter};
use tokio::sync::broadcast;

use super::{policy::Freshness, CacheStats};
use crate::{
    class::Class,
    clock::{Clock, Stopwatch},
    event::Invalidation,
    key::{Key, KeyBuildHasher},
};

/// Invalidation generations are counted per path, in this many stripes (a
/// path's stripe is picked by its hash; two paths sharing one only cost a
/// fetch its store).
const GENERATIONS: usize = 64;

/// Invalidations a receiver of [`CacheHandle::invalidations`](super::CacheHandle::invalidations)
/// may fall behind by before it skips the oldest.
pub(crate) const INVALIDATIONS_CAPACITY: usize = 64;

/// One stored response and its freshness: the value and 24 bytes of
/// bookkeeping (the store is bounded by bytes, and bookkeeping counts; see
/// docs/BENCHMARKS.md, "Cache memory").
pub(crate) struct Entry<V> {
    slot: Slot<V>,
    life: Life,
    weight: u32,
}

/// How far [`Store::now_ms`] starts past the store's epoch: more than the
/// largest age an entry can arrive with (`u32::MAX` ms), so that the time
/// an entry was born is never before zero.
const NOW_OFFSET_MS: u64 = 1 << 33;

/// Bits of [`Life::stamp`] below the birth time: the class and the
/// revalidate flag.
const STAMP_BITS: u32 = 17;

/// When an entry was born and how long it may be used, in milliseconds on
/// the store's clock ([`Store::now_ms`]).
///
/// Aligned to 4 bytes, so that it is 20 bytes and the entry's weight fits
/// beside it (an entry of a `Bytes` value: 56 bytes, not 64).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(Rust, packed(4))]
struct Life {
    /// The time the response was made (received, less its age when
    /// received) in the bits above [`STAMP_BITS`] (46 bits: two thousand
    /// years), then the class's index (16 bits), then whether the entry can
    /// be revalidated (it is kept once stale, for a grace past its windows,
    /// [`Store::end_ms`]).
    stamp: u64,
    fresh_ms: u32,
    swr_ms: u32,
    sie_ms: u32,
}

impl Life {
    fn new(now_ms: u64, freshness: &Freshness, class: u16) -> Self {
        let ms = |d: Duration| d.as_millis().min(u128::from(u32::MAX)) as u32;
        let born_ms = now_ms - u64::from(ms(freshness.age));
        Life {
            stamp: born_ms << STAMP_BITS | u64::from(class) << 1 | u64::from(freshness.revalidate),
            fresh_ms: ms(freshness.ttl),
            swr_ms: ms(freshness.stale_while_revalidate),
            sie_ms: ms(freshness.stale_if_error),
        }
    }

    fn born_ms(&self) -> u64 {
        self.stamp >> STAMP_BITS
    }

    fn class(&self) -> u16 {
        (self.stamp >> 1) as u16
    }

    fn revalidate(&self) -> bool {
        self.stamp & 1 == 1
    }

    /// Its age at `now_ms`.
    fn age_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.born_ms())
    }

    /// `grace_ms` past its TTL and both stale windows.
    fn end_ms(&self, grace_ms: u64) -> u64 {
        let windows = u64::from(self.swr_ms.max(self.sie_ms));
        self.born_ms() + u64::from(self.fresh_ms) + windows + grace_ms
    }
}

/// What an entry holds: a response, or, under a response's primary key, the
/// marker its variants are filed by (HTTP `Vary`).
enum Slot<V> {
    Value(V),
    Vary(Arc<Marker>),
}

/// The request headers the responses of one primary key vary on, and the
/// epoch their variants are filed under ([`variant_key`]).
pub(crate) struct Marker {
    pub(crate) names: Arc<[HeaderName]>,
    pub(crate) epoch: u64,
    /// The latest [`Store::end_ms`] of the variants filed under it: the
    /// marker is of no use past it (every variant is gone), and is swept.
    until_ms: AtomicU64,
}

impl<V: Clone> Clone for Slot<V> {
    fn clone(&self) -> Self {
        match self {
            Slot::Value(value) => Slot::Value(value.clone()),
            Slot::Vary(marker) => Slot::Vary(marker.clone()),
        }
    }
}

impl<V: Clone> Clone for Entry<V> {
    fn clone(&self) -> Self {
        Entry {
            slot: self.slot.clone(),
            life: self.life,
            weight: self.weight,
        }
    }
}

/// What a lookup found.
pub(crate) enum Found<V> {
    Fresh {
        value: V,
        age: Duration,
    },
    /// Past its TTL. `background`: within stale-while-revalidate, serve it
    /// and refresh; `if_error`: within stale-if-error, keep it for a failure;
    /// `revalidate`: ask the inner service whether it changed.
    Stale {
        value: V,
        age: Duration,
        staleness: Duration,
        background: bool,
        if_error: bool,
        revalidate: bool,
    },
    /// The key's responses vary on the marker's request headers: look up
    /// the request's variant ([`variant_key`]).
    Varies(Arc<Marker>),
    Missing,
}

/// The key of the variant of `primary` that a request with `headers` gets,
/// for responses that vary on `names`, under the marker's `epoch`: the
/// primary key continued, so that it keeps its path, with the header values
/// private. An invalidated (and later re-made) marker has a new epoch, so
/// the variants filed under the old one are never found again.
pub(crate) fn variant_key(
    primary: &Key,
    epoch: u64,
    names: &[HeaderName],
    headers: &HeaderMap,
) -> Key {
    let mut key = primary.to_builder();
    // Not a header name (a space): no primary key has this part.
    key.push(b" vary");
    key.push(&epoch.to_be_bytes());
    key.mark_private();
    for name in names {
        key.push_header(headers, name);
    }
    key.build()
}

#[derive(Clone)]
struct Weigh;

impl<V> Weighter<Key, Entry<V>> for Weigh {
    fn weight(&self, _key: &Key, entry: &Entry<V>) -> u64 {
        u64::from(entry.weight)
    }
}

/// Counters, striped so that threads hitting the same key do not fight over
/// one cache line.
#[derive(Default)]
#[repr(align(128))]
struct Stripe {
    /// Hits of this store (a backend hit is counted in `backend_hits` only).
    hits: AtomicU64,
    backend_hits: AtomicU64,
    misses: AtomicU64,
    stale_while_revalidate: AtomicU64,
    stale_if_error: AtomicU64,
    stored: AtomicU64,
    not_stored: AtomicU64,
    bypassed: AtomicU64,
    refreshes: AtomicU64,
    revalidated: AtomicU64,
    invalidated: AtomicU64,
    expired: AtomicU64,
}

const STRIPES: usize = 8;

fn stripe_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    INDEX.with(|i| *i)
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Count {
    Hit,
    BackendHit,
    Miss,
    StaleWhileRevalidate,
    StaleIfError,
    Stored,
    NotStored,
    Bypassed,
    Refresh,
    Revalidated,
}

pub(crate) struct Store<V> {
    entries: QuickCache<Key, Entry<V>, Weigh, KeyBuildHasher>,
    /// Started with the store: its epoch.
    clock: Stopwatch,
    /// Keys with a stale-while-revalidate refresh running: at most one each.
    refreshing: Mutex<HashSet<Key, KeyBuildHasher>>,
    classes: Mutex<Vec<Class>>,
    /// Each entry weighs at least this much, which bounds the entry count.
    min_weight: u64,
    max_bytes: u64,
    /// Weighs values instead of the policy, when set.
    pub(crate) weigher: Option<Weigher<V>>,
    stripes: Box<[Stripe]>,
    invalidations: broadcast::Sender<Invalidation>,
    /// Bumped by every invalidation of a path in the stripe (before its
    /// entries are removed): a fetch that began under an older generation
    /// does not keep its answer.
    generations: Box<[AtomicU64]>,
    /// The epoch of the next `Vary` marker.
    epochs: AtomicU64,
    /// How often the sweep runs, and how long past its windows an entry
    /// that can be revalidated is kept.
    pub(crate) sweep_every: Duration,
    grace_ms: u64,
    /// A sweep task runs (or is being started) for this store.
    pub(crate) sweeping: AtomicBool,
}

/// Weighs one stored value in bytes.
pub(crate) type Weigher<V> = std::sync::Arc<dyn Fn(&V) -> usize + Send + Sync>;

impl<V> Store<V> {
    /// Claims the one background refresh of `key`; `false` if one runs.
    pub(crate) fn claim_refresh(&self, key: &Key) -> bool {
        let mut refreshing = self
            .refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        refreshing.insert(key.clone())
    }

    /// Announces an invalidation to the receivers of
    /// [`CacheHandle::invalidations`](super::CacheHandle::invalidations).
    /// `what` is built only when someone listens; a send never fails the
    /// caller.
    pub(crate) fn announce(&self, what: impl FnOnce() -> Invalidation) {
        if self.invalidations.receiver_count() > 0 {
            let _ = self.invalidations.send(what());
        }
    }

    pub(crate) fn invalidations(&self) -> broadcast::Receiver<Invalidation> {
        self.invalidations.subscribe()
    }

    pub(crate) fn release_refresh(&self, key: &Key) {
        let mut refreshing = self
            .refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        refreshing.remove(key);
    }
}

impl<V: Clone> Store<V> {
    pub(crate) fn new(
        max_bytes: u64,
        max_entries: Option<u64>,
        sweep_every: Duration,
        clock: &Clock,
    ) -> Self {
        let max_bytes = max_bytes.max(1);
        let min_weight = max_entries.map_or(1, |n| max_bytes.div_ceil(n.max(1)));
        // Only an estimate for sizing quick_cache's tables.
        let estimated = max_entries.unwrap_or(max_bytes / 1024).clamp(16, 1 << 20) as usize;
        let mut options = OptionsBuilder::new();
        options
            .estimated_items_capacity(estimated)
            .weight_capacity(max_bytes);
        if max_entries == Some(1) {
            // A single entry weighs the whole store; quick_cache only admits
            // entries that fit its "hot" share, so make that all of it.
            options.hot_allocation(1.0);
        }
        let options = options.build().expect("capacities are set");
        Store {
            entries: QuickCache::with_options(
                options,
                Weigh,
                KeyBuildHasher::default(),
                Default::default(),
            ),
            clock: Stopwatch::start(clock),
            refreshing: Mutex::default(),
            classes: Mutex::new(vec![Class::default()]),
            min_weight,
            max_bytes,
            weigher: None,
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
            invalidations: broadcast::channel(INVALIDATIONS_CAPACITY).0,
            generations: (0..GENERATIONS).map(|_| AtomicU64::new(0)).collect(),
            epochs: AtomicU64::new(0),
            sweep_every,
            grace_ms: sweep_every.as_millis().min(u128::from(u32::MAX)) as u64,
            sweeping: AtomicBool::new(false),
        }
    }

    pub(crate) fn count(&self, what: Count) {
        let s = &self.stripes[stripe_index()];
        let counter = match what {
            Count::Hit => &s.hits,
            Count::BackendHit => &s.backend_hits,
            Count::Miss => &s.misses,
            Count::StaleWhileRevalidate => &s.stale_while_revalidate,
            Count::StaleIfError => &s.stale_if_error,
            Count::Stored => &s.stored,
            Count::NotStored => &s.not_stored,
            Count::Bypassed => &s.bypassed,
            Count::Refresh => &s.refreshes,
            Count::Revalidated => &s.revalidated,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Nanoseconds since the store's epoch, on the store's clock: what a
    /// fetch times its response delay with, so that delays and ages are
    /// read on the one clock.
    #[inline]
    pub(super) fn now_ns(&self) -> u64 {
        self.clock.now()
    }

    /// Milliseconds since the store's epoch, plus [`NOW_OFFSET_MS`]: one
    /// read of the store's clock (the fast one unless set otherwise; see
    /// [`Clock`]).
    #[inline]
    fn now_ms(&self) -> u64 {
        self.clock.now() / 1_000_000 + NOW_OFFSET_MS
    }

    /// Finds `key`. The value is cloned under quick_cache's shard *read*
    /// lock (readers do not block each other); that clone is the caller's
    /// copy, handed over without a second clone.
    #[inline]
    pub(crate) fn lookup(&self, key: &Key) -> Found<V> {
        let Some(entry) = self.entries.get(key) else {
            return Found::Missing;
        };
        let value = match entry.slot {
            Slot::Value(value) => value,
            Slot::Vary(marker) => return Found::Varies(marker),
        };
        let life = entry.life;
        let now_ms = self.now_ms();
        let age_ms = life.age_ms(now_ms);
        let age = Duration::from_millis(age_ms);
        let fresh = u64::from(life.fresh_ms);
        if age_ms < fresh {
            return Found::Fresh { value, age };
        }
        if now_ms >= self.end_ms(&life) {
            // Of no use any more: free it now rather than at the next
            // sweep, unless a fresh copy was stored since it was read.
            let removed = self.entries.remove_if(key, |current| current.life == life);
            if removed.is_some() {
                self.count_expired(1);
            }
            return Found::Missing;
        }
        Found::Stale {
            value,
            age,
            staleness: Duration::from_millis(age_ms - fresh),
            background: age_ms < fresh + u64::from(life.swr_ms),
            if_error: age_ms < fresh + u64::from(life.sie_ms),
            revalidate: life.revalidate(),
        }
    }

    /// The invalidation generation of `key`'s path, read when a fetch for it
    /// begins.
    pub(crate) fn generation(&self, key: &Key) -> u64 {
        self.generations[generation_index(key.path())].load(Ordering::SeqCst)
    }

    /// Starts a new generation for `path` (every path: `None`). Called
    /// before the entries are removed, so that a fetch storing between the
    /// two is caught by one or the other.
    pub(crate) fn bump(&self, path: Option<&[u8]>) {
        match path {
            Some(path) => {
                self.generations[generation_index(Some(path))].fetch_add(1, Ordering::SeqCst);
            }
            None => {
                for generation in self.generations.iter() {
                    generation.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    /// Stores `value` for `key`, unless the key's path was invalidated since
    /// `generation`. Returns `false` when not stored: invalidated, or larger
    /// than the whole store.
    pub(crate) fn insert(
        &self,
        key: Key,
        value: V,
        weight: usize,
        freshness: &Freshness,
        class: &Class,
        generation: u64,
    ) -> bool {
        let entry = Entry {
            slot: Slot::Value(value),
            life: Life::new(self.now_ms(), freshness, self.class_index(class)),
            weight: 0,
        };
        self.put(key, entry, weight, generation)
    }

    /// The epoch of the `Vary` marker under `primary` for `names`: the one
    /// there, or a new marker (replacing any other entry). `None` when the
    /// path was invalidated since `generation`, or the marker does not fit.
    /// The marker is kept at least as long as a variant stored now with
    /// `freshness`.
    pub(crate) fn vary_marker(
        &self,
        primary: &Key,
        names: &Arc<[HeaderName]>,
        freshness: &Freshness,
        class: &Class,
        generation: u64,
    ) -> Option<u64> {
        let now_ms = self.now_ms();
        let until_ms = self.end_ms(&Life::new(now_ms, freshness, 0));
        if let Some(Entry {
            slot: Slot::Vary(held),
            ..
        }) = self.entries.get(primary)
        {
            if held.names == *names {
                held.until_ms.fetch_max(until_ms, Ordering::Relaxed);
                return Some(held.epoch);
            }
        }
        let epoch = self.epochs.fetch_add(1, Ordering::Relaxed);
        let weight = names.iter().map(|n| n.as_str().len() + 32).sum();
        let marker = Entry {
            slot: Slot::Vary(Arc::new(Marker {
                names: names.clone(),
                epoch,
                until_ms: AtomicU64::new(until_ms),
            })),
            life: Life::new(
                now_ms,
                &Freshness::new(Duration::ZERO),
                self.class_index(class),
            ),
            weight: 0,
        };
        self.put(primary.clone(), marker, weight, generation)
            .then_some(epoch)
    }

    fn put(&self, key: Key, mut entry: Entry<V>, weight: usize, generation: u64) -> bool {
        let weight = (weight as u64 + key.len() as u64 + ENTRY_OVERHEAD).max(self.min_weight);
        if weight > self.max_bytes || weight > u64::from(u32::MAX) {
            self.entries.remove(&key);
            return false;
        }
        entry.weight = weight as u32;
        let life = entry.life;
        // quick_cache refuses an entry too heavy for its shard; say so.
        self.entries.insert(key.clone(), entry);
        if self.generation(&key) != generation {
            // Invalidated while the answer was on its way: it may predate
            // the write. The invalidation may not have seen this entry yet.
            self.entries.remove_if(&key, |current| current.life == life);
            return false;
        }
        self.entries.contains_key(&key)
    }

    fn class_index(&self, class: &Class) -> u16 {
        let mut classes = self.classes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = classes.iter().position(|c| c == class) {
            return i as u16;
        }
        if classes.len() >= usize::from(u16::MAX) {
            return 0;
        }
        classes.push(class.clone());
        (classes.len() - 1) as u16
    }

    pub(crate) fn remove(&self, key: &Key) -> bool {
        let removed = self.entries.remove(key).is_some();
        if removed {
            self.count_invalidated(1);
        }
        removed
    }

    /// Removes the entries for which `pred` holds; returns how many.
    pub(crate) fn remove_if(&self, pred: impl Fn(&Key, &Entry<V>) -> bool) -> u64 {
        let removed = AtomicU64::new(0);
        self.entries.retain(|key, entry| {
            let gone = pred(key, entry);
            if gone {
                removed.fetch_add(1, Ordering::Relaxed);
            }
            !gone
        });
        let removed = removed.into_inner();
        self.count_invalidated(removed);
        removed
    }

    pub(crate) fn remove_class(&self, class: &Class) -> u64 {
        let index = {
            let classes = self.classes.lock().unwrap_or_else(PoisonError::into_inner);
            match classes.iter().position(|c| c == class) {
                Some(i) => i as u16,
                None => return 0,
            }
        };
        self.remove_if(|_, entry| entry.life.class() == index)
    }

    /// When nothing can use an entry with `life` any more: past its TTL and
    /// both stale windows, and, when it can be revalidated, one sweep
    /// interval later (a validator lets a "not changed" answer revive it,
    /// but not forever). The one rule of expiry: the lookup that finds an
    /// entry past it and the sweep both remove it.
    fn end_ms(&self, life: &Life) -> u64 {
        life.end_ms(if life.revalidate() { self.grace_ms } else { 0 })
    }

    /// Removes up to `budget` entries that nothing can use any more
    /// ([`end_ms`](Self::end_ms); a marker once past its variants', a
    /// variant whose marker went first in its own time); returns how many.
    /// Visits every entry, under one shard's write lock at a time.
    pub(crate) fn sweep(&self, budget: u64) -> u64 {
        let now_ms = self.now_ms();
        let removed = Cell::new(0);
        self.entries.retain(|_, entry| {
            let end_ms = match &entry.slot {
                Slot::Value(_) => self.end_ms(&entry.life),
                Slot::Vary(marker) => marker.until_ms.load(Ordering::Relaxed),
            };
            if removed.get() >= budget || end_ms > now_ms {
                return true;
            }
            removed.set(removed.get() + 1);
            false
        });
        let removed = removed.get();
        self.count_expired(removed);
        removed
    }

    fn count_expired(&self, n: u64) {
        self.stripes[stripe_index()]
            .expired
            .fetch_add(n, Ordering::Relaxed);
    }

    fn count_invalidated(&self, n: u64) {
        self.stripes[stripe_index()]
            .invalidated
            .fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes held now: the sum of entry weights.
    pub(crate) fn bytes(&self) -> u64 {
        self.entries.weight()
    }

    pub(crate) fn stats(&self) -> CacheStats {
        let mut stats = CacheStats {
            entries: self.entries.len() as u64,
            bytes: self.entries.weight(),
            max_bytes: self.max_bytes,
            ..CacheStats::default()
        };
        for s in self.stripes.iter() {
            let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
            stats.hits += load(&s.hits) + load(&s.backend_hits);
            stats.backend_hits += load(&s.backend_hits);
            stats.misses += load(&s.misses);
            stats.stale_while_revalidate += load(&s.stale_while_revalidate);
            stats.stale_if_error += load(&s.stale_if_error);
            stats.stored += load(&s.stored);
            stats.not_stored += load(&s.not_stored);
            stats.bypassed += load(&s.bypassed);
            stats.refreshes += load(&s.refreshes);
            stats.revalidated += load(&s.revalidated);
            stats.invalidated += load(&s.invalidated);
            stats.expired += load(&s.expired);
        }
        stats
    }
}

fn generation_index(path: Option<&[u8]>) -> usize {
    path.map_or(0, |path| {
        (crate::stable_hash::stable_hash(path) % GENERATIONS as u64) as usize
    })
}

/// What one entry costs beyond its key and value, counted in its weight:
/// the entry record and quick_cache's slot, as measured for 100,000 entries
/// (docs/BENCHMARKS.md).
pub(crate) const ENTRY_OVERHEAD: u64 = 96;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_of_a_bytes_value_keeps_24_bytes_of_bookkeeping() {
        let value = std::mem::size_of::<bytes::Bytes>();
        assert_eq!(std::mem::size_of::<Entry<bytes::Bytes>>(), value + 24);
    }

    #[test]
    fn a_life_keeps_its_birth_class_and_revalidate_flag_apart() {
        let mut freshness = Freshness::new(Duration::from_secs(10));
        freshness.age = Duration::from_millis(u64::from(u32::MAX) + 5);
        freshness.revalidate = true;
        freshness.stale_if_error = Duration::from_secs(3);
        let now_ms = NOW_OFFSET_MS;
        let life = Life::new(now_ms, &freshness, u16::MAX - 1);
        assert_eq!(life.born_ms(), now_ms - u64::from(u32::MAX));
        assert_eq!(life.class(), u16::MAX - 1);
        assert!(life.revalidate());
        assert_eq!(life.age_ms(now_ms + 1), u64::from(u32::MAX) + 1);
        assert_eq!(life.end_ms(7), life.born_ms() + 10_000 + 3_000 + 7);
    }
}
