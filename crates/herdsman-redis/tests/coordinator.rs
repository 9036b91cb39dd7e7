//! Three Coordinators (replicas) sharing one real `redis-server` through
//! `herdsman_redis::backends`: the guarantees of issue 16 through the whole
//! stack, as an app gets it from `[redis]`.
//!
//! `cargo test -p herdsman-redis --test coordinator -- --ignored` (needs
//! `redis-server` on `PATH`).

mod support;

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::{future::join_all, StreamExt};
use herdsman::{
    config::{ClassConfig, Config, Environment},
    event::Invalidation,
    http::{HttpBody, SharedBody},
    registry::{Subscription, Update},
    Coordinated, Coordinator,
};
use herdsman_redis::dev::RedisServer;
use http::{header, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use support::eventually;
use tower::{service_fn, util::BoxCloneSyncService, Layer, ServiceExt};

type Upstream = BoxCloneSyncService<Request<Full<Bytes>>, Response<Full<Bytes>>, Infallible>;
type Stack = Coordinated<Upstream>;

const INTERVAL: Duration = Duration::from_millis(300);

/// The upstream every replica calls: answers "`{path}` v`{version}` for
/// `{authorization}`" after `delay`, and counts its calls.
#[derive(Clone, Default)]
struct Origin {
    calls: Arc<AtomicU64>,
    version: Arc<AtomicU64>,
    delay: Duration,
}

impl Origin {
    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    fn service(&self) -> Upstream {
        let this = self.clone();
        BoxCloneSyncService::new(service_fn(move |req: Request<Full<Bytes>>| {
            let this = this.clone();
            async move {
                this.calls.fetch_add(1, Ordering::SeqCst);
                if !this.delay.is_zero() {
                    tokio::time::sleep(this.delay).await;
                }
                let user = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .map_or("nobody", |v| v.to_str().unwrap());
                let v = this.version.load(Ordering::SeqCst);
                let body = format!("{} v{v} for {user}", req.uri().path());
                Ok(Response::new(Full::new(Bytes::from(body))))
            }
        }))
    }
}

/// The test profile on `server`: a public class `active` and a private
/// class `me`, 60 s fresh, polled every [`INTERVAL`].
///
/// A poll loop fetches through the stack, its cache included: tests of
/// polling make answers fresh for less than an interval
/// ([`polled_config`]).
fn config(server: &RedisServer) -> Config {
    let mut config = Config::profile(Environment::Test);
    config.redis = support::settings(server);
    config.cache.class.ttl = Duration::from_secs(60);
    config.registry.class.interval = INTERVAL;
    config.registry.class.jitter = 0.0;
    config.registry.floor = Duration::from_millis(100);
    config.registry.allow_fast_polling = true;
    for (name, path, public) in [("active", "/api/active", true), ("me", "/api/me", false)] {
        config.classes.insert(
            name.into(),
            ClassConfig {
                paths: vec![path.into()],
                public,
                ..ClassConfig::default()
            },
        );
    }
    config
}

/// [`config`] with answers fresh for two thirds of an interval, so that
/// each poll reaches the upstream.
fn polled_config(server: &RedisServer) -> Config {
    let mut config = config(server);
    config.cache.class.ttl = INTERVAL * 2 / 3;
    config
}

/// A replica: a Coordinator on the Redis backends of `config`, around the
/// shared origin.
async fn replica(config: &Config, origin: &Origin) -> (Coordinator, Stack) {
    let backends = herdsman_redis::backends(&config.redis).await.unwrap();
    let coordinator = Coordinator::builder()
        .environment(Environment::Test)
        .config(config.clone())
        .backends(backends)
        .build()
        .unwrap();
    let svc = coordinator.layer().layer(origin.service());
    (coordinator, svc)
}

async fn replicas(n: usize, config: &Config, origin: &Origin) -> Vec<(Coordinator, Stack)> {
    let mut replicas = Vec::new();
    for _ in 0..n {
        replicas.push(replica(config, origin).await);
    }
    replicas
}

fn request(method: Method, path: &str, user: Option<&str>) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(user) = user {
        builder = builder.header(header::AUTHORIZATION, user);
    }
    builder.body(Full::default()).unwrap()
}

fn get(path: &str) -> Request<Full<Bytes>> {
    request(Method::GET, path, None)
}

