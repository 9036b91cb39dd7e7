//! HTTP freshness: whether a shared cache may store a response, and for how
//! long.
//!
//! This is the pure half of an HTTP cache layer: it reads `Cache-Control`
//! (RFC 9111 §5.2, with the RFC 5861 `stale-while-revalidate` and
//! `stale-if-error` extensions), `Expires`, `Date`, `Age` and `Pragma`, and
//! renders the `Age` and `Cache-Status` (RFC 9211) values the cache sends.
//! It does no I/O and never reads a clock: the one computation that needs the
//! current time takes it as an argument, so the cache layer decides which
//! clock is used and tests pin it.
//!
//! Every function is total. Malformed, duplicated, oversized, quoted or
//! non-UTF-8 header values never panic; they are read conservatively, in the
//! direction that stores less:
//!
//! - An invalid `max-age`, `s-maxage`, `stale-while-revalidate` or
//!   `stale-if-error` argument (`max-age=abc`, `max-age=-1`, a bare
//!   `max-age`), or one of them repeated with different values, marks the
//!   directives [malformed](ResponseDirectives::malformed). RFC 9111 §4.2.1
//!   lets a cache consider such a response stale; [`response_freshness`] does not
//!   store it at all. A directive repeated with the same value is fine.
//! - An invalid `Expires` (`Expires: 0`, garbage, two different values) means
//!   "already expired" (RFC 9111 §5.3).
//! - Delta-seconds over 2^31 saturate to 2^31 seconds (RFC 9111 §1.2.2).
//! - Names are case-insensitive, arguments may be quoted (`max-age="60"`),
//!   whitespace around `=` is tolerated, and a comma inside a quoted argument
//!   (`private="set-cookie, x-user"`) does not split directives.
//!
//! The age of a response follows RFC 9111 §4.2.3: the larger of its apparent
//! age (`now - Date`, never negative) and its `Age` plus the time the request
//! took; the cache adds the time it has held the response. An origin whose
//! clock runs behind ours makes its responses look older than they are (the
//! RFC accepts this; correct the origin's clock rather than the cache).
//!
//! Who decides the freshness lifetime is the class's [`CacheMode`]: in
//! [`App`](CacheMode::App) mode the class TTL decides, capped by the
//! response's explicit lifetime; in [`Origin`](CacheMode::Origin) mode the
//! response decides (explicit lifetime, else a heuristic lifetime only where
//! §4.2.2 allows one, else none), capped by the class TTL.

use std::{
    borrow::Cow,
    sync::Arc,
    time::{Duration, SystemTime},
};

use http::{
    header::{self, HeaderMap, HeaderName, HeaderValue},
    StatusCode,
};

use super::{CacheMode, Vary};
use crate::http::conditional::http_date;

/// The largest delta-seconds value (RFC 9111 §1.2.2): larger values, and
/// overflowing ones, saturate to it.
const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// Our member name in `Cache-Status` lists.
const CACHE_NAME: &str = "herdsman";

/// The `Cache-Status` response header (RFC 9211); `http` has no constant for
/// it.
pub(crate) const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The `Cache-Control` directives of a response that a shared cache acts on.
///
/// Read from every `Cache-Control` line of the response; directives a shared
/// cache does not act on (`public`, `no-transform`, `immutable`, extensions)
/// are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ResponseDirectives {
    /// `no-store`: the response must not be stored.
    pub(crate) no_store: bool,
    /// `private`, qualified (`private="set-cookie"`) or not: a shared cache
    /// must not store the response.
    pub(crate) private: bool,
    /// `no-cache`, qualified or not: the response must be revalidated before
    /// each use.
    pub(crate) no_cache: bool,
    /// `must-revalidate`: once stale, the response must not be served without
    /// revalidation (which rules out `stale-if-error`).
    pub(crate) must_revalidate: bool,
    /// `proxy-revalidate`: `must-revalidate` for shared caches.
    pub(crate) proxy_revalidate: bool,
    /// `max-age`: the freshness lifetime.
    pub(crate) max_age: Option<Duration>,
    /// `s-maxage`: the freshness lifetime for shared caches; it overrides
    /// `max-age`.
    pub(crate) s_maxage: Option<Duration>,
    /// `stale-while-revalidate` (RFC 5861 §3): how long after it turns stale
    /// the response may be served while it is revalidated in the background.
    pub(crate) stale_while_revalidate: Option<Duration>,
    /// `stale-if-error` (RFC 5861 §4): how long after it turns stale the
    /// response may be served when revalidation fails.
    pub(crate) stale_if_error: Option<Duration>,
    /// One of the four delta-seconds directives has an invalid argument, or
    /// appears twice with different arguments. The other fields then do not
    /// describe the response reliably: callers treat it as not storable.
    pub(crate) malformed: bool,
}

impl ResponseDirectives {
    /// Reads the directives of every `Cache-Control` line in `headers`.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        let mut parsed = Self::default();
        for directive in directives(headers, &header::CACHE_CONTROL) {
            let slot = if directive.is("no-store") {
                parsed.no_store = true;
                continue;
            } else if directive.is("private") {
                parsed.private = true;
                continue;
            } else if directive.is("no-cache") {
                parsed.no_cache = true;
                continue;
            } else if directive.is("must-revalidate") {
                parsed.must_revalidate = true;
                continue;
            } else if directive.is("proxy-revalidate") {
                parsed.proxy_revalidate = true;
                continue;
            } else if directive.is("max-age") {
                &mut parsed.max_age
            } else if directive.is("s-maxage") {
                &mut parsed.s_maxage
            } else if directive.is("stale-while-revalidate") {
                &mut parsed.stale_while_revalidate
            } else if directive.is("stale-if-error") {
                &mut parsed.stale_if_error
            } else {
                continue;
            };
            match (directive.delta_seconds(), *slot) {
                (Some(value), None) => *slot = Some(value),
                (Some(value), Some(first)) if value == first => {}
                _ => parsed.malformed = true,
            }
        }
        parsed
    }
}

/// The `Cache-Control` directives of a request that a cache acts on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RequestDirectives {
    /// `no-cache`, or `Pragma: no-cache` in a request without `Cache-Control`
    /// (RFC 9111 §5.4): a stored response must not be used without
    /// revalidation.
    pub(crate) no_cache: bool,
    /// `no-store`: the response to this request must not be stored. A stored
    /// response may still be served (RFC 9111 §5.2.1.5).
    pub(crate) no_store: bool,
    /// `max-age`: the oldest response the client accepts. `max-age=0` asks for
    /// revalidation. Repeated, the smallest value wins (the most restrictive,
    /// RFC 9111 §4.2.1); an invalid argument is ignored.
    pub(crate) max_age: Option<Duration>,
}

