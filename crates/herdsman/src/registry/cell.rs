//! The latest update of one key and the subscribers waiting for the next.
//!
//! One mutex guards the latest [`Update`] and a slab of wakers, one slot per
//! subscriber. A subscriber remembers the last version it saw: polling it
//! returns the latest update if its version is newer, and otherwise parks the
//! subscriber's waker in its slot. Publishing replaces the update and takes
//! every parked waker, which are woken after the lock is released. So a
//! subscriber never sees a version twice or goes backwards, and a slow one
//! skips to the latest instead of buffering.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use slab::Slab;
use tokio::time::Instant;

use crate::{
    error::SharedError,
    sync::{Mutex, MutexGuard},
};

/// One value a subscription yields: the result of a poll that changed
/// something, its version and when it was fetched.
///
/// Cloning is an `Arc` increment.
pub struct Update<T> {
    inner: Arc<UpdateInner<T>>,
}

struct UpdateInner<T> {
    version: u64,
    fetched_at: Instant,
    result: Result<T, SharedError>,
    /// For an error: the last successful value before it.
    last_good: Option<T>,
}

impl<T> Update<T> {
    /// The version: 1 for the key's first result, one more for each result
    /// that differed from the one before.
    pub fn version(&self) -> u64 {
        self.inner.version
    }

    /// When the result was fetched.
    pub fn fetched_at(&self) -> Instant {
        self.inner.fetched_at
    }

    /// The polled value, or the error shared by every subscriber.
    pub fn result(&self) -> &Result<T, SharedError> {
        &self.inner.result
    }

    /// The polled value, if the poll succeeded.
    pub fn value(&self) -> Option<&T> {
        self.inner.result.as_ref().ok()
    }

    /// The error, if the poll failed.
    pub fn error(&self) -> Option<&SharedError> {
        self.inner.result.as_ref().err()
    }

    /// The latest successful value as of this update: the value itself, or,
    /// after an error, the last good value before it (if any).
    pub fn last_good(&self) -> Option<&T> {
        self.value().or(self.inner.last_good.as_ref())
    }
}

