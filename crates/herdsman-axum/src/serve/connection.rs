//! One connection: hyper-util's HTTP/1 and HTTP/2 server, watched for its
//! deadlines.

use std::{convert::Infallible, net::SocketAddr, pin::pin, sync::Arc};

use axum::{extract::Request, response::Response, BoxError};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::watch,
    time::{self, Instant},
};
use tower_service::Service;

use super::{
    activity::{Activity, Expiry, Watched},
    error::HeaderTimeout,
    requests::Requests,
    Server,
};

/// hyper's smallest HTTP/1 buffer (it panics below it).
const MIN_BUF_SIZE: usize = 8 * 1024;

/// Serves `io` until it closes, a deadline passes, or `stop` turns true
/// (then requests in progress get the shutdown timeout).
pub(super) async fn serve<I, S>(
    server: Server,
    io: I,
    peer: SocketAddr,
    service: S,
    mut stop: Option<watch::Receiver<bool>>,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let activity = Activity::new();
    let requests = Requests::new(
        service,
        peer,
        Arc::clone(&activity),
        server.body_read_timeout,
        Arc::clone(&server.trusted_proxies),
    );
    let io = TokioIo::new(Watched::new(io, Arc::clone(&activity)));
    let builder = builder(&server);
    let mut conn =
        pin!(builder.serve_connection_with_upgrades(io, TowerToHyperService::new(requests)));
    let timeouts = server.timeouts();
    let mut closing = false;
    loop {
        let deadline = activity.deadline(&timeouts);
        let at = deadline.map_or_else(Instant::now, |(at, _)| at);
        tokio::select! {
            result = conn.as_mut() => return result,
            () = activity.changed() => {}
            () = time::sleep_until(at), if deadline.is_some() => {
                match activity.deadline(&timeouts) {
                    Some((at, expiry)) if at <= Instant::now() => match expiry {
                        // Dropping the connection closes it.
                        Expiry::Head => return Err(HeaderTimeout.into()),
                        Expiry::Closed => return Ok(()),
                        Expiry::Idle => {
                            activity.close(None);
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                    },
                    // Activity moved the deadline.
                    _ => {}
                }
            }
            () = stopping(&mut stop), if !closing => {
                activity.close(Some(server.shutdown_timeout));
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// hyper-util's server for HTTP/1 and HTTP/2 with the server's limits.
fn builder(server: &Server) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // The header-read timeout is the watcher's: hyper's would start
        // only after protocol detection (the first bytes), and would also
        // cut kept-alive connections after it instead of the idle timeout.
        .header_read_timeout(None)
        // A request head must fit in the read buffer: past it, `431`.
        .max_buf_size(server.max_header_bytes.max(MIN_BUF_SIZE));
    builder
        .http2()
        .max_concurrent_streams(server.max_concurrent_streams)
        .max_header_list_size(u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX))
        // Extended CONNECT, for WebSockets over HTTP/2 (as axum::serve).
        .enable_connect_protocol();
    builder
}

/// Resolves when `stop` turns true or its sender is gone (the server was
/// dropped); never without one.
async fn stopping(stop: &mut Option<watch::Receiver<bool>>) {
    match stop {
        Some(stop) => {
            let _ = stop.wait_for(|stop| *stop).await;
        }
        None => std::future::pending().await,
    }
}
