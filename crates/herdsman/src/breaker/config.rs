use std::time::Duration;

/// The settings of one circuit breaker.
///
/// The defaults suit coalesced traffic, where an upstream sees about one call
/// per poll interval: three consecutive failures, or half of the last ten
/// calls once five were made, open the breaker.
/// Set fields with struct update syntax:
/// `BreakerConfig { window: 20, ..BreakerConfig::default() }`.
///
/// With the `config` feature this is also the `[breaker]` section of a
/// [`Config`][crate::config::Config] (and a class's `breaker` table): each
/// field is a key, durations written as `"10s"`.
///
#[cfg_attr(
    not(feature = "config"),
    doc = "[crate::config::Config]: crate#feature-flags"
)]
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(
    feature = "config",
    derive(serde::Deserialize, serde::Serialize),
    serde(deny_unknown_fields)
)]
pub struct BreakerConfig {
    /// Outcomes in the sliding window: the last `window` calls (1 to 64).
    /// Ignored when [`time_window`](Self::time_window) is set.
    pub window: u32,
    /// Makes the window the calls of the last `time_window` instead of the
    /// last `window` calls: ten buckets of a tenth of it each, so memory
    /// stays fixed whatever the traffic. Costs a clock read per call.
    #[cfg_attr(
        feature = "config",
        serde(
            default,
            with = "humantime_serde::option",
            skip_serializing_if = "Option::is_none"
        )
    )]
    pub time_window: Option<Duration>,
    /// Calls the window must hold before the rate rules apply.
    pub minimum_calls: u32,
    /// The breaker opens when failures / calls in the window reach this
    /// (`0.0..=1.0`; exactly at the threshold opens). `1.0` and above never
    /// trips on the rate unless every call failed.
    pub failure_rate: f64,
    /// The breaker opens after this many failures in a row, whatever the
    /// window says. `None` turns the rule off.
    #[cfg_attr(
        feature = "config",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub consecutive_failures: Option<u32>,
    /// A call that takes at least this long is slow (exactly at the duration
    /// counts as slow). `None` turns slow-call detection off, and with it the
    /// two clock reads per call it costs.
    #[cfg_attr(
        feature = "config",
        serde(
            default,
            with = "humantime_serde::option",
            skip_serializing_if = "Option::is_none"
        )
    )]
    pub slow_call_duration: Option<Duration>,
    /// The breaker opens when slow calls / calls in the window reach this.
    pub slow_call_rate: f64,
    /// How long the breaker stays open after its first trip.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub open_duration: Duration,
    /// Each further trip without a successful recovery multiplies the open
    /// duration by this, up to `max_open_duration`.
    pub backoff: f64,
    /// The longest the breaker stays open.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub max_open_duration: Duration,
    /// Up to this fraction of the open duration is added at random, so that
    /// breakers opened together do not probe together (`0.0..=1.0`).
    pub jitter: f64,
    /// Calls let through at once while half-open; that many successes close
    /// the breaker, one failure opens it again.
    pub half_open_probes: u32,
    /// A probe that has not answered after this long counts as a failure (and
    /// its caller gets [`ProbeTimedOut`](super::ProbeTimedOut)), so the
    /// breaker can never wedge half-open.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub probe_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: 10,
            time_window: None,
            minimum_calls: 5,
            failure_rate: 0.5,
            consecutive_failures: Some(3),
            slow_call_duration: None,
            slow_call_rate: 1.0,
            open_duration: Duration::from_secs(5),
            backoff: 2.0,
            max_open_duration: Duration::from_secs(60),
            jitter: 0.1,
            half_open_probes: 1,
            probe_timeout: Duration::from_secs(10),
        }
    }
}

impl BreakerConfig {
    /// The sliding window's length, clamped to `1..=64`.
    pub(crate) fn window_len(&self) -> u32 {
        self.window.clamp(1, 64)
    }

    /// How long the breaker stays open after `trips` trips in a row, before
    /// jitter.
    pub(crate) fn open_for(&self, trips: u32) -> Duration {
        let factor = self
            .backoff
            .max(1.0)
            .powi(trips.saturating_sub(1).min(64) as i32);
        let secs = (self.open_duration.as_secs_f64() * factor)
            .min(self.max_open_duration.as_secs_f64())
            .max(0.0);
        Duration::try_from_secs_f64(secs).unwrap_or(self.max_open_duration)
    }
}
