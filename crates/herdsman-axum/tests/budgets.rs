//! The Registry's budgets as HTTP answers of `Live` over a whole
//! Coordinator, with paused tokio time: a flood from one caller or one
//! client address is answered 429 while others are served, a key over
//! `keys.max_len` 414, a registry over its memory budget 503; and every
//! refusal is counted by its reason, never as an error of the service.

mod support;

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use axum::{
    body::Body,
    http::{header, request::Parts, HeaderValue, Request, Response, StatusCode},
};
use herdsman::{
    config::{ClassConfig, Config, Environment},
    http::ClientAddr,
    Coordinated, Coordinator,
};
use herdsman_axum::{data_request, LastEventId, Live};
use support::Calls;
use tower::{service_fn, util::BoxCloneSyncService, Layer};

type Upstream = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// An upstream answering `[]` to everything, counting its calls.
fn origin(calls: Calls) -> Upstream {
    BoxCloneSyncService::new(service_fn(move |_: Request<Body>| {
        calls.next();
        async { Ok(Response::new(Body::from("[]"))) }
    }))
}

/// A Coordinator in the test profile with two public classes, `users`
/// (`/users`) and `boards` (`/boards/*`), and the `Live` answers over its
/// registry, counted in its stats.
struct App {
    coordinator: Coordinator,
    live: Live,
    calls: Calls,
}

impl App {
    fn start(tweak: impl FnOnce(&mut Config)) -> App {
        let mut config = Config::profile(Environment::Test);
        config.registry.class.linger = Duration::from_secs(60);
        for (name, path) in [("users", "/users"), ("boards", "/boards/*")] {
            config.classes.insert(
                name.to_owned(),
                ClassConfig {
                    paths: vec![path.to_owned()],
                    public: true,
                    ..ClassConfig::default()
                },
            );
        }
        tweak(&mut config);
        let coordinator = Coordinator::builder()
            .environment(Environment::Test)
            .config(config)
            .build()
            .expect("a valid configuration");
        let calls = Calls::default();
        let stack: Coordinated<Upstream> = coordinator.layer().layer(origin(calls.clone()));
        let live = Live::new(move |req| stack.subscribe(req)).with_stats(
            coordinator.stats().clone(),
            coordinator.config().path_classes(),
        );
        App {
            coordinator,
            live,
            calls,
        }
    }

    /// A polling GET of `path` from `address`, with these credentials.
    async fn poll(&self, path: &str, address: &str, bearer: Option<&str>) -> Response<Body> {
        let parts = caller(path, address, bearer);
        self.live
            .poll(data_request(&parts, path), &parts.headers)
            .await
    }

    /// An SSE stream of `path` from `address`, with these credentials.
    fn sse(&self, path: &str, address: &str, bearer: Option<&str>) -> Response<Body> {
        let parts = caller(path, address, bearer);
        self.live
            .sse(data_request(&parts, path), LastEventId::default())
    }

    /// The stats' rejections of `class` for `reason`, and its errors.
    fn counted(&self, class: &str, reason: &str) -> (u64, u64) {
        let snapshot = self.coordinator.snapshot();
        let e = &snapshot.endpoints[class];
        (e.rejections[reason], e.errors)
    }
}

/// A caller's request as the server got it: from `address` (the
/// `ClientAddr` a server inserts), with `Authorization: Bearer <bearer>`.
fn caller(path: &str, address: &str, bearer: Option<&str>) -> Parts {
    let mut req = Request::get(path).body(()).unwrap();
    let peer: SocketAddr = format!("{address}:40000").parse().unwrap();
    req.extensions_mut().insert(ClientAddr(peer));
    if let Some(token) = bearer {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        req.headers_mut().insert(header::AUTHORIZATION, value);
    }
    req.into_parts().0
}

