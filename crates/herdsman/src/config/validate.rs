//! The rules a configuration must follow, beyond its types.

use std::{net::IpAddr, time::Duration};

use humantime_serde::re::humantime::format_duration;

use super::{
    error::Problem,
    section::{changed_keys, each_section, EachSection, Section},
    settings::{
        AdminSettings, CacheSettings, ClassConfig, DedupSettings, KeySettings, Layers,
        RedisSettings, RegistrySettings, RolloutSettings, ServerSettings,
    },
    Config, ConfigError, Environment,
};
use crate::{
    breaker::BreakerConfig,
    limit::{ClassLimits, Share},
    registry::MAX_JITTER,
    stats::AlertRules,
};

/// The shortest floor or interval production and docker accept without
/// `registry.allow_fast_polling`.
const SAFE_POLL: Duration = Duration::from_secs(1);

/// The most connections `server.max_connections` allows (a semaphore's
/// count, with room to spare).
const MAX_CONNECTIONS: usize = 1 << 24;

/// The bounds of `server.max_header_bytes`: hyper's HTTP/1 read buffer,
/// which bounds request heads, holds 8 KiB at least.
const MIN_HEADER_BYTES: usize = 8 * 1024;
const MAX_HEADER_BYTES: usize = 256 * 1024;

/// The shortest `keys.max_len` accepted: an HTTP key holds the names of the
/// negotiation and conditional headers (and of the credential headers, for
/// a private class) even when they are absent, some 250 bytes before the
/// host, the path and the query.
const MIN_KEY_LEN: usize = 1024;

/// Checks `config`, raising intervals under the floor where the environment
/// allows it. Returns the problems and the warnings, without sources.
pub(super) fn validate(config: &mut Config, env: Environment) -> (Vec<Problem>, Vec<Problem>) {
    let mut check = Check::default();
    for (name, section) in [
        ("registry", &config.registry as &dyn Validate),
        ("cache", &config.cache),
        ("breaker", &config.breaker),
        ("limit", &config.limit),
        ("alerts", &config.alerts),
        ("rollout", &config.rollout),
        ("server", &config.server),
        ("keys", &config.keys),
        ("admin", &config.admin),
        ("redis", &config.redis),
    ] {
        section.validate(&Path::section(name), &mut check.problems);
    }
    for (name, class) in &config.classes {
        check.class(config, name, class);
    }
    check.polling(config, env);
    let mut claimed: Vec<(&str, &str)> = Vec::new();
    for (name, class) in &config.classes {
        for path in &class.paths {
            match claimed.iter().find(|(_, p)| p == path) {
                Some((owner, _)) => check.problems.fail(
                    &Path::section(&format!("classes.{name}.paths")),
                    Some(format!("{path:?}")),
                    &format!("already matched by class {owner}"),
                ),
                None => claimed.push((name, path)),
            }
        }
    }
    (check.problems.found, check.warnings)
}

/// Where a value is: its dotted path, and the key of its section it
/// belongs to (`rate` for `limit.rate.burst`), which says whether a class
/// set it.
#[derive(Debug, Clone)]
pub(crate) struct Path {
    dotted: String,
    key: Option<String>,
}

impl Path {
    /// The root of a section: `cache`, `classes.live.cache`.
    pub(crate) fn section(dotted: &str) -> Path {
        Path {
            dotted: dotted.to_owned(),
            key: None,
        }
    }

    /// The path of `key` under this one.
    pub(crate) fn key(&self, key: &str) -> Path {
        Path {
            dotted: format!("{}.{key}", self.dotted),
            key: Some(self.key.clone().unwrap_or_else(|| key.to_owned())),
        }
    }
}

/// The problems found so far. While a class's section is checked, only
/// the problems of keys whose values it changed are kept: the others are
/// the global section's, found there.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    found: Vec<Problem>,
    changed: Option<Vec<String>>,
}

