use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
};

#[cfg(feature = "config")]
use serde::{Deserialize, Serialize};

use crate::class::{Class, Classify};
#[cfg(feature = "config")]
use crate::config::Config;

/// A layer of the stack, as switches name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "config", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "config", serde(rename_all = "lowercase"))]
pub enum LayerName {
    /// The subscription registry.
    Registry,
    /// Stats and alerts.
    Stats,
    /// The cache.
    Cache,
    /// Single-flight.
    Dedup,
    /// Circuit breakers.
    Breaker,
    /// Concurrency and rate limits.
    Limit,
}

impl LayerName {
    /// Every layer, outer to inner.
    pub const ALL: [LayerName; 6] = [
        LayerName::Registry,
        LayerName::Stats,
        LayerName::Cache,
        LayerName::Dedup,
        LayerName::Breaker,
        LayerName::Limit,
    ];

    /// The lowercase name, as in metrics labels and configuration keys.
    pub fn as_str(self) -> &'static str {
        match self {
            LayerName::Registry => "registry",
            LayerName::Stats => "stats",
            LayerName::Cache => "cache",
            LayerName::Dedup => "dedup",
            LayerName::Breaker => "breaker",
            LayerName::Limit => "limit",
        }
    }
}

impl fmt::Display for LayerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for LayerName {
    type Err = UnknownSwitch;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LayerName::ALL
            .into_iter()
            .find(|layer| layer.as_str() == s)
            .ok_or_else(|| UnknownSwitch(format!("unknown layer {s:?}")))
    }
}

/// One switch as the request path reads it: a shared flag, read with one
/// atomic load. Get it once from [`Switches::switch`] and keep it.
#[derive(Clone)]
pub struct Switch(Arc<AtomicBool>);

impl Switch {
    /// A switch that is not part of any [`Switches`] (always in the state it
    /// was made with); for layers used without a coordinator.
    pub fn fixed(on: bool) -> Self {
        Switch(Arc::new(AtomicBool::new(on)))
    }

    /// Whether the switch is on: one atomic load.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl fmt::Debug for Switch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Switch").field(&self.is_on()).finish()
    }
}

/// The state of one switch, as [`Switches::list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "config", derive(Serialize, Deserialize))]
pub struct SwitchState {
    /// The layer.
    pub layer: LayerName,
    /// The endpoint class.
    pub class: String,
    /// Whether this switch is set on.
    pub on: bool,
    /// Whether the layer runs: this switch and the stack switch are both on.
    pub effective: bool,
}

/// A switch that does not exist: an unknown layer or endpoint class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSwitch(String);

impl fmt::Display for UnknownSwitch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UnknownSwitch {}

/// Run-time switches: one per layer per endpoint class, and one for the
/// whole stack.
///
/// Each (layer, class) switch is published as one [`Switch`] whose flag is
/// "this switch on **and** the stack on", recomputed when either is flipped,
/// so the request path pays one atomic load whatever it checks. Flips are
/// serialized by a mutex (never taken on the request path), logged with
/// `tracing` at info level and counted in the
/// `herdsman_switch_flips_total{layer, endpoint}` counter (`layer="stack"`,
/// `endpoint="*"` for the whole stack). Setting a switch to the state it is
/// in is not a flip.
///
/// The set of classes is fixed at construction; requests of any other class
/// use the switches of the default class. Clones share the switches.
#[derive(Clone)]
pub struct Switches {
    inner: Arc<Inner>,
}

struct Inner {
    stack: Switch,
    flags: HashMap<(LayerName, Class), Switch>,
    state: Mutex<State>,
}

struct State {
    stack: bool,
    on: BTreeMap<(LayerName, Class), bool>,
}

impl Switches {
    /// Every layer on for `classes` and the default class.
    pub fn new(classes: impl IntoIterator<Item = impl Into<Class>>) -> Self {
        let classes: Vec<Class> = classes
            .into_iter()
            .map(Into::into)
            .chain([Class::default()])
            .collect();
        let on = classes
            .iter()
            .flat_map(|class| LayerName::ALL.map(|layer| ((layer, class.clone()), true)))
            .collect();
        Self::with_state(State { stack: true, on })
    }

    /// The switches of a configuration: its classes and the default class,
    /// each layer on or off as the class's effective `layers` say.
    #[cfg(feature = "config")]
    #[cfg_attr(docsrs, doc(cfg(feature = "config")))]
    pub fn from_config(config: &Config) -> Self {
        let on = config
            .classes()
            .into_iter()
            .flat_map(|class| {
                let layers = class.layers;
                LayerName::ALL.map(|layer| {
                    let on = match layer {
                        LayerName::Registry => layers.registry,
                        LayerName::Stats => layers.stats,
                        LayerName::Cache => layers.cache,
                        LayerName::Dedup => layers.dedup,
                        LayerName::Breaker => layers.breaker,
                        LayerName::Limit => layers.limit,
                    };
                    ((layer, class.class.clone()), on)
                })
            })
            .collect();
        Self::with_state(State { stack: true, on })
    }

    fn with_state(state: State) -> Self {
        let flags = state
            .on
            .iter()
            .map(|(id, on)| (id.clone(), Switch::fixed(state.stack && *on)))
            .collect();
        Switches {
            inner: Arc::new(Inner {
                stack: Switch::fixed(state.stack),
                flags,
                state: Mutex::new(state),
            }),
        }
    }

