//! `herdsman load sse`: many event streams, each with its own identity
//! (`Authorization: Bearer sse-N`) and spread over source addresses in
//! 127.0.0.0/8 (a server budgets streams per caller and per client
//! address), opened in steps. After each step, and every `--change-every`
//! while they are held, one change (`--change METHOD URL BODY`) is made
//! and its fan-out latency measured: from the change's request to each
//! stream's next event. Events are read with `herdsman-client`'s parser.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::Duration,
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use herdsman_client::event_stream::Parser;
use http::{header, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::{body::Incoming, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use tokio::{
    net::TcpSocket,
    sync::{watch, OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

use super::{
    chart::{self, FanOutPoint},
    engine::{self, CpuWatch, Progress, UpstreamCounter},
    report::{Chart, Report},
    Common,
};
use crate::net::{self, HttpClient};

mod outcome;

#[derive(Debug, clap::Args)]
pub(crate) struct SseArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// The event stream's path
    #[arg(long, default_value = "/sse/active-users")]
    path: String,
    /// Event streams to open, each with its own identity
    #[arg(long, default_value_t = 10_000)]
    connections: u64,
    /// How long the streams are held once all are open
    #[arg(long, default_value = "60s", value_parser = net::duration)]
    duration: Duration,
    /// A request that changes what the streams follow, made after each
    /// step and every --change-every: METHOD URL BODY (URL may be a path on
    /// the target). Pick a resource nothing else changes (the demo's active
    /// users churn on their own; a board's events do not)
    #[arg(long, num_args = 3, value_names = ["METHOD", "URL", "BODY"])]
    change: Option<Vec<String>>,
    /// How often the change is made while the streams are held
    #[arg(long, default_value = "10s", value_parser = net::duration)]
    change_every: Duration,
    /// Open the streams in this many equal steps, with one change after
    /// each (the fan-out latency against connections)
    #[arg(long, default_value_t = 4)]
    steps: u64,
    /// Source addresses to spread the streams over (127.0.0.1, 127.0.0.2,
    /// ...) [default: one per 200 streams]
    #[arg(long)]
    addresses: Option<u64>,
    /// Count upstream calls from this URL (a JSON object of counts) instead
    /// of the app's stats
    #[arg(long, value_name = "URL")]
    upstream_calls: Option<String>,
}

/// How long a step waits for its streams' first events.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a change waits to reach every stream.
const FAN_OUT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections being opened at once.
const OPENING: usize = 256;
/// Descriptors kept for what is not a stream (the client's pool, files).
const FD_MARGIN: u64 = 256;

/// What every stream shares: where it goes and how it identifies itself.
struct Spec {
    addr: SocketAddr,
    host: HeaderValue,
    path: String,
    addresses: u64,
}

impl Spec {
    /// The source address of stream `i`: one of `addresses` in 127.0.0.0/8
    /// from 127.0.0.1, or the system's choice.
    fn source(&self, i: u64) -> Option<IpAddr> {
        let loopback_v4 = matches!(self.addr.ip(), IpAddr::V4(ip) if ip.is_loopback());
        (loopback_v4 && self.addresses > 1).then(|| {
            let n = u32::try_from(i % self.addresses).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 1)) + n))
        })
    }
}

