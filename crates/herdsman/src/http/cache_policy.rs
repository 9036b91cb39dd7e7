use std::{sync::Arc, time::Duration, time::SystemTime};

use http::{header, Method, Request, Response, StatusCode};

use super::{
    freshness::{self, CacheStatus, RequestDirectives, Storability},
    HttpBody, SharedBody,
};
use crate::{
    cache::{CachePolicy, Directive, Outcome},
    share::Share,
};

/// The HTTP rules of the [cache](crate::cache) (RFC 9111, RFC 5861, RFC 9211).
///
/// Use it with [`HttpKey`](super::HttpKey) and [`BufferLayer`](super::BufferLayer)
/// below the cache. Each rule is on by default and can be switched off:
///
/// - **Response `Cache-Control`** ([`honour_cache_control`](Self::honour_cache_control)):
///   `no-store`, `private` and `no-cache` are not stored; `s-maxage`, else
///   `max-age`, else `Expires` caps the class TTL, less the response's `Age`;
///   `max-age=0`, an `Expires` in the past or unparsable (`Expires: 0`), and
///   malformed or conflicting directives (`max-age=abc`) mean "not stored".
///   Nothing here panics on any input.
/// - **Request `Cache-Control`** ([`honour_request`](Self::honour_request)):
///   `no-cache` (or `max-age=0`, or `Pragma: no-cache` alone) forces a
///   refresh, which the layers below coalesce; `no-store` bypasses the cache.
/// - **`Set-Cookie`**: a response carrying it is never stored unless the
///   endpoint opts in with [`store_set_cookie`](Self::store_set_cookie).
/// - **Statuses**: 200, 203, 204, 300, 301 and 308 are stored. Others only with
///   [`negative`](Self::negative) (negative caching, with its own TTL); 5xx
///   responses are failures that a stale copy may stand in for
///   (stale-if-error: 500, 502, 503, 504).
/// - **Invalidation** ([`invalidate_on_unsafe`](Self::invalidate_on_unsafe)):
///   a `POST`, `PUT`, `PATCH` or `DELETE` answered with 2xx or 3xx removes
///   the entries of its path, for every user and query (RFC 9111 §4.4).
/// - **Headers** ([`headers`](Self::headers)): responses from the cache carry
///   `Age`, and every coordinated response an RFC 9211 `Cache-Status` member
///   named `herdsman`.
///
/// The auth partition and `Vary` come from the key: a request with other
/// credentials never sees another user's entry unless the endpoint is public.
///
/// ```
/// use herdsman::{cache::CacheLayer, http::{BufferLayer, HttpCachePolicy, HttpKey}};
/// use http::StatusCode;
/// use std::time::Duration;
/// use tower::ServiceBuilder;
/// # let upstream = tower::service_fn(|_: http::Request<()>| async {
/// #     Ok::<_, std::convert::Infallible>(http::Response::new(String::from("ok")))
/// # });
///
/// let cache = CacheLayer::http(HttpKey::new())
///     .with_policy(HttpCachePolicy::new().negative([StatusCode::NOT_FOUND], Duration::from_secs(1)))
///     .with_ttl(Duration::from_secs(10))
///     .with_stale_while_revalidate(Duration::from_secs(30));
/// let svc = ServiceBuilder::new()
///     .layer(cache)
///     .layer(BufferLayer::new())
///     .service(upstream);
/// # let _ = svc;
/// ```
#[derive(Debug, Clone)]
pub struct HttpCachePolicy {
    honour_cache_control: bool,
    honour_request: bool,
    store_set_cookie: bool,
    invalidate_on_unsafe: bool,
    headers: bool,
    negative: Arc<[StatusCode]>,
    negative_ttl: Duration,
}

impl Default for HttpCachePolicy {
    fn default() -> Self {
        HttpCachePolicy {
            honour_cache_control: true,
            honour_request: true,
            store_set_cookie: false,
            invalidate_on_unsafe: true,
            headers: true,
            negative: Arc::from(Vec::new()),
            negative_ttl: Duration::ZERO,
        }
    }
}

impl HttpCachePolicy {
    /// Every rule on, no negative caching.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether response `Cache-Control`, `Expires` and `Age` are honoured.
    pub fn honour_cache_control(mut self, on: bool) -> Self {
        self.honour_cache_control = on;
        self
    }

    /// Whether request `Cache-Control` (`no-cache`, `no-store`) is honoured.
    pub fn honour_request(mut self, on: bool) -> Self {
        self.honour_request = on;
        self
    }

