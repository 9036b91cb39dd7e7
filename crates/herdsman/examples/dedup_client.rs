//! Single-flight around a hyper-util client: ten concurrent GETs of one URL
//! make one request to the origin.
//!
//! ```text
//! cargo run -p herdsman --example dedup_client
//! ```

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use herdsman::{
    dedup::DedupLayer,
    http::{BufferLayer, HttpKey, HttpShare},
};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), herdsman::BoxError> {
    let (origin, calls) = slow_origin().await?;

    // The client side: a hyper-util client, with Dedup above it and the
    // body buffer below it (so one response can be handed to every caller).
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let client = ServiceBuilder::new()
        .layer(DedupLayer::new(HttpKey::new()).with_share(HttpShare))
        .layer(BufferLayer::new())
        .service(client);

    // Ten call sites ask for the same URL at the same time.
    let url: http::Uri = format!("http://{origin}/active-users").parse()?;
    let calls_sites = (0..10).map(|_| {
        let request = http::Request::get(url.clone()).body(Empty::new());
        client.clone().oneshot(request.expect("a valid request"))
    });
    for response in futures_util::future::join_all(calls_sites).await {
        let body = response?.into_body().collect().await?.to_bytes();
        println!("a caller got {:?}", String::from_utf8_lossy(&body));
    }
    println!(
        "10 callers, {} request(s) to the origin",
        calls.load(Ordering::SeqCst)
    );
    Ok(())
}

/// A stand-in origin on a free local port: it takes 200 ms per request and
/// counts them.
async fn slow_origin() -> std::io::Result<(std::net::SocketAddr, Arc<AtomicUsize>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counted = counted.clone();
            let service = hyper::service::service_fn(move |_req| {
                let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let body = Full::new(Bytes::from(format!("{{\"answer\": {n}}}")));
                    Ok::<_, Infallible>(http::Response::new(body))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    Ok((addr, calls))
}
