//! One poll loop per key across replicas: [`RedisLoops`].

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, Weak,
    },
    time::Duration,
};

use herdsman::{
    backend::{Answer, LoopBackend, Role},
    key::Key,
};
use tokio::sync::{broadcast, oneshot};

use crate::conn::{Message, Redis, LOOPS};

/// Claims a key's poll loop for a round, or renews this replica's claim;
/// answers `{1}` when this replica polls, `{0, ms left of the holder's
/// claim}` otherwise. KEYS: the claim. ARGV: token, claim length (ms).
const CLAIM: &str = "local holder = redis.call('GET', KEYS[1]) \
    if holder == false or holder == ARGV[1] then \
      redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return {1} end \
    return {0, redis.call('PTTL', KEYS[1])}";

/// Gives up a claim if it is still this replica's. KEYS: the claim. ARGV:
/// token.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    return redis.call('DEL', KEYS[1]) end return 0";

/// Which replica polls each key of a registry, and the fan-out of its
/// changes, on Redis (see [`LoopBackend`]).
///
/// - Each round, a key's loop claims the key with a Lua script: the claim
///   (`<prefix>loop:<key>`, this replica's token) is taken when free,
///   renewed when it is this replica's, and lasts the round's interval
///   plus [`loop_lease`](crate::RedisSettings::loop_lease). The holder
///   polls; the others follow until the holder's claim ends, so a poller
///   that died is replaced within one interval plus `loop_lease`.
/// - The holder publishes each change on the prefix's `loops` channel; the
///   followers' [`changed`](LoopBackend::changed) futures complete, and
///   they fetch through their own stack (with a shared cache, the holder's
///   answer).
/// - A loop that ends gives its claim up at once.
///
/// When Redis cannot be reached, every replica polls on its own.
pub struct RedisLoops {
    shared: Arc<Shared>,
}

struct Shared {
    redis: Redis,
    /// This backend's claims' token: the same every round, so that a
    /// claim is renewed rather than contested.
    token: [u8; 16],
    /// The followers waiting for a change, by key.
    waiting: Mutex<HashMap<Key, Vec<Waiter>>>,
    next_waiter: AtomicU64,
}

/// A follower waiting for a change: its id, and where its notice goes.
type Waiter = (u64, oneshot::Sender<()>);

impl RedisLoops {
    /// Loops on `redis`. Must be called within a tokio runtime.
    pub fn new(redis: Redis) -> Self {
        let messages = redis.messages();
        let channel = redis.channel(LOOPS);
        let shared = Arc::new(Shared {
            token: redis.token(),
            redis,
            waiting: Mutex::default(),
            next_waiter: AtomicU64::new(0),
        });
        tokio::spawn(dispatch(Arc::downgrade(&shared), messages, channel));
        RedisLoops { shared }
    }
}

impl Shared {
    fn claim_of(&self, key: &Key) -> Vec<u8> {
        self.redis.name("loop", key.as_bytes())
    }

    async fn claim(&self, key: &Key, interval: Duration) -> Role {
        let length = interval + self.redis.settings().loop_lease;
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(CLAIM)
            .arg(1)
            .arg(self.claim_of(key))
            .arg(&self.token[..])
            .arg(length.as_millis() as u64);
        let mut manager = self.redis.manager();
        match self
            .redis
            .run(cmd.query_async::<Vec<i64>>(&mut manager))
            .await
        {
            Some(answer) => match answer[..] {
                [0, left] if left > 0 => Role::Follow {
                    for_at_most: Duration::from_millis(left as u64),
                },
                // Held without an expiry (not by us), or gone meanwhile.
                [0, _] => Role::Follow {
                    for_at_most: length,
                },
                _ => Role::Poll,
            },
            None => Role::Poll,
        }
    }
}

/// Completes the followers' `changed` futures on each other replica's
/// change notice.
async fn dispatch(
    shared: Weak<Shared>,
    mut messages: broadcast::Receiver<Message>,
    channel: Vec<u8>,
) {
    loop {
        let message = match messages.recv().await {
            Ok(message) => message,
            // A lost notice costs a follower one claim period of staleness.
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if message.channel != channel || message.payload.len() < 24 {
            continue;
        }
        let (origin, key) = message.payload.split_at(16);
        if origin == shared.token {
            continue;
        }
        // The fingerprint (8 bytes) is for the reader of the channel.
        let key = Key::new(&key[8..]);
        let waiters = shared.waiting.lock().unwrap().remove(&key);
        for (_, waiter) in waiters.into_iter().flatten() {
            let _ = waiter.send(());
        }
    }
}

/// A follower's wait for a change; leaves the waiters when dropped.
struct Change {
    shared: Arc<Shared>,
    key: Key,
    id: u64,
    notice: oneshot::Receiver<()>,
}

impl Drop for Change {
    fn drop(&mut self) {
        let mut waiting = self.shared.waiting.lock().unwrap();
        if let Some(list) = waiting.get_mut(&self.key) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                waiting.remove(&self.key);
            }
        }
    }
}

impl LoopBackend for RedisLoops {
    fn claim(&self, key: &Key, interval: Duration) -> Answer<Role> {
        let (shared, key) = (self.shared.clone(), key.clone());
        Answer::Later(Box::pin(async move { shared.claim(&key, interval).await }))
    }

    fn announce(&self, key: &Key, fingerprint: u64) {
        let mut payload = Vec::with_capacity(24 + key.len());
        payload.extend_from_slice(&self.shared.token);
        payload.extend_from_slice(&fingerprint.to_be_bytes());
        payload.extend_from_slice(key.as_bytes());
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let redis = &shared.redis;
            let mut cmd = redis::cmd("PUBLISH");
            cmd.arg(redis.channel(LOOPS)).arg(payload);
            let mut manager = redis.manager();
            redis.run(cmd.query_async::<()>(&mut manager)).await;
        });
    }

    fn changed(&self, key: &Key) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        // Registered now, not when first polled: a notice that comes in
        // between is not lost.
        let id = self.shared.next_waiter.fetch_add(1, Ordering::Relaxed);
        let (tx, notice) = oneshot::channel();
        let mut waiting = self.shared.waiting.lock().unwrap();
        waiting.entry(key.clone()).or_default().push((id, tx));
        drop(waiting);
        let mut change = Change {
            shared: self.shared.clone(),
            key: key.clone(),
            id,
            notice,
        };
        Box::pin(async move {
            if (&mut change.notice).await.is_err() {
                // The backend is gone: no notice will come.
                std::future::pending::<()>().await;
            }
        })
    }

    fn release(&self, key: &Key) {
        let shared = self.shared.clone();
        let claim = shared.claim_of(key);
        tokio::spawn(async move {
            let redis = &shared.redis;
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(RELEASE).arg(1).arg(claim).arg(&shared.token[..]);
            let mut manager = redis.manager();
            redis.run(cmd.query_async::<()>(&mut manager)).await;
        });
    }
}

impl Clone for RedisLoops {
    fn clone(&self) -> Self {
        RedisLoops {
            shared: self.shared.clone(),
        }
    }
}

impl fmt::Debug for RedisLoops {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLoops")
            .field("redis", &self.shared.redis)
            .finish_non_exhaustive()
    }
}
