//! A configuration as TOML, as `herdsman config show` prints it: the global
//! sections in their fields' order, then each class with the keys of its
//! sections whose values differ from the global ones, as a file sets them.

use serde::{ser::SerializeMap, Serialize, Serializer};

use super::{
    section::{each_section, keys, EachSection, Section},
    ClassConfig, Config,
};

const TOML: &str = "every configuration value has a TOML form";

pub(super) fn to_toml(config: &Config) -> String {
    let globals = Config {
        classes: Default::default(),
        ..config.clone()
    };
    let mut shown = toml::to_string(&globals).expect(TOML);
    if !config.classes.is_empty() {
        let classes = config
            .classes
            .iter()
            .map(|(name, class)| (name.clone(), class_table(config, class)))
            .collect();
        let classes = Entry::Table(vec![("classes".to_owned(), Entry::Table(classes))]);
        shown.push('\n');
        shown.push_str(&toml::to_string(&classes).expect(TOML));
    }
    shown
}

/// A value, or a table whose keys keep their order.
enum Entry {
    Value(toml::Value),
    Table(Vec<(String, Entry)>),
}

impl Serialize for Entry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Entry::Value(value) => value.serialize(serializer),
            Entry::Table(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

/// A class's keys, and its sections' keys whose values differ from the
/// global ones.
fn class_table(config: &Config, class: &ClassConfig) -> Entry {
    let table = toml::Table::try_from(class).expect(TOML);
    let mut own = each_section(Compact {
        config,
        class,
        sections: Vec::new(),
    })
    .sections;
    let entries = keys::<ClassConfig>()
        .iter()
        .filter_map(|key| {
            let entry = match own.iter_mut().find(|(name, _)| name == key) {
                Some((_, section)) => section.take()?,
                None => Entry::Value(table.get(*key)?.clone()),
            };
            Some((key.to_string(), entry))
        })
        .collect();
    Entry::Table(entries)
}

/// Each of a class's own sections, compacted.
struct Compact<'a> {
    config: &'a Config,
    class: &'a ClassConfig,
    sections: Vec<(&'static str, Option<Entry>)>,
}

impl EachSection for Compact<'_> {
    fn section<T: Section>(&mut self) {
        let own = T::of(self.class).map(|section| {
            let own = toml::Table::try_from(section).expect(TOML);
            let global = toml::Table::try_from(T::global(self.config)).expect(TOML);
            let changed = T::keys().into_iter().filter_map(|key| {
                let value = own.get(key)?;
                let changed = global.get(key) != Some(value);
                changed.then(|| (key.to_string(), Entry::Value(value.clone())))
            });
            Entry::Table(changed.collect())
        });
        self.sections.push((T::NAME, own));
    }
}
