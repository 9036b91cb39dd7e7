//! Model checks of Dedup's hand-written synchronization with loom: every
//! interleaving of the shard and flight locks across two threads.
//!
//! Run with:
//! `RUSTFLAGS="--cfg herdsman_loom" cargo test -p herdsman --test loom --release`
#![cfg(herdsman_loom)]

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use herdsman::{
    backend::{Answer, FlightBackend, Lead},
    dedup::DedupLayer,
    key::Key,
    BoxError,
};
use loom::{future::block_on, thread};
use tower::{Layer, Service};

/// Pending once (waking itself), then ready: leaves a window for a second
/// caller to join. Counts calls and drops.
#[derive(Clone, Default)]
struct Upstream {
    calls: Arc<AtomicUsize>,
    drops: Arc<AtomicUsize>,
}

struct YieldOnce {
    yielded: bool,
    drops: Arc<AtomicUsize>,
}

impl Future for YieldOnce {
    type Output = Result<u32, std::convert::Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.yielded {
            return Poll::Ready(Ok(7));
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Drop for YieldOnce {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

impl Service<u8> for Upstream {
    type Response = u32;
    type Error = std::convert::Infallible;
    type Future = YieldOnce;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: u8) -> YieldOnce {
        self.calls.fetch_add(1, Ordering::SeqCst);
        YieldOnce {
            yielded: false,
            drops: self.drops.clone(),
        }
    }
}

type Fut = Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

fn poll_once(fut: &mut Fut) -> Poll<Result<u32, BoxError>> {
    let waker = futures_util::task::noop_waker();
    fut.as_mut().poll(&mut Context::from_waker(&waker))
}

type KeyedLayer = DedupLayer<fn(&u8) -> Option<Key>>;

fn setup() -> (KeyedLayer, Upstream) {
    fn key(k: &u8) -> Option<Key> {
        Some(Key::from(u64::from(*k)))
    }
    (
        DedupLayer::new(key as fn(&u8) -> Option<Key>),
        Upstream::default(),
    )
}

#[test]
fn two_concurrent_callers_both_get_the_result_and_the_map_drains() {
    loom::model(|| {
        let (layer, upstream) = setup();
        let mut a = layer.layer(upstream.clone());
        let mut b = layer.layer(upstream.clone());
        let t = thread::spawn(move || block_on(a.call(1)).unwrap());
        assert_eq!(block_on(b.call(1)).unwrap(), 7);
        assert_eq!(t.join().unwrap(), 7);
        assert_eq!(layer.handle().stats().entries, 0);
        let calls = upstream.calls.load(Ordering::SeqCst);
        assert!((1..=2).contains(&calls));
        assert_eq!(upstream.drops.load(Ordering::SeqCst), calls);
    });
}

#[test]
fn a_driver_dropped_while_a_follower_joins_never_strands_it() {
    loom::model(|| {
        let (layer, upstream) = setup();
        let mut a = layer.layer(upstream.clone());
        let mut b = layer.layer(upstream.clone());
        let t = thread::spawn(move || {
            let mut fut: Fut = Box::pin(a.call(1));
            let _ = poll_once(&mut fut);
            drop(fut);
        });
        assert_eq!(block_on(b.call(1)).unwrap(), 7);
        t.join().unwrap();
        assert_eq!(layer.handle().stats().entries, 0);
        let calls = upstream.calls.load(Ordering::SeqCst);
        assert!((1..=2).contains(&calls));
        assert_eq!(upstream.drops.load(Ordering::SeqCst), calls);
    });
}

#[test]
fn driver_and_follower_both_dropped_leave_nothing_behind() {
    loom::model(|| {
        let (layer, upstream) = setup();
        let mut a = layer.layer(upstream.clone());
        let mut b = layer.layer(upstream.clone());
        let t = thread::spawn(move || {
            let mut fut: Fut = Box::pin(a.call(1));
            let _ = poll_once(&mut fut);
        });
        let mut fut: Fut = Box::pin(b.call(1));
        let _ = poll_once(&mut fut);
        drop(fut);
        t.join().unwrap();
        assert_eq!(layer.handle().stats().entries, 0);
        let calls = upstream.calls.load(Ordering::SeqCst);
        assert_eq!(
            upstream.drops.load(Ordering::SeqCst),
            calls,
            "every inner future dropped"
        );
    });
}

/// A flight backend whose first answer never comes (the cluster is slow),
/// and which lets every later leader call.
#[derive(Clone, Default)]
struct SlowCluster {
    asked: Arc<std::sync::atomic::AtomicBool>,
}

impl FlightBackend<u32> for SlowCluster {
    const ANSWERS: bool = false;

    fn lead(&self, _: &Key) -> Answer<Lead<u32>> {
        if self.asked.swap(true, Ordering::SeqCst) {
            return Answer::Now(Lead::Call);
        }
        Answer::Later(Box::pin(std::future::pending()))
    }

    fn finish(&self, _: &Key, _: Option<&u32>) {}
}

#[test]
fn a_leader_dropped_while_it_waits_for_the_cluster_never_strands_a_follower() {
    loom::model(|| {
        let (layer, upstream) = setup();
        let layer = layer.with_flight_backend(SlowCluster::default());
        let mut a = layer.layer(upstream.clone());
        let mut b = layer.layer(upstream.clone());
        // `a` leads, and waits for the cluster.
        let mut leader: Fut = Box::pin(a.call(1));
        let t = thread::spawn(move || {
            let _ = poll_once(&mut leader);
            drop(leader);
        });
        assert_eq!(block_on(b.call(1)).unwrap(), 7);
        t.join().unwrap();
        assert_eq!(layer.handle().stats().entries, 0);
        // `b` made the only call: as a follower the leader let go, or as
        // the next leader.
        assert_eq!(upstream.calls.load(Ordering::SeqCst), 1);
        assert_eq!(upstream.drops.load(Ordering::SeqCst), 1);
    });
}
