//! The demo app end to end: a real server on 127.0.0.1:0, a real client.
//!
//! Intervals are set to a minute so that no poll happens on its own during
//! a test; changes are pushed with invalidations, as a card write does.

use std::time::Duration;

use active_users::{with_demo_classes, Demo, Endpoint, Options};
use bytes::Bytes;
use herdsman::{
    config::{Config, Environment},
    event::Invalidation,
};
use herdsman_tests::{
    bounded, client, client_from, empty, get, replies, request, send_all, wait_until, HttpClient,
    Server,
};
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};

struct App {
    demo: Demo,
    server: Server,
}

impl App {
    async fn start(environment: Environment, tweak: impl FnOnce(&mut Config)) -> App {
        let mut config = Config::profile(environment);
        config.registry.class.interval = Duration::from_secs(60);
        config.registry.class.linger = Duration::from_secs(120);
        config.admin.token = Some("a-long-enough-admin-token".to_owned());
        tweak(&mut config);
        let options = Options {
            latency: Duration::from_millis(20),
            fail_rate: 0.0,
            churn: None,
            upstream_url: None,
        };
        let demo = Demo::build(environment, with_demo_classes(config), &options)
            .expect("the demo's configuration is valid");
        let server = Server::start_with_connect_info(demo.router()).await;
        App { demo, server }
    }

    /// The demo in development, with the test defaults.
    async fn dev() -> App {
        App::start(Environment::Development, |_| {}).await
    }

    fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    fn calls(&self, endpoint: Endpoint) -> u64 {
        self.demo.upstream.calls(endpoint)
    }
}

/// One SSE stream, read event by event.
struct Events {
    body: hyper::body::Incoming,
    buf: String,
}

impl Events {
    async fn open(url: &str, last_event_id: Option<&str>) -> (http::response::Parts, Events) {
        Events::open_as(url, last_event_id, None).await
    }

    /// Opens a stream as the caller `Authorization: Bearer <who>`.
    async fn open_as(
        url: &str,
        last_event_id: Option<&str>,
        who: Option<&str>,
    ) -> (http::response::Parts, Events) {
        Events::open_from(&client(), url, last_event_id, who).await
    }

    /// Opens a stream with `client`, as the caller `who`.
    async fn open_from(
        client: &HttpClient,
        url: &str,
        last_event_id: Option<&str>,
        who: Option<&str>,
    ) -> (http::response::Parts, Events) {
        let mut req = request(Method::GET, url).header(header::ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        if let Some(who) = who {
            req = req.header(header::AUTHORIZATION, format!("Bearer {who}"));
        }
        let response = client.request(empty(req)).await.expect("connect");
        let (parts, body) = response.into_parts();
        (
            parts,
            Events {
                body,
                buf: String::new(),
            },
        )
    }

    /// The next block (event or comment), without its blank line.
    async fn next_block(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block = self.buf[..end].to_owned();
                self.buf.drain(..end + 2);
                return block;
            }
            let frame = self
                .body
                .frame()
                .await
                .expect("the stream is open")
                .expect("a frame");
            if let Ok(data) = frame.into_data() {
                self.buf
                    .push_str(std::str::from_utf8(&data).expect("UTF-8"));
            }
        }
    }

    /// The next event (comments skipped), as its field lines.
    async fn next_event(&mut self) -> Vec<(String, String)> {
        loop {
            let block = self.next_block().await;
            let fields: Vec<(String, String)> = block
                .lines()
                .filter(|l| !l.starts_with(':'))
                .map(|l| {
                    let (name, value) = l.split_once(':').unwrap_or((l, ""));
                    (
                        name.to_owned(),
                        value.strip_prefix(' ').unwrap_or(value).to_owned(),
                    )
                })
                .collect();
            if !fields.is_empty() {
                return fields;
            }
        }
    }
}

/// `POST url` with a JSON body.
async fn post_json(url: &str, json: &'static str) -> http::Response<hyper::body::Incoming> {
    client()
        .request(
            Request::post(url)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(json)))
                .unwrap(),
        )
        .await
        .unwrap()
}

