//! Configuration: per-environment profiles, a TOML file and `HERDSMAN__`
//! variables, merged, validated, and resolved per endpoint class.
//!
//! The stack runs on developer machines, in containers and in production,
//! and each wants different defaults: a developer wants fresh data every few
//! seconds, production wants conservative intervals it cannot be talked out
//! of by a typo. So a [`Config`] is built in layers, each overriding the one
//! before:
//!
//! 1. the **profile** of the [`Environment`] ([`Config::profile`]): every key
//!    has a default there;
//! 2. the **TOML file**: `herdsman.toml` in the working directory, or the
//!    path in `HERDSMAN_CONFIG`;
//! 3. **environment variables** `HERDSMAN__SECTION__KEY` (split on `__`,
//!    lowercased): `HERDSMAN__CACHE__TTL=30s`.
//!
//! Durations are written the human way (`"10s"`, `"250ms"`, `"1m 30s"`).
//! Unknown keys are errors. Every invalid value is reported at once, each on
//! its own line with the key's path, the value, the reason and what set it
//! ([`ConfigError`]); `herdsman config check` prints the same lines.
//!
//! Endpoint classes (`[classes.NAME]`) list the paths they match and
//! override any of the global sections; [`Config::class`] resolves one
//! class's effective settings and converts them into the layers' own types.
//!
//! Each setting is written once: a section is one type (the layer's own
//! where it has one: `[breaker]` is [`BreakerConfig`], `[limit]` is
//! [`ClassLimits`], `[alerts]` is [`AlertRules`]), with its doc comment
//! and serde attributes, and its default in the profiles. A class's table
//! is laid over the global section and read into the same type, so there is
//! no per-class mirror. Each section checks its own values and reports them
//! at its path; a class's section reports only the keys it changed, so a
//! global problem is reported once. `docs/CONFIGURATION.md` is checked
//! against the types by a test: a new key needs its row there.
//!
//! Detection and loading read the outside world through an [`EnvSource`], so
//! that tests (and embedders) can supply it: [`StaticEnv`].
//!
//! `docs/CONFIGURATION.md` lists every key with its default per profile.
//!
//! # Examples
//!
//! ```
//! use herdsman::config::{Config, Environment, StaticEnv};
//! use std::time::Duration;
//!
//! let source = StaticEnv::new()
//!     .file(
//!         "herdsman.toml",
//!         r#"
//!         [cache]
//!         ttl = "15s"
//!
//!         [classes.active-users]
//!         paths = ["/api/active-users"]
//!         cache = { ttl = "2s" }
//!         "#,
//!     )
//!     .var("HERDSMAN__LIMIT__MAX_CONCURRENCY", "8");
//! let env = Environment::detect_from(&source).unwrap(); // no marker: development
//! let config = Config::load_from(env, &source).unwrap();
//!
//! assert_eq!(config.registry.class.interval, Duration::from_secs(5)); // the profile
//! assert_eq!(config.cache.class.ttl, Duration::from_secs(15)); // the file
//! assert_eq!(config.limit.max_concurrent(), 8); // the variable
//! let class = config.class("active-users");
//! assert_eq!(class.cache.class.ttl, Duration::from_secs(2)); // the class override
//! assert_eq!(class.limit.max_concurrent(), 8); // inherited
//!
//! let err = Config::load_from(env, &StaticEnv::new().var("HERDSMAN__CACHE__TTL", "0s"))
//!     .unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     r#"cache.ttl = "0s": must be greater than zero (set by HERDSMAN__CACHE__TTL)"#
//! );
//! ```

