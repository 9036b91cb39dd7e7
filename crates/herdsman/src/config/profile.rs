//! The defaults of each environment.

use std::{collections::BTreeMap, time::Duration};

use super::{
    settings::{
        AdminSettings, CacheSettings, DedupSettings, KeySettings, Layers, RedisSettings,
        RegistrySettings, RolloutSettings, ServerSettings,
    },
    Config, Environment,
};
use crate::{
    breaker::BreakerConfig,
    limit::{ClassLimits, Share},
    stats::AlertRules,
};

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

const MIB: u64 = 1024 * 1024;

/// The value for `env` among those for development, production, docker
/// and test.
fn pick<T: Copy>(env: Environment, [dev, prod, docker, test]: [T; 4]) -> T {
    match env {
        Environment::Development => dev,
        Environment::Production => prod,
        Environment::Docker => docker,
        Environment::Test => test,
    }
}

pub(super) fn profile(env: Environment) -> Config {
    use Environment::*;
    let layers = match env {
        // Developers see upstream errors as they are, unthrottled.
        Development => Layers {
            breaker: false,
            limit: false,
            ..Layers::ALL
        },
        Production | Docker | Test => Layers::ALL,
    };
    let breaker = match env {
        Test => BreakerConfig {
            open_duration: millis(100),
            max_open_duration: secs(1),
            probe_timeout: secs(1),
            jitter: 0.0,
            ..BreakerConfig::default()
        },
        _ => BreakerConfig::default(),
    };
    Config {
        layers,
        registry: RegistrySettings {
            class: crate::registry::ClassSettings {
                interval: pick(env, [secs(5), secs(10), secs(8), millis(50)]),
                jitter: pick(env, [0.1, 0.1, 0.1, 0.0]),
                linger: pick(env, [secs(30), secs(30), secs(30), millis(100)]),
                max_keys: 10_000,
                max_keys_per_caller: 64,
                max_keys_per_address: 512,
                max_subscribers_per_key: 10_000,
                max_subscribers_per_caller: 8,
                max_subscribers_per_address: 256,
            },
            floor: pick(env, [secs(1), secs(5), secs(2), millis(1)]),
            allow_fast_polling: false,
            max_subscribers: 100_000,
            max_memory: crate::registry::DEFAULT_MAX_MEMORY,
        },
        cache: CacheSettings {
            class: crate::cache::ClassSettings {
                ttl: pick(env, [secs(5), secs(10), secs(8), millis(50)]),
                stale_while_revalidate: pick(
                    env,
                    [Duration::ZERO, secs(30), secs(24), Duration::ZERO],
                ),
                stale_if_error: pick(env, [Duration::ZERO, secs(300), secs(300), Duration::ZERO]),
                mode: crate::cache::CacheMode::App,
            },
            max_bytes: pick(env, [64 * MIB, 64 * MIB, 64 * MIB, MIB]),
            max_entries: None,
            sweep_interval: pick(env, [secs(30), secs(30), secs(30), secs(1)]),
        },
        dedup: DedupSettings {
            window: Duration::ZERO,
        },
        breaker,
        limit: ClassLimits::new(32)
            .with_max_queue(pick(env, [0, 64, 64, 0]))
            .with_max_wait(pick(env, [secs(1), secs(1), secs(1), millis(100)]))
            .with_retry_after(secs(1))
            .with_caller_share(Share::Auto)
            .with_address_share(Share::Auto),
        alerts: AlertRules::default(),
        admin: AdminSettings::default(),
        rollout: RolloutSettings {
            percent: 100,
            allow: Vec::new(),
            identity_header: None,
        },
        server: server(env),
        keys: KeySettings::default(),
        redis: RedisSettings::default(),
        classes: BTreeMap::new(),
    }
}

/// The same deadlines everywhere: they bound what a client may make the
/// server hold, which matters as much on a laptop as in production. What
/// differs is what the host allows and how it stops: developer machines
/// and test runners often keep the default limit of 1024 open files (half
/// of it leaves room for upstream sockets), services and containers raise
/// it; docker stop kills 10 s after its SIGTERM, Kubernetes 30 s after.
fn server(env: Environment) -> ServerSettings {
    ServerSettings {
        header_read_timeout: secs(10),
        body_read_timeout: secs(30),
        idle_timeout: secs(60),
        shutdown_timeout: pick(env, [secs(5), secs(20), secs(8), secs(1)]),
        max_connections: pick(env, [512, 4096, 4096, 512]),
        max_header_bytes: 16 * 1024,
        max_concurrent_streams: 100,
        trusted_proxies: Vec::new(),
        forwarded_header: crate::http::ForwardedHeader::XForwardedFor,
        // Three quarters of the connections: streams over HTTP/1 hold one
        // each, and polls, writes and the admin routes keep the rest. Over
        // the registry's 256 per address, so that one address never fills
        // the process.
        max_event_streams: pick(env, [384, 3072, 3072, 384]),
    }
}
