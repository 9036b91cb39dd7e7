//! Behaviour of the Registry, with paused tokio time: shared poll loops,
//! intervals, change detection, errors, push, limits, lifecycle and one-shot
//! calls.

mod support;

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{FutureExt, StreamExt};
use herdsman::{
    class::Class,
    error::{find, BoxError},
    event::{Event, Invalidation, MemorySource},
    http::{BufferLayer, HttpBody, HttpKey, HttpShare, ServedStale, SharedBody},
    key::Key,
    registry::{
        Fingerprint, HttpFingerprint, Limit, PollPanicked, Registry, RegistryLayer, StaleAnswer,
        SubscribeOptions, Subscription, Update,
    },
    share::Share,
};
use support::{pass, settle, CallLog, Calls, Recorder, SEC};
use tokio::time::{self, Instant};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

#[derive(Debug)]
struct UpstreamDown(u64);

impl std::fmt::Display for UpstreamDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "upstream down ({})", self.0)
    }
}

impl std::error::Error for UpstreamDown {}

type Answer = Arc<dyn Fn(&str, u64) -> Result<String, UpstreamDown> + Send + Sync>;

/// An upstream that logs each request with its time and answers with
/// `answer(request, call number)` after `delay`.
#[derive(Clone)]
struct Upstream {
    log: CallLog,
    answer: Answer,
    delay: Duration,
}

impl Upstream {
    /// Answers "`request`@`n / every`": a new value every `every` calls.
    fn changing_every(every: u64) -> Self {
        Self::answering(move |req, n| Ok(format!("{req}@{}", n / every)))
    }

    fn answering(
        answer: impl Fn(&str, u64) -> Result<String, UpstreamDown> + Send + Sync + 'static,
    ) -> Self {
        Upstream {
            log: Default::default(),
            answer: Arc::new(answer),
            delay: Duration::ZERO,
        }
    }

    fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    fn calls(&self) -> usize {
        self.log.calls()
    }

    fn calls_to(&self, req: &str) -> Vec<Instant> {
        self.log.calls_to(req)
    }
}

impl Service<&'static str> for Upstream {
    type Response = String;
    type Error = UpstreamDown;
    type Future = Pin<Box<dyn Future<Output = Result<String, UpstreamDown>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), UpstreamDown>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: &'static str) -> Self::Future {
        let n = self.log.record(req) as u64 - 1;
        let (answer, delay) = (self.answer.clone(), self.delay);
        Box::pin(async move {
            time::sleep(delay).await;
            answer(req, n)
        })
    }
}

