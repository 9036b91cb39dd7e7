//! One sample a second: the demo's RSS, the figures of its stats document
//! and the clients' counters; written out as CSV.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::Path,
    sync::{atomic::Ordering::Relaxed, Arc, Mutex, PoisonError},
    time::Duration,
};

use serde_json::Value;
use tokio::{
    task::JoinHandle,
    time::{interval, Instant, MissedTickBehavior},
};

use crate::{
    demo::rss_bytes,
    http::Http,
    load::{Counters, KINDS, OUTCOMES},
};

/// One second of the run.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    /// Seconds since the load started.
    pub(crate) t: f64,
    /// `load` or `drain`.
    pub(crate) phase: String,
    /// The fault in force, if any.
    pub(crate) fault: String,
    /// The demo's `VmRSS`, in bytes.
    pub(crate) rss: Option<u64>,
    /// The clients' counters, by column name.
    pub(crate) client: Vec<(String, i64)>,
    /// The stats document's figures ([`figures`]); `None` if it did not
    /// answer.
    pub(crate) stats: Option<BTreeMap<String, f64>>,
}

/// Samples every second until [`Recorder::stop`]. Clones share the samples.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    labels: Arc<Mutex<(String, String)>>,
    samples: Arc<Mutex<Vec<Sample>>>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recorder {
    pub(crate) fn start(http: Http, pid: Option<u32>, counters: Arc<Counters>) -> Recorder {
        let recorder = Recorder {
            labels: Arc::new(Mutex::new(("load".to_owned(), String::new()))),
            samples: Arc::default(),
            task: Arc::default(),
        };
        let this = recorder.clone();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut tick = interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // Memory first, at the tick: the stats may take a while.
                let t = start.elapsed().as_secs_f64();
                let rss = pid.and_then(rss_bytes);
                let client = client_columns(&counters);
                let stats = http.stats().await.map(|doc| figures(&doc));
                let (phase, fault) = lock(&this.labels).clone();
                lock(&this.samples).push(Sample {
                    t,
                    phase,
                    fault,
                    rss,
                    client,
                    stats,
                });
            }
        });
        *lock(&recorder.task) = Some(task);
        recorder
    }

    /// Labels the samples from now on with `phase`.
    pub(crate) fn set_phase(&self, phase: &str) {
        lock(&self.labels).0 = phase.to_owned();
    }

    /// Labels the samples from now on with `fault` (empty: none).
    pub(crate) fn set_fault(&self, fault: &str) {
        lock(&self.labels).1 = fault.to_owned();
    }

    /// Stops sampling; every sample taken.
    pub(crate) async fn stop(&self) -> Vec<Sample> {
        let task = lock(&self.task).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        std::mem::take(&mut *lock(&self.samples))
    }
}

/// The clients' counters as CSV columns: `<kind>.<outcome>`, then streams.
fn client_columns(counters: &Counters) -> Vec<(String, i64)> {
    let mut columns = Vec::new();
    for (k, kind) in KINDS.iter().enumerate() {
        for (o, outcome) in OUTCOMES.iter().enumerate() {
            columns.push((format!("{kind}.{outcome}"), counters.get(k, o) as i64));
        }
    }
    columns.push((
        "streams_open".to_owned(),
        counters.streams_open.load(Relaxed),
    ));
    columns.push(("events".to_owned(), counters.events.load(Relaxed) as i64));
    columns.push((
        "error_events".to_owned(),
        counters.error_events.load(Relaxed) as i64,
    ));
    columns
}

