use std::{
    fmt,
    sync::{atomic::AtomicBool, Arc},
    time::Duration,
};

use super::{
    error::BuildError,
    handle::{Coordinator, Shared},
    layer::{CacheOf, DedupOf, LimitOf, RegistryOf},
    route::{CallerIdentity, ClassKey, ClassOf, Routes},
};
use crate::{
    backend::{Backends, TripBackend, TripListener},
    breaker::BreakerLayer,
    cache::CacheLayer,
    class::Class,
    clock::Clock,
    config::{Config, ConfigError, EffectiveClass, Environment, Problem},
    dedup::DedupLayer,
    http::{BufferLayer, ClientAddress, HttpShare, ServerErrors},
    limit::LimitLayer,
    registry::{HttpFingerprint, RegistryLayer},
    stats::Stats,
    switch::{LayerName, Rollout, Switches},
};

/// Builds a [`Coordinator`]: made by [`Coordinator::builder`].
#[derive(Clone, Default)]
pub struct CoordinatorBuilder {
    environment: Option<Environment>,
    config: Option<Config>,
    backends: Option<Backends>,
}

impl CoordinatorBuilder {
    /// The environment; default [`Environment::Development`]. Chooses the
    /// profile when no configuration is given, how validation treats
    /// intervals under the floor, and the clock Stats and the Cache read
    /// ([`Clock::Tokio`] in [`Environment::Test`], so that paused time
    /// drives latencies and TTLs; [`Clock::Fast`] elsewhere).
    pub fn environment(mut self, environment: Environment) -> Self {
        self.environment = Some(environment);
        self
    }

    /// The configuration, endpoint classes included (`config.classes`);
    /// default [`Config::profile`] of the environment.
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Where the state a cluster of replicas would share lives; default
    /// [`Backends::local`] (everything in this process). `herdsman-redis`
    /// makes the distributed set from `config.redis`
    /// (`herdsman_redis::backends`): required when `redis.url` is set.
    pub fn backends(mut self, backends: Backends) -> Self {
        self.backends = Some(backends);
        self
    }

    /// Validates the configuration as start-up does and builds every
    /// layer's shared state.
    ///
    /// Fails, naming `redis.url`, when the configuration names a Redis
    /// server but no [`backends`](Self::backends) were given: a cluster
    /// that silently coordinated each replica alone would make N upstream
    /// calls where one was configured.
    pub fn build(self) -> Result<Coordinator, BuildError> {
        let environment = self.environment.unwrap_or(Environment::Development);
        let config = self
            .config
            .unwrap_or_else(|| Config::profile(environment))
            .validated(environment)
            .map_err(BuildError::new)?;
        if config.redis.url.is_some() && self.backends.is_none() {
            return Err(BuildError::new(ConfigError::new(vec![Problem {
                path: "redis.url".into(),
                value: config.redis.redacted_url().map(|url| format!("{url:?}")),
                reason: "names a Redis server, but the builder was given no backends: \
                         pass herdsman_redis::backends(&config.redis) to \
                         CoordinatorBuilder::backends (there is no in-process fallback \
                         for a configured cluster)"
                    .into(),
                source: None,
            }])));
        }
        let backends = self.backends.unwrap_or_default();
        Ok(Coordinator {
            shared: Arc::new(compose(environment, config, backends)),
        })
    }
}

impl fmt::Debug for CoordinatorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoordinatorBuilder")
            .field("environment", &self.environment)
            .field("config", &self.config.as_ref().map(Config::redacted))
            .field("backends", &self.backends)
            .finish()
    }
}

