//! The registry's shared state, in two levels.
//!
//! The loops are typed, as hyper-util's `pool/singleton.rs` types its state
//! by the service it wraps: one [`Table<T>`] from key to [`Hook<T>`] for
//! each value type `T`, so that joining a loop finds an `Arc<Hook<T>>` with
//! no downcast. A layer value does not know the value types of the services
//! it will wrap, so [`Core`] keeps the tables made so far and hands each
//! service its own once ([`Core::table`]).
//!
//! What the value types share stays untyped in [`Core`]: the subscriber
//! counts and the budgets the limits are checked against, the memory
//! figure, and what reads every loop whatever its type (invalidation,
//! refresh by key, `hooks()`, the stats), through [`AnyTable`].
//!
//! Lock order: the shared map, then the list of tables, then a table, then
//! a hook's [`Cell`]. A thread holds two tables' locks at once only with
//! the shared map's lock held. Observers and wakers are called with no lock
//! held.

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
    /// Not in a table: a subscription without a key, or whose key is polled
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

/// A hook whatever its value type: what the untyped level reads.
pub(crate) trait AnyHook: Send + Sync + 'static {
    fn meta(&self) -> &Meta;
}

impl<T: Send + Sync + 'static> AnyHook for Hook<T> {
    fn meta(&self) -> &Meta {
        &self.meta
    }
}

/// Bytes of one distinct interval in an entry's list.
const INTERVAL_BYTES: usize = mem::size_of::<(Duration, usize)>();

struct Entry<T> {
    hook: Arc<Hook<T>>,
    subscribers: usize,
    /// The intervals subscribers asked for (clamped), with their counts:
    /// usually one.
    intervals: Vec<(Duration, usize)>,
}

