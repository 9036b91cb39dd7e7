//! Keys: what makes two requests "the same".
//!
//! Every coordinating layer asks a [`KeyFn`] for the [`Key`] of a request.
//! Requests with equal keys are coordinated (coalesced, cached, polled once);
//! a request whose key function answers `None` passes through untouched.
//!
//! Keys compare by their **full value**. The hash is only used to find the
//! bucket: two different keys whose hashes collide stay two different keys,
//! so a collision can never hand one caller another caller's response.
//!
//! # Examples
//!
//! ```
//! use herdsman::key::{Key, KeyFn};
//!
//! // Any `Fn(&Req) -> Option<Key>` is a key function.
//! let by_path = |req: &String| -> Option<Key> {
//!     req.starts_with("/api/").then(|| Key::from(req.as_str()))
//! };
//! assert_eq!(by_path.key(&"/api/users".to_string()), Some(Key::from("/api/users")));
//! assert_eq!(by_path.key(&"/health".to_string()), None);
//! ```

use std::{
    fmt,
    hash::{BuildHasher, Hash, Hasher},
    sync::{Arc, OnceLock},
};

/// Keys longer than this many bytes pass through uncoordinated unless a layer
/// is configured otherwise (8 KiB).
pub const DEFAULT_MAX_KEY_LEN: usize = 8 * 1024;

/// Keys up to this length are stored inline, without an allocation.
const INLINE_CAP: usize = 24;

// The maps of the keyed layers use these; the core alone has none.
with_any_layer! {
    /// Hashes a [`Key`] by its precomputed hash: maps keyed by `Key` need not
    /// hash the bytes again.
    #[derive(Default, Clone, Copy, Debug)]
    pub(crate) struct KeyHasher(u64);

    impl Hasher for KeyHasher {
        fn finish(&self) -> u64 {
            self.0
        }

        fn write(&mut self, bytes: &[u8]) {
            // Only `Key` is hashed with this hasher, and it calls `write_u64`.
            for &b in bytes {
                self.0 = self.0.rotate_left(8) ^ u64::from(b);
            }
        }

        fn write_u64(&mut self, n: u64) {
            self.0 = n;
        }
    }

    /// A `BuildHasher` for maps keyed by [`Key`].
    pub(crate) type KeyBuildHasher = std::hash::BuildHasherDefault<KeyHasher>;
}

/// Maps a request to the [`Key`] it is coordinated under.
///
/// `None` means "do not coordinate this request": it passes through the layer
/// as if the layer were not there. Implemented for every
/// `Fn(&Req) -> Option<Key>`; [`HttpKey`][crate::http::HttpKey] is the default
/// for HTTP requests.
///
#[cfg_attr(
    not(feature = "http"),
    doc = "[crate::http::HttpKey]: crate#feature-flags"
)]
pub trait KeyFn<Req> {
    /// The key of `req`, or `None` to let it pass through uncoordinated.
    fn key(&self, req: &Req) -> Option<Key>;
}

impl<Req, F> KeyFn<Req> for F
where
    F: Fn(&Req) -> Option<Key>,
{
    fn key(&self, req: &Req) -> Option<Key> {
        self(req)
    }
}

/// The identity of a coordinated request.
///
/// A key is an immutable byte string with a precomputed hash. Short keys
/// (up to 24 bytes) are stored inline; longer ones are shared behind an `Arc`,
/// so cloning a key never copies a long value.
///
/// `Debug` shows only the *public* part of a key: the part after
/// [`KeyBuilder::private`] (credentials, cookies) is redacted, so keys can be
/// logged safely.
#[derive(Clone)]
pub struct Key {
    repr: Repr,
    hash: u64,
    /// Bytes from the start that may be shown in logs.
    public_len: u32,
    /// Where the request path is, if the key function marked it.
    path: (u16, u16),
}

#[derive(Clone)]
enum Repr {
    Inline { len: u8, buf: [u8; INLINE_CAP] },
    Heap(Arc<[u8]>),
}

fn hasher() -> &'static foldhash::fast::RandomState {
    // foldhash is several times cheaper than std's SipHash on short keys, and
    // hashing happens on every request. Seeded at random once per process, so
    // an attacker who controls URLs cannot precompute colliding keys; and a
    // collision would only cost time, since keys compare by full value.
    static STATE: OnceLock<foldhash::fast::RandomState> = OnceLock::new();
    STATE.get_or_init(Default::default)
}

