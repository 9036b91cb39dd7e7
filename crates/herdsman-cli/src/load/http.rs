//! `herdsman load http`: closed-loop GETs on `--connections` connections,
//! throughput and latency; with `--compare`, the second route runs in
//! rounds interleaved with the first (A, B, A, B, ... of `--round` each,
//! after one unrecorded warm-up round of each), so that both see the same
//! machine, and the report gives their ratios.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Uri};
use tokio::time::Instant;

use super::{
    chart,
    engine::{self, Budget, CpuWatch, Progress, Recorder, Shared},
    report::{self, Chart, Report},
    Common,
};
use crate::net::{self, HttpClient};

#[derive(Debug, clap::Args)]
pub(crate) struct HttpArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// The route loaded
    #[arg(long, default_value = "/api/active-users")]
    path: String,
    /// Concurrent connections, each sending its next request as soon as the
    /// last is answered
    #[arg(long, default_value_t = 64)]
    connections: u64,
    /// How long the load runs (split evenly between the routes with --compare)
    #[arg(long, default_value = "20s", value_parser = net::duration)]
    duration: Duration,
    /// A second route (a path on the target, or a URL) run in interleaved
    /// rounds, such as the demo's /bare/static
    #[arg(long, value_name = "PATH|URL")]
    compare: Option<String>,
    /// The length of one round with --compare
    #[arg(long, default_value = "2s", value_parser = net::duration)]
    round: Duration,
}

/// One route's requests and the time spent on them.
struct Route {
    uri: Uri,
    shared: Arc<Shared>,
    busy: Duration,
}

pub(crate) async fn run(args: &HttpArgs) -> Result<Report, String> {
    engine::bounded(args.duration, args.connections)?;
    if args.round < Duration::from_millis(100) {
        return Err("--round is at least 100ms".to_owned());
    }
    let base = args.common.base()?;
    let mut routes = vec![route(net::join(&base, &args.path)?)];
    if let Some(other) = &args.compare {
        let uri = if other.starts_with('/') {
            net::join(&base, other)?
        } else {
            net::target(other, args.common.allow_remote)?
        };
        routes.push(route(uri));
    }
    let client = net::client(args.connections as usize);
    let budget = Arc::new(Budget::default());
    // Warm-up: connections opened, caches and poll loops filled.
    let warm = args.round.min(Duration::from_secs(1));
    for r in &routes {
        let scratch = Arc::new(Shared::default());
        round(&client, &r.uri, &scratch, &budget, args.connections, warm).await;
    }
    let cpu = CpuWatch::start(args.common.pid);
    let progress = {
        let shareds: Vec<_> = routes.iter().map(|r| r.shared.clone()).collect();
        Progress::start("http", args.duration, move || {
            let n: u64 = shareds
                .iter()
                .map(|s| s.count.load(Ordering::Relaxed))
                .sum();
            format!("{n} requests")
        })
    };
    let mut left = args.duration;
    let mut turn = 0;
    while !left.is_zero() {
        let length = args.round.min(left);
        let count = routes.len();
        let r = &mut routes[turn % count];
        r.busy += round(
            &client,
            &r.uri,
            &r.shared,
            &budget,
            args.connections,
            length,
        )
        .await;
        left -= length;
        turn += 1;
    }
    progress.finish();
    let cpu = cpu.markdown();
    let done: Vec<(Uri, Recorder, Duration)> = routes
        .into_iter()
        .map(|r| {
            let recorder = Arc::into_inner(r.shared)
                .map(Shared::take)
                .unwrap_or_default();
            (r.uri, recorder, r.busy)
        })
        .collect();
    Ok(Report {
        markdown: markdown(args, &done, turn, &cpu),
        charts: vec![chart(args, &done)?],
    })
}

