//! Switches and rollout: flips take effect on the next request without
//! losing or doubling any, are counted, and rollout buckets are stable.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use herdsman::{
    class::Class,
    config::{Config, Environment, StaticEnv},
    dedup::DedupLayer,
    key::Key,
    switch::{Gate, LayerName, Rollout, Switch, SwitchedLayer, Switches},
};
use proptest::prelude::*;
use tower::{service_fn, Layer, Service, ServiceExt};

fn class(name: &str) -> Class {
    Class::new(name)
}

#[test]
fn a_handle_sees_flips_of_its_switch_and_of_the_stack() {
    let switches = Switches::new(["a", "b"]);
    let a_cache = switches.switch(LayerName::Cache, &class("a"));
    let b_cache = switches.switch(LayerName::Cache, &class("b"));
    assert!(a_cache.is_on() && b_cache.is_on());

    assert_eq!(switches.set(LayerName::Cache, &class("a"), false), Ok(true));
    assert!(!a_cache.is_on());
    assert!(
        b_cache.is_on(),
        "one class's switch leaves the others alone"
    );
    assert!(switches.is_on(LayerName::Dedup, &class("a")));

    assert!(switches.set_all(false));
    assert!(!b_cache.is_on() && !switches.stack().is_on());
    assert!(!switches.stack_is_on());
    switches.set_all(true);
    assert!(b_cache.is_on());
    assert!(
        !a_cache.is_on(),
        "turning the stack on keeps a layer's own off"
    );
}

#[test]
fn unknown_classes_use_the_default_class_switches_and_cannot_be_set() {
    let switches = Switches::new(["a"]);
    switches
        .set(LayerName::Limit, &Class::default(), false)
        .unwrap();
    assert!(!switches.is_on(LayerName::Limit, &class("never-configured")));
    let err = switches
        .set(LayerName::Limit, &class("never-configured"), false)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"unknown endpoint class "never-configured""#
    );
    assert_eq!("cache".parse::<LayerName>(), Ok(LayerName::Cache));
    assert!("cash".parse::<LayerName>().is_err());
}

#[test]
fn switches_start_as_the_configuration_says() {
    let source = StaticEnv::new().file(
        "herdsman.toml",
        r#"
        [layers]
        dedup = false
        [classes.live]
        paths = ["/live"]
        layers = { dedup = true, cache = false }
        "#,
    );
    let config = Config::load_from(Environment::Production, &source).unwrap();
    let switches = Switches::from_config(&config);
    assert!(switches.is_on(LayerName::Dedup, &class("live")));
    assert!(!switches.is_on(LayerName::Cache, &class("live")));
    assert!(!switches.is_on(LayerName::Dedup, &Class::default()));
    assert!(switches.is_on(LayerName::Cache, &Class::default()));

    let list = switches.list();
    assert_eq!(list.len(), 2 * LayerName::ALL.len());
    let live_cache = list
        .iter()
        .find(|s| s.class == "live" && s.layer == LayerName::Cache)
        .unwrap();
    assert!(!live_cache.on && !live_cache.effective);
    switches.set_all(false);
    assert!(switches.list().iter().all(|s| !s.effective));
    assert!(switches
        .list()
        .iter()
        .any(|s| s.on && s.layer == LayerName::Breaker));
}

#[test]
fn flips_are_counted_once_per_change_with_layer_and_endpoint() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let switches = Switches::new(["a"]);
    metrics::with_local_recorder(&recorder, || {
        switches.set(LayerName::Cache, &class("a"), false).unwrap();
        switches.set(LayerName::Cache, &class("a"), false).unwrap(); // no change
        switches.set(LayerName::Cache, &class("a"), true).unwrap();
        switches.set_all(false);
        switches.set_all(false); // no change
    });
    let counts: HashMap<(String, String), u64> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "herdsman_switch_flips_total")
        .map(|(key, _, _, value)| {
            let label = |name: &str| {
                key.key()
                    .labels()
                    .find(|l| l.key() == name)
                    .unwrap()
                    .value()
                    .to_owned()
            };
            let DebugValue::Counter(n) = value else {
                panic!("not a counter")
            };
            ((label("layer"), label("endpoint")), n)
        })
        .collect();
    assert_eq!(counts.get(&("cache".into(), "a".into())), Some(&2));
    assert_eq!(counts.get(&("stack".into(), "*".into())), Some(&1));
    assert_eq!(counts.len(), 2);
}

/// Counts every call the upstream sees, by request id.
#[derive(Clone, Default)]
struct Upstream {
    calls: Arc<Mutex<HashMap<u64, u32>>>,
}

