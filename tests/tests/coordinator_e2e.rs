//! The Coordinator end to end: its whole stack around a hyper-util client
//! calling a real axum server (client side), and around an axum `Router`
//! served on `127.0.0.1:0` (server side).

use axum::{
    error_handling::HandleErrorLayer,
    extract::State,
    http::{Method, StatusCode},
    response::IntoResponse,
    routing, Router,
};
use herdsman::{
    config::{ClassConfig, Config, Environment},
    http::error_response,
    BoxError, Coordinator,
};
use herdsman_tests::{
    bounded, client, empty, get, replies, request, send_all, wait_until, Probe, Server,
};
use tower::{Layer, ServiceBuilder, ServiceExt};

const CALLERS: u64 = 20;

fn coordinator() -> Coordinator {
    let mut config = Config::profile(Environment::Test);
    config.cache.class.ttl = std::time::Duration::from_secs(60);
    config.classes.insert(
        "active-users".into(),
        ClassConfig {
            paths: vec!["/api/active-users".into()],
            public: true,
            ..ClassConfig::default()
        },
    );
    Coordinator::builder()
        .environment(Environment::Test)
        .config(config)
        .build()
        .expect("valid configuration")
}

/// The upstream: every call parks on the probe's gate, then answers with its
/// number.
fn upstream_app(probe: &Probe) -> Router {
    Router::new()
        .route(
            "/api/active-users",
            routing::get(|State(probe): State<Probe>| async move {
                format!("{} online", probe.enter().await)
            })
            .post(|State(probe): State<Probe>| async move {
                probe.enter().await;
                StatusCode::NO_CONTENT
            }),
        )
        .with_state(probe.clone())
}

#[tokio::test]
async fn a_hyper_client_behind_the_coordinator_makes_one_call_for_many_callers() {
    bounded(async {
        let probe = Probe::new();
        let server = Server::start(upstream_app(&probe)).await;
        let coordinator = coordinator();
        let svc = coordinator.layer().layer(client());
        let url = server.url("/api/active-users");

        // Concurrent identical GETs from different users of a public class:
        // one upstream call (dedup), the others wait for it.
        let calls = send_all(
            &svc,
            (0..CALLERS).map(|i| {
                empty(request(Method::GET, &url).header("authorization", format!("Bearer {i}")))
            }),
        );
        wait_until("every caller joined the first", || {
            coordinator
                .snapshot()
                .endpoints
                .get("active-users")
                .is_some_and(|active| active.coalesced == CALLERS - 1)
        })
        .await;
        probe.open();
        for reply in replies(calls).await {
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(reply.body, "1 online");
        }

        // The next one is a cache hit; a POST invalidates it.
        let reply = &replies(send_all(&svc, [get(&url)])).await[0];
        assert_eq!(reply.body, "1 online");
        assert_eq!(probe.calls(), 1);
        let posted = &replies(send_all(&svc, [empty(request(Method::POST, &url))])).await[0];
        assert_eq!(posted.status, StatusCode::NO_CONTENT);
        let reply = &replies(send_all(&svc, [get(&url)])).await[0];
        assert_eq!(reply.body, "3 online");

        let active = &coordinator.snapshot().endpoints["active-users"];
        assert_eq!(active.requests, CALLERS + 3);
        assert_eq!(active.upstream_calls, 3);
        assert_eq!(active.cache_hits, 1);
    })
    .await;
}

#[tokio::test]
async fn an_axum_router_behind_the_coordinator_serves_repeated_gets_from_the_cache() {
    bounded(async {
        let probe = Probe::new();
        probe.open();
        let coordinator = coordinator();
        // The layers add failure modes (`BoxError`): axum needs them turned
        // into responses.
        let app = upstream_app(&probe).layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|err: BoxError| async move {
                    error_response(&*err).unwrap_or_else(|| {
                        (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response()
                    })
                }))
                .layer(coordinator.layer()),
        );
        let server = Server::start(app).await;
        let url = server.url("/api/active-users");
        let client = client();
        for _ in 0..3 {
            let res = client.clone().oneshot(get(&url)).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
        }
        assert_eq!(probe.calls(), 1);
        assert_eq!(
            coordinator.snapshot().endpoints["active-users"].cache_hits,
            2
        );
    })
    .await;
}
