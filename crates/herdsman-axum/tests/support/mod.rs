//! What herdsman-axum's integration tests share: letting spawned tasks run
//! on tokio's paused clock, and a count of an upstream's calls.
//!
//! Each file under `tests/` includes this module with `mod support;`
//! (cargo's convention for code shared by integration tests). The core
//! crate's tests have their own `support` module with more of the same
//! kind; the two are not shared, so that neither crate's tests depend on
//! the other's.

// Each test file is its own crate and uses only some of these helpers; the
// others would be reported as dead code in that crate.
#![allow(dead_code)]

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

/// Lets spawned tasks (connections, poll loops, streams) run until they
/// all wait: yields to the scheduler enough times for a task woken by
/// another's progress to run too. Time does not move.
pub(crate) async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// A count of an upstream's calls, shared by the upstream and the test
/// (clones share the count).
#[derive(Clone, Debug, Default)]
pub(crate) struct Calls(Arc<AtomicUsize>);

impl Calls {
    /// Counts a call and returns its number, counting from 1.
    pub(crate) fn next(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The number of calls so far.
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}
