//! The registry's shared state: one map from key to poll loop, with the
//! subscriber counts the limits are checked against.
//!
//! Lock order: the map, then a hook's [`Cell`]. Observers and wakers are
//! called with no lock held.

use std::{
    any::Any,
    collections::{BTreeMap, HashMap},
    fmt, mem,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    task::Waker,
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

use super::{
    cell::Cell,
    error::{Limit, TooManySubscribers},
    layer::ClassSettings,
    HookInfo, RegistryStats,
};
use crate::{
    class::Class,
    event::{Event, Invalidation, Observers},
    key::{Key, KeyBuildHasher},
};

/// The settings of one registry.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The settings of classes without their own.
    pub(crate) default: ClassSettings,
    /// Classes with settings of their own.
    pub(crate) classes: HashMap<Class, ClassSettings>,
    pub(crate) floor: Duration,
    pub(crate) max_keys: usize,
    pub(crate) max_subscribers: usize,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_cap: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default: ClassSettings::default(),
            classes: HashMap::new(),
            floor: Duration::from_secs(1),
            max_keys: 100_000,
            max_subscribers: 1_000_000,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(60),
        }
    }
}

impl Config {
    /// The settings of `class`: its own, else the registry's.
    pub(crate) fn class(&self, class: &Class) -> ClassSettings {
        if self.classes.is_empty() {
            return self.default;
        }
        self.classes.get(class).copied().unwrap_or(self.default)
    }

    /// A subscriber's asked-for interval, or its class's, never below the
    /// floor.
    pub(crate) fn clamp(&self, asked: Option<Duration>, settings: &ClassSettings) -> Duration {
        asked.unwrap_or(settings.interval).max(self.floor)
    }
}

/// What the poll loop and the registry share about one key, whatever the
/// value type.
pub(crate) struct Meta {
    pub(crate) key: Key,
    pub(crate) class: Class,
    pub(crate) started_at: Instant,
    /// The settings of its class, looked up once when the loop starts.
    pub(crate) settings: ClassSettings,
    /// Not in the map: a subscription without a key, or whose key is polled
    /// by a loop of another value type.
    pub(crate) private: bool,
    /// The loop's interval (the shortest a subscriber asked for), in ns.
    interval_ns: AtomicU64,
    /// Nanoseconds from `started_at` to the end of the last fetch, plus one;
    /// zero before the first.
    last_fetch_ns: AtomicU64,
    /// Nanoseconds from `started_at` to when the next fetch is due, plus
    /// one; zero before the first fetch ends.
    next_attempt_ns: AtomicU64,
    fetches: AtomicU64,
    errors: AtomicU64,
    /// A mirror of the map's count, for the loop (lingering) and `hooks()`.
    subscribers: AtomicUsize,
    refresh: AtomicBool,
    stop: AtomicBool,
    /// Wakes the loop: refresh, a shorter interval, the last subscriber gone,
    /// stop. One waiter (the loop), so `notify_one`'s stored permit means no
    /// wake-up is lost.
    wake: Notify,
}

impl Meta {
    fn new(
        key: Key,
        class: Class,
        settings: ClassSettings,
        interval: Duration,
        private: bool,
    ) -> Self {
        Meta {
            key,
            class,
            started_at: Instant::now(),
            settings,
            private,
            interval_ns: AtomicU64::new(nanos(interval)),
            last_fetch_ns: AtomicU64::new(0),
            next_attempt_ns: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            subscribers: AtomicUsize::new(1),
            refresh: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    pub(crate) fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_ns.load(Ordering::Relaxed))
    }

    pub(crate) fn last_fetch(&self) -> Option<Instant> {
        match self.last_fetch_ns.load(Ordering::Acquire) {
            0 => None,
            n => Some(self.started_at + Duration::from_nanos(n - 1)),
        }
    }

    /// When the loop will fetch next (a refresh may make it sooner), as it
    /// last planned; `None` before its first fetch ended.
    pub(crate) fn next_attempt(&self) -> Option<Instant> {
        match self.next_attempt_ns.load(Ordering::Acquire) {
            0 => None,
            n => Some(self.started_at + Duration::from_nanos(n - 1)),
        }
    }

    pub(crate) fn set_next_attempt(&self, at: Instant) {
        let since = nanos(at.saturating_duration_since(self.started_at));
        self.next_attempt_ns
            .store(since.saturating_add(1), Ordering::Release);
    }

