use std::{sync::Arc, time::Duration, time::SystemTime};

use http::{
    header::{self, Entry},
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode,
};

use super::{
    freshness::{self, CacheStatus, Limits, Received, RequestDirectives, Storability},
    CacheLayer, CacheMode, CachePolicy, ClassSettings, Conditions, Directive, Freshness, Outcome,
    UnsafeRequest, Vary,
};
use crate::{
    http::{self as adapter, conditional, HttpBody, PollFetch, ServedStale, SharedBody},
    key::CarriedKey,
    share::Share,
};

impl<K> CacheLayer<K, Response<SharedBody>, HttpCachePolicy> {
    /// A cache of HTTP responses keyed by `key` (usually
    /// [`HttpKey`](crate::http::HttpKey)), with every rule of
    /// [`HttpCachePolicy`] on. Put a
    /// [`BufferLayer`](crate::http::BufferLayer) below it.
    pub fn http(key: K) -> Self {
        CacheLayer::new(key).with_policy(HttpCachePolicy::new())
    }
}

/// The HTTP rules of the [cache](super) (RFC 9111, RFC 5861, RFC 9211):
/// a shared cache.
///
/// Use it with [`HttpKey`](crate::http::HttpKey) and [`BufferLayer`](crate::http::BufferLayer)
/// below the cache. Each rule is on by default and can be switched off:
///
/// - **Response `Cache-Control`** ([`honour_cache_control`](Self::honour_cache_control)):
///   `no-store` and `private` are not stored; `must-revalidate`,
///   `proxy-revalidate` and `no-cache` forbid serving stale, and `no-cache`
///   makes every use a revalidation (stored only with a validator). The
///   lifetime is `s-maxage`, else `max-age`, else `Expires`, less the
///   response's age (RFC 9111 §4.2.3: the larger of `now - Date` and `Age`
///   plus the request's time, then the time stored); in the class's
///   [`CacheMode::App`](CacheMode::App) it caps the class TTL,
///   in [`CacheMode::Origin`](CacheMode::Origin) it is the
///   TTL (capped by the class's), with a heuristic tenth of the time since
///   `Last-Modified` (§4.2.2) when there is none, and no reuse without
///   either. The response's `stale-while-revalidate` and `stale-if-error`
///   bound the class windows (in origin mode a window it does not grant is
///   closed). Malformed or conflicting directives (`max-age=abc`) mean "not
///   stored". Nothing here panics on any input.
/// - **Revalidation**: a stale entry with an `ETag` or `Last-Modified` is
///   revalidated with `If-None-Match` / `If-Modified-Since`; a `304`
///   refreshes its headers (§4.3.4) and its stored body answers
///   (`Cache-Status: herdsman; fwd=stale; fwd-status=304`).
/// - **Conditions**: the caller's `If-None-Match` and `If-Modified-Since`
///   are taken out of its request (they never split an entry) and answered
///   by the cache: `304 Not Modified` when they match the response it
///   would get, else the full response.
/// - **`Vary`**: a response is stored per value of the request headers it
///   names; `Vary: *` is never stored.
/// - **Request `Cache-Control`** ([`honour_request`](Self::honour_request)):
///   `no-cache` (or `max-age=0`, or `Pragma: no-cache` alone) forces a
///   refresh (a revalidation when the entry has a validator), which the
///   layers below coalesce; `no-store` bypasses the cache, headers intact.
/// - **`Set-Cookie`**: a response carrying it is never stored unless the
///   endpoint opts in with [`store_set_cookie`](Self::store_set_cookie).
/// - **Statuses**: 200, 203, 204, 300, 301 and 308 are stored, and in
///   origin mode also 404, 405, 410, 414 and 501. Others only with
///   [`negative`](Self::negative) (negative caching, with its own TTL);
///   1xx never. 5xx responses are failures that a stale copy may stand in
///   for (stale-if-error: 500, 502, 503, 504).
/// - **Invalidation** ([`invalidate_on_unsafe`](Self::invalidate_on_unsafe)):
///   a `POST`, `PUT`, `PATCH` or `DELETE` answered with 2xx or 3xx removes
///   the entries of its path, and of a same-origin `Location` and
///   `Content-Location`, for every user and query (RFC 9111 §4.4).
/// - **Headers** ([`headers`](Self::headers)): responses from the cache carry
///   `Age`, every coordinated response an RFC 9211 `Cache-Status` member
///   named `herdsman`, and a stale-if-error answer `X-Herdsman-Stale: 1`
///   (it always carries the [`ServedStale`] extension).
///
/// Credentials come from the key: a request with other credentials never
/// sees another user's entry unless the endpoint is public.
///
/// ```
/// use herdsman::{cache::{CacheLayer, HttpCachePolicy}, http::{BufferLayer, HttpKey}};
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

