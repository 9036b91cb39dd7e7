//! The rules a configuration must follow, beyond its types.

use std::{net::IpAddr, time::Duration};

use humantime_serde::re::humantime::format_duration;

use super::{
    error::Problem,
    settings::{
        AlertSettings, BreakerSettings, CacheSettings, KeySettings, LimitSettings,
        RegistrySettings, RolloutSettings, ServerSettings,
    },
    Config, Environment,
};
use crate::registry::MAX_JITTER;

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
    check.registry("registry", &config.registry);
    check.cache("cache", &config.cache);
    check.breaker("breaker", &config.breaker);
    check.limit("limit", &config.limit);
    check.alerts(&config.alerts);
    check.rollout(&config.rollout);
    check.server(&config.server);
    check.keys(&config.keys);
    if let Some(token) = &config.admin.token {
        if token.chars().count() < 16 {
            check.fail(
                "admin.token",
                Some("\"<redacted>\"".into()),
                "must be at least 16 characters long",
            );
        }
    }

    let global = check.problems.clone();
    let mut claimed: Vec<(&str, &str)> = Vec::new();
    let names: Vec<String> = config.classes.keys().cloned().collect();
    for name in &names {
        let prefix = format!("classes.{name}");
        check.class_name(&prefix, name);
        let class = &config.classes[name];
        if class.paths.is_empty() {
            check.fail(
                &format!("{prefix}.paths"),
                Some("[]".into()),
                "must list at least one path",
            );
        }
        for path in &class.paths {
            check.path_pattern(&format!("{prefix}.paths"), path);
        }
        check.header_names(&format!("{prefix}.vary"), &class.vary);

        // Overridden sections are checked whole, as the class will use them;
        // problems inherited unchanged from the global section were reported
        // there already.
        let before = check.problems.len();
        if let Some(over) = &class.registry {
            check.registry(&format!("{prefix}.registry"), &over.apply(&config.registry));
        }
        if let Some(over) = &class.cache {
            check.cache(&format!("{prefix}.cache"), &over.apply(&config.cache));
        }
        if let Some(over) = &class.breaker {
            check.breaker(&format!("{prefix}.breaker"), &over.apply(&config.breaker));
        }
        if let Some(over) = &class.limit {
            check.limit(&format!("{prefix}.limit"), &over.apply(&config.limit));
        }
        let fresh = check.problems.split_off(before);
        check.problems.extend(fresh.into_iter().filter(|p| {
            !global.iter().any(|g| {
                g.value == p.value
                    && g.reason == p.reason
                    && p.path.strip_prefix(&prefix) == Some(&format!(".{}", g.path))
            })
        }));
    }
    check.polling(config, env);
    for (name, class) in &config.classes {
        for path in &class.paths {
            match claimed.iter().find(|(_, p)| p == path) {
                Some((owner, _)) => check.fail(
                    &format!("classes.{name}.paths"),
                    Some(format!("{path:?}")),
                    &format!("already matched by class {owner}"),
                ),
                None => claimed.push((name, path)),
            }
        }
    }
    (check.problems, check.warnings)
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

#[derive(Default)]
struct Check {
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Check {
    fn fail(&mut self, path: &str, value: Option<String>, reason: &str) {
        self.problems.push(Problem {
            path: path.to_owned(),
            value,
            reason: reason.to_owned(),
            source: None,
        });
    }

    fn positive(&mut self, path: &str, d: Duration) {
        if d.is_zero() {
            self.fail(path, dur(d), "must be greater than zero");
        }
    }

    fn at_least_one(&mut self, path: &str, n: u64) {
        if n == 0 {
            self.fail(path, Some("0".into()), "must be at least 1");
        }
        self.integer(path, n);
    }

    /// A count TOML can write: `config show` prints every value, and TOML
    /// integers are 64-bit signed.
    fn integer(&mut self, path: &str, n: u64) {
        if i64::try_from(n).is_err() {
            self.fail(
                path,
                Some(n.to_string()),
                &format!("must be at most {}", i64::MAX),
            );
        }
    }

    /// `0.0..=1.0`, or `(0.0..=1.0)` when `zero_ok` is false.
    fn fraction(&mut self, path: &str, x: f64, zero_ok: bool) {
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
            self.fail(path, Some(x.to_string()), range);
        }
    }

