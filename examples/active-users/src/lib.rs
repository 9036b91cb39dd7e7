//! The herdsman demo: a board app whose "active users" and card events
//! stream to every open tab, where a thousand tabs cost the upstream one
//! call per interval, and where a page shows what coordination saves.
//!
//! ```text
//! cargo run --release -p active-users
//! ```
//!
//! Then open <http://127.0.0.1:3000/> in a few tabs (the demo's live
//! board), and <http://127.0.0.1:3000/_herdsman/> for herdsman's own
//! dashboard (stats, alerts, switches). Environment variables:
//! `HERDSMAN_ADDR` (default `127.0.0.1:3000`), `HERDSMAN_ENV`,
//! `HERDSMAN_CONFIG` and `HERDSMAN__SECTION__KEY` (see
//! docs/CONFIGURATION.md), `DEMO_UPSTREAM_LATENCY_MS` (default 50),
//! `DEMO_UPSTREAM_FAIL_RATE` (0.0 to 1.0, default 0), `RUST_LOG`.
//!
//! # As a cluster
//!
//! `active-users --upstream-only` serves the simulated upstream alone
//! (`HERDSMAN_ADDR`, default `127.0.0.1:4000`), with `GET /upstream/calls`
//! answering its real calls per endpoint as JSON. A replica started with
//! `DEMO_UPSTREAM_URL=http://127.0.0.1:4000` calls that upstream through a
//! hyper-util client wrapped in the Coordinator's layer (herdsman's
//! client-side use) instead of its in-process one, so that several replicas
//! can share one upstream and the calls they make can be counted.
//!
//! Requests get tower-http's `TraceLayer` spans (`RUST_LOG=tower_http=debug`
//! shows them); JSON routes a [`REQUEST_TIMEOUT`] and gzip for callers that
//! accept it; writes a body limit of [`MAX_WRITE_BYTES`].
//!
//! With `HERDSMAN__REDIS__URL=redis://127.0.0.1:6379` (the `[redis]`
//! section) the replicas coordinate through Redis ([`Demo::start`] picks
//! the `herdsman-redis` backends): one upstream call per interval whatever
//! the number of replicas. Without it nothing connects. `cluster.sh`
//! starts Redis, the upstream and three replicas.
//!
//! The routes and what they answer are in docs/HTTP.md; besides herdsman's
//! admin routes, `POST /_demo/upstream` (`{"fail_rate": 0.5}`, admin only)
//! changes the failure rate at run time.

mod page;
mod upstream;

use std::time::Duration;

use axum::{
    body::Body,
    extract::{Path, Request, State},
    http::{header, request::Parts, uri::Scheme, HeaderName, StatusCode, Uri},
    middleware,
    response::{IntoResponse, Json, Response},
    routing::{get, post},
    Router,
};
use herdsman::{
    backend::Backends,
    config::{CacheSettings, ClassConfig, Config, Environment},
    coordinator::{BuildError, Coordinated, Coordinator},
    event::Invalidation,
    BoxError,
};
use herdsman_axum::{
    data_request, error_response, require_admin, Admin, AdminAccess, LastEventId, Live, Shutdown,
};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use serde::Deserialize;
use tower::{service_fn, util::BoxCloneSyncService, ServiceExt};
use tower_http::{
    compression::CompressionLayer, limit::RequestBodyLimitLayer, timeout::TimeoutLayer,
    trace::TraceLayer,
};

pub use crate::upstream::{CardEvent, Endpoint, NewCard, Upstream};

/// How long a non-streaming route may take before it answers 504 (tower-http's
/// `TimeoutLayer`; event streams have no deadline).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The most a write (`POST /api/boards/{board}/cards`, `POST
/// /_demo/upstream`) may send, in bytes; more is answered 413 (tower-http's
/// `RequestBodyLimitLayer`).
pub const MAX_WRITE_BYTES: usize = 16 * 1024;