impl Problems {
    /// The problems found, as an error; `Ok` when there is none.
    pub(crate) fn into_result(self) -> Result<(), ConfigError> {
        if self.found.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::new(self.found))
        }
    }

    /// A problem with the value at `at`.
    pub(crate) fn fail(&mut self, at: &Path, value: Option<String>, reason: &str) {
        self.fail_with(at, &[], value, reason);
    }

    /// A problem with the value at `at` that also depends on the section's
    /// keys `also` (`stale_while_revalidate` shorter than `ttl`).
    pub(crate) fn fail_with(
        &mut self,
        at: &Path,
        also: &[&str],
        value: Option<String>,
        reason: &str,
    ) {
        if let Some(changed) = &self.changed {
            let set = |key: &str| changed.iter().any(|c| c == key);
            if !at.key.as_deref().is_some_and(set) && !also.iter().any(|k| set(k)) {
                return;
            }
        }
        self.found.push(Problem {
            path: at.dotted.clone(),
            value,
            reason: reason.to_owned(),
            source: None,
        });
    }

    fn positive(&mut self, at: &Path, d: Duration) {
        if d.is_zero() {
            self.fail(at, dur(d), "must be greater than zero");
        }
    }

    fn at_least_one(&mut self, at: &Path, n: u64) {
        if n == 0 {
            self.fail(at, Some("0".into()), "must be at least 1");
        }
        self.integer(at, n);
    }

    /// A count TOML can write: `config show` prints every value, and TOML
    /// integers are 64-bit signed.
    fn integer(&mut self, at: &Path, n: u64) {
        if i64::try_from(n).is_err() {
            self.fail(
                at,
                Some(n.to_string()),
                &format!("must be at most {}", i64::MAX),
            );
        }
    }

    /// `0.0..=1.0`, or `(0.0..=1.0)` when `zero_ok` is false.
    fn fraction(&mut self, at: &Path, x: f64, zero_ok: bool) {
        let ok = if zero_ok {
            (0.0..=1.0).contains(&x)
        } else {
            x > 0.0 && x <= 1.0
        };
        if !ok {
            let range = if zero_ok {
                "must be between 0.0 and 1.0"
            } else {
                "must be greater than 0.0 and at most 1.0"
            };
            self.fail(at, Some(x.to_string()), range);
        }
    }

    fn header_names(&mut self, at: &Path, names: &[String]) {
        for name in names {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                self.fail(at, Some(format!("{name:?}")), "not a valid header name");
            }
        }
    }
}

/// A section that checks its own values: every problem at its path under
/// `path`.
pub(crate) trait Validate {
    /// Adds the problems of this section, whose root is `path`.
    fn validate(&self, path: &Path, problems: &mut Problems);
}

/// Whether `proxies` holds a `/0` block: the lowest and the highest
/// address of a family.
fn trusts_everyone(proxies: &crate::http::TrustedProxies) -> bool {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let both = |low: IpAddr, high: IpAddr| proxies.trusts(low) && proxies.trusts(high);
    both(Ipv4Addr::UNSPECIFIED.into(), Ipv4Addr::BROADCAST.into())
        || both(
            Ipv6Addr::UNSPECIFIED.into(),
            Ipv6Addr::from(u128::MAX).into(),
        )
}

fn dur(d: Duration) -> Option<String> {
    Some(format!("\"{}\"", format_duration(d)))
}

/// What decides whether a poll interval is accepted.
#[derive(Clone, Copy)]
struct Polling {
    floor: Duration,
    allow: bool,
    env: Environment,
}

impl Polling {
    /// Whether sub-second floors and intervals are refused.
    fn guarded(self) -> bool {
        !self.allow && matches!(self.env, Environment::Production | Environment::Docker)
    }

    fn sub_second(self) -> String {
        format!(
            "under {} in {} (set registry.allow_fast_polling to allow it)",
            format_duration(SAFE_POLL),
            self.env
        )
    }
}

/// The rules that span sections: classes, and the poll intervals against
/// the floor.
#[derive(Default)]
struct Check {
    problems: Problems,
    warnings: Vec<Problem>,
}

