//! An HTTP server for axum apps that slow clients cannot hold.
//!
//! `axum::serve` sets no deadline on clients: one that sends a header line,
//! or a body chunk, every few seconds keeps its connection (and the
//! buffers behind it) for as long as it keeps trickling, and a few hundred
//! such clients hold as many connections. [`Server`] serves a `Router` (or
//! any service of axum requests) over HTTP/1 and HTTP/2, on hyper-util's
//! `auto` connection builder as `axum::serve` does, and gives each client a
//! deadline for everything it must send:
//!
//! - **header-read timeout**: the whole request head. For a connection's
//!   first request it runs from the accept, so a connection that sends
//!   nothing is closed too; for the next requests on a kept-alive HTTP/1
//!   connection it runs from the head's first byte. Past it the
//!   connection is closed without an answer ([`HeaderTimeout`]).
//! - **body-read timeout**: the whole request body, from the handler's
//!   first read of it (until then the server reads nothing of it either),
//!   however steadily the chunks come. Past it the body fails with
//!   [`BodyTimeout`], the handler's response is replaced by
//!   `408 Request Timeout`, and an HTTP/1 connection is closed after it.
//! - **idle timeout**: a connection with no request in progress and no
//!   byte read or written for this long is closed gracefully. A request
//!   is in progress until its response body is sent whole: an event
//!   stream is never idle, whatever its keep-alive interval, and is never
//!   cut by any of these deadlines.
//!
//! and bounds what a client can make it hold:
//!
//! - **connections**: at most `max_connections` at once. At the cap the
//!   server stops accepting until one closes; new connections wait in the
//!   kernel's listen backlog (and past it, the kernel refuses them). The
//!   alternative, accepting and closing at once, spends an accept, a
//!   socket and a close on each attempt and invites clients to retry at
//!   once; waiting costs nothing, and the deadlines above free the slots
//!   slow clients hold.
//! - **request heads**: at most `max_header_bytes`; a larger one is
//!   refused with `431 Request Header Fields Too Large` as soon as that
//!   many bytes are buffered. For HTTP/1 it is the size of the connection's
//!   read buffer (hyper's `max_buf_size`, 8 KiB at least); for HTTP/2 the
//!   `SETTINGS_MAX_HEADER_LIST_SIZE` it announces.
//! - **HTTP/2 streams**: at most `max_concurrent_streams` requests in
//!   progress on one connection.
//!
//! Each request carries its client's address in its extensions, as axum's
//! [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo) (so that its
//! extractor works without `into_make_service_with_connect_info`) and as
//! herdsman's [`ClientAddr`](herdsman::http::ClientAddr), which budgets per
//! address are keyed by, and which [`AdminAccess`](crate::AdminAccess)
//! checks for loopback. Both are the connection's peer: `Forwarded` and
//! `X-Forwarded-For` are written by clients as well as proxies, and are
//! never read unless the peer is one of the [`TrustedProxies`] configured;
//! then `ClientAddr` is the client that proxy names in the header it
//! writes (`ConnectInfo` stays the peer).
//!
//! [`Serve::with_graceful_shutdown`] stops accepting when its signal
//! fires, lets requests in progress finish, and closes the connections
//! still busy after the shutdown timeout. An event stream never finishes
//! on its own: trigger a [`Shutdown`](crate::Shutdown) from the same
//! signal, and the streams of a [`Live`](crate::Live) given it end at
//! once with a last event ([`shutdown`](crate::shutdown) shows how).
//!
//! The settings are `herdsman::config::ServerSettings`, the `[server]`
//! section of the configuration (`docs/CONFIGURATION.md` gives each
//! default and why).
//!
//! # Examples
//!
//! ```no_run
//! use axum::{extract::ConnectInfo, routing::get, Router};
//! use herdsman::config::{Config, Environment};
//! use herdsman_axum::Server;
//! use std::net::SocketAddr;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::load(Environment::detect()?)?;
//! let app = Router::new().route(
//!     "/",
//!     get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { format!("hello {peer}") }),
//! );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! Server::from_settings(&config.server)?
//!     .serve(listener, app)
//!     .with_graceful_shutdown(async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! A single connection (from a TLS acceptor, a test's in-memory pipe) is
//! served by [`Server::serve_connection`].
//!
//! # Trade-offs
//!
//! - The deadlines are the server's own, not hyper's: hyper's HTTP/1
//!   header-read timeout starts only once the `auto` builder has seen the
//!   first bytes (a connection that sends nothing is never timed out), and
//!   also runs between requests (a kept-alive connection would be closed
//!   after the header-read timeout rather than the idle timeout).
//! - Between two requests on an HTTP/2 connection, the bytes the client
//!   sends are control frames (`PING`, `WINDOW_UPDATE`): they do not start
//!   a header-read deadline, but like any bytes they keep the connection
//!   from being idle. A client that pings every minute holds its
//!   connection, as one that sends a cheap request every minute would; the
//!   connection cap bounds both. A stream whose `HEADERS` trickle in is
//!   bounded by `max_header_bytes` and the stream cap, not by a deadline.
//! - A connection upgraded to another protocol (a WebSocket) is the
//!   handler's once the upgrade is done: it leaves these deadlines and
//!   the connection cap.

