//! Configuration: environment detection, the precedence of every source,
//! validation messages (golden), and the conversions the Coordinator uses.
//! Every test reads a `StaticEnv`, never the process environment.

use std::time::Duration;

use herdsman::{
    class::{Class, Classify},
    config::{Config, ConfigError, Environment, StaticEnv},
};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn load(env: Environment, source: &StaticEnv) -> Result<Config, ConfigError> {
    Config::load_from(env, source)
}

fn with_file(toml: &str) -> StaticEnv {
    StaticEnv::new().file("herdsman.toml", toml)
}

/// The full text of the error a source gives, as start-up and the CLI print it.
fn errors(env: Environment, source: &StaticEnv) -> String {
    load(env, source)
        .expect_err("the configuration should be refused")
        .to_string()
}

#[test]
fn a_variable_with_an_escape_after_a_non_ascii_character_loads_as_written() {
    let allow = |raw: &str| {
        let source = StaticEnv::new().var("HERDSMAN__ROLLOUT__ALLOW", raw);
        load(Environment::Test, &source).map(|config| config.rollout.allow)
    };
    assert_eq!(allow(r#"["é\u0041"]"#).unwrap(), ["éA"]);
    assert_eq!(allow(r#"["ééé\n", "x"]"#).unwrap(), ["ééé\n", "x"]);
    // Not a list: refused, naming the key.
    for raw in [r#"["é\"]"#, r#"é\n"#] {
        let err = allow(raw).unwrap_err().to_string();
        assert!(err.starts_with("rollout.allow = "), "{raw}: {err}");
    }
}

#[test]
fn a_count_over_the_largest_toml_integer_is_refused_so_config_show_never_fails() {
    let source = StaticEnv::new()
        .var("HERDSMAN__CACHE__MAX_BYTES", "18446744073709551615")
        .var("HERDSMAN__LIMIT__MAX_QUEUE", "9223372036854775808");
    let err = errors(Environment::Test, &source);
    assert!(
        err.contains("cache.max_bytes = 18446744073709551615: must be at most 9223372036854775807"),
        "{err}"
    );
    assert!(
        err.contains("limit.max_queue = 9223372036854775808"),
        "{err}"
    );
    let source = StaticEnv::new().var("HERDSMAN__CACHE__MAX_BYTES", "9223372036854775807");
    let config = load(Environment::Test, &source).unwrap();
    assert!(config.to_toml().contains("max_bytes = 9223372036854775807"));
}

// ---- detection ----

#[test]
fn herdsman_env_names_each_environment_in_any_case() {
    for (value, env) in [
        ("development", Environment::Development),
        ("production", Environment::Production),
        ("docker", Environment::Docker),
        ("test", Environment::Test),
        ("Production", Environment::Production),
        (" TEST ", Environment::Test),
    ] {
        let source = StaticEnv::new().var("HERDSMAN_ENV", value);
        assert_eq!(Environment::detect_from(&source), Ok(env), "{value:?}");
    }
}

#[test]
fn an_unknown_herdsman_env_is_an_error_not_a_default() {
    for value in ["prod", "", "staging"] {
        let source = StaticEnv::new().var("HERDSMAN_ENV", value);
        let err = Environment::detect_from(&source).unwrap_err();
        assert_eq!(err.value(), value);
    }
    let err = Environment::detect_from(&StaticEnv::new().var("HERDSMAN_ENV", "prod")).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"HERDSMAN_ENV = "prod": unknown environment, expected one of development, production, docker, test"#
    );
}

#[test]
fn container_markers_mean_docker() {
    let cgroup_v1 = "12:pids:/docker/3f1c0e\n11:cpu:/docker/3f1c0e\n";
    let kubernetes = "1:name=systemd:/kubepods/burstable/pod1/abc\n";
    for source in [
        StaticEnv::new().file("/.dockerenv", ""),
        StaticEnv::new().file("/run/.containerenv", ""),
        StaticEnv::new().file("/proc/1/cgroup", cgroup_v1),
        StaticEnv::new().file("/proc/1/cgroup", kubernetes),
    ] {
        assert_eq!(
            Environment::detect_from(&source),
            Ok(Environment::Docker),
            "{source:?}"
        );
    }
}

#[test]
fn without_variable_or_marker_the_environment_is_development() {
    for source in [
        StaticEnv::new(),
        StaticEnv::new().file("/proc/1/cgroup", "0::/init.scope\n"),
        StaticEnv::new().file("/proc/1/cgroup", "1:name=systemd:/user.slice\n"),
    ] {
        assert_eq!(
            Environment::detect_from(&source),
            Ok(Environment::Development)
        );
    }
}

#[test]
fn herdsman_env_wins_over_container_markers() {
    let source = StaticEnv::new()
        .file("/.dockerenv", "")
        .var("HERDSMAN_ENV", "production");
    assert_eq!(
        Environment::detect_from(&source),
        Ok(Environment::Production)
    );
    let bad = source.var("HERDSMAN_ENV", "dokcer");
    assert!(Environment::detect_from(&bad).is_err());
}

// ---- profiles ----

#[test]
fn each_profile_has_its_poll_interval_and_floor() {
    let expect = [
        (Environment::Development, secs(5), secs(1)),
        (Environment::Production, secs(10), secs(5)),
        (Environment::Docker, secs(8), secs(2)),
        (
            Environment::Test,
            Duration::from_millis(50),
            Duration::from_millis(1),
        ),
    ];
    for (env, interval, floor) in expect {
        let config = load(env, &StaticEnv::new()).unwrap();
        assert_eq!(config.registry.class.interval, interval, "{env}");
        assert_eq!(config.registry.floor, floor, "{env}");
        assert_eq!(config, Config::profile(env), "{env}: nothing overrides it");
    }
}

#[test]
fn profiles_differ_in_layers_and_share_the_alert_thresholds() {
    let dev = Config::profile(Environment::Development);
    assert!(!dev.layers.breaker && !dev.layers.limit && dev.layers.cache);
    let prod = Config::profile(Environment::Production);
    assert!(prod.layers.breaker && prod.layers.limit);
    for env in Environment::ALL {
        let alerts = Config::profile(env).alerts;
        assert_eq!(alerts.upstream_calls_per_minute(), Some(20));
        assert_eq!(alerts.memory_bytes(), Some(100_000_000));
        assert_eq!(alerts.error_rate(), Some((0.05, 20)));
        assert_eq!(alerts.window(), secs(60));
        assert!(alerts.breaker_trips());
    }
}

// ---- precedence ----

#[test]
fn the_file_overrides_the_profile_and_variables_override_the_file() {
    let file = r#"
        [registry]
        interval = "20s"
        [cache]
        ttl = "15s"
        stale_while_revalidate = "30s"
    "#;
    let source = with_file(file);
    let config = load(Environment::Production, &source).unwrap();
    assert_eq!(
        config.registry.class.interval,
        secs(20),
        "file over profile"
    );
    assert_eq!(config.cache.class.ttl, secs(15));
    assert_eq!(config.cache.class.stale_if_error, secs(300), "profile kept");

    let source = source
        .var("HERDSMAN__REGISTRY__INTERVAL", "30s")
        .var("HERDSMAN__LAYERS__CACHE", "false")
        .var("HERDSMAN__ALERTS__ERROR_RATE", "0.1");
    let config = load(Environment::Production, &source).unwrap();
    assert_eq!(
        config.registry.class.interval,
        secs(30),
        "variable over file"
    );
    assert_eq!(config.cache.class.ttl, secs(15), "file kept");
    assert!(!config.layers.cache, "variable over profile");
    assert_eq!(config.alerts.error_rate(), Some((0.1, 20)));
}

#[test]
fn herdsman_config_names_the_file_and_herdsman_toml_is_the_default() {
    let source = StaticEnv::new()
        .file("herdsman.toml", "[dedup]\nwindow = \"1s\"")
        .file("/etc/herdsman/prod.toml", "[dedup]\nwindow = \"2s\"");
    assert_eq!(
        load(Environment::Test, &source).unwrap().dedup.window,
        secs(1)
    );
    let source = source.var("HERDSMAN_CONFIG", "/etc/herdsman/prod.toml");
    assert_eq!(
        load(Environment::Test, &source).unwrap().dedup.window,
        secs(2)
    );
    let loaded = Config::loader(Environment::Test)
        .source(&source)
        .file("herdsman.toml")
        .load()
        .unwrap();
    assert_eq!(loaded.config.dedup.window, secs(1), "an explicit file wins");
}

#[test]
fn a_named_file_that_does_not_exist_is_an_error_but_a_missing_default_is_not() {
    assert!(load(Environment::Test, &StaticEnv::new()).is_ok());
    let source = StaticEnv::new().var("HERDSMAN_CONFIG", "/nope.toml");
    assert_eq!(
        errors(Environment::Test, &source),
        r#"(root) = "/nope.toml": cannot read the configuration file: no such file"#
    );
}

#[test]
fn class_sections_override_the_global_ones_and_inherit_the_rest() {
    let file = r#"
        [limit]
        max_concurrency = 16
        [classes.active-users]
        paths = ["/api/active-users"]
        public = true
        cache = { ttl = "2s" }
        limit = { max_queue = 4, rate = { per_second = 10, burst = 20 } }
        breaker = { window = 20, consecutive_failures = 5 }
        layers = { dedup = false }
        registry = { interval = "30s" }
    "#;
    let config = load(Environment::Production, &with_file(file)).unwrap();
    let class = config.class("active-users");
    assert!(class.public);
    assert_eq!(class.cache.class.ttl, secs(2));
    assert_eq!(class.cache.max_bytes, config.cache.max_bytes);
    assert!(!class.layers.dedup && class.layers.cache);
    assert_eq!(class.registry.class.interval, secs(30));
    assert_eq!(class.registry.floor, secs(5));
    assert_eq!(class.limit.max_concurrent(), 16, "the global file value");
    assert_eq!(class.limit.max_queue(), 4);
    assert_eq!(class.breaker.window, 20);
    assert_eq!(class.breaker.consecutive_failures, Some(5));
    let default = config.class("default");
    assert_eq!(default.cache.class.ttl, secs(10));
    assert_eq!(default.class, Class::default());
    assert!(default.paths.is_empty());
}

#[test]
fn a_class_interval_is_held_to_the_global_floor() {
    let file = r#"
        [classes.active-users]
        paths = ["/api/active-users"]
        registry = { interval = "3s" }
    "#;
    assert_eq!(
        errors(Environment::Production, &with_file(file)),
        r#"classes.active-users.registry.interval = "3s": under the floor of 5s in production (set registry.allow_fast_polling to allow it) (set by herdsman.toml)"#
    );
    let loaded = Config::loader(Environment::Docker)
        .source(&with_file(file))
        .load()
        .unwrap();
    assert_eq!(
        loaded.config.class("active-users").registry.class.interval,
        secs(3)
    );
    assert!(loaded.warnings.is_empty(), "3 s is over docker's 2 s floor");

    let fast =
        with_file("[classes.live]\npaths = [\"/live\"]\nregistry = { interval = \"500ms\" }");
    let loaded = Config::loader(Environment::Development)
        .source(&fast)
        .load()
        .unwrap();
    assert_eq!(loaded.config.class("live").registry.class.interval, secs(1));
    assert_eq!(
        loaded.warnings[0].to_string(),
        r#"classes.live.registry.interval = "500ms": under the floor of 1s, raised to it (set registry.allow_fast_polling to keep it) (set by herdsman.toml)"#
    );
}

#[test]
fn class_settings_convert_into_the_layers_own_types() {
    let file = r#"
        [classes.board-events]
        paths = ["/api/boards/*/events", "/api/boards/{board}/cards/*"]
        cache = { ttl = "20s", stale_while_revalidate = "40s" }
        limit = { max_concurrency = 4, max_queue = 8, max_wait = "2s", rate = { per_minute = 600, burst = 5, by = "class-and-identity", alert_only = true } }
        breaker = { failure_rate = 0.25, open_duration = "10s" }
        registry = { interval = "15s", jitter = 0.3, linger = "1m", max_subscribers_per_key = 50, max_keys = 20, max_subscribers_per_address = 30 }
    "#;
    let config = load(Environment::Production, &with_file(file)).unwrap();
    let class = config.class("board-events");

    let registry = class.registry_settings();
    assert_eq!(
        registry,
        herdsman::registry::ClassSettings {
            interval: secs(15),
            jitter: 0.3,
            linger: secs(60),
            max_subscribers_per_key: 50,
            max_keys: 20,
            max_keys_per_caller: 64,
            max_keys_per_address: 512,
            max_subscribers_per_caller: 8,
            max_subscribers_per_address: 30,
        }
    );

    let cache = class.cache_settings();
    assert_eq!(cache.ttl, secs(20));
    assert_eq!(cache.stale_while_revalidate, secs(40));
    assert_eq!(cache.stale_if_error, secs(300));

    let limits = class.class_limits();
    assert_eq!(limits.max_concurrent(), 4);
    assert_eq!(limits.max_queue(), 8);
    assert_eq!(limits.max_wait(), secs(2));
    let rate = limits.rate().unwrap();
    assert_eq!((rate.limit(), rate.per(), rate.burst()), (600, secs(60), 5));
    assert_eq!(rate.key(), herdsman::limit::RateKey::ClassAndIdentity);
    assert_eq!(rate.mode(), herdsman::limit::RateMode::AlertOnly);

    let breaker = class.breaker_config();
    assert_eq!(breaker.failure_rate, 0.25);
    assert_eq!(breaker.open_duration, secs(10));
    assert_eq!(
        breaker.window,
        herdsman::breaker::BreakerConfig::default().window
    );

    let classes = config.path_classes();
    let classify = |path: &str| classes.classify(&http::Request::get(path).body(()).unwrap());
    assert_eq!(classify("/api/boards/7/events"), Class::new("board-events"));
    assert_eq!(
        classify("/api/boards/7/cards/3/x"),
        Class::new("board-events")
    );
    assert_eq!(classify("/api/boards/7/other"), Class::default());
}

#[test]
fn show_output_loads_back_to_the_same_configuration() {
    let file = r#"
        [admin]
        token = "0123456789abcdef0123"
        [classes.active-users]
        paths = ["/api/active-users"]
        cache = { ttl = "2s" }
    "#;
    for env in Environment::ALL {
        let config = load(env, &with_file(file)).unwrap();
        let shown = config.to_toml();
        let again = load(env, &with_file(&shown)).unwrap();
        assert_eq!(again, config, "{env}");
        assert!(!config.redacted().to_toml().contains("0123456789abcdef"));
    }
}

#[test]
fn under_the_floor_outside_production_an_interval_is_raised_with_a_warning() {
    let source = StaticEnv::new().var("HERDSMAN__REGISTRY__INTERVAL", "100ms");
    let loaded = Config::loader(Environment::Development)
        .source(&source)
        .load()
        .unwrap();
    assert_eq!(loaded.config.registry.class.interval, secs(1));
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            r#"registry.interval = "100ms": under the floor of 1s, raised to it (set registry.allow_fast_polling to keep it) (set by HERDSMAN__REGISTRY__INTERVAL)"#
        ]
    );

    let source = source.var("HERDSMAN__REGISTRY__ALLOW_FAST_POLLING", "true");
    for env in Environment::ALL {
        let config = load(env, &source).unwrap();
        assert_eq!(
            config.registry.class.interval,
            Duration::from_millis(100),
            "{env}"
        );
    }
}

#[test]
fn a_sub_second_floor_or_interval_is_refused_in_production_and_docker_naming_the_field() {
    let file = r#"
        [registry]
        floor = "500ms"
        interval = "800ms"
        [classes.live]
        paths = ["/live"]
        registry = { interval = "250ms" }
    "#;
    for env in [Environment::Production, Environment::Docker] {
        assert_eq!(
            errors(env, &with_file(file)),
            [
                format!(r#"registry.floor = "500ms": under 1s in {env} (set registry.allow_fast_polling to allow it) (set by herdsman.toml)"#),
                format!(r#"registry.interval = "800ms": under 1s in {env} (set registry.allow_fast_polling to allow it) (set by herdsman.toml)"#),
                format!(r#"classes.live.registry.interval = "250ms": under 1s in {env} (set registry.allow_fast_polling to allow it) (set by herdsman.toml)"#),
            ]
            .join("\n")
        );
    }
    // Docker's floor (2 s) is over 1 s: only the interval is refused.
    let source = StaticEnv::new().var("HERDSMAN__REGISTRY__INTERVAL", "900ms");
    assert_eq!(
        errors(Environment::Docker, &source),
        r#"registry.interval = "900ms": under 1s in docker (set registry.allow_fast_polling to allow it) (set by HERDSMAN__REGISTRY__INTERVAL)"#
    );
    for env in [Environment::Development, Environment::Test] {
        let config = load(env, &with_file(file)).unwrap();
        assert_eq!(config.registry.floor, Duration::from_millis(500), "{env}");
        assert_eq!(
            config.class("live").registry.class.interval,
            Duration::from_millis(500),
            "{env}: raised to the floor"
        );
    }
}

#[test]
fn allow_fast_polling_accepts_sub_second_floors_and_intervals_as_written() {
    let file = r#"
        [registry]
        floor = "500ms"
        interval = "800ms"
        allow_fast_polling = true
        [classes.live]
        paths = ["/live"]
        registry = { interval = "250ms" }
    "#;
    for env in Environment::ALL {
        let loaded = Config::loader(env).source(&with_file(file)).load().unwrap();
        assert!(loaded.warnings.is_empty(), "{env}: {:?}", loaded.warnings);
        let config = loaded.config;
        assert_eq!(config.registry.floor, Duration::from_millis(500), "{env}");
        assert_eq!(
            config.registry.class.interval,
            Duration::from_millis(800),
            "{env}"
        );
        assert_eq!(
            config.class("live").registry.class.interval,
            Duration::from_millis(250),
            "{env}"
        );
    }
}

#[test]
fn the_retired_allow_unsafe_intervals_is_refused_naming_its_replacement() {
    let file = r#"
        [registry]
        allow_unsafe_intervals = true
        jitter = 0.9
    "#;
    assert_eq!(
        errors(Environment::Development, &with_file(file)),
        [
            r#"registry.allow_unsafe_intervals = true: replaced by registry.allow_fast_polling, which also allows floors and intervals under 1s in production and docker (set by herdsman.toml)"#,
            r#"registry.jitter = 0.9: must be between 0.0 and 0.5 (set by herdsman.toml)"#,
        ]
        .join("\n"),
        "the rest of the section is still checked"
    );
    let source = StaticEnv::new().var("HERDSMAN__REGISTRY__ALLOW_UNSAFE_INTERVALS", "false");
    assert_eq!(
        errors(Environment::Production, &source),
        r#"registry.allow_unsafe_intervals = false: replaced by registry.allow_fast_polling, which also allows floors and intervals under 1s in production and docker (set by HERDSMAN__REGISTRY__ALLOW_UNSAFE_INTERVALS)"#
    );
}

// ---- validation: golden messages ----

#[test]
fn every_invalid_value_is_reported_with_path_value_reason_and_source() {
    let file = r#"
        [registry]
        interval = "2s"
        jitter = 1.5
        max_keys = 0

        [cache]
        ttl = "30s"
        stale_while_revalidate = "10s"
        max_bytes = 0

        [breaker]
        window = 100
        failure_rate = 0.0
        backoff = 0.5
        open_duration = "2m"
        max_open_duration = "1m"

        [limit]
        max_concurrency = 0
        rate = { per_second = 10, per_minute = 100 }

        [alerts]
        error_rate = 2.0
        min_samples = 0

        [admin]
        token = "short"

        [rollout]
        percent = 150
        identity_header = "x user"
    "#;
    // The rate rule is checked as it is read, before the sections are
    // checked; the rest of `[limit]` is still read and checked.
    let expected = [
        r#"limit.rate: set one of per_second and per_minute, not both (set by herdsman.toml)"#,
        r#"registry.jitter = 1.5: must be between 0.0 and 0.5 (set by herdsman.toml)"#,
        r#"registry.max_keys = 0: must be at least 1 (set by herdsman.toml)"#,
        r#"cache.stale_while_revalidate = "10s": shorter than the ttl (30s): use at least the ttl, or 0s to turn it off (set by herdsman.toml)"#,
        r#"cache.max_bytes = 0: must be at least 1 (set by herdsman.toml)"#,
        r#"breaker.window = 100: must be between 1 and 64 (set by herdsman.toml)"#,
        r#"breaker.failure_rate = 0: must be greater than 0.0 and at most 1.0 (set by herdsman.toml)"#,
        r#"breaker.backoff = 0.5: must be at least 1.0 (set by herdsman.toml)"#,
        r#"breaker.max_open_duration = "1m": shorter than open_duration (2m) (set by herdsman.toml)"#,
        r#"limit.max_concurrency = 0: must be at least 1 (set by herdsman.toml)"#,
        r#"alerts.error_rate = 2: must be greater than 0.0 and at most 1.0 (set by herdsman.toml)"#,
        r#"alerts.min_samples = 0: must be at least 1 (set by herdsman.toml)"#,
        r#"rollout.percent = 150: must be between 0 and 100 (set by herdsman.toml)"#,
        r#"rollout.identity_header = "x user": not a valid header name (set by herdsman.toml)"#,
        r#"admin.token = "<redacted>": must be at least 16 characters long (set by herdsman.toml)"#,
        r#"registry.interval = "2s": under the floor of 5s in production (set registry.allow_fast_polling to allow it) (set by herdsman.toml)"#,
    ];
    assert_eq!(
        errors(Environment::Production, &with_file(file)),
        expected.join("\n")
    );
}

#[test]
fn a_registry_jitter_over_one_half_is_refused_globally_and_per_class() {
    let file = r#"
        [registry]
        jitter = 0.8
        [classes.live]
        paths = ["/live"]
        registry = { jitter = 0.6 }
        [classes.calm]
        paths = ["/calm"]
        registry = { jitter = 0.5 }
    "#;
    assert_eq!(
        errors(Environment::Development, &with_file(file)),
        [
            r#"registry.jitter = 0.8: must be between 0.0 and 0.5 (set by herdsman.toml)"#,
            r#"classes.live.registry.jitter = 0.6: must be between 0.0 and 0.5 (set by herdsman.toml)"#,
        ]
        .join("\n")
    );
    let source = StaticEnv::new().var("HERDSMAN__REGISTRY__JITTER", "-0.1");
    assert_eq!(
        errors(Environment::Production, &source),
        "registry.jitter = -0.1: must be between 0.0 and 0.5 (set by HERDSMAN__REGISTRY__JITTER)"
    );
}

#[test]
fn an_error_window_the_stats_cannot_measure_is_refused_not_rounded() {
    // The error rate is sampled once a second: a window is whole seconds.
    for (window, reason) in [
        ("500ms", "must be at least 1s"),
        ("0s", "must be at least 1s"),
        ("1m 500ms", "must be a whole number of seconds"),
    ] {
        let source = StaticEnv::new().var("HERDSMAN__ALERTS__ERROR_WINDOW", window);
        assert_eq!(
            errors(Environment::Production, &source),
            format!(
                "alerts.error_window = {window:?}: {reason} (set by HERDSMAN__ALERTS__ERROR_WINDOW)"
            )
        );
    }
    let source = StaticEnv::new().var("HERDSMAN__ALERTS__ERROR_WINDOW", "1s");
    assert_eq!(
        load(Environment::Production, &source)
            .unwrap()
            .alerts
            .window(),
        secs(1)
    );
}

#[test]
fn a_bad_value_in_a_sections_flattened_part_names_its_key() {
    // `[cache]` holds `cache::ClassSettings` flattened: its keys are read
    // alone so that their errors still name them, globally and in a class.
    let source = with_file(
        "[cache]\nmode = \"browser\"\n\
         [classes.live]\npaths = [\"/live\"]\ncache = { ttl = 5 }\n\
         [classes.slow]\npaths = [\"/slow\"]",
    )
    .var("HERDSMAN__CLASSES__SLOW__CACHE__STALE_IF_ERROR", "never");
    assert_eq!(
        errors(Environment::Development, &source),
        [
            r#"cache.mode = "browser": expected one of app, origin (set by herdsman.toml)"#,
            r#"classes.live.cache.ttl = 5: expected a duration such as "10s", "250ms" or "1m 30s" (set by herdsman.toml)"#,
            r#"classes.slow.cache.stale_if_error = "never": expected a duration such as "10s", "250ms" or "1m 30s" (set by HERDSMAN__CLASSES__SLOW__CACHE__STALE_IF_ERROR)"#,
        ]
        .join("\n")
    );
}

#[test]
fn unparsable_and_negative_durations_name_the_expected_form() {
    let source = with_file("[cache]\nttl = \"ten seconds\"\n[dedup]\nwindow = \"-5s\"")
        .var("HERDSMAN__LIMIT__MAX_WAIT", "5");
    assert_eq!(
        errors(Environment::Development, &source),
        [
            r#"cache.ttl = "ten seconds": expected a duration such as "10s", "250ms" or "1m 30s" (set by herdsman.toml)"#,
            r#"dedup.window = "-5s": expected a duration such as "10s", "250ms" or "1m 30s" (set by herdsman.toml)"#,
            r#"limit.max_wait = 5: expected a duration such as "10s", "250ms" or "1m 30s" (set by HERDSMAN__LIMIT__MAX_WAIT)"#,
        ]
        .join("\n")
    );
}

#[test]
fn zero_durations_and_negative_sizes_are_refused() {
    let source = with_file(
        "[registry]\ninterval = \"0s\"\nmax_subscribers = -3\n[limit]\nmax_wait = \"0ms\"",
    );
    assert_eq!(
        errors(Environment::Development, &source),
        [
            r#"registry.max_subscribers = -3: expected a whole number, zero or more (within the key's range) (set by herdsman.toml)"#,
            r#"registry.interval = "0s": must be greater than zero (set by herdsman.toml)"#,
            r#"limit.max_wait = "0s": must be greater than zero (set by herdsman.toml)"#,
        ]
        .join("\n"),
        "the unreadable key is left out, and the rest of the registry section checked"
    );
    let source = with_file("[registry]\ninterval = \"0s\"");
    assert_eq!(
        errors(Environment::Development, &source),
        r#"registry.interval = "0s": must be greater than zero (set by herdsman.toml)"#
    );
    let source = with_file(
        "[limit]\nmax_concurrency_per_caller = 0\n[classes.a]\npaths = [\"/a\"]\nlimit = { max_concurrency_per_address = 0 }",
    );
    assert_eq!(
        errors(Environment::Development, &source),
        [
            "limit.max_concurrency_per_caller = 0: must be at least 1 (set by herdsman.toml)",
            "classes.a.limit.max_concurrency_per_address = 0: must be at least 1 (set by herdsman.toml)",
        ]
        .join("\n")
    );
    let source = with_file("[cache]\nsweep_interval = \"0s\"");
    assert_eq!(
        errors(Environment::Production, &source),
        r#"cache.sweep_interval = "0s": must be greater than zero (set by herdsman.toml)"#
    );
}

#[test]
fn the_cache_sweep_interval_is_global_only() {
    let source = with_file("[classes.a]\npaths = [\"/a\"]\ncache = { sweep_interval = \"1s\" }");
    let refused = errors(Environment::Development, &source);
    assert!(
        refused.starts_with("classes.a.cache.sweep_interval = \"1s\": unknown key"),
        "{refused}"
    );
}

#[test]
fn unknown_keys_are_refused_wherever_they_are() {
    let file = r#"
        colour = "blue"
        [cache]
        tll = "5s"
        [classes.active-users]
        paths = ["/api/active-users"]
        cache = { max_bytes = 10 }
        publik = true
    "#;
    assert_eq!(
        errors(Environment::Development, &with_file(file)),
        [
            r#"colour = "blue": unknown key, expected one of layers, registry, cache, dedup, breaker, limit, alerts, admin, rollout, server, keys, redis, classes (set by herdsman.toml)"#,
            r#"cache.tll = "5s": unknown key, expected one of ttl, stale_while_revalidate, stale_if_error, mode, max_bytes, max_entries, sweep_interval (set by herdsman.toml)"#,
            r#"classes.active-users.cache.max_bytes = 10: unknown key, expected one of ttl, stale_while_revalidate, stale_if_error, mode (set by herdsman.toml)"#,
            // Found too, now that a class's sections are read apart from it.
            r#"classes.active-users.publik = true: unknown key, expected one of paths, public, vary, layers, registry, cache, dedup, breaker, limit (set by herdsman.toml)"#,
        ]
        .join("\n")
    );
    let source = StaticEnv::new().var("HERDSMAN__CACHE__SIZE", "3");
    assert_eq!(
        errors(Environment::Development, &source),
        r#"cache.size = 3: unknown key, expected one of ttl, stale_while_revalidate, stale_if_error, mode, max_bytes, max_entries, sweep_interval (set by HERDSMAN__CACHE__SIZE)"#
    );
}

#[test]
fn class_names_paths_and_windows_are_checked() {
    let file = r#"
        [classes.Active]
        paths = ["api/active"]
        [classes.default]
        paths = ["/x"]
        [classes.board]
        paths = ["/a/{b/c", "/x"]
        cache = { ttl = "20s" }
        [classes.empty]
        paths = []
        [classes.nopaths]
        public = true
    "#;
    assert_eq!(
        errors(Environment::Development, &with_file(file)),
        [
            r#"classes.nopaths.paths: missing"#,
            r#"classes.Active: class names use lowercase letters, digits, '-' and '_' (set by herdsman.toml)"#,
            r#"classes.Active.paths = "api/active": a path pattern starts with '/' (set by herdsman.toml)"#,
            r#"classes.board.paths = "/a/{b/c": a parameter or '*' is a whole segment: {name} or * (set by herdsman.toml)"#,
            r#"classes.default: "default" is reserved: the global sections configure the default class (set by herdsman.toml)"#,
            r#"classes.empty.paths = []: must list at least one path (set by herdsman.toml)"#,
            r#"classes.default.paths = "/x": already matched by class board (set by herdsman.toml)"#,
        ]
        .join("\n")
    );
}

#[test]
fn a_class_override_is_checked_against_the_settings_it_inherits() {
    let file = r#"
        [cache]
        ttl = "5s"
        stale_while_revalidate = "10s"
        [classes.slow]
        paths = ["/slow"]
        cache = { ttl = "60s" }
        limit = { rate = { per_second = 0 } }
    "#;
    assert_eq!(
        errors(Environment::Development, &with_file(file)),
        [
            r#"classes.slow.limit.rate.per_second = 0: must be at least 1 (set by herdsman.toml)"#,
            r#"classes.slow.cache.stale_while_revalidate = "10s": shorter than the ttl (1m): use at least the ttl, or 0s to turn it off"#,
        ]
        .join("\n")
    );
}

#[test]
fn a_toml_syntax_error_names_the_file_and_the_line() {
    let source = with_file("[cache]\nttl = \"5s\n");
    let text = errors(Environment::Development, &source);
    assert!(
        text.starts_with("(root): TOML parse error at line 2"),
        "{text}"
    );
    assert!(text.ends_with("(set by herdsman.toml)"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[test]
fn a_token_of_digits_set_by_a_variable_stays_text() {
    let source = StaticEnv::new().var("HERDSMAN__ADMIN__TOKEN", "12345678901234567890");
    let config = load(Environment::Production, &source).unwrap();
    assert_eq!(config.admin.token.as_deref(), Some("12345678901234567890"));
    let source = StaticEnv::new().var("HERDSMAN__ADMIN__TOKEN", "true");
    assert_eq!(
        errors(Environment::Production, &source),
        "admin.token = true: expected a string (set by HERDSMAN__ADMIN__TOKEN)"
    );
}

#[test]
fn config_error_lists_its_problems() {
    let err = load(
        Environment::Development,
        &StaticEnv::new()
            .var("HERDSMAN__CACHE__TTL", "0s")
            .var("HERDSMAN__DEDUP__WINDOW", "x"),
    )
    .unwrap_err();
    let paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["dedup.window", "cache.ttl"]);
    assert_eq!(err.problems()[1].value.as_deref(), Some("\"0s\""));
    assert_eq!(
        err.problems()[1].source.as_deref(),
        Some("HERDSMAN__CACHE__TTL")
    );
}

#[test]
fn config_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Config>();
    assert_send_sync::<ConfigError>();
    assert_send_sync::<herdsman::config::EffectiveClass>();
    assert_send_sync::<herdsman::config::UnknownEnvironment>();
}

#[test]
fn key_hosts_vary_and_the_cache_mode_are_read_and_resolved_per_class() {
    use herdsman::cache::CacheMode;

    let config = load(
        Environment::Development,
        &with_file(
            r#"
            [cache]
            mode = "origin"
            [keys]
            hosts = ["app.example.com", "127.0.0.1:8080"]
            vary = ["Accept-Language"]
            [classes.me]
            paths = ["/api/me"]
            vary = ["x-api-key"]
            cache = { mode = "app" }
            "#,
        )
        .var("HERDSMAN__KEYS__VARY", "[\"x-tenant\"]"),
    )
    .unwrap();
    assert_eq!(config.keys.hosts, ["app.example.com", "127.0.0.1:8080"]);
    assert_eq!(config.cache.class.mode, CacheMode::Origin);
    let me = config.class("me");
    assert_eq!(me.vary, ["x-tenant", "x-api-key"]);
    assert_eq!(me.cache_settings().mode, CacheMode::App);
    assert_eq!(config.class("default").vary, ["x-tenant"]);
    assert_eq!(
        config.class("default").cache_settings().mode,
        CacheMode::Origin
    );

    let defaults = Config::profile(Environment::Production);
    assert!(defaults.keys.hosts.is_empty() && defaults.keys.vary.is_empty());
    assert_eq!(defaults.cache.class.mode, CacheMode::App);
}

#[test]
fn invalid_hosts_header_names_and_modes_are_refused_naming_the_key() {
    let file = r#"
        [cache]
        mode = "browser"
        [keys]
        hosts = ["app.example.com", "", "user@host", "http://x/", "a b"]
        vary = ["x-ok", "bad header"]
        [classes.me]
        paths = ["/api/me"]
        vary = ["x:y"]
    "#;
    assert_eq!(
        errors(Environment::Development, &with_file(file)),
        [
            r#"cache.mode = "browser": expected one of app, origin (set by herdsman.toml)"#,
            r#"keys.hosts = "": not a host (a name or address, optionally with a port: "app.example.com", "127.0.0.1:8080") (set by herdsman.toml)"#,
            r#"keys.hosts = "user@host": not a host (a name or address, optionally with a port: "app.example.com", "127.0.0.1:8080") (set by herdsman.toml)"#,
            r#"keys.hosts = "http://x/": not a host (a name or address, optionally with a port: "app.example.com", "127.0.0.1:8080") (set by herdsman.toml)"#,
            r#"keys.hosts = "a b": not a host (a name or address, optionally with a port: "app.example.com", "127.0.0.1:8080") (set by herdsman.toml)"#,
            r#"keys.vary = "bad header": not a valid header name (set by herdsman.toml)"#,
            r#"classes.me.vary = "x:y": not a valid header name (set by herdsman.toml)"#,
        ]
        .join("\n")
    );
}

#[test]
fn the_server_section_is_read_from_variables_and_its_proxies_are_checked() {
    let source = StaticEnv::new()
        .var("HERDSMAN__SERVER__HEADER_READ_TIMEOUT", "5s")
        .var(
            "HERDSMAN__SERVER__TRUSTED_PROXIES",
            "[\"10.0.0.0/8\", \"::1\"]",
        );
    let config = load(Environment::Production, &source).unwrap();
    assert_eq!(config.server.header_read_timeout, secs(5));
    assert_eq!(config.server.trusted_proxies, ["10.0.0.0/8", "::1"]);
    assert_eq!(config.server.idle_timeout, secs(60), "the profile");

    let file = r#"
        [server]
        trusted_proxies = ["10.0.0.0/8", "proxy.internal", "::/0"]
    "#;
    assert_eq!(
        errors(Environment::Production, &with_file(file)),
        [
            r#"server.trusted_proxies = "proxy.internal": not an IP address or CIDR block: "proxy.internal" (expected "10.0.0.1" or "10.0.0.0/8") (set by herdsman.toml)"#,
            r#"server.trusted_proxies = "::/0": trusts every address: any client could name its own address (set by herdsman.toml)"#,
        ]
        .join("\n")
    );
}

#[test]
fn a_global_problem_is_reported_once_and_a_class_that_changes_it_again() {
    let file = r#"
        [breaker]
        open_duration = "10s"
        max_open_duration = "5s"
        [classes.calm]
        paths = ["/calm"]
        breaker = { window = 20 }
        [classes.slow]
        paths = ["/slow"]
        breaker = { open_duration = "20s" }
    "#;
    assert_eq!(
        errors(Environment::Production, &with_file(file)),
        [
            r#"breaker.max_open_duration = "5s": shorter than open_duration (10s) (set by herdsman.toml)"#,
            // Inherited, but its rule reads the key the class changed.
            r#"classes.slow.breaker.max_open_duration = "5s": shorter than open_duration (20s)"#,
        ]
        .join("\n")
    );
}

// The Coordinator's build is where this is checked.
#[cfg(feature = "coordinator")]
#[test]
fn a_class_section_built_in_code_keeps_the_global_only_keys() {
    let mut config = Config::profile(Environment::Test);
    let cache = herdsman::config::CacheSettings {
        class: herdsman::cache::ClassSettings {
            ttl: secs(2),
            ..config.cache.class
        },
        max_bytes: 1,
        ..config.cache.clone()
    };
    config.classes.insert(
        "live".into(),
        herdsman::config::ClassConfig {
            paths: vec!["/live".into()],
            cache: Some(cache),
            ..Default::default()
        },
    );
    let err = herdsman::Coordinator::builder()
        .environment(Environment::Test)
        .config(config)
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "classes.live.cache.max_bytes: global only: set it in [cache], which every class uses"
        ),
        "{err}"
    );
}

#[test]
fn config_show_prints_the_keys_a_class_changes_and_loads_back_the_same() {
    let source = with_file(
        r#"
        [cache]
        ttl = "15s"
        [classes.live]
        paths = ["/live"]
        cache = { ttl = "2s", mode = "app" }
        breaker = { window = 20 }
    "#,
    );
    let config = load(Environment::Production, &source).unwrap();
    let shown = config.to_toml();
    assert!(
        shown.contains(
            "[classes.live.cache]\nttl = \"2s\"\n\n[classes.live.breaker]\nwindow = 20\n"
        ),
        "{shown}"
    );
    let again = load(Environment::Production, &with_file(&shown)).unwrap();
    assert_eq!(again, config);
}

#[test]
fn a_key_length_over_the_largest_toml_integer_is_refused() {
    let source = StaticEnv::new().var("HERDSMAN__KEYS__MAX_LEN", "10741432097169699241");
    assert_eq!(
        errors(Environment::Production, &source),
        "keys.max_len = 10741432097169699241: must be at most 9223372036854775807 (set by HERDSMAN__KEYS__MAX_LEN)"
    );
}

#[test]
fn shares_are_a_count_auto_or_off_and_auto_follows_each_class_limit() {
    use herdsman::limit::Share;
    let file = r#"
        [limit]
        max_concurrency = 16
        max_concurrency_per_address = "off"
        [classes.small]
        paths = ["/small"]
        limit = { max_concurrency = 8 }
        [classes.capped]
        paths = ["/capped"]
        limit = { max_concurrency_per_caller = 3, max_concurrency_per_address = "auto" }
    "#;
    let config = load(Environment::Production, &with_file(file)).unwrap();
    let limits = |name: &str| config.class(name).class_limits();
    // Left out: a quarter per caller, of the class's own limit.
    assert_eq!(config.limit.caller_share(), Share::Auto);
    assert_eq!(limits("default").max_concurrent_per_caller(), Some(4));
    assert_eq!(limits("small").max_concurrent_per_caller(), Some(2));
    assert_eq!(limits("default").max_concurrent_per_address(), None);
    assert_eq!(limits("small").address_share(), Share::Off, "inherited");
    assert_eq!(limits("capped").max_concurrent_per_caller(), Some(3));
    assert_eq!(limits("capped").max_concurrent_per_address(), Some(8));
    // A share written out loads back the same.
    assert_eq!(
        load(Environment::Production, &with_file(&config.to_toml())).unwrap(),
        config
    );

    let source = StaticEnv::new().var("HERDSMAN__LIMIT__MAX_CONCURRENCY_PER_CALLER", "some");
    assert_eq!(
        errors(Environment::Production, &source),
        r#"limit.max_concurrency_per_caller = "some": expected a whole number, "auto" or "off" (set by HERDSMAN__LIMIT__MAX_CONCURRENCY_PER_CALLER)"#
    );
}

#[test]
fn an_alert_threshold_may_be_off_and_a_left_out_key_keeps_its_default() {
    let file = r#"
        [alerts]
        upstream_calls_per_minute = "off"
        error_rate = "off"
        min_samples = 5
    "#;
    let config = load(Environment::Production, &with_file(file)).unwrap();
    assert_eq!(config.alerts.upstream_calls_per_minute(), None);
    assert_eq!(config.alerts.error_rate(), None);
    assert_eq!(config.alerts.memory_bytes(), Some(100_000_000));
    assert!(config
        .to_toml()
        .contains("upstream_calls_per_minute = \"off\""));
    assert_eq!(
        load(Environment::Production, &with_file(&config.to_toml())).unwrap(),
        config
    );
    let source = with_file("[alerts]\nmemory_bytes = \"never\"\nmin_samples = 0");
    assert_eq!(
        errors(Environment::Production, &source),
        [
            r#"alerts.memory_bytes = "never": expected a number, or "off" (set by herdsman.toml)"#,
            r#"alerts.min_samples = 0: must be at least 1 (set by herdsman.toml)"#,
        ]
        .join("\n")
    );
}

#[test]
fn redis_is_off_by_default_and_its_url_comes_from_herdsman_redis_url() {
    let config = load(Environment::Production, &StaticEnv::new()).unwrap();
    assert_eq!(config.redis.url, None);
    assert!(!config.redis.share_breaker);

    let source = with_file("[redis]\nkey_prefix = \"{app}:\"\nshare_breaker = true\n")
        .var("HERDSMAN__REDIS__URL", "redis://127.0.0.1:6379/2");
    let config = load(Environment::Production, &source).unwrap();
    assert_eq!(
        config.redis.url.as_deref(),
        Some("redis://127.0.0.1:6379/2")
    );
    assert_eq!(config.redis.key_prefix, "{app}:");
    assert!(config.redis.share_breaker);
    assert_eq!(
        Config::load_from(
            Environment::Production,
            &StaticEnv::new().file("herdsman.toml", config.to_toml())
        )
        .unwrap(),
        config
    );
}

#[test]
fn each_bad_redis_value_is_refused_naming_its_field() {
    let source = with_file(
        "[redis]\nurl = \"http://example.com\"\nkey_prefix = \"\"\nop_timeout = \"1s\"\n\
         flight_lease = \"0s\"\nloop_lease = \"500ms\"\n",
    );
    let err = load(Environment::Development, &source).unwrap_err();
    let paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "redis.url",
            "redis.key_prefix",
            "redis.flight_lease",
            "redis.loop_lease"
        ]
    );
    assert_eq!(
        err.problems()[2].to_string(),
        "redis.flight_lease = \"0s\": must be greater than zero (set by herdsman.toml)"
    );
    assert_eq!(
        err.problems()[3].to_string(),
        "redis.loop_lease = \"500ms\": must be longer than op_timeout: a claim would end \
         before Redis answers it (set by herdsman.toml)"
    );
}

#[test]
fn a_redis_password_is_redacted_when_printed() {
    let source = StaticEnv::new().var("HERDSMAN__REDIS__URL", "redis://app:s3cret-pw@cache:6379/0");
    let config = load(Environment::Development, &source).unwrap();
    let shown = config.redacted().to_toml();
    assert!(!shown.contains("s3cret-pw"), "{shown}");
    assert!(
        shown.contains("redis://app:<redacted>@cache:6379/0"),
        "{shown}"
    );
    let lone = herdsman::config::RedisSettings::new("redis://s3cret-pw@cache:6379");
    assert_eq!(
        lone.redacted_url().as_deref(),
        Some("redis://<redacted>@cache:6379")
    );
}
