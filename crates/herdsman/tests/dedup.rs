//! Behaviour of the Dedup layer, driven through `tower::ServiceExt` with
//! paused tokio time.

mod support;

use std::{
    convert::Infallible,
    future::{poll_fn, Future},
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use herdsman::{
    dedup::{DedupLayer, Panicked},
    error::{find, BoxError, SharedError},
    key::Key,
    share::Share,
};
use support::{assert_no_request, settle, waiting_request, Calls, Upstream, UpstreamDown};
use tokio::time;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tower_test::mock;

type Req = &'static str;

fn key_of(req: &Req) -> Option<Key> {
    (!req.starts_with("skip")).then(|| Key::from(*req))
}

/// `upstream` behind `layer`, its answers wrapped in an `Arc` so that a
/// shared answer can be told from a copy (`Arc::ptr_eq`).
fn stack(
    layer: &DedupLayer<fn(&Req) -> Option<Key>>,
    upstream: &Upstream,
) -> impl Service<Req, Response = Arc<String>, Error = BoxError, Future: Send> + Clone {
    ServiceBuilder::new()
        .layer(layer.clone())
        .map_response(Arc::new)
        .service(upstream.clone())
}

fn dedup_layer() -> DedupLayer<fn(&Req) -> Option<Key>> {
    DedupLayer::new(key_of as fn(&Req) -> Option<Key>)
}

#[tokio::test(start_paused = true)]
async fn concurrent_identical_requests_make_one_inner_call() {
    let upstream = Upstream::new(Duration::from_millis(50));
    let layer = dedup_layer();
    let svc = stack(&layer, &upstream);

    let tasks: Vec<_> = (0..100)
        .map(|_| tokio::spawn(svc.clone().oneshot("users")))
        .collect();
    let mut responses = Vec::new();
    for task in tasks {
        responses.push(task.await.unwrap().unwrap());
    }

    assert_eq!(upstream.calls(), 1);
    assert!(responses.iter().all(|r| Arc::ptr_eq(r, &responses[0])));
    assert_eq!(*responses[0], "users#1");
    let stats = layer.handle().stats();
    assert_eq!((stats.leaders, stats.coalesced), (1, 99));
    assert_eq!(stats.entries, 0);
}

#[tokio::test(start_paused = true)]
async fn different_keys_do_not_coalesce() {
    let upstream = Upstream::new(Duration::from_millis(50));
    let layer = dedup_layer();
    let svc = stack(&layer, &upstream);

    let (a, b) = tokio::join!(svc.clone().oneshot("a"), svc.clone().oneshot("b"));
    assert_eq!(*a.unwrap(), "a#1");
    assert_eq!(*b.unwrap(), "b#2");
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn every_waiter_gets_the_same_shared_error() {
    let upstream = Upstream::new(Duration::from_millis(50));
    let layer = dedup_layer();
    let svc = stack(&layer, &upstream);

    let results = futures_util::future::join_all((0..5).map(|_| svc.clone().oneshot("fail"))).await;
    assert_eq!(upstream.calls(), 1);
    let errors: Vec<BoxError> = results.into_iter().map(|r| r.unwrap_err()).collect();
    for err in &errors {
        assert!(find::<UpstreamDown>(&**err).is_some(), "{err}");
        assert_eq!(err.to_string(), "upstream down");
    }
    let first = errors[0].downcast_ref::<SharedError>().unwrap();
    for err in &errors[1..] {
        assert!(first.ptr_eq(err.downcast_ref::<SharedError>().unwrap()));
    }
}

#[tokio::test(start_paused = true)]
async fn requests_after_completion_call_again_without_a_window() {
    let upstream = Upstream::new(Duration::from_millis(50));
    let layer = dedup_layer();
    let svc = stack(&layer, &upstream);

    assert_eq!(*svc.clone().oneshot("a").await.unwrap(), "a#1");
    assert_eq!(*svc.clone().oneshot("a").await.unwrap(), "a#2");
    assert_eq!(layer.handle().stats().entries, 0);
}

#[tokio::test(start_paused = true)]
async fn the_reuse_window_serves_finished_results_until_it_ends() {
    let upstream = Upstream::new(Duration::from_millis(50));
    let layer = dedup_layer().with_window(Duration::from_secs(1));
    let svc = stack(&layer, &upstream);

    assert_eq!(*svc.clone().oneshot("a").await.unwrap(), "a#1");
    time::advance(Duration::from_millis(999)).await;
    assert_eq!(*svc.clone().oneshot("a").await.unwrap(), "a#1");
    assert_eq!(upstream.calls(), 1);
    assert_eq!(layer.handle().stats().window_hits, 1);
    assert_eq!(layer.handle().stats().entries, 1);

    time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        layer.handle().stats().entries,
        0,
        "expired entries are purged"
    );
    assert_eq!(*svc.clone().oneshot("a").await.unwrap(), "a#2");
}

#[tokio::test(start_paused = true)]
async fn errors_are_never_reused_in_the_window() {
    let upstream = Upstream::new(Duration::from_millis(50));
    let layer = dedup_layer().with_window(Duration::from_secs(1));
    let svc = stack(&layer, &upstream);

    assert!(svc.clone().oneshot("fail").await.is_err());
    assert!(svc.clone().oneshot("fail").await.is_err());
    assert_eq!(upstream.calls(), 2);
    assert_eq!(layer.handle().stats().entries, 0);
}

#[tokio::test(start_paused = true)]
async fn waiters_joining_during_the_window_get_the_result_of_the_running_call() {
    let upstream = Upstream::new(Duration::from_millis(50));
    let layer = dedup_layer().with_window(Duration::from_millis(10));
    let svc = stack(&layer, &upstream);

    let first = tokio::spawn(svc.clone().oneshot("a"));
    settle().await;
    let second = tokio::spawn(svc.clone().oneshot("a"));
    assert_eq!(*first.await.unwrap().unwrap(), "a#1");
    assert_eq!(*second.await.unwrap().unwrap(), "a#1");
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_driver_hands_the_call_to_a_follower() {
    let upstream = Upstream::new(Duration::from_millis(50));
    let layer = dedup_layer();
    let svc = stack(&layer, &upstream);

    let driver = tokio::spawn(svc.clone().oneshot("a"));
    settle().await;
    let followers: Vec<_> = (0..10)
        .map(|_| tokio::spawn(svc.clone().oneshot("a")))
        .collect();
    time::sleep(Duration::from_millis(10)).await;
    driver.abort();

    for follower in followers {
        assert_eq!(*follower.await.unwrap().unwrap(), "a#1");
    }
    assert_eq!(upstream.calls(), 1);
    let stats = layer.handle().stats();
    assert_eq!(
        (stats.handoffs, stats.cancelled, stats.abandoned),
        (1, 1, 0)
    );
    assert_eq!(stats.entries, 0);
}

#[tokio::test(start_paused = true)]
async fn an_heir_that_is_dropped_passes_the_call_on() {
    let upstream = Upstream::new(Duration::from_millis(50));
    let layer = dedup_layer();
    let svc = stack(&layer, &upstream);

    let driver = tokio::spawn(svc.clone().oneshot("a"));
    settle().await;
    let heir = tokio::spawn(svc.clone().oneshot("a"));
    settle().await;
    let last = tokio::spawn(svc.clone().oneshot("a"));
    settle().await;
    // Drop the driver and the follower chosen to take over before it runs.
    driver.abort();
    heir.abort();
    assert_eq!(*last.await.unwrap().unwrap(), "a#1");
    assert_eq!(upstream.calls(), 1);
    assert_eq!(layer.handle().stats().entries, 0);
}

/// Sets a flag when dropped.
struct DropFlag(Arc<AtomicUsize>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn the_inner_call_is_dropped_when_the_last_waiter_leaves() {
    let dropped = Arc::new(AtomicUsize::new(0));
    let flag = dropped.clone();
    let layer = dedup_layer();
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(move |_req: Req| {
            let guard = DropFlag(flag.clone());
            async move {
                let _guard = guard;
                std::future::pending::<Result<String, Infallible>>().await
            }
        }));

    let driver = tokio::spawn(svc.clone().oneshot("a"));
    settle().await;
    let follower = tokio::spawn(svc.clone().oneshot("a"));
    settle().await;
    driver.abort();
    settle().await;
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        0,
        "the follower still wants it"
    );
    follower.abort();
    settle().await;
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    assert_eq!(layer.handle().stats().entries, 0);
    let stats = layer.handle().stats();
    assert_eq!(
        (stats.cancelled, stats.handoffs, stats.abandoned),
        (2, 1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn followers_get_a_typed_error_when_the_inner_future_panics() {
    let calls = Calls::default();
    let layer = dedup_layer();
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(move |req: Req| {
            let n = calls.next();
            async move {
                time::sleep(Duration::from_millis(10)).await;
                if n == 1 {
                    panic!("boom");
                }
                Ok::<_, Infallible>(format!("{req} ok"))
            }
        }));

    let results = futures_util::future::join_all((0..5).map(|_| svc.clone().oneshot("a"))).await;
    for result in results {
        let err = result.unwrap_err();
        let panicked = find::<Panicked>(&*err).expect("a Panicked error");
        assert_eq!(panicked.message(), Some("boom"));
    }
    assert_eq!(layer.handle().stats().panics, 1);
    assert_eq!(layer.handle().stats().entries, 0);
    // The key is usable again at once.
    assert_eq!(svc.clone().oneshot("a").await.unwrap(), "a ok");
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_call_leaves_the_key_usable() {
    let calls = Calls::default();
    let layer = dedup_layer();
    let mut svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(move |req: Req| {
            if calls.next() == 1 {
                panic!("bad request");
            }
            async move { Ok::<_, Infallible>(format!("{req} ok")) }
        }));

    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(svc.call("a"));
    }));
    assert!(panicked.is_err());
    assert_eq!(layer.handle().stats().entries, 0);
    assert_eq!(svc.ready().await.unwrap().call("a").await.unwrap(), "a ok");
}

