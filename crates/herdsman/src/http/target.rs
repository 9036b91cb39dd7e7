//! Request headers that re-target a request: the usual vehicle of web cache
//! poisoning.
//!
//! Frameworks and proxies rebuild a request's URL, scheme or method from
//! headers such as `X-Forwarded-Host`, `X-Original-URL` or
//! `X-HTTP-Method-Override`. An origin that does so answers a request for
//! `/` with links to the host an attacker named, or runs a `POST` for a
//! `GET`. A cache or a single-flight map that leaves those headers out of
//! its key hands that answer to everyone asking for `/`. [`HttpKey`] keys
//! them whenever they are present, so such an answer only ever reaches
//! callers that send the same values; behind a proxy that sets them they
//! are the same on every request and cost no coalescing.
//!
//! `Forwarded` (RFC 7239) also carries the client's address (`for=`), which
//! differs per client: it is keyed without its `for=` pairs, so that a proxy
//! that adds them does not split every key by client.
//!
//! [`HttpKey`]: super::HttpKey

use http::{header, HeaderMap, HeaderName, HeaderValue};

use crate::key::KeyBuilder;

/// Headers that name another host, scheme, port, path or method than the
/// request line's, keyed whenever present. `Forwarded` is handled apart.
const TARGET_HEADERS: [HeaderName; 12] = [
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-server"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-scheme"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-host"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

/// Whether `headers` hold a re-targeting header: one pass over the names,
/// so that the common request (none) costs no lookups.
fn present(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| {
        *name == header::FORWARDED
            || (name.as_str().starts_with("x-") && TARGET_HEADERS.contains(name))
    })
}

/// Appends the re-targeting headers of `headers` to `key`, each with its
/// name (so that no two header sets make the same parts), in a fixed order.
/// Those in `varied` are left out: the key has them already, as sent.
pub(crate) fn push(key: &mut KeyBuilder, headers: &HeaderMap, varied: &[HeaderName]) {
    if !present(headers) {
        return;
    }
    for name in TARGET_HEADERS.iter().filter(|name| !varied.contains(name)) {
        key.push_present_header(headers, name);
    }
    if varied.contains(&header::FORWARDED) {
        return;
    }
    let forwarded: Vec<Vec<u8>> = forwarded(headers).collect();
    if !forwarded.is_empty() {
        key.push(header::FORWARDED.as_str().as_bytes());
        key.push_count(forwarded.len());
        for value in &forwarded {
            key.push(value);
        }
    }
}

/// Copies the re-targeting headers of `from` into `to`, as they are keyed
/// (`Forwarded` without its `for=` pairs), for a canonical request; those
/// in `varied` are left out, copied as sent with the other varied headers.
/// Each value is copied into an allocation of its own (`own`), so that the
/// copy does not keep the caller's request head alive.
pub(crate) fn copy(
    from: &HeaderMap,
    to: &mut HeaderMap,
    varied: &[HeaderName],
    own: fn(&HeaderValue) -> HeaderValue,
) {
    if !present(from) {
        return;
    }
    for name in TARGET_HEADERS.iter().filter(|name| !varied.contains(name)) {
        for value in from.get_all(name) {
            to.append(name.clone(), own(value));
        }
    }
    if varied.contains(&header::FORWARDED) {
        return;
    }
    for value in forwarded(from) {
        if let Ok(value) = HeaderValue::from_bytes(&value) {
            to.append(header::FORWARDED, value);
        }
    }
}

/// The `Forwarded` values of `headers` without their `for=` pairs, leaving
/// out values with nothing else.
fn forwarded(headers: &HeaderMap) -> impl Iterator<Item = Vec<u8>> + '_ {
    headers
        .get_all(header::FORWARDED)
        .into_iter()
        .map(|value| without_for(value.as_bytes()))
        .filter(|value| !value.is_empty())
}

/// A `Forwarded` value (RFC 7239 §4: elements separated by `,`, pairs by
/// `;`, values tokens or quoted strings) without its `for=` pairs, the
/// other pairs kept as sent. A value whose quotes do not close is kept
/// whole: what cannot be read for certain is keyed, never dropped.
fn without_for(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut element_open = false;
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for i in 0..=value.len() {
        let b = value.get(i).copied().unwrap_or(b',');
        if escaped {
            escaped = false;
            continue;
        }
        if quoted {
            match b {
                b'\\' => escaped = true,
                b'"' => quoted = false,
                _ if i == value.len() => return value.to_vec(),
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => quoted = true,
            b',' | b';' => {
                let pair = value[start..i].trim_ascii();
                if !pair.is_empty() && !is_for(pair) {
                    if element_open {
                        out.push(b';');
                    } else if !out.is_empty() {
                        out.extend_from_slice(b", ");
                    }
                    out.extend_from_slice(pair);
                    element_open = true;
                }
                if b == b',' {
                    element_open = false;
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return value.to_vec();
    }
    out
}

fn is_for(pair: &[u8]) -> bool {
    let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
    name.trim_ascii().eq_ignore_ascii_case(b"for")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn text(value: &str) -> String {
        String::from_utf8(without_for(value.as_bytes())).unwrap()
    }

    #[test]
    fn forwarded_for_pairs_are_dropped_and_others_kept() {
        assert_eq!(
            text("for=192.0.2.60;proto=http;by=203.0.113.43"),
            "proto=http;by=203.0.113.43"
        );
        assert_eq!(text("For=\"[2001:db8::1]\", for=198.51.100.17"), "");
        assert_eq!(
            text("for=a;host=example.com, for=b;host=evil.example"),
            "host=example.com, host=evil.example"
        );
    }

    #[test]
    fn separators_inside_quotes_do_not_split_a_pair() {
        assert_eq!(text("for=\"a;host=evil\";proto=https"), "proto=https");
        assert_eq!(text("host=\"a,b\\\"c\""), "host=\"a,b\\\"c\"");
    }

    #[test]
    fn a_value_whose_quote_does_not_close_is_kept_whole() {
        assert_eq!(text("for=\"a;host=evil"), "for=\"a;host=evil");
    }

    #[test]
    fn the_common_request_has_no_retargeting_header() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        headers.insert("x-request-id", HeaderValue::from_static("1"));
        assert!(!present(&headers));
        headers.insert("x-forwarded-host", HeaderValue::from_static("evil"));
        assert!(present(&headers));
    }

    proptest! {
        #[test]
        fn filtering_never_panics_and_leaves_nothing_to_filter(value in proptest::collection::vec(any::<u8>(), 0..64)) {
            // A second pass would drop any `for=` pair the first left.
            let once = without_for(&value);
            prop_assert_eq!(without_for(&once), once);
        }
    }
}
