//! End-to-end tests for herdsman live in `tests/tests/`; this library holds
//! what they share: real servers on `127.0.0.1:0`, a real client, and a
//! [`Probe`] that counts an upstream's calls and holds them at a gate.
//!
//! Synchronisation is by events, never by sleeping for a result: handlers
//! park on the probe's gate, and the test opens it once it has seen, through
//! the layer's counters, that every caller is in place ([`wait_until`]).

// The README's Rust snippets, compiled (and run, where they are not
// `no_run`) as this crate's doctests, so that CI keeps them building.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::Router;
use bytes::Bytes;
use futures_util::stream;
use herdsman::BoxError;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tower::{Service, ServiceExt};

/// How long one test may run before it fails instead of hanging.
pub const TEST_DEADLINE: Duration = Duration::from_secs(10);

/// How long [`wait_until`] waits for its condition.
pub const WAIT_DEADLINE: Duration = Duration::from_secs(5);

/// Runs `test`, failing it if it takes longer than [`TEST_DEADLINE`].
pub async fn bounded<F: Future>(test: F) -> F::Output {
    bounded_by(TEST_DEADLINE, test).await
}

/// Runs `test`, failing it if it takes longer than `deadline`: [`bounded`]
/// for a test that needs another deadline (one driving a real browser).
pub async fn bounded_by<F: Future>(deadline: Duration, test: F) -> F::Output {
    tokio::time::timeout(deadline, test)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {deadline:?}"))
}

/// Waits until `cond` holds, checking every millisecond, and fails after
/// [`WAIT_DEADLINE`] saying what it waited for.
///
/// This only synchronises the test with state it cannot be notified of (the
/// layer's counters); results are always awaited, never slept for.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let poll = async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    if tokio::time::timeout(WAIT_DEADLINE, poll).await.is_err() {
        panic!("timed out after {WAIT_DEADLINE:?} waiting until {what}");
    }
}

/// Counts the calls an upstream handler receives and parks them at a gate
/// until the test opens it. Clones share the count and the gate.
#[derive(Clone)]
pub struct Probe {
    calls: Arc<AtomicUsize>,
    gate: Arc<watch::Sender<bool>>,
}

impl Probe {
    /// A probe with no calls and a closed gate.
    pub fn new() -> Self {
        Probe {
            calls: Arc::new(AtomicUsize::new(0)),
            gate: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Records a call, then waits until the gate is open. Returns the call's
    /// number, counting from 1.
    pub async fn enter(&self) -> usize {
        let number = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let mut open = self.gate.subscribe();
        open.wait_for(|open| *open)
            .await
            .expect("the probe owns the sender");
        number
    }

    /// Opens the gate: parked and later calls go on.
    pub fn open(&self) {
        self.gate.send_replace(true);
    }

    /// The number of calls so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Default for Probe {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probe")
            .field("calls", &self.calls())
            .field("open", &*self.gate.borrow())
            .finish()
    }
}

/// An axum app served on `127.0.0.1:0`; it stops when dropped.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves `app` on a fresh port of the loopback interface.
    pub async fn start(app: Router) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("axum::serve");
        });
        Server { addr, task }
    }

    /// Serves `app` like [`Server::start`], with `herdsman_axum::Server`
    /// as the demo binary does: deadlines for slow clients, and each
    /// connection's peer address in the request extensions
    /// (`ConnectInfo<SocketAddr>`, `ClientAddr`), as an app whose admin
    /// routes check for loopback callers needs.
    pub async fn start_with_connect_info(app: Router) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            herdsman_axum::Server::new()
                .serve(listener, app)
                .await
                .expect("herdsman_axum::Server");
        });
        Server { addr, task }
    }

    /// The absolute URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The client type the tests use: hyper-util's legacy client over plain TCP.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A fresh hyper-util client (its own connection pool).
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A fresh client whose connections come from `ip`, a loopback address
/// other than `127.0.0.1` (Linux routes all of `127.0.0.0/8` to the
/// loopback interface): another client address, for budgets per address.
pub fn client_from(ip: IpAddr) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(ip));
    Client::builder(TokioExecutor::new()).build(connector)
}

/// A request with an empty body.
pub fn request(method: Method, url: &str) -> http::request::Builder {
    Request::builder().method(method).uri(url)
}

/// Finishes `builder` with an empty body.
pub fn empty(builder: http::request::Builder) -> Request<Full<Bytes>> {
    builder.body(Full::default()).expect("valid request")
}

/// A `GET` of `url` with an empty body.
pub fn get(url: &str) -> Request<Full<Bytes>> {
    empty(request(Method::GET, url))
}

/// What a caller received: the status, the headers and the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The response status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The whole body, read to its end.
    pub body: Bytes,
}

impl Reply {
    /// The value of header `name` as a string, if present.
    pub fn header(&self, name: impl http::header::AsHeaderName) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }
}

/// Sends every request through its own clone of `svc`, each on its own task,
/// so that they are in flight at the same time, and reads each body whole.
pub fn send_all<S, B>(
    svc: &S,
    requests: impl IntoIterator<Item = Request<Full<Bytes>>>,
) -> Vec<JoinHandle<Result<Reply, BoxError>>>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    requests
        .into_iter()
        .map(|req| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let response = svc.oneshot(req).await.map_err(Into::into)?;
                let (parts, body) = response.into_parts();
                let body = body.collect().await.map_err(Into::into)?.to_bytes();
                Ok(Reply {
                    status: parts.status,
                    headers: parts.headers,
                    body,
                })
            })
        })
        .collect()
}

/// Awaits the calls started by [`send_all`], failing on any error.
pub async fn replies(calls: Vec<JoinHandle<Result<Reply, BoxError>>>) -> Vec<Reply> {
    let mut replies = Vec::with_capacity(calls.len());
    for (i, call) in calls.into_iter().enumerate() {
        let reply = call
            .await
            .unwrap_or_else(|err| panic!("caller {i} panicked: {err}"))
            .unwrap_or_else(|err| panic!("caller {i} failed: {err}"));
        replies.push(reply);
    }
    replies
}

/// `len` bytes of a pattern that does not repeat at powers of two, so that a
/// lost, doubled or reordered chunk shows.
pub fn pattern(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// A body streaming `data` in chunks of `chunk` bytes, with no known length.
pub fn chunked(data: Bytes, chunk: usize) -> axum::body::Body {
    let chunks: Vec<Bytes> = data.chunks(chunk).map(|c| data.slice_ref(c)).collect();
    axum::body::Body::from_stream(stream::iter(chunks.into_iter().map(Ok::<_, Infallible>)))
}