/// Counts how often the wrapped future is polled.
struct CountPolls<F> {
    fut: Pin<Box<F>>,
    polls: Arc<AtomicUsize>,
}

impl<F: Future> Future for CountPolls<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.fut.as_mut().poll(cx)
    }
}

#[tokio::test(start_paused = true)]
async fn waiters_park_instead_of_spinning() {
    let upstream = Upstream::new(Duration::from_millis(50));
    let layer = dedup_layer();
    let svc = stack(&layer, &upstream);

    let counters: Vec<_> = (0..50).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let tasks: Vec<_> = counters
        .iter()
        .map(|polls| {
            tokio::spawn(CountPolls {
                fut: Box::pin(svc.clone().oneshot("a")),
                polls: polls.clone(),
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(upstream.calls(), 1);
    for polls in &counters[1..] {
        // Once to join, once when woken with the outcome.
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }
}

#[tokio::test(start_paused = true)]
async fn services_from_one_layer_value_share_their_calls() {
    let upstream = Upstream::new(Duration::from_millis(50));
    let layer = dedup_layer();
    let one = stack(&layer, &upstream);
    let two = stack(&layer, &upstream);

    let (a, b) = tokio::join!(one.oneshot("a"), two.oneshot("a"));
    assert!(Arc::ptr_eq(&a.unwrap(), &b.unwrap()));
    assert_eq!(upstream.calls(), 1);

    // A separate layer value has its own map.
    let other = dedup_layer();
    let three = stack(&layer, &upstream);
    let four = stack(&other, &upstream);
    let (c, d) = tokio::join!(three.oneshot("a"), four.oneshot("a"));
    assert!(!Arc::ptr_eq(&c.unwrap(), &d.unwrap()));
    assert_eq!(upstream.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn services_of_other_types_behind_one_layer_do_not_mix() {
    let layer = dedup_layer();
    let strings = ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(|req: Req| async move {
            time::sleep(Duration::from_millis(10)).await;
            Ok::<_, Infallible>(req.to_string())
        }));
    let numbers = ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(|req: Req| async move {
            time::sleep(Duration::from_millis(10)).await;
            Ok::<_, Infallible>(req.len())
        }));
    let (s, n) = tokio::join!(
        strings.clone().oneshot("abc"),
        numbers.clone().oneshot("abc")
    );
    assert_eq!(s.unwrap(), "abc");
    assert_eq!(n.unwrap(), 3);

    // Each type has a map of its own: callers of one type coalesce, and
    // the layer's counters add up both maps.
    let (s1, s2, n1, n2) = tokio::join!(
        strings.clone().oneshot("abc"),
        strings.oneshot("abc"),
        numbers.clone().oneshot("abc"),
        numbers.oneshot("abc"),
    );
    assert_eq!((s1.unwrap(), s2.unwrap()), ("abc".into(), "abc".into()));
    assert_eq!((n1.unwrap(), n2.unwrap()), (3, 3));
    let stats = layer.handle().stats();
    assert_eq!((stats.leaders, stats.coalesced, stats.entries), (4, 2, 0));
}

#[tokio::test(start_paused = true)]
async fn requests_without_a_key_or_with_a_long_key_pass_through() {
    let upstream = Upstream::new(Duration::from_millis(50));
    let layer = dedup_layer();
    let svc = stack(&layer, &upstream);
    let (a, b) = tokio::join!(svc.clone().oneshot("skip"), svc.clone().oneshot("skip"));
    assert_eq!(
        (a.unwrap().as_str(), b.unwrap().as_str()),
        ("skip#1", "skip#2")
    );

    let capped = DedupLayer::new(key_of as fn(&Req) -> Option<Key>).with_max_key_len(3);
    let svc = stack(&capped, &upstream);
    let (a, b) = tokio::join!(svc.clone().oneshot("long"), svc.clone().oneshot("long"));
    assert_ne!(a.unwrap(), b.unwrap());
    let (a, b) = tokio::join!(svc.clone().oneshot("abc"), svc.clone().oneshot("abc"));
    assert_eq!(a.unwrap(), b.unwrap());
    assert_eq!(capped.handle().stats().leaders, 1);
}

/// Shares only even-numbered responses.
#[derive(Clone, Copy)]
struct EvenOnly;

impl Share<usize> for EvenOnly {
    type Shared = usize;

    fn share(&self, value: usize) -> Result<usize, usize> {
        if value % 2 == 0 {
            Ok(value)
        } else {
            Err(value)
        }
    }

    fn unshare(&self, shared: &usize) -> usize {
        *shared
    }
}

#[tokio::test(start_paused = true)]
async fn followers_make_their_own_call_when_a_response_cannot_be_shared() {
    let (upstream, mut handle) = mock::pair::<Req, usize>();
    let layer = DedupLayer::new(key_of as fn(&Req) -> Option<Key>).with_share(EvenOnly);
    let svc = ServiceBuilder::new().layer(layer.clone()).service(upstream);

    let first = tokio::spawn(svc.clone().oneshot("a"));
    settle().await;
    let others: Vec<_> = (0..3)
        .map(|_| tokio::spawn(svc.clone().oneshot("a")))
        .collect();
    settle().await;
    let (req, call) = waiting_request(&mut handle);
    assert_eq!(req, "a");
    assert_no_request(&mut handle); // the three others joined the first call
    call.send_response(1);
    // 1 is odd: it goes to its own caller, the three others call again.
    assert_eq!(first.await.unwrap().unwrap(), 1);
    settle().await;
    for n in 2..=4 {
        let (req, call) = waiting_request(&mut handle);
        assert_eq!(req, "a");
        call.send_response(n);
    }
    assert_no_request(&mut handle);
    let mut got: Vec<usize> = Vec::new();
    for task in others {
        got.push(task.await.unwrap().unwrap());
    }
    got.sort();
    assert_eq!(got, vec![2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn poll_ready_is_the_inner_services() {
    let (mock, mut handle) = mock::pair::<Req, String>();
    let mut svc = ServiceBuilder::new().layer(dedup_layer()).service(mock);
    handle.allow(0);
    assert!(poll_fn(|cx| Poll::Ready(svc.poll_ready(cx).is_pending())).await);
    handle.allow(1);
    svc.ready().await.unwrap();
    let fut = svc.call("a");
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, "a");
    send.send_response("ok".to_string());
    assert_eq!(fut.await.unwrap(), "ok");
}
