use std::{cell::RefCell, sync::Arc};

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, Request, Uri};

use crate::key::{Key, KeyBuilder, KeyFn};

/// The default key of an HTTP request.
///
/// Only `GET` and `HEAD` requests get a key; others pass through, and so do
/// requests that ask for an event stream (`Accept: text/event-stream`), which
/// is never a response to share. The key is made of:
///
/// - the method;
/// - the authority: the URI's; for a URI without one (a server's request,
///   around a `Router`) the `Host` header as sent, unless the key is told
///   which hosts it serves ([`single_site`](HttpKey::single_site),
///   [`hosts`](HttpKey::hosts));
/// - the path and the query, as sent (the path is marked, see
///   [`Key::path`]);
/// - the values of the headers that select a different response even from an
///   endpoint that declares no `Vary`: `Accept`, `Accept-Encoding`, `Range`,
///   `If-Range`, `If-None-Match`, `If-Modified-Since`, `If-Match` and
///   `If-Unmodified-Since` (so a plain `GET` never gets the `304` or `206` of a
///   conditional or ranged one; clients sending the same validators still
///   coalesce);
/// - the values of each header named with [`vary`](HttpKey::vary), in order;
/// - the headers that re-target a request when present (`X-Forwarded-Host`,
///   `X-Original-URL`, `X-HTTP-Method-Override` and the like, and
///   `Forwarded` without its `for=` client address), so that an answer an
///   origin built from them never reaches callers that did not send them
///   (web cache poisoning);
/// - unless the endpoint is [`public`](HttpKey::public), the full values of
///   `Authorization`, `Proxy-Authorization` and `Cookie` (the *auth
///   partition*), so that users never share responses. They are redacted from
///   the key's `Debug` output, and so are they when a public endpoint names
///   one with [`vary`](HttpKey::vary).
///
/// Coalescing happens before the response exists, so Dedup cannot consult
/// the response's own `Vary` header (the cache can, and files variants by
/// it): name with `vary` every request header the endpoint's responses
/// depend on (`Accept-Language`, a tenant header, an API key...).
///
/// ```
/// use herdsman::{http::HttpKey, key::KeyFn};
/// use http::Request;
///
/// let key = HttpKey::new().vary(http::header::ACCEPT_LANGUAGE);
/// let alice = Request::get("http://api/users?page=1")
///     .header("authorization", "Bearer alice")
///     .body(())
///     .unwrap();
/// let bob = Request::get("http://api/users?page=1")
///     .header("authorization", "Bearer bob")
///     .body(())
///     .unwrap();
/// assert_ne!(key.key(&alice), key.key(&bob));
///
/// let post = Request::post("http://api/users").body(()).unwrap();
/// assert_eq!(key.key(&post), None);
/// ```
#[derive(Debug, Clone)]
pub struct HttpKey {
    vary: Arc<[HeaderName]>,
    /// The auth partition: [`AUTH_HEADERS`], and any header a Coordinator
    /// names the caller by. Always after the private mark.
    credentials: Arc<[HeaderName]>,
    public: bool,
    hosts: Hosts,
    keyed: Keyed,
}

/// The headers written into every key, worked out from `vary`,
/// `credentials` and `public` when those change, not per request.
#[derive(Debug, Clone, Default)]
struct Keyed {
    /// The varied headers that are not credentials (those are keyed with
    /// the credentials, redacted).
    public: Arc<[HeaderName]>,
    /// The credential headers in the key: every one unless the endpoint is
    /// public, else those it varies on.
    private: Arc<[HeaderName]>,
}

impl Keyed {
    fn of(key: &HttpKey) -> Self {
        let public = key
            .vary
            .iter()
            .filter(|name| !key.credentials.contains(name))
            .cloned()
            .collect();
        let private = key
            .credentials
            .iter()
            .filter(|name| !key.public || key.vary.contains(name))
            .cloned()
            .collect();
        Keyed { public, private }
    }
}

