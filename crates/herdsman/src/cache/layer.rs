use std::{collections::HashMap, fmt, sync::Arc, time::Duration};

use tower_layer::Layer;

use super::{
    handle::CacheHandle,
    policy::CacheMode,
    store::{Store, Weigher},
    sweep::DEFAULT_SWEEP_INTERVAL,
    Cache,
};
use crate::{
    backend::{LocalStore, StoreBackend},
    class::{AllDefault, Class},
    clock::Clock,
    event::{Observer, Observers},
    key::DEFAULT_MAX_KEY_LEN,
    share::CloneShare,
};

/// Default byte bound of a store: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Default TTL: 5 s, the development poll interval.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

/// Freshness settings of one endpoint class.
///
/// With [`CacheMode::App`] they are what entries get (capped by what the
/// policy reads from each response); with [`CacheMode::Origin`] they cap
/// what the policy reads.
///
/// With the `config` feature these are also the keys of the `[cache]`
/// section a class may set (a [`CacheSettings`][crate::config::CacheSettings]
/// holds them beside the store's bounds), durations written as `"10s"`.
///
#[cfg_attr(
    not(feature = "config"),
    doc = "[crate::config::CacheSettings]: crate#feature-flags"
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "config",
    derive(serde::Deserialize, serde::Serialize),
    serde(deny_unknown_fields)
)]
pub struct ClassSettings {
    /// How long an entry is fresh.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub ttl: Duration,
    /// How long past its TTL an entry is served while one refresh runs
    /// (`0s`: off). When on, at least the TTL.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub stale_while_revalidate: Duration,
    /// How long past its TTL an entry stands in for a failed inner call
    /// (`0s`: off). When on, at least the TTL.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub stale_if_error: Duration,
    /// Who decides how long a response is fresh: `"app"` (the TTL, capped
    /// by the response's own lifetime) or `"origin"` (the response's
    /// `Cache-Control`, `Expires` or a heuristic, capped by the TTL).
    #[cfg_attr(feature = "config", serde(default))]
    pub mode: CacheMode,
}

impl Default for ClassSettings {
    fn default() -> Self {
        ClassSettings {
            ttl: DEFAULT_TTL,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            mode: CacheMode::App,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) default: ClassSettings,
    pub(crate) classes: HashMap<Class, ClassSettings>,
    pub(crate) max_key_len: usize,
}

impl Settings {
    pub(crate) fn class(&self, class: &Class) -> ClassSettings {
        self.classes.get(class).copied().unwrap_or(self.default)
    }
}

/// Applies [`Cache`] to a service.
///
/// `V` is the form responses are stored in: the response type itself with the
/// default policy, `Response<SharedBody>` with
/// [`HttpCachePolicy`][super::HttpCachePolicy]. It is usually inferred.
///
/// All services made from one `CacheLayer` value, and their clones, share one
/// store; the `with_*` methods that size the store start a new one.
///
/// `B` is what lies behind that in-memory store: nothing by default
/// ([`LocalStore`]), a store shared by replicas with
/// [`with_store_backend`](Self::with_store_backend).
///
#[cfg_attr(
    not(feature = "http"),
    doc = "[super::HttpCachePolicy]: crate#feature-flags"
)]
pub struct CacheLayer<K, V, P = CloneShare, C = AllDefault, B = LocalStore> {
    key: K,
    policy: P,
    classify: C,
    settings: Arc<Settings>,
    max_bytes: u64,
    max_entries: Option<u64>,
    sweep_interval: Duration,
    clock: Clock,
    weigher: Option<Weigher<V>>,
    observers: Observers,
    store: Arc<Store<V>>,
    backend: B,
}

impl<K, V: Clone> CacheLayer<K, V> {
    /// A cache keyed by `key`, storing `Clone` responses for
    /// [`DEFAULT_TTL`], bounded by [`DEFAULT_MAX_BYTES`].
    pub fn new(key: K) -> Self {
        CacheLayer {
            key,
            policy: CloneShare,
            classify: AllDefault,
            settings: Arc::new(Settings {
                default: ClassSettings::default(),
                classes: HashMap::new(),
                max_key_len: DEFAULT_MAX_KEY_LEN,
            }),
            max_bytes: DEFAULT_MAX_BYTES,
            max_entries: None,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            clock: Clock::Fast,
            weigher: None,
            observers: Observers::none(),
            store: Arc::new(Store::new(
                DEFAULT_MAX_BYTES,
                None,
                DEFAULT_SWEEP_INTERVAL,
                &Clock::Fast,
            )),
            backend: LocalStore,
        }
    }
}

