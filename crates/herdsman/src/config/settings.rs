//! The sections of a [`Config`](super::Config) and their per-class overrides.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{breaker::BreakerConfig, cache, limit::ClassLimits, registry};

/// Which layers of the stack are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layers {
    /// One shared poll loop per endpoint key.
    pub registry: bool,
    /// Counts, latency percentiles and alerts.
    pub stats: bool,
    /// Answers repeated requests from a store.
    pub cache: bool,
    /// Single-flight: concurrent identical requests share one call.
    pub dedup: bool,
    /// Circuit breakers.
    pub breaker: bool,
    /// Concurrency and rate limits.
    pub limit: bool,
}

impl Layers {
    /// Every layer on.
    pub const ALL: Layers = Layers {
        registry: true,
        stats: true,
        cache: true,
        dedup: true,
        breaker: true,
        limit: true,
    };
}

/// The subscription registry: one poll loop per endpoint key. The
/// registry's settings for every class ([`registry::ClassSettings`], whose
/// keys a class may set) and its floor and totals, in one flat
/// `[registry]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistrySettings {
    /// The poll loops' settings of every class without its own.
    #[serde(flatten)]
    pub class: registry::ClassSettings,
    /// The shortest interval accepted: in production a faster one is an
    /// error, elsewhere it is raised to the floor with a warning, unless
    /// [`allow_fast_polling`](Self::allow_fast_polling) is set. No loop
    /// polls more often, whatever its subscribers ask.
    #[serde(with = "humantime_serde")]
    pub floor: Duration,
    /// Accept intervals under the floor as written, and in production and
    /// docker a floor or intervals under one second.
    pub allow_fast_polling: bool,
    /// Subscribers in all, at most.
    pub max_subscribers: usize,
    /// The registry's memory budget, in bytes: while its memory figure is
    /// over it, no new key is polled (existing keys go on).
    pub max_memory: u64,
}

/// The cache layer: the layer's settings for every class
/// ([`cache::ClassSettings`], whose keys a class may set) and the store's
/// bounds, in one flat `[cache]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheSettings {
    /// The freshness settings of every class without its own.
    #[serde(flatten)]
    pub class: cache::ClassSettings,
    /// Bound of the store, in bytes (global only).
    pub max_bytes: u64,
    /// Bound of the store, in entries (global only; none by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_entries: Option<u64>,
    /// How often expired entries are swept out of the store, and how long
    /// past its windows an entry that can be revalidated is kept (global
    /// only); see [`CacheLayer::with_sweep_interval`](crate::cache::CacheLayer::with_sweep_interval).
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
}

/// The dedup (single-flight) layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupSettings {
    /// How long a finished result answers identical requests (`0s`: only
    /// requests that arrive while the call is in flight share it).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

/// The admin endpoints (switches, stats).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// The bearer token the admin endpoints require; none leaves them off.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "text"
    )]
    pub token: Option<String>,
}

/// What keys are made of, beyond the method, the URL and the credentials,
/// and how long one may be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    /// The hosts a server-side stack (around a `Router`, whose requests have
    /// no authority in their URI) serves: a request for a listed host is
    /// keyed by it; a request for any other `Host` is not coordinated (it
    /// passes through). Empty (the default): one site, and `Host` is not
    /// part of keys. Client-side requests key by their URI's authority.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Request headers every class's responses depend on: requests with
    /// different values never share an answer (added to each class's
    /// `vary`).
    #[serde(default)]
    pub vary: Vec<String>,
    /// The longest key, in bytes, for every layer: a longer one passes
    /// through the Cache, Dedup and one-shot Registry calls uncoordinated,
    /// and a subscription with one is refused.
    #[serde(default = "default_max_len")]
    pub max_len: usize,
}

impl Default for KeySettings {
    fn default() -> Self {
        KeySettings {
            hosts: Vec::new(),
            vary: Vec::new(),
            max_len: default_max_len(),
        }
    }
}

fn default_max_len() -> usize {
    crate::key::DEFAULT_MAX_KEY_LEN
}