impl RequestDirectives {
    /// Reads the directives of every `Cache-Control` line in `headers`, and
    /// `Pragma` when there is no `Cache-Control`.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        let mut parsed = Self::default();
        // One lookup per header: a request usually sends neither.
        let lines = headers.get_all(header::CACHE_CONTROL);
        if lines.iter().next().is_none() {
            parsed.no_cache = directives(headers, &header::PRAGMA).any(|d| d.is("no-cache"));
            return parsed;
        }
        for directive in lines.into_iter().flat_map(|line| Directives {
            rest: line.as_bytes(),
        }) {
            if directive.is("no-cache") {
                parsed.no_cache = true;
            } else if directive.is("no-store") {
                parsed.no_store = true;
            } else if directive.is("max-age") {
                if let Some(age) = directive.delta_seconds() {
                    parsed.max_age = Some(parsed.max_age.map_or(age, |other| other.min(age)));
                }
            }
        }
        parsed
    }

    /// Whether a stored response must be revalidated (or refetched) before
    /// it answers this request: `no-cache` or `max-age=0`.
    pub(crate) fn requires_revalidation(&self) -> bool {
        self.no_cache || self.max_age == Some(Duration::ZERO)
    }
}

/// Whether a response may be stored, and for how long it may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Storability {
    /// The response must not be stored (or could never be used if it were).
    NotStorable(Reason),
    /// The response may be stored.
    Store(Lifetime),
}

/// How a stored response may be used, from the moment it was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lifetime {
    /// How long it stays fresh (zero: every use needs a revalidation).
    pub(crate) fresh: Duration,
    /// How long after it turns stale it may be served while one
    /// revalidation runs in the background.
    pub(crate) stale_while_revalidate: Duration,
    /// How long after it turns stale it may stand in for a failed call.
    pub(crate) stale_if_error: Duration,
    /// Its age when received (RFC 9111 §4.2.3, `corrected_initial_age`).
    pub(crate) age: Duration,
    /// It has a validator (`ETag` or `Last-Modified`): once stale it can be
    /// revalidated with a conditional request.
    pub(crate) validators: bool,
}

/// Why a response is not storable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// `Cache-Control: no-store`.
    NoStore,
    /// `Cache-Control: private`: a shared cache must not store it.
    Private,
    /// `Cache-Control: no-cache` without a validator: every use needs a
    /// revalidation, which needs one.
    NoCache,
    /// An invalid or conflicting freshness directive (see
    /// [`ResponseDirectives::malformed`]).
    Malformed,
    /// `Expires` is not after `Date` (or now), or is invalid, and nothing
    /// else lets the response be used.
    ExpiresInPast,
    /// The freshness lifetime left is zero (`max-age=0`, an `Age` at least
    /// the lifetime, a zero class TTL) and nothing else lets the response be
    /// used.
    ZeroTtl,
    /// Origin mode: the response has no explicit lifetime, allows no
    /// heuristic one, and has no validator.
    NoFreshness,
}

/// What the cache's configuration allows one response: the class's TTL and
/// stale windows, and who decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Who decides the lifetime.
    pub(crate) mode: CacheMode,
    /// The class TTL: the lifetime in app mode, its cap in origin mode.
    pub(crate) ttl: Duration,
    /// The class's stale-while-revalidate window.
    pub(crate) stale_while_revalidate: Duration,
    /// The class's stale-if-error window.
    pub(crate) stale_if_error: Duration,
}

/// When a response was received, for its age (RFC 9111 §4.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    /// The wall-clock time it was received (`response_time`).
    pub(crate) at: SystemTime,
    /// How long the request took (`response_time - request_time`).
    pub(crate) delay: Duration,
}

/// How a shared cache may store and use the response with `status` and
/// `headers` (RFC 9111 §3, §4.2, §5.2.2; RFC 5861).
///
/// - `no-store`, `private` and malformed directives: not stored.
/// - The freshness lifetime: see [`CacheMode`]. The explicit lifetime is
///   `s-maxage`, else `max-age`, else `Expires` (minus `Date`, or minus now
///   without a valid `Date`); the response's age is subtracted from it.
///   `no-cache` makes it zero.
/// - Stale windows: the class's, bounded by the response's own
///   `stale-while-revalidate` and `stale-if-error` (in origin mode a window
///   the response does not grant is zero). `must-revalidate`,
///   `proxy-revalidate` and `no-cache` forbid serving stale at all, and so
///   does `s-maxage` for a window the response does not grant explicitly.
/// - A response that could never be used (no freshness, no stale window, no
///   validator to revalidate with) is not stored.
///
/// `Set-Cookie`, which statuses are stored and the request method are left to
/// the caller.
pub(crate) fn response_freshness(
    status: StatusCode,
    headers: &HeaderMap,
    limits: Limits,
    received: Received,
) -> Storability {
    let directives = ResponseDirectives::from_headers(headers);
    let refusal = if directives.no_store {
        Some(Reason::NoStore)
    } else if directives.private {
        Some(Reason::Private)
    } else if directives.malformed {
        Some(Reason::Malformed)
    } else {
        None
    };
    if let Some(reason) = refusal {
        return Storability::NotStorable(reason);
    }

    let validators = headers.contains_key(header::ETAG) || last_modified(headers).is_some();
    let age = corrected_initial_age(headers, received);
    let (explicit, expired) = explicit_lifetime(&directives, headers, received.at);
    let fresh = if directives.no_cache {
        Duration::ZERO
    } else {
        let lifetime = match limits.mode {
            CacheMode::App => explicit,
            CacheMode::Origin => {
                explicit.or_else(|| heuristic_lifetime(status, headers, received.at))
            }
        };
        match (limits.mode, lifetime) {
            (_, Some(lifetime)) => lifetime.saturating_sub(age).min(limits.ttl),
            (CacheMode::App, None) => limits.ttl,
            (CacheMode::Origin, None) => Duration::ZERO,
        }
    };
    let forbidden =
        directives.must_revalidate || directives.proxy_revalidate || directives.no_cache;
    let window = |class: Duration, own: Option<Duration>| {
        if forbidden || (directives.s_maxage.is_some() && own.is_none()) {
            return Duration::ZERO;
        }
        match (limits.mode, own) {
            (_, Some(own)) => own.min(class),
            (CacheMode::App, None) => class,
            (CacheMode::Origin, None) => Duration::ZERO,
        }
    };
    let lifetime = Lifetime {
        fresh,
        stale_while_revalidate: window(
            limits.stale_while_revalidate,
            directives.stale_while_revalidate,
        ),
        stale_if_error: window(limits.stale_if_error, directives.stale_if_error),
        age,
        validators,
    };
    let usable = !lifetime.fresh.is_zero()
        || !lifetime.stale_while_revalidate.is_zero()
        || !lifetime.stale_if_error.is_zero()
        || validators;
    if usable {
        return Storability::Store(lifetime);
    }
    Storability::NotStorable(if directives.no_cache {
        Reason::NoCache
    } else if expired {
        Reason::ExpiresInPast
    } else if limits.mode == CacheMode::Origin && explicit.is_none() {
        Reason::NoFreshness
    } else {
        Reason::ZeroTtl
    })
}

