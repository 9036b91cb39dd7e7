use std::{fmt, sync::Arc};

use http::{header, HeaderName, Request};

use super::Gate;
#[cfg(feature = "config")]
use crate::config::RolloutSettings;

/// Lets a stable share of callers (and an allow-list) take the coordinated
/// path.
///
/// A caller's identity is the value of the configured identity header or,
/// without one, its credentials (`Authorization`, `Proxy-Authorization` and
/// `Cookie`: what the HTTP key's auth partition holds). The identity is
/// hashed into a bucket `0..100`, and the caller is admitted when its bucket
/// is under the percentage. The hash is FNV-1a (64 bits, standard offset
/// basis and prime) followed by the MurmurHash3 `fmix64` finalizer, with no
/// per-process seed: a caller lands in the same bucket in every process and
/// every release, and raising the percentage only ever adds callers.
///
/// A caller without an identity is admitted only at 100 %. An allow-list
/// entry admits the caller whose identity equals it, or whose
/// [`fingerprint`](Self::fingerprint) equals it (so that operators need not
/// write credentials into a configuration file).
///
/// ```
/// use herdsman::switch::Rollout;
///
/// let rollout = Rollout::new(20).with_allow(["alice"]);
/// assert!(rollout.admits(Some(b"alice")));
/// assert_eq!(rollout.admits(Some(b"bob")), Rollout::bucket(b"bob") < 20);
/// assert!(!rollout.admits(None));
/// ```
#[derive(Clone)]
pub struct Rollout {
    percent: u8,
    allow: Arc<[String]>,
    identity_header: Option<HeaderName>,
}

const AUTH_HEADERS: [HeaderName; 3] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
];

impl Rollout {
    /// Admits `percent` % of callers (values over 100 mean 100), by
    /// credentials.
    pub fn new(percent: u8) -> Self {
        Rollout {
            percent: percent.min(100),
            allow: Arc::from(Vec::new()),
            identity_header: None,
        }
    }

    /// Admits every caller.
    pub fn everyone() -> Self {
        Self::new(100)
    }

    /// The rollout a configuration describes. An identity header that is
    /// not a valid header name (which validation refuses) is ignored.
    #[cfg(feature = "config")]
    #[cfg_attr(docsrs, doc(cfg(feature = "config")))]
    pub fn from_settings(settings: &RolloutSettings) -> Self {
        let rollout = Rollout::new(settings.percent).with_allow(settings.allow.iter().cloned());
        match settings
            .identity_header
            .as_deref()
            .and_then(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        {
            Some(name) => rollout.with_identity_header(name),
            None => rollout,
        }
    }

    /// Also admits these callers, whatever the percentage.
    pub fn with_allow(mut self, allow: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.allow = allow.into_iter().map(Into::into).collect();
        self
    }

    /// Takes the caller's identity from this header instead of its
    /// credentials.
    pub fn with_identity_header(mut self, name: HeaderName) -> Self {
        self.identity_header = Some(name);
        self
    }

    /// The percentage admitted.
    pub fn percent(&self) -> u8 {
        self.percent
    }

    /// The stable bucket (`0..100`) of an identity.
    pub fn bucket(identity: &[u8]) -> u8 {
        (stable_hash(identity) % 100) as u8
    }

    /// The stable fingerprint of an identity: 16 hexadecimal digits, usable
    /// in the allow-list in place of the identity.
    pub fn fingerprint(identity: &[u8]) -> String {
        format!("{:016x}", stable_hash(identity))
    }

    /// Whether a caller with this identity takes the coordinated path.
    pub fn admits(&self, identity: Option<&[u8]>) -> bool {
        if self.percent >= 100 {
            return true;
        }
        let Some(identity) = identity else {
            return false;
        };
        if !self.allow.is_empty() {
            let fingerprint = Self::fingerprint(identity);
            if self
                .allow
                .iter()
                .any(|entry| entry.as_bytes() == identity || *entry == fingerprint)
            {
                return true;
            }
        }
        Self::bucket(identity) < self.percent
    }

    /// The identity of the caller of `req`, if it has one.
    pub fn identity<B>(&self, req: &Request<B>) -> Option<Vec<u8>> {
        let headers = req.headers();
        if let Some(name) = &self.identity_header {
            return headers.get(name).map(|value| value.as_bytes().to_vec());
        }
        let mut identity = Vec::new();
        for name in &AUTH_HEADERS {
            for value in headers.get_all(name) {
                identity.extend_from_slice(name.as_str().as_bytes());
                identity.push(0);
                identity.extend_from_slice(value.as_bytes());
                identity.push(0);
            }
        }
        (!identity.is_empty()).then_some(identity)
    }

    /// Whether the caller of `req` takes the coordinated path.
    pub fn admits_request<B>(&self, req: &Request<B>) -> bool {
        self.percent >= 100 || self.admits(self.identity(req).as_deref())
    }
}

impl<B> Gate<Request<B>> for Rollout {
    fn admit(&self, req: &Request<B>) -> bool {
        self.admits_request(req)
    }
}

impl fmt::Debug for Rollout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rollout")
            .field("percent", &self.percent)
            .field("allow", &self.allow.len())
            .field("identity_header", &self.identity_header)
            .finish()
    }
}

/// FNV-1a, 64 bits, then MurmurHash3's `fmix64` so that the low digits (the
/// bucket) depend on every input byte. Fixed constants: stable everywhere.
fn stable_hash(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv1a_then_fmix64() {
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c (the published test vector);
        // pinning the result keeps buckets stable across releases.
        let fnv = 0xaf63_dc4c_8601_ec8c_u64;
        let mut h = fnv;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        assert_eq!(stable_hash(b"a"), h ^ (h >> 33));
        assert_eq!(
            Rollout::fingerprint(b"a"),
            format!("{:016x}", h ^ (h >> 33))
        );
    }
}
