//! Polling and SSE answers of `Live` over a whole Coordinator, with paused
//! tokio time: versions that identify content across loop restarts and
//! processes, failure answers that say when to retry, and keys that
//! conditional headers do not split.

mod support;

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Body,
    http::{header, request::Parts, HeaderValue, Request, Response, StatusCode},
};
use herdsman::{
    config::{CacheSettings, ClassConfig, Config, Environment, RegistrySettings},
    event::Invalidation,
    Coordinated, Coordinator,
};
use herdsman_axum::{data_request, LastEventId, Live, Shutdown};
use http_body_util::BodyExt;
use support::{settle, Calls};
use tokio::time;
use tower::{service_fn, util::BoxCloneSyncService, Layer};

const SEC: Duration = Duration::from_secs(1);

type Upstream = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// An upstream answering every request with the status and body it is set
/// to, counting its calls.
#[derive(Clone)]
struct Origin {
    answer: Arc<Mutex<(StatusCode, String)>>,
    calls: Calls,
}

impl Origin {
    fn new(body: &str) -> Self {
        Origin {
            answer: Arc::new(Mutex::new((StatusCode::OK, body.to_owned()))),
            calls: Calls::default(),
        }
    }

    fn set(&self, status: StatusCode, body: &str) {
        *self.answer.lock().unwrap() = (status, body.to_owned());
    }

    fn calls(&self) -> usize {
        self.calls.get()
    }

    fn service(&self) -> Upstream {
        let this = self.clone();
        BoxCloneSyncService::new(service_fn(move |_: Request<Body>| {
            let this = this.clone();
            async move {
                let n = this.calls.next();
                let (status, body) = this.answer.lock().unwrap().clone();
                Ok(Response::builder()
                    .status(status)
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::DATE, format!("call {n}"))
                    .body(Body::from(body))
                    .unwrap())
            }
        }))
    }
}

/// One "process": a Coordinator over `origin` and the `Live` answers over
/// its registry. The class `board` (`/board`, public) polls every 5 s.
struct App {
    coordinator: Coordinator,
    live: Live,
}

impl App {
    fn start(origin: &Origin, tweak: impl FnOnce(&mut Config)) -> App {
        let mut config = Config::profile(Environment::Test);
        config.registry.class.jitter = 0.0;
        config.registry.class.linger = Duration::ZERO;
        config.classes.insert(
            "board".to_owned(),
            ClassConfig {
                paths: vec!["/board".to_owned()],
                public: true,
                ..ClassConfig::default()
            },
        );
        tweak(&mut config);
        // A class's section is whole: made once the global one is final.
        let registry = RegistrySettings {
            class: herdsman::registry::ClassSettings {
                interval: 5 * SEC,
                ..config.registry.class
            },
            ..config.registry.clone()
        };
        App::class(&mut config).registry = Some(registry);
        let coordinator = Coordinator::builder()
            .environment(Environment::Test)
            .config(config)
            .build()
            .expect("a valid configuration");
        let stack: Coordinated<Upstream> = coordinator.layer().layer(origin.service());
        let live = Live::new(move |req| stack.subscribe(req));
        App { coordinator, live }
    }

    fn class(config: &mut Config) -> &mut ClassConfig {
        config.classes.get_mut("board").unwrap()
    }

    /// A polling `GET /board` with these caller headers.
    async fn poll(&self, headers: &[(header::HeaderName, &str)]) -> Reply {
        let parts = caller(headers);
        let response = self
            .live
            .poll(data_request(&parts, "/board"), &parts.headers)
            .await;
        Reply::read(response).await
    }

    /// An SSE stream of `/board` for the caller `who` (`Authorization:
    /// Bearer <who>`: the class is public, so it does not split the key).
    fn sse(
        &self,
        who: &str,
        last_event_id: Option<&str>,
        headers: &[(header::HeaderName, &str)],
    ) -> Events {
        let bearer = format!("Bearer {who}");
        let mut headers = headers.to_vec();
        headers.push((header::AUTHORIZATION, &bearer));
        let parts = caller(&headers);
        let last = LastEventId(last_event_id.and_then(LastEventId::parse));
        let response = self.live.sse(data_request(&parts, "/board"), last);
        assert_eq!(response.status(), StatusCode::OK);
        Events {
            body: response.into_body(),
            buf: String::new(),
        }
    }

