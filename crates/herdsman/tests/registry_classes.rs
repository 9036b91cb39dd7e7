//! Per-class registry settings, with paused tokio time: a class's interval,
//! jitter, linger and subscriber limit apply to the loops of its keys, set
//! on a `RegistryLayer` or through a Coordinator's configuration; other
//! classes keep the registry's own.

mod support;

use std::{convert::Infallible, time::Duration};

use bytes::Bytes;
use herdsman::{
    class::Class,
    config::{ClassConfig, Config, Environment, RegistrySettings},
    key::Key,
    registry::{ClassSettings, Limit, RegistryLayer, SubscribeOptions},
    Coordinated, Coordinator,
};
use http::{Request, Response};
use http_body_util::Full;
use support::{gaps, http::get, settle, CallLog, SEC};
use tokio::time::{self, Instant};
use tower::{service_fn, util::BoxCloneSyncService, Layer};

type Upstream = BoxCloneSyncService<Request<Full<Bytes>>, Response<Full<Bytes>>, Infallible>;

/// An upstream that logs the path and time of each call and answers with a
/// new body each time (so every poll is a change).
#[derive(Clone, Default)]
struct Origin {
    log: CallLog,
}

impl Origin {
    fn service(&self) -> Upstream {
        let log = self.log.clone();
        BoxCloneSyncService::new(service_fn(move |req: Request<Full<Bytes>>| {
            let n = log.record(req.uri().path());
            async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(n.to_string())))) }
        }))
    }

    fn calls_to(&self, path: &str) -> Vec<Instant> {
        self.log.calls_to(path)
    }
}

/// The test profile (interval 50 ms, jitter 0, linger 100 ms) with class
/// `live` on `/live` with the registry settings `registry` makes of the
/// global ones.
fn coordinator(registry: impl FnOnce(RegistrySettings) -> RegistrySettings) -> Coordinator {
    let mut config = Config::profile(Environment::Test);
    let registry = registry(config.registry.clone());
    config.classes.insert(
        "live".into(),
        ClassConfig {
            paths: vec!["/live".into()],
            registry: Some(registry),
            ..ClassConfig::default()
        },
    );
    Coordinator::builder()
        .environment(Environment::Test)
        .config(config)
        .build()
        .unwrap()
}

fn stack(coordinator: &Coordinator, origin: &Origin) -> Coordinated<Upstream> {
    coordinator.layer().layer(origin.service())
}

#[tokio::test(start_paused = true)]
async fn a_class_linger_keeps_its_loop_that_long_and_other_classes_keep_the_global_one() {
    let coordinator = coordinator(|r| RegistrySettings {
        class: ClassSettings {
            linger: 10 * SEC,
            ..r.class
        },
        ..r
    });
    let svc = stack(&coordinator, &Origin::default());
    let live = svc.subscribe(get("/live")).unwrap();
    let other = svc.subscribe(get("/other")).unwrap();
    settle().await;
    drop((live, other));
    settle().await;

    time::advance(SEC).await;
    settle().await;
    let classes: Vec<String> = coordinator
        .registry()
        .hooks()
        .iter()
        .map(|h| h.class.to_string())
        .collect();
    assert_eq!(classes, ["live"], "the global linger (100 ms) has passed");

    time::advance(9 * SEC).await;
    settle().await;
    assert_eq!(coordinator.registry().stats().keys, 0, "10 s have passed");
}

#[tokio::test(start_paused = true)]
async fn a_class_max_subscribers_per_key_refuses_the_next_subscriber_of_its_keys() {
    let coordinator = coordinator(|r| RegistrySettings {
        class: ClassSettings {
            max_subscribers_per_key: 1,
            ..r.class
        },
        ..r
    });
    let svc = stack(&coordinator, &Origin::default());
    let _first = svc.subscribe(get("/live")).unwrap();
    let refused = svc.subscribe(get("/live")).unwrap_err();
    assert_eq!(refused.reason(), Limit::SubscribersPerKey);
    let _other = svc.subscribe(get("/live?page=2")).unwrap();

    let _a = svc.subscribe(get("/other")).unwrap();
    let _b = svc.subscribe(get("/other")).unwrap();
    assert_eq!(coordinator.registry().stats().refused, 1);
}

