//! Keyed rate rules: GCRA through governor, over tokio time, in a key store
//! whose size is bounded; or the budgets of a [`RateBackend`] of your own.

use std::{
    fmt,
    hash::Hash,
    num::NonZeroU32,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use governor::{
    clock::Clock,
    middleware::NoOpMiddleware,
    nanos::Nanos,
    state::{
        keyed::{DashMapStateStore, ShrinkableKeyedStateStore},
        InMemoryState, NotKeyed, StateStore,
    },
    NotUntil, Quota, RateLimiter,
};
use tokio::time::Instant;

use crate::{
    backend::{BudgetKey, RateBackend, RateBudgets, RateQuota, RuleId, WhenFull},
    class::Class,
};

/// Default bound on the number of keys one rate rule tracks: 100,000.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// What a [`RateRule`] counts requests by.
///
/// In a configuration file (`by = ...`): `"class"`, `"identity"` or
/// `"class-and-identity"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(
    feature = "config",
    derive(serde::Deserialize, serde::Serialize),
    serde(rename_all = "kebab-case")
)]
pub enum RateKey {
    /// One budget for each endpoint class, shared by all its callers.
    #[default]
    Class,
    /// One budget for each caller identity (see
    /// [`LimitLayer::with_identity`](super::LimitLayer::with_identity)).
    /// A rule set on one class counts that class only; the default rule
    /// (for classes without limits of their own) is one budget per caller
    /// across all those classes.
    Identity,
    /// One budget for each caller in each endpoint class.
    ClassAndIdentity,
}

/// What a [`RateRule`] does with a request over its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RateMode {
    /// Reject it with [`RateLimited`](super::RateLimited).
    #[default]
    Enforce,
    /// Let it through, count it in
    /// [`ClassStats::rate_alerts`](super::ClassStats::rate_alerts) and log a
    /// warning, at most once per key per period of the rule.
    AlertOnly,
}

/// A keyed rate limit: `limit` requests per `per`, in bursts of up to
/// `burst`, by class, by caller or by both.
///
/// The algorithm is GCRA (the [governor] crate): one request is let through
/// every `per / limit` on average, and up to `burst` (default `limit`) at once
/// after a quiet spell. Unlike a fixed window it has no edge: a burst just
/// before the end of one period and another just after it are not both let
/// through. In any span of time `t` at most `burst + t × limit / per`
/// requests of one key pass.
///
/// ```
/// use herdsman::limit::{RateKey, RateRule};
///
/// // The operations plan's alarm: more than 20 requests per minute per hook.
/// let alarm = RateRule::per_minute(20).keyed_by(RateKey::ClassAndIdentity).alert_only();
/// # let _ = alarm;
/// ```
///
/// With the `config` feature this is also the `rate` table of a `[limit]`
/// section: `rate = { per_minute = 20, by = "class-and-identity",
/// alert_only = true }`, with exactly one of `per_second` and `per_minute`,
/// `burst` (default: the limit) and `max_keys` (default
/// [`DEFAULT_MAX_KEYS`]). Reading one checks it (a limit, burst or
/// `max_keys` of zero, or both or neither period, is refused with the key's
/// path), so a rule read from a file is as valid as one built here. Only
/// rules per second or per minute have a configuration form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateRule {
    limit: NonZeroU32,
    per: Duration,
    burst: NonZeroU32,
    key: RateKey,
    mode: RateMode,
    max_keys: usize,
}

impl RateRule {
    /// `limit` requests per `per`, bursts of up to `limit`, by class,
    /// enforced.
    ///
    /// # Panics
    ///
    /// If `limit` or `per` is zero.
    pub fn new(limit: u32, per: Duration) -> Self {
        let limit = NonZeroU32::new(limit).expect("a rate rule must allow at least one request");
        assert!(!per.is_zero(), "a rate rule's period must not be zero");
        RateRule {
            limit,
            per,
            burst: limit,
            key: RateKey::Class,
            mode: RateMode::Enforce,
            max_keys: DEFAULT_MAX_KEYS,
        }
    }

    /// `limit` requests per second; see [`new`](Self::new).
    pub fn per_second(limit: u32) -> Self {
        Self::new(limit, Duration::from_secs(1))
    }

