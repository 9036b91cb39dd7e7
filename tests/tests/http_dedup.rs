//! The HTTP adapter end to end: `DedupLayer` + `BufferLayer` + `HttpShare`
//! around an axum `Router` (server side) and around a hyper-util client
//! (client side), with real servers on `127.0.0.1:0` and real clients.
//!
//! Upstream handlers park on a [`Probe`] gate, so the callers of a test are
//! truly concurrent; the gate opens once the layer's counters show every
//! caller in place.

use axum::{
    body::Body,
    error_handling::HandleErrorLayer,
    extract::State,
    http::{
        header::{AUTHORIZATION, CONTENT_LENGTH, SET_COOKIE},
        HeaderMap, Method, Request, StatusCode,
    },
    response::IntoResponse,
    routing, Router,
};
use bytes::Bytes;
use herdsman::{
    dedup::{Dedup, DedupLayer},
    http::{Buffer, BufferLayer, HttpKey, HttpShare},
    BoxError,
};
use herdsman_tests::{
    bounded, chunked, client, empty, get, pattern, replies, request, send_all, wait_until,
    HttpClient, Probe, Reply, Server,
};
use http_body_util::Full;
use tower::ServiceBuilder;

/// Concurrent identical callers per test.
const CALLERS: usize = 20;
const FOLLOWERS: u64 = CALLERS as u64 - 1;

/// The buffer limit of the oversized-body tests, and the body they serve.
const LIMIT: usize = 1024;
const BIG: usize = 64 * 1024;

const HELLO: &str = "hello from upstream";

type HttpDedupLayer = DedupLayer<HttpKey, HttpShare>;

fn http_dedup(key: HttpKey) -> HttpDedupLayer {
    DedupLayer::new(key).with_share(HttpShare)
}

/// `app` with the dedup stack on every route. The layers add a failure mode
/// (`BoxError`), which axum needs turned into a response.
fn dedup_router<S>(app: Router<S>, layer: &HttpDedupLayer, buffer: BufferLayer) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    app.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|err: BoxError| async move {
                (StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
            }))
            .layer(layer.clone())
            .layer(buffer),
    )
}

/// A hyper-util client with the dedup stack around it.
fn dedup_client(
    layer: &HttpDedupLayer,
    buffer: BufferLayer,
) -> Dedup<Buffer<HttpClient>, HttpKey, HttpShare> {
    ServiceBuilder::new()
        .layer(layer.clone())
        .layer(buffer)
        .service(client())
}

/// Sends `CALLERS` identical GETs for `url` through `svc`, holds the upstream
/// until every follower has joined the leader, runs `held` (checks made while
/// the upstream is held), then releases it and returns every reply.
async fn storm<S, B>(
    svc: &S,
    url: &str,
    layer: &HttpDedupLayer,
    probe: &Probe,
    held: impl FnOnce(),
) -> Vec<Reply>
where
    S: tower::Service<Request<Full<Bytes>>, Response = axum::http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let calls = send_all(svc, (0..CALLERS).map(|_| get(url)));
    wait_until("every follower joined the leader", || {
        layer.handle().stats().coalesced == FOLLOWERS
    })
    .await;
    held();
    probe.open();
    replies(calls).await
}

/// Starts an upstream serving `app`, whose handlers report to `probe`.
async fn upstream(app: Router<Probe>, probe: &Probe) -> Server {
    Server::start(app.with_state(probe.clone())).await
}

/// Checks the layer's counters once every caller has its reply: the map is
/// drained.
fn assert_stats(layer: &HttpDedupLayer, leaders: u64, coalesced: u64) {
    let stats = layer.handle().stats();
    assert_eq!(
        (stats.leaders, stats.coalesced, stats.entries),
        (leaders, coalesced, 0),
        "(leaders, coalesced, entries) of {stats:?}"
    );
}

fn assert_all(replies: &[Reply], status: StatusCode, body: &[u8]) {
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(reply.status, status, "status of caller {i}");
        assert_eq!(reply.body.len(), body.len(), "body length of caller {i}");
        assert!(reply.body == body, "body of caller {i} differs");
    }
}

