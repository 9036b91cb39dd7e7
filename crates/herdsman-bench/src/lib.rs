//! Shared helpers for herdsman's benchmarks.
//!
//! The benchmarks in `benches/` compare herdsman's layers with their peers in
//! one run:
//!
//! ```text
//! cargo bench -p herdsman-bench
//! ```
//!
//! [`herdsman::dedup`] against `tower-resilience`'s `coalesce` module and
//! `async_singleflight`:
//!
//! - `overhead`: the uncontended path (criterion).
//! - `storm`: 10,000 concurrent identical requests on a 50 ms inner call.
//! - `leader_cancelled`: the first caller is dropped 10 ms into the call.
//!
//! [`herdsman::cache`] against `tower-resilience`'s `cache` module and the
//! bare stores moka and quick_cache:
//!
//! - `cache_hit`: the hit path (criterion), and a bare clock read.
//! - `cache_contention`: hits on one key from 1 and 2 threads.
//! - the `cache_memory` binary: peak RSS with 100,000 entries of 1 KiB.
//!
//! [`herdsman::breaker`] against `tower-resilience`'s `circuitbreaker` module
//! and `failsafe`:
//!
//! - `breaker`: the closed path, with and without slow-call detection, and
//!   the cost of a rejection when open (criterion).
//!
//! [`herdsman::limit`] against tower's `ConcurrencyLimit`, `tower-resilience`'s
//! `bulkhead` and `ratelimiter` modules, and `governor` used bare:
//!
//! - `limit`: an admitted request under a concurrency limit, under a rate
//!   rule by class and under one by caller, with no limit reached
//!   (criterion).
//!
//! Whole stacks (issue 15):
//!
//! - `coordinated`: a cache hit through the whole [`herdsman::Coordinator`]
//!   against the bare HTTP service it wraps ([`coordinated`]).
//! - `stack`: the generic stack hit (Stats → Cache → Dedup → Breaker →
//!   Limit) against tower-resilience's four-layer stack ([`stacks`]).
//! - the `hit_allocs` binary: allocations per hit in both, and per admitted
//!   request under a concurrency limit.
//!
//! Distributed mode (issue 16), against a real `redis-server` on loopback
//! ([`distributed`]):
//!
//! - the `distributed` binary: Redis round trips per request, the time of
//!   an L2 hit and of a coalesced miss beside the same request without
//!   Redis, the failover time of a flight's lease and of a poll loop's,
//!   and the cross-replica storm
//!   (`cargo run --release -p herdsman-bench --bin distributed`).
//!
//! The demo as a whole:
//!
//! - the `soak` binary: ten minutes of stream churn, key floods and faults
//!   against `examples/active-users`, its RSS sampled every second, every
//!   map checked to drain (`cargo run --release -p herdsman-bench --bin soak
//!   -- --help`).
//!
//! Results and how to read them: `docs/BENCHMARKS.md`.

pub mod breakers;
pub mod caches;
pub mod coordinated;
pub mod distributed;
pub mod harness;
pub mod limiters;
pub mod peers;
pub mod probe;
pub mod singleflight;
pub mod stacks;
