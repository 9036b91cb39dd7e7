//! The demo's page: who is online and the board, live, with herdsman's
//! stats. Its own panels are in `assets/`; the leader election, SSE with
//! polling fallback, stale marking and the stats come from herdsman-axum's
//! dashboard engine, under the admin prefix.

use axum::{
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

const INDEX_HTML: &str = include_str!("../assets/index.html");
const DEMO_JS: &str = include_str!("../assets/demo.js");
const DEMO_CSS: &str = include_str!("../assets/demo.css");

/// `GET /` and the page's assets.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/assets/demo.js",
            get(|| async { asset(DEMO_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/assets/demo.css",
            get(|| async { asset(DEMO_CSS, "text/css; charset=utf-8") }),
        )
}

/// A static file, under a policy that admits no inline script or style.
fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'self'"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}