/// The explicit freshness lifetime (RFC 9111 §4.2.1): `s-maxage`, else
/// `max-age`, else `Expires`. An invalid or past `Expires` is a zero
/// lifetime; the flag says so.
fn explicit_lifetime(
    directives: &ResponseDirectives,
    headers: &HeaderMap,
    now: SystemTime,
) -> (Option<Duration>, bool) {
    if let Some(lifetime) = directives.s_maxage.or(directives.max_age) {
        return (Some(lifetime), false);
    }
    if !headers.contains_key(header::EXPIRES) {
        return (None, false);
    }
    match expires_lifetime(headers, now) {
        Some(lifetime) => (Some(lifetime), false),
        None => (Some(Duration::ZERO), true),
    }
}

/// Statuses a cache may give a heuristic lifetime (RFC 9110 §15.1), but
/// 206, which this cache does not combine into a whole response.
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// A heuristic freshness lifetime (RFC 9111 §4.2.2): a tenth of the time
/// since `Last-Modified` (measured from `Date`, or now), for a status that
/// is heuristically cacheable. `None` otherwise.
fn heuristic_lifetime(
    status: StatusCode,
    headers: &HeaderMap,
    now: SystemTime,
) -> Option<Duration> {
    if !heuristically_cacheable(status) {
        return None;
    }
    let modified = last_modified(headers)?;
    let base = headers.get(header::DATE).and_then(http_date).unwrap_or(now);
    let since = base.duration_since(modified).ok()?;
    Some(since / 10).filter(|lifetime| !lifetime.is_zero())
}

/// The response's `Last-Modified`, when it is one valid HTTP date.
fn last_modified(headers: &HeaderMap) -> Option<SystemTime> {
    headers.get(header::LAST_MODIFIED).and_then(http_date)
}

/// `corrected_initial_age` (RFC 9111 §4.2.3): the larger of the apparent
/// age (`response_time - Date`, zero when `Date` is missing, invalid or
/// ahead of us) and the `Age` value plus the response delay.
pub(crate) fn corrected_initial_age(headers: &HeaderMap, received: Received) -> Duration {
    let apparent = headers
        .get(header::DATE)
        .and_then(http_date)
        .and_then(|date| received.at.duration_since(date).ok())
        .unwrap_or_default();
    let corrected = age(headers).saturating_add(received.delay);
    apparent.max(corrected)
}

/// The freshness lifetime `Expires` gives: `Expires - Date`, or
/// `Expires - now` without a valid `Date`.
///
/// `None` when the response is already expired: `Expires` is not after the
/// base, is not a valid HTTP date, or has lines that disagree (RFC 9111 §4.2.1,
/// §5.3).
fn expires_lifetime(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let mut lines = headers.get_all(header::EXPIRES).iter();
    let first = lines.next()?;
    if lines.any(|other| other != first) {
        return None;
    }
    let expires = http_date(first)?;
    let base = headers.get(header::DATE).and_then(http_date).unwrap_or(now);
    expires
        .duration_since(base)
        .ok()
        .filter(|lifetime| !lifetime.is_zero())
}

/// The response's `Age` (RFC 9111 §5.1): the largest valid value over its
/// lines, zero when there is none.
fn age(headers: &HeaderMap) -> Duration {
    headers
        .get_all(header::AGE)
        .iter()
        .filter_map(|value| delta_seconds(value.as_bytes().trim_ascii()))
        .max()
        .unwrap_or_default()
}

/// The `Age` header value for a response that has been stored for `age`:
/// whole seconds, saturating at 2^31 (RFC 9111 §5.1).
pub(crate) fn age_header_value(age: Duration) -> HeaderValue {
    // Every cache hit carries one, and most are under 100 s old: those are
    // slices of static strings, where a number's value allocates twice.
    const ONE_DIGIT: &str = "0123456789";
    const TWO_DIGITS: &str = "101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";
    match age.as_secs().min(MAX_DELTA_SECONDS) {
        secs @ 0..=9 => {
            let at = secs as usize;
            HeaderValue::from_static(&ONE_DIGIT[at..at + 1])
        }
        secs @ 10..=99 => {
            let at = 2 * (secs as usize - 10);
            HeaderValue::from_static(&TWO_DIGITS[at..at + 2])
        }
        secs => HeaderValue::from(secs),
    }
}

/// How the cache handled a request, for the `Cache-Status` header (RFC 9211).
///
/// RFC 9211 §2.1 makes `hit` and `fwd` exclusive: a member says either that
/// the cache answered alone or why the request went forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheStatus {
    /// A fresh stored response answered without going forward:
    /// `herdsman; hit`.
    Hit,
    /// No stored response could be used and the request went forward:
    /// `herdsman; fwd=miss`, with `; stored` when the response was stored.
    /// `miss` is the value for a cache that does not tell a URI miss from a
    /// `Vary` miss (RFC 9211 §2.2).
    Miss {
        /// The forwarded response was stored.
        stored: bool,
    },
    /// A fresh response was stored, but the request's directives (`no-cache`,
    /// `max-age=0`) sent it forward: `herdsman; fwd=request`, with `; stored`
    /// when the new response was stored.
    Request {
        /// The forwarded response was stored.
        stored: bool,
    },
    /// A stale stored response answered without waiting while it is
    /// revalidated in the background (`stale-while-revalidate`):
    /// `herdsman; hit; ttl=-12; detail=stale-while-revalidate`.
    ///
    /// The request itself did not go forward, so this is a hit; RFC 9211 §3
    /// marks a stale hit by a negative `ttl`: the seconds since the response
    /// turned stale, rounded up.
    Stale {
        /// How long ago the stored response turned stale.
        staleness: Duration,
    },
    /// The stored response was stale (or must be revalidated on every use),
    /// the request went forward with its validators, and the upstream
    /// answered `304`: the stored response, its headers refreshed, answered:
    /// `herdsman; fwd=stale; fwd-status=304`, with `; stored` when the
    /// refreshed response was stored again.
    Revalidated {
        /// The refreshed response was stored.
        stored: bool,
    },
    /// The request went forward because the stored response was stale, the
    /// forward failed, and the stale response answered (`stale-if-error`):
    /// `herdsman; fwd=stale; fwd-status=503; detail=stale-if-error`.
    ///
    /// `fwd-status` is the error status from upstream. It is omitted when
    /// upstream gave no response (a connection error); `detail` still says
    /// what happened.
    StaleIfError {
        /// The status upstream answered with, if it answered.
        fwd_status: Option<StatusCode>,
    },
}

