//! What every section of a [`Config`](super::Config) shares: its keys, the
//! keys a class may not set, and how a class's section is told apart from
//! the global one.
//!
//! A section is one type, the layer's own where it has one
//! ([`BreakerConfig`], [`ClassLimits`]): the global `[breaker]` table is deserialized into
//! it, and so is a class's `breaker` table once it is laid over the global
//! section's keys. No type mirrors another field by field.

use std::fmt;

use figment::value::{Dict, Value};
use serde::{de, de::DeserializeOwned, Serialize};

use super::{
    settings::{CacheSettings, ClassConfig, DedupSettings, Layers, RegistrySettings},
    validate::Validate,
    Config,
};
use crate::{breaker::BreakerConfig, cache, limit::ClassLimits, registry};

/// A section a class may have its own of (`[classes.NAME.SECTION]`).
pub(crate) trait Section: Serialize + DeserializeOwned + Validate + Clone {
    /// Its name: the key of the global table and of a class's.
    const NAME: &'static str;

    /// The keys only the global section sets: they bound what the whole
    /// stack holds, not one class.
    const GLOBAL_ONLY: &'static [&'static str] = &[];

    /// The global section.
    fn global(config: &Config) -> &Self;

    /// A class's own section.
    fn of(class: &ClassConfig) -> Option<&Self>;

    /// Its keys, in the order of its table.
    fn keys() -> Vec<&'static str> {
        keys::<Self>().to_vec()
    }

    /// The keys of the layer's own settings type, when the section holds
    /// one flattened into its table (`[cache]` holds
    /// [`cache::ClassSettings`]'s keys beside the store's bounds); none
    /// otherwise.
    fn own_keys() -> &'static [&'static str] {
        &[]
    }

    /// Reads the part of `table` made of [`own_keys`](Self::own_keys) as
    /// the layer's own type, alone: figment names a key in its errors, and
    /// serde refuses an unknown one, only for a type that is not flattened.
    fn read_own(table: &Value) -> Result<(), Box<figment::Error>> {
        let _ = table;
        Ok(())
    }
}

/// Something done for each [`Section`] type in turn.
pub(crate) trait EachSection {
    /// Does it for section `T`.
    fn section<T: Section>(&mut self);
}

/// Does `each` for every section a class may have its own of, in the
/// order of [`ClassConfig`]'s fields: the one list of them.
pub(crate) fn each_section<E: EachSection>(mut each: E) -> E {
    each.section::<Layers>();
    each.section::<RegistrySettings>();
    each.section::<CacheSettings>();
    each.section::<DedupSettings>();
    each.section::<BreakerConfig>();
    each.section::<ClassLimits>();
    each
}

macro_rules! section {
    ($type:ty, $name:ident, own: $own:ty, global only: $($key:literal),+) => {
        impl Section for $type {
            const NAME: &'static str = stringify!($name);
            const GLOBAL_ONLY: &'static [&'static str] = &[$($key),+];

            fn global(config: &Config) -> &Self {
                &config.$name
            }

            fn of(class: &ClassConfig) -> Option<&Self> {
                class.$name.as_ref()
            }

            fn keys() -> Vec<&'static str> {
                let mut keys = keys::<$own>().to_vec();
                keys.extend(Self::GLOBAL_ONLY);
                keys
            }

            fn own_keys() -> &'static [&'static str] {
                keys::<$own>()
            }

            fn read_own(table: &Value) -> Result<(), Box<figment::Error>> {
                table.deserialize::<$own>().map(drop).map_err(Box::new)
            }
        }
    };
    ($type:ty, $name:ident $(, global only: $($key:literal),+)?) => {
        impl Section for $type {
            const NAME: &'static str = stringify!($name);
            $(const GLOBAL_ONLY: &'static [&'static str] = &[$($key),+];)?

            fn global(config: &Config) -> &Self {
                &config.$name
            }

            fn of(class: &ClassConfig) -> Option<&Self> {
                class.$name.as_ref()
            }
        }
    };
}

