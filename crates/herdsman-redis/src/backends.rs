//! The Coordinator's backends on Redis, made from the `[redis]` section.

use std::time::Duration;

use herdsman::backend::Backends;

use crate::{
    settings::checked_url, HttpCodec, InvalidSettings, Redis, RedisFlights, RedisLoops, RedisRates,
    RedisSettings, RedisStore, RedisTrips,
};

/// The Coordinator's backends on the Redis server of `settings` (a
/// configuration's `[redis]` section), over one connection: its cache's
/// L2 ([`RedisStore`], whose invalidations reach every replica's cache and
/// registry), single-flight ([`RedisFlights`]), poll loops
/// ([`RedisLoops`]) and rate budgets ([`RedisRates`]); with
/// `share_breaker`, breaker trips ([`RedisTrips`]). Redis's health goes to
/// the coordinator's stats: the `redis_unavailable` alert and the
/// `herdsman_dependency_up{dependency="redis"}` gauge while it is away.
///
/// Never fails because Redis is down: it waits for the connection's
/// subscriptions at most ten operation timeouts (a second by default), then
/// returns anyway; meanwhile, and whenever Redis is away, each replica
/// coordinates alone and the connection reconnects in the background. It
/// fails only on settings that cannot work (no `url`, a bad value), each
/// named. Must be called within a tokio runtime.
///
/// # Examples
///
/// ```no_run
/// use herdsman::{config::{Config, Environment}, Coordinator};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let config = Config::load(Environment::Production)?;
/// let mut builder = Coordinator::builder().config(config.clone());
/// if config.redis.url.is_some() {
///     builder = builder.backends(herdsman_redis::backends(&config.redis).await?);
/// }
/// let coordinator = builder.build()?;
/// # let _ = coordinator;
/// # Ok(())
/// # }
/// ```
pub async fn backends(settings: &RedisSettings) -> Result<Backends, InvalidSettings> {
    checked_url(settings)?;
    let redis = Redis::new(settings.clone())?;
    let wait = settings.op_timeout.saturating_mul(10);
    let subscribed = async {
        while !redis.is_subscribed() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    if tokio::time::timeout(wait, subscribed).await.is_err() {
        tracing::warn!(
            url = settings.redacted_url().as_deref().unwrap_or(""),
            "Redis is not reachable yet: this replica coordinates alone until it is"
        );
    }
    let backends = Backends::local()
        .with_store(RedisStore::new(redis.clone(), HttpCodec))
        .with_flights(RedisFlights::new(redis.clone(), HttpCodec))
        .with_loops(RedisLoops::new(redis.clone()))
        .with_rates(RedisRates::new(redis.clone()))
        .with_dependency("redis", redis.clone());
    Ok(if settings.share_breaker {
        backends.with_trips(RedisTrips::new(redis))
    } else {
        backends
    })
}
