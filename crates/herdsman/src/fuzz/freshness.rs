//! `Cache-Control`, `Pragma`, `Expires`, `Date`, `Age` and `Last-Modified`,
//! as the cache reads them from responses and requests
//! (`cache::freshness`).
//!
//! Properties, on any header values:
//!
//! - nothing panics, and the rendered `Age` is the initial age in whole
//!   seconds, capped at 2^31;
//! - a stored response is fresh for at most the class TTL, is served stale
//!   for at most the class's windows (never under `no-cache`,
//!   `must-revalidate` or `proxy-revalidate`), was not `no-store`,
//!   `private` or malformed, and has the initial age of RFC 9111 §4.2.3;
//!   a refused one is refused for the first of those reasons it has;
//! - monotonic: a larger `Age` or a slower request never makes a response
//!   fresher, nor storable when it was not;
//! - well-formed `Cache-Control` and `Pragma` lines (known directives in any
//!   case, arguments as tokens, quoted or escaped, whitespace around `=`,
//!   empty elements, several lines) are read as a plain model of RFC 9111
//!   §5.2 reads them: the response's directives, and the request's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arbitrary::Arbitrary;
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::cache::{
    freshness::{
        age_header_value, corrected_initial_age, response_freshness, Limits, Reason, Received,
        RequestDirectives, ResponseDirectives, Storability,
    },
    CacheMode,
};

/// A response's (or request's) freshness headers, the class's limits and
/// the clock.
#[derive(Debug, Arbitrary)]
pub struct Input {
    fields: Vec<Field>,
    status: u16,
    ttl: u32,
    stale_while_revalidate: u16,
    stale_if_error: u16,
    /// Seconds after 2023-11-14T22:13:20Z.
    now: u32,
    delay: u16,
    /// Added to the age for the monotonicity checks.
    older: u32,
}

#[derive(Debug, Arbitrary)]
enum Field {
    CacheControl(Line),
    Pragma(Line),
    Expires(When),
    Date(When),
    LastModified(When),
    Age(Age),
    ETag,
}

