//! What every scenario shares: the bounds, the latency recorder, the
//! upstream-call counter, the progress line, and the processes' CPU and
//! memory read from /proc.

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use http::Uri;
use serde_json::Value;

use crate::net::{self, Answer, HttpClient};

/// The longest load.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(3600);
/// The most requests one load sends, whatever its duration.
pub(crate) const MAX_REQUESTS: u64 = 20_000_000;
/// The most concurrent connections, streams or hooks of one load.
pub(crate) const MAX_CONCURRENCY: u64 = 100_000;

/// Checks a load's size against the bounds above.
pub(crate) fn bounded(duration: Duration, concurrency: u64) -> Result<(), String> {
    if duration.is_zero() || duration > MAX_DURATION {
        return Err(format!(
            "a load runs for more than 0 s and at most {} s",
            MAX_DURATION.as_secs()
        ));
    }
    if concurrency == 0 || concurrency > MAX_CONCURRENCY {
        return Err(format!(
            "a load has from 1 to {MAX_CONCURRENCY} concurrent connections or hooks"
        ));
    }
    Ok(())
}

/// A count of requests shared by a load's tasks, which stop once it
/// reaches [`MAX_REQUESTS`].
#[derive(Debug, Default)]
pub(crate) struct Budget(AtomicU64);

impl Budget {
    /// Takes one request from the budget: false once it is spent.
    pub(crate) fn take(&self) -> bool {
        self.0.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS
    }
}

/// A latency histogram in microseconds, from 1 µs to a minute, 3 digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// Latencies and outcomes of one target's requests.
#[derive(Debug)]
pub(crate) struct Recorder {
    /// Answered requests' latencies, in µs.
    pub(crate) latency: Histogram<u64>,
    /// Answers by status.
    pub(crate) statuses: BTreeMap<u16, u64>,
    /// Requests that got no answer, by reason.
    pub(crate) failures: BTreeMap<String, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            latency: histogram(),
            statuses: BTreeMap::new(),
            failures: BTreeMap::new(),
        }
    }
}

impl Recorder {
    /// Records one request that took `took`.
    pub(crate) fn record(&mut self, result: &Result<Answer, String>, took: Duration) {
        match result {
            Ok(answer) => {
                let _ = self.latency.record(micros(took));
                *self.statuses.entry(answer.status.as_u16()).or_default() += 1;
            }
            Err(reason) => *self.failures.entry(reason.clone()).or_default() += 1,
        }
    }

    /// Every request recorded.
    pub(crate) fn requests(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.failures.values().sum::<u64>()
    }

    /// Answers with a 2xx or 304 status.
    pub(crate) fn ok(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(&s, _)| (200..300).contains(&s) || s == 304)
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests that got no answer or an answer other than 2xx and 304.
    pub(crate) fn errors(&self) -> u64 {
        self.requests() - self.ok()
    }
}

/// A [`Recorder`] shared by a load's tasks, with a lock-free count for the
/// progress line.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    recorder: Mutex<Recorder>,
    pub(crate) count: AtomicU64,
}

impl Shared {
    pub(crate) fn record(&self, result: &Result<Answer, String>, took: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.recorder
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(result, took);
    }

    pub(crate) fn take(self) -> Recorder {
        self.recorder
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Where upstream calls are counted: the app's stats (the sum of every
/// class's `upstream_calls`), or a URL answering a JSON object of counts
/// (the demo's `--upstream-only` `GET /upstream/calls`), summed.
#[derive(Debug, Clone)]
pub(crate) enum UpstreamCounter {
    Stats { uri: Uri, token: Option<String> },
    Calls { uri: Uri },
}

impl UpstreamCounter {
    pub(crate) fn new(
        target: &Uri,
        calls_url: Option<&str>,
        token: Option<String>,
        allow_remote: bool,
    ) -> Result<Self, String> {
        Ok(match calls_url {
            Some(url) => UpstreamCounter::Calls {
                uri: net::target(url, allow_remote)?,
            },
            None => UpstreamCounter::Stats {
                uri: net::join(target, "/_herdsman/stats")?,
                token,
            },
        })
    }

    /// Where the counts come from, for the report.
    pub(crate) fn source(&self) -> String {
        match self {
            UpstreamCounter::Stats { uri, .. } => format!("the app's stats ({uri})"),
            UpstreamCounter::Calls { uri } => format!("the upstream's own count ({uri})"),
        }
    }

    /// Upstream calls so far.
    pub(crate) async fn calls(&self, client: &HttpClient) -> Result<u64, String> {
        match self {
            UpstreamCounter::Stats { uri, token } => {
                let doc = net::get_json(client, uri, token.as_deref()).await?;
                let endpoints = doc
                    .get("endpoints")
                    .and_then(Value::as_object)
                    .ok_or_else(|| format!("{uri}: not a herdsman stats document"))?;
                Ok(endpoints
                    .values()
                    .filter_map(|e| e.get("upstream_calls").and_then(Value::as_u64))
                    .sum())
            }
            UpstreamCounter::Calls { uri } => {
                let doc = net::get_json(client, uri, None).await?;
                let counts = doc
                    .as_object()
                    .ok_or_else(|| format!("{uri}: not a JSON object of counts"))?;
                Ok(counts.values().filter_map(Value::as_u64).sum())
            }
        }
    }
}

/// A point of the requests-against-upstream-calls chart.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// Seconds since the load started.
    pub(crate) at: f64,
    /// Client requests sent so far.
    pub(crate) requests: u64,
    /// Upstream calls so far, since the load started.
    pub(crate) upstream: u64,
}

/// Samples the requests sent and the upstream calls once a second until
/// `until`, in a task of its own.
pub(crate) fn sample_series(
    client: HttpClient,
    counter: UpstreamCounter,
    sent: Arc<dyn Fn() -> u64 + Send + Sync>,
    base: u64,
    until: tokio::time::Instant,
) -> tokio::task::JoinHandle<Vec<Sample>> {
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let mut series = vec![Sample {
            at: 0.0,
            requests: 0,
            upstream: 0,
        }];
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            let now = tick.tick().await;
            if now > until {
                break;
            }
            if let Ok(calls) = counter.calls(&client).await {
                series.push(Sample {
                    at: now.duration_since(start).as_secs_f64(),
                    requests: sent(),
                    upstream: calls.saturating_sub(base),
                });
            }
        }
        series
    })
}

