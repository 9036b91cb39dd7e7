//! What herdsman's integration tests share: letting paused time pass and
//! spawned tasks run, waiting for a condition without sleeping for real,
//! upstreams that count or log their calls, and an observer that records
//! the layers' events. [`http`] holds the HTTP request and response
//! helpers.
//!
//! Each file under `tests/` includes this module with `mod support;`
//! (cargo's convention for code shared by integration tests: a folder's
//! `mod.rs` is not a test target of its own). Every test runs on tokio's
//! paused clock (`#[tokio::test(start_paused = true)]`): nothing here sleeps
//! for real, and a deadline passes in no wall-clock time.
//!
//! The workspace's `tests` crate has the end-to-end counterparts (real
//! servers, a gated `Probe`); this module stays within one process and the
//! `herdsman` crate, so the core's tests do not depend on it.

// Each test file is its own crate and uses only some of these helpers; the
// others would be reported as dead code in that crate.
#![allow(dead_code)]

pub(crate) mod http;

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use futures_util::FutureExt;
use herdsman::{
    class::Class,
    event::{Event, Observer, Rejection},
};
use tokio::time::{self, Instant};
use tower::Service;
use tower_test::mock::{Handle, SendResponse};

/// One second.
pub(crate) const SEC: Duration = Duration::from_secs(1);

/// Lets spawned tasks run until they are all parked: yields to the
/// scheduler a few times, so that a task woken by another's progress runs
/// too. Time does not move.
pub(crate) async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// Lets `d` of paused time pass, firing every timer due by then, and then
/// lets the tasks they woke run ([`settle`]).
pub(crate) async fn pass(d: Duration) {
    time::sleep(d).await;
    settle().await;
}

/// Waits until `cond` holds, checking it after every millisecond of paused
/// time, and fails saying what it waited for if `within` passes first.
///
/// For state the test cannot be notified of (a layer's counters, a
/// background task's effect). Results are awaited, never waited for.
pub(crate) async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let poll = async {
        while !cond() {
            time::sleep(Duration::from_millis(1)).await;
        }
    };
    if time::timeout(within, poll).await.is_err() {
        panic!("waited {within:?} (paused time) until {what}");
    }
}

/// The gaps between successive instants, such as the calls of a
/// [`CallLog`].
pub(crate) fn gaps(calls: &[Instant]) -> Vec<Duration> {
    calls.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Takes the request waiting at a `tower-test` mock, failing if none has
/// reached it yet. Call it after [`settle`]: a missing request then fails
/// the test instead of hanging it (`assert_request_eq!` awaits one).
pub(crate) fn waiting_request<Req, Res>(handle: &mut Handle<Req, Res>) -> (Req, SendResponse<Res>) {
    handle
        .next_request()
        .now_or_never()
        .flatten()
        .expect("a request waiting at the upstream")
}

/// Asserts that no request has reached a `tower-test` mock since the last
/// one the test took from its handle.
pub(crate) fn assert_no_request<Req, Res>(handle: &mut Handle<Req, Res>) {
    assert!(
        handle.next_request().now_or_never().is_none(),
        "no request reached the upstream"
    );
}

/// A count of an upstream's calls, shared by the upstream and the test
/// (clones share the count).
#[derive(Clone, Debug, Default)]
pub(crate) struct Calls(Arc<AtomicUsize>);

impl Calls {
    /// Counts a call and returns its number, counting from 1.
    pub(crate) fn next(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The number of calls so far.
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// A log of an upstream's calls: what each asked for (a request, a path)
/// and when, on the paused clock. Clones share the log.
#[derive(Clone, Debug, Default)]
pub(crate) struct CallLog(Arc<Mutex<Vec<(String, Instant)>>>);

impl CallLog {
    /// Logs a call for `what`, now, and returns its number, counting from 1.
    pub(crate) fn record(&self, what: impl Into<String>) -> usize {
        let mut log = self.0.lock().unwrap();
        log.push((what.into(), Instant::now()));
        log.len()
    }

    /// The number of calls so far.
    pub(crate) fn calls(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// When the calls for `what` were made, in order.
    pub(crate) fn calls_to(&self, what: &str) -> Vec<Instant> {
        let log = self.0.lock().unwrap();
        log.iter()
            .filter(|(w, _)| w == what)
            .map(|(_, at)| *at)
            .collect()
    }
}

/// The error of an [`Upstream`] that fails: "upstream down".
#[derive(Debug)]
pub(crate) struct UpstreamDown;

impl std::fmt::Display for UpstreamDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream down")
    }
}

impl std::error::Error for UpstreamDown {}

/// An upstream for `&'static str` requests that counts its calls and
/// answers `"{req}#{n}"` after `delay`, `n` being the call's number from 1.
/// It fails with [`UpstreamDown`] for requests starting with "fail", and
/// for every request while it is [set down](Upstream::set_down). Clones
/// share the count and the switch.
#[derive(Clone, Debug)]
pub(crate) struct Upstream {
    calls: Calls,
    down: Arc<AtomicBool>,
    delay: Duration,
}

impl Upstream {
    /// An upstream that is up and answers after `delay`.
    pub(crate) fn new(delay: Duration) -> Self {
        Upstream {
            calls: Calls::default(),
            down: Arc::default(),
            delay,
        }
    }

    /// The number of calls so far.
    pub(crate) fn calls(&self) -> usize {
        self.calls.get()
    }

    /// Makes every call fail (`true`) or only those for "fail…" (`false`).
    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

impl Service<&'static str> for Upstream {
    type Response = String;
    type Error = UpstreamDown;
    type Future = Pin<Box<dyn Future<Output = Result<String, UpstreamDown>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), UpstreamDown>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: &'static str) -> Self::Future {
        let n = self.calls.next();
        let down = self.down.load(Ordering::SeqCst);
        let delay = self.delay;
        Box::pin(async move {
            time::sleep(delay).await;
            if down || req.starts_with("fail") {
                Err(UpstreamDown)
            } else {
                Ok(format!("{req}#{n}"))
            }
        })
    }
}

/// An observer that records every event it is given, with its class, in
/// order. Hand a layer an `Arc<Recorder>` clone with `with_observer`.
#[derive(Debug, Default)]
pub(crate) struct Recorder(Mutex<Vec<(Class, Event)>>);

impl Observer for Recorder {
    fn observe(&self, class: &Class, event: Event) {
        self.0.lock().unwrap().push((class.clone(), event));
    }
}

impl Recorder {
    /// The events recorded since the last `take`, emptying the record.
    pub(crate) fn take(&self) -> Vec<(Class, Event)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// How many times `event` was recorded for class `class`.
    pub(crate) fn count(&self, class: &str, event: &Event) -> usize {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter(|(c, e)| c.as_str() == class && e == event)
            .count()
    }

    /// The rejections recorded, with their classes, in order.
    pub(crate) fn rejections(&self) -> Vec<(Class, Rejection)> {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter_map(|(c, e)| match e {
                Event::Rejected(r) => Some((c.clone(), *r)),
                _ => None,
            })
            .collect()
    }
}
