//! `RedisStore` against a real `redis-server`: the shared L2 cache.
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

use herdsman::{
    backend::{Shelved, StoreBackend},
    cache::CacheLayer,
    class::Class,
    event::Invalidation,
    key::Key,
};
use herdsman_redis::{dev::RedisServer, PlainCodec, RedisStore};
use support::{eventually, replica, subscribed_replica};
use tower::{service_fn, Layer, ServiceExt};

const TTL: Duration = Duration::from_secs(60);

async fn lookup(store: &RedisStore<PlainCodec>, key: &str) -> Option<Shelved<String>> {
    StoreBackend::<String>::lookup(store, &Key::from(key))
        .get()
        .await
}

fn insert(store: &RedisStore<PlainCodec>, key: &str, value: &str, age: Duration, ttl: Duration) {
    store.insert(&Key::from(key), &value.to_string(), age, ttl);
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn an_entry_written_by_one_replica_is_found_by_another_with_its_age() {
    let server = RedisServer::start().await.unwrap();
    let here = RedisStore::new(replica(&server), PlainCodec);
    let there = RedisStore::new(replica(&server), PlainCodec);

    insert(&here, "/a", "a from here", Duration::from_secs(5), TTL);
    let found = eventually("written through", || lookup(&there, "/a")).await;
    assert_eq!(found.value, "a from here");
    assert_eq!(found.ttl, TTL);
    assert!(
        found.age >= Duration::from_secs(5) && found.age < TTL,
        "{:?}",
        found.age
    );
    assert!(lookup(&there, "/b").await.is_none(), "another key");
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn an_entry_expires_when_it_stops_being_fresh() {
    let server = RedisServer::start().await.unwrap();
    let store = RedisStore::new(replica(&server), PlainCodec);

    // 300 ms left of its freshness, and nothing at all for a stale one.
    insert(
        &store,
        "/a",
        "a",
        Duration::from_millis(700),
        Duration::from_secs(1),
    );
    insert(
        &store,
        "/stale",
        "s",
        Duration::from_secs(2),
        Duration::from_secs(1),
    );
    eventually("stored", || lookup(&store, "/a")).await;
    eventually("expired", || async {
        lookup(&store, "/a").await.is_none().then_some(())
    })
    .await;
    assert!(lookup(&store, "/stale").await.is_none());
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn an_invalidated_key_is_a_miss_on_every_replica_and_they_hear_of_it() {
    let server = RedisServer::start().await.unwrap();
    let here = RedisStore::new(replica(&server), PlainCodec);
    let there = RedisStore::new(subscribed_replica(&server).await, PlainCodec);
    let mut heard = there.invalidations();
    insert(&here, "/a", "a", Duration::ZERO, TTL);
    insert(&here, "/b", "b", Duration::ZERO, TTL);
    eventually("stored", || lookup(&there, "/b")).await;

    StoreBackend::<String>::invalidate(&here, &Invalidation::Key(Key::from("/a")));
    // Right away on the replica that invalidated: its lookups miss until
    // the invalidation reached Redis.
    assert!(lookup(&here, "/a").await.is_none());
    eventually("deleted", || async {
        lookup(&there, "/a").await.is_none().then_some(())
    })
    .await;
    assert_eq!(lookup(&there, "/b").await.unwrap().value, "b");
    assert_eq!(heard.recv().await, Some(Invalidation::Key(Key::from("/a"))));
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn a_broad_invalidation_drops_every_shared_entry() {
    let server = RedisServer::start().await.unwrap();
    let here = RedisStore::new(replica(&server), PlainCodec);
    let there = RedisStore::new(subscribed_replica(&server).await, PlainCodec);
    let mut heard = there.invalidations();
    insert(&here, "/a", "a", Duration::ZERO, TTL);
    insert(&here, "/b", "b", Duration::ZERO, TTL);
    eventually("stored", || lookup(&there, "/b")).await;

    let users = Invalidation::Class(Class::new("users"));
    StoreBackend::<String>::invalidate(&here, &users);
    eventually("dropped", || async {
        (lookup(&there, "/a").await.is_none() && lookup(&there, "/b").await.is_none()).then_some(())
    })
    .await;
    assert_eq!(heard.recv().await, Some(users));

    // Entries written after it are shared again.
    insert(&here, "/a", "a again", Duration::ZERO, TTL);
    let found = eventually("stored again", || lookup(&there, "/a")).await;
    assert_eq!(found.value, "a again");
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn with_redis_down_lookups_miss_and_when_it_is_back_entries_are_shared_again() {
    let mut server = RedisServer::start().await.unwrap();
    let here = RedisStore::new(replica(&server), PlainCodec);
    let there = RedisStore::new(replica(&server), PlainCodec);
    insert(&here, "/a", "a", Duration::ZERO, TTL);
    eventually("stored", || lookup(&there, "/a")).await;

    server.kill().await.unwrap();
    // Answered (a miss), never an error, and bounded by the op timeout.
    let miss = tokio::time::timeout(Duration::from_secs(5), lookup(&there, "/a")).await;
    assert_eq!(miss.unwrap(), None);
    insert(&here, "/b", "b", Duration::ZERO, TTL);
    StoreBackend::<String>::invalidate(&here, &Invalidation::All);

    server.restart().await.unwrap();
    // The invalidation made while Redis was away is sent again until it
    // lands; entries written after it are shared.
    eventually("coordinating again", || async {
        insert(&here, "/c", "c", Duration::ZERO, TTL);
        lookup(&there, "/c").await
    })
    .await;
    assert!(lookup(&there, "/a").await.is_none(), "a new, empty server");
}

fn key_of(req: &(&'static str, &'static str)) -> Option<Key> {
    // The path and the caller, as the HTTP key's auth partition does.
    Some(Key::builder().part(req.0).part(req.1).build())
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn replicas_share_responses_through_redis_and_never_across_callers() {
    let server = RedisServer::start().await.unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let upstream = {
        let calls = calls.clone();
        service_fn(move |(path, user): (&'static str, &'static str)| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, Infallible>(format!("{path} for {user}")) }
        })
    };
    type KeyOf = fn(&(&'static str, &'static str)) -> Option<Key>;
    let layer = |redis| {
        CacheLayer::<KeyOf, String>::new(key_of as KeyOf)
            .with_ttl(TTL)
            .with_store_backend(RedisStore::new(redis, PlainCodec))
    };
    let here = layer(replica(&server)).layer(upstream.clone());
    let there = layer(replica(&server)).layer(upstream);

    let alice = ("/me", "alice");
    assert_eq!(here.clone().oneshot(alice).await.unwrap(), "/me for alice");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The write-through is in the background: wait until Redis has it.
    let probe = RedisStore::new(replica(&server), PlainCodec);
    eventually("written through", || {
        StoreBackend::<String>::lookup(&probe, &key_of(&alice).unwrap()).get()
    })
    .await;

    assert_eq!(there.clone().oneshot(alice).await.unwrap(), "/me for alice");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "answered from Redis");
    let bob = ("/me", "bob");
    assert_eq!(there.oneshot(bob).await.unwrap(), "/me for bob");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "bob's own call");
}
