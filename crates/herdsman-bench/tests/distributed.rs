//! The distributed benchmarks' bounds, as tests (issue 16): the round
//! trips per request, the storm across replicas, the failover of a
//! flight's lease and of a poll loop's.
//!
//! `cargo test -p herdsman-bench --test distributed -- --include-ignored`
//! (needs `redis-server` on `PATH`; each test starts its own).

use std::time::Duration;

use herdsman_bench::distributed::{failover, loop_failover, round_trips, storm};
use herdsman_redis::dev::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn an_l1_hit_costs_no_round_trip_an_l2_hit_one_and_a_miss_two_before_its_call() {
    let server = RedisServer::start().await.unwrap();
    let trips = round_trips(&server).await;
    assert_eq!(trips.l1_hit, (0, 0));
    // GET, PTTL and the generation in one pipeline.
    assert_eq!(trips.l2_hit, (1, 3));
    // The lookup, then the lease (one script): within the bound of 3.
    assert_eq!(trips.miss_before_call, (2, 4));
    // Then the flight's end and the write-through, a script each, sent at
    // once in the background: one write or two.
    assert!(
        matches!(trips.miss_total, (3 | 4, 6)),
        "{:?}",
        trips.miss_total
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn three_times_a_thousand_concurrent_requests_make_one_upstream_call() {
    // A short upstream, so that some replicas ask after the holder's end
    // (their L2 lookups having missed before its write-through landed):
    // its finished lease answers them. Many runs, each on a new server.
    let mut calls = Vec::new();
    for _ in 0..STORM_RUNS {
        let server = RedisServer::start().await.unwrap();
        calls.push(storm(&server, 3, 1_000, Duration::from_millis(5)).await.0);
    }
    assert!(
        calls.iter().all(|&n| n == 1),
        "upstream calls per run: {calls:?}"
    );
}

/// Runs of the storm test.
const STORM_RUNS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_dead_holders_lease_is_taken_over_within_the_lease_time() {
    let server = RedisServer::start().await.unwrap();
    let lease = Duration::from_secs(1);
    let waited = failover(&server, lease).await;
    assert!(waited >= lease / 2, "waited for the lease: {waited:?}");
    assert!(waited < lease * 2, "took over: {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server"]
async fn a_stuck_pollers_key_is_polled_by_another_replica_within_its_claim() {
    let server = RedisServer::start().await.unwrap();
    let (interval, loop_lease) = (Duration::from_millis(300), Duration::from_secs(1));
    let waited = loop_failover(&server, interval, loop_lease).await;
    // The other replica followed (no poll of its own for a while) ...
    assert!(waited >= loop_lease / 2, "followed: {waited:?}");
    // ... and took over within the claim.
    assert!(
        waited < (interval + loop_lease) * 2,
        "took over: {waited:?}"
    );
}
