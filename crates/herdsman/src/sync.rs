//! Synchronization primitives, swapped for loom's models under
//! `--cfg herdsman_loom` so that `tests/loom.rs` can check every interleaving.

#[cfg(herdsman_loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, AtomicU32, AtomicU64},
    Mutex, MutexGuard,
};
#[cfg(not(herdsman_loom))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicU32, AtomicU64},
    Mutex, MutexGuard,
};