impl<T> Entry<T> {
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

/// The loops of one value type, by key: what its subscribers join and its
/// one-shot calls answer from.
pub(crate) struct Table<T> {
    hooks: Mutex<Hooks<T>>,
}

struct Hooks<T> {
    map: HashMap<Key, Entry<T>, KeyBuildHasher>,
    /// The bytes of the entries' interval lists.
    interval_bytes: usize,
    /// The bytes of the table and the interval lists, as last added to the
    /// memory figure.
    counted: usize,
}

impl<T> Table<T> {
    fn new() -> Self {
        Table {
            hooks: Mutex::new(Hooks {
                map: HashMap::default(),
                interval_bytes: 0,
                counted: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Hooks<T>> {
        // The table is consistent between statements that can panic.
        self.hooks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T> Table<T> {
    /// The hook of `key`, if this value type polls it. Takes this table's
    /// lock only.
    pub(crate) fn hook(&self, key: &Key) -> Option<Arc<Hook<T>>> {
        self.lock().map.get(key).map(|e| e.hook.clone())
    }
}

impl<T> Hooks<T> {
    /// Brings the memory figure up to date with this table.
    fn recount(&mut self, memory: &Memory) {
        let now = table_bytes(self.map.capacity(), mem::size_of::<(Key, Entry<T>)>())
            + self.interval_bytes;
        memory.change(self.counted, now);
        self.counted = now;
    }

    /// Takes `meta`'s key out of the table. The entry is returned, to be
    /// dropped once the locks are released.
    fn remove(&mut self, meta: &Meta, memory: &Memory) -> Option<Entry<T>> {
        let entry = self.map.remove(&meta.key)?;
        self.interval_bytes -= entry.intervals.capacity() * INTERVAL_BYTES;
        shrink(&mut self.map);
        self.recount(memory);
        Some(entry)
    }

    /// The entry of `meta`'s key if it is `meta`'s loop.
    fn ours(&mut self, meta: &Meta) -> Option<&mut Entry<T>> {
        self.map
            .get_mut(&meta.key)
            .filter(|e| std::ptr::eq(&e.hook.meta, meta))
    }
}

/// A table whatever its value type: what the untyped level reads.
trait AnyTable: Send + Sync + 'static {
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    fn len(&self) -> usize;
    fn contains(&self, key: &Key) -> bool;
    /// The hooks whose meta `keep` accepts.
    fn hooks(&self, keep: &mut dyn FnMut(&Meta) -> bool) -> Vec<Arc<dyn AnyHook>>;
}

impl<T: Send + Sync + 'static> AnyTable for Table<T> {
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    fn len(&self) -> usize {
        self.lock().map.len()
    }

    fn contains(&self, key: &Key) -> bool {
        self.lock().map.contains_key(key)
    }

    fn hooks(&self, keep: &mut dyn FnMut(&Meta) -> bool) -> Vec<Arc<dyn AnyHook>> {
        self.lock()
            .map
            .values()
            .filter(|e| keep(&e.hook.meta))
            .map(|e| e.hook.clone() as Arc<dyn AnyHook>)
            .collect()
    }
}

/// What the value types share: the counts and the budgets.
#[derive(Default)]
struct Map {
    subscribers: usize,
    /// Subscriptions with a private loop, outside the tables.
    private: usize,
    budgets: Budgets,
    /// The bytes of the budgets' tables and the subscribers' handles, as
    /// last added to the memory figure.
    counted: usize,
}

impl Map {
    /// The bytes of the budgets' tables and of every subscriber's handle.
    fn bytes(&self) -> usize {
        self.budgets.bytes() + self.subscribers * SUBSCRIPTION_BYTES
    }
}

/// The state every clone of a registry, and every subscription, shares.
pub(crate) struct Core {
    pub(crate) config: Config,
    pub(crate) observers: Observers,
    map: Mutex<Map>,
    /// One table per value type, made on first use and kept.
    tables: Mutex<Vec<Arc<dyn AnyTable>>>,
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
            tables: Mutex::default(),
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

    fn tables(&self) -> Vec<Arc<dyn AnyTable>> {
        self.tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The table of loops of value type `T`: the one made before, or a new
    /// one. Called once per service (and value type), not per request.
    pub(crate) fn table<T: Send + Sync + 'static>(&self) -> Arc<Table<T>> {
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let found = tables
            .iter()
            .find_map(|table| table.clone().into_any().downcast::<Table<T>>().ok());
        found.unwrap_or_else(|| {
            let table = Arc::new(Table::new());
            tables.push(table.clone());
            table
        })
    }

    /// Brings the memory figure up to date with the shared map.
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

    /// Adds a subscriber to the key's loop in `table`, or to a new one
    /// (`class` is called only then, and the class's settings looked up),
    /// if every limit and budget allows it. Without a key, or with a key
    /// polled by a loop of another value type: a private loop. Refusals are
    /// counted and reported to the observer.
    pub(crate) fn join<T: Send + Sync + 'static>(
        &self,
        table: &Table<T>,
        joining: Joining,
        class: impl FnOnce() -> Class,
    ) -> Result<Joined<T>, TooManySubscribers> {
        let joined = self
            .admit(table, joining, class)
            .map_err(|r| self.refuse(r))?;
        if joined.poke {
            joined.hook.meta.poke();
        }
        Ok(joined)
    }

    fn admit<T: Send + Sync + 'static>(
        &self,
        table: &Table<T>,
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
        let Some(key) = joining.key.as_ref() else {
            return self.start(&mut map, table, joining, true, class());
        };
        let mut hooks = table.lock();
        if hooks.map.contains_key(key) {
            return self.join_existing(&mut map, &mut hooks, joining);
        }
        drop(hooks);
        // Another value type polling this key is looked for only when a
        // new loop starts, in the other tables (usually none). Its
        // subscriber gets a loop of its own rather than an error.
        let elsewhere = self
            .tables()
            .iter()
            .any(|other| !std::ptr::addr_eq(Arc::as_ptr(other), table) && other.contains(key));
        self.start(&mut map, table, joining, elsewhere, class())
    }

    fn join_existing<T>(
        &self,
        map: &mut Map,
        hooks: &mut Hooks<T>,
        joining: Joining,
    ) -> Result<Joined<T>, Refusal> {
        let key = joining.key.as_ref().expect("joined by key");
        let entry = hooks.map.get_mut(key).expect("looked up above");
        let hook = entry.hook.clone();
        let meta = &hook.meta;
        let refusal = |limit| Refusal {
            limit,
            class: meta.class.clone(),
            linger: meta.settings.linger,
        };
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
        let grown = entry.ask(interval);
        let shortest = entry.interval().unwrap_or(interval);
        hooks.interval_bytes += grown;
        let shorter = shortest < meta.interval();
        meta.interval_ns.store(nanos(shortest), Ordering::Relaxed);
        let woke = meta.subscribers.fetch_add(1, Ordering::AcqRel) == 0;
        budgets.add_subscriber(&meta.class, joining.who);
        map.subscribers += 1;
        hooks.recount(&self.memory);
        self.recount(map);
        Ok(Joined {
            interval,
            started: false,
            poke: shorter || woke,
            hook,
        })
    }

    /// A new loop for the subscriber: in `table`, or `private` outside it.
    fn start<T: Send + Sync + 'static>(
        &self,
        map: &mut Map,
        table: &Table<T>,
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
            let mut hooks = table.lock();
            hooks.interval_bytes += intervals.capacity() * INTERVAL_BYTES;
            let entry = Entry {
                hook: hook.clone(),
                subscribers: 1,
                intervals,
            };
            hooks.map.insert(key, entry);
            hooks.recount(&self.memory);
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

    /// Takes `meta`'s key out of `hooks` and out of its owner's budgets.
    /// The entry is returned, to be dropped once the locks are released.
    fn remove<T>(&self, map: &mut Map, hooks: &mut Hooks<T>, meta: &Meta) -> Option<Entry<T>> {
        let entry = hooks.remove(meta, &self.memory)?;
        map.budgets.drop_key(&meta.class, meta.owner);
        self.recount(map);
        Some(entry)
    }

    /// Removes a subscriber of `who` that asked for `interval`; stops the
    /// loop when it was the last one and there is no linger.
    pub(crate) fn leave<T>(&self, table: &Table<T>, meta: &Meta, interval: Duration, who: Who) {
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
        let mut hooks = table.lock();
        let Some(entry) = hooks.ours(meta) else {
            // The loop ended abnormally and was removed already.
            drop(hooks);
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
            let entry = self.remove(&mut map, &mut hooks, meta);
            drop(hooks);
            drop(map);
            drop(entry);
            meta.stop();
        } else {
            drop(hooks);
            self.recount(&mut map);
            drop(map);
            if last {
                meta.poke();
            }
        }
    }

    /// Removes a lingering loop if it still has no subscriber; `true` if it
    /// did (the loop then ends).
    pub(crate) fn retire<T>(&self, table: &Table<T>, meta: &Meta) -> bool {
        let mut map = self.lock();
        let mut hooks = table.lock();
        let idle = hooks.ours(meta).is_some_and(|e| e.subscribers == 0);
        let entry = if idle {
            self.remove(&mut map, &mut hooks, meta)
        } else {
            None
        };
        drop(hooks);
        drop(map);
        drop(entry);
        idle
    }

    /// Removes a loop that ended without being asked to (a panic, the
    /// runtime shutting down), so the next subscriber starts a new one.
    pub(crate) fn forget<T>(&self, table: &Table<T>, meta: &Meta) {
        let mut map = self.lock();
        let mut hooks = table.lock();
        let ours = hooks.ours(meta).is_some();
        let entry = if ours && !meta.private {
            self.remove(&mut map, &mut hooks, meta)
        } else {
            None
        };
        drop(hooks);
        drop(map);
        drop(entry);
    }

    pub(crate) fn refresh(&self, key: &Key) -> bool {
        let mut hooks = Vec::new();
        for table in self.tables() {
            hooks.extend(table.hooks(&mut |meta| meta.key == *key));
        }
        hooks.iter().for_each(|h| h.meta().request_refresh());
        !hooks.is_empty()
    }

    pub(crate) fn invalidate(&self, what: &Invalidation) -> usize {
        let mut hooks = Vec::new();
        for table in self.tables() {
            hooks.extend(table.hooks(&mut |meta| what.covers(&meta.key, &meta.class)));
        }
        hooks.iter().for_each(|h| h.meta().request_refresh());
        hooks.len()
    }

    pub(crate) fn hooks(&self) -> Vec<HookInfo> {
        let mut hooks = Vec::new();
        for table in self.tables() {
            hooks.extend(table.hooks(&mut |_| true));
        }
        hooks.iter().map(|h| h.meta().info()).collect()
    }

    pub(crate) fn stats(&self) -> RegistryStats {
        let map = self.lock();
        let keys = self.tables().iter().map(|t| t.len() as u64).sum();
        RegistryStats {
            keys,
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
