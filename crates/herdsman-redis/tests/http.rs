//! The HTTP cache over `RedisStore` and `HttpCodec`, against a real
//! `redis-server`: replicas share responses, never across users.
//!
//! `cargo test -p herdsman-redis -- --ignored` (needs `redis-server` on
//! `PATH`).

mod support;

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use herdsman::{
    backend::StoreBackend,
    cache::CacheLayer,
    error::BoxError,
    http::{BufferLayer, HttpBody, HttpKey},
    key::KeyFn,
};
use herdsman_redis::{dev::RedisServer, HttpCodec, RedisStore};
use http::{header, Request, Response};
use http_body_util::{BodyExt, Full};
use support::{eventually, replica};
use tower::{service_fn, util::BoxCloneSyncService, ServiceBuilder, ServiceExt};

type Stack = BoxCloneSyncService<Request<Full<Bytes>>, Response<HttpBody<Full<Bytes>>>, BoxError>;

fn get(path: &str, user: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header(header::AUTHORIZATION, user)
        .body(Full::default())
        .unwrap()
}

/// A replica: the HTTP cache over the shared store, over an origin that
/// answers "`{path}` for `{authorization}`" with a content type.
fn replica_stack(store: RedisStore<HttpCodec>, calls: &Arc<AtomicU64>) -> Stack {
    let calls = calls.clone();
    let origin = service_fn(move |req: Request<Full<Bytes>>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let user = req.headers()[header::AUTHORIZATION]
            .to_str()
            .unwrap()
            .to_string();
        let body = format!("{} for {user}", req.uri().path());
        async move {
            let response = Response::builder()
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            Ok::<_, Infallible>(response)
        }
    });
    let cache = CacheLayer::http(HttpKey::new())
        .with_ttl(Duration::from_secs(60))
        .with_store_backend(store);
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(cache)
            .layer(BufferLayer::new())
            .service(origin),
    )
}

async fn send(svc: &Stack, req: Request<Full<Bytes>>) -> (String, Option<String>) {
    let response = svc.clone().oneshot(req).await.unwrap();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (String::from_utf8(body.to_vec()).unwrap(), content_type)
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn replicas_share_http_responses_through_redis_and_users_stay_apart() {
    let server = RedisServer::start().await.unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let here = replica_stack(RedisStore::new(replica(&server), HttpCodec), &calls);
    let there = replica_stack(RedisStore::new(replica(&server), HttpCodec), &calls);
    let text = Some("text/plain".to_string());

    assert_eq!(
        send(&here, get("/me", "alice")).await,
        ("/me for alice".into(), text.clone())
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The write-through is in the background: wait until Redis has it.
    let probe = RedisStore::new(replica(&server), HttpCodec);
    let key = HttpKey::new().key(&get("/me", "alice")).unwrap();
    eventually("written through", || {
        StoreBackend::lookup(&probe, &key).get()
    })
    .await;

    // Another replica answers alice from Redis: status, headers and body.
    assert_eq!(
        send(&there, get("/me", "alice")).await,
        ("/me for alice".into(), text.clone())
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "answered from Redis");
    // Bob's request has another auth partition: never alice's response.
    assert_eq!(
        send(&there, get("/me", "bob")).await,
        ("/me for bob".into(), text)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
