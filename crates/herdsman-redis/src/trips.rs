//! Circuit breaker trips shared across replicas: [`RedisTrips`].

use std::{
    fmt,
    sync::{Arc, Mutex, PoisonError, Weak},
    time::Duration,
};

use herdsman::{
    backend::{TripBackend, TripListener},
    class::Class,
};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::conn::{Message, Redis, TRIPS};

/// Trip keys read at once by a replica that starts listening.
const SCAN_COUNT: u64 = 256;

/// Breaker trips shared across replicas on Redis (see [`TripBackend`]),
/// for herdsman's `BreakerLayer::with_trip_backend`.
///
/// A trip of this replica's breaker of a class is published on the
/// prefix's `trips` channel (this replica's id, the open time, the class)
/// and kept under `<prefix>trip:<class>` for its open time (`PX`), in one
/// pipeline sent in the background. Every replica hands the trips it hears
/// from the others to its breakers, which open for the time the trip has
/// left; a replica that starts listening while a trip lasts finds it under
/// its key (one `SCAN` of the trip keys, then their `PTTL`s).
///
/// Trips are best effort: while Redis is away none is shared, and each
/// replica's breakers trip on their own, as without Redis.
///
/// ```no_run
/// use herdsman::breaker::BreakerLayer;
/// use herdsman_redis::{Redis, RedisSettings, RedisTrips};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = Redis::new(RedisSettings::new("redis://127.0.0.1:6379"))?;
/// let breaker = BreakerLayer::new().with_trip_backend(RedisTrips::new(redis));
/// # let _ = breaker;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisTrips {
    shared: Arc<Shared>,
}

struct Shared {
    redis: Redis,
    listeners: Mutex<Vec<TripListener>>,
}

impl RedisTrips {
    /// Trips shared on `redis`. Must be called within a tokio runtime.
    pub fn new(redis: Redis) -> Self {
        let messages = redis.messages();
        let channel = redis.channel(TRIPS);
        let shared = Arc::new(Shared {
            redis,
            listeners: Mutex::default(),
        });
        tokio::spawn(dispatch(Arc::downgrade(&shared), messages, channel));
        RedisTrips { shared }
    }
}

impl Shared {
    fn key_of(&self, class: &[u8]) -> Vec<u8> {
        self.redis.name("trip", class)
    }

    /// Hands a trip of another replica to every listener; drops the ones
    /// whose breakers are gone.
    fn deliver(&self, class: &Class, open_for: Duration) {
        let listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut gone = Vec::new();
        for listener in &listeners {
            if !listener(class, open_for) {
                gone.push(Arc::as_ptr(listener));
            }
        }
        if !gone.is_empty() {
            let mut all = self
                .listeners
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            all.retain(|l| !gone.contains(&Arc::as_ptr(l)));
        }
    }

    /// The trips kept in Redis now, with the time each has left: for a
    /// listener that starts while they last.
    async fn current(&self) -> Vec<(Class, Duration)> {
        let mut manager = self.redis.manager();
        let pattern = {
            let mut pattern = glob_escaped(&self.key_of(b""));
            pattern.push(b'*');
            pattern
        };
        let prefix_len = self.key_of(b"").len();
        let (mut cursor, mut found) = (0u64, Vec::new());
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT);
            let Some((next, keys)) = self
                .redis
                .run(scan.query_async::<(u64, Vec<Vec<u8>>)>(&mut manager))
                .await
            else {
                return found;
            };
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("GET").arg(key).cmd("PTTL").arg(key);
            }
            let answers: Vec<(Option<Vec<u8>>, i64)> = if keys.is_empty() {
                Vec::new()
            } else {
                let Some(answers) = self.redis.run(pipe.query_async(&mut manager)).await else {
                    return found;
                };
                answers
            };
            for (key, (replica, left)) in keys.iter().zip(answers) {
                let own = replica.as_deref() == Some(&self.redis.replica().to_be_bytes()[..]);
                if !own && left > 0 {
                    let class = Class::new(String::from_utf8_lossy(&key[prefix_len..]));
                    found.push((class, Duration::from_millis(left as u64)));
                }
            }
            if next == 0 {
                return found;
            }
            cursor = next;
        }
    }
}

/// `name` with the glob characters of `SCAN MATCH` escaped.
fn glob_escaped(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for &b in name {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// Hands the trips other replicas publish to this replica's listeners.
async fn dispatch(
    shared: Weak<Shared>,
    mut messages: broadcast::Receiver<Message>,
    channel: Vec<u8>,
) {
    loop {
        let message = match messages.recv().await {
            Ok(message) => message,
            // A lost trip: that replica's breakers trip on their own.
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if message.channel != channel {
            continue;
        }
        let Some((replica, open_for, class)) = decode_trip(&message.payload) else {
            continue;
        };
        if replica != shared.redis.replica() {
            shared.deliver(&Class::new(String::from_utf8_lossy(class)), open_for);
        }
    }
}

fn encode_trip(replica: u64, open_for: Duration, class: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(16 + class.len());
    message.extend_from_slice(&replica.to_be_bytes());
    message.extend_from_slice(&(open_for.as_millis() as u64).to_be_bytes());
    message.extend_from_slice(class);
    message
}

fn decode_trip(message: &[u8]) -> Option<(u64, Duration, &[u8])> {
    let replica = u64::from_be_bytes(message.get(..8)?.try_into().ok()?);
    let ms = u64::from_be_bytes(message.get(8..16)?.try_into().ok()?);
    Some((replica, Duration::from_millis(ms), &message[16..]))
}

impl TripBackend for RedisTrips {
    fn announce(&self, class: &Class, open_for: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = self.shared.clone();
        let name = class.as_str().as_bytes();
        let replica = shared.redis.replica();
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(shared.key_of(name))
            .arg(&replica.to_be_bytes()[..])
            .arg("PX")
            .arg((open_for.as_millis() as u64).max(1))
            .ignore()
            .cmd("PUBLISH")
            .arg(shared.redis.channel(TRIPS))
            .arg(encode_trip(replica, open_for, name))
            .ignore();
        runtime.spawn(async move {
            let mut manager = shared.redis.manager();
            // Lost while Redis is away: each replica trips on its own.
            shared.redis.run(pipe.query_async::<()>(&mut manager)).await;
        });
    }

    fn listen(&self, listener: TripListener) {
        self.shared
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(listener.clone());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = self.shared.clone();
        runtime.spawn(async move {
            for (class, left) in shared.current().await {
                if !listener(&class, left) {
                    return;
                }
            }
        });
    }
}

impl fmt::Debug for RedisTrips {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTrips")
            .field("redis", &self.shared.redis)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_round_trip() {
        let message = encode_trip(7, Duration::from_millis(1500), b"active-users");
        assert_eq!(
            decode_trip(&message),
            Some((7, Duration::from_millis(1500), &b"active-users"[..]))
        );
        assert!(decode_trip(&message[..15]).is_none());
    }

    #[test]
    fn scan_patterns_escape_glob_characters() {
        assert_eq!(glob_escaped(b"{h}:[a]*?:trip:"), b"{h}:\\[a\\]\\*\\?:trip:");
    }
}
