//! Single-flight across replicas: [`RedisFlights`].

use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, Weak,
    },
    time::Duration,
};

use herdsman::{
    backend::{Answer, FlightBackend, Lead},
    key::Key,
};
use tokio::{sync::mpsc, time::Instant};

use crate::{
    codec::Codec,
    conn::{Message, Redis, FLIGHTS},
};

/// Ends a flight: leaves the lease naming the finished holder with its
/// value for a few seconds (or releases it when there is no value), and
/// tells the other replicas. The finished lease is
/// `<token>=<flight generation>:<value>`.
/// KEYS: lease, flight generation. ARGV: token, result expiry (ms),
/// channel, message, value (absent when there is none).
///
/// A lease that ran out before its holder ended is taken again with the
/// value if it is free, and left alone if another replica holds it.
const FINISH: &str = "local holder = redis.call('GET', KEYS[1]) \
    local finished = false \
    if ARGV[5] and (holder == ARGV[1] or not holder) then \
        local generation = redis.call('GET', KEYS[2]) or '0' \
        finished = ARGV[1] .. '=' .. generation .. ':' .. ARGV[5] \
    end \
    if finished then redis.call('SET', KEYS[1], finished, 'PX', ARGV[2]) \
    elseif holder == ARGV[1] then redis.call('DEL', KEYS[1]) end \
    return redis.call('PUBLISH', ARGV[3], ARGV[4])";

/// Asks for a lease: answers the holder's lease (running, or finished
/// with a value), or takes it and answers nothing. A finished lease of an
/// older flight generation (a cache invalidation came since) is taken.
/// KEYS: lease, flight generation. ARGV: token, lease (ms).
const CLAIM: &str = "local holder = redis.call('GET', KEYS[1]) \
    if holder and string.byte(holder, 17) == 61 then \
        local stamp = (redis.call('GET', KEYS[2]) or '0') .. ':' \
        if string.sub(holder, 18, 17 + string.len(stamp)) ~= stamp then holder = false end \
    end \
    if holder then return holder end \
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) \
    return false";

/// After the holder's token in a finished lease, before its value.
const FINISHED: u8 = b'=';

/// Leases held at once before the expired ones are looked for.
const MAX_HELD: usize = 1024;

/// Single-flight across replicas on Redis (see [`FlightBackend`]).
///
/// The local leader of a key's call (one per replica: the `Dedup` layer
/// coalesces within the process) asks for a lease with an owner token, in
/// one Lua script that takes it (`SET PX`) when it is free and otherwise
/// answers who holds it:
///
/// - granted: this replica calls the upstream. When the call ends, one Lua
///   script leaves the lease naming this replica's finished call, with its
///   value, for one operation timeout (`op_timeout`), and publishes
///   the end on the prefix's `flights` channel;
/// - held by another replica that is calling: this one waits for that
///   holder's notice, at most
///   [`flight_lease`](crate::RedisSettings::flight_lease), then reads the
///   holder's value from the lease (one more round trip) and hands it to
///   its callers. A holder that failed, or whose value cannot be shared,
///   releases the lease and says so, and the waiting replicas call
///   themselves. When the wait runs out, the holder is presumed dead: its
///   lease has expired, and the replica asks again (so that one of the
///   waiting replicas takes over) and calls itself after two such waits at
///   most;
/// - held by a call that just ended with a value: the lease request
///   answers that value at once (no wait, no other round trip), so that a
///   replica that asks late (its cache lookup missed just before the
///   holder's answer reached the shared cache) makes no second call. A
///   call that starts within those few seconds of another replica's call
///   of the key is answered with that call's value, as a shared cache
///   entry of that age would; but never after a cache invalidation: each
///   one (any replica's `RedisStore`, before it publishes it) bumps the
///   prefix's flight generation, which each finished lease is stamped with, so the
///   leases finished before it answer no more (they are taken as free).
///
/// Any Redis failure or timeout answers [`Lead::Call`]: the replica makes
/// its own call, as without Redis.
pub struct RedisFlights<C> {
    shared: Arc<Shared>,
    codec: C,
}

