//! `herdsman audit URL [--token T]`: reads a running app's stats document
//! (`GET /_herdsman/stats`, docs/HTTP.md) and says whether coordination is
//! doing its job, so that a deploy can be gated on it.
//!
//! Per endpoint class: client requests per minute against upstream calls
//! per minute and the saving; then the keys over the upstream-calls alarm
//! (20 per minute by default: the `upstream_calls` alerts, each naming its
//! key's fingerprint), the layers switched off, and every other alert
//! firing. Exit status: 0 healthy, 1 a key running away or an alert firing,
//! 2 the stats could not be read.

use std::{fmt::Write as _, process::ExitCode};

use serde_json::Value;

use crate::{net, CANNOT};

#[derive(Debug, clap::Args)]
pub(crate) struct AuditArgs {
    /// The app's base URL (`/_herdsman/stats` is added) or its stats URL
    url: String,
    /// The admin token, sent as `Authorization: Bearer T`
    #[arg(long, env = "HERDSMAN_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

pub(crate) fn run(args: &AuditArgs) -> ExitCode {
    match read(args) {
        Ok(audit) => {
            print!("{}", audit.markdown());
            if audit.healthy() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("herdsman audit: {err}");
            ExitCode::from(CANNOT)
        }
    }
}

fn read(args: &AuditArgs) -> Result<Audit, String> {
    // A read, not a load: any host may be audited.
    let mut uri = net::target(&args.url, true)?;
    if uri.path() == "/" {
        uri = net::join(&uri, "/_herdsman/stats")?;
    }
    let document = net::runtime()?
        .block_on(async { net::get_json(&net::client(1), &uri, args.token.as_deref()).await })?;
    Audit::of(&uri.to_string(), &document)
}

/// One endpoint class's line.
#[derive(Debug)]
struct Class {
    name: String,
    requests_per_minute: u64,
    upstream_calls_per_minute: u64,
    requests: u64,
    upstream_calls: u64,
    breaker: String,
}

/// One alert firing.
#[derive(Debug)]
struct Alert {
    rule: String,
    endpoint: Option<String>,
    key: Option<String>,
    value: Option<f64>,
    threshold: Option<f64>,
    since: String,
    message: String,
}

/// What the stats document says, as `audit` reports it.
#[derive(Debug)]
struct Audit {
    source: String,
    environment: String,
    classes: Vec<Class>,
    /// `upstream_calls` alerts: one key over the alarm.
    runaway: Vec<Alert>,
    /// Every other alert firing.
    alerts: Vec<Alert>,
    switched_off: Vec<String>,
}

impl Audit {
    fn of(source: &str, doc: &Value) -> Result<Audit, String> {
        let endpoints = doc
            .get("endpoints")
            .and_then(Value::as_object)
            .ok_or_else(|| format!("{source}: not a herdsman stats document (no \"endpoints\")"))?;
        let count = |v: &Value, field: &str| v.get(field).and_then(Value::as_u64).unwrap_or(0);
        let classes = endpoints
            .iter()
            .map(|(name, e)| Class {
                name: name.clone(),
                requests_per_minute: count(e, "requests_per_minute"),
                upstream_calls_per_minute: count(e, "upstream_calls_per_minute"),
                requests: count(e, "requests"),
                upstream_calls: count(e, "upstream_calls"),
                breaker: text(e.get("breaker")).unwrap_or_else(|| "closed".to_owned()),
            })
            .collect();
        // The snapshot's alerts carry the key and the value; the top-level
        // list is their summary.
        let listed = doc
            .pointer("/snapshot/alerts")
            .or_else(|| doc.get("alerts"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let (runaway, alerts) = listed
            .iter()
            .filter(|a| text(a.get("state")).is_none_or(|s| s == "firing"))
            .map(alert)
            .partition(|a| a.rule == "upstream_calls");
        let switched_off = doc
            .get("switches")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|s| s.get("enabled").and_then(Value::as_bool) == Some(false))
            .filter_map(|s| text(s.get("name")))
            .collect();
        Ok(Audit {
            source: source.to_owned(),
            environment: text(doc.get("environment")).unwrap_or_else(|| "unknown".to_owned()),
            classes,
            runaway,
            alerts,
            switched_off,
        })
    }

    fn healthy(&self) -> bool {
        self.runaway.is_empty() && self.alerts.is_empty()
    }

    fn markdown(&self) -> String {
        let mut out = format!(
            "# herdsman audit\n\n{} ({})\n\n",
            self.source, self.environment
        );
        out.push_str(
            "| class | requests/min | upstream calls/min | saving | requests | upstream calls | breaker |\n\
             |---|---:|---:|---:|---:|---:|---|\n",
        );
        for c in &self.classes {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                c.name,
                c.requests_per_minute,
                c.upstream_calls_per_minute,
                saving(c.requests_per_minute, c.upstream_calls_per_minute),
                c.requests,
                c.upstream_calls,
                c.breaker
            );
        }
        out.push_str("\n## Keys over the upstream-calls alarm\n\n");
        list(&mut out, &self.runaway, |a| {
            format!(
                "class {}, key {}: {} calls in the last minute (alarm: over {}) since {}",
                a.endpoint.as_deref().unwrap_or("?"),
                a.key.as_deref().unwrap_or("?"),
                number(a.value),
                number(a.threshold),
                a.since
            )
        });
        out.push_str("\n## Layers switched off\n\n");
        list(&mut out, &self.switched_off, Clone::clone);
        out.push_str("\n## Alerts firing\n\n");
        list(&mut out, &self.alerts, |a| match &a.endpoint {
            Some(class) => format!("{} ({class}) since {}: {}", a.rule, a.since, a.message),
            None => format!("{} since {}: {}", a.rule, a.since, a.message),
        });
        let verdict = if self.healthy() {
            "healthy (exit 0)".to_owned()
        } else {
            format!(
                "unhealthy: {} key(s) running away, {} other alert(s) firing (exit 1)",
                self.runaway.len(),
                self.alerts.len()
            )
        };
        let _ = writeln!(out, "\nVerdict: {verdict}");
        out
    }
}

fn alert(a: &Value) -> Alert {
    Alert {
        rule: text(a.get("rule")).unwrap_or_else(|| "unknown".to_owned()),
        endpoint: text(a.get("endpoint")),
        key: text(a.get("key")),
        value: a.get("value").and_then(Value::as_f64),
        threshold: a.get("threshold").and_then(Value::as_f64),
        since: text(a.get("since")).unwrap_or_else(|| "?".to_owned()),
        message: text(a.get("message")).unwrap_or_default(),
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_owned)
}

fn number(v: Option<f64>) -> String {
    v.map_or_else(|| "?".to_owned(), |v| format!("{v}"))
}

/// What coordination saved: `1 - upstream / requests`, or a dash with no
/// requests.
fn saving(requests: u64, upstream: u64) -> String {
    if requests == 0 {
        return "–".to_owned();
    }
    format!("{:.1} %", 100.0 * (1.0 - upstream as f64 / requests as f64))
}

fn list<T>(out: &mut String, items: &[T], line: impl Fn(&T) -> String) {
    if items.is_empty() {
        out.push_str("none\n");
    }
    for item in items {
        let _ = writeln!(out, "- {}", line(item));
    }
}
