//! The Registry's budgets, with paused tokio time: one caller, one client
//! address or one class flooding the registry leaves the others served;
//! the memory budget refuses new keys while existing ones keep updating; a
//! key over the maximum length gets no loop; and the budgets' counts stay
//! exact and drain to empty.

mod support;

use std::{collections::HashMap, convert::Infallible, sync::Arc};

use futures_util::StreamExt;
use herdsman::{
    class::Class,
    event::{MemorySource, Rejection},
    key::Key,
    registry::{Limit, Registry, RegistryLayer, Subscription, TooManySubscribers},
    share::CloneShare,
};
use proptest::prelude::*;
use support::{settle, Calls, Recorder, SEC};
use tokio::time;
use tower::{service_fn, util::BoxCloneSyncService, Layer, ServiceExt};

/// A request: its class, its path, and who sends it.
#[derive(Debug, Clone)]
struct Req {
    class: &'static str,
    path: String,
    user: Option<String>,
    address: Option<u8>,
}

impl Req {
    fn new(class: &'static str, path: impl Into<String>) -> Self {
        Req {
            class,
            path: path.into(),
            user: None,
            address: None,
        }
    }

    fn at(mut self, address: u8) -> Self {
        self.address = Some(address);
        self
    }

    fn by(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }
}

type KeyOf = fn(&Req) -> Option<Key>;
type Upstream = BoxCloneSyncService<Req, String, Infallible>;
type Callers = (KeyOf, KeyOf);
type Reg = Registry<
    Upstream,
    KeyOf,
    fn(&Req) -> Class,
    CloneShare,
    herdsman::registry::HashFingerprint,
    herdsman::registry::CloneRequest,
    Callers,
>;

fn key_of(req: &Req) -> Option<Key> {
    Some(Key::from(format!("{}:{}", req.class, req.path)))
}

fn class_of(req: &Req) -> Class {
    Class::new(req.class)
}

fn user_of(req: &Req) -> Option<Key> {
    req.user.as_deref().map(Key::from)
}

fn address_of(req: &Req) -> Option<Key> {
    req.address.map(|a| Key::from(&[10, 0, 0, a][..]))
}

/// An upstream answering "`path` #`n`" (a new value on every call), and
/// counting its calls.
fn upstream(calls: Calls) -> Upstream {
    BoxCloneSyncService::new(service_fn(move |req: Req| {
        let n = calls.next() - 1;
        async move { Ok::<_, Infallible>(format!("{} #{n}", req.path)) }
    }))
}

/// A registry over [`upstream`], keyed and classed by the request, telling
/// callers apart by user and address, with `tune`'s settings.
fn registry(tune: impl FnOnce(RegistryLayer<KeyOf>) -> RegistryLayer<KeyOf>) -> (Reg, Calls) {
    let calls = Calls::default();
    let layer = tune(
        RegistryLayer::new(key_of as KeyOf)
            .with_interval(5 * SEC)
            .with_jitter(0.0),
    )
    .with_classifier(class_of as fn(&Req) -> Class)
    .with_callers(user_of as KeyOf, address_of as KeyOf);
    (layer.layer(upstream(calls.clone())), calls)
}

type Sub = Subscription<String>;

