//! The client's timing and transport logic against a scripted server, in
//! paused time: each request reaches the test, which answers it (and
//! feeds a stream's body) by hand.

use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use herdsman_client::{
    BoxError, Builder, Client, ClientRequest, HttpService, Lagged, Transport, Update,
};
use http::{header, Response, StatusCode};
use http_body_util::channel::{Channel, Sender};
use tokio::{
    sync::{mpsc, oneshot},
    time::{self, Instant},
};

type Body = Channel<Bytes>;

/// One request the client sent, waiting for its answer.
struct Call {
    req: ClientRequest,
    at: Instant,
    reply: oneshot::Sender<Response<Body>>,
}

impl Call {
    fn path(&self) -> &str {
        self.req.uri().path()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.req.headers().get(name).map(|v| v.to_str().unwrap())
    }

    /// Answers `status` with `headers` and `body`, whole.
    fn answer(self, status: u16, headers: &[(&str, &str)], body: &str) {
        let (mut tx, rx) = Channel::new(4);
        if !body.is_empty() {
            tx.try_send(http_body::Frame::data(Bytes::from(body.to_owned())))
                .unwrap();
        }
        self.reply_with(status, headers, rx);
    }

    /// Accepts a stream; the test feeds it through the sender.
    fn stream(self) -> Sender<Bytes> {
        let (tx, rx) = Channel::new(16);
        self.reply_with(200, &[("content-type", "text/event-stream")], rx);
        tx
    }

    fn reply_with(self, status: u16, headers: &[(&str, &str)], body: Body) {
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        for (name, value) in headers {
            response.headers_mut().insert(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let _ = self.reply.send(response);
    }
}

/// A service handing each request to the test.
fn scripted() -> (impl HttpService, mpsc::UnboundedReceiver<Call>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let service = tower::service_fn(move |req: ClientRequest| {
        let tx = tx.clone();
        async move {
            let (reply, answer) = oneshot::channel();
            tx.send(Call {
                req,
                at: Instant::now(),
                reply,
            })
            .map_err(|_| BoxError::from("test over"))?;
            answer.await.map_err(|_| BoxError::from("no answer"))
        }
    });
    (service, rx)
}

fn builder() -> Builder {
    Client::builder()
}

const URL: &str = "http://server.test/sse/thing";

async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *stream).poll_next(cx)).await
}

async fn update<S: Stream<Item = Result<Update, Lagged>> + Unpin>(stream: &mut S) -> Update {
    time::timeout(Duration::from_secs(3600), next(stream))
        .await
        .expect("an update within the hour")
        .expect("the subscription is open")
        .expect("no lag")
}

async fn call(calls: &mut mpsc::UnboundedReceiver<Call>) -> Call {
    time::timeout(Duration::from_secs(3600), calls.recv())
        .await
        .expect("a request within the hour")
        .expect("the client is alive")
}

async fn send(tx: &mut Sender<Bytes>, text: &str) {
    tx.send_data(Bytes::from(text.to_owned())).await.unwrap();
}

fn elapsed(from: Instant, call: &Call) -> Duration {
    call.at - from
}

#[tokio::test(start_paused = true)]
async fn a_hundred_subscribers_share_one_connection_closed_when_the_last_drops() {
    let (service, mut calls) = scripted();
    let client = builder().build_with(service);
    let mut subs: Vec<_> = (0..100).map(|_| client.subscribe(URL).unwrap()).collect();
    let first = call(&mut calls).await;
    assert_eq!(first.header("accept"), Some("text/event-stream"));
    let mut tx = first.stream();
    send(&mut tx, "id: a\ndata: 1\n\n").await;
    for sub in &mut subs {
        let u = update(sub).await;
        assert_eq!(
            (u.data(), u.id(), u.transport()),
            ("1", Some("a"), Transport::Sse)
        );
    }
    let mut late = client.subscribe(URL).unwrap();
    assert_eq!(
        update(&mut late).await.data(),
        "1",
        "a late subscriber gets the current value"
    );
    assert_eq!(late.subscribers(), 101);
    assert_eq!(client.stats().connects, 1);
    assert_eq!(client.stats().events, 1, "one update for every subscriber");
    time::sleep(Duration::from_secs(5)).await;
    assert!(calls.try_recv().is_err(), "no second connection");

    drop(subs);
    drop(late);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(client.stats().open, 0);
    assert!(
        tx.send_data(Bytes::from("x")).await.is_err(),
        "the connection is closed"
    );
    let _again = client.subscribe(URL).unwrap();
    call(&mut calls).await;
}

