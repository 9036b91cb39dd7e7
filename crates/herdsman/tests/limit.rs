//! Behaviour of the Limit layer, driven through `tower::ServiceExt` and the
//! `tower-test` mock with paused tokio time.

mod support;

use std::{
    future::{ready, Future},
    panic::{catch_unwind, AssertUnwindSafe},
    pin::{pin, Pin},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use futures_util::FutureExt;
use herdsman::{
    class::Class,
    error::{find, is_rejection, BoxError, SharedError},
    key::Key,
    limit::{
        ClassLimits, ClassStats, Limit, LimitLayer, LimitStats, Overloaded, RateKey, RateLimited,
        RateRule, TooManyInFlight,
    },
};
use proptest::prelude::*;
use support::{assert_no_request, settle};
use tokio::{sync::oneshot, time};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_test::mock::{self, Handle, Mock};

/// Requests are `"class/caller/..."`.
type Req = &'static str;

fn class_of(req: &Req) -> Class {
    Class::new(req.split('/').next().unwrap_or_default())
}

fn caller_of(req: &Req) -> Option<Key> {
    req.split('/')
        .nth(1)
        .filter(|c| !c.is_empty())
        .map(Key::from)
}

type TestLayer = LimitLayer<fn(&Req) -> Class, fn(&Req) -> Option<Key>>;

fn layer(default: ClassLimits) -> TestLayer {
    LimitLayer::new(default)
        .with_classifier(class_of as fn(&Req) -> Class)
        .with_identity(caller_of as fn(&Req) -> Option<Key>)
}

fn mocked<L: Layer<Mock<Req, Req>>>(layer: &L) -> (L::Service, Handle<Req, Req>) {
    let (mock, handle) = mock::pair::<Req, Req>();
    (layer.layer(mock), handle)
}

/// An upstream that answers at once with the request.
fn echo() -> impl Service<Req, Response = Req, Error = BoxError, Future: Send> + Clone {
    service_fn(|req: Req| ready(Ok::<_, BoxError>(req)))
}

/// Readies `svc` and calls it.
async fn call<S: Service<Req>>(svc: &mut S, req: Req) -> S::Future
where
    S::Error: std::fmt::Debug,
{
    svc.ready().await.unwrap();
    svc.call(req)
}

fn stats<C, I, A>(layer: &LimitLayer<C, I, A>, class: &str) -> ClassStats {
    layer
        .handle()
        .stats()
        .class(class)
        .cloned()
        .expect("the class was seen")
}

fn overloaded(err: &BoxError) -> &Overloaded {
    find::<Overloaded>(&**err).unwrap_or_else(|| panic!("not Overloaded: {err}"))
}

fn rate_limited(err: &BoxError) -> &RateLimited {
    find::<RateLimited>(&**err).unwrap_or_else(|| panic!("not RateLimited: {err}"))
}

// Permits: given back on completion, drop, panic, and never held by the
// service.

#[tokio::test(start_paused = true)]
async fn permits_are_given_back_when_calls_complete_with_or_without_an_error() {
    let layer = layer(ClassLimits::new(1));
    let (mut svc, mut handle) = mocked(&layer);

    let first = tokio::spawn(call(&mut svc, "a/1").await);
    let err = call(&mut svc, "a/2").await.await.unwrap_err();
    assert!(!overloaded(&err).timed_out());

    let (req, respond) = handle.next_request().await.unwrap();
    assert_eq!(req, "a/1");
    respond.send_response("ok");
    assert_eq!(first.await.unwrap().unwrap(), "ok");
    assert_eq!(stats(&layer, "a").in_flight, 0);

    let failing = tokio::spawn(call(&mut svc, "a/3").await);
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_error("upstream down");
    assert!(failing.await.unwrap().is_err());

    let last = tokio::spawn(call(&mut svc, "a/4").await);
    let (req, respond) = handle.next_request().await.unwrap();
    assert_eq!(req, "a/4");
    respond.send_response("ok");
    assert_eq!(last.await.unwrap().unwrap(), "ok");

    let a = stats(&layer, "a");
    assert_eq!((a.admitted, a.rejected_overloaded, a.in_flight), (3, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_permit_is_given_back_when_the_call_completes_even_if_the_future_is_kept() {
    let layer = layer(ClassLimits::new(1));
    let mut svc = layer.layer(echo());

    let mut fut = Box::pin(call(&mut svc, "a/1").await);
    assert_eq!(stats(&layer, "a").in_flight, 1);
    assert_eq!((&mut fut).await.unwrap(), "a/1");
    assert_eq!(stats(&layer, "a").in_flight, 0);
    assert_eq!(call(&mut svc, "a/2").await.await.unwrap(), "a/2");
    drop(fut);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_response_future_gives_its_permit_back() {
    let layer = layer(ClassLimits::new(1));
    let (mut svc, mut handle) = mocked(&layer);

    let first = call(&mut svc, "a/1").await;
    assert_eq!(stats(&layer, "a").in_flight, 1);
    drop(first);
    assert_eq!(stats(&layer, "a").in_flight, 0);
    // The mock took the request at `call`; nobody waits for its answer now.
    let (req, _orphan) = handle.next_request().await.unwrap();
    assert_eq!(req, "a/1");

    let second = tokio::spawn(call(&mut svc, "a/2").await);
    let (req, respond) = handle.next_request().await.unwrap();
    assert_eq!(req, "a/2");
    respond.send_response("ok");
    assert_eq!(second.await.unwrap().unwrap(), "ok");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiter_leaves_the_queue() {
    let layer = layer(ClassLimits::new(1).with_max_queue(1));
    let (mut svc, mut handle) = mocked(&layer);

    let _running = tokio::spawn(call(&mut svc, "a/1").await);
    let waiter = call(&mut svc, "a/2").await;
    assert_eq!(stats(&layer, "a").waiting, 1);
    // The queue (of one) is full.
    let err = call(&mut svc, "a/3").await.await.unwrap_err();
    overloaded(&err);

    drop(waiter);
    assert_eq!(stats(&layer, "a").waiting, 0);
    let waiter = tokio::spawn(call(&mut svc, "a/4").await);
    settle().await;
    assert_eq!(stats(&layer, "a").waiting, 1);

    let (req, respond) = handle.next_request().await.unwrap();
    assert_eq!(req, "a/1");
    respond.send_response("one");
    let (req, respond) = handle.next_request().await.unwrap();
    assert_eq!(req, "a/4", "the dropped waiter is skipped");
    respond.send_response("four");
    assert_eq!(waiter.await.unwrap().unwrap(), "four");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_inner_future_gives_its_permit_back_even_if_the_future_is_kept() {
    let layer = layer(ClassLimits::new(1));
    let mut svc = layer.layer(service_fn(|req: Req| async move {
        if req.ends_with("boom") {
            panic!("inner future panicked");
        }
        Ok::<_, BoxError>(req)
    }));

    let mut fut = pin!(call(&mut svc, "a/boom").await);
    let mut cx = Context::from_waker(Waker::noop());
    let polled = catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)));
    assert!(polled.is_err(), "the panic reaches the caller");
    // The future is still alive, its permit is not.
    assert_eq!(stats(&layer, "a").in_flight, 0);
    assert_eq!(call(&mut svc, "a/2").await.await.unwrap(), "a/2");
}

#[derive(Clone)]
struct PanicInCall;

impl Service<Req> for PanicInCall {
    type Response = Req;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Req, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if req.ends_with("boom") {
            panic!("panic in call");
        }
        ready(Ok(req))
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_the_inner_call_gives_the_permit_back() {
    let layer = layer(ClassLimits::new(1).with_max_queue(1));
    let mut svc = layer.layer(PanicInCall);

    svc.ready().await.unwrap();
    assert!(catch_unwind(AssertUnwindSafe(|| svc.call("a/boom"))).is_err());
    assert_eq!(stats(&layer, "a").in_flight, 0);

    // Also when the call is made by a request that waited for its permit.
    let holder = call(&mut svc, "a/1").await;
    let mut waiter = pin!(call(&mut svc, "a/boom").await);
    drop(holder);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(catch_unwind(AssertUnwindSafe(|| waiter.as_mut().poll(&mut cx))).is_err());
    assert_eq!(stats(&layer, "a").in_flight, 0);
    assert_eq!(call(&mut svc, "a/2").await.await.unwrap(), "a/2");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_service_holds_no_permit_and_its_waiters_carry_on() {
    let layer = layer(ClassLimits::new(1).with_max_queue(1));
    let (mut svc, mut handle) = mocked(&layer);

    // Readiness takes no permit: a service made ready and dropped leaves
    // the class's permit free for the next call.
    let mut ready = svc.clone();
    ready.ready().await.unwrap();
    drop(ready);

    let running = tokio::spawn(call(&mut svc, "a/1").await);
    assert_eq!(stats(&layer, "a").in_flight, 1);
    let waiter = tokio::spawn(call(&mut svc, "a/2").await);
    drop(svc);

    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_response("one");
    let (req, respond) = handle.next_request().await.unwrap();
    assert_eq!(req, "a/2");
    respond.send_response("two");
    assert_eq!(running.await.unwrap().unwrap(), "one");
    assert_eq!(waiter.await.unwrap().unwrap(), "two");
    assert_eq!(stats(&layer, "a").in_flight, 0);
}

// The queue.

#[tokio::test(start_paused = true)]
async fn waiters_are_served_first_come_first_served() {
    let layer = layer(ClassLimits::new(1).with_max_queue(10));
    let (mut svc, mut handle) = mocked(&layer);

    let first = tokio::spawn(call(&mut svc, "a/1").await);
    let waiters = [
        call(&mut svc, "a/2").await,
        call(&mut svc, "a/3").await,
        call(&mut svc, "a/4").await,
    ];
    // Polled first in the reverse order of their calls: the order of the
    // calls is what counts.
    let mut tasks: Vec<_> = waiters.into_iter().rev().map(tokio::spawn).collect();
    tasks.reverse();
    settle().await;
    assert_eq!(stats(&layer, "a").waiting, 3);

    let (req, respond) = handle.next_request().await.unwrap();
    assert_eq!(req, "a/1");
    assert_no_request(&mut handle);
    respond.send_response("a/1");
    for expected in ["a/2", "a/3", "a/4"] {
        let (req, respond) = handle.next_request().await.unwrap();
        assert_eq!(req, expected);
        settle().await;
        assert_no_request(&mut handle);
        respond.send_response(req);
    }
    assert_eq!(first.await.unwrap().unwrap(), "a/1");
    for (task, expected) in tasks.into_iter().zip(["a/2", "a/3", "a/4"]) {
        assert_eq!(task.await.unwrap().unwrap(), expected);
    }
    let a = stats(&layer, "a");
    assert_eq!((a.admitted, a.queued, a.waiting, a.in_flight), (4, 3, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_newcomer_does_not_overtake_waiters() {
    let layer = layer(ClassLimits::new(1).with_max_queue(10));
    let (mut svc, mut handle) = mocked(&layer);

    let first = tokio::spawn(call(&mut svc, "a/1").await);
    let _waiter = tokio::spawn(call(&mut svc, "a/2").await);
    settle().await;
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_response("one");
    // The permit goes straight to the waiter, so a newcomer queues behind it.
    first.await.unwrap().unwrap();
    let _newcomer = tokio::spawn(call(&mut svc, "a/3").await);
    let (req, _respond) = handle.next_request().await.unwrap();
    assert_eq!(req, "a/2");
    settle().await;
    assert_no_request(&mut handle);
    assert_eq!(stats(&layer, "a").waiting, 1);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_turns_requests_away_at_once() {
    let retry_after = Duration::from_secs(3);
    let layer = layer(
        ClassLimits::new(1)
            .with_max_queue(2)
            .with_retry_after(retry_after),
    );
    let (mut svc, _handle) = mocked(&layer);

    let _running = tokio::spawn(call(&mut svc, "a/1").await);
    let _w1 = tokio::spawn(call(&mut svc, "a/2").await);
    let _w2 = tokio::spawn(call(&mut svc, "a/3").await);
    let start = time::Instant::now();
    let err = call(&mut svc, "a/4").await.await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    let err = overloaded(&err);
    assert!(!err.timed_out());
    assert_eq!(err.class(), &Class::new("a"));
    assert_eq!(err.retry_after(), retry_after);
    assert_eq!(
        err.to_string(),
        "endpoint class `a` is overloaded: concurrency limit reached and queue full"
    );
    let a = stats(&layer, "a");
    assert_eq!((a.queued, a.waiting, a.rejected_overloaded), (2, 2, 1));
}

#[tokio::test(start_paused = true)]
async fn a_class_without_a_queue_rejects_at_once_when_full() {
    let layer = layer(ClassLimits::new(2));
    let (mut svc, _handle) = mocked(&layer);

    let _one = tokio::spawn(call(&mut svc, "a/1").await);
    let _two = tokio::spawn(call(&mut svc, "a/2").await);
    let err = call(&mut svc, "a/3").await.await.unwrap_err();
    assert!(!overloaded(&err).timed_out());
    let a = stats(&layer, "a");
    assert_eq!((a.in_flight, a.queued, a.rejected_overloaded), (2, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_is_rejected_after_max_wait_counted_from_its_call() {
    let max_wait = Duration::from_millis(500);
    let layer = layer(
        ClassLimits::new(1)
            .with_max_queue(1)
            .with_max_wait(max_wait),
    );
    let (mut svc, _handle) = mocked(&layer);

    let _running = tokio::spawn(call(&mut svc, "a/1").await);
    let start = time::Instant::now();
    let waiter = call(&mut svc, "a/2").await;
    time::advance(Duration::from_millis(300)).await;
    let err = waiter.await.unwrap_err();
    assert_eq!(start.elapsed(), max_wait);
    let err = overloaded(&err);
    assert!(err.timed_out());
    assert_eq!(
        err.to_string(),
        "endpoint class `a` is overloaded: no permit within 500ms"
    );
    let a = stats(&layer, "a");
    assert_eq!((a.rejected_overloaded, a.timed_out, a.waiting), (1, 1, 0));
}

// Classes.

#[tokio::test(start_paused = true)]
async fn a_saturated_class_does_not_delay_another_class() {
    let layer =
        layer(ClassLimits::new(8)).with_class("slow", ClassLimits::new(1).with_max_queue(4));
    let (mut svc, mut handle) = mocked(&layer);

    let _slow = tokio::spawn(call(&mut svc, "slow/1").await);
    let _queued = tokio::spawn(call(&mut svc, "slow/2").await);
    let (req, _slow_respond) = handle.next_request().await.unwrap();
    assert_eq!(req, "slow/1");

    let start = time::Instant::now();
    let fast = tokio::spawn(call(&mut svc, "fast/1").await);
    let (req, respond) = handle.next_request().await.unwrap();
    assert_eq!(req, "fast/1");
    respond.send_response("fast");
    assert_eq!(fast.await.unwrap().unwrap(), "fast");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(stats(&layer, "slow").waiting, 1);
    assert_eq!(stats(&layer, "fast").in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn classes_without_limits_of_their_own_get_the_default_limits_and_their_own_permits() {
    let layer = layer(ClassLimits::new(1)).with_class("big", ClassLimits::new(3));
    let mut svc = layer.layer(echo());

    // Response futures hold their permits until they complete.
    let mut held = Vec::new();
    for req in ["x/1", "y/1", "default/1", "big/1", "big/2", "big/3"] {
        held.push(call(&mut svc, req).await);
    }
    for req in ["x/2", "y/2", "default/2", "big/4"] {
        let err = call(&mut svc, req).await.await.unwrap_err();
        assert_eq!(overloaded(&err).class(), &class_of(&req));
    }
    let stats = layer.handle().stats();
    let names: Vec<_> = stats.classes.iter().map(|c| c.class.as_str()).collect();
    assert_eq!(names, ["big", "default", "x", "y"]);
    assert!(stats.classes.iter().all(|c| c.rejected_overloaded == 1));
}

#[tokio::test(start_paused = true)]
async fn services_from_one_layer_value_share_their_permits() {
    let layer = layer(ClassLimits::new(1));
    let (mut one, _h1) = mocked(&layer);
    let (mut two, _h2) = mocked(&layer);

    let _running = tokio::spawn(call(&mut one, "a/1").await);
    let err = call(&mut two, "a/2").await.await.unwrap_err();
    overloaded(&err);

    // Another layer value has permits of its own.
    let other = self::layer(ClassLimits::new(1));
    let (mut three, mut h3) = mocked(&other);
    let fut = tokio::spawn(call(&mut three, "a/3").await);
    let (_, respond) = h3.next_request().await.unwrap();
    respond.send_response("three");
    assert_eq!(fut.await.unwrap().unwrap(), "three");
}

#[tokio::test(start_paused = true)]
async fn poll_ready_is_the_inner_services() {
    let layer = layer(ClassLimits::new(1));
    let (mut svc, mut handle) = mocked(&layer);
    handle.allow(0);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_pending());
    handle.allow(1);
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
}

// Rate rules.

#[tokio::test(start_paused = true)]
async fn a_rate_rule_lets_a_burst_through_then_rejects_with_retry_after() {
    let layer = layer(ClassLimits::new(8).with_rate(RateRule::per_second(2)));
    let mut svc = layer.layer(echo());

    assert!(call(&mut svc, "a/1").await.await.is_ok());
    assert!(call(&mut svc, "a/2").await.await.is_ok());
    let err = call(&mut svc, "a/3").await.await.unwrap_err();
    let limited = rate_limited(&err);
    assert_eq!(limited.retry_after(), Duration::from_millis(500));
    assert_eq!(limited.class(), &Class::new("a"));
    assert_eq!(
        limited.to_string(),
        "rate limit of endpoint class `a` exceeded; retry after 500ms"
    );

    time::advance(Duration::from_millis(499)).await;
    assert!(call(&mut svc, "a/4").await.await.is_err());
    time::advance(Duration::from_millis(1)).await;
    assert!(call(&mut svc, "a/5").await.await.is_ok());
    let a = stats(&layer, "a");
    assert_eq!((a.admitted, a.rejected_rate), (3, 2));
}

#[tokio::test(start_paused = true)]
async fn a_burst_straddling_a_window_edge_is_not_let_through_twice() {
    // 10 per minute. A fixed window would let 10 through just before the
    // minute ends and 10 more just after it.
    let layer = layer(ClassLimits::new(100).with_rate(RateRule::per_minute(10)));
    let mut svc = layer.layer(echo());

    async fn burst<S: Service<Req, Error = BoxError>>(svc: &mut S) -> usize {
        let mut passed = 0;
        for _ in 0..10 {
            if call(svc, "a/x").await.await.is_ok() {
                passed += 1;
            }
        }
        passed
    }

    time::advance(Duration::from_millis(59_999)).await;
    assert_eq!(burst(&mut svc).await, 10);
    time::advance(Duration::from_millis(2)).await;
    assert_eq!(burst(&mut svc).await, 0);
    // One request per 6 s comes back.
    time::advance(Duration::from_secs(6)).await;
    assert_eq!(burst(&mut svc).await, 1);
    time::advance(Duration::from_secs(60)).await;
    assert_eq!(burst(&mut svc).await, 10);
}

#[tokio::test(start_paused = true)]
async fn rate_rules_count_by_class_by_caller_or_by_both() {
    let rule = |key| ClassLimits::new(8).with_rate(RateRule::per_minute(1).keyed_by(key));
    let ok = |r: Result<Req, BoxError>| r.is_ok();

    // By class: every caller of a class shares one budget; each class has
    // its own, the classes sharing the default rule included.
    let by_class = layer(rule(RateKey::Class));
    let mut svc = by_class.layer(echo());
    assert!(ok(call(&mut svc, "a/x").await.await));
    assert!(!ok(call(&mut svc, "a/y").await.await));
    assert!(ok(call(&mut svc, "b/x").await.await));

    // By caller: one budget per caller across the classes of the rule.
    let by_caller = layer(rule(RateKey::Identity));
    let mut svc = by_caller.layer(echo());
    assert!(ok(call(&mut svc, "a/x").await.await));
    assert!(!ok(call(&mut svc, "b/x").await.await));
    assert!(ok(call(&mut svc, "a/y").await.await));

    // By both: one budget per caller per class.
    let by_both = layer(rule(RateKey::ClassAndIdentity));
    let mut svc = by_both.layer(echo());
    assert!(ok(call(&mut svc, "a/x").await.await));
    assert!(ok(call(&mut svc, "b/x").await.await));
    assert!(ok(call(&mut svc, "a/y").await.await));
    assert!(!ok(call(&mut svc, "a/x").await.await));

    // A class with a rule of its own counts its requests apart.
    let own = layer(rule(RateKey::Identity)).with_class(
        "c",
        ClassLimits::new(8).with_rate(RateRule::per_minute(1).keyed_by(RateKey::Identity)),
    );
    let mut svc = own.layer(echo());
    assert!(ok(call(&mut svc, "a/x").await.await));
    assert!(ok(call(&mut svc, "c/x").await.await));
    assert!(!ok(call(&mut svc, "c/x").await.await));
}

#[tokio::test(start_paused = true)]
async fn a_class_without_a_concurrency_limit_only_applies_its_rate_rule() {
    let layer = layer(ClassLimits::new(1)).with_class(
        "open",
        ClassLimits::unlimited().with_rate(RateRule::per_minute(100)),
    );
    let mut svc = layer.layer(echo());

    // Response futures would hold permits until they complete.
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(call(&mut svc, "open/x").await);
    }
    let err = call(&mut svc, "open/x").await.await.unwrap_err();
    rate_limited(&err);
    let open = stats(&layer, "open");
    assert_eq!(
        (open.admitted, open.rejected_rate, open.in_flight),
        (100, 1, 0)
    );
    for fut in held {
        assert_eq!(fut.await.unwrap(), "open/x");
    }
}

#[tokio::test(start_paused = true)]
async fn requests_without_an_identity_are_not_counted_by_caller() {
    let layer =
        layer(ClassLimits::new(8).with_rate(RateRule::per_minute(1).keyed_by(RateKey::Identity)));
    let mut svc = layer.layer(echo());
    for _ in 0..5 {
        assert!(call(&mut svc, "a").await.await.is_ok());
    }
    assert_eq!(stats(&layer, "a").rejected_rate, 0);
}

#[tokio::test(start_paused = true)]
async fn a_request_over_its_rate_takes_no_permit_and_no_place_in_the_queue() {
    let layer = layer(
        ClassLimits::new(1)
            .with_max_queue(1)
            .with_rate(RateRule::per_minute(1).keyed_by(RateKey::Identity)),
    );
    let (mut svc, _handle) = mocked(&layer);

    let _running = tokio::spawn(call(&mut svc, "a/x").await);
    let err = call(&mut svc, "a/x").await.await.unwrap_err();
    rate_limited(&err);
    let a = stats(&layer, "a");
    assert_eq!((a.in_flight, a.waiting, a.queued), (1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn an_alert_only_rule_lets_requests_through_and_counts_them() {
    let rule = RateRule::per_minute(20)
        .with_burst(2)
        .keyed_by(RateKey::ClassAndIdentity)
        .alert_only();
    let layer = layer(ClassLimits::new(8).with_rate(rule));
    let mut svc = layer.layer(echo());

    for _ in 0..6 {
        assert!(call(&mut svc, "hooks/h1").await.await.is_ok());
    }
    let hooks = stats(&layer, "hooks");
    assert_eq!(
        (hooks.admitted, hooks.rate_alerts, hooks.rejected_rate),
        (6, 4, 0)
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_alert_only_rule_warns_once_per_key_per_period() {
    // Counted by the layer where it logs: a test subscriber would miss
    // events whose callsite another test thread registered first.

    // The operations plan's alarm: more than 20 requests per minute per hook.
    let rule = RateRule::per_minute(20)
        .keyed_by(RateKey::ClassAndIdentity)
        .alert_only();
    let layer = layer(ClassLimits::new(8).with_rate(rule));
    let mut svc = layer.layer(echo());
    let warned = || stats(&layer, "hooks").rate_warnings;

    for _ in 0..100 {
        assert!(call(&mut svc, "hooks/h1").await.await.is_ok());
    }
    assert_eq!(stats(&layer, "hooks").rate_alerts, 80);
    assert_eq!(warned(), 1, "one warning for the key in this minute");

    for _ in 0..30 {
        assert!(call(&mut svc, "hooks/h2").await.await.is_ok());
    }
    assert_eq!(warned(), 2, "another key, another warning");

    time::advance(Duration::from_secs(30)).await;
    for _ in 0..20 {
        assert!(call(&mut svc, "hooks/h1").await.await.is_ok());
    }
    assert_eq!(warned(), 2, "still the same minute for h1");

    time::advance(Duration::from_secs(30)).await;
    for _ in 0..30 {
        assert!(call(&mut svc, "hooks/h1").await.await.is_ok());
    }
    assert_eq!(warned(), 3, "a new minute, a new warning");
    assert_eq!(stats(&layer, "hooks").rejected_rate, 0);
}

#[tokio::test(start_paused = true)]
async fn idle_rate_keys_are_pruned_so_memory_stays_bounded() {
    // 1,000,000 distinct callers, 1,000 per second, each seen once: a rule
    // of 20 per minute keeps a key for a few seconds after its last use.
    let rule = RateRule::per_minute(20).keyed_by(RateKey::Identity);
    let layer = LimitLayer::new(ClassLimits::new(8).with_rate(rule))
        .with_identity(|id: &u64| Some(Key::from(*id)));
    let mut svc = layer.layer(service_fn(|id: u64| ready(Ok::<_, BoxError>(id))));

    let mut most = 0;
    for id in 0..1_000_000u64 {
        svc.ready().await.unwrap();
        svc.call(id).await.unwrap();
        if id % 1_000 == 999 {
            time::advance(Duration::from_secs(1)).await;
            most = most.max(layer.handle().stats().rate_keys);
        }
    }
    let stats = layer.handle().stats();
    assert!(most <= 40_000, "the store grew to {most} keys");
    assert_eq!(stats.rate_untracked, 0, "pruning kept room for every key");
    assert_eq!(stats.class("default").unwrap().admitted, 1_000_000);
}

#[tokio::test(start_paused = true)]
async fn a_full_key_store_lets_new_keys_through_untracked_and_still_limits_the_keys_it_holds() {
    let rule = RateRule::per_minute(1)
        .keyed_by(RateKey::Identity)
        .with_max_keys(100);
    let layer = LimitLayer::new(ClassLimits::new(8).with_rate(rule))
        .with_identity(|id: &u64| Some(Key::from(*id)));
    let mut svc = layer.layer(service_fn(|id: u64| ready(Ok::<_, BoxError>(id))));

    // All active (no time passes): nothing can be pruned.
    for id in 0..10_000u64 {
        svc.ready().await.unwrap();
        svc.call(id).await.unwrap();
    }
    let stats = layer.handle().stats();
    assert!(stats.rate_keys <= 100, "{} keys held", stats.rate_keys);
    assert_eq!(stats.rate_untracked, 10_000 - stats.rate_keys);
    // A key it holds is still limited.
    svc.ready().await.unwrap();
    let err = svc.call(0).await.unwrap_err();
    rate_limited(&err);
}

// Shares per caller and per client address.

/// The client address of `"class/caller/address/..."`.
fn address_of(req: &Req) -> Option<Key> {
    req.split('/')
        .nth(2)
        .filter(|a| !a.is_empty())
        .map(Key::from)
}

type AddressLayer = LimitLayer<fn(&Req) -> Class, fn(&Req) -> Option<Key>, fn(&Req) -> Option<Key>>;

fn with_addresses(default: ClassLimits) -> AddressLayer {
    layer(default).with_address(address_of as fn(&Req) -> Option<Key>)
}

fn capped(err: &BoxError) -> &TooManyInFlight {
    find::<TooManyInFlight>(&**err).unwrap_or_else(|| panic!("not TooManyInFlight: {err}"))
}

/// Calls `req` and leaves it running or waiting; `Err` if refused at once.
async fn start<S>(svc: &mut S, req: Req) -> Result<S::Future, BoxError>
where
    S: Service<Req, Error = BoxError>,
    S::Future: Unpin,
{
    let mut fut = call(svc, req).await;
    match (&mut fut).now_or_never() {
        Some(Err(err)) => Err(err),
        Some(Ok(_)) => panic!("{req} completed at once"),
        None => Ok(fut),
    }
}

#[tokio::test(start_paused = true)]
async fn one_caller_flooding_distinct_calls_is_refused_beyond_its_share_while_others_are_served() {
    let layer = layer(ClassLimits::new(8).with_max_concurrent_per_caller(2));
    let (mut svc, _handle) = mocked(&layer);

    let mut running = Vec::new();
    for _ in 0..2 {
        running.push(start(&mut svc, "a/ann").await.unwrap());
    }
    for _ in 0..3 {
        let err = start(&mut svc, "a/ann")
            .await
            .expect_err("over ann's share");
        let cap = capped(&err);
        assert_eq!((cap.by_address(), cap.max()), (false, 2));
        assert_eq!(cap.class().as_str(), "a");
        assert!(is_rejection(&*err));
    }
    running.push(start(&mut svc, "a/bob").await.expect("another caller"));
    running.push(start(&mut svc, "b/ann").await.expect("another class"));
    running.push(
        start(&mut svc, "a")
            .await
            .expect("no identity: not counted"),
    );

    let a = stats(&layer, "a");
    assert_eq!(
        (a.in_flight, a.rejected_in_flight_cap, a.rejected_overloaded),
        (4, 3, 0)
    );
    assert_eq!(a.callers, 2, "ann and bob");
    drop(running);
    let a = stats(&layer, "a");
    assert_eq!((a.in_flight, a.callers), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn new_credentials_on_every_call_from_one_address_are_capped_by_the_address_rule() {
    let layer = with_addresses(
        ClassLimits::new(16)
            .with_max_concurrent_per_caller(4)
            .with_max_concurrent_per_address(3),
    );
    let (mut svc, _handle) = mocked(&layer);

    let mut running = Vec::new();
    for req in ["a/c1/10.0.0.1", "a/c2/10.0.0.1", "a/c3/10.0.0.1"] {
        running.push(start(&mut svc, req).await.unwrap());
    }
    let err = start(&mut svc, "a/c4/10.0.0.1").await.err().unwrap();
    assert_eq!((capped(&err).by_address(), capped(&err).max()), (true, 3));
    running.push(
        start(&mut svc, "a/c5/10.0.0.2")
            .await
            .expect("another address"),
    );

    // Anonymous calls count by address only; calls without an address by
    // caller only.
    for _ in 0..3 {
        running.push(start(&mut svc, "a//10.0.0.3").await.unwrap());
    }
    assert!(capped(&start(&mut svc, "a//10.0.0.3").await.err().unwrap()).by_address());
    for _ in 0..4 {
        running.push(start(&mut svc, "a/dan").await.unwrap());
    }
    assert!(!capped(&start(&mut svc, "a/dan").await.err().unwrap()).by_address());

    let a = stats(&layer, "a");
    assert_eq!(
        (a.callers, a.addresses, a.rejected_in_flight_cap),
        (5, 3, 3)
    );
    drop(running);
    let a = stats(&layer, "a");
    assert_eq!((a.callers, a.addresses, a.in_flight), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_caller_over_its_share_takes_no_permit_and_no_place_in_the_queue() {
    let layer = layer(
        ClassLimits::new(1)
            .with_max_queue(4)
            .with_max_concurrent_per_caller(2),
    );
    let (mut svc, mut handle) = mocked(&layer);

    let bob = tokio::spawn(call(&mut svc, "a/bob").await);
    let first = start(&mut svc, "a/ann/1").await.unwrap();
    let _second = start(&mut svc, "a/ann/2").await.unwrap();
    capped(&start(&mut svc, "a/ann/3").await.err().unwrap());
    let a = stats(&layer, "a");
    assert_eq!((a.in_flight, a.waiting, a.queued), (1, 2, 2));

    // A waiter dropped (cancelled) gives its call in the share back.
    drop(first);
    let fourth = tokio::spawn(call(&mut svc, "a/ann/4").await);
    settle().await;
    assert_eq!(stats(&layer, "a").waiting, 2);

    let (req, respond) = handle.next_request().await.unwrap();
    assert_eq!(req, "a/bob");
    respond.send_response("bob");
    assert_eq!(bob.await.unwrap().unwrap(), "bob");
    drop(fourth);
}

#[tokio::test(start_paused = true)]
async fn a_share_is_given_back_when_the_call_completes_even_if_the_future_is_kept() {
    let layer = with_addresses(
        ClassLimits::new(4)
            .with_max_concurrent_per_caller(1)
            .with_max_concurrent_per_address(1),
    );
    let mut svc = layer.layer(echo());
    let mut fut = Box::pin(call(&mut svc, "a/ann/10.0.0.1").await);
    assert_eq!((&mut fut).await.unwrap(), "a/ann/10.0.0.1");
    let a = stats(&layer, "a");
    assert_eq!((a.callers, a.addresses), (0, 0));
    assert!(call(&mut svc, "a/ann/10.0.0.1").await.await.is_ok());
    drop(fut);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_inner_future_gives_its_share_back() {
    let layer = layer(ClassLimits::new(4).with_max_concurrent_per_caller(1));
    let mut svc = layer.layer(service_fn(|req: Req| async move {
        if req.ends_with("boom") {
            panic!("inner future panicked");
        }
        Ok::<_, BoxError>(req)
    }));
    let fut = call(&mut svc, "a/ann/boom").await;
    assert!(AssertUnwindSafe(fut).catch_unwind().await.is_err());
    assert_eq!(stats(&layer, "a").callers, 0);
    assert!(call(&mut svc, "a/ann/ok").await.await.is_ok());
}

/// One step of a random run: a call by an optional caller from an optional
/// address, a running call completed, or a live call cancelled (dropped).
#[derive(Debug, Clone)]
enum Step {
    Call(Option<u8>, Option<u8>),
    Complete(usize),
    Cancel(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (proptest::option::of(0u8..4), proptest::option::of(0u8..3))
            .prop_map(|(caller, address)| Step::Call(caller, address)),
        1 => any::<usize>().prop_map(Step::Complete),
        1 => any::<usize>().prop_map(Step::Cancel),
    ]
}

/// A call of the random runs: `id`, who makes it.
#[derive(Debug, Clone, Copy)]
struct Ask {
    id: usize,
    caller: Option<u8>,
    address: Option<u8>,
}

/// Ends each call when the test says so.
type Gates = Arc<std::sync::Mutex<std::collections::BTreeMap<usize, oneshot::Sender<()>>>>;

fn gated(
    gates: Gates,
) -> impl Service<Ask, Response = usize, Error = BoxError, Future: Send> + Clone {
    service_fn(move |ask: Ask| {
        let (open, gate) = oneshot::channel();
        gates.lock().unwrap().insert(ask.id, open);
        async move {
            gate.await?;
            Ok::<_, BoxError>(ask.id)
        }
    })
}

/// A call of a random run, running or waiting.
type Running = Pin<Box<dyn Future<Output = Result<usize, BoxError>> + Send>>;

const PER_CALLER: usize = 2;
const PER_ADDRESS: usize = 3;

/// Calls `ask`: it must be refused exactly when its caller or its address
/// holds its share among the `live` calls.
fn call_within_shares<S>(
    svc: &mut S,
    live: &mut Vec<(Ask, Running)>,
    ask: Ask,
) -> Result<(), TestCaseError>
where
    S: Service<Ask, Response = usize, Error = BoxError>,
    S::Future: Send + 'static,
{
    let held = |f: &dyn Fn(&Ask) -> bool| live.iter().filter(|(a, _)| f(a)).count();
    let over = ask
        .caller
        .is_some_and(|c| held(&|a| a.caller == Some(c)) >= PER_CALLER)
        || ask
            .address
            .is_some_and(|d| held(&|a| a.address == Some(d)) >= PER_ADDRESS);
    let mut cx = Context::from_waker(Waker::noop());
    prop_assert!(svc.poll_ready(&mut cx).is_ready());
    let mut fut: Running = Box::pin(svc.call(ask));
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(Err(err)) => {
            prop_assert!(over, "refused within its shares: {err}");
            prop_assert!(find::<TooManyInFlight>(&*err).is_some(), "{err}");
        }
        Poll::Ready(Ok(_)) => prop_assert!(false, "completed at once"),
        Poll::Pending => {
            prop_assert!(!over, "let through over its share");
            live.push((ask, fut));
        }
    }
    Ok(())
}

/// Polls every live call: completed ones leave, waiters move up.
fn drive(live: &mut Vec<(Ask, Running)>) -> Result<(), TestCaseError> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut still = Vec::new();
    for (ask, mut fut) in live.drain(..) {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(result) => prop_assert_eq!(result.unwrap(), ask.id),
            Poll::Pending => still.push((ask, fut)),
        }
    }
    *live = still;
    Ok(())
}

/// The layer's maps hold exactly the callers and addresses of the `live`
/// calls (none once all are gone), and the class never runs more than its
/// limit.
fn check_maps(live: &[(Ask, Running)], stats: &LimitStats) -> Result<(), TestCaseError> {
    let class = stats.class("default").unwrap();
    let distinct = |f: &dyn Fn(&Ask) -> Option<u8>| {
        live.iter()
            .filter_map(|(a, _)| f(a))
            .collect::<std::collections::BTreeSet<_>>()
            .len() as u64
    };
    prop_assert_eq!(class.callers, distinct(&|a| a.caller));
    prop_assert_eq!(class.addresses, distinct(&|a| a.address));
    prop_assert!(class.in_flight <= 3);
    if live.is_empty() {
        prop_assert_eq!((class.in_flight, class.waiting), (0, 0));
    }
    Ok(())
}

fn shares_run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let _enter = rt.enter();
    let gates = Gates::default();
    let layer = LimitLayer::new(
        ClassLimits::new(3)
            .with_max_queue(1_000)
            .with_max_wait(Duration::from_secs(3600))
            .with_max_concurrent_per_caller(PER_CALLER)
            .with_max_concurrent_per_address(PER_ADDRESS),
    )
    .with_identity(|a: &Ask| a.caller.map(|c| Key::from(u64::from(c))))
    .with_address(|a: &Ask| a.address.map(|c| Key::from(u64::from(c) + 100)));
    let mut svc = layer.layer(gated(gates.clone()));
    let mut live: Vec<(Ask, Running)> = Vec::new();
    for (id, step) in steps.into_iter().enumerate() {
        match step {
            Step::Call(caller, address) => {
                let ask = Ask {
                    id,
                    caller,
                    address,
                };
                call_within_shares(&mut svc, &mut live, ask)?;
            }
            Step::Complete(i) => {
                let mut gates = gates.lock().unwrap();
                let ids: Vec<usize> = gates.keys().copied().collect();
                if !ids.is_empty() {
                    let _ = gates.remove(&ids[i % ids.len()]).unwrap().send(());
                }
            }
            Step::Cancel(i) if !live.is_empty() => {
                let i = i % live.len();
                drop(live.swap_remove(i));
            }
            Step::Cancel(_) => {}
        }
        drive(&mut live)?;
        check_maps(&live, &layer.handle().stats())?;
    }
    drop(live);
    check_maps(&[], &layer.handle().stats())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Random calls, completions and cancellations: no caller or address
    /// ever holds more than its share, a call is refused only when one is
    /// full, and the maps drain to empty.
    #[test]
    fn random_calls_completions_and_cancellations_keep_shares_and_drain_the_maps(
        steps in prop::collection::vec(step(), 1..80),
    ) {
        shares_run(steps)?;
    }
}

// Errors.

#[tokio::test(start_paused = true)]
async fn rejections_are_local_rejections_not_upstream_failures() {
    let layer = layer(ClassLimits::new(0).with_rate(RateRule::per_minute(1)));
    let mut svc = layer.layer(echo());

    let overloaded = call(&mut svc, "a/1").await.await.unwrap_err();
    let limited = call(&mut svc, "a/2").await.await.unwrap_err();
    assert!(find::<Overloaded>(&*overloaded).is_some());
    assert!(find::<RateLimited>(&*limited).is_some());
    for err in [overloaded, limited] {
        assert!(is_rejection(&*err));
        // Also when shared by a layer above.
        let shared: BoxError = Box::new(SharedError::new(err));
        assert!(is_rejection(&*shared));
    }
    let upstream: BoxError = "upstream down".into();
    assert!(!is_rejection(&*upstream));
}

#[test]
fn response_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let layer = layer(ClassLimits::new(1));
    let (mut svc, _handle) = mocked(&layer);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let fut = call(&mut svc, "a/1").await;
        assert_send(&fut);
    });
}

// Threads.

/// Counts the calls in flight, and the most at once.
#[derive(Clone, Default)]
struct Track {
    current: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl Service<u32> for Track {
    type Response = u32;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u32) -> Self::Future {
        let Track { current, most } = self.clone();
        Box::pin(async move {
            let now = current.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            // Counted out however the call ends, cancellation included.
            let _done = Done(current);
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            Ok(req)
        })
    }
}

struct Done(Arc<AtomicUsize>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_never_exceed_the_limit_and_every_permit_comes_back() {
    let track = Track::default();
    let limits = ClassLimits::new(4)
        .with_max_queue(10_000)
        .with_max_wait(Duration::from_secs(3600));
    let svc = Limit::new(track.clone(), limits);

    let tasks: Vec<_> = (0..2_000)
        .map(|i| {
            let mut svc = svc.clone();
            tokio::spawn(async move {
                svc.ready().await.unwrap();
                let fut = svc.call(i);
                if i % 7 == 0 {
                    // Cancelled while waiting or running.
                    let _ = time::timeout(Duration::ZERO, fut).await;
                } else {
                    fut.await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert!(track.most.load(Ordering::SeqCst) <= 4);
    assert_eq!(track.current.load(Ordering::SeqCst), 0);
    let stats = svc.handle().stats();
    let default = stats.class("default").unwrap();
    assert_eq!((default.in_flight, default.waiting), (0, 0));
    assert_eq!(default.rejected_overloaded, 0);
    let mut svc = svc;
    svc.ready().await.unwrap();
    assert_eq!(svc.call(7).await.unwrap(), 7);
}
