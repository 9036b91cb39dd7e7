//! examples/caching-proxy end to end: a real origin on 127.0.0.1, the proxy
//! on 127.0.0.1 in front of it, a real client.

use std::sync::{Arc, Mutex};

use axum::{
    extract::State,
    http::{header, HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
    routing, Router,
};
use caching_proxy::CachingProxy;
use herdsman_tests::{
    bounded, client, empty, get, replies, request, send_all, wait_until, Probe, Reply, Server,
};
use tokio::{net::TcpListener, task::JoinHandle};

const CALLERS: usize = 20;

/// What the origin saw: the headers of every request, and a probe that
/// counts and holds `/slow`.
#[derive(Clone, Default)]
struct Seen {
    requests: Arc<Mutex<Vec<(Method, String, HeaderMap)>>>,
    probe: Probe,
}

impl Seen {
    fn record(&self, method: &Method, path: &str, headers: &HeaderMap) -> usize {
        let mut requests = self.requests.lock().unwrap();
        requests.push((method.clone(), path.to_owned(), headers.clone()));
        requests
            .iter()
            .filter(|(m, p, _)| m == method && p == path)
            .count()
    }

    fn calls(&self, method: Method, path: &str) -> usize {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .filter(|(m, p, _)| *m == method && p == path)
            .count()
    }

    fn last(&self, path: &str) -> HeaderMap {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .rev()
            .find(|(_, p, _)| p == path)
            .map(|(_, _, h)| h.clone())
            .expect("the origin saw the path")
    }
}

async fn slow(State(seen): State<Seen>, headers: HeaderMap) -> Response {
    seen.record(&Method::GET, "/slow", &headers);
    let n = seen.probe.enter().await;
    (
        [(header::CACHE_CONTROL, "max-age=60")],
        format!("slow #{n}"),
    )
        .into_response()
}

async fn fresh(State(seen): State<Seen>, headers: HeaderMap) -> Response {
    let n = seen.record(&Method::GET, "/fresh", &headers);
    (
        [(header::CACHE_CONTROL, "max-age=60")],
        format!("fresh #{n}"),
    )
        .into_response()
}

async fn lang(State(seen): State<Seen>, headers: HeaderMap) -> Response {
    let n = seen.record(&Method::GET, "/lang", &headers);
    let lang = headers
        .get(header::ACCEPT_LANGUAGE)
        .map_or("none", |v| v.to_str().unwrap())
        .to_owned();
    (
        [
            (header::CACHE_CONTROL, "max-age=60"),
            (header::VARY, "Accept-Language"),
        ],
        format!("{lang} #{n}"),
    )
        .into_response()
}

async fn tagged(State(seen): State<Seen>, headers: HeaderMap) -> Response {
    let n = seen.record(&Method::GET, "/tagged", &headers);
    let cache = [
        (header::CACHE_CONTROL, "no-cache"),
        (header::ETAG, "\"v1\""),
    ];
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v == "\"v1\"")
    {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (cache, format!("tagged #{n}")).into_response()
}

async fn secret(State(seen): State<Seen>, headers: HeaderMap) -> Response {
    let n = seen.record(&Method::GET, "/secret", &headers);
    (
        [(header::CACHE_CONTROL, "no-store")],
        format!("secret #{n}"),
    )
        .into_response()
}

async fn doc(State(seen): State<Seen>, method: Method, headers: HeaderMap) -> Response {
    let n = seen.record(&method, "/doc", &headers);
    if method == Method::POST {
        return StatusCode::NO_CONTENT.into_response();
    }
    ([(header::CACHE_CONTROL, "max-age=60")], format!("doc #{n}")).into_response()
}

/// The origin and the proxy in front of it.
struct Setup {
    seen: Seen,
    proxy: CachingProxy,
    _origin: Server,
    addr: std::net::SocketAddr,
    task: JoinHandle<()>,
}

impl Setup {
    async fn start() -> Setup {
        let seen = Seen::default();
        let app = Router::new()
            .route("/slow", routing::get(slow))
            .route("/fresh", routing::get(fresh))
            .route("/lang", routing::get(lang))
            .route("/tagged", routing::get(tagged))
            .route("/secret", routing::get(secret))
            .route("/doc", routing::get(doc).post(doc))
            .with_state(seen.clone());
        let origin = Server::start(app).await;
        let proxy = CachingProxy::new(origin.url("").as_str()).unwrap();
        let (addr, task) = serve(proxy.clone()).await;
        Setup {
            seen,
            proxy,
            _origin: origin,
            addr,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = request(Method::GET, &self.url(path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        replies(send_all(&client(), [empty(req)])).await.remove(0)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(proxy: CachingProxy) -> (std::net::SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move { proxy.serve(listener).await.unwrap() });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_coalesce_into_one_origin_call() {
    bounded(async {
        let setup = Setup::start().await;
        let calls = send_all(&client(), (0..CALLERS).map(|_| get(&setup.url("/slow"))));
        let dedup = setup.proxy.dedup();
        wait_until("every miss joined the first", || {
            dedup.stats().coalesced == CALLERS as u64 - 1
        })
        .await;
        setup.seen.probe.open();
        for reply in replies(calls).await {
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(reply.body, "slow #1");
        }
        assert_eq!(setup.seen.probe.calls(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_max_age_response_is_served_from_the_cache() {
    bounded(async {
        let setup = Setup::start().await;
        let first = setup.get("/fresh", &[]).await;
        assert_eq!(first.body, "fresh #1");
        assert_eq!(
            first.header("cache-status"),
            Some("herdsman; fwd=miss; stored")
        );
        assert_eq!(first.header(header::VIA), Some("1.1 herdsman"));
        let second = setup.get("/fresh", &[]).await;
        assert_eq!(second.body, "fresh #1");
        assert_eq!(second.header("cache-status"), Some("herdsman; hit"));
        assert!(second.header(header::AGE).is_some());
        assert_eq!(setup.seen.calls(Method::GET, "/fresh"), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_variants_are_kept_apart() {
    bounded(async {
        let setup = Setup::start().await;
        let lang = |l| [("accept-language", l)];
        assert_eq!(setup.get("/lang", &lang("en")).await.body, "en #1");
        assert_eq!(setup.get("/lang", &lang("fr")).await.body, "fr #2");
        assert_eq!(setup.get("/lang", &lang("en")).await.body, "en #1");
        assert_eq!(setup.get("/lang", &lang("fr")).await.body, "fr #2");
        assert_eq!(setup.seen.calls(Method::GET, "/lang"), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revalidation_sends_if_none_match_and_serves_the_stored_body_on_304() {
    bounded(async {
        let setup = Setup::start().await;
        assert_eq!(setup.get("/tagged", &[]).await.body, "tagged #1");
        let again = setup.get("/tagged", &[]).await;
        assert_eq!(setup.seen.calls(Method::GET, "/tagged"), 2);
        assert_eq!(setup.seen.last("/tagged")[header::IF_NONE_MATCH], "\"v1\"");
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(again.body, "tagged #1");
        assert_eq!(
            again.header("cache-status"),
            Some("herdsman; fwd=stale; fwd-status=304; stored")
        );
        // A client that has it gets a 304 from the proxy.
        let current = setup.get("/tagged", &[("if-none-match", "\"v1\"")]).await;
        assert_eq!(current.status, StatusCode::NOT_MODIFIED);
        assert!(current.body.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_store_response_is_never_stored() {
    bounded(async {
        let setup = Setup::start().await;
        assert_eq!(setup.get("/secret", &[]).await.body, "secret #1");
        assert_eq!(setup.get("/secret", &[]).await.body, "secret #2");
        assert_eq!(setup.proxy.cache().stats().entries, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_goes_to_the_origin_and_invalidates_the_path() {
    bounded(async {
        let setup = Setup::start().await;
        assert_eq!(setup.get("/doc", &[]).await.body, "doc #1");
        assert_eq!(setup.get("/doc", &[]).await.body, "doc #1");
        let post = empty(request(Method::POST, &setup.url("/doc")));
        let posted = replies(send_all(&client(), [post])).await.remove(0);
        assert_eq!(posted.status, StatusCode::NO_CONTENT);
        assert_eq!(setup.seen.calls(Method::POST, "/doc"), 1);
        assert_eq!(setup.get("/doc", &[]).await.body, "doc #2");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_stop_at_the_proxy_and_end_to_end_ones_go_through() {
    bounded(async {
        let setup = Setup::start().await;
        setup
            .get(
                "/fresh?x=1",
                &[
                    ("connection", "x-hop"),
                    ("x-hop", "1"),
                    ("te", "trailers"),
                    ("x-end", "2"),
                ],
            )
            .await;
        let seen = setup.seen.last("/fresh");
        assert!(!seen.contains_key("x-hop"));
        assert!(!seen.contains_key("te"));
        assert_eq!(seen["x-end"], "2");
        assert_eq!(seen[header::VIA], "1.1 herdsman");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_origin_is_a_502() {
    bounded(async {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let (addr, task) = serve(CachingProxy::new(&origin).unwrap()).await;
        let reply = replies(send_all(&client(), [get(&format!("http://{addr}/x"))]))
            .await
            .remove(0);
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
        task.abort();
    })
    .await;
}

#[test]
fn an_origin_must_be_an_http_url_without_a_path() {
    assert!(CachingProxy::new("http://127.0.0.1:8000").is_ok());
    assert!(CachingProxy::new("http://127.0.0.1:8000/").is_ok());
    for bad in ["https://a", "127.0.0.1:8000", "http://a/api", "not a url"] {
        assert!(CachingProxy::new(bad).is_err(), "{bad}");
    }
}
