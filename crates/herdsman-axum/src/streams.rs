//! How many event streams are open: a count for operators and tests.
//!
//! How many a caller may open is not decided here: the Registry's budgets
//! decide it, per caller and per client address
//! ([`RegistryLayer::with_callers`](herdsman::registry::RegistryLayer::with_callers)),
//! for streams and polls alike, so there is one cap and one place that
//! refuses.

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
    pub(crate) fn open(&self) -> StreamGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        StreamGuard {
            open: self.open.clone(),
        }
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
}
