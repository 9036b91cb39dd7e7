//! The server against slow and greedy clients: each deadline and limit of
//! `[server]`, over in-memory connections with paused time (a deadline is
//! met or missed in virtual seconds, never waited for), and the client
//! address over a real socket.
//!
//! Every server here is built by `Server::from_settings` from the test
//! profile's `[server]` section (10 s head, 30 s body, 60 s idle, 1 s
//! shutdown), changed where a test needs it.

mod support;

use std::{
    convert::Infallible,
    future::{Future, IntoFuture},
    io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::{ConnectInfo, Request},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    routing::{get, post},
    Router,
};
use futures_util::stream;
use herdsman::{
    config::{Config, Environment, ServerSettings},
    http::ClientAddr,
};
use herdsman_axum::{
    serve::{BodyTimeout, HeaderTimeout},
    Server, KEEP_ALIVE,
};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::settle;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, DuplexStream},
    sync::{mpsc, oneshot, Notify},
    task::JoinHandle,
    time::{self, Instant},
};

const PEER: &str = "192.0.2.10:40000";

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The test profile's `[server]` settings, changed by `edit`.
fn server(edit: impl FnOnce(&mut ServerSettings)) -> Server {
    let mut settings = Config::profile(Environment::Test).server;
    edit(&mut settings);
    Server::from_settings(&settings).unwrap()
}

/// `GET /` answers "ok"; `POST /echo` reads its body whole; `GET /late`
/// waits 40 s before reading it; `GET /who` names the client.
fn app() -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/echo", post(echo))
        .route("/late", post(late))
        .route("/who", get(who))
}

async fn echo(body: Bytes) -> Bytes {
    body
}

async fn late(req: Request) -> Response {
    time::sleep(secs(40)).await;
    match req.into_body().collect().await {
        Ok(body) => body.to_bytes().into_response(),
        Err(err) => err.to_string().into_response(),
    }
}

async fn who(ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request) -> String {
    let client = req.extensions().get::<ClientAddr>().map(|c| c.0);
    format!("peer={peer} client={client:?}")
}

// -------------------------------------------------------------- the client

/// A raw HTTP/1 client at the other end of an in-memory connection.
struct Client {
    io: DuplexStream,
    /// What the server's `serve_connection` returned.
    server: JoinHandle<Result<(), axum::BoxError>>,
    read: Vec<u8>,
}

impl Client {
    fn connect(server: &Server, app: Router) -> Client {
        Self::connect_from(server, app, PEER)
    }

