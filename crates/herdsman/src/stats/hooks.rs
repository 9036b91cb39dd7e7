//! Upstream calls per key over the last minute, for the per-hook alert.
//!
//! Touched only on upstream calls (which coordination makes rare) and by the
//! monitor, so a sharded lock is cheap here.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard, PoisonError},
};

use crate::{
    class::Class,
    key::{Key, KeyBuildHasher},
};

const SECS: usize = 60;
const SHARDS: usize = 16;

/// Keys tracked at most; beyond it new keys are not counted until idle ones
/// are pruned (every monitor tick).
pub(crate) const MAX_KEYS: usize = 10_000;

pub(crate) struct KeyWindow {
    pub(crate) class: Class,
    buckets: [u32; SECS],
    last_sec: u64,
}

impl KeyWindow {
    fn new(class: Class, now_sec: u64) -> Self {
        KeyWindow {
            class,
            buckets: [0; SECS],
            last_sec: now_sec,
        }
    }

    fn advance(&mut self, now_sec: u64) {
        if now_sec <= self.last_sec {
            return;
        }
        let gap = (now_sec - self.last_sec).min(SECS as u64);
        for s in 1..=gap {
            self.buckets[((self.last_sec + s) % SECS as u64) as usize] = 0;
        }
        self.last_sec = now_sec;
    }

    /// Calls in the 60 one-second buckets ending at `now_sec`.
    pub(crate) fn count(&mut self, now_sec: u64) -> u64 {
        self.advance(now_sec);
        self.buckets.iter().map(|&n| u64::from(n)).sum()
    }
}

pub(crate) struct Hooks {
    shards: [Mutex<HashMap<Key, KeyWindow, KeyBuildHasher>>; SHARDS],
}

impl Hooks {
    pub(crate) fn new() -> Self {
        Hooks {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::default())),
        }
    }

    fn shard(&self, key: &Key) -> MutexGuard<'_, HashMap<Key, KeyWindow, KeyBuildHasher>> {
        self.shards[(key.hash_value() >> 7) as usize % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one call; returns the calls in the last minute, or `None` when
    /// the key is not tracked (the table is full).
    pub(crate) fn record(&self, key: &Key, class: &Class, now_sec: u64) -> Option<u64> {
        let mut shard = self.shard(key);
        if !shard.contains_key(key) && shard.len() >= MAX_KEYS / SHARDS {
            return None;
        }
        let w = shard
            .entry(key.clone())
            .or_insert_with(|| KeyWindow::new(class.clone(), now_sec));
        w.advance(now_sec);
        let slot = &mut w.buckets[(now_sec % SECS as u64) as usize];
        *slot = slot.saturating_add(1);
        Some(w.buckets.iter().map(|&n| u64::from(n)).sum())
    }

    /// Visits every tracked key with its count, and forgets keys with no
    /// call in the last minute.
    pub(crate) fn sweep(&self, now_sec: u64, mut visit: impl FnMut(&Key, &Class, u64)) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.retain(|key, w| {
                let n = w.count(now_sec);
                visit(key, &w.class, n);
                n > 0
            });
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    pub(crate) fn memory_bytes(&self) -> u64 {
        (self.len() * (std::mem::size_of::<Key>() + std::mem::size_of::<KeyWindow>() + 16)) as u64
    }
}
