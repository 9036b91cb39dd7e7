//! Runs the built `herdsman` binary on good and bad configuration files,
//! with a cleared environment so that the machine's variables never leak in.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use herdsman::config::{Config, Environment, StaticEnv};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `herdsman ARGS` in the fixtures directory with only `vars` set.
fn herdsman(args: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herdsman"))
        .args(args)
        .env_clear()
        .envs(vars.iter().copied())
        .current_dir(fixtures())
        .output()
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[test]
fn check_accepts_a_good_file_with_ok_and_status_zero() {
    let out = herdsman(
        &["config", "check", "--env", "production", "good.toml"],
        &[],
    );
    assert_eq!(stderr(&out), "");
    assert_eq!(stdout(&out), "ok\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn check_prints_every_problem_of_a_bad_file_and_exits_one() {
    let out = herdsman(&["config", "check", "--env", "production", "bad.toml"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        concat!(
            "limit.max_concurency = 8: unknown key, expected one of max_concurrency, max_queue, max_wait, retry_after, rate, max_concurrency_per_caller, max_concurrency_per_address (set by bad.toml)\n",
            "cache.stale_while_revalidate = \"10s\": shorter than the ttl (30s): use at least the ttl, or 0s to turn it off (set by bad.toml)\n",
            "cache.max_bytes = 0: must be at least 1 (set by bad.toml)\n",
        )
    );
}

#[test]
fn check_prints_what_start_up_prints() {
    let path = fixtures().join("bad.toml");
    let contents = std::fs::read_to_string(&path).unwrap();
    let source = StaticEnv::new().file("bad.toml", contents);
    let start_up = Config::loader(Environment::Production)
        .source(&source)
        .file("bad.toml")
        .load()
        .unwrap_err();
    let out = herdsman(&["config", "check", "--env", "production", "bad.toml"], &[]);
    assert_eq!(stderr(&out), format!("{start_up}\n"));
}

#[test]
fn an_interval_under_the_floor_fails_in_production_and_warns_elsewhere() {
    let out = herdsman(
        &["config", "check", "--env", "production", "fast.toml"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "registry.interval = \"2s\": under the floor of 5s in production (set registry.allow_fast_polling to allow it) (set by fast.toml)\n"
    );
    let out = herdsman(&["config", "check", "--env", "docker", "fast.toml"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "ok\n");
    assert!(stderr(&out).is_empty(), "2 s is docker's floor");
    let out = herdsman(
        &["config", "check", "--env", "development", "fast.toml"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stderr(&out), "");
}

#[test]
fn a_sub_second_floor_fails_in_docker_unless_fast_polling_is_allowed() {
    let floor = [("HERDSMAN__REGISTRY__FLOOR", "500ms")];
    let out = herdsman(&["config", "check", "--env", "docker", "good.toml"], &floor);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "registry.floor = \"500ms\": under 1s in docker (set registry.allow_fast_polling to allow it) (set by HERDSMAN__REGISTRY__FLOOR)\n"
    );
    let allowed = [floor[0], ("HERDSMAN__REGISTRY__ALLOW_FAST_POLLING", "true")];
    let out = herdsman(
        &["config", "check", "--env", "docker", "good.toml"],
        &allowed,
    );
    assert_eq!((stdout(&out), stderr(&out)), ("ok\n".into(), String::new()));
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn the_retired_unsafe_intervals_key_is_refused_naming_its_replacement() {
    let vars = [("HERDSMAN__REGISTRY__ALLOW_UNSAFE_INTERVALS", "true")];
    let out = herdsman(&["config", "check", "--env", "test", "good.toml"], &vars);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "registry.allow_unsafe_intervals = true: replaced by registry.allow_fast_polling, which also allows floors and intervals under 1s in production and docker (set by HERDSMAN__REGISTRY__ALLOW_UNSAFE_INTERVALS)\n"
    );
}

#[test]
fn check_reads_variables_and_the_environment_as_start_up_does() {
    let vars = [
        ("HERDSMAN_ENV", "production"),
        ("HERDSMAN__REGISTRY__INTERVAL", "1s"),
    ];
    let out = herdsman(&["config", "check", "good.toml"], &vars);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "registry.interval = \"1s\": under the floor of 5s in production (set registry.allow_fast_polling to allow it) (set by HERDSMAN__REGISTRY__INTERVAL)\n"
    );

    let out = herdsman(&["config", "check"], &[("HERDSMAN_ENV", "prod")]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "HERDSMAN_ENV = \"prod\": unknown environment, expected one of development, production, docker, test\n"
    );
}

#[test]
fn without_a_file_argument_herdsman_config_then_herdsman_toml_are_read() {
    let show = |vars: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_herdsman"))
            .args(["config", "show", "--env", "test"])
            .env_clear()
            .envs(vars.iter().copied())
            .current_dir(fixtures().join("default"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        stdout(&out)
    };
    assert!(show(&[]).contains("[dedup]\nwindow = \"3s\""));
    let good = fixtures().join("good.toml");
    let named = show(&[("HERDSMAN_CONFIG", good.to_str().unwrap())]);
    assert!(named.contains("[dedup]\nwindow = \"0s\""));
    assert!(named.contains("[classes.active-users]"));
}

#[test]
fn show_prints_the_effective_configuration_with_secrets_redacted() {
    let out = herdsman(&["config", "show", "--env", "production", "good.toml"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let contents = std::fs::read_to_string(fixtures().join("good.toml")).unwrap();
    let expected = Config::loader(Environment::Production)
        .source(&StaticEnv::new().file("good.toml", contents))
        .file("good.toml")
        .load()
        .unwrap()
        .config;
    let shown = stdout(&out);
    assert!(shown.starts_with("# herdsman configuration for production\n"));
    assert!(shown.contains("token = \"<redacted>\""));
    assert!(!shown.contains("a-long-enough-admin-token"));
    assert_eq!(
        shown.lines().skip(1).collect::<Vec<_>>().join("\n") + "\n",
        expected.redacted().to_toml()
    );
    assert!(shown.contains("interval = \"15s\""), "file value");
    assert!(
        shown.contains("stale_if_error = \"5m\""),
        "production default"
    );
}

#[test]
fn show_of_a_bad_file_prints_the_problems_and_no_configuration() {
    let out = herdsman(&["config", "show", "--env", "production", "bad.toml"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out).lines().count(), 3);
}

#[test]
fn a_missing_file_and_an_unknown_env_flag_are_reported() {
    let out = herdsman(&["config", "check", "--env", "test", "nope.toml"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("(root) = \"nope.toml\": cannot read the configuration file"));
    let out = herdsman(&["config", "check", "--env", "prod", "good.toml"], &[]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(stderr(&out).contains("[possible values: development, production, docker, test]"));
}