struct Shared {
    redis: Redis,
    /// The local leaders waiting for another replica's call, by lease.
    waiters: Mutex<HashMap<Vec<u8>, Vec<Listener>>>,
    next_waiter: AtomicU64,
    /// The leases this replica holds, by key, and when each was taken.
    held: Mutex<HashMap<Key, ([u8; 16], Instant)>>,
}

/// The flight generation of `redis`'s prefix: bumped by every cache
/// invalidation, so that no finished lease from before it answers a claim.
/// `RedisStore` bumps it in the pipeline that publishes the invalidation,
/// before the publication: a replica that claims after hearing it never
/// gets a value from before it.
pub(crate) fn flight_generation(redis: &Redis) -> Vec<u8> {
    let prefix = &redis.settings().key_prefix;
    format!("{prefix}flight-generation").into_bytes()
}

/// A waiting local leader: its id, and where its notices go.
type Listener = (u64, mpsc::UnboundedSender<Notice>);

/// A holder's end of a call, as published.
#[derive(Debug, Clone, Copy)]
struct Notice {
    token: [u8; 16],
    value: bool,
}

impl<C> RedisFlights<C> {
    /// Flights on `redis`, handing values over in `codec`'s encoding. Must
    /// be called within a tokio runtime.
    pub fn new(redis: Redis, codec: C) -> Self {
        let messages = redis.messages();
        let channel = redis.channel(FLIGHTS);
        let shared = Arc::new(Shared {
            redis,
            waiters: Mutex::default(),
            next_waiter: AtomicU64::new(0),
            held: Mutex::default(),
        });
        tokio::spawn(dispatch(Arc::downgrade(&shared), messages, channel));
        RedisFlights { shared, codec }
    }
}

/// Hands each published notice to the local leaders waiting on its lease.
async fn dispatch(
    shared: Weak<Shared>,
    mut messages: tokio::sync::broadcast::Receiver<Message>,
    channel: Vec<u8>,
) {
    loop {
        let message = match messages.recv().await {
            Ok(message) => message,
            // A lost notice costs its waiters their bounded wait.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if message.channel != channel {
            continue;
        }
        let Some((notice, lease)) = decode_notice(&message.payload) else {
            continue;
        };
        let waiters = shared.waiters.lock().unwrap();
        for (_, waiter) in waiters.get(lease).into_iter().flatten() {
            let _ = waiter.send(notice);
        }
    }
}

fn encode_notice(notice: Notice, lease: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(17 + lease.len());
    message.push(u8::from(notice.value));
    message.extend_from_slice(&notice.token);
    message.extend_from_slice(lease);
    message
}

fn decode_notice(message: &[u8]) -> Option<(Notice, &[u8])> {
    let (&value, rest) = message.split_first()?;
    if rest.len() < 16 || value > 1 {
        return None;
    }
    let (token, lease) = rest.split_at(16);
    let notice = Notice {
        token: token.try_into().ok()?,
        value: value == 1,
    };
    Some((notice, lease))
}

/// A local leader's place among the waiters of a lease; leaves on drop.
struct Waiter {
    shared: Arc<Shared>,
    lease: Vec<u8>,
    id: u64,
    notices: mpsc::UnboundedReceiver<Notice>,
}

impl Waiter {
    fn new(shared: &Arc<Shared>, lease: Vec<u8>) -> Self {
        let id = shared.next_waiter.fetch_add(1, Ordering::Relaxed);
        let (tx, notices) = mpsc::unbounded_channel();
        let mut waiters = shared.waiters.lock().unwrap();
        waiters.entry(lease.clone()).or_default().push((id, tx));
        drop(waiters);
        Waiter {
            shared: shared.clone(),
            lease,
            id,
            notices,
        }
    }

