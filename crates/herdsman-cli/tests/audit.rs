//! `herdsman audit` against stats documents served on 127.0.0.1:0: fixtures
//! (a runaway key, a healthy app, an alert firing) and the demo itself.

use std::{
    io::Write,
    net::SocketAddr,
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use active_users::{with_demo_classes, Demo, Options};
use axum::{http::HeaderMap, http::StatusCode, routing::get, Router};
use herdsman::config::{Config, Environment};

const TOKEN: &str = "a-long-enough-admin-token";

/// Serves `router` on 127.0.0.1:0 (with the peer address, as the demo
/// needs) for as long as the runtime runs.
async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { herdsman_axum::Server::new().serve(listener, router).await });
    addr
}

/// A stats route answering the fixture `name` to holders of the token.
fn fixture(name: &str) -> Router {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/stats")
        .join(name);
    let body = std::fs::read_to_string(path).unwrap();
    Router::new().route(
        "/_herdsman/stats",
        get(move |headers: HeaderMap| async move {
            let bearer = format!("Bearer {TOKEN}");
            if headers
                .get("authorization")
                .is_some_and(|v| v == bearer.as_str())
            {
                Ok(([("content-type", "application/json")], body))
            } else {
                Err(StatusCode::FORBIDDEN)
            }
        }),
    )
}

/// `herdsman ARGS`, off the runtime's threads.
async fn herdsman(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_herdsman"))
            .args(args)
            .env_remove("HERDSMAN_ADMIN_TOKEN")
            .output()
            .expect("the binary runs")
    })
    .await
    .unwrap()
}

async fn audit(addr: SocketAddr, token: Option<&str>) -> (Option<i32>, String, String) {
    let mut args = vec!["audit".to_owned(), format!("http://{addr}")];
    if let Some(token) = token {
        args.extend(["--token".to_owned(), token.to_owned()]);
    }
    let out = herdsman(args).await;
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code(), text(out.stdout), text(out.stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runaway_key_exits_one_and_is_named() {
    let addr = serve(fixture("runaway.json")).await;
    let (code, out, _) = audit(addr, Some(TOKEN)).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("key 9f2c4e1d0b7a6c35: 120 calls in the last minute (alarm: over 20)"),
        "{out}"
    );
    assert!(
        out.contains("| active-users | 1200 | 120 | 90.0 % |"),
        "{out}"
    );
    assert!(out.contains("- cache.active-users\n"), "{out}");
    assert!(
        out.contains("unhealthy: 1 key(s) running away, 0 other alert(s)"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_app_exits_zero_with_its_savings() {
    let addr = serve(fixture("healthy.json")).await;
    let (code, out, err) = audit(addr, Some(TOKEN)).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("| active-users | 12000 | 12 | 99.9 % | 12000 | 13 | closed |"),
        "{out}"
    );
    assert!(
        out.contains("| me | 40 | 4 | 90.0 % | 40 | 4 | off |"),
        "{out}"
    );
    assert!(out.contains("Verdict: healthy (exit 0)"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_firing_alert_exits_one() {
    let addr = serve(fixture("alert.json")).await;
    let (code, out, _) = audit(addr, Some(TOKEN)).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "- breaker_trip (me) since 2026-12-04T21:05:00Z: the breaker of class me tripped"
        ),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_it_cannot_read_exit_two_and_say_why() {
    let addr = serve(fixture("healthy.json")).await;
    let (code, out, err) = audit(addr, None).await;
    assert_eq!(code, Some(2));
    assert_eq!(out, "");
    assert!(
        err.contains("403 Forbidden (an admin route: give the admin token with --token)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_running_demo_audits_healthy() {
    let mut config = Config::profile(Environment::Production);
    config.admin.token = Some(TOKEN.to_owned());
    config.registry.class.interval = Duration::from_secs(60);
    let options = Options {
        latency: Duration::from_millis(1),
        churn: None,
        ..Options::default()
    };
    let demo = Demo::build(Environment::Production, with_demo_classes(config), &options).unwrap();
    let addr = serve(demo.router()).await;
    let (code, out, err) = audit(addr, Some(TOKEN)).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("(production)"), "{out}");
    for class in ["active-users", "board-events", "me", "default"] {
        assert!(out.contains(&format!("| {class} | 0 | 0 | – |")), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_the_demo_polls_too_often_is_named_and_fails_the_audit() {
    // A real alert, not a fixture: the key's loop polls every 20 ms for
    // one open stream, over an alarm of 2 calls per minute.
    let mut config = Config::profile(Environment::Test);
    config.registry.class.interval = Duration::from_millis(20);
    config.alerts = config.alerts.with_upstream_calls_per_minute(Some(2));
    let options = Options {
        latency: Duration::from_millis(1),
        churn: None,
        ..Options::default()
    };
    let demo = Demo::build(Environment::Test, with_demo_classes(config), &options).unwrap();
    let addr = serve(demo.router()).await;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /sse/active-users HTTP/1.1\r\nHost: demo\r\n\r\n")
        .unwrap();
    let stats = demo.coordinator.stats().clone();
    let fired = async {
        while stats.snapshot().alerts.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fired)
        .await
        .expect("the upstream-calls alert fires within 10 s");
    let (code, out, _) = audit(addr, None).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("- class active-users, key "), "{out}");
    assert!(out.contains("(alarm: over 2)"), "{out}");
    assert!(out.contains("unhealthy: 1 key(s) running away"), "{out}");
}
