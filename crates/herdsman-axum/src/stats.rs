//! The stats JSON the dashboard draws.

use herdsman::{
    config::Environment,
    stats::{ResolvedAlert, Snapshot},
};
use serde_json::{json, Map, Value};

/// The `GET /_herdsman/stats` document:
///
/// ```json
/// {"environment": "development",
///  "endpoints": {"active-users": {"requests": 0, "upstream_calls": 0,
///    "saved": {"cache_hits": 0, "coalesced": 0, "poll_loop": 0}, "forwarded": 0,
///    "in_flight": 0, "polls": 0, "cache_hits": 0, "cache_backend_hits": 0,
///    "cache_misses": 0, "stale_served": 0, "coalesced": 0, "errors": 0, "rejected": 0, "breaker": "closed", "subscribers": 0,
///    "latency_ms": {"p50": 0.0, "p99": 0.0}, ...}},
///  "alerts": [{"rule": "...", "endpoint": "...", "since": "...", "message": "...",
///    "value": 0.0, "threshold": 0.0}],
///  "resolved_alerts": [{"rule": "...", "endpoint": "...", "since": "...", "message": "...",
///    "value": 0.0, "threshold": 0.0, "resolved_at": "..."}],
///  "switches": [{"name": "stack", "enabled": true}, ...],
///  "snapshot": { the full stats::Snapshot }}
/// ```
///
/// `requests` counts client requests only (never a poll loop's own fetch,
/// which is in `polls`), and is exactly the sum of `saved.cache_hits`,
/// `saved.coalesced`, `saved.poll_loop`, `forwarded` and `in_flight`.
/// `breaker` is `closed`, `open`, `half_open` or `off` (a breaker forced
/// open by an operator shows as `open`; one switched off, or disabled by
/// hand, as `off`; one that never reported as `closed`). `upstream_calls`
/// counts calls that reached the upstream handler. Every configured class is
/// listed, at zero before its first request. An alert's `value` is the one
/// that crossed its `threshold`; a resolved alert's (the last
/// [`RESOLVED_KEPT`](herdsman::stats::RESOLVED_KEPT), newest first, from
/// `resolved`, [`Stats::resolved_alerts`](herdsman::stats::Stats::resolved_alerts))
/// the one that resolved it. The full [`Snapshot`] rides along under
/// `snapshot`.
pub fn stats_document(
    environment: Environment,
    snapshot: &Snapshot,
    resolved: &[ResolvedAlert],
    switches: Vec<(String, bool)>,
) -> Value {
    let mut endpoints = Map::new();
    for (name, e) in &snapshot.endpoints {
        let breaker = match e.breaker {
            Some("open" | "forced_open") => "open",
            Some("half_open") => "half_open",
            Some("off" | "disabled") => "off",
            _ => "closed",
        };
        endpoints.insert(
            name.clone(),
            json!({
                "requests": e.requests,
                "upstream_calls": e.upstream_calls,
                "saved": {
                    "cache_hits": e.saved.cache_hits,
                    "coalesced": e.saved.coalesced,
                    "poll_loop": e.saved.poll_loop,
                },
                "forwarded": e.forwarded,
                "in_flight": e.in_flight,
                "polls": e.polls,
                "cache_hits": e.cache_hits,
                "cache_backend_hits": e.cache_backend_hits,
                "cache_misses": e.cache_misses,
                "stale_served": e.stale_served,
                "coalesced": e.coalesced,
                "errors": e.errors,
                "rejected": e.rejected,
                "breaker": breaker,
                "subscribers": e.subscribers,
                "requests_per_minute": e.requests_per_minute,
                "upstream_calls_per_minute": e.upstream_calls_per_minute,
                "latency_ms": {
                    "p50": e.latency_ms.p50,
                    "p90": e.latency_ms.p90,
                    "p99": e.latency_ms.p99,
                    "max": e.latency_ms.max,
                },
            }),
        );
    }
    let alerts: Vec<Value> = snapshot
        .alerts
        .iter()
        .map(|a| {
            json!({
                "rule": a.rule.as_str(),
                "endpoint": a.endpoint,
                "since": a.since,
                "message": a.message,
                "value": a.value,
                "threshold": a.threshold,
            })
        })
        .collect();
    let resolved: Vec<Value> = resolved
        .iter()
        .map(|r| {
            json!({
                "rule": r.alert.rule.as_str(),
                "endpoint": r.alert.endpoint,
                "since": r.alert.since,
                "message": r.alert.message,
                "value": r.alert.value,
                "threshold": r.alert.threshold,
                "resolved_at": r.resolved_at,
            })
        })
        .collect();
    let switches: Vec<Value> = switches
        .into_iter()
        .map(|(name, enabled)| json!({"name": name, "enabled": enabled}))
        .collect();
    json!({
        "environment": environment.as_str(),
        "endpoints": endpoints,
        "alerts": alerts,
        "resolved_alerts": resolved,
        "switches": switches,
        "memory_bytes": snapshot.memory_bytes,
        "snapshot": snapshot,
    })
}
