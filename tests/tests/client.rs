//! herdsman-client against real servers on 127.0.0.1: the demo's `Live`
//! (SSE, the polling fallback when the `sse` switch is off, and the way
//! back), plain axum `Sse`, a Python `sse-starlette` server, and raw TCP
//! servers that misbehave (a drop mid-event, garbage, a stall, 503 with
//! `Retry-After`).
//!
//! The Python test is ignored unless its venv exists: create it with
//!
//! ```text
//! python3 -m venv target/sse-venv
//! target/sse-venv/bin/python -m pip install sse-starlette uvicorn
//! cargo test -p herdsman-tests --test client -- --ignored python
//! ```
//!
//! (`.ci/run` does; `SSE_PYTHON` names another interpreter).

use std::{
    collections::HashSet,
    convert::Infallible,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use active_users::{with_demo_classes, Demo, Options};
use axum::{
    http::HeaderMap,
    response::sse::{Event, Sse},
    routing::get,
    Router,
};
use bytes::Bytes;
use futures_util::{stream, Stream};
use herdsman::config::{Config, Environment};
use herdsman_client::{Client, Lagged, Subscription, Transport, Update};
use herdsman_tests::{bounded, bounded_by, Server};
use http::{header, Request};
use http_body_util::Full;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    time::Instant,
};

async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *stream).poll_next(cx)).await
}

async fn update(sub: &mut Subscription) -> Update {
    let item: Option<Result<Update, Lagged>> = next(sub).await;
    item.expect("the subscription is open").expect("no lag")
}

/// The next update whose data contains `text`, failing on any other.
async fn update_with(sub: &mut Subscription, text: &str) -> Update {
    let u = update(sub).await;
    assert!(u.data().contains(text), "{text:?} in {:?}", u.data());
    u
}

/// The demo with a short poll interval (the polling fallback polls at it).
async fn demo() -> (Demo, Server) {
    let mut config = Config::profile(Environment::Development);
    config.registry.class.interval = Duration::from_millis(500);
    config.registry.class.linger = Duration::from_secs(60);
    let options = Options {
        latency: Duration::from_millis(5),
        fail_rate: 0.0,
        churn: None,
        upstream_url: None,
    };
    let demo = Demo::build(
        Environment::Development,
        with_demo_classes(config),
        &options,
    )
    .expect("a valid configuration");
    let server = Server::start_with_connect_info(demo.router()).await;
    (demo, server)
}

async fn add_card(server: &Server, card: &str) {
    let req = Request::post(server.url("/api/boards/b/cards"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(format!("{{\"card\":\"{card}\"}}"))))
        .unwrap();
    let reply = herdsman_tests::client().request(req).await.unwrap();
    assert_eq!(reply.status(), http::StatusCode::CREATED);
}

