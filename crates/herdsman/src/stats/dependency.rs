//! The health of the dependencies outside this process, from
//! [`Stats::track_dependency`](super::Stats::track_dependency): an alert
//! per dependency while it is down, a gauge and a snapshot entry.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Mutex, PoisonError},
};

use serde::Serialize;

use super::alerts::{AlertId, AlertRule, Book};
use crate::event::DependencyHealth;

/// One dependency's health, in the [`Snapshot`](super::Snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DependencySnapshot {
    /// Whether it can be reached now.
    pub up: bool,
    /// How many times it was seen going down (by the monitor's ticks and
    /// the snapshots).
    pub outages: u64,
}

struct Dependency {
    name: String,
    /// The alert's rule: `<name>_unavailable`.
    rule: AlertRule,
    source: Box<dyn DependencyHealth>,
    up: bool,
    outages: u64,
    gauge: Option<metrics::Gauge>,
}

/// The tracked dependencies.
#[derive(Default)]
pub(crate) struct Dependencies {
    all: Mutex<Vec<Dependency>>,
}

impl Dependencies {
    /// Tracks `source` as `name`; a name tracked already is replaced.
    pub(crate) fn track(&self, name: String, source: Box<dyn DependencyHealth>) {
        let rule = AlertRule::Unavailable(unavailable(&name));
        let mut all = self.all.lock().unwrap_or_else(PoisonError::into_inner);
        all.retain(|d| d.name != name);
        all.push(Dependency {
            name,
            rule,
            source,
            up: true,
            outages: 0,
            gauge: None,
        });
    }

    /// Reads every source: fires `<name>_unavailable` for each one down,
    /// resolves it for each one up, and sets the gauges when `publish`.
    pub(crate) fn check(&self, book: &Book, publish: bool) -> BTreeMap<String, DependencySnapshot> {
        let mut all = self.all.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = BTreeMap::new();
        for d in all.iter_mut() {
            let up = d.source.is_up();
            let id = AlertId {
                rule: d.rule,
                endpoint: None,
                key: None,
            };
            if up {
                book.resolve(&id, 1.0);
            } else {
                if d.up {
                    d.outages += 1;
                }
                book.fire(
                    id,
                    0.0,
                    1.0,
                    format!(
                        "{} is unavailable: coordinating locally until it is back",
                        d.name
                    ),
                );
            }
            d.up = up;
            if publish {
                let name = &d.name;
                d.gauge
                    .get_or_insert_with(
                        || metrics::gauge!("herdsman_dependency_up", "dependency" => name.clone()),
                    )
                    .set(f64::from(u8::from(up)));
            }
            let snapshot = DependencySnapshot {
                up,
                outages: d.outages,
            };
            out.insert(d.name.clone(), snapshot);
        }
        out
    }
}

/// `<name>_unavailable`, made once per name for the life of the process
/// (alert rules are named by `&'static str`; dependencies are few).
fn unavailable(name: &str) -> &'static str {
    static NAMES: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let rule = format!("{name}_unavailable");
    let mut names = NAMES.lock().unwrap_or_else(PoisonError::into_inner);
    let names = names.get_or_insert_with(HashSet::new);
    match names.get(rule.as_str()) {
        Some(known) => known,
        None => {
            let leaked: &'static str = Box::leak(rule.into_boxed_str());
            names.insert(leaked);
            leaked
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dependencys_rule_is_named_once() {
        let a = unavailable("redis");
        assert_eq!(a, "redis_unavailable");
        assert!(std::ptr::eq(a, unavailable("redis")));
    }
}