impl Upstream {
    fn service(
        &self,
    ) -> impl Service<u64, Response = u64, Error = Infallible, Future: Send> + Clone + Send {
        let calls = self.calls.clone();
        service_fn(move |id: u64| {
            *calls.lock().unwrap().entry(id).or_default() += 1;
            async move {
                tokio::task::yield_now().await;
                Ok::<_, Infallible>(id * 10)
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipping_mid_traffic_loses_and_doubles_no_request() {
    const TASKS: u64 = 8;
    const PER_TASK: u64 = 500;
    let upstream = Upstream::default();
    let switches = Switches::new(["a"]);
    let switch = switches.switch(LayerName::Dedup, &class("a"));
    // Requests on the coordinated path are tagged, to show both paths ran.
    let coordinated = Arc::new(AtomicU64::new(0));
    let tag = coordinated.clone();
    let svc = SwitchedLayer::new(
        DedupLayer::new(move |id: &u64| {
            tag.fetch_add(1, Ordering::Relaxed);
            Some(Key::from(*id))
        }),
        switch,
    )
    .layer(upstream.service());

    let done = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (switches, done) = (switches.clone(), done.clone());
        tokio::spawn(async move {
            let mut on = true;
            let mut flips = 0u32;
            while !done.load(Ordering::Relaxed) || flips < 4 {
                on = !on;
                switches.set(LayerName::Dedup, &class("a"), on).unwrap();
                flips += 1;
                tokio::task::yield_now().await;
            }
        })
    };
    let callers: Vec<_> = (0..TASKS)
        .map(|t| {
            let svc = svc.clone();
            tokio::spawn(async move {
                for i in 0..PER_TASK {
                    let id = t * PER_TASK + i;
                    let response = svc.clone().oneshot(id).await.unwrap();
                    assert_eq!(response, id * 10, "each caller gets its own answer");
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    flipper.await.unwrap();

    let calls = upstream.calls.lock().unwrap();
    assert_eq!(calls.len() as u64, TASKS * PER_TASK, "no request lost");
    assert!(calls.values().all(|&n| n == 1), "no request doubled");
    let via_stack = coordinated.load(Ordering::Relaxed);
    assert!(
        0 < via_stack && via_stack < TASKS * PER_TASK,
        "both paths carried traffic: {via_stack}"
    );
}

#[tokio::test]
async fn a_switched_off_layer_is_bypassed_on_the_next_request() {
    let upstream = Upstream::default();
    let switches = Switches::new(["a"]);
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    let mut svc = SwitchedLayer::new(
        DedupLayer::new(move |id: &u64| {
            counter.fetch_add(1, Ordering::Relaxed);
            Some(Key::from(*id))
        }),
        switches.switch(LayerName::Dedup, &class("a")),
    )
    .layer(upstream.service());
    svc.ready().await.unwrap().call(1).await.unwrap();
    assert_eq!(seen.load(Ordering::Relaxed), 1);
    switches.set(LayerName::Dedup, &class("a"), false).unwrap();
    svc.ready().await.unwrap().call(2).await.unwrap();
    assert_eq!(seen.load(Ordering::Relaxed), 1, "the layer was skipped");
    switches.set_all(true);
    switches.set(LayerName::Dedup, &class("a"), true).unwrap();
    svc.ready().await.unwrap().call(3).await.unwrap();
    assert_eq!(seen.load(Ordering::Relaxed), 2);
}

#[test]
fn a_pair_of_gates_admits_when_both_do() {
    let on = Switch::fixed(true);
    let off = Switch::fixed(false);
    let even = |n: &u64| n % 2 == 0;
    assert!((on.clone(), even).admit(&2));
    assert!(!(on, even).admit(&3));
    assert!(!(off, even).admit(&2));
}

// ---- rollout ----

fn request(headers: &[(&str, &str)]) -> http::Request<()> {
    let mut builder = http::Request::get("/api/active-users");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap()
}

#[test]
fn rollout_identity_comes_from_credentials_or_the_configured_header() {
    let by_auth = Rollout::new(50);
    let alice = request(&[("authorization", "Bearer alice")]);
    let bob = request(&[("authorization", "Bearer bob")]);
    assert_ne!(by_auth.identity(&alice), by_auth.identity(&bob));
    assert_eq!(by_auth.identity(&request(&[])), None);
    assert!(
        !by_auth.admits_request(&request(&[])),
        "no identity, not 100 %"
    );
    assert!(Rollout::everyone().admits_request(&request(&[])));

    let by_header = Rollout::new(50).with_identity_header(http::HeaderName::from_static("x-user"));
    let tagged = request(&[("x-user", "u1"), ("authorization", "Bearer alice")]);
    assert_eq!(by_header.identity(&tagged).as_deref(), Some(&b"u1"[..]));
    assert_eq!(by_header.identity(&alice), None);
}

#[test]
fn the_allow_list_admits_by_identity_or_fingerprint() {
    let alice = request(&[("authorization", "Bearer alice")]);
    let identity = Rollout::new(0).identity(&alice).unwrap();
    let rollout = Rollout::new(0).with_allow([Rollout::fingerprint(&identity)]);
    assert!(rollout.admits_request(&alice));
    assert!(!rollout.admits_request(&request(&[("authorization", "Bearer bob")])));

    let by_header = Rollout::new(0)
        .with_identity_header(http::HeaderName::from_static("x-user"))
        .with_allow(["u1"]);
    assert!(by_header.admits_request(&request(&[("x-user", "u1")])));
    assert!(!by_header.admits_request(&request(&[("x-user", "u2")])));
}

#[test]
fn the_stack_switch_and_a_rollout_gate_http_requests_together() {
    let switches = Switches::new(["a"]);
    let gate = (
        switches.stack(),
        Rollout::new(0)
            .with_identity_header(http::HeaderName::from_static("x-user"))
            .with_allow(["u1"]),
    );
    assert!(gate.admit(&request(&[("x-user", "u1")])));
    assert!(!gate.admit(&request(&[("x-user", "u2")])));
    switches.set_all(false);
    assert!(!gate.admit(&request(&[("x-user", "u1")])));
}

#[test]
fn rollout_settings_build_the_rollout() {
    let source = StaticEnv::new().file(
        "herdsman.toml",
        "[rollout]\npercent = 0\nallow = [\"u1\"]\nidentity_header = \"X-User\"",
    );
    let config = Config::load_from(Environment::Production, &source).unwrap();
    let rollout = Rollout::from_settings(&config.rollout);
    assert_eq!(rollout.percent(), 0);
    assert!(rollout.admits_request(&request(&[("x-user", "u1")])));
    assert!(!rollout.admits_request(&request(&[("x-user", "u2")])));
}

#[test]
fn buckets_are_pinned_across_releases() {
    // Changing the hash would move callers in and out of a rollout.
    let buckets: Vec<u8> = ["alice", "bob", "carol", ""]
        .iter()
        .map(|id| Rollout::bucket(id.as_bytes()))
        .collect();
    assert_eq!(buckets, PINNED_BUCKETS);
}

const PINNED_BUCKETS: [u8; 4] = [36, 52, 38, 42];

proptest! {
    #[test]
    fn a_caller_gets_the_same_answer_from_every_rollout_built_alike(
        identity in proptest::collection::vec(any::<u8>(), 0..64),
        percent in 0u8..=100,
    ) {
        let a = Rollout::new(percent);
        let b = Rollout::new(percent).with_allow(["someone-else"]);
        prop_assert_eq!(a.admits(Some(&identity)), b.admits(Some(&identity)));
        prop_assert_eq!(a.admits(Some(&identity)), a.clone().admits(Some(&identity)));
        prop_assert!(Rollout::bucket(&identity) < 100);
    }

    #[test]
    fn raising_the_percentage_only_adds_callers(
        identity in proptest::collection::vec(any::<u8>(), 0..64),
        low in 0u8..=100,
        raise in 0u8..=100,
    ) {
        let high = low.saturating_add(raise).min(100);
        if Rollout::new(low).admits(Some(&identity)) {
            prop_assert!(Rollout::new(high).admits(Some(&identity)));
        }
    }

    #[test]
    fn the_share_admitted_is_close_to_the_percentage(
        percent in 0u8..=100,
        seed in any::<u64>(),
    ) {
        const CALLERS: u64 = 4_000;
        let rollout = Rollout::new(percent);
        let admitted = (0..CALLERS)
            .filter(|i| rollout.admits(Some(format!("user-{seed}-{i}").as_bytes())))
            .count() as f64;
        let share = admitted / CALLERS as f64 * 100.0;
        // Binomial: 4 standard deviations at p = 0.5 is 3.2 points.
        prop_assert!((share - f64::from(percent)).abs() <= 3.5, "{} % admitted for {} %", share, percent);
    }
}

#[test]
fn switch_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Switches>();
    assert_send_sync::<Switch>();
    assert_send_sync::<Rollout>();
    assert_send_sync::<herdsman::switch::UnknownSwitch>();
}
