//! Behaviour of the Cache layer with plain `Clone` responses, paused time.

mod support;

use std::{convert::Infallible, sync::Arc, time::Duration};

use herdsman::{
    cache::{CacheLayer, CachePolicy, ClassSettings},
    class::Class,
    clock::Clock,
    event::MemorySource,
    key::Key,
    share::Share,
    BoxError,
};
use proptest::prelude::*;
use support::{assert_no_request, pass, settle, waiting_request, Upstream};
use tokio::time;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_test::{assert_request_eq, mock};

fn key(req: &&'static str) -> Option<Key> {
    (!req.starts_with("skip")).then(|| Key::from(*req))
}

type Layer = CacheLayer<fn(&&'static str) -> Option<Key>, String>;

fn cache() -> Layer {
    CacheLayer::new(key as fn(&&'static str) -> Option<Key>).with_clock(Clock::Tokio)
}

fn stack(
    layer: &Layer,
    upstream: &Upstream,
) -> impl tower::Service<&'static str, Response = String, Error = BoxError, Future: Send> + Clone {
    ServiceBuilder::new()
        .layer(layer.clone())
        .service(upstream.clone())
}

const TTL: Duration = Duration::from_secs(5);

#[tokio::test(start_paused = true)]
async fn a_fresh_entry_is_served_until_its_ttl_ends() {
    let upstream = Upstream::new(Duration::from_millis(10));
    let layer = cache().with_ttl(TTL);
    let svc = stack(&layer, &upstream);

    // The TTL counts from when the response arrived.
    assert_eq!(svc.clone().oneshot("a").await.unwrap(), "a#1");
    time::advance(TTL - Duration::from_millis(1)).await;
    assert_eq!(svc.clone().oneshot("a").await.unwrap(), "a#1");
    time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        svc.clone().oneshot("a").await.unwrap(),
        "a#2",
        "expired at TTL"
    );
    let stats = layer.handle().stats();
    assert_eq!((stats.hits, stats.misses, stats.stored), (1, 2, 2));
}

#[tokio::test(start_paused = true)]
async fn the_default_fast_clock_does_not_follow_a_paused_tokio_clock() {
    // The cache's own clock by default: advancing tokio's paused clock
    // past the TTL does not age the entry (the reason paused-time tests
    // give the layer `Clock::Tokio`, as `cache()` does).
    let upstream = Upstream::new(Duration::ZERO);
    let layer = CacheLayer::new(key as fn(&&'static str) -> Option<Key>).with_ttl(TTL);
    let svc = stack(&layer, &upstream);
    assert_eq!(svc.clone().oneshot("a").await.unwrap(), "a#1");
    time::advance(TTL * 10).await;
    assert_eq!(svc.clone().oneshot("a").await.unwrap(), "a#1");
    let stats = layer.handle().stats();
    assert_eq!((stats.hits, stats.misses), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn keys_are_cached_apart() {
    let upstream = Upstream::new(Duration::ZERO);
    let layer = cache();
    let svc = stack(&layer, &upstream);
    assert_eq!(svc.clone().oneshot("a").await.unwrap(), "a#1");
    assert_eq!(svc.clone().oneshot("b").await.unwrap(), "b#2");
    assert_eq!(svc.clone().oneshot("a").await.unwrap(), "a#1");
    assert_eq!(svc.clone().oneshot("skip").await.unwrap(), "skip#3");
    assert_eq!(svc.clone().oneshot("skip").await.unwrap(), "skip#4");
}

#[tokio::test(start_paused = true)]
async fn a_ttl_ending_while_a_slow_call_is_in_flight_stores_the_new_response() {
    let upstream = Upstream::new(Duration::from_secs(3));
    let layer = cache().with_ttl(TTL);
    let svc = stack(&layer, &upstream);

    assert_eq!(svc.clone().oneshot("a").await.unwrap(), "a#1");
    time::advance(Duration::from_secs(4)).await;
    // Misses at 5 s, while the entry expires; the answer comes at 8 s.
    time::advance(Duration::from_secs(1)).await;
    let slow = tokio::spawn(svc.clone().oneshot("a"));
    assert_eq!(slow.await.unwrap().unwrap(), "a#2");
    assert_eq!(
        svc.clone().oneshot("a").await.unwrap(),
        "a#2",
        "fresh again for a TTL"
    );
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_ttl_of_zero_stores_nothing() {
    let upstream = Upstream::new(Duration::ZERO);
    let layer = cache().with_ttl(Duration::ZERO);
    let svc = stack(&layer, &upstream);
    assert_eq!(svc.clone().oneshot("a").await.unwrap(), "a#1");
    assert_eq!(svc.clone().oneshot("a").await.unwrap(), "a#2");
    let stats = layer.handle().stats();
    assert_eq!((stats.entries, stats.not_stored), (0, 2));
}

#[tokio::test(start_paused = true)]
async fn errors_are_never_stored() {
    let upstream = Upstream::new(Duration::ZERO);
    let layer = cache();
    let svc = stack(&layer, &upstream);
    assert!(svc.clone().oneshot("fail").await.is_err());
    assert!(svc.clone().oneshot("fail").await.is_err());
    assert_eq!(upstream.calls(), 2);
    assert_eq!(layer.handle().stats().entries, 0);
}

#[tokio::test(start_paused = true)]
async fn one_entry_of_capacity_holds_the_latest_key_under_churn() {
    let upstream = Upstream::new(Duration::ZERO);
    let layer = cache().with_max_entries(1);
    let svc = stack(&layer, &upstream);
    for (i, req) in ["a", "b", "c", "a", "b"].into_iter().enumerate() {
        assert_eq!(
            svc.clone().oneshot(req).await.unwrap(),
            format!("{req}#{}", i + 1)
        );
        assert!(layer.handle().stats().entries <= 1);
    }
    assert_eq!(
        svc.clone().oneshot("b").await.unwrap(),
        "b#5",
        "the latest is kept"
    );
}

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_serves_stale_and_refreshes_once() {
    let (upstream, mut handle) = mock::pair::<&'static str, String>();
    let layer = cache()
        .with_ttl(TTL)
        .with_stale_while_revalidate(Duration::from_secs(10));
    let svc = ServiceBuilder::new().layer(layer.clone()).service(upstream);

    let first = tokio::spawn(svc.clone().oneshot("a"));
    assert_request_eq!(handle, "a").send_response("a#1".to_string());
    assert_eq!(first.await.unwrap().unwrap(), "a#1");
    time::advance(TTL).await;
    let stale = futures_util::future::join_all((0..1000).map(|_| svc.clone().oneshot("a"))).await;
    assert!(
        stale.into_iter().all(|r| r.unwrap() == "a#1"),
        "all served stale at once"
    );
    settle().await; // let the spawned refresh reach the upstream
    let (req, refresh) = waiting_request(&mut handle);
    assert_eq!(req, "a");
    assert_no_request(&mut handle); // exactly one refresh
    let stats = layer.handle().stats();
    assert_eq!((stats.stale_while_revalidate, stats.refreshes), (1000, 1));

    refresh.send_response("a#2".to_string());
    settle().await; // the refresh stores its response
    assert_eq!(svc.clone().oneshot("a").await.unwrap(), "a#2");
    assert_no_request(&mut handle);
}

#[tokio::test(start_paused = true)]
async fn past_both_windows_an_entry_is_gone() {
    let upstream = Upstream::new(Duration::ZERO);
    let layer = cache()
        .with_ttl(TTL)
        .with_stale_while_revalidate(Duration::from_secs(1));
    let svc = stack(&layer, &upstream);
    assert_eq!(svc.clone().oneshot("a").await.unwrap(), "a#1");
    time::advance(TTL + Duration::from_secs(1)).await;
    assert_eq!(svc.clone().oneshot("a").await.unwrap(), "a#2");
    assert_eq!(layer.handle().stats().stale_while_revalidate, 0);
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_stands_in_for_a_failed_call() {
    let upstream = Upstream::new(Duration::ZERO);
    let layer = cache()
        .with_ttl(TTL)
        .with_stale_if_error(Duration::from_secs(60));
    let svc = stack(&layer, &upstream);

    assert_eq!(svc.clone().oneshot("a").await.unwrap(), "a#1");
    time::advance(TTL).await;
    upstream.set_down(true);
    assert_eq!(
        svc.clone().oneshot("a").await.unwrap(),
        "a#1",
        "stale copy for the error"
    );
    assert_eq!(layer.handle().stats().stale_if_error, 1);

    upstream.set_down(false);
    assert_eq!(
        svc.clone().oneshot("a").await.unwrap(),
        "a#3",
        "recovered: fresh data"
    );

    time::advance(TTL + Duration::from_secs(60)).await;
    upstream.set_down(true);
    assert!(
        svc.clone().oneshot("a").await.is_err(),
        "past the window: the error"
    );
}

#[tokio::test(start_paused = true)]
async fn classes_have_their_own_ttls() {
    let upstream = Upstream::new(Duration::ZERO);
    let short = ClassSettings {
        ttl: Duration::from_secs(1),
        ..ClassSettings::default()
    };
    let layer = cache()
        .with_ttl(Duration::from_secs(60))
        .with_class("short", short)
        .with_classifier(|req: &&'static str| {
            if req.starts_with('s') {
                Class::new("short")
            } else {
                Class::default()
            }
        });
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(upstream.clone());

    assert_eq!(svc.clone().oneshot("slow").await.unwrap(), "slow#1");
    assert_eq!(svc.clone().oneshot("long").await.unwrap(), "long#2");
    time::advance(Duration::from_secs(1)).await;
    assert_eq!(svc.clone().oneshot("slow").await.unwrap(), "slow#3");
    assert_eq!(svc.clone().oneshot("long").await.unwrap(), "long#2");

    assert_eq!(layer.handle().invalidate_class(&Class::new("short")), 1);
    assert_eq!(layer.handle().stats().entries, 1);
}

#[tokio::test(start_paused = true)]
async fn services_from_one_layer_value_share_one_store() {
    let upstream = Upstream::new(Duration::ZERO);
    let layer = cache();
    assert_eq!(stack(&layer, &upstream).oneshot("a").await.unwrap(), "a#1");
    assert_eq!(stack(&layer, &upstream).oneshot("a").await.unwrap(), "a#1");
    assert_eq!(
        stack(&cache(), &upstream).oneshot("a").await.unwrap(),
        "a#2"
    );
}

#[tokio::test(start_paused = true)]
async fn entries_can_be_invalidated_by_key_and_cleared() {
    let upstream = Upstream::new(Duration::ZERO);
    let layer = cache();
    let svc = stack(&layer, &upstream);
    svc.clone().oneshot("a").await.unwrap();
    svc.clone().oneshot("b").await.unwrap();
    let handle = layer.handle();
    assert!(handle.invalidate(&Key::from("a")));
    assert!(!handle.invalidate(&Key::from("a")));
    assert_eq!(svc.clone().oneshot("a").await.unwrap(), "a#3");
    assert_eq!(handle.clear(), 2);
    assert_eq!(handle.stats().entries, 0);
    assert_eq!(handle.stats().invalidated, 3);
}

/// Stores `Vec<u8>` bodies weighed by their length.
#[derive(Clone, Copy)]
struct Sized;

impl Share<Vec<u8>> for Sized {
    type Shared = Vec<u8>;
    fn share(&self, value: Vec<u8>) -> Result<Vec<u8>, Vec<u8>> {
        Ok(value)
    }
    fn unshare(&self, shared: &Vec<u8>) -> Vec<u8> {
        shared.clone()
    }
}

impl CachePolicy<u32, Vec<u8>> for Sized {
    fn weigh(&self, shared: &Vec<u8>) -> usize {
        shared.len()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_byte_bound_is_never_exceeded(
        max_bytes in 1_000u64..200_000,
        sizes in prop::collection::vec(0usize..20_000, 1..200),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        runtime.block_on(async {
            let layer = CacheLayer::new(|k: &u32| Some(Key::from(u64::from(*k))))
                .with_clock(Clock::Tokio)
                .with_policy(Sized)
                .with_max_bytes(max_bytes);
            let sizes = Arc::new(sizes);
            let table = sizes.clone();
            let svc = ServiceBuilder::new()
                .layer(layer.clone())
                .service(service_fn(move |i: u32| {
                    let len = table[i as usize];
                    async move { Ok::<_, Infallible>(vec![7u8; len]) }
                }));
            for i in 0..sizes.len() as u32 {
                let body = svc.clone().oneshot(i).await.unwrap();
                prop_assert_eq!(body.len(), sizes[i as usize]);
                let stats = layer.handle().stats();
                prop_assert!(stats.bytes <= max_bytes, "{} > {}", stats.bytes, max_bytes);
            }
            Ok(())
        })?;
    }
}

#[tokio::test(start_paused = true)]
async fn a_weigher_makes_the_byte_bound_count_heap_memory() {
    let layer = CacheLayer::new(|k: &u32| Some(Key::from(u64::from(*k))))
        .with_clock(Clock::Tokio)
        .with_max_bytes(20_000)
        .with_weigher(|body: &bytes::Bytes| body.len());
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(|_: u32| async {
            Ok::<_, Infallible>(bytes::Bytes::from(vec![1u8; 1_000]))
        }));
    for i in 0..100 {
        svc.clone().oneshot(i).await.unwrap();
    }
    let stats = layer.handle().stats();
    assert!(stats.bytes <= 20_000, "{stats:?}");
    assert!(
        stats.entries < 20,
        "each entry weighs its 1,000 bytes: {stats:?}"
    );
}

/// The default sweep interval.
const SWEEP: Duration = Duration::from_secs(30);

/// `n` distinct requests.
fn requests(n: usize) -> Vec<&'static str> {
    (0..n)
        .map(|i| &*Box::leak(format!("k{i}").into_boxed_str()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn expired_entries_are_swept_and_the_memory_figure_drops_with_them() {
    let upstream = Upstream::new(Duration::ZERO);
    let layer = cache().with_ttl(TTL).with_weigher(|s: &String| s.len());
    let svc = stack(&layer, &upstream);
    for req in requests(100) {
        svc.clone().oneshot(req).await.unwrap();
    }
    let handle = layer.handle();
    assert_eq!(handle.stats().entries, 100);
    assert!(handle.memory_bytes() > 100 * 96, "{:?}", handle.stats());

    // Nobody asks again: only the sweep can free them.
    pass(SWEEP).await;
    assert_eq!(handle.stats().entries, 0, "{:?}", handle.stats());
    assert_eq!(handle.memory_bytes(), 0);
    assert_eq!(handle.stats().expired, 100);
}

#[tokio::test(start_paused = true)]
async fn a_flood_larger_than_one_pass_is_swept_within_one_interval() {
    let upstream = Upstream::new(Duration::ZERO);
    let layer = cache().with_ttl(TTL);
    let svc = stack(&layer, &upstream);
    for req in requests(25_000) {
        svc.clone().oneshot(req).await.unwrap();
    }
    pass(SWEEP).await;
    let stats = layer.handle().stats();
    assert_eq!((stats.entries, stats.bytes, stats.expired), (0, 0, 25_000));
}

#[tokio::test(start_paused = true)]
async fn the_sweep_interval_sets_how_soon_expired_entries_leave() {
    let upstream = Upstream::new(Duration::ZERO);
    let layer = cache()
        .with_ttl(TTL)
        .with_sweep_interval(Duration::from_secs(1));
    let svc = stack(&layer, &upstream);
    svc.clone().oneshot("a").await.unwrap();
    pass(TTL - Duration::from_millis(1)).await;
    assert_eq!(layer.handle().stats().entries, 1, "fresh: kept");
    pass(Duration::from_secs(1)).await;
    assert_eq!(layer.handle().stats().entries, 0);
}

#[tokio::test(start_paused = true)]
async fn a_handle_sweeps_at_once_without_waiting_for_the_task() {
    let upstream = Upstream::new(Duration::ZERO);
    let layer = cache().with_ttl(TTL);
    let svc = stack(&layer, &upstream);
    svc.clone().oneshot("a").await.unwrap();
    svc.clone().oneshot("b").await.unwrap();
    time::advance(TTL).await;
    assert_eq!(layer.handle().sweep(), 2);
    assert_eq!(layer.handle().stats().entries, 0);
}

#[tokio::test(start_paused = true)]
async fn an_entry_within_stale_if_error_is_kept_by_the_sweep() {
    let upstream = Upstream::new(Duration::ZERO);
    let window = Duration::from_secs(300);
    let layer = cache().with_ttl(TTL).with_stale_if_error(window);
    let svc = stack(&layer, &upstream);
    assert_eq!(svc.clone().oneshot("a").await.unwrap(), "a#1");

    pass(SWEEP * 3).await;
    assert_eq!(layer.handle().stats().entries, 1, "three sweeps kept it");
    upstream.set_down(true);
    assert_eq!(svc.clone().oneshot("a").await.unwrap(), "a#1");

    // Past the window, the next sweep frees it.
    pass(TTL + window).await;
    assert_eq!(layer.handle().stats().entries, 0);
    assert_eq!(layer.handle().memory_bytes(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_sweep_ends_when_the_layer_is_dropped() {
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let upstream = Upstream::new(Duration::ZERO);
    let layer = cache().with_ttl(TTL);
    let svc = stack(&layer, &upstream);
    assert_eq!(tasks(), 0, "nothing stored, nothing to sweep");
    svc.clone().oneshot("a").await.unwrap();
    svc.clone().oneshot("b").await.unwrap();
    settle().await;
    assert_eq!(tasks(), 1, "one sweep for the store");

    drop((svc, layer));
    pass(SWEEP).await;
    assert_eq!(tasks(), 0, "the sweep ended with the store");
}