    /// Whether `holder`'s call ended with a value; `None` if the
    /// connection is gone.
    async fn ended(&mut self, holder: &[u8]) -> Option<bool> {
        loop {
            let notice = self.notices.recv().await?;
            if notice.token == holder {
                return Some(notice.value);
            }
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut waiters = self.shared.waiters.lock().unwrap();
        if let Some(list) = waiters.get_mut(&self.lease) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                waiters.remove(&self.lease);
            }
        }
    }
}

impl Shared {
    fn generation(&self) -> Vec<u8> {
        flight_generation(&self.redis)
    }

    fn lease_of(&self, key: &Key) -> Vec<u8> {
        self.redis.name("flight", key.as_bytes())
    }

    /// How long a finished call's value stays in its lease, for the
    /// replicas that wait for it (they read it one round trip after the
    /// notice) and those that ask late (their cache lookup missed before
    /// the holder's write reached Redis: a round trip or two), each round
    /// trip bounded by `op_timeout`. No longer: a call that starts after
    /// that is a new question and must not get an old answer (with a
    /// longer lease, a poll loop's next fetch was answered with the value
    /// it was polling to replace: two upstream calls in four intervals
    /// instead of four, in `tests/coordinator.rs`).
    fn result_ttl(&self) -> Duration {
        self.redis.settings().op_timeout
    }

    /// Asks for `key`'s lease (one round trip); `None` when Redis does not
    /// answer.
    async fn claim(&self, key: &Key, lease: &[u8]) -> Option<Claim> {
        let token = self.redis.token();
        let ms = self.redis.settings().flight_lease.as_millis() as u64;
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(CLAIM)
            .arg(2)
            .arg(lease)
            .arg(self.generation())
            .arg(&token[..])
            .arg(ms);
        let mut manager = self.redis.manager();
        let holder: Option<Vec<u8>> = self.redis.run(cmd.query_async(&mut manager)).await?;
        let Some(holder) = holder else {
            let now = Instant::now();
            let mut held = self.held.lock().unwrap();
            // A call whose callers all left is never finished: forget
            // leases that expired (amortised over the map's growth).
            if held.len() >= MAX_HELD.max(held.capacity()) {
                let lease = self.redis.settings().flight_lease;
                held.retain(|_, (_, at)| now < *at + lease);
            }
            held.insert(key.clone(), (token, now));
            return Some(Claim::Granted);
        };
        if holder.get(16) == Some(&FINISHED) {
            // The holder ended with a value a moment ago, and no cache
            // invalidation came since: no new call.
            return Some(
                finished_value(&holder).map_or(Claim::Failed, |v| Claim::Finished(v.to_vec())),
            );
        }
        Some(Claim::Running(holder))
    }

    /// Leads `key`'s call: see [`RedisFlights`].
    async fn lead<V, C: Codec<V>>(self: Arc<Self>, key: Key, codec: C) -> Lead<V> {
        let lease = self.lease_of(&key);
        // Listening before asking, so that no notice falls in between.
        let mut waiter = Waiter::new(&self, lease.clone());
        let wait = self.redis.settings().flight_lease;
        let deadline = Instant::now() + wait * 2;
        loop {
            let holder = match self.claim(&key, &lease).await {
                Some(Claim::Running(holder)) => holder,
                Some(Claim::Finished(value)) => return answered(&codec, &value),
                Some(Claim::Granted | Claim::Failed) | None => return Lead::Call,
            };
            let until = deadline.min(Instant::now() + wait);
            match tokio::time::timeout_at(until, waiter.ended(&holder)).await {
                Ok(Some(true)) => return self.value_of(&lease, &holder, &codec).await,
                Ok(Some(false) | None) => return Lead::Call,
                Err(_) if Instant::now() >= deadline => return Lead::Call,
                // The holder is late or dead: its lease has ended; ask again.
                Err(_) => continue,
            }
        }
    }