#[tokio::test(start_paused = true)]
async fn a_reconnection_waits_retry_resumes_with_last_event_id_and_shows_no_duplicate() {
    let (service, mut calls) = scripted();
    let client = builder().build_with(service);
    let mut sub = client.subscribe(URL).unwrap();
    let mut tx = call(&mut calls).await.stream();
    send(&mut tx, "retry: 2000\nid: a\ndata: 1\n\n").await;
    assert_eq!(update(&mut sub).await.data(), "1");
    drop(tx);
    let dropped = Instant::now();
    let again = call(&mut calls).await;
    let wait = elapsed(dropped, &again);
    assert!(
        wait >= Duration::from_millis(2000) && wait <= Duration::from_millis(2500),
        "{wait:?}"
    );
    assert_eq!(again.header("last-event-id"), Some("a"));
    let mut tx = again.stream();
    // A server that sends its current value again: not a change.
    send(&mut tx, "id: a\ndata: 1\n\nid: b\ndata: 2\n\n").await;
    let u = update(&mut sub).await;
    assert_eq!((u.data(), u.id()), ("2", Some("b")));
    assert_eq!(client.stats().reconnects, 1);
}

#[tokio::test(start_paused = true)]
async fn failed_connections_back_off_exponentially_with_jitter() {
    let (service, mut calls) = scripted();
    // No polling URL for this one: it keeps trying the stream.
    let client = builder().build_with(service);
    let _sub = client.subscribe("http://server.test/events").unwrap();
    let mut last = call(&mut calls).await;
    for expected in [1000u64, 2000, 4000, 8000, 16000, 30000, 30000] {
        let at = last.at;
        last.answer(500, &[], "");
        last = call(&mut calls).await;
        let wait = elapsed(at, &last);
        let low = Duration::from_millis(expected);
        assert!(
            wait >= low && wait <= low.mul_f64(1.25),
            "{expected}: {wait:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_204_ends_every_subscription() {
    let (service, mut calls) = scripted();
    let client = builder().build_with(service);
    let mut a = client.subscribe(URL).unwrap();
    let mut b = client.subscribe(URL).unwrap();
    call(&mut calls).await.answer(204, &[], "");
    assert!(next(&mut a).await.is_none());
    assert!(next(&mut b).await.is_none());
    time::sleep(Duration::from_secs(60)).await;
    assert!(calls.try_recv().is_err(), "no reconnection after 204");
}

#[tokio::test(start_paused = true)]
async fn a_429_waits_its_retry_after() {
    let (service, mut calls) = scripted();
    let client = builder().build_with(service);
    let _sub = client.subscribe(URL).unwrap();
    let first = call(&mut calls).await;
    let at = first.at;
    first.answer(429, &[("retry-after", "7")], "");
    let again = call(&mut calls).await;
    assert_eq!(elapsed(at, &again), Duration::from_secs(7));
    assert_eq!(again.path(), "/sse/thing", "a 429 is no reason to poll");
}

/// Polls answered like herdsman-axum: `ETag`, `X-Poll-Interval`, 304.
fn poll_answer(call: Call, etag: &str, body: &str) {
    if call.header("if-none-match") == Some(etag) {
        call.answer(304, &[("etag", etag), ("x-poll-interval", "2000")], "");
    } else {
        call.answer(200, &[("etag", etag), ("x-poll-interval", "2000")], body);
    }
}

#[tokio::test(start_paused = true)]
async fn a_503_falls_back_to_polling_and_a_probe_returns_without_duplicate_or_gap() {
    let (service, mut calls) = scripted();
    let client = builder()
        .with_probe_every(Duration::from_secs(30))
        .build_with(service);
    let mut sub = client.subscribe(URL).unwrap();
    let mut tx = call(&mut calls).await.stream();
    send(&mut tx, "id: v1\ndata: one\n\n").await;
    assert_eq!(update(&mut sub).await.data(), "one");
    drop(tx);

    // The stream is switched off: polling at once, from where it was.
    let refused = call(&mut calls).await;
    let off = refused.at;
    refused.answer(503, &[("retry-after", "40")], "");
    let poll = call(&mut calls).await;
    assert_eq!(poll.path(), "/api/thing");
    assert_eq!(
        poll.header("if-none-match"),
        Some("\"v1\""),
        "the stream's id as an ETag"
    );
    poll_answer(poll, "\"v1\"", "one");
    // Unchanged: 304 every X-Poll-Interval; then a change.
    let poll = call(&mut calls).await;
    assert_eq!(elapsed(off, &poll), Duration::from_secs(2));
    poll_answer(poll, "\"v1\"", "one");
    poll_answer(call(&mut calls).await, "\"v2\"", "two");
    let u = update(&mut sub).await;
    assert_eq!(
        (u.data(), u.id(), u.transport()),
        ("two", Some("v2"), Transport::Polling)
    );
    // Polls go on until the probe, after Retry-After (40 s > 30 s).
    let mut probe = call(&mut calls).await;
    while probe.path() == "/api/thing" {
        poll_answer(probe, "\"v2\"", "two");
        probe = call(&mut calls).await;
    }
    assert_eq!(elapsed(off, &probe), Duration::from_secs(40));
    assert_eq!(probe.header("last-event-id"), Some("v2"));
    let mut tx = probe.stream();
    send(&mut tx, "id: v2\ndata: two\n\nid: v3\ndata: three\n\n").await;
    let u = update(&mut sub).await;
    assert_eq!(
        (u.data(), u.transport()),
        ("three", Transport::Sse),
        "v2 not repeated"
    );
    let stats = client.stats();
    assert_eq!((stats.fallbacks, stats.returns, stats.connects), (1, 1, 2));
}

#[tokio::test(start_paused = true)]
async fn repeated_connection_failures_fall_back_after_the_configured_count() {
    let (service, mut calls) = scripted();
    let client = builder()
        .with_failures_before_fallback(3)
        .build_with(service);
    let mut sub = client.subscribe(URL).unwrap();
    for _ in 0..3 {
        let c = call(&mut calls).await;
        assert_eq!(c.path(), "/sse/thing");
        c.answer(502, &[], "");
    }
    let poll = call(&mut calls).await;
    assert_eq!(poll.path(), "/api/thing");
    poll_answer(poll, "\"v1\"", "one");
    assert_eq!(update(&mut sub).await.transport(), Transport::Polling);
}

#[tokio::test(start_paused = true)]
async fn a_wrong_content_type_or_a_404_falls_back_at_once() {
    for (status, headers) in [
        (200, &[("content-type", "application/json")][..]),
        (404, &[][..]),
        (405, &[][..]),
    ] {
        let (service, mut calls) = scripted();
        let client = builder().build_with(service);
        let _sub = client.subscribe(URL).unwrap();
        call(&mut calls).await.answer(status, headers, "{}");
        assert_eq!(call(&mut calls).await.path(), "/api/thing", "{status}");
        assert_eq!(client.stats().fallbacks, 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_stream_without_a_first_byte_is_a_buffering_proxy_and_falls_back() {
    let (service, mut calls) = scripted();
    let client = builder()
        .with_first_byte_timeout(Duration::from_secs(10))
        .build_with(service);
    let _sub = client.subscribe(URL).unwrap();
    let accepted = call(&mut calls).await;
    let at = accepted.at;
    let _tx = accepted.stream();
    let poll = call(&mut calls).await;
    assert_eq!(poll.path(), "/api/thing");
    assert_eq!(elapsed(at, &poll), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_stalled_stream_is_dropped_after_the_read_timeout_and_resumed() {
    let (service, mut calls) = scripted();
    let client = builder()
        .with_read_timeout(Duration::from_secs(45))
        .with_retry(Duration::from_secs(1))
        .build_with(service);
    let mut sub = client.subscribe(URL).unwrap();
    let mut tx = call(&mut calls).await.stream();
    send(&mut tx, "id: a\ndata: 1\n\n").await;
    let got = Instant::now();
    update(&mut sub).await;
    // Keep-alives keep it open; then silence.
    time::sleep(Duration::from_secs(30)).await;
    send(&mut tx, ": keep-alive\n\n").await;
    let again = call(&mut calls).await;
    let wait = elapsed(got, &again);
    assert!(
        wait >= Duration::from_secs(76) && wait <= Duration::from_millis(76_250),
        "{wait:?}"
    );
    assert_eq!(again.header("last-event-id"), Some("a"));
}

#[tokio::test(start_paused = true)]
async fn a_stale_polling_answer_is_delivered_once_marked_stale() {
    let (service, mut calls) = scripted();
    let client = builder()
        .with_failures_before_fallback(1)
        .build_with(service);
    let mut sub = client.subscribe(URL).unwrap();
    call(&mut calls).await.answer(503, &[], "");
    poll_answer(call(&mut calls).await, "\"v1\"", "one");
    assert!(!update(&mut sub).await.is_stale());
    for _ in 0..2 {
        call(&mut calls).await.answer(
            200,
            &[("x-herdsman-stale", "1"), ("x-poll-interval", "2000")],
            "one",
        );
    }
    poll_answer(call(&mut calls).await, "\"v1\"", "one");
    let stale = update(&mut sub).await;
    assert!(stale.is_stale() && stale.data() == "one");
    let fresh = update(&mut sub).await;
    assert!(!fresh.is_stale(), "recovered: the same value, fresh again");
    assert_eq!(client.stats().events, 3);
}

#[tokio::test(start_paused = true)]
async fn an_upstream_error_event_marks_the_value_stale_for_late_subscribers() {
    let (service, mut calls) = scripted();
    let client = builder().build_with(service);
    let mut sub = client.subscribe(URL).unwrap();
    let mut tx = call(&mut calls).await.stream();
    send(
        &mut tx,
        "id: a\ndata: 1\n\nevent: upstream-error\ndata: {\"status\":502}\n\n",
    )
    .await;
    update(&mut sub).await;
    let error = update(&mut sub).await;
    assert_eq!(
        (error.event_type(), error.is_stale()),
        ("upstream-error", true)
    );
    let mut late = client.subscribe(URL).unwrap();
    let first = update(&mut late).await;
    assert_eq!((first.data(), first.is_stale()), ("1", true));
}

#[tokio::test(start_paused = true)]
async fn garbage_is_ignored_and_an_overlong_line_drops_the_connection() {
    let (service, mut calls) = scripted();
    let client = builder().with_limits(64, 1024).build_with(service);
    let mut sub = client.subscribe(URL).unwrap();
    let mut tx = call(&mut calls).await.stream();
    send(&mut tx, "\u{0}\u{7f}garbage\n\u{fffd}: x\n\ndata: ok\n\n").await;
    assert_eq!(update(&mut sub).await.data(), "ok");
    send(&mut tx, &"x".repeat(100)).await;
    let again = call(&mut calls).await;
    assert_eq!(again.path(), "/sse/thing");
}

#[tokio::test(start_paused = true)]
async fn a_probe_waiting_for_its_first_byte_keeps_polling() {
    let (service, mut calls) = scripted();
    let client = builder()
        .with_probe_every(Duration::from_secs(10))
        .with_first_byte_timeout(Duration::from_secs(20))
        .build_with(service);
    let mut sub = client.subscribe(URL).unwrap();
    call(&mut calls).await.answer(503, &[], "");
    poll_answer(call(&mut calls).await, "\"v1\"", "one");
    update(&mut sub).await;
    let mut probe = call(&mut calls).await;
    while probe.path() == "/api/thing" {
        poll_answer(probe, "\"v1\"", "one");
        probe = call(&mut calls).await;
    }
    // Accepted, silent (the server has nothing newer than v1): polls go on
    // every 2 s, and a change comes through them.
    let mut tx = probe.stream();
    let poll = call(&mut calls).await;
    assert_eq!(poll.path(), "/api/thing");
    poll_answer(poll, "\"v2\"", "two");
    assert_eq!(update(&mut sub).await.transport(), Transport::Polling);
    // Then the stream speaks: back to SSE, without repeating v2.
    send(&mut tx, "id: v2\ndata: two\n\nid: v3\ndata: three\n\n").await;
    let u = update(&mut sub).await;
    assert_eq!((u.data(), u.transport()), ("three", Transport::Sse));
    assert_eq!(client.stats().returns, 1);
}

#[tokio::test(start_paused = true)]
async fn an_id_in_a_block_without_data_still_moves_the_resume_point() {
    let (service, mut calls) = scripted();
    let client = builder().build_with(service);
    let mut sub = client.subscribe("http://server.test/events").unwrap();
    let mut tx = call(&mut calls).await.stream();
    send(&mut tx, "id: a\ndata: 1\n\nid: b\n\n").await;
    update(&mut sub).await;
    drop(tx);
    let again = call(&mut calls).await;
    assert_eq!(
        again.header("last-event-id"),
        Some("b"),
        "as a browser would"
    );
    let mut tx = again.stream();
    send(&mut tx, "id:\ndata: 2\n\n").await;
    update(&mut sub).await;
    drop(tx);
    let again = call(&mut calls).await;
    assert_eq!(again.header("last-event-id"), None, "an empty id clears it");
}