impl<K, V, P, C, B> CacheLayer<K, V, P, C, B> {
    fn settings(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.settings)
    }

    /// The TTL of classes without their own settings.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.settings().default.ttl = ttl;
        self
    }

    /// The stale-while-revalidate window of classes without their own settings.
    pub fn with_stale_while_revalidate(mut self, window: Duration) -> Self {
        self.settings().default.stale_while_revalidate = window;
        self
    }

    /// The stale-if-error window of classes without their own settings.
    pub fn with_stale_if_error(mut self, window: Duration) -> Self {
        self.settings().default.stale_if_error = window;
        self
    }

    /// Who decides freshness for classes without their own settings; see
    /// [`CacheMode`]. Default [`CacheMode::App`].
    pub fn with_mode(mut self, mode: CacheMode) -> Self {
        self.settings().default.mode = mode;
        self
    }

    /// All the settings of classes without their own at once: what
    /// [`with_ttl`](Self::with_ttl), [`with_stale_while_revalidate`](Self::with_stale_while_revalidate),
    /// [`with_stale_if_error`](Self::with_stale_if_error) and
    /// [`with_mode`](Self::with_mode) set one by one (a configuration's
    /// `[cache]` section, for instance).
    pub fn with_defaults(mut self, settings: ClassSettings) -> Self {
        self.settings().default = settings;
        self
    }

    /// Settings for one endpoint class (see [`with_classifier`](Self::with_classifier)).
    pub fn with_class(mut self, class: impl Into<Class>, settings: ClassSettings) -> Self {
        self.settings().classes.insert(class.into(), settings);
        self
    }

    /// Names the class of each request, e.g. [`PathClasses`][crate::http::PathClasses].
    ///
    #[cfg_attr(
        not(feature = "http"),
        doc = "[crate::http::PathClasses]: crate#feature-flags"
    )]
    pub fn with_classifier<C2>(self, classify: C2) -> CacheLayer<K, V, P, C2, B> {
        CacheLayer {
            key: self.key,
            policy: self.policy,
            classify,
            settings: self.settings,
            max_bytes: self.max_bytes,
            max_entries: self.max_entries,
            sweep_interval: self.sweep_interval,
            clock: self.clock,
            weigher: self.weigher,
            observers: self.observers,
            store: self.store,
            backend: self.backend,
        }
    }

    /// The cache policy, e.g. [`HttpCachePolicy`][super::HttpCachePolicy].
    ///
    #[cfg_attr(
        not(feature = "http"),
        doc = "[super::HttpCachePolicy]: crate#feature-flags"
    )]
    pub fn with_policy<P2>(self, policy: P2) -> CacheLayer<K, V, P2, C, B> {
        CacheLayer {
            key: self.key,
            policy,
            classify: self.classify,
            settings: self.settings,
            max_bytes: self.max_bytes,
            max_entries: self.max_entries,
            sweep_interval: self.sweep_interval,
            clock: self.clock,
            weigher: self.weigher,
            observers: self.observers,
            store: self.store,
            backend: self.backend,
        }
    }

    /// Puts `backend` behind the in-memory store: a second level that
    /// replicas share (see [`StoreBackend`]). Services made from this layer
    /// value afterwards, and their clones, use it.
    pub fn with_store_backend<B2: StoreBackend<V>>(
        self,
        backend: B2,
    ) -> CacheLayer<K, V, P, C, B2> {
        CacheLayer {
            key: self.key,
            policy: self.policy,
            classify: self.classify,
            settings: self.settings,
            max_bytes: self.max_bytes,
            max_entries: self.max_entries,
            sweep_interval: self.sweep_interval,
            clock: self.clock,
            weigher: self.weigher,
            observers: self.observers,
            store: self.store,
            backend,
        }
    }

    /// Bounds the store to `bytes` (sum of entry weights). Starts a new store.
    pub fn with_max_bytes(mut self, bytes: u64) -> Self
    where
        V: Clone,
    {
        self.max_bytes = bytes;
        self.new_store()
    }

    /// Weighs stored values with `weigh` (bytes) instead of the policy.
    ///
    /// The default policy for `Clone` responses counts only a value's inline
    /// size: for responses that own heap memory (`Bytes`, `String`, `Vec`),
    /// give a weigher, or the byte bound does not bound memory. Starts a new
    /// store.
    pub fn with_weigher(mut self, weigh: impl Fn(&V) -> usize + Send + Sync + 'static) -> Self
    where
        V: Clone,
    {
        self.weigher = Some(Arc::new(weigh));
        self.new_store()
    }

    fn new_store(mut self) -> Self
    where
        V: Clone,
    {
        let mut store = Store::new(
            self.max_bytes,
            self.max_entries,
            self.sweep_interval,
            &self.clock,
        );
        store.weigher = self.weigher.clone();
        self.store = Arc::new(store);
        self
    }

    /// Also bounds the store to `entries` entries. Starts a new store.
    pub fn with_max_entries(mut self, entries: u64) -> Self
    where
        V: Clone,
    {
        self.max_entries = Some(entries);
        self.new_store()
    }

    /// How often the store is swept of entries nothing can use any more
    /// (default [`DEFAULT_SWEEP_INTERVAL`]; at least 1 ms), and how long
    /// past its windows an entry that can be revalidated is kept. See
    /// [Expiry](crate::cache#expiry). Starts a new store.
    pub fn with_sweep_interval(mut self, interval: Duration) -> Self
    where
        V: Clone,
    {
        self.sweep_interval = interval.max(Duration::from_millis(1));
        self.new_store()
    }

    /// The clock entries' ages are read on (default [`Clock::Fast`], the
    /// CPU's time-stamp counter: one read per hit). Tests that pause
    /// tokio's clock and drive TTLs with `tokio::time::advance` use
    /// [`Clock::Tokio`]. See [`crate::clock`]. Starts a new store.
    pub fn with_clock(mut self, clock: Clock) -> Self
    where
        V: Clone,
    {
        self.clock = clock;
        self.new_store()
    }

    /// Requests whose key is longer than `max` bytes pass through
    /// uncached. Default 8 KiB.
    pub fn with_max_key_len(mut self, max: usize) -> Self {
        self.settings().max_key_len = max;
        self
    }

    /// Reports [`Event::CacheHit`](crate::event::Event::CacheHit),
    /// [`Event::CacheBackendHit`](crate::event::Event::CacheBackendHit),
    /// [`Event::StaleServed`](crate::event::Event::StaleServed) and
    /// [`Event::CacheMiss`](crate::event::Event::CacheMiss) per request, with
    /// the class named by [`with_classifier`](Self::with_classifier). A hit
    /// classifies its request only when an observer is set. Services made
    /// from this layer value afterwards, and their clones, share the
    /// observer.
    pub fn with_observer(mut self, observer: impl Observer) -> Self {
        self.observers = Observers::new(observer);
        self
    }

    /// A handle to inspect and invalidate this layer's store.
    pub fn handle(&self) -> CacheHandle<V, B>
    where
        B: Clone,
    {
        CacheHandle {
            store: self.store.clone(),
            backend: self.backend.clone(),
        }
    }
}