    /// `limit` requests per minute; see [`new`](Self::new).
    pub fn per_minute(limit: u32) -> Self {
        Self::new(limit, Duration::from_secs(60))
    }

    /// Lets up to `burst` requests through at once after a quiet spell
    /// (default: the limit). `1` spaces requests evenly.
    ///
    /// # Panics
    ///
    /// If `burst` is zero.
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = NonZeroU32::new(burst).expect("a rate rule's burst must be at least 1");
        self
    }

    /// Counts requests by class, by caller identity or by both (default:
    /// by class).
    pub fn keyed_by(mut self, key: RateKey) -> Self {
        self.key = key;
        self
    }

    /// Enforces the rule or only reports breaches (default: enforce).
    pub fn with_mode(mut self, mode: RateMode) -> Self {
        self.mode = mode;
        self
    }

    /// Shorthand for `with_mode(RateMode::AlertOnly)`: requests over the
    /// budget are counted and logged, not rejected.
    pub fn alert_only(self) -> Self {
        self.with_mode(RateMode::AlertOnly)
    }

    /// Bounds the number of keys the rule tracks (default
    /// [`DEFAULT_MAX_KEYS`]). Idle keys are pruned as new ones arrive; if the
    /// store is still full of active keys, requests of keys it does not hold
    /// pass untracked (counted in [`LimitStats::rate_untracked`](super::LimitStats::rate_untracked)),
    /// as a key seen for the first time would.
    pub fn with_max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys.max(1);
        self
    }

    /// Requests allowed per [`per`](Self::per).
    pub fn limit(&self) -> u32 {
        self.limit.get()
    }

    /// The period of the limit.
    pub fn per(&self) -> Duration {
        self.per
    }

    /// The largest burst let through at once.
    pub fn burst(&self) -> u32 {
        self.burst.get()
    }

    /// What requests are counted by.
    pub fn key(&self) -> RateKey {
        self.key
    }

    /// Enforce or alert only.
    pub fn mode(&self) -> RateMode {
        self.mode
    }

    /// The bound on tracked keys.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// The quota of the rule's budgets, and of its warnings (one per
    /// period, and none for keys the warnings cannot keep), for the rule
    /// of `class`'s limits.
    fn quotas(&self, class: &Class) -> (RateQuota, RateQuota) {
        let budgets = RateQuota {
            rule: RuleId::new(class.as_str(), 0),
            interval: (self.per / self.limit.get()).max(Duration::from_nanos(1)),
            burst: self.burst,
            keyed: self.key != RateKey::Class,
            max_keys: self.max_keys,
            when_full: WhenFull::Conform,
        };
        let warnings = RateQuota {
            rule: RuleId::new(class.as_str(), 1),
            interval: self.per,
            burst: NonZeroU32::MIN,
            when_full: WhenFull::Refuse,
            ..budgets
        };
        (budgets, warnings)
    }
}

/// A [`RateRule`] as a configuration writes it.
#[cfg(feature = "config")]
mod form {
    use std::{num::NonZeroU32, time::Duration};

    use serde::{de, ser, Deserialize, Deserializer, Serialize, Serializer};

    use super::{RateKey, RateMode, RateRule};

