//! One replica's connection to Redis, shared by its backends.

use std::{
    collections::hash_map::RandomState,
    fmt,
    future::Future,
    hash::BuildHasher,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use herdsman::event::DependencyHealth;
use redis::{aio::ConnectionManager, PushInfo, PushKind, Value};
use tokio::sync::broadcast;

use crate::settings::{InvalidSettings, RedisSettings};

/// The channel of flight completions.
pub(crate) const FLIGHTS: &str = "flights";
/// The channel of poll loops' change notices.
pub(crate) const LOOPS: &str = "loops";
/// The channel of cache invalidations.
pub(crate) const INVALIDATIONS: &str = "invalidations";
/// The channel of breaker trips.
pub(crate) const TRIPS: &str = "trips";

/// A pub/sub message this replica received.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    /// The channel, prefix included.
    pub(crate) channel: Bytes,
    /// What was published.
    pub(crate) payload: Bytes,
}

/// A connection to Redis, shared by the backends of one replica.
///
/// One multiplexed connection carries every command (pipelined: many
/// requests in flight at once) and the pub/sub messages (RESP3 pushes). It
/// reconnects on its own, with exponential backoff, and subscribes again
/// after each reconnection. Cloning it is cheap: clones share the
/// connection.
///
/// Creating one does not connect: the first command does, so that an app
/// starts whether Redis is up or not.
///
/// # Health
///
/// [`is_up`](Redis::is_up) says whether Redis answered this replica's last
/// operation: an operation that times out or finds no connection marks it
/// down (and the replica coordinates locally), one that Redis answers marks
/// it up again. While it is down, each `is_up` call sends a `PING` in the
/// background (one at a time), so the health comes back with Redis even
/// when no request needs it. `Redis` is a
/// [`DependencyHealth`]: hand a clone to
/// `Stats::track_dependency("redis", redis.clone())` for the
/// `redis_unavailable` alert and the `herdsman_dependency_up{dependency="redis"}`
/// gauge.
#[derive(Clone)]
pub struct Redis {
    shared: Arc<Shared>,
}

struct Shared {
    manager: ConnectionManager,
    settings: RedisSettings,
    messages: broadcast::Sender<Message>,
    /// This replica's id in owner tokens and message origins.
    replica: u64,
    tokens: AtomicU64,
    subscribed: AtomicBool,
    /// Whether Redis answered the last operation.
    up: AtomicBool,
    /// Whether a health `PING` is on its way.
    probing: AtomicBool,
}