impl Key {
    /// A key holding a copy of `bytes`.
    pub fn new(bytes: impl AsRef<[u8]>) -> Self {
        let bytes = bytes.as_ref();
        Self::with_public_len(bytes, bytes.len())
    }

    /// Starts a key made of several parts; see [`KeyBuilder`].
    pub fn builder() -> KeyBuilder {
        KeyBuilder::default()
    }

    /// A key holding a copy of `bytes`, none of which `Debug` shows: for
    /// keys made of credentials (a caller's identity).
    #[cfg(any(test, feature = "coordinator"))]
    pub(crate) fn redacted(bytes: impl AsRef<[u8]>) -> Self {
        Self::with_public_len(bytes.as_ref(), 0)
    }

    fn with_public_len(bytes: &[u8], public_len: usize) -> Self {
        let hash = hasher().hash_one(bytes);
        let repr = if bytes.len() <= INLINE_CAP {
            let mut buf = [0; INLINE_CAP];
            buf[..bytes.len()].copy_from_slice(bytes);
            Repr::Inline {
                len: bytes.len() as u8,
                buf,
            }
        } else {
            Repr::Heap(Arc::from(bytes))
        };
        Key {
            repr,
            hash,
            public_len: public_len.min(u32::MAX as usize) as u32,
            path: (0, 0),
        }
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.repr {
            Repr::Inline { len, buf } => &buf[..*len as usize],
            Repr::Heap(bytes) => bytes,
        }
    }

    /// The key's length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the key is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the key holds outside its own inline size: a long key's shared
    /// buffer (counted once however many clones hold it), zero for a short
    /// one. For memory figures.
    #[cfg(any(feature = "dedup", feature = "registry"))]
    pub(crate) fn heap_bytes(&self) -> usize {
        match &self.repr {
            Repr::Inline { .. } => 0,
            // The bytes and the `Arc`'s two counts.
            Repr::Heap(bytes) => bytes.len() + 2 * std::mem::size_of::<usize>(),
        }
    }

    /// The request path this key was built from, when its key function marked
    /// it with [`KeyBuilder::path`] (as [`HttpKey`][crate::http::HttpKey]
    /// does). Used to invalidate cached entries by path or prefix.
    ///
    #[cfg_attr(
        not(feature = "http"),
        doc = "[crate::http::HttpKey]: crate#feature-flags"
    )]
    pub fn path(&self) -> Option<&[u8]> {
        let (start, end) = self.path;
        (end > start).then(|| &self.as_bytes()[start as usize..end as usize])
    }

    /// The precomputed hash (seeded per process; not stable across runs).
    pub fn hash_value(&self) -> u64 {
        self.hash
    }

    /// A builder that continues this key: its parts, its private mark and its
    /// marked path are kept, and parts pushed next come after them. The
    /// cache files `Vary` variants of a response under such keys, so that
    /// invalidating a path still finds them.
    #[cfg(any(test, feature = "cache"))]
    pub(crate) fn to_builder(&self) -> KeyBuilder {
        let len = self.len();
        KeyBuilder {
            buf: self.as_bytes().to_vec(),
            public_len: ((self.public_len as usize) < len).then_some(self.public_len as usize),
            path: self.path,
        }
    }

    /// A fingerprint of the key's bytes that is the same in every process
    /// and release (XXH3-64): an id to name the key by in logs, alerts and
    /// metrics without showing its bytes (which may hold credentials).
    ///
    /// ```
    /// use herdsman::Key;
    ///
    /// assert_eq!(Key::from("/a").fingerprint(), Key::from("/a").fingerprint());
    /// assert_ne!(Key::from("/a").fingerprint(), Key::from("/b").fingerprint());
    /// ```
    pub fn fingerprint(&self) -> u64 {
        crate::stable_hash::stable_hash(self.as_bytes())
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        // The hash is a shortcut for inequality only; equality is decided by
        // the full value.
        if self.hash != other.hash {
            return false;
        }
        match (&self.repr, &other.repr) {
            // Inline buffers are zero past `len`: compare them whole, which
            // compiles to a few vector compares instead of a `memcmp` call.
            (Repr::Inline { len: a, buf: x }, Repr::Inline { len: b, buf: y }) => {
                // XOR-OR, not `==` on arrays: LLVM turns that back into bcmp.
                let (x, y) = (words(x), words(y));
                a == b && x.iter().zip(&y).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
            }
            _ => self.as_bytes() == other.as_bytes(),
        }
    }
}

