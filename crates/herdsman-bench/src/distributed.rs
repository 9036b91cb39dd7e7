//! Distributed mode (issue 16): the cache and single-flight layers over
//! herdsman-redis's backends, against a real `redis-server` on loopback
//! (started by [`RedisServer`], in a temp dir, persistence off).
//!
//! Built from the layers and backends directly (not the Coordinator, which
//! does not pick Redis backends yet): each "replica" is
//! `Cache(RedisStore) → Dedup(RedisFlights) → upstream` on a connection of
//! its own, as three processes would be.
//!
//! Round trips are counted by a loopback proxy between the replicas and
//! Redis: each write of a replica that holds whole commands is one round
//! trip (a pipeline is one: redis-rs writes it at once; the measured
//! requests run one at a time), and the top-level commands in it are
//! counted too (a command that a Lua script runs inside Redis is neither;
//! `INFO commandstats` would count those).

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::future::join_all;
use herdsman::{backend::FlightBackend, cache::CacheLayer, dedup::DedupLayer, key::Key, BoxError};
use herdsman_redis::{
    dev::RedisServer, PlainCodec, Redis, RedisFlights, RedisSettings, RedisStore,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::Instant,
};
use tower::{service_fn, util::BoxCloneSyncService, Layer, ServiceExt};

/// A replica's stack: `String` requests (the key) to `String` answers.
pub type Replica = BoxCloneSyncService<String, String, BoxError>;

/// Whether `redis-server` is on `PATH` (the benchmarks need it).
pub fn redis_server_available() -> bool {
    std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// The upstream: counts its calls, and answers after `latency`; notes a
/// proxy's counts when a call starts (the round trips before it).
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Calls so far.
    pub calls: Arc<AtomicU64>,
    /// The proxy's round trips when the last call started.
    pub round_trips_at_call: Arc<AtomicU64>,
    /// The proxy's commands when the last call started.
    pub commands_at_call: Arc<AtomicU64>,
    latency: Duration,
}

impl Upstream {
    /// An upstream answering after `latency`.
    pub fn new(latency: Duration) -> Self {
        Upstream {
            calls: Arc::default(),
            round_trips_at_call: Arc::default(),
            commands_at_call: Arc::default(),
            latency,
        }
    }

    fn service(
        &self,
        proxy: Option<Arc<Counts>>,
    ) -> impl tower::Service<
        String,
        Response = String,
        Error = Infallible,
        Future = impl Send + 'static,
    > + Clone
           + Send
           + Sync
           + 'static {
        let up = self.clone();
        service_fn(move |key: String| {
            up.calls.fetch_add(1, Ordering::SeqCst);
            if let Some(proxy) = &proxy {
                let round_trips = proxy.round_trips.load(Ordering::SeqCst);
                up.round_trips_at_call.store(round_trips, Ordering::SeqCst);
                let commands = proxy.commands.load(Ordering::SeqCst);
                up.commands_at_call.store(commands, Ordering::SeqCst);
            }
            let latency = up.latency;
            async move {
                if !latency.is_zero() {
                    tokio::time::sleep(latency).await;
                }
                Ok::<_, Infallible>(format!("{key} from upstream"))
            }
        })
    }
}

// The key function of `String` requests takes `&String`.
#[allow(clippy::ptr_arg)]
fn key_of(req: &String) -> Option<Key> {
    Some(Key::from(req.as_str()))
}

type KeyOf = fn(&String) -> Option<Key>;

/// A replica on `redis` (None: in process only) over `upstream`; with
/// `proxy`, the upstream notes the round trips through it at each call.
pub fn replica(redis: Option<&Redis>, upstream: &Upstream, proxy: Option<&Proxy>) -> Replica {
    let inner = upstream.service(proxy.map(|p| p.counts.clone()));
    let cache =
        CacheLayer::<KeyOf, String>::new(key_of as KeyOf).with_ttl(Duration::from_secs(600));
    let dedup = DedupLayer::new(key_of as KeyOf);
    match redis {
        Some(redis) => {
            let cache = cache.with_store_backend(RedisStore::new(redis.clone(), PlainCodec));
            let dedup = dedup.with_flight_backend(RedisFlights::new(redis.clone(), PlainCodec));
            BoxCloneSyncService::new(cache.layer(dedup.layer(inner)))
        }
        None => BoxCloneSyncService::new(cache.layer(dedup.layer(inner))),
    }
}

/// A loopback proxy in front of Redis that counts the round trips and the
/// top-level commands sent through it.
#[derive(Debug)]
pub struct Proxy {
    counts: Arc<Counts>,
    port: u16,
}

