//! Distributed backends for herdsman on Redis (or Valkey).
//!
//! herdsman coordinates within one process by default. When an app runs as
//! several replicas, the backends of this crate make the coordination
//! cluster-wide through one Redis server, behind the seams of
//! [`herdsman::backend`], so that the layers do not change:
//!
//! - [`RedisStore`]: a cache store that every replica shares, behind each
//!   replica's own ([`StoreBackend`](herdsman::backend::StoreBackend), the
//!   cache layer's L2), with invalidations published to every replica;
//! - [`RedisFlights`]: single-flight across replicas
//!   ([`FlightBackend`](herdsman::backend::FlightBackend)): of all the
//!   replicas' callers of one key, one replica calls the upstream and the
//!   others get its value;
//! - [`RedisLoops`]: one poll loop per key across replicas
//!   ([`LoopBackend`](herdsman::backend::LoopBackend)): one replica polls
//!   a key, and the others hear of its changes;
//! - [`RedisRates`]: the budgets of rate rules, cluster-wide
//!   ([`RateBackend`](herdsman::backend::RateBackend)): GCRA in one Lua
//!   script, reconciled in the background;
//! - [`RedisTrips`]: circuit breaker trips shared across replicas
//!   ([`TripBackend`](herdsman::backend::TripBackend)): one replica's trip
//!   opens the others' breakers of that class (off unless a breaker layer
//!   is given it).
//!
//! All of them share one [`Redis`] connection per replica, made from
//! [`RedisSettings`] (the `[redis]` section of herdsman's configuration).
//! [`backends`] makes the four for a
//! [`Coordinator`](herdsman::Coordinator) from that section
//! (`HERDSMAN__REDIS__URL`), for
//! [`CoordinatorBuilder::backends`](herdsman::coordinator::CoordinatorBuilder::backends).
//!
//! # When Redis fails
//!
//! No request fails because Redis is slow or down: every operation runs
//! under [`RedisSettings::op_timeout`], and past it the replica answers as
//! if it had no Redis (a cache miss, its own upstream call). The connection
//! reconnects in the background, with backoff. [`Redis::is_up`] says
//! whether Redis answered the last operation: hand the connection to
//! `Stats::track_dependency("redis", redis.clone())` for the
//! `redis_unavailable` alert and metric.
//!
//! # Examples
//!
//! ```no_run
//! use herdsman::{cache::CacheLayer, dedup::DedupLayer, key::Key};
//! use herdsman_redis::{PlainCodec, Redis, RedisFlights, RedisSettings, RedisStore};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = Redis::new(RedisSettings::new("redis://127.0.0.1:6379"))?;
//! let key_of = |req: &String| Some(Key::from(req.as_str()));
//! let cache = CacheLayer::<_, String>::new(key_of)
//!     .with_store_backend(RedisStore::new(redis.clone(), PlainCodec));
//! let dedup = DedupLayer::new(key_of)
//!     .with_flight_backend(RedisFlights::new(redis, PlainCodec));
//! # let _ = (cache, dedup);
//! # Ok(())
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "coordinator")]
mod backends;
mod codec;
mod conn;
#[cfg(feature = "dev")]
#[cfg_attr(docsrs, doc(cfg(feature = "dev")))]
pub mod dev;
mod flights;
mod loops;
mod rates;
mod settings;
mod store;
mod trips;

#[cfg(feature = "coordinator")]
#[cfg_attr(docsrs, doc(cfg(feature = "coordinator")))]
pub use backends::backends;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use codec::HttpCodec;
pub use codec::{Codec, PlainCodec};
pub use conn::Redis;
pub use flights::RedisFlights;
pub use loops::RedisLoops;
pub use rates::{RedisBudgets, RedisRates};
pub use settings::{InvalidSettings, RedisSettings};
pub use store::{Invalidations, RedisStore};
pub use trips::RedisTrips;

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn the_public_types_are_send_and_sync() {
        send_sync::<Redis>();
        send_sync::<RedisStore<PlainCodec>>();
        send_sync::<RedisFlights<PlainCodec>>();
        send_sync::<RedisLoops>();
        send_sync::<RedisRates>();
        send_sync::<RedisBudgets>();
        send_sync::<Invalidations>();
        send_sync::<RedisTrips>();
        send_sync::<RedisSettings>();
        send_sync::<InvalidSettings>();
    }
}