impl Eq for Key {}

/// An inline buffer as three words: comparing them is five loads and compares,
/// where a byte-array compare is a call to `memcmp`.
fn words(buf: &[u8; INLINE_CAP]) -> [u64; INLINE_CAP / 8] {
    std::array::from_fn(|i| {
        let mut word = [0; 8];
        word.copy_from_slice(&buf[i * 8..i * 8 + 8]);
        u64::from_ne_bytes(word)
    })
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.as_bytes();
        let public = &bytes[..(self.public_len as usize).min(bytes.len())];
        write!(f, "Key(\"{}\"", public.escape_ascii())?;
        let private = bytes.len() - public.len();
        if private > 0 {
            write!(f, " + {private} private bytes")?;
        }
        f.write_str(")")
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Self {
        Key::new(s)
    }
}

impl From<String> for Key {
    fn from(s: String) -> Self {
        Key::new(s)
    }
}

impl From<&[u8]> for Key {
    fn from(bytes: &[u8]) -> Self {
        Key::new(bytes)
    }
}

impl From<Vec<u8>> for Key {
    fn from(bytes: Vec<u8>) -> Self {
        Key::new(bytes)
    }
}

impl From<u64> for Key {
    fn from(n: u64) -> Self {
        Key::new(n.to_be_bytes())
    }
}

/// Builds a [`Key`] from several parts without ambiguity.
///
/// Each part is escaped and terminated, so `["ab", "c"]` and `["a", "bc"]`
/// give different keys. Parts pushed after [`private`](KeyBuilder::private)
/// are part of the key's identity but are redacted from its `Debug` output.
///
/// ```
/// use herdsman::key::Key;
///
/// let a = Key::builder().part("ab").part("c").build();
/// let b = Key::builder().part("a").part("bc").build();
/// assert_ne!(a, b);
///
/// let k = Key::builder().part("GET").private().part("Bearer secret").build();
/// assert!(!format!("{k:?}").contains("secret"));
/// ```
#[derive(Debug, Default, Clone)]
pub struct KeyBuilder {
    buf: Vec<u8>,
    public_len: Option<usize>,
    path: (u16, u16),
}

impl KeyBuilder {
    /// An empty builder (as [`Key::builder`]), usable in constants.
    #[cfg(feature = "http")]
    pub(crate) const fn new() -> Self {
        KeyBuilder {
            buf: Vec::new(),
            public_len: None,
            path: (0, 0),
        }
    }

    /// Appends one part.
    pub fn part(mut self, part: impl AsRef<[u8]>) -> Self {
        self.push(part.as_ref());
        self
    }

    /// Appends a header of `headers` in place: its name, how many values it
    /// has and each value, so that no two header sets make the same parts.
    /// HTTP keys and the Cache's `Vary` variants write headers this one way.
    #[cfg(feature = "cache")]
    pub(crate) fn push_header(&mut self, headers: &http::HeaderMap, name: &http::HeaderName) {
        let values = headers.get_all(name);
        self.push_values(name, values.iter().count(), values);
    }

    /// Appends a header of `headers` as [`push_header`](Self::push_header)
    /// does if it is present, and nothing if it is not: one map lookup for
    /// an absent header. For keys whose headers are each written with their
    /// name (HTTP keys), where leaving an absent one out is still
    /// unambiguous: the next part is another header's name, never a value.
    #[cfg(feature = "http")]
    pub(crate) fn push_present_header(
        &mut self,
        headers: &http::HeaderMap,
        name: &http::HeaderName,
    ) {
        let values = headers.get_all(name);
        let mut iter = values.iter();
        if iter.next().is_none() {
            return;
        }
        self.push_values(name, 1 + iter.count(), values);
    }

    #[cfg(any(feature = "cache", feature = "http"))]
    fn push_values(
        &mut self,
        name: &http::HeaderName,
        count: usize,
        values: http::header::GetAll<'_, http::HeaderValue>,
    ) {
        self.push(name.as_str().as_bytes());
        self.push_count(count);
        for value in values {
            self.push(value.as_bytes());
        }
    }