    /// Whether responses carrying `Set-Cookie` may be stored (off by default:
    /// cookies are set for one client). Only for endpoints whose cookies are
    /// the same for every caller of a key.
    pub fn store_set_cookie(mut self, on: bool) -> Self {
        self.store_set_cookie = on;
        self
    }

    /// Whether successful unsafe requests invalidate their path.
    pub fn invalidate_on_unsafe(mut self, on: bool) -> Self {
        self.invalidate_on_unsafe = on;
        self
    }

    /// Whether `Age` and `Cache-Status` are added to responses.
    pub fn headers(mut self, on: bool) -> Self {
        self.headers = on;
        self
    }

    /// Stores responses with these statuses for `ttl` (capped by the class
    /// TTL): negative caching.
    pub fn negative(
        mut self,
        statuses: impl IntoIterator<Item = StatusCode>,
        ttl: Duration,
    ) -> Self {
        self.negative = statuses.into_iter().collect::<Vec<_>>().into();
        self.negative_ttl = ttl;
        self
    }
}

fn stored_by_default(status: StatusCode) -> bool {
    matches!(status.as_u16(), 200 | 203 | 204 | 300 | 301 | 308)
}

impl<B> Share<Response<HttpBody<B>>> for HttpCachePolicy {
    type Shared = Response<SharedBody>;

    fn share(
        &self,
        response: Response<HttpBody<B>>,
    ) -> Result<Self::Shared, Response<HttpBody<B>>> {
        if !self.store_set_cookie && response.headers().contains_key(header::SET_COOKIE) {
            return Err(response);
        }
        super::share::share_buffered(response)
    }

    fn unshare(&self, shared: &Self::Shared) -> Response<HttpBody<B>> {
        super::share::unshare(shared)
    }

    fn held_bytes(&self, shared: &Self::Shared) -> usize {
        super::share::weigh(shared)
    }
}

impl<ReqB, B> CachePolicy<Request<ReqB>, Response<HttpBody<B>>> for HttpCachePolicy {
    fn directive(&self, req: &Request<ReqB>) -> Directive {
        if !self.honour_request {
            return Directive::Normal;
        }
        let directives = RequestDirectives::from_headers(req.headers());
        if directives.no_store {
            Directive::Bypass
        } else if directives.requires_revalidation() {
            Directive::Refresh
        } else {
            Directive::Normal
        }
    }

    fn ttl(&self, response: &Response<HttpBody<B>>, configured: Duration) -> Option<Duration> {
        let status = response.status();
        let ttl = if stored_by_default(status) {
            configured
        } else if self.negative.contains(&status) {
            self.negative_ttl.min(configured)
        } else {
            return None;
        };
        if !self.store_set_cookie && response.headers().contains_key(header::SET_COOKIE) {
            return None;
        }
        if !response.body().is_buffered() {
            return None;
        }
        if !self.honour_cache_control {
            return Some(ttl);
        }
        match freshness::response_ttl(response.headers(), ttl, SystemTime::now()) {
            Storability::Store { ttl } => Some(ttl),
            Storability::NotStorable(reason) => {
                tracing::trace!(?reason, "response not stored");
                None
            }
        }
    }

    fn is_failure(&self, response: &Response<HttpBody<B>>) -> bool {
        matches!(response.status().as_u16(), 500 | 502 | 503 | 504)
    }

    fn decorate(&self, response: &mut Response<HttpBody<B>>, outcome: Outcome, age: Duration) {
        if let Outcome::StaleIfError { .. } = outcome {
            response.extensions_mut().insert(super::ServedStale);
        }
        if !self.headers {
            return;
        }
        let status = match outcome {
            Outcome::Hit => CacheStatus::Hit,
            Outcome::Miss { stored } => CacheStatus::Miss { stored },
            Outcome::Refreshed { stored } => CacheStatus::Request { stored },
            Outcome::StaleWhileRevalidate { staleness } => CacheStatus::Stale { staleness },
            Outcome::StaleIfError { .. } => CacheStatus::StaleIfError { fwd_status: None },
        };
        let headers = response.headers_mut();
        if !matches!(outcome, Outcome::Miss { .. } | Outcome::Refreshed { .. }) {
            headers.insert(header::AGE, freshness::age_header_value(age));
        }
        headers.append(freshness::CACHE_STATUS, freshness::cache_status(status));
    }

    fn invalidates(&self, req: &Request<ReqB>) -> Option<Vec<u8>> {
        let unsafe_method = matches!(
            *req.method(),
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        );
        (self.invalidate_on_unsafe && unsafe_method).then(|| req.uri().path().as_bytes().to_vec())
    }

    fn succeeded(&self, response: &Response<HttpBody<B>>) -> bool {
        response.status().is_success() || response.status().is_redirection()
    }
}
