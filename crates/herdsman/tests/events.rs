//! What the layers report to an observer (`with_observer`), the cache's
//! invalidation announcements, and the memory sources, driven through
//! `tower::ServiceExt` with paused tokio time.

mod support;

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::future::join_all;
use herdsman::{
    breaker::{BreakerConfig, BreakerLayer, BreakerState},
    cache::CacheLayer,
    class::Class,
    clock::Clock,
    dedup::{self, DedupLayer},
    event::{Event, Invalidation, MemorySource, Rejection},
    http::{BufferLayer, HttpKey},
    key::Key,
    limit::{self, ClassLimits, LimitLayer, RateKey, RateRule},
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use support::{settle, Recorder};
use tokio::{sync::broadcast::error::TryRecvError, time};
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

type Req = &'static str;

fn class_of(req: &Req) -> Class {
    let name = req.trim_start_matches('/').split('/').next().unwrap();
    match name {
        "" | "other" => Class::default(),
        name => Class::new(name),
    }
}

fn key_of(req: &Req) -> Option<Key> {
    Some(Key::from(*req))
}

fn users() -> Class {
    Class::new("users")
}

/// Answers `req` after `delay`.
fn slow(
    delay: Duration,
) -> impl Service<Req, Response = String, Error = Infallible, Future: Send> + Clone {
    service_fn(move |req: Req| async move {
        time::sleep(delay).await;
        Ok::<_, Infallible>(req.to_string())
    })
}

// --- Dedup ---

#[tokio::test(start_paused = true)]
async fn one_leader_and_nine_followers_report_nine_coalesced_for_their_class() {
    let recorder = Arc::new(Recorder::default());
    let layer = DedupLayer::new(key_of)
        .with_classifier(class_of)
        .with_observer(recorder.clone());
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(slow(Duration::from_millis(50)));

    let storm = (0..10).map(|_| svc.clone().oneshot("/users/7"));
    let lone = svc.clone().oneshot("/other/1");
    let (answers, lone) = tokio::join!(join_all(storm), lone);
    assert!(answers.iter().all(|a| a.as_deref().unwrap() == "/users/7"));
    assert_eq!(lone.unwrap(), "/other/1");

    assert_eq!(recorder.take(), vec![(users(), Event::Coalesced); 9]);
    assert_eq!(layer.handle().stats().coalesced, 9);
}

#[tokio::test(start_paused = true)]
async fn each_reuse_window_hit_reports_reused() {
    let recorder = Arc::new(Recorder::default());
    let svc = ServiceBuilder::new()
        .layer(
            DedupLayer::new(key_of)
                .with_window(Duration::from_secs(1))
                .with_classifier(class_of)
                .with_observer(recorder.clone()),
        )
        .service(slow(Duration::ZERO));

    svc.clone().oneshot("/users/7").await.unwrap();
    svc.clone().oneshot("/users/7").await.unwrap();
    svc.clone().oneshot("/users/7").await.unwrap();
    time::advance(Duration::from_secs(2)).await;
    svc.clone().oneshot("/users/7").await.unwrap(); // the window has ended

    assert_eq!(recorder.take(), vec![(users(), Event::Reused); 2]);
}

#[tokio::test(start_paused = true)]
async fn dedup_without_a_classifier_reports_the_default_class() {
    let recorder = Arc::new(Recorder::default());
    let svc = ServiceBuilder::new()
        .layer(DedupLayer::new(key_of).with_observer(recorder.clone()))
        .service(slow(Duration::from_millis(50)));

    let (a, b) = tokio::join!(
        svc.clone().oneshot("/users/7"),
        svc.clone().oneshot("/users/7")
    );
    a.unwrap();
    b.unwrap();
    assert_eq!(recorder.take(), vec![(Class::default(), Event::Coalesced)]);
}

#[tokio::test(start_paused = true)]
async fn requests_are_not_classified_without_an_observer() {
    let classified = Arc::new(AtomicUsize::new(0));
    let counting = {
        let classified = classified.clone();
        move |req: &Req| {
            classified.fetch_add(1, Ordering::SeqCst);
            class_of(req)
        }
    };
    let dedup = ServiceBuilder::new()
        .layer(
            DedupLayer::new(key_of)
                .with_window(Duration::from_secs(1))
                .with_classifier(counting.clone()),
        )
        .service(slow(Duration::from_millis(50)));
    let (a, b) = tokio::join!(
        dedup.clone().oneshot("/users/7"),
        dedup.clone().oneshot("/users/7")
    );
    a.unwrap();
    b.unwrap();
    dedup.clone().oneshot("/users/7").await.unwrap(); // a reuse
    assert_eq!(classified.load(Ordering::SeqCst), 0);

    let cache = ServiceBuilder::new()
        .layer(
            CacheLayer::new(key_of)
                .with_clock(Clock::Tokio)
                .with_classifier(counting),
        )
        .service(slow(Duration::ZERO));
    cache.clone().oneshot("/users/7").await.unwrap();
    let misses = classified.load(Ordering::SeqCst);
    cache.clone().oneshot("/users/7").await.unwrap();
    cache.clone().oneshot("/users/7").await.unwrap();
    assert_eq!(
        classified.load(Ordering::SeqCst),
        misses,
        "fresh hits are not classified"
    );
}

#[tokio::test(start_paused = true)]
async fn dedup_memory_follows_the_entries_of_its_map() {
    fn future_size<S: Service<Req>>(_: &S) -> u64 {
        std::mem::size_of::<S::Future>() as u64
    }
    let layer = DedupLayer::new(key_of).with_window(Duration::from_secs(1));
    let handle = layer.handle();
    let inner = slow(Duration::from_millis(50));
    let future = future_size(&inner);
    let svc = ServiceBuilder::new().layer(layer).service(inner);
    assert_eq!(handle.memory_bytes(), 0);

    let a = tokio::spawn(svc.clone().oneshot("/users/1"));
    let b = tokio::spawn(svc.clone().oneshot("/users/2"));
    settle().await;
    // Each entry, and the inner future its call runs.
    assert_eq!(
        handle.memory_bytes(),
        2 * (dedup::ENTRY_ESTIMATE_BYTES + future)
    );

    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    // Each entry, and the value kept (a `String`, as `CloneShare` weighs it).
    let value = std::mem::size_of::<String>() as u64;
    assert_eq!(
        handle.memory_bytes(),
        2 * (dedup::ENTRY_ESTIMATE_BYTES + value),
        "kept for the reuse window"
    );
    time::advance(Duration::from_secs(2)).await;
    assert_eq!(handle.memory_bytes(), 0);
    assert_eq!(handle.stats().entries, 0);
}

// --- Cache ---

#[tokio::test(start_paused = true)]
async fn the_cache_reports_a_miss_a_fresh_hit_and_a_stale_hit_for_their_class() {
    let recorder = Arc::new(Recorder::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let inner = {
        let calls = calls.clone();
        service_fn(move |req: Req| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, Infallible>(req.to_string()) }
        })
    };
    let svc = ServiceBuilder::new()
        .layer(
            CacheLayer::new(key_of)
                .with_clock(Clock::Tokio)
                .with_ttl(Duration::from_secs(1))
                .with_stale_while_revalidate(Duration::from_secs(10))
                .with_classifier(class_of)
                .with_observer(recorder.clone()),
        )
        .service(inner);

    svc.clone().oneshot("/users/7").await.unwrap(); // miss
    svc.clone().oneshot("/users/7").await.unwrap(); // fresh hit
    time::advance(Duration::from_secs(2)).await;
    svc.clone().oneshot("/users/7").await.unwrap(); // stale, refreshed behind
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the refresh ran");
    svc.clone().oneshot("/users/7").await.unwrap(); // fresh again
    svc.clone().oneshot("/other/1").await.unwrap(); // miss, default class

    assert_eq!(
        recorder.take(),
        vec![
            (users(), Event::CacheMiss),
            (users(), Event::CacheHit),
            (users(), Event::StaleServed),
            (users(), Event::CacheHit),
            (Class::default(), Event::CacheMiss),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_stale_copy_standing_in_for_a_failure_is_reported_after_its_miss() {
    let recorder = Arc::new(Recorder::default());
    let failing = Arc::new(AtomicBool::new(false));
    let inner = {
        let failing = failing.clone();
        service_fn(move |req: Req| {
            let fail = failing.load(Ordering::SeqCst);
            async move {
                if fail {
                    Err("upstream down")
                } else {
                    Ok(req.to_string())
                }
            }
        })
    };
    let svc = ServiceBuilder::new()
        .layer(
            CacheLayer::new(key_of)
                .with_clock(Clock::Tokio)
                .with_ttl(Duration::from_secs(1))
                .with_stale_if_error(Duration::from_secs(10))
                .with_classifier(class_of)
                .with_observer(recorder.clone()),
        )
        .service(inner);

    svc.clone().oneshot("/users/7").await.unwrap();
    time::advance(Duration::from_secs(2)).await;
    failing.store(true, Ordering::SeqCst);
    assert_eq!(svc.clone().oneshot("/users/7").await.unwrap(), "/users/7");
    assert!(svc.clone().oneshot("/users/8").await.is_err());

    assert_eq!(
        recorder.take(),
        vec![
            (users(), Event::CacheMiss),
            (users(), Event::CacheMiss),
            (users(), Event::StaleServed),
            (users(), Event::CacheMiss),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn invalidations_by_hand_are_announced_whether_or_not_they_removed_anything() {
    let layer = CacheLayer::new(key_of)
        .with_clock(Clock::Tokio)
        .with_classifier(class_of);
    let handle = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(slow(Duration::ZERO));
    svc.clone().oneshot("/users/7").await.unwrap();

    let mut rx = handle.invalidations();
    assert!(handle.invalidate(&Key::from("/users/7")));
    assert!(!handle.invalidate(&Key::from("/users/7")));
    assert_eq!(handle.invalidate_class(&users()), 0);
    assert_eq!(handle.invalidate_path("/cards"), 0);
    assert_eq!(handle.invalidate_prefix("/boards/"), 0);
    assert_eq!(handle.clear(), 0);

    let mut announced = Vec::new();
    while let Ok(invalidation) = rx.try_recv() {
        announced.push(invalidation);
    }
    assert_eq!(
        announced,
        vec![
            Invalidation::Key(Key::from("/users/7")),
            Invalidation::Key(Key::from("/users/7")),
            Invalidation::Class(users()),
            Invalidation::Path("/cards".into()),
            Invalidation::Prefix("/boards/".into()),
            Invalidation::All,
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_successful_unsafe_request_announces_its_path() {
    let layer = CacheLayer::http(HttpKey::new()).with_clock(Clock::Tokio);
    let handle = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .layer(BufferLayer::new())
        .service(service_fn(|req: Request<Full<Bytes>>| async move {
            let status = match *req.method() {
                Method::DELETE => StatusCode::INTERNAL_SERVER_ERROR,
                Method::POST => StatusCode::CREATED,
                _ => StatusCode::OK,
            };
            let mut response = Response::new(Full::new(Bytes::from_static(b"cards")));
            *response.status_mut() = status;
            Ok::<_, Infallible>(response)
        }));
    let send = |method: Method| {
        let req = Request::builder()
            .method(method)
            .uri("http://api/cards?page=2")
            .body(Full::default())
            .unwrap();
        svc.clone().oneshot(req)
    };

    send(Method::POST).await.unwrap(); // nobody listens yet: nothing to announce to
    let mut rx = handle.invalidations();
    send(Method::GET).await.unwrap();
    assert_eq!(handle.stats().entries, 1);
    send(Method::POST).await.unwrap();
    assert_eq!(handle.stats().entries, 0);
    send(Method::DELETE).await.unwrap(); // failed: invalidates nothing

    assert_eq!(rx.try_recv(), Ok(Invalidation::Path("/cards".into())));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
}

#[tokio::test(start_paused = true)]
async fn cache_memory_is_the_weight_of_its_entries() {
    let layer = CacheLayer::new(key_of)
        .with_clock(Clock::Tokio)
        .with_weigher(|v: &String| v.len());
    let handle = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(slow(Duration::ZERO));
    assert_eq!(handle.memory_bytes(), 0);

    svc.clone().oneshot("/users/1").await.unwrap();
    let one = handle.memory_bytes();
    assert!(one > 0);
    svc.clone().oneshot("/users/2").await.unwrap();
    assert_eq!(handle.memory_bytes(), 2 * one);
    assert_eq!(handle.memory_bytes(), handle.stats().bytes);

    handle.clear();
    assert_eq!(handle.memory_bytes(), 0);
}

// --- Breaker ---

#[tokio::test(start_paused = true)]
async fn an_opening_breaker_reports_its_state_once_and_every_rejected_call() {
    let recorder = Arc::new(Recorder::default());
    let layer = BreakerLayer::new()
        .with_config(BreakerConfig {
            jitter: 0.0,
            ..BreakerConfig::default()
        })
        .with_classifier(class_of)
        .with_observer(recorder.clone());
    let handle = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|req: Req| async move {
            if req.starts_with("/users") {
                Err("upstream down")
            } else {
                Ok(req)
            }
        }));

    for _ in 0..3 {
        assert!(svc.clone().oneshot("/users/7").await.is_err());
    }
    assert_eq!(
        recorder.take(),
        vec![(users(), Event::BreakerState(BreakerState::Open))]
    );

    for _ in 0..2 {
        assert!(svc.clone().oneshot("/users/7").await.is_err());
    }
    svc.clone().oneshot("/other/1").await.unwrap(); // another class, closed
    let rejected = (users(), Event::Rejected(Rejection::BreakerOpen));
    assert_eq!(recorder.take(), vec![rejected.clone(), rejected]);

    time::advance(Duration::from_secs(5)).await;
    assert!(svc.clone().oneshot("/users/7").await.is_err()); // the probe fails
    assert_eq!(
        recorder.take(),
        vec![
            (users(), Event::BreakerState(BreakerState::HalfOpen)),
            (users(), Event::BreakerState(BreakerState::Open)),
        ]
    );

    handle.reset(&users());
    handle.reset(&users()); // already closed: not a change
    assert_eq!(
        recorder.take(),
        vec![(users(), Event::BreakerState(BreakerState::Closed))]
    );
}

// --- Limit ---

#[tokio::test(start_paused = true)]
async fn limit_rejections_are_reported_by_reason_and_class_but_alerts_are_not() {
    let recorder = Arc::new(Recorder::default());
    let layer = LimitLayer::new(ClassLimits::unlimited())
        .with_class("users", ClassLimits::new(1))
        .with_class(
            "boards",
            ClassLimits::new(1)
                .with_max_queue(1)
                .with_max_wait(Duration::from_secs(1)),
        )
        .with_class(
            "hooks",
            ClassLimits::unlimited().with_rate(RateRule::per_minute(1)),
        )
        .with_class(
            "alerts",
            ClassLimits::unlimited().with_rate(RateRule::per_minute(1).alert_only()),
        )
        .with_classifier(class_of)
        .with_observer(recorder.clone());
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service(slow(Duration::from_secs(10)));

    // No queue: the second caller is turned away at once.
    let users_call = svc.ready().await.unwrap().call("/users/1");
    assert!(svc.ready().await.unwrap().call("/users/2").await.is_err());
    // A queue of one: the second caller waits in vain.
    let boards_call = svc.ready().await.unwrap().call("/boards/1");
    let waiting = svc.ready().await.unwrap().call("/boards/2");
    time::advance(Duration::from_secs(2)).await;
    assert!(waiting.await.is_err());
    // A rate rule: one per minute.
    let hooks_call = svc.ready().await.unwrap().call("/hooks/1");
    assert!(svc.ready().await.unwrap().call("/hooks/2").await.is_err());
    // An alert-only rule lets the second through.
    let alerts_call = svc.ready().await.unwrap().call("/alerts/1");
    let alerts_again = svc.ready().await.unwrap().call("/alerts/2");

    let (a, b, c, d, e) = tokio::join!(
        users_call,
        boards_call,
        hooks_call,
        alerts_call,
        alerts_again
    );
    for answer in [a, b, c, d, e] {
        answer.unwrap();
    }
    assert_eq!(
        recorder.take(),
        vec![
            (users(), Event::Rejected(Rejection::Overloaded)),
            (Class::new("boards"), Event::Rejected(Rejection::Overloaded)),
            (Class::new("hooks"), Event::Rejected(Rejection::RateLimited)),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn limit_memory_follows_the_keys_of_its_rate_rules() {
    let layer = LimitLayer::new(
        ClassLimits::unlimited().with_rate(RateRule::per_minute(1).keyed_by(RateKey::Identity)),
    )
    .with_identity(key_of);
    let handle = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(slow(Duration::ZERO));
    assert_eq!(handle.memory_bytes(), 0);

    for caller in ["/a", "/b", "/c", "/a"] {
        let _ = svc.clone().oneshot(caller).await;
    }
    assert_eq!(handle.stats().rate_keys, 3);
    assert_eq!(handle.memory_bytes(), 3 * limit::RATE_KEY_ESTIMATE_BYTES);
}