#[cfg(test)]
mod doc;
mod env;
mod error;
mod load;
mod profile;
mod section;
mod settings;
mod show;
mod validate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use self::section::Section;
pub use self::{
    env::{
        EnvSource, Environment, StaticEnv, SystemEnv, UnknownEnvironment, CONFIG_VAR,
        DEFAULT_CONFIG_FILE, ENV_VAR, OVERRIDE_PREFIX,
    },
    error::{ConfigError, Problem},
    load::{Loaded, Loader},
    settings::{
        AdminSettings, CacheSettings, ClassConfig, DedupSettings, KeySettings, Layers,
        RedisSettings, RegistrySettings, RolloutSettings, ServerSettings,
    },
};
use crate::{
    breaker::BreakerConfig, class::Class, http::PathClasses, limit::ClassLimits, stats::AlertRules,
};

/// The whole configuration of a herdsman stack.
///
/// Every field is public and every section has a default in each profile:
/// build one with [`Config::load`] (or [`Config::loader`]) or start from
/// [`Config::profile`] and change fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Which layers are on.
    pub layers: Layers,
    /// The subscription registry.
    pub registry: RegistrySettings,
    /// The cache layer.
    pub cache: CacheSettings,
    /// The dedup layer.
    pub dedup: DedupSettings,
    /// The circuit breaker layer: the layer's own configuration type.
    pub breaker: BreakerConfig,
    /// The limit layer: the limits of every class without its own, the
    /// layer's own type.
    pub limit: ClassLimits,
    /// Alert thresholds: the stats' own type.
    pub alerts: AlertRules,
    /// The admin endpoints.
    pub admin: AdminSettings,
    /// Gradual rollout of the coordinated path.
    pub rollout: RolloutSettings,
    /// The HTTP server.
    pub server: ServerSettings,
    /// What keys are made of.
    #[serde(default)]
    pub keys: KeySettings,
    /// Distributed mode: the Redis server replicas coordinate through
    /// (none by default: everything stays in this process).
    #[serde(default)]
    pub redis: RedisSettings,
    /// Endpoint classes by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub classes: BTreeMap<String, ClassConfig>,
}

impl Config {
    /// The defaults of `env`, before any file or variable.
    pub fn profile(env: Environment) -> Config {
        profile::profile(env)
    }

    /// Loads the configuration of `env` from this process's file and
    /// variables; warnings are logged with `tracing`.
    pub fn load(env: Environment) -> Result<Config, ConfigError> {
        Self::loader(env).load().map(Self::log_warnings)
    }

    /// Loads the configuration of `env` from `source`; warnings are logged
    /// with `tracing`.
    pub fn load_from(env: Environment, source: &impl EnvSource) -> Result<Config, ConfigError> {
        Self::loader(env)
            .source(source)
            .load()
            .map(Self::log_warnings)
    }

