//! `Stats`: the shared state every Stats service records into.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc, Mutex, PoisonError, Weak,
    },
    time::Duration,
};

use arc_swap::ArcSwap;

use super::{
    alerts::{Alert, AlertEvents, AlertId, AlertRule, AlertRules, Book, ResolvedAlert},
    dependency::Dependencies,
    future::{Guard, Recording, Side},
    hooks::Hooks,
    layer::{StatsLayer, UpstreamLayer},
    publish::Published,
    recorder::ClassRecorder,
    scope::{self, Answer},
    snapshot::{EndpointSnapshot, Snapshot},
};
use crate::{
    class::Class,
    clock::Clock,
    clock::Stopwatch,
    event::{BreakerState, DependencyHealth, Event, MemorySource, Observer},
    key::{Key, KeyBuildHasher},
};

/// Endpoint classes tracked at most; requests of further classes are counted
/// under [`OVERFLOW_CLASS`], so a classifier that makes a class per path
/// cannot grow the stats without bound.
pub const MAX_CLASSES: usize = 256;

/// Where classes beyond [`MAX_CLASSES`] are counted.
pub const OVERFLOW_CLASS: &str = "other";

type Named = (Cow<'static, str>, Box<dyn MemorySource>);

pub(crate) type ClassMap = HashMap<Class, Arc<ClassRecorder>, KeyBuildHasher>;

/// The stats of one coordinated stack: counters, latency histograms, sliding
/// rates and alerts per endpoint class.
///
/// `Stats` is a cheap handle (an `Arc`); clones share everything. Hand it
/// to the layers that record ([`Stats::layer`] outermost,
/// [`Stats::upstream_layer`] innermost) and, as their
/// [`Observer`], to the layers whose events it counts.
/// See the [module docs](super) for a whole stack.
#[derive(Clone)]
pub struct Stats {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) clock: Stopwatch,
    rules: AlertRules,
    tick: Duration,
    classes: ArcSwap<ClassMap>,
    grow: Mutex<()>,
    book: Book,
    hooks: Hooks,
    memory: Mutex<Vec<Named>>,
    dependencies: Dependencies,
    monitor: AtomicBool,
    published: Mutex<Published>,
}

/// Builds a [`Stats`].
#[derive(Debug, Clone)]
pub struct StatsBuilder {
    rules: AlertRules,
    clock: Clock,
    tick: Duration,
}

impl Default for StatsBuilder {
    fn default() -> Self {
        StatsBuilder {
            rules: AlertRules::default(),
            clock: Clock::default(),
            tick: Duration::from_secs(1),
        }
    }
}

impl StatsBuilder {
    /// The alert thresholds (default: [`AlertRules::default`]).
    pub fn with_rules(mut self, rules: AlertRules) -> Self {
        self.rules = rules;
        self
    }

    /// The clock latencies, rates and alerts read (default
    /// [`Clock::Fast`]; use [`Clock::Tokio`] under a paused tokio
    /// clock).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// How often the monitor samples rates, evaluates alerts and publishes
    /// to `metrics` (default one second; at least 10 ms).
    pub fn with_tick(mut self, tick: Duration) -> Self {
        self.tick = tick.max(Duration::from_millis(10));
        self
    }