    /// Appends a count as one part: its decimal digits, which never need
    /// escaping.
    #[cfg(any(test, feature = "cache", feature = "http"))]
    pub(crate) fn push_count(&mut self, mut n: usize) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.buf.extend_from_slice(&digits[at..]);
        self.buf.push(0);
    }

    /// Appends one part in place.
    pub fn push(&mut self, part: &[u8]) {
        // Parts are terminated by 0, and 0 and 1 are escaped (`1 2`, `1 1`),
        // so that no two lists of parts make the same bytes. Copied in runs
        // between the bytes to escape, found a word at a time: in requests
        // (paths, header values) there are none.
        self.buf.reserve(part.len() + 1);
        let mut rest = part;
        while let Some(at) = find_separator(rest) {
            self.buf.extend_from_slice(&rest[..at]);
            self.buf
                .extend_from_slice(if rest[at] == 0 { &[1, 2] } else { &[1, 1] });
            rest = &rest[at + 1..];
        }
        self.buf.extend_from_slice(rest);
        self.buf.push(0);
    }

    /// Appends the request path as one part and remembers where it is
    /// ([`Key::path`]). An empty path, or one that would not start within the
    /// first 64 KiB of the key, is appended but not marked.
    pub fn path(&mut self, path: &[u8]) {
        let start = self.buf.len();
        self.push(path);
        let end = self.buf.len() - 1;
        if let (Ok(start), Ok(end)) = (u16::try_from(start), u16::try_from(end)) {
            if end > start && find_separator(path).is_none() {
                self.path = (start, end);
            }
        }
    }

    /// Marks the rest of the key as private (redacted in `Debug`).
    pub fn private(mut self) -> Self {
        self.mark_private();
        self
    }

    /// Marks the rest of the key as private, in place.
    pub fn mark_private(&mut self) {
        self.public_len.get_or_insert(self.buf.len());
    }

    /// Empties the builder, keeping its buffer, to build another key.
    #[cfg(feature = "http")]
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.public_len = None;
        self.path = (0, 0);
    }

    /// The bytes the builder's buffer holds without growing.
    #[cfg(feature = "http")]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Makes room for `additional` more bytes.
    #[cfg(feature = "http")]
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.buf.reserve(additional);
    }

    /// The key built so far, leaving the builder (and its buffer) as it
    /// is: one allocation, of the key's own size, for a key too long to be
    /// inline.
    #[cfg(feature = "http")]
    pub(crate) fn to_key(&self) -> Key {
        let public_len = self.public_len.unwrap_or(self.buf.len());
        Key {
            path: self.path,
            ..Key::with_public_len(&self.buf, public_len)
        }
    }

    /// The number of bytes the key will have.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no part has been pushed.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Finishes the key.
    pub fn build(self) -> Key {
        let public_len = self.public_len.unwrap_or(self.buf.len());
        match self.buf.len() {
            n if n <= INLINE_CAP => Key {
                path: self.path,
                ..Key::with_public_len(&self.buf, public_len)
            },
            _ => {
                let hash = hasher().hash_one(&self.buf[..]);
                Key {
                    repr: Repr::Heap(Arc::from(self.buf)),
                    hash,
                    public_len: public_len.min(u32::MAX as usize) as u32,
                    path: self.path,
                }
            }
        }
    }
}

/// A request's key, computed once and carried in its extensions, so that
/// the layers below read it ([`Carried`]) instead of computing it again.
///
/// `None` is an answer too: the request is not coordinated. Whoever changes
/// a request in a way that may change its key (its headers, its URI) after
/// the key was carried [`forget`][CarriedKey::forget]s it, and the layers
/// below compute the key again; the HTTP cache policy does when it takes a
/// caller's validators off a request or puts its own on.
///
#[cfg_attr(
    not(feature = "http"),
    doc = "[CarriedKey::forget]: crate#feature-flags"
)]
#[derive(Clone, Debug)]
pub struct CarriedKey {
    key: Option<Key>,
    /// Whether `key` is the request's (`false` once forgotten).
    known: bool,
}

impl CarriedKey {
    /// Carries `key`.
    pub fn new(key: Option<Key>) -> Self {
        CarriedKey { key, known: true }
    }

    /// The key carried (`None` also when it was forgotten).
    pub fn key(&self) -> Option<&Key> {
        self.key.as_ref().filter(|_| self.known)
    }

    /// Forgets the key carried in `extensions`, if any: the layers below
    /// compute the key again.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub fn forget(extensions: &mut http::Extensions) {
        if let Some(carried) = extensions.get_mut::<CarriedKey>() {
            carried.key = None;
            carried.known = false;
        }
    }
}