thread_local! {
    /// The buffer each thread builds its HTTP keys in: a key is then one
    /// allocation of its own size, whatever its length, with no growing.
    static SCRATCH: RefCell<KeyBuilder> = const { RefCell::new(KeyBuilder::new()) };
}

/// A scratch buffer grown past this (a request with huge headers) is let
/// go after use rather than kept by its thread.
const SCRATCH_KEEP: usize = 16 * 1024;

/// What a request without an authority in its URI is keyed by.
#[derive(Debug, Clone)]
enum Hosts {
    /// Its `Host` header, as sent.
    Header,
    /// Nothing: every request is for the one site.
    One,
    /// The listed host its `Host` names (lowercase); others are not keyed.
    Listed(Arc<[Box<str>]>),
}

/// The conditional request headers: never in a canonical request.
const VALIDATORS: [HeaderName; 4] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
];

/// Request headers in every key unless [`HttpKey::without_default_vary`].
const DEFAULT_VARY: [HeaderName; 8] = [
    header::ACCEPT,
    header::ACCEPT_ENCODING,
    header::RANGE,
    header::IF_RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
];

impl Default for HttpKey {
    fn default() -> Self {
        HttpKey {
            vary: Arc::from(DEFAULT_VARY.to_vec()),
            credentials: Arc::from(AUTH_HEADERS.to_vec()),
            public: false,
            hosts: Hosts::Header,
            keyed: Keyed::default(),
        }
        .with_keyed()
    }
}

const AUTH_HEADERS: [HeaderName; 3] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
];

impl HttpKey {
    /// Keys `GET` and `HEAD` requests, partitioned by credentials.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a header the response varies on: requests with different values
    /// of it get different keys.
    pub fn vary(mut self, name: HeaderName) -> Self {
        let mut vary = self.vary.to_vec();
        if !vary.contains(&name) {
            vary.push(name);
        }
        self.vary = vary.into();
        self.with_keyed()
    }

    /// Adds a header that names the caller (a Coordinator's rollout
    /// `identity_header`) to the auth partition: like `Authorization`, it is
    /// in the key unless the endpoint is public, and never in its `Debug`.
    #[cfg(any(test, feature = "coordinator"))]
    pub(crate) fn credential(mut self, name: HeaderName) -> Self {
        if !self.credentials.contains(&name) {
            let mut credentials = self.credentials.to_vec();
            credentials.push(name);
            self.credentials = credentials.into();
        }
        self.with_keyed()
    }

    fn with_keyed(mut self) -> Self {
        self.keyed = Keyed::of(&self);
        self
    }

    /// Drops the default content-negotiation and conditional headers from the
    /// key, keeping only those named with [`vary`](HttpKey::vary).
    ///
    /// Only for endpoints that ignore `Accept`, `Accept-Encoding`, `Range` and
    /// conditional headers (or strip them before the request is keyed):
    /// otherwise a caller may get a `304`, a `206` or an encoding it did not
    /// ask for.
    pub fn without_default_vary(mut self) -> Self {
        self.vary = Arc::from(Vec::new());
        self.with_keyed()
    }

    /// Declares the endpoint public: its responses do not depend on who asks,
    /// so requests with different credentials share them.
    ///
    /// Only declare endpoints public whose responses carry no per-user data.
    pub fn public(mut self) -> Self {
        self.public = true;
        self.with_keyed()
    }

    /// Keys requests whose URI has no authority (a server's requests, around
    /// a `Router`) without their `Host`: the service serves one site, so a
    /// client cannot make new keys by sending new `Host` values. Requests
    /// whose URI has an authority (a client's) still key by it.
    pub fn single_site(mut self) -> Self {
        self.hosts = Hosts::One;
        self
    }