/// What went through a [`Proxy`].
#[derive(Debug, Default)]
struct Counts {
    round_trips: AtomicU64,
    commands: AtomicU64,
}

impl Proxy {
    /// A proxy toward `server`.
    pub async fn start(server: &RedisServer) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let counts = Arc::new(Counts::default());
        let (count, target) = (counts.clone(), server.port());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    if let Ok(redis) = TcpStream::connect(("127.0.0.1", target)).await {
                        let _ = relay(client, redis, count).await;
                    }
                });
            }
        });
        Ok(Proxy { counts, port })
    }

    /// Round trips so far.
    pub fn round_trips(&self) -> u64 {
        self.counts.round_trips.load(Ordering::SeqCst)
    }

    /// Top-level commands so far.
    pub fn commands(&self) -> u64 {
        self.counts.commands.load(Ordering::SeqCst)
    }

    /// Round trips and commands so far.
    fn count(&self) -> (u64, u64) {
        (self.round_trips(), self.commands())
    }

    /// The proxy's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

async fn relay(client: TcpStream, redis: TcpStream, counts: Arc<Counts>) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    redis.set_nodelay(true)?;
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_redis, mut to_redis) = redis.into_split();
    tokio::spawn(async move { tokio::io::copy(&mut from_redis, &mut to_client).await });
    let mut parser = Commands::default();
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = from_client.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let commands = parser.feed(&buf[..n]);
        if commands > 0 {
            counts.round_trips.fetch_add(1, Ordering::SeqCst);
            counts.commands.fetch_add(commands, Ordering::SeqCst);
        }
        to_redis.write_all(&buf[..n]).await?;
    }
}

/// Counts complete RESP commands (arrays of bulk strings) in a stream.
#[derive(Default)]
struct Commands {
    pending: Vec<u8>,
}

impl Commands {
    fn feed(&mut self, bytes: &[u8]) -> u64 {
        self.pending.extend_from_slice(bytes);
        let mut at = 0;
        let mut complete = 0;
        while let Some(end) = command_end(&self.pending[at..]) {
            at += end;
            complete += 1;
        }
        self.pending.drain(..at);
        complete
    }
}

/// The length of the first whole command in `buf`, if it is all there.
fn command_end(buf: &[u8]) -> Option<usize> {
    let (count, mut at) = header(buf, b'*')?;
    for _ in 0..count {
        let (len, start) = header(&buf[at..], b'$')?;
        at += start + len + 2;
        if at > buf.len() {
            return None;
        }
    }
    Some(at)
}

/// `<kind><number>\r\n`: the number and the length of the line.
fn header(buf: &[u8], kind: u8) -> Option<(usize, usize)> {
    if buf.first() != Some(&kind) {
        return None;
    }
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let number = std::str::from_utf8(&buf[1..end]).ok()?.parse().ok()?;
    Some((number, end + 2))
}

/// Settings for a replica: a 200 ms operation timeout, and `lease` as the
/// flight lease.
pub fn settings(url: String, lease: Duration) -> RedisSettings {
    RedisSettings {
        op_timeout: Duration::from_millis(200),
        flight_lease: lease,
        ..RedisSettings::new(url)
    }
}

/// A replica's connection, once it has subscribed (it hears the others).
pub async fn connect(url: String, lease: Duration) -> Redis {
    let redis = Redis::new(settings(url, lease)).expect("valid settings");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !redis.is_subscribed() {
        assert!(Instant::now() < deadline, "never subscribed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    redis
}

/// Round trips to Redis of one request, per kind, each with the
/// top-level commands in them: `(round trips, commands)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundTrips {
    /// An L1 hit.
    pub l1_hit: (u64, u64),
    /// An L2 hit (another replica's answer, from Redis).
    pub l2_hit: (u64, u64),
    /// A miss, before the upstream call (the L2 lookup and the lease).
    pub miss_before_call: (u64, u64),
    /// A miss, in all: after the call, the flight's end and the
    /// write-through, one script each.
    pub miss_total: (u64, u64),
}

fn since(now: (u64, u64), before: (u64, u64)) -> (u64, u64) {
    (now.0 - before.0, now.1 - before.1)
}

/// Counts the round trips of a miss on one replica, then of an L2 hit and
/// an L1 hit on another.
pub async fn round_trips(server: &RedisServer) -> RoundTrips {
    let proxy = Proxy::start(server).await.expect("a loopback port");
    let upstream = Upstream::new(Duration::ZERO);
    let lease = Duration::from_secs(5);
    let here = replica(
        Some(&connect(proxy.url(), lease).await),
        &upstream,
        Some(&proxy),
    );
    let there = replica(
        Some(&connect(proxy.url(), lease).await),
        &upstream,
        Some(&proxy),
    );
    let key = "/round-trips".to_string();

    let before = proxy.count();
    here.clone().oneshot(key.clone()).await.expect("answered");
    let at_call = (
        upstream.round_trips_at_call.load(Ordering::SeqCst) - before.0,
        upstream.commands_at_call.load(Ordering::SeqCst) - before.1,
    );
    // The write-through and the flight's end run after the answer.
    let probe = RedisStore::new(connect(server.url(), lease).await, PlainCodec);
    written_through(&probe, &key).await;
    let miss_total = since(proxy.count(), before);

    let before = proxy.count();
    there.clone().oneshot(key.clone()).await.expect("answered");
    let l2_hit = since(proxy.count(), before);
    let before = proxy.count();
    there.clone().oneshot(key).await.expect("answered");
    let l1_hit = since(proxy.count(), before);
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 1);
    RoundTrips {
        l1_hit,
        l2_hit,
        miss_before_call: at_call,
        miss_total,
    }
}

