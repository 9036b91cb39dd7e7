//! Budgets per class, per caller and per client address: who holds how many
//! keys and subscriptions, so that one caller's flood never refuses the
//! others.
//!
//! Every count lives in one map, guarded by the registry's map lock, with
//! an entry only while its holder holds something: the map drains to empty
//! when every subscriber has left and every key has gone.

use std::{collections::HashMap, mem};

use super::{error::Limit, layer::ClassSettings};
use crate::{class::Class, key::Key};

/// Who a subscriber is, as the budgets see it: the fingerprints of its
/// caller identity and of its client address, when it has them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Who {
    pub(crate) caller: Option<u64>,
    pub(crate) address: Option<u64>,
}

impl Who {
    /// From the keys the identity and address key functions gave. Stored as
    /// fingerprints: a budget entry is small whatever the credentials.
    pub(crate) fn new(caller: Option<Key>, address: Option<Key>) -> Self {
        Who {
            caller: caller.map(|k| k.fingerprint()),
            address: address.map(|k| k.fingerprint()),
        }
    }
}

/// One holder of a budget within a class.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Holder {
    /// The class itself (keys only).
    Class(Class),
    Caller(Class, u64),
    Address(Class, u64),
}

/// What one holder holds now.
#[derive(Debug, Clone, Copy, Default)]
struct Held {
    keys: usize,
    subscribers: usize,
}

/// Which count of a holder to change.
#[derive(Clone, Copy)]
enum Count {
    Keys,
    Subscribers,
}

/// The counts of every holder with something held.
#[derive(Debug, Default)]
pub(crate) struct Budgets {
    held: HashMap<Holder, Held>,
}

impl Budgets {
    fn get(&self, holder: Holder) -> Held {
        self.held.get(&holder).copied().unwrap_or_default()
    }

    /// The first budget of `class` that one more key, created by `who`,
    /// would exceed.
    pub(crate) fn key_refused(&self, class: &Class, who: Who, s: &ClassSettings) -> Option<Limit> {
        if self.get(Holder::Class(class.clone())).keys >= s.max_keys {
            return Some(Limit::Keys);
        }
        let caller = who
            .caller
            .map(|c| self.get(Holder::Caller(class.clone(), c)));
        if caller.is_some_and(|h| h.keys >= s.max_keys_per_caller) {
            return Some(Limit::KeysPerCaller);
        }
        let address = who
            .address
            .map(|a| self.get(Holder::Address(class.clone(), a)));
        if address.is_some_and(|h| h.keys >= s.max_keys_per_address) {
            return Some(Limit::KeysPerAddress);
        }
        None
    }

    /// The first budget of `class` that one more subscription of `who`
    /// would exceed.
    pub(crate) fn subscriber_refused(
        &self,
        class: &Class,
        who: Who,
        s: &ClassSettings,
    ) -> Option<Limit> {
        let caller = who
            .caller
            .map(|c| self.get(Holder::Caller(class.clone(), c)));
        if caller.is_some_and(|h| h.subscribers >= s.max_subscribers_per_caller) {
            return Some(Limit::SubscribersPerCaller);
        }
        let address = who
            .address
            .map(|a| self.get(Holder::Address(class.clone(), a)));
        if address.is_some_and(|h| h.subscribers >= s.max_subscribers_per_address) {
            return Some(Limit::SubscribersPerAddress);
        }
        None
    }

    /// A key of `class` created by `who` is held (until [`drop_key`](Self::drop_key)).
    pub(crate) fn add_key(&mut self, class: &Class, who: Who) {
        self.add(Holder::Class(class.clone()), Count::Keys);
        self.for_who(class, who, Count::Keys, Self::add);
    }

    /// A key of `class` that `who` created is gone.
    pub(crate) fn drop_key(&mut self, class: &Class, who: Who) {
        self.remove(Holder::Class(class.clone()), Count::Keys);
        self.for_who(class, who, Count::Keys, Self::remove);
    }

    /// A subscription of `who` to a key of `class` is open.
    pub(crate) fn add_subscriber(&mut self, class: &Class, who: Who) {
        self.for_who(class, who, Count::Subscribers, Self::add);
    }

    /// A subscription of `who` to a key of `class` is closed.
    pub(crate) fn drop_subscriber(&mut self, class: &Class, who: Who) {
        self.for_who(class, who, Count::Subscribers, Self::remove);
    }

    fn for_who(&mut self, class: &Class, who: Who, count: Count, f: fn(&mut Self, Holder, Count)) {
        if let Some(caller) = who.caller {
            f(self, Holder::Caller(class.clone(), caller), count);
        }
        if let Some(address) = who.address {
            f(self, Holder::Address(class.clone(), address), count);
        }
    }

    fn add(&mut self, holder: Holder, count: Count) {
        let held = self.held.entry(holder).or_default();
        match count {
            Count::Keys => held.keys += 1,
            Count::Subscribers => held.subscribers += 1,
        }
    }

    fn remove(&mut self, holder: Holder, count: Count) {
        let Some(held) = self.held.get_mut(&holder) else {
            debug_assert!(false, "a budget released that was never taken");
            return;
        };
        match count {
            Count::Keys => held.keys -= 1,
            Count::Subscribers => held.subscribers -= 1,
        }
        if held.keys == 0 && held.subscribers == 0 {
            self.held.remove(&holder);
            shrink(&mut self.held);
        }
    }

    /// Holders with something held.
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    /// Bytes the map's table takes.
    pub(crate) fn bytes(&self) -> usize {
        table_bytes(self.held.capacity(), mem::size_of::<(Holder, Held)>())
    }
}

/// The bytes of a `HashMap` table of `capacity` entries of `entry` bytes:
/// hashbrown's buckets (a power of two, with room for one eighth empty
/// above 8), one control byte each, and one group of control bytes more.
pub(crate) fn table_bytes(capacity: usize, entry: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 8 {
        capacity + 1
    } else {
        capacity / 7 * 8
    }
    .next_power_of_two();
    buckets * (entry + 1) + 16
}

/// Gives back a map's table when it is mostly empty, so that the memory a
/// flood of keys took returns once they have left.
pub(crate) fn shrink<K: Eq + std::hash::Hash, V, S: std::hash::BuildHasher>(
    map: &mut HashMap<K, V, S>,
) {
    let (len, capacity) = (map.len(), map.capacity());
    // An empty map frees its table; a large one mostly empty halves it,
    // leaving room to grow again without thrashing.
    if len == 0 || (capacity > 64 && len * 4 < capacity) {
        map.shrink_to(len * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_bytes_follow_hashbrowns_bucket_counts() {
        let mut map: HashMap<u64, u64> = HashMap::new();
        assert_eq!(table_bytes(map.capacity(), 16), 0);
        for n in [1, 4, 8, 30, 200, 1000] {
            map.extend((0..n).map(|i| (i, i)));
            let buckets = (table_bytes(map.capacity(), 16) - 16) / 17;
            assert!(buckets.is_power_of_two() && buckets > map.capacity(), "{n}");
        }
    }
}