    /// Keys requests whose URI has no authority by the host they name, when
    /// it is one of `hosts` (a multi-tenant service): a listed host keys as
    /// itself, any other `Host` (or none) is not keyed and passes through.
    /// Names compare case-insensitively; an entry without a port matches
    /// the host on any port. An empty list is [`single_site`](Self::single_site).
    ///
    /// ```
    /// use herdsman::{http::HttpKey, key::KeyFn};
    /// use http::Request;
    ///
    /// let key = HttpKey::new().hosts(["app.example.com"]);
    /// let get = |host| Request::get("/users").header("host", host).body(()).unwrap();
    /// assert_eq!(key.key(&get("APP.example.com:443")), key.key(&get("app.example.com")));
    /// assert_eq!(key.key(&get("attacker.example")), None);
    /// ```
    pub fn hosts<I>(mut self, hosts: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let hosts: Vec<Box<str>> = hosts
            .into_iter()
            .map(|h| h.as_ref().trim().to_ascii_lowercase().into_boxed_str())
            .collect();
        self.hosts = if hosts.is_empty() {
            Hosts::One
        } else {
            Hosts::Listed(hosts.into())
        };
        self
    }

    /// The authority `req` is keyed by: the URI's, else what the host rule
    /// makes of `Host` (empty for one site). `None`: not keyed.
    fn authority<'a, B>(&'a self, req: &'a Request<B>) -> Option<&'a [u8]> {
        if let Some(authority) = req.uri().authority() {
            return Some(authority.as_str().as_bytes());
        }
        let host = req.headers().get(header::HOST).map(|h| h.as_bytes());
        match &self.hosts {
            Hosts::Header => Some(host.unwrap_or_default()),
            Hosts::One => Some(b""),
            Hosts::Listed(hosts) => {
                let host = host?.trim_ascii();
                let (name, _) = without_port(host);
                hosts
                    .iter()
                    .find(|listed| {
                        let listed = listed.as_bytes();
                        listed.eq_ignore_ascii_case(host)
                            || (!without_port(listed).1 && listed.eq_ignore_ascii_case(name))
                    })
                    .map(|listed| listed.as_bytes())
            }
        }
    }

    /// A request made of what this key function puts in the key, and nothing
    /// else: the method, the URI, the version, the `Host` the host rule keys
    /// by when the URI has no authority (the client's with the default rule,
    /// the listed host with [`hosts`](Self::hosts), none for a
    /// [`single_site`](Self::single_site)), the values of the varied headers,
    /// the re-targeting headers as keyed and, unless the endpoint is public,
    /// the credential headers. The body
    /// is empty (`B::default()`) and no extension is kept.
    ///
    /// The validators (`If-None-Match`, `If-Modified-Since`, `If-Match`,
    /// `If-Unmodified-Since`) are left out even when they are in the key:
    /// the [registry][crate::registry] polls with this request on behalf of
    /// every subscriber, and must never poll conditionally for one of them
    /// (a `304` is no value to publish). For a request without validators,
    /// its canonical request has the same key.
    ///
    /// The registry polls with it, so that one subscriber's other headers
    /// are never sent on behalf of the others. Its URI and header values
    /// are copies, not views of the caller's request: a loop keeping it
    /// never keeps the buffer the caller's request head was read into
    /// alive.
    ///
    /// ```
    /// use herdsman::{http::HttpKey, key::KeyFn};
    /// use http::Request;
    ///
    /// let key = HttpKey::new();
    /// let req = Request::get("http://api/users")
    ///     .header("authorization", "Bearer alice")
    ///     .header("x-request-id", "42")
    ///     .body(String::from("ignored"))
    ///     .unwrap();
    /// let canonical = key.canonical_request(&req);
    /// assert_eq!(canonical.headers()["authorization"], "Bearer alice");
    /// assert!(!canonical.headers().contains_key("x-request-id"));
    /// assert!(canonical.body().is_empty());
    /// assert_eq!(key.key(&canonical), key.key(&req));
    ///
    /// let conditional = Request::get("http://api/users")
    ///     .header("if-none-match", "\"v1\"")
    ///     .body(String::new())
    ///     .unwrap();
    /// let canonical = key.canonical_request(&conditional);
    /// assert!(!canonical.headers().contains_key("if-none-match"));
    /// ```
    ///
    #[cfg_attr(
        not(feature = "registry"),
        doc = "[crate::registry]: crate#feature-flags"
    )]
    pub fn canonical_request<B: Default>(&self, req: &Request<B>) -> Request<B> {
        let mut out = Request::new(B::default());
        *out.method_mut() = req.method().clone();
        *out.uri_mut() = own_uri(req.uri());
        *out.version_mut() = req.version();
        // A varied `Host` is copied as sent, like any varied header.
        let host_varied = self.vary.contains(&header::HOST);
        let host = match (&self.hosts, req.uri().authority()) {
            (Hosts::Listed(_), None) if !host_varied => self
                .authority(req)
                .and_then(|host| HeaderValue::from_bytes(host).ok()),
            _ => None,
        };
        let headers = out.headers_mut();
        let mut copy = |name: &HeaderName| {
            for value in req.headers().get_all(name) {
                headers.append(name.clone(), own_value(value));
            }
        };
        for name in self.keyed.public.iter() {
            if !VALIDATORS.contains(name) {
                copy(name);
            }
        }
        if req.uri().authority().is_none() && matches!(self.hosts, Hosts::Header) && !host_varied {
            copy(&header::HOST);
        }
        for name in self.keyed.private.iter() {
            copy(name);
        }
        super::target::copy(req.headers(), headers, &self.vary, own_value);
        if let Some(host) = host {
            headers.insert(header::HOST, host);
        }
        out.extensions_mut().insert(super::PollFetch);
        out
    }
}

