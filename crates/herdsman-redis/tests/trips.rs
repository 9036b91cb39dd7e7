//! `RedisTrips` against a real `redis-server`: two breaker layers (two
//! replicas) sharing one Redis.
//!
//! `cargo test -p herdsman-redis -- --ignored` (needs `redis-server` on
//! `PATH`).

mod support;

use std::time::Duration;

use herdsman::{
    breaker::{BreakerConfig, BreakerLayer, BreakerOpen, BreakerState},
    class::Class,
    error::find,
    BoxError,
};
use herdsman_redis::{dev::RedisServer, RedisTrips};
use support::subscribed_replica;
use tower::{service_fn, Layer, ServiceExt};

type ByName = fn(&&'static str) -> Class;

fn by_name(req: &&'static str) -> Class {
    Class::new(req)
}

/// A replica's breaker layer, sharing trips on `server`.
async fn breaker(server: &RedisServer) -> BreakerLayer<ByName> {
    let config = BreakerConfig {
        jitter: 0.0,
        open_duration: Duration::from_secs(2),
        ..BreakerConfig::default()
    };
    BreakerLayer::new()
        .with_config(config)
        .with_classifier(by_name as ByName)
        .with_trip_backend(RedisTrips::new(subscribed_replica(server).await))
}

async fn state_becomes(layer: &BreakerLayer<ByName>, class: &str, state: BreakerState) {
    let class = Class::new(class);
    support::eventually("the breaker's state", || async {
        (layer.handle().state(&class) == state).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_trip_on_one_replica_opens_the_others_breaker_and_a_late_replica_finds_it() {
    let server = RedisServer::start().await.unwrap();
    let here = breaker(&server).await;
    let there = breaker(&server).await;
    let failing = here.layer(service_fn(|_: &'static str| async {
        Err::<&'static str, BoxError>("upstream down".into())
    }));
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = calls.clone();
    let healthy = there.layer(service_fn(move |_: &'static str| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { Ok::<_, BoxError>("ok") }
    }));

    for _ in 0..3 {
        failing.clone().oneshot("users").await.unwrap_err();
    }
    assert_eq!(
        here.handle().state(&Class::new("users")),
        BreakerState::Open
    );
    state_becomes(&there, "users", BreakerState::Open).await;
    assert_eq!(
        there.handle().state(&Class::new("boards")),
        BreakerState::Closed
    );

    // The other replica fails fast for the rest of the trip, without a call.
    let err = healthy.clone().oneshot("users").await.unwrap_err();
    let retry_after = find::<BreakerOpen>(&*err).unwrap().retry_after().unwrap();
    assert!(retry_after <= Duration::from_secs(2), "{retry_after:?}");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);

    // A replica that starts during the trip finds it in Redis.
    let late = breaker(&server).await;
    state_becomes(&late, "users", BreakerState::Open).await;

    // No echo: neither heard trip came back to the replica that tripped,
    // nor counted as a trip of their own.
    assert_eq!(here.handle().stats().class("users").unwrap().trips, 1);
    assert_eq!(there.handle().stats().class("users").unwrap().trips, 0);
    assert_eq!(late.handle().stats().class("users").unwrap().trips, 0);

    // Once the trip is over, the other replica probes and closes on its own.
    support::eventually("a probe closes it", || {
        let healthy = healthy.clone();
        async move { healthy.oneshot("users").await.ok() }
    })
    .await;
    assert_eq!(
        there.handle().state(&Class::new("users")),
        BreakerState::Closed
    );
    assert_eq!(
        here.handle().state(&Class::new("users")),
        BreakerState::Open
    );
}
