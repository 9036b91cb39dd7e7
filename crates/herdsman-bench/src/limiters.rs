//! The limiters compared in the limit benchmark, built the same way in every
//! case, with limits that no case reaches:
//!
//! - concurrency: herdsman's [`LimitLayer`] (one class, no queue), tower's
//!   `ConcurrencyLimit` and tower-resilience 0.13's `bulkhead` (rejecting
//!   when full), each with [`MAX_CONCURRENT`] permits;
//! - rate: herdsman's [`RateRule`] by class and by caller, tower-resilience's
//!   `ratelimiter`, and governor used bare, each allowing
//!   [`RATE_PER_SECOND`] requests per second (per caller, when keyed).

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use herdsman::{
    class::AllDefault,
    key::{Key, KeyFn},
    limit::{ClassLimits, LimitLayer, RateKey, RateRule},
};
use tokio::sync::Semaphore;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_resilience::{
    bulkhead::{BulkheadHandle, BulkheadLayer},
    ratelimiter::{RateLimiterHandle, RateLimiterLayer},
};

/// Calls in flight allowed by every concurrency limiter: far more than the
/// one a benchmark has in flight at a time.
pub const MAX_CONCURRENT: usize = 1_000;

/// Requests per second allowed by every rate limiter (per caller, when
/// keyed): far more than a benchmark sends.
pub const RATE_PER_SECOND: u32 = 1_000_000_000;

/// Distinct callers in the keyed cases: request `n` comes from caller
/// `n % CALLERS`.
pub const CALLERS: u64 = 1_000;

/// herdsman's concurrency limit: every request in the default class, with
/// [`MAX_CONCURRENT`] permits, no queue and no rate rule.
pub fn herdsman_concurrency() -> LimitLayer {
    LimitLayer::new(ClassLimits::new(MAX_CONCURRENT))
}

/// herdsman's rate rule by class: [`RATE_PER_SECOND`] for the default
/// class, and no concurrency limit.
pub fn herdsman_rate_by_class() -> LimitLayer {
    LimitLayer::new(ClassLimits::unlimited().with_rate(RateRule::per_second(RATE_PER_SECOND)))
}

/// herdsman's rate rule by caller: [`RATE_PER_SECOND`] for each of
/// [`CALLERS`] callers (request `n` from caller `n % CALLERS`), and no
/// concurrency limit.
pub fn herdsman_rate_by_caller() -> LimitLayer<AllDefault, impl KeyFn<u64> + Clone> {
    let rule = RateRule::per_second(RATE_PER_SECOND).keyed_by(RateKey::Identity);
    LimitLayer::new(ClassLimits::unlimited().with_rate(rule))
        .with_identity(|req: &u64| Some(Key::from(*req % CALLERS)))
}

/// tower's `ConcurrencyLimit` with [`MAX_CONCURRENT`] permits, and its
/// semaphore, to check afterwards that every permit came back.
///
/// `GlobalConcurrencyLimitLayer::with_semaphore` makes the same
/// `ConcurrencyLimit<S>` as `ConcurrencyLimitLayer::new(MAX_CONCURRENT)`
/// (`ConcurrencyLimit::with_semaphore` over a new semaphore); only the
/// semaphore is in our hands.
pub fn tower_concurrency() -> (GlobalConcurrencyLimitLayer, Arc<Semaphore>) {
    let semaphore = Arc::new(Semaphore::new(MAX_CONCURRENT));
    (
        GlobalConcurrencyLimitLayer::with_semaphore(semaphore.clone()),
        semaphore,
    )
}

/// tower-resilience's bulkhead with [`MAX_CONCURRENT`] permits, rejecting
/// at once when full (`reject_when_full`: a `max_wait_duration` of zero),
/// and its handle.
pub fn tower_resilience_bulkhead() -> (BulkheadLayer, BulkheadHandle) {
    BulkheadLayer::builder()
        .max_concurrent_calls(MAX_CONCURRENT)
        .reject_when_full()
        .build_with_handle()
        .expect("the settings are valid")
}

/// tower-resilience's rate limiter: [`RATE_PER_SECOND`] permits per 1 s
/// window (its default window, fixed), rejecting mode (its default), and
/// its handle.
pub fn tower_resilience_ratelimiter() -> (RateLimiterLayer, RateLimiterHandle) {
    RateLimiterLayer::builder()
        .limit_for_period(RATE_PER_SECOND as usize)
        .refresh_period(Duration::from_secs(1))
        .build_with_handle()
        .expect("the settings are valid")
}

fn quota() -> Quota {
    Quota::per_second(NonZeroU32::new(RATE_PER_SECOND).expect("not zero"))
}

/// governor's direct (unkeyed) limiter with its default clock (with the
/// workspace's governor features, std's `Instant`) and state: one GCRA cell.
pub fn governor_direct() -> DefaultDirectRateLimiter {
    RateLimiter::direct(quota())
}

/// governor's keyed limiter with its defaults: a `DashMap` keyed by the
/// `u64` caller, std's SipHash hasher, its default clock.
pub fn governor_keyed() -> DefaultKeyedRateLimiter<u64> {
    RateLimiter::keyed(quota())
}
