//! Synchronization primitives, swapped for loom's models under
//! `--cfg herdsman_loom` so that `tests/loom.rs` can check every interleaving.

// Not every feature set uses every primitive.
#[cfg(herdsman_loom)]
#[allow(unused_imports)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, AtomicU32, AtomicU64},
    Mutex, MutexGuard,
};
#[cfg(not(herdsman_loom))]
#[allow(unused_imports)]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicU32, AtomicU64},
    Mutex, MutexGuard,
};
