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
        if self.path.is_empty() {
            f.write_str("(root)")?;
        } else {
            write!(f, "{}", OneLine(&self.path))?;
        }
        if let Some(value) = &self.value {
            write!(f, " = {}", OneLine(value))?;
        }
        write!(f, ": {}", OneLine(&self.reason))?;
        if let Some(source) = &self.source {
            write!(f, " (set by {})", OneLine(source))?;
        }
        Ok(())
    }
}

/// Text shown with its control characters escaped (`\n`), so that a key
/// name or a variable name holding a line break (TOML and the environment
/// allow both) cannot split a problem over lines or forge another one.
struct OneLine<'a>(&'a str);

impl fmt::Display for OneLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_is_one_line_whatever_its_key_and_source_hold() {
        let problem = Problem {
            path: "classes.a\nb.paths".into(),
            value: Some("\"x\"".into()),
            reason: "unknown key\r\nforged: line".into(),
            source: Some("HERDSMAN__A\nB".into()),
        };
        assert_eq!(
            problem.to_string(),
            r#"classes.a\nb.paths = "x": unknown key\r\nforged: line (set by HERDSMAN__A\nB)"#
        );
    }
}
