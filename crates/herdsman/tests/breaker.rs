//! Behaviour of the Breaker layer, paused time.

mod support;

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use herdsman::{
    breaker::{
        BreakerConfig, BreakerEvent, BreakerLayer, BreakerOpen, BreakerState, ProbeTimedOut,
        Verdict,
    },
    class::Class,
    error::find,
    BoxError,
};
use proptest::prelude::*;
use support::Calls;
use tokio::time;
use tower::{Layer, Service, ServiceExt};

/// What the upstream does with the next call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    Ok,
    Fail,
    /// Answers Ok after this many milliseconds.
    Slow(u64),
    Hang,
}

/// An upstream told call by call what to do; counts calls. Requests are
/// class names.
#[derive(Clone)]
struct Upstream {
    calls: Calls,
    act: Arc<std::sync::Mutex<Act>>,
}

impl Upstream {
    fn new() -> Self {
        Upstream {
            calls: Calls::default(),
            act: Arc::new(std::sync::Mutex::new(Act::Ok)),
        }
    }

    fn set(&self, act: Act) {
        *self.act.lock().unwrap() = act;
    }

    fn calls(&self) -> usize {
        self.calls.get()
    }
}

impl Service<&'static str> for Upstream {
    type Response = &'static str;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<&'static str, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: &'static str) -> Self::Future {
        self.calls.next();
        let act = *self.act.lock().unwrap();
        Box::pin(async move {
            match act {
                Act::Ok => Ok("ok"),
                Act::Fail => Err("upstream failed".into()),
                Act::Slow(ms) => {
                    time::sleep(Duration::from_millis(ms)).await;
                    Ok("slow")
                }
                Act::Hang => std::future::pending().await,
            }
        })
    }
}

fn config() -> BreakerConfig {
    BreakerConfig {
        jitter: 0.0,
        ..BreakerConfig::default()
    }
}

fn by_name(req: &&'static str) -> Class {
    Class::new(req)
}

