//! One hash for every fingerprint that must agree across processes,
//! replicas and releases: content `ETag`s, SSE ids, alert ids.
//!
//! It is XXH3 (64 bits, seed 0), whose output is fixed by its specification,
//! so two processes that see the same bytes compute the same value. It is
//! not keyed: use it to *identify* content, never to bucket attacker-chosen
//! input into a map (the per-process seeded hash of [`Key`](crate::key::Key)
//! does that).

#[cfg(any(test, all(feature = "http", feature = "registry")))]
use std::hash::Hasher;

use twox_hash::XxHash3_64;

/// Incremental [XXH3-64](https://xxhash.com/) with seed 0.
///
/// Variable-length parts are written with [`part`](Self::part), which adds
/// the length first, so that `("ab", "c")` and `("a", "bc")` differ.
#[cfg(any(test, all(feature = "http", feature = "registry")))]
pub(crate) struct StableHasher(XxHash3_64);

#[cfg(any(test, all(feature = "http", feature = "registry")))]
impl StableHasher {
    pub(crate) fn new() -> Self {
        StableHasher(XxHash3_64::with_seed(0))
    }

    /// Writes `bytes` as one length-prefixed part.
    pub(crate) fn part(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.write(&(bytes.len() as u64).to_le_bytes());
        self.0.write(bytes);
        self
    }

    /// Writes a fixed-size number.
    #[cfg(all(feature = "http", feature = "registry"))]
    pub(crate) fn u64(&mut self, n: u64) -> &mut Self {
        self.0.write(&n.to_le_bytes());
        self
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// The stable hash of one byte string.
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    XxHash3_64::oneshot_with_seed(0, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_xxh3_64_with_seed_zero() {
        // The published XXH3_64bits test vector of the empty input.
        assert_eq!(stable_hash(b""), 0x2d06_8005_38d3_94c2);
        assert_eq!(stable_hash(b"herdsman"), stable_hash(b"herdsman"));
        assert_ne!(stable_hash(b"herdsman"), stable_hash(b"herdsmen"));
    }

    #[test]
    fn parts_are_length_prefixed() {
        let ab_c = StableHasher::new().part(b"ab").part(b"c").finish();
        let a_bc = StableHasher::new().part(b"a").part(b"bc").finish();
        assert_ne!(ab_c, a_bc);
    }
}
