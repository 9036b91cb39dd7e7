//! The load: stream churn, pollers, one attacker's key floods, writes and
//! faults, each a task until the soak stops them.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{header, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::json;
use tokio::{
    sync::Semaphore,
    task::JoinSet,
    time::{interval, sleep, Instant, MissedTickBehavior},
};

use crate::{http::Http, sample::Recorder};

/// The load mix.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Mix {
    /// Clients churning event streams: open, read, close at a random time.
    #[arg(long, default_value_t = 120)]
    streams: usize,
    /// The longest a churning client keeps a stream open.
    #[arg(long, default_value = "20s", value_parser = crate::parse_duration)]
    stream_hold: Duration,
    /// Boards the clients look at (`b0`, `b1`, ...); writes go to the first 2.
    #[arg(long, default_value_t = 40)]
    boards: usize,
    /// Clients polling the JSON endpoints.
    #[arg(long, default_value_t = 40)]
    pollers: usize,
    /// How often each poller polls (±20 %).
    #[arg(long, default_value = "2s", value_parser = crate::parse_duration)]
    poll_every: Duration,
    /// The attacker's requests a second: distinct queries, oversized ones,
    /// random credentials (0: no flood).
    #[arg(long, default_value_t = 100)]
    flood_rate: u32,
    /// Card writes a second, each invalidating a board (0: none).
    #[arg(long, default_value_t = 1.0)]
    writes: f64,
    /// A fault starts this often...
    #[arg(long, default_value = "60s", value_parser = crate::parse_duration)]
    fault_every: Duration,
    /// ...and lasts this long.
    #[arg(long, default_value = "15s", value_parser = crate::parse_duration)]
    fault_hold: Duration,
    /// No faults.
    #[arg(long)]
    no_faults: bool,
}

/// What the simulated clients did, by kind of client and outcome.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    counts: [[AtomicU64; OUTCOMES.len()]; KINDS.len()],
    /// Event streams open now (the clients' view).
    pub(crate) streams_open: AtomicI64,
    /// Value events read.
    pub(crate) events: AtomicU64,
    /// `upstream-error` events read.
    pub(crate) error_events: AtomicU64,
    /// Streams the server ended (the `sse` switch going off).
    pub(crate) ended_by_server: AtomicU64,
}

/// The boards written to. The demo keeps a board's last 50 events, so its
/// value stops growing after 50 writes: at one write a second over two
/// boards, within the warm-up.
const WRITE_BOARDS: usize = 2;

/// Kinds of client, as the summary and the CSV name them.
pub(crate) const KINDS: [&str; 5] = ["stream", "poll", "flood", "write", "fault"];
const STREAM: usize = 0;
const POLL: usize = 1;
const FLOOD: usize = 2;
const WRITE: usize = 3;
const FAULT: usize = 4;

/// Outcomes, as the summary and the CSV name them. `shed`: a flood request
/// the soak itself dropped, 64 being in flight already.
pub(crate) const OUTCOMES: [&str; 8] = ["2xx", "304", "429", "503", "4xx", "5xx", "failed", "shed"];
const FAILED: usize = 6;
const SHED: usize = 7;

impl Counters {
    fn record(&self, kind: usize, outcome: usize) {
        self.counts[kind][outcome].fetch_add(1, Relaxed);
    }

    fn status(&self, kind: usize, status: StatusCode) {
        let outcome = match status.as_u16() {
            304 => 1,
            429 => 2,
            503 => 3,
            400..=499 => 4,
            500..=599 => 5,
            _ => 0,
        };
        self.record(kind, outcome);
    }

    /// The count of `kind` (an index of [`KINDS`]) and `outcome` (of
    /// [`OUTCOMES`]).
    pub(crate) fn get(&self, kind: usize, outcome: usize) -> u64 {
        self.counts[kind][outcome].load(Relaxed)
    }
}

/// A small xorshift64* generator: the load's choices need no better.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    /// The `n`th generator from `seed` (splitmix64, so that neighbours differ).
    fn nth(seed: u64, n: u64) -> Rng {
        let mut z = seed.wrapping_add(n.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_millis() as u64;
        lo + Duration::from_millis(self.next() % (span + 1))
    }

    fn hex(&mut self) -> String {
        format!("{:016x}", self.next())
    }
}