    /// The value `holder` left in its finished lease, or `Lead::Call`.
    async fn value_of<V, C: Codec<V>>(&self, lease: &[u8], holder: &[u8], codec: &C) -> Lead<V> {
        let mut manager = self.redis.manager();
        let mut get = redis::cmd("GET");
        get.arg(lease);
        let finished = self
            .redis
            .run(get.query_async::<Option<Vec<u8>>>(&mut manager))
            .await
            .flatten();
        match finished {
            // Still this holder's (not a new flight's since): its value.
            Some(bytes) if bytes.starts_with(holder) && bytes.get(16) == Some(&FINISHED) => {
                finished_value(&bytes).map_or(Lead::Call, |value| answered(codec, value))
            }
            _ => Lead::Call,
        }
    }
}

/// The value in a finished lease (`<token>=<generation>:<value>`).
fn finished_value(lease: &[u8]) -> Option<&[u8]> {
    let rest = lease.get(17..)?;
    let colon = rest.iter().position(|&b| b == b':')?;
    Some(&rest[colon + 1..])
}

/// What a lease claim found.
enum Claim {
    /// The lease is this replica's: it calls.
    Granted,
    /// A finished lease that does not parse: call.
    Failed,
    /// Another replica holds it and is calling: its token.
    Running(Vec<u8>),
    /// Another replica's call ended with this value a moment ago.
    Finished(Vec<u8>),
}

/// Another replica's value for this replica's callers; `Lead::Call` when it
/// does not decode (another release's encoding).
fn answered<V, C: Codec<V>>(codec: &C, bytes: &[u8]) -> Lead<V> {
    codec.decode(bytes).map_or(Lead::Call, Lead::Answered)
}

impl<V, C> FlightBackend<V> for RedisFlights<C>
where
    C: Codec<V>,
    V: Send + 'static,
{
    const ANSWERS: bool = true;

    fn lead(&self, key: &Key) -> Answer<Lead<V>> {
        let lead = self.shared.clone().lead(key.clone(), self.codec.clone());
        Answer::Later(Box::pin(lead))
    }

    fn finish(&self, key: &Key, value: Option<&V>) {
        let Some((token, _)) = self.shared.held.lock().unwrap().remove(key) else {
            return;
        };
        let finished = value.and_then(|value| {
            let mut bytes = Vec::new();
            self.codec.encode(value, &mut bytes).then_some(bytes)
        });
        let shared = self.shared.clone();
        let lease = shared.lease_of(key);
        tokio::spawn(async move {
            let redis = &shared.redis;
            let notice = Notice {
                token,
                value: finished.is_some(),
            };
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(FINISH)
                .arg(2)
                .arg(&lease)
                .arg(shared.generation())
                .arg(&token[..])
                .arg(shared.result_ttl().as_millis() as u64)
                .arg(redis.channel(FLIGHTS))
                .arg(encode_notice(notice, &lease));
            if let Some(finished) = &finished {
                cmd.arg(finished);
            }
            let mut manager = redis.manager();
            // On failure the lease expires and the waiting replicas call
            // themselves when their wait ends.
            redis.run(cmd.query_async::<()>(&mut manager)).await;
        });
    }
}

impl<C: Clone> Clone for RedisFlights<C> {
    fn clone(&self) -> Self {
        RedisFlights {
            shared: self.shared.clone(),
            codec: self.codec.clone(),
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for RedisFlights<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisFlights")
            .field("redis", &self.shared.redis)
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip() {
        let notice = Notice {
            token: [7; 16],
            value: true,
        };
        let message = encode_notice(notice, b"p:flight:/a");
        let (back, lease) = decode_notice(&message).unwrap();
        assert_eq!(
            (back.token, back.value, lease),
            ([7; 16], true, &b"p:flight:/a"[..])
        );
        assert!(decode_notice(&message[..16]).is_none());
    }
}