/// Waits until `key`'s entry is in Redis (the write-through is in the
/// background).
async fn written_through(probe: &RedisStore<PlainCodec>, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while herdsman::backend::StoreBackend::<String>::lookup(probe, &Key::from(key))
        .get()
        .await
        .is_none()
    {
        assert!(Instant::now() < deadline, "never written through");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The storm: `per_replica` concurrent identical requests on each of
/// `replicas` replicas, on an upstream taking `latency`. Answers the
/// upstream's calls and the time until every caller had its answer.
pub async fn storm(
    server: &RedisServer,
    replicas: usize,
    per_replica: usize,
    latency: Duration,
) -> (u64, Duration) {
    let upstream = Upstream::new(latency);
    let mut stacks = Vec::new();
    for _ in 0..replicas {
        let redis = connect(server.url(), Duration::from_secs(5)).await;
        stacks.push(replica(Some(&redis), &upstream, None));
    }
    let started = Instant::now();
    let calls = (0..replicas * per_replica).map(|i| {
        let stack = stacks[i % replicas].clone();
        tokio::spawn(stack.oneshot("/storm".to_string()))
    });
    for answer in join_all(calls.collect::<Vec<_>>()).await {
        assert_eq!(
            answer.expect("no panic").expect("answered"),
            "/storm from upstream"
        );
    }
    (upstream.calls.load(Ordering::SeqCst), started.elapsed())
}

/// Lease failover: a holder takes a key's lease and dies without
/// finishing; answers how long a caller on another replica waited before
/// its own upstream call (about `lease`).
pub async fn failover(server: &RedisServer, lease: Duration) -> Duration {
    let dead = RedisFlights::new(connect(server.url(), lease).await, PlainCodec);
    let key = Key::from("/failover");
    let lead = FlightBackend::<String>::lead(&dead, &key).get().await;
    assert!(
        matches!(lead, herdsman::backend::Lead::Call),
        "the holder leads"
    );
    drop(dead);
    let upstream = Upstream::new(Duration::ZERO);
    let heir = replica(Some(&connect(server.url(), lease).await), &upstream, None);
    let started = Instant::now();
    heir.oneshot("/failover".to_string())
        .await
        .expect("answered");
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 1);
    started.elapsed()
}

/// Mean times per request, with Redis and without (in process only).
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// An L1 hit on a replica with Redis.
    pub l1_hit: Duration,
    /// The same hit without Redis.
    pub l1_hit_local: Duration,
    /// An L2 hit: the L1 misses, another replica's answer is in Redis.
    pub l2_hit: Duration,
    /// A miss on a replica with Redis (the lookup, the lease, an instant
    /// upstream call; the write-through runs after the answer).
    pub miss: Duration,
    /// The same miss without Redis.
    pub miss_local: Duration,
}

/// Mean time of one request through `stack` for each key of `keys`, one
/// after the other.
async fn mean(stack: &Replica, keys: impl Iterator<Item = String>) -> Duration {
    let (mut n, started) = (0u32, Instant::now());
    for key in keys {
        stack.clone().oneshot(key).await.expect("answered");
        n += 1;
    }
    started.elapsed() / n.max(1)
}