/// What the streams record, shared.
pub(crate) struct Board {
    /// When each change was sent.
    changes: Mutex<Vec<Instant>>,
    /// Per change: the fan-out latency (µs) of each stream it reached.
    fan_out: Mutex<Vec<Histogram<u64>>>,
    /// From the start of a connection to its first event (µs).
    first_event: Mutex<Histogram<u64>>,
    /// Streams that got their first event.
    connected: AtomicU64,
    /// Streams that connected or failed: a step waits for all of its own.
    settled: AtomicU64,
    /// Streams that failed before their first event, by reason.
    failed: Mutex<BTreeMap<String, u64>>,
    /// Streams that ended (or failed) after their first event, before the
    /// load ended them.
    dropped: AtomicU64,
    /// Value events received.
    events: AtomicU64,
    /// `upstream-error` events received.
    error_events: AtomicU64,
    /// The stream's `retry:` (the server's poll interval).
    retry: Mutex<Option<Duration>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Board {
    fn new() -> Board {
        Board {
            changes: Mutex::new(Vec::new()),
            fan_out: Mutex::new(Vec::new()),
            first_event: Mutex::new(engine::histogram()),
            connected: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            failed: Mutex::new(BTreeMap::new()),
            dropped: AtomicU64::new(0),
            events: AtomicU64::new(0),
            error_events: AtomicU64::new(0),
            retry: Mutex::new(None),
        }
    }

    fn fail(&self, why: String) {
        *lock(&self.failed).entry(why).or_default() += 1;
        self.settled.fetch_add(1, Ordering::Relaxed);
    }

    /// Streams open now.
    fn live(&self) -> u64 {
        self.connected
            .load(Ordering::Relaxed)
            .saturating_sub(self.dropped.load(Ordering::Relaxed))
    }

    /// A value event reached a stream at `now`; `seen` is how many changes
    /// it has accounted for. The event answers the latest change, if the
    /// stream has not answered it yet.
    fn value(&self, seen: &mut usize, now: Instant) {
        self.events.fetch_add(1, Ordering::Relaxed);
        let (k, sent) = {
            let changes = lock(&self.changes);
            if changes.len() <= *seen {
                return;
            }
            *seen = changes.len();
            (changes.len() - 1, changes[changes.len() - 1])
        };
        let _ = lock(&self.fan_out)[k].record(engine::micros(now.saturating_duration_since(sent)));
    }
}

pub(crate) async fn run(args: &SseArgs) -> Result<Report, String> {
    engine::bounded(args.duration, args.connections)?;
    if args.steps == 0 || args.steps > args.connections {
        return Err("--steps is from 1 to --connections".to_owned());
    }
    let (connections, fd_note) = raise_open_files(args.connections);
    let base = args.common.base()?;
    let spec = Arc::new(spec(args, &base, connections).await?);
    let change = args
        .change
        .as_deref()
        .map(|c| Change::new(c, &base, args.common.allow_remote))
        .transpose()?;
    let counter = UpstreamCounter::new(
        &base,
        args.upstream_calls.as_deref(),
        args.common.token.clone(),
        args.common.allow_remote,
    )?;
    let client = net::client(8);
    let cpu = CpuWatch::start(args.common.pid);
    let mut rss = RssWatch::start(args.common.pid);
    let board = Arc::new(Board::new());
    let (stop, stopped) = watch::channel(false);
    let progress = {
        let board = board.clone();
        Progress::start("sse", args.duration, move || {
            format!(
                "{} streams open, {} events",
                board.live(),
                board.events.load(Ordering::Relaxed)
            )
        })
    };
    let mut points = Vec::new();
    let ramp = Ramp {
        spec: spec.clone(),
        board: board.clone(),
        stopped,
        steps: args.steps,
        connections,
    };
    ramp.run(&client, change.as_ref(), &mut points).await?;
    rss.held();
    let hold = hold(
        args,
        &client,
        &counter,
        change.as_ref(),
        &board,
        &mut rss,
        &mut points,
    )
    .await?;
    let _ = stop.send(true);
    progress.finish();
    let outcome = outcome::Outcome {
        args,
        uri: format!("http://{}{}", spec.addr, spec.path),
        connections,
        addresses: spec.addresses,
        fd_note,
        board: &board,
        points: &points,
        hold,
        rss,
        cpu: cpu.markdown(),
    };
    Ok(Report {
        markdown: outcome.markdown(),
        charts: charts(args, connections, &board, &points)?,
    })
}

fn charts(
    args: &SseArgs,
    connections: u64,
    board: &Board,
    points: &[FanOutPoint],
) -> Result<Vec<Chart>, String> {
    let mut charts = Vec::new();
    if !points.is_empty() {
        charts.push(Chart {
            name: "fan-out",
            title: "sse: fan-out latency against open streams".to_owned(),
            svg: chart::fan_out(
                &format!("one change to up to {connections} event streams: fan-out latency"),
                points,
            )?,
        });
    }
    charts.push(Chart {
        name: "first-event",
        title: "sse: time to first event".to_owned(),
        svg: chart::latency(
            "time from connecting to the first event",
            &[(args.path.as_str(), &lock(&board.first_event))],
        )?,
    });
    Ok(charts)
}

/// Raises this process's open-file limit to hold `connections` streams;
/// when it cannot, says so on stderr and in the report, and holds as many
/// as the limit allows.
fn raise_open_files(connections: u64) -> (u64, String) {
    let want = connections + FD_MARGIN;
    let now = match rlimit::increase_nofile_limit(want) {
        Ok(now) => now,
        Err(e) => {
            let note = format!(
                "could not be read or raised ({e}): holding all {connections} streams may fail"
            );
            eprintln!("herdsman load sse: the open-file limit {note}");
            return (connections, note);
        }
    };
    if now >= want {
        return (
            connections,
            format!("{now}: enough for {connections} streams"),
        );
    }
    let fits = now.saturating_sub(FD_MARGIN).max(1);
    let note = format!(
        "{now}, its hard limit: {connections} streams need {want}; holding {fits}. \
         Raise the hard limit (`ulimit -Hn`, systemd's LimitNOFILE) to hold them all"
    );
    eprintln!("herdsman load sse: CANNOT raise the open-file limit: {note}");
    (fits, note)
}

async fn spec(args: &SseArgs, base: &Uri, connections: u64) -> Result<Spec, String> {
    let host = base.host().unwrap_or_default();
    let port = base.port_u16().unwrap_or(80);
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("{host}: {e}"))?
        .collect();
    let addr = resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| format!("{host}: no address"))?;
    if !args.common.allow_remote && !addr.ip().is_loopback() {
        return Err(format!(
            "{host} resolves to {}, not a loopback address",
            addr.ip()
        ));
    }
    let authority = base.authority().map_or(host, |a| a.as_str());
    Ok(Spec {
        addr,
        host: HeaderValue::try_from(authority).map_err(|e| e.to_string())?,
        path: net::join(base, &args.path)?
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned(),
        addresses: args
            .addresses
            .unwrap_or(connections.div_ceil(200))
            .clamp(1, 65_536),
    })
}

