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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassLimits {
    pub(crate) max_concurrent: usize,
    pub(crate) max_queue: usize,
    pub(crate) max_wait: Duration,
    pub(crate) retry_after: Duration,
    pub(crate) rate: Option<RateRule>,
    pub(crate) max_per_caller: Option<usize>,
    pub(crate) max_per_address: Option<usize>,
}

impl ClassLimits {
    /// At most `max_concurrent` calls of the class in flight; no queue (a
    /// request over the limit is rejected at once); no rate rule.
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
            max_per_caller: None,
            max_per_address: None,
        }
    }

    /// No concurrency limit, for a class that only needs a rate rule: no
    /// permit is taken, and `in_flight` is not counted.
    pub fn unlimited() -> Self {
        ClassLimits::new(usize::MAX)
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

    /// At most `max` of the class's calls in flight or waiting for one
    /// caller (named by [`LimitLayer::with_identity`]); a request over it is
    /// refused at once with [`TooManyInFlight`](super::TooManyInFlight).
    /// Requests without an identity are not counted. None by default.
    pub fn with_max_concurrent_per_caller(mut self, max: usize) -> Self {
        self.max_per_caller = Some(max);
        self
    }

    /// At most `max` of the class's calls in flight or waiting for one
    /// client address (named by [`LimitLayer::with_address`]), whatever the
    /// callers: new credentials on every request do not make new shares.
    /// Requests without an address are not counted. None by default.
    pub fn with_max_concurrent_per_address(mut self, max: usize) -> Self {
        self.max_per_address = Some(max);
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

    /// Calls in flight or waiting per caller at most, if capped.
    pub fn max_concurrent_per_caller(&self) -> Option<usize> {
        self.max_per_caller
    }

    /// Calls in flight or waiting per client address at most, if capped.
    pub fn max_concurrent_per_address(&self) -> Option<usize> {
        self.max_per_address
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