    /// A [`Loader`], to choose the file or the source and see the warnings.
    pub fn loader(env: Environment) -> Loader<'static> {
        Loader::new(env)
    }

    /// Checks a configuration built in code as [`Loader::load`] checks a
    /// loaded one: the problems are an error, the corrections (an interval
    /// raised to the floor) are logged with `tracing` and applied.
    #[cfg(feature = "coordinator")]
    pub(crate) fn validated(mut self, env: Environment) -> Result<Config, ConfigError> {
        let (problems, warnings) = validate::validate(&mut self, env);
        if !problems.is_empty() {
            return Err(ConfigError::new(problems));
        }
        for warning in &warnings {
            tracing::warn!(%warning, "herdsman configuration corrected");
        }
        Ok(self)
    }

    fn log_warnings(loaded: Loaded) -> Config {
        for warning in &loaded.warnings {
            tracing::warn!(%warning, "herdsman configuration corrected");
        }
        loaded.config
    }

    /// The effective settings of class `name`: its own sections where it
    /// has them, the global ones elsewhere. A name that is not configured
    /// (such as `"default"`) gets the global sections.
    pub fn class(&self, name: &str) -> EffectiveClass {
        let class = self.classes.get(name);
        EffectiveClass {
            class: Class::new(name),
            paths: class.map(|c| c.paths.clone()).unwrap_or_default(),
            public: class.is_some_and(|c| c.public),
            vary: {
                let mut vary = self.keys.vary.clone();
                for name in class.map(|c| c.vary.as_slice()).unwrap_or_default() {
                    if !vary.iter().any(|v| v.eq_ignore_ascii_case(name)) {
                        vary.push(name.clone());
                    }
                }
                vary
            },
            layers: self.effective(class),
            registry: self.effective(class),
            cache: self.effective(class),
            dedup: self.effective(class),
            breaker: self.effective(class),
            limit: self.effective(class),
        }
    }

    /// A class's own section `T`, else the global one.
    fn effective<T: Section>(&self, class: Option<&ClassConfig>) -> T {
        class.and_then(T::of).unwrap_or(T::global(self)).clone()
    }

    /// The effective settings of every configured class, then of the
    /// default class, in that order.
    pub fn classes(&self) -> Vec<EffectiveClass> {
        self.classes
            .keys()
            .map(|name| self.class(name))
            .chain([self.class(Class::default().as_str())])
            .collect()
    }

    /// A classifier for HTTP requests built from the classes' paths. A `*`
    /// that is not the last segment matches one segment (as `{name}` does);
    /// a last `*` matches the rest of the path.
    pub fn path_classes(&self) -> PathClasses {
        let mut classes = PathClasses::new();
        for (name, class) in &self.classes {
            for pattern in &class.paths {
                let segments: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
                let last = segments.len().saturating_sub(1);
                let pattern: String = segments
                    .iter()
                    .enumerate()
                    .map(|(i, s)| match *s {
                        "*" if i != last => "/{_}".to_owned(),
                        s => format!("/{s}"),
                    })
                    .collect();
                classes = classes.route(&pattern, name.as_str());
            }
        }
        classes
    }

    /// The same configuration with secrets (the admin token, the Redis
    /// URL's password) replaced by `<redacted>`, for printing.
    pub fn redacted(&self) -> Config {
        let mut config = self.clone();
        if let Some(token) = &mut config.admin.token {
            *token = "<redacted>".to_owned();
        }
        config.redis.url = self.redis.redacted_url();
        config
    }

    /// The configuration as TOML, as `herdsman config show` prints it. A
    /// class's sections show the keys whose values differ from the global
    /// section's, as a file would set them.
    ///
    /// # Panics
    ///
    /// If a value has no TOML form, which a checked configuration (a
    /// loaded one, or one a Coordinator was built from) never holds: a
    /// count over TOML's largest integer, or a rate rule built in code for
    /// a period other than a second or a minute.
    pub fn to_toml(&self) -> String {
        show::to_toml(self)
    }
}

/// One endpoint class's effective settings: its own sections where it has
/// them, the global ones elsewhere. Made by [`Config::class`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EffectiveClass {
    /// The class.
    pub class: Class,
    /// The path patterns it matches (none for the default class).
    pub paths: Vec<String>,
    /// Whether its responses are shared across credentials.
    pub public: bool,
    /// The request headers its keys hold, beyond the defaults: `keys.vary`
    /// and its own `vary`.
    pub vary: Vec<String>,
    /// Which layers are on for it.
    pub layers: Layers,
    /// Its registry settings.
    pub registry: RegistrySettings,
    /// Its cache settings.
    pub cache: CacheSettings,
    /// Its dedup settings.
    pub dedup: DedupSettings,
    /// Its breaker settings.
    pub breaker: BreakerConfig,
    /// Its limits.
    pub limit: ClassLimits,
}

impl EffectiveClass {
    /// The breaker layer's configuration for this class.
    pub fn breaker_config(&self) -> BreakerConfig {
        self.breaker
    }

    /// The limit layer's limits for this class.
    pub fn class_limits(&self) -> ClassLimits {
        self.limit.clone()
    }

    /// The registry's settings for this class's poll loops.
    pub fn registry_settings(&self) -> crate::registry::ClassSettings {
        self.registry.class
    }

    /// The cache layer's freshness settings for this class.
    pub fn cache_settings(&self) -> crate::cache::ClassSettings {
        self.cache.class
    }
}
