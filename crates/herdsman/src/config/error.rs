//! What is wrong with a configuration, said the same way everywhere.

use std::fmt;

/// One problem (or warning) in a configuration: where, what value, why, and
/// which source set it.
///
/// Displays as one line: `cache.ttl = "0s": must be greater than zero (set by herdsman.toml)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted path of the key: `classes.active-users.cache.ttl`.
    pub path: String,
    /// The offending value as TOML would write it, when there is one.
    pub value: Option<String>,
    /// Why it is refused.
    pub reason: String,
    /// What set the value: a file path, an environment variable, or
    /// `profile default`.
    pub source: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.path.is_empty() {
            "(root)"
        } else {
            &self.path
        })?;
        if let Some(value) = &self.value {
            write!(f, " = {value}")?;
        }
        write!(f, ": {}", self.reason)?;
        if let Some(source) = &self.source {
            write!(f, " (set by {source})")?;
        }
        Ok(())
    }
}

/// Every problem found in a configuration. Displays one [`Problem`] per
/// line, the same at start-up and in `herdsman config check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    problems: Vec<Problem>,
}

impl ConfigError {
    pub(crate) fn new(problems: Vec<Problem>) -> Self {
        debug_assert!(!problems.is_empty());
        ConfigError { problems }
    }

    /// The problems, in the order the keys were checked.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            fmt::Display::fmt(problem, f)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}
