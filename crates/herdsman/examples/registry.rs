//! A registry subscription: three subscribers of one endpoint share one
//! poll loop, so the upstream is called once per interval, not three times.
//!
//! ```text
//! cargo run -p herdsman --example registry
//! ```

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::StreamExt;
use herdsman::{key::Key, registry::RegistryLayer};
use tower::{service_fn, Layer};

#[tokio::main]
async fn main() {
    // The upstream: "who is online", a new answer on every call.
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let upstream = service_fn(move |endpoint: &'static str| {
        let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Ok::<_, Infallible>(format!("{endpoint}: {n} online")) }
    });

    // One key per endpoint, polled every 300 ms while anyone subscribes.
    let registry = RegistryLayer::new(|endpoint: &&'static str| Some(Key::from(*endpoint)))
        .with_interval(Duration::from_millis(300))
        .with_jitter(0.0)
        .layer(upstream);

    let subscribers: Vec<_> = (0..3)
        .map(|_| registry.subscribe("/active-users").expect("room for them"))
        .collect();
    let mut tasks = Vec::new();
    for (i, mut subscription) in subscribers.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            // Each subscriber takes the first three values.
            for _ in 0..3 {
                let update = subscription.next().await.expect("the loop runs");
                println!(
                    "subscriber {i}: version {} = {:?}",
                    update.version(),
                    update.value().expect("a good value")
                );
            }
        }));
    }
    for task in tasks {
        task.await.expect("the subscriber ran");
    }
    println!(
        "3 subscribers, 3 values each: {} upstream calls",
        calls.load(Ordering::SeqCst)
    );
}