    fn connect_from(server: &Server, app: Router, peer: &str) -> Client {
        let (io, theirs) = tokio::io::duplex(64 * 1024);
        let (server, peer) = (server.clone(), peer.parse().unwrap());
        let server = tokio::spawn(async move { server.serve_connection(theirs, peer, app).await });
        Client {
            io,
            server,
            read: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &str) -> io::Result<()> {
        self.io.write_all(bytes.as_bytes()).await
    }

    /// Reads until the bytes read hold `needle`; `None` at the end of the
    /// connection.
    async fn read_until(&mut self, needle: &str) -> Option<String> {
        loop {
            if let Some(at) = find(&self.read, needle.as_bytes()) {
                let rest = self.read.split_off(at + needle.len());
                let text = String::from_utf8(std::mem::replace(&mut self.read, rest)).unwrap();
                return Some(text);
            }
            let mut buf = [0; 4096];
            match self.io.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.read.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// One response with a `content-length`: its head and its body.
    async fn response(&mut self) -> (String, String) {
        let head = self.read_until("\r\n\r\n").await.expect("a response");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |n| n.parse().unwrap());
        while self.read.len() < length {
            let mut buf = [0; 4096];
            let n = self.io.read(&mut buf).await.unwrap();
            assert!(n > 0, "the body was cut");
            self.read.extend_from_slice(&buf[..n]);
        }
        let rest = self.read.split_off(length);
        let body = String::from_utf8(std::mem::replace(&mut self.read, rest)).unwrap();
        (head, body)
    }

    /// Waits (in virtual time) for the server to close the connection,
    /// and says when it did.
    async fn closed(&mut self) -> Instant {
        let mut buf = [0; 4096];
        while let Ok(n) = self.io.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        Instant::now()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `future`, or a panic naming what did not happen within `limit` of
/// virtual time.
async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match time::timeout(limit, future).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: not within {limit:?}"),
    }
}

/// Sends `parts` one every 4.9 s, as long as the connection takes them.
fn trickle(mut io: tokio::io::WriteHalf<DuplexStream>, parts: Vec<String>) -> JoinHandle<()> {
    tokio::spawn(async move {
        for part in parts {
            if io.write_all(part.as_bytes()).await.is_err() {
                return;
            }
            time::sleep(Duration::from_millis(4900)).await;
        }
        // Keep the connection open: the server must end it.
        std::future::pending::<()>().await;
    })
}

fn header_lines(n: usize) -> Vec<String> {
    let mut lines = vec!["GET / HTTP/1.1\r\n".to_owned()];
    lines.extend((0..n).map(|i| format!("x-slow-{i}: {i}\r\n")));
    lines
}

// ------------------------------------------------------------ header reads

#[tokio::test(start_paused = true)]
async fn a_connection_that_sends_nothing_is_closed_by_the_header_read_timeout() {
    let start = Instant::now();
    let mut client = Client::connect(&server(|_| {}), app());
    let closed = within(secs(120), "closed", client.closed()).await;
    assert_eq!(closed - start, secs(10));
    let ended = client.server.await.unwrap().unwrap_err();
    assert!(ended.is::<HeaderTimeout>(), "{ended}");
}

#[tokio::test(start_paused = true)]
async fn a_head_sent_one_line_every_few_seconds_is_closed_by_the_header_read_timeout() {
    let start = Instant::now();
    let client = Client::connect(&server(|_| {}), app());
    let (mut read, write) = tokio::io::split(client.io);
    // 100 lines, one every 4.9 s: 8 minutes, were it allowed.
    let sender = trickle(write, header_lines(100));
    let ended = within(secs(120), "closed", client.server).await.unwrap();
    assert!(ended.unwrap_err().is::<HeaderTimeout>());
    assert_eq!(start.elapsed(), secs(10));
    assert_eq!(read.read(&mut [0; 64]).await.unwrap(), 0, "no answer");
    sender.abort();
}

#[tokio::test(start_paused = true)]
async fn a_slow_second_head_is_closed_ten_seconds_after_its_first_byte() {
    let mut client = Client::connect(&server(|_| {}), app());
    client
        .send("GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(client.response().await.1, "ok");
    // Idle for less than the idle timeout, then a head that trickles.
    time::sleep(secs(30)).await;
    let started = Instant::now();
    let (_read, write) = tokio::io::split(client.io);
    let sender = trickle(write, header_lines(100));
    let ended = within(secs(120), "closed", client.server).await.unwrap();
    assert!(ended.unwrap_err().is::<HeaderTimeout>());
    assert_eq!(started.elapsed(), secs(10));
    sender.abort();
}

#[tokio::test(start_paused = true)]
async fn a_head_sent_whole_within_the_timeout_is_served() {
    let mut client = Client::connect(&server(|_| {}), app());
    time::sleep(Duration::from_millis(9_900)).await;
    client
        .send("GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = client.response().await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "ok");
}

// -------------------------------------------------------------- body reads

#[tokio::test(start_paused = true)]
async fn a_body_sent_one_byte_every_few_seconds_is_answered_408_at_the_body_deadline() {
    let Client { io, server, .. } = Client::connect(&server(|_| {}), app());
    let (mut read, write) = tokio::io::split(io);
    let head = "POST /echo HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\n";
    let mut parts = vec![head.to_owned()];
    parts.extend((0..100).map(|_| "x".to_owned()));
    let started = Instant::now();
    // 100 bytes, one every 4.9 s: 8 minutes, were it allowed.
    let sender = trickle(write, parts);
    let mut response = Vec::new();
    within(secs(120), "an answer", read.read_to_end(&mut response))
        .await
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("connection: close"), "{response}");
    assert!(
        response.ends_with(&BodyTimeout::default().to_string()),
        "{response}"
    );
    assert_eq!(started.elapsed(), secs(30), "answered and closed at once");
    assert!(within(secs(1), "ended", server).await.unwrap().is_ok());
    sender.abort();
}

#[tokio::test(start_paused = true)]
async fn a_handler_that_reads_late_still_gets_a_body_sent_in_time() {
    let mut client = Client::connect(&server(|_| {}), app());
    let request = "POST /late HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello";
    client.send(request).await.unwrap();
    let (head, body) = within(secs(60), "an answer", client.response()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "hello");
}

// ------------------------------------------------------------------- idle

#[tokio::test(start_paused = true)]
async fn a_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let mut client = Client::connect(&server(|_| {}), app());
    client
        .send("GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(client.response().await.1, "ok");
    let answered = Instant::now();
    let closed = within(secs(600), "closed", client.closed()).await;
    assert_eq!(closed - answered, secs(60));
    assert!(client.server.await.unwrap().is_ok(), "a normal end");
}

#[tokio::test(start_paused = true)]
async fn each_request_starts_the_idle_timeout_again() {
    let mut client = Client::connect(&server(|_| {}), app());
    for _ in 0..5 {
        client
            .send("GET / HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(client.response().await.1, "ok");
        time::sleep(secs(50)).await;
    }
    assert!(!client.server.is_finished(), "open after 250 s of use");
}

/// An event stream: an update at 90 s and at 250 s, keep-alive comments
/// every `keep_alive` in between (none if `None`).
fn events(keep_alive: Option<Duration>) -> Router {
    let handler = move || async move {
        let updates = stream::unfold(0, |n| async move {
            let wait = [90, 160].get(n)?;
            time::sleep(secs(*wait)).await;
            let event = Event::default().data(format!("update {n}"));
            Some((Ok::<_, Infallible>(event), n + 1))
        });
        let sse = Sse::new(updates);
        match keep_alive {
            Some(every) => sse
                .keep_alive(KeepAlive::new().interval(every).text("keep-alive"))
                .into_response(),
            None => sse.into_response(),
        }
    };
    Router::new().route("/events", get(handler))
}

#[tokio::test(start_paused = true)]
async fn an_event_stream_outlives_the_idle_timeout_with_its_keep_alives_and_updates() {
    let mut client = Client::connect(&server(|_| {}), events(Some(KEEP_ALIVE)));
    let opened = Instant::now();
    client
        .send("GET /events HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let head = client.read_until("\r\n\r\n").await.unwrap();
    assert!(head.contains("text/event-stream"), "{head}");
    let stream = within(secs(600), "both updates", client.read_until("update 1"))
        .await
        .expect("the stream was cut");
    assert_eq!(opened.elapsed(), secs(250));
    assert!(stream.contains("update 0"), "{stream}");
    // One every 15 s without an update (axum starts the interval again
    // after each event).
    assert_eq!(stream.matches(": keep-alive").count(), 15, "{stream}");
    assert!(!client.server.is_finished());
}

#[tokio::test(start_paused = true)]
async fn a_silent_event_stream_is_a_request_in_progress_not_an_idle_connection() {
    let mut client = Client::connect(&server(|_| {}), events(None));
    client
        .send("GET /events HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    // 160 s without a byte between the two updates.
    let stream = within(secs(600), "both updates", client.read_until("update 1"))
        .await
        .expect("the stream was cut");
    assert!(stream.contains("update 0"), "{stream}");
}

// ------------------------------------------------------------ header bytes

#[tokio::test(start_paused = true)]
async fn an_oversized_head_is_refused_431_before_it_is_read_whole() {
    let (mine, theirs) = tokio::io::duplex(1024);
    let server = server(|_| {});
    let serving = tokio::spawn(async move {
        server
            .serve_connection(theirs, PEER.parse().unwrap(), app())
            .await
    });
    let (mut read, mut write) = tokio::io::split(mine);
    // As item 1 of issue 14: one 300 KB `Host`.
    let head = format!("GET / HTTP/1.1\r\nhost: {}\r\n\r\n", "a".repeat(300_000));
    let written = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&written);
    let sender = tokio::spawn(async move {
        for chunk in head.as_bytes().chunks(512) {
            if write.write_all(chunk).await.is_err() {
                return;
            }
            counter.fetch_add(chunk.len(), Ordering::SeqCst);
        }
    });
    let mut response = Vec::new();
    within(secs(60), "closed", read.read_to_end(&mut response))
        .await
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    let written = written.load(Ordering::SeqCst);
    assert!(
        written <= 16 * 1024 + 1024,
        "the server read {written} bytes"
    );
    sender.await.unwrap();
    assert!(serving.await.unwrap().is_err());
}

#[tokio::test(start_paused = true)]
async fn a_head_under_the_limit_is_served() {
    let mut client = Client::connect(&server(|_| {}), app());
    let cookie = "c".repeat(12 * 1024);
    let request = format!("GET / HTTP/1.1\r\nhost: a\r\ncookie: {cookie}\r\n\r\n");
    client.send(&request).await.unwrap();
    assert_eq!(client.response().await.1, "ok");
}

// ------------------------------------------------------- client addresses

#[tokio::test]
async fn handlers_see_the_peer_as_connect_info_and_client_addr() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = tokio::spawn(server(|_| {}).serve(listener, app()).into_future());
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let me = stream.local_addr().unwrap();
    stream
        .write_all(b"GET /who HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(
        response.ends_with(&format!("peer={me} client=Some({me})")),
        "{response}"
    );
    serving.abort();
}

#[tokio::test(start_paused = true)]
async fn a_trusted_proxy_names_the_client_and_no_one_else_can() {
    let server = server(|s| s.trusted_proxies = vec!["10.0.0.0/8".to_owned()]);
    let request = "GET /who HTTP/1.1\r\nhost: a\r\nx-forwarded-for: 1.1.1.1, 203.0.113.9\r\n\r\n";

    let mut proxied = Client::connect_from(&server, app(), "10.0.0.1:5000");
    proxied.send(request).await.unwrap();
    let (_, body) = proxied.response().await;
    assert_eq!(body, "peer=10.0.0.1:5000 client=Some(203.0.113.9:0)");

    let mut direct = Client::connect(&server, app());
    direct.send(request).await.unwrap();
    let (_, body) = direct.response().await;
    assert_eq!(body, format!("peer={PEER} client=Some({PEER})"));
}

// ------------------------------------------- the accept loop: cap, shutdown

/// A listener whose connections are in-memory pipes the test opens.
struct Pipes {
    incoming: mpsc::UnboundedReceiver<DuplexStream>,
    accepted: Arc<AtomicUsize>,
}

impl axum::serve::Listener for Pipes {
    type Io = DuplexStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (DuplexStream, SocketAddr) {
        let Some(io) = self.incoming.recv().await else {
            return std::future::pending().await;
        };
        self.accepted.fetch_add(1, Ordering::SeqCst);
        (io, PEER.parse().unwrap())
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok("127.0.0.1:1".parse().unwrap())
    }
}

/// Opens in-memory connections to a listener.
struct Dialer {
    outgoing: mpsc::UnboundedSender<DuplexStream>,
    accepted: Arc<AtomicUsize>,
}

impl Dialer {
    fn new() -> (Dialer, Pipes) {
        let (outgoing, incoming) = mpsc::unbounded_channel();
        let accepted = Arc::new(AtomicUsize::new(0));
        let pipes = Pipes {
            incoming,
            accepted: Arc::clone(&accepted),
        };
        (Dialer { outgoing, accepted }, pipes)
    }

    fn dial(&self) -> DuplexStream {
        let (mine, theirs) = tokio::io::duplex(64 * 1024);
        self.outgoing.send(theirs).unwrap();
        mine
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn fetch(io: &mut DuplexStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nhost: a\r\n\r\n");
    io.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0; 4096];
    let n = io.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(start_paused = true)]
async fn at_the_connection_cap_the_next_connection_waits_until_one_closes() {
    let (dialer, pipes) = Dialer::new();
    let server = server(|s| s.max_connections = 2);
    let _serving = tokio::spawn(server.serve(pipes, app()).into_future());
    let mut first = dialer.dial();
    let mut second = dialer.dial();
    assert!(fetch(&mut first, "/").await.ends_with("ok"));
    assert!(fetch(&mut second, "/").await.ends_with("ok"));

    let mut third = dialer.dial();
    third
        .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    settle().await;
    assert_eq!(dialer.accepted(), 2, "the third is not accepted");

    drop(first);
    let mut buf = vec![0; 4096];
    let n = within(secs(1), "served", third.read(&mut buf))
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).ends_with("ok"));
    assert_eq!(dialer.accepted(), 3);
}

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_lets_requests_finish_and_cuts_event_streams_after_its_timeout() {
    let (dialer, pipes) = Dialer::new();
    let release = Arc::new(Notify::new());
    let slow = {
        let release = Arc::clone(&release);
        move || async move {
            release.notified().await;
            "done"
        }
    };
    let app = events(Some(KEEP_ALIVE)).route("/slow", get(slow));
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(
        server(|s| s.shutdown_timeout = secs(5))
            .serve(pipes, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .into_future(),
    );
    let mut stream = dialer.dial();
    let mut request = dialer.dial();
    stream
        .write_all(b"GET /events HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    request
        .write_all(b"GET /slow HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    settle().await;

    stop.send(()).unwrap();
    let stopping = Instant::now();
    settle().await;
    assert!(dialer.outgoing.is_closed(), "the listener is closed");
    time::sleep(secs(1)).await;
    release.notify_one();
    let mut answer = String::new();
    request.read_to_string(&mut answer).await.unwrap();
    assert!(answer.ends_with("done"), "finished, then closed: {answer}");

    within(secs(60), "stopped", serving).await.unwrap().unwrap();
    assert_eq!(stopping.elapsed(), secs(5), "the stream was cut");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert_eq!(dialer.accepted(), 2);
}

// ----------------------------------------------------------------- HTTP/2

/// An HTTP/2 client on an in-memory connection to `server`; its
/// connection task ends when the server closes the connection.
async fn h2_client(
    server: &Server,
    app: Router,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    JoinHandle<()>,
) {
    let (mine, theirs) = tokio::io::duplex(64 * 1024);
    let server = server.clone();
    tokio::spawn(async move {
        server
            .serve_connection(theirs, PEER.parse().unwrap(), app)
            .await
    });
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(mine))
            .await
            .unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, conn)
}

async fn h2_get(
    send: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    path: &str,
) -> String {
    send.ready().await.unwrap();
    let req = http::Request::get(format!("http://a{path}"))
        .body(Full::default())
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_http2_connection_is_closed_after_the_idle_timeout() {
    let (mut send, conn) = h2_client(&server(|_| {}), app()).await;
    assert_eq!(
        h2_get(&mut send, "/who").await,
        format!("peer={PEER} client=Some({PEER})")
    );
    let answered = Instant::now();
    within(secs(600), "closed", conn).await.unwrap();
    assert_eq!(answered.elapsed(), secs(60), "GOAWAY, then closed");
}

#[tokio::test(start_paused = true)]
async fn an_http2_connection_runs_at_most_max_concurrent_streams_requests_at_once() {
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (running, most) = (Arc::clone(&running), Arc::clone(&most));
        move || async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            time::sleep(secs(1)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            Body::from("ok")
        }
    };
    let app = Router::new().route("/", get(handler));
    let server = server(|s| s.max_concurrent_streams = 2);
    let (send, _conn) = h2_client(&server, app).await;
    let calls = (0..6).map(|_| {
        let mut send = send.clone();
        async move { h2_get(&mut send, "/").await }
    });
    let answers = futures_util::future::join_all(calls).await;
    assert!(answers.iter().all(|a| a == "ok"), "{answers:?}");
    assert_eq!(most.load(Ordering::SeqCst), 2);
}

#[test]
fn server_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Server>();
    send_sync::<HeaderTimeout>();
    send_sync::<BodyTimeout>();
    send::<herdsman_axum::serve::ServeFuture>();
}
