//! Backends behind one type each, whatever their implementation: what the
//! Coordinator holds, so that its layers' types stay nameable.

use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

use super::{Answer, FlightBackend, Lead, Shelved, StoreBackend};
use crate::{event::Invalidation, key::Key};

/// The invalidations other replicas made, as a distributed
/// [`StoreBackend`] hears them
/// ([`StoreBackend::remote_invalidations`]): to be applied to this
/// replica's own store and registry, and never sent to the backend again.
pub trait RemoteInvalidations: Send + 'static {
    /// The next invalidation of another replica; `None` once the backend
    /// is gone.
    fn next(&mut self) -> Pin<Box<dyn Future<Output = Option<Invalidation>> + Send + '_>>;
}

/// [`StoreBackend`] without `Clone`, so that it can sit behind a pointer.
trait ErasedStore<V>: Send + Sync {
    fn lookup(&self, key: &Key) -> Answer<Option<Shelved<V>>>;
    fn insert(&self, key: &Key, value: &V, age: Duration, ttl: Duration);
    fn invalidate(&self, what: &Invalidation);
    fn memory_bytes(&self) -> u64;
    fn remote_invalidations(&self) -> Option<Box<dyn RemoteInvalidations>>;
}

impl<V, B: StoreBackend<V>> ErasedStore<V> for B {
    fn lookup(&self, key: &Key) -> Answer<Option<Shelved<V>>> {
        StoreBackend::lookup(self, key)
    }

    fn insert(&self, key: &Key, value: &V, age: Duration, ttl: Duration) {
        StoreBackend::insert(self, key, value, age, ttl);
    }

    fn invalidate(&self, what: &Invalidation) {
        StoreBackend::invalidate(self, what);
    }

    fn memory_bytes(&self) -> u64 {
        StoreBackend::memory_bytes(self)
    }

    fn remote_invalidations(&self) -> Option<Box<dyn RemoteInvalidations>> {
        StoreBackend::remote_invalidations(self)
    }
}

/// Any [`StoreBackend`] of `V`, or none ([`LocalStore`](super::LocalStore)'s
/// behaviour, the default), as one type.
///
/// The in-memory default answers as `LocalStore` does, with no pointer to
/// follow; another backend costs one virtual call per lookup (made only on
/// a miss of the cache's own store) and per write.
pub struct DynStore<V> {
    inner: Option<Arc<dyn ErasedStore<V>>>,
}

impl<V: 'static> DynStore<V> {
    /// `backend`, behind this type.
    pub fn new(backend: impl StoreBackend<V>) -> Self {
        DynStore {
            inner: Some(Arc::new(backend)),
        }
    }
}

impl<V> DynStore<V> {
    /// No store behind the cache's own: [`LocalStore`](super::LocalStore).
    pub const fn local() -> Self {
        DynStore { inner: None }
    }

    /// Whether this is the in-memory default.
    pub fn is_local(&self) -> bool {
        self.inner.is_none()
    }
}

impl<V> Default for DynStore<V> {
    fn default() -> Self {
        DynStore::local()
    }
}

impl<V> Clone for DynStore<V> {
    fn clone(&self) -> Self {
        DynStore {
            inner: self.inner.clone(),
        }
    }
}

impl<V> fmt::Debug for DynStore<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.is_local() { "local" } else { "shared" };
        f.debug_tuple("DynStore").field(&kind).finish()
    }
}

impl<V: Send + Sync + 'static> StoreBackend<V> for DynStore<V> {
    #[inline]
    fn lookup(&self, key: &Key) -> Answer<Option<Shelved<V>>> {
        match &self.inner {
            None => Answer::Now(None),
            Some(inner) => inner.lookup(key),
        }
    }

    #[inline]
    fn insert(&self, key: &Key, value: &V, age: Duration, ttl: Duration) {
        if let Some(inner) = &self.inner {
            inner.insert(key, value, age, ttl);
        }
    }

    #[inline]
    fn invalidate(&self, what: &Invalidation) {
        if let Some(inner) = &self.inner {
            inner.invalidate(what);
        }
    }

    fn memory_bytes(&self) -> u64 {
        self.inner.as_ref().map_or(0, |inner| inner.memory_bytes())
    }

    fn remote_invalidations(&self) -> Option<Box<dyn RemoteInvalidations>> {
        self.inner.as_ref()?.remote_invalidations()
    }
}

/// [`FlightBackend`] without `Clone` and its constant, so that it can sit
/// behind a pointer.
trait ErasedFlights<V>: Send + Sync {
    fn lead(&self, key: &Key) -> Answer<Lead<V>>;
    fn finish(&self, key: &Key, value: Option<&V>);
    fn answers(&self) -> bool;
}

impl<V, B: FlightBackend<V>> ErasedFlights<V> for B {
    fn lead(&self, key: &Key) -> Answer<Lead<V>> {
        FlightBackend::lead(self, key)
    }

    fn finish(&self, key: &Key, value: Option<&V>) {
        FlightBackend::finish(self, key, value);
    }

    fn answers(&self) -> bool {
        FlightBackend::answers(self)
    }
}

/// Any [`FlightBackend`] of `V`, or none ([`LocalFlights`](super::LocalFlights)'s
/// behaviour, the default), as one type.
///
/// The in-memory default answers as `LocalFlights` does, with no pointer
/// to follow ([`answers`](FlightBackend::answers) is `false`, so a caller
/// alone keeps its response unshared); another backend costs one virtual
/// call per leader.
pub struct DynFlights<V> {
    inner: Option<Arc<dyn ErasedFlights<V>>>,
}

impl<V: 'static> DynFlights<V> {
    /// `backend`, behind this type.
    pub fn new(backend: impl FlightBackend<V>) -> Self {
        DynFlights {
            inner: Some(Arc::new(backend)),
        }
    }
}

impl<V> DynFlights<V> {
    /// Coalescing within this process only: [`LocalFlights`](super::LocalFlights).
    pub const fn local() -> Self {
        DynFlights { inner: None }
    }

    /// Whether this is the in-memory default.
    pub fn is_local(&self) -> bool {
        self.inner.is_none()
    }
}

impl<V> Default for DynFlights<V> {
    fn default() -> Self {
        DynFlights::local()
    }
}

impl<V> Clone for DynFlights<V> {
    fn clone(&self) -> Self {
        DynFlights {
            inner: self.inner.clone(),
        }
    }
}

impl<V> fmt::Debug for DynFlights<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.is_local() { "local" } else { "shared" };
        f.debug_tuple("DynFlights").field(&kind).finish()
    }
}

impl<V: 'static> FlightBackend<V> for DynFlights<V> {
    /// `true`: a backend behind it may answer. What the layer reads is
    /// [`answers`](FlightBackend::answers), which asks it.
    const ANSWERS: bool = true;

    #[inline]
    fn answers(&self) -> bool {
        self.inner.as_ref().is_some_and(|inner| inner.answers())
    }

    #[inline]
    fn lead(&self, key: &Key) -> Answer<Lead<V>> {
        match &self.inner {
            None => Answer::Now(Lead::Call),
            Some(inner) => inner.lead(key),
        }
    }

    #[inline]
    fn finish(&self, key: &Key, value: Option<&V>) {
        if let Some(inner) = &self.inner {
            inner.finish(key, value);
        }
    }
}
