//! The Coordinator on backends given to its builder: asked only on a miss
//! of its own store, other replicas' invalidations applied without echo,
//! a configured Redis URL never silently ignored, other replicas' breaker
//! trips heard, and the backends' dependencies' health in the stats.

mod support;

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::StreamExt;
use herdsman::{
    backend::{
        Answer, Backends, RemoteInvalidations, Shelved, StoreBackend, TripBackend, TripListener,
    },
    class::Class,
    config::{ClassConfig, Config, Environment, RedisSettings},
    event::BreakerState,
    event::Invalidation,
    http::SharedBody,
    key::Key,
    Coordinator,
};
use http::{Request, Response};
use http_body_util::Full;
use support::{http::reply, settle, Calls};
use tokio::sync::mpsc;
use tower::{service_fn, Layer, ServiceExt};

type Value = Response<SharedBody>;

/// A store backend that holds nothing, counts what it is asked, and hands
/// the coordinator the invalidations the test sends as another replica's.
#[derive(Clone, Default)]
struct Recording {
    lookups: Arc<AtomicUsize>,
    inserts: Arc<AtomicUsize>,
    invalidated: Arc<Mutex<Vec<Invalidation>>>,
    remote: Arc<Mutex<Option<mpsc::UnboundedReceiver<Invalidation>>>>,
}

struct Remote(mpsc::UnboundedReceiver<Invalidation>);

impl RemoteInvalidations for Remote {
    fn next(&mut self) -> Pin<Box<dyn Future<Output = Option<Invalidation>> + Send + '_>> {
        Box::pin(self.0.recv())
    }
}

impl StoreBackend<Value> for Recording {
    fn lookup(&self, _: &Key) -> Answer<Option<Shelved<Value>>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        Answer::Now(None)
    }

    fn insert(&self, _: &Key, _: &Value, _: Duration, _: Duration) {
        self.inserts.fetch_add(1, Ordering::SeqCst);
    }

    fn invalidate(&self, what: &Invalidation) {
        self.invalidated.lock().unwrap().push(what.clone());
    }

    fn remote_invalidations(&self) -> Option<Box<dyn RemoteInvalidations>> {
        let receiver = self.remote.lock().unwrap().take()?;
        Some(Box::new(Remote(receiver)))
    }
}

fn config() -> Config {
    let mut config = Config::profile(Environment::Test);
    config.cache.class.ttl = Duration::from_secs(60);
    config.registry.class.interval = Duration::from_secs(60);
    config.classes.insert(
        "board".into(),
        ClassConfig {
            paths: vec!["/board".into()],
            public: true,
            ..ClassConfig::default()
        },
    );
    config
}

fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri).body(Full::default()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn another_replicas_invalidation_reaches_the_cache_and_registry_but_not_the_backend() {
    let (send, receive) = mpsc::unbounded_channel();
    let store = Recording {
        remote: Arc::new(Mutex::new(Some(receive))),
        ..Recording::default()
    };
    let coordinator = Coordinator::builder()
        .environment(Environment::Test)
        .config(config())
        .backends(Backends::local().with_store(store.clone()))
        .build()
        .unwrap();
    let calls = Calls::default();
    let counter = calls.clone();
    let svc =
        coordinator
            .layer()
            .layer(service_fn(move |_: Request<Full<Bytes>>| {
                let n = counter.next();
                async move {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!("#{n}")))))
                }
            }));

    let mut sub = svc.subscribe(get("http://api/board")).unwrap();
    assert_eq!(sub.next().await.unwrap().version(), 1);
    let body = reply(svc.clone().oneshot(get("http://api/other")).await.unwrap());
    assert_eq!(body.await.unwrap().body, "#2");
    // An L1 hit: the backend is not asked again.
    let lookups = store.lookups.load(Ordering::SeqCst);
    reply(svc.clone().oneshot(get("http://api/other")).await.unwrap())
        .await
        .unwrap();
    assert_eq!(store.lookups.load(Ordering::SeqCst), lookups);
    assert_eq!(calls.get(), 2);

    send.send(Invalidation::Path("/board".into())).unwrap();
    send.send(Invalidation::Path("/other".into())).unwrap();
    let update = tokio::time::timeout(Duration::from_secs(1), sub.next())
        .await
        .expect("pushed at once, not at the next interval")
        .unwrap();
    assert_eq!(update.version(), 2, "the registry polled");
    let body = reply(svc.clone().oneshot(get("http://api/other")).await.unwrap());
    assert_eq!(body.await.unwrap().body, "#4", "the L1 entry was dropped");
    settle().await;
    assert!(
        store.invalidated.lock().unwrap().is_empty(),
        "a remote invalidation is never sent back: {:?}",
        store.invalidated.lock().unwrap()
    );

    // This replica's own invalidations still reach the backend.
    coordinator.invalidate(&Invalidation::Path("/other".into()));
    assert_eq!(
        *store.invalidated.lock().unwrap(),
        [Invalidation::Path("/other".into())]
    );
}