    fn registry(&mut self, p: &str, r: &RegistrySettings) {
        self.positive(&format!("{p}.interval"), r.interval);
        self.positive(&format!("{p}.floor"), r.floor);
        if !(0.0..=MAX_JITTER).contains(&r.jitter) {
            self.fail(
                &format!("{p}.jitter"),
                Some(r.jitter.to_string()),
                &format!("must be between 0.0 and {MAX_JITTER}"),
            );
        }
        for (key, n) in [
            ("max_keys", r.max_keys),
            ("max_keys_per_caller", r.max_keys_per_caller),
            ("max_keys_per_address", r.max_keys_per_address),
            ("max_subscribers_per_key", r.max_subscribers_per_key),
            ("max_subscribers_per_caller", r.max_subscribers_per_caller),
            ("max_subscribers_per_address", r.max_subscribers_per_address),
            ("max_subscribers", r.max_subscribers),
        ] {
            self.at_least_one(&format!("{p}.{key}"), n as u64);
        }
        self.at_least_one(&format!("{p}.max_memory"), r.max_memory);
    }

    /// The floor and every interval, global and per class. Unless
    /// `allow_fast_polling` is set: in production and docker a floor or an
    /// interval under [`SAFE_POLL`] is refused; an interval under the floor
    /// is refused in production and raised to the floor (with a warning)
    /// elsewhere.
    fn polling(&mut self, config: &mut Config, env: Environment) {
        let policy = Polling {
            floor: config.registry.floor,
            allow: config.registry.allow_fast_polling,
            env,
        };
        let floor = policy.floor;
        if policy.guarded() && !floor.is_zero() && floor < SAFE_POLL {
            self.fail("registry.floor", dur(floor), &policy.sub_second());
        }
        self.interval("registry.interval", &mut config.registry.interval, policy);
        for (name, class) in &mut config.classes {
            if let Some(interval) = class.registry.as_mut().and_then(|r| r.interval.as_mut()) {
                let path = format!("classes.{name}.registry.interval");
                self.interval(&path, interval, policy);
            }
        }
    }

