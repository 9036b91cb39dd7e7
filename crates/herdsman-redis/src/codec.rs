//! How values are written into Redis and read back.
//!
//! The backends are generic over the value type of the layers they serve
//! (`V`); a [`Codec`] turns one into bytes and back. [`HttpCodec`] encodes
//! the shared HTTP responses of herdsman's HTTP stack; [`PlainCodec`]
//! encodes strings and byte buffers, for stacks of other value types and
//! for tests.
//!
//! Every encoding starts with a version byte, so that replicas of two
//! releases sharing one Redis read each other's entries or skip them as
//! misses, never misread them.

use bytes::Bytes;

/// Turns values into bytes for Redis, and back.
///
/// A value that cannot be encoded is not shared: [`encode`](Self::encode)
/// answers `false` and the backend keeps it local. Bytes that do not
/// decode (another release's format, a damaged entry) are a miss.
pub trait Codec<V>: Clone + Send + Sync + 'static {
    /// Appends `value`'s encoding to `out`; `false` if it must not leave
    /// this process (`out` is then discarded).
    fn encode(&self, value: &V, out: &mut Vec<u8>) -> bool;

    /// The value `bytes` encode, or `None` when they are not one.
    fn decode(&self, bytes: &[u8]) -> Option<V>;
}

/// The first byte of [`PlainCodec`]'s encoding.
const PLAIN_V1: u8 = 1;

/// Encodes `String`, `Vec<u8>` and [`Bytes`] values as themselves (after a
/// version byte).
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainCodec;

impl Codec<Bytes> for PlainCodec {
    fn encode(&self, value: &Bytes, out: &mut Vec<u8>) -> bool {
        out.push(PLAIN_V1);
        out.extend_from_slice(value);
        true
    }

    fn decode(&self, bytes: &[u8]) -> Option<Bytes> {
        match bytes.split_first() {
            Some((&PLAIN_V1, rest)) => Some(Bytes::copy_from_slice(rest)),
            _ => None,
        }
    }
}

impl Codec<Vec<u8>> for PlainCodec {
    fn encode(&self, value: &Vec<u8>, out: &mut Vec<u8>) -> bool {
        out.push(PLAIN_V1);
        out.extend_from_slice(value);
        true
    }

    fn decode(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        match bytes.split_first() {
            Some((&PLAIN_V1, rest)) => Some(rest.to_vec()),
            _ => None,
        }
    }
}

impl Codec<String> for PlainCodec {
    fn encode(&self, value: &String, out: &mut Vec<u8>) -> bool {
        out.push(PLAIN_V1);
        out.extend_from_slice(value.as_bytes());
        true
    }

    fn decode(&self, bytes: &[u8]) -> Option<String> {
        match bytes.split_first() {
            Some((&PLAIN_V1, rest)) => String::from_utf8(rest.to_vec()).ok(),
            _ => None,
        }
    }
}

#[cfg(feature = "http")]
pub use self::http_codec::HttpCodec;