fn field<'a>(event: &'a [(String, String)], name: &str) -> Option<&'a str> {
    event
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body).expect("a JSON body")
}

#[tokio::test]
async fn five_hundred_concurrent_gets_cause_one_upstream_call() {
    bounded(async {
        let app = App::dev().await;
        let client = client();
        let url = app.url("/api/active-users");
        let calls = send_all(&client, (0..500).map(|_| get(&url)));
        let replies = replies(calls).await;
        assert!(replies.iter().all(|r| r.status == StatusCode::OK));
        let first = json(&replies[0].body);
        assert_eq!(first["count"], 4);
        assert!(replies.iter().all(|r| r.body == replies[0].body));
        assert_eq!(app.calls(Endpoint::ActiveUsers), 1);
    })
    .await;
}

#[tokio::test]
async fn two_hundred_sse_subscribers_cost_one_upstream_call_per_poll() {
    bounded(async {
        let app = App::dev().await;
        let url = app.url("/sse/active-users");
        let mut streams = Vec::new();
        for i in 0..200 {
            // Distinct callers (the per-caller cap is 6 streams); the class
            // is public, so they all share one key.
            let (parts, events) = Events::open_as(&url, None, Some(&format!("viewer{i}"))).await;
            assert_eq!(parts.status, StatusCode::OK);
            streams.push(events);
        }
        let mut ids = Vec::new();
        for events in &mut streams {
            let event = events.next_event().await;
            ids.push(field(&event, "id").expect("an id").to_owned());
        }
        assert!(ids.iter().all(|id| *id == ids[0]), "one value, one id");
        assert_eq!(app.calls(Endpoint::ActiveUsers), 1);

        // One change, pushed: one more upstream call reaches all 200.
        app.demo.upstream.set_users(["zoe"]);
        app.demo
            .coordinator
            .invalidate(&Invalidation::Path("/api/active-users".into()));
        for events in &mut streams {
            let event = events.next_event().await;
            assert_ne!(field(&event, "id"), Some(ids[0].as_str()));
            let data: serde_json::Value =
                serde_json::from_str(field(&event, "data").unwrap()).unwrap();
            assert_eq!(data["users"], serde_json::json!(["zoe"]));
        }
        assert_eq!(app.calls(Endpoint::ActiveUsers), 2);
    })
    .await;
}

#[tokio::test]
async fn sse_frames_carry_the_content_id_the_interval_and_the_json() {
    bounded(async {
        let app = App::dev().await;
        let (parts, mut events) = Events::open(&app.url("/sse/active-users"), None).await;
        assert_eq!(parts.headers[header::CONTENT_TYPE], "text/event-stream");
        assert_eq!(parts.headers[header::CACHE_CONTROL], "no-store");
        let event = events.next_event().await;
        let id = field(&event, "id").unwrap();
        assert_eq!(id.len(), 16);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(field(&event, "retry"), Some("60000"));
        let data: serde_json::Value = serde_json::from_str(field(&event, "data").unwrap()).unwrap();
        assert_eq!(data["count"], 4);
    })
    .await;
}

#[tokio::test]
async fn an_idle_stream_gets_keep_alive_comments() {
    bounded(async {
        let mut app = App::dev().await;
        app.demo.live = app
            .demo
            .live
            .clone()
            .with_keep_alive(Duration::from_millis(20));
        let server = Server::start_with_connect_info(app.demo.router()).await;
        let (_, mut events) = Events::open(&server.url("/sse/active-users"), None).await;
        let _first = events.next_event().await;
        assert_eq!(events.next_block().await, ": keep-alive");
    })
    .await;
}

