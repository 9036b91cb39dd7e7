//! Alert rules, their state, and delivery.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    pin::Pin,
    sync::{Mutex, PoisonError},
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use futures_core::Stream;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_stream::wrappers::{errors::BroadcastStreamRecvError, BroadcastStream};

use crate::class::Class;

/// Thresholds of the operations plan; each can be changed or turned off.
///
/// An alert fires once when its condition starts and resolves once when it
/// ends. To keep a value hovering at the threshold from flapping, a firing
/// alert resolves only when the value falls to `threshold × resolve_ratio`
/// (0.8 by default) or below.
///
/// ```
/// use std::time::Duration;
/// use herdsman::stats::AlertRules;
///
/// let rules = AlertRules::default()
///     .with_upstream_calls_per_minute(Some(60))
///     .with_error_rate(Some(0.10), 50)
///     .with_memory_bytes(None);
/// assert_eq!(rules.upstream_calls_per_minute(), Some(60));
/// ```
///
/// With the `config` feature this is also the `[alerts]` section of a
/// [`Config`][crate::config::Config]: `upstream_calls_per_minute`,
/// `memory_bytes` and `error_rate` (each a threshold, or `"off"`),
/// `error_window` (written as `"1m"`), `min_samples`, `breaker_trips` and
/// `resolve_ratio`; a key left out keeps its [default](AlertRules::default).
/// The builders clamp what they are given; a configuration is checked
/// instead, and a value out of range is refused with its key.
///
#[cfg_attr(
    not(feature = "config"),
    doc = "[crate::config::Config]: crate#feature-flags"
)]
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "config",
    derive(serde::Deserialize, serde::Serialize),
    serde(default, deny_unknown_fields)
)]
pub struct AlertRules {
    #[cfg_attr(feature = "config", serde(with = "off"))]
    pub(crate) upstream_calls_per_minute: Option<u64>,
    #[cfg_attr(feature = "config", serde(with = "off"))]
    pub(crate) memory_bytes: Option<u64>,
    #[cfg_attr(feature = "config", serde(with = "off"))]
    pub(crate) error_rate: Option<f64>,
    #[cfg_attr(
        feature = "config",
        serde(rename = "error_window", with = "humantime_serde")
    )]
    pub(crate) window: Duration,
    #[cfg_attr(feature = "config", serde(rename = "min_samples"))]
    pub(crate) error_min_samples: u64,
    pub(crate) breaker_trips: bool,
    pub(crate) resolve_ratio: f64,
}

impl Default for AlertRules {
    /// Upstream calls for one key above 20 per minute; memory held by
    /// coordination above 100 MB (10⁸ bytes); error rate above 5 % over one
    /// minute with at least 20 requests; any breaker trip.
    fn default() -> Self {
        AlertRules {
            upstream_calls_per_minute: Some(20),
            memory_bytes: Some(100_000_000),
            error_rate: Some(0.05),
            window: Duration::from_secs(60),
            error_min_samples: 20,
            breaker_trips: true,
            resolve_ratio: 0.8,
        }
    }
}

/// A threshold that may be off: `"off"` in a configuration, else the
/// threshold.
#[cfg(feature = "config")]
mod off {
    use std::{fmt, marker::PhantomData};

    use serde::{
        de::{self, IntoDeserializer},
        Deserialize, Deserializer, Serialize, Serializer,
    };

    const OFF: &str = "off";

    pub(super) fn serialize<T: Serialize, S: Serializer>(
        value: &Option<T>,
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => value.serialize(ser),
            None => ser.serialize_str(OFF),
        }
    }

    pub(super) fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        de: D,
    ) -> Result<Option<T>, D::Error> {
        de.deserialize_any(OrOff(PhantomData))
    }

    struct OrOff<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> de::Visitor<'de> for OrOff<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number, or \"off\"")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            T::deserialize(v.into_deserializer()).map(Some)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            T::deserialize(v.into_deserializer()).map(Some)
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            T::deserialize(v.into_deserializer()).map(Some)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            if v == OFF {
                Ok(None)
            } else {
                Err(E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
    }
}

impl AlertRules {
    /// Every rule off.
    pub fn none() -> Self {
        AlertRules {
            upstream_calls_per_minute: None,
            memory_bytes: None,
            error_rate: None,
            breaker_trips: false,
            ..AlertRules::default()
        }
    }

    /// Fire when one key (one hook) makes more upstream calls than this in
    /// the last minute; `None` turns the rule off.
    pub fn with_upstream_calls_per_minute(mut self, max: Option<u64>) -> Self {
        self.upstream_calls_per_minute = max;
        self
    }

    /// Fire when the memory the layers estimate they hold exceeds this.
    pub fn with_memory_bytes(mut self, max: Option<u64>) -> Self {
        self.memory_bytes = max;
        self
    }