/// Opens the streams in steps, measuring a change after each.
struct Ramp {
    spec: Arc<Spec>,
    board: Arc<Board>,
    stopped: watch::Receiver<bool>,
    steps: u64,
    connections: u64,
}

impl Ramp {
    async fn run(
        self,
        client: &HttpClient,
        change: Option<&Change>,
        points: &mut Vec<FanOutPoint>,
    ) -> Result<(), String> {
        let opening = Arc::new(Semaphore::new(OPENING));
        let mut spawned = 0;
        for step in 1..=self.steps {
            let until = self.connections * step / self.steps;
            for i in spawned..until {
                let permit = opening.clone().acquire_owned().await.expect("never closed");
                let (spec, board) = (self.spec.clone(), self.board.clone());
                tokio::spawn(stream(spec, i, board, self.stopped.clone(), permit));
            }
            spawned = until;
            settle(&self.board, until).await;
            if let Some(change) = change {
                points.push(change.measure(client, &self.board).await?);
            }
        }
        Ok(())
    }
}

/// Waits until `count` streams have connected or failed, at most
/// [`OPEN_TIMEOUT`] after the last one settled.
async fn settle(board: &Board, count: u64) {
    let mut last = (board.settled.load(Ordering::Relaxed), Instant::now());
    while last.0 < count && last.1.elapsed() < OPEN_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let settled = board.settled.load(Ordering::Relaxed);
        if settled != last.0 {
            last = (settled, Instant::now());
        }
    }
}

/// The hold: `--duration` with the streams open, a change every
/// `--change-every`, the server's memory sampled each second.
async fn hold(
    args: &SseArgs,
    client: &HttpClient,
    counter: &UpstreamCounter,
    change: Option<&Change>,
    board: &Board,
    rss: &mut RssWatch,
    points: &mut Vec<FanOutPoint>,
) -> Result<outcome::Hold, String> {
    let before = counter.calls(client).await.map_err(|e| {
        format!("cannot count upstream calls: {e} (give --token, or --upstream-calls URL)")
    })?;
    let start = Instant::now();
    let end = start + args.duration;
    let mut next_change = start + args.change_every;
    let mut changes = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while tick.tick().await < end {
        rss.sample();
        if let Some(change) = change.filter(|_| Instant::now() >= next_change) {
            points.push(change.measure(client, board).await?);
            changes += 1;
            next_change += args.change_every;
        }
    }
    let after = counter.calls(client).await?;
    Ok(outcome::Hold {
        length: start.elapsed(),
        upstream: after.saturating_sub(before),
        source: counter.source(),
        changes,
    })
}

/// The `--change` request.
struct Change {
    method: Method,
    uri: Uri,
    body: Bytes,
}

impl Change {
    fn new(parts: &[String], base: &Uri, allow_remote: bool) -> Result<Change, String> {
        let [method, url, body] = parts else {
            return Err("--change takes METHOD URL BODY".to_owned());
        };
        let uri = if url.starts_with('/') {
            net::join(base, url)?
        } else {
            net::target(url, allow_remote)?
        };
        Ok(Change {
            method: method
                .parse()
                .map_err(|_| format!("{method:?} is not a method"))?,
            uri,
            body: Bytes::from(body.clone()),
        })
    }

