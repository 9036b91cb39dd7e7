//! The shared second-level cache: [`RedisStore`].

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use herdsman::{
    backend::{Answer, RemoteInvalidations, Shelved, StoreBackend},
    class::Class,
    event::Invalidation,
    key::Key,
};
use tokio::sync::{broadcast, mpsc};

use crate::{
    codec::Codec,
    conn::{Message, Redis, INVALIDATIONS},
};

/// Writes an entry stamped with the current generation of broad
/// invalidations, atomically (so that an invalidation cannot fall between
/// reading the generation and writing the entry).
const INSERT: &str = "local g = redis.call('GET', KEYS[2]) or '0' \
    redis.call('SET', KEYS[1], g .. ':' .. ARGV[1], 'PX', ARGV[2])";

/// The most bytes of entries waiting to be written; past it, new entries
/// are not written through (invalidations always are).
const MAX_QUEUED_BYTES: u64 = 16 << 20;

/// The most writes sent in one pipeline.
const BATCH: usize = 64;

/// A cache store in Redis, behind each replica's own (the cache layer's
/// L2; see [`StoreBackend`]).
///
/// - Each entry is one Redis string under the key prefix, `cache:` and
///   the full key (auth partition and `Vary` variant included), expiring
///   (`PX`) when it stops being fresh. A lookup is one round trip.
/// - Writes (entries, invalidations) never wait: they are queued and sent
///   in the background in order, pipelined. While the queue holds more
///   than 16 MiB of entries, new entries are not written through.
/// - An invalidation of one key deletes it. A broader one (a class, a path,
///   a prefix, everything) cannot find its keys in Redis, whose keys do not
///   carry their class: it bumps a generation that every entry is stamped
///   with, so that it drops the whole shared store at once. Each
///   invalidation is also published, for the other replicas' own stores
///   ([`invalidations`](Self::invalidations)).
/// - Until its invalidations have reached Redis (retried until they do),
///   this replica answers every lookup with a miss: it never answers from
///   Redis what it invalidated.
/// - Every Redis operation runs under the operation timeout; a failed or
///   late lookup is a miss, so a request never fails because of Redis.
pub struct RedisStore<C> {
    shared: Arc<Shared>,
    codec: C,
}

struct Shared {
    redis: Redis,
    writes: mpsc::UnboundedSender<Write>,
    queued_bytes: AtomicU64,
    pending_invalidations: AtomicUsize,
    generation: Vec<u8>,
    /// The flight generation ([`RedisFlights`](crate::RedisFlights)),
    /// bumped with each invalidation.
    flights: Vec<u8>,
}

enum Write {
    Entry {
        name: Vec<u8>,
        bytes: Vec<u8>,
        px: u64,
    },
    Invalidation {
        /// The entry to delete, for an invalidation of one key.
        name: Option<Vec<u8>>,
        message: Vec<u8>,
    },
}

impl<C> RedisStore<C> {
    /// A store on `redis`, encoding values with `codec`. Must be called
    /// within a tokio runtime.
    pub fn new(redis: Redis, codec: C) -> Self {
        let (writes, queue) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            generation: redis.name("cache-generation", b""),
            flights: crate::flights::flight_generation(&redis),
            redis,
            writes,
            queued_bytes: AtomicU64::new(0),
            pending_invalidations: AtomicUsize::new(0),
        });
        tokio::spawn(write_behind(Arc::downgrade(&shared), queue));
        RedisStore { shared, codec }
    }

    /// The invalidations that other replicas' stores publish, to apply to
    /// this replica's own store and registry.
    pub fn invalidations(&self) -> Invalidations {
        Invalidations {
            messages: self.shared.redis.messages(),
            channel: self.shared.redis.channel(INVALIDATIONS),
            replica: self.shared.redis.replica(),
        }
    }

    fn entry_name(&self, key: &Key) -> Vec<u8> {
        self.shared.redis.name("cache", key.as_bytes())
    }
}

