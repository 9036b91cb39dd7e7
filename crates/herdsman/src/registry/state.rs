//! The registry's shared state: one map from key to poll loop, with the
//! subscriber counts and the budgets the limits are checked against, and
//! the memory figure.
//!
//! Lock order: the map, then a hook's [`Cell`]. Observers and wakers are
//! called with no lock held.

use std::{
    any::Any,
    collections::HashMap,
    fmt, mem,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

use super::{
    budget::{shrink, table_bytes, Budgets, Who},
    cell::Cell,
    error::{Limit, TooManySubscribers},
    layer::{ClassSettings, DEFAULT_MAX_MEMORY},
    memory::{Account, Memory, ARC_BYTES},
    subscription::SUBSCRIPTION_BYTES,
    HookInfo, RegistryStats,
};
use crate::{
    backend::{LocalLoops, LoopBackend},
    class::Class,
    event::{Event, Invalidation, Observers, Rejection},
    key::{Key, KeyBuildHasher, DEFAULT_MAX_KEY_LEN},
};

/// The settings of one registry.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Which replica polls each key ([`LocalLoops`]: this one).
    pub(crate) loops: Loops,
    /// The settings of classes without their own.
    pub(crate) default: ClassSettings,
    /// Classes with settings of their own.
    pub(crate) classes: HashMap<Class, ClassSettings>,
    pub(crate) floor: Duration,
    pub(crate) max_subscribers: usize,
    pub(crate) max_key_len: usize,
    pub(crate) max_memory: u64,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_cap: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            loops: Loops::default(),
            default: ClassSettings::default(),
            classes: HashMap::new(),
            floor: Duration::from_secs(1),
            max_subscribers: 1_000_000,
            max_key_len: DEFAULT_MAX_KEY_LEN,
            max_memory: DEFAULT_MAX_MEMORY,
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

/// The [`LoopBackend`] of a registry. Asked once per poll round, never per
/// request: called through a vtable.
#[derive(Clone)]
pub(crate) struct Loops(pub(crate) Arc<dyn LoopBackend>);

impl Default for Loops {
    fn default() -> Self {
        Loops(Arc::new(LocalLoops))
    }
}

impl fmt::Debug for Loops {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Loops")
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
    /// Who created it: the key counts in their budgets until it leaves.
    pub(crate) owner: Who,
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
        owner: Who,
    ) -> Self {
        Meta {
            key,
            class,
            started_at: Instant::now(),
            settings,
            private,
            owner,
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

/// One key's poll loop, as its subscribers and the loop see it.
pub(crate) struct Hook<T> {
    pub(crate) meta: Meta,
    pub(crate) cell: Cell<T>,
    /// What the hook holds in the registry's memory figure, given back when
    /// it is dropped.
    pub(crate) account: Account,
}

/// A hook whatever its value type: what the map holds.
pub(crate) trait AnyHook: Send + Sync + 'static {
    fn meta(&self) -> &Meta;
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<T: Send + Sync + 'static> AnyHook for Hook<T> {
    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// Bytes of one distinct interval in an entry's list.
const INTERVAL_BYTES: usize = mem::size_of::<(Duration, usize)>();

struct Entry {
    hook: Arc<dyn AnyHook>,
    subscribers: usize,
    /// The intervals subscribers asked for (clamped), with their counts:
    /// usually one.
    intervals: Vec<(Duration, usize)>,
}

impl Entry {
    fn interval(&self) -> Option<Duration> {
        self.intervals.iter().map(|(d, _)| *d).min()
    }

    /// Counts one more subscriber asking for `interval`; returns the bytes
    /// the list grew by.
    fn ask(&mut self, interval: Duration) -> usize {
        let before = self.intervals.capacity();
        match self.intervals.iter_mut().find(|(d, _)| *d == interval) {
            Some((_, n)) => *n += 1,
            None => self.intervals.push((interval, 1)),
        }
        (self.intervals.capacity() - before) * INTERVAL_BYTES
    }

    /// Counts one subscriber asking for `interval` less.
    fn unask(&mut self, interval: Duration) {
        if let Some(i) = self.intervals.iter().position(|(d, _)| *d == interval) {
            self.intervals[i].1 -= 1;
            if self.intervals[i].1 == 0 {
                self.intervals.swap_remove(i);
            }
        }
    }
}

#[derive(Default)]
struct Map {
    hooks: HashMap<Key, Entry, KeyBuildHasher>,
    subscribers: usize,
    /// Subscriptions with a private loop, outside `hooks`.
    private: usize,
    budgets: Budgets,
    /// The bytes of the entries' interval lists.
    interval_bytes: usize,
    /// The bytes of the map's own tables and the subscribers' handles, as
    /// last added to the memory figure.
    counted: usize,
}

impl Map {
    /// The bytes of the map's tables (the keys' and the budgets') and of
    /// every subscriber's handle.
    fn bytes(&self) -> usize {
        table_bytes(self.hooks.capacity(), mem::size_of::<(Key, Entry)>())
            + self.interval_bytes
            + self.budgets.bytes()
            + self.subscribers * SUBSCRIPTION_BYTES
    }
}

/// The state every clone of a registry, and every subscription, shares.
pub(crate) struct Core {
    pub(crate) config: Config,
    pub(crate) observers: Observers,
    map: Mutex<Map>,
    memory: Arc<Memory>,
    tasks: AtomicU64,
    polls: AtomicU64,
    errors: AtomicU64,
    updates: AtomicU64,
    refused: AtomicU64,
}

/// A subscriber asking to join: what `join` decides on.
pub(crate) struct Joining {
    pub(crate) key: Option<Key>,
    pub(crate) asked: Option<Duration>,
    pub(crate) who: Who,
    /// The bytes the request template of a new loop would hold.
    pub(crate) template: usize,
}

/// How a subscriber joined.
pub(crate) struct Joined<T> {
    pub(crate) hook: Arc<Hook<T>>,
    /// A new loop: the caller must spawn it.
    pub(crate) started: bool,
    /// The interval the subscriber counts for, never below the floor.
    pub(crate) interval: Duration,
    /// The loop must look at its interval or subscribers again.
    poke: bool,
}

/// Why a subscriber was refused, reported once the map's lock is released.
struct Refusal {
    limit: Limit,
    class: Class,
    linger: Duration,
}

impl Core {
    pub(crate) fn new(config: Config, observers: Observers) -> Self {
        Core {
            config,
            observers,
            map: Mutex::new(Map::default()),
            memory: Arc::default(),
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

    /// Brings the memory figure up to date with the map's tables.
    fn recount(&self, map: &mut Map) {
        let now = map.bytes();
        self.memory.change(map.counted, now);
        map.counted = now;
    }

    fn refuse(&self, refusal: Refusal) -> TooManySubscribers {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let Refusal {
            limit,
            class,
            linger,
        } = refusal;
        self.observers
            .observe(&class, Event::Rejected(Rejection::Subscription(limit)));
        let retry_after = match limit {
            Limit::KeyTooLong => None,
            Limit::SubscribersPerCaller | Limit::SubscribersPerAddress => {
                Some(Duration::from_secs(5))
            }
            Limit::Subscribers | Limit::SubscribersPerKey => Some(Duration::from_secs(1)),
            // Keys leave after their linger.
            _ => Some(linger.max(Duration::from_secs(1))),
        };
        TooManySubscribers::new(limit, retry_after)
    }

    /// Adds a subscriber to the key's loop, or to a new one (`class` is
    /// called only then, and the class's settings looked up), if every
    /// limit and budget allows it. Without a key, or with a key polled with
    /// values of another type: a private loop. Refusals are counted and
    /// reported to the observer.
    pub(crate) fn join<T: Send + Sync + 'static>(
        &self,
        joining: Joining,
        class: impl FnOnce() -> Class,
    ) -> Result<Joined<T>, TooManySubscribers> {
        let joined = self.admit(joining, class).map_err(|r| self.refuse(r))?;
        if joined.poke {
            joined.hook.meta.poke();
        }
        Ok(joined)
    }

    fn admit<T: Send + Sync + 'static>(
        &self,
        joining: Joining,
        class: impl FnOnce() -> Class,
    ) -> Result<Joined<T>, Refusal> {
        if joining
            .key
            .as_ref()
            .is_some_and(|key| key.len() > self.config.max_key_len)
        {
            let class = class();
            let linger = self.config.class(&class).linger;
            return Err(Refusal {
                limit: Limit::KeyTooLong,
                class,
                linger,
            });
        }
        let mut map = self.lock();
        let existing = joining
            .key
            .as_ref()
            .and_then(|key| map.hooks.get(key))
            .map(|entry| entry.hook.clone());
        match existing.map(|hook| hook.into_any().downcast::<Hook<T>>()) {
            Some(Ok(hook)) => self.join_existing(&mut map, hook, joining),
            // Another value type polls this key: this subscriber gets a
            // loop of its own rather than an error.
            Some(Err(_)) => self.start(&mut map, joining, true, class()),
            None => {
                let private = joining.key.is_none();
                self.start(&mut map, joining, private, class())
            }
        }
    }

    fn join_existing<T>(
        &self,
        map: &mut Map,
        hook: Arc<Hook<T>>,
        joining: Joining,
    ) -> Result<Joined<T>, Refusal> {
        let meta = &hook.meta;
        let refusal = |limit| Refusal {
            limit,
            class: meta.class.clone(),
            linger: meta.settings.linger,
        };
        let entry = map.hooks.get_mut(&meta.key).expect("looked up above");
        if map.subscribers >= self.config.max_subscribers {
            return Err(refusal(Limit::Subscribers));
        }
        if entry.subscribers >= meta.settings.max_subscribers_per_key {
            return Err(refusal(Limit::SubscribersPerKey));
        }
        let budgets = &mut map.budgets;
        if let Some(limit) = budgets.subscriber_refused(&meta.class, joining.who, &meta.settings) {
            return Err(refusal(limit));
        }
        let interval = self.config.clamp(joining.asked, &meta.settings);
        entry.subscribers += 1;
        map.interval_bytes += entry.ask(interval);
        let shortest = entry.interval().unwrap_or(interval);
        let shorter = shortest < meta.interval();
        meta.interval_ns.store(nanos(shortest), Ordering::Relaxed);
        let woke = meta.subscribers.fetch_add(1, Ordering::AcqRel) == 0;
        budgets.add_subscriber(&meta.class, joining.who);
        map.subscribers += 1;
        self.recount(map);
        Ok(Joined {
            interval,
            started: false,
            poke: shorter || woke,
            hook,
        })
    }

    /// A new loop for the subscriber: in the map, or `private` outside it.
    fn start<T: Send + Sync + 'static>(
        &self,
        map: &mut Map,
        joining: Joining,
        private: bool,
        class: Class,
    ) -> Result<Joined<T>, Refusal> {
        let settings = self.config.class(&class);
        let who = joining.who;
        let key = joining.key.unwrap_or_else(|| Key::new(b""));
        let fixed = mem::size_of::<Hook<T>>() + ARC_BYTES + key.heap_bytes();
        let limit = if map.subscribers >= self.config.max_subscribers {
            Some(Limit::Subscribers)
        } else if let Some(limit) = map.budgets.key_refused(&class, who, &settings) {
            Some(limit)
        } else if let Some(limit) = map.budgets.subscriber_refused(&class, who, &settings) {
            Some(limit)
        } else {
            let after = self.memory.bytes() + fixed + joining.template;
            (after as u64 > self.config.max_memory).then_some(Limit::Memory)
        };
        if let Some(limit) = limit {
            let linger = settings.linger;
            return Err(Refusal {
                limit,
                class,
                linger,
            });
        }
        let interval = self.config.clamp(joining.asked, &settings);
        map.budgets.add_key(&class, who);
        map.budgets.add_subscriber(&class, who);
        let meta = Meta::new(key.clone(), class, settings, interval, private, who);
        let hook = Arc::new(Hook {
            meta,
            cell: Cell::new(),
            account: Account::new(self.memory.clone(), fixed),
        });
        if private {
            map.private += 1;
        } else {
            let intervals = vec![(interval, 1)];
            map.interval_bytes += intervals.capacity() * INTERVAL_BYTES;
            let entry = Entry {
                hook: hook.clone(),
                subscribers: 1,
                intervals,
            };
            map.hooks.insert(key, entry);
        }
        map.subscribers += 1;
        self.recount(map);
        Ok(Joined {
            hook,
            started: true,
            interval,
            poke: false,
        })
    }

    /// Takes `meta`'s key out of the map and out of its owner's budgets.
    /// The entry is returned, to be dropped once the lock is released.
    fn remove(&self, map: &mut Map, meta: &Meta) -> Option<Entry> {
        let entry = map.hooks.remove(&meta.key)?;
        map.interval_bytes -= entry.intervals.capacity() * INTERVAL_BYTES;
        map.budgets.drop_key(&meta.class, meta.owner);
        shrink(&mut map.hooks);
        self.recount(map);
        Some(entry)
    }

    /// Removes a subscriber of `who` that asked for `interval`; stops the
    /// loop when it was the last one and there is no linger.
    pub(crate) fn leave(&self, meta: &Meta, interval: Duration, who: Who) {
        let mut map = self.lock();
        map.subscribers -= 1;
        map.budgets.drop_subscriber(&meta.class, who);
        if meta.private {
            map.private -= 1;
            map.budgets.drop_key(&meta.class, meta.owner);
            self.recount(&mut map);
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
            self.recount(&mut map);
            return;
        };
        entry.subscribers -= 1;
        entry.unask(interval);
        if let Some(shortest) = entry.interval() {
            meta.interval_ns.store(nanos(shortest), Ordering::Relaxed);
        }
        let last = entry.subscribers == 0;
        meta.subscribers.fetch_sub(1, Ordering::AcqRel);
        if last && meta.settings.linger.is_zero() {
            let entry = self.remove(&mut map, meta);
            drop(map);
            drop(entry);
            meta.stop();
        } else {
            self.recount(&mut map);
            drop(map);
            if last {
                meta.poke();
            }
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
        let entry = if idle {
            self.remove(&mut map, meta)
        } else {
            None
        };
        drop(map);
        drop(entry);
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
        let entry = if ours && !meta.private {
            self.remove(&mut map, meta)
        } else {
            None
        };
        drop(map);
        drop(entry);
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
            budget_holders: map.budgets.len() as u64,
        }
    }

    /// The memory figure: kept up to date as the registry changes, so
    /// reading it is one load.
    pub(crate) fn memory_bytes(&self) -> u64 {
        self.memory.bytes() as u64
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
