use std::{fmt, sync::Arc, time::Duration};

use tower_layer::Layer;

use super::{state::State, Dedup, DedupHandle, DedupStats};
use crate::{
    backend::LocalFlights,
    class::AllDefault,
    event::{Observer, Observers},
    key::DEFAULT_MAX_KEY_LEN,
    share::CloneShare,
};

/// Applies [`Dedup`] to a service: concurrent identical requests share one
/// inner call.
///
/// All services made from one `DedupLayer` value, and all their clones, share
/// one in-flight map: a request through any of them coalesces with identical
/// requests through the others. Build a new layer value for an independent
/// map. See the [module docs](crate::dedup) for semantics.
pub struct DedupLayer<K, P = CloneShare, C = AllDefault, B = LocalFlights> {
    key: K,
    share: P,
    classify: C,
    observers: Observers,
    backend: B,
    state: Arc<State>,
}

impl<K> DedupLayer<K> {
    /// A layer keyed by `key`, sharing responses by cloning them, with no
    /// reuse window.
    pub fn new(key: K) -> Self {
        DedupLayer {
            key,
            share: CloneShare,
            classify: AllDefault,
            observers: Observers::none(),
            backend: LocalFlights,
            state: Arc::new(State::new(Duration::ZERO, DEFAULT_MAX_KEY_LEN)),
        }
    }
}

impl<K, P, C, B> DedupLayer<K, P, C, B> {
    /// Keeps a finished successful result for `window`: identical requests in
    /// that time get it without an inner call. Zero (the default) re-executes.
    /// Errors are never reused.
    ///
    /// Starts a fresh in-flight map (call it before handing the layer out).
    pub fn with_window(mut self, window: Duration) -> Self {
        self.state = Arc::new(State::new(window, self.state.max_key_len()));
        self
    }

    /// Requests whose key is longer than `max` bytes pass through
    /// uncoordinated. Default [`DEFAULT_MAX_KEY_LEN`] (8 KiB).
    ///
    /// Starts a fresh in-flight map (call it before handing the layer out).
    pub fn with_max_key_len(mut self, max: usize) -> Self {
        self.state = Arc::new(State::new(self.state.window(), max));
        self
    }

    /// Uses `share` to hand one response to many callers, e.g.
    /// [`HttpShare`](crate::http::HttpShare).
    pub fn with_share<P2>(self, share: P2) -> DedupLayer<K, P2, C, B> {
        DedupLayer {
            key: self.key,
            share,
            classify: self.classify,
            observers: self.observers,
            backend: self.backend,
            state: self.state,
        }
    }

    /// Names the endpoint class of each request, e.g.
    /// [`PathClasses`](crate::http::PathClasses), for the events reported to
    /// the observer. Requests are classified only when an observer is set:
    /// coalescing itself is by key alone.
    pub fn with_classifier<C2>(self, classify: C2) -> DedupLayer<K, P, C2, B> {
        DedupLayer {
            key: self.key,
            share: self.share,
            classify,
            observers: self.observers,
            backend: self.backend,
            state: self.state,
        }
    }

    /// Asks `backend` before each local leader calls the inner service, so
    /// that callers coalesce across replicas too (a cluster-wide backend;
    /// the default, [`LocalFlights`], coalesces within this process). See
    /// [`FlightBackend`](crate::backend::FlightBackend).
    pub fn with_flight_backend<B2>(self, backend: B2) -> DedupLayer<K, P, C, B2> {
        DedupLayer {
            key: self.key,
            share: self.share,
            classify: self.classify,
            observers: self.observers,
            backend,
            state: self.state,
        }
    }

    /// Reports [`Event::Coalesced`](crate::event::Event::Coalesced) for each
    /// caller that joins a call in flight and
    /// [`Event::Reused`](crate::event::Event::Reused) for each caller answered
    /// from the reuse window, with the class named by
    /// [`with_classifier`](Self::with_classifier). Services made from this
    /// layer value afterwards, and their clones, share the observer.
    pub fn with_observer(mut self, observer: impl Observer) -> Self {
        self.observers = Observers::new(observer);
        self
    }

    /// The counters of this layer's in-flight map.
    pub fn stats(&self) -> DedupStats {
        self.state.stats()
    }

    /// A handle to this layer's in-flight map, for stats and memory
    /// accounting; it outlives the layer value.
    pub fn handle(&self) -> DedupHandle {
        DedupHandle::new(self.state.clone())
    }
}

impl<S, K: Clone, P: Clone, C: Clone, B: Clone> Layer<S> for DedupLayer<K, P, C, B> {
    type Service = Dedup<S, K, P, C, B>;

    fn layer(&self, inner: S) -> Self::Service {
        Dedup::from_parts(
            inner,
            self.key.clone(),
            self.share.clone(),
            self.state.clone(),
        )
        .with_events(
            self.classify.clone(),
            self.observers.clone(),
            self.backend.clone(),
        )
    }
}

impl<K: Clone, P: Clone, C: Clone, B: Clone> Clone for DedupLayer<K, P, C, B> {
    fn clone(&self) -> Self {
        DedupLayer {
            key: self.key.clone(),
            share: self.share.clone(),
            classify: self.classify.clone(),
            observers: self.observers.clone(),
            backend: self.backend.clone(),
            state: self.state.clone(),
        }
    }
}

impl<K, P, C, B> fmt::Debug for DedupLayer<K, P, C, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DedupLayer")
            .field("window", &self.state.window())
            .field("max_key_len", &self.state.max_key_len())
            .field("observers", &self.observers)
            .finish_non_exhaustive()
    }
}