async fn hello(State(probe): State<Probe>) -> &'static str {
    probe.enter().await;
    HELLO
}

async fn failing(State(probe): State<Probe>) -> (StatusCode, &'static str) {
    probe.enter().await;
    (StatusCode::INTERNAL_SERVER_ERROR, "upstream failed")
}

async fn big_chunked(State(probe): State<Probe>) -> Body {
    probe.enter().await;
    chunked(pattern(BIG), LIMIT)
}

async fn big_sized(State(probe): State<Probe>) -> Bytes {
    probe.enter().await;
    pattern(BIG)
}

async fn whoami(State(probe): State<Probe>, headers: HeaderMap) -> String {
    probe.enter().await;
    let user = headers
        .get(AUTHORIZATION)
        .map_or("anonymous", |v| v.to_str().expect("ASCII"));
    format!("hello, {user}")
}

async fn login(State(probe): State<Probe>) -> impl IntoResponse {
    let session = probe.enter().await;
    (
        [(SET_COOKIE, format!("session={session}"))],
        format!("welcome, session {session}"),
    )
}

async fn create(State(probe): State<Probe>) -> String {
    let n = probe.enter().await;
    format!("created {n}")
}

// Server side: the stack around an axum `Router`.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_gets_through_an_axum_router_run_the_handler_once() {
    bounded(async {
        let probe = Probe::new();
        let layer = http_dedup(HttpKey::new());
        let app = Router::new().route("/hello", routing::get(hello));
        let app = dedup_router(app, &layer, BufferLayer::new());
        let server = upstream(app, &probe).await;

        let replies = storm(&client(), &server.url("/hello"), &layer, &probe, || {
            assert_eq!(probe.calls(), 1, "only the leader reaches the handler");
        })
        .await;

        assert_eq!(probe.calls(), 1);
        assert_eq!(replies.len(), CALLERS);
        assert_all(&replies, StatusCode::OK, HELLO.as_bytes());
        assert_stats(&layer, 1, FOLLOWERS);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_from_an_axum_handler_reaches_every_client() {
    bounded(async {
        let probe = Probe::new();
        let layer = http_dedup(HttpKey::new());
        let app = Router::new().route("/fail", routing::get(failing));
        let app = dedup_router(app, &layer, BufferLayer::new());
        let server = upstream(app, &probe).await;

        let replies = storm(&client(), &server.url("/fail"), &layer, &probe, || {}).await;

        assert_eq!(probe.calls(), 1);
        assert_eq!(replies.len(), CALLERS);
        assert_all(
            &replies,
            StatusCode::INTERNAL_SERVER_ERROR,
            b"upstream failed",
        );
        assert_stats(&layer, 1, FOLLOWERS);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_handler_body_reaches_every_client_whole_through_an_axum_router() {
    bounded(async {
        let probe = Probe::new();
        let layer = http_dedup(HttpKey::new());
        let app = Router::new().route("/big", routing::get(big_chunked));
        let app = dedup_router(app, &layer, BufferLayer::new().with_limit(LIMIT));
        let server = upstream(app, &probe).await;

        let replies = storm(&client(), &server.url("/big"), &layer, &probe, || {}).await;

        // Not shareable: each follower made its own call.
        assert_eq!(probe.calls(), CALLERS);
        assert_eq!(replies.len(), CALLERS);
        assert_all(&replies, StatusCode::OK, &pattern(BIG));
        assert_stats(&layer, 1, FOLLOWERS);
    })
    .await;
}

// Client side: the stack around a hyper-util client.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_gets_through_a_hyper_client_make_one_upstream_call() {
    bounded(async {
        let probe = Probe::new();
        let server = upstream(Router::new().route("/hello", routing::get(hello)), &probe).await;
        let layer = http_dedup(HttpKey::new());
        let svc = dedup_client(&layer, BufferLayer::new());

        let replies = storm(&svc, &server.url("/hello"), &layer, &probe, || {}).await;

        assert_eq!(probe.calls(), 1);
        assert_eq!(replies.len(), CALLERS);
        assert_all(&replies, StatusCode::OK, HELLO.as_bytes());
        for reply in &replies {
            let len = HELLO.len().to_string();
            assert_eq!(reply.header(CONTENT_LENGTH), Some(len.as_str()));
        }
        assert_stats(&layer, 1, FOLLOWERS);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_over_the_limit_reaches_every_caller_whole_through_its_own_call() {
    bounded(async {
        let probe = Probe::new();
        let server = upstream(
            Router::new().route("/big", routing::get(big_chunked)),
            &probe,
        )
        .await;
        let layer = http_dedup(HttpKey::new());
        let svc = dedup_client(&layer, BufferLayer::new().with_limit(LIMIT));

        let replies = storm(&svc, &server.url("/big"), &layer, &probe, || {}).await;

        assert_eq!(probe.calls(), CALLERS);
        assert_eq!(replies.len(), CALLERS);
        assert_all(&replies, StatusCode::OK, &pattern(BIG));
        for reply in &replies {
            assert_eq!(reply.header(CONTENT_LENGTH), None, "the body is chunked");
        }
        assert_stats(&layer, 1, FOLLOWERS);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_over_the_limit_reaches_every_caller_whole_through_its_own_call() {
    bounded(async {
        let probe = Probe::new();
        let server = upstream(Router::new().route("/big", routing::get(big_sized)), &probe).await;
        let layer = http_dedup(HttpKey::new());
        let svc = dedup_client(&layer, BufferLayer::new().with_limit(LIMIT));

        let replies = storm(&svc, &server.url("/big"), &layer, &probe, || {}).await;

        assert_eq!(probe.calls(), CALLERS);
        assert_eq!(replies.len(), CALLERS);
        assert_all(&replies, StatusCode::OK, &pattern(BIG));
        let len = BIG.to_string();
        for reply in &replies {
            assert_eq!(reply.header(CONTENT_LENGTH), Some(len.as_str()));
        }
        assert_stats(&layer, 1, FOLLOWERS);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_leader_hands_its_upstream_call_to_a_follower() {
    bounded(async {
        let probe = Probe::new();
        let server = upstream(Router::new().route("/hello", routing::get(hello)), &probe).await;
        let layer = http_dedup(HttpKey::new());
        let svc = dedup_client(&layer, BufferLayer::new());

        let url = server.url("/hello");
        let leader = send_all(&svc, [get(&url)]).remove(0);
        wait_until("the leader's request reached the upstream", || {
            probe.calls() == 1
        })
        .await;
        let followers = send_all(&svc, (1..CALLERS).map(|_| get(&url)));
        wait_until("every follower joined the leader", || {
            layer.handle().stats().coalesced == FOLLOWERS
        })
        .await;
        leader.abort();
        assert!(leader.await.expect_err("aborted").is_cancelled());
        wait_until("a follower took over the upstream call", || {
            layer.handle().stats().handoffs == 1
        })
        .await;
        probe.open();
        let replies = replies(followers).await;

        assert_eq!(
            probe.calls(),
            1,
            "the upstream call was handed on, not repeated"
        );
        assert_eq!(replies.len(), CALLERS - 1);
        assert_all(&replies, StatusCode::OK, HELLO.as_bytes());
        assert_stats(&layer, 1, FOLLOWERS);
        assert_eq!(layer.handle().stats().cancelled, 1);
    })
    .await;
}

fn as_user(url: &str, user: &str) -> Request<Full<Bytes>> {
    empty(request(Method::GET, url).header(AUTHORIZATION, format!("Bearer {user}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_with_different_authorization_each_reach_the_upstream() {
    bounded(async {
        let probe = Probe::new();
        let server = upstream(Router::new().route("/me", routing::get(whoami)), &probe).await;
        let layer = http_dedup(HttpKey::new());
        let svc = dedup_client(&layer, BufferLayer::new());

        let url = server.url("/me");
        let calls = send_all(&svc, ["alice", "bob"].map(|user| as_user(&url, user)));
        // Both wait in the handler at once: neither waits on the other.
        wait_until("both users' requests reached the upstream", || {
            probe.calls() == 2
        })
        .await;
        probe.open();
        let replies = replies(calls).await;

        assert_eq!(probe.calls(), 2);
        assert_eq!(replies[0].status, StatusCode::OK);
        assert_eq!(replies[0].body, "hello, Bearer alice");
        assert_eq!(replies[1].status, StatusCode::OK);
        assert_eq!(replies[1].body, "hello, Bearer bob");
        assert_stats(&layer, 2, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_to_a_public_endpoint_coalesce_across_authorization() {
    bounded(async {
        let probe = Probe::new();
        let server = upstream(Router::new().route("/me", routing::get(whoami)), &probe).await;
        let layer = http_dedup(HttpKey::new().public());
        let svc = dedup_client(&layer, BufferLayer::new());

        let url = server.url("/me");
        let calls = send_all(&svc, ["alice", "bob"].map(|user| as_user(&url, user)));
        wait_until("the second user joined the first", || {
            layer.handle().stats().coalesced == 1
        })
        .await;
        probe.open();
        let replies = replies(calls).await;

        assert_eq!(probe.calls(), 1);
        assert_eq!(replies[0], replies[1], "both got the leader's response");
        let body = &replies[0].body;
        assert!(
            body == "hello, Bearer alice" || body == "hello, Bearer bob",
            "unexpected body {body:?}"
        );
        assert_stats(&layer, 1, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_with_set_cookie_is_never_shared() {
    bounded(async {
        let probe = Probe::new();
        let server = upstream(Router::new().route("/login", routing::get(login)), &probe).await;
        let layer = http_dedup(HttpKey::new());
        let svc = dedup_client(&layer, BufferLayer::new());

        let replies = storm(&svc, &server.url("/login"), &layer, &probe, || {}).await;

        assert_eq!(probe.calls(), CALLERS);
        let mut sessions = Vec::new();
        for reply in &replies {
            assert_eq!(reply.status, StatusCode::OK);
            let cookie = reply.header(SET_COOKIE).expect("Set-Cookie");
            let session = cookie.strip_prefix("session=").expect("a session cookie");
            assert_eq!(reply.body, format!("welcome, session {session}"));
            sessions.push(session.to_owned());
        }
        sessions.sort();
        sessions.dedup();
        assert_eq!(sessions.len(), CALLERS, "every caller got its own cookie");
        assert_stats(&layer, 1, FOLLOWERS);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posts_are_never_coalesced() {
    const POSTS: usize = 5;
    bounded(async {
        let probe = Probe::new();
        let server = upstream(Router::new().route("/items", routing::post(create)), &probe).await;
        let layer = http_dedup(HttpKey::new());
        let svc = dedup_client(&layer, BufferLayer::new());

        let url = server.url("/items");
        let calls = send_all(&svc, (0..POSTS).map(|_| empty(request(Method::POST, &url))));
        wait_until("every POST reached the upstream", || probe.calls() == POSTS).await;
        probe.open();
        let replies = replies(calls).await;

        assert_eq!(probe.calls(), POSTS);
        let mut bodies: Vec<_> = replies
            .iter()
            .map(|reply| {
                assert_eq!(reply.status, StatusCode::OK);
                reply.body.clone()
            })
            .collect();
        bodies.sort();
        bodies.dedup();
        assert_eq!(bodies.len(), POSTS, "every POST got its own response");
        assert_stats(&layer, 0, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_500_is_shared_as_a_response() {
    bounded(async {
        let probe = Probe::new();
        let server = upstream(Router::new().route("/fail", routing::get(failing)), &probe).await;
        let layer = http_dedup(HttpKey::new());
        let svc = dedup_client(&layer, BufferLayer::new());

        let replies = storm(&svc, &server.url("/fail"), &layer, &probe, || {}).await;

        assert_eq!(probe.calls(), 1);
        assert_eq!(replies.len(), CALLERS);
        assert_all(
            &replies,
            StatusCode::INTERNAL_SERVER_ERROR,
            b"upstream failed",
        );
        assert_stats(&layer, 1, FOLLOWERS);
    })
    .await;
}
