//! The registry's memory figure, kept as it changes: one atomic that every
//! allocation the registry makes or keeps is added to, and subtracted from
//! when it is freed, so that reading it (the memory budget's check on every
//! new key, the Stats layer's alert) costs one load.
//!
//! Two kinds of charges:
//!
//! - the registry's own tables (the key map, the budget counts, each
//!   subscriber's handle), recounted under the map's lock after each change
//!   ([`Core`](super::state::Core));
//! - each key's [`Account`]: its loop's state, its key, its request
//!   template and task, its waker slots and the values its cell keeps,
//!   charged as they are made (the template and the task once; a value by
//!   the loop, the only one that publishes) and given back whole when the
//!   key's state is freed.

use std::{
    mem,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

/// Bytes tokio's task cell adds to a spawned future (its header, scheduler
/// handle and trailer), about.
pub(crate) const TASK_BYTES: usize = 256;

/// Bytes an `Arc`'s allocation adds to its value: the two counts.
pub(crate) const ARC_BYTES: usize = 2 * mem::size_of::<usize>();

/// Bytes of a shared error kept in an update: its `Arc` and a small error
/// value, about.
pub(crate) const ERROR_BYTES: usize = 64;

/// The registry's memory figure, shared by the registry and every key's
/// [`Account`].
#[derive(Debug, Default)]
pub(crate) struct Memory {
    bytes: AtomicUsize,
}

impl Memory {
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn add(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sub(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::Relaxed);
    }

    /// Applies the change from `before` to `after` bytes.
    pub(crate) fn change(&self, before: usize, after: usize) {
        if after > before {
            self.add(after - before);
        } else {
            self.sub(before - after);
        }
    }
}

/// What one key's state holds, in the registry's figure: charged as it
/// grows, given back whole when the state is dropped.
#[derive(Debug)]
pub(crate) struct Account {
    memory: Arc<Memory>,
    held: AtomicUsize,
}

impl Account {
    pub(crate) fn new(memory: Arc<Memory>, bytes: usize) -> Self {
        memory.add(bytes);
        Account {
            memory,
            held: AtomicUsize::new(bytes),
        }
    }

    pub(crate) fn charge(&self, bytes: usize) {
        self.held.fetch_add(bytes, Ordering::Relaxed);
        self.memory.add(bytes);
    }

    /// A change of what the key holds by `delta` bytes (a new value).
    pub(crate) fn adjust(&self, delta: isize) {
        let n = delta.unsigned_abs();
        if delta >= 0 {
            self.charge(n);
        } else {
            self.held.fetch_sub(n, Ordering::Relaxed);
            self.memory.sub(n);
        }
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        self.memory.sub(*self.held.get_mut());
    }
}