type Layer_ = BreakerLayer<fn(&&'static str) -> Class>;

fn layer(config: BreakerConfig) -> Layer_ {
    BreakerLayer::new()
        .with_config(config)
        .with_classifier(by_name as fn(&&'static str) -> Class)
}

async fn call(
    svc: &mut impl Service<&'static str, Response = &'static str, Error = BoxError>,
    req: &'static str,
) -> Result<&'static str, BoxError> {
    svc.ready().await?.call(req).await
}

fn is_open(result: &Result<&'static str, BoxError>) -> bool {
    matches!(result, Err(err) if find::<BreakerOpen>(&**err).is_some())
}

fn a() -> Class {
    Class::new("a")
}

#[tokio::test(start_paused = true)]
async fn three_failures_in_a_row_open_the_breaker_by_default() {
    let upstream = Upstream::new();
    let layer = layer(config());
    let mut svc = layer.layer(upstream.clone());
    upstream.set(Act::Fail);
    for _ in 0..2 {
        assert!(!is_open(&call(&mut svc, "a").await));
    }
    assert_eq!(layer.handle().state(&a()), BreakerState::Closed);
    assert!(!is_open(&call(&mut svc, "a").await));
    assert_eq!(layer.handle().state(&a()), BreakerState::Open);

    let rejected = call(&mut svc, "a").await;
    assert!(is_open(&rejected));
    let open = find::<BreakerOpen>(&*rejected.unwrap_err())
        .unwrap()
        .clone();
    assert_eq!(open.retry_after(), Some(Duration::from_secs(5)));
    assert_eq!(open.class(), &a());
    assert_eq!(
        upstream.calls(),
        3,
        "rejected calls never reach the upstream"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failure_rate_exactly_at_the_threshold_opens_the_breaker() {
    let upstream = Upstream::new();
    let cfg = BreakerConfig {
        consecutive_failures: None,
        window: 10,
        minimum_calls: 6,
        failure_rate: 0.5,
        ..config()
    };
    let layer = layer(cfg);
    let mut svc = layer.layer(upstream.clone());
    for (i, act) in [Act::Fail, Act::Ok, Act::Fail, Act::Ok, Act::Fail]
        .into_iter()
        .enumerate()
    {
        upstream.set(act);
        call(&mut svc, "a").await.ok();
        assert_eq!(
            layer.handle().state(&a()),
            BreakerState::Closed,
            "call {i}: under the minimum"
        );
    }
    upstream.set(Act::Ok);
    call(&mut svc, "a").await.unwrap(); // 3 of 6 = 0.5, but a success never trips
    assert_eq!(layer.handle().state(&a()), BreakerState::Closed);
    upstream.set(Act::Fail);
    call(&mut svc, "a").await.ok(); // 4 of 7 > 0.5
    assert_eq!(layer.handle().state(&a()), BreakerState::Open);

    // Exactly at the threshold: 3 failures of 6, the last one a failure.
    let layer = self::layer(cfg);
    let mut svc = layer.layer(upstream.clone());
    for act in [Act::Ok, Act::Fail, Act::Ok, Act::Fail, Act::Ok, Act::Fail] {
        upstream.set(act);
        call(&mut svc, "a").await.ok();
    }
    assert_eq!(layer.handle().state(&a()), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_small_minimum_trips_on_the_first_failure() {
    let upstream = Upstream::new();
    let cfg = BreakerConfig {
        consecutive_failures: None,
        minimum_calls: 1,
        failure_rate: 1.0,
        ..config()
    };
    let layer = layer(cfg);
    let mut svc = layer.layer(upstream.clone());
    upstream.set(Act::Fail);
    call(&mut svc, "a").await.ok();
    assert_eq!(layer.handle().state(&a()), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn handle_stats_list_every_class_by_name_and_find_one() {
    let upstream = Upstream::new();
    let layer = layer(config());
    let mut svc = layer.layer(upstream.clone());
    call(&mut svc, "b").await.unwrap();
    upstream.set(Act::Fail);
    call(&mut svc, "a").await.ok();
    layer.handle().force_open(&Class::new("c"));

    let stats = layer.handle().stats();
    let names: Vec<_> = stats.classes.iter().map(|c| c.class.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    let a = stats.class("a").expect("a's breaker exists");
    assert_eq!((a.calls_in_window, a.failures_in_window), (1, 1));
    assert_eq!(stats.class("b").map(|b| b.failures_in_window), Some(0));
    assert_eq!(
        stats.class("c").map(|c| c.state),
        Some(BreakerState::ForcedOpen)
    );
    assert_eq!(stats.class("d"), None);
}

#[tokio::test(start_paused = true)]
async fn old_outcomes_leave_the_window() {
    let upstream = Upstream::new();
    let cfg = BreakerConfig {
        consecutive_failures: None,
        window: 4,
        minimum_calls: 4,
        failure_rate: 0.5,
        ..config()
    };
    let layer = layer(cfg);
    let mut svc = layer.layer(upstream.clone());
    for act in [Act::Fail, Act::Ok, Act::Ok, Act::Ok, Act::Ok, Act::Ok] {
        upstream.set(act);
        call(&mut svc, "a").await.ok();
    }
    let stats = layer.handle().stats().class("a").cloned().unwrap();
    assert_eq!((stats.calls_in_window, stats.failures_in_window), (4, 0));
    upstream.set(Act::Fail);
    call(&mut svc, "a").await.ok(); // 1 of 4: the first failure has left
    assert_eq!(layer.handle().state(&a()), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_open_the_breaker_and_exactly_the_duration_counts_as_slow() {
    let upstream = Upstream::new();
    let cfg = BreakerConfig {
        consecutive_failures: None,
        minimum_calls: 2,
        slow_call_duration: Some(Duration::from_millis(100)),
        slow_call_rate: 1.0,
        ..config()
    };
    let layer = layer(cfg);
    let mut svc = layer.layer(upstream.clone());
    upstream.set(Act::Slow(99));
    call(&mut svc, "a").await.unwrap();
    upstream.set(Act::Slow(100));
    call(&mut svc, "a").await.unwrap();
    assert_eq!(
        layer
            .handle()
            .stats()
            .class("a")
            .cloned()
            .unwrap()
            .slow_in_window,
        1
    );
    assert_eq!(
        layer.handle().state(&a()),
        BreakerState::Closed,
        "1 of 2 slow"
    );

    let layer = self::layer(cfg);
    let mut svc = layer.layer(upstream.clone());
    upstream.set(Act::Slow(100));
    call(&mut svc, "a").await.unwrap();
    call(&mut svc, "a").await.unwrap();
    assert_eq!(
        layer.handle().state(&a()),
        BreakerState::Open,
        "2 of 2 slow"
    );
}

async fn open(
    layer: &Layer_,
    svc: &mut impl Service<&'static str, Response = &'static str, Error = BoxError>,
    upstream: &Upstream,
) {
    upstream.set(Act::Fail);
    while layer.handle().state(&a()) != BreakerState::Open {
        call(svc, "a").await.ok();
    }
}

#[tokio::test(start_paused = true)]
async fn after_the_open_duration_one_probe_closes_the_breaker() {
    let upstream = Upstream::new();
    let layer = layer(config());
    let mut svc = layer.layer(upstream.clone());
    open(&layer, &mut svc, &upstream).await;

    time::advance(Duration::from_millis(4_999)).await;
    assert!(is_open(&call(&mut svc, "a").await));
    time::advance(Duration::from_millis(1)).await;
    upstream.set(Act::Ok);
    assert_eq!(call(&mut svc, "a").await.unwrap(), "ok");
    assert_eq!(layer.handle().state(&a()), BreakerState::Closed);
    let stats = layer.handle().stats().class("a").cloned().unwrap();
    assert_eq!(
        (stats.calls_in_window, stats.trips),
        (0, 1),
        "the window starts empty"
    );
}

#[tokio::test(start_paused = true)]
async fn failed_probes_reopen_for_longer_up_to_the_cap() {
    let upstream = Upstream::new();
    let cfg = BreakerConfig {
        open_duration: Duration::from_secs(5),
        backoff: 2.0,
        max_open_duration: Duration::from_secs(15),
        ..config()
    };
    let layer = layer(cfg);
    let mut svc = layer.layer(upstream.clone());
    open(&layer, &mut svc, &upstream).await;
    for expected in [5, 10, 15, 15] {
        let err = call(&mut svc, "a").await.unwrap_err();
        let retry = find::<BreakerOpen>(&*err).unwrap().retry_after().unwrap();
        assert_eq!(retry, Duration::from_secs(expected));
        time::advance(retry).await;
        // The probe fails: open again, for longer.
        assert!(!is_open(&call(&mut svc, "a").await));
        assert_eq!(layer.handle().state(&a()), BreakerState::Open);
    }
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_only_the_probe_limit_through_many_clones() {
    let upstream = Upstream::new();
    let cfg = BreakerConfig {
        half_open_probes: 2,
        ..config()
    };
    let layer = layer(cfg);
    let mut svc = layer.layer(upstream.clone());
    open(&layer, &mut svc, &upstream).await;
    time::advance(Duration::from_secs(5)).await;
    let before = upstream.calls();
    upstream.set(Act::Slow(1_000));

    let tasks: Vec<_> = (0..50)
        .map(|_| tokio::spawn(layer.layer(upstream.clone()).oneshot("a")))
        .collect();
    let mut rejected = 0;
    for task in tasks {
        if is_open(&task.await.unwrap()) {
            rejected += 1;
        }
    }
    assert_eq!(upstream.calls() - before, 2);
    assert_eq!(rejected, 48);
    assert_eq!(
        layer.handle().state(&a()),
        BreakerState::Closed,
        "two successes close it"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_returns_its_permit() {
    let upstream = Upstream::new();
    let layer = layer(config());
    let mut svc = layer.layer(upstream.clone());
    open(&layer, &mut svc, &upstream).await;
    time::advance(Duration::from_secs(5)).await;

    upstream.set(Act::Hang);
    let probe = svc.ready().await.unwrap().call("a");
    assert!(is_open(&call(&mut svc, "a").await), "the permit is taken");
    drop(probe);
    upstream.set(Act::Ok);
    assert_eq!(
        call(&mut svc, "a").await.unwrap(),
        "ok",
        "the permit came back"
    );
    assert_eq!(layer.handle().state(&a()), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_hung_probe_times_out_as_a_failure() {
    let upstream = Upstream::new();
    let cfg = BreakerConfig {
        probe_timeout: Duration::from_secs(2),
        ..config()
    };
    let layer = layer(cfg);
    let mut svc = layer.layer(upstream.clone());
    open(&layer, &mut svc, &upstream).await;
    time::advance(Duration::from_secs(5)).await;

    upstream.set(Act::Hang);
    let err = call(&mut svc, "a").await.unwrap_err();
    assert_eq!(
        find::<ProbeTimedOut>(&*err).unwrap().after(),
        Duration::from_secs(2)
    );
    assert_eq!(layer.handle().state(&a()), BreakerState::Open);
    assert_eq!(layer.handle().stats().class("a").cloned().unwrap().trips, 2);
}

#[tokio::test(start_paused = true)]
async fn breakers_can_be_forced_open_disabled_and_reset_by_hand() {
    let upstream = Upstream::new();
    let layer = layer(config());
    let mut svc = layer.layer(upstream.clone());
    let handle = layer.handle();

    handle.force_open(&a());
    let err = call(&mut svc, "a").await.unwrap_err();
    assert_eq!(find::<BreakerOpen>(&*err).unwrap().retry_after(), None);
    time::advance(Duration::from_secs(3600)).await;
    assert!(
        is_open(&call(&mut svc, "a").await),
        "forced open stays open"
    );

    handle.disable(&a());
    upstream.set(Act::Fail);
    for _ in 0..10 {
        assert!(!is_open(&call(&mut svc, "a").await));
    }
    assert_eq!(handle.state(&a()), BreakerState::Disabled);

    handle.reset(&a());
    assert_eq!(handle.state(&a()), BreakerState::Closed);
    assert_eq!(
        handle.stats().class("a").cloned().unwrap().calls_in_window,
        0
    );
}

#[tokio::test(start_paused = true)]
async fn classes_have_their_own_breakers() {
    let upstream = Upstream::new();
    let layer = layer(config());
    let mut svc = layer.layer(upstream.clone());
    open(&layer, &mut svc, &upstream).await;
    upstream.set(Act::Ok);
    assert_eq!(call(&mut svc, "b").await.unwrap(), "ok");
    assert!(is_open(&call(&mut svc, "a").await));
}

#[tokio::test(start_paused = true)]
async fn a_failure_classifier_decides_what_counts() {
    let upstream = Upstream::new();
    // Here failures are successes: the breaker never opens.
    let layer = layer(config())
        .with_failure_classifier(|_: &Result<&'static str, BoxError>| Verdict::Success);
    let mut svc = layer.layer(upstream.clone());
    upstream.set(Act::Fail);
    for _ in 0..10 {
        call(&mut svc, "a").await.ok();
    }
    assert_eq!(layer.handle().state(&a()), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn an_inner_breakers_rejections_are_not_upstream_failures() {
    let upstream = Upstream::new();
    let inner = layer(config());
    let outer = layer(config());
    let mut svc = outer.layer(inner.layer(upstream.clone()));
    inner.handle().force_open(&a());
    for _ in 0..10 {
        assert!(is_open(&call(&mut svc, "a").await));
    }
    assert_eq!(outer.handle().state(&a()), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn transitions_and_rejections_are_published() {
    let upstream = Upstream::new();
    let layer = layer(config());
    let mut events = layer.handle().subscribe();
    let mut svc = layer.layer(upstream.clone());
    open(&layer, &mut svc, &upstream).await;
    call(&mut svc, "a").await.ok();

    let transition = events.recv().await.unwrap();
    assert_eq!(
        transition,
        BreakerEvent::Transition {
            class: a(),
            from: BreakerState::Closed,
            to: BreakerState::Open
        }
    );
    assert_eq!(
        events.recv().await.unwrap(),
        BreakerEvent::Rejected { class: a() }
    );
}

#[test]
fn the_state_gauge_moves_to_the_new_state_and_zeroes_the_old() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let layer = layer(config());
    metrics::with_local_recorder(&recorder, || {
        // Registers the breaker's metric handles with this recorder.
        layer.handle().reset(&a());
        layer.handle().force_open(&a());
    });
    let gauges: Vec<(String, f64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "herdsman_breaker_state")
        .map(|(key, _, _, value)| {
            let state = key
                .key()
                .labels()
                .find(|l| l.key() == "state")
                .unwrap()
                .value()
                .to_string();
            let DebugValue::Gauge(v) = value else {
                panic!("not a gauge")
            };
            (state, v.into_inner())
        })
        .collect();
    let value = |s: &str| gauges.iter().find(|(state, _)| state == s).map(|(_, v)| *v);
    assert_eq!(value("forced_open"), Some(1.0));
    assert_eq!(
        value("closed"),
        Some(0.0),
        "the old state's series is set back to 0"
    );
    assert_eq!(value("open"), Some(0.0));
}

#[tokio::test(start_paused = true)]
async fn the_set_of_breakers_is_bounded_and_drops_idle_ones() {
    let upstream = Upstream::new();
    let layer = layer(config()).with_max_circuits(2);
    let mut svc = layer.layer(upstream.clone());
    for name in ["a", "b", "c", "d", "e"] {
        call(&mut svc, name).await.unwrap();
    }
    assert!(
        layer.handle().stats().classes.len() <= 3,
        "{:?}",
        layer.handle().stats().classes
    );
}

// A reference model of the state machine, run against random sequences.

#[derive(Debug, Clone, Copy)]
enum Step {
    Call(bool),
    Advance(u64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Model {
    Closed,
    Open { until: u64, trips: u32 },
    HalfOpen { trips: u32 },
}

struct Reference {
    state: Model,
    window: Vec<bool>,
    consecutive: u32,
    now: u64,
}

const WINDOW: usize = 6;
const MINIMUM: usize = 3;
const OPEN_SECS: u64 = 10;
const CAP_SECS: u64 = 40;

impl Reference {
    fn open(&mut self, trips: u32) {
        let secs = (OPEN_SECS << (trips - 1).min(10)).min(CAP_SECS);
        self.state = Model::Open {
            until: self.now + secs * 1000,
            trips,
        };
    }

    /// Returns whether the call reached the upstream.
    fn call(&mut self, failure: bool) -> bool {
        if let Model::Open { until, trips } = self.state {
            if self.now < until {
                return false;
            }
            self.state = Model::HalfOpen { trips };
        }
        match self.state {
            Model::HalfOpen { trips } => {
                if failure {
                    self.open(trips + 1);
                } else {
                    self.state = Model::Closed;
                    self.window.clear();
                    self.consecutive = 0;
                }
            }
            Model::Closed => {
                self.window.push(failure);
                if self.window.len() > WINDOW {
                    self.window.remove(0);
                }
                self.consecutive = if failure { self.consecutive + 1 } else { 0 };
                let failures = self.window.iter().filter(|f| **f).count();
                let rate_trips = self.window.len() >= MINIMUM && failures * 2 >= self.window.len();
                if failure && (self.consecutive >= 3 || rate_trips) {
                    self.open(1);
                }
            }
            Model::Open { .. } => unreachable!(),
        }
        true
    }

    fn public(&self) -> BreakerState {
        match self.state {
            Model::Closed => BreakerState::Closed,
            Model::Open { .. } => BreakerState::Open,
            Model::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => any::<bool>().prop_map(Step::Call),
        1 => (0u64..25_000).prop_map(Step::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_breaker_follows_a_reference_model(steps in prop::collection::vec(step(), 1..80)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        runtime.block_on(async move {
            let cfg = BreakerConfig {
                window: WINDOW as u32,
                minimum_calls: MINIMUM as u32,
                failure_rate: 0.5,
                consecutive_failures: Some(3),
                open_duration: Duration::from_secs(OPEN_SECS),
                backoff: 2.0,
                max_open_duration: Duration::from_secs(CAP_SECS),
                jitter: 0.0,
                half_open_probes: 1,
                ..BreakerConfig::default()
            };
            let upstream = Upstream::new();
            let layer = layer(cfg);
            let mut svc = layer.layer(upstream.clone());
            let mut model = Reference { state: Model::Closed, window: Vec::new(), consecutive: 0, now: 0 };
            for step in steps {
                match step {
                    Step::Advance(ms) => {
                        time::advance(Duration::from_millis(ms)).await;
                        model.now += ms;
                    }
                    Step::Call(failure) => {
                        upstream.set(if failure { Act::Fail } else { Act::Ok });
                        let before = upstream.calls();
                        call(&mut svc, "a").await.ok();
                        let reached = upstream.calls() > before;
                        prop_assert_eq!(reached, model.call(failure), "{:?}", model.state);
                    }
                }
                // Open and "open but waiting to half-open" look the same from outside.
                let actual = layer.handle().state(&a());
                prop_assert_eq!(actual, model.public(), "{:?}", model.state);
            }
            Ok(())
        })?;
    }
}

#[test]
fn infallible_services_compose() {
    let svc =
        BreakerLayer::new().layer(tower::service_fn(|_: ()| async { Ok::<_, Infallible>(()) }));
    fn is_service<S: Service<()>>(_: &S) {}
    is_service(&svc);
}

#[tokio::test(start_paused = true)]
async fn a_time_window_counts_the_calls_of_its_span_only() {
    let upstream = Upstream::new();
    let cfg = BreakerConfig {
        time_window: Some(Duration::from_secs(10)),
        consecutive_failures: None,
        minimum_calls: 4,
        failure_rate: 0.5,
        ..config()
    };
    let layer = layer(cfg);
    let mut svc = layer.layer(upstream.clone());
    upstream.set(Act::Fail);
    call(&mut svc, "a").await.ok();
    call(&mut svc, "a").await.ok();
    upstream.set(Act::Ok);
    call(&mut svc, "a").await.ok();
    assert_eq!(
        layer
            .handle()
            .stats()
            .class("a")
            .cloned()
            .unwrap()
            .failures_in_window,
        2
    );

    // The two failures age out of the 10 s window.
    time::advance(Duration::from_secs(11)).await;
    assert_eq!(
        layer
            .handle()
            .stats()
            .class("a")
            .cloned()
            .unwrap()
            .calls_in_window,
        0
    );
    for _ in 0..3 {
        call(&mut svc, "a").await.ok();
    }
    upstream.set(Act::Fail);
    call(&mut svc, "a").await.ok(); // 1 of 4
    assert_eq!(layer.handle().state(&a()), BreakerState::Closed);
    call(&mut svc, "a").await.ok();
    call(&mut svc, "a").await.ok(); // 3 of 6
    assert_eq!(layer.handle().state(&a()), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_time_window_holds_its_memory_fixed_under_any_traffic() {
    let upstream = Upstream::new();
    let cfg = BreakerConfig {
        time_window: Some(Duration::from_secs(1)),
        consecutive_failures: None,
        ..config()
    };
    let layer = layer(cfg);
    let mut svc = layer.layer(upstream.clone());
    // 20,000 calls spread over 20 s: the window only ever holds the last
    // second's, in its ten fixed buckets.
    for i in 0..20_000u64 {
        if i % 1_000 == 0 {
            time::advance(Duration::from_secs(1)).await;
        }
        call(&mut svc, "a").await.unwrap();
    }
    let stats = layer.handle().stats().class("a").cloned().unwrap();
    assert_eq!(stats.calls_in_window, 1_000);
}

#[tokio::test(start_paused = true)]
async fn a_service_never_keeps_using_a_breaker_dropped_from_the_set() {
    let upstream = Upstream::new();
    let layer = layer(config()).with_max_circuits(1);
    let mut cached = layer.layer(upstream.clone());
    let mut other = layer.layer(upstream.clone());
    call(&mut cached, "a").await.unwrap(); // `cached` now remembers a's breaker
                                           // Two sweeps push the idle breaker of "a" out of the set of one.
    call(&mut other, "b").await.unwrap();
    call(&mut other, "c").await.unwrap();
    call(&mut other, "d").await.unwrap();
    // The operator opens "a": the service must see it, not its stale copy.
    layer.handle().force_open(&a());
    assert!(is_open(&call(&mut cached, "a").await));
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_ends_after_the_breaker_moved_on_does_not_wedge_the_next_half_open() {
    let upstream = Upstream::new();
    let cfg = BreakerConfig {
        half_open_probes: 2,
        probe_timeout: Duration::from_secs(3_600),
        ..config()
    };
    let layer = layer(cfg);
    let mut svc = layer.layer(upstream.clone());
    open(&layer, &mut svc, &upstream).await;
    time::advance(Duration::from_secs(5)).await;

    // Probe A hangs; probe B fails and opens the breaker again.
    upstream.set(Act::Hang);
    let probe_a = svc.ready().await.unwrap().call("a");
    upstream.set(Act::Fail);
    call(&mut svc, "a").await.ok();
    assert_eq!(layer.handle().state(&a()), BreakerState::Open);

    // The next half-open starts with fresh permits; then A's caller leaves.
    time::advance(Duration::from_secs(10)).await;
    upstream.set(Act::Hang);
    let probe_c = svc.ready().await.unwrap().call("a");
    drop(probe_a);
    drop(probe_c);
    upstream.set(Act::Ok);
    assert_eq!(
        call(&mut svc, "a").await.unwrap(),
        "ok",
        "a permit is still there"
    );
    assert_eq!(call(&mut svc, "a").await.unwrap(), "ok");
    assert_eq!(layer.handle().state(&a()), BreakerState::Closed);
}

// ---- shared trips (TripBackend) ----

mod shared_trips {
    use std::sync::Mutex;

    use herdsman::backend::{LocalTrips, TripBackend, TripListener};

    use super::*;

    /// Replicas in one process: what one announces, the others hear at once.
    #[derive(Clone, Default)]
    struct Bus {
        listeners: Arc<Mutex<Vec<(usize, TripListener)>>>,
        announced: Arc<Mutex<Vec<(usize, Class, Duration)>>>,
    }

    /// One replica's end of the bus.
    struct End {
        bus: Bus,
        replica: usize,
    }

    impl Bus {
        fn end(&self, replica: usize) -> End {
            End {
                bus: self.clone(),
                replica,
            }
        }

        fn announced(&self) -> Vec<(usize, Class, Duration)> {
            self.announced.lock().unwrap().clone()
        }

        fn listeners(&self) -> usize {
            self.listeners.lock().unwrap().len()
        }
    }

    impl TripBackend for End {
        fn announce(&self, class: &Class, open_for: Duration) {
            let announced = (self.replica, class.clone(), open_for);
            self.bus.announced.lock().unwrap().push(announced);
            let listeners: Vec<_> = self.bus.listeners.lock().unwrap().clone();
            let mut gone = Vec::new();
            for (i, (replica, listener)) in listeners.iter().enumerate() {
                if *replica != self.replica && !listener(class, open_for) {
                    gone.push(i);
                }
            }
            let mut all = self.bus.listeners.lock().unwrap();
            for i in gone.into_iter().rev() {
                all.remove(i);
            }
        }

        fn listen(&self, listener: TripListener) {
            let mut all = self.bus.listeners.lock().unwrap();
            all.push((self.replica, listener));
        }
    }

    fn replica(bus: &Bus, n: usize) -> (Layer_, Upstream) {
        let layer = layer(config()).with_trip_backend(bus.end(n));
        (layer, Upstream::new())
    }

    #[tokio::test(start_paused = true)]
    async fn a_trip_on_one_replica_opens_the_others_breaker_for_the_time_it_has_left() {
        let bus = Bus::default();
        let (here, up_here) = replica(&bus, 0);
        let (there, up_there) = replica(&bus, 1);
        let mut svc_here = here.layer(up_here.clone());
        let mut svc_there = there.layer(up_there.clone());

        open(&here, &mut svc_here, &up_here).await;
        assert_eq!(bus.announced(), [(0, a(), Duration::from_secs(5))]);
        assert_eq!(there.handle().state(&a()), BreakerState::Open);
        assert_eq!(
            there.handle().state(&Class::new("b")),
            BreakerState::Closed,
            "only that class"
        );

        // The other replica fails fast without a call of its own, until the
        // trip's end ...
        time::advance(Duration::from_secs(2)).await;
        let rejected = call(&mut svc_there, "a").await;
        assert!(is_open(&rejected));
        let open = find::<BreakerOpen>(&*rejected.unwrap_err())
            .unwrap()
            .clone();
        assert_eq!(open.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(up_there.calls(), 0);
        // ... then probes as usual, and closes on its own success.
        time::advance(Duration::from_secs(3)).await;
        assert_eq!(call(&mut svc_there, "a").await.unwrap(), "ok");
        assert_eq!(there.handle().state(&a()), BreakerState::Closed);

        // It never announced the trip it heard, nor counted it as its own.
        assert_eq!(bus.announced().len(), 1, "no echo");
        let stats = there.handle().stats();
        assert_eq!(stats.class("a").unwrap().trips, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_is_a_trip_too_and_a_remote_trip_leaves_a_forced_breaker_alone() {
        let bus = Bus::default();
        let (here, up_here) = replica(&bus, 0);
        let (there, _) = replica(&bus, 1);
        let mut svc_here = here.layer(up_here.clone());
        there.handle().force_open(&Class::new("a"));
        there.handle().disable(&Class::new("b"));

        open(&here, &mut svc_here, &up_here).await;
        time::advance(Duration::from_secs(5)).await;
        // The probe fails: open again, twice as long (the backoff).
        call(&mut svc_here, "a").await.ok();
        assert_eq!(here.handle().state(&a()), BreakerState::Open);
        let announced: Vec<_> = bus.announced().into_iter().map(|(_, _, d)| d).collect();
        assert_eq!(announced, [Duration::from_secs(5), Duration::from_secs(10)]);

        assert_eq!(there.handle().state(&a()), BreakerState::ForcedOpen);
        up_here.set(Act::Fail);
        let mut svc_b = here.layer(up_here.clone());
        for _ in 0..3 {
            call(&mut svc_b, "b").await.ok();
        }
        assert_eq!(here.handle().state(&Class::new("b")), BreakerState::Open);
        assert_eq!(
            there.handle().state(&Class::new("b")),
            BreakerState::Disabled
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_layer_that_is_gone_stops_listening_and_a_rebuilt_one_listens_anew() {
        let bus = Bus::default();
        let (here, up_here) = replica(&bus, 0);
        let there = layer(config()).with_trip_backend(bus.end(1));
        assert_eq!(bus.listeners(), 2);
        // A new setting makes new circuits, which listen; the old ones are
        // dropped and their listener goes with the next trip.
        let there = there.with_max_circuits(16);
        assert_eq!(bus.listeners(), 3);

        let mut svc_here = here.layer(up_here.clone());
        open(&here, &mut svc_here, &up_here).await;
        assert_eq!(there.handle().state(&a()), BreakerState::Open);
        assert_eq!(bus.listeners(), 2);
        drop(there);
        time::advance(Duration::from_secs(5)).await;
        call(&mut svc_here, "a").await.ok();
        assert_eq!(bus.listeners(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_local_default_trips_and_recovers_as_without_a_backend() {
        let layer = layer(config()).with_trip_backend(LocalTrips);
        let upstream = Upstream::new();
        let mut svc = layer.layer(upstream.clone());
        open(&layer, &mut svc, &upstream).await;
        assert!(is_open(&call(&mut svc, "a").await));
        time::advance(Duration::from_secs(5)).await;
        upstream.set(Act::Ok);
        assert_eq!(call(&mut svc, "a").await.unwrap(), "ok");
        assert_eq!(layer.handle().state(&a()), BreakerState::Closed);
    }
}
