//! Reconnection delays: exponential backoff with jitter.

use std::time::Duration;

/// A small xorshift generator: jitter needs spread, not security, and a
/// seed per client keeps two clients from reconnecting in step.
#[derive(Debug, Clone)]
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> Self {
        // Zero is xorshift's one fixed point.
        XorShift(seed | 1)
    }

    /// A seed that differs between clients and between runs.
    pub(crate) fn seeded() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(u64::from(std::process::id()));
        XorShift::new(hasher.finish())
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A fraction in `[0, 1)`.
    pub(crate) fn fraction(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The wait before reconnection attempt `failures + 1`: `base` (the
/// server's `retry:` or the configured time) doubled for each consecutive
/// failure, at most `max`, then stretched by up to a quarter at random. It
/// is never shorter than the server asked for.
pub(crate) fn backoff(
    base: Duration,
    failures: u32,
    max: Duration,
    rng: &mut XorShift,
) -> Duration {
    let exp = base
        .checked_mul(1u32 << failures.min(16))
        .unwrap_or(max)
        .min(max.max(base));
    exp.mul_f64(1.0 + rng.fraction() / 4.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_jitter_only_lengthens_them() {
        let mut rng = XorShift::new(7);
        let base = Duration::from_millis(500);
        let max = Duration::from_secs(30);
        for (failures, low) in [(0, 500), (1, 1000), (2, 2000), (3, 4000), (10, 30_000)] {
            for _ in 0..100 {
                let d = backoff(base, failures, max, &mut rng);
                let low = Duration::from_millis(low);
                assert!(d >= low && d <= low.mul_f64(1.25), "{failures}: {d:?}");
            }
        }
    }

    #[test]
    fn a_server_retry_above_the_cap_is_still_honoured() {
        let mut rng = XorShift::new(1);
        let d = backoff(
            Duration::from_secs(60),
            3,
            Duration::from_secs(30),
            &mut rng,
        );
        assert!(d >= Duration::from_secs(60));
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut rng = XorShift::new(3);
        let base = Duration::from_secs(1);
        let delays: std::collections::HashSet<_> =
            (0..50).map(|_| backoff(base, 0, base, &mut rng)).collect();
        assert!(delays.len() > 40);
    }
}