/// The demo's endpoint classes: name, path pattern, shared across users.
pub const CLASSES: [(&str, &str, bool); 3] = [
    ("active-users", "/api/active-users", true),
    ("board-events", "/api/boards/{board}/events", true),
    ("me", "/api/me", false),
];

/// Adds the demo's endpoint classes to `config` (where the file or the
/// variables did not define them): their GET routes are cached for the
/// profile's poll interval, with stale-while-revalidate for twice that.
pub fn with_demo_classes(mut config: Config) -> Config {
    let interval = config.registry.class.interval;
    let global = config.cache.clone();
    for (name, path, public) in CLASSES {
        config
            .classes
            .entry(name.to_owned())
            .or_insert_with(|| ClassConfig {
                paths: vec![path.to_owned()],
                public,
                cache: Some(CacheSettings {
                    class: herdsman::cache::ClassSettings {
                        ttl: interval,
                        stale_while_revalidate: interval * 2,
                        ..global.class
                    },
                    ..global.clone()
                }),
                ..ClassConfig::default()
            });
    }
    config
}

/// What the demo reads from its environment.
#[derive(Debug, Clone)]
pub struct Options {
    /// `DEMO_UPSTREAM_LATENCY_MS` (default 50).
    pub latency: Duration,
    /// `DEMO_UPSTREAM_FAIL_RATE` (0.0 to 1.0, default 0).
    pub fail_rate: f64,
    /// How often a simulated user arrives or leaves (none in tests).
    pub churn: Option<Duration>,
    /// `DEMO_UPSTREAM_URL`: a remote upstream (`active-users
    /// --upstream-only`) to call instead of the in-process one.
    pub upstream_url: Option<Uri>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            latency: Duration::from_millis(50),
            fail_rate: 0.0,
            churn: Some(Duration::from_secs(4)),
            upstream_url: None,
        }
    }
}

impl Options {
    /// Reads `DEMO_UPSTREAM_LATENCY_MS` and `DEMO_UPSTREAM_FAIL_RATE`; an
    /// invalid value is an error naming the variable.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut options = Options::default();
        if let Some(v) = var("DEMO_UPSTREAM_LATENCY_MS") {
            let ms: u64 = v.trim().parse().map_err(|_| {
                format!("DEMO_UPSTREAM_LATENCY_MS = {v:?}: not a whole number of milliseconds")
            })?;
            options.latency = Duration::from_millis(ms);
        }
        if let Some(v) = var("DEMO_UPSTREAM_FAIL_RATE") {
            let rate: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|r: &f64| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    format!("DEMO_UPSTREAM_FAIL_RATE = {v:?}: not a number from 0.0 to 1.0")
                })?;
            options.fail_rate = rate;
        }
        if let Some(v) = var("DEMO_UPSTREAM_URL") {
            let url = upstream_url(v.trim())
                .map_err(|why| format!("DEMO_UPSTREAM_URL = {v:?}: {why}"))?;
            options.upstream_url = Some(url);
        }
        Ok(options)
    }
}

/// An `http://host[:port]` URL, without a path.
fn upstream_url(v: &str) -> Result<Uri, &'static str> {
    let url: Uri = v.parse().map_err(|_| "not a URL")?;
    if url.scheme() != Some(&Scheme::HTTP) || url.authority().is_none() {
        return Err("not an http://host:port URL");
    }
    if url.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err("the upstream's URL must not have a path");
    }
    Ok(url)
}

/// What the Coordinator's layer wraps: the in-process upstream's router,
/// or a hyper-util client toward a remote upstream.
type Origin = BoxCloneSyncService<Request, Response, OriginError>;

/// Why the remote upstream did not answer. (A type of its own rather than
/// a `BoxError`: the layers' futures are proven `Send` with it.)
#[derive(Debug)]
struct OriginError(BoxError);

impl std::fmt::Display for OriginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the upstream did not answer: {}", self.0)
    }
}

impl std::error::Error for OriginError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

fn local_origin(upstream: &Upstream) -> Origin {
    let router = ServiceExt::<Request>::map_err(upstream.router(), |never| match never {});
    BoxCloneSyncService::new(router)
}

