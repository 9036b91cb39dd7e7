//! Distributed mode's figures (issue 16), against a real `redis-server` on
//! loopback: round trips per request, the time of an L2 hit and of a
//! coalesced miss beside the same request without Redis, the failover
//! time of a flight's lease and of a poll loop's, and the cross-replica
//! storm.
//!
//! ```text
//! cargo run --release -p herdsman-bench --bin distributed
//! ```
//!
//! Skipped, with a message, when `redis-server` is not on `PATH`. See
//! `herdsman_bench::distributed` for how each figure is taken, and
//! docs/BENCHMARKS.md for the results.

use std::time::Duration;

use herdsman_bench::distributed::{
    coalesced, failover, loop_failover, redis_server_available, round_trips, storm, timings,
};
use herdsman_redis::dev::RedisServer;

#[tokio::main]
async fn main() {
    if !redis_server_available() {
        println!(
            "distributed: skipped: redis-server is not on PATH (apt-get install redis-server)"
        );
        return;
    }
    let server = RedisServer::start().await.expect("redis-server starts");

    let trips = round_trips(&server).await;
    println!("round trips to Redis per request (top-level commands in them):");
    let rows = [
        ("L1 hit", trips.l1_hit),
        ("L2 hit", trips.l2_hit),
        ("miss, before the upstream", trips.miss_before_call),
        ("miss, in all", trips.miss_total),
    ];
    for (what, (round_trips, commands)) in rows {
        println!("  {what:<26} {round_trips}  ({commands})");
    }

    let n = 2_000;
    let t = timings(&server, n).await;
    println!("mean time per request ({n} requests each, one at a time):");
    println!(
        "  L1 hit                     {:>10.2?}  (without Redis {:.2?})",
        t.l1_hit, t.l1_hit_local
    );
    println!("  L2 hit                     {:>10.2?}", t.l2_hit);
    println!(
        "  miss (instant upstream)    {:>10.2?}  (without Redis {:.2?})",
        t.miss, t.miss_local
    );

    let (callers, rounds, latency) = (300, 50, Duration::from_millis(5));
    let (with, without, calls) = coalesced(&server, 3, callers, rounds, latency).await;
    println!(
        "coalesced miss, {callers} callers of a new key, upstream {latency:?}, median of {rounds} rounds:"
    );
    println!(
        "  3 replicas sharing Redis   {with:>10.2?}  ({calls} upstream calls in {rounds} rounds)"
    );
    println!("  1 replica without Redis    {without:>10.2?}");

    let lease = Duration::from_secs(1);
    let waited = failover(&server, lease).await;
    println!("lease failover (flight lease {lease:?}): the heir called after {waited:.2?}");
    let (interval, loop_lease) = (Duration::from_millis(300), Duration::from_secs(1));
    let waited = loop_failover(&server, interval, loop_lease).await;
    println!(
        "poll-loop failover (interval {interval:?}, loop lease {loop_lease:?}): the other replica polled after {waited:.2?}"
    );

    let latency = Duration::from_millis(300);
    let (calls, took) = storm(&server, 3, 1_000, latency).await;
    println!(
        "storm: 3 x 1,000 concurrent requests, upstream {latency:?}: {calls} upstream call(s), all answered in {took:.2?}"
    );
    if calls != 1 || trips.l1_hit.0 != 0 || trips.l2_hit.0 != 1 || trips.miss_before_call.0 > 3 {
        eprintln!("distributed: a figure is off its bound (storm 1 call; L1 0, L2 1, miss <= 3)");
        std::process::exit(1);
    }
}