async fn fetch(svc: &Stack, req: Request<Full<Bytes>>) -> String {
    let response: Response<HttpBody<Full<Bytes>>> = svc.clone().oneshot(req).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

fn body_of(update: &Update<Response<SharedBody>>) -> Option<String> {
    let value = update.last_good()?;
    Some(String::from_utf8(value.body().data().to_vec()).unwrap())
}

/// Waits until every subscription's latest value is `expected`; returns
/// their fingerprints (content ETags and SSE ids).
async fn all_see(subscriptions: &[Subscription<Response<SharedBody>>], expected: &str) -> Vec<u64> {
    eventually(&format!("every subscriber sees {expected:?}"), || async {
        let updates: Vec<_> = subscriptions.iter().map(Subscription::current).collect();
        updates
            .iter()
            .all(|u| u.as_ref().and_then(body_of).as_deref() == Some(expected))
            .then(|| {
                updates
                    .iter()
                    .map(|u| u.as_ref().unwrap().fingerprint())
                    .collect()
            })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_thousand_concurrent_gets_over_three_coordinators_make_one_upstream_call() {
    let server = RedisServer::start().await.unwrap();
    let origin = Origin {
        delay: Duration::from_millis(300),
        ..Origin::default()
    };
    let replicas = replicas(3, &config(&server), &origin).await;
    let answers = join_all((0..1000).map(|i| fetch(&replicas[i % 3].1, get("/api/active")))).await;
    assert!(answers.iter().all(|a| a == "/api/active v0 for nobody"));
    assert_eq!(origin.calls(), 1, "one upstream call, cluster-wide");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn three_hundred_subscribers_over_three_coordinators_share_one_poll_loop() {
    let server = RedisServer::start().await.unwrap();
    let origin = Origin::default();
    let replicas = replicas(3, &polled_config(&server), &origin).await;
    let subscriptions: Vec<_> = (0..300)
        .map(|i| replicas[i % 3].1.subscribe(get("/api/active")).unwrap())
        .collect();
    let first = all_see(&subscriptions, "/api/active v0 for nobody").await;
    assert!(
        first.iter().all(|f| *f == first[0]),
        "one content, one version on every replica"
    );

    // Four intervals without a change: one replica polls, the others
    // follow (three replicas alone would make 12 calls).
    let before = origin.calls();
    tokio::time::sleep(INTERVAL * 4).await;
    let during = origin.calls() - before;
    assert!(
        (3..=6).contains(&during),
        "{during} calls in 4 intervals, cluster-wide"
    );

    origin.version.store(1, Ordering::SeqCst);
    let changed = all_see(&subscriptions, "/api/active v1 for nobody").await;
    assert!(changed.iter().all(|f| *f == changed[0] && *f != first[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn when_the_pollers_coordinator_is_dropped_another_takes_over_within_the_lease() {
    let server = RedisServer::start().await.unwrap();
    let origin = Origin::default();
    let config = polled_config(&server);
    let mut replicas = replicas(3, &config, &origin).await;
    let subscriptions: Vec<Vec<_>> = replicas
        .iter()
        .map(|(_, svc)| {
            (0..10)
                .map(|_| svc.subscribe(get("/api/active")).unwrap())
                .collect()
        })
        .collect();
    for subs in &subscriptions {
        all_see(subs, "/api/active v0 for nobody").await;
    }

    // Drop one replica at a time, its subscribers with it, until the
    // poller is gone: the others' subscribers still get each change within
    // an interval plus the loop lease.
    let mut subscriptions = subscriptions;
    for round in 1..=2u64 {
        let (gone, _) = replicas.remove(0);
        drop(subscriptions.remove(0));
        drop(gone);
        origin.version.store(round, Ordering::SeqCst);
        let expected = format!("/api/active v{round} for nobody");
        let start = tokio::time::Instant::now();
        for subs in &subscriptions {
            all_see(subs, &expected).await;
        }
        assert!(
            start.elapsed() <= INTERVAL * 2 + config.redis.loop_lease,
            "took over in {:?}",
            start.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_write_on_one_replica_is_fresh_on_the_others_at_once() {
    let server = RedisServer::start().await.unwrap();
    let origin = Origin::default();
    let replicas = replicas(3, &config(&server), &origin).await;
    for (_, svc) in &replicas {
        assert_eq!(
            fetch(svc, get("/api/active")).await,
            "/api/active v0 for nobody"
        );
    }
    let subscriptions: Vec<_> = replicas
        .iter()
        .map(|(_, svc)| svc.subscribe(get("/api/active")).unwrap())
        .collect();
    all_see(&subscriptions, "/api/active v0 for nobody").await;

    // What Redis carries on the invalidations' channel.
    let client = redis::Client::open(server.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe("herdsman:channel:invalidations")
        .await
        .unwrap();

    // A POST through replica 0's stack: the others' caches (60 s fresh)
    // and registries learn of it through Redis.
    origin.version.store(1, Ordering::SeqCst);
    fetch(&replicas[0].1, request(Method::POST, "/api/active", None)).await;
    let expected = "/api/active v1 for nobody";
    all_see(&subscriptions, expected).await;
    for (_, svc) in &replicas {
        eventually("fresh on every replica", || async {
            (fetch(svc, get("/api/active")).await == expected).then_some(())
        })
        .await;
    }
    // One publish: the replicas that applied it did not send it again.
    let mut messages = pubsub.on_message();
    assert!(messages.next().await.is_some());
    let again = tokio::time::timeout(Duration::from_millis(500), messages.next()).await;
    assert!(again.is_err(), "an echo: {again:?}");
    drop(messages);

    // `Coordinator::invalidate` on replica 2, the same.
    origin.version.store(2, Ordering::SeqCst);
    replicas[2]
        .0
        .invalidate(&Invalidation::Path("/api/active".into()));
    all_see(&subscriptions, "/api/active v2 for nobody").await;
    for (_, svc) in &replicas {
        eventually("fresh on every replica", || async {
            (fetch(svc, get("/api/active")).await == "/api/active v2 for nobody").then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn with_redis_killed_every_request_is_answered_and_coordination_resumes_on_restart() {
    let mut server = RedisServer::start().await.unwrap();
    let origin = Origin {
        delay: Duration::from_millis(300),
        ..Origin::default()
    };
    let replicas = replicas(3, &config(&server), &origin).await;

    server.kill().await.unwrap();
    let paths: Vec<String> = (0..30)
        .map(|i| format!("/api/active?down={}", i % 3))
        .collect();
    let answers = join_all(
        paths
            .iter()
            .enumerate()
            .map(|(i, path)| fetch(&replicas[i % 3].1, get(path))),
    )
    .await;
    assert!(answers.iter().all(|a| a == "/api/active v0 for nobody"));
    let down = origin.calls();
    assert!(down <= 9, "each replica coordinates alone: {down} calls");

    server.restart().await.unwrap();
    eventually("coordinating again", || async {
        let before = origin.calls();
        let path = format!("/api/active?up={before}");
        join_all((0..30).map(|i| fetch(&replicas[i % 3].1, get(&path)))).await;
        (origin.calls() - before == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_private_answer_reaches_its_user_on_another_replica_and_never_another_user() {
    let server = RedisServer::start().await.unwrap();
    let origin = Origin::default();
    let replicas = replicas(2, &config(&server), &origin).await;
    let me = |user| request(Method::GET, "/api/me", Some(user));

    assert_eq!(
        fetch(&replicas[0].1, me("alice")).await,
        "/api/me v0 for alice"
    );
    origin.version.store(1, Ordering::SeqCst);
    // Alice's answer through Redis on the other replica (it is written
    // behind: wait for it), bob's own from the upstream.
    eventually("alice's answer in Redis", || async {
        (cache_entries(&server.url()).await == 1).then_some(())
    })
    .await;
    assert_eq!(
        fetch(&replicas[1].1, me("alice")).await,
        "/api/me v0 for alice"
    );
    assert_eq!(fetch(&replicas[1].1, me("bob")).await, "/api/me v1 for bob");
    assert_eq!(fetch(&replicas[0].1, me("bob")).await, "/api/me v1 for bob");
    assert_eq!(
        fetch(&replicas[1].1, get("/api/me")).await,
        "/api/me v1 for nobody"
    );
}

/// How many cache entries Redis holds.
async fn cache_entries(url: &str) -> usize {
    let client = redis::Client::open(url).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("KEYS")
        .arg("herdsman:cache:*")
        .query_async::<Vec<Vec<u8>>>(&mut con)
        .await
        .unwrap()
        .len()
}
