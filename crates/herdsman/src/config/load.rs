//! Reading a configuration: profile < TOML file < `HERDSMAN__` variables,
//! merged by figment, deserialized section by section so that one bad key
//! does not hide the others.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    str::FromStr,
};

use figment::{
    error::Kind,
    providers::{Format, Serialized, Toml},
    value::{Dict, Map, Value},
    Figment, Metadata, Profile, Provider,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::{
    env::{CONFIG_VAR, DEFAULT_CONFIG_FILE, OVERRIDE_PREFIX},
    error::{ConfigError, Problem},
    profile::profile,
    section::{class_keys, each_section, table, EachSection, Section},
    validate, ClassConfig, Config, EnvSource, Environment,
};

/// The top-level keys of a configuration.
const SECTIONS: [&str; 13] = [
    "layers", "registry", "cache", "dedup", "breaker", "limit", "alerts", "admin", "rollout",
    "server", "keys", "redis", "classes",
];

/// Keys that are no longer read, by section, with what replaced them: each
/// is refused with a message naming its replacement rather than as unknown.
const RETIRED: [(&str, &str, &str); 1] = [(
    "registry",
    "allow_unsafe_intervals",
    "replaced by registry.allow_fast_polling, which also allows floors and intervals under 1s in production and docker",
)];

const PROFILE_SOURCE: &str = "profile default";
const ENV_SOURCE: &str = "environment";

/// A loaded, validated configuration and what loading it warned about.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Loaded {
    /// The effective configuration.
    pub config: Config,
    /// Values that were accepted after a correction (an interval raised to
    /// the floor), one [`Problem`](super::Problem) each.
    pub warnings: Vec<Problem>,
    /// The file that was read, if any.
    pub file: Option<PathBuf>,
}

/// Loads a [`Config`]; made by [`Config::loader`].
///
/// ```
/// use herdsman::config::{Config, Environment, StaticEnv};
///
/// let source = StaticEnv::new()
///     .file("ops/herdsman.toml", "[cache]\nttl = \"20s\"\nstale_while_revalidate = \"40s\"")
///     .var("HERDSMAN__LIMIT__MAX_CONCURRENCY", "8");
/// let loaded = Config::loader(Environment::Production)
///     .source(&source)
///     .file("ops/herdsman.toml")
///     .load()
///     .unwrap();
/// assert_eq!(loaded.config.cache.class.ttl.as_secs(), 20);
/// assert_eq!(loaded.config.limit.max_concurrent(), 8);
/// ```
#[derive(Clone, Copy)]
pub struct Loader<'a> {
    env: Environment,
    source: &'a dyn EnvSource,
    file: Option<&'a Path>,
}

