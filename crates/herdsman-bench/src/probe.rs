//! Instruments: an inner service that counts its calls, and a poll counter.

use std::{
    convert::Infallible,
    future::{poll_fn, Future},
    pin::{pin, Pin},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, OnceLock,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tower::Service;

/// An inner service standing for a slow upstream: each call counts itself
/// when its future is first polled, sleeps `delay` (real time, on the tokio
/// timer), then answers with the request.
///
/// Calls are counted when the work starts, not in `Service::call`: the
/// `async_singleflight` adapter builds every caller's future but polls only
/// the leader's, and only polled futures reach the upstream.
#[derive(Debug, Clone)]
pub struct Upstream {
    shared: Arc<Shared>,
    delay: Duration,
}

#[derive(Debug, Default)]
struct Shared {
    calls: AtomicUsize,
    first_started: OnceLock<Instant>,
    first_finished: OnceLock<Instant>,
}

impl Upstream {
    /// An upstream whose calls take `delay`.
    pub fn new(delay: Duration) -> Self {
        Upstream {
            shared: Arc::default(),
            delay,
        }
    }

    /// Calls that started so far, over all clones.
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// When the first call started, if one did.
    pub fn first_started(&self) -> Option<Instant> {
        self.shared.first_started.get().copied()
    }

    /// When the first call to finish finished, if one did.
    pub fn first_finished(&self) -> Option<Instant> {
        self.shared.first_finished.get().copied()
    }
}

impl Service<u64> for Upstream {
    type Response = u64;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<u64, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        let shared = self.shared.clone();
        let delay = self.delay;
        Box::pin(async move {
            shared.calls.fetch_add(1, Ordering::SeqCst);
            shared.first_started.get_or_init(Instant::now);
            tokio::time::sleep(delay).await;
            shared.first_finished.get_or_init(Instant::now);
            Ok(req)
        })
    }
}

/// Drives `fut` to completion and also returns how many times it was polled.
///
/// Spawned as a task's whole future, this counts the task's polls: a waiter
/// that parks properly is polled about twice (join, then wake-up); one that
/// re-wakes itself is polled thousands of times.
pub async fn count_polls<F: Future>(fut: F) -> (F::Output, u64) {
    let mut fut = pin!(fut);
    let mut polls = 0;
    let out = poll_fn(|cx| {
        polls += 1;
        fut.as_mut().poll(cx)
    })
    .await;
    (out, polls)
}
