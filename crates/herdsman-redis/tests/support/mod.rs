//! What the Redis tests share: a server of their own, replicas on it, and
//! bounded waits on Redis state (its TTLs are real time: the tests poll
//! for a state rather than sleep and assert speed).

#![allow(dead_code, unreachable_pub)]

use std::{future::Future, time::Duration};

use herdsman_redis::{dev::RedisServer, Redis, RedisSettings};

/// Settings for a replica of `server`, with short leases.
pub fn settings(server: &RedisServer) -> RedisSettings {
    RedisSettings {
        op_timeout: Duration::from_millis(200),
        flight_lease: Duration::from_millis(1500),
        ..RedisSettings::new(server.url())
    }
}

/// A replica's connection to `server`.
pub fn replica(server: &RedisServer) -> Redis {
    Redis::new(settings(server)).unwrap()
}

/// Polls `check` until it answers `Some`, for at most 10 seconds.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A replica's connection to `server`, once it hears the others.
pub async fn subscribed_replica(server: &RedisServer) -> Redis {
    let redis = replica(server);
    eventually("subscribed", || async {
        redis.is_subscribed().then_some(())
    })
    .await;
    redis
}
