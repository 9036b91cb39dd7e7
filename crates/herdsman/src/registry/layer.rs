use std::{fmt, sync::Arc, time::Duration};

use tower_layer::Layer;

use super::{
    change::{CloneRequest, HashFingerprint},
    handle::RegistryHandle,
    state::{Config, Core, Loops},
    Registry,
};
use crate::{
    backend::LoopBackend,
    class::{AllDefault, Class},
    event::{Observer, Observers},
    failure::DefaultFailures,
    share::CloneShare,
};

/// The largest [jitter](RegistryLayer::with_jitter) fraction: each wait is
/// then between half and one and a half times its interval.
pub const MAX_JITTER: f64 = 0.5;

/// The registry's default memory budget
/// ([`RegistryLayer::with_max_memory`]): 24 MiB. With the Cache's default
/// 64 MiB store it keeps coordination under the 100 MB memory alert, with
/// about 7 MB left for Dedup, Limit and the stats.
pub const DEFAULT_MAX_MEMORY: u64 = 24 * 1024 * 1024;

/// The settings of one endpoint class's poll loops
/// ([`RegistryLayer::with_class`]).
///
/// A key's loop looks up the settings of its class (named by the
/// [classifier](RegistryLayer::with_classifier) from its first subscriber's
/// request) once, when it starts. [`Default`] gives the registry's own
/// defaults.
///
/// With the `config` feature these are also the keys of the `[registry]`
/// section a class may set (a
/// [`RegistrySettings`][crate::config::RegistrySettings] holds them beside
/// the registry's floor and totals), durations written as `"10s"`.
///
#[cfg_attr(
    not(feature = "config"),
    doc = "[crate::config::RegistrySettings]: crate#feature-flags"
)]
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(
    feature = "config",
    derive(serde::Deserialize, serde::Serialize),
    serde(deny_unknown_fields)
)]
pub struct ClassSettings {
    /// How often a key with subscribers is polled: the interval of
    /// subscribers that ask for none (still never below the registry's
    /// [floor](RegistryLayer::with_floor)).
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub interval: Duration,
    /// Each wait is moved by up to this fraction of it (`0.0..=0.5`), at
    /// random, so that loops started together do not poll together; never
    /// under the floor (see [`RegistryLayer::with_jitter`]).
    pub jitter: f64,
    /// How long a poll loop keeps running (and keeps its value) after its
    /// last subscriber left, so that a page reload does not restart it
    /// (see [`RegistryLayer::with_linger`]).
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub linger: Duration,
    /// Keys of the class polled at once (lingering ones included), at
    /// most: a flood of keys in one class never refuses another class's.
    pub max_keys: usize,
    /// Keys of the class one caller holds (those it created, until they
    /// leave after their linger), at most.
    pub max_keys_per_caller: usize,
    /// Keys of the class one client address holds, at most, as
    /// `max_keys_per_caller`.
    pub max_keys_per_address: usize,
    /// Subscribers of one key, at most.
    pub max_subscribers_per_key: usize,
    /// Subscriptions (event streams, polls in progress) to keys of the
    /// class one caller has open, at most.
    pub max_subscribers_per_caller: usize,
    /// Subscriptions to keys of the class one client address has open, at
    /// most, whatever credentials they present.
    pub max_subscribers_per_address: usize,
}

impl Default for ClassSettings {
    fn default() -> Self {
        ClassSettings {
            interval: Duration::from_secs(5),
            jitter: 0.1,
            linger: Duration::ZERO,
            max_subscribers_per_key: 1_000_000,
            max_keys: 100_000,
            max_keys_per_caller: 64,
            max_keys_per_address: 512,
            max_subscribers_per_caller: 8,
            max_subscribers_per_address: 256,
        }
    }
}

/// Panics unless `fraction` is a valid jitter, as tower's constructors do
/// with arguments out of range.
fn check_jitter(fraction: f64) -> f64 {
    assert!(
        (0.0..=MAX_JITTER).contains(&fraction),
        "a registry's jitter must be between 0.0 and {MAX_JITTER}, got {fraction}"
    );
    fraction
}

