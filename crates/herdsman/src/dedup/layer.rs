use std::{fmt, sync::Arc, time::Duration};

use tower_layer::Layer;

use super::{state::State, Dedup, DedupHandle};
use crate::{
    backend::LocalFlights,
    class::{AllDefault, Class, Classify},
    event::{Observer, Observers},
    key::DEFAULT_MAX_KEY_LEN,
    share::CloneShare,
};

/// Applies [`Dedup`] to a service: concurrent identical requests share one
/// inner call.
///
/// All services made from one `DedupLayer` value, and all their clones, share
/// one in-flight map (one per distinct reuse window, see
/// [`with_class_window`](Self::with_class_window)): a request through any of
/// them coalesces with identical requests through the others. Build a new
/// layer value for an independent map. See the [module docs](crate::dedup)
/// for semantics.
pub struct DedupLayer<K, P = CloneShare, C = AllDefault, B = LocalFlights> {
    key: K,
    share: P,
    classify: C,
    observers: Observers,
    backend: B,
    windows: Arc<Windows>,
}

/// The in-flight maps of one layer value: one per distinct reuse window.
pub(super) struct Windows {
    /// The classes whose window is not the default one, each with the index
    /// in `all` of its window's map (classes with equal windows share one).
    classes: Box<[(Class, usize)]>,
    /// Every distinct map, the default first.
    all: Box<[Arc<State>]>,
    /// The settings they were made from, to make them again.
    windows: Box<[(Class, Duration)]>,
}

impl Windows {
    pub(super) fn new(window: Duration, windows: &[(Class, Duration)], max_key_len: usize) -> Self {
        let mut all = vec![Arc::new(State::new(window, max_key_len))];
        let classes = windows
            .iter()
            .filter(|(_, w)| *w != window)
            .map(|(class, w)| {
                let index = match all.iter().position(|state| state.window() == *w) {
                    Some(index) => index,
                    None => {
                        all.push(Arc::new(State::new(*w, max_key_len)));
                        all.len() - 1
                    }
                };
                (class.clone(), index)
            })
            .collect();
        Windows {
            classes,
            all: all.into(),
            windows: windows.into(),
        }
    }

    /// The map for requests of no class of their own.
    fn default(&self) -> &Arc<State> {
        &self.all[0]
    }

    /// The index in [`all`](Self::all) of `req`'s window's map: the default
    /// one unless classes have windows of their own (only then is the
    /// request classified).
    #[inline]
    pub(super) fn of<Req, C: Classify<Req>>(&self, req: &Req, classify: &C) -> usize {
        if self.classes.is_empty() {
            return 0;
        }
        let class = classify.classify(req);
        self.classes
            .iter()
            .find(|(c, _)| *c == class)
            .map_or(0, |(_, index)| *index)
    }

    /// Every distinct map, the default first.
    pub(super) fn all(&self) -> &[Arc<State>] {
        &self.all
    }
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
            windows: Arc::new(Windows::new(Duration::ZERO, &[], DEFAULT_MAX_KEY_LEN)),
        }
    }
}

impl<K, P, C, B> DedupLayer<K, P, C, B> {
    /// Keeps a finished successful result for `window`: identical requests in
    /// that time get it without an inner call. Zero (the default) re-executes.
    /// Errors are never reused. Classes given a window of their own with
    /// [`with_class_window`](Self::with_class_window) keep theirs.
    ///
    /// Starts fresh in-flight maps (call it before handing the layer out).
    pub fn with_window(self, window: Duration) -> Self {
        let windows = &self.windows;
        let max = windows.default().max_key_len();
        let windows = Windows::new(window, &windows.windows, max);
        self.with_windows(windows)
    }

    /// Gives the requests of `class` (named by
    /// [`with_classifier`](Self::with_classifier)) a reuse window of their
    /// own: a class whose window differs from the default one coalesces in
    /// its own in-flight map, shared with the classes of the same window.
    /// Requests are classified on each call only when some class has such a
    /// window.
    ///
    /// Starts fresh in-flight maps (call it before handing the layer out).
    pub fn with_class_window(self, class: impl Into<Class>, window: Duration) -> Self {
        let class = class.into();
        let old = &self.windows;
        let mut windows: Vec<(Class, Duration)> = old
            .windows
            .iter()
            .filter(|(c, _)| *c != class)
            .cloned()
            .collect();
        windows.push((class, window));
        let (default, max) = (old.default().window(), old.default().max_key_len());
        self.with_windows(Windows::new(default, &windows, max))
    }

