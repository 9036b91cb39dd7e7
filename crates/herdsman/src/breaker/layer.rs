use std::{collections::HashMap, fmt, sync::Arc};

use tower_layer::Layer;

use super::{circuits::Circuits, Breaker, BreakerConfig, BreakerHandle, DefaultFailures};
use crate::{
    backend::TripBackend,
    class::{AllDefault, Class},
    event::{Observer, Observers},
};

/// Circuits kept at most, by default.
pub const DEFAULT_MAX_CIRCUITS: usize = 1024;

/// Applies [`Breaker`] to a service: one circuit breaker per endpoint class.
///
/// All services made from one `BreakerLayer` value, and their clones, share
/// its circuits; the `with_*` methods that change settings start new ones.
pub struct BreakerLayer<C = AllDefault, K = DefaultFailures> {
    classify: C,
    classifier: K,
    default: BreakerConfig,
    classes: HashMap<Class, BreakerConfig>,
    max: usize,
    observers: Observers,
    trips: Option<Arc<dyn TripBackend>>,
    circuits: Arc<Circuits>,
}

impl BreakerLayer {
    /// One breaker for every request, with the default settings.
    pub fn new() -> Self {
        let default = BreakerConfig::default();
        BreakerLayer {
            classify: AllDefault,
            classifier: DefaultFailures,
            default,
            classes: HashMap::new(),
            max: DEFAULT_MAX_CIRCUITS,
            observers: Observers::none(),
            trips: None,
            circuits: Circuits::shared(
                default,
                HashMap::new(),
                DEFAULT_MAX_CIRCUITS,
                Observers::none(),
                None,
            ),
        }
    }
}

impl Default for BreakerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<C, K> BreakerLayer<C, K> {
    fn rebuild(mut self) -> Self {
        self.circuits = Circuits::shared(
            self.default,
            self.classes.clone(),
            self.max,
            self.observers.clone(),
            self.trips.clone(),
        );
        self
    }

    /// The settings of classes without their own.
    pub fn with_config(mut self, config: BreakerConfig) -> Self {
        self.default = config;
        self.rebuild()
    }

    /// The settings of one endpoint class.
    pub fn with_class(mut self, class: impl Into<Class>, config: BreakerConfig) -> Self {
        self.classes.insert(class.into(), config);
        self.rebuild()
    }

    /// Names each request's class: one breaker per class. Return a class made
    /// from the request's key for one breaker per key; the set is bounded by
    /// [`with_max_circuits`](Self::with_max_circuits).
    pub fn with_classifier<C2>(self, classify: C2) -> BreakerLayer<C2, K> {
        BreakerLayer {
            classify,
            classifier: self.classifier,
            default: self.default,
            classes: self.classes,
            max: self.max,
            observers: self.observers,
            trips: self.trips,
            circuits: self.circuits,
        }
    }

    /// Decides which results are upstream failures, e.g.
    /// [`ServerErrors`][crate::http::ServerErrors] for HTTP.
    ///
    #[cfg_attr(
        not(feature = "http"),
        doc = "[crate::http::ServerErrors]: crate#feature-flags"
    )]
    pub fn with_failure_classifier<K2>(self, classifier: K2) -> BreakerLayer<C, K2> {
        BreakerLayer {
            classify: self.classify,
            classifier,
            default: self.default,
            classes: self.classes,
            max: self.max,
            observers: self.observers,
            trips: self.trips,
            circuits: self.circuits,
        }
    }

    /// Keeps at most `max` circuits (idle closed ones are dropped first).
    pub fn with_max_circuits(mut self, max: usize) -> Self {
        self.max = max;
        self.rebuild()
    }

    /// Reports [`Event::BreakerState`](crate::event::Event::BreakerState) on
    /// every change of a breaker's state (reset to the state it is in is
    /// not a change) and
    /// [`Event::Rejected`](crate::event::Event::Rejected)`(`[`BreakerOpen`](crate::event::Rejection::BreakerOpen)`)`
    /// for every call failed fast, with the breaker's class. The class is
    /// the one the breaker already knows: no extra classification. Starts
    /// new circuits, like the other settings (call it before handing out
    /// [`handle`](Self::handle)s).
    pub fn with_observer(mut self, observer: impl Observer) -> Self {
        self.observers = Observers::new(observer);
        self.rebuild()
    }

    /// Shares trips with other replicas through `backend` (see
    /// [`TripBackend`]): each trip of this layer's breakers is announced,
    /// and a trip announced by another replica opens this layer's breaker
    /// of that class for the time the trip has left, as if it had tripped
    /// here (then half-open probing as usual; it is not announced again).
    /// A breaker forced open, disabled, or already open is left as it is.
    /// Off by default ([`LocalTrips`](crate::backend::LocalTrips)). Starts
    /// new circuits, like the other settings.
    pub fn with_trip_backend(mut self, backend: impl TripBackend) -> Self {
        self.trips = Some(Arc::new(backend));
        self.rebuild()
    }

    /// A handle to watch and steer this layer's breakers at run time.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle {
            circuits: self.circuits.clone(),
        }
    }
}

impl<S, C: Clone, K: Clone> Layer<S> for BreakerLayer<C, K> {
    type Service = Breaker<S, C, K>;

    fn layer(&self, inner: S) -> Self::Service {
        Breaker {
            inner,
            classify: self.classify.clone(),
            classifier: self.classifier.clone(),
            circuits: self.circuits.clone(),
            last: None,
        }
    }
}

impl<C: Clone, K: Clone> Clone for BreakerLayer<C, K> {
    fn clone(&self) -> Self {
        BreakerLayer {
            classify: self.classify.clone(),
            classifier: self.classifier.clone(),
            default: self.default,
            classes: self.classes.clone(),
            max: self.max,
            observers: self.observers.clone(),
            trips: self.trips.clone(),
            circuits: self.circuits.clone(),
        }
    }
}

impl<C, K> fmt::Debug for BreakerLayer<C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerLayer")
            .field("default", &self.default)
            .field("classes", &self.classes)
            .field("max", &self.max)
            .field("observers", &self.observers)
            .field("shares_trips", &self.trips.is_some())
            .finish_non_exhaustive()
    }
}
