//! What `Stats::snapshot` returns: plain data, `Serialize`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    alerts::Alert,
    dependency::DependencySnapshot,
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
    /// The health of each dependency given to
    /// [`Stats::track_dependency`](super::Stats::track_dependency), by name.
    pub dependencies: BTreeMap<String, DependencySnapshot>,
}

/// The client requests of one class that made no upstream call of their
/// own, by what answered them. With [`forwarded`](EndpointSnapshot::forwarded)
/// and [`in_flight`](EndpointSnapshot::in_flight) they add up to
/// [`requests`](EndpointSnapshot::requests), exactly, in every snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Saved {
    /// Answered by the cache (a fresh or a stale entry).
    pub cache_hits: u64,
    /// Joined a call already in flight, or answered from Dedup's reuse
    /// window.
    pub coalesced: u64,
    /// Answered from a shared poll loop's value: a Registry one-shot answer,
    /// or a poll or stream served from a subscription (`herdsman-axum`).
    pub poll_loop: u64,
}

impl Saved {
    /// All three.
    pub fn total(&self) -> u64 {
        self.cache_hits + self.coalesced + self.poll_loop
    }
}

/// One endpoint class.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct EndpointSnapshot {
    /// Client requests: those that reached the client-side Stats layer,
    /// Registry one-shot answers, and those recorded with
    /// [`Stats::start`](super::Stats::start). Never a poll loop's own
    /// fetch (counted in [`polls`](EndpointSnapshot::polls)).
    pub requests: u64,
    /// Finished client requests that made no upstream call of their own.
    pub saved: Saved,
    /// Finished client requests that were not saved: they made their own
    /// upstream call, or got a local error (or were dropped before either).
    pub forwarded: u64,
    /// Calls that reached the upstream (through the upstream layer).
    pub upstream_calls: u64,
    /// Cache: answered from a fresh entry (a client request, or a poll
    /// loop's fetch).
    pub cache_hits: u64,
    /// Cache: of `cache_hits`, those the cache's store backend (the second
    /// level) answered after a miss of this process's store.
    pub cache_backend_hits: u64,
    /// Cache: no usable entry.
    pub cache_misses: u64,
    /// Cache: answered from a stale entry (a client request, or a poll loop's
    /// fetch).
    pub stale_served: u64,
    /// `cache_hits / (cache_hits + cache_misses)`, if any.
    pub hit_ratio: Option<f64>,
    /// Dedup: requests (a client's, or a poll loop's fetch) that joined a
    /// call in flight.
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
    /// `rejected` by reason: `breaker_open`, `overloaded`, `rate_limited`,
    /// and the Registry's refused subscriptions by the limit that refused
    /// them ([`Limit::as_str`](crate::event::Limit::as_str):
    /// `keys_per_address`, `subscribers_per_caller`, `memory`, ...).
    pub rejections: BTreeMap<&'static str, u64>,
    /// Upstream calls that failed.
    pub upstream_errors: u64,
    /// Client requests dropped before they completed.
    pub cancelled: u64,
    /// Client requests in flight now: `requests` less the saved and
    /// forwarded ones.
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
    /// Registry poll-loop fetches (not client requests).
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
        // The parts before the total: a request finishing in between is in
        // flight, so the parts and in-flight add up to `requests` exactly.
        let [forwarded, cache_hits, coalesced, poll_loop] = r.parts();
        let now = r.sample(now_sec);
        let finished = forwarded + cache_hits + coalesced + poll_loop;
        let then = r.ago(now_sec, 60);
        let rejections: BTreeMap<&'static str, u64> = REJECTIONS
            .iter()
            .map(|&k| (k.as_str(), r.rejections_of(k)))
            .collect();
        EndpointSnapshot {
            requests: now.requests.max(finished),
            saved: Saved {
                cache_hits,
                coalesced,
                poll_loop,
            },
            forwarded,
            upstream_calls: now.upstream_calls,
            cache_hits: hits,
            cache_backend_hits: load(&r.cache_backend_hits),
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
            in_flight: now.requests.saturating_sub(finished) as i64,
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
