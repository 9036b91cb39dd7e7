//! tower-http where it fits (issue 17, section 5): the demo's gzip,
//! deadlines and body limits, and the Cache keeping a compressing origin's
//! encodings apart.

use std::{
    io::Read,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use active_users::{with_demo_classes, Demo, Endpoint, Options, MAX_WRITE_BYTES, REQUEST_TIMEOUT};
use axum::{body::Body, routing::get, Router};
use bytes::Bytes;
use herdsman::{
    config::{CacheSettings, ClassConfig, Config, Environment},
    Coordinator,
};
use herdsman_axum::error_response;
use herdsman_tests::{bounded, client, empty, replies, request, send_all, Reply, Server};
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tower::{Layer, ServiceExt};
use tower_http::compression::CompressionLayer;

fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

/// A reply's body as JSON: gunzipped when it says it is gzip, and only
/// then.
fn json_of(reply: &Reply) -> Value {
    let body = match reply.header(header::CONTENT_ENCODING) {
        Some("gzip") => gunzip(&reply.body),
        None => reply.body.to_vec(),
        Some(other) => panic!("an unexpected encoding {other}"),
    };
    serde_json::from_slice(&body).expect("JSON")
}

fn demo_options(latency: Duration) -> Options {
    Options {
        latency,
        fail_rate: 0.0,
        churn: None,
        upstream_url: None,
    }
}

fn demo(environment: Environment, latency: Duration) -> Demo {
    let mut config = Config::profile(environment);
    config.registry.class.interval = Duration::from_secs(60);
    config.registry.class.linger = Duration::from_secs(120);
    Demo::build(
        environment,
        with_demo_classes(config),
        &demo_options(latency),
    )
    .expect("the demo's configuration is valid")
}

fn get_with(url: &str, encoding: Option<&str>) -> Request<Full<Bytes>> {
    let mut builder = request(Method::GET, url);
    if let Some(encoding) = encoding {
        builder = builder.header(header::ACCEPT_ENCODING, encoding);
    }
    empty(builder)
}

#[tokio::test]
async fn the_demo_gzips_json_for_callers_that_accept_it_and_only_for_them() {
    bounded(async {
        let demo = demo(Environment::Development, Duration::from_millis(20));
        let server = Server::start_with_connect_info(demo.router()).await;
        let url = server.url("/api/active-users");
        // Interleaved, concurrent: gzip and identity callers of one key.
        let requests = (0..40).map(|i| get_with(&url, (i % 2 == 0).then_some("gzip")));
        let answers = replies(send_all(&client(), requests)).await;
        let mut bodies = Vec::new();
        for (i, reply) in answers.iter().enumerate() {
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            let expected = (i % 2 == 0).then_some("gzip");
            assert_eq!(reply.header(header::CONTENT_ENCODING), expected, "{i}");
            bodies.push(json_of(reply));
        }
        assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
        assert!(bodies[0]["users"].is_array());
        assert_eq!(
            demo.upstream.calls(Endpoint::ActiveUsers),
            1,
            "the encodings share the one poll loop"
        );

        // An event stream is never compressed.
        let sse = client()
            .request(get_with(&server.url("/sse/active-users"), Some("gzip")))
            .await
            .unwrap();
        assert_eq!(sse.status(), StatusCode::OK);
        assert!(sse.headers().get(header::CONTENT_ENCODING).is_none());
    })
    .await;
}

/// An origin whose JSON handler sits behind tower-http's compression,
/// counting its calls, under a Coordinator whose Cache keeps `/items`.
fn compressing_origin() -> (Coordinator, Router, Arc<AtomicUsize>) {
    let mut config = Config::profile(Environment::Test);
    let cache = CacheSettings {
        class: herdsman::cache::ClassSettings {
            ttl: Duration::from_secs(60),
            ..config.cache.class
        },
        ..config.cache.clone()
    };
    config.classes.insert(
        "items".to_owned(),
        ClassConfig {
            paths: vec!["/items".to_owned()],
            public: true,
            cache: Some(cache),
            ..ClassConfig::default()
        },
    );
    let coordinator = Coordinator::builder()
        .environment(Environment::Test)
        .config(config)
        .build()
        .expect("a valid configuration");
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let handler = move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            let items: Vec<String> = (0..50).map(|i| format!("item number {i}")).collect();
            axum::Json(items)
        }
    };
    let origin = Router::new()
        .route("/items", get(handler))
        .layer(CompressionLayer::new());
    let stack = coordinator.layer().layer(origin);
    let app = Router::new().fallback(move |req: Request<Body>| {
        let stack = stack.clone();
        async move {
            match stack.oneshot(req).await {
                Ok(response) => response.map(Body::new),
                Err(err) => error_response(&*err),
            }
        }
    });
    (coordinator, app, calls)
}