/// The `Cache-Status` member (RFC 9211) describing `kind`, named `herdsman`.
///
/// Append it to the response's existing `Cache-Status` lines, after those of
/// the caches closer to the origin.
pub(crate) fn cache_status(kind: CacheStatus) -> HeaderValue {
    let value = match kind {
        CacheStatus::Hit => Cow::Borrowed("herdsman; hit"),
        CacheStatus::Miss { stored: false } => Cow::Borrowed("herdsman; fwd=miss"),
        CacheStatus::Miss { stored: true } => Cow::Borrowed("herdsman; fwd=miss; stored"),
        CacheStatus::Request { stored: false } => Cow::Borrowed("herdsman; fwd=request"),
        CacheStatus::Request { stored: true } => Cow::Borrowed("herdsman; fwd=request; stored"),
        CacheStatus::Revalidated { stored: false } => {
            Cow::Borrowed("herdsman; fwd=stale; fwd-status=304")
        }
        CacheStatus::Revalidated { stored: true } => {
            Cow::Borrowed("herdsman; fwd=stale; fwd-status=304; stored")
        }
        CacheStatus::Stale { staleness } => {
            let seconds = staleness
                .as_secs()
                .saturating_add(u64::from(staleness.subsec_nanos() > 0))
                .min(MAX_DELTA_SECONDS);
            let sign = if seconds == 0 { "" } else { "-" };
            Cow::Owned(format!(
                "{CACHE_NAME}; hit; ttl={sign}{seconds}; detail=stale-while-revalidate"
            ))
        }
        CacheStatus::StaleIfError {
            fwd_status: Some(status),
        } => Cow::Owned(format!(
            "{CACHE_NAME}; fwd=stale; fwd-status={}; detail=stale-if-error",
            status.as_u16()
        )),
        CacheStatus::StaleIfError { fwd_status: None } => {
            Cow::Borrowed("herdsman; fwd=stale; detail=stale-if-error")
        }
    };
    match value {
        Cow::Borrowed(value) => HeaderValue::from_static(value),
        // Only tokens and digits were formatted, which are always valid; the
        // bare name is the fallback that never panics.
        Cow::Owned(value) => {
            HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static(CACHE_NAME))
        }
    }
}

/// The argument of a cache directive.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Argument<'a> {
    /// No `=`: `no-store`.
    Absent,
    /// The token, or the unescaped content of the quoted string, after `=`.
    Value(Cow<'a, [u8]>),
    /// An unterminated quoted string, or text between the argument (or the
    /// name) and the next comma.
    Invalid,
}

/// One `name[=argument]` element of a `Cache-Control` or `Pragma` line.
#[derive(Debug)]
struct Directive<'a> {
    /// The name as sent; compare with [`Directive::is`].
    name: &'a [u8],
    /// What follows the name.
    argument: Argument<'a>,
}

impl Directive<'_> {
    /// Whether this is the directive `name` (ASCII lowercase), in any case.
    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    /// The argument as delta-seconds; `None` when absent or invalid.
    fn delta_seconds(&self) -> Option<Duration> {
        match &self.argument {
            Argument::Value(value) => delta_seconds(value),
            Argument::Absent | Argument::Invalid => None,
        }
    }
}

/// The directives of every `name` line in `headers`, in order.
fn directives<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> impl Iterator<Item = Directive<'a>> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|line| Directives {
            rest: line.as_bytes(),
        })
}

/// The comma-separated directives of one field line (RFC 9111 §5.2, RFC 9110
/// §5.6.1), with empty elements skipped.
#[derive(Debug)]
struct Directives<'a> {
    /// The part of the line not read yet.
    rest: &'a [u8],
}

impl<'a> Iterator for Directives<'a> {
    type Item = Directive<'a>;

    fn next(&mut self) -> Option<Directive<'a>> {
        let skipped = self
            .rest
            .iter()
            .take_while(|&&b| is_ows(b) || b == b',')
            .count();
        let line = &self.rest[skipped..];
        if line.is_empty() {
            self.rest = line;
            return None;
        }

        let name_len = line
            .iter()
            .position(|&b| b == b'=' || b == b',' || is_ows(b))
            .unwrap_or(line.len());
        let (name, after_name) = line.split_at(name_len);
        let (argument, after_argument) = match trim_ows(after_name).split_first() {
            Some((b'=', value)) => argument(trim_ows(value)),
            _ => (Argument::Absent, after_name),
        };
        let (argument, rest) = match trim_ows(after_argument).split_first() {
            None => (argument, &[][..]),
            Some((b',', rest)) => (argument, rest),
            Some(_) => (Argument::Invalid, skip_element(after_argument)),
        };
        self.rest = rest;
        Some(Directive { name, argument })
    }
}

/// Reads a token or quoted-string argument at the start of `s`; returns it
/// and what follows.
fn argument(s: &[u8]) -> (Argument<'_>, &[u8]) {
    let Some((b'"', quoted)) = s.split_first() else {
        let len = s
            .iter()
            .position(|&b| b == b',' || is_ows(b))
            .unwrap_or(s.len());
        let (token, rest) = s.split_at(len);
        return (Argument::Value(Cow::Borrowed(token)), rest);
    };

    // quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE (RFC 9110 §5.6.4)
    let mut escaped = false;
    let mut unescaped = Vec::new();
    for (i, &b) in quoted.iter().enumerate() {
        if escaped {
            escaped = false;
            unescaped.push(b);
        } else if b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            let (content, rest) = (&quoted[..i], &quoted[i + 1..]);
            let value = if unescaped.len() == content.len() {
                Cow::Borrowed(content)
            } else {
                Cow::Owned(unescaped)
            };
            return (Argument::Value(value), rest);
        } else {
            unescaped.push(b);
        }
    }
    (Argument::Invalid, &[])
}

/// Skips past the next comma that is not inside a quoted string.
fn skip_element(s: &[u8]) -> &[u8] {
    let (mut quoted, mut escaped) = (false, false);
    for (i, &b) in s.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted {
            match b {
                b'\\' => escaped = true,
                b'"' => quoted = false,
                _ => {}
            }
        } else if b == b'"' {
            quoted = true;
        } else if b == b',' {
            return &s[i + 1..];
        }
    }
    &[]
}

/// delta-seconds = 1*DIGIT (RFC 9111 §1.2.2), saturating at 2^31.
fn delta_seconds(digits: &[u8]) -> Option<Duration> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let seconds = digits.iter().fold(0u64, |n, digit| {
        n.saturating_mul(10).saturating_add(u64::from(digit - b'0'))
    });
    Some(Duration::from_secs(seconds.min(MAX_DELTA_SECONDS)))
}

/// Optional whitespace (RFC 9110 §5.6.3).
fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `s` without its leading optional whitespace.
fn trim_ows(s: &[u8]) -> &[u8] {
    let skipped = s.iter().take_while(|&&b| is_ows(b)).count();
    &s[skipped..]
}

