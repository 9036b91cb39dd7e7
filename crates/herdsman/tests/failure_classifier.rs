//! One failure classifier for every layer: the Registry judges its polled
//! answers with the same `FailureClassifier` the Breaker and Stats take,
//! and hands an answer it calls a failure to subscribers as the error the
//! classifier makes of it.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::StreamExt;
use herdsman::{
    error::{find, BoxError, ErrorKind},
    failure::{DefaultFailures, FailedAnswer, FailureClassifier, Verdict},
    key::Key,
    registry::RegistryLayer,
};
use tower::{service_fn, Layer};

/// Zero is the upstream's way of saying it failed.
fn zero_fails(result: &Result<u64, BoxError>) -> Verdict {
    match result {
        Ok(0) => Verdict::Failure,
        _ => DefaultFailures.verdict(result),
    }
}

fn key_of(req: &&'static str) -> Option<Key> {
    Some(Key::new(req.as_bytes()))
}

/// An upstream answering 0, then 1, 2, ...
fn counting() -> impl tower::Service<
    &'static str,
    Response = u64,
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<u64, BoxError>> + Send,
> + Clone
       + Send
       + 'static {
    let calls = Arc::new(AtomicU64::new(0));
    service_fn(move |_: &'static str| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, BoxError>(n) }
    })
}

#[tokio::test(start_paused = true)]
async fn an_answer_the_classifier_calls_a_failure_reaches_subscribers_as_an_error() {
    let registry = RegistryLayer::new(key_of as fn(&&'static str) -> Option<Key>)
        .with_interval(Duration::from_secs(1))
        .with_jitter(0.0)
        .with_failure_classifier(zero_fails)
        .layer(counting());
    let mut subscription = registry.subscribe("/n").unwrap();

    let first = subscription.next().await.unwrap();
    let err = first.result().as_ref().unwrap_err();
    assert!(find::<FailedAnswer>(err).is_some(), "{err}");
    assert_eq!(ErrorKind::of(err), ErrorKind::Upstream);

    // The loop backs off, polls again, and the next answer is good.
    let second = subscription.next().await.unwrap();
    assert_eq!(second.result().as_ref().ok(), Some(&1));
}

#[tokio::test(start_paused = true)]
async fn without_a_classifier_every_answer_is_a_value() {
    let registry = RegistryLayer::new(key_of as fn(&&'static str) -> Option<Key>)
        .with_jitter(0.0)
        .layer(counting());
    let mut subscription = registry.subscribe("/n").unwrap();
    let first = subscription.next().await.unwrap();
    assert_eq!(first.result().as_ref().ok(), Some(&0));
}
