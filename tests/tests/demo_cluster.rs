//! The demo as a cluster: its upstream alone, three demo replicas calling
//! it over HTTP and coordinating through one real `redis-server`
//! (`HERDSMAN__REDIS__URL`, the `[redis]` section), real servers and a
//! real client.
//!
//! `cargo test -p herdsman-tests --test demo_cluster -- --ignored` (needs
//! `redis-server` on `PATH`).

use std::time::Duration;

use active_users::{with_demo_classes, Demo, Endpoint, Options, Upstream};
use bytes::Bytes;
use herdsman::config::{Config, Environment, RedisSettings, StaticEnv};
use herdsman_redis::dev::RedisServer;
use herdsman_tests::{bounded_by, client, get, replies, send_all, Server};
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};

/// A demo replica on `redis`, calling `upstream`, configured as
/// `cluster.sh` configures one: through `HERDSMAN__REDIS__URL`.
async fn replica(redis: &RedisServer, upstream: &Server) -> (Demo, Server) {
    let source = StaticEnv::new()
        .var("HERDSMAN__REDIS__URL", redis.url())
        .var("HERDSMAN__REGISTRY__INTERVAL", "60s")
        .var("HERDSMAN__REGISTRY__LINGER", "2m");
    let config = Config::load_from(Environment::Development, &source).unwrap();
    let options = Options {
        latency: Duration::from_millis(300),
        fail_rate: 0.0,
        churn: None,
        upstream_url: Some(upstream.url("").parse().unwrap()),
    };
    let demo = Demo::start(
        Environment::Development,
        with_demo_classes(config),
        &options,
    )
    .await
    .expect("the demo starts on Redis");
    let server = Server::start_with_connect_info(demo.router()).await;
    (demo, server)
}

async fn json(url: &str) -> serde_json::Value {
    let response = client().request(get(url)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).expect("a JSON body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn three_demo_replicas_on_one_redis_make_one_upstream_call_and_share_writes() {
    bounded_by(Duration::from_secs(60), async {
        let redis = RedisServer::start().await.unwrap();
        let upstream = Upstream::new(Duration::from_millis(300), 0.0);
        let upstream_server = Server::start(upstream.standalone_router()).await;
        let mut replicas = Vec::new();
        for _ in 0..3 {
            replicas.push(replica(&redis, &upstream_server).await);
        }

        // 300 concurrent polls spread over the three replicas.
        let urls: Vec<String> = (0..300)
            .map(|i| replicas[i % 3].1.url("/api/active-users"))
            .collect();
        let replies = replies(send_all(&client(), urls.iter().map(|u| get(u)))).await;
        assert!(replies.iter().all(|r| r.status == StatusCode::OK));
        assert!(replies.iter().all(|r| r.body == replies[0].body));
        let calls = json(&upstream_server.url("/upstream/calls")).await;
        assert_eq!(calls["active-users"], 1, "one call, cluster-wide: {calls}");
        assert_eq!(upstream.calls(Endpoint::ActiveUsers), 1);

        // The board on every replica, then a card written through replica
        // 0: the others show it too, though their copies were fresh.
        for (_, server) in &replicas {
            json(&server.url("/api/boards/b/events")).await;
        }
        let card = Request::post(replicas[0].1.url("/api/boards/b/cards"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(br#"{"card":"ship it"}"#)))
            .unwrap();
        assert_eq!(
            client().request(card).await.unwrap().status(),
            StatusCode::CREATED
        );
        for (_, server) in &replicas[1..] {
            let url = server.url("/api/boards/b/events");
            loop {
                let events = json(&url).await;
                if events
                    .as_array()
                    .is_some_and(|e| e.iter().any(|e| e["card"] == "ship it"))
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_redis_url_without_redis_backends_is_refused_by_the_in_process_build() {
    let mut config = Config::profile(Environment::Development);
    config.redis = RedisSettings::new("redis://127.0.0.1:1");
    let err = Demo::build(
        Environment::Development,
        with_demo_classes(config),
        &Options::default(),
    )
    .expect_err("refused");
    assert_eq!(err.problems()[0].path, "redis.url");
}