mod activity;
mod connection;
mod error;
mod requests;

use std::{
    convert::Infallible,
    fmt,
    future::{Future, IntoFuture},
    io,
    net::SocketAddr,
    pin::{pin, Pin},
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{extract::Request, response::Response, serve::Listener, BoxError};
use herdsman::{
    config::{Config, Environment, ServerSettings},
    http::{InvalidProxy, TrustedProxies},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::{watch, Semaphore},
};
use tower_service::Service;

pub use self::error::{BodyTimeout, HeaderTimeout};

/// An HTTP/1 and HTTP/2 server with deadlines for slow clients; see the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct Server {
    header_read_timeout: Duration,
    body_read_timeout: Duration,
    idle_timeout: Duration,
    shutdown_timeout: Duration,
    max_connections: usize,
    max_header_bytes: usize,
    max_concurrent_streams: u32,
    trusted_proxies: Arc<TrustedProxies>,
}

impl Default for Server {
    /// The production profile's `[server]` settings.
    fn default() -> Self {
        let settings = Config::profile(Environment::Production).server;
        Server::from_settings(&settings).expect("the profile trusts no proxy")
    }
}

impl Server {
    /// A server with the production profile's settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// A server with `settings` (a loaded configuration's `server`).
    /// Fails on a trusted proxy that is not an address or a CIDR block,
    /// which a loaded configuration never has.
    pub fn from_settings(settings: &ServerSettings) -> Result<Self, InvalidProxy> {
        Ok(Server {
            header_read_timeout: settings.header_read_timeout,
            body_read_timeout: settings.body_read_timeout,
            idle_timeout: settings.idle_timeout,
            shutdown_timeout: settings.shutdown_timeout,
            max_connections: 1,
            max_header_bytes: settings.max_header_bytes,
            max_concurrent_streams: settings.max_concurrent_streams,
            trusted_proxies: Arc::new(
                TrustedProxies::parse(&settings.trusted_proxies)?
                    .with_header(settings.forwarded_header),
            ),
        }
        .with_max_connections(settings.max_connections))
    }

    /// How long a client has to send a whole request head (greater than
    /// zero).
    pub fn with_header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// How long a client has to send a whole request body, from the
    /// handler's first read of it (greater than zero).
    pub fn with_body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body_read_timeout = timeout;
        self
    }

    /// How long a connection with no request in progress and no byte read
    /// or written is kept (greater than zero).
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How long, after the shutdown signal, requests in progress may run
    /// before their connections are closed.
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Connections open at once, at most (at least 1).
    pub fn with_max_connections(mut self, max: usize) -> Self {
        let most = Semaphore::MAX_PERMITS.min(u32::MAX as usize);
        self.max_connections = max.clamp(1, most);
        self
    }

    /// The largest request head, in bytes (for HTTP/1, at least 8 KiB).
    pub fn with_max_header_bytes(mut self, max: usize) -> Self {
        self.max_header_bytes = max;
        self
    }

    /// Requests in progress at once on one HTTP/2 connection, at most.
    pub fn with_max_concurrent_streams(mut self, max: u32) -> Self {
        self.max_concurrent_streams = max;
        self
    }

    /// The proxies whose `X-Forwarded-For` (or, as
    /// [`TrustedProxies::with_header`] says, `Forwarded`) names the
    /// [`ClientAddr`] (default: none).
    ///
    /// [`ClientAddr`]: herdsman::http::ClientAddr
    pub fn with_trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.trusted_proxies = Arc::new(proxies);
        self
    }

    /// Serves `service` on the connections `listener` accepts; `.await` it
    /// (it runs until dropped), or add a shutdown signal with
    /// [`Serve::with_graceful_shutdown`].
    pub fn serve<L, S>(&self, listener: L, service: S) -> Serve<L, S>
    where
        L: Listener<Addr = SocketAddr>,
        S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
    {
        Serve {
            server: self.clone(),
            listener,
            service,
        }
    }

    /// Serves one connection from `peer` until it closes, with every
    /// deadline and limit but the connection cap. An error says why the
    /// connection ended early: [`HeaderTimeout`], or hyper's.
    pub async fn serve_connection<I, S>(
        &self,
        io: I,
        peer: SocketAddr,
        service: S,
    ) -> Result<(), BoxError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
    {
        connection::serve(self.clone(), io, peer, service, None).await
    }

    fn timeouts(&self) -> activity::Timeouts {
        activity::Timeouts {
            header_read: self.header_read_timeout,
            idle: self.idle_timeout,
        }
    }
}