#[cfg(feature = "http")]
mod http_codec {
    use bytes::Bytes;
    use herdsman::http::SharedBody;
    use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode, Version};

    use super::Codec;

    /// The first byte of [`HttpCodec`]'s encoding: version 2 carries the
    /// trailers; version 1 (no trailers) is still read.
    const HTTP_V1: u8 = 1;
    const HTTP_V2: u8 = 2;

    /// Encodes herdsman's shared HTTP responses (`Response<SharedBody>`):
    /// version, status, headers, trailers and body.
    ///
    /// Layout (version 2, integers big-endian): `2`, the HTTP version
    /// (`0` = 0.9 … `4` = 3), the status (`u16`), the headers, `1` and the
    /// trailers when the body has trailers (else `0`), then the body to the
    /// end. A header map is its count (`u32`), then each field as name
    /// length (`u16`), name, value length (`u32`), value. Version 1 (the
    /// same without the trailers' byte) is still read.
    ///
    /// Response extensions are process-local and are not kept.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct HttpCodec;

    fn version_byte(version: Version) -> u8 {
        match version {
            Version::HTTP_09 => 0,
            Version::HTTP_10 => 1,
            Version::HTTP_2 => 3,
            Version::HTTP_3 => 4,
            _ => 2,
        }
    }

    fn version_of(byte: u8) -> Option<Version> {
        Some(match byte {
            0 => Version::HTTP_09,
            1 => Version::HTTP_10,
            2 => Version::HTTP_11,
            3 => Version::HTTP_2,
            4 => Version::HTTP_3,
            _ => return None,
        })
    }

    /// Reads ahead in an encoding.
    struct Reader<'a>(&'a [u8]);

    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.0.len() < n {
                return None;
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Some(head)
        }

        fn u8(&mut self) -> Option<u8> {
            self.take(1).map(|b| b[0])
        }

        fn u16(&mut self) -> Option<u16> {
            self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
        }

        fn u32(&mut self) -> Option<u32> {
            self.take(4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }
    }

    /// Appends `headers` (count, then each field); `false` if a field is
    /// too long for the layout.
    fn encode_headers(headers: &HeaderMap, out: &mut Vec<u8>) -> bool {
        let Ok(count) = u32::try_from(headers.len()) else {
            return false;
        };
        out.extend_from_slice(&count.to_be_bytes());
        for (name, value) in headers {
            let name = name.as_str().as_bytes();
            // Header names are short; values are bounded by the server.
            let (Ok(name_len), Ok(value_len)) =
                (u16::try_from(name.len()), u32::try_from(value.len()))
            else {
                return false;
            };
            out.extend_from_slice(&name_len.to_be_bytes());
            out.extend_from_slice(name);
            out.extend_from_slice(&value_len.to_be_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        true
    }

    fn decode_headers(r: &mut Reader<'_>) -> Option<HeaderMap> {
        let count = r.u32()? as usize;
        // Each field takes six bytes at least: a bogus count cannot make
        // us reserve much.
        let mut headers = HeaderMap::with_capacity(count.min(r.0.len() / 6));
        for _ in 0..count {
            let len = r.u16()? as usize;
            let name = HeaderName::from_bytes(r.take(len)?).ok()?;
            let len = r.u32()? as usize;
            let value = HeaderValue::from_bytes(r.take(len)?).ok()?;
            headers.append(name, value);
        }
        Some(headers)
    }

    impl Codec<Response<SharedBody>> for HttpCodec {
        fn encode(&self, value: &Response<SharedBody>, out: &mut Vec<u8>) -> bool {
            out.push(HTTP_V2);
            out.push(version_byte(value.version()));
            out.extend_from_slice(&value.status().as_u16().to_be_bytes());
            if !encode_headers(value.headers(), out) {
                return false;
            }
            match value.body().trailers() {
                None => out.push(0),
                Some(trailers) => {
                    out.push(1);
                    if !encode_headers(trailers, out) {
                        return false;
                    }
                }
            }
            out.extend_from_slice(value.body().data());
            true
        }

        fn decode(&self, bytes: &[u8]) -> Option<Response<SharedBody>> {
            let mut r = Reader(bytes);
            let layout = r.u8()?;
            if layout != HTTP_V1 && layout != HTTP_V2 {
                return None;
            }
            let version = version_of(r.u8()?)?;
            let status = StatusCode::from_u16(r.u16()?).ok()?;
            let headers = decode_headers(&mut r)?;
            // Never shared by the cache, so never encoded: refused all the
            // same, as `HttpShare` refuses to share one.
            if headers.contains_key(header::SET_COOKIE) {
                return None;
            }
            let trailers = match (layout, layout == HTTP_V2 && r.u8()? == 1) {
                (HTTP_V2, true) => Some(decode_headers(&mut r)?),
                _ => None,
            };
            let body = SharedBody::new(Bytes::copy_from_slice(r.0), trailers);
            let mut response = Response::new(body);
            *response.status_mut() = status;
            *response.version_mut() = version;
            *response.headers_mut() = headers;
            Some(response)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_round_trip_and_other_versions_are_misses() {
        let mut out = Vec::new();
        assert!(PlainCodec.encode(&"héllo".to_string(), &mut out));
        assert_eq!(
            Codec::<String>::decode(&PlainCodec, &out).as_deref(),
            Some("héllo")
        );
        out[0] = 2;
        assert_eq!(Codec::<String>::decode(&PlainCodec, &out), None);
        assert_eq!(Codec::<Bytes>::decode(&PlainCodec, &[]), None);
    }

    #[cfg(feature = "http")]
    #[test]
    fn http_responses_round_trip_with_status_headers_and_body() {
        use herdsman::{http::SharedBody, share::Share};
        use http::{header, Response, StatusCode, Version};

        let mut response = Response::new(herdsman::http::HttpBody::<()>::full("{\"n\":1}"));
        *response.status_mut() = StatusCode::CREATED;
        *response.version_mut() = Version::HTTP_2;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        headers.append(header::VARY, "accept".parse().unwrap());
        headers.append(header::VARY, "accept-language".parse().unwrap());
        let shared: Response<SharedBody> = herdsman::http::HttpShare.share(response).unwrap();

        let mut out = Vec::new();
        assert!(HttpCodec.encode(&shared, &mut out));
        let back: Response<SharedBody> = HttpCodec.decode(&out).unwrap();
        assert_eq!(back.status(), StatusCode::CREATED);
        assert_eq!(back.version(), Version::HTTP_2);
        assert_eq!(back.headers(), shared.headers());
        assert_eq!(back.body().data(), "{\"n\":1}");

        // Trailers go with the body.
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let with_trailers =
            back.map(|body| SharedBody::new(body.data().clone(), Some(trailers.clone())));
        let mut encoded = Vec::new();
        assert!(HttpCodec.encode(&with_trailers, &mut encoded));
        let again: Response<SharedBody> = HttpCodec.decode(&encoded).unwrap();
        assert_eq!(again.body().trailers(), Some(&trailers));
        assert_eq!(again.body().data(), "{\"n\":1}");

        // Cut anywhere in the headers, it is not a response.
        for len in 1..out.len() - 7 {
            assert!(
                Codec::<Response<SharedBody>>::decode(&HttpCodec, &out[..len]).is_none(),
                "{len}"
            );
        }
    }
}