impl<V, C> StoreBackend<V> for RedisStore<C>
where
    C: Codec<V>,
    V: Send + 'static,
{
    fn lookup(&self, key: &Key) -> Answer<Option<Shelved<V>>> {
        if self.shared.pending_invalidations.load(Ordering::Acquire) > 0 {
            return Answer::Now(None);
        }
        let name = self.entry_name(key);
        let (shared, codec) = (self.shared.clone(), self.codec.clone());
        Answer::Later(Box::pin(async move {
            let mut manager = shared.redis.manager();
            let mut pipe = redis::pipe();
            pipe.get(&name).pttl(&name).get(&shared.generation);
            let (entry, pttl, generation): (Option<Vec<u8>>, i64, Option<Vec<u8>>) =
                shared.redis.run(pipe.query_async(&mut manager)).await?;
            let remaining = Duration::from_millis(u64::try_from(pttl).ok()?);
            shelved(&entry?, generation.as_deref(), remaining, &codec)
        }))
    }

    fn insert(&self, key: &Key, value: &V, age: Duration, ttl: Duration) {
        let Some(remaining) = ttl.checked_sub(age).filter(|r| r.as_millis() > 0) else {
            return;
        };
        let shared = &self.shared;
        if shared.queued_bytes.load(Ordering::Relaxed) > MAX_QUEUED_BYTES {
            return;
        }
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let mut bytes = ttl_ms.to_be_bytes().to_vec();
        if !self.codec.encode(value, &mut bytes) {
            return;
        }
        shared
            .queued_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let px = u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX);
        let name = self.entry_name(key);
        let _ = shared.writes.send(Write::Entry { name, bytes, px });
    }

    fn invalidate(&self, what: &Invalidation) {
        let name = match what {
            Invalidation::Key(key) => Some(self.entry_name(key)),
            _ => None,
        };
        let message = encode_invalidation(self.shared.redis.replica(), what);
        self.shared
            .pending_invalidations
            .fetch_add(1, Ordering::AcqRel);
        let _ = self
            .shared
            .writes
            .send(Write::Invalidation { name, message });
    }

    fn memory_bytes(&self) -> u64 {
        self.shared.queued_bytes.load(Ordering::Relaxed)
    }

    fn remote_invalidations(&self) -> Option<Box<dyn RemoteInvalidations>> {
        Some(Box::new(self.invalidations()))
    }
}

/// The response an entry holds, if it is of the current generation and
/// decodes.
fn shelved<V, C: Codec<V>>(
    entry: &[u8],
    generation: Option<&[u8]>,
    remaining: Duration,
    codec: &C,
) -> Option<Shelved<V>> {
    let split = entry.iter().position(|&b| b == b':')?;
    let (stamp, rest) = (&entry[..split], &entry[split + 1..]);
    if stamp != generation.unwrap_or(b"0") || rest.len() < 8 {
        return None;
    }
    let ttl_ms = u64::from_be_bytes(rest[..8].try_into().ok()?);
    let ttl = Duration::from_millis(ttl_ms);
    let age = ttl.checked_sub(remaining)?;
    if age >= ttl {
        return None;
    }
    let value = codec.decode(&rest[8..])?;
    Some(Shelved { value, age, ttl })
}

/// Sends the queued writes, in order, pipelined by batches; retries a
/// batch holding invalidations until Redis takes it.
async fn write_behind(shared: std::sync::Weak<Shared>, mut queue: mpsc::UnboundedReceiver<Write>) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut delay = Duration::from_millis(50);
        loop {
            let sent = send(&shared, &batch).await;
            let entries: u64 = batch
                .iter()
                .map(|w| match w {
                    Write::Entry { bytes, .. } => bytes.len() as u64,
                    Write::Invalidation { .. } => 0,
                })
                .sum();
            shared.queued_bytes.fetch_sub(entries, Ordering::Relaxed);
            if sent {
                break;
            }
            // Entries are dropped; invalidations are sent again, since until
            // they are, this replica's lookups miss.
            batch.retain(|w| matches!(w, Write::Invalidation { .. }));
            if batch.is_empty() {
                break;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
        let invalidations = batch
            .iter()
            .filter(|w| matches!(w, Write::Invalidation { .. }))
            .count();
        shared
            .pending_invalidations
            .fetch_sub(invalidations, Ordering::AcqRel);
        batch.clear();
    }
}

/// Sends one batch as one pipeline; whether Redis took it all.
async fn send(shared: &Shared, batch: &[Write]) -> bool {
    let redis = &shared.redis;
    let channel = redis.channel(INVALIDATIONS);
    let mut pipe = redis::pipe();
    for write in batch {
        match write {
            Write::Entry { name, bytes, px } => {
                pipe.cmd("EVAL")
                    .arg(INSERT)
                    .arg(2)
                    .arg(name)
                    .arg(&shared.generation)
                    .arg(bytes)
                    .arg(px)
                    .ignore();
            }
            Write::Invalidation { name, message } => {
                match name {
                    Some(name) => pipe.del(name).ignore(),
                    None => pipe.incr(&shared.generation, 1).ignore(),
                };
                // Before the publication: a replica that hears it and asks
                // for a flight lease finds no finished lease from before.
                pipe.incr(&shared.flights, 1).ignore();
                pipe.publish(&channel, message).ignore();
            }
        }
    }
    let mut manager = redis.manager();
    redis
        .run(pipe.query_async::<()>(&mut manager))
        .await
        .is_some()
}