    /// Fire when an endpoint class's error rate over the window exceeds
    /// `rate` (0 to 1), once it has seen at least `min_samples` requests in
    /// the window. Values outside (0, 1] are clamped into it.
    pub fn with_error_rate(mut self, rate: Option<f64>, min_samples: u64) -> Self {
        self.error_rate = rate.map(|r| r.clamp(f64::MIN_POSITIVE, 1.0));
        self.error_min_samples = min_samples.max(1);
        self
    }

    /// The error-rate window (default one minute; at least one second).
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window.max(Duration::from_secs(1));
        self
    }

    /// Fire when a circuit breaker trips (and resolve when it closes).
    pub fn with_breaker_trips(mut self, on: bool) -> Self {
        self.breaker_trips = on;
        self
    }

    /// How far under its threshold a value must fall for a firing alert to
    /// resolve (default 0.8; clamped into (0, 1]).
    pub fn with_resolve_ratio(mut self, ratio: f64) -> Self {
        self.resolve_ratio = ratio.clamp(f64::MIN_POSITIVE, 1.0);
        self
    }

    /// The per-key upstream call threshold.
    pub fn upstream_calls_per_minute(&self) -> Option<u64> {
        self.upstream_calls_per_minute
    }

    /// The memory threshold.
    pub fn memory_bytes(&self) -> Option<u64> {
        self.memory_bytes
    }

    /// The error-rate threshold and its minimum sample count.
    pub fn error_rate(&self) -> Option<(f64, u64)> {
        self.error_rate.map(|r| (r, self.error_min_samples))
    }

    /// The error-rate window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Whether breaker trips alert.
    pub fn breaker_trips(&self) -> bool {
        self.breaker_trips
    }

    /// The resolve ratio.
    pub fn resolve_ratio(&self) -> f64 {
        self.resolve_ratio
    }
}

/// Which rule an alert comes from. Serializes as its
/// [name](AlertRule::as_str).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum AlertRule {
    /// One key's upstream calls per minute.
    UpstreamCalls,
    /// Memory held by coordination.
    Memory,
    /// An endpoint class's error rate.
    ErrorRate,
    /// A circuit breaker tripped.
    BreakerTrip,
    /// A dependency given to
    /// [`Stats::track_dependency`](super::Stats::track_dependency) cannot
    /// be reached: the rule's name, `<dependency>_unavailable` (such as
    /// `redis_unavailable`).
    Unavailable(&'static str),
}

impl AlertRule {
    /// The label in metrics and JSON: `upstream_calls`, `memory`,
    /// `error_rate`, `breaker_trip`, or `<dependency>_unavailable`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertRule::UpstreamCalls => "upstream_calls",
            AlertRule::Memory => "memory",
            AlertRule::ErrorRate => "error_rate",
            AlertRule::BreakerTrip => "breaker_trip",
            AlertRule::Unavailable(rule) => rule,
        }
    }
}

impl Serialize for AlertRule {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(self.as_str())
    }
}

impl fmt::Display for AlertRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an alert started or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition started.
    Firing,
    /// The condition ended.
    Resolved,
}

/// One alert, as delivered to subscribers and listed in the snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Alert {
    /// The rule.
    pub rule: AlertRule,
    /// The endpoint class, for per-class and per-key rules.
    pub endpoint: Option<String>,
    /// The key, for the per-key rule: its
    /// [`fingerprint`](crate::Key::fingerprint) in 16 hex digits, the same
    /// for the key in every process and release and never showing its
    /// bytes. (The message adds the key's `Debug`, credentials redacted.)
    pub key: Option<String>,
    /// Firing or resolved.
    pub state: AlertState,
    /// When the condition started (RFC 3339, UTC).
    pub since: String,
    /// The value that crossed the threshold (or fell under it).
    pub value: f64,
    /// The threshold.
    pub threshold: f64,
    /// A sentence for people.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct AlertId {
    pub(crate) rule: AlertRule,
    pub(crate) endpoint: Option<Class>,
    pub(crate) key: Option<String>,
}

/// An alert that ended, with the value that resolved it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ResolvedAlert {
    /// The alert: [`state`](Alert::state) is
    /// [`Resolved`](AlertState::Resolved), [`value`](Alert::value) the one
    /// that fell under the threshold, [`since`](Alert::since) when it
    /// started firing.
    #[serde(flatten)]
    pub alert: Alert,
    /// When it resolved (RFC 3339, UTC).
    pub resolved_at: String,
}

/// How many resolved alerts [`Stats::resolved_alerts`](super::Stats::resolved_alerts) keeps.
pub const RESOLVED_KEPT: usize = 16;

/// The active alerts and the channel their changes go out on.
pub(crate) struct Book {
    active: Mutex<HashMap<AlertId, Alert>>,
    /// The last [`RESOLVED_KEPT`] resolved, newest first.
    resolved: Mutex<VecDeque<ResolvedAlert>>,
    events: broadcast::Sender<Alert>,
}