    /// Requests whose key is longer than `max` bytes pass through
    /// uncoordinated. Default [`DEFAULT_MAX_KEY_LEN`] (8 KiB).
    ///
    /// Starts fresh in-flight maps (call it before handing the layer out).
    pub fn with_max_key_len(self, max: usize) -> Self {
        let old = &self.windows;
        let windows = Windows::new(old.default().window(), &old.windows, max);
        self.with_windows(windows)
    }

    fn with_windows(mut self, windows: Windows) -> Self {
        self.windows = Arc::new(windows);
        self
    }

    /// Uses `share` to hand one response to many callers, e.g.
    /// [`HttpShare`][crate::http::HttpShare].
    ///
    #[cfg_attr(
        not(feature = "http"),
        doc = "[crate::http::HttpShare]: crate#feature-flags"
    )]
    pub fn with_share<P2>(self, share: P2) -> DedupLayer<K, P2, C, B> {
        DedupLayer {
            key: self.key,
            share,
            classify: self.classify,
            observers: self.observers,
            backend: self.backend,
            windows: self.windows,
        }
    }

    /// Names the endpoint class of each request, e.g.
    /// [`PathClasses`][crate::http::PathClasses]: for the events reported
    /// to the observer, the per-class reuse windows, and the layer's
    /// run-time switch ([`Classify::is_on`]). Coalescing itself is by key
    /// alone.
    ///
    #[cfg_attr(
        not(feature = "http"),
        doc = "[crate::http::PathClasses]: crate#feature-flags"
    )]
    pub fn with_classifier<C2>(self, classify: C2) -> DedupLayer<K, P, C2, B> {
        DedupLayer {
            key: self.key,
            share: self.share,
            classify,
            observers: self.observers,
            backend: self.backend,
            windows: self.windows,
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
            windows: self.windows,
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

    /// A handle to this layer's in-flight maps, for stats and memory
    /// accounting; it outlives the layer value.
    pub fn handle(&self) -> DedupHandle {
        DedupHandle::new(self.windows.clone())
    }
}

impl<S, K: Clone, P: Clone, C: Clone, B: Clone> Layer<S> for DedupLayer<K, P, C, B> {
    type Service = Dedup<S, K, P, C, B>;

    fn layer(&self, inner: S) -> Self::Service {
        Dedup::from_parts(
            inner,
            self.key.clone(),
            self.share.clone(),
            self.windows.clone(),
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
            windows: self.windows.clone(),
        }
    }
}

impl<K, P, C, B> fmt::Debug for DedupLayer<K, P, C, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let windows = &self.windows;
        f.debug_struct("DedupLayer")
            .field("window", &windows.default().window())
            .field("class_windows", &windows.windows)
            .field("max_key_len", &windows.default().max_key_len())
            .field("observers", &self.observers)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        convert::Infallible,
        sync::atomic::{AtomicUsize, Ordering::SeqCst},
    };

    use tower::{service_fn, ServiceExt};

    use super::*;
    use crate::key::Key;

    fn class_of(req: &&'static str) -> Class {
        match req.strip_prefix('/') {
            Some(name) if name != "default" => Class::new(name),
            _ => Class::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_class_with_a_window_of_its_own_reuses_while_the_others_call_again() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let layer = DedupLayer::new(|req: &&'static str| Some(Key::from(*req)))
            .with_classifier(class_of as fn(&&'static str) -> Class)
            .with_class_window("slow", Duration::from_secs(1))
            .with_class_window("also-slow", Duration::from_secs(1));
        let svc = layer.layer(service_fn(move |req: &'static str| {
            counter.fetch_add(1, SeqCst);
            async move { Ok::<_, Infallible>(req) }
        }));
        for _ in 0..2 {
            for req in ["/slow", "/also-slow", "/default"] {
                assert_eq!(svc.clone().oneshot(req).await.unwrap(), req);
            }
        }
        // Once each for the classes with a window, twice for the default.
        assert_eq!(calls.load(SeqCst), 4);
        let stats = layer.handle().stats();
        assert_eq!((stats.window_hits, stats.entries), (2, 2));
        // The two classes of one window share one map besides the default's.
        assert_eq!(layer.windows.all().len(), 2);

        tokio::time::advance(Duration::from_secs(2)).await;
        svc.clone().oneshot("/slow").await.unwrap();
        assert_eq!(calls.load(SeqCst), 5, "the window has passed");
    }

    #[tokio::test]
    async fn a_class_given_the_default_window_shares_the_default_map() {
        let layer = DedupLayer::new(|req: &&'static str| Some(Key::from(*req)))
            .with_classifier(class_of as fn(&&'static str) -> Class)
            .with_window(Duration::from_secs(1))
            .with_class_window("same", Duration::from_secs(1));
        assert_eq!(layer.windows.all().len(), 1);
        assert!(layer.windows.classes.is_empty(), "nothing to classify");
    }
}
