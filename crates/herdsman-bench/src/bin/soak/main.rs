//! Soak: the demo under ten minutes of churn, key floods and faults, its
//! resident memory sampled every second, and every map checked to drain.
//!
//! ```text
//! cargo build --release -p active-users -p herdsman-bench --bin soak
//! nice cargo run --release -p herdsman-bench --bin soak -- --duration 10m --out soak.csv
//! ```
//!
//! A benchmark, not a test: `cargo test` never runs it. It starts the demo
//! (`--demo-bin`, default `target/release/active-users`) as a child on a free
//! port of 127.0.0.1, in production with an admin token of its own, or
//! attaches to a running one (`--url`, `--token`, `--pid` for its memory).
//! Then, for `--duration`:
//!
//! - **stream churn**: `--streams` clients open SSE streams on
//!   `/sse/active-users` and on per-board streams, read a few events and
//!   close at random times;
//! - **pollers**: `--pollers` clients poll the JSON endpoints with
//!   `If-None-Match`, and `/api/me` as one of a few users;
//! - **key floods**: one attacker sends `--flood-rate` requests a second with
//!   distinct query strings, oversized ones, random `Authorization` and
//!   `Cookie` values, and opens more streams than its cap allows;
//! - **writes**: `--writes` card writes a second, each invalidating a board;
//! - **faults**: every `--fault-every`, one fault for `--fault-hold`, in turn:
//!   the upstream failing (`POST /_demo/upstream`), event streams switched
//!   off, a class's cache off, the whole stack off.
//!
//! Every second it samples the demo's `VmRSS` and its stats document, and
//! writes them to `--out` (CSV). At the end it stops the load, clears the
//! faults, and waits (at most `--drain-timeout`) for every map size in the
//! stats document to reach zero. It prints a summary and exits 0 when every
//! check passes, 1 when one fails, 2 when the run could not be made. The
//! checks and their thresholds are in the summary and in
//! `docs/BENCHMARKS.md` (section "Soak").

mod demo;
mod http;
mod load;
mod report;
mod sample;

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use clap::Parser;

use crate::{
    demo::Target,
    http::Http,
    load::{Counters, Mix},
    report::{Criteria, Outcome},
    sample::Recorder,
};

/// The soak run of the demo: churn, floods and faults, memory sampled each
/// second, every map checked to drain. Exit status: 0 pass, 1 a check
/// failed, 2 the run could not be made.
#[derive(Debug, Parser)]
#[command(name = "soak")]
struct Args {
    /// How long the load runs (`10m`, `120s`, `1h`).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    duration: Duration,
    /// The first part of the run, left out of the plateau checks
    /// [default: 1m, at most a third of --duration].
    #[arg(long, value_parser = parse_duration)]
    warmup: Option<Duration>,
    /// The demo's release binary, started as a child.
    #[arg(long, default_value = "target/release/active-users")]
    demo_bin: PathBuf,
    /// Attach to a running demo at this base URL instead of starting one.
    #[arg(long, conflicts_with = "demo_bin")]
    url: Option<String>,
    /// The admin token of the demo given by --url.
    #[arg(long, requires = "url")]
    token: Option<String>,
    /// The process id of the demo given by --url, for its RSS.
    #[arg(long, requires = "url")]
    pid: Option<u32>,
    /// The child demo's simulated upstream latency, in milliseconds.
    #[arg(long, default_value_t = 50)]
    upstream_latency_ms: u64,
    /// Where the child demo's log goes.
    #[arg(long, default_value = "soak-demo.log")]
    demo_log: PathBuf,
    #[command(flatten)]
    mix: Mix,
    #[command(flatten)]
    criteria: Criteria,
    /// How long to wait after the load for the maps to drain.
    #[arg(long, default_value = "150s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// The CSV of the samples, one row a second.
    #[arg(long, default_value = "soak.csv")]
    out: PathBuf,
    /// The seed of the load's random choices [default: from the clock].
    #[arg(long)]
    seed: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return setup_error(&format!("cannot start the runtime: {err}")),
    };
    match runtime.block_on(run(args)) {
        Ok(Outcome::Pass) => ExitCode::SUCCESS,
        Ok(Outcome::Fail) => ExitCode::from(1),
        Err(err) => setup_error(&err),
    }
}

fn setup_error(message: &str) -> ExitCode {
    eprintln!("soak: {message}");
    ExitCode::from(2)
}

async fn run(args: Args) -> Result<Outcome, String> {
    let mut target = match &args.url {
        Some(url) => Target::attach(url, args.token.clone(), args.pid),
        None => Target::start(&args.demo_bin, &args.demo_log, args.upstream_latency_ms)?,
    };
    let http = Http::new(&target.url, target.token.clone());
    http.wait_ready(Duration::from_secs(30)).await?;
    let warmup = args
        .warmup
        .unwrap_or(Duration::from_secs(60).min(args.duration / 3));
    eprintln!(
        "soak: {} for {:?} (warm-up {:?}), pid {}, seed {}",
        target.url,
        args.duration,
        warmup,
        target.pid.map_or("unknown".to_owned(), |p| p.to_string()),
        args.seed
            .map_or("from the clock".to_owned(), |s| s.to_string()),
    );

    let counters = Arc::new(Counters::default());
    let recorder = Recorder::start(http.clone(), target.pid, counters.clone());
    let load = load::start(&args.mix, &http, &counters, &recorder, args.seed);
    let stopped_early = wait_for_end(args.duration, &mut target).await;
    load.stop().await;
    load::clear_faults(&http).await;
    recorder.set_fault("");
    recorder.set_phase("drain");
    let drain = report::drain(&http, &args.criteria, args.drain_timeout).await;
    let samples = recorder.stop().await;
    sample::write_csv(&args.out, &samples)
        .map_err(|e| format!("cannot write {}: {e}", args.out.display()))?;

    let run = report::Run {
        duration: args.duration,
        warmup,
        samples: &samples,
        counters: &counters,
        drain: &drain,
        stopped_early,
        demo_alive: target.alive(),
    };
    let outcome = report::summarize(&run, &args.criteria);
    println!("samples: {} ({} rows)", args.out.display(), samples.len());
    Ok(outcome)
}

/// Waits out the load phase; `Some(reason)` if it ended early (Ctrl-C, or
/// the demo exited).
async fn wait_for_end(duration: Duration, target: &mut Target) -> Option<String> {
    let deadline = tokio::time::Instant::now() + duration;
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return None,
            _ = tokio::signal::ctrl_c() => return Some("interrupted".to_owned()),
            _ = check.tick() => {
                if !target.alive() {
                    return Some("the demo exited".to_owned());
                }
            }
        }
    }
}

/// `500ms`, `90s`, `10m`, `1h`, or a sum of them (`1m30s`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("empty duration".to_owned());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?}: expected a number, then ms, s, m or h"))?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        total += match &rest[..unit] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            other => return Err(format!("{text:?}: unknown unit {other:?} (ms, s, m, h)")),
        };
        rest = &rest[unit..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_sums_of_units() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("5 days").is_err());
        assert!(parse_duration("").is_err());
    }
}
