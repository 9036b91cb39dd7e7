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
    fmt, mem,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use slab::Slab;
use tokio::time::Instant;

use super::memory::{ARC_BYTES, ERROR_BYTES};
use crate::{
    error::SharedError,
    stable_hash::stable_hash,
    sync::{Mutex, MutexGuard},
};

/// Bytes of one waker slot in the slab: the waker and the slab's tag.
pub(crate) const SLOT_BYTES: usize = mem::size_of::<(usize, Option<Waker>)>();

/// One value a subscription yields: the result of a poll that changed
/// something, its version, its fingerprint and when it was fetched.
///
/// Cloning is an `Arc` increment.
pub struct Update<T> {
    inner: Arc<UpdateInner<T>>,
}

struct UpdateInner<T> {
    version: u64,
    /// Bytes this update's allocation holds, its value's included (not
    /// its good update's).
    bytes: usize,
    fetched_at: Instant,
    result: Result<T, SharedError>,
    fingerprint: u64,
    /// For an error: the last successful update before it, or the stale
    /// copy the failed poll was answered with.
    good: Option<Update<T>>,
}

impl<T> Update<T> {
    /// `held` is what the value holds, its inline size included (the share
    /// policy's [`held_bytes`](crate::share::Share::held_bytes)); ignored
    /// for an error.
    fn new(
        version: u64,
        fetched_at: Instant,
        result: Result<T, SharedError>,
        fingerprint: u64,
        good: Option<Update<T>>,
        held: usize,
    ) -> Self {
        let node = mem::size_of::<UpdateInner<T>>() + ARC_BYTES;
        let bytes = match result {
            Ok(_) => node + held.saturating_sub(mem::size_of::<T>()),
            Err(_) => node + ERROR_BYTES,
        };
        Update {
            inner: Arc::new(UpdateInner {
                version,
                bytes,
                fetched_at,
                result,
                fingerprint,
                good,
            }),
        }
    }

    /// The version: 1 for the first result of the key's loop, one more for
    /// each result that differed from the one before.
    ///
    /// It orders the updates of one loop in this process only, and starts
    /// again at 1 when the loop does: never show it to clients as an id.
    /// [`fingerprint`](Self::fingerprint) identifies the content.
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

    /// The value's [`Fingerprint`](super::Fingerprint), computed once when
    /// it was polled; for an error, a stable hash of the error's message.
    ///
    /// With a fingerprint that is stable across processes (such as
    /// [`HttpFingerprint`][super::HttpFingerprint]'s), equal fingerprints
    /// mean equal content in any process, so it can serve as an `ETag` or
    /// an SSE id.
    ///
    #[cfg_attr(
        not(feature = "http"),
        doc = "[super::HttpFingerprint]: crate#feature-flags"
    )]
    pub fn fingerprint(&self) -> u64 {
        self.inner.fingerprint
    }

    /// The good update as of this one: this update if its poll succeeded;
    /// after a failure, the last successful update before it, or the stale
    /// copy the failed poll was answered with
    /// ([`StaleAnswer`](super::StaleAnswer)); `None` if there is none.
    pub fn good(&self) -> Option<&Update<T>> {
        match self.inner.result {
            Ok(_) => Some(self),
            Err(_) => self.inner.good.as_ref(),
        }
    }

    /// The latest good value as of this update: the value itself, or, after
    /// an error, that of [`good`](Self::good).
    pub fn last_good(&self) -> Option<&T> {
        self.good().and_then(Update::value)
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
            .field(
                "fingerprint",
                &format_args!("{:016x}", self.inner.fingerprint),
            )
            .field("result", &self.inner.result)
            .finish()
    }
}

/// What one poll produced, as the loop hands it to the cell. Each value
/// comes with the bytes it holds.
pub(crate) enum Polled<T> {
    /// A good value, its fingerprint and its bytes.
    Value {
        value: T,
        fingerprint: u64,
        bytes: usize,
    },
    /// A failure; `stale` is the stale copy (its fingerprint and bytes)
    /// that a layer below answered with instead, if any.
    Failed {
        error: SharedError,
        stale: Option<(T, u64, usize)>,
    },
}