#[tokio::test]
async fn against_live_twenty_subscribers_share_one_stream_fall_back_to_polling_and_return() {
    // The switch's 503 asks for 15 s before the stream is tried again.
    bounded_by(Duration::from_secs(40), async {
        let (demo, server) = demo().await;
        let client = Client::builder()
            .with_probe_every(Duration::from_millis(500))
            .build();
        let url = server.url("/sse/boards/b/events");
        let mut subs: Vec<_> = (0..20).map(|_| client.subscribe(&url).unwrap()).collect();
        for sub in &mut subs {
            assert_eq!(update(sub).await.transport(), Transport::Sse);
        }
        assert_eq!(
            demo.live.streams().get(),
            1,
            "one stream for 20 subscribers"
        );

        add_card(&server, "one").await;
        let mut ids = HashSet::new();
        for sub in &mut subs {
            let u = update_with(sub, "one").await;
            assert_eq!(u.transport(), Transport::Sse);
            ids.insert(u.id().unwrap().to_owned());
        }

        demo.live.sse_toggle().set(false);
        add_card(&server, "two").await;
        for sub in &mut subs {
            let u = update_with(sub, "two").await;
            assert_eq!(u.transport(), Transport::Polling);
            ids.insert(u.id().unwrap().to_owned());
        }
        assert_eq!(client.stats().fallbacks, 1);

        // The probe comes after the 503's Retry-After (15 s). Resuming at
        // the current value, the stream sends nothing until a change, and
        // the client keeps polling meanwhile.
        demo.live.sse_toggle().set(true);
        let back = Instant::now();
        while demo.live.streams().get() == 0 {
            assert!(back.elapsed() < Duration::from_secs(20), "no probe");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        add_card(&server, "three").await;
        for sub in &mut subs {
            // By the stream or a last poll, once.
            ids.insert(update_with(sub, "three").await.id().unwrap().to_owned());
        }
        assert_eq!(client.stats().returns, 1);
        add_card(&server, "four").await;
        for sub in &mut subs {
            let u = update_with(sub, "four").await;
            assert_eq!(u.transport(), Transport::Sse);
            ids.insert(u.id().unwrap().to_owned());
        }
        assert_eq!(ids.len(), 4, "one id per change: {ids:?}");
        let stats = client.stats();
        assert_eq!(
            (stats.connects, stats.returns, stats.events),
            (2, 1, 5),
            "{stats:?}"
        );

        drop(subs);
        let gone = Instant::now();
        while demo.live.streams().get() != 0 {
            assert!(
                gone.elapsed() < Duration::from_secs(5),
                "the stream stays open"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// A plain axum `Sse` route: three events with ids counting on from
/// `Last-Event-ID`, then the end of the stream.
async fn counting(headers: HeaderMap) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok()?.parse::<u32>().ok())
        .unwrap_or(0);
    let events = (last + 1..=last + 3).map(|n| {
        Ok(Event::default()
            .id(n.to_string())
            .event("count")
            .data(format!("line {n}\nof two"))
            .retry(Duration::from_millis(50)))
    });
    Sse::new(stream::iter(events))
}

/// Reads updates until id `n`, checking that ids count on from 2 (the
/// first was read), once each.
async fn count_to(sub: &mut Subscription, n: u32, event_type: &str) {
    for expected in 2..=n {
        let u = update(sub).await;
        assert_eq!(u.id(), Some(expected.to_string().as_str()), "{u:?}");
        assert_eq!(u.event_type(), event_type);
    }
}

#[tokio::test]
async fn against_plain_axum_sse_the_stream_resumes_from_the_last_event_id() {
    bounded(async {
        let server = Server::start(Router::new().route("/events", get(counting))).await;
        let client = Client::new();
        let mut sub = client.subscribe(&server.url("/events")).unwrap();
        let first = update(&mut sub).await;
        assert_eq!((first.id(), first.data()), (Some("1"), "line 1\nof two"));
        count_to(&mut sub, 9, "count").await;
        assert!(
            client.stats().reconnects >= 2,
            "three events per connection"
        );
    })
    .await;
}

/// `SSE_PYTHON`, or the venv `.ci/run` creates.
fn python() -> PathBuf {
    std::env::var_os("SSE_PYTHON").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/sse-venv/bin/python"),
        PathBuf::from,
    )
}

/// The Python server, killed when dropped.
struct Python(Child);

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
#[ignore = "needs the sse-starlette venv: see the module docs"]
async fn against_python_sse_starlette_crlf_events_resume_from_the_last_event_id() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/sse_server.py");
    let mut child = Command::new(python())
        .arg(script)
        .stdout(Stdio::piped())
        .spawn()
        .expect("the venv's python (see the module docs)");
    let mut port = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let _python = Python(child);
    bounded(async {
        let client = Client::new();
        let url = format!("http://127.0.0.1:{}/events", port.trim());
        let mut sub = client.subscribe(&url).unwrap();
        let first = update(&mut sub).await;
        assert_eq!((first.id(), first.data()), (Some("1"), "{\"n\": 1}"));
        count_to(&mut sub, 9, "tick").await;
    })
    .await;
}

/// A TCP server the test scripts by hand, one accepted connection at a
/// time (each answer closes its connection, so none is reused).
struct Raw {
    addr: std::net::SocketAddr,
    conns: mpsc::UnboundedReceiver<Conn>,
}

struct Conn {
    head: String,
    at: Instant,
    sock: TcpStream,
}

const STREAM_HEAD: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";

impl Raw {
    async fn start() -> Raw {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, conns) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0];
                    if sock.read(&mut byte).await.unwrap_or(0) == 0 {
                        break;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_lowercase();
                let conn = Conn {
                    head,
                    at: Instant::now(),
                    sock,
                };
                if tx.send(conn).is_err() {
                    break;
                }
            }
        });
        Raw { addr, conns }
    }

    fn url(&self) -> String {
        format!("http://{}/events", self.addr)
    }

    async fn accept(&mut self) -> Conn {
        self.conns.recv().await.expect("the server runs")
    }
}