/// A hyper-util client that sends every request to `base`'s scheme and
/// authority, with the request's path and query: the Coordinator's layer
/// around it is herdsman's client side (one outbound call for many
/// callers), the same stack as around the router.
fn remote_origin(base: &Uri) -> Origin {
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).build_http();
    let base = base.clone();
    BoxCloneSyncService::new(service_fn(move |req: Request| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let (mut parts, body) = req.into_parts();
            let mut uri = base.into_parts();
            uri.path_and_query = parts.uri.path_and_query().cloned();
            parts.uri = Uri::from_parts(uri).map_err(|e| OriginError(e.into()))?;
            // The client names the upstream's host itself.
            parts.headers.remove(header::HOST);
            let response = client
                .request(Request::from_parts(parts, body))
                .await
                .map_err(|e| OriginError(e.into()))?;
            Ok(response.map(Body::new))
        }
    }))
}

/// The running demo: the coordinator, the upstream it protects and the
/// SSE/polling answers over its registry.
#[derive(Clone)]
pub struct Demo {
    /// The coordinator (stats, switches, registry).
    pub coordinator: Coordinator,
    /// The simulated upstream (its own call counts); unused, with no
    /// calls, when the demo calls a remote one ([`Options::upstream_url`]).
    pub upstream: Upstream,
    /// SSE and polling over the registry.
    pub live: Live,
    /// Ends every event stream with a last `shutdown` event when
    /// triggered (the binary triggers it on SIGTERM and SIGINT, with the
    /// server's graceful shutdown).
    pub shutdown: Shutdown,
    coordinated: Coordinated<Origin>,
    /// Whether the upstream is remote (`DEMO_UPSTREAM_URL`).
    remote: bool,
    /// The rollout's identity header, if one is configured.
    identity_header: Option<HeaderName>,
}

impl Demo {
    /// Builds the demo for `environment` with `config` (give it
    /// [`with_demo_classes`]), in process: refused, naming `redis.url`,
    /// when `config.redis.url` is set (see [`start`](Self::start)). Must
    /// run inside a tokio runtime.
    pub fn build(
        environment: Environment,
        config: Config,
        options: &Options,
    ) -> Result<Demo, BuildError> {
        Self::build_on(environment, config, options, None)
    }

