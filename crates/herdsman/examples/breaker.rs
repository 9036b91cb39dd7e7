//! A circuit breaker: after three failures in a row it opens and fails fast
//! (the upstream is left alone), then lets one probe through and closes
//! when the upstream is back.
//!
//! ```text
//! cargo run -p herdsman --example breaker
//! ```

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use herdsman::{
    breaker::{BreakerConfig, BreakerLayer, BreakerOpen},
    class::Class,
    error::find,
};
use tower::{service_fn, ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() {
    // An upstream we can break and mend, counting the calls it gets.
    let healthy = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let (up, counted) = (healthy.clone(), calls.clone());
    let upstream = service_fn(move |_: ()| {
        counted.fetch_add(1, Ordering::SeqCst);
        let ok = up.load(Ordering::SeqCst);
        async move {
            if ok {
                Ok("fine")
            } else {
                Err("upstream down")
            }
        }
    });

    // Open after 3 consecutive failures; stay open 500 ms before a probe.
    let breaker = BreakerLayer::new().with_config(BreakerConfig {
        consecutive_failures: Some(3),
        open_duration: Duration::from_millis(500),
        ..BreakerConfig::default()
    });
    let svc = ServiceBuilder::new()
        .layer(breaker.clone())
        .service(upstream);
    let state = || breaker.handle().state(&Class::default());

    for i in 1..=5 {
        match svc.clone().oneshot(()).await {
            Ok(answer) => println!("call {i}: {answer}"),
            Err(err) => match find::<BreakerOpen>(&*err) {
                Some(open) => println!(
                    "call {i}: failed fast, retry after {:?} (breaker {:?})",
                    open.retry_after(),
                    state()
                ),
                None => println!("call {i}: {err} (breaker {:?})", state()),
            },
        }
    }
    println!(
        "5 calls, {} reached the upstream",
        calls.load(Ordering::SeqCst)
    );

    // The upstream recovers; once the open time is over, one probe goes
    // through and closes the breaker.
    healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let answer = svc.clone().oneshot(()).await.expect("the probe succeeds");
    println!("after the open time: {answer} (breaker {:?})", state());
}
