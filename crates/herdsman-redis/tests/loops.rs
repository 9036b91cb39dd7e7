//! `RedisLoops` against a real `redis-server`: one poller per key across
//! replicas, and its change notices.
//!
//! `cargo test -p herdsman-redis -- --ignored` (needs `redis-server` on
//! `PATH`).

mod support;

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::FutureExt;
use herdsman::{
    backend::{LoopBackend, Role},
    key::Key,
    registry::RegistryLayer,
};
use herdsman_redis::{dev::RedisServer, RedisLoops, RedisSettings};
use support::{eventually, subscribed_replica};
use tower::{service_fn, Layer};

const INTERVAL: Duration = Duration::from_millis(300);

async fn claim(loops: &RedisLoops, key: &str) -> Role {
    loops.claim(&Key::from(key), INTERVAL).get().await
}

fn follows(role: Role) -> Option<Duration> {
    match role {
        Role::Follow { for_at_most } => Some(for_at_most),
        Role::Poll => None,
    }
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn one_replica_polls_a_key_and_renews_its_claim_while_the_others_follow() {
    let server = RedisServer::start().await.unwrap();
    let here = RedisLoops::new(subscribed_replica(&server).await);
    let there = RedisLoops::new(subscribed_replica(&server).await);

    assert_eq!(claim(&here, "/board").await, Role::Poll);
    let lease = support::settings(&server).loop_lease;
    let waits = follows(claim(&there, "/board").await).expect("follows");
    assert!(waits <= INTERVAL + lease, "{waits:?}");
    assert_eq!(claim(&here, "/board").await, Role::Poll, "renewed");
    assert_eq!(claim(&there, "/other").await, Role::Poll, "per key");
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn a_change_announced_by_the_poller_reaches_the_followers_only() {
    let server = RedisServer::start().await.unwrap();
    let poller = RedisLoops::new(subscribed_replica(&server).await);
    let followers = [
        RedisLoops::new(subscribed_replica(&server).await),
        RedisLoops::new(subscribed_replica(&server).await),
    ];
    let key = Key::from("/board");
    let mut own = poller.changed(&key);
    let mut other_key = followers[0].changed(&Key::from("/other"));
    let changes: Vec<_> = followers.iter().map(|f| f.changed(&key)).collect();

    poller.announce(&key, 42);
    for change in changes {
        tokio::time::timeout(Duration::from_secs(5), change)
            .await
            .expect("heard");
    }
    assert!((&mut own).now_or_never().is_none(), "not its own change");
    assert!((&mut other_key).now_or_never().is_none(), "not another key");
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn a_released_key_is_taken_at_once_and_a_dead_pollers_within_its_claim() {
    let server = RedisServer::start().await.unwrap();
    let settings = RedisSettings {
        loop_lease: Duration::from_millis(400),
        ..support::settings(&server)
    };
    let replica = || async {
        let redis = herdsman_redis::Redis::new(settings.clone()).unwrap();
        eventually("subscribed", || async {
            redis.is_subscribed().then_some(())
        })
        .await;
        RedisLoops::new(redis)
    };
    let (first, second) = (replica().await, replica().await);

    assert_eq!(claim(&first, "/a").await, Role::Poll);
    assert!(follows(claim(&second, "/a").await).is_some());
    first.release(&Key::from("/a"));
    eventually("taken over", || async {
        (claim(&second, "/a").await == Role::Poll).then_some(())
    })
    .await;

    // The second poller dies (no more claims): the first waits out the
    // claim it is told of, then polls.
    drop(second);
    let waits = follows(claim(&first, "/a").await).expect("still claimed");
    assert!(waits <= INTERVAL + settings.loop_lease, "{waits:?}");
    tokio::time::sleep(waits).await;
    eventually("claim ended", || async {
        (claim(&first, "/a").await == Role::Poll).then_some(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn with_redis_down_every_replica_polls() {
    let mut server = RedisServer::start().await.unwrap();
    let here = RedisLoops::new(subscribed_replica(&server).await);
    let there = RedisLoops::new(subscribed_replica(&server).await);
    assert_eq!(claim(&here, "/a").await, Role::Poll);

    server.kill().await.unwrap();
    let role = tokio::time::timeout(Duration::from_secs(5), claim(&there, "/a")).await;
    assert_eq!(role.unwrap(), Role::Poll);
}

type KeyOf = fn(&&'static str) -> Option<Key>;

fn key_of(req: &&'static str) -> Option<Key> {
    Some(Key::from(*req))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn three_registries_poll_a_key_once_and_a_change_reaches_all_their_subscribers() {
    let server = RedisServer::start().await.unwrap();
    let version = Arc::new(AtomicU64::new(0));
    let calls: Arc<[AtomicU64; 3]> = Arc::default();
    let mut replicas = Vec::new();
    for replica in 0..3 {
        let (version, calls) = (version.clone(), calls.clone());
        let upstream = service_fn(move |_: &'static str| {
            calls[replica].fetch_add(1, Ordering::SeqCst);
            let v = version.load(Ordering::SeqCst);
            async move { Ok::<_, Infallible>(format!("v{v}")) }
        });
        let registry = RegistryLayer::new(key_of as KeyOf)
            .with_interval(INTERVAL)
            .with_floor(Duration::from_millis(100))
            .with_jitter(0.0)
            .with_loop_backend(RedisLoops::new(subscribed_replica(&server).await))
            .layer(upstream);
        replicas.push(registry);
    }
    let subscribers: Vec<_> = (0..300)
        .map(|i| replicas[i % 3].subscribe("/board").unwrap())
        .collect();
    let all_see = |value: &'static str| {
        let subscribers = &subscribers;
        move || async move {
            subscribers
                .iter()
                .all(|s| {
                    s.current()
                        .is_some_and(|u| u.value().map(String::as_str) == Some(value))
                })
                .then_some(())
        }
    };
    eventually("every subscriber has the value", all_see("v0")).await;

    // Four intervals without a change: the poller polls, the others wait.
    let before: u64 = calls.iter().map(|c| c.load(Ordering::SeqCst)).sum();
    tokio::time::sleep(INTERVAL * 4).await;
    let during: u64 = calls.iter().map(|c| c.load(Ordering::SeqCst)).sum::<u64>() - before;
    assert!(
        (3..=6).contains(&during),
        "{during} calls in 4 intervals, cluster-wide"
    );

    version.store(1, Ordering::SeqCst);
    eventually("the change reached every subscriber", all_see("v1")).await;
}