fn compose(environment: Environment, config: Config, backends: Backends) -> Shared {
    let clock = match environment {
        Environment::Test => Clock::Tokio,
        _ => Clock::Fast,
    };
    let stats = Stats::builder()
        .with_rules(config.alerts.clone())
        .with_clock(clock.clone())
        .build();
    for (name, health) in backends.dependencies {
        stats.track_dependency(name, move || health.is_up());
    }
    let switches = Switches::from_config(&config);
    let classes = config.classes();
    let routes = Arc::new(Routes::new(&config, &switches));
    let classify = ClassOf::new(routes.clone());
    let key = ClassKey::new(routes.clone());
    let rollout = Rollout::from_settings(&config.rollout);

    // One maximum key length for every layer: a longer key passes Dedup,
    // the Cache and one-shot Registry calls uncoordinated, and a
    // subscription with one is refused.
    let max_key_len = config.keys.max_len;
    let mut registry = registry_layer(&config, &classes, &key, &classify, &stats, &rollout);
    if let Some(loops) = backends.loops {
        registry = registry.with_loop_backend(loops);
    }

    let c = &config.cache;
    let mut cache = CacheLayer::http(key.clone())
        .with_classifier(classify.clone())
        .with_defaults(c.class)
        .with_max_bytes(c.max_bytes)
        .with_sweep_interval(c.sweep_interval)
        .with_clock(clock)
        .with_max_key_len(max_key_len)
        .with_observer(stats.clone())
        .with_store_backend(backends.store);
    if let Some(entries) = c.max_entries {
        cache = cache.with_max_entries(entries);
    }

    let mut dedup = DedupLayer::new(key.clone())
        .with_share(HttpShare)
        .with_classifier(classify.clone())
        .with_window(config.dedup.window)
        .with_max_key_len(max_key_len)
        .with_observer(stats.clone())
        .with_flight_backend(backends.flights);

    let mut breaker = BreakerLayer::new()
        .with_classifier(classify.clone())
        .with_failure_classifier(ServerErrors)
        .with_config(config.breaker)
        .with_observer(stats.clone());
    if let Some(trips) = backends.trips {
        breaker = breaker.with_trip_backend(SharedTrips(trips));
    }
    let mut limit = LimitLayer::new(config.limit.clone());
    if let Some(rates) = backends.rates {
        limit = limit.with_rate_backend(rates);
    }
    let mut limit = limit
        .with_classifier(classify.clone())
        .with_identity(CallerIdentity::new(rollout.clone()))
        .with_address(ClientAddress)
        .with_observer(stats.clone());
    for class in classes
        .iter()
        .filter(|c| config.classes.contains_key(c.class.as_str()))
    {
        registry = registry.with_class(class.class.clone(), class.registry_settings());
        dedup = dedup.with_class_window(class.class.clone(), class.dedup.window);
        cache = cache.with_class(class.class.clone(), class.cache_settings());
        breaker = breaker.with_class(class.class.clone(), class.breaker_config());
        limit = limit.with_class(class.class.clone(), class.class_limits());
    }

    show_in_stats(
        &stats, &classes, &switches, &registry, &cache, &dedup, &limit,
    );

    Shared {
        environment,
        stats_layer: stats
            .layer(ClassOf::clients_only(routes.clone()))
            .with_failure_classifier(ServerErrors),
        upstream: stats
            .upstream_layer(classify, key)
            .with_failure_classifier(ServerErrors),
        stats,
        stack: switches.stack(),
        switches,
        routes,
        rollout,
        registry,
        cache,
        dedup,
        breaker,
        limit,
        buffer: BufferLayer::new(),
        following: AtomicBool::new(false),
        config,
    }
}

/// A [`TripBackend`] behind a pointer, as [`Backends`] holds it.
struct SharedTrips(Arc<dyn TripBackend>);

impl TripBackend for SharedTrips {
    fn announce(&self, class: &Class, open_for: Duration) {
        self.0.announce(class, open_for);
    }

    fn listen(&self, listener: TripListener) {
        self.0.listen(listener);
    }
}

/// Lists every configured class (and the default one) in `stats` from the
/// start, with its breaker shown `off` while its switch is, and has
/// `stats` track the memory the layers hold.
fn show_in_stats(
    stats: &Stats,
    classes: &[EffectiveClass],
    switches: &Switches,
    registry: &RegistryOf,
    cache: &CacheOf,
    dedup: &DedupOf,
    limit: &LimitOf,
) {
    for class in classes {
        stats.register(&class.class);
        let breaker = switches.switch(LayerName::Breaker, &class.class);
        stats.track_breaker_switch(&class.class, move || breaker.is_on());
    }

    stats.track_memory("registry", registry.handle());
    stats.track_memory("cache", cache.handle());
    stats.track_memory("dedup", dedup.handle());
    stats.track_memory("limit", limit.handle());
}

/// The registry's layer: the `[registry]` section as the defaults, the
/// floor lowered to the fastest class's interval when fast polling is
/// allowed, and the caller and address its budgets tell apart. Classes
/// with settings of their own are added by [`compose`].
fn registry_layer(
    config: &Config,
    classes: &[EffectiveClass],
    key: &ClassKey,
    classify: &ClassOf,
    stats: &Stats,
    rollout: &Rollout,
) -> RegistryOf {
    let r = &config.registry;
    // Intervals under the floor survive validation only when explicitly
    // allowed; the registry must then not raise them again.
    let floor = if r.allow_fast_polling {
        classes
            .iter()
            .map(|c| c.registry.class.interval)
            .fold(r.floor, Duration::min)
    } else {
        r.floor
    };
    RegistryLayer::new(key.clone())
        .with_share(HttpShare)
        .with_fingerprint(HttpFingerprint)
        .with_canonical(key.clone())
        .with_failure_classifier(ServerErrors)
        .with_classifier(classify.clone())
        .with_defaults(r.class)
        .with_floor(floor)
        .with_max_subscribers(r.max_subscribers)
        .with_max_memory(r.max_memory)
        .with_max_key_len(config.keys.max_len)
        .with_observer(stats.clone())
        .with_callers(CallerIdentity::new(rollout.clone()), ClientAddress)
}