impl std::fmt::Debug for Loader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("env", &self.env)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl<'a> Loader<'a> {
    pub(super) fn new(env: Environment) -> Loader<'static> {
        Loader {
            env,
            source: &super::SystemEnv,
            file: None,
        }
    }

    /// Reads variables and files from `source` instead of the process.
    pub fn source<'b>(self, source: &'b dyn EnvSource) -> Loader<'b>
    where
        'a: 'b,
    {
        Loader {
            env: self.env,
            source,
            file: self.file,
        }
    }

    /// Reads this file (which must exist) instead of the one named by
    /// `HERDSMAN_CONFIG` or `herdsman.toml`.
    pub fn file<'b>(self, path: &'b (impl AsRef<Path> + ?Sized)) -> Loader<'b>
    where
        'a: 'b,
    {
        Loader {
            env: self.env,
            source: self.source,
            file: Some(path.as_ref()),
        }
    }

    /// Merges, deserializes and validates. Every problem found is in the
    /// error, not just the first.
    pub fn load(self) -> Result<Loaded, ConfigError> {
        let mut problems = Vec::new();
        let file = self.choose_file();
        let mut figment = Figment::from(Named {
            name: PROFILE_SOURCE.into(),
            inner: Serialized::defaults(profile(self.env)),
        });
        if let Some(path) = &file {
            match self.source.read(path) {
                Ok(contents) => {
                    figment = figment.merge(Named {
                        name: path.display().to_string(),
                        inner: Toml::string(&contents),
                    })
                }
                Err(err) => problems.push(Problem {
                    path: String::new(),
                    value: Some(format!("{:?}", path.display().to_string())),
                    reason: format!("cannot read the configuration file: {err}"),
                    source: None,
                }),
            }
        }
        figment = figment.merge(EnvProvider::new(self.source));

        let mut root = match figment.find_value("") {
            Ok(root) => root,
            Err(err) => {
                problems.extend(err.into_iter().map(|e| {
                    Problem {
                        path: String::new(),
                        value: None,
                        reason: one_line(&e.kind.to_string()),
                        source: e
                            .metadata
                            .as_ref()
                            .map(|m| m.name.to_string())
                            .or_else(|| file.as_ref().map(|p| p.display().to_string())),
                    }
                }));
                return Err(ConfigError::new(problems));
            }
        };
        if root.as_dict().is_none() {
            problems.push(Problem {
                path: String::new(),
                value: None,
                reason: "expected a table".into(),
                source: None,
            });
            return Err(ConfigError::new(problems));
        }
        retire(&figment, &mut root, &mut problems);
        let dict = root.as_dict().expect("checked above");
        let reader = Reader {
            figment: &figment,
            root: &root,
        };
        for key in dict.keys().filter(|k| !SECTIONS.contains(&k.as_str())) {
            problems.push(reader.problem(
                vec![key.clone()],
                format!("unknown key, expected one of {}", SECTIONS.join(", ")),
            ));
        }

        let defaults = profile(self.env);
        let mut config = Config {
            layers: reader.section_of(defaults.layers, &mut problems),
            registry: reader.section_of(defaults.registry, &mut problems),
            cache: reader.section_of(defaults.cache, &mut problems),
            dedup: reader.section_of(defaults.dedup, &mut problems),
            breaker: reader.section_of(defaults.breaker, &mut problems),
            limit: reader.section_of(defaults.limit, &mut problems),
            alerts: reader.section("alerts", defaults.alerts, &mut problems),
            admin: reader.section("admin", defaults.admin, &mut problems),
            rollout: reader.section("rollout", defaults.rollout, &mut problems),
            server: reader.section("server", defaults.server, &mut problems),
            keys: reader.section("keys", defaults.keys, &mut problems),
            redis: reader.section("redis", defaults.redis, &mut problems),
            classes: BTreeMap::new(),
        };
        config.classes = reader.classes(&config, &mut problems);

        let (found, warnings) = validate::validate(&mut config, self.env);
        let with_source = |p: Problem| Problem {
            source: reader.source_of(&p.path),
            ..p
        };
        problems.extend(found.into_iter().map(with_source));
        let warnings: Vec<Problem> = warnings.into_iter().map(with_source).collect();
        if problems.is_empty() {
            Ok(Loaded {
                config,
                warnings,
                file,
            })
        } else {
            Err(ConfigError::new(problems))
        }
    }

    fn choose_file(&self) -> Option<PathBuf> {
        if let Some(path) = self.file {
            return Some(path.to_owned());
        }
        if let Some(path) = self.source.var(CONFIG_VAR) {
            return Some(PathBuf::from(path));
        }
        let default = Path::new(DEFAULT_CONFIG_FILE);
        self.source.exists(default).then(|| default.to_owned())
    }
}

/// Lays each of a class's sections over the global one.
struct LayOver<'a, 'f> {
    reader: &'a Reader<'f>,
    path: &'a [String],
    dict: Dict,
    global: &'a Config,
    problems: &'a mut Vec<Problem>,
}

impl EachSection for LayOver<'_, '_> {
    fn section<T: Section>(&mut self) {
        let global = T::global(self.global);
        (self.reader).lay_over(self.path, &mut self.dict, global, self.problems);
    }
}

/// Reports each [`RETIRED`] key that is set, and removes it so that the
/// rest of its section is still read and checked.
fn retire(figment: &Figment, root: &mut Value, problems: &mut Vec<Problem>) {
    for (section, key, replacement) in RETIRED {
        let path = vec![section.to_owned(), key.to_owned()];
        let reader = Reader { figment, root };
        if reader.lookup(&path).is_none() {
            continue;
        }
        problems.push(reader.problem(path, replacement.to_owned()));
        if let Value::Dict(_, sections) = root {
            if let Some(Value::Dict(_, keys)) = sections.get_mut(section) {
                keys.remove(key);
            }
        }
    }
}

