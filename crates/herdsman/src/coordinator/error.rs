use std::{error::Error, fmt};

use crate::config::{ConfigError, Problem};

/// A configuration the [`CoordinatorBuilder`](super::CoordinatorBuilder)
/// refuses, for the reasons start-up would: one line per problem, each
/// naming the field, the value and the reason
/// (`cache.ttl = "0s": must be greater than zero`).
#[derive(Debug, Clone)]
pub struct BuildError {
    config: ConfigError,
}

impl BuildError {
    pub(crate) fn new(config: ConfigError) -> Self {
        BuildError { config }
    }

    /// The problems, in the order the fields were checked.
    pub fn problems(&self) -> &[Problem] {
        self.config.problems()
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.config, f)
    }
}

// No `source()`: the message already is the configuration's problems, and
// a chain printer would print them twice.
impl Error for BuildError {}
