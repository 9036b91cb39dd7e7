//! Conditional requests, HTTP dates and invalidation targets: the pure
//! parts of answering validators (RFC 9110 §13, RFC 9111 §4.4), used by the
//! cache's HTTP policy and by polling answers alike.
//!
//! Nothing here reads a clock or does I/O, and every function is total:
//! malformed, repeated or non-UTF-8 values never panic, and are read in the
//! direction that is safe for a shared cache (a condition that cannot be
//! read does not match, so the caller gets the full response).

// The dates and invalidation targets serve the cache's HTTP policy only.
#[cfg(any(test, feature = "cache"))]
use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderValue};
#[cfg(any(test, feature = "cache"))]
use http::uri::{Authority, Uri};

/// An HTTP date (IMF-fixdate, or the obsolete RFC 850 and asctime forms).
#[cfg(any(test, feature = "cache"))]
pub(crate) fn http_date(value: &HeaderValue) -> Option<SystemTime> {
    let text = value.to_str().ok()?.trim_matches(|c| c == ' ' || c == '\t');
    httpdate::parse_http_date(text).ok()
}

/// Whether a response with these `headers` satisfies the caller's
/// `If-None-Match` (a list of entity tags, or `*`), compared weakly (RFC
/// 9110 §13.1.2): the caller already has it, and gets `304`.
#[cfg(any(test, feature = "cache"))]
pub(crate) fn none_match_fails(if_none_match: &[HeaderValue], headers: &HeaderMap) -> bool {
    none_match(if_none_match, headers.get(header::ETAG))
}

/// Whether `If-None-Match` in a request's `headers` matches a
/// representation whose `ETag` is `etag`: a list of entity tags (on one
/// line or several) or `*`, compared weakly (RFC 9110 §13.1.2). The caller
/// already has it, and a `GET` gets `304 Not Modified`. Malformed elements
/// never match; it never panics.
///
/// ```
/// use herdsman::http::if_none_match;
/// use http::{HeaderMap, HeaderValue};
///
/// let mut request = HeaderMap::new();
/// request.insert("if-none-match", HeaderValue::from_static("\"a\", W/\"b\""));
/// assert!(if_none_match(&request, &HeaderValue::from_static("\"b\"")));
/// assert!(!if_none_match(&request, &HeaderValue::from_static("\"c\"")));
/// assert!(!if_none_match(&HeaderMap::new(), &HeaderValue::from_static("\"a\"")));
/// ```
pub fn if_none_match(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    none_match(headers.get_all(header::IF_NONE_MATCH), Some(etag))
}

/// Whether the `If-None-Match` lines match a representation with `etag`
/// (none, or not an entity tag: only `*` matches, since it exists).
fn none_match<'a>(
    lines: impl IntoIterator<Item = &'a HeaderValue>,
    etag: Option<&HeaderValue>,
) -> bool {
    let etag = etag.and_then(|v| entity_tag(v.as_bytes()));
    lines.into_iter().any(|line| {
        let line = line.as_bytes();
        is_star(line) || etag.is_some_and(|etag| entity_tags(line).any(|tag| weak_eq(tag, etag)))
    })
}

/// Whether a response with these `headers` was not modified since the
/// caller's `If-Modified-Since` (RFC 9110 §13.1.3): its `Last-Modified` is
/// no later. An invalid date on either side does not match.
#[cfg(any(test, feature = "cache"))]
pub(crate) fn not_modified_since(if_modified_since: &HeaderValue, headers: &HeaderMap) -> bool {
    let (Some(since), Some(modified)) = (
        http_date(if_modified_since),
        headers.get(header::LAST_MODIFIED).and_then(http_date),
    ) else {
        return false;
    };
    modified <= since
}

fn is_star(line: &[u8]) -> bool {
    line.trim_ascii() == b"*"
}

/// The opaque tag of one entity tag (`"x"` or `W/"x"`), weakness dropped.
fn entity_tag(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let value = value.strip_prefix(b"W/").unwrap_or(value);
    let inner = value.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    (!inner.contains(&b'"')).then_some(inner)
}

/// The entity tags of one `If-None-Match` line; elements that are not entity
/// tags are skipped.
fn entity_tags(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    // An opaque tag cannot contain `"`, but may contain a comma: split on
    // commas outside quotes.
    let mut rest = line;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let mut quoted = false;
        let end = rest
            .iter()
            .position(|&b| {
                if b == b'"' {
                    quoted = !quoted;
                }
                b == b',' && !quoted
            })
            .unwrap_or(rest.len());
        let element = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or_default();
        if let Some(tag) = entity_tag(element) {
            return Some(tag);
        }
    })
}

fn weak_eq(a: &[u8], b: &[u8]) -> bool {
    a == b
}

/// The path a `Location` or `Content-Location` value names, when it is on
/// `authority` (RFC 9111 §4.4: only same-origin URIs are invalidated).
///
/// A reference without an authority is resolved against `base` (the request
/// path, RFC 3986 §5.2); an absolute one counts only when its authority is
/// `authority` (case-insensitively). `None` for other origins, fragments
/// only, and values that are not URI references.
#[cfg(any(test, feature = "cache"))]
pub(crate) fn same_origin_path(
    value: &HeaderValue,
    base: &[u8],
    authority: Option<&[u8]>,
) -> Option<Vec<u8>> {
    let text = value.to_str().ok()?.trim();
    let text = text.split('#').next().unwrap_or_default();
    if text.is_empty() || text.starts_with("//") {
        return None;
    }
    if text.contains("://") {
        let uri: Uri = text.parse().ok()?;
        let theirs: &Authority = uri.authority()?;
        let ours = authority?;
        if !theirs.as_str().as_bytes().eq_ignore_ascii_case(ours) {
            return None;
        }
        return Some(remove_dot_segments(uri.path().as_bytes()));
    }
    let path = text.split('?').next().unwrap_or_default().as_bytes();
    if path.is_empty() {
        return Some(base.to_vec());
    }
    if path.first() == Some(&b'/') {
        return Some(remove_dot_segments(path));
    }
    let dir = base
        .iter()
        .rposition(|&b| b == b'/')
        .map_or(&b"/"[..], |i| &base[..=i]);
    let mut merged = dir.to_vec();
    merged.extend_from_slice(path);
    Some(remove_dot_segments(&merged))
}