    const SECOND: Duration = Duration::from_secs(1);
    const MINUTE: Duration = Duration::from_secs(60);

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Table {
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "at_least_one"
        )]
        per_second: Option<NonZeroU32>,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "at_least_one"
        )]
        per_minute: Option<NonZeroU32>,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "at_least_one"
        )]
        burst: Option<NonZeroU32>,
        #[serde(default)]
        by: RateKey,
        #[serde(default)]
        alert_only: bool,
        #[serde(default = "max_keys", deserialize_with = "at_least_one_key")]
        max_keys: usize,
    }

    fn max_keys() -> usize {
        super::DEFAULT_MAX_KEYS
    }

    fn at_least_one_key<'de, D: Deserializer<'de>>(de: D) -> Result<usize, D::Error> {
        match usize::deserialize(de)? {
            0 => Err(de::Error::custom("must be at least 1")),
            n => Ok(n),
        }
    }

    fn at_least_one<'de, D: Deserializer<'de>>(de: D) -> Result<Option<NonZeroU32>, D::Error> {
        let n = u32::deserialize(de)?;
        NonZeroU32::new(n)
            .map(Some)
            .ok_or_else(|| de::Error::custom("must be at least 1"))
    }

    impl<'de> Deserialize<'de> for RateRule {
        fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
            let table = Table::deserialize(de)?;
            let (limit, per) = match (table.per_second, table.per_minute) {
                (Some(n), None) => (n, SECOND),
                (None, Some(n)) => (n, MINUTE),
                (Some(_), Some(_)) => {
                    let both = "set one of per_second and per_minute, not both";
                    return Err(de::Error::custom(both));
                }
                (None, None) => {
                    return Err(de::Error::custom("set one of per_second and per_minute"))
                }
            };
            let mode = match table.alert_only {
                true => RateMode::AlertOnly,
                false => RateMode::Enforce,
            };
            Ok(RateRule::new(limit.get(), per)
                .with_burst(table.burst.unwrap_or(limit).get())
                .keyed_by(table.by)
                .with_mode(mode)
                .with_max_keys(table.max_keys))
        }
    }

    impl Serialize for RateRule {
        fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
            let (per_second, per_minute) = match self.per {
                SECOND => (Some(self.limit), None),
                MINUTE => (None, Some(self.limit)),
                per => {
                    return Err(ser::Error::custom(format_args!(
                        "a rate rule per {per:?} has no configuration form: only per second or per minute"
                    )))
                }
            };
            Table {
                per_second,
                per_minute,
                burst: (self.burst != self.limit).then_some(self.burst),
                by: self.key,
                alert_only: self.mode == RateMode::AlertOnly,
                max_keys: self.max_keys,
            }
            .serialize(ser)
        }
    }
}

fn governor_quota(quota: &RateQuota) -> Quota {
    Quota::with_period(quota.interval.max(Duration::from_nanos(1)))
        .expect("the interval is not zero")
        .allow_burst(quota.burst)
}

/// governor's clock over tokio time, so that paused tests drive it: `Nanos`
/// since the rule's state was created.
#[derive(Debug, Clone, Copy)]
struct TokioClock {
    epoch: Instant,
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(Instant::now().saturating_duration_since(self.epoch))
    }
}

/// What one budget is kept under.
pub(crate) type Bucket = BudgetKey;

pub(crate) const ANY_CLASS: u32 = u32::MAX;

type Hasher = foldhash::fast::RandomState;

/// governor's DashMap store, bounded: a key it does not hold is tracked only
/// while the store has room, and every so many such keys the rule prunes the
/// idle ones (`retain_recent`), so the cost of pruning is spread over the
/// requests that grow the store.
struct BoundedStore {
    map: DashMapStateStore<Bucket, Hasher>,
    tracking: Arc<Tracking>,
    /// When full, decide for an untracked key as for a fresh one (a budget),
    /// or as for one far over its budget (the warnings: no log flood).
    when_full: WhenFull,
}

/// The bookkeeping of a [`BoundedStore`], shared with its rule: governor's
/// `RateLimiter` does not lend out its store.
struct Tracking {
    max_keys: usize,
    /// An estimate of the store's length (exact after each pruning).
    len: AtomicUsize,
    /// Requests whose key the store did not hold.
    misses: AtomicUsize,
    prune_every: usize,
    prune_due: AtomicBool,
    untracked: AtomicU64,
}

impl BoundedStore {
    fn new(max_keys: usize, when_full: WhenFull) -> Self {
        BoundedStore {
            when_full,
            map: DashMapStateStore::with_hasher(Hasher::default()),
            tracking: Arc::new(Tracking {
                max_keys,
                len: AtomicUsize::new(0),
                misses: AtomicUsize::new(0),
                // Pruning scans at most `max_keys` entries once per this many
                // new keys: a few entries per new key, amortised.
                prune_every: (max_keys / 4).clamp(1, 1 << 16),
                prune_due: AtomicBool::new(false),
                untracked: AtomicU64::new(0),
            }),
        }
    }
}

impl StateStore for BoundedStore {
    type Key = Bucket;

