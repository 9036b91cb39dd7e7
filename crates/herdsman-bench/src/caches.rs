//! The caches compared, built the same way by every cache benchmark.
//!
//! - herdsman's [`CacheLayer`], keyed by [`key_of`], TTL [`TTL`];
//! - tower-resilience 0.13's `cache` (LRU, entry-count bound), keyed by the
//!   `u64` itself, TTL [`TTL`];
//! - the two stores herdsman could sit on, used bare: moka 0.12 and
//!   quick_cache 0.7, keyed by the `u64` with their default hashers, or by a
//!   herdsman [`Key`] with its precomputed hash ([`KeyHash`]), as herdsman
//!   would use them.

use std::{
    convert::Infallible,
    hash::{BuildHasherDefault, Hasher},
    time::Duration,
};

use bytes::Bytes;
use herdsman::{
    cache::{CacheHandle, CacheLayer},
    key::Key,
    BoxError,
};
use tower::{Layer, Service};

use crate::peers::key_of;

/// The TTL given to every cache that has one: long enough that nothing
/// expires during a benchmark.
pub const TTL: Duration = Duration::from_secs(60);

/// Size of one payload in the memory benchmark.
pub const PAYLOAD_LEN: usize = 1024;

/// herdsman's cache over `inner`, bounded to `max_bytes`, and the handle to
/// its store.
pub fn herdsman<S>(
    inner: S,
    max_bytes: u64,
) -> (
    impl Service<u64, Response = S::Response, Error = BoxError> + Clone + Send + 'static,
    CacheHandle<S::Response>,
)
where
    S: Service<u64, Error = Infallible> + Clone + Send + 'static,
    S::Response: Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    let layer = CacheLayer::new(key_of)
        .with_ttl(TTL)
        .with_max_bytes(max_bytes);
    (layer.layer(inner), layer.handle())
}

/// tower-resilience's cache over `inner`, holding up to `max_size` entries
/// (LRU), with `ttl` ([`TTL`] to match herdsman; `None` is its default).
///
/// Clones of the returned service share one store.
pub fn tower_resilience<S>(
    inner: S,
    max_size: usize,
    ttl: Option<Duration>,
) -> impl Service<u64, Response = S::Response, Error = impl std::fmt::Debug> + Clone + Send + 'static
where
    S: Service<u64, Error = Infallible> + Clone + Send + 'static,
    S::Response: Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let builder = tower_resilience::cache::CacheLayer::builder().max_size(max_size);
    let builder = match ttl {
        Some(ttl) => builder.ttl(ttl),
        None => builder,
    };
    builder
        .key_extractor(|req: &u64| *req)
        .build()
        .expect("a key extractor is set")
        .layer(inner)
}

/// A `BuildHasher` for stores keyed by [`Key`]: `Key` hashes as its
/// precomputed hash (one `write_u64`), which this passes through, as herdsman
/// does for its own store.
pub type KeyHash = BuildHasherDefault<PassThrough>;

/// The hasher of [`KeyHash`].
#[derive(Debug, Default, Clone, Copy)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached by types other than `Key`; mixes the bytes so that the
        // hasher stays correct for them.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The key of request `n`, as herdsman builds it.
pub fn key(n: u64) -> Key {
    Key::from(n)
}

/// A distinct 1 KiB payload for entry `n`, already in `Bytes`' shared form.
///
/// `Bytes::from(Vec)` allocates its shared header only on the first clone.
/// herdsman clones a response to store it, a bare store does not; cloning once
/// here makes every implementation (and the baseline) hold the same
/// allocations per payload.
pub fn payload(n: u64) -> Bytes {
    let mut buf = vec![0u8; PAYLOAD_LEN];
    buf[..8].copy_from_slice(&n.to_le_bytes());
    let bytes = Bytes::from(buf);
    drop(bytes.clone());
    bytes
}