impl HttpCachePolicy {
    /// Statuses stored without negative caching: 200, 203, 204, 300, 301
    /// and 308; in origin mode also the other heuristically cacheable
    /// statuses (RFC 9110 §15.1: 404, 405, 410, 414, 501), whose responses
    /// say how long they may be used.
    fn stored_by_default(&self, status: StatusCode, mode: CacheMode) -> bool {
        match status.as_u16() {
            200 | 203 | 204 | 300 | 301 | 308 => true,
            404 | 405 | 410 | 414 | 501 => mode == CacheMode::Origin,
            _ => false,
        }
    }
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
        adapter::share_buffered(response)
    }

    fn unshare(&self, shared: &Self::Shared) -> Response<HttpBody<B>> {
        adapter::unshare(shared)
    }

    fn unshare_owned(&self, shared: Self::Shared) -> Response<HttpBody<B>> {
        adapter::unshare_owned(shared)
    }

    fn held_bytes(&self, shared: &Self::Shared) -> usize {
        adapter::weigh(shared)
    }
}

impl<ReqB, B> CachePolicy<Request<ReqB>, Response<HttpBody<B>>> for HttpCachePolicy {
    fn directive(&self, req: &Request<ReqB>) -> Directive {
        let normal = if req.extensions().get::<PollFetch>().is_some() {
            Directive::Current
        } else {
            Directive::Normal
        };
        if !self.honour_request {
            return normal;
        }
        let directives = RequestDirectives::from_headers(req.headers());
        if directives.no_store {
            Directive::Bypass
        } else if directives.requires_revalidation() {
            Directive::Refresh
        } else {
            normal
        }
    }

    fn take_conditions(&self, req: &mut Request<ReqB>) -> Conditions {
        let headers = req.headers_mut();
        // Two lookups and no allocation for the usual request without them.
        if !headers.contains_key(header::IF_NONE_MATCH)
            && !headers.contains_key(header::IF_MODIFIED_SINCE)
        {
            return Conditions::none();
        }
        // The key the request carries was made with its validators.
        CarriedKey::forget(req.extensions_mut());
        let headers = req.headers_mut();
        let if_none_match = match headers.entry(header::IF_NONE_MATCH) {
            Entry::Occupied(entry) => entry.remove_entry_mult().1.collect(),
            Entry::Vacant(_) => Vec::new(),
        };
        Conditions {
            if_none_match,
            if_modified_since: headers.remove(header::IF_MODIFIED_SINCE),
        }
    }

    fn restore_conditions(&self, req: &mut Request<ReqB>, conditions: Conditions) {
        let headers = req.headers_mut();
        for value in conditions.if_none_match {
            headers.append(header::IF_NONE_MATCH, value);
        }
        if let Some(value) = conditions.if_modified_since {
            headers.insert(header::IF_MODIFIED_SINCE, value);
        }
    }

    fn answer_conditions(&self, response: &mut Response<HttpBody<B>>, conditions: &Conditions) {
        if conditions.is_empty() || response.status() != StatusCode::OK {
            return;
        }
        // RFC 9110 §13.2.2: If-Modified-Since only counts without
        // If-None-Match.
        let not_modified = if conditions.if_none_match.is_empty() {
            conditions
                .if_modified_since
                .as_ref()
                .is_some_and(|since| conditional::not_modified_since(since, response.headers()))
        } else {
            conditional::none_match_fails(&conditions.if_none_match, response.headers())
        };
        if not_modified {
            not_modified_response(response);
        }
    }

