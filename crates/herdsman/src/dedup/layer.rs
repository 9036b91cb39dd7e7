use std::{fmt, sync::Arc, time::Duration};

use tower_layer::Layer;

use super::{state::State, Dedup, DedupStats};
use crate::{key::DEFAULT_MAX_KEY_LEN, share::CloneShare};

/// Applies [`Dedup`] to a service: concurrent identical requests share one
/// inner call.
///
/// All services made from one `DedupLayer` value, and all their clones, share
/// one in-flight map: a request through any of them coalesces with identical
/// requests through the others. Build a new layer value for an independent
/// map. See the [module docs](crate::dedup) for semantics.
pub struct DedupLayer<K, P = CloneShare> {
    key: K,
    share: P,
    state: Arc<State>,
}

impl<K> DedupLayer<K> {
    /// A layer keyed by `key`, sharing responses by cloning them, with no
    /// reuse window.
    pub fn new(key: K) -> Self {
        DedupLayer {
            key,
            share: CloneShare,
            state: Arc::new(State::new(Duration::ZERO, DEFAULT_MAX_KEY_LEN)),
        }
    }
}

impl<K, P> DedupLayer<K, P> {
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
    pub fn with_share<P2>(self, share: P2) -> DedupLayer<K, P2> {
        DedupLayer {
            key: self.key,
            share,
            state: self.state,
        }
    }

    /// The counters of this layer's in-flight map.
    pub fn stats(&self) -> DedupStats {
        self.state.stats()
    }
}

impl<S, K: Clone, P: Clone> Layer<S> for DedupLayer<K, P> {
    type Service = Dedup<S, K, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Dedup::from_parts(
            inner,
            self.key.clone(),
            self.share.clone(),
            self.state.clone(),
        )
    }
}

impl<K: Clone, P: Clone> Clone for DedupLayer<K, P> {
    fn clone(&self) -> Self {
        DedupLayer {
            key: self.key.clone(),
            share: self.share.clone(),
            state: self.state.clone(),
        }
    }
}

impl<K, P> fmt::Debug for DedupLayer<K, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DedupLayer")
            .field("window", &self.state.window())
            .field("max_key_len", &self.state.max_key_len())
            .finish_non_exhaustive()
    }
}
