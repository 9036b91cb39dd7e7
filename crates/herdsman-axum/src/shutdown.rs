//! Graceful shutdown: one signal that the server and the event streams
//! both watch.
//!
//! A server told to stop ([`Serve::with_graceful_shutdown`]) stops
//! accepting and lets requests in progress finish; but an event stream
//! never finishes on its own, so without more it would hold its
//! connection until the shutdown timeout cuts it, and its client would
//! learn of the stop only as a broken connection. A [`Live`] given the
//! same [`Shutdown`] ([`Live::with_shutdown`]) ends each of its streams
//! at once with a last event,
//!
//! ```text
//! event: shutdown
//! data: {"retry_ms":1000}
//! retry: 1000
//! ```
//!
//! so that a browser's `EventSource` reconnects a second later, through
//! the load balancer to another replica (or to this one restarted), and
//! the server's shutdown waits only for the one-shot requests.
//!
//! ```no_run
//! use herdsman_axum::{shutdown::{signal, Shutdown}, Server};
//! # async fn run(app: axum::Router, listener: tokio::net::TcpListener) -> std::io::Result<()> {
//! let shutdown = Shutdown::new();
//! // ... Live::new(..).with_shutdown(shutdown.clone()) in the app ...
//! Server::new()
//!     .serve(listener, app)
//!     .with_graceful_shutdown(async move {
//!         signal().await;
//!         shutdown.trigger();
//!     })
//!     .await
//! # }
//! ```
//!
//! [`Serve::with_graceful_shutdown`]: crate::serve::Serve::with_graceful_shutdown
//! [`Live`]: crate::Live
//! [`Live::with_shutdown`]: crate::Live::with_shutdown

use std::{fmt, future::Future, sync::Arc, time::Duration};

use tokio::sync::watch;

/// The `retry:` of the last event a [`Live`](crate::Live) stream sends on
/// shutdown: how long a browser waits before it reconnects.
pub const SHUTDOWN_RETRY: Duration = Duration::from_secs(1);

/// A shutdown signal: triggered once, watched by any number of tasks.
/// Clones share it.
#[derive(Clone)]
pub struct Shutdown {
    sender: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            sender: Arc::new(watch::Sender::new(false)),
        }
    }
}

impl Shutdown {
    /// A signal not triggered yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Triggers it: every [`triggered`](Self::triggered) future resolves,
    /// now and from now on.
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    /// Whether it was triggered.
    pub fn is_triggered(&self) -> bool {
        *self.sender.borrow()
    }

    /// Resolves once it is (or was) triggered; never if every clone is
    /// dropped untriggered.
    pub fn triggered(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut receiver = self.sender.subscribe();
        async move {
            if receiver.wait_for(|triggered| *triggered).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .finish()
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (what `docker stop`, systemd and
/// Kubernetes send; a container's first process that does not handle it
/// is killed after the grace period instead). Elsewhere than Unix, on
/// Ctrl-C. If the handlers cannot be installed it never resolves.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut interrupt), Ok(mut terminate)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::warn!("herdsman: cannot listen for SIGINT and SIGTERM");
            return std::future::pending().await;
        };
        let interrupted = interrupt.recv();
        let terminated = terminate.recv();
        let mut interrupted = std::pin::pin!(interrupted);
        let mut terminated = std::pin::pin!(terminated);
        std::future::poll_fn(|cx| {
            if interrupted.as_mut().poll(cx).is_ready() || terminated.as_mut().poll(cx).is_ready() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_trigger_reaches_watchers_from_before_and_after() {
        let shutdown = Shutdown::new();
        let before = tokio::spawn(shutdown.clone().triggered());
        assert!(!shutdown.is_triggered());
        shutdown.trigger();
        before.await.unwrap();
        shutdown.triggered().await;
        assert!(shutdown.clone().is_triggered());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_signal_never_fires() {
        let watcher = Shutdown::new().triggered();
        let waited = tokio::time::timeout(Duration::from_secs(60), watcher).await;
        assert!(waited.is_err());
    }
}