/// The running load; [`Load::stop`] ends every client.
#[derive(Debug)]
pub(crate) struct Load {
    tasks: JoinSet<()>,
}

impl Load {
    /// Stops every client: open streams and requests in flight are dropped,
    /// which closes their connections.
    pub(crate) async fn stop(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Starts every client of `mix`.
pub(crate) fn start(
    mix: &Mix,
    http: &Http,
    counters: &Arc<Counters>,
    recorder: &Recorder,
    seed: Option<u64>,
) -> Load {
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut tasks = JoinSet::new();
    let client = |n: u64| Client {
        http: http.clone(),
        counters: counters.clone(),
        mix: mix.clone(),
        rng: Rng::nth(seed, n),
    };
    for i in 0..mix.streams {
        tasks.spawn(client(i as u64).churn_streams(i));
    }
    for i in 0..mix.pollers {
        tasks.spawn(client(10_000 + i as u64).poll(i));
    }
    if mix.flood_rate > 0 {
        tasks.spawn(client(20_000).flood());
        tasks.spawn(client(20_001).greedy_streams());
    }
    if mix.writes > 0.0 {
        tasks.spawn(client(30_000).write());
    }
    if !mix.no_faults {
        tasks.spawn(client(40_000).faults(recorder.clone()));
    }
    Load { tasks }
}

/// One simulated client.
struct Client {
    http: Http,
    counters: Arc<Counters>,
    mix: Mix,
    rng: Rng,
}

/// Counts a stream as open for as long as it lives.
struct OpenStream<'a>(&'a Counters);

impl<'a> OpenStream<'a> {
    fn new(counters: &'a Counters) -> Self {
        counters.streams_open.fetch_add(1, Relaxed);
        OpenStream(counters)
    }
}

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.0.streams_open.fetch_sub(1, Relaxed);
    }
}

impl Client {
    fn board(&mut self) -> String {
        format!("b{}", self.rng.below(self.mix.boards))
    }

    /// Opens a stream, reads it for a random time, closes it; again.
    /// Two clients share each caller identity, well under the cap of 8
    /// (`registry.max_subscribers_per_caller`).
    async fn churn_streams(mut self, i: usize) {
        let who = format!("Bearer soak-user-{}", i / 2);
        loop {
            let path = if self.rng.below(10) < 4 {
                "/sse/active-users".to_owned()
            } else {
                format!("/sse/boards/{}/events", self.board())
            };
            let hold = self
                .rng
                .between(Duration::from_millis(200), self.mix.stream_hold);
            let req = self
                .http
                .request(Method::GET, &path)
                .header(header::ACCEPT, "text/event-stream")
                .header(header::AUTHORIZATION, &who)
                .body(Full::default())
                .expect("a valid request");
            match self.http.send(req).await {
                Ok(response) if response.status() == StatusCode::OK => {
                    self.counters.status(STREAM, response.status());
                    let _open = OpenStream::new(&self.counters);
                    read_events(response.into_body(), hold, &self.counters).await;
                }
                Ok(response) => self.counters.status(STREAM, response.status()),
                Err(()) => self.counters.record(STREAM, FAILED),
            }
            let pause = self
                .rng
                .between(Duration::from_millis(50), Duration::from_secs(1));
            sleep(pause).await;
        }
    }

    /// Polls the JSON endpoints with `If-None-Match`, as a tab would.
    async fn poll(mut self, i: usize) {
        const USERS: [&str; 8] = ["ann", "bob", "chen", "dara", "eli", "fay", "gus", "hana"];
        let mut etags = HashMap::new();
        loop {
            let path = match self.rng.below(10) {
                0..=3 => "/api/active-users".to_owned(),
                4..=7 => format!("/api/boards/{}/events", self.board()),
                _ => "/api/me".to_owned(),
            };
            let mut req = self.http.request(Method::GET, &path);
            if path == "/api/me" {
                req = req.header(header::AUTHORIZATION, format!("Bearer {}", USERS[i % 8]));
            }
            if let Some(tag) = etags.get(&path) {
                req = req.header(header::IF_NONE_MATCH, tag);
            }
            match self
                .http
                .fetch(req.body(Full::default()).expect("valid"))
                .await
            {
                Ok(response) => {
                    self.counters.status(POLL, response.status());
                    if let Some(tag) = response.headers().get(header::ETAG) {
                        etags.insert(path, tag.clone());
                    }
                }
                Err(()) => self.counters.record(POLL, FAILED),
            }
            let every = self.mix.poll_every;
            sleep(self.rng.between(every * 4 / 5, every * 6 / 5)).await;
        }
    }

