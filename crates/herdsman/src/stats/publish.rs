//! Publishing to the `metrics` facade, once per monitor tick.
//!
//! The request path touches only the layer's own atomics; the monitor copies
//! the totals into `metrics` handles (`Counter::absolute`, gauges), so an
//! installed recorder costs nothing per request.

use std::collections::{BTreeMap, HashMap};

use metrics::{Counter, Gauge};

use super::{
    handle::ClassMap,
    recorder::{ClassRecorder, ErrorKind, REJECTIONS},
    scope::PARTS,
};
use crate::{class::Class, event::Rejection};
use std::sync::atomic::Ordering::Relaxed;

/// The metric handles of one class, registered once.
struct ClassMetrics {
    requests: Counter,
    upstream_calls: Counter,
    upstream_errors: Counter,
    errors: Vec<(ErrorKind, Counter)>,
    cache: [Counter; 3],
    cache_backend_hits: Counter,
    coalesced: [Counter; 2],
    /// By [`Answer::part`](super::scope::Answer::part): forwarded, then the
    /// three parts of the saving.
    answered: [Counter; PARTS],
    rejections: Vec<(Rejection, Counter)>,
    cancelled: Counter,
    polls: Counter,
    in_flight: Gauge,
    upstream_in_flight: Gauge,
    requests_per_minute: Gauge,
    upstream_calls_per_minute: Gauge,
    subscribers: Gauge,
    latency: [Gauge; 4],
    upstream_latency: [Gauge; 4],
}

const QUANTILES: [&str; 4] = ["0.5", "0.9", "0.99", "1"];

impl ClassMetrics {
    fn new(class: &Class) -> Self {
        let e = class.as_str().to_owned();
        let counter = |name: &'static str| metrics::counter!(name, "endpoint" => e.clone());
        let gauge = |name: &'static str| metrics::gauge!(name, "endpoint" => e.clone());
        let quantiles = |name: &'static str| {
            QUANTILES.map(|q| metrics::gauge!(name, "endpoint" => e.clone(), "quantile" => q))
        };
        ClassMetrics {
            requests: counter("herdsman_requests_total"),
            upstream_calls: counter("herdsman_upstream_calls_total"),
            upstream_errors: counter("herdsman_upstream_errors_total"),
            errors: ErrorKind::ALL
                .iter()
                .map(|&k| {
                    (
                        k,
                        metrics::counter!("herdsman_errors_total", "endpoint" => e.clone(), "kind" => k.as_str()),
                    )
                })
                .collect(),
            cache: ["hit", "miss", "stale"].map(|o| {
                metrics::counter!("herdsman_cache_requests_total", "endpoint" => e.clone(), "layer" => "cache", "outcome" => o)
            }),
            cache_backend_hits: metrics::counter!("herdsman_cache_backend_hits_total", "endpoint" => e.clone(), "layer" => "cache"),
            coalesced: ["coalesced", "reused"].map(|o| {
                metrics::counter!("herdsman_coalesced_total", "endpoint" => e.clone(), "layer" => "dedup", "outcome" => o)
            }),
            answered: [
                counter("herdsman_forwarded_requests_total"),
                metrics::counter!("herdsman_saved_requests_total", "endpoint" => e.clone(), "outcome" => "cache_hit"),
                metrics::counter!("herdsman_saved_requests_total", "endpoint" => e.clone(), "outcome" => "coalesced"),
                metrics::counter!("herdsman_saved_requests_total", "endpoint" => e.clone(), "outcome" => "poll_loop"),
            ],
            rejections: REJECTIONS
                .iter()
                .map(|&r| {
                    let layer = match r {
                        Rejection::BreakerOpen => "breaker",
                        Rejection::Subscription(_) => "registry",
                        Rejection::EventStreams => "sse",
                        _ => "limit",
                    };
                    (
                        r,
                        metrics::counter!("herdsman_rejections_total", "endpoint" => e.clone(), "layer" => layer, "outcome" => r.as_str()),
                    )
                })
                .collect(),
            cancelled: counter("herdsman_cancelled_total"),
            polls: counter("herdsman_polls_total"),
            in_flight: gauge("herdsman_in_flight"),
            upstream_in_flight: gauge("herdsman_upstream_in_flight"),
            requests_per_minute: gauge("herdsman_requests_per_minute"),
            upstream_calls_per_minute: gauge("herdsman_upstream_calls_per_minute"),
            subscribers: gauge("herdsman_subscribers"),
            latency: quantiles("herdsman_latency_seconds"),
            upstream_latency: quantiles("herdsman_upstream_latency_seconds"),
        }
    }

    fn publish(&self, r: &ClassRecorder, now_sec: u64) {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Relaxed);
        let now = r.sample(now_sec);
        let then = r.ago(now_sec, 60);
        self.requests.absolute(now.requests);
        self.upstream_calls.absolute(now.upstream_calls);
        self.upstream_errors.absolute(load(&r.upstream_errors));
        for (kind, c) in &self.errors {
            c.absolute(r.errors_of(*kind));
        }
        for (c, v) in self
            .cache
            .iter()
            .zip([&r.cache_hits, &r.cache_misses, &r.stale_served])
        {
            c.absolute(load(v));
        }
        self.cache_backend_hits
            .absolute(load(&r.cache_backend_hits));
        self.coalesced[0].absolute(load(&r.coalesced));
        self.coalesced[1].absolute(load(&r.reused));
        for (c, n) in self.answered.iter().zip(r.parts()) {
            c.absolute(n);
        }
        for (rej, c) in &self.rejections {
            c.absolute(r.rejections_of(*rej));
        }
        self.cancelled.absolute(load(&r.cancelled));
        self.polls.absolute(load(&r.polls));
        self.in_flight.set(r.in_flight() as f64);
        self.upstream_in_flight
            .set(r.upstream_in_flight.load(Relaxed) as f64);
        self.requests_per_minute
            .set((now.requests - then.requests) as f64);
        self.upstream_calls_per_minute
            .set((now.upstream_calls - then.upstream_calls) as f64);
        self.subscribers.set(r.subscribers.load(Relaxed) as f64);
        for (gauges, p) in [
            (&self.latency, r.latency.percentiles()),
            (&self.upstream_latency, r.upstream_latency.percentiles()),
        ] {
            for (g, ms) in gauges.iter().zip([p.p50, p.p90, p.p99, p.max]) {
                g.set(ms / 1_000.0);
            }
        }
    }
}

#[derive(Default)]
pub(crate) struct Published {
    classes: HashMap<Class, ClassMetrics>,
    memory: HashMap<String, Gauge>,
}

impl Published {
    pub(crate) fn publish(
        &mut self,
        classes: &ClassMap,
        memory: &BTreeMap<String, u64>,
        now_sec: u64,
    ) {
        for (class, rec) in classes {
            self.classes
                .entry(class.clone())
                .or_insert_with(|| ClassMetrics::new(class))
                .publish(rec, now_sec);
        }
        for (source, bytes) in memory {
            self.memory
                .entry(source.clone())
                .or_insert_with(
                    || metrics::gauge!("herdsman_memory_bytes", "source" => source.clone()),
                )
                .set(*bytes as f64);
        }
    }
}