fn encode_invalidation(replica: u64, what: &Invalidation) -> Vec<u8> {
    let (tag, bytes): (u8, &[u8]) = match what {
        Invalidation::Key(key) => (0, key.as_bytes()),
        Invalidation::Class(class) => (1, class.as_str().as_bytes()),
        Invalidation::Path(path) => (2, path.as_bytes()),
        Invalidation::Prefix(prefix) => (3, prefix.as_bytes()),
        _ => (4, b""),
    };
    let mut message = Vec::with_capacity(9 + bytes.len());
    message.extend_from_slice(&replica.to_be_bytes());
    message.push(tag);
    message.extend_from_slice(bytes);
    message
}

/// The origin and invalidation a message encodes.
fn decode_invalidation(message: &[u8]) -> Option<(u64, Invalidation)> {
    if message.len() < 9 {
        return None;
    }
    let origin = u64::from_be_bytes(message[..8].try_into().ok()?);
    let rest = &message[9..];
    let text = || std::str::from_utf8(rest).ok().map(Arc::<str>::from);
    let what = match message[8] {
        0 => Invalidation::Key(Key::new(rest)),
        1 => Invalidation::Class(Class::new(std::str::from_utf8(rest).ok()?)),
        2 => Invalidation::Path(text()?),
        3 => Invalidation::Prefix(text()?),
        4 => Invalidation::All,
        _ => return None,
    };
    Some((origin, what))
}

/// The invalidations other replicas publish, as this one receives them
/// (see [`RedisStore::invalidations`]).
///
/// Best effort: what is published while this replica is disconnected, or
/// more than 1,024 messages behind, is lost (the entries then live out
/// their freshness). A key of an invalidation arrives as its bytes (its
/// marked path is not carried: match it by equality).
pub struct Invalidations {
    messages: broadcast::Receiver<Message>,
    channel: Vec<u8>,
    replica: u64,
}

impl Invalidations {
    /// The next invalidation of another replica; `None` once the
    /// connection is gone.
    pub async fn recv(&mut self) -> Option<Invalidation> {
        loop {
            let message = match self.messages.recv().await {
                Ok(message) => message,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(lost = n, "missed invalidations from other replicas");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            if message.channel != self.channel {
                continue;
            }
            match decode_invalidation(&message.payload) {
                Some((origin, what)) if origin != self.replica => return Some(what),
                _ => continue,
            }
        }
    }
}

impl RemoteInvalidations for Invalidations {
    fn next(&mut self) -> Pin<Box<dyn Future<Output = Option<Invalidation>> + Send + '_>> {
        Box::pin(self.recv())
    }
}

impl fmt::Debug for Invalidations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invalidations").finish_non_exhaustive()
    }
}

impl<C: Clone> Clone for RedisStore<C> {
    fn clone(&self) -> Self {
        RedisStore {
            shared: self.shared.clone(),
            codec: self.codec.clone(),
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for RedisStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("redis", &self.shared.redis)
            .field("codec", &self.codec)
            .field("queued_bytes", &self.shared.queued_bytes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::PlainCodec;

    #[test]
    fn invalidations_round_trip_with_their_origin() {
        for what in [
            Invalidation::Key(Key::from("/a?b")),
            Invalidation::Class(Class::new("users")),
            Invalidation::Path("/a".into()),
            Invalidation::Prefix("/a/".into()),
            Invalidation::All,
        ] {
            let message = encode_invalidation(7, &what);
            assert_eq!(decode_invalidation(&message), Some((7, what)));
        }
        assert_eq!(decode_invalidation(&[0; 8]), None);
    }

    #[test]
    fn an_entry_answers_only_in_its_generation_and_while_fresh() {
        let mut entry = b"3:".to_vec();
        entry.extend_from_slice(&1000u64.to_be_bytes());
        PlainCodec.encode(&"v".to_string(), &mut entry);
        let remaining = Duration::from_millis(400);

        let found: Shelved<String> = shelved(&entry, Some(b"3"), remaining, &PlainCodec).unwrap();
        assert_eq!(found.value, "v");
        assert_eq!(found.age, Duration::from_millis(600));
        assert_eq!(found.ttl, Duration::from_secs(1));

        let stale = shelved::<String, _>(&entry, Some(b"4"), remaining, &PlainCodec);
        assert!(stale.is_none(), "another generation");
        let long = Duration::from_secs(2);
        assert!(shelved::<String, _>(&entry, Some(b"3"), long, &PlainCodec).is_none());
        assert!(shelved::<String, _>(&entry[..9], Some(b"3"), remaining, &PlainCodec).is_none());
    }
}