impl Redis {
    /// A connection to the server of `settings`, subscribed to the channels
    /// of its key prefix. Must be called within a tokio runtime.
    pub fn new(settings: RedisSettings) -> Result<Self, InvalidSettings> {
        let url = crate::settings::checked_url(&settings)?;
        let info = redis::IntoConnectionInfo::into_connection_info(url).expect("validated");
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(resp3)).expect("validated");
        let (pushes, mut received) = tokio::sync::mpsc::unbounded_channel::<PushInfo>();
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.op_timeout))
            .set_response_timeout(Some(settings.op_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2))
            .set_push_sender(pushes)
            .set_automatic_resubscription();
        let manager = redis::aio::ConnectionManager::new_lazy_with_config(client, config)
            .expect("a RESP3 connection with a push sender");
        let (messages, _) = broadcast::channel(1024);
        let replica = RandomState::new().hash_one(std::process::id());
        let redis = Redis {
            shared: Arc::new(Shared {
                manager,
                settings,
                messages,
                replica,
                tokens: AtomicU64::new(0),
                subscribed: AtomicBool::new(false),
                up: AtomicBool::new(true),
                probing: AtomicBool::new(false),
            }),
        };
        // Pushes to broadcast messages: holds the sender only weakly, so that
        // the task ends with the last clone of this connection.
        let weak = Arc::downgrade(&redis.shared);
        tokio::spawn(async move {
            while let Some(push) = received.recv().await {
                let Some(shared) = weak.upgrade() else { return };
                if let Some(message) = message_of(push) {
                    let _ = shared.messages.send(message);
                }
            }
        });
        let channels = vec![
            redis.channel(FLIGHTS),
            redis.channel(INVALIDATIONS),
            redis.channel(LOOPS),
            redis.channel(TRIPS),
        ];
        tokio::spawn(subscribe(Arc::downgrade(&redis.shared), channels));
        Ok(redis)
    }

    /// Whether the connection has subscribed to its channels (it
    /// subscribes in the background, and again after each reconnection):
    /// until then, this replica hears no other replica.
    pub fn is_subscribed(&self) -> bool {
        self.shared.subscribed.load(Ordering::Acquire)
    }

    /// Whether Redis answered this replica's last operation (see
    /// [Health](Redis#health)). While it did not, each call also sends a
    /// `PING` in the background, to notice when it is back.
    pub fn is_up(&self) -> bool {
        let up = self.shared.up.load(Ordering::Acquire);
        if !up {
            self.probe();
        }
        up
    }

    /// Sends one `PING` (unless one is on its way), which marks Redis up
    /// when it answers.
    fn probe(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.shared.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let redis = self.clone();
        runtime.spawn(async move {
            let mut manager = redis.manager();
            let ping = redis::cmd("PING");
            redis.run(ping.query_async::<()>(&mut manager)).await;
            redis.shared.probing.store(false, Ordering::Release);
        });
    }

    /// The settings this connection was made with.
    pub fn settings(&self) -> &RedisSettings {
        &self.shared.settings
    }

    /// `name` after the key prefix, for a key or a channel.
    pub(crate) fn name(&self, kind: &str, rest: &[u8]) -> Vec<u8> {
        let prefix = self.shared.settings.key_prefix.as_bytes();
        let mut name = Vec::with_capacity(prefix.len() + kind.len() + 1 + rest.len());
        name.extend_from_slice(prefix);
        name.extend_from_slice(kind.as_bytes());
        name.push(b':');
        name.extend_from_slice(rest);
        name
    }

    /// The channel named `name` under the key prefix.
    pub(crate) fn channel(&self, name: &str) -> Vec<u8> {
        self.name("channel", name.as_bytes())
    }

    /// The messages this replica receives from now on.
    pub(crate) fn messages(&self) -> broadcast::Receiver<Message> {
        self.shared.messages.subscribe()
    }

    /// This replica's id.
    pub(crate) fn replica(&self) -> u64 {
        self.shared.replica
    }

    /// A token no other claim of any replica has: this replica's id and a
    /// count.
    pub(crate) fn token(&self) -> [u8; 16] {
        let n = self.shared.tokens.fetch_add(1, Ordering::Relaxed);
        let mut token = [0; 16];
        token[..8].copy_from_slice(&self.shared.replica.to_be_bytes());
        token[8..].copy_from_slice(&n.to_be_bytes());
        token
    }

    /// A connection handle for commands.
    pub(crate) fn manager(&self) -> ConnectionManager {
        self.shared.manager.clone()
    }

    /// Runs `op` under the operation timeout: `None` when Redis fails or is
    /// too slow.
    pub(crate) async fn run<T, F>(&self, op: F) -> Option<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.shared.settings.op_timeout, op).await {
            Ok(Ok(value)) => {
                self.shared.answered(true);
                Some(value)
            }
            Ok(Err(err)) => {
                tracing::debug!(%err, "redis operation failed");
                // An error reply is an answer: Redis is there.
                self.shared
                    .answered(matches!(err.kind(), redis::ErrorKind::Server(_)));
                None
            }
            Err(_) => {
                tracing::debug!("redis operation timed out");
                self.shared.answered(false);
                None
            }
        }
    }
}

impl Shared {
    /// Notes whether Redis answered an operation: a change is logged.
    fn answered(&self, up: bool) {
        if self.up.load(Ordering::Relaxed) == up {
            return;
        }
        if self.up.swap(up, Ordering::AcqRel) != up {
            if up {
                tracing::info!(key_prefix = %self.settings.key_prefix, "redis is back");
            } else {
                tracing::warn!(
                    key_prefix = %self.settings.key_prefix,
                    "redis is unavailable: coordinating locally until it is back"
                );
            }
        }
    }
}

impl DependencyHealth for Redis {
    fn is_up(&self) -> bool {
        Redis::is_up(self)
    }
}

/// Subscribes to the prefix's channels, retrying until Redis answers; the
/// connection manager then subscribes again after each reconnection.
async fn subscribe(weak: std::sync::Weak<Shared>, channels: Vec<Vec<u8>>) {
    let mut delay = Duration::from_millis(50);
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let mut manager = shared.manager.clone();
        let timeout = shared.settings.op_timeout;
        drop(shared);
        let subscribed = tokio::time::timeout(timeout, manager.subscribe(&channels)).await;
        let Some(shared) = weak.upgrade() else { return };
        if let Ok(Ok(())) = subscribed {
            shared.answered(true);
            shared.subscribed.store(true, Ordering::Release);
            return;
        }
        shared.answered(false);
        drop(shared);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

fn message_of(push: PushInfo) -> Option<Message> {
    if push.kind != PushKind::Message {
        return None;
    }
    let mut data = push.data.into_iter();
    let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
        (data.next(), data.next())
    else {
        return None;
    };
    Some(Message {
        channel: channel.into(),
        payload: payload.into(),
    })
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("key_prefix", &self.shared.settings.key_prefix)
            .field("op_timeout", &self.shared.settings.op_timeout)
            .finish_non_exhaustive()
    }
}
