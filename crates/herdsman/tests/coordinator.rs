//! The Coordinator: each layer through the composed stack, per-class
//! settings, switches flipped mid-traffic, rollout, and the build errors.

mod support;

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures_util::{future::join_all, StreamExt};
use herdsman::{
    breaker::BreakerOpen,
    class::Class,
    config::{ClassConfig, Config, Environment},
    coordinator::Sizes,
    error::find,
    event::Invalidation,
    http::{error_response, ClientAddr, HttpBody},
    limit::Overloaded,
    switch::LayerName,
    BoxError, Coordinated, Coordinator,
};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use support::{http::reply, Calls};
use tokio::time;
use tower::{
    service_fn,
    util::{BoxCloneSyncService, ServiceExt},
    Layer,
};

type Upstream = BoxCloneSyncService<Request<Full<Bytes>>, Response<Full<Bytes>>, Infallible>;
type Stack = Coordinated<Upstream>;

/// An in-process upstream: answers "`{method} {path}?{query}` for
/// `{authorization}` #`{n}`" after `delay`, with the status set for its
/// path, and counts calls per path.
#[derive(Clone, Default)]
struct Origin {
    calls: Calls,
    by_path: Arc<Mutex<HashMap<String, usize>>>,
    statuses: Arc<Mutex<HashMap<String, StatusCode>>>,
    delay: Duration,
}

impl Origin {
    fn with_delay(delay: Duration) -> Self {
        Origin {
            delay,
            ..Origin::default()
        }
    }

    fn fail(&self, path: &str, status: StatusCode) {
        self.statuses
            .lock()
            .unwrap()
            .insert(path.to_owned(), status);
    }

    fn calls(&self) -> usize {
        self.calls.get()
    }

    fn calls_to(&self, path: &str) -> usize {
        self.by_path.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn service(&self) -> Upstream {
        let this = self.clone();
        BoxCloneSyncService::new(service_fn(move |req: Request<Full<Bytes>>| {
            let this = this.clone();
            async move {
                let n = this.calls.next();
                let path = req.uri().path().to_owned();
                *this
                    .by_path
                    .lock()
                    .unwrap()
                    .entry(path.clone())
                    .or_default() += 1;
                if !this.delay.is_zero() {
                    time::sleep(this.delay).await;
                }
                let status = this
                    .statuses
                    .lock()
                    .unwrap()
                    .get(&path)
                    .copied()
                    .unwrap_or(StatusCode::OK);
                let user = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .or_else(|| req.headers().get("x-api-key"))
                    .map_or("nobody", |v| v.to_str().unwrap());
                let body = format!(
                    "{} {} for {user} #{n}",
                    req.method(),
                    req.uri().path_and_query().unwrap()
                );
                Ok(Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::from(body)))
                    .unwrap())
            }
        }))
    }
}

/// The test profile with these classes (name, path pattern).
fn config(classes: &[(&str, &str)]) -> Config {
    let mut config = Config::profile(Environment::Test);
    for (name, path) in classes {
        config.classes.insert(
            (*name).to_owned(),
            ClassConfig {
                paths: vec![(*path).to_owned()],
                ..ClassConfig::default()
            },
        );
    }
    config
}

fn class<'a>(config: &'a mut Config, name: &str) -> &'a mut ClassConfig {
    config.classes.get_mut(name).unwrap()
}

fn coordinator(config: Config) -> Coordinator {
    Coordinator::builder()
        .environment(Environment::Test)
        .config(config)
        .build()
        .unwrap()
}

fn stack(coordinator: &Coordinator, origin: &Origin) -> Stack {
    coordinator.layer().layer(origin.service())
}

fn request(method: Method, uri: &str, user: Option<&str>) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(user) = user {
        builder = builder.header(header::AUTHORIZATION, user);
    }
    builder.body(Full::default()).unwrap()
}

fn get(uri: &str) -> Request<Full<Bytes>> {
    request(Method::GET, uri, None)
}

async fn text(res: Response<HttpBody<Full<Bytes>>>) -> String {
    reply(res).await.unwrap().body
}

async fn fetch(svc: &Stack, req: Request<Full<Bytes>>) -> Result<String, BoxError> {
    let res = svc.clone().oneshot(req).await?;
    Ok(text(res).await)
}

#[tokio::test(start_paused = true)]
async fn two_subscribers_of_one_key_share_one_upstream_call_per_interval() {
    let mut config = config(&[("active", "/api/active")]);
    let registry = herdsman::config::RegistrySettings {
        class: herdsman::registry::ClassSettings {
            interval: Duration::from_secs(1),
            ..config.registry.class
        },
        ..config.registry.clone()
    };
    class(&mut config, "active").registry = Some(registry);
    let coordinator = coordinator(config);
    let origin = Origin::default();
    let svc = stack(&coordinator, &origin);

    let mut a = svc.subscribe(get("http://api/api/active")).unwrap();
    let mut b = svc.subscribe(get("http://api/api/active")).unwrap();
    let first = a.next().await.unwrap();
    assert_eq!(b.next().await.unwrap().version(), first.version());
    assert_eq!(origin.calls(), 1);

    time::sleep(Duration::from_secs(3) + Duration::from_millis(1)).await;
    assert_eq!(origin.calls(), 4, "one call per interval for both");
    let hooks = coordinator.registry().hooks();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].subscribers, 2);
    assert_eq!(hooks[0].class, Class::new("active"));
}

