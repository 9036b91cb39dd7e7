//! Rate rules kept cluster-wide: [`RedisRates`].

use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, Weak,
    },
    time::Duration,
};

use herdsman::backend::{BudgetKey, RateBackend, RateBudgets, RateQuota, WhenFull};
use tokio::{sync::mpsc, time::Instant};

use crate::conn::Redis;

/// GCRA in Redis: adds `n` requests to a budget's theoretical arrival time
/// (never refusing: the replica let them through already) and answers how
/// far ahead of Redis's clock it is, in microseconds. KEYS: the budget.
/// ARGV: interval (µs), n, extra expiry (ms).
const TAKE: &str = "local t = redis.call('TIME') \
    local now = tonumber(t[1]) * 1000000 + tonumber(t[2]) \
    local tat = tonumber(redis.call('GET', KEYS[1])) or now \
    if tat < now then tat = now end \
    tat = tat + tonumber(ARGV[1]) * tonumber(ARGV[2]) \
    redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', \
      math.ceil((tat - now) / 1000) + tonumber(ARGV[3])) \
    return tat - now";

/// The most budgets synchronised in one pipeline.
const BATCH: usize = 128;

/// The budgets of rate rules, shared by the replicas through Redis (see
/// [`RateBackend`]).
///
/// A request is decided at once from this replica's own GCRA state, never
/// waiting on the network. What it lets through is added to the budget's
/// state in Redis in the background (GCRA in one Lua script, on Redis's
/// clock), whose answer (how far ahead the cluster's budget is) moves the
/// local state forward: a replica refuses what the others used up from its
/// next request after a round trip. So a burst may briefly pass on several
/// replicas at once, and over time the quota holds cluster-wide. Without
/// Redis, each replica enforces the quota on its own.
///
/// A rule is named in Redis by its [`RuleId`](herdsman::backend::RuleId)
/// (the class whose limits hold it, and which of its budgets), the same in
/// every replica built from one configuration, whatever order each builds
/// its rules in.
#[derive(Clone)]
pub struct RedisRates {
    redis: Redis,
}

impl RedisRates {
    /// Rate budgets on `redis`.
    pub fn new(redis: Redis) -> Self {
        RedisRates { redis }
    }
}

impl RateBackend for RedisRates {
    type Budgets = RedisBudgets;

    fn budgets(&self, quota: &RateQuota) -> RedisBudgets {
        let rule = quota.rule.get();
        let (sync, queue) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            redis: self.redis.clone(),
            rule,
            quota: *quota,
            budgets: Mutex::default(),
            untracked: AtomicU64::new(0),
            sync,
        });
        tokio::spawn(synchronise(Arc::downgrade(&shared), queue));
        RedisBudgets { shared }
    }
}

/// The budgets of one rate rule (see [`RedisRates`]).
pub struct RedisBudgets {
    shared: Arc<Shared>,
}

struct Shared {
    redis: Redis,
    rule: u64,
    quota: RateQuota,
    budgets: Mutex<Budgets>,
    untracked: AtomicU64,
    /// Budgets with requests that Redis has not been told of.
    sync: mpsc::UnboundedSender<BudgetKey>,
}

/// The budgets this replica knows.
#[derive(Default)]
struct Budgets {
    map: HashMap<BudgetKey, Budget>,
    /// When idle budgets were last dropped: at most once per interval, so
    /// that a full map is not scanned per request.
    pruned_at: Option<Instant>,
}

/// One budget as this replica knows it.
struct Budget {
    /// The theoretical arrival time of the next request (GCRA).
    tat: Instant,
    /// Requests let through that Redis has not been told of.
    unsent: u32,
}

impl Shared {
    /// The budget a request is counted in: its own, or the rule's one.
    fn bucket(&self, key: &BudgetKey) -> BudgetKey {
        if self.quota.keyed {
            key.clone()
        } else {
            BudgetKey {
                class: u32::MAX,
                identity: None,
            }
        }
    }

    /// Makes room for a new budget: drops the idle ones (whose arrival
    /// time has passed: a fresh budget would be the same) when full;
    /// `false` if there is still no room.
    fn room(&self, budgets: &mut Budgets, now: Instant) -> bool {
        let max = self.quota.max_keys.max(1);
        if budgets.map.len() < max {
            return true;
        }
        if budgets
            .pruned_at
            .is_some_and(|at| now < at + self.quota.interval)
        {
            return false;
        }
        budgets.pruned_at = Some(now);
        budgets.map.retain(|_, b| b.tat > now || b.unsent > 0);
        budgets.map.len() < max
    }

