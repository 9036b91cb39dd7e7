//! The admin routes as an application mounts them: under their prefix,
//! beside the application's own `/`, with every metric described.

mod support;

use std::{convert::Infallible, time::Duration};

use axum::{
    body::Body,
    http::{header, Request, Response, StatusCode},
    routing::get,
    Router,
};
use herdsman::{
    config::{ClassConfig, Config, Environment},
    stats::{AlertRules, Stats},
    Coordinator,
};
use herdsman_axum::{Admin, AdminAccess};
use http_body_util::BodyExt;
use tower::{service_fn, Layer, ServiceExt};

const TOKEN: &str = "a-long-enough-admin-token";

async fn send(app: &Router, method: &str, path: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn admin(prefix: Option<&str>) -> Router {
    let mut builder = Admin::builder(Stats::new(), Environment::Production, Some(TOKEN));
    if let Some(prefix) = prefix {
        builder = builder.with_prefix(prefix);
    }
    builder.router()
}

#[tokio::test]
async fn admin_routes_merge_into_an_app_that_has_its_own_root() {
    let app = Router::new()
        .route("/", get(|| async { "the app's home" }))
        .route("/assets/app.js", get(|| async { "the app's script" }))
        .merge(admin(None));

    assert_eq!(
        send(&app, "GET", "/", None).await,
        (StatusCode::OK, "the app's home".to_owned())
    );
    let (status, page) = send(&app, "GET", "/_herdsman/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("assets/dashboard.js"), "{page}");
    for asset in ["dashboard.js", "dashboard.css"] {
        let (status, _) = send(&app, "GET", &format!("/_herdsman/assets/{asset}"), None).await;
        assert_eq!(status, StatusCode::OK, "{asset}");
    }
    let (status, _) = send(&app, "GET", "/_herdsman", None).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);

    for path in [
        "/_herdsman/stats",
        "/_herdsman/metrics",
        "/_herdsman/switches",
    ] {
        assert_eq!(
            send(&app, "GET", path, None).await.0,
            StatusCode::FORBIDDEN,
            "{path}"
        );
        assert_eq!(
            send(&app, "GET", path, Some(TOKEN)).await.0,
            StatusCode::OK,
            "{path}"
        );
    }
    // Nothing of the admin's outside its prefix.
    for path in ["/metrics", "/stats", "/assets/dashboard.js"] {
        assert_eq!(
            send(&app, "GET", path, Some(TOKEN)).await.0,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_configured_prefix_moves_every_admin_route() {
    let app = admin(Some("/ops/herdsman"));
    for path in ["/ops/herdsman/", "/ops/herdsman/assets/dashboard.js"] {
        assert_eq!(
            send(&app, "GET", path, None).await.0,
            StatusCode::OK,
            "{path}"
        );
    }
    for path in [
        "/ops/herdsman/stats",
        "/ops/herdsman/metrics",
        "/ops/herdsman/switches",
    ] {
        assert_eq!(
            send(&app, "GET", path, Some(TOKEN)).await.0,
            StatusCode::OK,
            "{path}"
        );
    }
    let (status, _) = send(&app, "POST", "/ops/herdsman/switches/nothing", Some(TOKEN)).await;
    assert_ne!(
        status,
        StatusCode::NOT_FOUND,
        "the flip route is under the prefix too"
    );
    for path in ["/_herdsman/stats", "/_herdsman/", "/"] {
        assert_eq!(
            send(&app, "GET", path, Some(TOKEN)).await.0,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
}

#[tokio::test]
async fn the_stats_document_keeps_a_resolved_alert_with_the_value_that_resolved_it() {
    let stats = Stats::builder()
        .with_rules(AlertRules::none().with_memory_bytes(Some(1_000_000)))
        .build();
    let held = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(2_000_000));
    let h = held.clone();
    stats.track_memory("cache", move || h.load(std::sync::atomic::Ordering::SeqCst));
    let app: Router = Admin::builder(stats.clone(), Environment::Production, Some(TOKEN)).router();
    let doc = |text: String| serde_json::from_str::<serde_json::Value>(&text).unwrap();

    stats.evaluate();
    let firing = doc(send(&app, "GET", "/_herdsman/stats", Some(TOKEN)).await.1);
    assert_eq!(firing["alerts"][0]["rule"], "memory");
    assert_eq!(firing["alerts"][0]["value"], 2_000_000.0);
    assert_eq!(firing["alerts"][0]["threshold"], 1_000_000.0);
    assert_eq!(firing["resolved_alerts"], serde_json::json!([]));

    held.store(300_000, std::sync::atomic::Ordering::SeqCst);
    stats.evaluate();
    let resolved = doc(send(&app, "GET", "/_herdsman/stats", Some(TOKEN)).await.1);
    assert_eq!(resolved["alerts"], serde_json::json!([]));
    let alert = &resolved["resolved_alerts"][0];
    assert_eq!(alert["rule"], "memory");
    assert_eq!(alert["value"], 300_000.0, "the value that resolved it");
    assert_eq!(alert["threshold"], 1_000_000.0);
    assert!(alert["resolved_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
}

#[test]
#[should_panic(expected = "an admin prefix is a path like /_herdsman")]
fn the_root_is_no_admin_prefix() {
    let _ = Admin::builder(Stats::new(), Environment::Test, None).with_prefix("/");
}

#[test]
#[should_panic(expected = "an admin prefix is a path like /_herdsman")]
fn a_prefix_with_a_trailing_slash_is_refused() {
    let _ = Admin::builder(Stats::new(), Environment::Test, None).with_prefix("/ops/");
}

/// Families of a Prometheus text exposition: each sample's metric name,
/// and the names with a `# HELP` and with a `# TYPE` line.
fn families(text: &str) -> [std::collections::BTreeSet<String>; 3] {
    let mut sets: [std::collections::BTreeSet<String>; 3] = Default::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("#"), Some("HELP"), Some(name)) => sets[1].insert(name.to_owned()),
            (Some("#"), Some("TYPE"), Some(name)) => sets[2].insert(name.to_owned()),
            (Some(sample), ..) if !sample.starts_with('#') => {
                let name = sample.split('{').next().unwrap_or(sample);
                sets[0].insert(name.to_owned())
            }
            _ => false,
        };
    }
    sets
}

#[tokio::test(start_paused = true)]
async fn metrics_carry_help_and_type_for_every_metric() {
    let mut config = Config::profile(Environment::Test);
    config.classes.insert(
        "users".to_owned(),
        ClassConfig {
            paths: vec!["/users".to_owned()],
            public: true,
            ..ClassConfig::default()
        },
    );
    let coordinator = Coordinator::builder()
        .environment(Environment::Test)
        .config(config)
        .build()
        .unwrap();
    let upstream = service_fn(|_: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::from("[]")))
    });
    let stack = coordinator.layer().layer(upstream);
    for _ in 0..3 {
        let req = Request::get("http://app.test/users")
            .body(Body::empty())
            .unwrap();
        stack.clone().oneshot(req).await.unwrap();
    }
    // The Stats monitor publishes once per tick.
    tokio::time::sleep(Duration::from_secs(3)).await;
    support::settle().await;

    let app: Router = Admin::builder(coordinator.stats().clone(), Environment::Test, None)
        .with_access(AdminAccess::token(TOKEN))
        .with_switches(coordinator.switches().clone())
        .router();
    let (status, text) = send(&app, "GET", "/_herdsman/metrics", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    let [samples, help, types] = families(&text);
    assert!(samples.contains("herdsman_requests_total"), "{text}");
    assert!(samples.len() >= 10, "{samples:?}");
    for name in &samples {
        // A summary's or histogram's samples carry suffixes; herdsman
        // publishes counters and gauges only.
        assert!(help.contains(name), "no # HELP for {name}:\n{text}");
        assert!(types.contains(name), "no # TYPE for {name}:\n{text}");
    }
}