    pub(crate) fn fetched(&self, at: Instant, failed: bool) {
        let since = nanos(at.saturating_duration_since(self.started_at));
        self.last_fetch_ns
            .store(since.saturating_add(1), Ordering::Release);
        self.fetches.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the last fetch is younger than `max_age` at `now`.
    pub(crate) fn fresh(&self, now: Instant, max_age: Duration) -> bool {
        self.last_fetch()
            .is_some_and(|at| now.saturating_duration_since(at) < max_age)
    }

    pub(crate) fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Acquire)
    }

    pub(crate) fn request_refresh(&self) {
        self.refresh.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Takes a pending refresh request.
    pub(crate) fn take_refresh(&self) -> bool {
        self.refresh.swap(false, Ordering::AcqRel)
    }

    pub(crate) fn refresh_pending(&self) -> bool {
        self.refresh.load(Ordering::Acquire)
    }

    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub(crate) fn poke(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn woken(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    fn info(&self) -> HookInfo {
        HookInfo {
            key: self.key.clone(),
            class: self.class.clone(),
            subscribers: self.subscribers(),
            interval: self.interval(),
            started_at: self.started_at,
            last_fetch: self.last_fetch(),
            next_attempt: self.next_attempt(),
            fetches: self.fetches.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

/// What one shared value holds, in bytes (the registry's
/// [`Share`](crate::share::Share) policy's
/// [`held_bytes`](crate::share::Share::held_bytes)).
pub(crate) type Weigher<T> = Arc<dyn Fn(&T) -> usize + Send + Sync>;

/// One key's poll loop, as its subscribers and the loop see it.
pub(crate) struct Hook<T> {
    pub(crate) meta: Meta,
    pub(crate) cell: Cell<T>,
    weigh: Weigher<T>,
}

impl<T> Hook<T> {
    fn new(meta: Meta, weigh: Weigher<T>) -> Self {
        Hook {
            meta,
            cell: Cell::new(),
            weigh,
        }
    }
}

/// A hook whatever its value type: what the map holds.
pub(crate) trait AnyHook: Send + Sync + 'static {
    fn meta(&self) -> &Meta;
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    /// Bytes held: the loop's state, its waker slots and the value it
    /// keeps (the latest update's, or after a failure the last good one).
    /// Takes the cell's lock; runs the weigher outside it.
    fn memory(&self) -> usize;
}

impl<T: Send + Sync + 'static> AnyHook for Hook<T> {
    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    fn memory(&self) -> usize {
        let value = self
            .cell
            .current()
            .and_then(|update| update.last_good().map(|value| (self.weigh)(value)))
            .unwrap_or(0);
        mem::size_of::<Self>()
            + self.meta.key.heap_bytes()
            // A slab slot: the waker and the slab's tag.
            + self.cell.waiters() * (mem::size_of::<Option<Waker>>() + mem::size_of::<usize>())
            + value
    }
}

struct Entry {
    hook: Arc<dyn AnyHook>,
    subscribers: usize,
    /// The intervals subscribers asked for (clamped), with their counts.
    intervals: BTreeMap<Duration, usize>,
}

impl Entry {
    fn interval(&self) -> Option<Duration> {
        self.intervals.keys().next().copied()
    }
}

#[derive(Default)]
struct Map {
    hooks: HashMap<Key, Entry, KeyBuildHasher>,
    subscribers: usize,
    /// Subscriptions with a private loop, outside `hooks`.
    private: usize,
}

/// The state every clone of a registry, and every subscription, shares.
pub(crate) struct Core {
    pub(crate) config: Config,
    pub(crate) observers: Observers,
    map: Mutex<Map>,
    tasks: AtomicU64,
    polls: AtomicU64,
    errors: AtomicU64,
    updates: AtomicU64,
    refused: AtomicU64,
}

/// How a subscriber joined.
pub(crate) enum Joined<T> {
    /// The key's loop exists.
    Existing(Arc<Hook<T>>),
    /// A new loop: the caller must spawn it.
    Started(Arc<Hook<T>>),
}

impl Core {
    pub(crate) fn new(config: Config, observers: Observers) -> Self {
        Core {
            config,
            observers,
            map: Mutex::new(Map::default()),
            tasks: AtomicU64::new(0),
            polls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            updates: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Map> {
        // The map is consistent between statements that can panic.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refuse(&self, limit: Limit) -> TooManySubscribers {
        self.refused.fetch_add(1, Ordering::Relaxed);
        TooManySubscribers::new(limit)
    }

    /// Adds a subscriber of `key` asking for `asked` (none: its class's
    /// interval), to the key's loop or to a new one (`class` and `weigh`
    /// are called only then, and the class's settings looked up). `None` as
    /// the key: a private loop. Returns how it joined and the interval it
    /// counts for, never below the floor.
    pub(crate) fn join<T: Send + Sync + 'static>(
        &self,
        key: Option<Key>,
        asked: Option<Duration>,
        class: impl FnOnce() -> Class,
        weigh: impl FnOnce() -> Weigher<T>,
    ) -> Result<(Joined<T>, Duration), TooManySubscribers> {
        let mut map = self.lock();
        if map.subscribers >= self.config.max_subscribers {
            return Err(self.refuse(Limit::Subscribers));
        }
        let Some(key) = key else {
            map.subscribers += 1;
            map.private += 1;
            drop(map);
            return Ok(self.private(Key::new(b""), asked, class(), weigh()));
        };
        if let Some(entry) = map.hooks.get_mut(&key) {
            let Ok(hook) = entry.hook.clone().into_any().downcast::<Hook<T>>() else {
                // Another value type polls this key: this subscriber gets a
                // loop of its own rather than an error.
                map.subscribers += 1;
                map.private += 1;
                drop(map);
                return Ok(self.private(key, asked, class(), weigh()));
            };
            let meta = &hook.meta;
            if entry.subscribers >= meta.settings.max_subscribers_per_key {
                return Err(self.refuse(Limit::SubscribersPerKey));
            }
            let interval = self.config.clamp(asked, &meta.settings);
            entry.subscribers += 1;
            *entry.intervals.entry(interval).or_default() += 1;
            let shortest = entry.interval().unwrap_or(interval);
            let shorter = shortest < meta.interval();
            meta.interval_ns.store(nanos(shortest), Ordering::Relaxed);
            let woke = meta.subscribers.fetch_add(1, Ordering::AcqRel) == 0;
            map.subscribers += 1;
            drop(map);
            if shorter || woke {
                meta.poke();
            }
            return Ok((Joined::Existing(hook), interval));
        }
        if map.hooks.len() >= self.config.max_keys {
            return Err(self.refuse(Limit::Keys));
        }
        let class = class();
        let settings = self.config.class(&class);
        let interval = self.config.clamp(asked, &settings);
        let hook = Arc::new(Hook::new(
            Meta::new(key.clone(), class, settings, interval, false),
            weigh(),
        ));
        map.hooks.insert(
            key,
            Entry {
                hook: hook.clone(),
                subscribers: 1,
                intervals: BTreeMap::from([(interval, 1)]),
            },
        );
        map.subscribers += 1;
        Ok((Joined::Started(hook), interval))
    }

    /// A loop of its own for one subscriber, outside the map (counted in it
    /// by the caller).
    fn private<T>(
        &self,
        key: Key,
        asked: Option<Duration>,
        class: Class,
        weigh: Weigher<T>,
    ) -> (Joined<T>, Duration) {
        let settings = self.config.class(&class);
        let interval = self.config.clamp(asked, &settings);
        let meta = Meta::new(key, class, settings, interval, true);
        (Joined::Started(Arc::new(Hook::new(meta, weigh))), interval)
    }

    /// Removes a subscriber that asked for `interval`; stops the loop when
    /// it was the last one and there is no linger.
    pub(crate) fn leave(&self, meta: &Meta, interval: Duration) {
        let mut map = self.lock();
        map.subscribers -= 1;
        if meta.private {
            map.private -= 1;
            drop(map);
            meta.subscribers.store(0, Ordering::Release);
            meta.stop();
            return;
        }
        let Some(entry) = map
            .hooks
            .get_mut(&meta.key)
            .filter(|e| std::ptr::eq(e.hook.meta(), meta))
        else {
            // The loop ended abnormally and was removed already.
            return;
        };
        entry.subscribers -= 1;
        if let Some(n) = entry.intervals.get_mut(&interval) {
            *n -= 1;
            if *n == 0 {
                entry.intervals.remove(&interval);
            }
        }
        if let Some(shortest) = entry.interval() {
            meta.interval_ns.store(nanos(shortest), Ordering::Relaxed);
        }
        let last = entry.subscribers == 0;
        meta.subscribers.fetch_sub(1, Ordering::AcqRel);
        if last && meta.settings.linger.is_zero() {
            map.hooks.remove(&meta.key);
            drop(map);
            meta.stop();
        } else if last {
            drop(map);
            meta.poke();
        }
    }

    /// Removes a lingering loop if it still has no subscriber; `true` if it
    /// did (the loop then ends).
    pub(crate) fn retire(&self, meta: &Meta) -> bool {
        let mut map = self.lock();
        let idle = map
            .hooks
            .get(&meta.key)
            .is_some_and(|e| std::ptr::eq(e.hook.meta(), meta) && e.subscribers == 0);
        if idle {
            map.hooks.remove(&meta.key);
        }
        idle
    }

    /// Removes a loop that ended without being asked to (a panic, the
    /// runtime shutting down), so the next subscriber starts a new one.
    pub(crate) fn forget(&self, meta: &Meta) {
        let mut map = self.lock();
        let ours = map
            .hooks
            .get(&meta.key)
            .is_some_and(|e| std::ptr::eq(e.hook.meta(), meta));
        if ours && !meta.private {
            map.hooks.remove(&meta.key);
        }
    }

    /// The hook of `key`, if it is polled with values of type `T`.
    pub(crate) fn hook<T: Send + Sync + 'static>(&self, key: &Key) -> Option<Arc<Hook<T>>> {
        let hook = self.lock().hooks.get(key)?.hook.clone();
        hook.into_any().downcast::<Hook<T>>().ok()
    }

    pub(crate) fn refresh(&self, key: &Key) -> bool {
        let hook = self.lock().hooks.get(key).map(|e| e.hook.clone());
        hook.inspect(|h| h.meta().request_refresh()).is_some()
    }

    pub(crate) fn invalidate(&self, what: &Invalidation) -> usize {
        let hooks: Vec<_> = self
            .lock()
            .hooks
            .values()
            .filter(|e| what.covers(&e.hook.meta().key, &e.hook.meta().class))
            .map(|e| e.hook.clone())
            .collect();
        hooks.iter().for_each(|h| h.meta().request_refresh());
        hooks.len()
    }

    pub(crate) fn hooks(&self) -> Vec<HookInfo> {
        let hooks: Vec<_> = self.lock().hooks.values().map(|e| e.hook.clone()).collect();
        hooks.iter().map(|h| h.meta().info()).collect()
    }

    pub(crate) fn stats(&self) -> RegistryStats {
        let map = self.lock();
        RegistryStats {
            keys: map.hooks.len() as u64,
            subscribers: map.subscribers as u64,
            private_loops: map.private as u64,
            tasks: self.tasks.load(Ordering::Acquire),
            polls: self.polls.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            updates: self.updates.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }

    /// The map, each key's loop (its value included) and each subscriber's
    /// handle. The hooks are measured after the map's lock is released: a
    /// value's weigher is the share policy's code.
    pub(crate) fn memory_bytes(&self) -> u64 {
        let (hooks, entries, subscribers) = {
            let map = self.lock();
            let per_entry = mem::size_of::<(Key, Entry)>() + 64;
            let entries: usize = map
                .hooks
                .values()
                .map(|e| per_entry + e.intervals.len() * 48)
                .sum();
            let hooks: Vec<Arc<dyn AnyHook>> = map.hooks.values().map(|e| e.hook.clone()).collect();
            (hooks, entries, map.subscribers)
        };
        let held: usize = hooks.iter().map(|hook| hook.memory()).sum();
        let subscribers = subscribers * super::subscription::SUBSCRIPTION_BYTES;
        (entries + held + subscribers) as u64
    }

    pub(crate) fn task_started(&self) {
        self.tasks.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn task_ended(&self) {
        self.tasks.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn polled(&self, meta: &Meta, failed: bool, changed: bool) {
        self.polls.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        if changed {
            self.updates.fetch_add(1, Ordering::Relaxed);
        }
        self.observers.observe(&meta.class, Event::Polled);
    }

    /// A one-shot call was answered from `meta`'s loop.
    pub(crate) fn shared_answer(&self, meta: &Meta) {
        self.observers.observe(&meta.class, Event::SharedAnswer);
    }
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}
