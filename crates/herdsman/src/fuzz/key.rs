//! Keys built from arbitrary requests: [`HttpKey`], a Coordinator class's
//! key ([`ClassKey`](crate::coordinator::ClassKey), with the rollout's
//! identity header) and the limit layer's caller identity.
//!
//! Properties, for a request and a second one (a few edits of the first,
//! or another request):
//!
//! - the two keys are equal exactly when a reference serialization of the
//!   keyed parts is: the method, the authority the host rule keys by, the
//!   path, the query, the values of each varied header in order, the
//!   re-targeting headers sent (`X-Forwarded-Host`,
//!   `X-HTTP-Method-Override`: named, when not varied) and, unless the
//!   endpoint is public, the values of each credential header
//!   (`Authorization`, `Proxy-Authorization`, `Cookie`, the identity
//!   header). So no two different requests share a key, and nothing
//!   unkeyed splits one;
//! - which requests get no key (not `GET`/`HEAD`, an event stream, an
//!   unlisted host) is what the documentation says;
//! - credentials never show in a key's `Debug`: its shown part is the same
//!   with the credentials removed, and a caller identity shows nothing;
//! - the canonical request (what a poll loop sends) has the key of the
//!   request without its validators, carries nothing else (the
//!   re-targeting headers are keyed), and is its own
//!   canonical request.

use std::fmt::Write as _;

use arbitrary::Arbitrary;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};

use crate::{
    config::{ClassConfig, Config, Environment},
    coordinator::{class_key, CallerIdentity},
    http::HttpKey,
    key::{Key, KeyFn},
    switch::Rollout,
};

/// A key rule and two requests.
#[derive(Debug, Arbitrary)]
pub struct Input {
    rule: Rule,
    first: Req,
    second: Second,
}

#[derive(Debug, Arbitrary)]
struct Rule {
    public: bool,
    hosts: Hosts,
    vary: Vec<Name>,
    /// Without the default `vary` headers (an `HttpKey` only).
    bare: bool,
    /// A Coordinator class's key, with this identity header when set.
    class: Option<Option<Identity>>,
}

/// A rollout identity header.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Identity {
    User,
    Tenant,
    Cookie,
}