    /// Builds the demo as [`build`](Self::build) does, on the Redis
    /// backends of `config.redis` when it names a server
    /// (`HERDSMAN__REDIS__URL`): then the replicas share their cache,
    /// single-flight, poll loops and rate budgets. Start-up never waits on
    /// a Redis that is down: the replica coordinates alone until it is
    /// back.
    pub async fn start(
        environment: Environment,
        config: Config,
        options: &Options,
    ) -> Result<Demo, String> {
        let backends = match config.redis.url {
            Some(_) => Some(
                herdsman_redis::backends(&config.redis)
                    .await
                    .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        Self::build_on(environment, config, options, backends).map_err(|e| e.to_string())
    }

    fn build_on(
        environment: Environment,
        config: Config,
        options: &Options,
        backends: Option<Backends>,
    ) -> Result<Demo, BuildError> {
        let mut builder = Coordinator::builder()
            .environment(environment)
            .config(config);
        if let Some(backends) = backends {
            builder = builder.backends(backends);
        }
        let coordinator = builder.build()?;
        let upstream = Upstream::new(options.latency, options.fail_rate);
        let origin = match &options.upstream_url {
            Some(url) => remote_origin(url),
            None => local_origin(&upstream),
        };
        let coordinated = tower::Layer::layer(&coordinator.layer(), origin);
        let subscriber = coordinated.clone();
        // Polls and streams are answered from the registry, above the Stats
        // layer: count them as the client requests they are.
        let shutdown = Shutdown::new();
        let live = Live::new(move |req| subscriber.subscribe(req))
            .with_stats(
                coordinator.stats().clone(),
                coordinator.config().path_classes(),
            )
            .with_max_streams(coordinator.config().server.max_event_streams)
            .with_shutdown(shutdown.clone());
        // A remote upstream churns on its own.
        if let (Some(every), None) = (options.churn, &options.upstream_url) {
            upstream.spawn_churn(every);
        }
        // Validated by the builder: a configured name is a valid one.
        let identity_header = coordinator
            .config()
            .rollout
            .identity_header
            .as_deref()
            .and_then(|name| HeaderName::from_bytes(name.as_bytes()).ok());
        Ok(Demo {
            coordinator,
            upstream,
            live,
            shutdown,
            coordinated,
            remote: options.upstream_url.is_some(),
            identity_header,
        })
    }

    /// The public router. Serve it with `herdsman_axum::Server` (as the
    /// binary does), which inserts the peer address as axum's `ConnectInfo`
    /// and as `herdsman::http::ClientAddr`, or with axum's
    /// `into_make_service_with_connect_info::<SocketAddr>()`: the admin
    /// routes tell loopback callers in development by it, and the
    /// registry's budgets per client address hold.
    pub fn router(&self) -> Router {
        let config = self.coordinator.config();
        let admin = Admin::builder(
            self.coordinator.stats().clone(),
            self.coordinator.environment(),
            config.admin.token.as_deref(),
        )
        .with_switches(self.coordinator.switches().clone())
        .with_toggle("sse", self.live.sse_toggle().clone())
        .with_field("sizes", self.sizes_field())
        .router();
        let access = AdminAccess::for_environment(
            self.coordinator.environment(),
            config.admin.token.as_deref(),
        );
        // The JSON routes: gzip for callers that accept it (after the
        // registry and the cache, which hold the identity answer: see
        // docs/HTTP.md), a deadline, and a cap on what a write may send.
        let json = Router::new()
            .route("/api/active-users", get(poll))
            .route("/api/boards/{board}/events", get(poll_board))
            .route(
                "/api/boards/{board}/cards",
                post(add_card).layer(RequestBodyLimitLayer::new(MAX_WRITE_BYTES)),
            )
            .route("/api/me", get(poll))
            // The same bytes as active-users' answer through the same
            // tower-http layers, without herdsman's: a load's ceiling.
            .route("/bare/static", get(bare_static))
            .route(
                "/_demo/upstream",
                post(set_upstream)
                    .layer(RequestBodyLimitLayer::new(MAX_WRITE_BYTES))
                    .route_layer(middleware::from_fn_with_state(access, require_admin)),
            )
            .layer(CompressionLayer::new())
            .layer(TimeoutLayer::with_status_code(
                StatusCode::GATEWAY_TIMEOUT,
                REQUEST_TIMEOUT,
            ));
        // Event streams last: no deadline, and never compressed.
        let streams = Router::new()
            .route("/sse/active-users", get(sse_active_users))
            .route("/sse/boards/{board}/events", get(sse_board));
        json.merge(streams)
            .with_state(self.clone())
            .merge(page::routes())
            .merge(admin)
            .layer(TraceLayer::new_for_http())
    }

    /// The stats document's `sizes`: what each of the stack's maps holds
    /// ([`Coordinator::sizes`]) and the event streams open, so that a soak
    /// run can check they all drain.
    fn sizes_field(&self) -> impl Fn() -> serde_json::Value + Send + Sync + 'static {
        let (coordinator, live) = (self.coordinator.clone(), self.live.clone());
        move || {
            let mut sizes = serde_json::to_value(coordinator.sizes()).unwrap_or_default();
            if let Some(sizes) = sizes.as_object_mut() {
                sizes.insert("sse_streams".to_owned(), live.streams().get().into());
            }
            sizes
        }
    }
}

impl std::fmt::Debug for Demo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Demo")
            .field("coordinator", &self.coordinator)
            .field("upstream", &self.upstream)
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

/// Board names are untrusted path input: 1 to 64 of `[A-Za-z0-9_-]`.
fn valid_board(board: &str) -> bool {
    (1..=64).contains(&board.len())
        && board
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such board").into_response()
}

/// The data request of a polling or SSE route ([`data_request`]: the
/// credentials and the client address), with the rollout's identity header
/// when one is configured. The registry's budgets per caller read the same
/// identity as the rollout and the Limit layer (that header, else the
/// credentials), and per address the client address; so does the key of a
/// private class.
fn data(demo: &Demo, caller: &Parts, path_and_query: &str) -> Request {
    let mut req = data_request(caller, path_and_query);
    if let Some(name) = &demo.identity_header {
        for value in caller.headers.get_all(name) {
            req.headers_mut().append(name.clone(), value.clone());
        }
    }
    req
}

async fn poll(State(demo): State<Demo>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    demo.live
        .poll(data(&demo, &parts, &path), &parts.headers)
        .await
}

async fn poll_board(State(demo): State<Demo>, Path(board): Path<String>, req: Request) -> Response {
    if !valid_board(&board) {
        return not_found();
    }
    poll(State(demo), req).await
}

async fn sse_active_users(State(demo): State<Demo>, last: LastEventId, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    demo.live
        .sse(data(&demo, &parts, "/api/active-users"), last)
}

async fn sse_board(
    State(demo): State<Demo>,
    Path(board): Path<String>,
    last: LastEventId,
    req: Request,
) -> Response {
    if !valid_board(&board) {
        return not_found();
    }
    let (parts, _) = req.into_parts();
    let path = format!("/api/boards/{board}/events");
    demo.live.sse(data(&demo, &parts, &path), last)
}

/// `GET /bare/static`: the bytes of `/api/active-users`'s answer for the
/// seeded users, with no herdsman layer on the way: the ceiling that
/// `herdsman load http --compare /bare/static` holds the coordinated route
/// against.
async fn bare_static() -> Response {
    const BODY: &str = r#"{"count":4,"users":["ann","bob","chen","dara"]}"#;
    ([(header::CONTENT_TYPE, "application/json")], BODY).into_response()
}

/// Writes go through the coordinated stack (the Cache drops what the write
/// makes stale), then the board's events are invalidated: the registry polls
/// at once and every viewer gets the new card without waiting.
async fn add_card(State(demo): State<Demo>, Path(board): Path<String>, req: Request) -> Response {
    if !valid_board(&board) {
        return not_found();
    }
    // A fresh request: the outer router's extensions (its path parameters)
    // must not reach the upstream router.
    let (parts, body) = req.into_parts();
    let mut forward = Request::new(body);
    *forward.method_mut() = parts.method;
    *forward.uri_mut() = parts.uri;
    *forward.version_mut() = parts.version;
    *forward.headers_mut() = parts.headers;
    let response = match demo.coordinated.clone().oneshot(forward).await {
        Ok(response) => response.map(Body::new),
        Err(err) => return error_response(&*err),
    };
    if response.status().is_success() {
        let path = format!("/api/boards/{board}/events");
        demo.coordinator
            .invalidate(&Invalidation::Path(path.into()));
    }
    response
}

/// The body of `POST /_demo/upstream`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamFaults {
    fail_rate: f64,
}

/// Changes the simulated upstream's failure rate at run time (an admin
/// route), so that a soak run can inject faults without a restart.
async fn set_upstream(State(demo): State<Demo>, Json(faults): Json<UpstreamFaults>) -> Response {
    if demo.remote {
        return (
            StatusCode::CONFLICT,
            "the upstream is remote (DEMO_UPSTREAM_URL): set its failure rate with \
             DEMO_UPSTREAM_FAIL_RATE where it runs",
        )
            .into_response();
    }
    if !(0.0..=1.0).contains(&faults.fail_rate) {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "fail_rate is a number from 0.0 to 1.0",
        )
            .into_response();
    }
    let was = demo.upstream.fail_rate();
    demo.upstream.set_fail_rate(faults.fail_rate);
    tracing::info!(
        fail_rate = faults.fail_rate,
        was,
        "demo upstream failure rate set"
    );
    Json(serde_json::json!({"fail_rate": faults.fail_rate, "was": was})).into_response()
}