    fn push(&self) {
        self.coordinator
            .invalidate(&Invalidation::Path("/board".into()));
    }
}

fn caller(headers: &[(header::HeaderName, &str)]) -> Parts {
    let mut req = Request::get("/board").body(()).unwrap();
    for (name, value) in headers {
        req.headers_mut()
            .append(name.clone(), HeaderValue::from_str(value).unwrap());
    }
    req.into_parts().0
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Reply {
    async fn read(response: Response<Body>) -> Reply {
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn etag(&self) -> &str {
        self.header(header::ETAG).expect("an ETag")
    }

    fn retry_after(&self) -> u64 {
        self.header(header::RETRY_AFTER)
            .expect("a Retry-After")
            .parse()
            .unwrap()
    }
}

/// One SSE stream, read event by event.
struct Events {
    body: Body,
    buf: String,
}

impl Events {
    /// The next event (comments skipped) as its field lines, or `None` if
    /// none comes within `within`.
    async fn next_within(&mut self, within: Duration) -> Option<Vec<(String, String)>> {
        time::timeout(within, self.next_event()).await.ok()
    }

    async fn next_event(&mut self) -> Vec<(String, String)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let fields: Vec<(String, String)> = block
                    .lines()
                    .filter(|l| !l.is_empty() && !l.starts_with(':'))
                    .map(|l| {
                        let (name, value) = l.split_once(':').unwrap_or((l, ""));
                        let value = value.strip_prefix(' ').unwrap_or(value);
                        (name.to_owned(), value.to_owned())
                    })
                    .collect();
                if !fields.is_empty() {
                    return fields;
                }
                continue;
            }
            let frame = self
                .body
                .frame()
                .await
                .expect("the stream is open")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.buf.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }
}

