//! Leader cancelled: the caller driving the inner call is dropped 10 ms in.
//!
//! The first caller starts the 50 ms inner call; 9,999 followers join it; at
//! 10 ms the first caller's task is aborted. All are spawned from a task on
//! the runtime. The table gives, per peer and runtime, how many followers got
//! `Ok`, how many inner calls were made, the most polls any follower took, when
//! the abort actually happened, and the wall time from the first spawn to the
//! last follower's answer.
//!
//! ```text
//! cargo bench -p herdsman-bench --bench leader_cancelled
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
const CANCEL_AT: Duration = Duration::from_millis(10);

/// One run, measured.
struct Run {
    calls: usize,
    ok: usize,
    first_error: Option<String>,
    max_polls: u64,
    cancelled_at: Duration,
    wall: Duration,
}

fn leader_cancelled(rt: &Runtime, peer: Peer, followers: usize) -> Run {
    let upstream = Upstream::new(INNER_CALL);
    let svc = peer.wrap(upstream.clone());
    let run = async move {
        let start = Instant::now();
        let leader = tokio::spawn(svc.clone().oneshot(KEY));
        // The leader leads once its inner call has started.
        while upstream.calls() == 0 {
            tokio::task::yield_now().await;
        }
        let tasks: Vec<_> = (0..followers)
            .map(|_| {
                let call = count_polls(svc.clone().oneshot(KEY));
                tokio::spawn(async move {
                    let (res, polls) = call.await;
                    (res, polls, Instant::now())
                })
            })
            .collect();
        tokio::time::sleep_until((start + CANCEL_AT).into()).await;
        leader.abort();
        let cancelled_at = start.elapsed();
        let leader = leader.await;
        assert!(
            leader.is_err_and(|err| err.is_cancelled()),
            "the leader finished before it was cancelled"
        );
        let mut ok = 0;
        let mut first_error = None;
        let mut max_polls = 0;
        let mut last = start;
        for task in tasks {
            let (res, polls, answered) = task.await.expect("follower task panicked");
            match res {
                Ok(_) => ok += 1,
                Err(err) => {
                    first_error.get_or_insert_with(|| err.to_string());
                }
            }
            max_polls = max_polls.max(polls);
            last = last.max(answered);
        }
        Run {
            calls: upstream.calls(),
            ok,
            first_error,
            max_polls,
            cancelled_at,
            wall: last - start,
        }
    };
    rt.block_on(rt.spawn(run)).expect("scenario task panicked")
}

fn main() {
    let settings = Settings::from_args();
    let followers = settings.callers - 1;
    println!(
        "\n## leader cancelled at {} ms: 1 leader + {} followers, inner call {} ms, {} runs each (after 1 warm-up)\n",
        CANCEL_AT.as_millis(),
        followers,
        INNER_CALL.as_millis(),
        settings.runs
    );
    println!(
        "| runtime | peer | followers Ok | inner calls | max polls of a follower \
         | leader aborted at, median (max) | wall, median (min–max) | followers' error |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---|");
    let mut raw = Vec::new();
    for flavor in Flavor::ALL {
        for peer in Peer::COALESCING {
            if !settings.wants(&format!("{} {}", flavor.name(), peer.name())) {
                continue;
            }
            let rt = flavor.runtime();
            leader_cancelled(&rt, peer, followers);
            let runs: Vec<Run> = (0..settings.runs)
                .map(|_| leader_cancelled(&rt, peer, followers))
                .collect();
            let walls: Vec<Duration> = runs.iter().map(|r| r.wall).collect();
            let (median, min, max) = support::median_min_max(&walls);
            let cancelled_at: Vec<Duration> = runs.iter().map(|r| r.cancelled_at).collect();
            let (cancelled_median, _, cancelled_max) = support::median_min_max(&cancelled_at);
            let error = runs
                .iter()
                .find_map(|r| r.first_error.as_deref())
                .unwrap_or("–");
            println!(
                "| {} | {} | {} / {} | {} | {} | {} ({}) | {} ({}–{}) | {} |",
                flavor.name(),
                peer.name(),
                support::range(runs.iter().map(|r| r.ok)),
                followers,
                support::range(runs.iter().map(|r| r.calls)),
                runs.iter().map(|r| r.max_polls).max().unwrap_or(0),
                support::ms(cancelled_median),
                support::ms(cancelled_max),
                support::ms(median),
                support::ms(min),
                support::ms(max),
                error,
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