    /// The attacker: `flood_rate` requests a second, each a new key or an
    /// oversized one, at most 64 in flight (beyond that, shed).
    async fn flood(mut self) {
        let in_flight = Arc::new(Semaphore::new(64));
        let mut requests = JoinSet::new();
        let mut tick = interval(Duration::from_secs(1) / self.mix.flood_rate);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            while requests.try_join_next().is_some() {}
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                self.counters.record(FLOOD, SHED);
                continue;
            };
            let req = self.flood_request();
            let (http, counters) = (self.http.clone(), self.counters.clone());
            requests.spawn(async move {
                match http.fetch(req).await {
                    Ok(response) => counters.status(FLOOD, response.status()),
                    Err(()) => counters.record(FLOOD, FAILED),
                }
                drop(permit);
            });
        }
    }

    /// One flood request: a distinct query string, a new board, a new
    /// private key (a random credential), random credentials on a public
    /// class (which must not split its key), or an oversized query.
    fn flood_request(&mut self) -> http::Request<Full<Bytes>> {
        let key = self.rng.hex();
        let (path, auth, cookie) = match self.rng.below(100) {
            0..=39 => (format!("/api/active-users?soak={key}"), None, None),
            40..=49 => (
                format!("/api/boards/{}/events?soak={key}", self.board()),
                None,
                None,
            ),
            50..=54 => (format!("/api/boards/x{key}/events"), None, None),
            55..=74 => ("/api/me".to_owned(), Some(key.clone()), None),
            75..=84 => ("/api/active-users".to_owned(), Some(key.clone()), Some(key)),
            85..=94 => (
                format!("/api/active-users?pad={}{key}", "x".repeat(8 << 10)),
                None,
                None,
            ),
            _ => (
                format!("/api/boards/b0/events?pad={}{key}", "y".repeat(32 << 10)),
                None,
                Some("z".repeat(4 << 10)),
            ),
        };
        let mut req = self.http.request(Method::GET, &path);
        if let Some(auth) = auth {
            req = req.header(header::AUTHORIZATION, format!("Bearer {auth}"));
        }
        if let Some(cookie) = cookie {
            req = req.header(header::COOKIE, format!("session={cookie}"));
        }
        req.body(Full::default()).expect("a valid request")
    }

    /// Every 5 s, the attacker opens 8 streams as one caller, as many as its
    /// cap (`registry.max_subscribers_per_caller`, 8 since issue 14; 6 per
    /// caller before, when 2 were answered 429), holds them 2 s and drops
    /// them.
    async fn greedy_streams(self) {
        loop {
            sleep(Duration::from_secs(5)).await;
            let mut streams = JoinSet::new();
            for _ in 0..8 {
                let req = self
                    .http
                    .request(Method::GET, "/sse/active-users")
                    .header(header::ACCEPT, "text/event-stream")
                    .header(header::AUTHORIZATION, "Bearer soak-attacker")
                    .body(Full::default())
                    .expect("a valid request");
                let (http, counters) = (self.http.clone(), self.counters.clone());
                streams.spawn(async move {
                    match http.send(req).await {
                        Ok(response) if response.status() == StatusCode::OK => {
                            counters.status(FLOOD, response.status());
                            let _open = OpenStream::new(&counters);
                            let hold = Duration::from_secs(2);
                            read_events(response.into_body(), hold, &counters).await;
                        }
                        Ok(response) => counters.status(FLOOD, response.status()),
                        Err(()) => counters.record(FLOOD, FAILED),
                    }
                });
            }
            while streams.join_next().await.is_some() {}
        }
    }

    /// Card writes on the first [`WRITE_BOARDS`] boards; each invalidates
    /// its board.
    async fn write(mut self) {
        let mut tick = interval(Duration::from_secs_f64(1.0 / self.mix.writes));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        for n in 0u64.. {
            tick.tick().await;
            let board = format!("b{}", self.rng.below(self.mix.boards.min(WRITE_BOARDS)));
            let req = self
                .http
                .request(Method::POST, &format!("/api/boards/{board}/cards"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(
                    json!({"card": format!("soak card {n}")}).to_string(),
                )))
                .expect("a valid request");
            match self.http.fetch(req).await {
                Ok(response) => self.counters.status(WRITE, response.status()),
                Err(()) => self.counters.record(WRITE, FAILED),
            }
        }
    }

    /// Every `fault_every`, the next fault of [`FAULTS`] for `fault_hold`,
    /// in the middle of the period (so that the load ends without one).
    async fn faults(self, recorder: Recorder) {
        let hold = self.mix.fault_hold.min(self.mix.fault_every);
        let calm = (self.mix.fault_every - hold) / 2;
        for n in 0.. {
            sleep(calm).await;
            let fault = &FAULTS[n % FAULTS.len()];
            recorder.set_fault(fault.name);
            let status = set_fault(&self.http, fault.action, true).await;
            self.record_fault(status);
            sleep(hold).await;
            let status = set_fault(&self.http, fault.action, false).await;
            self.record_fault(status);
            recorder.set_fault("");
            sleep(calm).await;
        }
    }

    fn record_fault(&self, status: Result<StatusCode, ()>) {
        match status {
            Ok(status) => self.counters.status(FAULT, status),
            Err(()) => self.counters.record(FAULT, FAILED),
        }
    }
}