fn reason(result: Result<Sub, TooManySubscribers>) -> Option<Limit> {
    result.err().map(|e| e.reason())
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_keys_from_one_address_leaves_other_addresses_and_classes_served() {
    let (registry, _) = registry(|l| l.with_max_keys(100).with_max_keys_per_address(10));
    let mut flood = Vec::new();
    let mut refused = 0;
    for i in 0..50 {
        let req = Req::new("a", format!("/q?{i}")).at(1);
        match registry.subscribe(req) {
            Ok(sub) => flood.push(sub),
            Err(err) => {
                assert_eq!(err.reason(), Limit::KeysPerAddress);
                assert!(err.is_per_caller());
                refused += 1;
            }
        }
    }
    assert_eq!((flood.len(), refused), (10, 40), "refused beyond its share");

    // Another address still gets new keys of the class; the flooding one
    // gets them in another class, and still joins keys already polled.
    let other = registry.subscribe(Req::new("a", "/q?new").at(2));
    assert!(other.is_ok(), "{:?}", reason(other));
    let elsewhere = registry.subscribe(Req::new("b", "/q?0").at(1));
    assert!(elsewhere.is_ok(), "{:?}", reason(elsewhere));
    let joined = registry.subscribe(Req::new("a", "/q?new").at(1));
    assert!(joined.is_ok(), "{:?}", reason(joined));

    // Its keys leave with its subscribers: its budget comes back.
    drop(flood);
    settle().await;
    let again = registry.subscribe(Req::new("a", "/q?later").at(1));
    assert!(again.is_ok(), "{:?}", reason(again));
}

#[tokio::test(start_paused = true)]
async fn a_class_full_of_keys_never_refuses_another_classes_new_keys() {
    let (registry, _) = registry(|l| l.with_max_keys(20).with_max_keys_per_address(1_000));
    let mut held = Vec::new();
    for i in 0..20 {
        // Many anonymous clients, each within its own budget.
        held.push(registry.subscribe(Req::new("a", format!("/{i}")).at(i)));
    }
    assert!(held.iter().all(Result::is_ok));
    let full = registry.subscribe(Req::new("a", "/one-more").at(99));
    assert_eq!(reason(full), Some(Limit::Keys));
    let other = registry.subscribe(Req::new("b", "/one-more").at(99));
    assert!(other.is_ok(), "{:?}", reason(other));
    // A key already polled is joined, full class or not.
    assert!(registry.subscribe(Req::new("a", "/0").at(98)).is_ok());
}

#[tokio::test(start_paused = true)]
async fn random_credentials_from_one_address_are_held_to_the_addresss_budget() {
    let (registry, _) = registry(|l| {
        l.with_max_subscribers_per_caller(2)
            .with_max_subscribers_per_address(5)
    });
    let sub =
        |user: String, address| registry.subscribe(Req::new("a", "/live").by(user).at(address));
    // One user: its own cap.
    let alice: Vec<_> = (0..3).map(|_| sub("alice".into(), 1)).collect();
    assert_eq!(
        alice
            .iter()
            .map(|r| r.as_ref().err().map(|e| e.reason()))
            .collect::<Vec<_>>(),
        [None, None, Some(Limit::SubscribersPerCaller)]
    );
    // A new identity with every stream: the address's cap holds.
    let mut random = Vec::new();
    for i in 0..10 {
        random.push(sub(format!("token-{i}"), 1));
    }
    let open = random.iter().filter(|r| r.is_ok()).count();
    assert_eq!(open, 3, "5 streams in all from the address");
    assert!(random
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|e| e.reason() == Limit::SubscribersPerAddress));
    assert_eq!(random[9].as_ref().unwrap_err().retry_after(), Some(5 * SEC));
    // Another address is served; a caller's own cap holds whatever
    // address it comes from.
    assert!(sub("bob".into(), 2).is_ok());
    assert!(sub("token-0".into(), 2).is_ok(), "one stream of two");
    assert_eq!(
        reason(sub("alice".into(), 2)),
        Some(Limit::SubscribersPerCaller)
    );
}

#[tokio::test(start_paused = true)]
async fn each_refusal_is_reported_with_its_class_and_reason() {
    let refusals = Arc::new(Recorder::default());
    let observer = refusals.clone();
    let (registry, _) = registry(move |l| {
        l.with_max_keys_per_caller(1)
            .with_max_key_len(64)
            .with_observer(observer)
    });
    let _a = registry.subscribe(Req::new("a", "/1").by("u")).unwrap();
    let _ = registry.subscribe(Req::new("a", "/2").by("u"));
    let _ = registry.subscribe(Req::new("b", "x".repeat(100)));
    assert_eq!(
        refusals.rejections(),
        [
            (
                Class::new("a"),
                Rejection::Subscription(Limit::KeysPerCaller)
            ),
            (Class::new("b"), Rejection::Subscription(Limit::KeyTooLong)),
        ]
    );
    assert_eq!(registry.handle().stats().refused, 2);
}