#[derive(Debug, Arbitrary)]
enum Line {
    Directives(Vec<Directive>),
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct Directive {
    name: Name,
    /// Bit i upper-cases the name's i-th letter.
    case: u32,
    argument: Argument,
    /// Commas and whitespace before it: `0` is one `, `.
    gap: u8,
    /// Whitespace around the `=`.
    spaced: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
enum Name {
    NoStore,
    Private,
    NoCache,
    MustRevalidate,
    ProxyRevalidate,
    MaxAge,
    SMaxage,
    StaleWhileRevalidate,
    StaleIfError,
    Public,
    Extension(u8),
}

#[derive(Debug, Arbitrary)]
enum Argument {
    Absent,
    Token(u64),
    Quoted(u64),
    /// Every digit a quoted-pair: `"\1\0"`.
    Escaped(u64),
    /// A long run of digits, past any integer type.
    Huge(u8),
    Negative(u32),
    Decimal(u16, u8),
    Word,
    Empty,
    /// A quoted list, as `private="set-cookie, x-user"` has.
    List,
}

#[derive(Debug, Arbitrary)]
enum When {
    /// Seconds from now (negative: in the past), as an IMF-fixdate.
    At(i32),
    Zero,
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum Age {
    Seconds(u64),
    Raw(Vec<u8>),
}

const MAX_DELTA: u64 = 1 << 31;

impl Name {
    fn text(self) -> String {
        match self {
            Name::NoStore => "no-store".into(),
            Name::Private => "private".into(),
            Name::NoCache => "no-cache".into(),
            Name::MustRevalidate => "must-revalidate".into(),
            Name::ProxyRevalidate => "proxy-revalidate".into(),
            Name::MaxAge => "max-age".into(),
            Name::SMaxage => "s-maxage".into(),
            Name::StaleWhileRevalidate => "stale-while-revalidate".into(),
            Name::StaleIfError => "stale-if-error".into(),
            Name::Public => "public".into(),
            Name::Extension(n) => format!("x-ext{n}"),
        }
    }
}

impl Argument {
    fn render(&self) -> Option<String> {
        Some(match self {
            Argument::Absent => return None,
            Argument::Token(n) => n.to_string(),
            Argument::Quoted(n) => format!("\"{n}\""),
            Argument::Escaped(n) => {
                let digits: String = n.to_string().chars().flat_map(|c| ['\\', c]).collect();
                format!("\"{digits}\"")
            }
            Argument::Huge(n) => "9".repeat(20 + usize::from(*n)),
            Argument::Negative(n) => format!("-{n}"),
            Argument::Decimal(a, b) => format!("{a}.{b}"),
            Argument::Word => "abc".into(),
            Argument::Empty => String::new(),
            Argument::List => "\"set-cookie, x-user\"".into(),
        })
    }

    /// The delta-seconds a well-behaved reader finds (RFC 9111 §1.2.2).
    fn delta_seconds(&self) -> Option<Duration> {
        let seconds = match self {
            Argument::Token(n) | Argument::Quoted(n) | Argument::Escaped(n) => *n,
            Argument::Huge(_) => u64::MAX,
            _ => return None,
        };
        Some(Duration::from_secs(seconds.min(MAX_DELTA)))
    }
}

impl Directive {
    fn render(&self, out: &mut String) {
        out.push_str(match self.gap % 6 {
            0 => ", ",
            1 => ",",
            2 => " ,\t, ",
            3 => ",,",
            4 => "\t,",
            _ => " , ",
        });
        for (i, c) in self.name.text().chars().enumerate() {
            if self.case >> (i % 32) & 1 == 1 {
                out.push(c.to_ascii_uppercase());
            } else {
                out.push(c);
            }
        }
        if let Some(argument) = self.argument.render() {
            out.push_str(if self.spaced { " = " } else { "=" });
            out.push_str(&argument);
        }
    }
}

fn render_line(directives: &[Directive]) -> HeaderValue {
    let mut line = String::new();
    for directive in directives {
        directive.render(&mut line);
    }
    HeaderValue::from_str(&line).expect("names, digits, quotes and whitespace")
}

fn base() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn date(at: SystemTime, when: &When) -> Option<HeaderValue> {
    match when {
        When::At(offset) => {
            let delta = Duration::from_secs(u64::from(offset.unsigned_abs()));
            let time = if *offset < 0 {
                at.checked_sub(delta)?
            } else {
                at.checked_add(delta)?
            };
            // httpdate formats no time before 1970.
            time.duration_since(UNIX_EPOCH).ok()?;
            HeaderValue::from_str(&httpdate::fmt_http_date(time)).ok()
        }
        When::Zero => Some(HeaderValue::from_static("0")),
        When::Raw(bytes) => HeaderValue::from_bytes(bytes).ok(),
    }
}

/// The headers, and whether every `Cache-Control` (and `Pragma`) line is
/// well-formed, so that the model applies.
struct Built {
    headers: HeaderMap,
    modelled: bool,
}

fn build(input: &Input, now: SystemTime) -> Built {
    let mut headers = HeaderMap::new();
    let mut modelled = true;
    let mut put = |name: HeaderName, value: Option<HeaderValue>| {
        if let Some(value) = value {
            headers.append(name, value);
        }
    };
    for field in &input.fields {
        match field {
            Field::CacheControl(Line::Directives(d)) => {
                put(header::CACHE_CONTROL, Some(render_line(d)))
            }
            Field::Pragma(Line::Directives(d)) => put(header::PRAGMA, Some(render_line(d))),
            Field::CacheControl(Line::Raw(raw)) | Field::Pragma(Line::Raw(raw)) => {
                modelled = false;
                let name = match field {
                    Field::CacheControl(_) => header::CACHE_CONTROL,
                    _ => header::PRAGMA,
                };
                put(name, HeaderValue::from_bytes(raw).ok());
            }
            Field::Expires(when) => put(header::EXPIRES, date(now, when)),
            Field::Date(when) => put(header::DATE, date(now, when)),
            Field::LastModified(when) => put(header::LAST_MODIFIED, date(now, when)),
            Field::Age(Age::Seconds(n)) => put(header::AGE, Some(HeaderValue::from(*n))),
            Field::Age(Age::Raw(raw)) => put(header::AGE, HeaderValue::from_bytes(raw).ok()),
            Field::ETag => put(header::ETAG, Some(HeaderValue::from_static("\"v\""))),
        }
    }
    Built { headers, modelled }
}

/// The directives of the well-formed lines, read the plain way.
fn lines(input: &Input, pragma: bool) -> impl Iterator<Item = &Directive> {
    input.fields.iter().flat_map(move |field| match field {
        Field::CacheControl(Line::Directives(d)) if !pragma => d.as_slice(),
        Field::Pragma(Line::Directives(d)) if pragma => d.as_slice(),
        _ => &[],
    })
}

fn response_model(input: &Input) -> ResponseDirectives {
    let mut model = ResponseDirectives::default();
    for directive in lines(input, false) {
        let slot = match directive.name {
            Name::NoStore => &mut model.no_store,
            Name::Private => &mut model.private,
            Name::NoCache => &mut model.no_cache,
            Name::MustRevalidate => &mut model.must_revalidate,
            Name::ProxyRevalidate => &mut model.proxy_revalidate,
            Name::MaxAge | Name::SMaxage | Name::StaleWhileRevalidate | Name::StaleIfError => {
                let slot = match directive.name {
                    Name::MaxAge => &mut model.max_age,
                    Name::SMaxage => &mut model.s_maxage,
                    Name::StaleWhileRevalidate => &mut model.stale_while_revalidate,
                    _ => &mut model.stale_if_error,
                };
                match (directive.argument.delta_seconds(), *slot) {
                    (Some(value), None) => *slot = Some(value),
                    (Some(value), Some(first)) if value == first => {}
                    _ => model.malformed = true,
                }
                continue;
            }
            Name::Public | Name::Extension(_) => continue,
        };
        *slot = true;
    }
    model
}

fn request_model(input: &Input, has_cache_control: bool) -> RequestDirectives {
    let mut model = RequestDirectives::default();
    for directive in lines(input, false) {
        match directive.name {
            Name::NoCache => model.no_cache = true,
            Name::NoStore => model.no_store = true,
            Name::MaxAge => {
                if let Some(age) = directive.argument.delta_seconds() {
                    model.max_age = Some(model.max_age.map_or(age, |a| a.min(age)));
                }
            }
            _ => {}
        }
    }
    if !has_cache_control {
        model.no_cache = lines(input, true).any(|d| d.name == Name::NoCache);
    }
    model
}

/// Checks every property on `input`.
pub fn check(input: &Input) {
    let now = base() + Duration::from_secs(input.now.into());
    let Built { headers, modelled } = build(input, now);
    let status = StatusCode::from_u16(input.status).unwrap_or(StatusCode::OK);
    let received = Received {
        at: now,
        delay: Duration::from_secs(input.delay.into()),
    };

    let directives = ResponseDirectives::from_headers(&headers);
    let request = RequestDirectives::from_headers(&headers);
    let _ = request.requires_revalidation();
    assert!(request.max_age.is_none_or(|age| age.as_secs() <= MAX_DELTA));
    if modelled {
        assert_eq!(directives, response_model(input), "{headers:?}");
        let has_cache_control = headers.contains_key(header::CACHE_CONTROL);
        let pragma_modelled = has_cache_control
            || !input
                .fields
                .iter()
                .any(|f| matches!(f, Field::Pragma(Line::Raw(_))));
        if pragma_modelled {
            assert_eq!(
                request,
                request_model(input, has_cache_control),
                "{headers:?}"
            );
        }
    }

    let age = corrected_initial_age(&headers, received);
    let rendered: u64 = age_header_value(age)
        .to_str()
        .expect("digits")
        .parse()
        .expect("a number");
    assert_eq!(rendered, age.as_secs().min(MAX_DELTA));

    for mode in [CacheMode::App, CacheMode::Origin] {
        let limits = Limits {
            mode,
            ttl: Duration::from_secs(input.ttl.into()),
            stale_while_revalidate: Duration::from_secs(input.stale_while_revalidate.into()),
            stale_if_error: Duration::from_secs(input.stale_if_error.into()),
        };
        let storability = response_freshness(status, &headers, limits, received);
        check_storability(storability, &directives, limits, age, &headers);

        // Older: a slower request, and a larger `Age`.
        let older = Duration::from_secs(input.older.into());
        let slower = Received {
            delay: received.delay + older,
            ..received
        };
        let later = response_freshness(status, &headers, limits, slower);
        check_not_fresher(storability, later, &headers);
        let mut aged = headers.clone();
        aged.append(header::AGE, HeaderValue::from(input.older));
        let later = response_freshness(status, &aged, limits, received);
        check_not_fresher(storability, later, &aged);
    }
}

fn check_storability(
    storability: Storability,
    directives: &ResponseDirectives,
    limits: Limits,
    age: Duration,
    headers: &HeaderMap,
) {
    match storability {
        Storability::Store(lifetime) => {
            assert!(lifetime.fresh <= limits.ttl, "{lifetime:?} {headers:?}");
            assert!(lifetime.stale_while_revalidate <= limits.stale_while_revalidate);
            assert!(lifetime.stale_if_error <= limits.stale_if_error);
            assert!(!directives.no_store && !directives.private && !directives.malformed);
            assert_eq!(lifetime.age, age);
            assert!(
                !lifetime.fresh.is_zero()
                    || !lifetime.stale_while_revalidate.is_zero()
                    || !lifetime.stale_if_error.is_zero()
                    || lifetime.validators,
                "stored but never usable: {headers:?}"
            );
            if directives.no_cache {
                assert!(lifetime.fresh.is_zero());
            }
            if directives.no_cache || directives.must_revalidate || directives.proxy_revalidate {
                assert!(lifetime.stale_while_revalidate.is_zero());
                assert!(lifetime.stale_if_error.is_zero());
            }
        }
        Storability::NotStorable(reason) => {
            let first = if directives.no_store {
                Some(Reason::NoStore)
            } else if directives.private {
                Some(Reason::Private)
            } else if directives.malformed {
                Some(Reason::Malformed)
            } else {
                None
            };
            if let Some(first) = first {
                assert_eq!(reason, first, "{headers:?}");
            }
        }
    }
}

fn check_not_fresher(before: Storability, after: Storability, headers: &HeaderMap) {
    match (before, after) {
        (Storability::Store(a), Storability::Store(b)) => {
            assert!(b.fresh <= a.fresh, "older but fresher: {headers:?}");
            assert!(b.age >= a.age);
            assert_eq!(
                (b.stale_while_revalidate, b.stale_if_error, b.validators),
                (a.stale_while_revalidate, a.stale_if_error, a.validators)
            );
        }
        (Storability::NotStorable(_), Storability::Store(b)) => {
            panic!("older but storable ({b:?}): {headers:?}")
        }
        _ => {}
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
        fn freshness_properties_hold_for_arbitrary_bytes(
            data in prop::collection::vec(any::<u8>(), 0..2048),
        ) {
            run(&data);
        }
    }
}