#[tokio::test]
async fn last_event_id_skips_the_initial_event_when_the_client_is_current() {
    bounded(async {
        let app = App::dev().await;
        let url = app.url("/sse/boards/demo/events");
        let (_, mut first) = Events::open(&url, None).await;
        let id = field(&first.next_event().await, "id").unwrap().to_owned();

        // Reconnecting with the current id: nothing until the next change.
        let (_, mut current) = Events::open(&url, Some(&id)).await;
        // Untrusted garbage, or an id of something else, is ignored: the
        // initial event comes.
        let (_, mut garbage) = Events::open(&url, Some("1; event: x")).await;
        assert_eq!(field(&garbage.next_event().await, "id"), Some(id.as_str()));
        let (_, mut other) = Events::open(&url, Some("1")).await;
        assert_eq!(field(&other.next_event().await, "id"), Some(id.as_str()));

        let reply = post_json(&app.url("/api/boards/demo/cards"), r#"{"card":"ship it"}"#).await;
        let status = reply.status();
        let body = reply.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(status, StatusCode::CREATED, "{body:?}");
        let event = current.next_event().await;
        assert!(
            field(&event, "data").unwrap().contains("ship it"),
            "the first event it gets is the change"
        );
        let changed = field(&event, "id").unwrap();
        assert_ne!(changed, id);
        assert_eq!(field(&first.next_event().await, "id"), Some(changed));
    })
    .await;
}

#[tokio::test]
async fn polling_answers_carry_an_etag_and_304_when_current() {
    bounded(async {
        let app = App::dev().await;
        let client = client();
        let url = app.url("/api/active-users");
        let first = client.request(get(&url)).await.unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        let etag = first.headers()[header::ETAG].clone();
        assert_eq!(etag.len(), 18, "16 hex digits in quotes: {etag:?}");
        assert_eq!(first.headers()[header::CACHE_CONTROL], "no-cache");
        assert_eq!(first.headers()["x-poll-interval"], "60000");

        let again = client
            .request(empty(
                request(Method::GET, &url).header(header::IF_NONE_MATCH, etag.clone()),
            ))
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[header::ETAG], etag);
        assert_eq!(app.calls(Endpoint::ActiveUsers), 1);
    })
    .await;
}

#[tokio::test]
async fn fifty_users_calling_me_at_once_each_get_their_own_name() {
    bounded(async {
        let app = App::dev().await;
        let client = client();
        let url = app.url("/api/me");
        let calls = send_all(
            &client,
            (0..50).map(|i| {
                empty(
                    request(Method::GET, &url)
                        .header(header::AUTHORIZATION, format!("Bearer user{i}")),
                )
            }),
        );
        for (i, reply) in replies(calls).await.iter().enumerate() {
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(json(&reply.body)["name"], format!("user{i}"));
        }
        assert_eq!(
            app.calls(Endpoint::Me),
            50,
            "one call per user, none shared"
        );
    })
    .await;
}

#[tokio::test]
async fn injected_faults_open_the_breaker_and_the_endpoint_answers_503_with_retry_after() {
    bounded(async {
        let app = App::start(Environment::Production, |config| {
            config.breaker.consecutive_failures = Some(3);
        })
        .await;
        app.demo.upstream.set_fail_rate(1.0);
        let client = client();
        let url = app.url("/api/me");
        let me = |i: usize| {
            empty(request(Method::GET, &url).header(header::AUTHORIZATION, format!("Bearer u{i}")))
        };
        // Failing with no good value is 503 with Retry-After, whether the
        // upstream answered 500 or the open breaker answered for it.
        for i in 0..4 {
            let reply = client.request(me(i)).await.unwrap();
            assert_eq!(reply.status(), StatusCode::SERVICE_UNAVAILABLE);
            let after: u64 = reply.headers()[header::RETRY_AFTER]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(after >= 1);
        }
        assert_eq!(
            app.calls(Endpoint::Me),
            3,
            "the open breaker kept the 4th call away"
        );
    })
    .await;
}