#[tokio::test(start_paused = true)]
async fn over_its_memory_budget_the_registry_refuses_new_keys_and_existing_keys_keep_updating() {
    let (registry, calls) = registry(|l| l.with_max_memory(64 * 1024));
    let mut first = registry.subscribe(Req::new("a", "/first")).unwrap();
    assert_eq!(first.next().await.unwrap().value().unwrap(), "/first #0");

    // Keys with long paths (and so long keys and templates) until the
    // budget refuses one.
    let long = |i: usize| Req::new("a", format!("/{i}/{}", "p".repeat(4_000)));
    let mut held = Vec::new();
    let refused = loop {
        match registry.subscribe(long(held.len())) {
            Ok(sub) => held.push(sub),
            Err(err) => break err,
        }
        assert!(held.len() < 100, "never refused");
    };
    assert_eq!(refused.reason(), Limit::Memory);
    assert!(!refused.is_per_caller());
    assert!(registry.handle().memory_bytes() <= 64 * 1024);
    assert!(held.len() >= 5, "{} keys fit", held.len());

    // The keys polled go on: a new subscriber joins one, and the first
    // key's loop polls and publishes on its interval.
    let joined = registry.subscribe(long(0));
    assert!(joined.is_ok(), "{:?}", reason(joined));
    let before = calls.get();
    time::sleep(5 * SEC).await;
    let update = first.next().await.unwrap();
    assert_eq!(update.version(), 2);
    assert!(calls.get() > before);

    // Keys leaving bring the figure back under the budget.
    held.truncate(1);
    drop(joined);
    settle().await;
    let fits = registry.subscribe(long(1_000));
    assert!(fits.is_ok(), "{:?}", reason(fits));
}

#[tokio::test(start_paused = true)]
async fn an_over_long_key_gets_no_loop_and_one_shot_calls_with_it_pass_through() {
    let (registry, calls) = registry(|l| l.with_max_key_len(1_024));
    let long = Req::new("a", "q".repeat(2_000));

    let err = registry.subscribe(long.clone()).unwrap_err();
    assert_eq!(err.reason(), Limit::KeyTooLong);
    assert_eq!(err.retry_after(), None, "the same request never fits");
    assert_eq!(
        err.to_string(),
        "subscription refused: the request's key is too long"
    );
    settle().await;
    let stats = registry.handle().stats();
    assert_eq!((stats.keys, stats.private_loops, stats.tasks), (0, 0, 0));
    assert_eq!(calls.get(), 0, "no loop polled it");

    let answer = registry.clone().oneshot(long.clone()).await.unwrap();
    assert_eq!(answer, format!("{} #0", long.path));
    assert_eq!(calls.get(), 1, "straight to the upstream");

    // A key of exactly the maximum length is polled.
    let path = "q".repeat(1_024 - "a:".len());
    let mut fits = registry.subscribe(Req::new("a", path)).unwrap();
    assert!(fits.next().await.is_some());
}

// ---- the counts are exact and drain ----

/// One step of a run: a subscription from some caller at some address to
/// some key of some class, or the drop of one held.
#[derive(Debug, Clone)]
enum Op {
    Subscribe {
        class: u8,
        key: u8,
        user: Option<u8>,
        address: Option<u8>,
    },
    Drop(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..2u8, 0..6u8, proptest::option::of(0..3u8), proptest::option::of(0..2u8))
            .prop_map(|(class, key, user, address)| Op::Subscribe { class, key, user, address }),
        2 => (0..64usize).prop_map(Op::Drop),
    ]
}

const MAX_KEYS: usize = 5;
const KEYS_PER_CALLER: usize = 2;
const KEYS_PER_ADDRESS: usize = 3;
const SUBS_PER_CALLER: usize = 3;
const SUBS_PER_ADDRESS: usize = 4;

/// A sender: its user and its address, if any.
type From = (Option<u8>, Option<u8>);

/// A subscription held: its class, its key and its sender.
type Held = (u8, u8, From);

/// What the budgets should say: keys with their class, creator and
/// subscribers; counts per holder.
#[derive(Default)]
struct Model {
    /// (class, key) → (creator, subscribers).
    keys: HashMap<(u8, u8), (From, usize)>,
    /// (class, holder) → (keys, subscribers); holder: `U`ser or `A`ddress.
    held: HashMap<(u8, char, u8), (usize, usize)>,
}

impl Model {
    fn get(&self, class: u8, kind: char, id: Option<u8>) -> Option<(usize, usize)> {
        id.map(|id| {
            self.held
                .get(&(class, kind, id))
                .copied()
                .unwrap_or_default()
        })
    }

