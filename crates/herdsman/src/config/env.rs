//! Which environment the process runs in, and where that is read from.

use std::{
    collections::BTreeMap,
    fmt, io,
    path::{Path, PathBuf},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

/// The variable that names the environment explicitly.
pub const ENV_VAR: &str = "HERDSMAN_ENV";

/// The variable that names the configuration file (default `herdsman.toml`).
pub const CONFIG_VAR: &str = "HERDSMAN_CONFIG";

/// The prefix of variables that override configuration keys:
/// `HERDSMAN__CACHE__TTL=30s` sets `cache.ttl`.
pub const OVERRIDE_PREFIX: &str = "HERDSMAN__";

/// The configuration file read when [`CONFIG_VAR`] is not set, relative to
/// the working directory. Its absence is not an error.
pub const DEFAULT_CONFIG_FILE: &str = "herdsman.toml";

/// Files whose existence marks a container.
const CONTAINER_FILES: [&str; 2] = ["/.dockerenv", "/run/.containerenv"];

/// The cgroup file of the container's init process.
const CGROUP_FILE: &str = "/proc/1/cgroup";

/// Words in a cgroup path that only container runtimes write.
const CGROUP_MARKERS: [&str; 5] = ["docker", "kubepods", "containerd", "libpod", "lxc"];

/// The environment a process runs in; it picks the [profile](super::Config::profile)
/// of defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// A developer's machine: fast polling, everything on.
    Development,
    /// Production: conservative intervals, intervals under the floor refused.
    Production,
    /// A container that did not say which environment it is.
    Docker,
    /// Tests: millisecond intervals, for `tokio::time::pause()`.
    Test,
}

impl Environment {
    /// Every environment, in documentation order.
    pub const ALL: [Environment; 4] = [
        Environment::Development,
        Environment::Production,
        Environment::Docker,
        Environment::Test,
    ];

    /// Detects the environment of this process; see [`detect_from`](Self::detect_from).
    pub fn detect() -> Result<Environment, UnknownEnvironment> {
        Self::detect_from(&SystemEnv)
    }

    /// Detects the environment from `source`:
    ///
    /// 1. `HERDSMAN_ENV`, if set, wins: `development`, `production`, `docker`
    ///    or `test` (any case). Any other value, the empty string included, is
    ///    an error: a typo must not silently select development defaults.
    /// 2. Otherwise a container marker (`/.dockerenv`, `/run/.containerenv`,
    ///    or a container runtime named in `/proc/1/cgroup`) means
    ///    [`Docker`](Environment::Docker).
    /// 3. Otherwise [`Development`](Environment::Development).
    ///
    /// cgroup v2 hides the runtime from `/proc/1/cgroup`; in such containers
    /// without the marker files, set `HERDSMAN_ENV`.
    pub fn detect_from(source: &impl EnvSource) -> Result<Environment, UnknownEnvironment> {
        if let Some(value) = source.var(ENV_VAR) {
            return value.parse();
        }
        let marked = CONTAINER_FILES
            .iter()
            .any(|file| source.exists(Path::new(file)));
        let in_cgroup = source
            .read(Path::new(CGROUP_FILE))
            .map(|cgroup| CGROUP_MARKERS.iter().any(|m| cgroup.contains(m)))
            .unwrap_or(false);
        Ok(if marked || in_cgroup {
            Environment::Docker
        } else {
            Environment::Development
        })
    }

    /// The lowercase name: `development`, `production`, `docker`, `test`.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Production => "production",
            Environment::Docker => "docker",
            Environment::Test => "test",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Environment {
    type Err = UnknownEnvironment;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Environment::ALL
            .into_iter()
            .find(|env| env.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownEnvironment(s.to_owned()))
    }
}

/// `HERDSMAN_ENV` (or a `--env` flag) named no known environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownEnvironment(String);

impl UnknownEnvironment {
    /// The value that was given.
    pub fn value(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UnknownEnvironment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{ENV_VAR} = {:?}: unknown environment, expected one of development, production, docker, test",
            self.0
        )
    }
}

impl std::error::Error for UnknownEnvironment {}

/// Where detection and loading read the outside world: environment
/// variables and files. [`SystemEnv`] reads the process's; [`StaticEnv`]
/// holds fixed values, so tests never touch the real environment.
pub trait EnvSource {
    /// The value of one variable, if set (and valid Unicode).
    fn var(&self, name: &str) -> Option<String>;

    /// Every variable whose name starts with `prefix`.
    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)>;

    /// Whether a file exists at `path`.
    fn exists(&self, path: &Path) -> bool;

    /// The contents of the file at `path`.
    fn read(&self, path: &Path) -> io::Result<String>;
}

impl<S: EnvSource + ?Sized> EnvSource for &S {
    fn var(&self, name: &str) -> Option<String> {
        (**self).var(name)
    }

    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        (**self).vars_with_prefix(prefix)
    }

    fn exists(&self, path: &Path) -> bool {
        (**self).exists(path)
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        (**self).read(path)
    }
}

/// The process's environment variables and file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemEnv;

impl EnvSource for SystemEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let mut vars: Vec<_> = std::env::vars()
            .filter(|(name, _)| name.starts_with(prefix))
            .collect();
        vars.sort();
        vars
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// Fixed variables and files: the [`EnvSource`] of tests, and of programs
/// that assemble their configuration themselves.
///
/// ```
/// use herdsman::config::{Environment, StaticEnv};
///
/// let source = StaticEnv::new().file("/.dockerenv", "");
/// assert_eq!(Environment::detect_from(&source), Ok(Environment::Docker));
/// let source = source.var("HERDSMAN_ENV", "production");
/// assert_eq!(Environment::detect_from(&source), Ok(Environment::Production));
/// ```
#[derive(Debug, Clone, Default)]
pub struct StaticEnv {
    vars: BTreeMap<String, String>,
    files: BTreeMap<PathBuf, String>,
}

impl StaticEnv {
    /// No variables, no files.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a variable.
    pub fn var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }

    /// Adds a file.
    pub fn file(mut self, path: impl Into<PathBuf>, contents: impl Into<String>) -> Self {
        self.files.insert(path.into(), contents.into());
        self
    }
}

impl EnvSource for StaticEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }

    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.vars
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect()
    }

    fn exists(&self, path: &Path) -> bool {
        self.files.contains_key(path)
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }
}