/// Reads sections out of the merged value and turns figment's errors into
/// [`Problem`]s.
struct Reader<'f> {
    figment: &'f Figment,
    root: &'f Value,
}

impl Reader<'_> {
    /// Reads the global section `name`, which a class does not have.
    fn section<T: DeserializeOwned + Serialize>(
        &self,
        name: &str,
        default: T,
        problems: &mut Vec<Problem>,
    ) -> T {
        let Some(value) = self.root.find_ref(name) else {
            return default;
        };
        let fallback = table(&default).unwrap_or_default();
        self.read_each(vec![name.to_owned()], value, &fallback, problems)
            .map_or(default, |(section, _)| section)
    }

    /// Reads the global [`Section`] `T`.
    fn section_of<T: Section>(&self, default: T, problems: &mut Vec<Problem>) -> T {
        let Some(value) = self.root.find_ref(T::NAME) else {
            return default;
        };
        let path = vec![T::NAME.to_owned()];
        let own = self.read_own::<T>(&path, value, problems);
        let fallback = table(&default).unwrap_or_default();
        own.and_then(|()| self.read_each(path, value, &fallback, problems))
            .map_or(default, |(section, _)| section)
    }

    /// Reads `value`, a section's table, as `T`. A key that fails to read
    /// is reported and replaced by its value in `fallback` (the section's
    /// default, or the global section under a class's), so that the rest
    /// of the section is still read, and checked: every problem is
    /// reported at once. Returns the section and the table it was read
    /// from.
    fn read_each<T: DeserializeOwned>(
        &self,
        path: Vec<String>,
        value: &Value,
        fallback: &Dict,
        problems: &mut Vec<Problem>,
    ) -> Option<(T, Value)> {
        let mut value = value.clone();
        let mut replaced: Vec<String> = Vec::new();
        loop {
            let err = match value.deserialize::<T>() {
                Ok(section) => return Some((section, value)),
                Err(err) => err,
            };
            let keys: Vec<String> = err
                .clone()
                .into_iter()
                .filter_map(|e| e.path.first().cloned())
                .collect();
            self.report(path.clone(), err, problems);
            let Value::Dict(_, dict) = &mut value else {
                return None;
            };
            // Each key once: a fallback that fails too ends the reading.
            if keys.is_empty() || keys.iter().any(|key| replaced.contains(key)) {
                return None;
            }
            for key in keys {
                match fallback.get(&key) {
                    Some(default) => dict.insert(key.clone(), default.clone()),
                    None => dict.remove(&key),
                };
                replaced.push(key);
            }
        }
    }

    /// Reads the layer's own type in section `T`'s table alone, first (see
    /// [`Section::read_own`]), and refuses the keys `T` does not have: a
    /// flattened type's errors would not name their key, and an unknown
    /// key would pass unseen.
    fn read_own<T: Section>(
        &self,
        path: &[String],
        value: &Value,
        problems: &mut Vec<Problem>,
    ) -> Option<()> {
        let (own, Some(dict)) = (T::own_keys(), value.as_dict()) else {
            return Some(());
        };
        if own.is_empty() {
            return Some(());
        }
        let keys = T::keys();
        let before = problems.len();
        for key in dict.keys().filter(|k| !keys.contains(&k.as_str())) {
            let mut at = path.to_vec();
            at.push(key.clone());
            let reason = format!("unknown key, expected one of {}", keys.join(", "));
            problems.push(self.problem(at, reason));
        }
        let part: Dict = dict
            .iter()
            .filter(|(key, _)| own.contains(&key.as_str()))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        if let Err(err) = T::read_own(&Value::from(part)) {
            self.report(path.to_vec(), *err, problems);
        }
        (problems.len() == before).then_some(())
    }

    fn classes(
        &self,
        global: &Config,
        problems: &mut Vec<Problem>,
    ) -> BTreeMap<String, ClassConfig> {
        let Some(value) = self.root.find_ref("classes") else {
            return BTreeMap::new();
        };
        let Some(dict) = value.as_dict() else {
            problems.push(self.problem(vec!["classes".into()], "expected a table".into()));
            return BTreeMap::new();
        };
        dict.iter()
            .filter_map(|(name, value)| {
                let path = vec!["classes".to_owned(), name.clone()];
                let value = self.over_global(&path, value, global, problems);
                let class = self.read(path, &value, problems)?;
                Some((name.clone(), class))
            })
            .collect()
    }

    /// A class's table with each of its sections laid over the global
    /// section: the keys it sets replace the global values, so that it
    /// deserializes into the global section's type, whole.
    fn over_global(
        &self,
        path: &[String],
        class: &Value,
        global: &Config,
        problems: &mut Vec<Problem>,
    ) -> Value {
        let Value::Dict(tag, dict) = class else {
            return class.clone();
        };
        let layer = each_section(LayOver {
            reader: self,
            path,
            dict: dict.clone(),
            global,
            problems,
        });
        let dict = layer.dict;
        Value::Dict(*tag, dict)
    }

    /// Lays the class's table of section `T` over `global`. A key the
    /// section does not have, or one only the global section sets, is
    /// refused and left out.
    fn lay_over<T: Section>(
        &self,
        path: &[String],
        class: &mut Dict,
        global: &T,
        problems: &mut Vec<Problem>,
    ) {
        let Some(Value::Dict(tag, own)) = class.get(T::NAME) else {
            return;
        };
        let (tag, own) = (*tag, own.clone());
        let allowed = class_keys::<T>();
        let mut merged = table(global).unwrap_or_default();
        for (key, value) in own {
            if allowed.contains(&key.as_str()) {
                merged.insert(key, value);
            } else {
                let mut at = path.to_vec();
                at.extend([T::NAME.to_owned(), key]);
                let reason = format!("unknown key, expected one of {}", allowed.join(", "));
                problems.push(self.problem(at, reason));
            }
        }
        let mut at = path.to_vec();
        at.push(T::NAME.to_owned());
        let merged = Value::Dict(tag, merged);
        let fallback = table(global).unwrap_or_default();
        let read = self
            .read_own::<T>(&at, &merged, problems)
            .and_then(|()| self.read_each::<T>(at, &merged, &fallback, problems));
        let merged = match read {
            Some((_, merged)) => merged,
            // Reported; the global section keeps the class readable.
            None => Value::serialize(global).unwrap_or(merged),
        };
        class.insert(T::NAME.to_owned(), merged);
    }

    fn read<T: DeserializeOwned>(
        &self,
        prefix: Vec<String>,
        value: &Value,
        problems: &mut Vec<Problem>,
    ) -> Option<T> {
        match value.deserialize::<T>() {
            Ok(section) => Some(section),
            Err(err) => {
                self.report(prefix, err, problems);
                None
            }
        }
    }

    /// Turns figment's errors, found under `prefix`, into [`Problem`]s.
    fn report(&self, prefix: Vec<String>, err: figment::Error, problems: &mut Vec<Problem>) {
        for e in err {
            let mut path = prefix.clone();
            path.extend(e.path.iter().cloned());
            let reason = match &e.kind {
                Kind::UnknownField(_, expected) => {
                    // figment's path already ends with the field.
                    format!("unknown key, expected one of {}", expected.join(", "))
                }
                Kind::MissingField(field) => {
                    path.push(field.to_string());
                    "missing".to_owned()
                }
                Kind::UnknownVariant(_, expected) => {
                    format!("expected one of {}", expected.join(", "))
                }
                Kind::InvalidType(_, expected) | Kind::InvalidValue(_, expected) => {
                    format!("expected {}", expected_in_words(expected))
                }
                kind => one_line(&kind.to_string()),
            };
            problems.push(self.problem(path, reason));
        }
    }

    fn problem(&self, path: Vec<String>, reason: String) -> Problem {
        let value = self.lookup(&path);
        Problem {
            value: value.and_then(render),
            source: value.and_then(|v| self.source_of_value(v, &path)),
            path: path.join("."),
            reason,
        }
    }

    fn lookup(&self, path: &[String]) -> Option<&Value> {
        path.iter()
            .try_fold(self.root, |value, key| value.as_dict()?.get(key))
    }

    fn source_of(&self, path: &str) -> Option<String> {
        let path: Vec<String> = path.split('.').map(str::to_owned).collect();
        self.source_of_value(self.lookup(&path)?, &path)
    }

    fn source_of_value(&self, value: &Value, path: &[String]) -> Option<String> {
        let metadata = self.figment.get_metadata(value.tag())?;
        Some(if metadata.name == ENV_SOURCE {
            env_var_name(path)
        } else {
            metadata.name.to_string()
        })
    }
}

