//! The Cache around one axum handler: the handler runs once, and later GETs
//! within the TTL are answered from the cache (`Cache-Status`, `Age`).
//!
//! ```text
//! cargo run -p herdsman-axum --example cache_handler
//! ```

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    body::Body, error_handling::HandleErrorLayer, extract::State, http::Request, routing::get,
    Json, Router,
};
use herdsman::{
    cache::CacheLayer,
    http::{BufferLayer, HttpKey},
    BoxError,
};
use herdsman_axum::error_response;
use tower::{ServiceBuilder, ServiceExt};

/// The handler: slow, and counting its runs.
async fn leaderboard(State(runs): State<Arc<AtomicUsize>>) -> Json<serde_json::Value> {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(Duration::from_millis(100)).await; // a slow query
    Json(serde_json::json!({"top": ["ann", "bob"], "computed_by_run": run}))
}

#[tokio::main]
async fn main() {
    let runs = Arc::new(AtomicUsize::new(0));
    let cache = CacheLayer::http(HttpKey::new()).with_ttl(Duration::from_secs(30));
    let app = Router::new()
        .route(
            "/leaderboard",
            get(leaderboard).layer(
                ServiceBuilder::new()
                    // The cache's own failures (none here) as responses.
                    .layer(HandleErrorLayer::new(|err: BoxError| async move {
                        error_response(&*err)
                    }))
                    .layer(cache.clone())
                    // Reads the handler's body so one answer can be reused.
                    .layer(BufferLayer::new()),
            ),
        )
        .with_state(runs.clone());

    for i in 1..=3 {
        let request = Request::get("http://example.test/leaderboard")
            .body(Body::empty())
            .expect("a valid request");
        let response = app.clone().oneshot(request).await.expect("infallible");
        let header = |name| {
            response
                .headers()
                .get(name)
                .map_or("-", |v| v.to_str().unwrap_or("?"))
                .to_owned()
        };
        println!(
            "GET {i}: {} cache-status: {}, age: {}",
            response.status(),
            header("cache-status"),
            header("age")
        );
        tokio::time::sleep(Duration::from_millis(1_100)).await;
    }
    println!(
        "3 GETs, the handler ran {} time(s)",
        runs.load(Ordering::SeqCst)
    );
    let stats = cache.handle().stats();
    println!("cache: {} hit(s), {} miss(es)", stats.hits, stats.misses);
}
