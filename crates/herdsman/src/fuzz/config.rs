//! The configuration loader: a TOML file and `HERDSMAN__` variables over
//! an environment's profile ([`Loader`](crate::config::Loader)).
//!
//! Inputs are mostly made of the real keys (taken from a profile's own TOML)
//! with odd values, so that they get past the parser into the checks, plus
//! raw files and variables.
//!
//! Properties:
//!
//! - loading never panics;
//! - an error lists at least one problem, each on one line, naming the key
//!   it is about (only a file that cannot be read or parsed is named
//!   instead);
//! - a loaded configuration prints as TOML (`herdsman config show`,
//!   redacted or not) and that TOML loads back to the same configuration.

use std::{fmt::Write as _, sync::OnceLock};

use arbitrary::Arbitrary;

use crate::config::{Config, Environment, StaticEnv};

/// A file and variables, for one environment.
#[derive(Debug, Arbitrary)]
pub struct Input {
    env: u8,
    file: Option<File>,
    vars: Vec<Var>,
}

#[derive(Debug, Arbitrary)]
enum File {
    Entries(Vec<Entry>),
    Raw(String),
}

#[derive(Debug, Arbitrary)]
struct Entry {
    /// Where: a known key (by index), or a class's.
    place: Place,
    value: Odd,
}

#[derive(Debug, Arbitrary)]
enum Place {
    Key(u16),
    /// `[classes.NAME]`, with `paths` and a known key of a section as an
    /// override.
    Class {
        name: ClassName,
        paths: Vec<String>,
        key: u16,
    },
    Unknown(String),
}

#[derive(Debug, Arbitrary)]
enum ClassName {
    Users,
    Board,
    Raw(String),
}

#[derive(Debug, Arbitrary)]
struct Var {
    key: Option<u16>,
    raw_name: String,
    value: Odd,
}

/// A value: the key's own (from the profile), or an odd one.
#[derive(Debug, Arbitrary)]
enum Odd {
    Same,
    Int(i64),
    Huge(u64),
    Float(f64),
    Bool(bool),
    Duration(u32, Unit),
    Text(String),
    List(Vec<String>),
    Table,
}

#[derive(Debug, Arbitrary)]
enum Unit {
    Ns,
    Ms,
    S,
    H,
    Years,
}

/// Every key of a profile's TOML, with its value: `("cache", "ttl", "\"50ms\"")`.
fn keys() -> &'static [(String, String, String)] {
    static KEYS: OnceLock<Vec<(String, String, String)>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let toml = Config::profile(Environment::Production).to_toml();
        let table: toml::Table = toml.parse().expect("a profile's TOML parses");
        let mut keys = Vec::new();
        for (section, value) in table {
            if let toml::Value::Table(inner) = value {
                for (key, value) in inner {
                    keys.push((section.clone(), key, value.to_string()));
                }
            }
        }
        // Optional keys a profile leaves out.
        for (section, key, value) in [
            ("breaker", "time_window", "\"10s\""),
            ("breaker", "slow_call_duration", "\"1s\""),
            ("breaker", "consecutive_failures", "3"),
            ("cache", "max_entries", "1000"),
            ("admin", "token", "\"0123456789abcdef0123\""),
            ("rollout", "identity_header", "\"x-user\""),
            ("rollout", "allow", "[\"alice\"]"),
            ("keys", "hosts", "[\"api.example\"]"),
            ("keys", "vary", "[\"accept-language\"]"),
            (
                "limit",
                "rate",
                "{ per_second = 5, burst = 10, by = \"class-and-identity\" }",
            ),
            ("registry", "allow_unsafe_intervals", "true"),
        ] {
            keys.push((section.into(), key.into(), value.into()));
        }
        keys
    })
}

fn key(index: u16) -> &'static (String, String, String) {
    let keys = keys();
    &keys[usize::from(index) % keys.len()]
}

impl Odd {
    fn toml(&self, same: &str) -> String {
        match self {
            Odd::Same => same.to_owned(),
            Odd::Int(n) => n.to_string(),
            Odd::Huge(n) => n.to_string(),
            Odd::Float(x) => toml::Value::Float(*x).to_string(),
            Odd::Bool(b) => b.to_string(),
            Odd::Duration(n, unit) => format!("\"{}\"", duration(*n, unit)),
            Odd::Text(s) => toml::Value::String(s.clone()).to_string(),
            Odd::List(items) => toml::Value::Array(
                items
                    .iter()
                    .map(|s| toml::Value::String(s.clone()))
                    .collect(),
            )
            .to_string(),
            Odd::Table => "{ x = 1 }".to_owned(),
        }
    }