/// A value as TOML writes it: `"10s"`, `3`, `["/a"]`; none for a table,
/// whose problem is with the keys it holds.
fn render(value: &Value) -> Option<String> {
    if value.as_dict().is_some() {
        return None;
    }
    toml::Value::try_from(value).ok().map(|v| v.to_string())
}

fn expected_in_words(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => {
            "a whole number, zero or more (within the key's range)".to_owned()
        }
        "f64" | "f32" => "a number".to_owned(),
        "a duration" => "a duration such as \"10s\", \"250ms\" or \"1m 30s\"".to_owned(),
        other => other.to_owned(),
    }
}

/// Parser messages span several lines (a source snippet); keep the words.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.contains('|') && !line.starts_with('^'))
        .collect::<Vec<_>>()
        .join(": ")
}

/// The variable that sets `path`: `HERDSMAN__CACHE__TTL`.
pub(super) fn env_var_name(path: &[String]) -> String {
    let mut name = OVERRIDE_PREFIX.trim_end_matches('_').to_owned();
    for part in path {
        name.push_str("__");
        name.push_str(&part.to_uppercase());
    }
    name
}

/// Gives a provider a name of our choosing, shown as the source of its values.
struct Named<P> {
    name: String,
    inner: P,
}

impl<P: Provider> Provider for Named<P> {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.inner.data()
    }
}

