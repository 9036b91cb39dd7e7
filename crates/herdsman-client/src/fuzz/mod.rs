//! Fuzz target of the client side: the event-stream parser.
//!
//! **Unstable.** Compiled with the `fuzzing` feature, for the cargo-fuzz
//! targets in `fuzz/` at the repository root; not part of the public API,
//! it may change in any release. Shaped as `herdsman::__fuzz`: the target
//! has an `Input`, a `check(&Input)` that panics when a property fails and
//! a `run(&[u8])`; the crate's tests run it on stable with proptest.

pub mod event_stream;