    fn measure_and_replace<T, F, E>(&self, key: &Bucket, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(state) = self.map.get(key) {
            return state.measure_and_replace(&NotKeyed::NonKey, f);
        }
        let t = &*self.tracking;
        if (t.misses.fetch_add(1, Ordering::Relaxed) + 1) % t.prune_every == 0 {
            t.prune_due.store(true, Ordering::Relaxed);
        }
        if t.len.load(Ordering::Relaxed) >= t.max_keys {
            // Decided without keeping the key.
            t.untracked.fetch_add(1, Ordering::Relaxed);
            let state = match self.when_full {
                WhenFull::Conform => None,
                // A theoretical arrival time far in the future.
                WhenFull::Refuse => Some(Nanos::from(u64::MAX >> 1)),
            };
            return f(state).map(|(decision, _)| decision);
        }
        t.len.fetch_add(1, Ordering::Relaxed);
        self.map.measure_and_replace(key, f)
    }
}

impl ShrinkableKeyedStateStore<Bucket> for BoundedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        let before = self.map.len();
        self.map.retain_recent(drop_below);
        let after = self.map.len();
        if after < before / 2 {
            self.map.shrink_to_fit();
        }
        self.tracking.len.store(after, Ordering::Relaxed);
    }

    fn shrink_to_fit(&self) {
        self.map.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

type Limiter = RateLimiter<Bucket, BoundedStore, TokioClock, NoOpMiddleware<Nanos>>;
type DirectLimiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;

/// The in-memory budgets of one rule ([`GovernorRates`]): a single one (by
/// class: the rule's state belongs to one class, no map), or one per key in
/// a bounded store.
pub struct GovernorBudgets {
    inner: Budgets,
}

enum Budgets {
    Direct(DirectLimiter),
    Keyed {
        limiter: Limiter,
        tracking: Arc<Tracking>,
    },
}

impl Budgets {
    fn new(quota: &RateQuota, clock: TokioClock) -> Self {
        let governed = governor_quota(quota);
        if !quota.keyed {
            return Budgets::Direct(DirectLimiter::direct_with_clock(governed, clock));
        }
        let store = BoundedStore::new(quota.max_keys, quota.when_full);
        let tracking = store.tracking.clone();
        Budgets::Keyed {
            limiter: Limiter::new(governed, store, clock),
            tracking,
        }
    }

    /// Takes one request from `bucket`'s budget, or tells how long until it
    /// could.
    fn check(&self, bucket: &Bucket) -> Result<(), Duration> {
        let retry_after = |not_until: NotUntil<Nanos>, clock: &TokioClock| {
            not_until
                .wait_time_from(clock.now())
                .max(Duration::from_millis(1))
        };
        match self {
            Budgets::Direct(limiter) => limiter
                .check()
                .map_err(|not_until| retry_after(not_until, limiter.clock())),
            Budgets::Keyed { limiter, tracking } => {
                let result = limiter
                    .check_key(bucket)
                    .map_err(|not_until| retry_after(not_until, limiter.clock()));
                if tracking.prune_due.load(Ordering::Relaxed)
                    && tracking.prune_due.swap(false, Ordering::Relaxed)
                {
                    limiter.retain_recent();
                }
                result
            }
        }
    }

    fn keys(&self) -> u64 {
        match self {
            Budgets::Direct(_) => 0,
            Budgets::Keyed { limiter, .. } => limiter.len() as u64,
        }
    }

    fn untracked(&self) -> u64 {
        match self {
            Budgets::Direct(_) => 0,
            Budgets::Keyed { tracking, .. } => tracking.untracked.load(Ordering::Relaxed),
        }
    }
}

/// The in-memory [`RateBackend`], the default: GCRA through the [governor]
/// crate, over tokio time (paused tests drive it), one budget per key in a
/// store bounded by [`RateQuota::max_keys`] whose idle keys are pruned as
/// new ones arrive.
#[derive(Debug, Clone, Copy, Default)]
pub struct GovernorRates;

impl RateBackend for GovernorRates {
    type Budgets = GovernorBudgets;

    fn budgets(&self, quota: &RateQuota) -> GovernorBudgets {
        let clock = TokioClock {
            epoch: Instant::now(),
        };
        GovernorBudgets {
            inner: Budgets::new(quota, clock),
        }
    }
}

impl RateBudgets for GovernorBudgets {
    #[inline]
    fn check(&self, key: &BudgetKey) -> Result<(), Duration> {
        self.inner.check(key)
    }

    fn keys(&self) -> u64 {
        self.inner.keys()
    }

    fn untracked(&self) -> u64 {
        self.inner.untracked()
    }
}

impl fmt::Debug for GovernorBudgets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GovernorBudgets")
            .field("keys", &self.inner.keys())
            .finish_non_exhaustive()
    }
}