impl Check {
    /// A class's name, paths and `vary`, and each of its own sections as
    /// the class will use it, keeping the problems of the keys it changed.
    fn class(&mut self, config: &Config, name: &str, class: &ClassConfig) {
        let prefix = Path::section(&format!("classes.{name}"));
        self.class_name(&prefix, name);
        let paths = Path::section(&format!("{}.paths", prefix.dotted));
        if class.paths.is_empty() {
            self.problems
                .fail(&paths, Some("[]".into()), "must list at least one path");
        }
        for path in &class.paths {
            self.path_pattern(&paths, path);
        }
        let vary = Path::section(&format!("{}.vary", prefix.dotted));
        self.problems.header_names(&vary, &class.vary);
        each_section(ClassSections {
            check: self,
            prefix: &prefix,
            class,
            config,
        });
    }

    /// A class's own section: its problems under the class's path, for the
    /// keys whose values differ from the global section's (the others were
    /// checked there), and a global-only key that differs.
    fn section<T: Section>(&mut self, class: &Path, section: Option<&T>, global: &T) {
        let Some(section) = section else { return };
        let path = Path::section(&format!("{}.{}", class.dotted, T::NAME));
        let changed = changed_keys(section, global);
        for key in changed
            .iter()
            .filter(|k| T::GLOBAL_ONLY.contains(&k.as_str()))
        {
            self.problems.fail(
                &path.key(key),
                None,
                &format!(
                    "global only: set it in [{}], which every class uses",
                    T::NAME
                ),
            );
        }
        let outer = self.problems.changed.replace(changed);
        section.validate(&path, &mut self.problems);
        self.problems.changed = outer;
    }

    /// The floor and every interval, global and per class. Unless
    /// `allow_fast_polling` is set: in production and docker a floor or an
    /// interval under [`SAFE_POLL`] is refused; an interval under the floor
    /// is refused in production and raised to the floor (with a warning)
    /// elsewhere. A class that keeps the global interval keeps it as
    /// corrected, without a second warning.
    fn polling(&mut self, config: &mut Config, env: Environment) {
        let policy = Polling {
            floor: config.registry.floor,
            allow: config.registry.allow_fast_polling,
            env,
        };
        let floor = policy.floor;
        if policy.guarded() && !floor.is_zero() && floor < SAFE_POLL {
            let path = Path::section("registry").key("floor");
            self.problems.fail(&path, dur(floor), &policy.sub_second());
        }
        let global = config.registry.class.interval;
        self.interval(
            "registry.interval",
            &mut config.registry.class.interval,
            policy,
        );
        let corrected = config.registry.class.interval;
        for (name, class) in &mut config.classes {
            if let Some(registry) = class.registry.as_mut() {
                if registry.class.interval == global {
                    registry.class.interval = corrected;
                } else {
                    let path = format!("classes.{name}.registry.interval");
                    self.interval(&path, &mut registry.class.interval, policy);
                }
            }
        }
    }

    fn interval(&mut self, path: &str, interval: &mut Duration, policy: Polling) {
        if interval.is_zero() || policy.allow {
            return;
        }
        let at = Path::section(path);
        if policy.guarded() && *interval < SAFE_POLL {
            return self
                .problems
                .fail(&at, dur(*interval), &policy.sub_second());
        }
        if *interval >= policy.floor {
            return;
        }
        let floor = format_duration(policy.floor);
        if policy.env == Environment::Production {
            self.problems.fail(
                &at,
                dur(*interval),
                &format!(
                    "under the floor of {floor} in production (set registry.allow_fast_polling to allow it)"
                ),
            );
        } else {
            self.warnings.push(Problem {
                path: path.to_owned(),
                value: dur(*interval),
                reason: format!(
                    "under the floor of {floor}, raised to it (set registry.allow_fast_polling to keep it)"
                ),
                source: None,
            });
            *interval = policy.floor;
        }
    }

    fn class_name(&mut self, path: &Path, name: &str) {
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid {
            self.problems.fail(
                path,
                None,
                "class names use lowercase letters, digits, '-' and '_'",
            );
        } else if name == "default" {
            self.problems.fail(
                path,
                None,
                "\"default\" is reserved: the global sections configure the default class",
            );
        }
    }

