//! The `[redis]` settings, herdsman's own type, and what a connection
//! checks beyond them.

use std::fmt;

use herdsman::config::Problem;
pub use herdsman::config::RedisSettings;

/// The server's URL of `settings`, once every value is checked: the
/// section's own rules ([`RedisSettings::validate`]), a URL set, and one
/// that redis-rs reads.
pub(crate) fn checked_url(settings: &RedisSettings) -> Result<&str, InvalidSettings> {
    let mut problems = match settings.validate() {
        Ok(()) => Vec::new(),
        Err(err) => err.problems().to_vec(),
    };
    let url = settings.url.as_deref();
    if url.is_none() {
        problems.push(Problem {
            path: "redis.url".into(),
            value: None,
            reason: "must be set to connect (redis://host:port/db)".into(),
            source: None,
        });
    }
    if let Some(url) = url {
        let known = problems.iter().any(|p| p.path == "redis.url");
        if !known && redis::Client::open(url).is_err() {
            problems.push(Problem {
                path: "redis.url".into(),
                value: settings.redacted_url().map(|u| format!("{u:?}")),
                reason: "is not a Redis URL (redis://host:port/db)".into(),
                source: None,
            });
        }
    }
    match url {
        Some(url) if problems.is_empty() => Ok(url),
        _ => Err(InvalidSettings { problems }),
    }
}

/// What is wrong with [`RedisSettings`] for a connection: one line per
/// refused field, `redis.op_timeout = "0s": must be greater than zero`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSettings {
    problems: Vec<Problem>,
}

impl InvalidSettings {
    /// The refused fields, in the order they were checked.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Display for InvalidSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InvalidSettings {}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_defaults_with_a_url_are_valid() {
        let settings = RedisSettings::new("redis://127.0.0.1:6379");
        assert_eq!(checked_url(&settings), Ok("redis://127.0.0.1:6379"));
    }

    #[test]
    fn each_refused_value_names_its_field() {
        let settings = RedisSettings {
            url: Some("http://example.com".into()),
            key_prefix: String::new(),
            op_timeout: Duration::from_secs(1),
            flight_lease: Duration::ZERO,
            loop_lease: Duration::from_millis(500),
            share_breaker: false,
        };
        let err = checked_url(&settings).unwrap_err();
        let fields: Vec<_> = err.problems().iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            fields,
            [
                "redis.url",
                "redis.key_prefix",
                "redis.flight_lease",
                "redis.loop_lease"
            ]
        );
        assert_eq!(
            err.to_string().lines().nth(2),
            Some("redis.flight_lease = \"0s\": must be greater than zero")
        );
    }

    #[test]
    fn a_connection_needs_a_url() {
        let err = checked_url(&RedisSettings::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "redis.url: must be set to connect (redis://host:port/db)"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err =
            toml::from_str::<RedisSettings>("url = \"redis://a\"\nop_timout = \"1s\"").unwrap_err();
        assert!(err.to_string().contains("op_timout"), "{err}");
    }
}
