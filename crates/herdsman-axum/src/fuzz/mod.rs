//! Fuzz targets of the SSE side: the event encoder and `Last-Event-ID`.
//!
//! **Unstable.** Compiled with the `fuzzing` feature, for the cargo-fuzz
//! targets in `fuzz/` at the repository root; not part of the public API,
//! it may change in any release. Shaped as `herdsman::__fuzz`: each target
//! has an `Input`, a `check(&Input)` that panics when a property fails and
//! a `run(&[u8])`; the crate's tests run them on stable with proptest.
//!
//! There is no SSE *parser* in this workspace yet (the client crate does
//! not exist): the encoder's output is read back with [`event_stream`], a
//! small reference parser written from the WHATWG rules.

pub mod event_stream;
pub mod last_event_id;
pub mod sse;

use std::fmt::Debug;

use arbitrary::{Arbitrary, Unstructured};

/// Builds `T` from `data` and hands it to `check`, printing it if a check
/// fails.
fn drive<'a, T: Arbitrary<'a> + Debug>(data: &'a [u8], check: impl FnOnce(&T)) {
    struct ShowOnPanic<'i, T: Debug>(&'i T);

    impl<T: Debug> Drop for ShowOnPanic<'_, T> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!("input: {:#?}", self.0);
            }
        }
    }

    if let Ok(input) = T::arbitrary_take_rest(Unstructured::new(data)) {
        let _show = ShowOnPanic(&input);
        check(&input);
    }
}
