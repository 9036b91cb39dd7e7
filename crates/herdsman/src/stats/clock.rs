//! The clock latency is measured with.

use std::{fmt, sync::OnceLock, time::Duration};

/// Where the Stats layer reads time for latencies.
///
/// A latency costs two clock reads per request. The operating system's
/// clock (what `std` and `tokio::time` read) costs about 32 ns on the
/// project's 2-core VMs; the CPU's time-stamp counter, read through
/// [`quanta`], about 12 ns. So the default is [`StatsClock::Fast`].
///
/// Tests that pause tokio's clock (`tokio::time::pause`) and want the
/// latencies to follow it use [`StatsClock::Tokio`]; the Coordinator picks
/// it in the `test` environment.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum StatsClock {
    /// The time-stamp counter, calibrated against the OS clock once per
    /// process; falls back to the OS clock where the counter is unreliable.
    #[default]
    Fast,
    /// `tokio::time::Instant`: follows a paused tokio clock.
    Tokio,
}

impl fmt::Debug for StatsClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatsClock::Fast => f.write_str("Fast"),
            StatsClock::Tokio => f.write_str("Tokio"),
        }
    }
}

/// A started clock: reads nanoseconds since its own start.
#[derive(Clone)]
pub(crate) enum Clock {
    Fast(quanta::Clock, quanta::Instant),
    Tokio(tokio::time::Instant),
}

fn quanta_clock() -> quanta::Clock {
    // Calibration takes about half a millisecond; do it once per process.
    static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new).clone()
}

impl Clock {
    pub(crate) fn start(kind: &StatsClock) -> Clock {
        match kind {
            StatsClock::Fast => {
                let clock = quanta_clock();
                let start = clock.now();
                Clock::Fast(clock, start)
            }
            StatsClock::Tokio => Clock::Tokio(tokio::time::Instant::now()),
        }
    }

    /// Nanoseconds since the clock started.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        let elapsed = match self {
            Clock::Fast(clock, start) => clock.now().saturating_duration_since(*start),
            Clock::Tokio(start) => tokio::time::Instant::now().saturating_duration_since(*start),
        };
        nanos(elapsed)
    }
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Clock::Fast(..) => f.write_str("Clock::Fast"),
            Clock::Tokio(..) => f.write_str("Clock::Tokio"),
        }
    }
}