impl<T> Clone for Update<T> {
    fn clone(&self) -> Self {
        Update {
            inner: self.inner.clone(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Update<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Update")
            .field("version", &self.inner.version)
            .field("fetched_at", &self.inner.fetched_at)
            .field("result", &self.inner.result)
            .finish()
    }
}

/// What a poll is compared by: the value's fingerprint, or the error's
/// message (the same failure again is no news).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fp {
    Ok(u64),
    Err(String),
}

pub(crate) struct Cell<T> {
    inner: Mutex<Inner<T>>,
}

struct Inner<T> {
    latest: Option<Update<T>>,
    fingerprint: Option<Fp>,
    waiters: Slab<Option<Waker>>,
    /// The poll loop is gone for good: subscribers end after the latest.
    closed: bool,
}

impl<T> Cell<T> {
    pub(crate) fn new() -> Self {
        Cell {
            inner: Mutex::new(Inner {
                latest: None,
                fingerprint: None,
                waiters: Slab::new(),
                closed: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        // Nothing that can panic runs under this lock except allocation.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a new subscriber.
    pub(crate) fn register(&self) -> usize {
        self.lock().waiters.insert(None)
    }

    /// Frees a subscriber's slot (dropping its waker outside the lock).
    pub(crate) fn deregister(&self, slot: usize) {
        let waker = self.lock().waiters.try_remove(slot);
        drop(waker);
    }

    /// The latest update newer than `seen`, or parks `cx`'s waker in `slot`.
    pub(crate) fn poll_next(
        &self,
        slot: usize,
        seen: &mut u64,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Update<T>>> {
        let mut inner = self.lock();
        if let Some(update) = inner.latest.as_ref().filter(|u| u.version() > *seen) {
            *seen = update.version();
            return Poll::Ready(Some(update.clone()));
        }
        if inner.closed {
            return Poll::Ready(None);
        }
        let parked = inner
            .waiters
            .get_mut(slot)
            .expect("a live subscription keeps its slot");
        let old = match parked {
            Some(w) if w.will_wake(cx.waker()) => None,
            _ => parked.replace(cx.waker().clone()),
        };
        drop(inner);
        drop(old);
        Poll::Pending
    }

    /// The latest update, if any.
    pub(crate) fn current(&self) -> Option<Update<T>> {
        self.lock().latest.clone()
    }

    /// The latest value if the latest poll succeeded.
    pub(crate) fn current_value(&self) -> Option<T>
    where
        T: Clone,
    {
        self.lock().latest.as_ref()?.value().cloned()
    }

    pub(crate) fn waiters(&self) -> usize {
        self.lock().waiters.capacity()
    }

    /// Publishes `result` unless its fingerprint equals the latest's; returns
    /// the new version, or `None` if nothing changed.
    pub(crate) fn publish(
        &self,
        result: Result<T, SharedError>,
        fingerprint: Fp,
        fetched_at: Instant,
    ) -> Option<u64>
    where
        T: Clone,
    {
        let mut inner = self.lock();
        if inner.fingerprint.as_ref() == Some(&fingerprint) {
            return None;
        }
        let last_good = match (&result, &inner.latest) {
            (Ok(_), _) | (Err(_), None) => None,
            (Err(_), Some(prev)) => prev.last_good().cloned(),
        };
        let version = inner.latest.as_ref().map_or(0, Update::version) + 1;
        inner.latest = Some(Update {
            inner: Arc::new(UpdateInner {
                version,
                fetched_at,
                result,
                last_good,
            }),
        });
        inner.fingerprint = Some(fingerprint);
        let wakers = take_wakers(&mut inner);
        drop(inner);
        wakers.into_iter().for_each(Waker::wake);
        Some(version)
    }

    /// Marks the loop gone and wakes every subscriber, so that none waits
    /// for an update that will not come.
    pub(crate) fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        let wakers = take_wakers(&mut inner);
        drop(inner);
        wakers.into_iter().for_each(Waker::wake);
    }
}

fn take_wakers<T>(inner: &mut Inner<T>) -> Vec<Waker> {
    inner
        .waiters
        .iter_mut()
        .filter_map(|(_, waker)| waker.take())
        .collect()
}

/// Model checks of the cell with loom: a publish racing a subscriber that
/// parks, one that reads twice, and one that leaves.
///
/// `RUSTFLAGS="--cfg herdsman_loom" cargo test -p herdsman --lib --release loom`
#[cfg(all(test, herdsman_loom))]
mod loom {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        task::Wake,
    };

    use super::*;

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn publisher(cell: &Arc<Cell<u32>>, values: &'static [u32], at: Instant) -> impl FnOnce() {
        let cell = cell.clone();
        move || {
            for &v in values {
                cell.publish(Ok(v), Fp::Ok(u64::from(v)), at);
            }
        }
    }

    #[test]
    fn a_subscriber_that_parks_during_a_publish_is_woken_or_sees_it() {
        let at = Instant::now();
        ::loom::model(move || {
            let cell = Arc::new(Cell::<u32>::new());
            let slot = cell.register();
            let publishing = ::loom::thread::spawn(publisher(&cell, &[7], at));
            let wakes = Arc::new(Wakes::default());
            let waker = Waker::from(wakes.clone());
            let mut cx = Context::from_waker(&waker);
            let mut seen = 0;
            let first = cell.poll_next(slot, &mut seen, &mut cx);
            publishing.join().unwrap();
            match first {
                Poll::Ready(Some(update)) => assert_eq!(update.version(), 1),
                Poll::Pending => {
                    assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "a lost wake-up");
                    let again = cell.poll_next(slot, &mut seen, &mut cx);
                    assert!(matches!(again, Poll::Ready(Some(ref u)) if u.version() == 1));
                }
                Poll::Ready(None) => panic!("the cell was not closed"),
            }
            assert!(
                cell.poll_next(slot, &mut seen, &mut cx).is_pending(),
                "seen twice"
            );
        });
    }

    #[test]
    fn a_reader_racing_two_publishes_never_goes_backwards() {
        let at = Instant::now();
        ::loom::model(move || {
            let cell = Arc::new(Cell::<u32>::new());
            let slot = cell.register();
            let publishing = ::loom::thread::spawn(publisher(&cell, &[1, 2], at));
            let waker = Waker::from(Arc::new(Wakes::default()));
            let mut cx = Context::from_waker(&waker);
            let mut seen = 0;
            let mut versions = Vec::new();
            for _ in 0..2 {
                if let Poll::Ready(Some(u)) = cell.poll_next(slot, &mut seen, &mut cx) {
                    versions.push(u.version());
                }
            }
            publishing.join().unwrap();
            if let Poll::Ready(Some(u)) = cell.poll_next(slot, &mut seen, &mut cx) {
                versions.push(u.version());
            }
            assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
            assert_eq!(versions.last(), Some(&2));
        });
    }

    #[test]
    fn a_subscriber_leaving_during_a_publish_frees_its_slot() {
        let at = Instant::now();
        ::loom::model(move || {
            let cell = Arc::new(Cell::<u32>::new());
            let slot = cell.register();
            let waker = Waker::from(Arc::new(Wakes::default()));
            let mut seen = 0;
            assert!(cell
                .poll_next(slot, &mut seen, &mut Context::from_waker(&waker))
                .is_pending());
            let publishing = ::loom::thread::spawn(publisher(&cell, &[1], at));
            cell.deregister(slot);
            publishing.join().unwrap();
            assert_eq!(cell.lock().waiters.len(), 0);
            assert_eq!(cell.current().map(|u| u.version()), Some(1));
        });
    }
}
