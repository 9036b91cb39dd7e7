use std::{fmt, sync::Arc};

use super::{store::Store, CacheStats};
use crate::{class::Class, key::Key};

/// Inspects and invalidates one cache store at run time.
///
/// Got from [`CacheLayer::handle`](super::CacheLayer::handle); cheap to clone.
pub struct CacheHandle<V> {
    pub(crate) store: Arc<Store<V>>,
}

impl<V: Clone> CacheHandle<V> {
    /// Removes the entry for `key`; `true` if there was one.
    pub fn invalidate(&self, key: &Key) -> bool {
        self.store.remove(key)
    }

    /// Removes every entry of `class`; returns how many.
    pub fn invalidate_class(&self, class: &Class) -> u64 {
        self.store.remove_class(class)
    }

    /// Removes every entry whose key was built from exactly `path` (any query,
    /// any method, any user); returns how many. Keys without a marked path
    /// ([`Key::path`]) are kept.
    pub fn invalidate_path(&self, path: &str) -> u64 {
        let path = path.as_bytes();
        self.store.remove_if(|key, _| key.path() == Some(path))
    }

    /// Removes every entry whose key's path starts with `prefix`; returns how
    /// many.
    pub fn invalidate_prefix(&self, prefix: &str) -> u64 {
        let prefix = prefix.as_bytes();
        self.store
            .remove_if(|key, _| key.path().is_some_and(|p| p.starts_with(prefix)))
    }

    /// Removes every entry; returns how many.
    pub fn clear(&self) -> u64 {
        self.store.remove_if(|_, _| true)
    }

    /// Counters and size.
    pub fn stats(&self) -> CacheStats {
        self.store.stats()
    }
}

impl<V> Clone for CacheHandle<V> {
    fn clone(&self) -> Self {
        CacheHandle {
            store: self.store.clone(),
        }
    }
}

impl<V: Clone> fmt::Debug for CacheHandle<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheHandle")
            .field("stats", &self.stats())
            .finish()
    }
}