/// A server running on a listener; made by [`Server::serve`]. `.await` it.
#[must_use = "a server does nothing unless awaited"]
pub struct Serve<L, S> {
    server: Server,
    listener: L,
    service: S,
}

impl<L, S> Serve<L, S> {
    /// Stops when `signal` resolves: no new connection is accepted,
    /// requests in progress finish (or are cut after the shutdown
    /// timeout), then the future resolves.
    pub fn with_graceful_shutdown<F>(self, signal: F) -> WithGracefulShutdown<L, S, F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        WithGracefulShutdown {
            serve: self,
            signal,
        }
    }
}

impl<L, S> fmt::Debug for Serve<L, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// A server that stops on a signal; made by [`Serve::with_graceful_shutdown`].
/// `.await` it.
#[must_use = "a server does nothing unless awaited"]
pub struct WithGracefulShutdown<L, S, F> {
    serve: Serve<L, S>,
    signal: F,
}

impl<L, S, F> fmt::Debug for WithGracefulShutdown<L, S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithGracefulShutdown")
            .field("server", &self.serve.server)
            .finish_non_exhaustive()
    }
}

impl<L, S> IntoFuture for Serve<L, S>
where
    L: Listener<Addr = SocketAddr>,
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Output = io::Result<()>;
    type IntoFuture = ServeFuture;

    fn into_future(self) -> ServeFuture {
        self.with_graceful_shutdown(std::future::pending())
            .into_future()
    }
}

impl<L, S, F> IntoFuture for WithGracefulShutdown<L, S, F>
where
    L: Listener<Addr = SocketAddr>,
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    type Output = io::Result<()>;
    type IntoFuture = ServeFuture;

    fn into_future(self) -> ServeFuture {
        let Serve {
            server,
            listener,
            service,
        } = self.serve;
        ServeFuture(Box::pin(run(server, listener, service, self.signal)))
    }
}

/// The future of a running server.
#[must_use = "futures do nothing unless polled"]
pub struct ServeFuture(Pin<Box<dyn Future<Output = io::Result<()>> + Send>>);

impl Future for ServeFuture {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for ServeFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeFuture").finish_non_exhaustive()
    }
}

/// The accept loop: one task per connection, each holding one of
/// `max_connections` slots until it ends.
async fn run<L, S, F>(server: Server, mut listener: L, service: S, signal: F) -> io::Result<()>
where
    L: Listener<Addr = SocketAddr>,
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(server.max_connections));
    let (stop, stopped) = watch::channel(false);
    let mut signal = pin!(signal);
    loop {
        // At the cap, accept nothing: new connections wait in the backlog.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the slots are never closed"),
            () = &mut signal => break,
        };
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut signal => break,
        };
        let conn = connection::serve(
            server.clone(),
            io,
            peer,
            service.clone(),
            Some(stopped.clone()),
        );
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(%peer, error = %err, "connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    stop.send_replace(true);
    // Each connection holds its slot until it ends.
    let all = u32::try_from(server.max_connections).expect("at most u32::MAX");
    let _all = slots.acquire_many(all).await;
    Ok(())
}
