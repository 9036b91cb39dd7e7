use std::{fmt, sync::Arc, time::Duration};

use tower_layer::Layer;

use super::{
    rate::{RateRule, Rates},
    state::Shared,
    Limit, LimitHandle,
};
use crate::{
    backend::RateBackend,
    class::{AllDefault, Class},
    event::{Observer, Observers},
    key::{Key, KeyFn},
};

/// Default number of calls of one class in flight at once: 32.
pub const DEFAULT_MAX_CONCURRENT: usize = 32;

/// Default longest wait in a class's queue, when it has one: 1 s.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(1);

/// Default retry hint of [`Overloaded`](super::Overloaded): 1 s.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The limits of one endpoint class.
///
/// ```
/// use herdsman::limit::{ClassLimits, RateRule};
/// use std::time::Duration;
///
/// // 4 calls at once, 16 more may wait up to 2 s each, 10 calls per second.
/// let limits = ClassLimits::new(4)
///     .with_max_queue(16)
///     .with_max_wait(Duration::from_secs(2))
///     .with_rate(RateRule::per_second(10));
/// assert_eq!(limits.max_concurrent(), 4);
/// ```
///
/// With the `config` feature this is also the `[limit]` section of a
/// [`Config`][crate::config::Config] (and a class's `limit` table), its
/// keys named after the builder methods: `max_concurrency`, `max_queue`,
/// `max_wait`, `retry_after`, `rate` (a [`RateRule`]),
/// `max_concurrency_per_caller` and `max_concurrency_per_address` (a
/// [`Share`]: a count, `"auto"` or `"off"`; `"auto"` when left out).
///
#[cfg_attr(
    not(feature = "config"),
    doc = "[crate::config::Config]: crate#feature-flags"
)]
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "config",
    derive(serde::Deserialize, serde::Serialize),
    serde(deny_unknown_fields)
)]
pub struct ClassLimits {
    #[cfg_attr(feature = "config", serde(rename = "max_concurrency"))]
    pub(crate) max_concurrent: usize,
    pub(crate) max_queue: usize,
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub(crate) max_wait: Duration,
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub(crate) retry_after: Duration,
    #[cfg_attr(
        feature = "config",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub(crate) rate: Option<RateRule>,
    #[cfg_attr(
        feature = "config",
        serde(rename = "max_concurrency_per_caller", default = "Share::auto")
    )]
    pub(crate) per_caller: Share,
    #[cfg_attr(
        feature = "config",
        serde(rename = "max_concurrency_per_address", default = "Share::auto")
    )]
    pub(crate) per_address: Share,
}

/// How many of a class's calls one caller (or one client address) may
/// have in flight or waiting: see
/// [`ClassLimits::with_caller_share`] and
/// [`ClassLimits::with_address_share`].
///
/// In a configuration file a share is a count (`8`), `"auto"` or `"off"`;
/// a key left out is `"auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Share {
    /// A part of the class's own `max_concurrent`, at least 1: a quarter
    /// per caller, half per address. It follows the class's limit: a class
    /// with a limit of its own gets shares of its own.
    Auto,
    /// At most this many.
    Max(usize),
    /// No cap.
    Off,
}

impl Share {
    /// The Coordinator's default: [`Share::Auto`].
    #[cfg(feature = "config")]
    fn auto() -> Self {
        Share::Auto
    }

    /// The cap this share sets on a class of `max_concurrent` calls, where
    /// [`Auto`](Share::Auto) is `max_concurrent / divisor` (at least 1).
    fn cap(self, max_concurrent: usize, divisor: usize) -> Option<usize> {
        match self {
            Share::Auto => Some((max_concurrent / divisor).max(1)),
            Share::Max(max) => Some(max),
            Share::Off => None,
        }
    }
}

/// A share as a configuration writes it: a count, `"auto"` or `"off"`.
#[cfg(feature = "config")]
mod share_form {
    use std::fmt;

    use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

    use super::Share;

    impl Serialize for Share {
        fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
            match self {
                Share::Auto => ser.serialize_str("auto"),
                Share::Max(max) => ser.serialize_u64(*max as u64),
                Share::Off => ser.serialize_str("off"),
            }
        }
    }

    impl<'de> Deserialize<'de> for Share {
        fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
            de.deserialize_any(ShareVisitor)
        }
    }

    struct ShareVisitor;

    impl de::Visitor<'_> for ShareVisitor {
        type Value = Share;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a whole number, \"auto\" or \"off\"")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Share, E> {
            usize::try_from(v)
                .map(Share::Max)
                .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Share, E> {
            u64::try_from(v)
                .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
                .and_then(|v| self.visit_u64(v))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Share, E> {
            match v {
                "auto" => Ok(Share::Auto),
                "off" => Ok(Share::Off),
                _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
            }
        }
    }
}