    /// The switch of `layer` for `class` (the default class's, for a class
    /// not configured). Look it up once; reading it is one atomic load.
    pub fn switch(&self, layer: LayerName, class: &Class) -> Switch {
        self.inner
            .flags
            .get(&(layer, class.clone()))
            .or_else(|| self.inner.flags.get(&(layer, Class::default())))
            .expect("every layer has a switch for the default class")
            .clone()
    }

    /// The whole-stack switch: off sends every request straight to the inner
    /// service.
    pub fn stack(&self) -> Switch {
        self.inner.stack.clone()
    }

    /// Whether `layer` runs for `class`: its switch and the stack's are on.
    pub fn is_on(&self, layer: LayerName, class: &Class) -> bool {
        self.switch(layer, class).is_on()
    }

    /// Sets the switch of `layer` for `class`; returns the state it had.
    /// Takes effect on the next request.
    pub fn set(&self, layer: LayerName, class: &Class, on: bool) -> Result<bool, UnknownSwitch> {
        let id = (layer, class.clone());
        let mut state = self.lock();
        let stack = state.stack;
        let slot = state
            .on
            .get_mut(&id)
            .ok_or_else(|| UnknownSwitch(format!("unknown endpoint class {:?}", class.as_str())))?;
        let was = std::mem::replace(slot, on);
        self.inner.flags[&id]
            .0
            .store(stack && on, Ordering::Release);
        drop(state);
        if was != on {
            flipped(layer.as_str(), class.as_str(), on);
        }
        Ok(was)
    }

    /// Sets the whole-stack switch; returns the state it had. Off bypasses
    /// every layer of every class; on restores each layer's own switch.
    pub fn set_all(&self, on: bool) -> bool {
        let mut state = self.lock();
        let was = std::mem::replace(&mut state.stack, on);
        self.inner.stack.0.store(on, Ordering::Release);
        for (id, layer_on) in &state.on {
            self.inner.flags[id]
                .0
                .store(on && *layer_on, Ordering::Release);
        }
        drop(state);
        if was != on {
            flipped("stack", "*", on);
        }
        was
    }

    /// Whether the whole-stack switch is on.
    pub fn stack_is_on(&self) -> bool {
        self.inner.stack.is_on()
    }

    /// Every (layer, class) switch, by class then layer.
    pub fn list(&self) -> Vec<SwitchState> {
        let state = self.lock();
        let mut list: Vec<SwitchState> = state
            .on
            .iter()
            .map(|((layer, class), on)| SwitchState {
                layer: *layer,
                class: class.to_string(),
                on: *on,
                effective: state.stack && *on,
            })
            .collect();
        list.sort_by(|a, b| (&a.class, a.layer).cmp(&(&b.class, b.layer)));
        list
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent after every statement: a panic elsewhere
        // cannot leave it half-updated.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn flipped(layer: &'static str, endpoint: &str, on: bool) {
    tracing::info!(layer, endpoint, on, "herdsman switch flipped");
    // The `metrics` facade comes with the Stats layer.
    #[cfg(feature = "stats")]
    metrics::counter!(
        "herdsman_switch_flips_total",
        "layer" => layer,
        "endpoint" => endpoint.to_owned()
    )
    .increment(1);
}

impl fmt::Debug for Switches {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Switches")
            .field("stack", &self.stack_is_on())
            .field("switches", &self.inner.flags.len())
            .finish()
    }
}

/// A classifier with per-class [`Switches`]: its classes are `classify`'s,
/// and a layer's switch for a request is the one of its class in
/// `switches` ([`Classify::is_on`]). Give it to a layer with its
/// `with_classifier` method to switch the layer at run time outside a
/// [`Coordinator`][crate::Coordinator] (which has switches of its own).
///
/// Each call looks the class's switch up in a map; a flip takes effect on
/// the next request.
///
/// ```
/// use herdsman::{class::{AllDefault, Class}, dedup::DedupLayer, key::Key,
///     switch::{LayerName, Switches, WithSwitches}};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let switches = Switches::new(Vec::<Class>::new());
/// let layer = DedupLayer::new(|req: &u64| Some(Key::from(*req)))
///     .with_classifier(WithSwitches::new(AllDefault, switches.clone()));
/// switches.set(LayerName::Dedup, &Class::default(), false).unwrap();
/// let svc = layer.layer(service_fn(|n: u64| async move { Ok::<_, std::convert::Infallible>(n) }));
/// assert_eq!(svc.oneshot(7).await.unwrap(), 7); // straight to the inner service
/// assert_eq!(layer.handle().stats().leaders, 0);
/// # }
/// ```
///
#[cfg_attr(
    not(feature = "coordinator"),
    doc = "[crate::Coordinator]: crate#feature-flags"
)]
#[derive(Clone)]
pub struct WithSwitches<C> {
    classify: C,
    switches: Switches,
}

impl<C> WithSwitches<C> {
    /// Classes from `classify`, switches from `switches`.
    pub fn new(classify: C, switches: Switches) -> Self {
        WithSwitches { classify, switches }
    }
}

impl<C: Classify<Req>, Req> Classify<Req> for WithSwitches<C> {
    #[inline]
    fn classify(&self, req: &Req) -> Class {
        self.classify.classify(req)
    }

    fn is_on(&self, req: &Req, layer: LayerName) -> bool {
        self.classify.is_on(req, layer) && self.switches.is_on(layer, &self.classify(req))
    }
}

impl<C> fmt::Debug for WithSwitches<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithSwitches")
            .field("switches", &self.switches)
            .finish_non_exhaustive()
    }
}
