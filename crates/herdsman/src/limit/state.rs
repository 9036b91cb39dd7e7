//! The state one layer value shares with every service made from it: one
//! semaphore, queue count and set of counters per endpoint class, and the
//! budgets of the rate rules.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::{sync::Semaphore, time::Instant};

use super::{
    caller::{Shares, Slots},
    error::Reason,
    layer::{ClassLimits, Settings},
    rate::{Bucket, RateKey, RateState, Rates, Verdict, ANY_CLASS},
    ClassStats, LimitStats, Overloaded, RateLimited, TooManyInFlight,
};
use crate::{
    class::Class,
    event::{Event, Observers, Rejection},
    key::{Key, KeyBuildHasher},
};

/// Classes met at run time that have no limits of their own each get their
/// own permits (with the default limits), up to this many; further ones share
/// the permits of one `"overflow"` class.
pub(crate) const MAX_DYNAMIC_CLASSES: usize = 256;

type ClassMap = HashMap<Class, Arc<ClassState>, KeyBuildHasher>;

pub(crate) struct Shared {
    settings: Settings,
    /// `Class::default()`: the requests no rule matched.
    default: Arc<ClassState>,
    /// The classes given limits of their own.
    configured: ClassMap,
    /// Other classes, met at run time, with the default limits. Read through
    /// `ArcSwap` (no lock); a new class copies the map under `insert`.
    dynamic: ArcSwap<ClassMap>,
    insert: Mutex<()>,
    /// The default limits' rate rule if it is by caller: one set of budgets
    /// for all the classes that use the default limits.
    default_rate: Option<Arc<RateState>>,
}

