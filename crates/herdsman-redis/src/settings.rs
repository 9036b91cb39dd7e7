//! The `[redis]` settings: where Redis is, and how long each kind of claim
//! lasts.

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

/// How to reach Redis and how to use it.
///
/// Meant as the `[redis]` table of herdsman's configuration (`url` then
/// reads `HERDSMAN__REDIS__URL`); every field has a default but `url`.
///
/// ```
/// use std::time::Duration;
/// use herdsman_redis::RedisSettings;
///
/// let settings: RedisSettings = toml::from_str(r#"
///     url = "redis://127.0.0.1:6379"
///     op_timeout = "50ms"
/// "#).unwrap();
/// assert_eq!(settings.op_timeout, Duration::from_millis(50));
/// assert_eq!(settings.key_prefix, "herdsman:");
/// settings.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// The server: `redis://host:port/db` (or `rediss://` for TLS, when
    /// redis-rs is built with it). Redis 6 or Valkey at least: the
    /// connection speaks RESP3 to carry pub/sub beside commands.
    pub url: String,
    /// Put before every key and channel name, so that several apps (or
    /// versions of one) can share a server without meeting.
    pub key_prefix: String,
    /// The longest one Redis operation may take; past it, this replica
    /// answers as if it had no Redis (a cache miss, its own upstream
    /// call). Short: a request waits for it.
    #[serde(with = "humantime_serde")]
    pub op_timeout: Duration,
    /// How long a replica's claim to make an upstream call lasts: the
    /// longest a dead holder can keep the others waiting before one of
    /// them takes over. Longer than the upstream's slow calls.
    #[serde(with = "humantime_serde")]
    pub flight_lease: Duration,
    /// How long a replica's claim to poll a key lasts past the round's
    /// interval (the poller renews it each round): a poller that died is
    /// replaced at most one interval plus this later.
    #[serde(with = "humantime_serde")]
    pub loop_lease: Duration,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: String::new(),
            key_prefix: "herdsman:".into(),
            op_timeout: Duration::from_millis(100),
            flight_lease: Duration::from_secs(10),
            loop_lease: Duration::from_secs(5),
        }
    }
}

impl RedisSettings {
    /// Settings for the server at `url`, defaults otherwise.
    pub fn new(url: impl Into<String>) -> Self {
        RedisSettings {
            url: url.into(),
            ..RedisSettings::default()
        }
    }

    /// Every problem of these settings, each naming its field; `Ok` when
    /// there is none.
    pub fn validate(&self) -> Result<(), InvalidSettings> {
        let mut problems = Vec::new();
        let mut refuse = |field: &'static str, value: String, reason: String| {
            problems.push(Invalid {
                field,
                value,
                reason,
            });
        };
        if redis::Client::open(self.url.as_str()).is_err() {
            refuse(
                "url",
                format!("{:?}", self.url),
                "is not a Redis URL (redis://host:port/db)".into(),
            );
        }
        if self.key_prefix.is_empty() {
            refuse(
                "key_prefix",
                "\"\"".into(),
                "must not be empty: the cluster's keys would mix with others".into(),
            );
        }
        for (field, value) in [
            ("op_timeout", self.op_timeout),
            ("flight_lease", self.flight_lease),
            ("loop_lease", self.loop_lease),
        ] {
            if value.is_zero() {
                refuse(field, "\"0s\"".into(), "must be greater than zero".into());
            }
        }
        for (field, value) in [
            ("flight_lease", self.flight_lease),
            ("loop_lease", self.loop_lease),
        ] {
            if !value.is_zero() && value <= self.op_timeout {
                refuse(
                    field,
                    format!(
                        "\"{}\"",
                        humantime_serde::re::humantime::format_duration(value)
                    ),
                    "must be longer than op_timeout: a claim would end before Redis answers it"
                        .into(),
                );
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(InvalidSettings { problems })
        }
    }
}

/// One refused value of [`RedisSettings`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The field, as named in the `[redis]` table.
    pub field: &'static str,
    /// The refused value, as TOML would write it.
    pub value: String,
    /// Why it is refused.
    pub reason: String,
}

/// What is wrong with [`RedisSettings`]: one line per refused field,
/// `redis.op_timeout = "0s": must be greater than zero`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSettings {
    problems: Vec<Invalid>,
}

impl InvalidSettings {
    /// The refused fields, in the order they were checked.
    pub fn problems(&self) -> &[Invalid] {
        &self.problems
    }
}

impl fmt::Display for InvalidSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "redis.{} = {}: {}", p.field, p.value, p.reason)?;
        }
        Ok(())
    }
}

impl std::error::Error for InvalidSettings {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_with_a_url_are_valid() {
        RedisSettings::new("redis://127.0.0.1:6379")
            .validate()
            .unwrap();
    }

    #[test]
    fn each_refused_value_names_its_field() {
        let settings = RedisSettings {
            url: "http://example.com".into(),
            key_prefix: String::new(),
            op_timeout: Duration::from_secs(1),
            flight_lease: Duration::ZERO,
            loop_lease: Duration::from_millis(500),
        };
        let err = settings.validate().unwrap_err();
        let fields: Vec<_> = err.problems().iter().map(|p| p.field).collect();
        assert_eq!(fields, ["url", "key_prefix", "flight_lease", "loop_lease"]);
        assert_eq!(
            err.to_string().lines().nth(2),
            Some("redis.flight_lease = \"0s\": must be greater than zero")
        );
        assert_eq!(
            err.to_string().lines().nth(3),
            Some(
                "redis.loop_lease = \"500ms\": must be longer than op_timeout: \
                 a claim would end before Redis answers it"
            )
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err =
            toml::from_str::<RedisSettings>("url = \"redis://a\"\nop_timout = \"1s\"").unwrap_err();
        assert!(err.to_string().contains("op_timout"), "{err}");
    }
}