impl ClassLimits {
    /// At most `max_concurrent` calls of the class in flight; no queue (a
    /// request over the limit is rejected at once); no rate rule; no share
    /// per caller or per address.
    ///
    /// Zero admits no call: with no queue every request is rejected, which
    /// shuts a class off. A limit beyond what a semaphore can count
    /// (`usize::MAX >> 3`) means no limit, as [`unlimited`](Self::unlimited).
    pub fn new(max_concurrent: usize) -> Self {
        ClassLimits {
            max_concurrent,
            max_queue: 0,
            max_wait: DEFAULT_MAX_WAIT,
            retry_after: DEFAULT_RETRY_AFTER,
            rate: None,
            per_caller: Share::Off,
            per_address: Share::Off,
        }
    }

    /// No concurrency limit, for a class that only needs a rate rule: no
    /// permit is taken, and `in_flight` is not counted.
    pub fn unlimited() -> Self {
        ClassLimits::new(usize::MAX)
    }

    /// At most `max_concurrent` calls of the class in flight, the rest
    /// kept (see [`new`](Self::new)).
    pub fn with_max_concurrent(mut self, max_concurrent: usize) -> Self {
        self.max_concurrent = max_concurrent;
        self
    }

    /// Up to `max_queue` requests wait for a permit when all are taken,
    /// served first come, first served. Zero (the default) rejects at once.
    pub fn with_max_queue(mut self, max_queue: usize) -> Self {
        self.max_queue = max_queue;
        self
    }

    /// How long a queued request waits for a permit before it is rejected
    /// (default [`DEFAULT_MAX_WAIT`]). Counted from the call.
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// The hint that [`Overloaded::retry_after`](super::Overloaded::retry_after)
    /// gives callers (default [`DEFAULT_RETRY_AFTER`]); the HTTP adapter sends
    /// it as `Retry-After`.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// A rate rule for the class (checked before the concurrency limit: a
    /// request it rejects takes no permit and no place in the queue).
    pub fn with_rate(mut self, rule: RateRule) -> Self {
        self.rate = Some(rule);
        self
    }

    /// No rate rule for the class.
    pub fn without_rate(mut self) -> Self {
        self.rate = None;
        self
    }

    /// At most `max` of the class's calls in flight or waiting for one
    /// caller (named by [`LimitLayer::with_identity`]); a request over it is
    /// refused at once with [`TooManyInFlight`](super::TooManyInFlight).
    /// Requests without an identity are not counted. None by default.
    /// Shorthand for `with_caller_share(Share::Max(max))`.
    pub fn with_max_concurrent_per_caller(self, max: usize) -> Self {
        self.with_caller_share(Share::Max(max))
    }

    /// At most `max` of the class's calls in flight or waiting for one
    /// client address (named by [`LimitLayer::with_address`]), whatever the
    /// callers: new credentials on every request do not make new shares.
    /// Requests without an address are not counted. None by default.
    /// Shorthand for `with_address_share(Share::Max(max))`.
    pub fn with_max_concurrent_per_address(self, max: usize) -> Self {
        self.with_address_share(Share::Max(max))
    }

    /// One caller's share of the class ([`Share::Off`] by default; the
    /// Coordinator's profiles use [`Share::Auto`], a quarter of the class:
    /// it takes four callers flooding at once to fill it, while one caller
    /// keeps room for a page's parallel requests).
    pub fn with_caller_share(mut self, share: Share) -> Self {
        self.per_caller = share;
        self
    }

    /// One client address's share of the class ([`Share::Off`] by default;
    /// the Coordinator's profiles use [`Share::Auto`], half of the class:
    /// one address may be many honest callers behind a NAT or a proxy,
    /// while new credentials on every request from one address still take
    /// at most half).
    pub fn with_address_share(mut self, share: Share) -> Self {
        self.per_address = share;
        self
    }

    /// Calls in flight at most.
    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    /// Requests waiting at most.
    pub fn max_queue(&self) -> usize {
        self.max_queue
    }

    /// Longest wait in the queue.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// The retry hint of rejections.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// The rate rule, if any.
    pub fn rate(&self) -> Option<&RateRule> {
        self.rate.as_ref()
    }

