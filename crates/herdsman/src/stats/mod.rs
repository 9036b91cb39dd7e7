//! Stats: what coordination saves, and when something is wrong.
//!
//! Operators want to see at a glance how many client requests came in, how
//! many reached the upstream, hit ratios, latency, breaker states,
//! subscribers, and alerts. [`Stats`] keeps all of it per endpoint
//! [`Class`](crate::class::Class), from three sources:
//!
//! - [`Stats::layer`], the outermost layer: client requests, errors by kind
//!   ([`ErrorKind`]), cancellations, in-flight, client-perceived latency;
//! - [`Stats::upstream_layer`], the innermost layer, around the upstream:
//!   upstream calls, upstream errors and latency, and upstream calls per key
//!   for the per-hook alert;
//! - the other layers' [events](crate::event): `Stats` is an
//!   [`Observer`](crate::event::Observer), so giving it to Cache, Dedup,
//!   Breaker, Limit and the Registry with `with_observer(stats.clone())`
//!   counts hits, misses, stale answers, coalesced followers, rejections,
//!   breaker states and subscribers.
//!
//! Requests answered above the layer (an SSE or polling endpoint serving
//! from the Registry) are counted with [`Stats::start`].
//!
//! # What answered each request
//!
//! `requests` counts client requests only, and each finished one is counted
//! once, in the part of the saving that answered it ([`Saved`]): the cache
//! (`saved.cache_hits`), a call in flight or the reuse window
//! (`saved.coalesced`), a shared poll loop's value (`saved.poll_loop`: a
//! Registry one-shot answer, reported as
//! [`Event::SharedAnswer`](crate::event::Event::SharedAnswer), or a request
//! recorded [`from_poll_loop`](Recording::from_poll_loop)), or none of them
//! (`forwarded`: its own upstream call, or a local error). So `requests` is
//! exactly the saved parts plus `forwarded` plus `in_flight`.
//!
//! The layer knows what answered a request from the events the layers
//! below report while it calls and polls them: it keeps a thread-local
//! scope open meanwhile, and an event that arrives inside marks the request
//! (the upstream layer marks it too, when the call reaches it: a request
//! that made its own call is forwarded even if a stale copy then answered
//! it). An event outside any scope, such as one caused by a registry poll
//! loop's fetch or a background refresh, is counted by its layer's counter
//! (`cache_hits`, `coalesced`, ...) but saves no client anything. A poll
//! loop's fetch is no client request: the Coordinator sends it past this
//! layer (a stack built by hand cannot tell it apart).
//!
//! [`Stats::snapshot`] returns all of it as a [`Snapshot`] (`Serialize`,
//! JSON shape in `docs/METRICS.md`); the monitor task publishes it to the
//! [`metrics`] facade once per tick (every metric is listed in
//! `docs/METRICS.md`) and evaluates the [`AlertRules`].
//!
//! # Examples
//!
//! ```
//! use herdsman::{class::AllDefault, clock::Clock, stats::Stats, Key};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), herdsman::BoxError> {
//! let stats = Stats::new();
//! let svc = ServiceBuilder::new()
//!     .layer(stats.layer(AllDefault))
//!     // ... Cache, Dedup, Breaker and Limit go here ...
//!     .layer(stats.upstream_layer(AllDefault, |_: &String| None::<Key>))
//!     .service(service_fn(|req: String| async move {
//!         Ok::<_, herdsman::BoxError>(req.len())
//!     }));
//!
//! assert_eq!(svc.oneshot("hello".to_owned()).await?, 5);
//!
//! let snapshot = stats.snapshot();
//! let default = &snapshot.endpoints["default"];
//! assert_eq!((default.requests, default.upstream_calls), (1, 1));
//! println!("{}", serde_json::to_string_pretty(&snapshot)?);
//! # Ok(())
//! # }
//! ```
//!
//! # Cost
//!
//! Per client request the layer does three uncontended atomic additions,
//! two clock reads, one histogram record into a per-thread stripe, and four
//! thread-local accesses for the scope (two around `call`, two around each
//! poll); it never calls into `metrics` (the monitor copies totals into
//! `metrics` handles once per tick) and takes no lock shared by all
//! requests. The
//! default clock ([`Clock::Fast`](crate::clock::Clock::Fast)) reads the CPU's time-stamp counter
//! (about 12 ns here, against 32 ns for the OS clock).
//! `docs/BENCHMARKS.md` has the measured overhead.
//!
//! Sliding rates (`requests_per_minute`, ...) come from totals sampled once
//! per tick, so they move in one-tick steps and cost nothing per request.
//!
//! # Alerts
//!
//! [`AlertRules`] holds the operations plan's thresholds: more than 20
//! upstream calls per minute for one key (one hook); more than 100 MB held
//! by coordination (the layers' own estimates, summed over the sources
//! given to [`Stats::track_memory`]); an error rate above 5 % over one
//! minute with at least 20 requests; any breaker trip; and, for each
//! dependency given to [`Stats::track_dependency`] (a Redis server), while
//! it cannot be reached (`redis_unavailable`). Each alert fires
//! once when its condition starts and resolves once when it ends, with
//! hysteresis ([`AlertRules::with_resolve_ratio`]). It is delivered as a
//! `tracing` warning, a `herdsman_alerts_total{rule}` counter, the
//! snapshot's `alerts` list and the [`Stats::alerts`] stream. With the
//! `config` feature, [`AlertRules`] is also the `[alerts]` section of a
//! [`Config`][crate::config::Config], where a threshold may be `"off"`.
//!
//! # Time
//!
//! Under `tokio::time::pause` use
//! [`Clock::Tokio`](crate::clock::Clock::Tokio)
//! ([`StatsBuilder::with_clock`]) so latencies, rates and alerts follow the
//! paused clock; the Cache takes the same setting ([`crate::clock`]).
//!
#![cfg_attr(
    not(feature = "config"),
    doc = "[crate::config::Config]: crate#feature-flags"
)]

mod alerts;
mod dependency;
mod describe;
mod future;
mod handle;
mod histogram;
mod hooks;
mod layer;
mod publish;
mod recorder;
mod scope;
mod service;
mod snapshot;

/// The clock latencies, rates and alerts read: [`crate::clock::Clock`],
/// under its earlier name.
pub use self::{
    alerts::{Alert, AlertEvents, AlertRule, AlertRules, AlertState, ResolvedAlert, RESOLVED_KEPT},
    dependency::DependencySnapshot,
    describe::describe_metrics,
    future::{Recording, ResponseFuture},
    handle::{Stats, StatsBuilder, MAX_CLASSES, OVERFLOW_CLASS},
    histogram::{Percentiles, SIGNIFICANT_FIGURES},
    layer::{StatsLayer, UpstreamLayer},
    recorder::ErrorKind,
    service::{StatsService, UpstreamService},
    snapshot::{EndpointSnapshot, Saved, Snapshot},
};