/// Class `active` (`/api/active`) polled every second, behind a cache whose
/// entries are fresh for a second and then served stale while they
/// revalidate (10 s) or when the upstream fails (60 s): the docker
/// profile's shape, where the TTL is the poll interval.
fn polled_behind_a_stale_window() -> (Coordinator, Origin, Stack) {
    let mut config = config(&[("active", "/api/active")]);
    config.registry.floor = Duration::from_secs(1);
    config.registry.class.interval = Duration::from_secs(1);
    config.cache.class.ttl = Duration::from_secs(1);
    config.cache.class.stale_while_revalidate = Duration::from_secs(10);
    config.cache.class.stale_if_error = Duration::from_secs(60);
    let coordinator = coordinator(config);
    let origin = Origin::default();
    let svc = stack(&coordinator, &origin);
    (coordinator, origin, svc)
}

/// The next update, which must come by the next poll (1 s on).
async fn by_the_next_poll(
    sub: &mut herdsman::registry::Subscription<Response<herdsman::http::SharedBody>>,
) -> herdsman::registry::Update<Response<herdsman::http::SharedBody>> {
    time::timeout(Duration::from_millis(1500), sub.next())
        .await
        .expect("an update by the next poll")
        .unwrap()
}

fn body_of(update: &herdsman::registry::Update<Response<herdsman::http::SharedBody>>) -> String {
    let value = update.value().or_else(|| update.good()?.value()).unwrap();
    String::from_utf8(value.body().data().to_vec()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_poll_loop_behind_a_stale_window_gets_each_change_at_its_next_poll() {
    let (_coordinator, origin, svc) = polled_behind_a_stale_window();
    let mut sub = svc.subscribe(get("http://api/api/active")).unwrap();
    assert!(body_of(&sub.next().await.unwrap()).ends_with("#1"));
    // Served stale while revalidating, the loop would publish #2 a poll late.
    let update = by_the_next_poll(&mut sub).await;
    assert!(body_of(&update).ends_with("#2"), "{}", body_of(&update));
    assert_eq!(
        origin.calls(),
        2,
        "one call per poll, none in the background"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_upstream_behind_a_stale_window_is_a_failed_poll_with_the_stale_copy() {
    let (_coordinator, origin, svc) = polled_behind_a_stale_window();
    let mut sub = svc.subscribe(get("http://api/api/active")).unwrap();
    sub.next().await.unwrap();
    origin.fail("/api/active", StatusCode::INTERNAL_SERVER_ERROR);
    // The stale-while-revalidate copy would hide the failure for 10 s.
    let update = by_the_next_poll(&mut sub).await;
    let err = update.error().expect("the poll failed");
    assert!(
        find::<herdsman::registry::StaleAnswer>(err).is_some(),
        "{err}"
    );
    assert!(
        body_of(&update).ends_with("#1"),
        "the stale copy is the good value"
    );
    let served = update.good().unwrap().value().unwrap();
    assert_eq!(served.headers()["x-herdsman-stale"], "1");
}

#[tokio::test(start_paused = true)]
async fn the_snapshot_counts_requests_and_upstream_calls_per_class() {
    let coordinator = coordinator(config(&[("a", "/a"), ("b", "/b")]));
    let origin = Origin::default();
    let svc = stack(&coordinator, &origin);

    for _ in 0..3 {
        fetch(&svc, get("/a")).await.unwrap();
    }
    fetch(&svc, get("/b")).await.unwrap();

    let snapshot = coordinator.snapshot();
    let a = &snapshot.endpoints["a"];
    assert_eq!((a.requests, a.upstream_calls, a.cache_hits), (3, 1, 2));
    let b = &snapshot.endpoints["b"];
    assert_eq!((b.requests, b.upstream_calls), (1, 1));
    assert_eq!(
        snapshot.endpoints["default"].requests, 0,
        "listed from the start"
    );
    for source in ["cache", "dedup", "limit", "registry"] {
        assert!(snapshot.memory.contains_key(source), "{source} is tracked");
    }
    assert!(snapshot.memory["cache"] > 0, "two stored responses");
}

#[tokio::test(start_paused = true)]
async fn a_second_get_is_served_from_the_cache_and_a_post_invalidates_it() {
    let coordinator = coordinator(config(&[("items", "/items")]));
    let origin = Origin::default();
    let svc = stack(&coordinator, &origin);

    let first = fetch(&svc, get("/items")).await.unwrap();
    assert_eq!(fetch(&svc, get("/items")).await.unwrap(), first);
    assert_eq!(origin.calls(), 1);

    fetch(&svc, request(Method::POST, "/items", None))
        .await
        .unwrap();
    assert_eq!(origin.calls(), 2);
    let after = fetch(&svc, get("/items")).await.unwrap();
    assert_eq!(after, "GET /items for nobody #3");
}

#[tokio::test(start_paused = true)]
async fn concurrent_identical_gets_make_one_inner_call() {
    let mut config = config(&[("board", "/board")]);
    let layers = herdsman::config::Layers {
        cache: false,
        ..config.layers
    };
    class(&mut config, "board").layers = Some(layers);
    let coordinator = coordinator(config);
    let origin = Origin::with_delay(Duration::from_millis(10));
    let svc = stack(&coordinator, &origin);

    let replies = join_all((0..10).map(|_| fetch(&svc, get("/board")))).await;
    assert_eq!(origin.calls(), 1);
    for reply in replies {
        assert_eq!(reply.unwrap(), "GET /board for nobody #1");
    }
    let board = &coordinator.snapshot().endpoints["board"];
    assert_eq!(
        (board.requests, board.coalesced, board.cache_hits),
        (10, 9, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn failures_open_the_breaker_and_its_errors_map_to_503() {
    let coordinator = coordinator(config(&[("flaky", "/flaky")]));
    let origin = Origin::default();
    origin.fail("/flaky", StatusCode::INTERNAL_SERVER_ERROR);
    let svc = stack(&coordinator, &origin);

    // The test profile opens after three consecutive failures.
    for _ in 0..3 {
        let res = svc.clone().oneshot(get("/flaky")).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    let err = svc.clone().oneshot(get("/flaky")).await.unwrap_err();
    assert!(find::<BreakerOpen>(&*err).is_some(), "{err}");
    let res: Response<String> = error_response(&*err).unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key(header::RETRY_AFTER));
    assert_eq!(origin.calls(), 3);

    // Other classes are not affected.
    fetch(&svc, get("/other")).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn layers_off_in_the_configuration_are_bypassed_unless_a_class_turns_them_on() {
    // Development turns the breaker off; one class turns it back on.
    let mut config = Config::profile(Environment::Development);
    for (name, path) in [("flaky", "/flaky"), ("guarded", "/guarded")] {
        config.classes.insert(
            name.into(),
            ClassConfig {
                paths: vec![path.into()],
                ..ClassConfig::default()
            },
        );
    }
    let layers = herdsman::config::Layers {
        breaker: true,
        ..config.layers
    };
    class(&mut config, "guarded").layers = Some(layers);
    let coordinator = Coordinator::builder().config(config).build().unwrap();
    let origin = Origin::default();
    origin.fail("/flaky", StatusCode::BAD_GATEWAY);
    origin.fail("/guarded", StatusCode::BAD_GATEWAY);
    let svc = stack(&coordinator, &origin);

    let mut guarded_errors = 0;
    for _ in 0..6 {
        let res = svc.clone().oneshot(get("/flaky")).await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
        if let Err(err) = svc.clone().oneshot(get("/guarded")).await {
            assert!(find::<BreakerOpen>(&*err).is_some(), "{err}");
            guarded_errors += 1;
        }
    }
    assert_eq!(origin.calls_to("/flaky"), 6);
    assert_eq!((origin.calls_to("/guarded"), guarded_errors), (3, 3));
}

#[tokio::test(start_paused = true)]
async fn requests_over_the_concurrency_limit_are_overloaded() {
    let mut config = config(&[("slow", "/slow")]);
    let limit = config
        .limit
        .clone()
        .with_max_concurrent(1)
        .with_max_queue(0);
    class(&mut config, "slow").limit = Some(limit);
    let coordinator = coordinator(config);
    let origin = Origin::with_delay(Duration::from_millis(100));
    let svc = stack(&coordinator, &origin);

    // Two different keys: dedup cannot merge them.
    let (a, b) = tokio::join!(fetch(&svc, get("/slow?a")), async {
        time::sleep(Duration::from_millis(1)).await;
        fetch(&svc, get("/slow?b")).await
    });
    assert_eq!(a.unwrap(), "GET /slow?a for nobody #1");
    let err = b.unwrap_err();
    assert!(find::<Overloaded>(&*err).is_some(), "{err}");
    assert_eq!(
        error_response::<String>(&*err).unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(origin.calls(), 1);
    // Rejections are not upstream failures: the breaker stays closed.
    for i in 0..5 {
        fetch(&svc, get(&format!("/slow?{i}"))).await.unwrap();
    }
}

/// Sends `req` from a task of its own.
fn spawn_fetch(
    svc: &Stack,
    req: Request<Full<Bytes>>,
) -> tokio::task::JoinHandle<Result<String, BoxError>> {
    let svc = svc.clone();
    tokio::spawn(async move { fetch(&svc, req).await })
}

/// `req` as if it came from `ip`.
fn from(ip: &str, mut req: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let addr = format!("{ip}:40000").parse().unwrap();
    req.extensions_mut().insert(ClientAddr(addr));
    req
}

/// How many of `answers` were answered, and how many were refused at once
/// (with a 429).
async fn served_and_refused(
    answers: Vec<tokio::task::JoinHandle<Result<String, BoxError>>>,
) -> (usize, usize) {
    let (mut served, mut refused) = (0, 0);
    for answer in answers {
        match answer.await.unwrap() {
            Ok(_) => served += 1,
            Err(err) => {
                let status = error_response::<String>(&*err).map(|r| r.status());
                assert_eq!(status, Some(StatusCode::TOO_MANY_REQUESTS), "{err}");
                refused += 1;
            }
        }
    }
    (served, refused)
}

#[tokio::test(start_paused = true)]
async fn one_caller_flooding_distinct_misses_leaves_other_callers_and_classes_served() {
    let coordinator = coordinator(config(&[("other", "/other/*")]));
    let origin = Origin::with_delay(Duration::from_secs(10));
    let svc = stack(&coordinator, &origin);

    // 32 calls in flight per class; a caller's share is a quarter.
    let flood: Vec<_> = (0..40)
        .map(|i| {
            spawn_fetch(
                &svc,
                request(Method::GET, &format!("/api?{i}"), Some("ann")),
            )
        })
        .collect();
    tokio::task::yield_now().await;
    let bob = spawn_fetch(&svc, request(Method::GET, "/api?b", Some("bob")));
    let other = spawn_fetch(&svc, request(Method::GET, "/other/x", Some("ann")));

    assert_eq!(served_and_refused(flood).await, (8, 32));
    assert_eq!(bob.await.unwrap().unwrap(), "GET /api?b for bob #9");
    assert!(other.await.unwrap().is_ok(), "ann's share is per class");
    assert_eq!(origin.calls(), 10);
    let snapshot = coordinator.stats().snapshot();
    let default = &snapshot.endpoints["default"];
    assert_eq!(default.rejections["in_flight_cap"], 32);
    assert_eq!(default.errors_by_kind["rejected"], 32);
}

#[tokio::test(start_paused = true)]
async fn random_credentials_from_one_address_are_capped_by_the_address_rule() {
    let coordinator = coordinator(config(&[]));
    let origin = Origin::with_delay(Duration::from_secs(10));
    let svc = stack(&coordinator, &origin);

    // Each request a new caller, all from one address: half the class.
    let flood: Vec<_> = (0..40)
        .map(|i| {
            let req = request(
                Method::GET,
                &format!("/api?{i}"),
                Some(&format!("token-{i}")),
            );
            spawn_fetch(&svc, from("203.0.113.7", req))
        })
        .collect();
    tokio::task::yield_now().await;
    let anonymous = spawn_fetch(&svc, from("198.51.100.1", get("/api?elsewhere")));

    assert_eq!(served_and_refused(flood).await, (16, 24));
    assert!(
        anonymous.await.unwrap().is_ok(),
        "another address is served"
    );
}

#[tokio::test(start_paused = true)]
async fn two_classes_keep_their_own_cache_ttls() {
    let mut config = config(&[("fast", "/fast"), ("slow", "/slow")]);
    for (name, secs) in [("fast", 1), ("slow", 10)] {
        let cache = herdsman::config::CacheSettings {
            class: herdsman::cache::ClassSettings {
                ttl: Duration::from_secs(secs),
                ..config.cache.class
            },
            ..config.cache.clone()
        };
        class(&mut config, name).cache = Some(cache);
    }
    let coordinator = coordinator(config);
    let origin = Origin::default();
    let svc = stack(&coordinator, &origin);

    fetch(&svc, get("/fast")).await.unwrap();
    fetch(&svc, get("/slow")).await.unwrap();
    time::sleep(Duration::from_secs(2)).await;
    fetch(&svc, get("/fast")).await.unwrap();
    fetch(&svc, get("/slow")).await.unwrap();
    assert_eq!(origin.calls_to("/fast"), 2, "1 s TTL expired");
    assert_eq!(origin.calls_to("/slow"), 1, "10 s TTL still fresh");
}

#[tokio::test(start_paused = true)]
async fn classes_with_different_dedup_windows_each_reuse_results_for_their_own() {
    let mut config = config(&[("sticky", "/sticky"), ("plain", "/plain")]);
    config.layers.cache = false;
    class(&mut config, "sticky").dedup = Some(herdsman::config::DedupSettings {
        window: Duration::from_secs(1),
    });
    let coordinator = coordinator(config);
    let origin = Origin::default();
    let svc = stack(&coordinator, &origin);

    for path in ["/sticky", "/plain"] {
        fetch(&svc, get(path)).await.unwrap();
        time::sleep(Duration::from_millis(500)).await;
        fetch(&svc, get(path)).await.unwrap();
    }
    assert_eq!(
        origin.calls_to("/sticky"),
        1,
        "reused within its 1 s window"
    );
    assert_eq!(
        origin.calls_to("/plain"),
        2,
        "no window: in-flight sharing only"
    );
    time::sleep(Duration::from_secs(1)).await;
    fetch(&svc, get("/sticky")).await.unwrap();
    assert_eq!(origin.calls_to("/sticky"), 2, "the window has passed");
    assert_eq!(coordinator.snapshot().endpoints["sticky"].reused, 1);
}

#[tokio::test(start_paused = true)]
async fn two_users_never_share_a_private_response_but_share_a_public_one() {
    let mut config = config(&[("me", "/me"), ("news", "/news")]);
    class(&mut config, "news").public = true;
    let coordinator = coordinator(config);
    let origin = Origin::with_delay(Duration::from_millis(10));
    let svc = stack(&coordinator, &origin);

    let users = ["Bearer alice", "Bearer bob"];
    // Concurrently (dedup) and again (cache).
    for _ in 0..2 {
        let me = join_all(users.map(|u| fetch(&svc, request(Method::GET, "/me", Some(u))))).await;
        for (reply, user) in me.into_iter().zip(users) {
            assert!(reply.unwrap().contains(&format!("for {user} #")));
        }
    }
    assert_eq!(origin.calls_to("/me"), 2, "one call per user");

    for _ in 0..2 {
        let news =
            join_all(users.map(|u| fetch(&svc, request(Method::GET, "/news", Some(u))))).await;
        let news: Vec<String> = news.into_iter().map(Result::unwrap).collect();
        assert_eq!(news[0], news[1]);
    }
    assert_eq!(origin.calls_to("/news"), 1, "one call for everyone");
}

fn with_api_key(uri: &str, key: &str) -> Request<Full<Bytes>> {
    Request::get(uri)
        .header("x-api-key", key)
        .body(Full::default())
        .unwrap()
}

/// Two callers who differ only in `X-Api-Key`, against one class: the
/// cached, the coalesced and the registry's answers they get.
async fn answers_for_two_api_keys(config: Config, path: &str) -> (Vec<String>, usize) {
    let coordinator = coordinator(config);
    let origin = Origin::with_delay(Duration::from_millis(10));
    let svc = stack(&coordinator, &origin);
    let keys = ["key-a", "key-b"];
    let uri = format!("http://api{path}");
    let mut answers = Vec::new();
    // Concurrently (dedup), then again (cache).
    for _ in 0..2 {
        let replies = join_all(keys.map(|k| fetch(&svc, with_api_key(&uri, k)))).await;
        answers.extend(replies.into_iter().map(Result::unwrap));
    }
    // And through registry subscriptions.
    for k in keys {
        let mut subscription = svc.subscribe(with_api_key(&uri, k)).unwrap();
        let update = subscription.next().await.unwrap();
        let value = update.result().as_ref().unwrap();
        answers.push(String::from_utf8(value.body().data().to_vec()).unwrap());
    }
    (answers, origin.calls_to(path))
}

#[tokio::test(start_paused = true)]
async fn callers_differing_only_in_x_api_key_never_share_a_private_answer_but_do_a_public_one() {
    let mut private = config(&[("me", "/me")]);
    private.rollout.identity_header = Some("x-api-key".into());
    let (answers, calls) = answers_for_two_api_keys(private, "/me").await;
    for (i, answer) in answers.iter().enumerate() {
        let key = ["key-a", "key-b"][i % 2];
        assert!(answer.contains(&format!("for {key} #")), "{answer}");
    }
    assert!(calls >= 2, "one call per caller at least");

    let mut public = config(&[("news", "/news")]);
    public.rollout.identity_header = Some("x-api-key".into());
    class(&mut public, "news").public = true;
    let (answers, calls) = answers_for_two_api_keys(public, "/news").await;
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    assert_eq!(calls, 1, "one call for everyone");
}

/// An origin that builds its links from `X-Forwarded-Host` and declares no
/// `Vary`: the shape web cache poisoning feeds on.
fn reflecting_origin(calls: Calls) -> Upstream {
    BoxCloneSyncService::new(service_fn(move |req: Request<Full<Bytes>>| {
        calls.next();
        let host = req
            .headers()
            .get("x-forwarded-host")
            .map_or("app.example", |v| v.to_str().unwrap());
        let body = format!("<script src=\"https://{host}/app.js\">");
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .header(header::CACHE_CONTROL, "public, max-age=60")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap(),
            )
        }
    }))
}

#[tokio::test(start_paused = true)]
async fn an_answer_built_from_an_unkeyed_forwarding_header_never_reaches_other_callers() {
    let mut config = config(&[("home", "/")]);
    class(&mut config, "home").public = true;
    let coordinator = coordinator(config);
    let calls = Calls::default();
    let svc = coordinator.layer().layer(reflecting_origin(calls.clone()));

    // The attacker's request is cached and coalesced, but only for itself:
    // concurrently with a plain one, then again from the cache.
    for _ in 0..2 {
        let poisoned = Request::get("/")
            .header("x-forwarded-host", "evil.example")
            .body(Full::default())
            .unwrap();
        let (attack, plain) = tokio::join!(fetch(&svc, poisoned), fetch(&svc, get("/")));
        assert!(attack.unwrap().contains("evil.example"));
        assert_eq!(
            plain.unwrap(),
            "<script src=\"https://app.example/app.js\">"
        );
    }
    assert_eq!(calls.get(), 2, "one call per header value");
    let mut subscription = svc.subscribe(get("/")).unwrap();
    let update = subscription.next().await.unwrap();
    let body = update.result().as_ref().unwrap().body().data().to_vec();
    assert!(!String::from_utf8(body).unwrap().contains("evil"));
}

#[tokio::test(start_paused = true)]
async fn a_class_vary_header_keeps_callers_apart_even_in_a_public_class() {
    let mut config = config(&[("news", "/news")]);
    class(&mut config, "news").public = true;
    class(&mut config, "news").vary = vec!["X-Api-Key".into()];
    let (answers, calls) = answers_for_two_api_keys(config, "/news").await;
    for (i, answer) in answers.iter().enumerate() {
        let key = ["key-a", "key-b"][i % 2];
        assert!(answer.contains(&format!("for {key} #")), "{answer}");
    }
    assert_eq!(calls, 2, "one call per value");
}

#[tokio::test(start_paused = true)]
async fn three_thousand_host_values_around_a_router_make_one_upstream_call() {
    let coordinator = coordinator(config(&[("users", "/users")]));
    let origin = Origin::default();
    let svc = stack(&coordinator, &origin);
    for i in 0..3_000 {
        let req = Request::get("/users")
            .header(header::HOST, format!("h{i}.example"))
            .body(Full::default())
            .unwrap();
        fetch(&svc, req).await.unwrap();
    }
    assert_eq!(origin.calls_to("/users"), 1);
}

#[tokio::test(start_paused = true)]
async fn listed_hosts_key_as_themselves_and_other_hosts_pass_through() {
    let mut config = config(&[("users", "/users")]);
    config.keys.hosts = vec!["a.example".into(), "b.example".into()];
    let coordinator = coordinator(config);
    let origin = Origin::default();
    let svc = stack(&coordinator, &origin);
    let host = |h: &str| {
        Request::get("/users")
            .header(header::HOST, h)
            .body(Full::default())
            .unwrap()
    };
    for h in ["a.example", "A.example:80", "b.example", "a.example"] {
        fetch(&svc, host(h)).await.unwrap();
    }
    assert_eq!(origin.calls(), 2, "one per listed host");
    fetch(&svc, host("evil.example")).await.unwrap();
    fetch(&svc, host("evil.example")).await.unwrap();
    assert_eq!(origin.calls(), 4, "unlisted: not coordinated");
}

#[tokio::test(start_paused = true)]
async fn flipping_the_cache_off_for_one_class_sends_the_next_request_to_the_inner_service() {
    let coordinator = coordinator(config(&[("a", "/a"), ("b", "/b")]));
    let origin = Origin::default();
    let svc = stack(&coordinator, &origin);
    for _ in 0..2 {
        fetch(&svc, get("/a")).await.unwrap();
        fetch(&svc, get("/b")).await.unwrap();
    }
    assert_eq!(origin.calls(), 2);

    let a = Class::new("a");
    coordinator
        .switches()
        .set(LayerName::Cache, &a, false)
        .unwrap();
    assert_eq!(
        fetch(&svc, get("/a")).await.unwrap(),
        "GET /a for nobody #3"
    );
    fetch(&svc, get("/b")).await.unwrap();
    assert_eq!(origin.calls_to("/b"), 1, "class b still cached");

    coordinator
        .switches()
        .set(LayerName::Cache, &a, true)
        .unwrap();
    fetch(&svc, get("/a")).await.unwrap();
    assert_eq!(origin.calls_to("/a"), 2, "the entry stored before the flip");

    // The whole stack off: straight to the inner service, unbuffered.
    coordinator.switches().set_all(false);
    let res = svc.clone().oneshot(get("/b")).await.unwrap();
    assert!(!res.body().is_buffered());
    assert_eq!(text(res).await, "GET /b for nobody #4");
    coordinator.switches().set_all(true);
    fetch(&svc, get("/b")).await.unwrap();
    assert_eq!(origin.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn switch_flips_mid_traffic_lose_and_double_no_request() {
    let mut config = config(&[("a", "/a"), ("b", "/b")]);
    // Room for every request at once: a rejection would be a lost request.
    config.limit = config.limit.with_max_concurrent(1_000);
    let coordinator = coordinator(config);
    let origin = Origin::with_delay(Duration::from_millis(3));
    let svc = stack(&coordinator, &origin);

    let flipper = {
        let switches = coordinator.switches().clone();
        tokio::spawn(async move {
            for round in 0u32.. {
                let class = Class::new(if round % 2 == 0 { "a" } else { "b" });
                let layer = LayerName::ALL[round as usize % LayerName::ALL.len()];
                switches.set(layer, &class, round % 3 != 0).unwrap();
                switches.set_all(round % 5 != 0);
                time::sleep(Duration::from_micros(700)).await;
            }
        })
    };
    // Every request has its own key (and POSTs are never shared): each must
    // reach the inner service exactly once, and get its own answer.
    let requests = (0..400).map(|i| {
        let svc = svc.clone();
        async move {
            time::sleep(Duration::from_micros(i * 50)).await;
            let (method, path) = match i % 4 {
                0 => (Method::GET, "/a"),
                1 => (Method::GET, "/b"),
                2 => (Method::POST, "/a"),
                _ => (Method::GET, "/c"),
            };
            let uri = format!("{path}?{i}");
            let reply = fetch(&svc, request(method.clone(), &uri, None))
                .await
                .unwrap();
            assert!(
                reply.starts_with(&format!("{method} {uri} for nobody #")),
                "{reply}"
            );
        }
    });
    join_all(requests).await;
    flipper.abort();
    assert_eq!(origin.calls(), 400);
}

#[tokio::test(start_paused = true)]
async fn a_rollout_of_zero_percent_bypasses_the_stack_and_of_100_coordinates() {
    let mut zero = config(&[("a", "/a")]);
    zero.rollout.percent = 0;
    let coordinator0 = coordinator(zero);
    let origin = Origin::default();
    let svc = stack(&coordinator0, &origin);
    for user in ["Bearer alice", "Bearer bob", "Bearer alice"] {
        let res = svc
            .clone()
            .oneshot(request(Method::GET, "/a", Some(user)))
            .await
            .unwrap();
        assert!(!res.body().is_buffered());
    }
    assert_eq!(origin.calls(), 3);
    let endpoints = coordinator0.snapshot().endpoints;
    assert!(endpoints.values().all(|e| e.requests == 0), "{endpoints:?}");

    let mut allow = config(&[("a", "/a")]);
    allow.rollout.percent = 0;
    allow.rollout.allow = vec!["alice".into()];
    allow.rollout.identity_header = Some("x-user".into());
    let origin = Origin::default();
    let svc = stack(&coordinator(allow), &origin);
    for user in ["alice", "alice", "bob", "bob"] {
        let req = Request::get("/a")
            .header("x-user", user)
            .body(Full::default())
            .unwrap();
        fetch(&svc, req).await.unwrap();
    }
    assert_eq!(origin.calls(), 3, "alice coordinated, bob not");

    let origin = Origin::default();
    let hundred = coordinator(config(&[("a", "/a")]));
    assert_eq!(hundred.config().rollout.percent, 100);
    let svc = stack(&hundred, &origin);
    for user in ["Bearer alice", "Bearer alice"] {
        fetch(&svc, request(Method::GET, "/a", Some(user)))
            .await
            .unwrap();
    }
    assert_eq!(origin.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn invalidate_drops_cache_entries_and_polls_the_registry_at_once() {
    let mut config = config(&[("board", "/board/{id}")]);
    config.cache.class.ttl = Duration::from_secs(60);
    config.registry.class.interval = Duration::from_secs(60);
    let coordinator = coordinator(config);
    let origin = Origin::default();
    let svc = stack(&coordinator, &origin);

    let mut sub = svc.subscribe(get("http://api/board/1")).unwrap();
    assert_eq!(sub.next().await.unwrap().version(), 1);
    fetch(&svc, get("http://api/board/2")).await.unwrap();
    assert_eq!(origin.calls(), 2);

    let invalidated = time::Instant::now();
    coordinator.invalidate(&Invalidation::Prefix("/board/".into()));
    let update = sub.next().await.unwrap();
    assert_eq!(update.version(), 2);
    assert!(
        invalidated.elapsed() < Duration::from_secs(1),
        "pushed, not polled"
    );
    assert_eq!(origin.calls_to("/board/1"), 2, "polled once, at once");
    fetch(&svc, get("http://api/board/2")).await.unwrap();
    assert_eq!(origin.calls_to("/board/2"), 2, "the entry was dropped");
}

#[tokio::test(start_paused = true)]
async fn a_post_through_the_stack_pushes_to_subscribers_of_its_path() {
    let mut config = config(&[("board", "/board")]);
    config.registry.class.interval = Duration::from_secs(60);
    let coordinator = coordinator(config);
    let origin = Origin::default();
    let svc = stack(&coordinator, &origin);

    let mut sub = svc.subscribe(get("http://api/board")).unwrap();
    assert_eq!(sub.next().await.unwrap().version(), 1);
    let posted = time::Instant::now();
    fetch(&svc, request(Method::POST, "http://api/board", None))
        .await
        .unwrap();
    let update = sub.next().await.unwrap();
    assert_eq!(update.version(), 2);
    assert!(
        posted.elapsed() < Duration::from_secs(1),
        "pushed, not polled"
    );
    assert_eq!(origin.calls_to("/board"), 3);
}

#[test]
fn an_invalid_configuration_is_refused_naming_field_value_and_reason() {
    let mut config = config(&[("a", "/a")]);
    config.cache.class.ttl = Duration::ZERO;
    let limit = config.limit.clone().with_max_concurrent(0);
    class(&mut config, "a").limit = Some(limit);
    let err = Coordinator::builder()
        .environment(Environment::Test)
        .config(config)
        .build()
        .unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains(r#"cache.ttl = "0s": must be greater than zero"#),
        "{shown}"
    );
    assert!(
        shown.contains("classes.a.limit.max_concurrency = 0"),
        "{shown}"
    );
    assert_eq!(err.problems().len(), 2);
}

#[test]
fn the_defaults_are_the_development_profile_and_build_outside_a_runtime() {
    let coordinator = Coordinator::builder().build().unwrap();
    assert_eq!(coordinator.environment(), Environment::Development);
    assert_eq!(
        coordinator.config(),
        &Config::profile(Environment::Development)
    );
    // Development turns the breaker and the limit off.
    assert!(!coordinator
        .switches()
        .is_on(LayerName::Breaker, &Class::default()));
    assert!(coordinator
        .switches()
        .is_on(LayerName::Cache, &Class::default()));
    // A service made outside a runtime starts following the cache's
    // invalidations once it is used within one.
    let origin = Origin::default();
    let svc: Stack = coordinator.layer().layer(origin.service());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut sub = svc.subscribe(get("http://api/board")).unwrap();
        assert_eq!(sub.next().await.unwrap().version(), 1);
        let posted = time::Instant::now();
        fetch(&svc, request(Method::POST, "http://api/board", None))
            .await
            .unwrap();
        assert_eq!(sub.next().await.unwrap().version(), 2);
        assert!(
            posted.elapsed() < Duration::from_secs(1),
            "pushed, not polled"
        );
        assert_eq!(origin.calls(), 3);
    });
}

#[test]
fn public_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}
    assert_send_sync::<Coordinator>();
    assert_send_sync::<herdsman::CoordinatorLayer>();
    assert_send_sync::<herdsman::BuildError>();
    assert_send::<Stack>();
    assert_send::<<Stack as tower::Service<Request<Full<Bytes>>>>::Future>();
}

#[tokio::test(start_paused = true)]
async fn sizes_count_each_map_and_fall_to_zero_once_the_linger_has_passed() {
    let coordinator = coordinator(config(&[("active", "/api/active")]));
    let origin = Origin::default();
    let svc = stack(&coordinator, &origin);
    assert_eq!(coordinator.sizes(), Sizes::default());

    let mut sub = svc.subscribe(get("http://api/api/active")).unwrap();
    sub.next().await.unwrap();
    let held = coordinator.sizes();
    assert_eq!((held.registry_keys, held.registry_subscribers), (1, 1));
    assert_eq!((held.cache_entries, held.dedup_entries), (1, 0));
    assert!(held.cache_bytes > 0);

    drop(sub);
    let linger = coordinator.config().registry.class.linger;
    time::sleep(linger * 2).await;
    let drained = coordinator.sizes();
    assert_eq!(
        (drained.registry_keys, drained.registry_subscribers),
        (0, 0)
    );
    assert_eq!(drained.registry_tasks, 0);
    assert_eq!((drained.limit_in_flight, drained.limit_waiting), (0, 0));
    assert_eq!(
        drained.cache_entries, 1,
        "expired entries stay until evicted"
    );
}

#[test]
fn a_rate_rule_built_in_code_without_a_configuration_form_is_refused() {
    use herdsman::limit::RateRule;
    let mut config = Config::profile(Environment::Test);
    config.limit = config
        .limit
        .with_rate(RateRule::new(5, Duration::from_secs(10)));
    let err = Coordinator::builder()
        .environment(Environment::Test)
        .config(config)
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "limit.rate: a rule per 10s has no configuration form: use per_second or per_minute"
    );
}
