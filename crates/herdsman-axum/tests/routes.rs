//! `Live::routes`: one resource's polling and SSE routes in one call, over
//! a whole Coordinator, with paused tokio time.

mod support;

use std::{convert::Infallible, time::Duration};

use axum::{
    body::Body,
    http::{header, Request, Response, StatusCode},
    Router,
};
use herdsman::{
    config::{ClassConfig, Config, Environment},
    Coordinator,
};
use herdsman_axum::Live;
use http_body_util::BodyExt;
use support::Calls;
use tower::{service_fn, Layer, ServiceExt};

/// A Coordinator over an upstream that answers each path with itself (as a
/// JSON string) and counts its calls, and its routes for `/boards/{board}`.
fn app(calls: &Calls) -> (Coordinator, Router) {
    let mut config = Config::profile(Environment::Test);
    config.registry.class.jitter = 0.0;
    config.registry.class.linger = Duration::from_secs(10);
    config.classes.insert(
        "boards".to_owned(),
        ClassConfig {
            paths: vec!["/boards/{board}".to_owned()],
            public: true,
            ..ClassConfig::default()
        },
    );
    let coordinator = Coordinator::builder()
        .environment(Environment::Test)
        .config(config)
        .build()
        .unwrap();
    let calls = calls.clone();
    let upstream = service_fn(move |req: Request<Body>| {
        calls.next();
        let path = serde_json::to_string(req.uri().path()).unwrap();
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(path))
                    .unwrap(),
            )
        }
    });
    let stack = coordinator.layer().layer(upstream);
    let live = Live::new(move |req| stack.subscribe(req));
    let router = Router::new().merge(live.routes("/boards/{board}", "/sse/boards/{board}"));
    (coordinator, router)
}

async fn get(router: &Router, path: &str) -> Response<Body> {
    let req = Request::get(path).body(Body::empty()).unwrap();
    router.clone().oneshot(req).await.unwrap()
}

/// The first SSE event's `data:` line.
async fn first_data(response: Response<Body>) -> String {
    let mut body = response.into_body();
    let mut text = String::new();
    while !text.contains("\n\n") || !text.contains("data:") {
        let frame = body.frame().await.expect("an event").unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
    let line = text.lines().find(|l| l.starts_with("data:")).unwrap();
    line.trim_start_matches("data:").trim().to_owned()
}

#[tokio::test(start_paused = true)]
async fn polls_and_a_stream_of_one_resource_share_one_upstream_call() {
    let calls = Calls::default();
    let (_coordinator, router) = app(&calls);

    let polled = get(&router, "/boards/b-1").await;
    assert_eq!(polled.status(), StatusCode::OK);
    assert!(polled.headers().contains_key(header::ETAG));
    let body = polled.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#""/boards/b-1""#);

    let stream = get(&router, "/sse/boards/b-1").await;
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(
        stream.headers()[header::CONTENT_TYPE],
        "text/event-stream",
        "an event stream"
    );
    assert_eq!(first_data(stream).await, r#""/boards/b-1""#);
    let again = get(&router, "/boards/b-1").await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(calls.get(), 1, "one poll loop answered all three");
}

#[tokio::test(start_paused = true)]
async fn a_stream_follows_the_resource_its_path_parameters_name() {
    let calls = Calls::default();
    let (_coordinator, router) = app(&calls);
    // A decoded parameter is encoded again: the stream's resource is the
    // board named "a b", not a path of its own.
    let stream = get(&router, "/sse/boards/a%20b").await;
    assert_eq!(first_data(stream).await, r#""/boards/a%20b""#);
    let other = get(&router, "/sse/boards/c").await;
    assert_eq!(first_data(other).await, r#""/boards/c""#);
    assert_eq!(calls.get(), 2, "one loop per board");
}