/// A key function that reads the key an `http::Request` carries in its
/// extensions ([`CarriedKey`]), and computes it with `K` only when it
/// carries none.
///
/// Put on every layer of a stack whose outermost service
/// [`carry`][Carried::carry]s the key, it makes one key computation per
/// request. The carried key must be the one `K` computes: carry it with
/// the same `K`.
///
/// ```
/// use herdsman::{http::HttpKey, key::{Carried, KeyFn}};
/// use http::Request;
///
/// let key = Carried::new(HttpKey::new());
/// let mut req = Request::get("http://api/users").body(()).unwrap();
/// let carried = key.carry(&mut req);
/// assert_eq!(key.key(&req), carried); // read back, not computed
/// ```
///
#[cfg_attr(not(feature = "http"), doc = "[Carried::carry]: crate#feature-flags")]
#[derive(Clone, Debug)]
pub struct Carried<K> {
    inner: K,
}

impl<K> Carried<K> {
    /// Reads carried keys; computes missing ones with `inner`.
    pub fn new(inner: K) -> Self {
        Carried { inner }
    }

    /// The key function that computes missing keys.
    pub fn get_ref(&self) -> &K {
        &self.inner
    }

    /// Computes the key of `req` with `K` and carries it in its extensions;
    /// returns it.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub fn carry<B>(&self, req: &mut http::Request<B>) -> Option<Key>
    where
        K: KeyFn<http::Request<B>>,
    {
        let key = self.inner.key(req);
        req.extensions_mut().insert(CarriedKey::new(key.clone()));
        key
    }
}

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
impl<B, K: KeyFn<http::Request<B>>> KeyFn<http::Request<B>> for Carried<K> {
    #[inline]
    fn key(&self, req: &http::Request<B>) -> Option<Key> {
        match req.extensions().get::<CarriedKey>() {
            Some(CarriedKey {
                key, known: true, ..
            }) => key.clone(),
            _ => self.inner.key(req),
        }
    }
}