/// The rate backend of a limit layer: the default in memory, or one set
/// with [`LimitLayer::with_rate_backend`](super::LimitLayer::with_rate_backend)
/// (called through a vtable: it is consulted per request, but a distributed
/// backend's own work outweighs one indirect call).
#[derive(Clone, Default)]
pub(crate) struct Rates {
    custom: Option<Arc<MakeBudgets>>,
}

type MakeBudgets = dyn Fn(&RateQuota) -> Box<dyn RateBudgets> + Send + Sync;

impl Rates {
    pub(crate) fn new<B: RateBackend>(backend: B) -> Self {
        Rates {
            custom: Some(Arc::new(move |quota: &RateQuota| {
                Box::new(backend.budgets(quota)) as Box<dyn RateBudgets>
            })),
        }
    }

    fn budgets(&self, quota: &RateQuota) -> RuleBudgets {
        match &self.custom {
            None => RuleBudgets::Governor(GovernorRates.budgets(quota)),
            Some(make) => RuleBudgets::Custom(make(quota)),
        }
    }
}

impl fmt::Debug for Rates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = if self.custom.is_some() {
            "custom"
        } else {
            "governor"
        };
        f.debug_tuple("Rates").field(&backend).finish()
    }
}

/// The budgets of one rule, from the default backend (no indirect call)
/// or another.
enum RuleBudgets {
    Governor(GovernorBudgets),
    Custom(Box<dyn RateBudgets>),
}

impl RuleBudgets {
    fn get(&self) -> &dyn RateBudgets {
        match self {
            RuleBudgets::Governor(budgets) => budgets,
            RuleBudgets::Custom(budgets) => &**budgets,
        }
    }

    #[inline]
    fn check(&self, bucket: &Bucket) -> Result<(), Duration> {
        match self {
            RuleBudgets::Governor(budgets) => budgets.check(bucket),
            RuleBudgets::Custom(budgets) => budgets.check(bucket),
        }
    }
}

/// The budgets of one rule. A rule by class has state of its own in each
/// class; a rule by caller is shared by the classes it applies to.
pub(crate) struct RateState {
    pub(crate) rule: RateRule,
    budgets: RuleBudgets,
    /// Alert-only rules: one warning per key per period.
    warnings: Option<RuleBudgets>,
}

/// What a rule decided for one request.
pub(crate) enum Verdict {
    Pass,
    /// Over the budget of an alert-only rule: let it through, and warn if
    /// this key was not warned about in this period.
    Alert {
        warn: bool,
        retry_after: Duration,
    },
    Reject {
        retry_after: Duration,
    },
}

impl RateState {
    /// The state of `rule`, the rule of `class`'s limits, its budgets made
    /// by `rates`.
    pub(crate) fn new(rule: RateRule, class: &Class, rates: &Rates) -> Self {
        let (budgets, warnings) = rule.quotas(class);
        let budgets = rates.budgets(&budgets);
        let warnings = (rule.mode == RateMode::AlertOnly).then(|| rates.budgets(&warnings));
        RateState {
            budgets,
            warnings,
            rule,
        }
    }

    /// Checks one request. `bucket` is ignored by a rule by class.
    pub(crate) fn check(&self, bucket: &Bucket) -> Verdict {
        match self.budgets.check(bucket) {
            Ok(()) => Verdict::Pass,
            Err(retry_after) => match &self.warnings {
                None => Verdict::Reject { retry_after },
                Some(warnings) => Verdict::Alert {
                    warn: warnings.check(bucket).is_ok(),
                    retry_after,
                },
            },
        }
    }