impl Identity {
    fn header(self) -> HeaderName {
        match self {
            Identity::User => Name::User.header(),
            Identity::Tenant => Name::Tenant.header(),
            Identity::Cookie => header::COOKIE,
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Hosts {
    Header,
    One,
    Listed(Vec<Host>),
}

#[derive(Debug, Clone, Arbitrary)]
struct Req {
    method: Verb,
    uri: Target,
    headers: Vec<(Name, Value)>,
}

#[derive(Debug, Arbitrary)]
enum Second {
    Edited(Vec<Edit>),
    Other(Req),
}

#[derive(Debug, Arbitrary)]
enum Edit {
    Method(Verb),
    Uri(Target),
    Drop(u8),
    Rename(u8, Name),
    Split(u8, u8),
    Swap(u8),
    Add(Name, Value),
    Set(u8, Value),
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Verb {
    Get,
    Head,
    Post,
    Delete,
}

#[derive(Debug, Clone, Arbitrary)]
enum Target {
    Origin {
        path: Vec<u8>,
        query: Option<Vec<u8>>,
    },
    Absolute {
        https: bool,
        host: Host,
        path: Vec<u8>,
        query: Option<Vec<u8>>,
    },
    Raw(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
enum Host {
    A,
    AUpper,
    AWithPort,
    B,
    BWithPort,
    Ipv6,
    Ipv6WithPort,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
enum Name {
    Host,
    Authorization,
    ProxyAuthorization,
    Cookie,
    Accept,
    AcceptEncoding,
    Range,
    IfNoneMatch,
    IfModifiedSince,
    AcceptLanguage,
    Tenant,
    User,
    UserAgent,
    ForwardedHost,
    MethodOverride,
}

#[derive(Debug, Clone, Arbitrary)]
enum Value {
    /// A credential-looking value, unlike anything else in a request.
    Secret(u16),
    EventStream,
    Host(Host),
    Bytes(Vec<u8>),
}

impl Host {
    fn text(self) -> &'static str {
        match self {
            Host::A => "a.example",
            Host::AUpper => "A.Example",
            Host::AWithPort => "a.example:443",
            Host::B => "b.example",
            Host::BWithPort => "b.example:8080",
            Host::Ipv6 => "[::1]",
            Host::Ipv6WithPort => "[::1]:80",
            Host::Other => "other.example",
        }
    }
}

impl Name {
    fn header(self) -> HeaderName {
        match self {
            Name::Host => header::HOST,
            Name::Authorization => header::AUTHORIZATION,
            Name::ProxyAuthorization => header::PROXY_AUTHORIZATION,
            Name::Cookie => header::COOKIE,
            Name::Accept => header::ACCEPT,
            Name::AcceptEncoding => header::ACCEPT_ENCODING,
            Name::Range => header::RANGE,
            Name::IfNoneMatch => header::IF_NONE_MATCH,
            Name::IfModifiedSince => header::IF_MODIFIED_SINCE,
            Name::AcceptLanguage => header::ACCEPT_LANGUAGE,
            Name::Tenant => HeaderName::from_static("x-tenant"),
            Name::User => HeaderName::from_static("x-user"),
            Name::UserAgent => header::USER_AGENT,
            Name::ForwardedHost => HeaderName::from_static("x-forwarded-host"),
            Name::MethodOverride => HeaderName::from_static("x-http-method-override"),
        }
    }
}

impl Value {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Value::Secret(n) => format!("Secret-{n:05}-hunter2").into_bytes(),
            Value::EventStream => b"text/event-stream".to_vec(),
            Value::Host(host) => host.text().as_bytes().to_vec(),
            Value::Bytes(bytes) => bytes.clone(),
        }
    }
}

impl Verb {
    fn method(self) -> Method {
        match self {
            Verb::Get => Method::GET,
            Verb::Head => Method::HEAD,
            Verb::Post => Method::POST,
            Verb::Delete => Method::DELETE,
        }
    }
}

impl Target {
    fn uri(&self) -> Option<Uri> {
        let mut text = Vec::new();
        let (path, query) = match self {
            Target::Raw(bytes) => return Uri::try_from(bytes.as_slice()).ok(),
            Target::Origin { path, query } => (path, query),
            Target::Absolute {
                https,
                host,
                path,
                query,
            } => {
                text.extend_from_slice(if *https { b"https://" } else { b"http://" });
                text.extend_from_slice(host.text().as_bytes());
                (path, query)
            }
        };
        text.push(b'/');
        text.extend_from_slice(path);
        if let Some(query) = query {
            text.push(b'?');
            text.extend_from_slice(query);
        }
        Uri::try_from(text).ok()
    }
}

impl Req {
    fn build(&self) -> Option<Request<()>> {
        let mut req = Request::new(());
        *req.method_mut() = self.method.method();
        *req.uri_mut() = self.uri.uri()?;
        for (name, value) in &self.headers {
            if let Ok(value) = HeaderValue::from_bytes(&value.bytes()) {
                req.headers_mut().append(name.header(), value);
            }
        }
        Some(req)
    }

    fn edited(&self, edits: &[Edit]) -> Req {
        let mut req = self.clone();
        for edit in edits {
            let n = req.headers.len().max(1);
            match edit {
                Edit::Method(verb) => req.method = *verb,
                Edit::Uri(target) => req.uri = target.clone(),
                Edit::Drop(i) if !req.headers.is_empty() => {
                    req.headers.remove(usize::from(*i) % n);
                }
                Edit::Rename(i, name) if !req.headers.is_empty() => {
                    req.headers[usize::from(*i) % n].0 = *name;
                }
                Edit::Split(i, at) if !req.headers.is_empty() => {
                    let i = usize::from(*i) % n;
                    let (name, value) = req.headers[i].clone();
                    let bytes = value.bytes();
                    let at = usize::from(*at) % (bytes.len() + 1);
                    req.headers[i].1 = Value::Bytes(bytes[..at].to_vec());
                    req.headers
                        .insert(i + 1, (name, Value::Bytes(bytes[at..].to_vec())));
                }
                Edit::Swap(i) if req.headers.len() > 1 => {
                    let i = usize::from(*i) % (n - 1);
                    req.headers.swap(i, i + 1);
                }
                Edit::Add(name, value) => req.headers.push((*name, value.clone())),
                Edit::Set(i, value) if !req.headers.is_empty() => {
                    req.headers[usize::from(*i) % n].1 = value.clone();
                }
                _ => {}
            }
        }
        req
    }
}

/// What a key rule is, spelled out for the reference serialization.
struct Spec {
    public: bool,
    hosts: SpecHosts,
    vary: Vec<HeaderName>,
    credentials: Vec<HeaderName>,
}

enum SpecHosts {
    Header,
    One,
    Listed(Vec<String>),
}

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

const VALIDATORS: [HeaderName; 4] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
];

/// A key function and its spelled-out rule.
type Built = (
    Box<dyn KeyFn<Request<()>>>,
    Box<dyn Fn(&Request<()>) -> Request<()>>,
    Spec,
);

fn build_rule(rule: &Rule) -> Built {
    let mut vary: Vec<HeaderName> = if rule.bare && rule.class.is_none() {
        Vec::new()
    } else {
        DEFAULT_VARY.to_vec()
    };
    for name in &rule.vary {
        if !vary.contains(&name.header()) {
            vary.push(name.header());
        }
    }
    let mut credentials = vec![
        header::AUTHORIZATION,
        header::PROXY_AUTHORIZATION,
        header::COOKIE,
    ];
    let listed = |hosts: &[Host]| -> Vec<String> {
        hosts
            .iter()
            .map(|h| h.text().to_ascii_lowercase())
            .collect()
    };
    match &rule.class {
        None => {
            let mut key = HttpKey::new();
            if rule.bare {
                key = key.without_default_vary();
            }
            for name in &rule.vary {
                key = key.vary(name.header());
            }
            if rule.public {
                key = key.public();
            }
            let hosts = match &rule.hosts {
                Hosts::Header => SpecHosts::Header,
                Hosts::One => {
                    key = key.single_site();
                    SpecHosts::One
                }
                Hosts::Listed(hosts) => {
                    key = key.hosts(hosts.iter().map(|h| h.text()));
                    match listed(hosts) {
                        hosts if hosts.is_empty() => SpecHosts::One,
                        hosts => SpecHosts::Listed(hosts),
                    }
                }
            };
            let canonical = key.clone();
            let spec = Spec {
                public: rule.public,
                hosts,
                vary,
                credentials,
            };
            (
                Box::new(key),
                Box::new(move |req| canonical.canonical_request(req)),
                spec,
            )
        }
        Some(identity) => {
            let mut config = Config::profile(Environment::Test);
            config.keys.hosts = match &rule.hosts {
                Hosts::Listed(hosts) => hosts.iter().map(|h| h.text().to_owned()).collect(),
                _ => Vec::new(),
            };
            config.keys.vary = rule
                .vary
                .iter()
                .map(|n| n.header().as_str().to_owned())
                .collect();
            config.rollout.identity_header = identity.map(|n| n.header().as_str().to_owned());
            config.classes.insert(
                "c".to_owned(),
                ClassConfig {
                    paths: vec!["/".to_owned()],
                    public: rule.public,
                    ..ClassConfig::default()
                },
            );
            let hosts = match listed(&config_hosts(rule)) {
                hosts if hosts.is_empty() => SpecHosts::One,
                hosts => SpecHosts::Listed(hosts),
            };
            if let Some(identity) = identity {
                if !rule.public {
                    let name = identity.header();
                    if !credentials.contains(&name) {
                        credentials.push(name.clone());
                    }
                    if !vary.contains(&name) {
                        vary.push(name);
                    }
                }
            }
            let key = class_key(&config, &config.class("c"));
            let canonical = key.clone();
            let spec = Spec {
                public: rule.public,
                hosts,
                vary,
                credentials,
            };
            (
                Box::new(key),
                Box::new(move |req| canonical.canonical_request(req)),
                spec,
            )
        }
    }
}

fn config_hosts(rule: &Rule) -> Vec<Host> {
    match &rule.hosts {
        Hosts::Listed(hosts) => hosts.clone(),
        _ => Vec::new(),
    }
}

/// `host` as a name and whether a port follows: `[::1]:80` is `[::1]`
/// with a port, `a:1` is `a` with one, `::1` is a bare name.
fn split_port(host: &[u8]) -> (&[u8], bool) {
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(end) if host.get(end + 1) == Some(&b':') => (&host[..=end], true),
            _ => (host, false),
        };
    }
    let colons = host.iter().filter(|&&b| b == b':').count();
    match host.iter().position(|&b| b == b':') {
        Some(i) if colons == 1 => (&host[..i], true),
        _ => (host, false),
    }
}

/// The reference serialization of what `spec` keys in `req`, or `None`
/// when `req` gets no key.
fn reference(spec: &Spec, req: &Request<()>) -> Option<Vec<Vec<Vec<u8>>>> {
    let headers = req.headers();
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
    }
    let accept = headers.get(header::ACCEPT).map(|v| v.as_bytes());
    if accept.is_some_and(|a| {
        a.trim_ascii_start()
            .to_ascii_lowercase()
            .starts_with(b"text/event-stream")
    }) {
        return None;
    }
    let host = headers.get(header::HOST).map(|v| v.as_bytes());
    let authority: Vec<u8> = match (req.uri().authority(), &spec.hosts) {
        (Some(authority), _) => authority.as_str().as_bytes().to_vec(),
        (None, SpecHosts::Header) => host.unwrap_or_default().to_vec(),
        (None, SpecHosts::One) => Vec::new(),
        (None, SpecHosts::Listed(listed)) => {
            let host = host?.trim_ascii();
            let (name, _) = split_port(host);
            listed
                .iter()
                .find(|entry| {
                    let entry = entry.as_bytes();
                    entry.eq_ignore_ascii_case(host)
                        || (!split_port(entry).1 && entry.eq_ignore_ascii_case(name))
                })?
                .as_bytes()
                .to_vec()
        }
    };
    let values = |name: &HeaderName| -> Vec<Vec<u8>> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect()
    };
    let mut parts = vec![
        vec![req.method().as_str().as_bytes().to_vec()],
        vec![authority],
        vec![req.uri().path().as_bytes().to_vec()],
        // `/a?` and `/a` are one resource: the key documents an empty
        // query as none.
        vec![req.uri().query().unwrap_or_default().as_bytes().to_vec()],
    ];
    for name in &spec.vary {
        if !spec.credentials.contains(name) {
            parts.push(values(name));
        }
    }
    // Re-targeting headers, when present and not varied: with their name.
    for name in [Name::ForwardedHost.header(), Name::MethodOverride.header()] {
        let sent = values(&name);
        if !sent.is_empty() && !spec.vary.contains(&name) {
            let named = std::iter::once(name.as_str().as_bytes().to_vec());
            parts.push(named.chain(sent).collect());
        }
    }
    for name in &spec.credentials {
        if !spec.public || spec.vary.contains(name) {
            parts.push(values(name));
        }
    }
    Some(parts)
}