/// Reads an event stream for `hold`, counting its events; returns early
/// when the server ends it.
async fn read_events(mut body: Incoming, hold: Duration, counters: &Counters) {
    let deadline = Instant::now() + hold;
    let mut buf = String::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return,
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(_))) | Ok(None) => {
                counters.ended_by_server.fetch_add(1, Relaxed);
                return;
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = buf.find("\n\n") {
            let block = &buf[..end];
            if block.lines().any(|l| l.starts_with("data:")) {
                counters.events.fetch_add(1, Relaxed);
                if block.lines().any(|l| l == "event: upstream-error") {
                    counters.error_events.fetch_add(1, Relaxed);
                }
            }
            buf.drain(..end + 2);
        }
    }
}

/// What a fault does.
#[derive(Debug, Clone, Copy)]
enum Action {
    /// The demo's upstream fails this share of its calls.
    FailRate(f64),
    /// This switch goes off.
    SwitchOff(&'static str),
}

#[derive(Debug)]
struct Fault {
    name: &'static str,
    action: Action,
}

/// The faults, in turn.
const FAULTS: [Fault; 5] = [
    Fault {
        name: "upstream fails 30 %",
        action: Action::FailRate(0.3),
    },
    Fault {
        name: "sse switched off",
        action: Action::SwitchOff("sse"),
    },
    Fault {
        name: "upstream fails 100 %",
        action: Action::FailRate(1.0),
    },
    Fault {
        name: "cache.active-users off",
        action: Action::SwitchOff("cache.active-users"),
    },
    Fault {
        name: "stack off",
        action: Action::SwitchOff("stack"),
    },
];

/// Starts (`on`) or ends a fault through the admin routes.
async fn set_fault(http: &Http, action: Action, on: bool) -> Result<StatusCode, ()> {
    match action {
        Action::FailRate(rate) => {
            let rate = if on { rate } else { 0.0 };
            let status = http
                .admin_post("/_demo/upstream", &json!({"fail_rate": rate}))
                .await;
            if status == Ok(StatusCode::NOT_FOUND) {
                eprintln!("soak: the demo has no POST /_demo/upstream: no upstream faults");
            }
            status
        }
        Action::SwitchOff(name) => {
            let path = format!("/_herdsman/switches/{name}");
            http.admin_post(&path, &json!({"enabled": !on})).await
        }
    }
}

/// Ends every fault, whatever the load was doing when it stopped.
pub(crate) async fn clear_faults(http: &Http) {
    for fault in &FAULTS {
        let _ = set_fault(http, fault.action, false).await;
    }
}
