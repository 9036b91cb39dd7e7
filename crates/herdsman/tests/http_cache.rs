//! The cache with HTTP semantics: `HttpKey`, `BufferLayer` and
//! `HttpCachePolicy` around an in-process upstream, paused time.

mod support;

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use herdsman::{
    cache::{CacheHandle, CacheLayer, CacheMode, HttpCachePolicy},
    clock::Clock,
    event::MemorySource,
    http::{BufferLayer, HttpBody, HttpKey, SharedBody},
    key::KeyFn,
    BoxError,
};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use proptest::prelude::*;
use support::{
    http::{get, reply, request, Reply},
    settle, wait_until, Calls,
};
use tokio::time;
use tower::{service_fn, util::BoxCloneSyncService, Layer, Service, ServiceBuilder, ServiceExt};

type Upstream = BoxCloneSyncService<Request<Full<Bytes>>, Response<Full<Bytes>>, Infallible>;
type Stack = BoxCloneSyncService<Request<Full<Bytes>>, Response<HttpBody<Full<Bytes>>>, BoxError>;

/// A status and response headers.
type Route = (StatusCode, Vec<(&'static str, String)>);

/// Per-path response headers and status; counts calls per path and keeps
/// the headers of every request. Bodies are "`{path}` for `{authorization}`
/// #`{n}`", with " in `{accept-language}`" after the user when the request
/// names one. A route with an `ETag` answers `304` (no body) to a request
/// whose `If-None-Match` is that tag.
#[derive(Clone, Default)]
struct Origin {
    calls: Calls,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
}

impl Origin {
    fn route(&self, path: &str, status: StatusCode, headers: &[(&'static str, &str)]) {
        let headers = headers.iter().map(|(n, v)| (*n, v.to_string())).collect();
        self.routes
            .lock()
            .unwrap()
            .insert(path.to_string(), (status, headers));
    }

    fn calls(&self) -> usize {
        self.calls.get()
    }

    /// The headers of the last request the origin received.
    fn last_request(&self) -> HeaderMap {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }

    fn service(&self) -> Upstream {
        let this = self.clone();
        BoxCloneSyncService::new(service_fn(move |req: Request<Full<Bytes>>| {
            let n = this.calls.next();
            this.seen.lock().unwrap().push(req.headers().clone());
            let (mut status, headers) = this
                .routes
                .lock()
                .unwrap()
                .get(req.uri().path())
                .cloned()
                .unwrap_or((StatusCode::OK, Vec::new()));
            let who = req
                .headers()
                .get(header::AUTHORIZATION)
                .map_or("anyone".to_string(), |v| v.to_str().unwrap().to_string());
            let lang = req
                .headers()
                .get(header::ACCEPT_LANGUAGE)
                .map_or(String::new(), |v| format!(" in {}", v.to_str().unwrap()));
            let mut body = format!("{} for {who}{lang} #{n}", req.uri().path());
            let etag = headers.iter().find(|(name, _)| *name == "etag");
            if let (Some((_, tag)), Some(inm)) = (etag, req.headers().get(header::IF_NONE_MATCH)) {
                if inm == tag.as_str() {
                    status = StatusCode::NOT_MODIFIED;
                    body.clear();
                }
            }
            async move {
                let mut response = Response::new(Full::new(Bytes::from(body)));
                *response.status_mut() = status;
                for (name, value) in headers {
                    response
                        .headers_mut()
                        .append(name, HeaderValue::from_str(&value).unwrap());
                }
                Ok(response)
            }
        }))
    }
}

type HttpCache = CacheLayer<HttpKey, Response<SharedBody>, HttpCachePolicy>;

fn cache() -> HttpCache {
    CacheLayer::http(HttpKey::new())
        .with_clock(Clock::Tokio)
        .with_ttl(Duration::from_secs(10))
}

fn stack(layer: &HttpCache, origin: &Origin) -> Stack {
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(layer.clone())
            .layer(BufferLayer::new())
            .service(origin.service()),
    )
}

async fn send(svc: &Stack, req: Request<Full<Bytes>>) -> Reply {
    reply(svc.clone().oneshot(req).await.unwrap())
        .await
        .unwrap()
}

async fn body(svc: &Stack, req: Request<Full<Bytes>>) -> String {
    send(svc, req).await.body
}

#[tokio::test(start_paused = true)]
async fn a_get_is_served_from_the_cache_with_age_and_cache_status() {
    let origin = Origin::default();
    let layer = cache();
    let svc = stack(&layer, &origin);

    let miss = send(&svc, get("/a")).await;
    assert_eq!(miss.body, "/a for anyone #1");
    assert_eq!(miss.headers["cache-status"], "herdsman; fwd=miss; stored");
    assert!(miss.headers.get(header::AGE).is_none());

    time::advance(Duration::from_secs(3)).await;
    let hit = send(&svc, get("/a")).await;
    assert_eq!(hit.body, "/a for anyone #1");
    assert_eq!(hit.headers["cache-status"], "herdsman; hit");
    assert_eq!(hit.headers[header::AGE], "3");
    assert_eq!(origin.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn users_never_see_each_others_entries() {
    let origin = Origin::default();
    let layer = cache();
    let svc = stack(&layer, &origin);
    let alice = || request(Method::GET, "/me", &[("authorization", "alice")]);
    let bob = || request(Method::GET, "/me", &[("authorization", "bob")]);
    assert_eq!(body(&svc, alice()).await, "/me for alice #1");
    assert_eq!(body(&svc, bob()).await, "/me for bob #2");
    assert_eq!(body(&svc, alice()).await, "/me for alice #1");
    assert_eq!(body(&svc, bob()).await, "/me for bob #2");
    assert_eq!(body(&svc, get("/me")).await, "/me for anyone #3");

    let public = CacheLayer::http(HttpKey::new().public()).with_clock(Clock::Tokio);
    let svc = stack(&public, &origin);
    assert_eq!(body(&svc, alice()).await, "/me for alice #4");
    assert_eq!(
        body(&svc, bob()).await,
        "/me for alice #4",
        "declared public"
    );
}

async fn stored(origin: &Origin, headers: &[(&'static str, &str)]) -> bool {
    origin.route("/x", StatusCode::OK, headers);
    let layer = cache();
    let svc = stack(&layer, origin);
    let first = body(&svc, get("/x")).await;
    let second = body(&svc, get("/x")).await;
    first == second
}

#[tokio::test(start_paused = true)]
async fn response_cache_control_decides_what_is_stored() {
    let origin = Origin::default();
    assert!(stored(&origin, &[]).await);
    assert!(stored(&origin, &[("cache-control", "public, max-age=60")]).await);
    assert!(!stored(&origin, &[("cache-control", "no-store")]).await);
    assert!(!stored(&origin, &[("cache-control", "private")]).await);
    assert!(!stored(&origin, &[("cache-control", "no-cache")]).await);
    assert!(!stored(&origin, &[("cache-control", "max-age=0")]).await);
    assert!(!stored(&origin, &[("cache-control", "max-age=abc")]).await);
    assert!(!stored(&origin, &[("cache-control", "max-age=10, max-age=20")]).await);
    assert!(!stored(&origin, &[("cache-control", "max-age=\"")]).await);
    assert!(stored(&origin, &[("cache-control", "MAX-AGE=60 , ,,")]).await);
    assert!(!stored(&origin, &[("expires", "0")]).await);
    assert!(!stored(&origin, &[("expires", "Thu, 01 Jan 1970 00:00:00 GMT")]).await);
    assert!(!stored(&origin, &[("expires", "not a date")]).await);
    assert!(stored(&origin, &[("expires", "Fri, 01 Jan 2100 00:00:00 GMT")]).await);
    assert!(!stored(&origin, &[("set-cookie", "sid=1")]).await);
}

#[tokio::test(start_paused = true)]
async fn max_age_and_s_maxage_cap_the_ttl() {
    let origin = Origin::default();
    origin.route("/short", StatusCode::OK, &[("cache-control", "max-age=2")]);
    origin.route(
        "/shared",
        StatusCode::OK,
        &[("cache-control", "max-age=1, s-maxage=4")],
    );
    origin.route(
        "/long",
        StatusCode::OK,
        &[("cache-control", "max-age=3600")],
    );
    let layer = cache();
    let svc = stack(&layer, &origin);
    for path in ["/short", "/shared", "/long"] {
        body(&svc, get(path)).await;
    }
    time::advance(Duration::from_secs(2)).await;
    assert!(
        body(&svc, get("/short")).await.ends_with("#4"),
        "max-age=2 is over"
    );
    assert!(
        body(&svc, get("/shared")).await.ends_with("#2"),
        "s-maxage wins"
    );
    time::advance(Duration::from_secs(8)).await;
    assert!(
        body(&svc, get("/long")).await.ends_with("#5"),
        "capped by the class TTL"
    );
}

#[tokio::test(start_paused = true)]
async fn set_cookie_is_stored_only_when_the_endpoint_opts_in() {
    let origin = Origin::default();
    origin.route("/login", StatusCode::OK, &[("set-cookie", "sid=1")]);
    let opted = cache().with_policy(HttpCachePolicy::new().store_set_cookie(true));
    let svc = stack(&opted, &origin);
    assert_eq!(
        body(&svc, get("/login")).await,
        body(&svc, get("/login")).await
    );
    assert_eq!(origin.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn request_no_cache_refreshes_and_no_store_bypasses() {
    let origin = Origin::default();
    let layer = cache();
    let svc = stack(&layer, &origin);
    assert_eq!(body(&svc, get("/a")).await, "/a for anyone #1");

    let refresh = send(
        &svc,
        request(Method::GET, "/a", &[("cache-control", "no-cache")]),
    )
    .await;
    assert_eq!(refresh.body, "/a for anyone #2");
    assert_eq!(
        refresh.headers["cache-status"],
        "herdsman; fwd=request; stored"
    );
    assert_eq!(
        body(&svc, get("/a")).await,
        "/a for anyone #2",
        "the refresh was stored"
    );

    let pragma = request(Method::GET, "/a", &[("pragma", "no-cache")]);
    assert_eq!(body(&svc, pragma).await, "/a for anyone #3");

    let bypass = request(Method::GET, "/a", &[("cache-control", "no-store")]);
    assert_eq!(body(&svc, bypass).await, "/a for anyone #4");
    assert_eq!(
        body(&svc, get("/a")).await,
        "/a for anyone #3",
        "a bypass stores nothing"
    );
    assert_eq!(layer.handle().stats().bypassed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_successful_unsafe_request_invalidates_its_path_for_everyone() {
    let origin = Origin::default();
    let layer = cache();
    let svc = stack(&layer, &origin);
    body(&svc, get("/cards")).await;
    body(&svc, get("/cards?page=2")).await;
    body(
        &svc,
        request(Method::GET, "/cards", &[("authorization", "alice")]),
    )
    .await;
    body(&svc, get("/other")).await;
    assert_eq!(layer.handle().stats().entries, 4);

    origin.route("/cards", StatusCode::CREATED, &[]);
    let post = send(&svc, request(Method::POST, "/cards", &[])).await;
    assert_eq!(post.status, StatusCode::CREATED);
    assert_eq!(layer.handle().stats().entries, 1, "only /other is left");

    origin.route("/other", StatusCode::INTERNAL_SERVER_ERROR, &[]);
    send(&svc, request(Method::DELETE, "/other", &[])).await;
    assert_eq!(
        layer.handle().stats().entries,
        1,
        "a failed unsafe request invalidates nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn statuses_outside_the_list_are_stored_only_by_negative_caching() {
    let origin = Origin::default();
    origin.route("/missing", StatusCode::NOT_FOUND, &[]);
    let layer = cache();
    let svc = stack(&layer, &origin);
    body(&svc, get("/missing")).await;
    body(&svc, get("/missing")).await;
    assert_eq!(origin.calls(), 2, "404 is not stored by default");

    let negative = cache().with_policy(
        HttpCachePolicy::new().negative([StatusCode::NOT_FOUND], Duration::from_secs(1)),
    );
    let svc = stack(&negative, &origin);
    let first = send(&svc, get("/missing")).await;
    assert_eq!(first.status, StatusCode::NOT_FOUND);
    assert_eq!(body(&svc, get("/missing")).await, first.body);
    time::advance(Duration::from_secs(1)).await;
    assert_ne!(
        body(&svc, get("/missing")).await,
        first.body,
        "its own short TTL"
    );
}

#[tokio::test(start_paused = true)]
async fn a_5xx_is_answered_with_a_stale_copy_within_stale_if_error() {
    let origin = Origin::default();
    let layer = cache().with_stale_if_error(Duration::from_secs(60));
    let svc = stack(&layer, &origin);
    assert_eq!(body(&svc, get("/a")).await, "/a for anyone #1");
    time::advance(Duration::from_secs(15)).await;
    origin.route("/a", StatusCode::SERVICE_UNAVAILABLE, &[]);
    let stale = send(&svc, get("/a")).await;
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(stale.body, "/a for anyone #1");
    assert_eq!(stale.headers[header::AGE], "15");
    assert_eq!(
        stale.headers["cache-status"],
        "herdsman; fwd=stale; detail=stale-if-error"
    );
    assert_eq!(layer.handle().stats().stale_if_error, 1);
}

#[tokio::test(start_paused = true)]
async fn a_stale_hit_says_so_in_cache_status() {
    let origin = Origin::default();
    let layer = cache().with_stale_while_revalidate(Duration::from_secs(30));
    let svc = stack(&layer, &origin);
    body(&svc, get("/a")).await;
    time::advance(Duration::from_secs(12)).await;
    let stale = send(&svc, get("/a")).await;
    assert_eq!(stale.body, "/a for anyone #1");
    assert_eq!(
        stale.headers["cache-status"],
        "herdsman; hit; ttl=-2; detail=stale-while-revalidate"
    );
}

#[tokio::test(start_paused = true)]
async fn entries_can_be_invalidated_by_path_and_prefix() {
    let origin = Origin::default();
    let layer = cache();
    let svc = stack(&layer, &origin);
    for path in [
        "/boards/1/events",
        "/boards/1/events?since=3",
        "/boards/2/events",
        "/users",
    ] {
        body(&svc, get(path)).await;
    }
    let handle: CacheHandle<_> = layer.handle();
    assert_eq!(handle.invalidate_path("/boards/1/events"), 2);
    assert_eq!(handle.invalidate_prefix("/boards/"), 1);
    assert_eq!(handle.stats().entries, 1);
}

#[tokio::test(start_paused = true)]
async fn bodies_over_the_buffer_limit_are_streamed_and_not_stored() {
    let origin = Origin::default();
    let layer = cache();
    let svc: Stack = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(layer.clone())
            .layer(BufferLayer::new().with_limit(4))
            .service(origin.service()),
    );
    assert_eq!(body(&svc, get("/a")).await, "/a for anyone #1");
    assert_eq!(body(&svc, get("/a")).await, "/a for anyone #2");
    assert_eq!(layer.handle().stats().entries, 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// 1,000 users hit one path at once; each must get only their own body.
    #[test]
    fn concurrent_users_only_ever_get_their_own_response(order in Just((0..1000u32).collect::<Vec<_>>()).prop_shuffle()) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap();
        runtime.block_on(async move {
            let origin = Origin::default();
            let layer = cache();
            let svc = stack(&layer, &origin);
            let tasks: Vec<_> = order
                .into_iter()
                .flat_map(|user| [user, user])
                .map(|user| {
                    let svc = svc.clone();
                    tokio::spawn(async move {
                        let who = format!("user-{user}");
                        let req = request(Method::GET, "/me", &[("authorization", &who)]);
                        (who, body(&svc, req).await)
                    })
                })
                .collect();
            for task in tasks {
                let (who, body) = task.await.unwrap();
                prop_assert!(body.starts_with(&format!("/me for {who} #")), "{} got {}", who, body);
            }
            Ok(())
        })?;
    }
}

#[test]
fn the_cache_layer_wraps_any_tower_service() {
    // Compile-time: the HTTP cache composes with tower's ServiceBuilder and
    // keeps the inner service reachable.
    let layer = cache();
    let svc = layer.layer(BufferLayer::new().layer(Origin::default().service()));
    let _: &Upstream = svc.get_ref().get_ref();
    fn is_service<S: Service<Request<Full<Bytes>>>>(_: &S) {}
    is_service(&svc);
}

/// The stack in DESIGN.md order: Cache above Dedup above Buffer.
#[tokio::test(start_paused = true)]
async fn misses_and_forced_refreshes_are_coalesced_by_dedup_below_the_cache() {
    use herdsman::{dedup::DedupLayer, http::HttpShare};

    let origin = Origin::default();
    let slow = origin.clone();
    let upstream = service_fn(move |req: Request<Full<Bytes>>| {
        let mut inner = slow.service();
        async move {
            time::sleep(Duration::from_millis(50)).await;
            inner.call(req).await
        }
    });
    let layer = cache().with_stale_while_revalidate(Duration::from_secs(30));
    let dedup = DedupLayer::new(HttpKey::new()).with_share(HttpShare);
    let svc: Stack = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(layer.clone())
            .layer(dedup.clone())
            .layer(BufferLayer::new())
            .service(upstream),
    );

    let misses = futures_util::future::join_all((0..100).map(|_| body(&svc, get("/a")))).await;
    assert!(misses.iter().all(|b| b == "/a for anyone #1"));
    assert_eq!(
        origin.calls(),
        1,
        "100 concurrent misses, one upstream call"
    );

    let refresh = || request(Method::GET, "/a", &[("cache-control", "no-cache")]);
    let refreshed = futures_util::future::join_all((0..100).map(|_| body(&svc, refresh()))).await;
    assert!(refreshed.iter().all(|b| b == "/a for anyone #2"));
    assert_eq!(origin.calls(), 2, "100 forced refreshes, one upstream call");

    // A stale hit's background refresh joins a concurrent forced refresh.
    time::advance(Duration::from_secs(10)).await;
    let (stale, forced) = tokio::join!(body(&svc, get("/a")), body(&svc, refresh()));
    assert_eq!(stale, "/a for anyone #2");
    assert_eq!(forced, "/a for anyone #3");
    assert_eq!(origin.calls(), 3);
    assert_eq!(dedup.handle().stats().entries, 0);
}

// RFC 9111 and RFC 5861: what a shared cache must do.

#[tokio::test(start_paused = true)]
async fn a_vary_star_response_is_never_reused() {
    let origin = Origin::default();
    origin.route("/a", StatusCode::OK, &[("vary", "*")]);
    let layer = cache();
    let svc = stack(&layer, &origin);
    assert_eq!(body(&svc, get("/a")).await, "/a for anyone #1");
    assert_eq!(body(&svc, get("/a")).await, "/a for anyone #2");
    assert_eq!(layer.handle().stats().entries, 0);
}

#[tokio::test(start_paused = true)]
async fn responses_that_vary_on_a_request_header_are_kept_per_value() {
    let origin = Origin::default();
    origin.route(
        "/a",
        StatusCode::OK,
        &[("vary", "Accept-Language"), ("cache-control", "max-age=60")],
    );
    let layer = cache();
    let svc = stack(&layer, &origin);
    let lang = |l| request(Method::GET, "/a", &[("accept-language", l)]);
    assert_eq!(body(&svc, lang("en")).await, "/a for anyone in en #1");
    assert_eq!(body(&svc, lang("fr")).await, "/a for anyone in fr #2");
    assert_eq!(body(&svc, lang("en")).await, "/a for anyone in en #1");
    assert_eq!(body(&svc, lang("fr")).await, "/a for anyone in fr #2");
    assert_eq!(body(&svc, get("/a")).await, "/a for anyone #3");
    assert_eq!(body(&svc, get("/a")).await, "/a for anyone #3");
    assert_eq!(origin.calls(), 3);

    // A write drops every variant of its path.
    origin.route("/a", StatusCode::NO_CONTENT, &[]);
    send(&svc, request(Method::POST, "/a", &[])).await;
    origin.route("/a", StatusCode::OK, &[("vary", "accept-language")]);
    assert_eq!(body(&svc, lang("en")).await, "/a for anyone in en #5");
}

#[tokio::test(start_paused = true)]
async fn a_forced_refresh_that_starts_to_vary_stores_its_variant() {
    let origin = Origin::default();
    let layer = cache();
    let svc = stack(&layer, &origin);
    let lang = |l| request(Method::GET, "/b", &[("accept-language", l)]);
    assert_eq!(body(&svc, lang("en")).await, "/b for anyone in en #1");
    // The fresh entry does not vary; the refreshed answer does.
    origin.route("/b", StatusCode::OK, &[("vary", "accept-language")]);
    let refresh = request(
        Method::GET,
        "/b",
        &[("accept-language", "en"), ("cache-control", "no-cache")],
    );
    assert_eq!(body(&svc, refresh).await, "/b for anyone in en #2");
    assert_eq!(body(&svc, lang("en")).await, "/b for anyone in en #2");
    assert_eq!(origin.calls(), 2, "the refreshed variant answers");
}

#[tokio::test(start_paused = true)]
async fn age_adds_the_time_stored_to_the_upstreams_age() {
    let origin = Origin::default();
    origin.route(
        "/a",
        StatusCode::OK,
        &[("cache-control", "max-age=60"), ("age", "5")],
    );
    let layer = cache();
    let svc = stack(&layer, &origin);
    send(&svc, get("/a")).await;
    time::advance(Duration::from_secs(3)).await;
    let hit = send(&svc, get("/a")).await;
    assert_eq!(hit.headers["cache-status"], "herdsman; hit");
    assert_eq!(hit.headers[header::AGE], "8");
}

#[tokio::test(start_paused = true)]
async fn an_informational_status_is_never_stored_even_when_listed_for_negative_caching() {
    let origin = Origin::default();
    origin.route("/early", StatusCode::from_u16(103).unwrap(), &[]);
    let layer = cache().with_policy(HttpCachePolicy::new().negative(
        [StatusCode::from_u16(103).unwrap(), StatusCode::NOT_FOUND],
        Duration::from_secs(5),
    ));
    let svc = stack(&layer, &origin);
    body(&svc, get("/early")).await;
    body(&svc, get("/early")).await;
    assert_eq!(origin.calls(), 2);
}

/// An origin whose `GET /doc` reads the document when the call begins and
/// answers 100 ms later; `POST /doc` replaces it at once.
fn slow_reader() -> (Upstream, Arc<Mutex<String>>) {
    let doc = Arc::new(Mutex::new(String::from("v1")));
    let state = doc.clone();
    let svc = service_fn(move |req: Request<Full<Bytes>>| {
        let state = state.clone();
        async move {
            if req.method() == Method::POST {
                *state.lock().unwrap() = String::from("v2");
                let mut created = Response::new(Full::new(Bytes::new()));
                *created.status_mut() = StatusCode::NO_CONTENT;
                return Ok(created);
            }
            let read = state.lock().unwrap().clone();
            time::sleep(Duration::from_millis(100)).await;
            Ok(Response::new(Full::new(Bytes::from(read))))
        }
    });
    (BoxCloneSyncService::new(svc), doc)
}

#[tokio::test(start_paused = true)]
async fn a_get_that_began_before_a_write_does_not_store_its_older_answer() {
    let (upstream, _) = slow_reader();
    let layer = cache();
    let svc: Stack = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(layer.clone())
            .layer(BufferLayer::new())
            .service(upstream),
    );
    let early = tokio::spawn({
        let svc = svc.clone();
        async move { body(&svc, get("/doc")).await }
    });
    time::sleep(Duration::from_millis(10)).await;
    let write = send(&svc, request(Method::POST, "/doc", &[])).await;
    assert_eq!(write.status, StatusCode::NO_CONTENT);
    assert_eq!(
        early.await.unwrap(),
        "v1",
        "the read began before the write"
    );
    assert_eq!(body(&svc, get("/doc")).await, "v2");
}

#[tokio::test(start_paused = true)]
async fn a_stale_entry_with_an_etag_is_revalidated_and_a_304_serves_the_stored_body() {
    let origin = Origin::default();
    origin.route(
        "/doc",
        StatusCode::OK,
        &[("etag", "\"v1\""), ("cache-control", "max-age=10")],
    );
    let layer = cache();
    let svc = stack(&layer, &origin);
    assert_eq!(body(&svc, get("/doc")).await, "/doc for anyone #1");
    time::advance(Duration::from_secs(11)).await;
    let revalidated = send(&svc, get("/doc")).await;
    assert_eq!(origin.last_request()[header::IF_NONE_MATCH], "\"v1\"");
    assert_eq!(revalidated.status, StatusCode::OK);
    assert_eq!(revalidated.body, "/doc for anyone #1");
    assert_eq!(origin.calls(), 2);
    // The 304 refreshed the entry: fresh again for max-age.
    time::advance(Duration::from_secs(5)).await;
    assert_eq!(body(&svc, get("/doc")).await, "/doc for anyone #1");
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_caller_whose_validator_matches_gets_a_304_from_the_cache() {
    let origin = Origin::default();
    origin.route(
        "/doc",
        StatusCode::OK,
        &[("etag", "\"v1\""), ("cache-control", "max-age=60")],
    );
    let layer = cache();
    let svc = stack(&layer, &origin);
    assert_eq!(body(&svc, get("/doc")).await, "/doc for anyone #1");
    let current = request(Method::GET, "/doc", &[("if-none-match", "\"v0\", \"v1\"")]);
    let not_modified = send(&svc, current).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert_eq!(not_modified.body, "");
    assert_eq!(not_modified.headers[header::ETAG], "\"v1\"");
    let outdated = request(Method::GET, "/doc", &[("if-none-match", "\"v0\"")]);
    let full = send(&svc, outdated).await;
    assert_eq!(full.status, StatusCode::OK);
    assert_eq!(full.body, "/doc for anyone #1");
    assert_eq!(origin.calls(), 1, "validators never split the entry");
}

#[tokio::test(start_paused = true)]
async fn must_revalidate_forbids_serving_stale_when_the_upstream_fails() {
    let origin = Origin::default();
    origin.route(
        "/a",
        StatusCode::OK,
        &[("cache-control", "max-age=5, must-revalidate")],
    );
    let layer = cache().with_stale_if_error(Duration::from_secs(60));
    let svc = stack(&layer, &origin);
    body(&svc, get("/a")).await;
    time::advance(Duration::from_secs(10)).await;
    origin.route("/a", StatusCode::SERVICE_UNAVAILABLE, &[]);
    assert_eq!(
        send(&svc, get("/a")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test(start_paused = true)]
async fn the_responses_stale_while_revalidate_bounds_the_class_window() {
    let origin = Origin::default();
    origin.route(
        "/a",
        StatusCode::OK,
        &[("cache-control", "max-age=10, stale-while-revalidate=5")],
    );
    let layer = cache().with_stale_while_revalidate(Duration::from_secs(60));
    let svc = stack(&layer, &origin);
    body(&svc, get("/a")).await;
    time::advance(Duration::from_secs(20)).await;
    let past = send(&svc, get("/a")).await;
    assert_eq!(past.body, "/a for anyone #2", "10 s stale is past the 5 s");
    assert_eq!(past.headers["cache-status"], "herdsman; fwd=miss; stored");
}

#[tokio::test(start_paused = true)]
async fn a_successful_post_also_invalidates_its_same_origin_location() {
    let origin = Origin::default();
    let layer = cache();
    let svc = stack(&layer, &origin);
    body(&svc, get("/cards/7")).await;
    body(&svc, get("/cards/8")).await;
    body(&svc, get("/cards/9")).await;
    origin.route(
        "/cards",
        StatusCode::CREATED,
        &[
            ("location", "/cards/7"),
            ("content-location", "http://api/cards/8?view=full"),
        ],
    );
    send(&svc, request(Method::POST, "/cards", &[])).await;
    assert_eq!(body(&svc, get("/cards/7")).await, "/cards/7 for anyone #5");
    assert_eq!(body(&svc, get("/cards/8")).await, "/cards/8 for anyone #6");
    assert_eq!(body(&svc, get("/cards/9")).await, "/cards/9 for anyone #3");

    origin.route(
        "/cards",
        StatusCode::CREATED,
        &[("location", "http://elsewhere/cards/9")],
    );
    send(&svc, request(Method::POST, "/cards", &[])).await;
    assert_eq!(
        body(&svc, get("/cards/9")).await,
        "/cards/9 for anyone #3",
        "another origin's path is not ours to drop"
    );
}

#[tokio::test(start_paused = true)]
async fn a_no_cache_response_with_a_validator_is_stored_and_revalidated_on_every_use() {
    let origin = Origin::default();
    origin.route(
        "/poll",
        StatusCode::OK,
        &[("etag", "\"v1\""), ("cache-control", "no-cache")],
    );
    let layer = cache();
    let svc = stack(&layer, &origin);
    assert_eq!(body(&svc, get("/poll")).await, "/poll for anyone #1");
    let again = send(&svc, get("/poll")).await;
    assert_eq!(origin.calls(), 2, "never served without revalidation");
    assert_eq!(origin.last_request()[header::IF_NONE_MATCH], "\"v1\"");
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, "/poll for anyone #1");
}

#[tokio::test(start_paused = true)]
async fn a_stale_if_error_answer_is_marked_stale_in_its_headers_and_extensions() {
    let origin = Origin::default();
    let layer = cache().with_stale_if_error(Duration::from_secs(60));
    let svc = stack(&layer, &origin);
    body(&svc, get("/a")).await;
    time::advance(Duration::from_secs(15)).await;
    origin.route("/a", StatusCode::BAD_GATEWAY, &[]);
    let response = svc.clone().oneshot(get("/a")).await.unwrap();
    assert!(response
        .extensions()
        .get::<herdsman::http::ServedStale>()
        .is_some());
    assert_eq!(response.headers()["x-herdsman-stale"], "1");
    assert_eq!(
        response.headers()["cache-status"],
        "herdsman; fwd=stale; detail=stale-if-error"
    );
}

#[tokio::test(start_paused = true)]
async fn an_invalidation_by_hand_also_stops_an_older_fetch_from_storing() {
    let (upstream, doc) = slow_reader();
    let layer = cache();
    let svc: Stack = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(layer.clone())
            .layer(BufferLayer::new())
            .service(upstream),
    );
    let early = tokio::spawn({
        let svc = svc.clone();
        async move { body(&svc, get("/doc")).await }
    });
    time::sleep(Duration::from_millis(10)).await;
    *doc.lock().unwrap() = String::from("v2");
    layer.handle().invalidate_path("/doc");
    assert_eq!(early.await.unwrap(), "v1");
    assert_eq!(body(&svc, get("/doc")).await, "v2");
}

fn origin_mode() -> HttpCache {
    cache().with_mode(CacheMode::Origin)
}

#[tokio::test(start_paused = true)]
async fn in_origin_mode_the_response_decides_how_long_it_is_fresh() {
    let origin = Origin::default();
    origin.route(
        "/max-age",
        StatusCode::OK,
        &[("cache-control", "max-age=3")],
    );
    origin.route("/silent", StatusCode::OK, &[]);
    origin.route(
        "/year",
        StatusCode::OK,
        &[("cache-control", "max-age=31536000")],
    );
    let layer = origin_mode();
    let svc = stack(&layer, &origin);

    for path in ["/max-age", "/silent", "/year"] {
        body(&svc, get(path)).await;
        body(&svc, get(path)).await;
    }
    assert_eq!(origin.calls(), 4, "only the silent response is not reused");
    time::advance(Duration::from_secs(3)).await;
    assert!(body(&svc, get("/max-age")).await.ends_with("#5"));
    time::advance(Duration::from_secs(7)).await;
    assert!(
        body(&svc, get("/year")).await.ends_with("#6"),
        "capped by the class TTL (10 s)"
    );

    // The same silent response in app mode lives for the class TTL.
    let app = cache();
    let svc = stack(&app, &origin);
    body(&svc, get("/silent")).await;
    body(&svc, get("/silent")).await;
    assert_eq!(origin.calls(), 7);
}

#[tokio::test(start_paused = true)]
async fn in_origin_mode_last_modified_gives_a_heuristic_lifetime() {
    let origin = Origin::default();
    let modified = httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(50));
    origin.route("/doc", StatusCode::OK, &[("last-modified", &modified)]);
    let layer = origin_mode();
    let svc = stack(&layer, &origin);
    body(&svc, get("/doc")).await;
    body(&svc, get("/doc")).await;
    assert_eq!(origin.calls(), 1, "a tenth of 50 s: about 5 s");
    time::advance(Duration::from_secs(6)).await;
    body(&svc, get("/doc")).await;
    assert_eq!(origin.calls(), 2);
    assert_eq!(
        origin.last_request()[header::IF_MODIFIED_SINCE],
        modified.as_str(),
        "revalidated with its Last-Modified"
    );
}

#[tokio::test(start_paused = true)]
async fn identical_revalidations_coalesce_below_the_cache_and_share_the_304() {
    use herdsman::{dedup::DedupLayer, http::HttpShare};

    let origin = Origin::default();
    origin.route(
        "/doc",
        StatusCode::OK,
        &[("etag", "\"v1\""), ("cache-control", "max-age=1")],
    );
    let slow = origin.clone();
    let upstream = service_fn(move |req: Request<Full<Bytes>>| {
        let mut inner = slow.service();
        async move {
            time::sleep(Duration::from_millis(50)).await;
            inner.call(req).await
        }
    });
    let layer = cache();
    let svc: Stack = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(layer.clone())
            .layer(DedupLayer::new(HttpKey::new()).with_share(HttpShare))
            .layer(BufferLayer::new())
            .service(upstream),
    );
    body(&svc, get("/doc")).await;
    time::advance(Duration::from_secs(2)).await;
    let revalidated =
        futures_util::future::join_all((0..50).map(|_| send(&svc, get("/doc")))).await;
    for reply in &revalidated {
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "/doc for anyone #1");
        assert_eq!(
            reply.headers["cache-status"],
            "herdsman; fwd=stale; fwd-status=304; stored"
        );
    }
    assert_eq!(origin.calls(), 2, "one conditional call for 50 callers");
    assert_eq!(layer.handle().stats().revalidated, 50);
}

#[tokio::test(start_paused = true)]
async fn a_stale_while_revalidate_refresh_revalidates_in_the_background() {
    let origin = Origin::default();
    origin.route(
        "/doc",
        StatusCode::OK,
        &[("etag", "\"v1\""), ("cache-control", "max-age=1")],
    );
    let layer = cache().with_stale_while_revalidate(Duration::from_secs(30));
    let svc = stack(&layer, &origin);
    body(&svc, get("/doc")).await;
    time::advance(Duration::from_secs(2)).await;
    let stale = send(&svc, get("/doc")).await;
    assert!(stale.headers["cache-status"]
        .to_str()
        .unwrap()
        .contains("stale-while-revalidate"));
    wait_until("the refresh revalidated", Duration::from_secs(1), || {
        layer.handle().stats().revalidated > 0
    })
    .await;
    assert_eq!(origin.last_request()[header::IF_NONE_MATCH], "\"v1\"");
    let hit = send(&svc, get("/doc")).await;
    assert_eq!(hit.headers["cache-status"], "herdsman; hit");
    assert_eq!(hit.body, "/doc for anyone #1");
}

#[tokio::test(start_paused = true)]
async fn a_bypassed_or_uncached_request_keeps_its_validators() {
    let origin = Origin::default();
    origin.route("/doc", StatusCode::OK, &[("etag", "\"v1\"")]);
    let layer = cache();
    let svc = stack(&layer, &origin);
    let no_store = request(
        Method::GET,
        "/doc",
        &[("cache-control", "no-store"), ("if-none-match", "\"v1\"")],
    );
    assert_eq!(send(&svc, no_store).await.status, StatusCode::NOT_MODIFIED);
    assert_eq!(origin.last_request()[header::IF_NONE_MATCH], "\"v1\"");
    let stream = request(
        Method::GET,
        "/doc",
        &[("accept", "text/event-stream"), ("if-none-match", "\"v1\"")],
    );
    send(&svc, stream).await;
    assert_eq!(origin.last_request()[header::IF_NONE_MATCH], "\"v1\"");
}

#[tokio::test(start_paused = true)]
async fn if_modified_since_is_answered_from_the_cache_when_there_is_no_if_none_match() {
    let origin = Origin::default();
    let modified = "Tue, 14 Nov 2023 22:13:20 GMT";
    origin.route("/doc", StatusCode::OK, &[("last-modified", modified)]);
    let layer = cache();
    let svc = stack(&layer, &origin);
    body(&svc, get("/doc")).await;
    let since = |v| request(Method::GET, "/doc", &[("if-modified-since", v)]);
    assert_eq!(
        send(&svc, since(modified)).await.status,
        StatusCode::NOT_MODIFIED
    );
    let earlier = "Mon, 13 Nov 2023 00:00:00 GMT";
    assert_eq!(send(&svc, since(earlier)).await.status, StatusCode::OK);
    let both = request(
        Method::GET,
        "/doc",
        &[
            ("if-modified-since", modified),
            ("if-none-match", "\"other\""),
        ],
    );
    assert_eq!(
        send(&svc, both).await.status,
        StatusCode::OK,
        "If-None-Match decides when present"
    );
    assert_eq!(origin.calls(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Callers with random languages and users, writes and time passing, on
    /// a path whose responses vary on the language: every caller gets a
    /// body made for its own language and user, and never one from before
    /// the last write that completed.
    #[test]
    fn varying_responses_reach_only_the_callers_they_were_made_for(
        steps in prop::collection::vec((0..4u8, 0..3usize, 0..3usize), 1..60),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let origin = Origin::default();
            origin.route("/a", StatusCode::OK, &[("vary", "accept-language, x-unused")]);
            let layer = cache().with_stale_while_revalidate(Duration::from_secs(20));
            let svc = stack(&layer, &origin);
            let langs = ["en", "fr", "de"];
            let users = ["alice", "bob", "carol"];
            let mut written = 0;
            for (op, lang, user) in steps {
                match op {
                    0 => {
                        origin.route("/a", StatusCode::NO_CONTENT, &[]);
                        send(&svc, request(Method::PUT, "/a", &[])).await;
                        origin.route("/a", StatusCode::OK, &[("vary", "accept-language, x-unused")]);
                        written = origin.calls();
                    }
                    1 => time::advance(Duration::from_secs(7)).await,
                    _ => {
                        let req = request(
                            Method::GET,
                            "/a",
                            &[("accept-language", langs[lang]), ("authorization", users[user])],
                        );
                        let got = body(&svc, req).await;
                        let prefix = format!("/a for {} in {} #", users[user], langs[lang]);
                        prop_assert!(got.starts_with(&prefix), "{} for {}", got, prefix);
                        let n: usize = got[prefix.len()..].parse().unwrap();
                        prop_assert!(n > written, "#{} predates the write at #{}", n, written);
                    }
                }
            }
            Ok(())
        })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Readers and writers race on two threads; each reader's upstream call
    /// reads the version, yields a random number of times, then answers it.
    /// A read that begins after a write completed never gets an older
    /// version, from the upstream or from the cache.
    #[test]
    fn a_read_never_sees_a_version_older_than_a_completed_write(
        ops in prop::collection::vec((any::<bool>(), 0..200u8), 20..120),
    ) {
        use std::sync::atomic::AtomicU64;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let version = Arc::new(AtomicU64::new(0));
            let state = version.clone();
            let upstream = service_fn(move |req: Request<Full<Bytes>>| {
                let state = state.clone();
                async move {
                    if req.method() == Method::POST {
                        state.fetch_add(1, Ordering::SeqCst);
                        let mut done = Response::new(Full::new(Bytes::new()));
                        *done.status_mut() = StatusCode::NO_CONTENT;
                        return Ok::<_, Infallible>(done);
                    }
                    let read = state.load(Ordering::SeqCst);
                    let yields: u8 = req.headers()["x-yields"].to_str().unwrap().parse().unwrap();
                    for _ in 0..yields {
                        tokio::task::yield_now().await;
                    }
                    Ok(Response::new(Full::new(Bytes::from(read.to_string()))))
                }
            });
            let layer = cache();
            let svc: Stack = BoxCloneSyncService::new(
                ServiceBuilder::new()
                    .layer(layer.clone())
                    .layer(BufferLayer::new())
                    .service(upstream),
            );
            let completed = Arc::new(AtomicU64::new(0));
            let tasks: Vec<_> = ops
                .into_iter()
                .map(|(write, yields)| {
                    let svc = svc.clone();
                    let completed = completed.clone();
                    tokio::spawn(async move {
                        if write {
                            send(&svc, request(Method::POST, "/v", &[])).await;
                            completed.fetch_add(1, Ordering::SeqCst);
                            return Ok(());
                        }
                        let before = completed.load(Ordering::SeqCst);
                        let yields = yields.to_string();
                        let got = body(&svc, request(Method::GET, "/v", &[("x-yields", &yields)])).await;
                        let got: u64 = got.parse().unwrap();
                        if got < before {
                            return Err(format!("read {got} after {before} writes completed"));
                        }
                        Ok(())
                    })
                })
                .collect();
            for task in tasks {
                let outcome = task.await.unwrap();
                prop_assert!(outcome.is_ok(), "{:?}", outcome);
            }
            Ok(())
        })?;
    }
}

/// The default sweep interval.
const SWEEP: Duration = Duration::from_secs(30);

#[tokio::test(start_paused = true)]
async fn variants_and_their_marker_are_swept_once_every_variant_expired() {
    let origin = Origin::default();
    let vary = |max_age: &'static str| [("vary", "accept-language"), ("cache-control", max_age)];
    origin.route("/a", StatusCode::OK, &vary("max-age=5"));
    let layer = cache().with_ttl(Duration::from_secs(100));
    let svc = stack(&layer, &origin);
    let lang = |l| request(Method::GET, "/a", &[("accept-language", l)]);
    assert_eq!(body(&svc, lang("en")).await, "/a for anyone in en #1");
    origin.route("/a", StatusCode::OK, &vary("max-age=60"));
    assert_eq!(body(&svc, lang("fr")).await, "/a for anyone in fr #2");
    assert_eq!(
        layer.handle().stats().entries,
        3,
        "the marker and two variants"
    );

    time::sleep(SWEEP).await;
    settle().await;
    assert_eq!(
        layer.handle().stats().entries,
        2,
        "en went; fr keeps the marker"
    );
    assert_eq!(body(&svc, lang("fr")).await, "/a for anyone in fr #2");

    time::sleep(SWEEP * 2).await;
    settle().await;
    assert_eq!(layer.handle().stats().entries, 0);
    assert_eq!(layer.handle().memory_bytes(), 0);
}

#[tokio::test(start_paused = true)]
async fn variants_orphaned_by_invalidating_their_marker_are_swept() {
    let origin = Origin::default();
    origin.route("/a", StatusCode::OK, &[("vary", "accept-language")]);
    let layer = cache();
    let svc = stack(&layer, &origin);
    let lang = |l| request(Method::GET, "/a", &[("accept-language", l)]);
    body(&svc, lang("en")).await;
    body(&svc, lang("fr")).await;
    let primary = HttpKey::new().key(&get("/a")).unwrap();
    assert!(layer.handle().invalidate(&primary));
    assert_eq!(layer.handle().stats().entries, 2, "unreachable variants");

    time::sleep(SWEEP).await;
    settle().await;
    assert_eq!(layer.handle().stats().entries, 0);
    assert_eq!(layer.handle().memory_bytes(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_entry_with_a_validator_is_kept_one_sweep_interval_past_every_window() {
    let origin = Origin::default();
    origin.route(
        "/doc",
        StatusCode::OK,
        &[("etag", "\"v1\""), ("cache-control", "max-age=5")],
    );
    let layer = cache();
    let svc = stack(&layer, &origin);
    assert_eq!(body(&svc, get("/doc")).await, "/doc for anyone #1");

    // Stale at 5 s; the sweep at 30 s keeps it until 5 s + 30 s.
    time::sleep(SWEEP + Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(layer.handle().stats().entries, 1);
    assert_eq!(body(&svc, get("/doc")).await, "/doc for anyone #1");
    assert_eq!(layer.handle().stats().revalidated, 1, "a 304 revived it");

    // Revived at 31 s: kept by the sweep at 60 s, gone at 90 s.
    time::sleep(SWEEP).await;
    settle().await;
    assert_eq!(layer.handle().stats().entries, 1);
    time::sleep(SWEEP).await;
    settle().await;
    assert_eq!(layer.handle().stats().entries, 0);
    assert_eq!(layer.handle().memory_bytes(), 0);
}