#[tokio::test(start_paused = true)]
async fn a_class_jitter_spreads_its_polls_and_other_classes_keep_the_global_one() {
    let coordinator = coordinator(|r| RegistrySettings {
        class: ClassSettings {
            interval: SEC,
            jitter: 0.5,
            ..r.class
        },
        ..r
    });
    let origin = Origin::default();
    let svc = stack(&coordinator, &origin);
    let _live = svc.subscribe(get("/live")).unwrap();
    let _other = svc.subscribe(get("/other")).unwrap();
    time::sleep(20 * SEC).await;

    let live = gaps(&origin.calls_to("/live"));
    assert!(live.len() >= 10, "{live:?}");
    assert!(
        live.iter().all(|g| (SEC / 2..=SEC * 3 / 2).contains(g)),
        "{live:?}"
    );
    let shortest = live.iter().min().unwrap();
    let longest = live.iter().max().unwrap();
    assert!(
        *longest - *shortest > SEC / 4,
        "a jitter of 0.5 spreads the polls: {live:?}"
    );
    let other = gaps(&origin.calls_to("/other"));
    assert!(other.len() > 100);
    assert!(
        other.iter().all(|g| *g == Duration::from_millis(50)),
        "the test profile has no jitter: {other:?}"
    );
}

// ---- RegistryLayer::with_class ----

type Path = &'static str;
type KeyOf = fn(&Path) -> Option<Key>;
type ClassOf = fn(&Path) -> Class;

fn by_path(path: &Path) -> Option<Key> {
    Some(Key::from(*path))
}

fn by_prefix(path: &Path) -> Class {
    if path.starts_with("/live") {
        Class::new("live")
    } else {
        Class::default()
    }
}

/// A registry over a service answering each path with itself; `/live...`
/// paths are class `live`, with `settings`.
fn classed(settings: ClassSettings) -> RegistryLayer<KeyOf, ClassOf> {
    RegistryLayer::new(by_path as KeyOf)
        .with_interval(5 * SEC)
        .with_floor(SEC)
        .with_jitter(0.0)
        .with_classifier(by_prefix as ClassOf)
        .with_class("live", settings)
}

fn echo() -> BoxCloneSyncService<Path, String, Infallible> {
    BoxCloneSyncService::new(service_fn(|path: Path| async move {
        Ok::<_, Infallible>(path.to_owned())
    }))
}

#[tokio::test(start_paused = true)]
async fn a_class_interval_is_the_default_of_its_subscribers_and_still_held_to_the_floor() {
    let registry = classed(ClassSettings {
        interval: 2 * SEC,
        jitter: 0.0,
        ..ClassSettings::default()
    })
    .layer(echo());
    let live = registry.subscribe("/live").unwrap();
    let other = registry.subscribe("/other").unwrap();
    assert_eq!(live.interval(), 2 * SEC);
    assert_eq!(other.interval(), 5 * SEC, "the registry's own");
    let asked = registry
        .subscribe_with("/live", SubscribeOptions::new().with_interval(SEC / 10))
        .unwrap();
    assert_eq!(asked.interval(), SEC, "the floor");
    drop(asked);
    assert_eq!(live.interval(), 2 * SEC);

    let registry = classed(ClassSettings {
        interval: SEC / 10,
        jitter: 0.0,
        ..ClassSettings::default()
    })
    .layer(echo());
    let live = registry.subscribe("/live").unwrap();
    assert_eq!(live.interval(), SEC, "a class interval under the floor");
}

#[tokio::test(start_paused = true)]
async fn a_later_subscriber_of_a_key_counts_against_its_loop_class_limit() {
    let registry = classed(ClassSettings {
        max_subscribers_per_key: 2,
        ..ClassSettings::default()
    })
    .with_max_subscribers_per_key(1)
    .layer(echo());
    let _a = registry.subscribe("/live").unwrap();
    let _b = registry.subscribe("/live").unwrap();
    assert_eq!(
        registry.subscribe("/live").unwrap_err().reason(),
        Limit::SubscribersPerKey
    );
    let _c = registry.subscribe("/other").unwrap();
    assert_eq!(
        registry.subscribe("/other").unwrap_err().reason(),
        Limit::SubscribersPerKey,
        "the registry's own limit of 1"
    );
}

#[test]
#[should_panic(expected = "jitter must be between 0.0 and 0.5, got 0.6")]
fn a_jitter_over_one_half_panics_as_an_argument_out_of_range() {
    let _ = RegistryLayer::new(by_path).with_jitter(0.6);
}

#[test]
#[should_panic(expected = "jitter must be between 0.0 and 0.5, got NaN")]
fn a_class_jitter_that_is_not_a_number_panics() {
    let _ = RegistryLayer::new(by_path).with_class(
        "live",
        ClassSettings {
            jitter: f64::NAN,
            ..ClassSettings::default()
        },
    );
}