/// A copy of `uri` in an allocation of its own (a parsed URI is often a
/// view of the buffer its whole request head was read into).
fn own_uri(uri: &Uri) -> Uri {
    Uri::from_maybe_shared(Bytes::from(uri.to_string())).unwrap_or_else(|_| uri.clone())
}

/// A copy of `value` in an allocation of its own, still marked sensitive
/// if it was.
fn own_value(value: &HeaderValue) -> HeaderValue {
    let mut own = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
    own.set_sensitive(value.is_sensitive());
    own
}

/// The bytes a request holds, its inline size included: its URI, its
/// header map (each entry's slot, name and value) and its extensions, as
/// the registry counts a poll loop's request template. The body is not
/// counted: a canonical request's is empty.
#[cfg(any(feature = "coordinator", feature = "registry"))]
pub(crate) fn request_bytes<B>(req: &Request<B>) -> usize {
    // The slot of one header entry in a `HeaderMap` (its hash, links, name
    // and value) and of its index, about.
    const ENTRY: usize = 112 + 8;
    // An extensions map: its box, its table and each boxed value, about.
    const EXTENSIONS: usize = 64;
    const EXTENSION: usize = 48;
    let uri = req.uri();
    let uri_bytes = uri.scheme_str().map_or(0, str::len)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    let headers = req.headers();
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    let extensions = match req.extensions().len() {
        0 => 0,
        n => EXTENSIONS + n * EXTENSION,
    };
    std::mem::size_of::<Request<B>>() + uri_bytes + headers.capacity() * ENTRY + fields + extensions
}

impl<B> KeyFn<Request<B>> for HttpKey {
    fn key(&self, req: &Request<B>) -> Option<Key> {
        let method = req.method();
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        if super::buffer::is_event_stream(req.headers(), header::ACCEPT) {
            return None;
        }
        let authority = self.authority(req)?;
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut key) => {
                key.clear();
                self.write(&mut key, req, authority);
                let built = key.to_key();
                if key.capacity() > SCRATCH_KEEP {
                    *key = KeyBuilder::new();
                }
                Some(built)
            }
            // Only if a key were made while this thread makes one.
            Err(_) => {
                let mut key = Key::builder();
                self.write(&mut key, req, authority);
                Some(key.build())
            }
        })
    }
}

