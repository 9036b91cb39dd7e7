//! Tabs opening and closing: random subscribe / unsubscribe churn against
//! the Registry, with refreshes, invalidations, failures and time passing.
//! After every step the counts match the live subscriptions; every
//! subscriber sees only its own key's values, in increasing versions; no key
//! is ever fetched twice at once; and when everyone has left, the registry
//! holds no key, no subscriber and no task.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{FutureExt, StreamExt};
use herdsman::{
    event::Invalidation,
    key::Key,
    registry::{RegistryLayer, SubscribeOptions, Subscription},
};
use proptest::prelude::*;
use tokio::time;
use tower::{Layer, Service};

const KEYS: [&str; 3] = ["/a", "/b", "/c"];

#[derive(Debug)]
struct Down;

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("down")
    }
}

impl std::error::Error for Down {}

#[derive(Default)]
struct Log {
    calls: HashMap<&'static str, u64>,
    in_flight: HashMap<&'static str, u32>,
    overlapping: u32,
}

/// Answers "`key`:`n / 2`" after 100 ms (every fifth call of a key fails);
/// records calls of one key that overlap.
#[derive(Clone, Default)]
struct Upstream(Arc<Mutex<Log>>);

impl Service<&'static str> for Upstream {
    type Response = String;
    type Error = Down;
    type Future = Pin<Box<dyn Future<Output = Result<String, Down>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Down>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, key: &'static str) -> Self::Future {
        let n = {
            let mut log = self.0.lock().unwrap();
            let n = *log.calls.entry(key).and_modify(|n| *n += 1).or_default();
            let in_flight = log.in_flight.entry(key).or_default();
            *in_flight += 1;
            if *in_flight > 1 {
                log.overlapping += 1;
            }
            n
        };
        let log = self.0.clone();
        Box::pin(async move {
            // Decremented even if the loop drops this call.
            struct Done(Arc<Mutex<Log>>, &'static str);
            impl Drop for Done {
                fn drop(&mut self) {
                    *self.0.lock().unwrap().in_flight.get_mut(self.1).unwrap() -= 1;
                }
            }
            let _done = Done(log, key);
            time::sleep(Duration::from_millis(100)).await;
            if n % 5 == 4 {
                Err(Down)
            } else {
                Ok(format!("{key}:{}", n / 2))
            }
        })
    }
}

#[derive(Debug, Clone)]
enum Op {
    Subscribe { key: usize, interval_s: u64 },
    Unsubscribe(usize),
    Advance(u64),
    Refresh(usize),
    InvalidateAll,
    Drain,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..KEYS.len(), 1..8u64).prop_map(|(key, interval_s)| Op::Subscribe { key, interval_s }),
        3 => any::<usize>().prop_map(Op::Unsubscribe),
        3 => (0..7_000u64).prop_map(Op::Advance),
        1 => (0..KEYS.len()).prop_map(Op::Refresh),
        1 => Just(Op::InvalidateAll),
        3 => Just(Op::Drain),
    ]
}

struct Live {
    key: &'static str,
    sub: Subscription<String>,
    asked: Duration,
    last_version: u64,
}

fn drain(live: &mut [Live]) -> Result<(), TestCaseError> {
    for l in live.iter_mut() {
        while let Some(Some(update)) = l.sub.next().now_or_never() {
            prop_assert!(
                update.version() > l.last_version,
                "{} after {}",
                update.version(),
                l.last_version
            );
            l.last_version = update.version();
            if let Some(good) = update.last_good() {
                prop_assert!(
                    good.starts_with(&format!("{}:", l.key)),
                    "{good} for {}",
                    l.key
                );
            }
        }
    }
    Ok(())
}

fn run(ops: Vec<Op>, linger: bool) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let upstream = Upstream::default();
        let layer = RegistryLayer::new(|k: &&'static str| Some(Key::from(*k)))
            .with_floor(Duration::from_secs(1))
            .with_backoff(Duration::from_secs(1), Duration::from_secs(4))
            .with_linger(if linger {
                Duration::from_secs(3)
            } else {
                Duration::ZERO
            });
        let registry = layer.layer(upstream.clone());
        let mut live: Vec<Live> = Vec::new();
        for op in ops {
            match op {
                Op::Subscribe { key, interval_s } => {
                    let asked = Duration::from_secs(interval_s);
                    let options = SubscribeOptions::new().with_interval(asked);
                    let sub = registry.subscribe_with(KEYS[key], options).unwrap();
                    live.push(Live {
                        key: KEYS[key],
                        sub,
                        asked,
                        last_version: 0,
                    });
                }
                Op::Unsubscribe(i) if !live.is_empty() => {
                    let i = i % live.len();
                    live.swap_remove(i);
                }
                Op::Unsubscribe(_) => {}
                Op::Advance(ms) => time::sleep(Duration::from_millis(ms)).await,
                Op::Refresh(key) => {
                    registry.handle().refresh(&Key::from(KEYS[key]));
                }
                Op::InvalidateAll => {
                    registry.handle().invalidate(&Invalidation::All);
                }
                Op::Drain => drain(&mut live)?,
            }
            tokio::task::yield_now().await;
            let stats = registry.handle().stats();
            prop_assert_eq!(stats.subscribers, live.len() as u64);
            let keys: HashSet<_> = live.iter().map(|l| l.key).collect();
            if linger {
                prop_assert!(stats.keys >= keys.len() as u64);
            } else {
                prop_assert_eq!(stats.keys, keys.len() as u64);
            }
            for hook in registry.handle().hooks() {
                let asked = live
                    .iter()
                    .filter(|l| Key::from(l.key) == hook.key)
                    .map(|l| l.asked)
                    .min();
                if let Some(interval) = asked {
                    prop_assert_eq!(interval, hook.interval);
                    prop_assert_eq!(
                        hook.subscribers,
                        live.iter().filter(|l| Key::from(l.key) == hook.key).count()
                    );
                }
            }
        }
        drain(&mut live)?;
        drop(live);
        time::sleep(Duration::from_secs(10)).await;
        let stats = registry.handle().stats();
        prop_assert_eq!(
            (
                stats.keys,
                stats.subscribers,
                stats.tasks,
                stats.private_loops
            ),
            (0, 0, 0, 0)
        );
        prop_assert_eq!(upstream.0.lock().unwrap().overlapping, 0);
        prop_assert!(upstream
            .0
            .lock()
            .unwrap()
            .in_flight
            .values()
            .all(|n| *n == 0));
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn churn_never_leaks_loops_or_crosses_keys(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops, false)?;
    }

    #[test]
    fn churn_with_linger_drains_to_empty_after_the_linger(
        ops in proptest::collection::vec(op(), 1..60)
    ) {
        run(ops, true)?;
    }
}
