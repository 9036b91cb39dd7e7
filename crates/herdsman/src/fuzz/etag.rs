//! Entity tags and the other validators a shared cache reads: the
//! `If-None-Match` list ([`if_none_match`](crate::http::if_none_match) and
//! the Cache's own check), an upstream's strong `ETag`
//! ([`HttpFingerprint::strong_etag`]), `If-Modified-Since`, `Vary`, and the
//! `Location` / `Content-Location` paths an unsafe request invalidates.
//!
//! Properties:
//!
//! - nothing panics on any bytes;
//! - a list of well-formed entity tags (one line or several, weak or strong,
//!   any whitespace, tags holding commas) matches a representation exactly
//!   when one of its tags has the representation's opaque tag (weak
//!   comparison), or it is `*`; the public function and the Cache's check
//!   agree;
//! - a strong `ETag` the fingerprint trusts is one well-formed strong tag,
//!   and a client that sends it back in `If-None-Match` gets a match;
//! - `Vary` names are valid, lowercase and listed once, and `*` wins;
//! - an invalidation path starts with `/` and has no `.` or `..` segment
//!   (but the request's own path, named by a reference with an empty path).

use arbitrary::Arbitrary;
use http::{header, HeaderMap, HeaderValue};

use crate::{
    cache::{freshness::vary, Vary},
    http::{
        conditional::{none_match_fails, not_modified_since, same_origin_path},
        if_none_match,
    },
    registry::HttpFingerprint,
};

/// A representation's tag, an `If-None-Match` list, and raw values.
#[derive(Debug, Arbitrary)]
pub struct Input {
    /// The representation's opaque tag.
    tag: Vec<u8>,
    /// The representation's `ETag` is weak.
    weak: bool,
    /// The list's entries.
    list: Vec<Entry>,
    /// Bit i: a line break (a new line) after entry i.
    breaks: u32,
    /// Whitespace around entries.
    spacing: u8,
    raw: Vec<u8>,
    other: Vec<u8>,
    /// A request path, after its first `/`.
    base: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
enum Entry {
    /// The representation's own tag.
    Same {
        weak: bool,
    },
    Tag {
        opaque: Vec<u8>,
        weak: bool,
    },
}

/// etagc (RFC 9110 §8.8.3): `%x21 / %x23-7E / obs-text`.
fn etagc(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .copied()
        .filter(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
        .collect()
}

fn entity_tag(opaque: &[u8], weak: bool) -> Vec<u8> {
    let mut tag = Vec::with_capacity(opaque.len() + 4);
    if weak {
        tag.extend_from_slice(b"W/");
    }
    tag.push(b'"');
    tag.extend_from_slice(opaque);
    tag.push(b'"');
    tag
}

/// Checks every property on `input`.
pub fn check(input: &Input) {
    let opaque = etagc(&input.tag);
    let etag = HeaderValue::from_bytes(&entity_tag(&opaque, input.weak)).expect("etagc and quotes");

    // The list, split into lines.
    let space: &[u8] = match input.spacing % 4 {
        0 => b"",
        1 => b" ",
        2 => b"\t ",
        _ => b"  ",
    };
    let mut lines: Vec<Vec<u8>> = vec![Vec::new()];
    let mut expected = false;
    for (i, entry) in input.list.iter().enumerate() {
        let (tag_opaque, weak) = match entry {
            Entry::Same { weak } => (opaque.clone(), *weak),
            Entry::Tag { opaque, weak } => (etagc(opaque), *weak),
        };
        expected |= tag_opaque == opaque;
        let line = lines.last_mut().expect("one line at least");
        if !line.is_empty() {
            line.push(b',');
        }
        line.extend_from_slice(space);
        line.extend_from_slice(&entity_tag(&tag_opaque, weak));
        line.extend_from_slice(space);
        if input.breaks >> (i % 32) & 1 == 1 {
            lines.push(Vec::new());
        }
    }
    let values: Vec<HeaderValue> = lines
        .iter()
        .map(|line| HeaderValue::from_bytes(line).expect("tags, commas and whitespace"))
        .collect();
    let mut request = HeaderMap::new();
    for value in &values {
        request.append(header::IF_NONE_MATCH, value.clone());
    }
    let mut response = HeaderMap::new();
    response.insert(header::ETAG, etag.clone());
    assert_eq!(
        if_none_match(&request, &etag),
        expected,
        "{values:?} {etag:?}"
    );
    assert_eq!(none_match_fails(&values, &response), expected);
    let star = [HeaderValue::from_static("*")];
    assert!(none_match_fails(&star, &HeaderMap::new()));

    // The upstream's strong tag, sent back.
    let mut upstream = HeaderMap::new();
    upstream.insert(header::ETAG, etag.clone());
    match HttpFingerprint::strong_etag(&upstream) {
        Some(strong) => {
            assert!(!input.weak);
            let mut again = HeaderMap::new();
            again.insert(header::IF_NONE_MATCH, strong.clone());
            assert!(if_none_match(&again, &etag));
        }
        None => assert!(input.weak, "a well-formed strong tag: {etag:?}"),
    }

    // Raw bytes everywhere.
    let (Ok(raw), Ok(other)) = (
        HeaderValue::from_bytes(&input.raw),
        HeaderValue::from_bytes(&input.other),
    ) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for name in [
        header::ETAG,
        header::LAST_MODIFIED,
        header::VARY,
        header::IF_NONE_MATCH,
    ] {
        headers.append(name, other.clone());
    }
    let _ = if_none_match(&headers, &raw);
    let _ = none_match_fails(std::slice::from_ref(&raw), &headers);
    let _ = not_modified_since(&raw, &headers);
    if let Some(strong) = HttpFingerprint::strong_etag(&headers) {
        let inner = &strong.as_bytes()[1..strong.len() - 1];
        assert_eq!(etagc(inner), inner, "{strong:?}");
    }
    match vary(&headers) {
        Vary::Any => {}
        Vary::None => assert!(other
            .as_bytes()
            .split(|&b| b == b',')
            .all(|e| e.trim_ascii().is_empty())),
        Vary::Headers(names) => {
            for (i, name) in names.iter().enumerate() {
                assert!(!names[..i].contains(name), "{name} twice");
                assert_eq!(name.as_str(), name.as_str().to_ascii_lowercase());
            }
        }
    }
    // The base is a request's path.
    let base = [b"/", input.base.as_slice()].concat();
    let dots = |path: &[u8]| {
        path.split(|&b| b == b'/')
            .any(|segment| segment == b"." || segment == b"..")
    };
    if let Some(path) = same_origin_path(&raw, &base, Some(other.as_bytes())) {
        assert_eq!(path.first(), Some(&b'/'), "{raw:?}");
        // A reference with an empty path (`?q`) is the base path itself,
        // unresolved (RFC 3986 §5.2.2), which is how keys hold it.
        assert!(
            !dots(&path) || path == base,
            "{raw:?} gave {:?}",
            path.escape_ascii().to_string()
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
        fn entity_tag_properties_hold_for_arbitrary_bytes(
            data in prop::collection::vec(any::<u8>(), 0..1024),
        ) {
            run(&data);
        }
    }
}