/// Measures [`Timings`] over `n` requests of each kind.
pub async fn timings(server: &RedisServer, n: usize) -> Timings {
    let lease = Duration::from_secs(5);
    let upstream = Upstream::new(Duration::ZERO);
    let here = replica(Some(&connect(server.url(), lease).await), &upstream, None);
    let there = replica(Some(&connect(server.url(), lease).await), &upstream, None);
    let local = replica(None, &upstream, None);
    let keys = |kind: &'static str| (0..n).map(move |i| format!("/{kind}/{i}"));

    let miss = mean(&here, keys("l2")).await;
    let miss_local = mean(&local, keys("local")).await;
    // Every write-through is in Redis before the L2 hits are timed.
    let probe = RedisStore::new(connect(server.url(), lease).await, PlainCodec);
    for key in keys("l2") {
        written_through(&probe, &key).await;
    }
    let l2_hit = mean(&there, keys("l2")).await;
    let hot = |_| "/l2/0".to_string();
    let l1_hit = mean(&there, (0..n * 10).map(hot)).await;
    let hot = |_| "/local/0".to_string();
    let l1_hit_local = mean(&local, (0..n * 10).map(hot)).await;
    Timings {
        l1_hit,
        l1_hit_local,
        l2_hit,
        miss,
        miss_local,
    }
}

/// A coalesced miss: `rounds` rounds of `callers` concurrent callers of
/// one new key, spread over `replicas` replicas sharing Redis, on an
/// upstream taking `latency`; and the same callers on one replica without
/// Redis. Answers the median time until the round's last caller had its
/// answer, with Redis then without, and the upstream calls with Redis.
pub async fn coalesced(
    server: &RedisServer,
    replicas: usize,
    callers: usize,
    rounds: usize,
    latency: Duration,
) -> (Duration, Duration, u64) {
    let upstream = Upstream::new(latency);
    let mut shared = Vec::new();
    for _ in 0..replicas {
        let redis = connect(server.url(), Duration::from_secs(5)).await;
        shared.push(replica(Some(&redis), &upstream, None));
    }
    let local = vec![replica(None, &Upstream::new(latency), None)];
    let with = median_round(&shared, callers, rounds, "redis").await;
    let without = median_round(&local, callers, rounds, "local").await;
    (with, without, upstream.calls.load(Ordering::SeqCst))
}

async fn median_round(stacks: &[Replica], callers: usize, rounds: usize, tag: &str) -> Duration {
    let mut times = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let key = format!("/coalesced/{tag}/{round}");
        let started = Instant::now();
        let calls = (0..callers).map(|i| {
            let stack = stacks[i % stacks.len()].clone();
            tokio::spawn(stack.oneshot(key.clone()))
        });
        for answer in join_all(calls.collect::<Vec<_>>()).await {
            answer.expect("no panic").expect("answered");
        }
        times.push(started.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

/// Poll-loop failover: two replicas' registries subscribe to one key
/// (`RedisLoops`: one of them polls, every `interval`); the poller's
/// upstream then hangs for good (a stuck or dead process: no more
/// rounds, no more renewals). Answers how long until the other replica
/// polled (at most `interval` + `loop_lease`).
pub async fn loop_failover(
    server: &RedisServer,
    interval: Duration,
    loop_lease: Duration,
) -> Duration {
    use herdsman::registry::RegistryLayer;
    let dead = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let calls: Arc<[AtomicU64; 2]> = Arc::default();
    let mut subscriptions = Vec::new();
    for replica in 0..2 {
        let settings = RedisSettings {
            loop_lease,
            ..settings(server.url(), Duration::from_secs(5))
        };
        let redis = Redis::new(settings).expect("valid settings");
        while !redis.is_subscribed() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (dead, calls) = (dead.clone(), calls.clone());
        let upstream = service_fn(move |_: String| {
            calls[replica].fetch_add(1, Ordering::SeqCst);
            let hang = dead.load(Ordering::SeqCst) && replica == 0;
            async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                Ok::<_, Infallible>("value".to_string())
            }
        });
        let registry = RegistryLayer::new(key_of as KeyOf)
            .with_interval(interval)
            .with_floor(interval.min(Duration::from_millis(100)))
            .with_jitter(0.0)
            .with_loop_backend(herdsman_redis::RedisLoops::new(redis))
            .layer(upstream);
        let subscription = registry.subscribe("/loop".to_string()).expect("a key");
        subscriptions.push((registry, subscription));
        // Replica 0 subscribes first: it is the poller.
        tokio::time::sleep(interval / 2).await;
    }
    // Wait for a round of the poller, then stop it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while calls[0].load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "replica 0 never polled");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    dead.store(true, Ordering::SeqCst);
    let (stopped, before) = (Instant::now(), calls[1].load(Ordering::SeqCst));
    while calls[1].load(Ordering::SeqCst) == before {
        assert!(
            Instant::now() < stopped + Duration::from_secs(30),
            "never taken over"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    stopped.elapsed()
}