    fn path_pattern(&mut self, path: &Path, pattern: &str) {
        let value = Some(format!("{pattern:?}"));
        if !pattern.starts_with('/') {
            return self
                .problems
                .fail(path, value, "a path pattern starts with '/'");
        }
        if pattern.contains(['?', '#']) {
            return self
                .problems
                .fail(path, value, "a path pattern has no query or fragment");
        }
        let segments: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
        for segment in &segments {
            let param = segment.starts_with('{') && segment.ends_with('}') && segment.len() > 2;
            if !param && segment.contains(['{', '}', '*']) && *segment != "*" {
                return self.problems.fail(
                    path,
                    value,
                    "a parameter or '*' is a whole segment: {name} or *",
                );
            }
        }
    }
}

/// Checks each of a class's own sections.
struct ClassSections<'a> {
    check: &'a mut Check,
    prefix: &'a Path,
    class: &'a ClassConfig,
    config: &'a Config,
}

impl EachSection for ClassSections<'_> {
    fn section<T: Section>(&mut self) {
        let global = T::global(self.config);
        (self.check).section(self.prefix, T::of(self.class), global);
    }
}

impl Validate for Layers {
    fn validate(&self, _: &Path, _: &mut Problems) {}
}

impl Validate for DedupSettings {
    /// Any window is valid, `0s` (no reuse) included.
    fn validate(&self, _: &Path, _: &mut Problems) {}
}

impl Validate for RegistrySettings {
    fn validate(&self, p: &Path, problems: &mut Problems) {
        let class = &self.class;
        problems.positive(&p.key("interval"), class.interval);
        problems.positive(&p.key("floor"), self.floor);
        if !(0.0..=MAX_JITTER).contains(&class.jitter) {
            problems.fail(
                &p.key("jitter"),
                Some(class.jitter.to_string()),
                &format!("must be between 0.0 and {MAX_JITTER}"),
            );
        }
        for (key, n) in [
            ("max_keys", class.max_keys),
            ("max_keys_per_caller", class.max_keys_per_caller),
            ("max_keys_per_address", class.max_keys_per_address),
            ("max_subscribers_per_key", class.max_subscribers_per_key),
            (
                "max_subscribers_per_caller",
                class.max_subscribers_per_caller,
            ),
            (
                "max_subscribers_per_address",
                class.max_subscribers_per_address,
            ),
            ("max_subscribers", self.max_subscribers),
        ] {
            problems.at_least_one(&p.key(key), n as u64);
        }
        problems.at_least_one(&p.key("max_memory"), self.max_memory);
    }
}

impl Validate for CacheSettings {
    fn validate(&self, p: &Path, problems: &mut Problems) {
        let class = &self.class;
        problems.positive(&p.key("ttl"), class.ttl);
        for (key, window) in [
            ("stale_while_revalidate", class.stale_while_revalidate),
            ("stale_if_error", class.stale_if_error),
        ] {
            if !window.is_zero() && window < class.ttl {
                problems.fail_with(
                    &p.key(key),
                    &["ttl"],
                    dur(window),
                    &format!(
                        "shorter than the ttl ({}): use at least the ttl, or 0s to turn it off",
                        format_duration(class.ttl)
                    ),
                );
            }
        }
        problems.at_least_one(&p.key("max_bytes"), self.max_bytes);
        problems.positive(&p.key("sweep_interval"), self.sweep_interval);
        if let Some(entries) = self.max_entries {
            problems.at_least_one(&p.key("max_entries"), entries);
        }
    }
}