impl HttpKey {
    /// Writes the parts of `req`'s key. Headers are written with their
    /// names, and those absent not at all (each costs one map lookup): no
    /// two requests make the same parts, since every header's values
    /// follow its name and its count.
    fn write<B>(&self, key: &mut KeyBuilder, req: &Request<B>, authority: &[u8]) {
        let (uri, headers) = (req.uri(), req.headers());
        let method = req.method().as_str().as_bytes();
        let target = uri.path_and_query().map_or(0, |p| p.as_str().len());
        key.reserve(method.len() + authority.len() + target + 64);
        key.push(method);
        key.push(authority);
        key.path(uri.path().as_bytes());
        key.push(uri.query().unwrap_or("").as_bytes());
        for name in self.keyed.public.iter() {
            key.push_present_header(headers, name);
        }
        super::target::push(key, headers, &self.vary);
        if !self.keyed.private.is_empty() {
            key.mark_private();
            for name in self.keyed.private.iter() {
                key.push_present_header(headers, name);
            }
        }
    }
}

/// A host without its port, and whether it had one (a colon outside an IPv6
/// literal's brackets).
fn without_port(host: &[u8]) -> (&[u8], bool) {
    match host.iter().rposition(|&b| b == b':') {
        Some(i)
            if !host[i..].contains(&b']')
                && (host.first() == Some(&b'[') || !host[..i].contains(&b':')) =>
        {
            (&host[..i], true)
        }
        _ => (host, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(uri: &str) -> http::request::Builder {
        Request::get(uri)
    }

    fn key(k: &HttpKey, req: http::request::Builder) -> Option<Key> {
        k.key(&req.body(()).unwrap())
    }

    #[test]
    fn only_get_and_head_are_keyed() {
        let k = HttpKey::new();
        assert!(key(&k, get("/a")).is_some());
        assert!(key(&k, Request::head("/a")).is_some());
        for m in ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
            assert!(
                key(&k, Request::builder().method(m).uri("/a")).is_none(),
                "{m}"
            );
        }
    }

    #[test]
    fn method_authority_path_and_query_all_count() {
        let k = HttpKey::new();
        let base = key(&k, get("http://a/x?q=1"));
        assert_eq!(base, key(&k, get("http://a/x?q=1")));
        assert_ne!(base, key(&k, Request::head("http://a/x?q=1")));
        assert_ne!(base, key(&k, get("http://b/x?q=1")));
        assert_ne!(base, key(&k, get("http://a/y?q=1")));
        assert_ne!(base, key(&k, get("http://a/x?q=2")));
    }

    #[test]
    fn the_path_is_marked_without_the_query() {
        let k = HttpKey::new();
        let key = key(&k, get("http://a/x/y?q=1")).unwrap();
        assert_eq!(key.path(), Some(&b"/x/y"[..]));
        assert_ne!(Some(key), super::tests::key(&k, get("http://a/x/y")));
        assert_ne!(
            super::tests::key(&k, get("http://a/x?")),
            super::tests::key(&k, get("http://a/x%3F"))
        );
    }

    #[test]
    fn host_header_stands_in_for_a_missing_authority() {
        let k = HttpKey::new();
        assert_ne!(
            key(&k, get("/x").header("host", "a")),
            key(&k, get("/x").header("host", "b"))
        );
        assert_eq!(
            key(&k, get("http://a/x")),
            key(&k, get("http://a/x").header("host", "b"))
        );
    }

    #[test]
    fn a_single_site_ignores_host_and_a_host_list_keys_listed_hosts_only() {
        let one = HttpKey::new().single_site();
        assert_eq!(
            key(&one, get("/x").header("host", "a")),
            key(&one, get("/x").header("host", "b"))
        );
        assert_eq!(
            key(&one, get("/x")),
            key(&one, get("/x").header("host", "b"))
        );
        assert_ne!(key(&one, get("http://a/x")), key(&one, get("http://b/x")));

        let listed = HttpKey::new().hosts(["a.example", "B.example:8080", "[::1]"]);
        let host = |h: &str| key(&listed, get("/x").header("host", h));
        assert_eq!(host("a.example"), host("A.EXAMPLE:443"));
        assert_ne!(host("a.example"), host("b.example:8080"));
        assert!(host("b.example:8080").is_some());
        assert!(host("b.example").is_none(), "listed with another port");
        assert!(host("[::1]:80").is_some());
        assert!(host("c.example").is_none());
        assert!(key(&listed, get("/x")).is_none(), "no Host");
        assert!(
            key(&listed, get("http://c.example/x")).is_some(),
            "a client's URI"
        );
        assert!(HttpKey::new()
            .hosts(Vec::<String>::new())
            .key(&get("/x").header("host", "z").body(()).unwrap())
            .is_some());
    }

    #[test]
    fn the_canonical_request_has_the_host_the_rule_keys_by() {
        let req = get("/x").header("host", "A.example:443").body(()).unwrap();
        let listed = HttpKey::new().hosts(["a.example"]);
        assert_eq!(
            listed.canonical_request(&req).headers()["host"],
            "a.example"
        );
        let one = HttpKey::new().single_site();
        assert!(!one.canonical_request(&req).headers().contains_key("host"));
        assert_eq!(one.key(&one.canonical_request(&req)), one.key(&req));
        assert_eq!(
            HttpKey::new().canonical_request(&req).headers()["host"],
            "A.example:443"
        );
    }

    #[test]
    fn the_canonical_request_is_marked_as_a_poll_fetch_and_the_callers_is_not() {
        let req = get("/doc").body(()).unwrap();
        let canonical = HttpKey::new().canonical_request(&req);
        assert!(canonical
            .extensions()
            .get::<super::super::PollFetch>()
            .is_some());
        assert!(req.extensions().get::<super::super::PollFetch>().is_none());
    }

    #[test]
    fn the_canonical_request_never_carries_validators() {
        let k = HttpKey::new();
        let req = get("/doc")
            .header("if-none-match", "\"v1\"")
            .header("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT")
            .header("if-match", "\"v1\"")
            .header("if-unmodified-since", "Wed, 21 Oct 2015 07:28:00 GMT")
            .header("accept", "application/json")
            .body(())
            .unwrap();
        let canonical = k.canonical_request(&req);
        for name in VALIDATORS {
            assert!(!canonical.headers().contains_key(&name), "{name}");
        }
        assert_eq!(canonical.headers()["accept"], "application/json");
        assert_eq!(
            k.key(&canonical),
            key(&k, get("/doc").header("accept", "application/json"))
        );
    }

    #[test]
    fn credentials_partition_keys_unless_public() {
        let k = HttpKey::new();
        let alice = get("/me").header("authorization", "Bearer alice");
        let bob = get("/me").header("authorization", "Bearer bob");
        assert_ne!(key(&k, alice), key(&k, bob));
        assert_ne!(
            key(&k, get("/me").header("cookie", "sid=1")),
            key(&k, get("/me").header("cookie", "sid=2"))
        );
        assert_ne!(
            key(&k, get("/me")),
            key(&k, get("/me").header("cookie", "sid=1"))
        );

        let public = HttpKey::new().public();
        assert_eq!(
            key(&public, get("/me").header("authorization", "Bearer alice")),
            key(&public, get("/me").header("authorization", "Bearer bob"))
        );
    }

    #[test]
    fn credentials_cannot_be_smuggled_between_headers() {
        let k = HttpKey::new();
        assert_ne!(
            key(&k, get("/me").header("authorization", "x")),
            key(&k, get("/me").header("cookie", "x"))
        );
    }

    #[test]
    fn varied_headers_count_and_others_do_not() {
        let k = HttpKey::new().vary(header::ACCEPT_LANGUAGE);
        assert_ne!(
            key(&k, get("/a").header("accept-language", "en")),
            key(&k, get("/a").header("accept-language", "fr"))
        );
        assert_eq!(
            key(&k, get("/a").header("user-agent", "x")),
            key(&k, get("/a").header("user-agent", "y"))
        );
        assert_ne!(
            key(
                &k,
                get("/a")
                    .header("accept-language", "en")
                    .header("accept-language", "fr")
            ),
            key(&k, get("/a").header("accept-language", "en"))
        );
    }

    #[test]
    fn conditional_ranged_and_negotiated_requests_get_their_own_keys() {
        let k = HttpKey::new();
        let plain = key(&k, get("/doc"));
        for (name, value) in [
            ("if-none-match", "\"v1\""),
            ("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ("range", "bytes=0-3"),
            ("accept-encoding", "gzip"),
            ("accept", "application/json"),
        ] {
            let other = key(&k, get("/doc").header(name, value));
            assert_ne!(plain, other, "{name}");
            assert_eq!(other, key(&k, get("/doc").header(name, value)), "{name}");
        }
        let bare = HttpKey::new().without_default_vary();
        assert_eq!(
            key(&bare, get("/doc")),
            key(&bare, get("/doc").header("range", "bytes=0-3"))
        );
    }

    #[test]
    fn event_stream_requests_pass_through() {
        let k = HttpKey::new();
        assert!(key(&k, get("/events").header("accept", "text/event-stream")).is_none());
        assert!(key(
            &k,
            get("/events").header("accept", "Text/Event-Stream; q=1")
        )
        .is_none());
    }

    #[test]
    fn a_canonical_request_keeps_only_the_keys_parts_and_has_the_same_key() {
        let k = HttpKey::new().vary(header::ACCEPT_LANGUAGE);
        let req = get("/a?q=1")
            .header("host", "api")
            .header("accept-language", "en")
            .header("accept-language", "fr")
            .header("cookie", "sid=1")
            .header("x-request-id", "7")
            .body(String::from("body"))
            .unwrap();
        let canonical = k.canonical_request(&req);
        assert_eq!(k.key(&canonical), k.key(&req));
        assert_eq!(canonical.uri(), "/a?q=1");
        assert_eq!(canonical.headers()["host"], "api");
        assert_eq!(
            canonical
                .headers()
                .get_all("accept-language")
                .iter()
                .count(),
            2
        );
        assert!(!canonical.headers().contains_key("x-request-id"));
        assert!(canonical.body().is_empty());
        assert_eq!(
            k.canonical_request(&canonical).headers(),
            canonical.headers()
        );

        let public = HttpKey::new().public();
        assert!(!public
            .canonical_request(&req)
            .headers()
            .contains_key("cookie"));
    }

    #[test]
    fn retargeting_headers_get_their_own_keys_even_for_a_public_endpoint() {
        for k in [
            HttpKey::new(),
            HttpKey::new().public().without_default_vary(),
        ] {
            let plain = key(&k, get("/"));
            for (name, value) in [
                ("x-forwarded-host", "evil.example"),
                ("x-original-url", "/admin"),
                ("x-http-method-override", "POST"),
                ("forwarded", "host=evil.example"),
            ] {
                let poisoned = key(&k, get("/").header(name, value));
                assert_ne!(plain, poisoned, "{name}");
                assert_eq!(poisoned, key(&k, get("/").header(name, value)), "{name}");
            }
            assert_ne!(
                key(&k, get("/").header("x-forwarded-host", "a")),
                key(&k, get("/").header("x-host", "a"))
            );
        }
    }

    #[test]
    fn credentials_a_public_endpoint_varies_on_are_redacted_from_debug() {
        let k = HttpKey::new().public().vary(header::COOKIE);
        let key = |cookie| key(&k, get("http://a/me").header("cookie", cookie)).unwrap();
        assert_ne!(key("sid=hunter2"), key("sid=other"));
        let shown = format!("{:?}", key("sid=hunter2"));
        assert!(shown.contains("/me"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn a_varied_host_is_sent_once_and_as_sent_in_the_canonical_request() {
        let req = get("/x").header("host", "A.example:443").body(()).unwrap();
        for k in [
            HttpKey::new().vary(header::HOST),
            HttpKey::new().vary(header::HOST).hosts(["a.example"]),
        ] {
            let canonical = k.canonical_request(&req);
            let hosts: Vec<_> = canonical.headers().get_all("host").iter().collect();
            assert_eq!(hosts, ["A.example:443"]);
            assert_eq!(k.key(&canonical), k.key(&req));
        }
    }

    #[test]
    fn a_varied_retargeting_header_is_keyed_and_sent_once() {
        for name in ["x-forwarded-host", "forwarded"] {
            let k = HttpKey::new().vary(HeaderName::from_static(name));
            let req = get("/").header(name, "host=a").body(()).unwrap();
            let canonical = k.canonical_request(&req);
            assert_eq!(
                canonical.headers().get_all(name).iter().count(),
                1,
                "{name}"
            );
            assert_eq!(k.key(&canonical), k.key(&req), "{name}");
            assert_ne!(
                k.key(&req),
                key(&k, get("/").header(name, "host=b")),
                "{name}"
            );
        }
    }

    #[test]
    fn the_client_address_in_forwarded_does_not_split_keys() {
        let k = HttpKey::new();
        let from = |value: &str| key(&k, get("/").header("forwarded", value));
        assert_eq!(from("for=192.0.2.1"), key(&k, get("/")));
        assert_eq!(
            from("for=192.0.2.1;proto=https"),
            from("for=198.51.100.7;proto=https")
        );
        assert_ne!(
            from("for=192.0.2.1;proto=https"),
            from("for=192.0.2.1;proto=http")
        );
    }

    #[test]
    fn the_canonical_request_carries_the_retargeting_headers_as_keyed() {
        let k = HttpKey::new();
        let req = get("/")
            .header("x-forwarded-host", "app.example")
            .header("forwarded", "for=192.0.2.1;host=app.example")
            .body(())
            .unwrap();
        let canonical = k.canonical_request(&req);
        assert_eq!(canonical.headers()["x-forwarded-host"], "app.example");
        assert_eq!(canonical.headers()["forwarded"], "host=app.example");
        assert_eq!(k.key(&canonical), k.key(&req));
    }

    #[test]
    fn a_varied_credential_is_sent_once_in_the_canonical_request() {
        let k = HttpKey::new().vary(header::COOKIE);
        let req = get("/me").header("cookie", "sid=1").body(()).unwrap();
        let canonical = k.canonical_request(&req);
        assert_eq!(canonical.headers().get_all("cookie").iter().count(), 1);
        assert_eq!(k.key(&canonical), k.key(&req));
    }

    #[test]
    fn a_credential_header_partitions_private_keys_and_is_redacted() {
        let user = HeaderName::from_static("x-user");
        let k = HttpKey::new().credential(user.clone());
        let alice = get("/me")
            .header("x-user", "alice-secret")
            .body(())
            .unwrap();
        let bob = get("/me").header("x-user", "bob-secret").body(()).unwrap();
        assert_ne!(k.key(&alice), k.key(&bob));
        assert!(!format!("{:?}", k.key(&alice).unwrap()).contains("alice"));
        assert_eq!(
            k.canonical_request(&alice).headers()["x-user"],
            "alice-secret"
        );
        let public = k.public();
        assert_eq!(public.key(&alice), public.key(&bob));
        assert!(!public
            .canonical_request(&alice)
            .headers()
            .contains_key(&user));
    }

    #[test]
    fn credentials_are_redacted_from_debug() {
        let k = HttpKey::new();
        let key = key(
            &k,
            get("http://a/me").header("authorization", "Bearer hunter2"),
        )
        .unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("/me"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