fn chart(args: &HttpArgs, done: &[(Uri, Recorder, Duration)]) -> Result<Chart, String> {
    let names: Vec<String> = done.iter().map(|(uri, ..)| uri.path().to_owned()).collect();
    let series: Vec<(&str, &hdrhistogram::Histogram<u64>)> = names
        .iter()
        .zip(done)
        .map(|(name, (_, r, _))| (name.as_str(), &r.latency))
        .collect();
    Ok(Chart {
        name: "latency",
        title: "http: latency".to_owned(),
        svg: chart::latency(
            &format!("{} connections: latency per route", args.connections),
            &series,
        )?,
    })
}

fn route(uri: Uri) -> Route {
    Route {
        uri,
        shared: Arc::new(Shared::default()),
        busy: Duration::ZERO,
    }
}

/// `connections` tasks sending GET `uri` back to back for `length`;
/// returns the time until the last answer came back.
async fn round(
    client: &HttpClient,
    uri: &Uri,
    shared: &Arc<Shared>,
    budget: &Arc<Budget>,
    connections: u64,
    length: Duration,
) -> Duration {
    let start = Instant::now();
    let deadline = start + length;
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (client, uri, shared, budget) =
                (client.clone(), uri.clone(), shared.clone(), budget.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline && budget.take() {
                    let sent = Instant::now();
                    let result =
                        net::send(&client, Method::GET, uri.clone(), &[], Bytes::new()).await;
                    shared.record(&result, sent.elapsed());
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    start.elapsed()
}

fn markdown(
    args: &HttpArgs,
    done: &[(Uri, Recorder, Duration)],
    rounds: usize,
    cpu: &str,
) -> String {
    let mut out = format!(
        "# herdsman load http\n\n{} connections, closed loop (each sends its next GET when the last is answered), {} s",
        args.connections,
        args.duration.as_secs_f64()
    );
    if done.len() > 1 {
        out.push_str(&format!(
            " in {rounds} interleaved rounds of {} ms (after one warm-up round of each, not counted)",
            args.round.as_millis()
        ));
    }
    out.push_str(".\n\n| route | requests | errors | time | throughput (answers/s) |\n|---|---:|---:|---:|---:|\n");
    let throughput = |r: &Recorder, busy: &Duration| r.ok() as f64 / busy.as_secs_f64().max(1e-9);
    for (uri, r, busy) in done {
        out.push_str(&format!(
            "| `{uri}` | {} | {} | {:.1} s | {:.0} |\n",
            r.requests(),
            r.errors(),
            busy.as_secs_f64(),
            throughput(r, busy)
        ));
    }
    out.push('\n');
    out.push_str(report::LATENCY_HEADER);
    for (uri, r, _) in done {
        out.push_str(&report::latency_row(
            &format!("`{}`", uri.path()),
            &r.latency,
        ));
    }
    for (uri, r, _) in done {
        out.push_str(&format!(
            "\nOutcomes of `{}`: {}.\n",
            uri.path(),
            report::outcomes(r)
        ));
    }
    out.push_str("\nCPU, both processes on this machine:\n\n");
    out.push_str(cpu);
    if let [(a_uri, a, a_busy), (b_uri, b, b_busy)] = done {
        let ratio = throughput(a, a_busy) / throughput(b, b_busy).max(1e-9);
        let p = |h: &hdrhistogram::Histogram<u64>, q| h.value_at_quantile(q) as f64;
        let p50 = p(&a.latency, 0.5) / p(&b.latency, 0.5).max(1.0);
        let p99 = p(&a.latency, 0.99) / p(&b.latency, 0.99).max(1.0);
        out.push_str(&format!(
            "\n## `{}` against `{}`\n\n| throughput | p50 | p99 |\n|---:|---:|---:|\n| {ratio:.2}× | {p50:.2}× | {p99:.2}× |\n",
            a_uri.path(),
            b_uri.path()
        ));
        out.push_str(&format!(
            "\nTargets (issue 19): throughput at least 0.8× the other's: {}; p99 at most 2× the other's: {}; no errors: {}.\n",
            report::verdict(ratio >= 0.8),
            report::verdict(p99 <= 2.0),
            report::verdict(a.errors() + b.errors() == 0)
        ));
    }
    out
}