/// Distributed mode: the Redis (or Valkey) server the replicas of an app
/// coordinate through, and how long each kind of claim lasts. Read by
/// `herdsman-redis`; without a [`url`](Self::url) (the default) nothing
/// connects and every layer keeps its state in this process.
///
/// ```
/// use herdsman::config::{Config, Environment, StaticEnv};
/// use std::time::Duration;
///
/// let source = StaticEnv::new()
///     .file("herdsman.toml", "[redis]\nop_timeout = \"50ms\"\n")
///     .var("HERDSMAN__REDIS__URL", "redis://127.0.0.1:6379");
/// let config = Config::load_from(Environment::Development, &source).unwrap();
/// assert_eq!(config.redis.url.as_deref(), Some("redis://127.0.0.1:6379"));
/// assert_eq!(config.redis.op_timeout, Duration::from_millis(50));
/// assert_eq!(config.redis.key_prefix, "herdsman:");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// The server: `redis://[user:password@]host:port[/db]`, `rediss://`
    /// for TLS (when redis-rs is built with it) or `redis+unix:///path`.
    /// Redis 6 or Valkey at least: the connection speaks RESP3 to carry
    /// pub/sub beside commands. None (the default): no Redis.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "text")]
    pub url: Option<String>,
    /// Put before every key and channel name, so that several apps (or
    /// versions of one) can share a server without meeting. On Redis
    /// Cluster, a hash tag (`"{herdsman}:"`) keeps every key on one node.
    pub key_prefix: String,
    /// The longest one Redis operation may take; past it, this replica
    /// answers as if it had no Redis (a cache miss, its own upstream
    /// call). Short: a request waits for it.
    #[serde(with = "humantime_serde")]
    pub op_timeout: Duration,
    /// How long a replica's claim to make an upstream call lasts: the
    /// longest a dead holder can keep the others waiting before one of
    /// them takes over. Longer than the upstream's slow calls.
    #[serde(with = "humantime_serde")]
    pub flight_lease: Duration,
    /// How long a replica's claim to poll a key lasts past the round's
    /// interval (the poller renews it each round): a poller that died is
    /// replaced at most one interval plus this later.
    #[serde(with = "humantime_serde")]
    pub loop_lease: Duration,
    /// Whether a breaker that trips on one replica trips on every replica
    /// (off by default: each replica's breakers judge its own calls).
    pub share_breaker: bool,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: None,
            key_prefix: "herdsman:".into(),
            op_timeout: Duration::from_millis(100),
            flight_lease: Duration::from_secs(10),
            loop_lease: Duration::from_secs(5),
            share_breaker: false,
        }
    }
}

impl RedisSettings {
    /// Settings for the server at `url`, defaults otherwise.
    pub fn new(url: impl Into<String>) -> Self {
        RedisSettings {
            url: Some(url.into()),
            ..RedisSettings::default()
        }
    }

    /// Checks these settings as a configuration's `[redis]` section is
    /// checked: one problem per refused value, each naming its field
    /// (`redis.flight_lease = "0s": must be greater than zero`).
    pub fn validate(&self) -> Result<(), super::ConfigError> {
        use super::validate::{Path, Problems, Validate};
        let mut problems = Problems::default();
        Validate::validate(self, &Path::section("redis"), &mut problems);
        problems.into_result()
    }

    /// The URL with its password, if any, replaced by `<redacted>`, for
    /// printing.
    pub fn redacted_url(&self) -> Option<String> {
        self.url.as_deref().map(redact_password)
    }
}

/// `url` with the password of its user information replaced.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:<redacted>"),
        // `redis://secret@host`: redis-rs reads a lone user as a user
        // name, but some clients take it as the password.
        None => "<redacted>".to_owned(),
    };
    format!("{scheme}://{user}@{host}{path}")
}

/// Gradual rollout of the coordinated path; see
/// [`Rollout`](crate::switch::Rollout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSettings {
    /// Percentage of callers (`0..=100`) that take the coordinated path.
    pub percent: u8,
    /// Callers that take it whatever the percentage: identity values or
    /// their fingerprints.
    #[serde(default)]
    pub allow: Vec<String>,
    /// The request header that names the caller; none uses the credentials
    /// (the key's auth partition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_header: Option<String>,
}