/// Applies [`Registry`] to a service: one shared poll loop per key, however
/// many subscribers.
///
/// All services made from one `RegistryLayer` value, and all their clones,
/// share one registry: subscribers to the same key through any of them share
/// one loop. Every `with_*` setting starts a fresh registry, so set them
/// before handing the layer out. See the [module docs](crate::registry).
pub struct RegistryLayer<
    K,
    C = AllDefault,
    P = CloneShare,
    F = HashFingerprint,
    Q = CloneRequest,
    W = (),
    V = DefaultFailures,
> {
    pub(super) key: K,
    pub(super) classify: C,
    pub(super) share: P,
    pub(super) fingerprint: F,
    pub(super) canonical: Q,
    pub(super) callers: W,
    pub(super) failures: V,
    config: Config,
    observers: Observers,
    core: Arc<Core>,
}

impl<K> RegistryLayer<K> {
    /// A registry keyed by `key`, sharing `Clone` values, telling changes by
    /// their `Hash` and polling with a clone of the first subscriber's
    /// request.
    pub fn new(key: K) -> Self {
        let config = Config::default();
        RegistryLayer {
            key,
            classify: AllDefault,
            share: CloneShare,
            fingerprint: HashFingerprint,
            canonical: CloneRequest,
            callers: (),
            failures: DefaultFailures,
            core: Arc::new(Core::new(config.clone(), Observers::none())),
            config,
            observers: Observers::none(),
        }
    }
}

impl<K, C, P, F, Q, W, V> RegistryLayer<K, C, P, F, Q, W, V> {
    fn configure(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self.core = Arc::new(Core::new(self.config.clone(), self.observers.clone()));
        self
    }

    /// The interval of subscribers that ask for none, in classes without
    /// settings of their own ([`with_class`](Self::with_class)). Default
    /// 5 s.
    pub fn with_interval(self, interval: Duration) -> Self {
        self.configure(|c| c.default.interval = interval)
    }

    /// No loop polls more often than every `floor`, whatever its subscribers
    /// ask and whatever the jitter. Default 1 s.
    pub fn with_floor(self, floor: Duration) -> Self {
        self.configure(|c| c.floor = floor)
    }

    /// Spreads each wait by up to ± `fraction` of it, so that keys started
    /// together do not poll in lockstep; a wait never goes below the
    /// [floor](Self::with_floor), and a backoff never above its cap. For
    /// classes without settings of their own. Default 0.1.
    ///
    /// # Panics
    ///
    /// If `fraction` is not between 0.0 and [`MAX_JITTER`] (0.5), as tower's
    /// constructors panic on arguments out of range: with more, a wait could
    /// shrink to nothing.
    pub fn with_jitter(self, fraction: f64) -> Self {
        let fraction = check_jitter(fraction);
        self.configure(|c| c.default.jitter = fraction)
    }

    /// Keeps a key's loop (and its value, without polling) for `linger`
    /// after its last subscriber leaves, so a subscriber that comes right
    /// back (a page reload) gets the value at once. For classes without
    /// settings of their own. Default zero.
    pub fn with_linger(self, linger: Duration) -> Self {
        self.configure(|c| c.default.linger = linger)
    }

    /// At most `max` keys of one class polled at once (lingering ones
    /// included), in classes without settings of their own, so that a
    /// flood of keys in one class never refuses another class's. Default
    /// 100,000; [`with_max_memory`](Self::with_max_memory) bounds all
    /// classes together.
    pub fn with_max_keys(self, max: usize) -> Self {
        self.configure(|c| c.default.max_keys = max)
    }

    /// At most `max` keys of one class held by one caller (the keys it
    /// created, until they leave after their linger), in classes without
    /// settings of their own. Default 64. Callers are told apart by
    /// [`with_callers`](Self::with_callers).
    pub fn with_max_keys_per_caller(self, max: usize) -> Self {
        self.configure(|c| c.default.max_keys_per_caller = max)
    }

    /// At most `max` keys of one class held by one client address, as
    /// [`with_max_keys_per_caller`](Self::with_max_keys_per_caller). Default
    /// 512: many users can share one address (NAT).
    pub fn with_max_keys_per_address(self, max: usize) -> Self {
        self.configure(|c| c.default.max_keys_per_address = max)
    }

    /// At most `max` open subscriptions to keys of one class per caller, in
    /// classes without settings of their own. Default 8.
    pub fn with_max_subscribers_per_caller(self, max: usize) -> Self {
        self.configure(|c| c.default.max_subscribers_per_caller = max)
    }