/// A one-line progress display on stderr, only when stderr is a terminal.
#[derive(Debug)]
pub(crate) struct Progress(Option<tokio::task::JoinHandle<()>>);

impl Progress {
    /// Shows `label`, the time elapsed of `total` and what `status` says,
    /// five times a second.
    pub(crate) fn start(
        label: &'static str,
        total: Duration,
        status: impl Fn() -> String + Send + 'static,
    ) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let start = Instant::now();
        Progress(Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let done = start.elapsed().as_secs_f64() / total.as_secs_f64();
                let filled = ((done.min(1.0)) * 30.0) as usize;
                let _ = write!(
                    std::io::stderr().lock(),
                    "\r\x1b[2K{label} [{}{}] {:>5.1}/{} s  {}",
                    "#".repeat(filled),
                    "-".repeat(30 - filled),
                    start.elapsed().as_secs_f64().min(total.as_secs_f64()),
                    total.as_secs(),
                    status()
                );
            }
        })))
    }

    /// Stops the display and clears its line.
    pub(crate) fn finish(self) {
        if let Some(task) = self.0 {
            task.abort();
            let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
        }
    }
}

/// A process's CPU time and resident memory, from /proc.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcSample {
    pub(crate) cpu: Duration,
    pub(crate) rss_bytes: u64,
}

/// Reads `/proc/PID/stat` and `/proc/PID/status` (`pid` `None`: this
/// process). CPU time is user plus system, in clock ticks of 1/100 s (the
/// kernel's `USER_HZ` on every Linux architecture we run on).
pub(crate) fn proc_sample(pid: Option<u32>) -> Result<ProcSample, String> {
    let dir = pid.map_or_else(|| "/proc/self".to_owned(), |p| format!("/proc/{p}"));
    let stat =
        std::fs::read_to_string(format!("{dir}/stat")).map_err(|e| format!("{dir}/stat: {e}"))?;
    // The command name may hold spaces and parentheses: the fields start
    // after the last ')'. Fields 14 and 15 (utime, stime) are the 12th and
    // 13th after it.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let (utime, stime) = ticks(11)
        .zip(ticks(12))
        .ok_or_else(|| format!("{dir}/stat: unexpected format"))?;
    let status = std::fs::read_to_string(format!("{dir}/status"))
        .map_err(|e| format!("{dir}/status: {e}"))?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    Ok(ProcSample {
        cpu: Duration::from_millis((utime + stime) * 10),
        rss_bytes: rss_kb * 1024,
    })
}

/// The CPU both processes used over a load: this one and, with `--pid`,
/// the server.
#[derive(Debug)]
pub(crate) struct CpuWatch {
    pid: Option<u32>,
    start: Instant,
    own: Option<ProcSample>,
    server: Option<ProcSample>,
}

impl CpuWatch {
    pub(crate) fn start(pid: Option<u32>) -> CpuWatch {
        CpuWatch {
            pid,
            start: Instant::now(),
            own: proc_sample(None).ok(),
            server: pid.and_then(|p| proc_sample(Some(p)).ok()),
        }
    }

    /// A markdown table of both processes' CPU since the start.
    pub(crate) fn markdown(&self) -> String {
        let wall = self.start.elapsed().as_secs_f64();
        let line = |name: &str, before: Option<ProcSample>, pid: Option<u32>| match (
            before,
            proc_sample(pid),
        ) {
            (Some(before), Ok(now)) => {
                let cpu = now.cpu.saturating_sub(before.cpu).as_secs_f64();
                format!(
                    "| {name} | {cpu:.1} s | {:.0} % | {:.1} MB |\n",
                    100.0 * cpu / wall,
                    now.rss_bytes as f64 / 1e6
                )
            }
            (_, Err(e)) => format!("| {name} | unknown: {e} | | |\n"),
            (None, Ok(_)) => format!("| {name} | unknown | | |\n"),
        };
        let mut out = format!(
            "| process | CPU time | of one core over {wall:.1} s | RSS at the end |\n|---|---:|---:|---:|\n"
        );
        out.push_str(&line("load tool (this process)", self.own, None));
        match self.pid {
            Some(pid) => out.push_str(&line(
                &format!("server (pid {pid})"),
                self.server,
                Some(pid),
            )),
            None => out.push_str("| server | not measured: give its --pid | | |\n"),
        }
        out
    }
}