/// RFC 3986 §5.2.4, on a path that starts with `/`.
#[cfg(any(test, feature = "cache"))]
fn remove_dot_segments(path: &[u8]) -> Vec<u8> {
    let mut out: Vec<&[u8]> = Vec::new();
    let segments: Vec<&[u8]> = path.split(|&b| b == b'/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing = false;
    for (i, segment) in segments.iter().enumerate() {
        trailing = false;
        match *segment {
            b"." => trailing = i == last,
            b".." => {
                out.pop();
                trailing = i == last;
            }
            segment => out.push(segment),
        }
    }
    let mut result = Vec::with_capacity(path.len());
    for segment in &out {
        result.push(b'/');
        result.extend_from_slice(segment);
    }
    if trailing || result.is_empty() {
        result.push(b'/');
    }
    result
}

#[cfg(test)]
mod tests {
    use http::HeaderName;
    use proptest::prelude::*;

    use super::*;

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

    fn values(lines: &[&str]) -> Vec<HeaderValue> {
        lines
            .iter()
            .map(|l| HeaderValue::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn if_none_match_compares_lists_weakly_and_accepts_a_star() {
        let tagged = headers(&[("etag", "W/\"v1\"")]);
        for matching in [
            &["\"v1\""][..],
            &["W/\"v1\""],
            &["\"v0\", \"v1\""],
            &["\"x\"", "\"v1\""],
            &["*"],
        ] {
            assert!(none_match_fails(&values(matching), &tagged), "{matching:?}");
        }
        for other in [&["\"v10\""][..], &["v1"], &["\"v1"], &[""]] {
            assert!(!none_match_fails(&values(other), &tagged), "{other:?}");
        }
        assert!(none_match_fails(
            &values(&["\"a,b\""]),
            &headers(&[("etag", "\"a,b\"")])
        ));
        assert!(!none_match_fails(&values(&["\"v1\""]), &HeaderMap::new()));
        assert!(none_match_fails(&values(&["*"]), &HeaderMap::new()));
    }

    #[test]
    fn if_modified_since_matches_an_earlier_or_equal_last_modified() {
        let response = headers(&[("last-modified", "Tue, 14 Nov 2023 22:13:20 GMT")]);
        let at = |v: &str| not_modified_since(&HeaderValue::from_str(v).unwrap(), &response);
        assert!(at("Tue, 14 Nov 2023 22:13:20 GMT"));
        assert!(at("Wed, 15 Nov 2023 00:00:00 GMT"));
        assert!(!at("Tue, 14 Nov 2023 22:13:19 GMT"));
        assert!(!at("yesterday"));
        let since = HeaderValue::from_static("Wed, 15 Nov 2023 00:00:00 GMT");
        assert!(!not_modified_since(&since, &HeaderMap::new()));
    }

    #[test]
    fn locations_on_our_origin_name_paths_and_others_do_not() {
        let at = |v: &str| {
            same_origin_path(
                &HeaderValue::from_str(v).unwrap(),
                b"/cards/new",
                Some(b"API:80"),
            )
            .map(|p| String::from_utf8(p).unwrap())
        };
        assert_eq!(at("/cards/7").as_deref(), Some("/cards/7"));
        assert_eq!(at("/cards/7?x=1#top").as_deref(), Some("/cards/7"));
        assert_eq!(at("7").as_deref(), Some("/cards/7"));
        assert_eq!(at("../users/./1").as_deref(), Some("/users/1"));
        assert_eq!(at("/a/../../b/").as_deref(), Some("/b/"));
        assert_eq!(at("http://api:80/cards/8").as_deref(), Some("/cards/8"));
        assert_eq!(at("http://other/cards/8"), None);
        assert_eq!(at("//other/cards/8"), None);
        assert_eq!(at("#frag"), None);
        assert_eq!(at("?q=1").as_deref(), Some("/cards/new"));
        let no_authority = same_origin_path(&HeaderValue::from_static("http://api/x"), b"/", None);
        assert_eq!(no_authority, None);
    }

    proptest! {
        #[test]
        fn arbitrary_values_never_panic(
            a in prop::collection::vec(any::<u8>(), 0..48),
            b in prop::collection::vec(any::<u8>(), 0..48),
            base in "(/[a-z.]{0,4}){0,4}",
        ) {
            let (Ok(a), Ok(b)) = (HeaderValue::from_bytes(&a), HeaderValue::from_bytes(&b)) else {
                return Ok(());
            };
            let mut map = HeaderMap::new();
            for name in [header::ETAG, header::LAST_MODIFIED, header::VARY] {
                map.append(name, b.clone());
            }
            let _ = none_match_fails(std::slice::from_ref(&a), &map);
            let _ = not_modified_since(&a, &map);
            if let Some(path) = same_origin_path(&a, base.as_bytes(), Some(b.as_bytes())) {
                prop_assert_eq!(path.first(), Some(&b'/'));
            }
        }
    }
}