type KeyOf = fn(&&'static str) -> Option<Key>;

/// Keys requests by themselves, with the request marked as the key's path;
/// requests starting with "nokey" get none.
fn key_of(req: &&'static str) -> Option<Key> {
    if req.starts_with("nokey") {
        return None;
    }
    let mut key = Key::builder();
    key.path(req.as_bytes());
    Some(key.build())
}

fn layer() -> RegistryLayer<KeyOf> {
    RegistryLayer::new(key_of as KeyOf)
        .with_interval(5 * SEC)
        .with_floor(SEC)
        .with_jitter(0.0)
}

type Sub = Subscription<String>;

/// The updates a subscription has ready now, without waiting.
fn ready_updates(sub: &mut Sub) -> Vec<Update<String>> {
    let mut out = Vec::new();
    while let Some(Some(update)) = sub.next().now_or_never() {
        out.push(update);
    }
    out
}

fn versions(updates: &[Update<String>]) -> Vec<u64> {
    updates.iter().map(Update::version).collect()
}

fn values(updates: &[Update<String>]) -> Vec<String> {
    updates
        .iter()
        .map(|u| u.value().cloned().unwrap_or_else(|| "error".into()))
        .collect()
}

/// Advances paused time by `d`, letting every task run on the way.
#[tokio::test(start_paused = true)]
async fn two_hooks_on_one_endpoint_make_one_upstream_call_per_interval() {
    // The original bug: two independent client hooks for "active users",
    // each with its own wrapper around the client, both alive.
    let upstream = Upstream::changing_every(1);
    let layer = layer();
    let hook_a = ServiceBuilder::new()
        .layer(layer.clone())
        .service(upstream.clone());
    let hook_b = layer.layer(upstream.clone());

    let mut a = hook_a.subscribe("/api/active-users").unwrap();
    let mut b = hook_b.subscribe("/api/active-users").unwrap();
    settle().await;
    for _ in 0..10 {
        pass(5 * SEC).await;
    }

    assert_eq!(
        upstream.calls(),
        11,
        "one call at start, then one per interval"
    );
    let (ua, ub) = (ready_updates(&mut a), ready_updates(&mut b));
    assert_eq!(ua.last().unwrap().version(), 11);
    assert_eq!(values(&ua), values(&ub));
    assert_eq!(layer.handle().stats().tasks, 1);
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_subscribers_make_one_upstream_call_per_interval() {
    let upstream = Upstream::changing_every(1);
    let registry = layer().layer(upstream.clone());
    let mut subs: Vec<Sub> = (0..10_000)
        .map(|_| registry.subscribe("/api/active-users").unwrap())
        .collect();
    settle().await;
    for _ in 0..3 {
        pass(5 * SEC).await;
    }

    assert_eq!(upstream.calls(), 4);
    for sub in &mut subs {
        assert_eq!(versions(&ready_updates(sub)), [4]);
    }
    assert_eq!(registry.handle().stats().subscribers, 10_000);
    assert_eq!(registry.handle().hooks()[0].subscribers, 10_000);
    let per_subscriber = registry.handle().memory_bytes() / 10_000;
    assert!((48..=256).contains(&per_subscriber), "{per_subscriber} B");
}

#[tokio::test(start_paused = true)]
async fn subscribers_each_get_every_change_in_order_while_they_keep_up() {
    let upstream = Upstream::changing_every(1);
    let registry = layer().layer(upstream.clone());
    let mut sub = registry.subscribe("/a").unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(sub.next().await.unwrap());
    }
    assert_eq!(versions(&seen), [1, 2, 3, 4]);
    assert_eq!(values(&seen), ["/a@0", "/a@1", "/a@2", "/a@3"]);
    let gaps: Vec<Duration> = seen
        .windows(2)
        .map(|w| w[1].fetched_at() - w[0].fetched_at())
        .collect();
    assert_eq!(gaps, [5 * SEC; 3]);
}

#[tokio::test(start_paused = true)]
async fn the_interval_is_the_shortest_asked_and_never_below_the_floor() {
    let upstream = Upstream::changing_every(1);
    let registry = layer().with_floor(2 * SEC).layer(upstream.clone());
    let every = |d| SubscribeOptions::new().with_interval(d);

    let slow = registry.subscribe_with("/a", every(10 * SEC)).unwrap();
    let fast = registry.subscribe_with("/a", every(3 * SEC)).unwrap();
    assert_eq!(slow.interval(), 3 * SEC);
    settle().await;
    pass(9 * SEC).await;
    assert_eq!(upstream.calls(), 4, "at 0, 3, 6 and 9 s");

    let too_fast = registry.subscribe_with("/a", every(SEC / 10)).unwrap();
    assert_eq!(too_fast.interval(), 2 * SEC, "clamped to the floor");
    assert_eq!(registry.handle().hooks()[0].interval, 2 * SEC);
    pass(4 * SEC).await;
    assert_eq!(upstream.calls(), 6, "at 11 and 13 s");

    drop(too_fast);
    drop(fast);
    assert_eq!(slow.interval(), 10 * SEC);
    pass(10 * SEC).await;
    assert_eq!(upstream.calls(), 7, "at 23 s");
}

#[tokio::test(start_paused = true)]
async fn polls_are_spread_by_jitter_within_ten_percent() {
    let upstream = Upstream::changing_every(1);
    let registry = layer().with_jitter(0.1).layer(upstream.clone());
    const KEYS: [&str; 20] = [
        "/k0", "/k1", "/k2", "/k3", "/k4", "/k5", "/k6", "/k7", "/k8", "/k9", "/k10", "/k11",
        "/k12", "/k13", "/k14", "/k15", "/k16", "/k17", "/k18", "/k19",
    ];
    let _subs: Vec<Sub> = KEYS
        .iter()
        .map(|k| registry.subscribe(*k).unwrap())
        .collect();
    settle().await;
    for _ in 0..60 {
        pass(SEC).await;
    }

    let mut gaps = Vec::new();
    for key in KEYS {
        let calls = upstream.calls_to(key);
        assert!(calls.len() >= 10, "{key}: {}", calls.len());
        gaps.extend(calls.windows(2).map(|w| w[1] - w[0]));
    }
    let (lo, hi) = (Duration::from_millis(4500), Duration::from_millis(5500));
    assert!(gaps.iter().all(|g| (lo..=hi).contains(g)), "{gaps:?}");
    let distinct: std::collections::HashSet<_> = gaps.iter().collect();
    assert!(distinct.len() > gaps.len() / 2, "keys poll in lockstep");
    let first_second_polls: std::collections::HashSet<_> =
        KEYS.iter().map(|k| upstream.calls_to(k)[1]).collect();
    assert!(first_second_polls.len() > 10);
}

#[tokio::test(start_paused = true)]
async fn unchanged_polls_send_no_update() {
    // A new value every third call.
    let upstream = Upstream::changing_every(3);
    let registry = layer().layer(upstream.clone());
    let mut sub = registry.subscribe("/a").unwrap();
    settle().await;
    assert_eq!(versions(&ready_updates(&mut sub)), [1]);
    pass(10 * SEC).await;
    assert_eq!(upstream.calls(), 3);
    assert!(ready_updates(&mut sub).is_empty(), "two unchanged polls");
    pass(5 * SEC).await;
    let updates = ready_updates(&mut sub);
    assert_eq!(values(&updates), ["/a@1"]);
    assert_eq!(versions(&updates), [2]);
    let stats = registry.handle().stats();
    assert_eq!((stats.polls, stats.updates), (4, 2));
}

#[tokio::test(start_paused = true)]
async fn a_slow_subscriber_skips_to_the_latest_version() {
    let upstream = Upstream::changing_every(1);
    let registry = layer().layer(upstream.clone());
    let mut fast = registry.subscribe("/a").unwrap();
    let mut slow = registry.subscribe("/a").unwrap();
    let mut fast_seen = Vec::new();
    for _ in 0..6 {
        fast_seen.push(fast.next().await.unwrap().version());
    }
    assert_eq!(fast_seen, [1, 2, 3, 4, 5, 6]);

    let caught_up = ready_updates(&mut slow);
    assert_eq!(versions(&caught_up), [6], "only the latest, once");
    assert_eq!(values(&caught_up), ["/a@5"]);
    pass(5 * SEC).await;
    assert_eq!(versions(&ready_updates(&mut slow)), [7]);
}

#[tokio::test(start_paused = true)]
async fn a_new_subscriber_gets_a_fresh_value_without_an_upstream_call() {
    let upstream = Upstream::changing_every(1);
    let registry = layer().layer(upstream.clone());
    let mut first = registry.subscribe("/a").unwrap();
    first.next().await.unwrap();
    pass(2 * SEC).await;

    let mut second = registry.subscribe("/a").unwrap();
    let update = second.next().now_or_never().flatten().unwrap();
    assert_eq!(
        (update.version(), update.value().unwrap().as_str()),
        (1, "/a@0")
    );
    assert_eq!(second.current().unwrap().version(), 1);
    settle().await;
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_value_older_than_a_new_subscribers_interval_is_polled_again_at_once() {
    let upstream = Upstream::changing_every(1);
    let registry = layer().layer(upstream.clone());
    let mut first = registry.subscribe("/a").unwrap();
    first.next().await.unwrap();
    pass(3 * SEC).await;

    let mut eager = registry
        .subscribe_with("/a", SubscribeOptions::new().with_interval(2 * SEC))
        .unwrap();
    assert_eq!(
        eager.next().now_or_never().flatten().unwrap().version(),
        1,
        "the current value at once"
    );
    settle().await;
    assert_eq!(upstream.calls(), 2, "and a poll, since it is 3 s old");
    assert_eq!(versions(&ready_updates(&mut eager)), [2]);
    assert_eq!(versions(&ready_updates(&mut first)), [2]);
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_arriving_during_a_fetch_joins_it() {
    let upstream = Upstream::changing_every(1).with_delay(SEC);
    let registry = layer().layer(upstream.clone());
    let mut first = registry.subscribe("/a").unwrap();
    settle().await;
    time::advance(SEC / 2).await;
    let mut second = registry.subscribe("/a").unwrap();
    assert!(second.current().is_none());

    let (a, b) = tokio::join!(first.next(), second.next());
    assert_eq!(a.unwrap().value(), b.unwrap().value());
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn errors_reach_subscribers_with_the_last_good_value_and_the_loop_backs_off_then_recovers() {
    // Calls 0 and 1 succeed, 2 to 6 fail, then success again.
    let upstream = Upstream::answering(|req, n| match n {
        2..=6 => Err(UpstreamDown(n)),
        _ => Ok(format!("{req}@{}", n.min(2))),
    });
    let registry = layer()
        .with_interval(2 * SEC)
        .with_backoff(SEC, 10 * SEC)
        .layer(upstream.clone());
    let mut sub = registry.subscribe("/a").unwrap();
    let mut updates = Vec::new();
    for _ in 0..120 {
        pass(SEC / 2).await;
        updates.extend(ready_updates(&mut sub));
    }

    let calls = upstream.calls_to("/a");
    let gaps: Vec<u64> = calls
        .windows(2)
        .take(9)
        .map(|w| (w[1] - w[0]).as_secs())
        .collect();
    // Two successes at the 2 s interval; after failures 1 to 5: 1 and 2
    // (raised to the interval), 4, 8, 16 (capped at 10); then back to the
    // interval.
    assert_eq!(gaps, [2, 2, 2, 2, 4, 8, 10, 2, 2]);

    let error = updates.iter().find(|u| u.error().is_some()).unwrap();
    assert!(find::<UpstreamDown>(error.error().unwrap()).is_some());
    assert_eq!(error.last_good().unwrap(), "/a@1");
    assert!(error.value().is_none());
    assert_eq!(values(&updates).last().unwrap(), "/a@2");
    let stats = registry.handle().stats();
    assert_eq!(stats.errors, 5);
    assert_eq!(registry.handle().hooks()[0].errors, 5);
}

#[tokio::test(start_paused = true)]
async fn the_same_error_twice_is_one_update() {
    let upstream = Upstream::answering(|_, _| Err(UpstreamDown(0)));
    let registry = layer().with_backoff(SEC, SEC).layer(upstream.clone());
    let mut sub = registry.subscribe("/a").unwrap();
    pass(30 * SEC).await;
    assert!(upstream.calls() > 3);
    let updates = ready_updates(&mut sub);
    assert_eq!(versions(&updates), [1]);
    assert!(updates[0].last_good().is_none());
}

#[derive(Clone)]
struct Panics;

impl Service<&'static str> for Panics {
    type Response = String;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<String, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: &'static str) -> Self::Future {
        if req == "/in-call" {
            panic!("boom in call");
        }
        Box::pin(async { panic!("boom in future") })
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_upstream_is_an_error_update_and_never_a_hang() {
    let registry = layer().layer(Panics);
    let mut subs = Vec::new();
    for path in ["/in-call", "/in-future"] {
        subs.push(registry.subscribe(path).unwrap());
        let sub = subs.last_mut().unwrap();
        let update = time::timeout(SEC, sub.next()).await.unwrap().unwrap();
        let panicked = find::<PollPanicked>(update.error().unwrap()).unwrap();
        assert!(panicked.message().unwrap().starts_with("boom"));
    }
    assert_eq!(registry.handle().stats().tasks, 2, "the loops keep going");
}

#[tokio::test(start_paused = true)]
async fn refresh_pushes_a_new_value_to_every_subscriber_at_once() {
    let upstream = Upstream::changing_every(1);
    let registry = layer().layer(upstream.clone());
    let mut subs: Vec<Sub> = (0..3).map(|_| registry.subscribe("/a").unwrap()).collect();
    let _other = registry.subscribe("/b").unwrap();
    settle().await;
    pass(SEC).await;
    for sub in &mut subs {
        ready_updates(sub);
    }

    let key = subs[0].key().clone();
    assert!(registry.handle().refresh(&key));
    settle().await;
    assert_eq!(upstream.calls_to("/a").len(), 2);
    assert_eq!(upstream.calls_to("/b").len(), 1);
    for sub in &mut subs {
        assert_eq!(values(&ready_updates(sub)), ["/a@2"]);
    }
    assert!(!registry.handle().refresh(&Key::from("nobody")));

    // The interval counts from the refresh.
    pass(4 * SEC).await;
    assert_eq!(upstream.calls_to("/a").len(), 2);
    pass(SEC).await;
    assert_eq!(upstream.calls_to("/a").len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_refresh_during_a_fetch_polls_again_after_it() {
    let upstream = Upstream::changing_every(1).with_delay(SEC);
    let registry = layer().layer(upstream.clone());
    let sub = registry.subscribe("/a").unwrap();
    settle().await;
    registry.handle().refresh(sub.key());
    pass(SEC).await;
    pass(SEC).await;
    assert_eq!(
        upstream.calls(),
        2,
        "the in-flight fetch may predate the change"
    );
}

#[tokio::test(start_paused = true)]
async fn invalidations_announced_by_a_cache_poll_the_keys_they_cover() {
    let upstream = Upstream::changing_every(1);
    let registry = layer().layer(upstream.clone());
    let _subs: Vec<Sub> = ["/boards/1/cards", "/boards/1/members", "/boards/2/cards"]
        .into_iter()
        .map(|p| registry.subscribe(p).unwrap())
        .collect();
    settle().await;
    let (tx, rx) = tokio::sync::broadcast::channel(16);
    let follower = registry.handle().follow(rx);

    tx.send(Invalidation::Path("/boards/1/cards".into()))
        .unwrap();
    settle().await;
    assert_eq!(upstream.calls_to("/boards/1/cards").len(), 2);
    assert_eq!(upstream.calls_to("/boards/1/members").len(), 1);

    tx.send(Invalidation::Prefix("/boards/1/".into())).unwrap();
    settle().await;
    assert_eq!(upstream.calls_to("/boards/1/cards").len(), 3);
    assert_eq!(upstream.calls_to("/boards/1/members").len(), 2);
    assert_eq!(upstream.calls_to("/boards/2/cards").len(), 1);

    assert_eq!(registry.handle().invalidate(&Invalidation::All), 3);
    settle().await;
    assert_eq!(upstream.calls(), 9);

    drop(tx);
    follower.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_invalidation_ends_a_lingering_loop_instead_of_polling_for_nobody() {
    // Found by the soak run: each write polled every lingering key of its
    // path and started its linger again, so an attacker's one-off keys on a
    // board that is written to never left, and each write cost a call per key.
    let upstream = Upstream::changing_every(1);
    let registry = layer().with_linger(30 * SEC).layer(upstream.clone());
    for n in 0..20 {
        let key: &'static str = format!("/boards/1/cards?x={n}").leak();
        drop(registry.subscribe(key).unwrap());
    }
    settle().await;
    assert_eq!((registry.handle().stats().keys, upstream.calls()), (20, 20));

    pass(2 * SEC).await;
    assert_eq!(
        registry
            .handle()
            .invalidate(&Invalidation::Prefix("/boards/1/".into())),
        20
    );
    settle().await;
    assert_eq!(upstream.calls(), 20, "nobody listens: no poll");
    assert_eq!(
        registry.handle().stats().keys,
        0,
        "the kept values were out of date"
    );
    assert_eq!(registry.handle().stats().tasks, 0);

    // A subscriber that comes back starts a fresh loop.
    let mut sub = registry.subscribe("/boards/1/cards?x=0").unwrap();
    assert!(sub.next().await.is_some());
    assert_eq!(upstream.calls(), 21);
}

#[tokio::test(start_paused = true)]
async fn an_invalidation_still_polls_a_loop_with_subscribers() {
    let upstream = Upstream::changing_every(1);
    let registry = layer().with_linger(30 * SEC).layer(upstream.clone());
    let _sub = registry.subscribe("/boards/1/cards").unwrap();
    settle().await;
    registry.handle().invalidate(&Invalidation::All);
    settle().await;
    assert_eq!(upstream.calls(), 2);
    assert_eq!(registry.handle().stats().keys, 1);
}

#[tokio::test(start_paused = true)]
async fn the_loop_stops_with_its_last_subscriber_and_nothing_leaks() {
    let upstream = Upstream::changing_every(1).with_delay(SEC);
    let registry = layer().layer(upstream.clone());
    let a = registry.subscribe("/a").unwrap();
    let b = registry.subscribe("/a").unwrap();
    let c = registry.subscribe("/c").unwrap();
    settle().await;
    assert_eq!(registry.handle().stats().tasks, 2);

    drop(a);
    assert_eq!(registry.handle().stats().keys, 2);
    drop(b);
    drop(c);
    assert_eq!(registry.handle().stats().keys, 0, "removed at once");
    settle().await;
    let stats = registry.handle().stats();
    assert_eq!((stats.keys, stats.subscribers, stats.tasks), (0, 0, 0));
    assert!(registry.handle().hooks().is_empty());
    pass(60 * SEC).await;
    assert_eq!(upstream.calls(), 2, "the fetches in flight were dropped");
    assert_eq!(registry.handle().stats().polls, 0);
}

#[tokio::test(start_paused = true)]
async fn a_lingering_loop_serves_a_returning_subscriber_without_polling() {
    let upstream = Upstream::changing_every(1);
    let registry = layer().with_linger(10 * SEC).layer(upstream.clone());
    let mut sub = registry.subscribe("/a").unwrap();
    sub.next().await.unwrap();
    drop(sub);
    pass(3 * SEC).await;
    assert_eq!(registry.handle().stats().keys, 1);

    // Within the linger: the loop is still there; its value (3 s old) is
    // fresh for this subscriber's 5 s interval.
    let mut back = registry.subscribe("/a").unwrap();
    assert_eq!(back.next().now_or_never().flatten().unwrap().version(), 1);
    settle().await;
    assert_eq!(upstream.calls(), 1);
    drop(back);

    pass(20 * SEC).await;
    assert_eq!(upstream.calls(), 1, "no poll while nobody listens");
    let stats = registry.handle().stats();
    assert_eq!((stats.keys, stats.tasks), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn limits_refuse_subscribers_with_a_typed_error_and_hold_nothing() {
    let upstream = Upstream::changing_every(1);
    let registry = layer()
        .with_max_keys(2)
        .with_max_subscribers_per_key(2)
        .with_max_subscribers(3)
        .layer(upstream.clone());
    let _a1 = registry.subscribe("/a").unwrap();
    let _a2 = registry.subscribe("/a").unwrap();
    let err = registry.subscribe("/a").unwrap_err();
    assert_eq!(err.reason(), Limit::SubscribersPerKey);
    assert_eq!(
        err.to_string(),
        "subscription refused: too many subscribers for this key"
    );

    let _b = registry.subscribe("/b").unwrap();
    assert_eq!(
        registry.subscribe("/c").unwrap_err().reason(),
        Limit::Subscribers
    );
    drop(_a2);
    assert_eq!(registry.subscribe("/c").unwrap_err().reason(), Limit::Keys);
    let boxed: BoxError = Box::new(err);
    assert!(boxed
        .downcast_ref::<herdsman::registry::TooManySubscribers>()
        .is_some());

    settle().await;
    let stats = registry.handle().stats();
    assert_eq!((stats.keys, stats.subscribers, stats.refused), (2, 2, 3));
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn hooks_and_events_show_each_key_with_its_class_and_counts() {
    let upstream = Upstream::answering(|req, n| {
        if n == 1 {
            Err(UpstreamDown(n))
        } else {
            Ok(req.to_string())
        }
    });
    let events = Arc::new(Recorder::default());
    let registry = layer()
        .with_observer(events.clone())
        .with_classifier(|req: &&'static str| {
            if req.contains("users") {
                Class::new("active-users")
            } else {
                Class::default()
            }
        })
        .layer(upstream.clone());
    let started = Instant::now();
    let users = registry.subscribe("/active-users").unwrap();
    let users2 = registry.subscribe("/active-users").unwrap();
    settle().await;
    pass(10 * SEC).await;

    let hooks = registry.handle().hooks();
    assert_eq!(hooks.len(), 1);
    let hook = &hooks[0];
    assert_eq!(&hook.key, users.key());
    assert_eq!(hook.class.as_str(), "active-users");
    assert_eq!(hook.subscribers, 2);
    assert_eq!(hook.interval, 5 * SEC);
    assert_eq!(hook.started_at, started);
    assert_eq!(hook.last_fetch, Some(started + 10 * SEC));
    assert_eq!((hook.fetches, hook.errors), (3, 1));
    assert!(registry.handle().memory_bytes() > 0);

    drop((users, users2));
    let count = |e: Event| events.count("active-users", &e);
    assert_eq!(count(Event::Subscribed), 2);
    assert_eq!(count(Event::Polled), 3);
    assert_eq!(count(Event::Unsubscribed), 2);
}

#[tokio::test(start_paused = true)]
async fn one_shot_calls_are_answered_from_a_fresh_loop_value_or_go_down_the_stack() {
    let upstream = Upstream::changing_every(1);
    let registry = layer().layer(upstream.clone());

    let cold = registry.clone().oneshot("/a").await.unwrap();
    assert_eq!((cold.as_str(), upstream.calls()), ("/a@0", 1));

    let mut sub = registry.subscribe("/a").unwrap();
    sub.next().await.unwrap();
    assert_eq!(upstream.calls(), 2);
    pass(2 * SEC).await;
    let warm = registry.clone().oneshot("/a").await.unwrap();
    assert_eq!((warm.as_str(), upstream.calls()), ("/a@1", 2));

    let other = registry.clone().oneshot("/b").await.unwrap();
    assert_eq!((other.as_str(), upstream.calls()), ("/b@2", 3));
}

#[tokio::test(start_paused = true)]
async fn one_shot_calls_are_not_answered_from_an_error() {
    let upstream = Upstream::answering(|req, n| {
        if n == 0 {
            Err(UpstreamDown(n))
        } else {
            Ok(req.to_string())
        }
    });
    let registry = layer().layer(upstream.clone());
    let _sub = registry.subscribe("/a").unwrap();
    settle().await;
    assert_eq!(registry.clone().oneshot("/a").await.unwrap(), "/a");
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_request_without_a_key_gets_a_loop_of_its_own() {
    let upstream = Upstream::changing_every(1);
    let registry = layer().layer(upstream.clone());
    let mut a = registry.subscribe("nokey").unwrap();
    let mut b = registry.subscribe("nokey").unwrap();
    a.next().await.unwrap();
    b.next().await.unwrap();
    assert_eq!(upstream.calls(), 2);
    let stats = registry.handle().stats();
    assert_eq!((stats.keys, stats.private_loops, stats.tasks), (0, 2, 2));
    drop((a, b));
    settle().await;
    let stats = registry.handle().stats();
    assert_eq!(
        (stats.subscribers, stats.private_loops, stats.tasks),
        (0, 0, 0)
    );
}

#[test]
fn a_subscription_ends_when_its_runtime_shuts_down() {
    let upstream = Upstream::changing_every(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let registry = layer().layer(upstream);
    let mut sub = rt.block_on(async {
        let mut sub = registry.subscribe("/a").unwrap();
        sub.next().await.unwrap();
        sub
    });
    drop(rt);
    assert!(matches!(sub.next().now_or_never(), Some(None)));
    assert_eq!(registry.handle().stats().tasks, 0);
    assert_eq!(
        registry.handle().stats().keys,
        0,
        "the next subscriber starts a new loop"
    );
}

#[tokio::test(start_paused = true)]
async fn a_follower_that_lags_behind_the_cache_refreshes_every_key() {
    let upstream = Upstream::changing_every(1);
    let registry = layer().layer(upstream.clone());
    let _subs: Vec<Sub> = ["/a", "/b"]
        .into_iter()
        .map(|p| registry.subscribe(p).unwrap())
        .collect();
    settle().await;
    let (tx, rx) = tokio::sync::broadcast::channel(1);
    let follower = registry.handle().follow(rx);
    // Two announcements into a channel of one: the follower misses one.
    tx.send(Invalidation::Key(Key::from("nothing"))).unwrap();
    tx.send(Invalidation::Key(Key::from("nothing else")))
        .unwrap();
    settle().await;
    assert_eq!(upstream.calls(), 4, "both keys polled again");
    drop(tx);
    follower.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_loop_that_panics_outside_the_inner_call_ends_its_streams_and_frees_its_key() {
    let upstream = Upstream::changing_every(1);
    let registry = layer()
        .with_fingerprint(|value: &String| -> u64 {
            assert!(!value.ends_with("@1"), "fingerprint bug");
            value.len() as u64
        })
        .layer(upstream.clone());
    let mut sub = registry.subscribe("/a").unwrap();
    assert_eq!(sub.next().await.unwrap().version(), 1);
    let ended = time::timeout(10 * SEC, sub.next()).await.unwrap();
    assert!(ended.is_none(), "the stream ends instead of hanging");
    let stats = registry.handle().stats();
    assert_eq!((stats.keys, stats.tasks, stats.subscribers), (0, 0, 1));

    let mut again = registry.subscribe("/a").unwrap();
    assert_eq!(again.next().await.unwrap().value().unwrap(), "/a@2");
    drop(sub);
    assert_eq!(registry.handle().stats().subscribers, 1);
    assert_eq!(registry.handle().hooks()[0].subscribers, 1);
}

// HTTP

type HttpReq = http::Request<String>;

/// A response body and its `ETag`, if any.
type Answered = (&'static str, Option<&'static str>);

/// Answers the `n`-th request with `bodies[n]` (the last one once they run
/// out), with a `Date` header that differs every time; logs request headers.
#[derive(Clone, Default)]
struct HttpUpstream {
    seen: Arc<Mutex<Vec<http::HeaderMap>>>,
    bodies: Arc<Mutex<Vec<Answered>>>,
    calls: Calls,
}

impl Service<HttpReq> for HttpUpstream {
    type Response = http::Response<String>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<http::Response<String>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: HttpReq) -> Self::Future {
        self.seen.lock().unwrap().push(req.headers().clone());
        let n = self.calls.next() - 1;
        let bodies = self.bodies.lock().unwrap();
        let (body, etag) = bodies[n.min(bodies.len() - 1)];
        // A body starting with '!' is answered as a server error; one
        // starting with '~' as a cache's stale copy of the rest.
        let status = if body.starts_with('!') { 500 } else { 200 };
        let mut res = http::Response::builder()
            .status(status)
            .header("date", format!("t{n}"));
        if let Some(etag) = etag {
            res = res.header("etag", etag);
        }
        let res = match body.strip_prefix('~') {
            Some(copy) => res
                .header("age", "30")
                .header("cache-status", "herdsman; fwd=stale; detail=stale-if-error")
                .extension(ServedStale::default())
                .body(copy.to_string()),
            None => res.body(body.to_string()),
        };
        std::future::ready(Ok(res.unwrap()))
    }
}

fn http_registry(
    upstream: &HttpUpstream,
) -> Registry<
    herdsman::http::Buffer<HttpUpstream>,
    HttpKey,
    herdsman::class::AllDefault,
    herdsman::http::HttpShare,
    herdsman::registry::HttpFingerprint,
    HttpKey,
    (),
    herdsman::http::ServerErrors,
> {
    ServiceBuilder::new()
        .layer(RegistryLayer::http(HttpKey::new()).with_jitter(0.0))
        .layer(BufferLayer::new())
        .service(upstream.clone())
}

#[tokio::test(start_paused = true)]
async fn the_http_loop_sends_only_the_keys_parts_upstream() {
    let upstream = HttpUpstream::default();
    upstream.bodies.lock().unwrap().push(("[]", None));
    let registry = http_registry(&upstream);
    let req = |id: &str| {
        http::Request::get("http://api/active-users")
            .header("authorization", "Bearer alice")
            .header("accept", "application/json")
            .header("x-request-id", id)
            .header("user-agent", format!("tab {id}"))
            .body(String::from("ignored"))
            .unwrap()
    };
    let mut a = registry.subscribe(req("1")).unwrap();
    let _b = registry.subscribe(req("2")).unwrap();
    let update = a.next().await.unwrap();
    assert_eq!(update.value().unwrap().body().data(), "[]");

    let seen = upstream.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["authorization"], "Bearer alice");
    assert_eq!(seen[0]["accept"], "application/json");
    assert!(!seen[0].contains_key("x-request-id"));
    assert!(!seen[0].contains_key("user-agent"));
}

#[tokio::test(start_paused = true)]
async fn http_changes_are_told_by_etag_or_body_not_by_other_headers() {
    let upstream = HttpUpstream::default();
    upstream.bodies.lock().unwrap().extend([
        ("v1", None),
        ("v1", None),
        ("v2", None),
        ("v2-but-same-etag", Some("\"e\"")),
        ("v3-same-etag", Some("\"e\"")),
        ("v3", Some("\"f\"")),
    ]);
    let registry = http_registry(&upstream);
    let mut sub = registry
        .subscribe(
            http::Request::get("http://api/board")
                .body(String::new())
                .unwrap(),
        )
        .unwrap();
    let mut bodies = Vec::new();
    for _ in 0..6 {
        if let Some(u) = sub.next().now_or_never().flatten() {
            bodies.push(u.value().unwrap().body().data().clone());
        }
        pass(5 * SEC).await;
    }
    assert_eq!(upstream.calls.get(), 7);
    assert_eq!(bodies, ["v1", "v2", "v2-but-same-etag", "v3"]);

    // One-shot calls get the shared response back as the caller's type.
    let res = registry
        .clone()
        .oneshot(
            http::Request::get("http://api/board")
                .body(String::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.headers()["etag"], "\"f\"");
}

#[tokio::test(start_paused = true)]
async fn a_5xx_answer_reaches_subscribers_as_an_error_with_the_last_good_value() {
    let upstream = HttpUpstream::default();
    upstream
        .bodies
        .lock()
        .unwrap()
        .extend([("v1", None), ("!down", None)]);
    let registry = http_registry(&upstream);
    let mut sub = registry
        .subscribe(
            http::Request::get("http://api/board")
                .body(String::new())
                .unwrap(),
        )
        .unwrap();
    let first = sub.next().await.unwrap();
    assert_eq!(first.value().unwrap().body().data(), "v1");

    pass(5 * SEC).await;
    let failed = sub.next().await.unwrap();
    assert_eq!(failed.version(), 2);
    let err = failed.error().expect("a 5xx is an error");
    let status = herdsman::error::find::<herdsman::registry::UpstreamStatus>(err)
        .expect("it says which status");
    assert_eq!(status.status(), 500);
    assert_eq!(failed.last_good().unwrap().body().data(), "v1");
    assert_eq!(registry.handle().hooks()[0].errors, 1);
}

#[tokio::test(start_paused = true)]
async fn subscriptions_are_keyed_by_their_canonical_request() {
    // The key function sees the whole request; the canonical request drops
    // what follows '#', so that part must not split the key.
    let upstream = Upstream::changing_every(1);
    let registry = layer()
        .with_canonical(|req: &&'static str| -> &'static str { req.split('#').next().unwrap() })
        .layer(upstream.clone());
    let mut subs: Vec<Sub> = ["/a#tab-1", "/a#tab-2", "/a#tab-3"]
        .into_iter()
        .map(|req| registry.subscribe(req).unwrap())
        .collect();
    settle().await;
    assert_eq!(registry.handle().stats().keys, 1);
    assert_eq!(registry.handle().hooks()[0].subscribers, 3);
    assert_eq!(
        upstream.calls_to("/a").len(),
        1,
        "polled with the canonical request"
    );

    pass(5 * SEC).await;
    assert_eq!(upstream.calls(), 2, "one call per interval for all three");
    for sub in &mut subs {
        assert_eq!(values(&ready_updates(sub)).last().unwrap(), "/a@1");
    }
}

#[tokio::test(start_paused = true)]
async fn a_restarted_loop_gives_unchanged_content_the_same_fingerprint() {
    let upstream = Upstream::answering(|req, n| Ok(format!("{req}@{}", n / 2)));
    let registry = layer().layer(upstream.clone());
    let mut sub = registry.subscribe("/a").unwrap();
    let first = sub.next().await.unwrap();
    drop(sub);
    settle().await;
    assert_eq!(registry.handle().stats().keys, 0);

    // A new loop: its version starts again, its fingerprint does not.
    let mut sub = registry.subscribe("/a").unwrap();
    let again = sub.next().await.unwrap();
    assert_eq!((first.version(), again.version()), (1, 1));
    assert_eq!(again.value(), first.value());
    assert_eq!(again.fingerprint(), first.fingerprint());
    drop(sub);
    settle().await;

    let mut sub = registry.subscribe("/a").unwrap();
    let changed = sub.next().await.unwrap();
    assert_eq!(changed.value().unwrap(), "/a@1");
    assert_ne!(changed.fingerprint(), first.fingerprint());
}

#[tokio::test(start_paused = true)]
async fn next_attempt_is_the_interval_after_a_success_and_the_backoff_after_failures() {
    let upstream = Upstream::answering(|req, n| match n {
        0 => Ok(format!("{req}@0")),
        _ => Err(UpstreamDown(n)),
    });
    let registry = layer()
        .with_interval(2 * SEC)
        .with_backoff(SEC, 10 * SEC)
        .layer(upstream.clone());
    let mut sub = registry.subscribe("/a").unwrap();
    let first = sub.next().await.unwrap();
    assert_eq!(sub.next_attempt(), Some(first.fetched_at() + 2 * SEC));

    // Failures 1 to 5: 2 s (1 s raised to the interval), 2, 4, 8, 10 (the cap).
    let mut waits = Vec::new();
    for _ in 0..5 {
        let due = sub.next_attempt().unwrap();
        time::sleep_until(due + SEC / 10).await;
        settle().await;
        let fetched = registry.handle().hooks()[0].last_fetch.unwrap();
        assert_eq!(fetched, due, "the loop polled when it said it would");
        waits.push((sub.next_attempt().unwrap() - fetched).as_secs());
    }
    assert_eq!(waits, [2, 2, 4, 8, 10]);
    assert_eq!(
        registry.handle().hooks()[0].next_attempt,
        sub.next_attempt()
    );
}

fn shared(response: http::Response<&'static str>) -> http::Response<SharedBody> {
    HttpShare
        .share(response.map(HttpBody::<()>::full))
        .unwrap_or_else(|_| panic!("a buffered body is shared"))
}

fn json() -> http::response::Builder {
    http::Response::builder().header("content-type", "application/json")
}

#[test]
fn http_fingerprints_are_fixed_across_processes_and_releases() {
    // XXH3-64 (seed 0) of the status, the content headers and the body: the
    // same number in every process, replica and release. A change here
    // changes every client-visible ETag and SSE id. The expected values
    // come from the reference C implementation (libxxhash 0.8.1) over the
    // documented bytes (little-endian u64s; a part is its length, then its
    // bytes):
    //   200, 0 (no strong ETag), then per content header its count and
    //   values (Content-Type: 1, "application/json"; the other five: 0),
    //   then the body "[]";
    //   200, 1 (a strong ETag), then "\"v7\"".
    let plain = shared(json().body("[]").unwrap());
    assert_eq!(HttpFingerprint.fingerprint(&plain), 0xc035_c81a_0880_109c);
    let tagged = shared(json().header("etag", "\"v7\"").body("[]").unwrap());
    assert_eq!(HttpFingerprint.fingerprint(&tagged), 0x8347_3457_9105_3b61);
}

#[test]
fn http_fingerprints_see_the_content_and_nothing_that_changes_per_response() {
    let fp = |r: http::Response<&'static str>| HttpFingerprint.fingerprint(&shared(r));
    let base = fp(json().body("[]").unwrap());
    let per_response = json()
        .header("date", "Tue, 01 Dec 2026 10:00:00 GMT")
        .header("age", "12")
        .header("cache-status", "herdsman; hit")
        .header("x-request-id", "42")
        .header("etag", "W/\"weak\"")
        .body("[]")
        .unwrap();
    assert_eq!(
        fp(per_response),
        base,
        "per-response headers and weak tags are ignored"
    );

    let differs = [
        json().body("[1]").unwrap(),
        json().status(404).body("[]").unwrap(),
        http::Response::builder().body("[]").unwrap(),
        json()
            .header("content-encoding", "gzip")
            .body("[]")
            .unwrap(),
        json().header("content-language", "fr").body("[]").unwrap(),
    ];
    for response in differs {
        assert_ne!(fp(response), base);
    }

    // A strong ETag stands for the bytes: the body is not hashed.
    let tagged = |body| fp(json().header("etag", "\"v7\"").body(body).unwrap());
    assert_eq!(tagged("[]"), tagged("[1]"));
    assert_ne!(
        tagged("[]"),
        fp(json().header("etag", "\"v8\"").body("[]").unwrap())
    );
    // Two ETag values, or a malformed one, are no validator.
    let two = json()
        .header("etag", "\"a\"")
        .header("etag", "\"b\"")
        .body("[]")
        .unwrap();
    let malformed = json().header("etag", "v7").body("[]").unwrap();
    assert_eq!(fp(two), fp(json().body("[]").unwrap()));
    assert_eq!(fp(malformed), fp(json().body("[]").unwrap()));
}

#[tokio::test(start_paused = true)]
async fn a_stale_copy_from_below_is_a_failed_poll_whose_good_value_is_that_copy() {
    let upstream = HttpUpstream::default();
    upstream
        .bodies
        .lock()
        .unwrap()
        .extend([("~v1", None), ("~v1", None), ("v2", None)]);
    let registry = ServiceBuilder::new()
        .layer(
            RegistryLayer::http(HttpKey::new())
                .with_jitter(0.0)
                .with_interval(2 * SEC)
                .with_backoff(4 * SEC, 60 * SEC),
        )
        .layer(BufferLayer::new())
        .service(upstream.clone());
    let mut sub = registry
        .subscribe(
            http::Request::get("http://api/board")
                .body(String::new())
                .unwrap(),
        )
        .unwrap();
    let update = sub.next().await.unwrap();
    let err = update.error().expect("a stale copy is no fresh value");
    assert!(find::<StaleAnswer>(err).is_some());
    let good = update.good().expect("the stale copy is the good value");
    assert_eq!(good.value().unwrap().body().data(), "v1");
    let fresh_v1 = shared(http::Response::builder().body("v1").unwrap());
    assert_eq!(
        good.fingerprint(),
        HttpFingerprint.fingerprint(&fresh_v1),
        "the copy is identified by its content"
    );
    assert_eq!(
        registry.handle().stats().errors,
        1,
        "counted as a failed poll"
    );

    // It backs off (4 s, not the 2 s interval); the same stale copy again
    // is no news.
    pass(2 * SEC).await;
    assert_eq!(upstream.calls.get(), 1);
    pass(2 * SEC).await;
    assert_eq!(upstream.calls.get(), 2);
    assert!(sub.next().now_or_never().is_none());
    assert_eq!(registry.handle().stats().errors, 2);

    // Fresh data again.
    pass(8 * SEC).await;
    let update = sub.next().await.unwrap();
    assert_eq!(update.value().unwrap().body().data(), "v2");
}

#[tokio::test(start_paused = true)]
async fn services_of_one_layer_share_loops_by_value_type() {
    let layer = layer();
    let upstream = Upstream::changing_every(1);
    let (text, text_again) = (layer.layer(upstream.clone()), layer.layer(upstream.clone()));
    let lengths = layer.layer(tower::service_fn(|req: &'static str| async move {
        Ok::<usize, Infallible>(req.len())
    }));
    // Two services of one value type: one loop for the key.
    let mut a = text.subscribe("/a").unwrap();
    let mut b = text_again.subscribe("/a").unwrap();
    assert_eq!(a.next().await.unwrap().value().unwrap(), "/a@0");
    assert_eq!(b.next().await.unwrap().value().unwrap(), "/a@0");
    assert_eq!(upstream.calls(), 1);
    // The key is polled with another value type: loops of their own, never
    // a value of the wrong type.
    let mut c = lengths.subscribe("/a").unwrap();
    let mut d = lengths.subscribe("/a").unwrap();
    assert_eq!(*c.next().await.unwrap().value().unwrap(), 2);
    assert_eq!(*d.next().await.unwrap().value().unwrap(), 2);
    let stats = layer.handle().stats();
    assert_eq!(
        (
            stats.keys,
            stats.private_loops,
            stats.subscribers,
            stats.tasks
        ),
        (1, 2, 4, 3)
    );
    assert_eq!(layer.handle().hooks().len(), 1);
    // One-shot calls are answered from their own value type's loop only.
    assert_eq!(text.clone().oneshot("/a").await.unwrap(), "/a@0");
    assert_eq!(lengths.clone().oneshot("/a").await.unwrap(), 2);
    assert_eq!(upstream.calls(), 1);
    // Once the text loop is gone, the other type starts the shared one.
    drop((a, b, c, d));
    settle().await;
    let mut e = lengths.subscribe("/a").unwrap();
    let mut f = lengths.subscribe("/a").unwrap();
    assert_eq!(*e.next().await.unwrap().value().unwrap(), 2);
    assert_eq!(*f.next().await.unwrap().value().unwrap(), 2);
    let stats = layer.handle().stats();
    assert_eq!((stats.keys, stats.private_loops, stats.tasks), (1, 0, 1));
}
