//! `docs/CONFIGURATION.md` checked against the types: every key a section
//! type accepts has a row in the doc, the doc has no row for a key no type
//! accepts, and each row gives the profiles' defaults. A field added to a
//! section without its row, or a default changed without the doc, fails
//! here.
//!
//! The keys come from the types themselves (their `Deserialize` field
//! lists, [`keys`]), the defaults from [`Config::profile`]; the doc's rows
//! from its tables: a `key` column under a heading that names a table
//! (`` ### `[cache]` ``, `` #### `[limit.rate]` ``, `` ### `[classes.<name>]` ``),
//! where `section.*` in a class's table stands for every key a class may
//! set in that section.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;

use super::{
    section::{class_keys, each_section, keys, EachSection, Section},
    AdminSettings, ClassConfig, Config, Environment, KeySettings, RedisSettings, RolloutSettings,
    ServerSettings,
};
use crate::{limit::RateRule, stats::AlertRules};

const DOC: &str = include_str!("../../../../docs/CONFIGURATION.md");

/// How the doc names a class's table.
const CLASS: &str = "classes.<name>";

/// One row of a doc table: its table, its key, and its cells by column
/// heading.
#[derive(Debug)]
struct Row {
    table: String,
    key: String,
    cells: Vec<(String, String)>,
}

fn rows(doc: &str) -> Vec<Row> {
    let mut table: Option<String> = None;
    let mut headings: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    for line in doc.lines() {
        if line.starts_with('#') {
            table = line
                .split('`')
                .nth(1)
                .and_then(|t| t.strip_prefix('[')?.strip_suffix(']'))
                .map(str::to_owned);
            headings = None;
        } else if !line.starts_with('|') {
            headings = None;
        } else if line.starts_with("| key |") {
            headings = table.is_some().then(|| cells(line));
        } else if let (Some(table), Some(headings)) = (&table, &headings) {
            let cells = cells(line);
            let Some(key) = cells[0].strip_prefix('`').and_then(|k| k.strip_suffix('`')) else {
                continue; // the separator row
            };
            rows.push(Row {
                table: table.clone(),
                key: key.to_owned(),
                cells: headings
                    .iter()
                    .cloned()
                    .zip(cells.iter().cloned())
                    .collect(),
            });
        }
    }
    rows
}

fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(|c| c.trim().to_owned()).collect()
}