/// The figures the soak reads from a stats document, by name. Whatever the
/// document does not have is left out, and whatever it adds under `sizes`
/// or in the memory by source is picked up:
///
/// - `memory_bytes`, and `memory.<source>` from `snapshot.memory`;
/// - `sizes.<name>`: every number under `sizes` (nested objects dotted);
/// - `endpoints.<field>`: each numeric field of the endpoints, summed;
/// - `ep.<endpoint>.requests` and `ep.<endpoint>.upstream_calls`;
/// - `alerts`: how many fire.
pub(crate) fn figures(doc: &Value) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    if let Some(n) = doc.get("memory_bytes").and_then(Value::as_f64) {
        out.insert("memory_bytes".to_owned(), n);
    }
    if let Some(memory) = doc.pointer("/snapshot/memory") {
        flatten("memory", memory, &mut out);
    }
    if let Some(sizes) = doc.get("sizes") {
        flatten("sizes", sizes, &mut out);
    }
    for (name, endpoint) in doc
        .get("endpoints")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        for (field, value) in endpoint.as_object().into_iter().flatten() {
            if let Some(n) = value.as_f64() {
                *out.entry(format!("endpoints.{field}")).or_insert(0.0) += n;
                if field == "requests" || field == "upstream_calls" {
                    out.insert(format!("ep.{name}.{field}"), n);
                }
            }
        }
    }
    if let Some(alerts) = doc.get("alerts").and_then(Value::as_array) {
        out.insert("alerts".to_owned(), alerts.len() as f64);
    }
    out
}

/// Every number under `value`, named `prefix.key.key...`.
fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, f64>) {
    match value {
        Value::Number(n) => {
            if let Some(n) = n.as_f64() {
                out.insert(prefix.to_owned(), n);
            }
        }
        Value::Object(map) => {
            for (key, value) in map {
                flatten(&format!("{prefix}.{key}"), value, out);
            }
        }
        _ => {}
    }
}

/// Writes the samples as CSV: fixed columns, the clients' counters, then
/// every stats figure any sample had (a missing one is an empty cell).
pub(crate) fn write_csv(path: &Path, samples: &[Sample]) -> std::io::Result<()> {
    let stats: BTreeSet<&String> = samples
        .iter()
        .flat_map(|s| s.stats.iter().flat_map(|f| f.keys()))
        .collect();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut header = vec!["t_s", "phase", "fault", "rss_bytes", "stats_ok"];
    if let Some(first) = samples.first() {
        header.extend(first.client.iter().map(|(name, _)| name.as_str()));
    }
    header.extend(stats.iter().map(|s| s.as_str()));
    writeln!(out, "{}", header.join(","))?;
    for s in samples {
        let mut row = vec![
            format!("{:.1}", s.t),
            s.phase.clone(),
            s.fault.clone(),
            s.rss.map_or(String::new(), |r| r.to_string()),
            u8::from(s.stats.is_some()).to_string(),
        ];
        row.extend(s.client.iter().map(|(_, n)| n.to_string()));
        for name in &stats {
            let cell = s.stats.as_ref().and_then(|f| f.get(*name));
            row.push(cell.map_or(String::new(), |n| n.to_string()));
        }
        writeln!(out, "{}", row.join(","))?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn figures_pick_up_new_sizes_and_sum_the_endpoints() {
        let doc = json!({
            "memory_bytes": 10,
            "endpoints": {
                "a": {"requests": 3, "upstream_calls": 1, "subscribers": 2, "breaker": "off",
                      "latency_ms": {"p50": 1.0}},
                "b": {"requests": 4, "upstream_calls": 2, "subscribers": 0, "new_gauge": 5}
            },
            "sizes": {"registry_keys": 7, "budget": {"callers": 2}, "label": "x"},
            "snapshot": {"memory": {"cache": 4, "registry": 6}},
            "alerts": [{}],
            "something_new": {"n": 1}
        });
        let f = figures(&doc);
        assert_eq!(f["endpoints.requests"], 7.0);
        assert_eq!(f["endpoints.subscribers"], 2.0);
        assert_eq!(f["endpoints.new_gauge"], 5.0);
        assert_eq!(f["ep.b.upstream_calls"], 2.0);
        assert_eq!(f["sizes.registry_keys"], 7.0);
        assert_eq!(f["sizes.budget.callers"], 2.0);
        assert_eq!(f["memory.registry"], 6.0);
        assert_eq!(f["alerts"], 1.0);
        assert!(!f.contains_key("sizes.label"));
        assert!(!f
            .keys()
            .any(|k| k.contains("latency") || k.contains("something")));
    }
}
