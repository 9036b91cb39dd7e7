//! What one connection is doing, and the deadline that follows from it.

use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use http::Version;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::Notify,
    time::Instant,
};

/// The deadlines of a connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    pub(super) header_read: Duration,
    pub(super) idle: Duration,
}

/// What happens when a deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expiry {
    /// A request head took too long: close at once.
    Head,
    /// Nothing happened for the idle timeout: close gracefully.
    Idle,
    /// Closing, and the time allowed is over: close at once.
    Closed,
}

/// The activity of one connection, shared by its IO (bytes read and
/// written), its requests (started, finished) and its watcher (which
/// closes it when a deadline passes).
///
/// A mutex: it is taken once per read and write of the connection and per
/// request, never contended but by the requests of one HTTP/2 connection.
#[derive(Debug)]
pub(super) struct Activity {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug)]
struct State {
    /// Requests whose response has not been sent whole.
    in_flight: usize,
    /// When `in_flight` last became zero (or the connection opened).
    free_since: Instant,
    /// When a byte was last read or written.
    last_io: Instant,
    /// When the request head being read started: the connection's
    /// opening for the first, the first byte read while no request was in
    /// progress for the next ones. `None` while waiting for one.
    head_started: Option<Instant>,
    /// HTTP/2: bytes between requests are control frames, not a head.
    multiplexed: bool,
    closing: Option<Closing>,
}

#[derive(Debug, Clone, Copy)]
struct Closing {
    since: Instant,
    /// When requests still in progress are cut (server shutdown); `None`
    /// lets them finish (an idle connection closing).
    cut_at: Option<Instant>,
}

impl Activity {
    pub(super) fn new() -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Activity {
            state: Mutex::new(State {
                in_flight: 0,
                free_since: now,
                last_io: now,
                head_started: Some(now),
                multiplexed: false,
                closing: None,
            }),
            changed: Notify::new(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read(&self, n: usize) {
        if n == 0 {
            return;
        }
        let now = Instant::now();
        let mut state = self.state();
        state.last_io = now;
        if state.in_flight == 0 && state.head_started.is_none() && !state.multiplexed {
            state.head_started = Some(now);
            drop(state);
            self.changed.notify_one();
        }
    }

    fn wrote(&self, n: usize) {
        if n > 0 {
            self.state().last_io = Instant::now();
        }
    }

    /// A request head was read: the request is in progress until the
    /// returned guard drops (with its response body).
    pub(super) fn request(self: &Arc<Self>, version: Version) -> InFlight {
        let mut state = self.state();
        state.in_flight += 1;
        state.head_started = None;
        state.multiplexed |= version == Version::HTTP_2;
        InFlight {
            activity: Arc::clone(self),
        }
    }

    /// The connection is closing: requests in progress may finish (until
    /// `cut_after`, if set); once none is, it gets `header_read` more.
    pub(super) fn close(&self, cut_after: Option<Duration>) {
        let now = Instant::now();
        let mut state = self.state();
        if state.closing.is_none() {
            state.closing = Some(Closing {
                since: now,
                cut_at: cut_after.map(|after| now + after),
            });
        }
    }

    /// Resolves when the deadline may have moved earlier.
    pub(super) async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The next deadline, if any: none while a request is in progress.
    pub(super) fn deadline(&self, t: &Timeouts) -> Option<(Instant, Expiry)> {
        let state = self.state();
        let quiet_since = state.free_since.max(state.last_io);
        if let Some(closing) = state.closing {
            let cut = closing.cut_at.map(|at| (at, Expiry::Closed));
            let finished = (state.in_flight == 0).then(|| {
                (
                    quiet_since.max(closing.since) + t.header_read,
                    Expiry::Closed,
                )
            });
            return cut.into_iter().chain(finished).min_by_key(|(at, _)| *at);
        }
        if state.in_flight > 0 {
            return None;
        }
        Some(match state.head_started {
            Some(started) => (started + t.header_read, Expiry::Head),
            None => (quiet_since + t.idle, Expiry::Idle),
        })
    }
}

/// One request in progress; dropped with its response body.
#[derive(Debug)]
pub(super) struct InFlight {
    activity: Arc<Activity>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.activity.state();
        state.in_flight -= 1;
        if state.in_flight == 0 {
            state.free_since = Instant::now();
            drop(state);
            self.activity.changed.notify_one();
        }
    }
}

pin_project_lite::pin_project! {
    /// An IO that reports its reads and writes to an [`Activity`].
    #[derive(Debug)]
    pub(super) struct Watched<I> {
        #[pin]
        io: I,
        activity: Arc<Activity>,
    }
}

impl<I> Watched<I> {
    pub(super) fn new(io: I, activity: Arc<Activity>) -> Self {
        Watched { io, activity }
    }
}

impl<I: AsyncRead> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let poll = this.io.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            this.activity.read(buf.filled().len() - before);
        }
        poll
    }
}

impl<I: AsyncWrite> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let poll = this.io.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            this.activity.wrote(n);
        }
        poll
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let poll = this.io.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = poll {
            this.activity.wrote(n);
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}