/// Where the first byte of `bytes` that a part must escape (0 or 1) is.
fn find_separator(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut chunks = bytes.chunks_exact(8);
    let mut start = 0;
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_ne_bytes(word);
        // Sets a byte's high bit where a byte of `word` is below 2, and only
        // if one is ("has less than" in Anderson's bit twiddling hacks).
        if word.wrapping_sub(2 * ONES) & !word & HIGH != 0 {
            return chunk.iter().position(|&b| b <= 1).map(|at| start + at);
        }
        start += 8;
    }
    let rest = chunks.remainder();
    rest.iter().position(|&b| b <= 1).map(|at| start + at)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The parts' bytes as the builder wrote them before it copied runs: 0
    /// and 1 escaped byte by byte, each part terminated by 0.
    fn reference(parts: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            for &b in part {
                match b {
                    0 => out.extend_from_slice(&[1, 2]),
                    1 => out.extend_from_slice(&[1, 1]),
                    b => out.push(b),
                }
            }
            out.push(0);
        }
        out
    }

    fn built(parts: &[Vec<u8>]) -> Key {
        let mut key = Key::builder();
        for part in parts {
            key.push(part);
        }
        key.build()
    }

    /// Parts of a few bytes, separators among them more often than by chance.
    fn parts() -> impl Strategy<Value = Vec<Vec<u8>>> {
        let byte = prop_oneof![Just(0u8), Just(1u8), Just(2u8), any::<u8>()];
        prop::collection::vec(prop::collection::vec(byte, 0..40), 0..6)
    }

    proptest! {
        #[test]
        fn parts_are_written_as_the_byte_by_byte_escaping_did(parts in parts()) {
            let key = built(&parts);
            prop_assert_eq!(key.as_bytes(), &reference(&parts)[..]);
        }

        #[test]
        fn different_lists_of_parts_never_make_the_same_key(a in parts(), b in parts()) {
            prop_assert_eq!(a == b, built(&a) == built(&b));
        }

        #[test]
        fn the_first_byte_to_escape_is_found_in_any_position(
            bytes in prop::collection::vec(2u8.., 0..40),
            at in 0usize..40,
            separator in 0u8..2,
        ) {
            let mut bytes = bytes;
            prop_assert_eq!(find_separator(&bytes), None);
            let at = at.min(bytes.len());
            bytes.insert(at, separator);
            prop_assert_eq!(find_separator(&bytes), Some(at));
        }
    }

    #[test]
    fn counts_are_written_in_decimal() {
        let (mut key, mut expected) = (Key::builder(), Vec::new());
        for n in [0, 7, 10, 1234, usize::MAX] {
            key.push_count(n);
            expected.extend_from_slice(n.to_string().as_bytes());
            expected.push(0);
        }
        assert_eq!(key.build().as_bytes(), &expected[..]);
    }

    #[test]
    fn keys_compare_by_full_value_not_by_hash() {
        let a = Key::new("a");
        let mut forged = Key::new("b");
        forged.hash = a.hash;
        assert_ne!(a, forged);
    }

    #[test]
    fn short_and_long_keys_round_trip() {
        for len in [0, 1, INLINE_CAP, INLINE_CAP + 1, 10_000] {
            let bytes = vec![7u8; len];
            let key = Key::new(&bytes);
            assert_eq!(key.as_bytes(), &bytes[..]);
            assert_eq!(key.len(), len);
            assert_eq!(key.clone(), key);
        }
    }

    #[test]
    fn builder_matches_new_for_the_same_bytes() {
        let built = Key::builder().part("abc").build();
        assert_eq!(built, Key::new(b"abc\0"));
        let long = Key::builder().part("x".repeat(100)).build();
        assert_eq!(long.len(), 101);
    }

    #[test]
    fn builder_escapes_separators() {
        let a = Key::builder().part([0u8]).part("").build();
        let b = Key::builder().part("").part([0u8]).build();
        assert_ne!(a, b);
        let c = Key::builder().part([1u8, 2]).build();
        let d = Key::builder().part([0u8]).build();
        assert_ne!(c, d);
    }

    #[test]
    fn a_marked_path_can_be_read_back() {
        let mut b = Key::builder().part("GET");
        b.path(b"/api/boards/1");
        let key = b.part("q=1").build();
        assert_eq!(key.path(), Some(&b"/api/boards/1"[..]));
        assert_eq!(Key::new("x").path(), None);
        let mut long = Key::builder().part("x".repeat(100));
        long.path(b"/p");
        assert_eq!(long.build().path(), Some(&b"/p"[..]));
    }

    #[test]
    fn a_continued_key_keeps_its_path_and_private_mark() {
        let mut b = Key::builder().part("GET");
        b.path(b"/p");
        let key = b.private().part("secret").build();
        let longer = key.to_builder().part("more").build();
        assert_eq!(longer.path(), Some(&b"/p"[..]));
        assert_ne!(longer, key);
        assert!(longer.as_bytes().starts_with(key.as_bytes()));
        assert!(!format!("{longer:?}").contains("secret"));
        let public = Key::builder().part("GET").build();
        let mut more = public.to_builder();
        more.mark_private();
        let shown = format!("{:?}", more.part("hidden").build());
        assert!(
            shown.contains("GET") && !shown.contains("hidden"),
            "{shown}"
        );
    }

    #[test]
    fn a_redacted_key_shows_none_of_its_bytes() {
        let key = Key::redacted("authorization\0Bearer hunter2\0");
        assert_eq!(format!("{key:?}"), "Key(\"\" + 29 private bytes)");
        assert_eq!(key, Key::redacted("authorization\0Bearer hunter2\0"));
        assert_ne!(key, Key::redacted("authorization\0Bearer hunter3\0"));
    }

    #[test]
    fn debug_redacts_private_parts() {
        let key = Key::builder()
            .part("GET")
            .private()
            .part("Bearer hunter2")
            .build();
        let shown = format!("{key:?}");
        assert!(shown.contains("GET"));
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("private bytes"));
    }

    #[cfg(feature = "http")]
    #[test]
    fn a_forgotten_key_is_computed_again() {
        // A key function that tells its keys apart from carried ones.
        let computed = Carried::new(|_: &http::Request<()>| Some(Key::new(b"computed")));
        let mut req = http::Request::new(());
        let carried = CarriedKey::new(Some(Key::new(b"carried")));
        req.extensions_mut().insert(carried);
        assert_eq!(computed.key(&req), Some(Key::new(b"carried")));

        CarriedKey::forget(req.extensions_mut());
        assert_eq!(computed.key(&req), Some(Key::new(b"computed")));
        let entry = req.extensions().get::<CarriedKey>().expect("still carried");
        assert_eq!(entry.key(), None);
    }
}
