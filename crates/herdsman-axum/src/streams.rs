//! How many event streams are open: a count for operators and tests, and
//! the process's cap on them
//! ([`Live::with_max_streams`](crate::Live::with_max_streams)).
//!
//! How many one caller may open is not decided here: the Registry's
//! budgets decide it, per caller and per client address
//! ([`RegistryLayer::with_callers`](herdsman::registry::RegistryLayer::with_callers)),
//! for streams and polls alike, so there is one cap per caller and one
//! place that refuses it.

use std::{
    fmt,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

/// Counts the event streams a [`Live`](crate::Live) has open. Clones share
/// the count.
#[derive(Clone, Default)]
pub struct OpenStreams {
    open: Arc<AtomicUsize>,
}

impl OpenStreams {
    /// Streams open now.
    pub fn get(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Counts one stream until the returned guard is dropped.
    #[cfg(test)]
    pub(crate) fn open(&self) -> StreamGuard {
        self.try_open(usize::MAX).expect("no cap")
    }

    /// Counts one stream until the returned guard is dropped, unless `max`
    /// are open already.
    pub(crate) fn try_open(&self, max: usize) -> Option<StreamGuard> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()?;
        Some(StreamGuard {
            open: self.open.clone(),
        })
    }
}

impl fmt::Debug for OpenStreams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("OpenStreams").field(&self.get()).finish()
    }
}

/// One open stream; dropping it uncounts it.
#[derive(Debug)]
pub(crate) struct StreamGuard {
    open: Arc<AtomicUsize>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_counts_until_its_guard_drops() {
        let streams = OpenStreams::default();
        let a = streams.open();
        let _b = streams.clone().open();
        assert_eq!(streams.get(), 2);
        drop(a);
        assert_eq!(streams.get(), 1);
    }

    #[test]
    fn at_the_cap_no_stream_opens_until_one_closes() {
        let streams = OpenStreams::default();
        let a = streams.try_open(2).unwrap();
        let _b = streams.try_open(2).unwrap();
        assert!(streams.try_open(2).is_none());
        assert_eq!(streams.get(), 2, "a refusal counts nothing");
        drop(a);
        assert!(streams.try_open(2).is_some());
    }
}
