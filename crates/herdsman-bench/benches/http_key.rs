//! HTTP key building: what `HttpKey` costs per request, for a typical
//! browser `GET` (a dozen headers, credentials) and for one behind a proxy
//! that sets forwarding headers (keyed since issue 14, against cache
//! poisoning).
//!
//! ```text
//! cargo bench -p herdsman-bench --bench http_key
//! ```

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use herdsman::{http::HttpKey, key::KeyFn};
use http::Request;

/// A browser's `GET` of a polled endpoint, headers as Chromium sends them.
fn browser_get() -> http::request::Builder {
    Request::get("/api/active-users?board=42")
        .header("host", "app.example.com")
        .header("connection", "keep-alive")
        .header("sec-ch-ua", "\"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"")
        .header("accept", "application/json")
        .header("sec-ch-ua-mobile", "?0")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        )
        .header("sec-fetch-site", "same-origin")
        .header("sec-fetch-mode", "cors")
        .header("referer", "https://app.example.com/board/42")
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .header("accept-language", "en-GB,en;q=0.9")
        .header("cookie", "session=0123456789abcdef0123456789abcdef")
}

fn http_key(c: &mut Criterion) {
    let key = HttpKey::new();
    let mut group = c.benchmark_group("http_key");

    let plain = browser_get().body(()).expect("request");
    group.bench_function("browser_get", |b| b.iter(|| key.key(black_box(&plain))));

    let proxied = browser_get()
        .header("x-forwarded-host", "app.example.com")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-for", "192.0.2.7")
        .body(())
        .expect("request");
    group.bench_function("browser_get_behind_a_proxy", |b| {
        b.iter(|| key.key(black_box(&proxied)))
    });
    group.finish();
}

criterion_group!(benches, http_key);
criterion_main!(benches);
