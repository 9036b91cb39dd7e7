//! Shared helpers for herdsman's benchmarks.
