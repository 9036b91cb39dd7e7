//! A concurrency limit per endpoint class: slow reports get two slots and no
//! queue, so a burst of them is refused at once while other classes are
//! never held up.
//!
//! ```text
//! cargo run -p herdsman --example limit
//! ```

use std::{convert::Infallible, time::Duration};

use herdsman::{
    class::Class,
    error::find,
    limit::{ClassLimits, LimitLayer, Overloaded},
};
use tower::{service_fn, ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() {
    // Which class a request belongs to: here, by its path.
    let class_of = |path: &&str| {
        if path.starts_with("/reports") {
            Class::new("reports")
        } else {
            Class::default()
        }
    };
    let limit = LimitLayer::new(ClassLimits::new(64))
        .with_class("reports", ClassLimits::new(2))
        .with_classifier(class_of);
    let svc = ServiceBuilder::new()
        .layer(limit.clone())
        .service(service_fn(|path: &'static str| async move {
            if path.starts_with("/reports") {
                tokio::time::sleep(Duration::from_millis(300)).await; // slow
            }
            Ok::<_, Infallible>(path)
        }));

    // Five reports at once, and a board read beside them.
    let reports = (0..5).map(|_| svc.clone().oneshot("/reports/2025"));
    let (reports, board) = tokio::join!(
        futures_util::future::join_all(reports),
        svc.clone().oneshot("/boards/demo"),
    );
    println!(
        "the board read: {}",
        board.expect("never limited by reports")
    );
    for (i, report) in reports.into_iter().enumerate() {
        match report {
            Ok(path) => println!("report {i}: done ({path})"),
            Err(err) if find::<Overloaded>(&*err).is_some() => {
                println!("report {i}: refused at once, the class is full ({err})")
            }
            Err(err) => println!("report {i}: {err}"),
        }
    }
    let stats = limit.handle().stats();
    let reports = stats.class("reports").expect("the class is known");
    println!("reports refused: {}", reports.rejected_overloaded);
}
