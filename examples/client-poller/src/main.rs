//! herdsman-client with many local subscribers of one live URL.
//!
//! ```text
//! cargo run --release -p client-poller -- --url http://127.0.0.1:3000/sse/active-users --subscribers 100 --duration 30s
//! ```
//!
//! Prints one JSON line per change received (`time`, `transport`, `id`,
//! `subscribers`: how many local subscribers got it, `stale`), then a
//! summary: connections opened, events, polls, fallbacks, returns to SSE,
//! and the longest gap between two changes. All subscribers share one
//! connection. Logs (`RUST_LOG`, default `warn`: the fallbacks) go to
//! stderr.

use std::{
    collections::VecDeque,
    process::ExitCode,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use clap::Parser;
use herdsman_client::{Client, Update};
use tokio::{sync::mpsc, time::Instant};

#[derive(Debug, Parser)]
#[command(about = "Subscribe many local subscribers to one live URL over one connection")]
struct Args {
    /// The event stream's URL (herdsman-axum's `/sse/...`: its polling URL
    /// is the same path under `/api/`).
    #[arg(long)]
    url: String,
    /// How many local subscribers.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// How long to run: `500ms`, `30s`, `5m` or `1h`.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or("a unit is needed: ms, s, m or h")?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("not a number: {number:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("unknown unit {unit:?}: ms, s, m or h")),
    }
}

/// One change as the subscribers receive it.
struct Change {
    update: Update,
    at: SystemTime,
    got: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let client = Client::new();
    let (tx, rx) = mpsc::unbounded_channel();
    for _ in 0..args.subscribers {
        let mut subscription = match client.subscribe(&args.url) {
            Ok(s) => s,
            Err(err) => {
                eprintln!("client-poller: {err}");
                return ExitCode::FAILURE;
            }
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(item) = subscription.recv().await {
                match item {
                    Ok(update) => {
                        if tx.send(update).is_err() {
                            break;
                        }
                    }
                    Err(lagged) => eprintln!("client-poller: {lagged}"),
                }
            }
        });
    }
    drop(tx);
    let longest_gap = collect(rx, args.subscribers, args.duration).await;
    let stats = client.stats();
    println!(
        "{{\"summary\":{{\"subscribers\":{},\"connections\":{},\"events\":{},\"polls\":{},\"fallbacks\":{},\"returns\":{},\"reconnects\":{},\"bytes\":{},\"longest_gap_ms\":{}}}}}",
        args.subscribers,
        stats.connects,
        stats.events,
        stats.polls,
        stats.fallbacks,
        stats.returns,
        stats.reconnects,
        stats.bytes,
        longest_gap.as_millis(),
    );
    ExitCode::SUCCESS
}

/// Prints each change once every subscriber has it (or when the run
/// ends), and returns the longest gap between two changes (the first
/// counts from the start).
async fn collect(
    mut rx: mpsc::UnboundedReceiver<Update>,
    subscribers: usize,
    run: Duration,
) -> Duration {
    let end = Instant::now() + run;
    let mut pending: VecDeque<Change> = VecDeque::new();
    let (mut last, mut longest) = (Instant::now(), Duration::ZERO);
    loop {
        let update = tokio::select! {
            update = rx.recv() => match update { Some(u) => u, None => break },
            () = tokio::time::sleep_until(end) => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        match pending
            .iter_mut()
            .find(|c| c.update.sequence() == update.sequence())
        {
            Some(change) => change.got += 1,
            None => {
                let now = Instant::now();
                longest = longest.max(now - last);
                last = now;
                pending.push_back(Change {
                    update,
                    at: SystemTime::now(),
                    got: 1,
                });
            }
        }
        while pending.front().is_some_and(|c| c.got >= subscribers) {
            print(&pending.pop_front().expect("just seen"));
        }
    }
    longest = longest.max(Instant::now() - last);
    pending.iter().for_each(print);
    longest
}

fn print(change: &Change) {
    let u = &change.update;
    // Written by hand to keep the fields in the order a reader expects.
    println!(
        "{{\"time\":\"{}\",\"transport\":\"{}\",\"id\":{},\"subscribers\":{},\"stale\":{}}}",
        rfc3339(change.at),
        u.transport(),
        serde_json::Value::from(u.id()),
        change.got,
        u.is_stale(),
    );
}

/// `2026-12-04T21:55:00.123Z`.
fn rfc3339(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (days, secs) = (since.as_secs() / 86_400, since.as_secs() % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        since.subsec_millis()
    )
}