#[tokio::test]
async fn the_cache_keeps_gzip_and_identity_answers_apart() {
    bounded(async {
        let (coordinator, app, calls) = compressing_origin();
        let server = Server::start_with_connect_info(app).await;
        let url = server.url("/items");
        let http = client();
        let mut seen = Vec::new();
        // Gzip first, so a mix-up would hand gzip to an identity caller;
        // then every order of the two, from the cache.
        for encoding in [Some("gzip"), None, None, Some("gzip"), Some("gzip"), None] {
            let reply = replies(send_all(&http, [get_with(&url, encoding)]))
                .await
                .remove(0);
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(
                reply.header(header::CONTENT_ENCODING),
                encoding,
                "{reply:?}"
            );
            seen.push(json_of(&reply));
        }
        assert!(seen.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "one origin call per encoding, the rest from the cache"
        );
        let stats = coordinator.stats().snapshot();
        assert_eq!(stats.endpoints["items"].cache_hits, 4);
    })
    .await;
}

#[tokio::test]
async fn a_write_over_the_body_limit_is_answered_413_before_the_upstream() {
    bounded(async {
        let demo = demo(Environment::Development, Duration::from_millis(20));
        let server = Server::start_with_connect_info(demo.router()).await;
        let url = server.url("/api/boards/demo/cards");
        let post = |body: String| {
            request(Method::POST, &url)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap()
        };
        let big = format!(
            r#"{{"card": "{}", "action": "added"}}"#,
            "x".repeat(MAX_WRITE_BYTES)
        );
        let refused = client().request(post(big)).await.unwrap();
        assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(demo.upstream.calls(Endpoint::Cards), 0);

        let small = r#"{"card": "fits", "action": "added"}"#.to_owned();
        let added = client().request(post(small)).await.unwrap();
        assert_eq!(added.status(), StatusCode::CREATED);
        assert_eq!(demo.upstream.calls(Endpoint::Cards), 1);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_json_route_times_out_but_an_event_stream_is_never_cut() {
    // The upstream takes longer than the deadline.
    let demo = demo(Environment::Test, REQUEST_TIMEOUT * 3);
    let app = demo.router();
    let polled = app
        .clone()
        .oneshot(
            Request::get("/api/active-users")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(polled.status(), StatusCode::GATEWAY_TIMEOUT);

    let stream = app
        .oneshot(
            Request::get("/sse/active-users")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let started = tokio::time::Instant::now();
    let mut body = stream.into_body();
    // The first value comes once the slow upstream answers, long past the
    // JSON routes' deadline (keep-alive comments come before it).
    loop {
        let frame = body
            .frame()
            .await
            .expect("the stream is open")
            .expect("no error");
        let data = frame.into_data().unwrap_or_default();
        if data.starts_with(b"id:") || data.windows(5).any(|w| w == b"data:") {
            break;
        }
    }
    assert!(
        started.elapsed() > REQUEST_TIMEOUT,
        "{:?}",
        started.elapsed()
    );
}