    /// One caller's share, as set.
    pub fn caller_share(&self) -> Share {
        self.per_caller
    }

    /// One client address's share, as set.
    pub fn address_share(&self) -> Share {
        self.per_address
    }

    /// Calls in flight or waiting per caller at most, if capped: the
    /// [`caller_share`](Self::caller_share) worked out.
    pub fn max_concurrent_per_caller(&self) -> Option<usize> {
        self.per_caller.cap(self.max_concurrent, 4)
    }

    /// Calls in flight or waiting per client address at most, if capped:
    /// the [`address_share`](Self::address_share) worked out.
    pub fn max_concurrent_per_address(&self) -> Option<usize> {
        self.per_address.cap(self.max_concurrent, 2)
    }
}

impl Default for ClassLimits {
    /// [`DEFAULT_MAX_CONCURRENT`] calls in flight, no queue, no rate rule.
    fn default() -> Self {
        ClassLimits::new(DEFAULT_MAX_CONCURRENT)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) default: ClassLimits,
    pub(crate) classes: Vec<(Class, ClassLimits)>,
    pub(crate) observers: Observers,
    pub(crate) rates: Rates,
}

/// The caller identity of layers built without
/// [`with_identity`](LimitLayer::with_identity), and their client address
/// without [`with_address`](LimitLayer::with_address): none, so rate rules
/// keyed by identity and shares per caller or address count nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoIdentity;

impl<Req> KeyFn<Req> for NoIdentity {
    fn key(&self, _: &Req) -> Option<Key> {
        None
    }
}

/// Applies [`Limit`] to a service: a concurrency limit per endpoint class,
/// and optional rate rules.
///
/// All services made from one `LimitLayer` value, and all their clones,
/// share one set of permits, queues and rate budgets: a class's limit holds
/// across all of them. Build a new layer value for independent limits. The
/// `with_class` method starts new state (call it before handing the layer
/// out). See the [module docs](crate::limit).
pub struct LimitLayer<C = AllDefault, I = NoIdentity, A = NoIdentity> {
    classify: C,
    identity: I,
    address: A,
    shared: Arc<Shared>,
}

impl LimitLayer {
    /// A layer giving every endpoint class `limits`, each class its own
    /// permits. Every request is in the default class until
    /// [`with_classifier`](Self::with_classifier) is set.
    pub fn new(limits: ClassLimits) -> Self {
        LimitLayer {
            classify: AllDefault,
            identity: NoIdentity,
            address: NoIdentity,
            shared: Arc::new(Shared::new(Settings {
                default: limits,
                classes: Vec::new(),
                observers: Observers::none(),
                rates: Rates::default(),
            })),
        }
    }
}

impl Default for LimitLayer {
    fn default() -> Self {
        LimitLayer::new(ClassLimits::default())
    }
}

impl<C, I, A> LimitLayer<C, I, A> {
    /// Limits of their own for one endpoint class (replacing the default
    /// limits for it, rate rule included). Starts new state.
    pub fn with_class(self, class: impl Into<Class>, limits: ClassLimits) -> Self {
        let class = class.into();
        let mut settings = self.shared.settings().clone();
        settings.classes.retain(|(c, _)| *c != class);
        settings.classes.push((class, limits));
        LimitLayer {
            classify: self.classify,
            identity: self.identity,
            address: self.address,
            shared: Arc::new(Shared::new(settings)),
        }
    }