    /// The refusal the registry should answer, if any.
    fn refusal(&self, class: u8, key: u8, user: Option<u8>, address: Option<u8>) -> Option<Limit> {
        let (u, a) = (self.get(class, 'U', user), self.get(class, 'A', address));
        if !self.keys.contains_key(&(class, key)) {
            let in_class = self.keys.keys().filter(|(c, _)| *c == class).count();
            if in_class >= MAX_KEYS {
                return Some(Limit::Keys);
            }
            if u.is_some_and(|(k, _)| k >= KEYS_PER_CALLER) {
                return Some(Limit::KeysPerCaller);
            }
            if a.is_some_and(|(k, _)| k >= KEYS_PER_ADDRESS) {
                return Some(Limit::KeysPerAddress);
            }
        }
        if u.is_some_and(|(_, s)| s >= SUBS_PER_CALLER) {
            return Some(Limit::SubscribersPerCaller);
        }
        if a.is_some_and(|(_, s)| s >= SUBS_PER_ADDRESS) {
            return Some(Limit::SubscribersPerAddress);
        }
        None
    }

    fn change(
        &mut self,
        class: u8,
        user: Option<u8>,
        address: Option<u8>,
        keys: isize,
        subs: isize,
    ) {
        for (kind, id) in [('U', user), ('A', address)] {
            let Some(id) = id else { continue };
            let held = self.held.entry((class, kind, id)).or_default();
            held.0 = (held.0 as isize + keys) as usize;
            held.1 = (held.1 as isize + subs) as usize;
            if *held == (0, 0) {
                self.held.remove(&(class, kind, id));
            }
        }
    }

    fn subscribe(&mut self, (class, key, (user, address)): Held) {
        match self.keys.get_mut(&(class, key)) {
            Some(entry) => entry.1 += 1,
            None => {
                self.keys.insert((class, key), ((user, address), 1));
                self.change(class, user, address, 1, 0);
            }
        }
        self.change(class, user, address, 0, 1);
    }

    fn unsubscribe(&mut self, (class, key, (user, address)): Held) {
        self.change(class, user, address, 0, -1);
        let entry = self.keys.get_mut(&(class, key)).expect("a held key");
        entry.1 -= 1;
        if entry.1 == 0 {
            let ((u, a), _) = self.keys.remove(&(class, key)).unwrap();
            self.change(class, u, a, -1, 0);
        }
    }

    /// Classes holding keys, and callers and addresses holding anything.
    fn holders(&self) -> usize {
        let classes: std::collections::HashSet<u8> = self.keys.keys().map(|(c, _)| *c).collect();
        classes.len() + self.held.len()
    }
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (registry, _) = registry(|l| {
        l.with_max_keys(MAX_KEYS)
            .with_max_keys_per_caller(KEYS_PER_CALLER)
            .with_max_keys_per_address(KEYS_PER_ADDRESS)
            .with_max_subscribers_per_caller(SUBS_PER_CALLER)
            .with_max_subscribers_per_address(SUBS_PER_ADDRESS)
    });
    let mut model = Model::default();
    let mut held: Vec<(Sub, Held)> = Vec::new();
    for op in ops {
        match op {
            Op::Subscribe {
                class,
                key,
                user,
                address,
            } => {
                let mut req = Req::new(["a", "b"][usize::from(class)], format!("/{key}"));
                req.user = user.map(|u| format!("user{u}"));
                req.address = address;
                let expected = model.refusal(class, key, user, address);
                let got = registry.subscribe(req);
                prop_assert_eq!(got.as_ref().err().map(|e| e.reason()), expected);
                if let Ok(sub) = got {
                    let step = (class, key, (user, address));
                    model.subscribe(step);
                    held.push((sub, step));
                }
            }
            Op::Drop(i) if i < held.len() => {
                let (sub, step) = held.swap_remove(i);
                drop(sub);
                model.unsubscribe(step);
            }
            Op::Drop(_) => {}
        }
        let stats = registry.handle().stats();
        prop_assert_eq!(stats.keys as usize, model.keys.len());
        prop_assert_eq!(stats.budget_holders as usize, model.holders());
    }
    drop(held);
    settle().await;
    let stats = registry.handle().stats();
    prop_assert_eq!(
        (stats.keys, stats.subscribers, stats.budget_holders),
        (0, 0, 0)
    );
    prop_assert_eq!(stats.tasks, 0);
    prop_assert_eq!(registry.handle().memory_bytes(), 0, "every byte given back");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn budget_counts_stay_exact_and_drain_to_empty(ops in proptest::collection::vec(op(), 1..80)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(run(ops))?;
    }
}
