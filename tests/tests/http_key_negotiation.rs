//! Requests that ask for different responses must not coalesce: a conditional
//! or ranged `GET` and a plain one, or an event stream and a plain `GET`.
//! Were they coalesced, the follower would get the leader's response (a 304,
//! a 206, a non-stream), which is not an answer to its own request.

use axum::{
    extract::State,
    http::{
        header::{ACCEPT, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_NONE_MATCH, RANGE},
        HeaderMap, HeaderName, Method, Request, StatusCode,
    },
    response::{IntoResponse, Response},
    routing, Router,
};
use bytes::Bytes;
use herdsman::{
    dedup::DedupLayer,
    http::{BufferLayer, HttpKey, HttpShare},
};
use herdsman_tests::{
    bounded, client, empty, get, replies, request, send_all, wait_until, Probe, Reply, Server,
};
use http_body_util::Full;
use tower::ServiceBuilder;

const DOCUMENT: &str = "the whole document";
const VERSION: &str = "\"v1\"";
const EVENT: &str = "data: hello\n\n";

/// Honours `If-None-Match`, `Range: bytes=0-3` and `Accept:
/// text/event-stream`, as a real upstream would.
async fn document(State(probe): State<Probe>, headers: HeaderMap) -> Response {
    probe.enter().await;
    let asks = |name: HeaderName, value: &str| headers.get(name).is_some_and(|v| v == value);
    if asks(IF_NONE_MATCH, VERSION) {
        return (StatusCode::NOT_MODIFIED, [(ETAG, VERSION)]).into_response();
    }
    if asks(RANGE, "bytes=0-3") {
        let range = format!("bytes 0-3/{}", DOCUMENT.len());
        let headers = [(ETAG, VERSION.to_owned()), (CONTENT_RANGE, range)];
        return (StatusCode::PARTIAL_CONTENT, headers, &DOCUMENT[..4]).into_response();
    }
    if asks(ACCEPT, "text/event-stream") {
        return ([(CONTENT_TYPE, "text/event-stream")], EVENT).into_response();
    }
    ([(ETAG, VERSION)], DOCUMENT).into_response()
}

/// Sends `first` through the dedup stack and, once it is at the upstream,
/// `second`; returns both replies.
async fn first_then_second(
    first: impl FnOnce(&str) -> Request<Full<Bytes>>,
    second: impl FnOnce(&str) -> Request<Full<Bytes>>,
) -> (Reply, Reply) {
    let probe = Probe::new();
    let app = Router::new()
        .route("/doc", routing::get(document))
        .with_state(probe.clone());
    let server = Server::start(app).await;
    let layer = DedupLayer::new(HttpKey::new()).with_share(HttpShare);
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .layer(BufferLayer::new())
        .service(client());

    let url = server.url("/doc");
    let first = send_all(&svc, [first(&url)]);
    wait_until("the first request reached the upstream", || {
        probe.calls() == 1
    })
    .await;
    let second = send_all(&svc, [second(&url)]);
    wait_until(
        "the second request joined the first or reached the upstream",
        || layer.handle().stats().coalesced == 1 || probe.calls() == 2,
    )
    .await;
    probe.open();
    let mut first = replies(first).await;
    let mut second = replies(second).await;
    (first.remove(0), second.remove(0))
}

fn assert_whole_document(reply: &Reply) {
    assert_eq!(
        (reply.status, &*reply.body),
        (StatusCode::OK, DOCUMENT.as_bytes()),
        "a plain GET must get the whole document, got {reply:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_get_never_gets_the_304_of_a_concurrent_conditional_get() {
    bounded(async {
        let conditional =
            |url: &str| empty(request(Method::GET, url).header(IF_NONE_MATCH, VERSION));
        let (first, second) = first_then_second(conditional, get).await;
        assert_eq!(first.status, StatusCode::NOT_MODIFIED);
        assert_whole_document(&second);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_get_never_gets_the_206_of_a_concurrent_range_request() {
    bounded(async {
        let ranged = |url: &str| empty(request(Method::GET, url).header(RANGE, "bytes=0-3"));
        let (first, second) = first_then_second(ranged, get).await;
        assert_eq!(first.status, StatusCode::PARTIAL_CONTENT);
        assert_whole_document(&second);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_request_never_gets_a_concurrent_plain_response() {
    bounded(async {
        let stream =
            |url: &str| empty(request(Method::GET, url).header(ACCEPT, "text/event-stream"));
        let (first, second) = first_then_second(get, stream).await;
        assert_whole_document(&first);
        assert_eq!(
            (second.header(CONTENT_TYPE), &*second.body),
            (Some("text/event-stream"), EVENT.as_bytes()),
            "the event-stream request got {second:?}"
        );
    })
    .await;
}