/// The sections a class may have: each one's name, keys, and those a class
/// may set.
#[derive(Default)]
struct Classed(Vec<(&'static str, Vec<&'static str>, Vec<&'static str>)>);

impl EachSection for Classed {
    fn section<T: Section>(&mut self) {
        (self.0).push((T::NAME, T::keys(), class_keys::<T>()));
    }
}

fn global<T: DeserializeOwned>(name: &'static str) -> (&'static str, Vec<&'static str>) {
    (name, keys::<T>().to_vec())
}

/// Every key the types accept, as the doc names them: `cache.ttl`,
/// `limit.rate.burst`, `classes.<name>.cache.ttl`.
fn accepted() -> BTreeSet<String> {
    let classed = each_section(Classed::default()).0;
    let mut tables: Vec<(&str, Vec<&str>)> = classed
        .iter()
        .map(|(name, all, _)| (*name, all.clone()))
        .collect();
    tables.extend([
        global::<AlertRules>("alerts"),
        global::<AdminSettings>("admin"),
        global::<RolloutSettings>("rollout"),
        global::<ServerSettings>("server"),
        global::<KeySettings>("keys"),
        global::<RedisSettings>("redis"),
        global::<RateRule>("limit.rate"),
    ]);
    let mut accepted = BTreeSet::new();
    for key in keys::<Config>() {
        let known = *key == "classes" || tables.iter().any(|(name, _)| name == key);
        assert!(
            known,
            "Config has a section `{key}` this test does not know"
        );
    }
    for (table, keys) in &tables {
        accepted.extend(keys.iter().map(|k| format!("{table}.{k}")));
    }
    for key in keys::<ClassConfig>() {
        match classed.iter().find(|(name, _, _)| name == key) {
            Some((name, _, class)) => {
                accepted.extend(class.iter().map(|k| format!("{CLASS}.{name}.{k}")));
            }
            None => {
                accepted.insert(format!("{CLASS}.{key}"));
            }
        }
    }
    accepted
}

/// Every key the doc lists, `section.*` rows of a class expanded.
fn documented(rows: &[Row]) -> BTreeSet<String> {
    let mut documented = BTreeSet::new();
    for row in rows {
        match row.key.strip_suffix(".*") {
            Some(section) => {
                assert_eq!(row.table, CLASS, "{}: `.*` is for class sections", row.key);
                let class = accepted();
                let prefix = format!("{CLASS}.{section}.");
                let every: Vec<&String> = class.iter().filter(|k| k.starts_with(&prefix)).collect();
                assert!(!every.is_empty(), "{}: no such section", row.key);
                documented.extend(every.into_iter().cloned());
            }
            None => {
                documented.insert(format!("{}.{}", row.table, row.key));
            }
        }
    }
    documented
}

/// The environments a column gives the default of.
fn environments(heading: &str) -> Option<Vec<Environment>> {
    use Environment::*;
    Some(match heading {
        "dev" => vec![Development],
        "prod" => vec![Production],
        "docker" => vec![Docker],
        "test" => vec![Test],
        "dev / prod / docker" => vec![Development, Production, Docker],
        "all profiles" | "default" => Environment::ALL.to_vec(),
        _ => return None,
    })
}

/// The defaults of `table` in `env`, as TOML.
fn defaults(table: &str, env: Environment) -> toml::Table {
    if table == "limit.rate" {
        // The keys of a rate rule someone writes, but its limit: a rule
        // needs one, and has no default.
        let rate = toml::from_str::<RateRule>("per_second = 1").expect("a rate rule");
        let mut rate = toml::Table::try_from(rate).expect("a rate rule has a TOML form");
        rate.remove("per_second");
        return rate;
    }
    let config = toml::Table::try_from(Config::profile(env)).expect("a profile has a TOML form");
    match config.get(table) {
        Some(toml::Value::Table(table)) => table.clone(),
        _ => panic!("no [{table}] in the {env} profile"),
    }
}

/// A cell as the value it states: backticks and bold dropped, and a note
/// in parentheses after it (`25165824 (24 MiB)`, `— (required)`).
fn stated(cell: &str) -> String {
    let cell = cell.replace("**", "");
    let cell = match cell.find(" (") {
        Some(note) => &cell[..note],
        None => &cell,
    };
    cell.trim().trim_matches('`').to_owned()
}

/// The rows whose default cells disagree with the profiles.
fn wrong_defaults(rows: &[Row]) -> Vec<String> {
    let mut wrong = Vec::new();
    for row in rows.iter().filter(|r| r.table != CLASS) {
        let mut stated_any = false;
        for (heading, cell) in &row.cells {
            let Some(envs) = environments(heading) else {
                continue;
            };
            stated_any = true;
            let stated = stated(cell);
            for env in envs {
                let actual = defaults(&row.table, env)
                    .get(&row.key)
                    .map(|v| v.to_string());
                let agrees = match &actual {
                    None => stated == "—",
                    Some(value) => *value == stated,
                };
                if !agrees {
                    let actual = actual.unwrap_or_else(|| "unset (write —)".into());
                    wrong.push(format!(
                        "{}.{} in {env}: the doc says {cell}, the profile {actual}",
                        row.table, row.key
                    ));
                }
            }
        }
        if !stated_any {
            wrong.push(format!("{}.{}: no default column", row.table, row.key));
        }
    }
    for row in rows
        .iter()
        .filter(|r| r.table == CLASS && r.key.contains('.'))
    {
        let default = row.cells.get(1).map(|(_, c)| c.as_str()).unwrap_or("");
        if !default.starts_with("the global") {
            wrong.push(format!(
                "{CLASS}.{}: a class inherits the global value",
                row.key
            ));
        }
    }
    wrong
}

#[test]
fn the_doc_names_every_key_the_types_accept_and_no_other() {
    let accepted = accepted();
    let documented = documented(&rows(DOC));
    let undocumented: Vec<&String> = accepted.difference(&documented).collect();
    let unknown: Vec<&String> = documented.difference(&accepted).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "keys with no row in docs/CONFIGURATION.md: {undocumented:?}\n\
         rows in docs/CONFIGURATION.md for keys no type accepts: {unknown:?}"
    );
}

#[test]
fn the_doc_gives_every_keys_default_in_every_profile() {
    let wrong = wrong_defaults(&rows(DOC));
    assert!(
        wrong.is_empty(),
        "docs/CONFIGURATION.md:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn a_row_with_a_wrong_default_or_for_no_key_is_found() {
    let doc = "### `[cache]`\n\n| key | dev | prod | docker | test | rule |\n\
               | --- | --- | --- | --- | --- | --- |\n\
               | `ttl` | `\"5s\"` | `\"10s\"` | `\"8s\"` | `\"1s\"` | > 0 |\n\
               | `tll` | — | — | — | — | |\n";
    let rows = rows(doc);
    assert_eq!(rows.len(), 2);
    let wrong = wrong_defaults(&rows);
    assert_eq!(
        wrong,
        ["cache.ttl in test: the doc says `\"1s\"`, the profile \"50ms\""]
    );
    assert!(documented(&rows).contains("cache.tll") && !accepted().contains("cache.tll"));
}