section!(Layers, layers);
section!(
    RegistrySettings,
    registry,
    own: registry::ClassSettings,
    global only: "floor", "allow_fast_polling", "max_subscribers", "max_memory"
);
section!(
    CacheSettings,
    cache,
    own: cache::ClassSettings,
    global only: "max_bytes", "max_entries", "sweep_interval"
);
section!(DedupSettings, dedup);
section!(BreakerConfig, breaker);
section!(ClassLimits, limit);

/// The keys of the struct `T`, in declaration order, as its `Deserialize`
/// implementation names them.
pub(crate) fn keys<T: DeserializeOwned>() -> &'static [&'static str] {
    match T::deserialize(Keys) {
        Err(KeysError(Some(keys))) => keys,
        _ => &[],
    }
}

/// The keys a class may set in its table of section `T`.
pub(crate) fn class_keys<T: Section>() -> Vec<&'static str> {
    T::keys()
        .into_iter()
        .filter(|key| !T::GLOBAL_ONLY.contains(key))
        .collect()
}

/// The keys whose values differ between `class` and `global` (a key one
/// of them leaves out counts as different).
pub(crate) fn changed_keys<T: Serialize>(class: &T, global: &T) -> Vec<String> {
    let (Some(class), Some(global)) = (table(class), table(global)) else {
        return keys_of(class);
    };
    let mut changed: Vec<String> = class
        .iter()
        .filter(|(key, value)| global.get(*key) != Some(*value))
        .map(|(key, _)| key.clone())
        .collect();
    changed.extend(
        global
            .keys()
            .filter(|key| !class.contains_key(*key))
            .cloned(),
    );
    changed
}

fn keys_of<T: Serialize>(section: &T) -> Vec<String> {
    table(section)
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

/// A section as a table of values.
pub(crate) fn table<T: Serialize>(section: &T) -> Option<Dict> {
    match Value::serialize(section) {
        Ok(Value::Dict(_, dict)) => Some(dict),
        _ => None,
    }
}

/// A deserializer that only asks the struct for its field names.
struct Keys;

#[derive(Debug)]
struct KeysError(Option<&'static [&'static str]>);

impl fmt::Display for KeysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("only field names are read")
    }
}

impl std::error::Error for KeysError {}

impl de::Error for KeysError {
    fn custom<M: fmt::Display>(_: M) -> Self {
        KeysError(None)
    }
}

impl<'de> de::Deserializer<'de> for Keys {
    type Error = KeysError;

    fn deserialize_any<V: de::Visitor<'de>>(self, _: V) -> Result<V::Value, KeysError> {
        Err(KeysError(None))
    }

    fn deserialize_struct<V: de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, KeysError> {
        Err(KeysError(Some(fields)))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sections_keys_are_its_fields() {
        assert_eq!(keys::<DedupSettings>(), ["window"]);
        assert_eq!(keys::<BreakerConfig>().len(), 13);
        assert_eq!(
            class_keys::<CacheSettings>(),
            ["ttl", "stale_while_revalidate", "stale_if_error", "mode"]
        );
        assert_eq!(
            CacheSettings::keys(),
            [
                "ttl",
                "stale_while_revalidate",
                "stale_if_error",
                "mode",
                "max_bytes",
                "max_entries",
                "sweep_interval"
            ]
        );
    }

    #[test]
    fn a_flattened_sections_keys_are_the_keys_it_writes() {
        // Its global-only keys are listed by hand: they must be the rest.
        fn written<T: Section>(section: &T) -> Vec<String> {
            table(section).expect("a table").keys().cloned().collect()
        }
        fn listed<T: Section>() -> Vec<String> {
            let mut keys: Vec<String> = T::keys().into_iter().map(str::to_owned).collect();
            keys.sort();
            keys
        }
        let mut config = Config::profile(crate::config::Environment::Production);
        config.cache.max_entries = Some(1);
        assert_eq!(written(&config.cache), listed::<CacheSettings>());
        assert_eq!(written(&config.registry), listed::<RegistrySettings>());
    }

    #[test]
    fn changed_keys_are_those_whose_values_differ() {
        let global = BreakerConfig::default();
        let class = BreakerConfig {
            window: 20,
            consecutive_failures: None,
            ..global
        };
        let mut changed = changed_keys(&class, &global);
        changed.sort();
        assert_eq!(changed, ["consecutive_failures", "window"]);
        assert!(changed_keys(&global, &global).is_empty());
    }
}
