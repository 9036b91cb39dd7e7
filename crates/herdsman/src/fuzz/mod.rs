//! Fuzz targets: the parsers that read client or upstream bytes, each with
//! the properties it must keep on any input.
//!
//! **Unstable.** Compiled with the `fuzzing` feature, for the cargo-fuzz
//! targets in `fuzz/` at the repository root; not part of the public API,
//! it may change in any release.
//!
//! Each target is a module with an `Input` (built from raw bytes with
//! [`arbitrary`], so that libFuzzer's mutations stay structured), a
//! `check(&Input)` that panics when a property fails, and a `run(&[u8])`
//! that does both: the cargo-fuzz target calls `run`. The crate's own tests
//! run every target on stable too, with proptest (`PROPTEST_CASES` sets how
//! many cases), so the properties are checked without nightly.

pub mod config;
pub mod etag;
pub mod forwarded;
pub mod freshness;
pub mod key;

use std::fmt::Debug;

use arbitrary::{Arbitrary, Unstructured};

/// Builds `T` from `data` and hands it to `check`; inputs too short to build
/// one are skipped. When a check fails, the input is printed (the raw bytes
/// say little).
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
