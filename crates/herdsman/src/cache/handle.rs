use std::{fmt, sync::Arc};

use tokio::sync::broadcast;

use super::{store::Store, CacheStats};
use crate::{
    backend::{LocalStore, StoreBackend},
    class::Class,
    event::{Invalidation, MemorySource},
    key::Key,
};

/// Inspects and invalidates one cache store at run time.
///
/// Got from [`CacheLayer::handle`](super::CacheLayer::handle); cheap to clone.
pub struct CacheHandle<V, B = LocalStore> {
    pub(crate) store: Arc<Store<V>>,
    pub(crate) backend: B,
}

impl<V: Clone, B: StoreBackend<V>> CacheHandle<V, B> {
    /// Removes the entry for `key` (and, for a response that varies, every
    /// variant filed under it); `true` if there was one.
    pub fn invalidate(&self, key: &Key) -> bool {
        let what = Invalidation::Key(key.clone());
        let removed = self.remove(&what) > 0;
        self.store.announce(|| what);
        removed
    }

    /// Removes every entry of `class`; returns how many.
    pub fn invalidate_class(&self, class: &Class) -> u64 {
        self.invalidate_announced(Invalidation::Class(class.clone()))
    }

    /// Removes every entry whose key was built from exactly `path` (any query,
    /// any method, any user, any variant); returns how many. Keys without a
    /// marked path ([`Key::path`]) are kept.
    pub fn invalidate_path(&self, path: &str) -> u64 {
        self.invalidate_announced(Invalidation::Path(path.into()))
    }

    /// Removes every entry whose key's path starts with `prefix`; returns how
    /// many.
    pub fn invalidate_prefix(&self, prefix: &str) -> u64 {
        self.invalidate_announced(Invalidation::Prefix(prefix.into()))
    }

    /// Removes every entry; returns how many.
    pub fn clear(&self) -> u64 {
        self.invalidate_announced(Invalidation::All)
    }

    fn invalidate_announced(&self, what: Invalidation) -> u64 {
        let removed = self.remove(&what);
        self.store.announce(|| what);
        removed
    }

    /// Removes what `what` covers, here then in the backend, without
    /// announcing it; returns how many entries of the local store. The
    /// paths' generations move on first, so that a fetch that began before
    /// does not store its answer afterwards (nor write it through).
    pub(crate) fn remove(&self, what: &Invalidation) -> u64 {
        let removed = self.remove_local(what);
        self.backend.invalidate(what);
        removed
    }

    /// Applies another replica's invalidation, which the backend reported
    /// ([`StoreBackend::remote_invalidations`]): removes what it covers
    /// here and announces it (the registry polls the keys it covers), but
    /// never hands it to the backend, which would send it to the other
    /// replicas again.
    #[cfg(feature = "coordinator")]
    pub(crate) fn apply_remote(&self, what: Invalidation) -> u64 {
        let removed = self.remove_local(&what);
        self.store.announce(|| what);
        removed
    }

    /// The invalidations other replicas make, when the backend hears them.
    #[cfg(feature = "coordinator")]
    pub(crate) fn remote_invalidations(
        &self,
    ) -> Option<Box<dyn crate::backend::RemoteInvalidations>> {
        self.backend.remote_invalidations()
    }

    fn remove_local(&self, what: &Invalidation) -> u64 {
        let store = &self.store;
        match what {
            Invalidation::Key(key) => {
                store.bump(key.path());
                // A `Vary` marker's variants are found only through it.
                u64::from(store.remove(key))
            }
            Invalidation::Class(class) => {
                store.bump(None);
                store.remove_class(class)
            }
            Invalidation::Path(path) => {
                let path = path.as_bytes();
                store.bump(Some(path));
                store.remove_if(|key, _| key.path() == Some(path))
            }
            Invalidation::Prefix(prefix) => {
                let prefix = prefix.as_bytes();
                store.bump(None);
                store.remove_if(|key, _| key.path().is_some_and(|p| p.starts_with(prefix)))
            }
            Invalidation::All => {
                store.bump(None);
                store.remove_if(|_, _| true)
            }
        }
    }

    /// Every invalidation from now on: those made through this handle, and
    /// those a successful unsafe request (`POST`, `PUT`, `PATCH`, `DELETE`)
    /// makes with the HTTP policy, as [`Invalidation::Path`]. Each is
    /// announced whether or not it removed an entry, so that the Registry
    /// can poll the keys it covers at once. A receiver that falls more than
    /// 64 invalidations behind skips the oldest (`RecvError::Lagged`); with
    /// no receiver, nothing is built or sent.
    pub fn invalidations(&self) -> broadcast::Receiver<Invalidation> {
        self.store.invalidations()
    }

    /// Removes every expired entry now, as the sweep does every interval;
    /// returns how many. See [Expiry](crate::cache#expiry).
    pub fn sweep(&self) -> u64 {
        self.store.sweep(u64::MAX)
    }

    /// Counters and size.
    pub fn stats(&self) -> CacheStats {
        self.store.stats()
    }
}

/// The store's bytes as [`CacheStats::bytes`] counts them: the sum of entry
/// weights (value, key and a fixed per-entry overhead).
/// The backend's own figure ([`StoreBackend::memory_bytes`]) is added.
impl<V: Clone + Send + Sync + 'static, B: StoreBackend<V>> MemorySource for CacheHandle<V, B> {
    fn memory_bytes(&self) -> u64 {
        self.store.bytes() + self.backend.memory_bytes()
    }
}

impl<V, B: Clone> Clone for CacheHandle<V, B> {
    fn clone(&self) -> Self {
        CacheHandle {
            store: self.store.clone(),
            backend: self.backend.clone(),
        }
    }
}

impl<V: Clone, B: StoreBackend<V>> fmt::Debug for CacheHandle<V, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheHandle")
            .field("stats", &self.stats())
            .finish()
    }
}