/// `req` without its credential headers.
fn without_credentials(spec: &Spec, req: &Request<()>) -> Request<()> {
    let mut out = req.clone();
    for name in &spec.credentials {
        out.headers_mut().remove(name);
    }
    out
}

/// The part of a key's `Debug` that is shown.
/// The bytes a key's `Debug` shows: `Key("<shown>" + N private bytes)`,
/// or `Key("<shown>")` when it has none (absent credentials write none).
fn shown(key: &Key) -> String {
    let debug = format!("{key:?}");
    let end = debug.find("\" + ").unwrap_or(debug.len() - 2);
    debug[..end].to_owned()
}

fn without_validators(req: &Request<()>) -> Request<()> {
    let mut out = req.clone();
    for name in &VALIDATORS {
        out.headers_mut().remove(name);
    }
    out
}

fn check_one(key_fn: &dyn KeyFn<Request<()>>, spec: &Spec, req: &Request<()>) -> Option<Key> {
    let key = key_fn.key(req);
    assert_eq!(
        key.is_some(),
        reference(spec, req).is_some(),
        "keyed or not: {req:?}"
    );
    let key = key?;
    let bare = key_fn
        .key(&without_credentials(spec, req))
        .expect("credentials do not decide whether a request is keyed");
    assert_eq!(shown(&key), shown(&bare), "credentials shown: {req:?}");
    Some(key)
}

