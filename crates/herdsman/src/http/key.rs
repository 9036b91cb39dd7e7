use std::sync::Arc;

use http::{header, HeaderName, Method, Request};

use crate::key::{Key, KeyFn};

/// The default key of an HTTP request.
///
/// Only `GET` and `HEAD` requests get a key; others pass through, and so do
/// requests that ask for an event stream (`Accept: text/event-stream`), which
/// is never a response to share. The key is made of:
///
/// - the method;
/// - the authority (from the URI, or else the `Host` header);
/// - the path and the query, as sent (the path is marked, see
///   [`Key::path`]);
/// - the values of the headers that select a different response even from an
///   endpoint that declares no `Vary`: `Accept`, `Accept-Encoding`, `Range`,
///   `If-Range`, `If-None-Match`, `If-Modified-Since`, `If-Match` and
///   `If-Unmodified-Since` (so a plain `GET` never gets the `304` or `206` of a
///   conditional or ranged one; clients sending the same validators still
///   coalesce);
/// - the values of each header named with [`vary`](HttpKey::vary), in order;
/// - unless the endpoint is [`public`](HttpKey::public), the full values of
///   `Authorization`, `Proxy-Authorization` and `Cookie` (the *auth
///   partition*), so that users never share responses. They are redacted from
///   the key's `Debug` output.
///
/// Coalescing happens before the response exists, so the response's own
/// `Vary` header cannot be consulted: name with `vary` every request header
/// the endpoint's responses depend on (`Accept-Language`, a tenant header...).
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
    public: bool,
}

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
            public: false,
        }
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
        self
    }

    /// Declares the endpoint public: its responses do not depend on who asks,
    /// so requests with different credentials share them.
    ///
    /// Only declare endpoints public whose responses carry no per-user data.
    pub fn public(mut self) -> Self {
        self.public = true;
        self
    }

    /// A request made of what this key function puts in the key, and nothing
    /// else: the method, the URI, the version, the `Host` header when the URI
    /// has no authority, the values of the varied headers and, unless the
    /// endpoint is public, the credential headers. The body is empty
    /// (`B::default()`) and no extension is kept.
    ///
    /// The [registry](crate::registry) polls with it, so that one
    /// subscriber's other headers are never sent on behalf of the others.
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
    /// ```
    pub fn canonical_request<B: Default>(&self, req: &Request<B>) -> Request<B> {
        let mut out = Request::new(B::default());
        *out.method_mut() = req.method().clone();
        *out.uri_mut() = req.uri().clone();
        *out.version_mut() = req.version();
        let mut copy = |name: &HeaderName| {
            for value in req.headers().get_all(name) {
                out.headers_mut().append(name.clone(), value.clone());
            }
        };
        if req.uri().authority().is_none() {
            copy(&header::HOST);
        }
        for name in self.vary.iter() {
            copy(name);
        }
        if !self.public {
            for name in &AUTH_HEADERS {
                copy(name);
            }
        }
        out
    }
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
        let mut key = Key::builder();
        key.push(method.as_str().as_bytes());
        match req.uri().authority() {
            Some(authority) => key.push(authority.as_str().as_bytes()),
            None => key.push(
                req.headers()
                    .get(header::HOST)
                    .map_or(&b""[..], |host| host.as_bytes()),
            ),
        }
        key.path(req.uri().path().as_bytes());
        key.push(req.uri().query().unwrap_or("").as_bytes());
        for name in self.vary.iter() {
            push_header(&mut key, req, name);
        }
        if !self.public {
            key.mark_private();
            for name in &AUTH_HEADERS {
                push_header(&mut key, req, name);
            }
        }
        Some(key.build())
    }
}

fn push_header<B>(key: &mut crate::key::KeyBuilder, req: &Request<B>, name: &HeaderName) {
    let values = req.headers().get_all(name);
    let count = values.iter().count() as u32;
    key.push(name.as_str().as_bytes());
    key.push(&count.to_be_bytes());
    for value in values {
        key.push(value.as_bytes());
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
