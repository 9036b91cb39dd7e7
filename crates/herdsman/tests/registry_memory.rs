//! The Registry's memory figure against what the process really allocates:
//! a counting global allocator (`cap`) sees every byte, and the figure
//! must account for nearly all of what subscribing to many keys with long
//! query strings allocates, and drop back to zero when they leave, with
//! the memory given back.
//!
//! One test in this binary, so that no other test allocates meanwhile.

mod support;

use std::{alloc::System, convert::Infallible, time::Duration};

use bytes::Bytes;
use cap::Cap;
use futures_util::StreamExt;
use herdsman::{
    event::MemorySource,
    http::{BufferLayer, HttpKey},
    registry::RegistryLayer,
};
use http::{Request, Response};
use http_body_util::Full;
use support::settle;
use tower::{service_fn, ServiceBuilder};

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

/// Keys subscribed to, each with a query string of [`QUERY`] bytes.
const KEYS: usize = 300;
const QUERY: usize = 6_000;

fn request(i: usize) -> Request<Full<Bytes>> {
    let query = format!("{i:05}{}", "q".repeat(QUERY - 5));
    Request::get(format!("http://api/active-users?{query}"))
        .header("accept", "application/json")
        .header("user-agent", "a browser with a long name")
        .body(Full::default())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_memory_figure_covers_what_subscribing_allocates_and_drops_back_to_zero() {
    let registry = ServiceBuilder::new()
        .layer(RegistryLayer::http(HttpKey::new().public()).with_interval(Duration::from_secs(60)))
        .layer(BufferLayer::new())
        .service(service_fn(|req: Request<Full<Bytes>>| async move {
            let body = format!(
                "{{\"users\":[\"ann\",\"bob\"],\"q\":{}}}",
                req.uri().query().map_or(0, str::len)
            );
            Ok::<_, Infallible>(
                Response::builder()
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body.repeat(8))))
                    .unwrap(),
            )
        }));
    let handle = registry.handle();

    // Warm up: the runtime's and the registry's first allocations.
    let mut warm = registry.subscribe(request(KEYS + 1)).unwrap();
    warm.next().await.unwrap();
    drop(warm);
    settle().await;
    assert_eq!(handle.memory_bytes(), 0);
    let mut subscriptions = Vec::with_capacity(KEYS);
    let baseline = ALLOCATOR.allocated();

    for i in 0..KEYS {
        subscriptions.push(registry.subscribe(request(i)).unwrap());
    }
    for sub in &mut subscriptions {
        sub.next().await.unwrap();
    }
    settle().await;
    let allocated = ALLOCATOR.allocated() - baseline;
    let counted = handle.memory_bytes() as usize;
    eprintln!(
        "{KEYS} keys: allocated {allocated} bytes, counted {counted} ({:.1} %)",
        counted as f64 * 100.0 / allocated as f64
    );
    assert!(
        allocated > KEYS * 2 * QUERY,
        "a key and its request template each hold the query"
    );
    assert!(
        counted * 10 >= allocated * 9,
        "counted {counted} of {allocated} bytes allocated"
    );
    assert!(
        counted * 10 <= allocated * 13,
        "counted {counted}, far over the {allocated} bytes allocated"
    );

    drop(subscriptions);
    settle().await;
    let left = ALLOCATOR.allocated().saturating_sub(baseline);
    eprintln!(
        "after they left: allocated {left} bytes, counted {}",
        handle.memory_bytes()
    );
    assert_eq!(handle.memory_bytes(), 0, "every byte given back");
    assert!(
        left * 50 < allocated,
        "{left} of {allocated} bytes still allocated after every key left"
    );
}