    /// At most `max` open subscriptions to keys of one class per client
    /// address, whatever identities they present. Default 256.
    pub fn with_max_subscribers_per_address(self, max: usize) -> Self {
        self.configure(|c| c.default.max_subscribers_per_address = max)
    }

    /// Subscriptions whose key is longer than `max` bytes are refused
    /// ([`Limit::KeyTooLong`](super::Limit::KeyTooLong)), and one-shot
    /// calls with one pass through uncoordinated. Such a key is never
    /// given a loop of its own: that would be one upstream call per
    /// subscriber per interval. Default
    /// [`DEFAULT_MAX_KEY_LEN`](crate::key::DEFAULT_MAX_KEY_LEN) (8 KiB), as
    /// Dedup and Cache.
    pub fn with_max_key_len(self, max: usize) -> Self {
        self.configure(|c| c.max_key_len = max)
    }

    /// While the registry's memory figure (its
    /// [`MemorySource`](crate::event::MemorySource)) is over `bytes`, a
    /// subscription that would start a new loop is refused
    /// ([`Limit::Memory`](super::Limit::Memory)); subscribers of the keys
    /// already polled still join them, and their loops go on. Default
    /// [`DEFAULT_MAX_MEMORY`] (24 MiB).
    pub fn with_max_memory(self, bytes: u64) -> Self {
        self.configure(|c| c.max_memory = bytes)
    }

    /// At most `max` subscribers of one key, in classes without settings of
    /// their own. Default 1,000,000.
    pub fn with_max_subscribers_per_key(self, max: usize) -> Self {
        self.configure(|c| c.default.max_subscribers_per_key = max)
    }

    /// Settings for the loops and budgets of one endpoint class (see
    /// [`with_classifier`](Self::with_classifier)), instead of the
    /// registry's `with_interval`, `with_jitter`, `with_linger` and the
    /// `with_max_*` settings of [`ClassSettings`]. The floor, the backoff,
    /// the key length, the memory budget and the subscribers in total are
    /// the registry's.
    ///
    /// ```
    /// use herdsman::{class::Class, key::Key, registry::{ClassSettings, RegistryLayer}};
    /// use std::time::Duration;
    ///
    /// let layer = RegistryLayer::new(|path: &&str| Some(Key::from(*path)))
    ///     .with_classifier(|path: &&str| {
    ///         if path.starts_with("/live") { Class::new("live") } else { Class::default() }
    ///     })
    ///     .with_class("live", ClassSettings {
    ///         interval: Duration::from_secs(2),
    ///         linger: Duration::from_secs(30),
    ///         ..ClassSettings::default()
    ///     });
    /// # let _ = layer;
    /// ```
    ///
    /// # Panics
    ///
    /// If `settings.jitter` is out of range, as [`with_jitter`](Self::with_jitter).
    pub fn with_class(self, class: impl Into<Class>, settings: ClassSettings) -> Self {
        check_jitter(settings.jitter);
        let class = class.into();
        self.configure(|c| {
            c.classes.insert(class, settings);
        })
    }

    /// All the settings of classes without their own at once: what
    /// [`with_interval`](Self::with_interval), [`with_jitter`](Self::with_jitter),
    /// [`with_linger`](Self::with_linger) and the `with_max_*` methods of
    /// [`ClassSettings`]'s fields set one by one (a configuration's
    /// `[registry]` section, for instance).
    ///
    /// # Panics
    ///
    /// If `settings.jitter` is out of range, as [`with_jitter`](Self::with_jitter).
    pub fn with_defaults(self, settings: ClassSettings) -> Self {
        check_jitter(settings.jitter);
        self.configure(|c| c.default = settings)
    }

    /// At most `max` subscribers in all. Default 1,000,000.
    pub fn with_max_subscribers(self, max: usize) -> Self {
        self.configure(|c| c.max_subscribers = max)
    }

    /// While the upstream fails, the n-th retry waits `base` × 2ⁿ⁻¹, never
    /// less than the key's interval nor more than `cap` (with jitter).
    /// Default 1 s and 60 s.
    pub fn with_backoff(self, base: Duration, cap: Duration) -> Self {
        self.configure(|c| {
            c.backoff_base = base;
            c.backoff_cap = cap;
        })
    }

