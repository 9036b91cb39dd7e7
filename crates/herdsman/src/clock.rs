//! The clock the Stats layer and the Cache read: a setting ([`Clock`]) and,
//! inside the crate, a started clock that reads nanoseconds.
//!
//! Both layers read the clock on their fast path (Stats twice per request
//! for a latency, the Cache once per hit to tell fresh from stale), so the
//! clock is a visible share of their cost. The operating system's clock
//! (what `std` and `tokio::time` read) costs about 32 ns on the project's
//! 2-core VMs; the CPU's time-stamp counter, read through [`quanta`], about
//! 12 ns. So the default is [`Clock::Fast`].
//!
//! The fast clock does not follow tokio's paused clock: tests that pause
//! it (`#[tokio::test(start_paused = true)]`, `tokio::time::pause`) and
//! drive time with `tokio::time::advance` give the layers
//! [`Clock::Tokio`] ([`CacheLayer::with_clock`], [`StatsBuilder::with_clock`]).
//! The Coordinator picks it in `Environment::Test`.
//!
//! Only the `cache` and `stats` features compile this module (and
//! `quanta`).
//!
#![cfg_attr(
    not(feature = "cache"),
    doc = "[`CacheLayer::with_clock`]: crate#feature-flags"
)]
#![cfg_attr(
    feature = "cache",
    doc = "[`CacheLayer::with_clock`]: crate::cache::CacheLayer::with_clock"
)]
#![cfg_attr(
    not(feature = "stats"),
    doc = "[`StatsBuilder::with_clock`]: crate#feature-flags"
)]
#![cfg_attr(
    feature = "stats",
    doc = "[`StatsBuilder::with_clock`]: crate::stats::StatsBuilder::with_clock"
)]

use std::{fmt, sync::OnceLock, time::Duration};

/// Where a layer reads time: the Stats layer for latencies, rates and
/// alerts, the Cache for its entries' ages.
///
/// See the [module docs](self) for the costs and for paused-time tests.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Clock {
    /// The time-stamp counter, calibrated against the OS clock once per
    /// process; falls back to the OS clock where the counter is unreliable.
    #[default]
    Fast,
    /// `tokio::time::Instant`: follows a paused tokio clock.
    Tokio,
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Clock::Fast => f.write_str("Fast"),
            Clock::Tokio => f.write_str("Tokio"),
        }
    }
}

/// A started clock: reads nanoseconds since its own start.
#[derive(Clone)]
pub(crate) enum Stopwatch {
    /// The clock and its raw reading at the start (time-stamp counter
    /// ticks, scaled to nanoseconds only as a difference).
    Fast(quanta::Clock, u64),
    Tokio(tokio::time::Instant),
}

fn quanta_clock() -> quanta::Clock {
    // Calibration takes about half a millisecond; do it once per process.
    static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new).clone()
}

impl Stopwatch {
    pub(crate) fn start(kind: &Clock) -> Stopwatch {
        match kind {
            Clock::Fast => {
                let clock = quanta_clock();
                let start = clock.raw();
                Stopwatch::Fast(clock, start)
            }
            Clock::Tokio => Stopwatch::Tokio(tokio::time::Instant::now()),
        }
    }

    /// Nanoseconds since the clock started.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        match self {
            // One counter read and one multiply-shift.
            Stopwatch::Fast(clock, start) => clock.delta_as_nanos(*start, clock.raw()),
            Stopwatch::Tokio(start) => {
                nanos(tokio::time::Instant::now().saturating_duration_since(*start))
            }
        }
    }
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl fmt::Debug for Stopwatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stopwatch::Fast(..) => f.write_str("Stopwatch::Fast"),
            Stopwatch::Tokio(..) => f.write_str("Stopwatch::Tokio"),
        }
    }
}