    /// The value as a variable holds it.
    fn var(&self, same: &str) -> String {
        match self {
            Odd::Same => same.trim_matches('"').to_owned(),
            Odd::Duration(n, unit) => duration(*n, unit),
            Odd::Text(s) => s.clone(),
            other => other.toml(same),
        }
    }
}

fn duration(n: u32, unit: &Unit) -> String {
    let unit = match unit {
        Unit::Ns => "ns",
        Unit::Ms => "ms",
        Unit::S => "s",
        Unit::H => "h",
        Unit::Years => "years",
    };
    format!("{n}{unit}")
}

/// The entries as dotted keys (`cache.ttl = "1s"`), so that several
/// entries of one section make a valid file.
fn file(entries: &[Entry]) -> String {
    let mut text = String::new();
    for entry in entries {
        match &entry.place {
            Place::Key(index) => {
                let (section, key, same) = key(*index);
                let _ = writeln!(text, "{section}.{key} = {}", entry.value.toml(same));
            }
            Place::Class {
                name,
                paths,
                key: index,
            } => {
                let name = match name {
                    ClassName::Users => "users".to_owned(),
                    ClassName::Board => "board".to_owned(),
                    ClassName::Raw(raw) => toml::Value::String(raw.clone()).to_string(),
                };
                let paths = toml::Value::Array(
                    paths
                        .iter()
                        .map(|p| toml::Value::String(p.clone()))
                        .collect(),
                );
                let (section, key, same) = key(*index);
                let _ = writeln!(
                    text,
                    "classes.{name}.paths = {paths}\nclasses.{name}.{section}.{key} = {}",
                    entry.value.toml(same)
                );
            }
            Place::Unknown(raw) => {
                let _ = writeln!(
                    text,
                    "{} = {}",
                    toml::Value::String(raw.clone()),
                    entry.value.toml("1")
                );
            }
        }
    }
    text
}

/// Checks every property on `input`.
pub fn check(input: &Input) {
    let env = Environment::ALL[usize::from(input.env) % Environment::ALL.len()];
    let mut source = StaticEnv::new();
    if let Some(f) = &input.file {
        let text = match f {
            File::Entries(entries) => file(entries),
            File::Raw(raw) => raw.clone(),
        };
        source = source.file("herdsman.toml", text);
    }
    for var in &input.vars {
        let (name, same) = match var.key {
            Some(index) => {
                let (section, key, same) = key(index);
                (
                    format!(
                        "HERDSMAN__{}__{}",
                        section.to_uppercase(),
                        key.to_uppercase()
                    ),
                    same.as_str(),
                )
            }
            None => (format!("HERDSMAN__{}", var.raw_name), "1"),
        };
        source = source.var(name, var.value.var(same));
    }

    let config = match Config::loader(env).source(&source).load() {
        Ok(loaded) => loaded.config,
        Err(err) => {
            assert!(!err.problems().is_empty());
            for problem in err.problems() {
                let line = problem.to_string();
                assert!(!line.contains(['\n', '\r']), "not one line: {line:?}");
                assert!(
                    !problem.path.is_empty() || problem.source.is_some(),
                    "names neither a key nor a file: {line}"
                );
            }
            return;
        }
    };
    let shown = config.redacted().to_toml();
    assert!(!shown.is_empty());
    let toml = config.to_toml();
    let again = StaticEnv::new().file("herdsman.toml", toml.as_str());
    match Config::loader(env).source(&again).load() {
        Ok(loaded) => assert!(loaded.config == config, "{toml}"),
        Err(err) => panic!("printed configuration does not load:\n{err}\n{toml}"),
    }
}

/// Builds an [`Input`] from `data` and checks it.
pub fn run(data: &[u8]) {
    super::drive(data, check);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn configuration_properties_hold_for_arbitrary_files_and_variables(
            data in prop::collection::vec(any::<u8>(), 0..1024),
        ) {
            run(&data);
        }
    }
}