impl<T> Polled<T> {
    pub(crate) fn failed(&self) -> bool {
        matches!(self, Polled::Failed { .. })
    }
}

/// What a poll is compared by: the value's fingerprint, or the error's
/// message and the stale copy's fingerprint (the same failure again is no
/// news).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Identity {
    Value(u64),
    Failed { message: u64, stale: Option<u64> },
}

pub(crate) struct Cell<T> {
    inner: Mutex<Inner<T>>,
}

struct Inner<T> {
    latest: Option<Update<T>>,
    identity: Option<Identity>,
    waiters: Slab<Option<Waker>>,
    /// The poll loop is gone for good: subscribers end after the latest.
    closed: bool,
}

impl<T> Cell<T> {
    pub(crate) fn new() -> Self {
        Cell {
            inner: Mutex::new(Inner {
                latest: None,
                identity: None,
                waiters: Slab::new(),
                closed: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        // Nothing that can panic runs under this lock except allocation.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a new subscriber, and the bytes the slab grew by.
    pub(crate) fn register(&self) -> (usize, usize) {
        let mut inner = self.lock();
        let before = inner.waiters.capacity();
        let slot = inner.waiters.insert(None);
        let grown = inner.waiters.capacity() - before;
        (slot, grown * SLOT_BYTES)
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

    /// Publishes what a poll produced unless it is the same as the latest
    /// (the same value, or the same failure); returns the new version and
    /// by how many bytes what the cell keeps changed, or `None` if nothing
    /// changed.
    pub(crate) fn publish(&self, polled: Polled<T>, fetched_at: Instant) -> Option<(u64, isize)> {
        // Formatting the error runs user code: not under the lock.
        let (identity, polled) = match polled {
            Polled::Value {
                value,
                fingerprint,
                bytes,
            } => (
                Identity::Value(fingerprint),
                Ok((value, fingerprint, bytes)),
            ),
            Polled::Failed { error, stale } => {
                let message = stable_hash(error.to_string().as_bytes());
                let identity = Identity::Failed {
                    message,
                    stale: stale.as_ref().map(|(_, fp, _)| *fp),
                };
                (identity, Err((error, message, stale)))
            }
        };
        let mut inner = self.lock();
        if inner.identity == Some(identity) {
            return None;
        }
        let version = inner.latest.as_ref().map_or(0, Update::version) + 1;
        let update = match polled {
            Ok((value, fp, bytes)) => Update::new(version, fetched_at, Ok(value), fp, None, bytes),
            Err((error, message, stale)) => {
                let good = match stale {
                    Some((copy, fp, bytes)) => {
                        Some(Update::new(version, fetched_at, Ok(copy), fp, None, bytes))
                    }
                    None => inner.latest.as_ref().and_then(Update::good).cloned(),
                };
                Update::new(version, fetched_at, Err(error), message, good, 0)
            }
        };
        let before = kept_bytes(inner.latest.as_ref());
        let old = inner.latest.replace(update);
        let after = kept_bytes(inner.latest.as_ref());
        inner.identity = Some(identity);
        let wakers = take_wakers(&mut inner);
        drop(inner);
        drop(old);
        wakers.into_iter().for_each(Waker::wake);
        Some((version, after as isize - before as isize))
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

/// Bytes the cell keeps for its latest update: that update, and after a
/// failure the good update it holds.
fn kept_bytes<T>(latest: Option<&Update<T>>) -> usize {
    latest.map_or(0, |u| {
        let good = match u.inner.result {
            Ok(_) => 0,
            Err(_) => u.inner.good.as_ref().map_or(0, |g| g.inner.bytes),
        };
        u.inner.bytes + good
    })
}

fn take_wakers<T>(inner: &mut Inner<T>) -> Vec<Waker> {
    inner
        .waiters
        .iter_mut()
        .filter_map(|(_, waker)| waker.take())
        .collect()
}

#[cfg(all(test, not(herdsman_loom)))]
mod tests {
    use super::*;

    fn value(v: u32) -> Polled<u32> {
        Polled::Value {
            value: v,
            fingerprint: u64::from(v),
            bytes: 1000,
        }
    }

    fn failed(message: &'static str, stale: Option<u32>) -> Polled<u32> {
        Polled::Failed {
            error: SharedError::new(message),
            stale: stale.map(|v| (v, u64::from(v), 2000)),
        }
    }

    /// Publishes, keeping a running total of what the cell keeps.
    struct Kept<'a> {
        cell: &'a Cell<u32>,
        bytes: isize,
    }

    impl Kept<'_> {
        fn publish(&mut self, polled: Polled<u32>) -> Option<u64> {
            let (version, delta) = self.cell.publish(polled, Instant::now())?;
            self.bytes += delta;
            Some(version)
        }
    }

    #[test]
    fn a_failure_keeps_the_last_good_update_and_the_same_failure_again_is_no_news() {
        let cell = Cell::new();
        let mut kept = Kept {
            cell: &cell,
            bytes: 0,
        };
        assert_eq!(kept.publish(value(1)), Some(1));
        assert_eq!(kept.publish(value(1)), None, "unchanged");
        assert_eq!(kept.publish(failed("down", None)), Some(2));
        assert_eq!(kept.publish(failed("down", None)), None, "the same failure");
        assert_eq!(kept.publish(failed("gone", None)), Some(3));
        assert_eq!(kept.bytes as usize, kept_bytes(cell.current().as_ref()));

        let latest = cell.current().unwrap();
        assert_eq!(latest.fingerprint(), stable_hash(b"gone"));
        let good = latest.good().expect("the last good update");
        assert_eq!(
            (good.version(), good.value(), good.fingerprint()),
            (1, Some(&1), 1)
        );
        assert_eq!(latest.last_good(), Some(&1));

        // Recovery with the same content is news (the key is good again),
        // with the same fingerprint.
        assert_eq!(kept.publish(value(1)), Some(4));
        assert_eq!(kept.bytes as usize, kept_bytes(cell.current().as_ref()));
        let recovered = cell.current().unwrap();
        assert_eq!(recovered.fingerprint(), 1);
        assert!(recovered.good().unwrap().value().is_some());
    }

    #[test]
    fn a_stale_copy_is_the_good_value_of_its_failure_and_a_new_copy_is_news() {
        let cell = Cell::new();
        let mut kept = Kept {
            cell: &cell,
            bytes: 0,
        };
        assert_eq!(kept.publish(failed("stale", Some(7))), Some(1));
        let update = cell.current().unwrap();
        assert!(update.error().is_some());
        assert_eq!(update.good().unwrap().fingerprint(), 7);
        assert_eq!(update.last_good(), Some(&7));

        assert_eq!(kept.publish(failed("stale", Some(7))), None);
        assert_eq!(kept.publish(failed("stale", Some(8))), Some(2));
        // A failure without a copy keeps the copy before it as good.
        assert_eq!(kept.publish(failed("down", None)), Some(3));
        assert_eq!(cell.current().unwrap().last_good(), Some(&8));
        let copy = cell.current().unwrap().good().unwrap().inner.bytes;
        assert!(copy > 2000, "the copy's bytes are kept: {copy}");
        assert_eq!(kept.bytes as usize, kept_bytes(cell.current().as_ref()));
    }
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
                let polled = Polled::Value {
                    value: v,
                    fingerprint: u64::from(v),
                    bytes: 0,
                };
                cell.publish(polled, at);
            }
        }
    }

    #[test]
    fn a_subscriber_that_parks_during_a_publish_is_woken_or_sees_it() {
        let at = Instant::now();
        ::loom::model(move || {
            let cell = Arc::new(Cell::<u32>::new());
            let (slot, _) = cell.register();
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
            let (slot, _) = cell.register();
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
            let (slot, _) = cell.register();
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