    /// Keys held now (none for a rule by class).
    pub(crate) fn keys(&self) -> u64 {
        self.budgets.get().keys() + self.warnings.as_ref().map_or(0, |w| w.get().keys())
    }

    /// Requests decided without keeping their key, the store being full.
    pub(crate) fn untracked(&self) -> u64 {
        self.budgets.get().untracked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;

    fn bucket(n: u64) -> Bucket {
        Bucket {
            class: ANY_CLASS,
            identity: Some(Key::from(n)),
        }
    }

    #[test]
    fn a_full_store_decides_untracked_keys_by_its_policy() {
        let rule = RateRule::per_minute(1)
            .keyed_by(RateKey::Identity)
            .with_max_keys(1);
        let (quota, warnings) = rule.quotas(&Class::default());

        // Budgets: an untracked key passes, as a fresh key would.
        let budgets = GovernorRates.budgets(&quota);
        assert!(budgets.check(&bucket(1)).is_ok());
        assert!(budgets.check(&bucket(1)).is_err());
        assert!(budgets.check(&bucket(2)).is_ok());
        assert!(budgets.check(&bucket(2)).is_ok());
        assert_eq!((budgets.keys(), budgets.untracked()), (1, 2));

        // Warnings: an untracked key is not warned about.
        let warnings = GovernorRates.budgets(&RateQuota {
            burst: quota.burst,
            ..warnings
        });
        assert!(warnings.check(&bucket(1)).is_ok());
        assert!(warnings.check(&bucket(2)).is_err());
    }

    #[test]
    fn the_key_estimate_covers_a_key_and_its_state() {
        // + hashbrown's control byte, with its spare room (load factor 7/8).
        let record = std::mem::size_of::<(Bucket, InMemoryState)>() + 1;
        let with_spare_room = record * 8 / 7;
        assert!(
            with_spare_room as u64 <= super::super::RATE_KEY_ESTIMATE_BYTES,
            "{with_spare_room}"
        );
    }

    #[test]
    fn a_rule_spreads_its_limit_over_its_period() {
        let rule = RateRule::new(20, Duration::from_secs(60)).with_burst(5);
        let quota = governor_quota(&rule.quotas(&Class::default()).0);
        assert_eq!(quota.replenish_interval(), Duration::from_secs(3));
        assert_eq!(quota.burst_size().get(), 5);
        assert_eq!(RateRule::per_second(3).burst(), 3);
    }

    #[cfg(feature = "config")]
    #[test]
    fn a_rule_reads_and_writes_its_configuration_form() {
        let rule: RateRule =
            toml::from_str("per_minute = 600\nburst = 5\nby = \"class-and-identity\"").unwrap();
        assert_eq!(
            rule,
            RateRule::per_minute(600)
                .with_burst(5)
                .keyed_by(RateKey::ClassAndIdentity)
        );
        let written = toml::to_string(&rule).unwrap();
        assert_eq!(toml::from_str::<RateRule>(&written).unwrap(), rule);
        let plain = toml::to_string(&RateRule::per_second(3).alert_only()).unwrap();
        assert_eq!(
            plain,
            "per_second = 3\nby = \"class\"\nalert_only = true\nmax_keys = 100000\n"
        );
        let few: RateRule = toml::from_str("per_second = 1\nmax_keys = 8").unwrap();
        assert_eq!(few.max_keys(), 8);

        let refused = |form: &str| toml::from_str::<RateRule>(form).unwrap_err().to_string();
        assert!(refused("per_second = 0").contains("must be at least 1"));
        assert!(refused("per_second = 1\nburst = 0").contains("must be at least 1"));
        assert!(refused("per_second = 1\nper_minute = 1").contains("not both"));
        assert!(refused("burst = 1").contains("set one of per_second and per_minute"));
        assert!(refused("per_second = 1\nmax_keys = 0").contains("must be at least 1"));
        let odd = RateRule::new(5, Duration::from_secs(10));
        assert!(toml::to_string(&odd).is_err(), "no form for a 10s period");
    }

    #[test]
    #[should_panic(expected = "at least one request")]
    fn a_rule_of_zero_requests_is_refused() {
        let _ = RateRule::new(0, Duration::from_secs(1));
    }
}