#[tokio::test]
async fn admin_routes_refuse_callers_without_the_token_in_production() {
    bounded(async {
        let app = App::start(Environment::Production, |_| {}).await;
        let client = client();
        for path in [
            "/_herdsman/stats",
            "/_herdsman/metrics",
            "/_herdsman/switches",
        ] {
            let reply = client.request(get(&app.url(path))).await.unwrap();
            assert_eq!(reply.status(), StatusCode::FORBIDDEN, "{path}");
            let wrong = client
                .request(empty(
                    request(Method::GET, &app.url(path))
                        .header(header::AUTHORIZATION, "Bearer not-the-admin-token"),
                ))
                .await
                .unwrap();
            assert_eq!(wrong.status(), StatusCode::FORBIDDEN, "{path}");
        }
        let flip = post_json(&app.url("/_herdsman/switches/sse"), r#"{"enabled":false}"#).await;
        assert_eq!(flip.status(), StatusCode::FORBIDDEN);
        assert!(app.demo.live.sse_toggle().is_on());
        let fault = post_json(&app.url("/_demo/upstream"), r#"{"fail_rate":1.0}"#).await;
        assert_eq!(fault.status(), StatusCode::FORBIDDEN);
        assert_eq!(app.demo.upstream.fail_rate(), 0.0);

        let ok = client
            .request(empty(
                request(Method::GET, &app.url("/_herdsman/stats"))
                    .header(header::AUTHORIZATION, "Bearer a-long-enough-admin-token"),
            ))
            .await
            .unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        let body = ok.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(json(&body)["environment"], "production");
    })
    .await;
}

#[tokio::test]
async fn the_stats_document_counts_client_requests_against_real_upstream_calls() {
    bounded(async {
        let app = App::dev().await;
        let client = client();
        let url = app.url("/api/active-users");
        replies(send_all(&client, (0..20).map(|_| get(&url)))).await;
        let reply = client
            .request(get(&app.url("/_herdsman/stats")))
            .await
            .unwrap();
        assert_eq!(
            reply.status(),
            StatusCode::OK,
            "open on loopback in development"
        );
        let doc = json(&reply.into_body().collect().await.unwrap().to_bytes());
        let users = &doc["endpoints"]["active-users"];
        assert_eq!(users["upstream_calls"], app.calls(Endpoint::ActiveUsers));
        assert_eq!(users["upstream_calls"], 1);
        // 20 client polls, all answered by the one poll loop, whose own
        // fetch is a poll, not a client request.
        assert_eq!(users["requests"], 20);
        assert_eq!(users["saved"]["poll_loop"], 20);
        assert_eq!(users["forwarded"], 0);
        assert_eq!(users["polls"], 1);
        // The development profile switches breakers off.
        assert_eq!(users["breaker"], "off");
        assert!(doc["switches"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "sse"));
    })
    .await;
}

/// `GET /_herdsman/stats` (open on loopback in development).
async fn stats_document(app: &App) -> serde_json::Value {
    let reply = client()
        .request(get(&app.url("/_herdsman/stats")))
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    json(&reply.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn one_get_is_one_client_request() {
    bounded(async {
        let app = App::dev().await;
        let reply = client()
            .request(get(&app.url("/api/active-users")))
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::OK);
        let doc = stats_document(&app).await;
        let users = &doc["endpoints"]["active-users"];
        assert_eq!(users["requests"], 1, "{users}");
        assert_eq!(users["saved"]["poll_loop"], 1);
        assert_eq!(
            (users["upstream_calls"].as_u64(), users["polls"].as_u64()),
            (Some(1), Some(1))
        );
    })
    .await;
}

#[tokio::test]
async fn every_configured_class_is_listed_at_zero_before_any_traffic() {
    bounded(async {
        let app = App::dev().await;
        let doc = stats_document(&app).await;
        let endpoints = doc["endpoints"].as_object().unwrap();
        let mut names: Vec<&str> = endpoints.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["active-users", "board-events", "default", "me"]);
        for (name, e) in endpoints {
            assert_eq!(e["requests"], 0, "{name}");
            assert_eq!(e["upstream_calls"], 0, "{name}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_switched_off_breaker_shows_off_and_follows_its_switch() {
    bounded(async {
        let app = App::dev().await;
        let breaker = |doc: &serde_json::Value| doc["endpoints"]["me"]["breaker"].clone();
        assert_eq!(
            breaker(&stats_document(&app).await),
            "off",
            "off in development"
        );

        let on = post_json(
            &app.url("/_herdsman/switches/breaker.me"),
            r#"{"enabled":true}"#,
        )
        .await;
        assert_eq!(on.status(), StatusCode::OK);
        assert_eq!(breaker(&stats_document(&app).await), "closed");

        let off = post_json(
            &app.url("/_herdsman/switches/breaker.me"),
            r#"{"enabled":false}"#,
        )
        .await;
        assert_eq!(off.status(), StatusCode::OK);
        assert_eq!(breaker(&stats_document(&app).await), "off");
    })
    .await;
}

#[tokio::test]
async fn streams_over_the_per_caller_cap_are_rejections_not_errors() {
    bounded(async {
        let app = App::dev().await;
        let url = app.url("/sse/active-users");
        let mut open = Vec::new();
        // `registry.max_subscribers_per_caller`: 8 by default.
        for _ in 0..8 {
            let (parts, events) = Events::open_as(&url, None, Some("greedy")).await;
            assert_eq!(parts.status, StatusCode::OK);
            open.push(events);
        }
        for _ in 0..30 {
            let (parts, _) = Events::open_as(&url, None, Some("greedy")).await;
            assert_eq!(parts.status, StatusCode::TOO_MANY_REQUESTS);
        }
        let stats = app.demo.coordinator.stats();
        stats.evaluate();
        assert!(
            stats.active_alerts().is_empty(),
            "{:?}",
            stats.active_alerts()
        );
        let doc = stats_document(&app).await;
        let users = &doc["endpoints"]["active-users"];
        assert_eq!(users["requests"], 38);
        assert_eq!(users["errors"], 0);
        assert_eq!(users["rejected"], 30);
        assert_eq!(
            doc["snapshot"]["endpoints"]["active-users"]["rejections"]["subscribers_per_caller"],
            30
        );
        assert_eq!(users["saved"]["poll_loop"], 8);
        assert_eq!(users["forwarded"], 30);
    })
    .await;
}

#[tokio::test]
async fn streams_with_a_new_credential_each_are_capped_per_client_address() {
    bounded(async {
        let app = App::dev().await;
        let url = app.url("/sse/active-users");
        // `registry.max_subscribers_per_address`: 256 by default. Every
        // stream sends new credentials, as a client dodging a per-caller
        // cap would; all come from 127.0.0.1.
        let mut open = Vec::new();
        for i in 0..256 {
            let who = format!("random-{i}");
            let (parts, events) = Events::open_as(&url, None, Some(&who)).await;
            assert_eq!(parts.status, StatusCode::OK, "stream {i}");
            open.push(events);
        }
        for i in 256..266 {
            let who = format!("random-{i}");
            let (parts, _) = Events::open_as(&url, None, Some(&who)).await;
            assert_eq!(parts.status, StatusCode::TOO_MANY_REQUESTS, "stream {i}");
        }
        // Another client address is served, and all share one poll loop.
        let neighbour = client_from("127.0.0.2".parse().unwrap());
        let (parts, mut events) =
            Events::open_from(&neighbour, &url, None, Some("neighbour")).await;
        assert_eq!(parts.status, StatusCode::OK);
        assert!(field(&events.next_event().await, "id").is_some());
        assert_eq!(app.calls(Endpoint::ActiveUsers), 1);
    })
    .await;
}

#[tokio::test]
async fn switching_sse_off_ends_open_streams_and_refuses_new_ones() {
    bounded(async {
        let app = App::dev().await;
        let url = app.url("/sse/active-users");
        let (_, mut events) = Events::open(&url, None).await;
        let _first = events.next_event().await;

        let flip = post_json(&app.url("/_herdsman/switches/sse"), r#"{"enabled":false}"#).await;
        assert_eq!(flip.status(), StatusCode::OK);
        // The open stream ends.
        while let Some(frame) = events.body.frame().await {
            frame.expect("a clean end");
        }
        let (parts, _) = Events::open(&url, None).await;
        assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(parts.headers.contains_key(header::RETRY_AFTER));
        // Polling still works.
        let reply = client()
            .request(get(&app.url("/api/active-users")))
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn after_a_failed_poll_the_endpoint_serves_the_last_good_value_stale() {
    bounded(async {
        let app = App::dev().await;
        let client = client();
        let url = app.url("/api/active-users");
        let good = client.request(get(&url)).await.unwrap();
        assert_eq!(good.status(), StatusCode::OK);
        // A subscriber keeps the loop polling: an invalidation ends a loop
        // nobody listens to instead of polling it.
        let (_, mut events) = Events::open(&app.url("/sse/active-users"), None).await;
        let _first = events.next_event().await;

        app.demo.upstream.set_fail_rate(1.0);
        app.demo
            .coordinator
            .invalidate(&Invalidation::Path("/api/active-users".into()));
        let registry = app.demo.coordinator.registry();
        wait_until("the failed poll is published", || {
            registry.hooks().iter().any(|h| h.errors > 0)
        })
        .await;

        let stale = client.request(get(&url)).await.unwrap();
        assert_eq!(stale.status(), StatusCode::OK);
        assert_eq!(stale.headers()["x-herdsman-stale"], "1");
        assert_eq!(
            stale.headers()["cache-status"],
            "herdsman; fwd=stale; fwd-status=500"
        );
        assert!(!stale.headers().contains_key(header::ETAG));
        let body = stale.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(json(&body)["count"], 4, "the last good value");
        assert_eq!(app.calls(Endpoint::ActiveUsers), 2);
    })
    .await;
}

#[tokio::test]
async fn a_card_added_while_the_boards_loop_was_stopped_is_no_304() {
    // The issue's reproduction: with no linger each poll starts the key's
    // loop again, and the ETag must still tell the new card.
    bounded(async {
        let app = App::start(Environment::Development, |config| {
            config.registry.class.linger = Duration::ZERO;
        })
        .await;
        let client = client();
        let url = app.url("/api/boards/x/events");
        let first = client.request(get(&url)).await.unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        let etag = first.headers()[header::ETAG].clone();

        let reply = post_json(&app.url("/api/boards/x/cards"), r#"{"card":"ship it"}"#).await;
        assert_eq!(reply.status(), StatusCode::CREATED);
        let again = client
            .request(empty(
                request(Method::GET, &url).header(header::IF_NONE_MATCH, etag.clone()),
            ))
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::OK, "the body changed");
        assert_ne!(again.headers()[header::ETAG], etag);
        let body = again.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("ship it"));

        // An SSE client resuming with the old id gets the card.
        let sse = app.url("/sse/boards/x/events");
        let old_id = etag.to_str().unwrap().trim_matches('"').to_owned();
        let (_, mut resumed) = Events::open(&sse, Some(&old_id)).await;
        let event = resumed.next_event().await;
        assert!(field(&event, "data").unwrap().contains("ship it"));
    })
    .await;
}

#[tokio::test]
async fn the_stats_document_counts_what_the_maps_hold_until_they_drain() {
    bounded(async {
        let app = App::start(Environment::Development, |config| {
            config.registry.class.linger = Duration::from_millis(50);
        })
        .await;
        let (_, mut events) = Events::open(&app.url("/sse/active-users"), None).await;
        events.next_event().await;
        let sizes = stats_document(&app).await["sizes"].clone();
        assert_eq!(sizes["sse_streams"], 1, "{sizes}");
        assert_eq!(sizes["registry_keys"], 1, "{sizes}");
        assert_eq!(sizes["registry_subscribers"], 1, "{sizes}");
        assert_eq!(sizes["cache_entries"], 1, "{sizes}");

        drop(events);
        loop {
            let sizes = stats_document(&app).await["sizes"].clone();
            let drained = ["sse_streams", "registry_keys", "registry_subscribers"]
                .iter()
                .all(|name| sizes[name] == 0);
            if drained {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn the_upstream_failure_rate_changes_at_run_time_through_an_admin_route() {
    bounded(async {
        let app = App::dev().await;
        let url = app.url("/_demo/upstream");
        let reply = post_json(&url, r#"{"fail_rate": 1.0}"#).await;
        assert_eq!(reply.status(), StatusCode::OK);
        let body = json(&reply.into_body().collect().await.unwrap().to_bytes());
        assert_eq!(body, serde_json::json!({"fail_rate": 1.0, "was": 0.0}));
        assert_eq!(app.demo.upstream.fail_rate(), 1.0);

        let reply = post_json(&url, r#"{"fail_rate": 1.5}"#).await;
        assert_eq!(reply.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(app.demo.upstream.fail_rate(), 1.0);
    })
    .await;
}