    /// Makes the change and waits until every open stream has had an
    /// event since (or [`FAN_OUT_TIMEOUT`]): one point of the chart.
    async fn measure(&self, client: &HttpClient, board: &Board) -> Result<FanOutPoint, String> {
        let k = {
            let mut changes = lock(&board.changes);
            lock(&board.fan_out).push(engine::histogram());
            changes.push(Instant::now());
            changes.len() - 1
        };
        let json = (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let answer = net::send(
            client,
            self.method.clone(),
            self.uri.clone(),
            &[json],
            self.body.clone(),
        )
        .await
        .map_err(|e| format!("{} {}: {e}", self.method, self.uri))?;
        if !answer.status.is_success() {
            return Err(format!("{} {}: {}", self.method, self.uri, answer.status));
        }
        let deadline = Instant::now() + FAN_OUT_TIMEOUT;
        while (lock(&board.fan_out)[k].len()) < board.live() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let h = lock(&board.fan_out)[k].clone();
        let ms = |us: u64| us as f64 / 1000.0;
        Ok(FanOutPoint {
            connections: board.live(),
            reached: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        })
    }
}

/// One stream: opens it, reads its events until the load stops it.
async fn stream(
    spec: Arc<Spec>,
    i: u64,
    board: Arc<Board>,
    mut stopped: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
) {
    let began = Instant::now();
    let opened = tokio::time::timeout(OPEN_TIMEOUT, open(&spec, i)).await;
    drop(permit);
    let (_sender, mut body) = match opened {
        Ok(Ok(open)) => open,
        Ok(Err(why)) => return board.fail(why),
        Err(_) => return board.fail(format!("no answer within {} s", OPEN_TIMEOUT.as_secs())),
    };
    let mut parser = Parser::new();
    let mut seen: Option<usize> = None;
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            _ = stopped.changed() => return,
        };
        let Some(Ok(frame)) = frame else { break };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let now = Instant::now();
        let Ok(events) = parser.feed(data) else { break };
        for event in events {
            if event.event_type() != "message" {
                board.error_events.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            match &mut seen {
                Some(seen) => board.value(seen, now),
                None => {
                    // Changes made before the stream opened are not its to answer.
                    seen = Some(lock(&board.changes).len());
                    let _ = lock(&board.first_event).record(engine::micros(now - began));
                    *lock(&board.retry) = parser.retry();
                    board.events.fetch_add(1, Ordering::Relaxed);
                    board.connected.fetch_add(1, Ordering::Relaxed);
                    board.settled.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    if seen.is_some() {
        board.dropped.fetch_add(1, Ordering::Relaxed);
    } else {
        board.fail("the stream ended before its first event".to_owned());
    }
}

/// Connects from stream `i`'s source address and sends its request.
async fn open(spec: &Spec, i: u64) -> Result<(SendRequest<Empty<Bytes>>, Incoming), String> {
    let socket = match spec.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| format!("socket: {e}"))?;
    if let Some(source) = spec.source(i) {
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| format!("bind {source}: {e}"))?;
    }
    let tcp = socket
        .connect(spec.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| net::error_chain(&e))?;
    tokio::spawn(connection);
    let request = Request::get(spec.path.as_str())
        .header(header::HOST, spec.host.clone())
        .header(header::ACCEPT, "text/event-stream")
        .header(header::AUTHORIZATION, format!("Bearer sse-{i}"))
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| net::error_chain(&e))?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    Ok((sender, response.into_body()))
}

/// The server's resident memory: before the streams, once they are all
/// open, and its peak while they are held.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RssWatch {
    pid: Option<u32>,
    pub(crate) before: Option<u64>,
    pub(crate) held: Option<u64>,
    pub(crate) peak: Option<u64>,
}

impl RssWatch {
    fn start(pid: Option<u32>) -> RssWatch {
        let now = Self::read(pid);
        RssWatch {
            pid,
            before: now,
            held: None,
            peak: now,
        }
    }

    fn read(pid: Option<u32>) -> Option<u64> {
        pid.and_then(|pid| engine::proc_sample(Some(pid)).ok())
            .map(|s| s.rss_bytes)
    }

    fn held(&mut self) {
        self.held = Self::read(self.pid);
        self.sample();
    }

    fn sample(&mut self) {
        if let Some(now) = Self::read(self.pid) {
            self.peak = Some(self.peak.map_or(now, |p| p.max(now)));
        }
    }
}
