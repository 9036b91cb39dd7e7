//! Shared helpers for herdsman's benchmarks.
//!
//! The benchmarks in `benches/` compare [`herdsman::dedup`] with its peers,
//! `tower-resilience`'s `coalesce` module and `async_singleflight`, in one
//! run:
//!
//! ```text
//! cargo bench -p herdsman-bench
//! ```
//!
//! - `overhead`: the uncontended path (criterion).
//! - `storm`: 10,000 concurrent identical requests on a 50 ms inner call.
//! - `leader_cancelled`: the first caller is dropped 10 ms into the call.
//!
//! Results and how to read them: `docs/BENCHMARKS.md`.

pub mod peers;
pub mod probe;
pub mod singleflight;
