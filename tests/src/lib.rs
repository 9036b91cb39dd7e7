//! End-to-end tests for herdsman live in `tests/tests/`.