fn field<'a>(event: &'a [(String, String)], name: &str) -> Option<&'a str> {
    event
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(start_paused = true)]
async fn a_change_made_while_no_loop_ran_gets_a_new_etag() {
    // The issue's reproduction: with no linger, every poll starts the key's
    // loop again.
    let origin = Origin::new("[]");
    let app = App::start(&origin, |_| {});
    let first = app.poll(&[]).await;
    assert_eq!(first.status, StatusCode::OK);
    let etag = first.etag().to_owned();

    origin.set(StatusCode::OK, r#"[{"card":"ship it"}]"#);
    time::sleep(SEC).await;
    let again = app.poll(&[(header::IF_NONE_MATCH, &etag)]).await;
    assert_eq!(again.status, StatusCode::OK, "the body changed: no 304");
    assert!(again.body.contains("ship it"));
    assert_ne!(again.etag(), etag);

    // Unchanged content polled by a later loop keeps its ETag.
    time::sleep(SEC).await;
    let current = again.etag().to_owned();
    let same = app.poll(&[(header::IF_NONE_MATCH, &current)]).await;
    assert_eq!(same.status, StatusCode::NOT_MODIFIED);
    assert_eq!(same.etag(), current);
    assert_eq!(origin.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn two_processes_give_equal_content_equal_etags_and_different_content_different_ones() {
    let (a, b) = (Origin::new("[]"), Origin::new("[]"));
    let (first, restarted) = (App::start(&a, |_| {}), App::start(&b, |_| {}));
    let etag = first.poll(&[]).await.etag().to_owned();

    let same = restarted.poll(&[(header::IF_NONE_MATCH, &etag)]).await;
    assert_eq!(
        same.status,
        StatusCode::NOT_MODIFIED,
        "same content, same ETag"
    );

    b.set(StatusCode::OK, r#"[{"card":"written after the restart"}]"#);
    time::sleep(SEC).await;
    let changed = restarted.poll(&[(header::IF_NONE_MATCH, &etag)]).await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_ne!(changed.etag(), etag);
}

#[tokio::test(start_paused = true)]
async fn an_sse_client_resuming_after_a_loop_restart_gets_what_changed() {
    let origin = Origin::new("[]");
    let app = App::start(&origin, |_| {});
    let mut stream = app.sse("viewer", None, &[]);
    let event = stream.next_event().await;
    let id = field(&event, "id").expect("an id").to_owned();
    drop(stream);
    settle().await;
    assert_eq!(app.coordinator.registry().stats().keys, 0, "the loop ended");

    origin.set(StatusCode::OK, r#"[{"card":"while away"}]"#);
    time::sleep(SEC).await; // past the cache's TTL
    let mut resumed = app.sse("viewer", Some(&id), &[]);
    let event = resumed
        .next_within(SEC)
        .await
        .expect("the changed value comes at once");
    assert!(field(&event, "data").unwrap().contains("while away"));
    assert_ne!(field(&event, "id"), Some(id.as_str()));
}

#[tokio::test(start_paused = true)]
async fn an_sse_client_resuming_on_another_process_skips_only_what_it_has() {
    let (a, b) = (Origin::new("[]"), Origin::new("[]"));
    let (first, other) = (App::start(&a, |_| {}), App::start(&b, |_| {}));
    let mut stream = first.sse("viewer", None, &[]);
    let id = field(&stream.next_event().await, "id").unwrap().to_owned();
    drop(stream);

    // Same content on the other process: the client is current.
    let mut current = other.sse("viewer", Some(&id), &[]);
    assert!(current.next_within(SEC).await.is_none(), "nothing new");
    drop(current);
    settle().await;

    // Different content there: the client gets it.
    b.set(StatusCode::OK, r#"[{"card":"only on b"}]"#);
    let mut behind = other.sse("viewer", Some(&id), &[]);
    let event = behind.next_within(SEC).await.expect("the current value");
    assert!(field(&event, "data").unwrap().contains("only on b"));
}

#[tokio::test(start_paused = true)]
async fn sse_streams_with_distinct_if_none_match_share_one_loop() {
    let origin = Origin::new("[]");
    let app = App::start(&origin, |_| {});
    let mut streams = Vec::new();
    for i in 0..50 {
        let inm = format!("\"tab-{i}\"");
        streams.push(app.sse(
            &format!("viewer{i}"),
            None,
            &[(header::IF_NONE_MATCH, &inm)],
        ));
    }
    for stream in &mut streams {
        stream.next_event().await;
    }
    assert_eq!(app.coordinator.registry().stats().keys, 1);
    assert_eq!(origin.calls(), 1);

    time::sleep(3 * 5 * SEC + SEC / 2).await;
    assert_eq!(origin.calls(), 4, "one upstream call per interval");
}

#[tokio::test(start_paused = true)]
async fn a_failing_key_answers_503_with_a_retry_after_that_counts_down_to_the_next_poll() {
    let origin = Origin::new("[]");
    origin.set(StatusCode::INTERNAL_SERVER_ERROR, "down");
    let app = App::start(&origin, |config| {
        config.registry.class.linger = 60 * SEC;
        config.breaker.consecutive_failures = None;
        config.breaker.minimum_calls = 1000;
    });
    // A viewer keeps the loop polling between the polls (without one it
    // lingers, and polls when the next poller comes).
    let _viewer = app.sse("viewer", None, &[]);
    // The first poll fails: the loop retries after its backoff, which is
    // raised to the 5 s interval.
    let first = app.poll(&[]).await;
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(first.retry_after(), 5);
    assert_eq!(
        first.header(header::CONTENT_TYPE),
        Some("text/plain; charset=utf-8")
    );

    let mut seen = Vec::new();
    for _ in 0..4 {
        time::sleep(SEC).await;
        let reply = app.poll(&[]).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        seen.push(reply.retry_after());
    }
    assert_eq!(seen, [4, 3, 2, 1]);
    assert_eq!(origin.calls(), 1, "no poll before the next attempt");

    // After the next attempt fails too, the count starts again.
    time::sleep(SEC + SEC / 2).await;
    assert_eq!(origin.calls(), 2);
    let reply = app.poll(&[]).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.retry_after(), 5, "due at 10 s, asked at 5.5 s");
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_holds_the_status_and_the_loop_waits_for_its_probe() {
    let origin = Origin::new("[]");
    origin.set(StatusCode::INTERNAL_SERVER_ERROR, "down");
    let app = App::start(&origin, |config| {
        config.registry.class.linger = 120 * SEC;
        config.breaker.consecutive_failures = Some(2);
        config.breaker.open_duration = 30 * SEC;
        config.breaker.max_open_duration = 60 * SEC;
    });
    let _viewer = app.sse("viewer", None, &[]);
    let mut statuses = Vec::new();
    let mut retry_afters = Vec::new();
    for _ in 0..12 {
        let reply = app.poll(&[]).await;
        statuses.push(reply.status);
        retry_afters.push(reply.retry_after());
        time::sleep(SEC).await;
    }
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    // Two failures open the breaker (at 0 s and 5 s); the poll at 10 s
    // meets it open until 35 s, so the loop waits for the probe instead of
    // polling into it every 5 s.
    assert_eq!(origin.calls(), 2);
    assert_eq!(retry_afters[11], 35 - 11);
    let hooks = app.coordinator.registry().hooks();
    assert_eq!(hooks[0].fetches, 3);
    time::sleep(30 * SEC).await;
    assert_eq!(origin.calls(), 3, "the probe went through at 35 s");
}

#[tokio::test(start_paused = true)]
async fn the_caches_stale_copy_reaches_a_polling_client_marked_stale() {
    let origin = Origin::new(r#"{"count":4}"#);
    let app = App::start(&origin, |config| {
        config.layers.breaker = false;
        let cache = CacheSettings {
            class: herdsman::cache::ClassSettings {
                ttl: SEC,
                stale_if_error: 300 * SEC,
                ..config.cache.class
            },
            ..config.cache.clone()
        };
        App::class(config).cache = Some(cache);
    });
    let fresh = app.poll(&[]).await;
    assert_eq!(fresh.status, StatusCode::OK);
    assert!(fresh.header("x-herdsman-stale").is_none());

    origin.set(StatusCode::INTERNAL_SERVER_ERROR, "down");
    time::sleep(2 * SEC).await;
    for _ in 0..3 {
        // No linger: each poll starts a loop, whose fetch the cache answers
        // with its stale copy.
        let stale = app.poll(&[]).await;
        assert_eq!(stale.status, StatusCode::OK);
        assert_eq!(stale.body, r#"{"count":4}"#);
        assert_eq!(stale.header("x-herdsman-stale"), Some("1"));
        assert!(stale.header(header::ETAG).is_none());
        let cache_status = stale.header("cache-status").expect("a Cache-Status");
        assert!(cache_status.contains("fwd=stale"), "{cache_status}");
        assert!(stale.header("x-poll-interval").is_some());
        time::sleep(SEC).await;
    }
    let stats = app.coordinator.registry().stats();
    assert_eq!(stats.errors, 3, "each stale answer is a failed poll");
}

#[tokio::test(start_paused = true)]
async fn a_failing_key_with_a_good_value_serves_it_stale_then_fresh_again() {
    let origin = Origin::new("[1]");
    let app = App::start(&origin, |config| {
        config.registry.class.linger = 60 * SEC;
        config.layers.breaker = false;
    });
    let _viewer = app.sse("viewer", None, &[]);
    let good = app.poll(&[]).await;
    let etag = good.etag().to_owned();
    origin.set(StatusCode::BAD_GATEWAY, "down");
    app.push();
    settle().await;
    let stale = app.poll(&[(header::IF_NONE_MATCH, &etag)]).await;
    assert_eq!(
        stale.status,
        StatusCode::OK,
        "a stale answer is never a 304"
    );
    assert_eq!(stale.body, "[1]");
    assert_eq!(stale.header("x-herdsman-stale"), Some("1"));
    assert!(stale.header(header::ETAG).is_none());

    origin.set(StatusCode::OK, "[1]");
    time::sleep(5 * SEC + SEC / 2).await;
    let back = app.poll(&[(header::IF_NONE_MATCH, &etag)]).await;
    assert_eq!(
        back.status,
        StatusCode::NOT_MODIFIED,
        "same content, same ETag"
    );
}

#[tokio::test(start_paused = true)]
async fn sse_errors_carry_no_id_and_a_joining_client_gets_the_good_value_first() {
    let origin = Origin::new("[1]");
    let app = App::start(&origin, |config| {
        config.registry.class.linger = 60 * SEC;
        config.layers.breaker = false;
    });
    let mut first = app.sse("first", None, &[]);
    let value = first.next_event().await;
    let id = field(&value, "id").unwrap().to_owned();
    assert_eq!(id.len(), 16);
    assert!(field(&value, "retry").is_some());

    origin.set(StatusCode::BAD_GATEWAY, "down");
    app.push();
    let error = first.next_event().await;
    assert_eq!(field(&error, "event"), Some("upstream-error"));
    assert_eq!(
        field(&error, "id"),
        None,
        "the client's last id stays its value's"
    );
    let data: serde_json::Value = serde_json::from_str(field(&error, "data").unwrap()).unwrap();
    assert_eq!(data["status"], 502);
    assert_eq!(data["retry_after"], 5, "the next poll, after the backoff");

    // A new client gets the good value (stale), then the error.
    let mut joining = app.sse("joining", None, &[]);
    let value = joining.next_event().await;
    assert_eq!(field(&value, "id"), Some(id.as_str()));
    assert_eq!(field(&value, "data"), Some("[1]"));
    assert!(
        field(&value, "retry").is_some(),
        "retry: on the first event"
    );
    let error = joining.next_event().await;
    assert_eq!(field(&error, "event"), Some("upstream-error"));
    assert!(field(&error, "retry").is_none());

    // One that has the good value gets the error only.
    let mut current = app.sse("current", Some(&id), &[]);
    let error = current.next_event().await;
    assert_eq!(field(&error, "event"), Some("upstream-error"));

    // Recovery with the same content: sent again, with the same id.
    origin.set(StatusCode::OK, "[1]");
    app.push();
    for stream in [&mut first, &mut joining, &mut current] {
        let back = stream.next_event().await;
        assert_eq!(field(&back, "id"), Some(id.as_str()));
        assert_eq!(field(&back, "data"), Some("[1]"));
    }
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_ends_every_stream_with_a_last_event_that_keeps_the_clients_id() {
    let origin = Origin::new("[]");
    let app = App::start(&origin, |_| {});
    let shutdown = Shutdown::new();
    let app = App {
        live: app.live.with_shutdown(shutdown.clone()),
        coordinator: app.coordinator,
    };
    let mut streams: Vec<Events> = (0..3)
        .map(|i| app.sse(&format!("viewer-{i}"), None, &[]))
        .collect();
    for stream in &mut streams {
        stream.next_event().await;
    }

    shutdown.trigger();
    for stream in &mut streams {
        let last = stream.next_within(SEC).await.expect("a last event at once");
        assert_eq!(field(&last, "event"), Some("shutdown"));
        assert_eq!(field(&last, "data"), Some(r#"{"retry_ms":1000}"#));
        assert_eq!(field(&last, "retry"), Some("1000"));
        assert_eq!(field(&last, "id"), None, "the client keeps its last id");
        assert!(stream.body.frame().await.is_none(), "then the stream ends");
    }
    drop(streams);
    assert_eq!(app.live.streams().get(), 0);

    // A stream opened after the signal (on a connection already open) is
    // told at once.
    let mut late = app.sse("late", None, &[]);
    let first = late.next_within(SEC).await.expect("an event at once");
    assert_eq!(field(&first, "event"), Some("shutdown"));
    assert!(late.body.frame().await.is_none());
}
