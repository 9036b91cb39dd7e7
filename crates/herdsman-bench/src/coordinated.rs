//! The coordinated hit: a browser's `GET` answered from the cache through
//! the whole [`Coordinator`] stack, against the bare HTTP service it wraps.
//!
//! The Coordinator is built as an application builds it, through its public
//! API only: `Coordinator::builder()` with the `test` profile's
//! configuration (every layer on, no endpoint classes: every request in the
//! default class; the cache's TTL an hour), its layer around an [`Upstream`]. The upstream answers at
//! once with a small JSON response (a status, a `Content-Type` and 14
//! bytes of body), the shape of the demo's polled endpoints.

use std::{
    convert::Infallible,
    fmt,
    future::{ready, Ready},
    hint::black_box,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use herdsman::{
    config::{Config, Environment},
    Coordinator,
};
use http::{header, HeaderValue, Request, Response};
use http_body_util::Full;
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt};

/// The request body type of both services.
pub type ReqBody = Full<Bytes>;

/// The body every upstream response carries.
pub const BODY: &[u8] = b"{\"online\":42}\n";

/// The bare HTTP service: answers at once with [`BODY`] as JSON, and counts
/// its calls (one uncontended atomic add, in both cases of the benchmark),
/// so that a benchmark can check that its hits were hits.
#[derive(Debug, Clone, Default)]
pub struct Upstream {
    calls: Arc<AtomicU64>,
}

impl Upstream {
    /// Calls answered so far, by this service and its clones.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl Service<Request<ReqBody>> for Upstream {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<ReqBody>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut res = Response::new(Full::new(Bytes::from_static(BODY)));
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        ready(Ok(res))
    }
}

/// A Coordinator with the `test` profile's configuration, its cache TTL
/// made an hour (the profile's is 50 ms) so that nothing expires while it
/// is measured.
pub fn coordinator() -> Coordinator {
    let mut config = Config::profile(Environment::Test);
    config.cache.class.ttl = Duration::from_secs(3600);
    Coordinator::builder()
        .environment(Environment::Test)
        .config(config)
        .build()
        .expect("the test profile is valid")
}

/// The Coordinator's layer around `upstream`.
pub fn coordinated(
    coordinator: &Coordinator,
    upstream: Upstream,
) -> impl Service<
    Request<ReqBody>,
    Response = Response<impl http_body::Body<Data = Bytes>>,
    Error = herdsman::BoxError,
> + Clone
       + Send
       + 'static {
    coordinator.layer().layer(upstream)
}

/// A browser's `GET` of a polled endpoint, headers as Chromium sends them
/// (most of those of the `http_key` benchmark, the session cookie
/// included: the default class is private, so the cookie is in the key).
pub fn browser_get() -> Request<ReqBody> {
    Request::get("/api/active-users?board=42")
        .header("host", "app.example.com")
        .header("connection", "keep-alive")
        .header("accept", "application/json")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        )
        .header("sec-fetch-site", "same-origin")
        .header("sec-fetch-mode", "cors")
        .header("referer", "https://app.example.com/board/42")
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .header("accept-language", "en-GB,en;q=0.9")
        .header("cookie", "session=0123456789abcdef0123456789abcdef")
        .body(Full::default())
        .expect("a valid request")
}

/// Requests built ahead of each timed batch: building a request (its
/// header map) is the caller's cost, not the service's, so it is left out
/// of the time, in batches of this many so that they are still in the
/// CPU's caches when sent (as a server's freshly parsed request is).
const BATCH: u64 = 64;

/// Sends `iters` requests of [`browser_get`] through `svc`, one after
/// another, each answered `Ok` (its response dropped at once), and returns
/// the time the sending took, request building excluded.
pub fn run<S, B>(rt: &Runtime, svc: &mut S, iters: u64) -> Duration
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Error: fmt::Debug,
{
    rt.block_on(async {
        let mut took = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let n = left.min(BATCH);
            left -= n;
            let requests: Vec<_> = (0..n).map(|_| browser_get()).collect();
            let start = Instant::now();
            send(svc, requests).await;
            took += start.elapsed();
        }
        took
    })
}

/// Sends `requests` through `svc`, one after another; each must be
/// answered `Ok`.
pub async fn send<S, B>(svc: &mut S, requests: Vec<Request<ReqBody>>)
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Error: fmt::Debug,
{
    for req in requests {
        let ready = svc.ready().await.expect("the service is always ready");
        let res = ready.call(black_box(req)).await;
        drop(black_box(res.expect("every request is answered Ok")));
    }
}