/// The HTTP server (`herdsman_axum::Server`): how long a client may take,
/// and how many connections it may hold.
///
/// Every client is given a deadline for each thing it must send: a request
/// head, a request body, the next request on an idle connection. A client
/// that sends one header line or one body chunk every few seconds is cut
/// at the deadline, not kept as long as it keeps trickling. A response in
/// progress (an event stream) is never cut by them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// How long a client has to send a whole request head: from the
    /// connection's opening for its first request, from the first byte
    /// for the next ones (HTTP/1). Past it the connection is closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a client has to send a whole request body, from the
    /// server's first read of it. Past it the body fails, the request is
    /// answered `408 Request Timeout` (when no response was started) and
    /// the connection is closed.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// How long a connection with no request in progress and no byte read
    /// or written is kept for the client's next request.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long a server that was told to stop waits for requests in
    /// progress (event streams included) before closing their connections.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Connections open at once, at most: beyond it, no connection is
    /// accepted until one closes.
    pub max_connections: usize,
    /// The largest request head (request line and header fields, HTTP/1;
    /// the header list, HTTP/2), in bytes: a larger one is refused with
    /// `431 Request Header Fields Too Large`.
    pub max_header_bytes: usize,
    /// Requests in progress at once on one HTTP/2 connection, at most.
    pub max_concurrent_streams: u32,
    /// The reverse proxies whose `forwarded_header` is believed, as IP
    /// addresses and CIDR blocks; see
    /// [`TrustedProxies`](crate::http::TrustedProxies). Empty: the client
    /// address is always the connection's peer.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// The header the trusted proxies name the client in:
    /// `"x-forwarded-for"` (the default) or `"forwarded"` (RFC 7239). Only
    /// that one is read.
    #[serde(default)]
    pub forwarded_header: crate::http::ForwardedHeader,
    /// Event streams open at once in the whole process, at most
    /// (`herdsman_axum::Live`), beside the registry's budgets per caller
    /// and per address (keep it over `registry.max_subscribers_per_address`,
    /// so that one address never fills it): past it a new stream is
    /// answered `429` with `Retry-After`, and the client polls instead.
    pub max_event_streams: usize,
}

/// One endpoint class: the paths it matches and its own settings where
/// they differ from the global sections.
///
/// ```toml
/// [classes.active-users]
/// paths = ["/api/active-users"]
/// cache = { ttl = "2s" }
/// limit = { max_concurrency = 4 }
/// ```
///
/// A class's section is the global section's type, whole: `None` uses the
/// global section; `Some` is what the class uses. The loader makes it by
/// laying the class's table (`cache = { ttl = "2s" }`) over the global
/// section, so the keys it does not set are the global values. In code,
/// start from the global section the same way:
///
/// ```
/// use herdsman::{
///     cache::ClassSettings,
///     config::{CacheSettings, ClassConfig, Config, Environment},
/// };
/// use std::time::Duration;
///
/// let mut config = Config::profile(Environment::Production);
/// let class = ClassConfig {
///     paths: vec!["/api/active-users".into()],
///     cache: Some(CacheSettings {
///         class: ClassSettings { ttl: Duration::from_secs(2), ..config.cache.class },
///         ..config.cache.clone()
///     }),
///     ..ClassConfig::default()
/// };
/// config.classes.insert("active-users".into(), class);
/// assert_eq!(config.class("active-users").cache.class.ttl, Duration::from_secs(2));
/// ```
///
/// Keys that only the global section sets (the registry's floor and
/// totals, the cache store's bounds) are refused in a class's table, and
/// in a class's section built in code they must keep the global value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassConfig {
    /// Path patterns, as [`PathClasses`](crate::http::PathClasses) reads
    /// them: literal segments, `{name}` for any one segment, a final `*` for
    /// the rest of the path.
    pub paths: Vec<String>,
    /// The responses do not depend on who asks: requests with different
    /// credentials share them.
    #[serde(default)]
    pub public: bool,
    /// Request headers the class's responses depend on (`x-api-key`,
    /// `accept-language`, a tenant header): requests with different values
    /// never share a cached, coalesced or polled answer, public class or
    /// not. Added to `keys.vary`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vary: Vec<String>,
    /// Layers on or off for this class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<Layers>,
    /// Its registry settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistrySettings>,
    /// Its cache settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSettings>,
    /// Its dedup settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<DedupSettings>,
    /// Its breaker settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerConfig>,
    /// Its limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<ClassLimits>,
}

/// A string, also when a `HERDSMAN__` variable holding only digits was read
/// as a number (a token may be all digits).
fn text<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    struct Text;

    impl serde::de::Visitor<'_> for Text {
        type Value = Option<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }

        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_owned()))
        }

        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }

        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }

        fn visit_u128<E>(self, v: u128) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }

        fn visit_i128<E>(self, v: i128) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
    }

    de.deserialize_any(Text)
}