    fn interval(&mut self, path: &str, interval: &mut Duration, policy: Polling) {
        if interval.is_zero() || policy.allow {
            return;
        }
        if policy.guarded() && *interval < SAFE_POLL {
            return self.fail(path, dur(*interval), &policy.sub_second());
        }
        if *interval >= policy.floor {
            return;
        }
        let floor = format_duration(policy.floor);
        if policy.env == Environment::Production {
            self.fail(
                path,
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

    fn cache(&mut self, p: &str, c: &CacheSettings) {
        self.positive(&format!("{p}.ttl"), c.ttl);
        for (key, window) in [
            ("stale_while_revalidate", c.stale_while_revalidate),
            ("stale_if_error", c.stale_if_error),
        ] {
            if !window.is_zero() && window < c.ttl {
                self.fail(
                    &format!("{p}.{key}"),
                    dur(window),
                    &format!(
                        "shorter than the ttl ({}): use at least the ttl, or 0s to turn it off",
                        format_duration(c.ttl)
                    ),
                );
            }
        }
        self.at_least_one(&format!("{p}.max_bytes"), c.max_bytes);
        self.positive(&format!("{p}.sweep_interval"), c.sweep_interval);
        if let Some(entries) = c.max_entries {
            self.at_least_one(&format!("{p}.max_entries"), entries);
        }
    }

    fn breaker(&mut self, p: &str, b: &BreakerSettings) {
        if !(1..=64).contains(&b.window) {
            self.fail(
                &format!("{p}.window"),
                Some(b.window.to_string()),
                "must be between 1 and 64",
            );
        }
        if let Some(window) = b.time_window {
            self.positive(&format!("{p}.time_window"), window);
        }
        self.at_least_one(&format!("{p}.minimum_calls"), b.minimum_calls.into());
        self.fraction(&format!("{p}.failure_rate"), b.failure_rate, false);
        if let Some(n) = b.consecutive_failures {
            self.at_least_one(&format!("{p}.consecutive_failures"), n.into());
        }
        if let Some(slow) = b.slow_call_duration {
            self.positive(&format!("{p}.slow_call_duration"), slow);
        }
        self.fraction(&format!("{p}.slow_call_rate"), b.slow_call_rate, false);
        self.positive(&format!("{p}.open_duration"), b.open_duration);
        if b.backoff.is_nan() || b.backoff < 1.0 {
            self.fail(
                &format!("{p}.backoff"),
                Some(b.backoff.to_string()),
                "must be at least 1.0",
            );
        }
        if b.max_open_duration < b.open_duration {
            self.fail(
                &format!("{p}.max_open_duration"),
                dur(b.max_open_duration),
                &format!(
                    "shorter than open_duration ({})",
                    format_duration(b.open_duration)
                ),
            );
        }
        self.fraction(&format!("{p}.jitter"), b.jitter, true);
        self.at_least_one(&format!("{p}.half_open_probes"), b.half_open_probes.into());
        self.positive(&format!("{p}.probe_timeout"), b.probe_timeout);
    }

    fn limit(&mut self, p: &str, l: &LimitSettings) {
        self.at_least_one(&format!("{p}.max_concurrency"), l.max_concurrency as u64);
        self.integer(&format!("{p}.max_queue"), l.max_queue as u64);
        self.positive(&format!("{p}.max_wait"), l.max_wait);
        self.positive(&format!("{p}.retry_after"), l.retry_after);
        for (key, share) in [
            ("max_concurrency_per_caller", l.max_concurrency_per_caller),
            ("max_concurrency_per_address", l.max_concurrency_per_address),
        ] {
            if let Some(share) = share {
                self.at_least_one(&format!("{p}.{key}"), share as u64);
            }
        }
        if let Some(rate) = &l.rate {
            match (rate.per_second, rate.per_minute) {
                (Some(_), Some(_)) => self.fail(
                    &format!("{p}.rate"),
                    None,
                    "set one of per_second and per_minute, not both",
                ),
                (None, None) => self.fail(
                    &format!("{p}.rate"),
                    None,
                    "set one of per_second and per_minute",
                ),
                (Some(n), None) => self.at_least_one(&format!("{p}.rate.per_second"), n.into()),
                (None, Some(n)) => self.at_least_one(&format!("{p}.rate.per_minute"), n.into()),
            }
            if let Some(burst) = rate.burst {
                self.at_least_one(&format!("{p}.rate.burst"), burst.into());
            }
        }
    }

    fn alerts(&mut self, a: &AlertSettings) {
        self.at_least_one(
            "alerts.upstream_calls_per_minute",
            a.upstream_calls_per_minute.into(),
        );
        self.at_least_one("alerts.memory_bytes", a.memory_bytes);
        self.fraction("alerts.error_rate", a.error_rate, false);
        // The stats sample the error rate once a second.
        let window = a.error_window;
        if window < Duration::from_secs(1) {
            self.fail("alerts.error_window", dur(window), "must be at least 1s");
        } else if window.subsec_nanos() != 0 {
            self.fail(
                "alerts.error_window",
                dur(window),
                "must be a whole number of seconds",
            );
        }
        self.at_least_one("alerts.min_samples", a.min_samples.into());
    }

    fn rollout(&mut self, r: &RolloutSettings) {
        if r.percent > 100 {
            self.fail(
                "rollout.percent",
                Some(r.percent.to_string()),
                "must be between 0 and 100",
            );
        }
        if let Some(header) = &r.identity_header {
            if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                self.fail(
                    "rollout.identity_header",
                    Some(format!("{header:?}")),
                    "not a valid header name",
                );
            }
        }
        if r.allow.iter().any(String::is_empty) {
            self.fail(
                "rollout.allow",
                Some("\"\"".into()),
                "entries must not be empty",
            );
        }
    }

    fn server(&mut self, s: &ServerSettings) {
        self.positive("server.header_read_timeout", s.header_read_timeout);
        self.positive("server.body_read_timeout", s.body_read_timeout);
        self.positive("server.idle_timeout", s.idle_timeout);
        self.positive("server.shutdown_timeout", s.shutdown_timeout);
        if !(1..=MAX_CONNECTIONS).contains(&s.max_connections) {
            self.fail(
                "server.max_connections",
                Some(s.max_connections.to_string()),
                &format!("must be between 1 and {MAX_CONNECTIONS}"),
            );
        }
        if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&s.max_header_bytes) {
            self.fail(
                "server.max_header_bytes",
                Some(s.max_header_bytes.to_string()),
                &format!("must be between {MIN_HEADER_BYTES} and {MAX_HEADER_BYTES}"),
            );
        }
        self.at_least_one(
            "server.max_concurrent_streams",
            s.max_concurrent_streams.into(),
        );
        for entry in &s.trusted_proxies {
            let value = Some(format!("{entry:?}"));
            match crate::http::TrustedProxies::parse([entry]) {
                Err(err) => self.fail("server.trusted_proxies", value, &err.to_string()),
                Ok(proxies) if trusts_everyone(&proxies) => self.fail(
                    "server.trusted_proxies",
                    value,
                    "trusts every address: any client could name its own address",
                ),
                Ok(_) => {}
            }
        }
    }

    fn keys(&mut self, k: &KeySettings) {
        for host in &k.hosts {
            let valid = !host.trim().is_empty()
                && !host.contains(['@', '/', '?', '#'])
                && host.trim().parse::<http::uri::Authority>().is_ok();
            if !valid {
                self.fail(
                    "keys.hosts",
                    Some(format!("{host:?}")),
                    "not a host (a name or address, optionally with a port: \"app.example.com\", \"127.0.0.1:8080\")",
                );
            }
        }
        self.header_names("keys.vary", &k.vary);
        if k.max_len < MIN_KEY_LEN {
            self.fail(
                "keys.max_len",
                Some(k.max_len.to_string()),
                &format!("must be at least {MIN_KEY_LEN} (bytes)"),
            );
        }
    }

    fn header_names(&mut self, path: &str, names: &[String]) {
        for name in names {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                self.fail(path, Some(format!("{name:?}")), "not a valid header name");
            }
        }
    }

    fn class_name(&mut self, path: &str, name: &str) {
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid {
            self.fail(
                path,
                None,
                "class names use lowercase letters, digits, '-' and '_'",
            );
        } else if name == "default" {
            self.fail(
                path,
                None,
                "\"default\" is reserved: the global sections configure the default class",
            );
        }
    }

    fn path_pattern(&mut self, path: &str, pattern: &str) {
        let value = Some(format!("{pattern:?}"));
        if !pattern.starts_with('/') {
            return self.fail(path, value, "a path pattern starts with '/'");
        }
        if pattern.contains(['?', '#']) {
            return self.fail(path, value, "a path pattern has no query or fragment");
        }
        let segments: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
        for segment in &segments {
            let param = segment.starts_with('{') && segment.ends_with('}') && segment.len() > 2;
            if !param && segment.contains(['{', '}', '*']) && *segment != "*" {
                return self.fail(
                    path,
                    value,
                    "a parameter or '*' is a whole segment: {name} or *",
                );
            }
        }
    }
}
