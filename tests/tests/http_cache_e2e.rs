//! The stack from the README (Cache over Dedup over Buffer) against real
//! servers on 127.0.0.1: around a hyper-util client and around an axum
//! Router.

use std::time::Duration;

use axum::{
    error_handling::HandleErrorLayer,
    extract::State,
    http::{header, Method, StatusCode},
    routing, Router,
};
use herdsman::{
    cache::{CacheLayer, HttpCachePolicy},
    dedup::DedupLayer,
    http::{BufferLayer, HttpKey, HttpShare, SharedBody},
    BoxError,
};
use herdsman_tests::{
    bounded, client, empty, get, replies, request, send_all, wait_until, Probe, Server,
};
use tower::ServiceBuilder;

type HttpCache = CacheLayer<HttpKey, http::Response<SharedBody>, HttpCachePolicy>;

const CALLERS: usize = 20;

async fn board(State(probe): State<Probe>) -> String {
    let n = probe.enter().await;
    format!("board v{n}")
}

fn layers() -> (HttpCache, DedupLayer<HttpKey, HttpShare>) {
    let cache = CacheLayer::http(HttpKey::new()).with_ttl(Duration::from_secs(60));
    let dedup = DedupLayer::new(HttpKey::new()).with_share(HttpShare);
    (cache, dedup)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_stack_around_a_hyper_client_calls_upstream_once_and_then_hits() {
    bounded(async {
        let probe = Probe::new();
        let app = Router::new()
            .route("/board", routing::get(board).post(board))
            .with_state(probe.clone());
        let server = Server::start(app).await;
        let (cache, dedup) = layers();
        let svc = ServiceBuilder::new()
            .layer(cache.clone())
            .layer(dedup.clone())
            .layer(BufferLayer::new())
            .service(client());

        // Concurrent misses: Dedup below the cache makes them one call.
        let calls = send_all(&svc, (0..CALLERS).map(|_| get(&server.url("/board"))));
        wait_until("every miss joined the first", || {
            dedup.handle().stats().coalesced == CALLERS as u64 - 1
        })
        .await;
        probe.open();
        for reply in replies(calls).await {
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(reply.body, "board v1");
        }
        assert_eq!(probe.calls(), 1);

        // Then hits, with Age and Cache-Status.
        let hits = replies(send_all(
            &svc,
            (0..CALLERS).map(|_| get(&server.url("/board"))),
        ))
        .await;
        for reply in &hits {
            assert_eq!(reply.body, "board v1");
            assert_eq!(reply.header("cache-status"), Some("herdsman; hit"));
            assert!(reply.header(header::AGE).is_some());
        }
        assert_eq!(probe.calls(), 1);
        assert_eq!(cache.handle().stats().hits, CALLERS as u64);

        // A POST invalidates; the next GET reaches the upstream.
        let post = empty(request(Method::POST, &server.url("/board")));
        replies(send_all(&svc, [post])).await;
        let after = replies(send_all(&svc, [get(&server.url("/board"))])).await;
        assert_eq!(after[0].body, "board v3");
        assert_eq!(dedup.handle().stats().entries, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_stack_around_an_axum_router_runs_the_handler_once() {
    bounded(async {
        let probe = Probe::new();
        let (cache, dedup) = layers();
        let app = Router::new()
            .route("/board", routing::get(board))
            .with_state(probe.clone())
            .layer(
                ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(|err: BoxError| async move {
                        (StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
                    }))
                    .layer(cache.clone())
                    .layer(dedup.clone())
                    .layer(BufferLayer::new()),
            );
        let server = Server::start(app).await;
        let client = client();

        let calls = send_all(&client, (0..CALLERS).map(|_| get(&server.url("/board"))));
        wait_until("every miss joined the first", || {
            dedup.handle().stats().coalesced == CALLERS as u64 - 1
        })
        .await;
        probe.open();
        for reply in replies(calls).await {
            assert_eq!(reply.body, "board v1");
        }
        let hits = replies(send_all(
            &client,
            (0..CALLERS).map(|_| get(&server.url("/board"))),
        ))
        .await;
        assert!(hits.iter().all(|r| r.body == "board v1"));
        assert_eq!(probe.calls(), 1, "the handler ran once for 40 requests");
        assert_eq!(cache.handle().stats().hits, CALLERS as u64);
    })
    .await;
}