impl Shared {
    pub(crate) fn new(settings: Settings) -> Self {
        let default_rate = shared_rate(&Class::default(), &settings.default, &settings.rates);
        let mut configured = ClassMap::default();
        let mut default = None;
        for (i, (class, limits)) in settings.classes.iter().enumerate() {
            let rate = shared_rate(class, limits, &settings.rates);
            let state = Arc::new(ClassState::new(
                class.clone(),
                i as u32 + 1,
                limits,
                rate,
                settings.observers.clone(),
                &settings.rates,
            ));
            if *class == Class::default() {
                default = Some(state);
            } else {
                configured.insert(class.clone(), state);
            }
        }
        let default = default.unwrap_or_else(|| {
            Arc::new(ClassState::new(
                Class::default(),
                0,
                &settings.default,
                default_rate.clone(),
                settings.observers.clone(),
                &settings.rates,
            ))
        });
        Shared {
            settings,
            default,
            configured,
            dynamic: ArcSwap::default(),
            insert: Mutex::new(()),
            default_rate,
        }
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The state of `class` if it is the default class or has limits of its
    /// own: no lock, no hashing of the name (a class carries its hash).
    #[inline]
    pub(crate) fn lookup(&self, class: &Class) -> Option<&Arc<ClassState>> {
        if *class == self.default.class {
            return Some(&self.default);
        }
        self.configured(class)
    }

    /// The state of a class given limits of its own. Out of line: the map's
    /// probe would make every caller of [`lookup`](Self::lookup) too large
    /// to be inlined.
    #[inline(never)]
    fn configured(&self, class: &Class) -> Option<&Arc<ClassState>> {
        self.configured.get(class)
    }

    /// The state of a class without limits of its own, made on first use.
    pub(crate) fn dynamic(&self, class: &Class) -> Arc<ClassState> {
        if let Some(state) = self.dynamic.load().get(class) {
            return state.clone();
        }
        self.insert(class)
    }

    #[cold]
    fn insert(&self, class: &Class) -> Arc<ClassState> {
        let _guard = self.insert.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.dynamic.load_full();
        if let Some(state) = current.get(class) {
            return state.clone();
        }
        let mut class = class.clone();
        if current.len() >= MAX_DYNAMIC_CLASSES {
            class = Class::new("overflow");
            if let Some(state) = current.get(&class) {
                return state.clone();
            }
            tracing::warn!(
                max = MAX_DYNAMIC_CLASSES,
                "too many endpoint classes without limits of their own; \
                 further ones share the permits of class `overflow`"
            );
        }
        let id = (self.settings.classes.len() + 1 + current.len()) as u32;
        let state = Arc::new(ClassState::new(
            class.clone(),
            id,
            &self.settings.default,
            self.default_rate.clone(),
            self.settings.observers.clone(),
            &self.settings.rates,
        ));
        let mut map = ClassMap::clone(&current);
        map.insert(class, state.clone());
        self.dynamic.store(Arc::new(map));
        state
    }

    /// Calls `visit` with every class's state.
    fn for_each_class(&self, mut visit: impl FnMut(&Arc<ClassState>)) {
        visit(&self.default);
        self.configured.values().for_each(&mut visit);
        self.dynamic.load().values().for_each(&mut visit);
    }

    /// The rate rules' states, each once (a rule by caller is shared by
    /// classes).
    fn rates(&self) -> Vec<Arc<RateState>> {
        let mut rates: Vec<Arc<RateState>> = Vec::new();
        self.for_each_class(|state| {
            if let Some(rate) = &state.rate {
                if !rates.iter().any(|r| Arc::ptr_eq(r, rate)) {
                    rates.push(rate.clone());
                }
            }
        });
        rates
    }

    /// Keys the rate rules hold now.
    pub(crate) fn rate_keys(&self) -> u64 {
        self.rates().iter().map(|r| r.keys()).sum()
    }

    pub(crate) fn stats(&self) -> LimitStats {
        let mut classes: Vec<ClassStats> = Vec::new();
        self.for_each_class(|state| classes.push(state.stats()));
        let rates = self.rates();
        classes.sort_by(|a, b| a.class.cmp(&b.class));
        LimitStats {
            classes,
            rate_keys: rates.iter().map(|r| r.keys()).sum(),
            rate_untracked: rates.iter().map(|r| r.untracked()).sum(),
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The state of a rule by caller, shared by the classes it applies to. (A
/// rule by class has state of its own in each class.)
fn shared_rate(class: &Class, limits: &ClassLimits, rates: &Rates) -> Option<Arc<RateState>> {
    let rule = limits.rate.as_ref()?;
    (rule.key() != RateKey::Class).then(|| Arc::new(RateState::new(rule.clone(), class, rates)))
}

#[derive(Default)]
struct Counters {
    admitted: AtomicU64,
    queued: AtomicU64,
    rejected_overloaded: AtomicU64,
    timed_out: AtomicU64,
    rejected_rate: AtomicU64,
    rate_alerts: AtomicU64,
    rate_warnings: AtomicU64,
    rejected_in_flight_cap: AtomicU64,
}

/// How a class counts its calls in flight.
enum Gate {
    /// No concurrency limit: nothing to count but admissions.
    Unlimited,
    /// A limit without a queue: nobody ever waits for a permit, so two
    /// counters do, without a lock. `taken - released` calls are in flight,
    /// and `taken` counts the class's admissions too.
    Counted {
        max: u64,
        taken: AtomicU64,
        released: AtomicU64,
    },
    /// A limit with a queue. Fair: permits go to waiters in the order they
    /// queued, and a newcomer cannot take one while anybody waits.
    Queued { max: usize, semaphore: Semaphore },
}

impl Gate {
    fn new(limits: &ClassLimits) -> Self {
        if limits.max_concurrent >= Semaphore::MAX_PERMITS {
            Gate::Unlimited
        } else if limits.max_queue == 0 {
            Gate::Counted {
                max: limits.max_concurrent as u64,
                taken: AtomicU64::new(0),
                released: AtomicU64::new(0),
            }
        } else {
            Gate::Queued {
                max: limits.max_concurrent,
                semaphore: Semaphore::new(limits.max_concurrent),
            }
        }
    }

    /// Takes a permit if one is free (and, with a queue, nobody waits):
    /// atomics only.
    #[inline]
    fn try_take(&self) -> bool {
        match self {
            Gate::Unlimited => true,
            Gate::Counted {
                max,
                taken,
                released,
            } => {
                // Read first, so that it is never ahead of `taken`: an
                // out-of-date `released` only counts a call that is just
                // ending as still in flight.
                let released = released.load(Ordering::Acquire);
                let mut current = taken.load(Ordering::Relaxed);
                loop {
                    if current.wrapping_sub(released) >= *max {
                        return false;
                    }
                    match taken.compare_exchange_weak(
                        current,
                        current + 1,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => return true,
                        Err(now) => current = now,
                    }
                }
            }
            Gate::Queued { semaphore, .. } => match semaphore.try_acquire() {
                Ok(permit) => {
                    permit.forget();
                    true
                }
                Err(_) => false,
            },
        }
    }

    #[inline]
    fn give_back(&self) {
        match self {
            Gate::Unlimited => {}
            Gate::Counted { released, .. } => {
                released.fetch_add(1, Ordering::Release);
            }
            // Takes the semaphore's waiter lock: the next waiter may be
            // handed the permit.
            Gate::Queued { semaphore, .. } => semaphore.add_permits(1),
        }
    }

    /// Calls in flight, and admissions the gate counted itself.
    fn counts(&self) -> (u64, u64) {
        match self {
            Gate::Unlimited => (0, 0),
            Gate::Counted {
                taken, released, ..
            } => {
                let released = released.load(Ordering::Acquire);
                let taken = taken.load(Ordering::Acquire);
                (taken.saturating_sub(released), taken)
            }
            Gate::Queued { max, semaphore } => {
                let free = semaphore.available_permits();
                (max.saturating_sub(free) as u64, 0)
            }
        }
    }
}

/// One endpoint class: its permits, its queue and its counters.
pub(crate) struct ClassState {
    pub(crate) class: Class,
    /// Tells the class's budgets apart in a rate rule shared by classes.
    id: u32,
    max_queue: usize,
    max_wait: Duration,
    retry_after: Duration,
    gate: Gate,
    waiting: AtomicUsize,
    pub(crate) rate: Option<Arc<RateState>>,
    /// Calls in flight or waiting per caller, and per client address, when
    /// capped.
    pub(crate) callers: Option<Shares>,
    pub(crate) addresses: Option<Shares>,
    counters: Counters,
    observers: Observers,
}

impl ClassState {
    /// `shared_rate`: the state of the limits' rule if it is by caller.
    fn new(
        class: Class,
        id: u32,
        limits: &ClassLimits,
        shared_rate: Option<Arc<RateState>>,
        observers: Observers,
        rates: &Rates,
    ) -> Self {
        let rate = match &limits.rate {
            Some(rule) if rule.key() == RateKey::Class => {
                Some(Arc::new(RateState::new(rule.clone(), &class, rates)))
            }
            _ => shared_rate,
        };
        ClassState {
            class,
            id,
            max_queue: limits.max_queue,
            max_wait: limits.max_wait,
            retry_after: limits.retry_after,
            gate: Gate::new(limits),
            waiting: AtomicUsize::new(0),
            rate,
            callers: limits.max_concurrent_per_caller().map(Shares::new),
            addresses: limits.max_concurrent_per_address().map(Shares::new),
            counters: Counters::default(),
            observers,
        }
    }

    /// Whether the class has no rate rule and caps neither callers nor
    /// addresses: admitting a request is then taking a permit.
    #[inline]
    pub(crate) fn is_plain(&self) -> bool {
        self.rate.is_none() && self.callers.is_none() && self.addresses.is_none()
    }

    /// Checks the class's rate rule; `identity` is asked only when the rule
    /// counts by caller.
    #[inline]
    pub(crate) fn check_rate(
        &self,
        identity: impl FnOnce() -> Option<Key>,
    ) -> Result<(), RateLimited> {
        match &self.rate {
            None => Ok(()),
            Some(rate) => self.check_rule(rate, identity),
        }
    }

    fn check_rule(
        &self,
        rate: &RateState,
        identity: impl FnOnce() -> Option<Key>,
    ) -> Result<(), RateLimited> {
        let bucket = match rate.rule.key() {
            RateKey::Class => Bucket {
                class: self.id,
                identity: None,
            },
            // Requests without an identity are not counted by caller.
            RateKey::Identity => match identity() {
                Some(identity) => Bucket {
                    class: ANY_CLASS,
                    identity: Some(identity),
                },
                None => return Ok(()),
            },
            RateKey::ClassAndIdentity => match identity() {
                Some(identity) => Bucket {
                    class: self.id,
                    identity: Some(identity),
                },
                None => return Ok(()),
            },
        };
        match rate.check(&bucket) {
            Verdict::Pass => Ok(()),
            Verdict::Reject { retry_after } => {
                self.counters.rejected_rate.fetch_add(1, Ordering::Relaxed);
                self.rejected(Rejection::RateLimited);
                Err(RateLimited::new(self.class.clone(), retry_after))
            }
            Verdict::Alert { warn, retry_after } => {
                self.counters.rate_alerts.fetch_add(1, Ordering::Relaxed);
                if warn {
                    self.counters.rate_warnings.fetch_add(1, Ordering::Relaxed);
                    let rule = &rate.rule;
                    tracing::warn!(
                        class = %self.class,
                        key = ?bucket.identity,
                        limit = rule.limit(),
                        per = ?rule.per(),
                        over_for = ?retry_after,
                        "rate alert: requests over the rule's budget (let through: alert-only rule)"
                    );
                }
                Ok(())
            }
        }
    }

    /// Takes a call in the shares of the request's caller and client
    /// address, where the class caps them: `Ok(None)` when it caps neither
    /// (`caller` and `address` are not asked) or the request has neither.
    /// Refused at once when either share is full.
    #[inline]
    pub(crate) fn take_slots(
        self: &Arc<Self>,
        caller: impl FnOnce() -> Option<Key>,
        address: impl FnOnce() -> Option<Key>,
    ) -> Result<Option<Box<Slots>>, TooManyInFlight> {
        if self.callers.is_none() && self.addresses.is_none() {
            return Ok(None);
        }
        self.take_shares(caller, address)
    }

    fn take_shares(
        self: &Arc<Self>,
        caller: impl FnOnce() -> Option<Key>,
        address: impl FnOnce() -> Option<Key>,
    ) -> Result<Option<Box<Slots>>, TooManyInFlight> {
        let caller = self.callers.as_ref().and_then(|_| caller());
        let address = self.addresses.as_ref().and_then(|_| address());
        if caller.is_none() && address.is_none() {
            return Ok(None);
        }
        // Boxed: the response future carries it, and moving a future that
        // held the slots inline cost every call (shares or not) a memmove
        // of some hundred bytes, half again the layer's own cost.
        Slots::take(self, caller, address)
            .map(|slots| Some(Box::new(slots)))
            .map_err(|(by, max)| {
                self.counters
                    .rejected_in_flight_cap
                    .fetch_add(1, Ordering::Relaxed);
                self.rejected(Rejection::InFlightCap);
                TooManyInFlight::new(self.class.clone(), by, max, self.retry_after)
            })
    }

    /// Takes a permit if one is free and nobody waits: atomics only, and
    /// no lock to give it back for a class without a queue. `None` when
    /// every permit is taken; `Some(None)` for a class without a concurrency
    /// limit.
    #[inline]
    pub(crate) fn try_admit(self: &Arc<Self>) -> Option<Option<Permit>> {
        if !self.gate.try_take() {
            return None;
        }
        match self.gate {
            Gate::Unlimited => {
                self.counters.admitted.fetch_add(1, Ordering::Relaxed);
                Some(None)
            }
            // Its admissions are `taken`.
            Gate::Counted { .. } => Some(Some(Permit(self.clone()))),
            Gate::Queued { .. } => {
                self.counters.admitted.fetch_add(1, Ordering::Relaxed);
                Some(Some(Permit(self.clone())))
            }
        }
    }

    /// Joins the queue, or is turned away at once when the class has no
    /// queue or its queue is full.
    pub(crate) fn enqueue(self: &Arc<Self>) -> Result<Wait, Overloaded> {
        let reject = |reason| {
            self.counters
                .rejected_overloaded
                .fetch_add(1, Ordering::Relaxed);
            self.rejected(Rejection::Overloaded);
            Err(self.overloaded(reason))
        };
        let Gate::Queued { .. } = self.gate else {
            return reject(Reason::NoQueue);
        };
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return reject(Reason::QueueFull);
        }
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        let slot = QueueSlot(self.clone());
        // Tokio's own bound for "never": about 30 years.
        let max_wait = self.max_wait.min(Duration::from_secs(86_400 * 365 * 30));
        let deadline = Instant::now() + max_wait;
        Ok(Box::pin(async move {
            let state = &slot.0;
            let Gate::Queued { semaphore, .. } = &state.gate else {
                unreachable!("only a class with a queue queues")
            };
            match tokio::time::timeout_at(deadline, semaphore.acquire()).await {
                Ok(Ok(permit)) => {
                    permit.forget();
                    state.counters.admitted.fetch_add(1, Ordering::Relaxed);
                    Ok(Permit(state.clone()))
                }
                Ok(Err(_)) => unreachable!("the semaphore is never closed"),
                Err(_) => {
                    let counters = &state.counters;
                    counters.rejected_overloaded.fetch_add(1, Ordering::Relaxed);
                    counters.timed_out.fetch_add(1, Ordering::Relaxed);
                    state.rejected(Rejection::Overloaded);
                    Err(state.overloaded(Reason::TimedOut(max_wait)))
                }
            }
        }))
    }

    fn rejected(&self, why: Rejection) {
        self.observers.observe(&self.class, Event::Rejected(why));
    }

    fn overloaded(&self, reason: Reason) -> Overloaded {
        Overloaded::new(self.class.clone(), reason, self.retry_after)
    }

    fn stats(&self) -> ClassStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let c = &self.counters;
        let (in_flight, taken) = self.gate.counts();
        ClassStats {
            class: self.class.clone(),
            admitted: load(&c.admitted) + taken,
            queued: load(&c.queued),
            rejected_overloaded: load(&c.rejected_overloaded),
            timed_out: load(&c.timed_out),
            rejected_rate: load(&c.rejected_rate),
            rate_alerts: load(&c.rate_alerts),
            rate_warnings: load(&c.rate_warnings),
            rejected_in_flight_cap: load(&c.rejected_in_flight_cap),
            callers: self.callers.as_ref().map_or(0, Shares::keys),
            addresses: self.addresses.as_ref().map_or(0, Shares::keys),
            in_flight,
            waiting: self.waiting.load(Ordering::Relaxed) as u64,
        }
    }
}

/// Waits in a class's queue for a permit, until the class's `max_wait`.
pub(crate) type Wait = Pin<Box<dyn Future<Output = Result<Permit, Overloaded>> + Send>>;

/// A place in a class's queue, given back however the wait ends.
struct QueueSlot(Arc<ClassState>);

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One of a class's permits, given back when dropped.
pub(crate) struct Permit(Arc<ClassState>);

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        self.0.gate.give_back();
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Permit").field(&self.0.class).finish()
    }
}