impl<S, K: Clone, V, P: Clone, C: Clone, B: Clone> Layer<S> for CacheLayer<K, V, P, C, B> {
    type Service = Cache<S, K, V, P, C, B>;

    fn layer(&self, inner: S) -> Self::Service {
        Cache {
            inner,
            key: self.key.clone(),
            policy: self.policy.clone(),
            classify: self.classify.clone(),
            settings: self.settings.clone(),
            observers: self.observers.clone(),
            store: self.store.clone(),
            backend: self.backend.clone(),
        }
    }
}

impl<K: Clone, V, P: Clone, C: Clone, B: Clone> Clone for CacheLayer<K, V, P, C, B> {
    fn clone(&self) -> Self {
        CacheLayer {
            key: self.key.clone(),
            policy: self.policy.clone(),
            classify: self.classify.clone(),
            settings: self.settings.clone(),
            max_bytes: self.max_bytes,
            max_entries: self.max_entries,
            sweep_interval: self.sweep_interval,
            clock: self.clock.clone(),
            weigher: self.weigher.clone(),
            observers: self.observers.clone(),
            store: self.store.clone(),
            backend: self.backend.clone(),
        }
    }
}

impl<K, V, P, C, B> fmt::Debug for CacheLayer<K, V, P, C, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("settings", &self.settings)
            .field("max_bytes", &self.max_bytes)
            .field("max_entries", &self.max_entries)
            .field("sweep_interval", &self.sweep_interval)
            .field("clock", &self.clock)
            .field("observers", &self.observers)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{CacheLayer, CacheMode, ClassSettings};
    use crate::key::Key;

    #[test]
    fn with_defaults_sets_what_the_one_by_one_setters_set() {
        let key = |n: &u32| Some(Key::from(u64::from(*n)));
        let settings = ClassSettings {
            ttl: Duration::from_secs(7),
            stale_while_revalidate: Duration::from_secs(8),
            stale_if_error: Duration::from_secs(9),
            mode: CacheMode::Origin,
        };
        let one_by_one = CacheLayer::<_, String>::new(key)
            .with_ttl(settings.ttl)
            .with_stale_while_revalidate(settings.stale_while_revalidate)
            .with_stale_if_error(settings.stale_if_error)
            .with_mode(settings.mode);
        let at_once = CacheLayer::<_, String>::new(key).with_defaults(settings);
        assert_eq!(at_once.settings.default, settings);
        assert_eq!(one_by_one.settings.default, settings);
    }
}