    fn freshness(
        &self,
        response: &Response<HttpBody<B>>,
        class: &ClassSettings,
        delay: Duration,
    ) -> Option<Freshness> {
        let status = response.status();
        let ttl = if self.stored_by_default(status, class.mode) {
            class.ttl
        } else if self.negative.contains(&status) && !status.is_informational() {
            self.negative_ttl.min(class.ttl)
        } else {
            return None;
        };
        if !self.store_set_cookie && response.headers().contains_key(header::SET_COOKIE) {
            return None;
        }
        if !response.body().is_buffered() {
            return None;
        }
        let class = ClassSettings { ttl, ..*class };
        if !self.honour_cache_control {
            return Some(Freshness::from(&class));
        }
        let limits = Limits {
            mode: class.mode,
            ttl: class.ttl,
            stale_while_revalidate: class.stale_while_revalidate,
            stale_if_error: class.stale_if_error,
        };
        let received = Received {
            at: SystemTime::now(),
            delay,
        };
        match freshness::response_freshness(status, response.headers(), limits, received) {
            Storability::Store(lifetime) => Some(
                Freshness::new(lifetime.fresh)
                    .with_stale_while_revalidate(lifetime.stale_while_revalidate)
                    .with_stale_if_error(lifetime.stale_if_error)
                    .with_age(lifetime.age)
                    .with_revalidation(lifetime.validators),
            ),
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
        let stale_if_error = matches!(outcome, Outcome::StaleIfError { .. });
        if stale_if_error {
            response.extensions_mut().insert(ServedStale);
        }
        if !self.headers {
            return;
        }
        let status = match outcome {
            Outcome::Hit => CacheStatus::Hit,
            Outcome::Miss { stored } => CacheStatus::Miss { stored },
            Outcome::Refreshed { stored } => CacheStatus::Request { stored },
            Outcome::Revalidated { stored } => CacheStatus::Revalidated { stored },
            Outcome::StaleWhileRevalidate { staleness } => CacheStatus::Stale { staleness },
            Outcome::StaleIfError { .. } => CacheStatus::StaleIfError { fwd_status: None },
        };
        let headers = response.headers_mut();
        if matches!(
            outcome,
            Outcome::Hit | Outcome::StaleWhileRevalidate { .. } | Outcome::StaleIfError { .. }
        ) {
            headers.insert(header::AGE, freshness::age_header_value(age));
        }
        if stale_if_error {
            headers.insert(STALE, HeaderValue::from_static("1"));
        }
        headers.append(freshness::CACHE_STATUS, freshness::cache_status(status));
    }

    fn vary(&self, response: &Response<HttpBody<B>>) -> Vary {
        freshness::vary(response.headers())
    }

    fn request_headers<'a>(&self, req: &'a Request<ReqB>) -> Option<&'a HeaderMap> {
        Some(req.headers())
    }

    fn revalidate(&self, req: &mut Request<ReqB>, stored: &Response<SharedBody>) -> bool {
        let etag = stored.headers().get(header::ETAG);
        let modified = stored.headers().get(header::LAST_MODIFIED);
        // The key the request carries was made without these validators.
        CarriedKey::forget(req.extensions_mut());
        let headers = req.headers_mut();
        if let Some(etag) = etag {
            headers.insert(header::IF_NONE_MATCH, etag.clone());
        }
        if let Some(modified) = modified {
            headers.insert(header::IF_MODIFIED_SINCE, modified.clone());
        }
        etag.is_some() || modified.is_some()
    }

    fn not_modified(&self, response: &Response<HttpBody<B>>) -> bool {
        response.status() == StatusCode::NOT_MODIFIED
    }

    fn freshen(
        &self,
        stored: &Response<SharedBody>,
        not_modified: Response<HttpBody<B>>,
    ) -> Response<HttpBody<B>> {
        let mut response: Response<HttpBody<B>> = adapter::unshare(stored);
        // RFC 9111 §4.3.4: the 304's fields replace the stored ones, but
        // the length (of a body the 304 does not carry) and hop-by-hop
        // fields.
        let (parts, _) = not_modified.into_parts();
        let mut last = None;
        for (name, value) in parts.headers {
            let name = match name {
                Some(name) => {
                    last = Some(name.clone());
                    name
                }
                None => match &last {
                    Some(name) => name.clone(),
                    None => continue,
                },
            };
            if name == header::CONTENT_LENGTH || is_hop_by_hop(&name) {
                continue;
            }
            response.headers_mut().remove(&name);
            response.headers_mut().append(name, value);
        }
        response
    }

    fn invalidates(&self, req: &Request<ReqB>) -> Option<UnsafeRequest> {
        let unsafe_method = matches!(
            *req.method(),
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        );
        if !(self.invalidate_on_unsafe && unsafe_method) {
            return None;
        }
        let request = UnsafeRequest::new(req.uri().path().as_bytes());
        let authority = match req.uri().authority() {
            Some(authority) => Some(authority.as_str().as_bytes()),
            None => req.headers().get(header::HOST).map(HeaderValue::as_bytes),
        };
        Some(match authority {
            Some(authority) => request.with_authority(authority),
            None => request,
        })
    }

    fn also_invalidates(
        &self,
        request: &UnsafeRequest,
        response: &Response<HttpBody<B>>,
    ) -> Vec<Vec<u8>> {
        [header::LOCATION, header::CONTENT_LOCATION]
            .iter()
            .filter_map(|name| response.headers().get(name))
            .filter_map(|value| {
                conditional::same_origin_path(value, request.path(), request.authority())
            })
            .collect()
    }

    fn succeeded(&self, response: &Response<HttpBody<B>>) -> bool {
        response.status().is_success() || response.status().is_redirection()
    }
}

/// The `X-Herdsman-Stale` header on stale-if-error answers.
const STALE: HeaderName = HeaderName::from_static("x-herdsman-stale");

/// Representation fields a `304` does not carry (RFC 9110 §15.4.5).
const REPRESENTATION: [HeaderName; 6] = [
    header::CONTENT_LENGTH,
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::CONTENT_RANGE,
    header::TRANSFER_ENCODING,
];

/// Turns a `200` into the `304 Not Modified` for a caller that has it.
fn not_modified_response<B>(response: &mut Response<HttpBody<B>>) {
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    *response.body_mut() = HttpBody::full(bytes::Bytes::new());
    for name in &REPRESENTATION {
        response.headers_mut().remove(name);
    }
}

/// Hop-by-hop fields (RFC 9110 §7.6.1), never stored from a `304`.
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "proxy-connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}
