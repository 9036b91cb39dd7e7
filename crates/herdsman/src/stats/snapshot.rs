//! What `Stats::snapshot` returns: plain data, `Serialize`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    alerts::Alert,
    histogram::Percentiles,
    recorder::{ClassRecorder, ErrorKind, REJECTIONS},
};
use std::sync::atomic::Ordering::Relaxed;

/// Everything the Stats layer knows, at one moment. Serializes to the JSON
/// shape documented in `docs/METRICS.md`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Snapshot {
    /// Seconds since the stats were created.
    pub uptime_secs: f64,
    /// Per endpoint class, by name.
    pub endpoints: BTreeMap<String, EndpointSnapshot>,
    /// Memory held by coordination, estimated, in bytes: the sum of
    /// [`memory`](Snapshot::memory).
    pub memory_bytes: u64,
    /// Memory per source (`stats`, and each source given to
    /// [`Stats::track_memory`](super::Stats::track_memory)).
    pub memory: BTreeMap<String, u64>,
    /// The alerts firing now.
    pub alerts: Vec<Alert>,
}

/// One endpoint class.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct EndpointSnapshot {
    /// Client requests that reached the Stats layer.
    pub requests: u64,
    /// Calls that reached the upstream (through the upstream layer).
    pub upstream_calls: u64,
    /// Cache: answered from a fresh entry.
    pub cache_hits: u64,
    /// Cache: no usable entry.
    pub cache_misses: u64,
    /// Cache: answered from a stale entry.
    pub stale_served: u64,
    /// `cache_hits / (cache_hits + cache_misses)`, if any.
    pub hit_ratio: Option<f64>,
    /// Dedup: requests that joined a call in flight.
    pub coalesced: u64,
    /// Dedup: requests answered from the reuse window.
    pub reused: u64,
    /// Errors clients got (including local rejections that reached them).
    pub errors: u64,
    /// `errors` by kind.
    pub errors_by_kind: BTreeMap<&'static str, u64>,
    /// Local rejections as the rejecting layers reported them (including
    /// ones a stale cache entry then hid from the client).
    pub rejected: u64,
    /// `rejected` by reason: `breaker_open`, `overloaded`, `rate_limited`.
    pub rejections: BTreeMap<&'static str, u64>,
    /// Upstream calls that failed.
    pub upstream_errors: u64,
    /// Client requests dropped before they completed.
    pub cancelled: u64,
    /// Client requests in flight now.
    pub in_flight: i64,
    /// Upstream calls in flight now.
    pub upstream_in_flight: i64,
    /// Client requests in the last minute (sliding, one-second steps).
    pub requests_per_minute: u64,
    /// Upstream calls in the last minute.
    pub upstream_calls_per_minute: u64,
    /// Client errors in the last minute.
    pub errors_per_minute: u64,
    /// The breaker's state (`closed`, `open`, `half_open`, `forced_open`,
    /// `disabled`), once a breaker has reported one; `off` while its switch
    /// is off (see [`Stats::track_breaker_switch`](super::Stats::track_breaker_switch)).
    pub breaker: Option<&'static str>,
    /// Registry subscribers now.
    pub subscribers: i64,
    /// Registry polls.
    pub polls: u64,
    /// Client-perceived latency, in milliseconds.
    pub latency_ms: Percentiles,
    /// Upstream latency, in milliseconds.
    pub upstream_latency_ms: Percentiles,
}

impl EndpointSnapshot {
    pub(crate) fn of(r: &ClassRecorder, now_sec: u64) -> Self {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Relaxed);
        let (hits, misses) = (load(&r.cache_hits), load(&r.cache_misses));
        let now = r.sample(now_sec);
        let then = r.ago(now_sec, 60);
        let rejections: BTreeMap<&'static str, u64> = REJECTIONS
            .iter()
            .map(|&k| (k.as_str(), r.rejections_of(k)))
            .collect();
        EndpointSnapshot {
            requests: now.requests,
            upstream_calls: now.upstream_calls,
            cache_hits: hits,
            cache_misses: misses,
            stale_served: load(&r.stale_served),
            hit_ratio: (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64),
            coalesced: load(&r.coalesced),
            reused: load(&r.reused),
            errors: now.errors,
            errors_by_kind: ErrorKind::ALL
                .iter()
                .map(|&k| (k.as_str(), r.errors_of(k)))
                .collect(),
            rejected: rejections.values().sum(),
            rejections,
            upstream_errors: load(&r.upstream_errors),
            cancelled: load(&r.cancelled),
            in_flight: r.in_flight(),
            upstream_in_flight: r.upstream_in_flight.load(Relaxed),
            requests_per_minute: now.requests - then.requests,
            upstream_calls_per_minute: now.upstream_calls - then.upstream_calls,
            errors_per_minute: now.errors - then.errors,
            breaker: if r.breaker_off() {
                Some("off")
            } else {
                r.breaker().map(|s| s.as_str())
            },
            subscribers: r.subscribers.load(Relaxed),
            polls: load(&r.polls),
            latency_ms: r.latency.percentiles(),
            upstream_latency_ms: r.upstream_latency.percentiles(),
        }
    }
}
