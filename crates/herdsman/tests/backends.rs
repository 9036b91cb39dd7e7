//! The backend seams: the in-memory defaults driven through their traits,
//! and backends of our own plugged into the layers, to show that the layers
//! really go through the seams.

use std::{
    convert::Infallible,
    future::Future,
    num::NonZeroU32,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::Duration,
};

use futures_util::{FutureExt, StreamExt};
use herdsman::{
    backend::{
        Answer, BudgetKey, FlightBackend, Lead, LocalFlights, LocalLoops, LocalStore, LoopBackend,
        RateBackend, RateBudgets, RateQuota, Role, RuleId, Shelved, StoreBackend, WhenFull,
    },
    cache::CacheLayer,
    class::Class,
    clock::Clock,
    dedup::DedupLayer,
    error::{find, BoxError},
    event::{Event, Invalidation, MemorySource, Observer},
    key::Key,
    limit::{ClassLimits, GovernorRates, LimitLayer, RateKey, RateLimited, RateRule},
    registry::{RegistryLayer, Subscription, Update},
};
use tokio::{sync::Notify, time};
use tower::{service_fn, Layer, Service, ServiceExt};

fn keyed_quota(interval: Duration, burst: u32, max_keys: usize) -> RateQuota {
    RateQuota {
        rule: RuleId::new("default", 0),
        interval,
        burst: NonZeroU32::new(burst).unwrap(),
        keyed: true,
        max_keys,
        when_full: WhenFull::Conform,
    }
}

fn caller(n: u64) -> BudgetKey {
    BudgetKey {
        class: 0,
        identity: Some(Key::from(n)),
    }
}

#[tokio::test(start_paused = true)]
async fn the_governor_budgets_let_a_burst_through_then_one_per_interval() {
    let budgets = GovernorRates.budgets(&keyed_quota(Duration::from_secs(1), 2, 10));
    assert_eq!(budgets.check(&caller(1)), Ok(()));
    assert_eq!(budgets.check(&caller(1)), Ok(()));
    let wait = budgets.check(&caller(1)).unwrap_err();
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
    // Another key has a budget of its own.
    assert_eq!(budgets.check(&caller(2)), Ok(()));
    assert_eq!(budgets.keys(), 2);

    time::advance(wait).await;
    assert_eq!(budgets.check(&caller(1)), Ok(()));
    assert!(budgets.check(&caller(1)).is_err());
}

#[tokio::test(start_paused = true)]
async fn full_governor_budgets_decide_other_keys_by_their_policy() {
    let conform = GovernorRates.budgets(&keyed_quota(Duration::from_secs(60), 1, 1));
    assert_eq!(conform.check(&caller(1)), Ok(()));
    assert_eq!(conform.check(&caller(2)), Ok(()));
    assert_eq!(conform.check(&caller(2)), Ok(()));
    assert_eq!((conform.keys(), conform.untracked()), (1, 2));

    let refuse = GovernorRates.budgets(&RateQuota {
        when_full: WhenFull::Refuse,
        ..keyed_quota(Duration::from_secs(60), 1, 1)
    });
    assert_eq!(refuse.check(&caller(1)), Ok(()));
    assert!(refuse.check(&caller(2)).is_err());
}

/// A backend of our own: a fixed number of requests per key, ever, and a
/// record of the quotas it was asked for and the checks it made.
#[derive(Clone, Default)]
struct Allowance {
    quotas: Arc<Mutex<Vec<RateQuota>>>,
    checks: Arc<AtomicU64>,
}

struct AllowanceBudgets {
    left: Mutex<std::collections::HashMap<BudgetKey, u32>>,
    burst: u32,
    checks: Arc<AtomicU64>,
}

impl RateBackend for Allowance {
    type Budgets = AllowanceBudgets;

    fn budgets(&self, quota: &RateQuota) -> AllowanceBudgets {
        self.quotas.lock().unwrap().push(*quota);
        AllowanceBudgets {
            left: Mutex::default(),
            burst: quota.burst.get(),
            checks: self.checks.clone(),
        }
    }
}

