//! `Redis`'s health against a real `redis-server` killed and restarted:
//! the `redis_unavailable` alert and the snapshot's dependency.
//!
//! `cargo test -p herdsman-redis -- --ignored` (needs `redis-server` on
//! `PATH`).

mod support;

use herdsman::{
    backend::{FlightBackend, Lead},
    key::Key,
    stats::Stats,
};
use herdsman_redis::{dev::RedisServer, PlainCodec, RedisFlights};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn redis_killed_raises_redis_unavailable_and_restarted_resolves_it() {
    let mut server = RedisServer::start().await.unwrap();
    let redis = support::subscribed_replica(&server).await;
    let flights = RedisFlights::new(redis.clone(), PlainCodec);
    let stats = Stats::new();
    stats.track_dependency("redis", redis.clone());
    let lead = |key: &str| FlightBackend::<String>::lead(&flights, &Key::from(key)).get();
    let unavailable = |stats: &Stats| {
        stats.evaluate();
        stats
            .active_alerts()
            .iter()
            .any(|alert| alert.rule.as_str() == "redis_unavailable")
    };
    assert!(matches!(lead("/a").await, Lead::Call), "holds the lease");
    assert!(redis.is_up());
    assert!(!unavailable(&stats));

    // Away: the next operation finds out, and the replica calls alone.
    server.kill().await.unwrap();
    assert!(matches!(lead("/b").await, Lead::Call));
    support::eventually("redis_unavailable fires", || async {
        unavailable(&stats).then_some(())
    })
    .await;
    assert!(!stats.snapshot().dependencies["redis"].up);

    // Back: with no request at all, the health's PING notices.
    server.restart().await.unwrap();
    support::eventually("redis_unavailable resolves", || async {
        (!unavailable(&stats)).then_some(())
    })
    .await;
    let health = stats.snapshot().dependencies["redis"];
    assert_eq!((health.up, health.outages), (true, 1));
    assert!(redis.is_up());
}
