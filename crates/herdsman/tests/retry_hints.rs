//! Retry hints are computed when asked, not when the error was made: an
//! error held for a while (shared by Dedup, kept in a registry update)
//! still tells the time left, and `error::retry_at` finds the instant
//! whatever layer made it.

use std::{convert::Infallible, time::Duration};

use herdsman::{
    breaker::{BreakerConfig, BreakerLayer, BreakerOpen},
    error::{find, retry_at, BoxError, SharedError},
    key::Key,
    limit::{ClassLimits, LimitLayer, Overloaded, RateLimited, RateRule, TooManyInFlight},
};
use tokio::time::{self, Instant};
use tower::{service_fn, Layer, ServiceExt};

const SEC: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn an_open_breakers_retry_after_counts_down_to_its_probe() {
    let config = BreakerConfig {
        consecutive_failures: Some(1),
        open_duration: 10 * SEC,
        jitter: 0.0,
        ..BreakerConfig::default()
    };
    let svc = BreakerLayer::new()
        .with_config(config)
        .layer(service_fn(|_: ()| async {
            Err::<(), BoxError>("down".into())
        }));
    assert!(
        svc.clone().oneshot(()).await.is_err(),
        "the failure that trips it"
    );
    let tripped_at = Instant::now();
    let err = svc.clone().oneshot(()).await.unwrap_err();
    let shared: BoxError = Box::new(SharedError::new(err));

    let open = find::<BreakerOpen>(&*shared).unwrap();
    assert_eq!(open.retry_after(), Some(10 * SEC));
    assert_eq!(retry_at(&*shared), Some(tripped_at + 10 * SEC));
    time::advance(4 * SEC).await;
    assert_eq!(
        open.retry_after(),
        Some(6 * SEC),
        "the same error, asked later"
    );
    time::advance(7 * SEC).await;
    assert_eq!(
        open.retry_after(),
        Some(Duration::ZERO),
        "the probe time passed"
    );
    assert_eq!(retry_at(&*shared), Some(tripped_at + 10 * SEC));
}

#[tokio::test(start_paused = true)]
async fn limit_rejections_count_down_from_their_hint() {
    let echo = || service_fn(|_: ()| async { Ok::<_, Infallible>(()) });
    let full = LimitLayer::new(ClassLimits::new(0).with_retry_after(3 * SEC)).layer(echo());
    let err = full.oneshot(()).await.unwrap_err();
    let made_at = Instant::now();
    let overloaded = find::<Overloaded>(&*err).unwrap();
    assert_eq!(overloaded.retry_after(), 3 * SEC);
    assert_eq!(retry_at(&*err), Some(made_at + 3 * SEC));

    let rated =
        LimitLayer::new(ClassLimits::unlimited().with_rate(RateRule::per_second(1))).layer(echo());
    rated.clone().oneshot(()).await.unwrap();
    let limited = rated.oneshot(()).await.unwrap_err();
    let rate = find::<RateLimited>(&*limited).unwrap();
    assert_eq!(rate.retry_after(), SEC);
    assert_eq!(retry_at(&*limited), Some(made_at + SEC));

    time::advance(SEC / 4).await;
    assert_eq!(overloaded.retry_after(), 3 * SEC - SEC / 4);
    assert_eq!(rate.retry_after(), SEC - SEC / 4);
}

#[tokio::test(start_paused = true)]
async fn a_caller_over_its_share_is_told_the_class_hint() {
    let limits = ClassLimits::new(4)
        .with_max_concurrent_per_caller(0)
        .with_retry_after(2 * SEC);
    let svc = LimitLayer::new(limits)
        .with_identity(|_: &()| Some(Key::from("ann")))
        .layer(service_fn(|_: ()| async { Ok::<_, Infallible>(()) }));
    let err = svc.oneshot(()).await.unwrap_err();
    let made_at = Instant::now();
    let capped = find::<TooManyInFlight>(&*err).unwrap();
    assert_eq!(capped.retry_after(), 2 * SEC);
    assert_eq!(retry_at(&*err), Some(made_at + 2 * SEC));
    time::advance(SEC).await;
    assert_eq!(capped.retry_after(), SEC);
}

#[test]
fn other_errors_carry_no_retry_hint() {
    let err: BoxError = Box::new(SharedError::new(std::io::Error::other("upstream")));
    assert_eq!(retry_at(&*err), None);
}
