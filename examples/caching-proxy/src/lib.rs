//! A caching reverse proxy built from herdsman's public layers: how to put
//! herdsman in front of an existing API, and how its HTTP caching is
//! checked against other caches.
//!
//! ```text
//! ORIGIN=http://127.0.0.1:8000 LISTEN=127.0.0.1:8002 cargo run --release -p caching-proxy
//! ```
//!
//! Every method, path, query and end-to-end header goes to the origin;
//! hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and the fields it
//! names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`,
//! `Transfer-Encoding`, `Upgrade`) are dropped both ways, and `Via` is
//! added. The stack, outer to inner:
//!
//! ```text
//! Cache    CacheMode::Origin: the origin's Cache-Control, Expires, Vary,
//!          validators; at most 1 h fresh, 1 d stale; writes invalidate
//! Dedup    concurrent identical misses and revalidations: one origin call
//! Buffer   bodies up to 1 MiB into memory, so that they can be shared
//! hyper-util client
//! ```
//!
//! Keys hold the method, the origin, the path and query, the negotiation
//! headers and the credentials (`Authorization`, `Cookie`): one user's
//! answer never reaches another. An origin that cannot be reached is a
//! `502 Bad Gateway`.

use std::{convert::Infallible, io, time::Duration};

use axum::{body::Body, Router};
use bytes::Bytes;
use herdsman::{
    cache::{CacheHandle, CacheLayer, CacheMode},
    dedup::{DedupHandle, DedupLayer},
    http::{BufferLayer, HttpKey, HttpShare, SharedBody},
    BoxError,
};
use herdsman_axum::Server;
use http::{
    header::{self, HeaderMap, HeaderName, HeaderValue},
    uri::{Authority, Scheme},
    Request, Response, StatusCode, Uri, Version,
};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use tokio::net::TcpListener;
use tower::{service_fn, util::BoxCloneSyncService, ServiceBuilder, ServiceExt};

/// The longest a response is fresh, whatever the origin says.
pub const MAX_TTL: Duration = Duration::from_secs(3600);

/// The longest a response is served stale, when the origin allows it.
pub const MAX_STALE: Duration = Duration::from_secs(86_400);

/// The bound of the store.
pub const MAX_BYTES: u64 = 256 * 1024 * 1024;

type Upstream = BoxCloneSyncService<
    Request<Body>,
    Response<herdsman::http::HttpBody<hyper::body::Incoming>>,
    BoxError,
>;

/// A caching reverse proxy toward one origin.
#[derive(Debug, Clone)]
pub struct CachingProxy {
    origin: Origin,
    cache: CacheLayer<HttpKey, Response<SharedBody>, herdsman::cache::HttpCachePolicy>,
    dedup: DedupLayer<HttpKey, HttpShare>,
}

/// Where requests go: a scheme and an authority.
#[derive(Debug, Clone)]
struct Origin {
    scheme: Scheme,
    authority: Authority,
}

impl CachingProxy {
    /// A proxy toward `origin`, an `http://host[:port]` URL (no path).
    pub fn new(origin: &str) -> Result<Self, String> {
        let uri: Uri = origin.parse().map_err(|err| format!("not a URL: {err}"))?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err("the origin must be an http:// URL".into());
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or("the origin URL has no host")?;
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err("the origin URL must not have a path".into());
        }
        let key = HttpKey::new();
        Ok(CachingProxy {
            origin: Origin {
                scheme: Scheme::HTTP,
                authority,
            },
            cache: CacheLayer::http(key.clone())
                .with_mode(CacheMode::Origin)
                .with_ttl(MAX_TTL)
                .with_stale_while_revalidate(MAX_STALE)
                .with_stale_if_error(MAX_STALE)
                .with_max_bytes(MAX_BYTES),
            dedup: DedupLayer::new(key).with_share(HttpShare),
        })
    }

    /// The origin, as `http://host:port`.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.origin.scheme, self.origin.authority)
    }

    /// The cache's store: counters, invalidation.
    pub fn cache(&self) -> CacheHandle<Response<SharedBody>> {
        self.cache.handle()
    }

    /// The single-flight map: counters.
    pub fn dedup(&self) -> DedupHandle {
        self.dedup.handle()
    }

    /// The proxy as an axum `Router` (every method and path).
    pub fn router(&self) -> Router {
        let client: Client<HttpConnector, Body> =
            Client::builder(TokioExecutor::new()).build_http();
        let upstream: Upstream = BoxCloneSyncService::new(
            ServiceBuilder::new()
                .layer(self.cache.clone())
                .layer(self.dedup.clone())
                .layer(BufferLayer::new())
                .service(client.map_err(BoxError::from)),
        );
        let origin = self.origin.clone();
        Router::new().fallback_service(service_fn(move |req: Request<Body>| {
            let upstream = upstream.clone();
            let origin = origin.clone();
            async move { Ok::<_, Infallible>(forward(upstream, &origin, req).await) }
        }))
    }

    /// Serves the proxy on `listener` until the task is dropped, with the
    /// production profile's `[server]` deadlines and limits.
    pub async fn serve(self, listener: TcpListener) -> io::Result<()> {
        self.serve_with(&Server::new(), listener).await
    }

    /// Serves the proxy on `listener` with `server`'s deadlines and limits,
    /// until the task is dropped.
    pub async fn serve_with(self, server: &Server, listener: TcpListener) -> io::Result<()> {
        server.serve(listener, self.router()).await
    }
}

/// Sends `req` to the origin through the stack; a failure to reach it is a
/// `502`.
async fn forward(upstream: Upstream, origin: &Origin, req: Request<Body>) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(origin.scheme.clone());
    uri.authority = Some(origin.authority.clone());
    uri.path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .or(Some("/".parse().expect("a path")));
    parts.uri = match Uri::from_parts(uri) {
        Ok(uri) => uri,
        Err(_) => return status(StatusCode::BAD_REQUEST, "bad request target"),
    };
    // Each hop speaks its own version: the client's pool speaks HTTP/1.1.
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    // The client names the origin from the URI.
    parts.headers.remove(header::HOST);
    parts.headers.append(header::VIA, VIA);
    match upstream.oneshot(Request::from_parts(parts, body)).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            parts.version = Version::default();
            strip_hop_by_hop(&mut parts.headers);
            parts.headers.append(header::VIA, VIA);
            Response::from_parts(parts, Body::new(body))
        }
        Err(err) => {
            tracing::warn!(error = %err, "origin unreachable");
            status(StatusCode::BAD_GATEWAY, "the origin could not be reached")
        }
    }
}

const VIA: HeaderValue = HeaderValue::from_static("1.1 herdsman");

fn status(code: StatusCode, reason: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(Bytes::from_static(reason.as_bytes())));
    *response.status_mut() = code;
    response
}

/// Removes the hop-by-hop fields (RFC 9110 §7.6.1): the fixed ones and
/// those `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(&HOP_BY_HOP) {
        headers.remove(name);
    }
}

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