    /// Builds the stats. The monitor task starts with the first layer built
    /// inside a tokio runtime, or with [`Stats::start_monitor`].
    pub fn build(self) -> Stats {
        Stats {
            inner: Arc::new(Inner {
                clock: Stopwatch::start(&self.clock),
                rules: self.rules,
                tick: self.tick,
                classes: ArcSwap::from_pointee(ClassMap::default()),
                grow: Mutex::new(()),
                book: Book::new(),
                hooks: Hooks::new(),
                memory: Mutex::new(Vec::new()),
                dependencies: Dependencies::default(),
                monitor: AtomicBool::new(false),
                published: Mutex::new(Published::default()),
            }),
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl Stats {
    /// Stats with the default alert rules and the fast clock.
    pub fn new() -> Self {
        StatsBuilder::default().build()
    }

    /// A builder for rules, clock and tick.
    pub fn builder() -> StatsBuilder {
        StatsBuilder::default()
    }

    /// The outer layer: client requests, errors by kind, in-flight and
    /// client-perceived latency, per class from `classify`.
    pub fn layer<C>(&self, classify: C) -> StatsLayer<C> {
        StatsLayer::new(self.clone(), classify)
    }

    /// The inner layer, around the upstream: upstream calls, upstream errors
    /// and latency, and upstream calls per key (from `key`) for the
    /// per-hook alert. Pass `|_: &Req| None::<Key>` to skip per-key counts.
    pub fn upstream_layer<C, K>(&self, classify: C, key: K) -> UpstreamLayer<C, K> {
        UpstreamLayer::new(self.clone(), classify, key)
    }

    /// Lists `class` in the snapshot (at zero) before any of its traffic: the
    /// Coordinator registers every configured class, so an operator sees
    /// them all from the start.
    pub fn register(&self, class: &Class) {
        self.inner.recorder(class);
    }

    /// Tells the stats whether `class`'s breaker is switched on: while
    /// `is_on` says no, the snapshot shows the class's breaker as `off`
    /// (whatever state it was left in), and its `breaker_trip` alert
    /// resolves. Read when a snapshot is taken and on each monitor tick.
    /// The Coordinator hands over each class's breaker switch this way. The
    /// first call for a class wins.
    pub fn track_breaker_switch(
        &self,
        class: &Class,
        is_on: impl Fn() -> bool + Send + Sync + 'static,
    ) {
        let _ = self
            .inner
            .recorder(class)
            .breaker_switch
            .set(Box::new(is_on));
    }

    /// Adds a source to the memory-held-by-coordination sum (the memory
    /// alert and the snapshot's `memory`): a cache handle, a dedup stats
    /// handle, a registry.
    pub fn track_memory(&self, name: impl Into<Cow<'static, str>>, source: impl MemorySource) {
        self.inner
            .memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((name.into(), Box::new(source)));
    }

    /// Watches a dependency outside this process (a Redis server that
    /// replicas coordinate through), by `name`: while `health` says it is
    /// down, the `<name>_unavailable` alert fires (`redis_unavailable`),
    /// and it resolves when the dependency is back. The gauge
    /// `herdsman_dependency_up{dependency = name}` is 1 or 0, and the
    /// snapshot's `dependencies` lists it with its outages. Read on each
    /// monitor tick and when a snapshot is taken; tracking a name again
    /// replaces its source.
    ///
    /// ```
    /// use std::sync::{atomic::{AtomicBool, Ordering}, Arc};
    /// use herdsman::stats::Stats;
    ///
    /// let stats = Stats::new();
    /// let up = Arc::new(AtomicBool::new(true));
    /// let health = up.clone();
    /// stats.track_dependency("redis", move || health.load(Ordering::Relaxed));
    ///
    /// up.store(false, Ordering::Relaxed);
    /// stats.evaluate();
    /// assert_eq!(stats.active_alerts()[0].rule.as_str(), "redis_unavailable");
    /// assert!(!stats.snapshot().dependencies["redis"].up);
    /// ```
    pub fn track_dependency(
        &self,
        name: impl Into<Cow<'static, str>>,
        health: impl DependencyHealth,
    ) {
        let name = name.into().into_owned();
        self.inner.dependencies.track(name, Box::new(health));
    }

    /// A subscription to alert changes (each alert once when it fires and
    /// once when it resolves).
    pub fn alerts(&self) -> AlertEvents {
        self.inner.book.subscribe()
    }

    /// The alerts firing now.
    pub fn active_alerts(&self) -> Vec<Alert> {
        self.inner.book.active()
    }

    /// The last alerts that resolved (at most
    /// [`RESOLVED_KEPT`](super::RESOLVED_KEPT)), newest first, each with the
    /// value that resolved it: what a dashboard shows once an alert is no
    /// longer in the snapshot's active list.
    pub fn resolved_alerts(&self) -> Vec<ResolvedAlert> {
        self.inner.book.resolved()
    }

    /// The alert thresholds.
    pub fn rules(&self) -> &AlertRules {
        &self.inner.rules
    }

    /// Everything, now. Takes a few microseconds per endpoint class (it
    /// merges the latency histograms) and never blocks requests for longer
    /// than one histogram merge.
    pub fn snapshot(&self) -> Snapshot {
        let inner = &*self.inner;
        let now_sec = inner.now_sec();
        let classes = inner.classes.load();
        let endpoints: BTreeMap<String, EndpointSnapshot> = classes
            .values()
            .map(|r| {
                (
                    r.class.as_str().to_owned(),
                    EndpointSnapshot::of(r, now_sec),
                )
            })
            .collect();
        let memory = inner.memory();
        let dependencies = inner.dependencies.check(&inner.book, false);
        Snapshot {
            uptime_secs: inner.clock.now() as f64 / 1e9,
            memory_bytes: memory.values().sum(),
            memory,
            endpoints,
            alerts: inner.book.active(),
            dependencies,
        }
    }

    /// Samples the sliding rates, evaluates every alert rule and publishes
    /// the totals to the `metrics` facade, once. The monitor task does this
    /// every tick; call it to force an evaluation.
    pub fn evaluate(&self) {
        self.inner.evaluate();
    }

    /// Starts the monitor task (rates, alerts, `metrics` publishing) on the
    /// current tokio runtime, if it is not running yet. It stops when the
    /// last `Stats` handle is dropped. Returns whether it is running.
    pub fn start_monitor(&self) -> bool {
        if self.inner.monitor.load(Relaxed) {
            return true;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        if self.inner.monitor.swap(true, Relaxed) {
            return true;
        }
        let weak = Arc::downgrade(&self.inner);
        rt.spawn(monitor(weak, self.inner.tick));
        true
    }

    /// Starts recording one client request of `class` that is answered
    /// outside the Stats layer: an SSE or polling endpoint serving from the
    /// Registry counts its callers this way (and marks them
    /// [`from_poll_loop`](Recording::from_poll_loop)), so that the requests
    /// stand against the upstream calls they saved.
    pub fn start(&self, class: &Class) -> Recording {
        let rec = self.inner.recorder(class);
        rec.requests.fetch_add(1, Relaxed);
        let start = rec.clock.now();
        Recording::new(Guard::new(rec, start, Side::Client))
    }

    pub(crate) fn recorder(&self, class: &Class) -> Arc<ClassRecorder> {
        self.inner.recorder(class)
    }

    pub(crate) fn upstream_call(&self, rec: &ClassRecorder, key: Option<&Key>, now_nanos: u64) {
        let Some(key) = key else { return };
        let Some(max) = self.inner.rules.upstream_calls_per_minute() else {
            return;
        };
        let now_sec = now_nanos / 1_000_000_000;
        if let Some(n) = self.inner.hooks.record(key, &rec.class, now_sec) {
            if n > max {
                self.inner.fire_hook(key, &rec.class, n, max);
            }
        }
    }
}

/// The per-key alert's id: the key's stable fingerprint, in 16 hex digits.
/// (Not its `Debug`, which redacts credentials to their length: two users
/// with tokens of one length would share an id.)
fn hook_id(key: &Key, class: &Class) -> AlertId {
    AlertId {
        rule: AlertRule::UpstreamCalls,
        endpoint: Some(class.clone()),
        key: Some(format!("{:016x}", key.fingerprint())),
    }
}

fn breaker_id(class: &Class) -> AlertId {
    AlertId {
        rule: AlertRule::BreakerTrip,
        endpoint: Some(class.clone()),
        key: None,
    }
}

async fn monitor(stats: Weak<Inner>, tick: Duration) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        match stats.upgrade() {
            Some(inner) => inner.evaluate(),
            None => return,
        }
    }
}

impl Inner {
    fn now_sec(&self) -> u64 {
        self.clock.now() / 1_000_000_000
    }

    pub(crate) fn recorder(&self, class: &Class) -> Arc<ClassRecorder> {
        if let Some(r) = self.classes.load().get(class) {
            return r.clone();
        }
        let _grow = self.grow.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.classes.load();
        if let Some(r) = current.get(class) {
            return r.clone();
        }
        let class = if current.len() >= MAX_CLASSES {
            let other = Class::from_static(OVERFLOW_CLASS);
            if let Some(r) = current.get(&other) {
                return r.clone();
            }
            other
        } else {
            class.clone()
        };
        let rec = Arc::new(ClassRecorder::new(class.clone(), self.clock.clone()));
        let mut next = ClassMap::clone(&current);
        next.insert(class, rec.clone());
        self.classes.store(Arc::new(next));
        rec
    }

    fn memory(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        let own: u64 = self
            .classes
            .load()
            .values()
            .map(|r| r.memory_bytes())
            .sum::<u64>()
            + self.hooks.memory_bytes();
        out.insert("stats".to_owned(), own);
        for (name, source) in self
            .memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            *out.entry(name.to_string()).or_insert(0) += source.memory_bytes();
        }
        out
    }

    fn evaluate(&self) {
        let now_sec = self.now_sec();
        let rules = &self.rules;
        let window = rules.window().as_secs().max(1);
        let keep = window.max(60) + 2 * self.tick.as_secs().max(1);
        let classes = self.classes.load();
        for rec in classes.values() {
            rec.push_sample(rec.sample(now_sec), keep);
            self.breaker_switched(rec);
            if let Some((max_rate, min_samples)) = rules.error_rate() {
                let (now, then) = (rec.sample(now_sec), rec.ago(now_sec, window));
                let requests = now.requests - then.requests;
                let errors = now.errors - then.errors;
                let rate = if requests == 0 {
                    0.0
                } else {
                    errors as f64 / requests as f64
                };
                let id = AlertId {
                    rule: AlertRule::ErrorRate,
                    endpoint: Some(rec.class.clone()),
                    key: None,
                };
                if requests >= min_samples && rate > max_rate {
                    self.book.fire(
                        id,
                        rate,
                        max_rate,
                        format!(
                            "error rate of {} is {:.1} % over the last {window} s ({errors} of {requests} requests; threshold {:.1} %)",
                            rec.class,
                            rate * 100.0,
                            max_rate * 100.0
                        ),
                    );
                } else if rate <= max_rate * rules.resolve_ratio() || requests < min_samples {
                    self.book.resolve(&id, rate);
                }
            }
        }
        if let Some(max) = rules.upstream_calls_per_minute() {
            let resolve_at = max as f64 * rules.resolve_ratio();
            let firing = self.book.firing(AlertRule::UpstreamCalls);
            let mut seen = Vec::new();
            self.hooks.sweep(now_sec, |key, class, n| {
                let id = hook_id(key, class);
                if n > max {
                    self.fire_hook(key, class, n, max);
                } else if n as f64 <= resolve_at {
                    self.book.resolve(&id, n as f64);
                }
                seen.push(id);
            });
            // Keys swept away had no call for a minute.
            for id in firing.iter().filter(|id| !seen.contains(id)) {
                self.book.resolve(id, 0.0);
            }
        }
        let memory = self.memory();
        let total: u64 = memory.values().sum();
        if let Some(max) = rules.memory_bytes() {
            let id = AlertId {
                rule: AlertRule::Memory,
                endpoint: None,
                key: None,
            };
            if total > max {
                self.book.fire(
                    id,
                    total as f64,
                    max as f64,
                    format!("coordination holds about {total} bytes (threshold {max})"),
                );
            } else if total as f64 <= max as f64 * rules.resolve_ratio() {
                self.book.resolve(&id, total as f64);
            }
        }
        self.dependencies.check(&self.book, true);
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .publish(&classes, &memory, now_sec);
    }

    fn fire_hook(&self, key: &Key, class: &Class, n: u64, max: u64) {
        let id = hook_id(key, class);
        let message = format!(
            "{n} upstream calls in the last minute for key {} of {class} (threshold {max}): {key:?}",
            id.key.as_deref().unwrap_or_default()
        );
        self.book.fire(id, n as f64, max as f64, message);
    }

    /// A breaker switched off trips nothing: its alert resolves. Switched
    /// back on while it is still open, it fires again.
    fn breaker_switched(&self, rec: &ClassRecorder) {
        if !self.rules.breaker_trips() || rec.breaker_switch.get().is_none() {
            return;
        }
        if rec.breaker_off() {
            self.book.resolve(&breaker_id(&rec.class), 0.0);
        } else if rec.breaker() == Some(BreakerState::Open) {
            self.breaker(&rec.class, BreakerState::Open);
        }
    }

    fn breaker(&self, class: &Class, state: BreakerState) {
        if !self.rules.breaker_trips() {
            return;
        }
        let id = breaker_id(class);
        match state {
            BreakerState::Open => {
                self.book.fire(
                    id,
                    1.0,
                    1.0,
                    format!("the circuit breaker of {class} tripped"),
                );
            }
            BreakerState::Closed | BreakerState::Disabled => {
                self.book.resolve(&id, 0.0);
            }
            BreakerState::HalfOpen | BreakerState::ForcedOpen => {}
        }
    }
}

impl Observer for Stats {
    fn observe(&self, class: &Class, event: Event) {
        // Events come on request paths (every cache hit): read the recorder
        // under the map's guard rather than cloning its `Arc`.
        let map = self.inner.classes.load();
        let created;
        let rec = match map.get(class) {
            Some(rec) => rec,
            None => {
                created = self.inner.recorder(class);
                &created
            }
        };
        let add = |c: &std::sync::atomic::AtomicU64| {
            c.fetch_add(1, Relaxed);
        };
        match event {
            // A hit, stale answer, follower or reuse marks the client
            // request it answered, if one is running on this thread (a poll
            // loop's fetch or a background refresh is none).
            Event::CacheHit => {
                add(&rec.cache_hits);
                scope::mark(Answer::Cache);
            }
            Event::CacheBackendHit => {
                add(&rec.cache_hits);
                add(&rec.cache_backend_hits);
                scope::mark(Answer::Cache);
            }
            Event::StaleServed => {
                add(&rec.stale_served);
                scope::mark(Answer::Cache);
            }
            Event::CacheMiss => add(&rec.cache_misses),
            Event::Coalesced => {
                add(&rec.coalesced);
                scope::mark(Answer::Coalesced);
            }
            Event::Reused => {
                add(&rec.reused);
                scope::mark(Answer::Coalesced);
            }
            Event::BreakerState(state) => {
                rec.set_breaker(state);
                self.inner.breaker(&rec.class, state);
            }
            Event::Rejected(r) => rec.rejected(r),
            Event::Subscribed => {
                rec.subscribers.fetch_add(1, Relaxed);
            }
            Event::Unsubscribed => {
                rec.subscribers.fetch_sub(1, Relaxed);
            }
            Event::Polled => add(&rec.polls),
            Event::SharedAnswer => {
                // A client request answered at once, above this layer: no
                // clock is read, its latency is the histogram's lowest.
                add(&rec.requests);
                rec.latency.record(0);
                rec.answered(Answer::PollLoop);
            }
        }
    }
}

impl MemorySource for Stats {
    fn memory_bytes(&self) -> u64 {
        self.inner.memory().get("stats").copied().unwrap_or(0)
    }
}

impl fmt::Debug for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stats")
            .field("classes", &self.inner.classes.load().len())
            .field("rules", &self.inner.rules)
            .field("clock", &self.inner.clock)
            .finish_non_exhaustive()
    }
}
