//! Storm: 10,000 concurrent identical requests on a 50 ms inner call.
//!
//! Each request is its own task (`tokio::spawn`, from a task on the runtime),
//! wrapped in a poll counter, on a current_thread runtime and on a 2-worker
//! multi_thread runtime. For each peer the table gives the inner calls made,
//! the most polls any caller took, and the wall time from the first spawn to
//! the last caller's answer, split into: when the first inner call started,
//! how long it took, and the fan-out (from its end to the last answer).
//!
//! ```text
//! cargo bench -p herdsman-bench --bench storm
//! ```
//!
//! Without `--bench` (as under `cargo test --benches`) it runs a small smoke
//! version.

use std::time::{Duration, Instant};

use herdsman_bench::{
    peers::Peer,
    probe::{count_polls, Upstream},
};
use tokio::runtime::Runtime;
use tower::ServiceExt;

mod support;

use support::{Flavor, Settings};

const KEY: u64 = 7;
const INNER_CALL: Duration = Duration::from_millis(50);

/// One storm, measured.
struct Storm {
    calls: usize,
    ok: usize,
    max_polls: u64,
    /// First spawn to the first inner call's start.
    call_started: Duration,
    /// Duration of the first inner call (50 ms asked, rounded up by the timer).
    call_took: Duration,
    /// End of the first inner call to the last answer.
    fan_out: Duration,
    /// First spawn to the last answer.
    wall: Duration,
}

fn storm(rt: &Runtime, peer: Peer, callers: usize) -> Storm {
    let upstream = Upstream::new(INNER_CALL);
    let svc = peer.wrap(upstream.clone());
    let run = async move {
        let start = Instant::now();
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let call = count_polls(svc.clone().oneshot(KEY));
                tokio::spawn(async move {
                    let (res, polls) = call.await;
                    (res, polls, Instant::now())
                })
            })
            .collect();
        let mut ok = 0;
        let mut max_polls = 0;
        let mut last = start;
        for task in tasks {
            let (res, polls, answered) = task.await.expect("caller task panicked");
            ok += usize::from(res.is_ok());
            max_polls = max_polls.max(polls);
            last = last.max(answered);
        }
        let call_started = upstream.first_started().expect("a call started");
        let call_finished = upstream.first_finished().expect("a call finished");
        Storm {
            calls: upstream.calls(),
            ok,
            max_polls,
            call_started: call_started - start,
            call_took: call_finished - call_started,
            fan_out: last.saturating_duration_since(call_finished),
            wall: last - start,
        }
    };
    rt.block_on(rt.spawn(run)).expect("storm task panicked")
}

fn main() {
    let settings = Settings::from_args();
    let peers = [
        Peer::Herdsman,
        Peer::TowerResilience,
        Peer::AsyncSingleflight,
        Peer::Bare,
    ];
    let limit = INNER_CALL.mul_f64(1.15);
    println!(
        "\n## storm: {} concurrent identical requests, inner call {} ms, {} runs each (after 1 warm-up)\n",
        settings.callers,
        INNER_CALL.as_millis(),
        settings.runs
    );
    println!(
        "Each run: wall = first inner call started + inner call took + fan-out after it \
         (times from the first spawn). Those three columns are medians over the runs.\n"
    );
    println!(
        "| runtime | peer | inner calls | Ok answers | max polls of a caller \
         | first inner call started | inner call took | fan-out after it | wall, median (min–max) \
         | median / 50 ms | runs ≤ {} |",
        support::ms(limit)
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut raw = Vec::new();
    for flavor in Flavor::ALL {
        for peer in peers {
            if !settings.wants(&format!("{} {}", flavor.name(), peer.name())) {
                continue;
            }
            let rt = flavor.runtime();
            storm(&rt, peer, settings.callers);
            let runs: Vec<Storm> = (0..settings.runs)
                .map(|_| storm(&rt, peer, settings.callers))
                .collect();
            let walls: Vec<Duration> = runs.iter().map(|r| r.wall).collect();
            let (median, min, max) = support::median_min_max(&walls);
            let started: Vec<Duration> = runs.iter().map(|r| r.call_started).collect();
            let took: Vec<Duration> = runs.iter().map(|r| r.call_took).collect();
            let fan_out: Vec<Duration> = runs.iter().map(|r| r.fan_out).collect();
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} ({}–{}) | {:.2}× | {}/{} |",
                flavor.name(),
                peer.name(),
                support::range(runs.iter().map(|r| r.calls)),
                support::range(runs.iter().map(|r| r.ok)),
                runs.iter().map(|r| r.max_polls).max().unwrap_or(0),
                support::ms(support::median_min_max(&started).0),
                support::ms(support::median_min_max(&took).0),
                support::ms(support::median_min_max(&fan_out).0),
                support::ms(median),
                support::ms(min),
                support::ms(max),
                median.as_secs_f64() / INNER_CALL.as_secs_f64(),
                walls.iter().filter(|wall| **wall <= limit).count(),
                walls.len(),
            );
            raw.push((flavor, peer, walls));
        }
    }
    println!("\nWall time of each run, in order:\n");
    for (flavor, peer, walls) in raw {
        println!(
            "- {}, {}: {}",
            flavor.name(),
            peer.name(),
            support::ms_list(&walls)
        );
    }
}