fn check_canonical(
    key_fn: &dyn KeyFn<Request<()>>,
    canonical: &dyn Fn(&Request<()>) -> Request<()>,
    spec: &Spec,
    req: &Request<()>,
) {
    let once = canonical(req);
    assert_eq!(
        key_fn.key(&once),
        key_fn.key(&without_validators(req)),
        "{req:?} became {once:?}"
    );
    let twice = canonical(&once);
    assert_eq!(twice.headers(), once.headers());
    assert_eq!(twice.uri(), once.uri());
    for name in once.headers().keys() {
        assert!(
            name == header::HOST
                || (spec.vary.contains(name) && !VALIDATORS.contains(name))
                || spec.credentials.contains(name)
                || *name == Name::ForwardedHost.header()
                || *name == Name::MethodOverride.header(),
            "{name} carried: {once:?}"
        );
    }
}

fn headers_text(headers: &HeaderMap) -> String {
    let mut text = String::new();
    for (name, value) in headers {
        let _ = write!(text, "{name}: {value:?}; ");
    }
    text
}

/// Checks every property on `input`.
pub fn check(input: &Input) {
    let (key_fn, canonical, spec) = build_rule(&input.rule);
    let second = match &input.second {
        Second::Edited(edits) => input.first.edited(edits),
        Second::Other(req) => req.clone(),
    };
    let (Some(a), Some(b)) = (input.first.build(), second.build()) else {
        return;
    };
    let key_a = check_one(&*key_fn, &spec, &a);
    let key_b = check_one(&*key_fn, &spec, &b);
    if let (Some(key_a), Some(key_b)) = (&key_a, &key_b) {
        assert_eq!(
            key_a == key_b,
            reference(&spec, &a) == reference(&spec, &b),
            "{} {} / {} {}",
            a.uri(),
            headers_text(a.headers()),
            b.uri(),
            headers_text(b.headers()),
        );
    }
    if key_a.is_some() {
        check_canonical(&*key_fn, &*canonical, &spec, &a);
    }

    // The limit layer's caller identity: compared whole, shown never.
    let identity = match &input.rule.class {
        Some(Some(name)) => Rollout::new(100).with_identity_header(name.header()),
        _ => Rollout::new(100),
    };
    let caller = CallerIdentity::new(identity.clone());
    let (id_a, id_b) = (caller.key(&a), caller.key(&b));
    assert_eq!(id_a.is_some(), identity.identity(&a).is_some());
    assert_eq!(id_a == id_b, identity.identity(&a) == identity.identity(&b));
    if let Some(id) = id_a {
        let debug = format!("{id:?}");
        assert!(
            debug == "Key(\"\")" || debug.starts_with("Key(\"\" + "),
            "a caller identity shown: {debug}"
        );
    }
}

/// Builds an [`Input`] from `data` and checks it.
pub fn run(data: &[u8]) {
    super::drive(data, check);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn key_properties_hold_for_arbitrary_requests(
            data in prop::collection::vec(any::<u8>(), 0..2048),
        ) {
            run(&data);
        }
    }
}
