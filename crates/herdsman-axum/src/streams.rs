//! A cap on concurrent event streams per caller.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, PoisonError},
};

/// Too many event streams are open for one caller (answered 429).
#[derive(Debug, Clone)]
pub struct TooManyStreams {
    max: usize,
}

impl TooManyStreams {
    /// The cap that was reached.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Seconds a client should wait: streams end when tabs close, so soon.
    pub fn retry_after_secs(&self) -> u64 {
        5
    }
}

impl fmt::Display for TooManyStreams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "too many event streams for this caller (at most {})",
            self.max
        )
    }
}

impl std::error::Error for TooManyStreams {}

/// Counts open streams per caller identity and refuses beyond `max`.
///
/// The identity is what the application says it is (a user id, an
/// `Authorization` hash, a peer address); the map holds only identities
/// with an open stream.
#[derive(Clone)]
pub struct StreamCap {
    max: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl StreamCap {
    /// At most `max` streams per identity (at least 1).
    pub fn new(max: usize) -> Self {
        StreamCap {
            max: max.max(1),
            open: Arc::default(),
        }
    }

    /// Takes one stream slot for `identity`, released when the permit drops.
    pub fn acquire(&self, identity: impl Into<String>) -> Result<StreamPermit, TooManyStreams> {
        let identity = identity.into();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(identity.clone()).or_insert(0);
        if *n >= self.max {
            return Err(TooManyStreams { max: self.max });
        }
        *n += 1;
        Ok(StreamPermit {
            cap: self.clone(),
            identity,
        })
    }

    /// Streams open now, over all identities.
    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .sum()
    }
}

impl fmt::Debug for StreamCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamCap")
            .field("max", &self.max)
            .field("open", &self.open())
            .finish()
    }
}

/// One open stream; dropping it frees the slot.
#[derive(Debug)]
pub struct StreamPermit {
    cap: StreamCap,
    identity: String,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.cap.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.identity) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.identity);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_gets_at_most_max_streams_and_slots_come_back_on_drop() {
        let cap = StreamCap::new(2);
        let a1 = cap.acquire("a").unwrap();
        let _a2 = cap.acquire("a").unwrap();
        assert!(cap.acquire("a").is_err());
        let _b = cap.acquire("b").unwrap();
        drop(a1);
        let _a3 = cap.acquire("a").unwrap();
        assert_eq!(cap.open(), 3);
    }
}