    /// Lets `backend` decide which replica polls each key, and carry the
    /// news of a change to the others (a cluster-wide backend; the default,
    /// [`LocalLoops`](crate::backend::LocalLoops), polls every key in this
    /// process). A replica that follows another's loop fetches (through its
    /// own stack) once per change notice, or once per claim when no notice
    /// comes. Private loops (no key) always poll here.
    pub fn with_loop_backend(self, backend: impl LoopBackend) -> Self {
        let backend = Loops(Arc::new(backend));
        self.configure(|c| c.loops = backend)
    }

    /// Reports subscriptions and polls to `observer`.
    pub fn with_observer(mut self, observer: impl Observer) -> Self {
        self.observers = Observers::new(observer);
        self.configure(|_| {})
    }

    /// Names each key's endpoint class (from its first subscriber's request)
    /// for introspection and events.
    pub fn with_classifier<C2>(self, classify: C2) -> RegistryLayer<K, C2, P, F, Q, W, V> {
        RegistryLayer {
            key: self.key,
            classify,
            share: self.share,
            fingerprint: self.fingerprint,
            canonical: self.canonical,
            callers: self.callers,
            failures: self.failures,
            config: self.config,
            observers: self.observers,
            core: self.core,
        }
    }

    /// Uses `share` to hold one polled response for many subscribers.
    pub fn with_share<P2>(self, share: P2) -> RegistryLayer<K, C, P2, F, Q, W, V> {
        RegistryLayer {
            key: self.key,
            classify: self.classify,
            share,
            fingerprint: self.fingerprint,
            canonical: self.canonical,
            callers: self.callers,
            failures: self.failures,
            config: self.config,
            observers: self.observers,
            core: self.core,
        }
    }

    /// Tells changes with `fingerprint`.
    pub fn with_fingerprint<F2>(self, fingerprint: F2) -> RegistryLayer<K, C, P, F2, Q, W, V> {
        RegistryLayer {
            key: self.key,
            classify: self.classify,
            share: self.share,
            fingerprint,
            canonical: self.canonical,
            callers: self.callers,
            failures: self.failures,
            config: self.config,
            observers: self.observers,
            core: self.core,
        }
    }

    /// Builds each loop's upstream request with `canonical`.
    pub fn with_canonical<Q2>(self, canonical: Q2) -> RegistryLayer<K, C, P, F, Q2, W, V> {
        RegistryLayer {
            key: self.key,
            classify: self.classify,
            share: self.share,
            fingerprint: self.fingerprint,
            canonical,
            callers: self.callers,
            failures: self.failures,
            config: self.config,
            observers: self.observers,
            core: self.core,
        }
    }

    /// Judges each polled answer with `failures`, the classifier the
    /// Breaker and Stats use too (see [`crate::failure`]): an answer it calls
    /// a [`Failure`](crate::failure::Verdict::Failure) reaches subscribers as
    /// the error [`FailureClassifier::failure`](crate::failure::FailureClassifier::failure)
    /// makes of it (with the last good value still readable), and the loop
    /// backs off. Default: [`DefaultFailures`], for which every answer is
    /// good; [`RegistryLayer::http`] uses [`ServerErrors`][crate::http::ServerErrors] (a 5xx is an
    /// [`UpstreamStatus`](crate::failure::UpstreamStatus)).
    ///
    #[cfg_attr(
        not(feature = "http"),
        doc = "[`RegistryLayer::http`]: crate#feature-flags"
    )]
    #[cfg_attr(
        not(feature = "http"),
        doc = "[crate::http::ServerErrors]: crate#feature-flags"
    )]
    pub fn with_failure_classifier<V2>(self, failures: V2) -> RegistryLayer<K, C, P, F, Q, W, V2> {
        RegistryLayer {
            key: self.key,
            classify: self.classify,
            share: self.share,
            fingerprint: self.fingerprint,
            canonical: self.canonical,
            callers: self.callers,
            failures,
            config: self.config,
            observers: self.observers,
            core: self.core,
        }
    }

    /// Tells callers apart for the budgets per caller and per client
    /// address: `identity` keys a request's caller (a user id, its
    /// credentials), `address` its client address
    /// ([`ClientAddress`][crate::http::ClientAddress]). See
    /// [`Callers`](super::Callers).
    ///
    /// A key is charged to the caller and the address of the subscriber
    /// that created it, until it leaves; a subscription to the caller and
    /// the address that opened it, until it is dropped.
    ///
    /// ```
    /// use herdsman::{http::{ClientAddress, HttpKey}, key::Key, registry::RegistryLayer};
    /// use http::Request;
    ///
    /// let user = |req: &Request<()>| req.headers().get("x-user").map(|v| Key::new(v.as_bytes()));
    /// let layer = RegistryLayer::http(HttpKey::new())
    ///     .with_callers(user, ClientAddress::default())
    ///     .with_max_subscribers_per_caller(4)
    ///     .with_max_subscribers_per_address(64);
    /// # let _ = layer;
    /// ```
    ///
    #[cfg_attr(
        not(feature = "http"),
        doc = "[crate::http::ClientAddress]: crate#feature-flags"
    )]
    pub fn with_callers<I, A>(
        self,
        identity: I,
        address: A,
    ) -> RegistryLayer<K, C, P, F, Q, (I, A), V> {
        RegistryLayer {
            key: self.key,
            classify: self.classify,
            share: self.share,
            fingerprint: self.fingerprint,
            canonical: self.canonical,
            callers: (identity, address),
            failures: self.failures,
            config: self.config,
            observers: self.observers,
            core: self.core,
        }
    }

    /// A handle on this layer's registry.
    pub fn handle(&self) -> RegistryHandle {
        RegistryHandle {
            core: self.core.clone(),
        }
    }
}