impl RateBudgets for AllowanceBudgets {
    fn check(&self, key: &BudgetKey) -> Result<(), Duration> {
        self.checks.fetch_add(1, Ordering::Relaxed);
        let mut left = self.left.lock().unwrap();
        let left = left.entry(key.clone()).or_insert(self.burst);
        if *left == 0 {
            return Err(Duration::from_secs(3600));
        }
        *left -= 1;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_limit_layer_keeps_its_rate_budgets_in_the_backend_it_is_given() {
    let backend = Allowance::default();
    let rule = RateRule::per_second(2)
        .keyed_by(RateKey::Identity)
        .with_max_keys(50);
    let layer = LimitLayer::new(ClassLimits::unlimited().with_rate(rule))
        .with_identity(|req: &u64| Some(Key::from(*req)))
        .with_rate_backend(backend.clone());
    let svc = layer.layer(service_fn(
        |req: u64| async move { Ok::<_, Infallible>(req) },
    ));

    // Two per caller, then never again (GCRA would refill after 500 ms).
    for _ in 0..2 {
        assert_eq!(svc.clone().oneshot(1).await.unwrap(), 1);
    }
    time::advance(Duration::from_secs(10)).await;
    let err: BoxError = svc.clone().oneshot(1).await.unwrap_err();
    let limited = find::<RateLimited>(&*err).expect("rate limited");
    assert_eq!(limited.retry_after(), Duration::from_secs(3600));
    assert_eq!(svc.clone().oneshot(2).await.unwrap(), 2);

    assert_eq!(backend.checks.load(Ordering::Relaxed), 4);
    let quotas = backend.quotas.lock().unwrap().clone();
    assert_eq!(
        quotas,
        [RateQuota {
            rule: RuleId::new("default", 0),
            interval: Duration::from_millis(500),
            burst: NonZeroU32::new(2).unwrap(),
            keyed: true,
            max_keys: 50,
            when_full: WhenFull::Conform,
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn an_alert_only_rule_asks_its_backend_for_warning_budgets_too() {
    let backend = Allowance::default();
    let rule = RateRule::per_minute(1).alert_only();
    let layer = LimitLayer::new(ClassLimits::unlimited().with_rate(rule))
        .with_rate_backend(backend.clone());
    let mut svc = layer.layer(service_fn(
        |req: u64| async move { Ok::<_, Infallible>(req) },
    ));
    for n in 0..3 {
        let ready = svc.ready().await.unwrap();
        assert_eq!(ready.call(n).await.unwrap(), n);
    }
    let quotas = backend.quotas.lock().unwrap().clone();
    assert_eq!(quotas.len(), 2);
    assert!(!quotas[0].keyed);
    assert_eq!(
        (quotas[1].interval, quotas[1].burst.get()),
        (Duration::from_secs(60), 1)
    );
    assert_eq!(quotas[1].when_full, WhenFull::Refuse);
    // Three budget checks, and a warning check for each of the two over.
    assert_eq!(backend.checks.load(Ordering::Relaxed), 5);
}

#[tokio::test]
async fn the_local_loop_backend_polls_every_key_here() {
    let key = Key::from(1u64);
    let answer = LocalLoops.claim(&key, Duration::from_secs(5));
    assert!(matches!(answer, Answer::Now(Role::Poll)));
    // No other replica announces anything.
    assert!(LocalLoops.changed(&key).now_or_never().is_none());
}

/// A cluster as one replica sees it: the role the test gives it, the
/// changes it announced, and a notice the test sends as another replica.
#[derive(Clone)]
struct Cluster {
    role: Arc<Mutex<Role>>,
    claims: Arc<AtomicU64>,
    announced: Arc<Mutex<Vec<(Key, u64)>>>,
    released: Arc<Mutex<Vec<Key>>>,
    notice: Arc<Notify>,
}

impl Cluster {
    fn new(role: Role) -> Self {
        Cluster {
            role: Arc::new(Mutex::new(role)),
            claims: Arc::default(),
            announced: Arc::default(),
            released: Arc::default(),
            notice: Arc::default(),
        }
    }
}

impl LoopBackend for Cluster {
    fn claim(&self, _: &Key, _: Duration) -> Answer<Role> {
        self.claims.fetch_add(1, Ordering::Relaxed);
        let role = *self.role.lock().unwrap();
        // As a network call would: answered later.
        Answer::Later(Box::pin(async move { role }))
    }

    fn announce(&self, key: &Key, fingerprint: u64) {
        self.announced
            .lock()
            .unwrap()
            .push((key.clone(), fingerprint));
    }

    fn changed(&self, _: &Key) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let notice = self.notice.clone();
        Box::pin(async move { notice.notified().await })
    }

    fn release(&self, key: &Key) {
        self.released.lock().unwrap().push(key.clone());
    }
}

type KeyOf = fn(&&'static str) -> Option<Key>;

fn key_of(req: &&'static str) -> Option<Key> {
    Some(Key::from(*req))
}

/// Lets spawned tasks run until they are all parked.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

fn updates(sub: &mut Subscription<String>) -> Vec<Update<String>> {
    let mut out = Vec::new();
    while let Some(Some(update)) = sub.next().now_or_never() {
        out.push(update);
    }
    out
}

/// A registry over an upstream answering a new value on every call.
fn registry(
    cluster: &Cluster,
    calls: &Arc<AtomicU64>,
) -> impl Fn(&'static str) -> Subscription<String> {
    let calls = calls.clone();
    let upstream = service_fn(move |req: &'static str| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, Infallible>(format!("{req}#{n}")) }
    });
    let registry = RegistryLayer::new(key_of as KeyOf)
        .with_interval(Duration::from_secs(5))
        .with_floor(Duration::from_secs(1))
        .with_jitter(0.0)
        .with_loop_backend(cluster.clone())
        .layer(upstream);
    move |req| registry.subscribe(req).unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_replica_that_polls_announces_each_change_and_releases_the_key_at_the_end() {
    let cluster = Cluster::new(Role::Poll);
    let calls = Arc::new(AtomicU64::new(0));
    let subscribe = registry(&cluster, &calls);
    let mut sub = subscribe("/board");
    settle().await;
    let mut seen: Vec<u64> = updates(&mut sub).iter().map(Update::fingerprint).collect();
    time::sleep(Duration::from_secs(5)).await;
    settle().await;
    seen.extend(updates(&mut sub).iter().map(Update::fingerprint));

    assert_eq!(calls.load(Ordering::SeqCst), 2, "one poll per interval");
    assert_eq!(
        cluster.claims.load(Ordering::Relaxed),
        2,
        "one claim per round"
    );
    assert_eq!(seen.len(), 2);
    let announced = cluster.announced.lock().unwrap().clone();
    assert_eq!(
        announced,
        seen.iter()
            .map(|fp| (Key::from("/board"), *fp))
            .collect::<Vec<_>>()
    );

    drop(sub);
    settle().await;
    assert_eq!(*cluster.released.lock().unwrap(), [Key::from("/board")]);
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_follows_fetches_on_each_notice_or_when_the_claim_ends() {
    let for_at_most = Duration::from_secs(60);
    let cluster = Cluster::new(Role::Follow { for_at_most });
    let calls = Arc::new(AtomicU64::new(0));
    let subscribe = registry(&cluster, &calls);
    let mut sub = subscribe("/board");
    settle().await;
    // A new loop fetches once, for its first value.
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(updates(&mut sub).len(), 1);

    // Intervals pass: the other replica polls, this one does not.
    time::sleep(Duration::from_secs(30)).await;
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // The other replica announces a change: this one fetches it.
    cluster.notice.notify_one();
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(updates(&mut sub).len(), 1);

    // No notice for a whole claim: it fetches and claims again.
    time::sleep(for_at_most).await;
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(cluster.claims.load(Ordering::Relaxed), 3);

    // The other replica is gone: this one polls each interval and
    // announces what it fetched.
    *cluster.role.lock().unwrap() = Role::Poll;
    cluster.notice.notify_one();
    settle().await;
    time::sleep(Duration::from_secs(5)).await;
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    assert_eq!(cluster.announced.lock().unwrap().len(), 2);
}

#[test]
fn the_local_flight_backend_lets_every_leader_call() {
    let key = Key::from(3u64);
    let answer = <LocalFlights as FlightBackend<String>>::lead(&LocalFlights, &key);
    assert!(matches!(answer, Answer::Now(Lead::Call)));
}

/// Single flight across replicas as one replica sees it: the other
/// replicas' answer (if any), a gate the test opens, and what this replica
/// reported.
#[derive(Clone, Default)]
struct Replicas {
    answer: Arc<Mutex<Option<String>>>,
    gate: Arc<Notify>,
    gated: Arc<std::sync::atomic::AtomicBool>,
    leads: Arc<AtomicU64>,
    finished: Arc<Mutex<Vec<Finished>>>,
}

/// A key this replica made the call of, and the value it handed over.
type Finished = (Key, Option<String>);

impl FlightBackend<String> for Replicas {
    const ANSWERS: bool = true;

    fn lead(&self, _: &Key) -> Answer<Lead<String>> {
        self.leads.fetch_add(1, Ordering::SeqCst);
        let answer = self.answer.lock().unwrap().clone();
        let lead = move || answer.map_or(Lead::Call, Lead::Answered);
        if !self.gated.load(Ordering::SeqCst) {
            return Answer::Now(lead());
        }
        let gate = self.gate.clone();
        Answer::Later(Box::pin(async move {
            gate.notified().await;
            lead()
        }))
    }

    fn finish(&self, key: &Key, value: Option<&String>) {
        self.finished
            .lock()
            .unwrap()
            .push((key.clone(), value.cloned()));
    }
}

fn counting_upstream(
    calls: &Arc<AtomicU64>,
) -> impl Service<&'static str, Response = String, Error = Infallible, Future: Send>
       + Clone
       + Send
       + 'static {
    let calls = calls.clone();
    service_fn(move |req: &'static str| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            time::sleep(Duration::from_millis(10)).await;
            Ok::<_, Infallible>(format!("{req} from here"))
        }
    })
}

fn flights_layer(
    replicas: &Replicas,
) -> DedupLayer<KeyOf, herdsman::share::CloneShare, herdsman::class::AllDefault, Replicas> {
    DedupLayer::new(key_of as KeyOf).with_flight_backend(replicas.clone())
}

#[tokio::test(start_paused = true)]
async fn callers_get_the_answer_another_replica_made() {
    let replicas = Replicas::default();
    *replicas.answer.lock().unwrap() = Some("/a from elsewhere".into());
    let calls = Arc::new(AtomicU64::new(0));
    let svc = flights_layer(&replicas).layer(counting_upstream(&calls));

    let (a, b) = tokio::join!(svc.clone().oneshot("/a"), svc.clone().oneshot("/a"));
    assert_eq!(a.unwrap(), "/a from elsewhere");
    assert_eq!(b.unwrap(), "/a from elsewhere");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(replicas.finished.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_leader_waits_for_the_cluster_then_calls_and_hands_the_value_over() {
    let replicas = Replicas::default();
    replicas.gated.store(true, Ordering::SeqCst);
    let calls = Arc::new(AtomicU64::new(0));
    let svc = flights_layer(&replicas).layer(counting_upstream(&calls));

    let a = tokio::spawn(svc.clone().oneshot("/a"));
    let b = tokio::spawn(svc.clone().oneshot("/a"));
    settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 0, "waits for the cluster");
    assert_eq!(
        replicas.leads.load(Ordering::SeqCst),
        1,
        "one local leader asks"
    );

    replicas.gate.notify_one();
    assert_eq!(a.await.unwrap().unwrap(), "/a from here");
    assert_eq!(b.await.unwrap().unwrap(), "/a from here");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        *replicas.finished.lock().unwrap(),
        [(Key::from("/a"), Some("/a from here".to_string()))]
    );

    // A caller alone hands its value over too.
    replicas.gated.store(false, Ordering::SeqCst);
    assert_eq!(svc.oneshot("/b").await.unwrap(), "/b from here");
    assert_eq!(replicas.finished.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_leader_dropped_while_it_waits_for_the_cluster_lets_its_followers_call() {
    let replicas = Replicas::default();
    replicas.gated.store(true, Ordering::SeqCst);
    let calls = Arc::new(AtomicU64::new(0));
    let layer = flights_layer(&replicas);
    let svc = layer.layer(counting_upstream(&calls));

    let leader = tokio::spawn(svc.clone().oneshot("/a"));
    settle().await;
    let follower = tokio::spawn(svc.clone().oneshot("/a"));
    settle().await;
    leader.abort();
    settle().await;

    assert_eq!(follower.await.unwrap().unwrap(), "/a from here");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = layer.handle().stats();
    assert_eq!((stats.leaders, stats.cancelled, stats.entries), (1, 1, 0));
}

#[test]
fn the_local_store_backend_holds_nothing_behind_the_cache() {
    let key = Key::from("/a");
    let backend = LocalStore;
    StoreBackend::<String>::insert(&backend, &key, &"/a".into(), Duration::ZERO, TTL);
    let found: Answer<Option<Shelved<String>>> = backend.lookup(&key);
    assert!(matches!(found, Answer::Now(None)), "{found:?}");
    StoreBackend::<String>::invalidate(&backend, &Invalidation::All);
    assert_eq!(StoreBackend::<String>::memory_bytes(&backend), 0);
}

const TTL: Duration = Duration::from_secs(5);

/// A second-level store that replicas share: a map, answering at once or
/// after a round trip.
#[derive(Clone, Default)]
struct Shelf {
    entries: Arc<Mutex<std::collections::HashMap<Key, (String, Duration)>>>,
    lookups: Arc<AtomicU64>,
    round_trip: bool,
}

impl StoreBackend<String> for Shelf {
    fn lookup(&self, key: &Key) -> Answer<Option<Shelved<String>>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let found = self
            .entries
            .lock()
            .unwrap()
            .get(key)
            .map(|(value, ttl)| Shelved {
                value: value.clone(),
                age: Duration::ZERO,
                ttl: *ttl,
            });
        if !self.round_trip {
            return Answer::Now(found);
        }
        Answer::Later(Box::pin(async move {
            time::sleep(Duration::from_millis(1)).await;
            found
        }))
    }

    fn insert(&self, key: &Key, value: &String, _age: Duration, ttl: Duration) {
        let entry = (value.clone(), ttl);
        self.entries.lock().unwrap().insert(key.clone(), entry);
    }

    fn invalidate(&self, what: &Invalidation) {
        let class = Class::default();
        self.entries
            .lock()
            .unwrap()
            .retain(|key, _| !what.covers(key, &class));
    }

    fn memory_bytes(&self) -> u64 {
        1000
    }
}

/// Records the events a layer reports.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Event>>>);

impl Observer for Events {
    fn observe(&self, _: &Class, event: Event) {
        self.0.lock().unwrap().push(event);
    }
}

fn cache_layer(
    shelf: &Shelf,
) -> CacheLayer<KeyOf, String, herdsman::share::CloneShare, herdsman::class::AllDefault, Shelf> {
    CacheLayer::new(key_of as KeyOf)
        .with_clock(Clock::Tokio)
        .with_ttl(TTL)
        .with_store_backend(shelf.clone())
}

async fn replicas_share_responses_through_the_store_backend(round_trip: bool) {
    let shelf = Shelf {
        round_trip,
        ..Shelf::default()
    };
    let calls = Arc::new(AtomicU64::new(0));
    let events = Events::default();
    let (here, there) = (
        cache_layer(&shelf),
        cache_layer(&shelf).with_observer(events.clone()),
    );
    let here_svc = here.layer(counting_upstream(&calls));
    let there_svc = there.layer(counting_upstream(&calls));

    // Missed in both stores: the upstream answers, and the response is
    // written through.
    assert_eq!(
        here_svc.clone().oneshot("/a").await.unwrap(),
        "/a from here"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(shelf.lookups.load(Ordering::SeqCst), 1);

    // The other replica's own store does not hold it: the backend answers
    // (a backend hit), and its store keeps it, so the next request is a
    // local hit.
    assert_eq!(
        there_svc.clone().oneshot("/a").await.unwrap(),
        "/a from here"
    );
    assert_eq!(
        there_svc.clone().oneshot("/a").await.unwrap(),
        "/a from here"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(shelf.lookups.load(Ordering::SeqCst), 2);
    let stats = there.handle().stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (2, 0, 1));
    assert_eq!(
        stats.backend_hits, 1,
        "one of the two hits is the backend's"
    );
    assert_eq!(here.handle().stats().backend_hits, 0);
    assert_eq!(
        *events.0.lock().unwrap(),
        [Event::CacheBackendHit, Event::CacheHit]
    );
    assert_eq!(there.handle().memory_bytes(), stats.bytes + 1000);

    // Invalidated through one replica's handle: gone from the backend too.
    assert!(here.handle().invalidate(&Key::from("/a")));
    assert!(shelf.entries.lock().unwrap().is_empty());
    time::advance(TTL).await;
    assert_eq!(
        there_svc.clone().oneshot("/a").await.unwrap(),
        "/a from here"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_cache_answers_from_its_store_backend_what_its_own_store_does_not_hold() {
    replicas_share_responses_through_the_store_backend(false).await;
}

#[tokio::test(start_paused = true)]
async fn a_cache_waits_for_a_store_backend_that_answers_later() {
    replicas_share_responses_through_the_store_backend(true).await;
}

#[tokio::test(start_paused = true)]
async fn a_background_refresh_takes_a_fresh_copy_from_the_store_backend_without_a_call() {
    let shelf = Shelf::default();
    let calls = Arc::new(AtomicU64::new(0));
    let layer = cache_layer(&shelf).with_stale_while_revalidate(TTL * 2);
    let svc = layer.layer(counting_upstream(&calls));
    assert_eq!(svc.clone().oneshot("/a").await.unwrap(), "/a from here");
    time::advance(TTL + Duration::from_secs(1)).await;

    // Meanwhile another replica fetched a newer answer into the backend.
    let newer = ("/a from there".to_owned(), TTL);
    shelf.entries.lock().unwrap().insert(Key::from("/a"), newer);
    // Stale: served as it is while a refresh runs in the background, which
    // takes the backend's fresh copy instead of calling the upstream.
    assert_eq!(svc.clone().oneshot("/a").await.unwrap(), "/a from here");
    settle().await;
    assert_eq!(svc.clone().oneshot("/a").await.unwrap(), "/a from there");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.handle().stats().backend_hits, 1);
}

#[tokio::test(start_paused = true)]
async fn a_stale_copy_past_its_windows_is_refreshed_from_the_store_backend_first() {
    let shelf = Shelf::default();
    let calls = Arc::new(AtomicU64::new(0));
    let layer = cache_layer(&shelf).with_stale_if_error(TTL * 10);
    let svc = layer.layer(counting_upstream(&calls));
    assert_eq!(svc.clone().oneshot("/a").await.unwrap(), "/a from here");
    time::advance(TTL + Duration::from_secs(1)).await;

    // Stale, kept for errors only: the request waits for a refresh, which
    // the backend's fresh copy (another replica's) answers.
    let newer = ("/a from there".to_owned(), TTL);
    shelf.entries.lock().unwrap().insert(Key::from("/a"), newer);
    assert_eq!(svc.clone().oneshot("/a").await.unwrap(), "/a from there");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A store backend in which an invalidation lands between the cache's
/// check that a fetched answer is still current and its write-through: on
/// its first write it runs `between` (an invalidation through the cache's
/// handle) before it stores.
#[derive(Clone, Default)]
struct Racing {
    shelf: Shelf,
    between: Arc<OnceLock<Box<dyn Fn() + Send + Sync>>>,
    raced: Arc<AtomicBool>,
}

impl StoreBackend<String> for Racing {
    fn lookup(&self, key: &Key) -> Answer<Option<Shelved<String>>> {
        self.shelf.lookup(key)
    }

    fn insert(&self, key: &Key, value: &String, age: Duration, ttl: Duration) {
        if !self.raced.swap(true, Ordering::SeqCst) {
            (self.between.get().expect("set before the first request"))();
        }
        self.shelf.insert(key, value, age, ttl);
    }

    fn invalidate(&self, what: &Invalidation) {
        self.shelf.invalidate(what);
    }
}

#[tokio::test(start_paused = true)]
async fn an_invalidation_that_lands_during_the_write_through_leaves_the_backend_without_the_old_answer(
) {
    let racing = Racing::default();
    let calls = Arc::new(AtomicU64::new(0));
    let layer = CacheLayer::new(key_of as KeyOf)
        .with_clock(Clock::Tokio)
        .with_ttl(TTL)
        .with_store_backend(racing.clone());
    let handle = layer.handle();
    let invalidate = move || {
        handle.invalidate(&Key::from("/a"));
    };
    assert!(racing.between.set(Box::new(invalidate)).is_ok());
    let svc = layer.layer(counting_upstream(&calls));

    assert_eq!(svc.clone().oneshot("/a").await.unwrap(), "/a from here");
    assert!(racing.raced.load(Ordering::SeqCst));
    assert!(
        racing.shelf.entries.lock().unwrap().is_empty(),
        "the backend kept an answer fetched before the invalidation"
    );

    // Nor did this process's store keep it; an answer fetched afterwards is
    // stored and written through as usual.
    assert_eq!(svc.clone().oneshot("/a").await.unwrap(), "/a from here");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(racing.shelf.entries.lock().unwrap().len(), 1);
    assert_eq!(svc.clone().oneshot("/a").await.unwrap(), "/a from here");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