impl Validate for BreakerConfig {
    fn validate(&self, p: &Path, problems: &mut Problems) {
        if !(1..=64).contains(&self.window) {
            problems.fail(
                &p.key("window"),
                Some(self.window.to_string()),
                "must be between 1 and 64",
            );
        }
        if let Some(window) = self.time_window {
            problems.positive(&p.key("time_window"), window);
        }
        problems.at_least_one(&p.key("minimum_calls"), self.minimum_calls.into());
        problems.fraction(&p.key("failure_rate"), self.failure_rate, false);
        if let Some(n) = self.consecutive_failures {
            problems.at_least_one(&p.key("consecutive_failures"), n.into());
        }
        if let Some(slow) = self.slow_call_duration {
            problems.positive(&p.key("slow_call_duration"), slow);
        }
        problems.fraction(&p.key("slow_call_rate"), self.slow_call_rate, false);
        problems.positive(&p.key("open_duration"), self.open_duration);
        if self.backoff.is_nan() || self.backoff < 1.0 {
            problems.fail(
                &p.key("backoff"),
                Some(self.backoff.to_string()),
                "must be at least 1.0",
            );
        }
        if self.max_open_duration < self.open_duration {
            problems.fail_with(
                &p.key("max_open_duration"),
                &["open_duration"],
                dur(self.max_open_duration),
                &format!(
                    "shorter than open_duration ({})",
                    format_duration(self.open_duration)
                ),
            );
        }
        problems.fraction(&p.key("jitter"), self.jitter, true);
        problems.at_least_one(&p.key("half_open_probes"), self.half_open_probes.into());
        problems.positive(&p.key("probe_timeout"), self.probe_timeout);
    }
}

impl Validate for ClassLimits {
    /// A rate rule read from a file is checked as it is read (it cannot
    /// hold a zero limit, nor both periods); one built in code must have a
    /// configuration form.
    fn validate(&self, p: &Path, problems: &mut Problems) {
        problems.at_least_one(&p.key("max_concurrency"), self.max_concurrent as u64);
        problems.integer(&p.key("max_queue"), self.max_queue as u64);
        problems.positive(&p.key("max_wait"), self.max_wait);
        problems.positive(&p.key("retry_after"), self.retry_after);
        for (key, share) in [
            ("max_concurrency_per_caller", self.per_caller),
            ("max_concurrency_per_address", self.per_address),
        ] {
            if let Share::Max(max) = share {
                problems.at_least_one(&p.key(key), max as u64);
            }
        }
        if let Some(rate) = &self.rate {
            let at = p.key("rate");
            problems.integer(&at.key("max_keys"), rate.max_keys() as u64);
            let per = rate.per();
            if per != Duration::from_secs(1) && per != Duration::from_secs(60) {
                problems.fail(
                    &at,
                    None,
                    &format!(
                        "a rule per {} has no configuration form: use per_second or per_minute",
                        format_duration(per)
                    ),
                );
            }
        }
    }
}

impl Validate for AlertRules {
    fn validate(&self, p: &Path, problems: &mut Problems) {
        if let Some(max) = self.upstream_calls_per_minute {
            problems.at_least_one(&p.key("upstream_calls_per_minute"), max);
        }
        if let Some(max) = self.memory_bytes {
            problems.at_least_one(&p.key("memory_bytes"), max);
        }
        if let Some(rate) = self.error_rate {
            problems.fraction(&p.key("error_rate"), rate, false);
        }
        // The stats sample the error rate once a second.
        let window = self.window;
        let at = p.key("error_window");
        if window < Duration::from_secs(1) {
            problems.fail(&at, dur(window), "must be at least 1s");
        } else if window.subsec_nanos() != 0 {
            problems.fail(&at, dur(window), "must be a whole number of seconds");
        }
        problems.at_least_one(&p.key("min_samples"), self.error_min_samples);
        problems.fraction(&p.key("resolve_ratio"), self.resolve_ratio, false);
    }
}

impl Validate for AdminSettings {
    fn validate(&self, p: &Path, problems: &mut Problems) {
        if let Some(token) = &self.token {
            if token.chars().count() < 16 {
                problems.fail(
                    &p.key("token"),
                    Some("\"<redacted>\"".into()),
                    "must be at least 16 characters long",
                );
            }
        }
    }
}

impl Validate for RolloutSettings {
    fn validate(&self, p: &Path, problems: &mut Problems) {
        if self.percent > 100 {
            problems.fail(
                &p.key("percent"),
                Some(self.percent.to_string()),
                "must be between 0 and 100",
            );
        }
        if let Some(header) = &self.identity_header {
            if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                problems.fail(
                    &p.key("identity_header"),
                    Some(format!("{header:?}")),
                    "not a valid header name",
                );
            }
        }
        if self.allow.iter().any(String::is_empty) {
            problems.fail(
                &p.key("allow"),
                Some("\"\"".into()),
                "entries must not be empty",
            );
        }
    }
}