    /// Names the class of each request, e.g.
    /// [`PathClasses`][crate::http::PathClasses].
    ///
    #[cfg_attr(
        not(feature = "http"),
        doc = "[crate::http::PathClasses]: crate#feature-flags"
    )]
    pub fn with_classifier<C2>(self, classify: C2) -> LimitLayer<C2, I, A> {
        LimitLayer {
            classify,
            identity: self.identity,
            address: self.address,
            shared: self.shared,
        }
    }

    /// Names the caller of each request, for rate rules keyed by identity
    /// and shares per caller: any [`KeyFn`], e.g. a closure reading a hook
    /// id or API key header. Requests it answers `None` for are not counted
    /// by caller.
    pub fn with_identity<I2>(self, identity: I2) -> LimitLayer<C, I2, A> {
        LimitLayer {
            classify: self.classify,
            identity,
            address: self.address,
            shared: self.shared,
        }
    }

    /// Names the client address of each request, for shares per address
    /// ([`ClassLimits::with_max_concurrent_per_address`]): usually
    /// [`ClientAddress`][crate::http::ClientAddress]. Requests it answers
    /// `None` for are not counted by address.
    ///
    #[cfg_attr(
        not(feature = "http"),
        doc = "[crate::http::ClientAddress]: crate#feature-flags"
    )]
    pub fn with_address<A2>(self, address: A2) -> LimitLayer<C, I, A2> {
        LimitLayer {
            classify: self.classify,
            identity: self.identity,
            address,
            shared: self.shared,
        }
    }

    /// Reports [`Event::Rejected`](crate::event::Event::Rejected) with
    /// [`Rejection::Overloaded`](crate::event::Rejection::Overloaded) or
    /// [`Rejection::RateLimited`](crate::event::Rejection::RateLimited) for
    /// every request this layer refuses, with its class (requests over an
    /// alert-only rule are let through and not reported). Starts new state,
    /// like [`with_class`](Self::with_class).
    pub fn with_observer(self, observer: impl Observer) -> Self {
        let mut settings = self.shared.settings().clone();
        settings.observers = Observers::new(observer);
        LimitLayer {
            classify: self.classify,
            identity: self.identity,
            address: self.address,
            shared: Arc::new(Shared::new(settings)),
        }
    }

    /// Keeps the budgets of the rate rules in `backend` (a cluster-wide
    /// one, say) instead of in memory ([`GovernorRates`](super::GovernorRates),
    /// the default). Starts new state, like [`with_class`](Self::with_class).
    pub fn with_rate_backend(self, backend: impl RateBackend) -> Self {
        let mut settings = self.shared.settings().clone();
        settings.rates = Rates::new(backend);
        LimitLayer {
            classify: self.classify,
            identity: self.identity,
            address: self.address,
            shared: Arc::new(Shared::new(settings)),
        }
    }

    /// A handle to this layer's state, for stats and memory accounting; it
    /// outlives the layer value.
    pub fn handle(&self) -> LimitHandle {
        LimitHandle::new(self.shared.clone())
    }
}

impl<S, C: Clone, I: Clone, A: Clone> Layer<S> for LimitLayer<C, I, A> {
    type Service = Limit<S, C, I, A>;

    fn layer(&self, inner: S) -> Self::Service {
        Limit::from_parts(
            inner,
            self.classify.clone(),
            (self.identity.clone(), self.address.clone()),
            self.shared.clone(),
        )
    }
}

impl<C: Clone, I: Clone, A: Clone> Clone for LimitLayer<C, I, A> {
    fn clone(&self) -> Self {
        LimitLayer {
            classify: self.classify.clone(),
            identity: self.identity.clone(),
            address: self.address.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<C, I, A> fmt::Debug for LimitLayer<C, I, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitLayer")
            .field("settings", self.shared.settings())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_auto_share_is_a_part_of_the_class_and_at_least_one() {
        let limits = ClassLimits::new(10)
            .with_caller_share(Share::Auto)
            .with_address_share(Share::Auto);
        assert_eq!(limits.max_concurrent_per_caller(), Some(2));
        assert_eq!(limits.max_concurrent_per_address(), Some(5));
        let small = limits.clone().with_max_concurrent(1);
        assert_eq!(small.max_concurrent_per_caller(), Some(1));
        assert_eq!(small.max_concurrent_per_address(), Some(1));
        let capped = limits.with_max_concurrent_per_caller(7);
        assert_eq!(capped.caller_share(), Share::Max(7));
        assert_eq!(capped.max_concurrent_per_caller(), Some(7));
        assert_eq!(ClassLimits::new(10).max_concurrent_per_caller(), None);
        assert_eq!(ClassLimits::new(10).address_share(), Share::Off);
    }

    #[cfg(feature = "config")]
    #[test]
    fn a_share_is_a_count_auto_or_off_in_a_file() {
        #[derive(serde::Deserialize, serde::Serialize, PartialEq, Debug)]
        struct One {
            share: Share,
        }
        for (form, share) in [
            ("share = 3\n", Share::Max(3)),
            ("share = \"auto\"\n", Share::Auto),
            ("share = \"off\"\n", Share::Off),
        ] {
            assert_eq!(toml::from_str::<One>(form).unwrap(), One { share });
            assert_eq!(toml::to_string(&One { share }).unwrap(), form);
        }
        assert!(toml::from_str::<One>("share = -1").is_err());
        assert!(toml::from_str::<One>("share = \"half\"").is_err());
    }
}