    fn name(&self, bucket: &BudgetKey) -> Vec<u8> {
        let mut rest = Vec::with_capacity(12);
        rest.extend_from_slice(&self.rule.to_be_bytes());
        rest.extend_from_slice(&bucket.class.to_be_bytes());
        if let Some(identity) = &bucket.identity {
            rest.extend_from_slice(identity.as_bytes());
        }
        self.redis.name("rate", &rest)
    }
}

impl RateBudgets for RedisBudgets {
    fn check(&self, key: &BudgetKey) -> Result<(), Duration> {
        let shared = &*self.shared;
        let quota = &shared.quota;
        let tolerance = quota.interval * (quota.burst.get() - 1);
        let now = Instant::now();
        let bucket = shared.bucket(key);
        let mut budgets = shared.budgets.lock().unwrap();
        if !budgets.map.contains_key(&bucket) && !shared.room(&mut budgets, now) {
            shared.untracked.fetch_add(1, Ordering::Relaxed);
            return match quota.when_full {
                WhenFull::Conform => Ok(()),
                WhenFull::Refuse => Err(quota.interval.max(Duration::from_millis(1))),
            };
        }
        let budget = budgets.map.entry(bucket).or_insert(Budget {
            tat: now,
            unsent: 0,
        });
        let tat = budget.tat.max(now);
        let ahead = tat - now;
        if ahead > tolerance {
            return Err((ahead - tolerance).max(Duration::from_millis(1)));
        }
        budget.tat = tat + quota.interval;
        budget.unsent += 1;
        if budget.unsent == 1 {
            let _ = shared.sync.send(shared.bucket(key));
        }
        Ok(())
    }

    fn keys(&self) -> u64 {
        if !self.shared.quota.keyed {
            return 0;
        }
        self.shared.budgets.lock().unwrap().map.len() as u64
    }

    fn untracked(&self) -> u64 {
        self.shared.untracked.load(Ordering::Relaxed)
    }
}

/// Tells Redis of the requests let through, budget by budget, and moves
/// each local budget up to the cluster's.
async fn synchronise(shared: Weak<Shared>, mut queue: mpsc::UnboundedReceiver<BudgetKey>) {
    let mut buckets = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut buckets, BATCH).await > 0 {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let counts: Vec<u32> = {
            let mut budgets = shared.budgets.lock().unwrap();
            buckets
                .iter()
                .map(|b| {
                    budgets
                        .map
                        .get_mut(b)
                        .map_or(0, |b| std::mem::take(&mut b.unsent))
                })
                .collect()
        };
        let interval_us = shared.quota.interval.as_micros() as u64;
        let extra_ms = (shared.quota.interval * shared.quota.burst.get()).as_millis() as u64 + 1;
        let mut pipe = redis::pipe();
        for (bucket, n) in buckets.iter().zip(&counts) {
            pipe.cmd("EVAL")
                .arg(TAKE)
                .arg(1)
                .arg(shared.name(bucket))
                .arg(interval_us)
                .arg(n)
                .arg(extra_ms);
        }
        let mut manager = shared.redis.manager();
        let answer = shared
            .redis
            .run(pipe.query_async::<Vec<i64>>(&mut manager))
            .await;
        // Without an answer the requests stay counted here only.
        if let Some(aheads) = answer {
            let now = Instant::now();
            let mut budgets = shared.budgets.lock().unwrap();
            for (bucket, ahead) in buckets.iter().zip(aheads) {
                if let Some(budget) = budgets.map.get_mut(bucket) {
                    let cluster = now + Duration::from_micros(ahead.max(0) as u64);
                    budget.tat = budget.tat.max(cluster);
                }
            }
        }
        buckets.clear();
    }
}

impl fmt::Debug for RedisRates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRates")
            .field("redis", &self.redis)
            .finish()
    }
}

impl fmt::Debug for RedisBudgets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBudgets")
            .field("rule", &self.shared.rule)
            .field("quota", &self.shared.quota)
            .finish_non_exhaustive()
    }
}
