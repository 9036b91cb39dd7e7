//! The set of circuits of one layer value, one per endpoint class.
//!
//! Lookups read an immutable map through `ArcSwap` (no lock); a new class
//! copies the map under a mutex (rare). The set is bounded: when it is full,
//! closed circuits that saw no call since the last sweep are dropped, and if
//! it is still full, new classes share one `"overflow"` circuit.

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc, Mutex, PoisonError},
};

use arc_swap::ArcSwap;
use tokio::sync::broadcast;

use super::{circuit::Circuit, BreakerConfig, BreakerEvent, BreakerState};
use crate::{
    backend::TripBackend, class::Class, event::Observers, key::KeyBuildHasher, sync::AtomicBool,
};

/// `Class` carries its hash: the map does not hash the name again.
type CircuitMap = HashMap<Class, Arc<Circuit>, KeyBuildHasher>;

pub(crate) struct Circuits {
    map: ArcSwap<CircuitMap>,
    insert: Mutex<()>,
    pub(crate) default: BreakerConfig,
    pub(crate) classes: HashMap<Class, BreakerConfig>,
    pub(crate) max: usize,
    pub(crate) events: broadcast::Sender<BreakerEvent>,
    /// Set once anyone subscribed: until then rejections send no event.
    pub(crate) subscribed: Arc<AtomicBool>,
    observers: Observers,
    /// Where trips are shared with other replicas, if they are.
    trips: Option<Arc<dyn TripBackend>>,
}

impl Circuits {
    /// The circuits, listening to the other replicas' trips through
    /// `trips` (for as long as they live).
    pub(crate) fn shared(
        default: BreakerConfig,
        classes: HashMap<Class, BreakerConfig>,
        max: usize,
        observers: Observers,
        trips: Option<Arc<dyn TripBackend>>,
    ) -> Arc<Self> {
        let circuits = Arc::new(Circuits::new(default, classes, max, observers, trips));
        if let Some(trips) = &circuits.trips {
            let weak = Arc::downgrade(&circuits);
            trips.listen(Arc::new(move |class, open_for| {
                let Some(circuits) = weak.upgrade() else {
                    return false;
                };
                circuits.get(class).open_remote(open_for);
                true
            }));
        }
        circuits
    }

    fn new(
        default: BreakerConfig,
        classes: HashMap<Class, BreakerConfig>,
        max: usize,
        observers: Observers,
        trips: Option<Arc<dyn TripBackend>>,
    ) -> Self {
        let (events, _) = broadcast::channel(1024);
        Circuits {
            map: ArcSwap::from_pointee(CircuitMap::default()),
            insert: Mutex::new(()),
            default,
            classes,
            max: max.max(1),
            events,
            subscribed: Arc::new(AtomicBool::new(false)),
            observers,
            trips,
        }
    }

    /// The circuit of `class`, made on first use.
    pub(crate) fn get(&self, class: &Class) -> Arc<Circuit> {
        if let Some(circuit) = self.map.load().get(class) {
            return Arc::clone(circuit);
        }
        self.insert(class)
    }

    /// The circuit of `class` if it exists.
    pub(crate) fn find(&self, class: &Class) -> Option<Arc<Circuit>> {
        self.map.load().get(class).cloned()
    }

    pub(crate) fn all(&self) -> Vec<Arc<Circuit>> {
        self.map.load().values().cloned().collect()
    }

    #[cold]
    fn insert(&self, class: &Class) -> Arc<Circuit> {
        let _guard = self.insert.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.map.load_full();
        if let Some(circuit) = current.get(class) {
            return Arc::clone(circuit);
        }
        let mut map = HashMap::clone(&current);
        let mut class = class.clone();
        if map.len() >= self.max {
            // Drop idle closed circuits; mark the rest for the next sweep.
            map.retain(|_, c| {
                let used = c.used.swap(false, Ordering::Relaxed);
                let keep = used || c.state() != BreakerState::Closed;
                if !keep {
                    c.retired.store(true, Ordering::Release);
                }
                keep
            });
            if map.len() >= self.max {
                class = Class::new("overflow");
                if let Some(circuit) = map.get(&class) {
                    return Arc::clone(circuit);
                }
            }
        }
        let config = self.classes.get(&class).copied().unwrap_or(self.default);
        let circuit = Arc::new(Circuit::new(
            class.clone(),
            config,
            self.events.clone(),
            self.subscribed.clone(),
            self.observers.clone(),
            self.trips.clone(),
        ));
        map.insert(class, Arc::clone(&circuit));
        self.map.store(Arc::new(map));
        circuit
    }

    pub(crate) fn len(&self) -> usize {
        self.map.load().len()
    }
}