/// The request headers a response with these `headers` varies on.
///
/// Every `Vary` line is read; names are case-insensitive and kept once, in
/// order. `*`, or a name that is not a valid header name, is [`Vary::Any`].
pub(crate) fn vary(headers: &HeaderMap) -> Vary {
    let mut names: Vec<HeaderName> = Vec::new();
    for line in headers.get_all(header::VARY) {
        for element in line.as_bytes().split(|&b| b == b',') {
            let element = element.trim_ascii();
            if element.is_empty() {
                continue;
            }
            if element == b"*" {
                return Vary::Any;
            }
            match HeaderName::from_bytes(element) {
                Ok(name) if !names.contains(&name) => names.push(name),
                Ok(_) => {}
                Err(_) => return Vary::Any,
            }
        }
    }
    if names.is_empty() {
        Vary::None
    } else {
        Vary::Headers(Arc::from(names))
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use proptest::prelude::*;

    use super::*;

    const DEFAULT: Duration = Duration::from_secs(300);

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn date(at: SystemTime) -> String {
        httpdate::fmt_http_date(at)
    }

    fn headers(fields: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for &(name, value) in fields {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn response(cache_control: &[&str]) -> ResponseDirectives {
        let fields: Vec<_> = cache_control
            .iter()
            .map(|v| ("cache-control", *v))
            .collect();
        ResponseDirectives::from_headers(&headers(&fields))
    }

    fn app(ttl: Duration) -> Limits {
        Limits {
            mode: CacheMode::App,
            ttl,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
        }
    }

    fn received() -> Received {
        Received {
            at: now(),
            delay: Duration::ZERO,
        }
    }

    /// The fresh lifetime in app mode with the default TTL, or why not stored.
    fn response_ttl(map: &HeaderMap, ttl: Duration, at: SystemTime) -> Result<Duration, Reason> {
        let received = Received { at, ..received() };
        match response_freshness(StatusCode::OK, map, app(ttl), received) {
            Storability::Store(lifetime) => Ok(lifetime.fresh),
            Storability::NotStorable(reason) => Err(reason),
        }
    }

    fn ttl(fields: &[(&str, &str)]) -> Result<Duration, Reason> {
        response_ttl(&headers(fields), DEFAULT, now())
    }

    fn stored(n: u64) -> Result<Duration, Reason> {
        Ok(secs(n))
    }

    fn refused(reason: Reason) -> Result<Duration, Reason> {
        Err(reason)
    }

    #[test]
    fn boolean_response_directives_are_read() {
        assert_eq!(
            response(&["no-store, private, no-cache, must-revalidate, proxy-revalidate"]),
            ResponseDirectives {
                no_store: true,
                private: true,
                no_cache: true,
                must_revalidate: true,
                proxy_revalidate: true,
                ..Default::default()
            }
        );
        assert_eq!(response(&[]), ResponseDirectives::default());
        assert_eq!(
            response(&["public, immutable"]),
            ResponseDirectives::default()
        );
    }

    #[test]
    fn delta_seconds_response_directives_are_read() {
        let d =
            response(&["max-age=60, s-maxage=30, stale-while-revalidate=10, stale-if-error=86400"]);
        assert_eq!(d.max_age, Some(secs(60)));
        assert_eq!(d.s_maxage, Some(secs(30)));
        assert_eq!(d.stale_while_revalidate, Some(secs(10)));
        assert_eq!(d.stale_if_error, Some(secs(86400)));
        assert!(!d.malformed);
    }

    #[test]
    fn directive_names_are_case_insensitive() {
        let d = response(&["No-Store, PRIVATE, No-Cache, MUST-REVALIDATE, Max-Age=5, S-MaxAge=6"]);
        assert!(d.no_store && d.private && d.no_cache && d.must_revalidate);
        assert_eq!((d.max_age, d.s_maxage), (Some(secs(5)), Some(secs(6))));
    }

    #[test]
    fn every_cache_control_line_is_read() {
        let d = response(&["max-age=60", "no-cache", "stale-if-error=5"]);
        assert!(d.no_cache);
        assert_eq!(d.max_age, Some(secs(60)));
        assert_eq!(d.stale_if_error, Some(secs(5)));
    }

    #[test]
    fn quoted_arguments_are_accepted() {
        let d = response(&[r#"max-age="60", s-maxage = "7", stale-if-error="1\2""#]);
        assert_eq!(d.max_age, Some(secs(60)));
        assert_eq!(d.s_maxage, Some(secs(7)));
        assert_eq!(d.stale_if_error, Some(secs(12)));
        assert!(!d.malformed);
    }

    #[test]
    fn qualified_private_and_no_cache_still_count() {
        let d = response(&[r#"private="set-cookie, x-user", no-cache="x-a,x-b", max-age=5"#]);
        assert!(d.private && d.no_cache);
        assert_eq!(d.max_age, Some(secs(5)));
        assert!(!d.malformed);
        assert!(response(&["private=x-user"]).private);
    }

    #[test]
    fn odd_whitespace_and_empty_elements_are_tolerated() {
        let d = response(&[" ,, \tmax-age = 10 ,\tno-cache ,,", ",", ""]);
        assert!(d.no_cache);
        assert_eq!(d.max_age, Some(secs(10)));
        assert!(!d.malformed);
    }

    #[test]
    fn invalid_delta_seconds_mark_the_directives_malformed() {
        for value in [
            "max-age=abc",
            "max-age=-1",
            "max-age=+5",
            "max-age=1.5",
            "max-age=10s",
            "max-age=0x10",
            "max-age=1 2",
            "max-age=",
            "max-age",
            "max-age=\"10",
            "max-age=\"\"",
            "s-maxage=x",
            "stale-while-revalidate=-5",
            "stale-if-error",
        ] {
            assert!(response(&[value]).malformed, "{value}");
            assert_eq!(
                ttl(&[("cache-control", value)]),
                refused(Reason::Malformed),
                "{value}"
            );
        }
    }

    #[test]
    fn delta_seconds_over_two_to_the_31_saturate() {
        let d = response(&["max-age=99999999999999999999999999999, s-maxage=2147483649"]);
        assert_eq!(d.max_age, Some(secs(1 << 31)));
        assert_eq!(d.s_maxage, Some(secs(1 << 31)));
        assert!(!d.malformed);
        assert_eq!(
            ttl(&[("cache-control", "max-age=99999999999999999999")]),
            stored(300)
        );
    }

    #[test]
    fn repeated_directives_with_different_values_are_malformed() {
        assert!(!response(&["max-age=10, max-age=10"]).malformed);
        assert!(!response(&["max-age=10", "max-age=\"10\""]).malformed);
        assert!(!response(&["no-store, no-store"]).malformed);
        assert!(response(&["max-age=10, max-age=20"]).malformed);
        assert!(response(&["s-maxage=10", "s-maxage=20"]).malformed);
        assert!(response(&["max-age=10, max-age=abc"]).malformed);
    }

    #[test]
    fn unknown_directives_and_trailing_junk_are_handled() {
        let d = response(&["foo=\"a,b\", max-age=5, ext=1, public"]);
        assert_eq!(d.max_age, Some(secs(5)));
        assert!(!d.malformed);
        // Junk after a boolean directive still counts it (the restrictive reading).
        assert!(response(&["no-store junk, max-age=5"]).no_store);
        assert!(response(&["max-age=5 \"x,y\", no-cache"]).malformed);
        assert!(response(&["max-age=5 \"x,y\", no-cache"]).no_cache);
    }

    #[test]
    fn non_utf8_values_are_read_as_bytes() {
        let mut map = HeaderMap::new();
        map.append(
            header::CACHE_CONTROL,
            HeaderValue::from_bytes(b"max-age=5, \xff\xfe=\xc3, no-store").unwrap(),
        );
        let d = ResponseDirectives::from_headers(&map);
        assert_eq!(d.max_age, Some(secs(5)));
        assert!(d.no_store);
    }

    #[test]
    fn no_store_private_and_no_cache_responses_are_not_storable() {
        assert_eq!(
            ttl(&[("cache-control", "no-store, max-age=60")]),
            refused(Reason::NoStore)
        );
        assert_eq!(
            ttl(&[("cache-control", "private, max-age=60")]),
            refused(Reason::Private)
        );
        assert_eq!(
            ttl(&[("cache-control", "private=\"a\"")]),
            refused(Reason::Private)
        );
        assert_eq!(
            ttl(&[("cache-control", "no-cache, max-age=60")]),
            refused(Reason::NoCache)
        );
        assert_eq!(
            ttl(&[("cache-control", "no-store, max-age=x")]),
            refused(Reason::NoStore)
        );
        assert_eq!(ttl(&[("cache-control", "must-revalidate")]), stored(300));
    }

    #[test]
    fn max_age_caps_the_default_ttl() {
        assert_eq!(ttl(&[("cache-control", "max-age=10")]), stored(10));
        assert_eq!(ttl(&[("cache-control", "max-age=600")]), stored(300));
    }

    #[test]
    fn s_maxage_wins_over_max_age() {
        assert_eq!(
            ttl(&[("cache-control", "max-age=5, s-maxage=30")]),
            stored(30)
        );
        assert_eq!(
            ttl(&[("cache-control", "s-maxage=30, max-age=5")]),
            stored(30)
        );
        assert_eq!(
            ttl(&[("cache-control", "max-age=60, s-maxage=0")]),
            refused(Reason::ZeroTtl)
        );
    }

    #[test]
    fn max_age_zero_is_not_storable() {
        assert_eq!(
            ttl(&[("cache-control", "max-age=0")]),
            refused(Reason::ZeroTtl)
        );
    }

    #[test]
    fn without_freshness_information_the_default_ttl_applies() {
        assert_eq!(ttl(&[]), stored(300));
        assert_eq!(ttl(&[("age", "100")]), stored(300));
        assert_eq!(
            response_ttl(&HeaderMap::new(), Duration::ZERO, now()),
            refused(Reason::ZeroTtl)
        );
        assert_eq!(
            response_ttl(
                &headers(&[("cache-control", "max-age=60")]),
                Duration::ZERO,
                now()
            ),
            refused(Reason::ZeroTtl)
        );
    }

    #[test]
    fn a_future_expires_caps_the_ttl() {
        let soon = date(now() + secs(30));
        assert_eq!(ttl(&[("expires", &soon)]), stored(30));
        let later = date(now() + secs(3600));
        assert_eq!(ttl(&[("expires", &later)]), stored(300));
    }

    #[test]
    fn expires_is_measured_from_date_when_present() {
        // Sent 5 s ago, for 20 s: 15 s left (from now it would be 10).
        let origin_now = now() - secs(5);
        let (sent, expires) = (date(origin_now), date(origin_now + secs(20)));
        assert_eq!(ttl(&[("date", &sent), ("expires", &expires)]), stored(15));
        // An invalid Date falls back to now.
        let expires = date(now() + secs(40));
        assert_eq!(
            ttl(&[("date", "yesterday"), ("expires", &expires)]),
            stored(40)
        );
    }

    #[test]
    fn past_equal_invalid_or_conflicting_expires_is_already_expired() {
        let past = date(now() - secs(1));
        let at_now = date(now());
        let future = date(now() + secs(60));
        let other_future = date(now() + secs(61));
        for fields in [
            vec![("expires", past.as_str())],
            vec![("expires", at_now.as_str())],
            vec![("date", future.as_str()), ("expires", future.as_str())],
            vec![("expires", "0")],
            vec![("expires", "-1")],
            vec![("expires", "not a date")],
            vec![("expires", "")],
            vec![
                ("expires", future.as_str()),
                ("expires", other_future.as_str()),
            ],
        ] {
            assert_eq!(ttl(&fields), refused(Reason::ExpiresInPast), "{fields:?}");
        }
        assert_eq!(
            ttl(&[("expires", &future), ("expires", &future)]),
            stored(60)
        );
    }

    #[test]
    fn obsolete_date_formats_are_accepted_in_expires() {
        // 2023-11-14T22:13:20Z is `now()`.
        let at = |text| response_ttl(&headers(&[("expires", text)]), DEFAULT, now());
        assert_eq!(at("Tue, 14 Nov 2023 22:14:00 GMT"), stored(40));
        assert_eq!(at("Tuesday, 14-Nov-23 22:14:00 GMT"), stored(40));
        assert_eq!(at("Tue Nov 14 22:14:00 2023"), stored(40));
    }

    #[test]
    fn max_age_and_s_maxage_override_expires() {
        let past = date(now() - secs(1));
        assert_eq!(
            ttl(&[("cache-control", "max-age=10"), ("expires", &past)]),
            stored(10)
        );
        assert_eq!(
            ttl(&[("cache-control", "s-maxage=10"), ("expires", "0")]),
            stored(10)
        );
    }

    #[test]
    fn age_is_subtracted_from_the_freshness_lifetime() {
        let fields = |age| [("cache-control", "max-age=100"), ("age", age)];
        assert_eq!(ttl(&fields("30")), stored(70));
        assert_eq!(ttl(&fields(" 30 ")), stored(70));
        assert_eq!(ttl(&fields("100")), refused(Reason::ZeroTtl));
        assert_eq!(
            ttl(&fields("99999999999999999999999")),
            refused(Reason::ZeroTtl)
        );
        assert_eq!(ttl(&fields("abc")), stored(100));
        assert_eq!(ttl(&fields("-5")), stored(100));
        assert_eq!(ttl(&fields("10, 20")), stored(100));
        assert_eq!(
            ttl(&[
                ("cache-control", "max-age=100"),
                ("age", "10"),
                ("age", "40")
            ]),
            stored(60)
        );
        let expires = date(now() + secs(50));
        assert_eq!(ttl(&[("expires", &expires), ("age", "20")]), stored(30));
        assert_eq!(
            ttl(&[("expires", &expires), ("age", "50")]),
            refused(Reason::ZeroTtl)
        );
        // Capping by the default comes after the subtraction.
        assert_eq!(
            ttl(&[("cache-control", "max-age=1000"), ("age", "100")]),
            stored(300)
        );
    }

    fn lifetime(mode: CacheMode, fields: &[(&str, &str)]) -> Storability {
        let limits = Limits {
            mode,
            ttl: DEFAULT,
            stale_while_revalidate: secs(60),
            stale_if_error: secs(600),
        };
        response_freshness(StatusCode::OK, &headers(fields), limits, received())
    }

    fn windows(mode: CacheMode, fields: &[(&str, &str)]) -> (Duration, Duration, Duration) {
        match lifetime(mode, fields) {
            Storability::Store(l) => (l.fresh, l.stale_while_revalidate, l.stale_if_error),
            Storability::NotStorable(reason) => panic!("{fields:?} not stored: {reason:?}"),
        }
    }

    #[test]
    fn in_app_mode_the_class_decides_and_the_response_caps() {
        let app = CacheMode::App;
        assert_eq!(windows(app, &[]), (DEFAULT, secs(60), secs(600)));
        assert_eq!(
            windows(
                app,
                &[("cache-control", "max-age=10, stale-while-revalidate=5")]
            ),
            (secs(10), secs(5), secs(600))
        );
        assert_eq!(
            windows(app, &[("cache-control", "stale-if-error=6000")]),
            (DEFAULT, secs(60), secs(600))
        );
    }

    #[test]
    fn in_origin_mode_the_response_decides_and_the_class_caps() {
        let origin = CacheMode::Origin;
        assert_eq!(
            lifetime(origin, &[]),
            Storability::NotStorable(Reason::NoFreshness)
        );
        assert_eq!(
            windows(origin, &[("cache-control", "max-age=30")]),
            (secs(30), Duration::ZERO, Duration::ZERO)
        );
        assert_eq!(
            windows(
                origin,
                &[(
                    "cache-control",
                    "max-age=3000, stale-while-revalidate=10, stale-if-error=6000"
                )]
            ),
            (DEFAULT, secs(10), secs(600))
        );
        // No lifetime, but a validator: stored to be revalidated on every use.
        assert_eq!(
            windows(origin, &[("etag", "\"a\"")]),
            (Duration::ZERO, Duration::ZERO, Duration::ZERO)
        );
    }

    #[test]
    fn a_heuristic_lifetime_is_a_tenth_of_the_time_since_last_modified_in_origin_mode_only() {
        let modified = date(now() - secs(1000));
        let fields = [("last-modified", modified.as_str())];
        assert_eq!(windows(CacheMode::Origin, &fields).0, secs(100));
        // Measured from Date (950 s: 95 s), less the age Date gives (50 s).
        let sent = date(now() - secs(50));
        let fields = [
            ("last-modified", modified.as_str()),
            ("date", sent.as_str()),
        ];
        assert_eq!(windows(CacheMode::Origin, &fields).0, secs(45));
        let long_ago = date(now() - secs(100_000));
        assert_eq!(
            windows(CacheMode::Origin, &[("last-modified", long_ago.as_str())]).0,
            DEFAULT,
            "capped by the class TTL"
        );
        // An explicit lifetime rules heuristics out, even an expired one.
        let explicit = [("last-modified", modified.as_str()), ("expires", "0")];
        assert_eq!(windows(CacheMode::Origin, &explicit).0, Duration::ZERO);
        // Only for heuristically cacheable statuses.
        let limits = Limits {
            mode: CacheMode::Origin,
            ..app(DEFAULT)
        };
        let at = headers(&[("last-modified", modified.as_str())]);
        let created = response_freshness(StatusCode::CREATED, &at, limits, received());
        assert!(matches!(created, Storability::Store(l) if l.fresh.is_zero()));
        let gone = response_freshness(StatusCode::GONE, &at, limits, received());
        assert!(matches!(gone, Storability::Store(l) if l.fresh == secs(100)));
    }

    #[test]
    fn revalidation_directives_forbid_every_stale_window() {
        for cc in [
            "max-age=10, must-revalidate, stale-while-revalidate=30",
            "max-age=10, proxy-revalidate",
        ] {
            for mode in [CacheMode::App, CacheMode::Origin] {
                assert_eq!(
                    windows(mode, &[("cache-control", cc)]),
                    (secs(10), Duration::ZERO, Duration::ZERO),
                    "{cc}"
                );
            }
        }
        // s-maxage forbids the windows the response does not grant itself.
        assert_eq!(
            windows(
                CacheMode::App,
                &[("cache-control", "s-maxage=10, stale-if-error=30")]
            ),
            (secs(10), Duration::ZERO, secs(30))
        );
    }

    #[test]
    fn no_cache_with_a_validator_is_stored_but_never_fresh() {
        let fields = [("cache-control", "no-cache, max-age=60"), ("etag", "\"1\"")];
        match lifetime(CacheMode::App, &fields) {
            Storability::Store(l) => {
                assert!(l.fresh.is_zero() && l.validators);
                assert!(l.stale_while_revalidate.is_zero() && l.stale_if_error.is_zero());
            }
            other => panic!("{other:?}"),
        }
        let modified = date(now() - secs(10));
        assert!(matches!(
            lifetime(CacheMode::App, &[("cache-control", "no-cache"), ("last-modified", &modified)]),
            Storability::Store(l) if l.validators
        ));
        assert_eq!(
            ttl(&[("cache-control", "no-cache")]),
            refused(Reason::NoCache)
        );
    }

    #[test]
    fn the_initial_age_is_the_larger_of_apparent_and_corrected_age() {
        let at = |fields: &[(&str, &str)], delay| {
            corrected_initial_age(
                &headers(fields),
                Received {
                    at: now(),
                    delay: secs(delay),
                },
            )
        };
        assert_eq!(at(&[], 0), Duration::ZERO);
        assert_eq!(at(&[("age", "5")], 2), secs(7));
        let sent = date(now() - secs(20));
        assert_eq!(at(&[("date", &sent), ("age", "5")], 2), secs(20));
        let future = date(now() + secs(20));
        assert_eq!(at(&[("date", &future), ("age", "5")], 0), secs(5));
        assert_eq!(at(&[("date", "garbage")], 3), secs(3));
        // The initial age is subtracted from the explicit lifetime.
        let fields = headers(&[("cache-control", "max-age=60"), ("date", &sent)]);
        assert_eq!(response_ttl(&fields, DEFAULT, now()), stored(40));
    }

    fn request(fields: &[(&str, &str)]) -> RequestDirectives {
        RequestDirectives::from_headers(&headers(fields))
    }

    #[test]
    fn request_directives_are_read() {
        assert_eq!(request(&[]), RequestDirectives::default());
        let d = request(&[
            ("cache-control", "No-Cache"),
            ("cache-control", "NO-STORE, max-age=\"30\""),
        ]);
        assert_eq!(
            d,
            RequestDirectives {
                no_cache: true,
                no_store: true,
                max_age: Some(secs(30)),
            }
        );
        assert!(d.requires_revalidation());
    }

    #[test]
    fn request_max_age_zero_requires_revalidation() {
        let d = request(&[("cache-control", "max-age=0")]);
        assert_eq!(d.max_age, Some(Duration::ZERO));
        assert!(d.requires_revalidation());
        assert!(!request(&[("cache-control", "max-age=1")]).requires_revalidation());
    }

    #[test]
    fn repeated_request_max_age_keeps_the_smallest_and_ignores_invalid() {
        let d = request(&[(
            "cache-control",
            "max-age=30, max-age=abc, max-age=10, max-age=20",
        )]);
        assert_eq!(d.max_age, Some(secs(10)));
        assert_eq!(request(&[("cache-control", "max-age=-1")]).max_age, None);
        assert_eq!(
            request(&[("cache-control", "max-age=99999999999999999999")]).max_age,
            Some(secs(1 << 31))
        );
    }

    #[test]
    fn pragma_no_cache_counts_only_without_cache_control() {
        assert!(request(&[("pragma", "no-cache")]).no_cache);
        assert!(request(&[("pragma", "foo, NO-CACHE")]).no_cache);
        assert!(!request(&[("pragma", "foo")]).no_cache);
        assert!(!request(&[("pragma", "no-cache"), ("cache-control", "max-age=60")]).no_cache);
        assert!(request(&[("pragma", "no-cache")]).requires_revalidation());
    }

    #[test]
    fn age_header_value_is_whole_seconds_capped_at_two_to_the_31() {
        for n in 0..200 {
            assert_eq!(age_header_value(secs(n)), n.to_string().as_str());
        }
        assert_eq!(age_header_value(Duration::ZERO), "0");
        assert_eq!(age_header_value(Duration::from_millis(1999)), "1");
        assert_eq!(age_header_value(secs(86400)), "86400");
        assert_eq!(age_header_value(Duration::MAX), "2147483648");
    }

    #[test]
    fn cache_status_values_follow_rfc_9211() {
        let cases = [
            (CacheStatus::Hit, "herdsman; hit"),
            (CacheStatus::Miss { stored: false }, "herdsman; fwd=miss"),
            (
                CacheStatus::Miss { stored: true },
                "herdsman; fwd=miss; stored",
            ),
            (
                CacheStatus::Request { stored: false },
                "herdsman; fwd=request",
            ),
            (
                CacheStatus::Request { stored: true },
                "herdsman; fwd=request; stored",
            ),
            (
                CacheStatus::Stale {
                    staleness: secs(12),
                },
                "herdsman; hit; ttl=-12; detail=stale-while-revalidate",
            ),
            (
                CacheStatus::Stale {
                    staleness: Duration::from_millis(1500),
                },
                "herdsman; hit; ttl=-2; detail=stale-while-revalidate",
            ),
            (
                CacheStatus::Stale {
                    staleness: Duration::ZERO,
                },
                "herdsman; hit; ttl=0; detail=stale-while-revalidate",
            ),
            (
                CacheStatus::Stale {
                    staleness: Duration::MAX,
                },
                "herdsman; hit; ttl=-2147483648; detail=stale-while-revalidate",
            ),
            (
                CacheStatus::StaleIfError {
                    fwd_status: Some(StatusCode::SERVICE_UNAVAILABLE),
                },
                "herdsman; fwd=stale; fwd-status=503; detail=stale-if-error",
            ),
            (
                CacheStatus::StaleIfError { fwd_status: None },
                "herdsman; fwd=stale; detail=stale-if-error",
            ),
            (
                CacheStatus::Revalidated { stored: true },
                "herdsman; fwd=stale; fwd-status=304; stored",
            ),
            (
                CacheStatus::Revalidated { stored: false },
                "herdsman; fwd=stale; fwd-status=304",
            ),
        ];
        for (kind, expected) in cases {
            assert_eq!(cache_status(kind), expected, "{kind:?}");
        }
        assert_eq!(CACHE_STATUS.as_str(), "cache-status");
    }

    /// Header values that look like directives, dates and numbers, and raw bytes.
    fn header_value() -> impl Strategy<Value = Vec<u8>> {
        let fragment = prop::sample::select(vec![
            "max-age",
            "s-maxage",
            "no-store",
            "private",
            "no-cache",
            "must-revalidate",
            "stale-while-revalidate",
            "stale-if-error",
            "MAX-AGE",
            "Pragma",
            "=",
            ",",
            " ",
            "\t",
            "\"",
            "\\",
            "0",
            "10",
            "-1",
            "+1",
            "99999999999999999999999999",
            "é",
            "Tue, 14 Nov 2023 22:13:20 GMT",
            "Tuesday, 14-Nov-23 22:13:20 GMT",
            "Tue Nov 14 22:13:20 2023",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "Thu, 01 Jan 1970 00:00:00 GMT",
            "Sun, 31 Feb 2021 25:61:61 GMT",
        ]);
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            prop::collection::vec(fragment, 0..16).prop_map(|parts| parts.concat().into_bytes()),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_header_values_never_panic(
            values in prop::collection::vec((0..8usize, header_value()), 0..8),
            default_secs in 0u64..100_000,
            now_secs in 0u64..1 << 40,
            delay_secs in 0u64..100,
            status in 100u16..600,
        ) {
            let names = [
                header::CACHE_CONTROL,
                header::EXPIRES,
                header::AGE,
                header::DATE,
                header::PRAGMA,
                header::CACHE_CONTROL,
                header::LAST_MODIFIED,
                header::ETAG,
            ];
            let mut map = HeaderMap::new();
            for (name, bytes) in values {
                if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                    map.append(names[name].clone(), value);
                }
            }
            let default_ttl = secs(default_secs);
            let now = UNIX_EPOCH + secs(now_secs);

            let directives = ResponseDirectives::from_headers(&map);
            let _ = RequestDirectives::from_headers(&map).requires_revalidation();
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            for mode in [CacheMode::App, CacheMode::Origin] {
                let limits = Limits { mode, ..app(default_ttl) };
                let received = Received { at: now, delay: secs(delay_secs) };
                match response_freshness(status, &map, limits, received) {
                    Storability::Store(lifetime) => {
                        prop_assert!(lifetime.fresh <= default_ttl);
                        prop_assert!(!lifetime.fresh.is_zero() || lifetime.validators);
                        prop_assert!(!directives.malformed && !directives.no_store);
                    }
                    Storability::NotStorable(_) => {}
                }
            }
        }

        #[test]
        fn rendered_headers_never_panic(millis in any::<u64>(), status in 100u16..1000) {
            let age = Duration::from_millis(millis);
            prop_assert!(age_header_value(age).to_str().is_ok());
            let fwd_status = StatusCode::from_u16(status).ok();
            let stale = cache_status(CacheStatus::Stale { staleness: age });
            prop_assert!(stale.to_str().is_ok());
            let stale_if_error = cache_status(CacheStatus::StaleIfError { fwd_status });
            prop_assert!(stale_if_error.to_str().is_ok());
        }
    }

    #[test]
    fn vary_names_are_read_from_every_line_once_and_a_star_wins() {
        assert_eq!(vary(&HeaderMap::new()), Vary::None);
        assert_eq!(vary(&headers(&[("vary", " , ")])), Vary::None);
        let names = vary(&headers(&[
            ("vary", "Accept-Language, x-tenant"),
            ("vary", "ACCEPT-language"),
        ]));
        assert_eq!(
            names,
            Vary::Headers(Arc::from(vec![
                header::ACCEPT_LANGUAGE,
                HeaderName::from_static("x-tenant")
            ]))
        );
        assert_eq!(vary(&headers(&[("vary", "accept, *")])), Vary::Any);
        assert_eq!(vary(&headers(&[("vary", "bad name")])), Vary::Any);
    }
}
