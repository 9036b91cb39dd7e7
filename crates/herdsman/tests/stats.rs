//! The Stats layer: exact counts, percentiles, sliding rates, alerts and the
//! snapshot's JSON shape.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::StreamExt;
use herdsman::{
    breaker::BreakerState,
    class::{AllDefault, Class},
    clock::Clock,
    event::{Event, Limit, Observer, Rejection},
    stats::{AlertRule, AlertRules, AlertState, Stats},
    BoxError, Key,
};
use tokio::time::{self, Instant};
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};

fn paused_stats(rules: AlertRules) -> Stats {
    Stats::builder()
        .with_clock(Clock::Tokio)
        .with_rules(rules)
        .build()
}

fn no_key(_: &u64) -> Option<Key> {
    None
}

fn by_value(req: &u64) -> Option<Key> {
    Some(Key::from(*req))
}

/// Advances the paused clock one second at a time, letting the monitor
/// run after each step.
async fn seconds(n: u64) {
    for _ in 0..n {
        time::advance(Duration::from_secs(1)).await;
        tokio::task::yield_now().await;
    }
}

async fn fails_every_seventh(req: u64) -> Result<u64, BoxError> {
    tokio::task::yield_now().await;
    if req % 7 == 0 {
        Err("upstream failed".into())
    } else {
        Ok(req)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counts_are_exact_with_many_tasks_on_a_multi_thread_runtime() {
    let stats = Stats::new();
    let upstream_calls = Arc::new(AtomicU64::new(0));
    let calls = upstream_calls.clone();
    let svc = ServiceBuilder::new()
        .layer(stats.layer(|req: &u64| {
            if req % 2 == 0 {
                Class::from_static("even")
            } else {
                Class::from_static("odd")
            }
        }))
        .layer(stats.upstream_layer(AllDefault, no_key))
        .service(service_fn(move |req: u64| {
            calls.fetch_add(1, Ordering::Relaxed);
            fails_every_seventh(req)
        }));

    let tasks: Vec<_> = (0..64u64)
        .map(|t| {
            let svc = svc.clone();
            tokio::spawn(async move {
                for i in 0..500u64 {
                    let _ = svc.clone().oneshot(t * 500 + i).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }

    let snap = stats.snapshot();
    let (even, odd) = (&snap.endpoints["even"], &snap.endpoints["odd"]);
    let total = 64 * 500;
    assert_eq!(even.requests + odd.requests, total);
    assert_eq!(even.requests, total / 2);
    let failing = (0..total).filter(|n| n % 7 == 0).count() as u64;
    let failing_even = (0..total).filter(|n| n % 7 == 0 && n % 2 == 0).count() as u64;
    assert_eq!(even.errors + odd.errors, failing);
    assert_eq!(even.errors, failing_even);
    assert_eq!(even.errors_by_kind["upstream"], failing_even);
    assert_eq!(even.latency_ms.count, even.requests);
    assert_eq!((even.in_flight, odd.in_flight), (0, 0));
    let upstream = &snap.endpoints["default"];
    assert_eq!(
        upstream.upstream_calls,
        upstream_calls.load(Ordering::Relaxed)
    );
    assert_eq!(upstream.upstream_calls, total);
    assert_eq!(upstream.upstream_errors, failing);
    assert_eq!(upstream.upstream_latency_ms.count, total);
}

#[tokio::test(start_paused = true)]
async fn percentiles_are_within_the_histograms_precision() {
    let stats = paused_stats(AlertRules::none());
    let mut svc = stats
        .layer(AllDefault)
        .layer(service_fn(|ms: u64| async move {
            time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, BoxError>(())
        }));
    // 1 ms to 1000 ms, once each.
    for ms in 1..=1000 {
        svc.ready().await.unwrap().call(ms).await.unwrap();
    }
    let p = stats.snapshot().endpoints["default"].latency_ms;
    assert_eq!(p.count, 1000);
    let within = |got: f64, want: f64| (got - want).abs() <= want * 0.01;
    assert!(within(p.p50, 500.0), "p50 {}", p.p50);
    assert!(within(p.p90, 900.0), "p90 {}", p.p90);
    assert!(within(p.p99, 990.0), "p99 {}", p.p99);
    assert!(within(p.max, 1000.0), "max {}", p.max);
}

#[tokio::test(start_paused = true)]
async fn requests_per_minute_slides_in_one_second_steps() {
    let stats = paused_stats(AlertRules::none());
    let mut svc = stats
        .layer(AllDefault)
        .layer(service_fn(|_: u64| async { Ok::<_, BoxError>(()) }));
    let rpm = || stats.snapshot().endpoints["default"].requests_per_minute;

    for i in 0..30 {
        svc.ready().await.unwrap().call(i).await.unwrap();
    }
    seconds(30).await;
    for i in 0..10 {
        svc.ready().await.unwrap().call(i).await.unwrap();
    }
    assert_eq!(rpm(), 40);
    seconds(29).await;
    assert_eq!(rpm(), 40, "the first 30 are still inside the minute");
    seconds(2).await;
    assert_eq!(rpm(), 10, "the first 30 left the window");
    seconds(30).await;
    assert_eq!(rpm(), 0);
    assert_eq!(stats.snapshot().endpoints["default"].requests, 40);
}

#[tokio::test]
async fn cancelled_requests_leave_in_flight_and_are_counted() {
    let stats = Stats::new();
    let mut svc = stats.layer(AllDefault).layer(service_fn(|_: u64| {
        std::future::pending::<Result<(), BoxError>>()
    }));
    let fut = svc.ready().await.unwrap().call(1);
    assert_eq!(stats.snapshot().endpoints["default"].in_flight, 1);
    drop(fut);
    let e = &stats.snapshot().endpoints["default"];
    assert_eq!((e.in_flight, e.cancelled, e.errors), (0, 1, 0));
}

#[tokio::test]
async fn server_errors_count_as_errors_with_the_http_classifier() {
    let stats = Stats::new();
    let mut svc = stats
        .layer(AllDefault)
        .with_failure_classifier(herdsman::http::ServerErrors)
        .layer(service_fn(|status: u16| async move {
            Ok::<_, BoxError>(http::Response::builder().status(status).body(()).unwrap())
        }));
    for status in [200, 404, 500, 503] {
        svc.ready().await.unwrap().call(status).await.unwrap();
    }
    let e = &stats.snapshot().endpoints["default"];
    assert_eq!((e.requests, e.errors), (4, 2));
    assert_eq!(e.errors_by_kind["upstream"], 2);
}

#[tokio::test]
async fn events_from_other_layers_are_counted_per_class() {
    let stats = Stats::new();
    let users = Class::from_static("active-users");
    let board = Class::from_static("board-events");
    for _ in 0..2 {
        stats.observe(&users, Event::CacheHit);
    }
    stats.observe(&users, Event::CacheBackendHit);
    stats.observe(&users, Event::CacheMiss);
    stats.observe(&users, Event::StaleServed);
    stats.observe(&board, Event::Coalesced);
    stats.observe(&board, Event::Reused);
    stats.observe(&board, Event::Rejected(Rejection::Overloaded));
    stats.observe(&board, Event::Rejected(Rejection::RateLimited));
    stats.observe(&board, Event::Rejected(Rejection::BreakerOpen));
    stats.observe(&board, Event::BreakerState(BreakerState::HalfOpen));
    stats.observe(&users, Event::Subscribed);
    stats.observe(&users, Event::Subscribed);
    stats.observe(&users, Event::Unsubscribed);
    stats.observe(&users, Event::Polled);

    let snap = stats.snapshot();
    let (u, b) = (
        &snap.endpoints["active-users"],
        &snap.endpoints["board-events"],
    );
    assert_eq!((u.cache_hits, u.cache_misses, u.stale_served), (3, 1, 1));
    assert_eq!((u.cache_backend_hits, b.cache_backend_hits), (1, 0));
    assert_eq!(u.hit_ratio, Some(0.75));
    assert_eq!((u.subscribers, u.polls), (1, 1));
    assert_eq!((b.coalesced, b.reused, b.rejected), (1, 1, 3));
    assert_eq!(b.rejections["overloaded"], 1);
    assert_eq!(b.breaker, Some("half_open"));
    assert_eq!(u.breaker, None);
}

#[tokio::test]
async fn classes_beyond_the_cap_are_counted_as_other() {
    let stats = Stats::new();
    for i in 0..herdsman::stats::MAX_CLASSES + 10 {
        stats.observe(&Class::new(format!("c{i}")), Event::CacheHit);
    }
    let snap = stats.snapshot();
    assert_eq!(snap.endpoints.len(), herdsman::stats::MAX_CLASSES + 1);
    assert_eq!(snap.endpoints["other"].cache_hits, 10);
}

// ---- alerts ----

#[tokio::test(start_paused = true)]
async fn the_hook_alert_fires_once_above_20_calls_a_minute_and_resolves_once() {
    let stats = paused_stats(AlertRules::none().with_upstream_calls_per_minute(Some(20)));
    let mut alerts = stats.alerts();
    let mut svc = stats
        .upstream_layer(AllDefault, by_value)
        .layer(service_fn(|_: u64| async { Ok::<_, BoxError>(()) }));

    // 20 calls for key 1 (one per second) and plenty for other keys: quiet.
    for _ in 0..20 {
        svc.ready().await.unwrap().call(1).await.unwrap();
        svc.ready().await.unwrap().call(2).await.unwrap();
        seconds(1).await;
    }
    assert!(stats.active_alerts().is_empty());

    // The 21st call inside the minute fires, once.
    svc.ready().await.unwrap().call(1).await.unwrap();
    let fired = alerts.next().await.unwrap();
    assert_eq!(
        (fired.rule, fired.state, fired.value),
        (AlertRule::UpstreamCalls, AlertState::Firing, 21.0)
    );
    assert_eq!(fired.endpoint.as_deref(), Some("default"));
    for _ in 0..10 {
        svc.ready().await.unwrap().call(1).await.unwrap();
    }
    stats.evaluate();
    assert_eq!(stats.active_alerts().len(), 1, "still firing, not again");

    // Calls age out of the minute; it resolves once, when 16 or fewer remain.
    seconds(120).await;
    let resolved = alerts.next().await.unwrap();
    assert_eq!(
        (resolved.rule, resolved.state),
        (AlertRule::UpstreamCalls, AlertState::Resolved)
    );
    assert!(resolved.value <= 16.0);
    assert!(stats.active_alerts().is_empty());
    drop(stats);
    drop(svc);
    assert!(alerts.next().await.is_none(), "no other event was sent");
}

#[tokio::test(start_paused = true)]
async fn the_memory_alert_has_hysteresis() {
    let stats = paused_stats(AlertRules::none().with_memory_bytes(Some(1_000_000)));
    let held = Arc::new(AtomicU64::new(0));
    let h = held.clone();
    stats.track_memory("cache", move || h.load(Ordering::Relaxed));
    let mut alerts = stats.alerts();
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();

    let set_and_evaluate = |bytes: u64| {
        held.store(bytes, Ordering::Relaxed);
        metrics::with_local_recorder(&recorder, || stats.evaluate());
        stats.active_alerts().len()
    };
    assert_eq!(set_and_evaluate(900_000), 0);
    assert_eq!(set_and_evaluate(1_200_000), 1);
    assert_eq!(set_and_evaluate(1_300_000), 1);
    assert_eq!(set_and_evaluate(850_000), 1, "above 80 % of the threshold");
    assert!(stats.resolved_alerts().is_empty());
    assert_eq!(set_and_evaluate(700_000), 0);
    // The resolved alert is kept, with the value that resolved it.
    let resolved = stats.resolved_alerts();
    assert_eq!(resolved.len(), 1);
    assert_eq!(
        (
            resolved[0].alert.rule,
            resolved[0].alert.state,
            resolved[0].alert.value
        ),
        (AlertRule::Memory, AlertState::Resolved, 700_000.0)
    );
    assert_eq!(resolved[0].alert.threshold, 1_000_000.0);
    assert!(resolved[0].resolved_at.ends_with('Z'));

    let states: Vec<_> = [alerts.next().await.unwrap(), alerts.next().await.unwrap()]
        .iter()
        .map(|a| (a.rule, a.state))
        .collect();
    assert_eq!(
        states,
        [
            (AlertRule::Memory, AlertState::Firing),
            (AlertRule::Memory, AlertState::Resolved)
        ]
    );
    let fired = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find(|(key, ..)| key.key().name() == "herdsman_alerts_total")
        .map(|(key, _, _, value)| (key.key().labels().next().unwrap().value().to_owned(), value));
    assert_eq!(
        fired,
        Some((
            "memory".to_owned(),
            metrics_util::debugging::DebugValue::Counter(1)
        ))
    );
}

#[tokio::test(start_paused = true)]
async fn the_error_rate_alert_needs_enough_samples_then_fires_and_resolves() {
    let stats = paused_stats(AlertRules::none().with_error_rate(Some(0.05), 20));
    let mut alerts = stats.alerts();
    let mut svc = stats
        .layer(AllDefault)
        .layer(service_fn(|fail: u64| async move {
            if fail == 1 {
                Err::<(), BoxError>("boom".into())
            } else {
                Ok(())
            }
        }));
    let mut send = async |fail: u64, n: usize| {
        for _ in 0..n {
            let _ = svc.ready().await.unwrap().call(fail).await;
        }
    };

    // 10 failures of 10 requests: 100 %, but too few samples.
    send(1, 10).await;
    seconds(2).await;
    assert!(stats.active_alerts().is_empty());

    // 30 requests, 10 failing: 33 %.
    send(0, 20).await;
    seconds(2).await;
    let fired = alerts.next().await.unwrap();
    assert_eq!(
        (fired.rule, fired.state),
        (AlertRule::ErrorRate, AlertState::Firing)
    );

    // Steady traffic keeps it firing without new events...
    send(0, 100).await;
    seconds(2).await;
    assert_eq!(stats.active_alerts().len(), 1);
    // ...until the failures leave the window.
    seconds(60).await;
    send(0, 30).await;
    seconds(2).await;
    let resolved = alerts.next().await.unwrap();
    assert_eq!(
        (resolved.rule, resolved.state),
        (AlertRule::ErrorRate, AlertState::Resolved)
    );
}

#[tokio::test(start_paused = true)]
async fn a_breaker_trip_fires_once_until_the_breaker_closes() {
    let stats = paused_stats(AlertRules::none().with_breaker_trips(true));
    let mut alerts = stats.alerts();
    let class = Class::from_static("board-events");
    stats.observe(&class, Event::BreakerState(BreakerState::Open));
    stats.observe(&class, Event::BreakerState(BreakerState::HalfOpen));
    stats.observe(&class, Event::BreakerState(BreakerState::Open));
    assert_eq!(stats.active_alerts().len(), 1);
    stats.observe(&class, Event::BreakerState(BreakerState::HalfOpen));
    stats.observe(&class, Event::BreakerState(BreakerState::Closed));
    assert!(stats.active_alerts().is_empty());

    let fired = alerts.next().await.unwrap();
    assert_eq!(
        (fired.rule, fired.state, fired.endpoint.as_deref()),
        (
            AlertRule::BreakerTrip,
            AlertState::Firing,
            Some("board-events")
        )
    );
    let resolved = alerts.next().await.unwrap();
    assert_eq!(resolved.state, AlertState::Resolved);
    drop(stats);
    assert!(alerts.next().await.is_none(), "one trip, one firing");
}

#[tokio::test(start_paused = true)]
async fn a_switched_off_breaker_shows_off_and_its_trip_alert_resolves() {
    let stats = paused_stats(AlertRules::none().with_breaker_trips(true));
    let class = Class::from_static("board-events");
    let on = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let switch = on.clone();
    stats.track_breaker_switch(&class, move || switch.load(Ordering::Relaxed));
    let breaker = || stats.snapshot().endpoints["board-events"].breaker;
    assert_eq!(breaker(), None, "no state reported yet");

    stats.observe(&class, Event::BreakerState(BreakerState::Open));
    assert_eq!((breaker(), stats.active_alerts().len()), (Some("open"), 1));

    // Switched off: no breaker runs, so none is open and none tripped.
    on.store(false, Ordering::Relaxed);
    assert_eq!(breaker(), Some("off"));
    stats.evaluate();
    assert!(stats.active_alerts().is_empty());

    // Back on, still open as it was left: it shows, and alerts, again.
    on.store(true, Ordering::Relaxed);
    assert_eq!(breaker(), Some("open"));
    stats.evaluate();
    assert_eq!(stats.active_alerts().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_dependency_that_is_down_raises_its_unavailable_alert_until_it_is_back() {
    let stats = paused_stats(AlertRules::none());
    let up = Arc::new(AtomicBool::new(true));
    let health = up.clone();
    stats.track_dependency("redis", move || health.load(Ordering::Relaxed));
    let mut alerts = stats.alerts();
    assert!(stats.start_monitor());
    seconds(2).await;
    assert!(stats.active_alerts().is_empty());

    // Down: the next tick fires the alert, once, however long it lasts.
    up.store(false, Ordering::Relaxed);
    seconds(1).await;
    let active = stats.active_alerts();
    assert_eq!(active.len(), 1);
    assert_eq!(
        (active[0].rule.as_str(), active[0].endpoint.as_deref()),
        ("redis_unavailable", None)
    );
    seconds(5).await;
    assert_eq!(stats.active_alerts().len(), 1);

    // Back: it resolves on the next tick; down again, it fires again.
    up.store(true, Ordering::Relaxed);
    seconds(1).await;
    assert!(stats.active_alerts().is_empty());
    up.store(false, Ordering::Relaxed);
    seconds(1).await;

    let mut seen = Vec::new();
    for _ in 0..3 {
        let alert = alerts.next().await.unwrap();
        seen.push((alert.rule.as_str(), alert.state));
    }
    assert_eq!(
        seen,
        [
            ("redis_unavailable", AlertState::Firing),
            ("redis_unavailable", AlertState::Resolved),
            ("redis_unavailable", AlertState::Firing),
        ]
    );
    let redis = stats.snapshot().dependencies["redis"];
    assert_eq!((redis.up, redis.outages), (false, 2));
}

#[tokio::test(start_paused = true)]
async fn a_dependencys_health_is_a_gauge_and_its_alert_is_counted_by_its_name() {
    let stats = paused_stats(AlertRules::none());
    let up = Arc::new(AtomicBool::new(false));
    let health = up.clone();
    stats.track_dependency("redis", move || health.load(Ordering::Relaxed));
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // Counters read back from zero after each snapshot of the recorder.
    let metrics = |evaluate: &dyn Fn()| {
        metrics::with_local_recorder(&recorder, evaluate);
        let mut found: Vec<_> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(key, ..)| !key.key().name().starts_with("herdsman_memory"))
            .map(|(key, _, _, value)| {
                let label = key.key().labels().next().unwrap();
                let labelled = format!("{}{{{}={}}}", key.key().name(), label.key(), label.value());
                (labelled, value)
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    };
    use metrics_util::debugging::DebugValue;

    assert_eq!(
        metrics(&|| stats.evaluate()),
        [
            (
                "herdsman_alerts_active{rule=redis_unavailable}".into(),
                DebugValue::Gauge(1.0.into())
            ),
            (
                "herdsman_alerts_total{rule=redis_unavailable}".into(),
                DebugValue::Counter(1)
            ),
            (
                "herdsman_dependency_up{dependency=redis}".into(),
                DebugValue::Gauge(0.0.into())
            ),
        ]
    );
    up.store(true, Ordering::Relaxed);
    let back = metrics(&|| stats.evaluate());
    assert!(back.contains(&(
        "herdsman_dependency_up{dependency=redis}".into(),
        DebugValue::Gauge(1.0.into())
    )));
    let json = serde_json::to_value(stats.snapshot()).unwrap();
    assert_eq!(
        json["dependencies"]["redis"],
        serde_json::json!({ "up": true, "outages": 1 })
    );
}

#[tokio::test]
async fn a_registered_class_is_listed_at_zero_before_its_first_request() {
    let stats = Stats::new();
    stats.register(&Class::from_static("board-events"));
    let snap = stats.snapshot();
    let e = &snap.endpoints["board-events"];
    assert_eq!((e.requests, e.upstream_calls, e.in_flight), (0, 0, 0));
    assert_eq!(e.latency_ms.count, 0);
}

// ---- the snapshot ----

#[tokio::test(start_paused = true)]
async fn the_snapshot_serializes_to_the_documented_json_shape() {
    let stats = paused_stats(AlertRules::default());
    let users = Class::from_static("active-users");
    let mut svc = ServiceBuilder::new()
        .layer(stats.layer(move |_: &u64| Class::from_static("active-users")))
        .layer(stats.upstream_layer(|_: &u64| Class::from_static("active-users"), no_key))
        .service(service_fn(|ms: u64| async move {
            time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, BoxError>(())
        }));
    let start = Instant::now();
    for ms in [10, 20, 30] {
        svc.ready().await.unwrap().call(ms).await.unwrap();
    }
    assert_eq!(start.elapsed(), Duration::from_millis(60));
    stats.observe(&users, Event::CacheHit);
    stats.observe(&users, Event::CacheMiss);
    stats.observe(&users, Event::Coalesced);
    stats.observe(&users, Event::Subscribed);
    stats.observe(&users, Event::BreakerState(BreakerState::Open));
    stats.track_dependency("redis", || true);
    seconds(1).await;

    let mut json = serde_json::to_value(stats.snapshot()).unwrap();
    // Wall-clock and size-dependent fields.
    json["alerts"][0]["since"] = "2026-01-01T00:00:00Z".into();
    json["memory"]["stats"] = 0.into();
    json["memory_bytes"] = 0.into();
    let golden: serde_json::Value =
        serde_json::from_str(include_str!("golden/stats_snapshot.json")).unwrap();
    assert_eq!(
        json,
        golden,
        "got:\n{}",
        serde_json::to_string_pretty(&json).unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn requests_answered_outside_the_layer_are_recorded_with_start() {
    let stats = paused_stats(AlertRules::none());
    let class = Class::from_static("active-users");
    let ok = stats.start(&class);
    time::sleep(Duration::from_millis(5)).await;
    ok.ok();
    stats
        .start(&class)
        .error(herdsman::stats::ErrorKind::Upstream);
    drop(stats.start(&class));
    let e = &stats.snapshot().endpoints["active-users"];
    assert_eq!(
        (e.requests, e.errors, e.cancelled, e.in_flight),
        (3, 1, 1, 0)
    );
    assert_eq!(e.latency_ms.count, 2);
    assert!(
        (e.latency_ms.max - 5.0).abs() <= 0.05,
        "{}",
        e.latency_ms.max
    );
}

#[tokio::test(start_paused = true)]
async fn the_hook_alert_names_its_key_by_a_stable_fingerprint_not_its_redacted_debug() {
    // Two users whose tokens have the same length: their keys print alike.
    let user = |token: &str| {
        Key::builder()
            .part("GET /api/me")
            .private()
            .part(token)
            .build()
    };
    let (ann, bob) = (user("token-of-ann"), user("token-of-bob"));
    assert_eq!(format!("{ann:?}"), format!("{bob:?}"));
    let stats = paused_stats(AlertRules::none().with_upstream_calls_per_minute(Some(2)));
    let keys = [ann.clone(), bob.clone()];
    let mut svc = stats
        .upstream_layer(AllDefault, move |i: &u64| Some(keys[*i as usize].clone()))
        .layer(service_fn(|_: u64| async { Ok::<_, BoxError>(()) }));
    let mut fire = async |who: u64| {
        for _ in 0..3 {
            svc.ready().await.unwrap().call(who).await.unwrap();
        }
    };
    fire(0).await;
    fire(1).await;
    let ids: Vec<Option<String>> = stats.active_alerts().into_iter().map(|a| a.key).collect();
    let hex = |key: &Key| Some(format!("{:016x}", key.fingerprint()));
    assert_eq!(ids.len(), 2, "one alert per key: {ids:?}");
    assert!(
        ids.contains(&hex(&ann)) && ids.contains(&hex(&bob)),
        "{ids:?}"
    );

    // Quiet for two minutes, then loud again: the same id.
    seconds(120).await;
    assert!(stats.active_alerts().is_empty());
    fire(0).await;
    let again: Vec<Option<String>> = stats.active_alerts().into_iter().map(|a| a.key).collect();
    assert_eq!(again, [hex(&ann)]);
}

#[tokio::test]
async fn events_during_a_request_mark_what_answered_it_and_events_outside_mark_nothing() {
    let stats = Stats::new();
    let observer = stats.clone();
    // A stand-in for the layers below: the request's class is its number.
    let mut svc = stats.layer(AllDefault).layer(service_fn(move |event: u64| {
        let observer = observer.clone();
        async move {
            let default = Class::default();
            match event {
                1 => observer.observe(&default, Event::CacheHit),
                2 => {
                    // Reported while the response future is polled.
                    tokio::task::yield_now().await;
                    observer.observe(&default, Event::Coalesced);
                }
                3 => {
                    // Work moved to another task is not this request's.
                    tokio::spawn(async move { observer.observe(&default, Event::CacheHit) })
                        .await
                        .unwrap();
                }
                _ => {}
            }
            Ok::<_, BoxError>(())
        }
    }));
    for event in [1, 2, 3, 0] {
        svc.ready().await.unwrap().call(event).await.unwrap();
    }
    stats.observe(&Class::default(), Event::SharedAnswer);

    let e = &stats.snapshot().endpoints["default"];
    assert_eq!(e.requests, 5);
    assert_eq!(e.cache_hits, 2, "the layer's view: every hit");
    assert_eq!(
        (e.saved.cache_hits, e.saved.coalesced, e.saved.poll_loop),
        (1, 1, 1)
    );
    assert_eq!(e.forwarded, 2);
    assert_eq!(e.latency_ms.count, 5);
}

#[tokio::test]
async fn requests_recorded_with_start_count_in_the_part_they_say() {
    let stats = Stats::new();
    let class = Class::from_static("active-users");
    stats.start(&class).from_poll_loop().ok();
    stats
        .start(&class)
        .from_poll_loop()
        .error(herdsman::stats::ErrorKind::Upstream);
    stats
        .start(&class)
        .rejected(Rejection::Subscription(Limit::SubscribersPerCaller));
    stats.start(&class).ok();
    let e = &stats.snapshot().endpoints["active-users"];
    assert_eq!((e.requests, e.saved.poll_loop, e.forwarded), (4, 2, 2));
    assert_eq!((e.errors, e.rejected), (1, 1));
    assert_eq!(e.rejections["subscribers_per_caller"], 1);
}

// ---- what answered each client request, through a Coordinator ----

mod saving {
    use std::{
        collections::HashMap,
        convert::Infallible,
        sync::{Arc, Mutex},
        time::Duration,
    };

    use bytes::Bytes;
    use futures_util::{future::join_all, StreamExt};
    use herdsman::{
        class::Class,
        config::{ClassConfig, Config, Environment},
        event::{Invalidation, Limit, Rejection},
        stats::{EndpointSnapshot, ErrorKind},
        BoxError, Coordinated, Coordinator,
    };
    use http::{Request, Response, StatusCode};
    use http_body_util::Full;
    use proptest::prelude::*;
    use tokio::time;
    use tower::{service_fn, util::BoxCloneSyncService, Layer, ServiceExt};

    type Upstream = BoxCloneSyncService<Request<Full<Bytes>>, Response<Full<Bytes>>, Infallible>;

    /// Client requests carry this header; a poll loop's canonical request
    /// keeps only the key's headers, so the origin tells them apart.
    const CLIENT: &str = "x-test-client";

    /// Upstream calls per path, by who made them: started, and completed.
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    struct Calls {
        client: u64,
        loops: u64,
        loops_completed: u64,
    }

    /// An in-process upstream that answers after `delay` with the status set
    /// for its path, and counts calls by path and by who made them.
    #[derive(Clone, Default)]
    struct Origin {
        calls: Arc<Mutex<HashMap<String, Calls>>>,
        failing: Arc<Mutex<HashMap<String, bool>>>,
        delay: Duration,
    }

    impl Origin {
        fn calls(&self, path: &str) -> Calls {
            self.calls
                .lock()
                .unwrap()
                .get(path)
                .copied()
                .unwrap_or_default()
        }

        fn fail(&self, path: &str, on: bool) {
            self.failing.lock().unwrap().insert(path.to_owned(), on);
        }

        fn service(&self) -> Upstream {
            let this = self.clone();
            BoxCloneSyncService::new(service_fn(move |req: Request<Full<Bytes>>| {
                let this = this.clone();
                async move {
                    let path = req.uri().path().to_owned();
                    let client = req.headers().contains_key(CLIENT);
                    {
                        let mut calls = this.calls.lock().unwrap();
                        let calls = calls.entry(path.clone()).or_default();
                        if client {
                            calls.client += 1;
                        } else {
                            calls.loops += 1;
                        }
                    }
                    time::sleep(this.delay).await;
                    if !client {
                        this.calls
                            .lock()
                            .unwrap()
                            .get_mut(&path)
                            .unwrap()
                            .loops_completed += 1;
                    }
                    let failing = this.failing.lock().unwrap().get(&path) == Some(&true);
                    let status = if failing {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    };
                    Ok(Response::builder()
                        .status(status)
                        .body(Full::new(Bytes::from(path)))
                        .unwrap())
                }
            }))
        }
    }

    const PATHS: [&str; 2] = ["/a", "/b"];

    fn coordinator(tweak: impl FnOnce(&mut Config)) -> Coordinator {
        let mut config = Config::profile(Environment::Test);
        for path in PATHS {
            config.classes.insert(
                path[1..].to_owned(),
                ClassConfig {
                    paths: vec![path.to_owned()],
                    public: true,
                    ..ClassConfig::default()
                },
            );
        }
        tweak(&mut config);
        Coordinator::builder()
            .environment(Environment::Test)
            .config(config)
            .build()
            .unwrap()
    }

    fn get(path: &str) -> Request<Full<Bytes>> {
        Request::get(path)
            .header(CLIENT, "1")
            .body(Full::default())
            .unwrap()
    }

    async fn call(svc: &Coordinated<Upstream>, path: &str) -> Result<StatusCode, BoxError> {
        Ok(svc.clone().oneshot(get(path)).await?.status())
    }

    fn endpoint(coordinator: &Coordinator, path: &str) -> EndpointSnapshot {
        coordinator.snapshot().endpoints[&path[1..]].clone()
    }

    /// `requests` = the saved parts + forwarded + in flight.
    fn adds_up(e: &EndpointSnapshot) -> bool {
        e.requests == e.saved.total() + e.forwarded + e.in_flight as u64
    }

    #[tokio::test(start_paused = true)]
    async fn a_hit_a_follower_and_a_forwarded_call_each_count_once_in_their_part() {
        let coordinator = coordinator(|c| c.cache.class.ttl = Duration::from_secs(10));
        let origin = Origin {
            delay: Duration::from_millis(10),
            ..Origin::default()
        };
        let svc = coordinator.layer().layer(origin.service());

        call(&svc, "/a").await.unwrap(); // forwarded
        call(&svc, "/a").await.unwrap(); // a cache hit
        coordinator.invalidate(&Invalidation::Path("/a".into()));
        let burst = join_all((0..3).map(|_| call(&svc, "/a"))).await; // one call, two followers
        assert!(burst.iter().all(|r| r.is_ok()));

        let e = endpoint(&coordinator, "/a");
        assert_eq!(e.requests, 5);
        assert_eq!(
            (e.saved.cache_hits, e.saved.coalesced, e.saved.poll_loop),
            (1, 2, 0)
        );
        assert_eq!(e.forwarded, 2);
        assert_eq!(e.upstream_calls, origin.calls("/a").client);
        assert_eq!(e.upstream_calls, 2, "the forwarded ones");
        assert!(adds_up(&e));
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_loops_fetch_is_no_client_request_and_its_cache_hit_no_saving() {
        let coordinator = coordinator(|c| {
            c.cache.class.ttl = Duration::from_secs(10);
            c.registry.class.interval = Duration::from_secs(1);
        });
        let origin = Origin::default();
        let svc = coordinator.layer().layer(origin.service());
        call(&svc, "/a").await.unwrap(); // forwarded, and stored

        let mut subscription = svc.subscribe(get("/a")).unwrap();
        subscription.next().await.unwrap(); // the loop's fetch: a cache hit
        let e = endpoint(&coordinator, "/a");
        assert_eq!((e.requests, e.polls, e.cache_hits), (1, 1, 1));
        assert_eq!(
            e.saved.cache_hits, 0,
            "the loop's hit saved no client anything"
        );

        // A one-shot call while the loop's value is fresh: answered by it.
        call(&svc, "/a").await.unwrap();
        let e = endpoint(&coordinator, "/a");
        assert_eq!((e.requests, e.saved.poll_loop, e.forwarded), (2, 1, 1));
        assert_eq!(e.latency_ms.count, 2);
        assert_eq!(origin.calls("/a").client, 1);
        assert_eq!(origin.calls("/a").loops, 0, "the cache answered the loop");
        assert!(adds_up(&e));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_joins_a_poll_loops_fetch_in_flight_is_coalesced() {
        let coordinator = coordinator(|_| {});
        let origin = Origin {
            delay: Duration::from_millis(30),
            ..Origin::default()
        };
        let svc = coordinator.layer().layer(origin.service());
        let mut subscription = svc.subscribe(get("/a")).unwrap();
        let (update, client) = tokio::join!(subscription.next(), async {
            time::sleep(Duration::from_millis(5)).await;
            call(&svc, "/a").await
        });
        assert!(update.is_some() && client.is_ok());
        let e = endpoint(&coordinator, "/a");
        assert_eq!((e.requests, e.saved.coalesced, e.forwarded), (1, 1, 0));
        assert_eq!(e.upstream_calls, 1);
        assert_eq!(origin.calls("/a").loops, 1);
        assert!(adds_up(&e));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_copy_served_after_the_requests_own_failed_call_is_forwarded() {
        let coordinator = coordinator(|c| {
            c.cache.class.ttl = Duration::from_millis(50);
            c.cache.class.stale_if_error = Duration::from_secs(60);
        });
        let origin = Origin::default();
        let svc = coordinator.layer().layer(origin.service());
        call(&svc, "/a").await.unwrap();
        time::advance(Duration::from_millis(100)).await;
        origin.fail("/a", true);
        assert_eq!(call(&svc, "/a").await.unwrap(), StatusCode::OK, "stale");

        let e = endpoint(&coordinator, "/a");
        assert_eq!(e.stale_served, 1);
        assert_eq!((e.saved.cache_hits, e.forwarded), (0, 2));
        assert_eq!(origin.calls("/a").client, 2, "each made its own call");
    }

    /// One step of mixed traffic.
    #[derive(Debug, Clone)]
    enum Op {
        /// One-shot calls at once (one is a plain call; more coalesce).
        Calls { path: usize, n: usize },
        /// Time passes: cache entries expire, loops poll.
        Advance { ms: u64 },
        /// A subscriber joins (a stream that stays open).
        Subscribe { path: usize },
        /// The oldest open subscriber leaves.
        Unsubscribe,
        /// The upstream starts or stops failing.
        Fail { path: usize, on: bool },
        /// A polling request answered from a subscription, as
        /// `herdsman-axum`'s `Live::poll` records it.
        Poll { path: usize },
        /// A stream refused by the per-caller cap, as `Live::sse` records it.
        StreamCap { path: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..2usize, 1..5usize).prop_map(|(path, n)| Op::Calls { path, n }),
            3 => (1..120u64).prop_map(|ms| Op::Advance { ms }),
            1 => (0..2usize).prop_map(|path| Op::Subscribe { path }),
            1 => Just(Op::Unsubscribe),
            1 => (0..2usize, any::<bool>()).prop_map(|(path, on)| Op::Fail { path, on }),
            1 => (0..2usize).prop_map(|path| Op::Poll { path }),
            1 => (0..2usize).prop_map(|path| Op::StreamCap { path }),
        ]
    }

    /// What the test itself saw, per path.
    #[derive(Debug, Default, Clone, Copy)]
    struct Seen {
        /// One-shot calls that got a local error (no upstream answer).
        local_errors: u64,
        polls_answered: u64,
        stream_caps: u64,
    }

    async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let coordinator = coordinator(|c| {
            c.cache.class.ttl = Duration::from_millis(40);
            c.cache.class.stale_if_error = Duration::from_millis(200);
            c.registry.class.interval = Duration::from_millis(50);
        });
        let origin = Origin {
            delay: Duration::from_millis(10),
            ..Origin::default()
        };
        let svc = coordinator.layer().layer(origin.service());
        let stats = coordinator.stats().clone();
        let mut open = Vec::new();
        let mut seen = [Seen::default(); 2];
        for op in ops {
            match op {
                Op::Calls { path, n } => {
                    let results = join_all((0..n).map(|_| call(&svc, PATHS[path]))).await;
                    seen[path].local_errors += results.iter().filter(|r| r.is_err()).count() as u64;
                }
                Op::Advance { ms } => time::sleep(Duration::from_millis(ms)).await,
                Op::Subscribe { path } => open.push(svc.subscribe(get(PATHS[path])).unwrap()),
                Op::Unsubscribe => {
                    if !open.is_empty() {
                        open.remove(0);
                    }
                }
                Op::Fail { path, on } => origin.fail(PATHS[path], on),
                Op::Poll { path } => {
                    let recording = stats.start(&Class::new(&PATHS[path][1..]));
                    let mut subscription = svc.subscribe(get(PATHS[path])).unwrap();
                    let update = subscription.next().await.expect("a first update");
                    let recording = recording.from_poll_loop();
                    match update.result() {
                        Ok(response) if response.status().is_success() => recording.ok(),
                        _ => recording.error(ErrorKind::Upstream),
                    }
                    seen[path].polls_answered += 1;
                }
                Op::StreamCap { path } => {
                    stats
                        .start(&Class::new(&PATHS[path][1..]))
                        .rejected(Rejection::Subscription(Limit::SubscribersPerAddress));
                    seen[path].stream_caps += 1;
                }
            }
        }
        drop(open);
        time::sleep(Duration::from_secs(1)).await;

        for (path, seen) in PATHS.into_iter().zip(seen) {
            let e = endpoint(&coordinator, path);
            let calls = origin.calls(path);
            prop_assert_eq!(e.in_flight, 0);
            prop_assert!(adds_up(&e), "{}: {:?}", path, e);
            // Every upstream call is a client's own or a poll loop's.
            prop_assert_eq!(e.upstream_calls, calls.client + calls.loops);
            prop_assert!(calls.loops_completed <= e.polls);
            // A forwarded request made its own call, or got a local error
            // (which a follower of a refused call gets too), or was refused a
            // stream.
            prop_assert!(
                e.forwarded >= calls.client + seen.stream_caps,
                "{:?} {:?}",
                e,
                calls
            );
            prop_assert!(
                e.forwarded <= calls.client + seen.local_errors + seen.stream_caps,
                "{:?} {:?} {:?}",
                e,
                calls,
                seen
            );
            // Client savings are some of what the layers report.
            prop_assert!(e.saved.cache_hits <= e.cache_hits + e.stale_served);
            prop_assert!(e.saved.coalesced <= e.coalesced + e.reused);
            prop_assert!(e.saved.poll_loop >= seen.polls_answered);
            prop_assert_eq!(e.rejections["subscribers_per_address"], seen.stream_caps);
            prop_assert_eq!(e.errors_by_kind["rate_limited"], 0);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        #[test]
        fn the_parts_of_the_saving_add_up_under_mixed_traffic(
            ops in proptest::collection::vec(op(), 1..40)
        ) {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap()
                .block_on(run(ops))?;
        }
    }
}

// ---- the memory figure ----

mod memory {
    use std::{convert::Infallible, sync::Arc, time::Duration};

    use bytes::Bytes;
    use futures_util::StreamExt;
    use herdsman::{
        dedup::{DedupLayer, ENTRY_ESTIMATE_BYTES},
        event::MemorySource,
        http::{BufferLayer, HttpKey},
        registry::RegistryLayer,
        Key,
    };
    use http::{Request, Response, StatusCode};
    use http_body_util::Full;
    use tokio::{sync::Notify, time};
    use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};

    /// What a long key holds outside itself: its bytes and an `Arc`'s two
    /// counts.
    fn heap(key: &Key) -> u64 {
        (key.len() + 2 * std::mem::size_of::<usize>()) as u64
    }

    /// The registry's figure with one loop holding a `body_len`-byte value,
    /// and again after its next poll failed (keeping that value as the last
    /// good one).
    async fn registry_holding(body_len: usize) -> (u64, u64) {
        let layer = RegistryLayer::http(HttpKey::new().public());
        let registry = layer.handle();
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let failing = fail.clone();
        let svc = ServiceBuilder::new()
            .layer(layer)
            .layer(BufferLayer::new())
            .service(service_fn(move |_: Request<Full<Bytes>>| {
                let status = if failing.load(std::sync::atomic::Ordering::SeqCst) {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                };
                async move {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from(vec![b'x'; body_len])))
                            .unwrap(),
                    )
                }
            }));
        let req = Request::get("/big").body(Full::default()).unwrap();
        let mut subscription = svc.subscribe(req).unwrap();
        subscription.next().await.unwrap();
        let good = registry.memory_bytes();
        fail.store(true, std::sync::atomic::Ordering::SeqCst);
        registry.refresh(subscription.key());
        let failed = subscription.next().await.unwrap();
        assert!(failed.error().is_some());
        (good, registry.memory_bytes())
    }

    #[tokio::test(start_paused = true)]
    async fn the_registry_counts_the_value_each_loop_holds() {
        let (small, small_after_failure) = registry_holding(10_000).await;
        let (big, big_after_failure) = registry_holding(60_000).await;
        assert_eq!(big - small, 50_000, "the bodies' difference, exactly");
        assert!(small > 10_000, "{small}");
        // After a failed poll the loop keeps the last good value (and an
        // error of one size whatever the body).
        assert_eq!(big_after_failure - small_after_failure, 50_000);
    }

    fn future_size<S: Service<R>, R>(_: &S) -> u64 {
        std::mem::size_of::<S::Future>() as u64
    }

    #[tokio::test(start_paused = true)]
    async fn dedup_counts_each_call_in_flight_with_its_future_and_long_key() {
        let layer = DedupLayer::new(|name: &String| Some(Key::from(name.as_str())));
        let dedup = layer.handle();
        let release = Arc::new(Notify::new());
        let gate = release.clone();
        let svc = layer.layer(service_fn(move |name: String| {
            let gate = gate.clone();
            async move {
                gate.notified().await;
                Ok::<_, Infallible>(name.len())
            }
        }));
        let inner = future_size(svc.get_ref());
        let long = "a key far longer than the 24 bytes kept inline".to_owned();
        let calls: Vec<_> = ["a".to_owned(), "b".to_owned(), long.clone(), long.clone()]
            .into_iter()
            .map(|name| tokio::spawn(svc.clone().oneshot(name)))
            .collect();
        time::sleep(Duration::from_millis(1)).await;
        // Three keys in flight (the fourth call follows the third).
        assert_eq!(
            dedup.memory_bytes(),
            3 * (ENTRY_ESTIMATE_BYTES + inner) + heap(&Key::from(long.as_str()))
        );
        release.notify_waiters();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        assert_eq!(dedup.memory_bytes(), 0, "drained");
    }

    #[tokio::test(start_paused = true)]
    async fn dedup_counts_a_value_kept_for_its_reuse_window_at_its_size() {
        let layer =
            DedupLayer::new(|_: &u8| Some(Key::from("k"))).with_window(Duration::from_secs(1));
        let dedup = layer.handle();
        let mut svc = layer.layer(service_fn(|_: u8| async {
            Ok::<_, Infallible>([7u8; 4_000])
        }));
        svc.ready().await.unwrap().call(0).await.unwrap();
        // `CloneShare` holds the array itself: 4,000 bytes.
        assert_eq!(dedup.memory_bytes(), ENTRY_ESTIMATE_BYTES + 4_000);
        time::sleep(Duration::from_secs(2)).await;
        assert_eq!(dedup.memory_bytes(), 0, "the window ended");
    }
}
