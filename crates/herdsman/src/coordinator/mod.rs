//! The Coordinator: the whole stack built from one configuration.
//!
//! Each layer works alone, but an application wants all of them, in the
//! right order, sharing one classification of requests, one set of stats
//! and one set of switches. [`Coordinator::builder`] takes the
//! [`Environment`](crate::config::Environment) and the
//! [`Config`](crate::config::Config) (endpoint classes included, from
//! `config.classes`), validates it as start-up does ([`BuildError`] names
//! the field, the value and the reason) and builds every layer's shared
//! state; [`Coordinator::layer`] is the tower layer that puts them around an
//! inner HTTP service: an axum `Router` (server side) or a hyper-util client
//! (client side). Every service made from one coordinator shares its state.
//!
//! # The stack
//!
//! [`Coordinator::layer`] builds each service with one
//! `tower::ServiceBuilder` chain, outer to inner, as `docs/ARCHITECTURE.md`
//! explains:
//!
//! ```text
//! Coordinated   stack switch and rollout: else straight to the inner service
//!  Classified   the class and the key, computed once, carried with the body
//!  Registry     one-shot calls answered from a live poll loop
//!  Stats        client requests, per class (a poll loop's fetches pass it)
//!  Cache        HTTP semantics; writes invalidate (and the registry polls)
//!  Dedup        single-flight; each class's reuse window
//!  Breaker      per class; 5xx and errors are failures
//!  Limit        per class; per-caller rate rules use the rollout's identity
//!  Stats        upstream calls, per class and per key
//!  Buffer       bodies into Bytes, so that responses can be shared
//! inner service
//! ```
//!
//! - **Classes.** One [`PathClasses`](crate::http::PathClasses) from
//!   [`Config::path_classes`](crate::config::Config::path_classes)
//!   classifies each request once, in [`Classified`]; the class travels
//!   with the request's body ([`Routed`]), so no layer classifies it again
//!   ([`ClassOf`]).
//!   Each layer gets its per-class settings from
//!   [`Config::class`](crate::config::Config::class).
//! - **Keys.** Each class's [`HttpKey`](crate::http::HttpKey)
//!   ([`ClassKey`], one for the Registry, Cache, Dedup and Stats): the
//!   class's `vary` headers (after `keys.vary`); for a private class the
//!   credentials and the rollout's `identity_header`, so two users never
//!   share a private response; for requests around a `Router`, the hosts of
//!   `keys.hosts` (none: one site, `Host` is not in keys). [`Classified`]
//!   computes it once per request and carries it with the class's route
//!   in the request's body: inside the stack a request is a
//!   `Request<`[`Routed`]`<B>>`, and the innermost [`Unrouted`] gives the
//!   inner service its caller's body back. Not in its extensions: a first
//!   insertion there costs three allocations, as many as the rest of a
//!   cache hit. Every layer reads the key there while it is the request's
//!   (the cache changes a request's validators on its way down; a key is
//!   carried only for a request without them, and read while the request
//!   has as many headers as it had).
//! - **Switches.** [`Coordinator::switches`] holds one switch per layer per
//!   class and one for the stack ([`Switches::from_config`](crate::switch::Switches::from_config):
//!   layers off in `config.layers` or a class's `layers` start off). Each
//!   layer asks its classifier for its switch
//!   ([`Classify::is_on`](crate::class::Classify::is_on): [`ClassOf`] reads
//!   the carried class's, one atomic load) and passes the request straight
//!   to its inner service when it is off. A flip takes effect on the next
//!   request and never touches one in flight.
//! - **Rollout.** A caller the [`Rollout`](crate::switch::Rollout) of
//!   `config.rollout` does not admit (or every caller, with the stack switch
//!   off) goes straight to the inner service, its body unread.
//! - **Registry.** [`Coordinated::subscribe`] subscribes through the stack
//!   at the class's interval; the registry follows the cache's
//!   invalidations (from the first service made within a tokio runtime), so
//!   a `POST` through the stack pushes fresh data to the subscribers of its
//!   path. [`Coordinator::invalidate`] does the same by hand.
//! - **Stats.** Every layer reports to [`Coordinator::stats`] (the tokio
//!   clock in `Environment::Test`, alert rules from `config.alerts`), which
//!   also tracks the memory of the cache, dedup, limit and registry. Every
//!   configured class is listed from the start, and its breaker shows `off`
//!   while its switch is. A registry poll loop's fetch carries its route
//!   marked as the loop's (the canonical request [`ClassKey`] builds): the
//!   client-side Stats layer lets it pass, since it is no client request
//!   (it is counted in `polls`, and its upstream call as one), and what
//!   the layers below do for it is no client saving.
//!
//! - **Backends.** [`CoordinatorBuilder::backends`] puts the state a
//!   cluster of replicas shares behind the layers
//!   ([`Backends`](crate::backend::Backends): the cache's store backend,
//!   dedup's flights, the registry's loops, the limit layer's rate
//!   budgets; in memory by default). `herdsman_redis::backends` makes the
//!   Redis set from `config.redis`, which `build` requires when
//!   `redis.url` is set. Other replicas' invalidations (the store
//!   backend's [`remote_invalidations`](crate::backend::StoreBackend::remote_invalidations))
//!   are applied to the cache and announced to the registry, from the
//!   first service made within a tokio runtime, and never sent back.
//! - **Handles.** Each layer's handle is reachable from the coordinator,
//!   named after the layer ([`Coordinator::registry`], [`Coordinator::cache`],
//!   [`Coordinator::dedup`], [`Coordinator::breaker`],
//!   [`Coordinator::limit`], [`Coordinator::stats`]), as a layer's own is
//!   through its `handle()`; each handle has its `stats()`.
//!
//! The services are concrete types: no request is boxed.
//!
//! # Examples
//!
//! ```
//! use herdsman::{
//!     class::Class,
//!     config::{ClassConfig, Config, Environment},
//!     switch::LayerName,
//!     Coordinator,
//! };
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use std::{convert::Infallible, sync::{atomic::{AtomicUsize, Ordering}, Arc}};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), herdsman::BoxError> {
//! let mut config = Config::profile(Environment::Test);
//! config.classes.insert(
//!     "active-users".into(),
//!     ClassConfig { paths: vec!["/api/active-users".into()], public: true, ..Default::default() },
//! );
//! let coordinator = Coordinator::builder()
//!     .environment(Environment::Test)
//!     .config(config)
//!     .build()?;
//!
//! let calls = Arc::new(AtomicUsize::new(0));
//! let counter = calls.clone();
//! let upstream = service_fn(move |_: Request<Full<Bytes>>| {
//!     let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
//!     async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!("{n} online"))))) }
//! });
//! let svc = coordinator.layer().layer(upstream);
//!
//! let get = || Request::get("/api/active-users").body(Full::default()).unwrap();
//! for _ in 0..3 {
//!     let body = svc.clone().oneshot(get()).await?.into_body().collect().await?.to_bytes();
//!     assert_eq!(body, "1 online"); // the first call, then the cache
//! }
//! let active = &coordinator.snapshot().endpoints["active-users"];
//! assert_eq!((active.requests, active.upstream_calls), (3, 1));
//!
//! // The rollback plan: a switch flip, effective on the next request.
//! coordinator
//!     .switches()
//!     .set(LayerName::Cache, &Class::new("active-users"), false)?;
//! svc.clone().oneshot(get()).await?;
//! assert_eq!(calls.load(Ordering::SeqCst), 2);
//! # Ok(())
//! # }
//! ```
//!
//! `docs/COORDINATOR.md` shows the coordinator around an axum `Router` and
//! around a hyper-util client; `tests/tests/coordinator_e2e.rs` runs both.
//!
//! # Trade-offs
//!
//! - `poll_ready` drives both the stack and the plain inner service (the
//!   path is chosen in `call`): a bounded inner service may hold a slot on
//!   each until the call.
//! - The registry is one for all classes: a class's registry `interval`,
//!   `jitter`, `linger`, `max_subscribers_per_key` and budgets (`max_keys`,
//!   keys and subscriptions per caller and per address) apply to its keys
//!   ([`RegistryLayer::with_class`](crate::registry::RegistryLayer::with_class)),
//!   so a flood in one class never refuses another's new keys; `floor`,
//!   `max_subscribers` and `max_memory` bound the whole registry. Callers
//!   are told apart by the rollout's identity ([`CallerIdentity`]) and the
//!   client address ([`ClientAddress`](crate::http::ClientAddress)).
//! - **One key length.** `keys.max_len` goes to Dedup, the Cache and the
//!   Registry alike: a longer key passes the first two and one-shot
//!   Registry calls uncoordinated, and a subscription with one is refused.
//! - Subscriptions always go through the registry (there is no other path
//!   for a stream): its switch, the stack switch and the rollout decide
//!   one-shot calls. A loop's polls still skip the layers switched off.
//! - Cost: computing the key once per request, not once per keyed layer,
//!   took a coordinated cache hit from about 25,400 to 16,900
//!   instructions and from 27 to 20 allocations (a request with one
//!   header, under callgrind and dhat; the bare service: 2,400 and 4).
//!   Carrying the class and the key with the body rather than in the
//!   extensions took a hit of a browser `GET` (herdsman-bench's
//!   `coordinated`: nine headers and a cookie) from 6 to 3 allocations and
//!   1 reallocation, at about 10,700 instructions over the bare service:
//!   the one key (about 4,000, and its allocation), the cache's lookup
//!   and the caller's copy of the stored response (its header map: two
//!   allocations, and the reallocation when `Age` goes in), the layers'
//!   own bookkeeping. With the stack switch off a call costs the plain
//!   path's gate: one atomic load, then the rollout at under 100 %.

mod builder;
mod error;
mod handle;
mod layer;
mod route;
mod routed;
mod service;
mod sizes;

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use self::route::class_key;
pub use self::{
    builder::CoordinatorBuilder,
    error::BuildError,
    handle::Coordinator,
    layer::CoordinatorLayer,
    route::{CallerIdentity, ClassKey, ClassOf},
    routed::{Routed, Unrouted},
    service::{Classified, Coordinated, Plain, PlainFuture},
    sizes::Sizes,
};
