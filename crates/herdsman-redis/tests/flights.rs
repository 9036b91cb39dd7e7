//! `RedisFlights` against a real `redis-server`: one upstream call across
//! replicas.
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

use futures_util::future::join_all;
use herdsman::{
    backend::{FlightBackend, Lead, StoreBackend},
    cache::CacheLayer,
    dedup::DedupLayer,
    event::Invalidation,
    key::Key,
    BoxError,
};
use herdsman_redis::{dev::RedisServer, PlainCodec, Redis, RedisFlights, RedisStore};
use support::{replica, subscribed_replica};
use tokio::sync::Notify;
use tower::{service_fn, util::BoxCloneSyncService, Layer, Service, ServiceExt};

type KeyOf = fn(&&'static str) -> Option<Key>;

fn key_of(req: &&'static str) -> Option<Key> {
    Some(Key::from(*req))
}

async fn lead(flights: &RedisFlights<PlainCodec>, key: &str) -> Lead<String> {
    FlightBackend::<String>::lead(flights, &Key::from(key))
        .get()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn identical_calls_spread_over_three_replicas_make_one_upstream_call() {
    let server = RedisServer::start().await.unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let upstream = {
        let calls = calls.clone();
        service_fn(move |req: &'static str| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                // Long enough for every replica to ask while it runs.
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, Infallible>(format!("{req} from upstream"))
            }
        })
    };
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let flights = RedisFlights::new(subscribed_replica(&server).await, PlainCodec);
        let layer = DedupLayer::new(key_of as KeyOf).with_flight_backend(flights);
        replicas.push(layer.layer(upstream.clone()));
    }

    let requests = (0..300).map(|i| replicas[i % 3].clone().oneshot("/users"));
    let answers = join_all(requests).await;
    assert!(answers
        .iter()
        .all(|a| matches!(a.as_deref(), Ok("/users from upstream"))));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn a_dead_holders_lease_expires_and_another_replica_takes_over() {
    let server = RedisServer::start().await.unwrap();
    let dead = RedisFlights::new(replica(&server), PlainCodec);
    let heir = RedisFlights::new(subscribed_replica(&server).await, PlainCodec);
    let third = RedisFlights::new(subscribed_replica(&server).await, PlainCodec);

    // The holder takes the lease, then dies without finishing.
    assert!(matches!(lead(&dead, "/a").await, Lead::Call));
    drop(dead);

    // The heir waits out the lease (1.5 s), then holds it ...
    let started = tokio::time::Instant::now();
    assert!(matches!(lead(&heir, "/a").await, Lead::Call));
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "waited for the lease"
    );

    // ... so that the third replica waits for the heir's value.
    let waiting = tokio::spawn(async move { lead(&third, "/a").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "follows the heir");
    FlightBackend::<String>::finish(&heir, &Key::from("/a"), Some(&"a from heir".to_string()));
    match waiting.await.unwrap() {
        Lead::Answered(value) => assert_eq!(value, "a from heir"),
        Lead::Call => panic!("the heir's value was not handed over"),
    }
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn a_holder_without_a_value_lets_the_waiting_replicas_call() {
    let server = RedisServer::start().await.unwrap();
    let holder = RedisFlights::new(replica(&server), PlainCodec);
    let other = RedisFlights::new(subscribed_replica(&server).await, PlainCodec);

    assert!(matches!(lead(&holder, "/a").await, Lead::Call));
    let waiting = tokio::spawn(async move { lead(&other, "/a").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    FlightBackend::<String>::finish(&holder, &Key::from("/a"), None);
    let started = tokio::time::Instant::now();
    assert!(matches!(waiting.await.unwrap(), Lead::Call));
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "told, not timed out"
    );
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn with_redis_down_every_leader_calls_and_when_it_is_back_they_coordinate_again() {
    let mut server = RedisServer::start().await.unwrap();
    let here = RedisFlights::new(subscribed_replica(&server).await, PlainCodec);
    let there = RedisFlights::new(subscribed_replica(&server).await, PlainCodec);

    server.kill().await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), lead(&here, "/a")).await;
    assert!(matches!(answer.unwrap(), Lead::Call));
    assert!(matches!(lead(&there, "/a").await, Lead::Call), "both call");

    server.restart().await.unwrap();
    let mut n = 0;
    let key = support::eventually("coordinating again", || {
        n += 1;
        let (here, url) = (&here, server.url());
        async move {
            // A leader calls whether it holds the lease or Redis is away:
            // look at Redis to tell.
            let key: &'static str = format!("/b{n}").leak();
            let called = matches!(lead(here, key).await, Lead::Call);
            (called && lease_exists(&url, key).await).then_some(key)
        }
    })
    .await;
    let waiting = tokio::spawn(async move { lead(&there, key).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    FlightBackend::<String>::finish(&here, &Key::from(key), Some(&"b".to_string()));
    assert!(matches!(waiting.await.unwrap(), Lead::Answered(v) if v == "b"));
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn a_replica_that_asks_after_the_holder_ended_gets_its_value() {
    let server = RedisServer::start().await.unwrap();
    let holder = RedisFlights::new(replica(&server), PlainCodec);
    let late = RedisFlights::new(subscribed_replica(&server).await, PlainCodec);

    assert!(matches!(lead(&holder, "/a").await, Lead::Call));
    FlightBackend::<String>::finish(&holder, &Key::from("/a"), Some(&"a".to_string()));
    support::eventually("the flight ended", || async {
        lease_of(&server.url(), "/a")
            .await
            .is_none_or(|lease| lease.len() != 16)
            .then_some(())
    })
    .await;

    // One round trip, and no second call: the holder's value.
    match lead(&late, "/a").await {
        Lead::Answered(value) => assert_eq!(value, "a"),
        Lead::Call => panic!("a second call of a flight that just ended"),
    }
    // Not for long: once the value's time is up, the next replica calls.
    support::eventually("a new flight", || async {
        matches!(lead(&late, "/a").await, Lead::Call).then_some(())
    })
    .await;

    // A flight that ended without a value leaves nothing to wait for.
    assert!(matches!(lead(&holder, "/b").await, Lead::Call));
    FlightBackend::<String>::finish(&holder, &Key::from("/b"), None);
    support::eventually("the lease released", || async {
        lease_of(&server.url(), "/b").await.is_none().then_some(())
    })
    .await;
    assert!(matches!(lead(&late, "/b").await, Lead::Call));
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn after_a_cache_invalidation_a_finished_flight_answers_no_more() {
    let server = RedisServer::start().await.unwrap();
    let holder = RedisFlights::new(subscribed_replica(&server).await, PlainCodec);
    let late = RedisFlights::new(subscribed_replica(&server).await, PlainCodec);
    let writer = RedisStore::new(replica(&server), PlainCodec);

    assert!(matches!(lead(&holder, "/a").await, Lead::Call));
    FlightBackend::<String>::finish(&holder, &Key::from("/a"), Some(&"old".to_string()));
    support::eventually("the flight ended", || async {
        lease_of(&server.url(), "/a")
            .await
            .is_some_and(|lease| lease.len() != 16)
            .then_some(())
    })
    .await;

    // A write on another replica invalidates the key: the value the
    // finished flight holds may be what it replaced.
    StoreBackend::<String>::invalidate(&writer, &Invalidation::Key(Key::from("/a")));
    support::eventually("the flights heard it", || async {
        generation(&server.url()).await.filter(|&g| g > 0)
    })
    .await;
    assert!(
        lease_of(&server.url(), "/a").await.is_some(),
        "the finished lease is still there"
    );
    assert!(matches!(lead(&late, "/a").await, Lead::Call), "a new call");
}

/// The flights' generation, bumped by cache invalidations.
async fn generation(url: &str) -> Option<u64> {
    let client = redis::Client::open(url).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("GET")
        .arg("herdsman:flight-generation")
        .query_async(&mut con)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_replica_whose_l2_missed_before_the_holder_ended_makes_no_second_call() {
    let server = RedisServer::start().await.unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let upstream = {
        let calls = calls.clone();
        service_fn(move |req: String| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, Infallible>(format!("{req} from upstream")) }
        })
    };
    let stack = |redis: Redis, gate: Option<&Gate>| {
        let dedup = DedupLayer::new(string_key_of as StringKeyOf)
            .with_flight_backend(RedisFlights::new(redis.clone(), PlainCodec))
            .layer(upstream.clone());
        let inner = match gate {
            Some(gate) => gate.before(dedup),
            None => BoxCloneSyncService::new(dedup),
        };
        let cache = CacheLayer::<StringKeyOf, String>::new(string_key_of as StringKeyOf)
            .with_ttl(Duration::from_secs(60))
            .with_store_backend(RedisStore::new(redis, PlainCodec));
        BoxCloneSyncService::new(cache.layer(inner))
    };
    let holder = stack(subscribed_replica(&server).await, None);
    let gate = Gate::default();
    let late = stack(subscribed_replica(&server).await, Some(&gate));

    // The late replica's lookups (L1, then L2 in Redis) miss; it stops
    // before its single-flight asks for the lease ...
    let asking = tokio::spawn(late.oneshot("/a".to_string()));
    gate.reached.notified().await;
    // ... while the holder makes its call and ends its flight.
    assert_eq!(
        holder.oneshot("/a".to_string()).await.unwrap(),
        "/a from upstream"
    );
    support::eventually("the flight ended", || async {
        lease_of(&server.url(), "/a")
            .await
            .is_none_or(|lease| lease.len() != 16)
            .then_some(())
    })
    .await;
    gate.go.notify_one();

    assert_eq!(asking.await.unwrap().unwrap(), "/a from upstream");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one upstream call");
}

type StringKeyOf = fn(&String) -> Option<Key>;

#[allow(clippy::ptr_arg)]
fn string_key_of(req: &String) -> Option<Key> {
    Some(Key::from(req.as_str()))
}

/// Holds requests between two layers: says when one reached it, and lets
/// it through when told.
#[derive(Clone, Default)]
struct Gate {
    reached: Arc<Notify>,
    go: Arc<Notify>,
}

impl Gate {
    /// `inner`, behind this gate.
    fn before<S>(&self, inner: S) -> BoxCloneSyncService<String, String, BoxError>
    where
        S: Service<String, Response = String, Error = BoxError> + Clone + Send + Sync + 'static,
        S::Future: Send,
    {
        let gate = self.clone();
        BoxCloneSyncService::new(service_fn(move |req: String| {
            let (gate, inner) = (gate.clone(), inner.clone());
            async move {
                gate.reached.notify_one();
                gate.go.notified().await;
                inner.oneshot(req).await
            }
        }))
    }
}

/// The raw value of `key`'s flight lease.
async fn lease_of(url: &str, key: &str) -> Option<Vec<u8>> {
    let client = redis::Client::open(url).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("GET")
        .arg(format!("herdsman:flight:{key}"))
        .query_async(&mut con)
        .await
        .unwrap()
}

async fn lease_exists(url: &str, key: &str) -> bool {
    let client = redis::Client::open(url).unwrap();
    let Ok(mut con) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    let name = format!("herdsman:flight:{key}");
    redis::cmd("EXISTS")
        .arg(name)
        .query_async::<bool>(&mut con)
        .await
        .unwrap_or(false)
}