fn retry_after(response: &Response<Body>) -> Option<u64> {
    let value = response.headers().get(header::RETRY_AFTER)?;
    value.to_str().ok()?.parse().ok()
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_distinct_queries_from_one_address_is_answered_429_and_others_are_served() {
    let app = App::start(|c| c.registry.class.max_keys_per_address = 20);
    let mut statuses = Vec::new();
    for i in 0..50 {
        let answer = app
            .poll(&format!("/users?page={i}"), "10.0.0.1", None)
            .await;
        statuses.push(answer.status());
        if answer.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(
                retry_after(&answer),
                Some(60),
                "keys leave after the linger"
            );
        }
    }
    let served = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(served, 20, "{statuses:?}");
    assert!(statuses[20..]
        .iter()
        .all(|s| *s == StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(app.calls.get(), 20);

    // Another address gets new keys of the class; the flooding address
    // gets new keys of another class, and keys already polled.
    let other = app.poll("/users?page=new", "10.0.0.2", None).await;
    assert_eq!(other.status(), StatusCode::OK);
    let elsewhere = app.poll("/boards/1", "10.0.0.1", None).await;
    assert_eq!(elsewhere.status(), StatusCode::OK);
    let polled = app.poll("/users?page=new", "10.0.0.1", None).await;
    assert_eq!(polled.status(), StatusCode::OK);

    // Counted as rejections by reason, never as errors.
    assert_eq!(app.counted("users", "keys_per_address"), (30, 0));
}

#[tokio::test(start_paused = true)]
async fn streams_with_a_new_credential_each_from_one_address_are_capped_by_the_address() {
    let app = App::start(|c| {
        c.registry.class.max_subscribers_per_caller = 2;
        c.registry.class.max_subscribers_per_address = 10;
    });
    let mut open = Vec::new();
    let mut refused = Vec::new();
    for i in 0..25 {
        let response = app.sse("/users", "10.0.0.1", Some(&format!("random-{i}")));
        match response.status() {
            StatusCode::OK => open.push(response),
            status => refused.push((status, retry_after(&response))),
        }
    }
    assert_eq!(open.len(), 10);
    assert!(refused
        .iter()
        .all(|r| *r == (StatusCode::TOO_MANY_REQUESTS, Some(5))));
    assert_eq!(app.live.streams().get(), 10);

    // One credential: its own cap, from any address.
    let bob: Vec<_> = (0..3)
        .map(|_| app.sse("/users", "10.0.0.2", Some("bob")))
        .collect();
    assert_eq!(
        bob.iter().map(Response::status).collect::<Vec<_>>(),
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    // Another class is budgeted on its own.
    let board = app.sse("/boards/1", "10.0.0.1", Some("random-0"));
    assert_eq!(board.status(), StatusCode::OK);

    assert_eq!(app.counted("users", "subscribers_per_address"), (15, 0));
    assert_eq!(app.counted("users", "subscribers_per_caller"), (1, 0));

    // Streams that close give their slots back.
    drop(open);
    let again = app.sse("/users", "10.0.0.1", Some("random-99"));
    assert_eq!(again.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_key_over_the_maximum_length_is_answered_414_and_polls_nothing() {
    let app = App::start(|c| c.keys.max_len = 1_024);
    let long = format!("/users?q={}", "x".repeat(2_000));
    let polled = app.poll(&long, "10.0.0.1", None).await;
    assert_eq!(polled.status(), StatusCode::URI_TOO_LONG);
    assert_eq!(retry_after(&polled), None);
    let streamed = app.sse(&long, "10.0.0.1", None);
    assert_eq!(streamed.status(), StatusCode::URI_TOO_LONG);
    assert_eq!(app.calls.get(), 0);
    assert_eq!(app.coordinator.registry().stats().keys, 0);
    assert_eq!(app.counted("users", "key_too_long"), (2, 0));
}

#[tokio::test(start_paused = true)]
async fn over_its_memory_budget_the_registry_answers_503_for_new_keys_only() {
    let app = App::start(|c| {
        c.registry.max_memory = 256 * 1024;
        c.registry.class.max_keys_per_address = 10_000;
    });
    let query = "q".repeat(4_000);
    let mut served = 0;
    let refused = loop {
        let answer = app
            .poll(&format!("/users?{served}{query}"), "10.0.0.1", None)
            .await;
        if answer.status() != StatusCode::OK {
            break answer;
        }
        served += 1;
        assert!(served < 1_000, "never refused");
    };
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after(&refused), Some(60));
    assert!(served >= 10, "{served} keys fit");
    let known = app
        .poll(&format!("/users?0{query}"), "10.0.0.1", None)
        .await;
    assert_eq!(known.status(), StatusCode::OK, "a key polled already");
    let (memory, errors) = app.counted("users", "memory");
    assert_eq!((memory, errors), (1, 1), "the service's capacity: an error");
}