impl Conn {
    async fn write(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).await.unwrap();
        self.sock.flush().await.unwrap();
    }

    fn last_event_id(&self) -> Option<&str> {
        let line = self
            .head
            .lines()
            .find(|l| l.starts_with("last-event-id:"))?;
        Some(line["last-event-id:".len()..].trim())
    }
}

#[tokio::test]
async fn a_connection_dropped_mid_event_loses_only_the_unfinished_event() {
    bounded(async {
        let mut raw = Raw::start().await;
        let client = Client::new();
        let mut sub = client.subscribe(&raw.url()).unwrap();
        let mut conn = raw.accept().await;
        conn.write(STREAM_HEAD.as_bytes()).await;
        conn.write(b"retry: 10\nid: 1\ndata: one\n\nid: 2\ndata: tw")
            .await;
        assert_eq!(update(&mut sub).await.data(), "one");
        drop(conn);
        let mut conn = raw.accept().await;
        assert_eq!(conn.last_event_id(), Some("1"));
        conn.write(STREAM_HEAD.as_bytes()).await;
        conn.write(b"id: 2\ndata: two\n\n").await;
        let u = update(&mut sub).await;
        assert_eq!((u.id(), u.data()), (Some("2"), "two"));
    })
    .await;
}

#[tokio::test]
async fn garbage_in_the_stream_or_instead_of_http_is_survived() {
    bounded(async {
        let mut raw = Raw::start().await;
        let client = Client::builder()
            .with_retry(Duration::from_millis(10))
            .build();
        let mut sub = client.subscribe(&raw.url()).unwrap();
        let mut conn = raw.accept().await;
        conn.write(STREAM_HEAD.as_bytes()).await;
        conn.write(b"\x00\x01\xff\xfe no field here \x80\x81\n\xEF\xBB\xBF\n\n")
            .await;
        conn.write(b"id: 1\ndata: ok\n\n").await;
        assert_eq!(update(&mut sub).await.data(), "ok");
        drop(conn);
        let mut conn = raw.accept().await;
        conn.write(b"NOT HTTP AT ALL\r\n\r\n").await;
        drop(conn);
        let mut conn = raw.accept().await;
        assert_eq!(conn.last_event_id(), Some("1"));
        conn.write(STREAM_HEAD.as_bytes()).await;
        conn.write(b"id: 2\ndata: fine\n\n").await;
        assert_eq!(update(&mut sub).await.data(), "fine");
    })
    .await;
}

#[tokio::test]
async fn a_stalled_stream_is_dropped_at_the_read_timeout_and_resumed() {
    bounded(async {
        let mut raw = Raw::start().await;
        let client = Client::builder()
            .with_read_timeout(Duration::from_millis(300))
            .with_retry(Duration::from_millis(10))
            .build();
        let mut sub = client.subscribe(&raw.url()).unwrap();
        let mut stalled = raw.accept().await;
        stalled.write(STREAM_HEAD.as_bytes()).await;
        stalled.write(b"id: 1\ndata: one\n\n").await;
        update(&mut sub).await;
        let since = Instant::now();
        // The stalled connection stays open; the client gives up on it.
        let conn = raw.accept().await;
        assert!(conn.at - since >= Duration::from_millis(300));
        assert_eq!(conn.last_event_id(), Some("1"));
        drop(stalled);
    })
    .await;
}

#[tokio::test]
async fn a_503_with_retry_after_is_waited_out() {
    bounded(async {
        let mut raw = Raw::start().await;
        // No polling URL for /events: the client tries the stream again.
        let client = Client::builder().with_retry(Duration::from_millis(10)).build();
        let _sub = client.subscribe(&raw.url()).unwrap();
        let mut conn = raw.accept().await;
        let at = conn.at;
        conn.write(
            b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await;
        drop(conn);
        let again = raw.accept().await;
        assert!(again.at - at >= Duration::from_secs(1), "{:?}", again.at - at);
        assert!(again.at - at < Duration::from_secs(2));
    })
    .await;
}