impl<S, K: Clone, C: Clone, P: Clone, F: Clone, Q: Clone, W: Clone, V: Clone> Layer<S>
    for RegistryLayer<K, C, P, F, Q, W, V>
{
    type Service = Registry<S, K, C, P, F, Q, W, V>;

    fn layer(&self, inner: S) -> Self::Service {
        Registry {
            inner,
            key: self.key.clone(),
            classify: self.classify.clone(),
            share: self.share.clone(),
            fingerprint: self.fingerprint.clone(),
            canonical: self.canonical.clone(),
            callers: self.callers.clone(),
            failures: self.failures.clone(),
            core: self.core.clone(),
            table: Arc::default(),
        }
    }
}

impl<K: Clone, C: Clone, P: Clone, F: Clone, Q: Clone, W: Clone, V: Clone> Clone
    for RegistryLayer<K, C, P, F, Q, W, V>
{
    fn clone(&self) -> Self {
        RegistryLayer {
            key: self.key.clone(),
            classify: self.classify.clone(),
            share: self.share.clone(),
            fingerprint: self.fingerprint.clone(),
            canonical: self.canonical.clone(),
            callers: self.callers.clone(),
            failures: self.failures.clone(),
            config: self.config.clone(),
            observers: self.observers.clone(),
            core: self.core.clone(),
        }
    }
}

impl<K, C, P, F, Q, W, V> fmt::Debug for RegistryLayer<K, C, P, F, Q, W, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryLayer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{ClassSettings, RegistryLayer};
    use crate::key::Key;

    fn layer() -> RegistryLayer<fn(&u32) -> Option<Key>> {
        RegistryLayer::new(|n: &u32| Some(Key::from(u64::from(*n))))
    }

    #[test]
    fn with_defaults_sets_what_the_one_by_one_setters_set() {
        let settings = ClassSettings {
            interval: Duration::from_secs(7),
            jitter: 0.2,
            linger: Duration::from_secs(3),
            max_subscribers_per_key: 11,
            max_keys: 12,
            max_keys_per_caller: 13,
            max_keys_per_address: 14,
            max_subscribers_per_caller: 15,
            max_subscribers_per_address: 16,
        };
        let one_by_one = layer()
            .with_interval(settings.interval)
            .with_jitter(settings.jitter)
            .with_linger(settings.linger)
            .with_max_subscribers_per_key(settings.max_subscribers_per_key)
            .with_max_keys(settings.max_keys)
            .with_max_keys_per_caller(settings.max_keys_per_caller)
            .with_max_keys_per_address(settings.max_keys_per_address)
            .with_max_subscribers_per_caller(settings.max_subscribers_per_caller)
            .with_max_subscribers_per_address(settings.max_subscribers_per_address);
        let at_once = layer().with_defaults(settings);
        assert_eq!(at_once.config.default, settings);
        assert_eq!(one_by_one.config.default, settings);
    }

    #[test]
    #[should_panic]
    fn with_defaults_refuses_a_jitter_out_of_range() {
        let settings = ClassSettings {
            jitter: 0.9,
            ..ClassSettings::default()
        };
        let _ = layer().with_defaults(settings);
    }
}
