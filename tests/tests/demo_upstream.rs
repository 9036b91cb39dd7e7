//! The demo's upstream alone (`active-users --upstream-only`) and demo
//! replicas calling it through a hyper-util client (`DEMO_UPSTREAM_URL`):
//! real servers on 127.0.0.1:0, a real client.
//!
//! Intervals are a minute, so that no poll happens on its own.

use std::time::Duration;

use active_users::{with_demo_classes, Demo, Endpoint, Options, Upstream};
use bytes::Bytes;
use herdsman::config::{Config, Environment};
use herdsman_tests::{bounded, client, get, replies, send_all, Server};
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};

fn options(upstream_url: Option<&Server>) -> Options {
    Options {
        latency: Duration::from_millis(20),
        fail_rate: 0.0,
        churn: None,
        upstream_url: upstream_url.map(|server| server.url("").parse().unwrap()),
    }
}

/// The upstream alone, as `--upstream-only` serves it.
async fn upstream() -> (Upstream, Server) {
    let upstream = Upstream::new(Duration::from_millis(20), 0.0);
    let server = Server::start(upstream.standalone_router()).await;
    (upstream, server)
}

/// A demo replica whose upstream is `upstream` (or its own, in process).
async fn replica(upstream: Option<&Server>) -> (Demo, Server) {
    let mut config = Config::profile(Environment::Development);
    config.registry.class.interval = Duration::from_secs(60);
    config.registry.class.linger = Duration::from_secs(120);
    let demo = Demo::build(
        Environment::Development,
        with_demo_classes(config),
        &options(upstream),
    )
    .expect("the demo's configuration is valid");
    let server = Server::start_with_connect_info(demo.router()).await;
    (demo, server)
}

async fn get_json(url: &str) -> (StatusCode, serde_json::Value) {
    let response = client().request(get(url)).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).expect("a JSON body"))
}

async fn upstream_calls(upstream: &Server) -> serde_json::Value {
    let (status, calls) = get_json(&upstream.url("/upstream/calls")).await;
    assert_eq!(status, StatusCode::OK);
    calls
}

#[tokio::test]
async fn the_upstream_alone_serves_its_api_and_counts_its_calls_per_endpoint() {
    bounded(async {
        let (upstream, server) = upstream().await;
        assert_eq!(
            upstream_calls(&server).await,
            serde_json::json!({"active-users": 0, "board-events": 0, "cards": 0, "me": 0})
        );
        let (status, users) = get_json(&server.url("/api/active-users")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(users["count"], 4);
        let (status, _) = get_json(&server.url("/api/boards/b/events")).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = get_json(&server.url("/api/boards/b/events")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            upstream_calls(&server).await,
            serde_json::json!({"active-users": 1, "board-events": 2, "cards": 0, "me": 0})
        );
        assert_eq!(upstream.calls(Endpoint::BoardEvents), 2);
    })
    .await;
}

#[tokio::test]
async fn a_replica_with_an_upstream_url_coordinates_its_calls_to_the_remote_upstream() {
    bounded(async {
        let (upstream, upstream_server) = upstream().await;
        let (demo, replica_server) = replica(Some(&upstream_server)).await;
        let url = replica_server.url("/api/active-users");
        let replies = replies(send_all(&client(), (0..300).map(|_| get(&url)))).await;
        assert!(replies.iter().all(|r| r.status == StatusCode::OK));
        let first: serde_json::Value = serde_json::from_slice(&replies[0].body).unwrap();
        assert_eq!(first["count"], 4);
        assert!(replies.iter().all(|r| r.body == replies[0].body));
        // 300 callers, one call through the client, to the remote upstream.
        assert_eq!(upstream_calls(&upstream_server).await["active-users"], 1);
        assert_eq!(upstream.calls(Endpoint::ActiveUsers), 1);
        assert_eq!(
            demo.upstream.calls(Endpoint::ActiveUsers),
            0,
            "not in process"
        );

        // A write goes through the client too, and the replica's board
        // shows it at once (the write invalidates its loop).
        let card = Request::post(replica_server.url("/api/boards/b/cards"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(br#"{"card":"ship it"}"#)))
            .unwrap();
        let response = client().request(card).await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(upstream.calls(Endpoint::Cards), 1);
        let (status, events) = get_json(&replica_server.url("/api/boards/b/events")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(events[0]["card"], "ship it");
    })
    .await;
}

#[tokio::test]
async fn a_private_endpoint_reaches_the_remote_upstream_with_each_callers_credentials() {
    bounded(async {
        let (upstream, upstream_server) = upstream().await;
        let (_demo, replica_server) = replica(Some(&upstream_server)).await;
        for who in ["alice", "bob"] {
            let me = Request::get(replica_server.url("/api/me"))
                .header(header::AUTHORIZATION, format!("Bearer {who}"))
                .body(Full::default())
                .unwrap();
            let response = client().request(me).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let me: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(me["name"], who);
        }
        assert_eq!(upstream.calls(Endpoint::Me), 2, "one call per user");
    })
    .await;
}

#[tokio::test]
async fn replicas_without_redis_each_call_the_shared_upstream() {
    // What the Redis backends are for: without them, every replica makes
    // its own call.
    bounded(async {
        let (upstream, upstream_server) = upstream().await;
        let (_a, a) = replica(Some(&upstream_server)).await;
        let (_b, b) = replica(Some(&upstream_server)).await;
        for replica in [&a, &b] {
            let url = replica.url("/api/active-users");
            let replies = replies(send_all(&client(), (0..50).map(|_| get(&url)))).await;
            assert!(replies.iter().all(|r| r.status == StatusCode::OK));
        }
        assert_eq!(upstream.calls(Endpoint::ActiveUsers), 2);
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_upstream_is_an_error_answer_not_a_hang() {
    bounded(async {
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut options = options(None);
        options.upstream_url = Some(format!("http://127.0.0.1:{port}").parse().unwrap());
        let mut config = Config::profile(Environment::Development);
        config.registry.class.interval = Duration::from_secs(60);
        let demo = Demo::build(
            Environment::Development,
            with_demo_classes(config),
            &options,
        )
        .expect("valid");
        let server = Server::start_with_connect_info(demo.router()).await;
        let response = client()
            .request(get(&server.url("/api/active-users")))
            .await
            .unwrap();
        assert!(response.status().is_server_error(), "{}", response.status());
    })
    .await;
}

#[test]
fn the_upstream_url_is_read_from_the_environment_and_checked() {
    let read = |value: &'static str| {
        Options::from_env(move |name| (name == "DEMO_UPSTREAM_URL").then(|| value.to_owned()))
    };
    let options = read("http://127.0.0.1:4000").unwrap();
    assert_eq!(
        options.upstream_url.unwrap().to_string(),
        "http://127.0.0.1:4000/"
    );
    for bad in [
        "127.0.0.1:4000",
        "https://up:4000",
        "http://up:4000/api",
        "nope",
    ] {
        let err = read(bad).unwrap_err();
        assert!(err.contains("DEMO_UPSTREAM_URL"), "{bad}: {err}");
    }
    assert!(Options::from_env(|_| None).unwrap().upstream_url.is_none());
}