/// `HERDSMAN__SECTION__KEY=value` variables, read from an [`EnvSource`]
/// (figment's own `Env` reads only the process environment). Names are
/// split on `__` and lowercased; values are parsed as figment does (`true`,
/// `8`, `0.5`, `[1, 2]`, or else a string).
struct EnvProvider {
    vars: Vec<(String, String)>,
}

impl EnvProvider {
    fn new(source: &dyn EnvSource) -> Self {
        EnvProvider {
            vars: source.vars_with_prefix(OVERRIDE_PREFIX),
        }
    }
}

impl Provider for EnvProvider {
    fn metadata(&self) -> Metadata {
        Metadata::named(ENV_SOURCE)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut root = Dict::new();
        for (name, raw) in &self.vars {
            let keys: Vec<String> = name[OVERRIDE_PREFIX.len()..]
                .split("__")
                .map(str::to_lowercase)
                .collect();
            if keys.iter().any(String::is_empty) {
                continue;
            }
            insert(&mut root, &keys, env_value(raw));
        }
        Ok(Profile::Default.collect(root))
    }
}

/// A variable's value, parsed as figment parses one.
///
/// figment 0.10's parser unescapes a quoted string by slicing it at a count
/// of characters taken for a count of bytes: a non-ASCII character before a
/// `\` escape (`["é\u0041"]`) makes it panic or drop characters. Such
/// values are parsed as TOML instead (the grammar figment's follows), and a
/// value TOML does not read either is the plain text, as figment keeps it.
fn env_value(raw: &str) -> Value {
    if !raw.contains('\\') || raw.is_ascii() {
        return Value::from_str(raw).unwrap_or_else(|never| match never {});
    }
    let toml = || -> Option<Value> {
        if raw.contains(['\n', '\r']) {
            return None;
        }
        let table: toml::Table = format!("v = {raw}").parse().ok()?;
        <Value as Deserialize>::deserialize(table.get("v")?.clone()).ok()
    };
    toml().unwrap_or_else(|| Value::from(raw.to_owned()))
}

fn insert(dict: &mut Dict, keys: &[String], value: Value) {
    match keys {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if entry.as_dict().is_none() {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}