impl Validate for ServerSettings {
    fn validate(&self, p: &Path, problems: &mut Problems) {
        for (key, timeout) in [
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("idle_timeout", self.idle_timeout),
            ("shutdown_timeout", self.shutdown_timeout),
        ] {
            problems.positive(&p.key(key), timeout);
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.max_connections) {
            problems.fail(
                &p.key("max_connections"),
                Some(self.max_connections.to_string()),
                &format!("must be between 1 and {MAX_CONNECTIONS}"),
            );
        }
        if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&self.max_header_bytes) {
            problems.fail(
                &p.key("max_header_bytes"),
                Some(self.max_header_bytes.to_string()),
                &format!("must be between {MIN_HEADER_BYTES} and {MAX_HEADER_BYTES}"),
            );
        }
        problems.at_least_one(
            &p.key("max_concurrent_streams"),
            self.max_concurrent_streams.into(),
        );
        problems.at_least_one(&p.key("max_event_streams"), self.max_event_streams as u64);
        let at = p.key("trusted_proxies");
        for entry in &self.trusted_proxies {
            let value = Some(format!("{entry:?}"));
            match crate::http::TrustedProxies::parse([entry]) {
                Err(err) => problems.fail(&at, value, &err.to_string()),
                Ok(proxies) if trusts_everyone(&proxies) => problems.fail(
                    &at,
                    value,
                    "trusts every address: any client could name its own address",
                ),
                Ok(_) => {}
            }
        }
    }
}

impl Validate for KeySettings {
    fn validate(&self, p: &Path, problems: &mut Problems) {
        for host in &self.hosts {
            let valid = !host.trim().is_empty()
                && !host.contains(['@', '/', '?', '#'])
                && host.trim().parse::<http::uri::Authority>().is_ok();
            if !valid {
                problems.fail(
                    &p.key("hosts"),
                    Some(format!("{host:?}")),
                    "not a host (a name or address, optionally with a port: \"app.example.com\", \"127.0.0.1:8080\")",
                );
            }
        }
        problems.header_names(&p.key("vary"), &self.vary);
        if self.max_len < MIN_KEY_LEN {
            problems.fail(
                &p.key("max_len"),
                Some(self.max_len.to_string()),
                &format!("must be at least {MIN_KEY_LEN} (bytes)"),
            );
        }
        problems.integer(&p.key("max_len"), self.max_len as u64);
    }
}

/// The URL schemes redis-rs reads.
const REDIS_SCHEMES: [&str; 5] = ["redis", "rediss", "redis+unix", "unix", "valkey"];

impl Validate for RedisSettings {
    fn validate(&self, p: &Path, problems: &mut Problems) {
        if let Some(url) = &self.url {
            let scheme = url.split_once("://").map(|(scheme, _)| scheme);
            let rest = url.split_once("://").map_or("", |(_, rest)| rest);
            if !scheme.is_some_and(|s| REDIS_SCHEMES.contains(&s)) || rest.is_empty() {
                problems.fail(
                    &p.key("url"),
                    self.redacted_url().map(|u| format!("{u:?}")),
                    "is not a Redis URL (redis://host:port/db, rediss:// or redis+unix://)",
                );
            }
        }
        if self.key_prefix.is_empty() {
            problems.fail(
                &p.key("key_prefix"),
                Some("\"\"".into()),
                "must not be empty: the cluster's keys would mix with others",
            );
        }
        for (key, value) in [
            ("op_timeout", self.op_timeout),
            ("flight_lease", self.flight_lease),
            ("loop_lease", self.loop_lease),
        ] {
            problems.positive(&p.key(key), value);
        }
        for (key, value) in [
            ("flight_lease", self.flight_lease),
            ("loop_lease", self.loop_lease),
        ] {
            if !value.is_zero() && value <= self.op_timeout {
                problems.fail_with(
                    &p.key(key),
                    &["op_timeout"],
                    dur(value),
                    "must be longer than op_timeout: a claim would end before Redis answers it",
                );
            }
        }
    }
}
