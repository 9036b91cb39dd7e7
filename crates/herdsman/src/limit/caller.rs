//! Shares of a class's calls per caller and per client address: how many of
//! the class's calls each one has in flight or waiting, capped.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, PoisonError},
};

use super::{error::Holder, state::ClassState};
use crate::key::{Key, KeyBuildHasher};

/// Maps are split by key hash so that callers of one class rarely wait on
/// each other's lock.
const SHARDS: usize = 16;

/// How many calls each key (a caller, or a client address) holds, at most
/// `max` each. A key is in the map only while it holds one: the map drains
/// to empty, and never holds more keys than the class has requests in
/// flight and waiting.
pub(crate) struct Shares {
    pub(crate) max: usize,
    shards: Box<[Mutex<HashMap<Key, usize, KeyBuildHasher>>]>,
}

impl Shares {
    pub(crate) fn new(max: usize) -> Self {
        Shares {
            max,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, key: &Key) -> &Mutex<HashMap<Key, usize, KeyBuildHasher>> {
        &self.shards[(key.hash_value() % SHARDS as u64) as usize]
    }

    /// Takes one of `key`'s calls; `false` when it holds `max` already. The
    /// lock is held for the map update only.
    fn take(&self, key: &Key) -> bool {
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = shard.get_mut(key) {
            if *held >= self.max {
                return false;
            }
            *held += 1;
            return true;
        }
        if self.max == 0 {
            return false;
        }
        shard.insert(key.clone(), 1);
        true
    }

    fn give_back(&self, key: &Key) {
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = shard.get_mut(key) {
            *held -= 1;
            if *held == 0 {
                shard.remove(key);
            }
        }
    }

    /// Keys holding calls now.
    pub(crate) fn keys(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len() as u64)
            .sum()
    }
}

impl fmt::Debug for Shares {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shares").field("max", &self.max).finish()
    }
}

/// One request's calls in its caller's and its client address's shares,
/// given back when dropped: when the call completes, or when its response
/// future is dropped, whether it was waiting or running.
pub(crate) struct Slots {
    state: Arc<ClassState>,
    caller: Option<Key>,
    address: Option<Key>,
}

impl Slots {
    /// Takes a call in the share of `caller` and of `address` (each when
    /// given and capped), or names the one that is full; nothing is kept on
    /// refusal.
    pub(crate) fn take(
        state: &Arc<ClassState>,
        caller: Option<Key>,
        address: Option<Key>,
    ) -> Result<Slots, (Holder, usize)> {
        let mut slots = Slots {
            state: state.clone(),
            caller: None,
            address: None,
        };
        if let (Some(shares), Some(caller)) = (&state.callers, caller) {
            if !shares.take(&caller) {
                return Err((Holder::Caller, shares.max));
            }
            slots.caller = Some(caller);
        }
        if let (Some(shares), Some(address)) = (&state.addresses, address) {
            if !shares.take(&address) {
                // `slots` is dropped: the caller's call is given back.
                return Err((Holder::Address, shares.max));
            }
            slots.address = Some(address);
        }
        Ok(slots)
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        if let (Some(shares), Some(caller)) = (&self.state.callers, &self.caller) {
            shares.give_back(caller);
        }
        if let (Some(shares), Some(address)) = (&self.state.addresses, &self.address) {
            shares.give_back(address);
        }
    }
}

impl fmt::Debug for Slots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slots")
            .field("class", &self.state.class)
            .finish_non_exhaustive()
    }
}
