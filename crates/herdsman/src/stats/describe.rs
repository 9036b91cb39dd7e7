//! What each metric means, for recorders that print it (Prometheus's
//! `# HELP` and `# TYPE` lines).

use metrics::Unit;

/// A metric's kind, as `metrics` registers it.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// Every metric herdsman publishes: name, kind, unit, help (docs/METRICS.md
/// says more, with the labels).
const METRICS: [(&str, Kind, Option<Unit>, &str); 26] = [
    ("herdsman_requests_total", Kind::Counter, None, "Client requests (never a poll loop's fetch)."),
    ("herdsman_saved_requests_total", Kind::Counter, None, "Finished client requests that made no upstream call of their own, by what answered them (outcome)."),
    ("herdsman_forwarded_requests_total", Kind::Counter, None, "Finished client requests that were not saved."),
    ("herdsman_upstream_calls_total", Kind::Counter, None, "Calls that reached the upstream."),
    ("herdsman_upstream_errors_total", Kind::Counter, None, "Upstream calls that failed."),
    ("herdsman_errors_total", Kind::Counter, None, "Errors clients got, by kind."),
    ("herdsman_cancelled_total", Kind::Counter, None, "Client requests dropped before they completed."),
    ("herdsman_cache_requests_total", Kind::Counter, None, "Cache answers: hit, miss or stale (outcome)."),
    ("herdsman_cache_backend_hits_total", Kind::Counter, None, "Fresh cache hits answered by the store backend (the second level) after a local miss."),
    ("herdsman_coalesced_total", Kind::Counter, None, "Requests that joined a call in flight (coalesced) or were answered from the reuse window (reused)."),
    ("herdsman_rejections_total", Kind::Counter, None, "Local rejections, by the layer that rejected and why (outcome)."),
    ("herdsman_polls_total", Kind::Counter, None, "Registry poll-loop fetches (not client requests)."),
    ("herdsman_in_flight", Kind::Gauge, None, "Client requests in flight."),
    ("herdsman_upstream_in_flight", Kind::Gauge, None, "Upstream calls in flight."),
    ("herdsman_requests_per_minute", Kind::Gauge, None, "Client requests in the last 60 seconds."),
    ("herdsman_upstream_calls_per_minute", Kind::Gauge, None, "Upstream calls in the last 60 seconds."),
    ("herdsman_subscribers", Kind::Gauge, None, "Registry subscribers now."),
    ("herdsman_latency_seconds", Kind::Gauge, Some(Unit::Seconds), "Client-perceived latency since start, by quantile."),
    ("herdsman_upstream_latency_seconds", Kind::Gauge, Some(Unit::Seconds), "Upstream latency since start, by quantile."),
    ("herdsman_memory_bytes", Kind::Gauge, Some(Unit::Bytes), "Memory held by coordination, as each source estimates it."),
    ("herdsman_alerts_total", Kind::Counter, None, "Alerts fired, by rule."),
    ("herdsman_alerts_active", Kind::Gauge, None, "Alerts firing now, by rule."),
    ("herdsman_breaker_state", Kind::Gauge, None, "1 for a circuit breaker's current state, 0 for the others."),
    ("herdsman_breaker_trips_total", Kind::Counter, None, "Times a circuit breaker opened."),
    ("herdsman_breaker_rejections_total", Kind::Counter, None, "Calls a circuit breaker failed fast."),
    ("herdsman_dependency_up", Kind::Gauge, None, "1 while a tracked dependency (such as Redis) answers, 0 while it is away."),
];

/// Describes every metric herdsman publishes to the installed `metrics`
/// recorder, so that an exporter can print what each one means (the
/// Prometheus exporter's `# HELP` lines; `# TYPE` follows the kind).
///
/// Call it once after installing the recorder: a description goes to the
/// recorder installed at the time. `herdsman-axum`'s `prometheus()` does.
/// The `herdsman_switch_flips_total` counter, which the switches publish,
/// is described here too.
pub fn describe_metrics() {
    for (name, kind, unit, help) in METRICS.iter().chain(&[SWITCH_FLIPS]) {
        match (kind, unit) {
            (Kind::Counter, Some(unit)) => metrics::describe_counter!(*name, *unit, *help),
            (Kind::Counter, None) => metrics::describe_counter!(*name, *help),
            (Kind::Gauge, Some(unit)) => metrics::describe_gauge!(*name, *unit, *help),
            (Kind::Gauge, None) => metrics::describe_gauge!(*name, *help),
        }
    }
}

const SWITCH_FLIPS: (&str, Kind, Option<Unit>, &str) = (
    "herdsman_switch_flips_total",
    Kind::Counter,
    None,
    "Run-time switch flips, by layer and endpoint class.",
);

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, fs, path::Path};

    use super::*;

    /// Every `"herdsman_…"` string literal on a line that registers a
    /// metric, in the crate's sources.
    fn published(dir: &Path, found: &mut BTreeSet<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                published(&path, found);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("describe.rs") {
                continue;
            }
            let text = fs::read_to_string(&path).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                // A name is on the macro's line or the next one.
                let near = lines[i.saturating_sub(1)..=i].join(" ");
                if !["counter", "gauge", "histogram", "quantiles"]
                    .iter()
                    .any(|m| near.contains(m))
                {
                    continue;
                }
                for part in line.split('"').skip(1).step_by(2) {
                    if part.starts_with("herdsman_")
                        && part.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    {
                        found.insert(part.to_owned());
                    }
                }
            }
        }
    }

    #[test]
    fn every_metric_the_crate_publishes_is_described() {
        let mut found = BTreeSet::new();
        published(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut found,
        );
        let described: BTreeSet<String> = METRICS
            .iter()
            .chain(&[SWITCH_FLIPS])
            .map(|m| m.0.to_owned())
            .collect();
        assert!(found.len() >= 20, "the scan finds the metrics: {found:?}");
        let missing: Vec<_> = found.difference(&described).collect();
        assert!(
            missing.is_empty(),
            "published but not described: {missing:?}"
        );
        let unused: Vec<_> = described.difference(&found).collect();
        assert!(
            unused.is_empty(),
            "described but never published: {unused:?}"
        );
    }
}
