//! The stats JSON the dashboard draws.

use herdsman::{config::Environment, stats::Snapshot};
use serde_json::{json, Map, Value};

/// The `GET /_herdsman/stats` document:
///
/// ```json
/// {"environment": "development",
///  "endpoints": {"active-users": {"requests": 0, "upstream_calls": 0, "cache_hits": 0,
///    "cache_misses": 0, "stale_served": 0, "coalesced": 0, "errors": 0, "rejected": 0,
///    "breaker": "closed", "subscribers": 0, "latency_ms": {"p50": 0.0, "p99": 0.0}, ...}},
///  "alerts": [{"rule": "...", "endpoint": "...", "since": "...", "message": "..."}],
///  "switches": [{"name": "stack", "enabled": true}, ...],
///  "snapshot": { the full stats::Snapshot }}
/// ```
///
/// `breaker` is `closed`, `open` or `half_open` (a breaker forced open by an
/// operator shows as `open`; one that never reported, or is disabled, as
/// `closed`). `upstream_calls` counts calls that reached the upstream
/// handler. The full [`Snapshot`] rides along under `snapshot`.
pub fn stats_document(
    environment: Environment,
    snapshot: &Snapshot,
    switches: Vec<(String, bool)>,
) -> Value {
    let mut endpoints = Map::new();
    for (name, e) in &snapshot.endpoints {
        let breaker = match e.breaker {
            Some("open" | "forced_open") => "open",
            Some("half_open") => "half_open",
            _ => "closed",
        };
        endpoints.insert(
            name.clone(),
            json!({
                "requests": e.requests,
                "upstream_calls": e.upstream_calls,
                "cache_hits": e.cache_hits,
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
        "switches": switches,
        "memory_bytes": snapshot.memory_bytes,
        "snapshot": snapshot,
    })
}