#[test]
fn a_redis_url_without_backends_is_refused_naming_redis_url() {
    let mut config = config();
    config.redis = RedisSettings::new("redis://user:hunter2-secret@127.0.0.1:6379");
    let err = Coordinator::builder()
        .environment(Environment::Test)
        .config(config.clone())
        .build()
        .unwrap_err();
    let shown = err.to_string();
    assert_eq!(err.problems()[0].path, "redis.url");
    assert!(shown.contains("no backends"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    let builder = Coordinator::builder().config(config.clone());
    assert!(!format!("{builder:?}").contains("hunter2"));

    // With backends given, it builds (here in memory, for the test).
    Coordinator::builder()
        .environment(Environment::Test)
        .config(config)
        .backends(Backends::local())
        .build()
        .unwrap();
}

/// A trip backend that keeps the coordinator's listener and what it
/// announced, as another replica would see them.
#[derive(Clone, Default)]
struct Trips {
    listener: Arc<Mutex<Option<TripListener>>>,
    announced: Arc<Mutex<Vec<(Class, Duration)>>>,
}

impl TripBackend for Trips {
    fn announce(&self, class: &Class, open_for: Duration) {
        self.announced
            .lock()
            .unwrap()
            .push((class.clone(), open_for));
    }

    fn listen(&self, listener: TripListener) {
        *self.listener.lock().unwrap() = Some(listener);
    }
}

#[tokio::test(start_paused = true)]
async fn another_replicas_trip_opens_the_coordinators_breaker_of_that_class_only() {
    let trips = Trips::default();
    let coordinator = Coordinator::builder()
        .environment(Environment::Test)
        .config(config())
        .backends(Backends::local().with_trips(trips.clone()))
        .build()
        .unwrap();
    let board = Class::from("board");
    assert_eq!(coordinator.breaker().state(&board), BreakerState::Closed);

    let listener = trips
        .listener
        .lock()
        .unwrap()
        .clone()
        .expect("the breaker listens");
    assert!(listener(&board, Duration::from_secs(30)));
    assert_eq!(coordinator.breaker().state(&board), BreakerState::Open);
    assert_eq!(
        coordinator.breaker().state(&Class::default()),
        BreakerState::Closed
    );
    // A trip heard is never announced again.
    assert!(trips.announced.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_backends_dependency_that_is_down_raises_its_unavailable_alert() {
    let up = Arc::new(AtomicBool::new(true));
    let health = up.clone();
    let coordinator = Coordinator::builder()
        .environment(Environment::Test)
        .config(config())
        .backends(
            Backends::local().with_dependency("store", move || health.load(Ordering::Relaxed)),
        )
        .build()
        .unwrap();
    coordinator.stats().start_monitor();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(coordinator.stats().active_alerts().is_empty());

    up.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let active = coordinator.stats().active_alerts();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].rule.as_str(), "store_unavailable");
    assert!(!coordinator.stats().snapshot().dependencies["store"].up);

    up.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(coordinator.stats().active_alerts().is_empty());
}