impl Book {
    pub(crate) fn new() -> Self {
        Book {
            active: Mutex::new(HashMap::new()),
            resolved: Mutex::new(VecDeque::new()),
            events: broadcast::channel(256).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AlertId, Alert>> {
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fires `id` unless it is already firing. Returns whether it fired.
    pub(crate) fn fire(&self, id: AlertId, value: f64, threshold: f64, message: String) -> bool {
        let alert = {
            let mut active = self.lock();
            if active.contains_key(&id) {
                return false;
            }
            let alert = Alert {
                rule: id.rule,
                endpoint: id.endpoint.as_ref().map(|c| c.as_str().to_owned()),
                key: id.key.clone(),
                state: AlertState::Firing,
                since: rfc3339(SystemTime::now()),
                value,
                threshold,
                message,
            };
            active.insert(id, alert.clone());
            alert
        };
        tracing::warn!(
            rule = alert.rule.as_str(),
            endpoint = alert.endpoint.as_deref(),
            key = alert.key.as_deref(),
            value = alert.value,
            threshold = alert.threshold,
            "herdsman alert: {}",
            alert.message
        );
        metrics::counter!("herdsman_alerts_total", "rule" => alert.rule.as_str()).increment(1);
        metrics::gauge!("herdsman_alerts_active", "rule" => alert.rule.as_str()).increment(1.0);
        let _ = self.events.send(alert);
        true
    }

    /// Resolves `id` if it is firing. Returns whether it resolved.
    pub(crate) fn resolve(&self, id: &AlertId, value: f64) -> bool {
        let Some(mut alert) = self.lock().remove(id) else {
            return false;
        };
        alert.state = AlertState::Resolved;
        alert.value = value;
        tracing::info!(
            rule = alert.rule.as_str(),
            endpoint = alert.endpoint.as_deref(),
            key = alert.key.as_deref(),
            value,
            "herdsman alert resolved: {}",
            alert.message
        );
        metrics::gauge!("herdsman_alerts_active", "rule" => alert.rule.as_str()).decrement(1.0);
        {
            let mut resolved = self.resolved.lock().unwrap_or_else(PoisonError::into_inner);
            resolved.push_front(ResolvedAlert {
                alert: alert.clone(),
                resolved_at: rfc3339(SystemTime::now()),
            });
            resolved.truncate(RESOLVED_KEPT);
        }
        let _ = self.events.send(alert);
        true
    }

    /// The last resolved alerts, newest first.
    pub(crate) fn resolved(&self) -> Vec<ResolvedAlert> {
        let resolved = self.resolved.lock().unwrap_or_else(PoisonError::into_inner);
        resolved.iter().cloned().collect()
    }

    pub(crate) fn active(&self) -> Vec<Alert> {
        let mut all: Vec<Alert> = self.lock().values().cloned().collect();
        all.sort_by(|a, b| {
            (a.rule, &a.endpoint, &a.key, &a.since).cmp(&(b.rule, &b.endpoint, &b.key, &b.since))
        });
        all
    }

    /// Ids of firing alerts of one rule.
    pub(crate) fn firing(&self, rule: AlertRule) -> Vec<AlertId> {
        self.lock()
            .keys()
            .filter(|id| id.rule == rule)
            .cloned()
            .collect()
    }

    pub(crate) fn subscribe(&self) -> AlertEvents {
        AlertEvents {
            inner: BroadcastStream::new(self.events.subscribe()),
            missed: 0,
        }
    }
}

/// A stream of alert changes (firing and resolved), from
/// [`Stats::alerts`](super::Stats::alerts).
///
/// A subscriber that falls more than 256 events behind skips the oldest;
/// [`missed`](AlertEvents::missed) says how many. The active list is always
/// complete in the [`Snapshot`](super::Snapshot).
pub struct AlertEvents {
    inner: BroadcastStream<Alert>,
    missed: u64,
}

impl AlertEvents {
    /// Events skipped because this subscriber fell behind.
    pub fn missed(&self) -> u64 {
        self.missed
    }
}

impl fmt::Debug for AlertEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertEvents")
            .field("missed", &self.missed)
            .finish()
    }
}

impl Stream for AlertEvents {
    type Item = Alert;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Alert>> {
        loop {
            match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(alert))) => return Poll::Ready(Some(alert)),
                Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(n)))) => self.missed += n,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// RFC 3339 in UTC, to the second: `2026-11-26T22:05:00Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "config")]
    #[test]
    fn a_rule_that_is_off_is_written_off_and_a_left_out_key_is_the_default() {
        let rules = AlertRules::default()
            .with_memory_bytes(None)
            .with_error_rate(Some(0.25), 7);
        let written = toml::to_string(&rules).unwrap();
        assert!(written.contains("memory_bytes = \"off\""), "{written}");
        assert_eq!(toml::from_str::<AlertRules>(&written).unwrap(), rules);
        let read: AlertRules = toml::from_str("error_rate = \"off\"").unwrap();
        assert_eq!(read, AlertRules::default().with_error_rate(None, 20));
        assert!(toml::from_str::<AlertRules>("memory_bytes = \"none\"").is_err());
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        let at = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(at(1_795_730_700)), "2026-11-26T22:05:00Z");
    }
}
