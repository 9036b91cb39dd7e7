//! The checks and the summary: RSS plateau, maps drained, and what the
//! clients and the upstream saw.

use std::{collections::BTreeMap, time::Duration};

use tokio::time::{sleep, Instant};

use crate::{
    http::Http,
    load::{Counters, KINDS, OUTCOMES},
    sample::{figures, Sample},
};

/// The pass criteria.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Criteria {
    /// Plateau: the least-squares slope of RSS over the second half of the
    /// load, per minute, at most this percentage of the RSS after warm-up.
    #[arg(long, default_value_t = 1.0)]
    max_slope_pct: f64,
    /// Plateau: the highest RSS of the last minute of the load at most this
    /// percentage above the median RSS of its second half.
    #[arg(long, default_value_t = 10.0)]
    max_tail_pct: f64,
    /// Also require the cache to empty (once expired entries are swept);
    /// without it, its entries and bytes are reported, not checked.
    #[arg(long)]
    require_cache_drain: bool,
    /// More stats figures to report after the drain but not require at zero
    /// (such as `sizes.rate_keys`).
    #[arg(long, value_delimiter = ',')]
    report_only: Vec<String>,
}

impl Criteria {
    /// Whether the figure `name` must be zero once the load has drained:
    /// every map size in the document (`sizes.*`), registry subscribers and
    /// requests in flight, less what is report-only.
    fn must_drain(&self, name: &str) -> bool {
        let cache = ["sizes.cache_entries", "sizes.cache_bytes"];
        let checked = name.starts_with("sizes.")
            || matches!(
                name,
                "endpoints.subscribers" | "endpoints.in_flight" | "endpoints.upstream_in_flight"
            );
        checked
            && (self.require_cache_drain || !cache.contains(&name))
            && !self.report_only.iter().any(|r| r == name)
    }
}

/// Pass or fail, for the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Pass,
    Fail,
}

/// What the wait for the drain found.
#[derive(Debug)]
pub(crate) struct Drain {
    /// How long it waited.
    waited: Duration,
    limit: Duration,
    /// The last figures read, if the demo answered at all.
    last: Option<BTreeMap<String, f64>>,
    /// The names of the figures that must reach zero and have not.
    left: Vec<String>,
}

/// Polls the stats every 500 ms until every figure that must drain is zero,
/// or `limit` has passed.
pub(crate) async fn drain(http: &Http, criteria: &Criteria, limit: Duration) -> Drain {
    let start = Instant::now();
    let mut last = None;
    loop {
        if let Some(doc) = http.stats().await {
            last = Some(figures(&doc));
        }
        let left = left_over(last.as_ref(), criteria);
        if left.is_empty() || start.elapsed() >= limit {
            return Drain {
                waited: start.elapsed(),
                limit,
                last,
                left,
            };
        }
        sleep(Duration::from_millis(500)).await;
    }
}

/// The figures that must drain and are not zero; `sizes` itself when the
/// document has no map sizes at all.
fn left_over(figures: Option<&BTreeMap<String, f64>>, criteria: &Criteria) -> Vec<String> {
    let Some(figures) = figures else {
        return vec!["(no stats document)".to_owned()];
    };
    if !figures.keys().any(|k| k.starts_with("sizes.")) {
        return vec!["sizes (the stats document has none)".to_owned()];
    }
    figures
        .iter()
        .filter(|(name, value)| criteria.must_drain(name) && **value != 0.0)
        .map(|(name, _)| name.clone())
        .collect()
}

/// Everything the summary is made of.
#[derive(Debug)]
pub(crate) struct Run<'a> {
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) samples: &'a [Sample],
    pub(crate) counters: &'a Counters,
    pub(crate) drain: &'a Drain,
    pub(crate) stopped_early: Option<String>,
    pub(crate) demo_alive: bool,
}

/// One pass/fail line.
struct Check {
    pass: bool,
    what: String,
}

/// Prints the summary and every check; `Fail` if one failed.
pub(crate) fn summarize(run: &Run<'_>, criteria: &Criteria) -> Outcome {
    let load: Vec<&Sample> = run.samples.iter().filter(|s| s.phase == "load").collect();
    println!("\n== soak summary ==");
    println!(
        "load: {:?} (warm-up {:?}), {} samples, {} of them with stats",
        run.duration,
        run.warmup,
        load.len(),
        load.iter().filter(|s| s.stats.is_some()).count()
    );
    let mut checks = vec![
        Check {
            pass: run.stopped_early.is_none(),
            what: match &run.stopped_early {
                None => "the load ran its full duration".to_owned(),
                Some(why) => format!("the load ran its full duration ({why})"),
            },
        },
        Check {
            pass: run.demo_alive,
            what: "the demo was still running at the end".to_owned(),
        },
    ];
    checks.extend(memory(run, &load, criteria));
    print_requests(run.counters);
    print_upstream(&load);
    checks.push(print_drain(run, &load, criteria));
    println!("\nchecks:");
    for check in &checks {
        let mark = if check.pass { "PASS" } else { "FAIL" };
        println!("  {mark}  {}", check.what);
    }
    let pass = checks.iter().all(|c| c.pass);
    println!("result: {}", if pass { "PASS" } else { "FAIL" });
    if pass {
        Outcome::Pass
    } else {
        Outcome::Fail
    }
}

/// RSS at each point of the run, and the two plateau checks.
fn memory(run: &Run<'_>, load: &[&Sample], criteria: &Criteria) -> Vec<Check> {
    let rss: Vec<(f64, f64)> = load
        .iter()
        .filter_map(|s| Some((s.t, s.rss? as f64)))
        .collect();
    let end = run.duration.as_secs_f64();
    let half: Vec<(f64, f64)> = rss
        .iter()
        .copied()
        .filter(|(t, _)| *t >= end / 2.0)
        .collect();
    let tail_len = (end / 4.0).min(60.0);
    let tail = rss.iter().filter(|(t, _)| *t >= end - tail_len);
    let warm = rss
        .iter()
        .find(|(t, _)| *t >= run.warmup.as_secs_f64())
        .map(|(_, r)| *r);
    let (Some(warm), true) = (warm, half.len() >= 10) else {
        return vec![Check {
            pass: false,
            what: format!("RSS plateau: too few RSS samples ({} in all)", rss.len()),
        }];
    };
    let peak = rss
        .iter()
        .copied()
        .fold((0.0, 0.0), |a, b| if b.1 > a.1 { b } else { a });
    let after_drain = run.samples.iter().rev().find_map(|s| s.rss).unwrap_or(0) as f64;
    println!(
        "RSS: start {}, after warm-up {}, peak {} (at {:.0} s), end of load {}, after drain {}",
        mib(rss[0].1),
        mib(warm),
        mib(peak.1),
        peak.0,
        mib(rss[rss.len() - 1].1),
        mib(after_drain)
    );
    let slope = slope_per_minute(&half);
    let slope_pct = 100.0 * slope / warm;
    let median = median(half.iter().map(|(_, r)| *r).collect());
    let tail_max = tail.map(|(_, r)| *r).fold(0.0, f64::max);
    let tail_pct = 100.0 * (tail_max / median - 1.0);
    println!(
        "RSS slope over the second half: {:+.3} MiB/min ({slope_pct:+.2} % of the warm-up RSS a minute); \
         last {tail_len:.0} s max {} against the second half's median {} ({tail_pct:+.1} %)",
        slope / MIB,
        mib(tail_max),
        mib(median)
    );
    vec![
        Check {
            pass: slope_pct <= criteria.max_slope_pct,
            what: format!(
                "RSS plateau: second-half slope {slope_pct:+.2} %/min of the warm-up RSS <= {} %/min",
                criteria.max_slope_pct
            ),
        },
        Check {
            pass: tail_pct <= criteria.max_tail_pct,
            what: format!(
                "RSS plateau: last {tail_len:.0} s max {tail_pct:+.1} % over the second-half median <= {} %",
                criteria.max_tail_pct
            ),
        },
    ]
}

const MIB: f64 = 1024.0 * 1024.0;

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / MIB)
}

/// The least-squares slope of `points` (seconds, bytes), in bytes a minute.
fn slope_per_minute(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (mt, my) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (t, y)| (a + t / n, b + y / n));
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (t, y)| {
        (num + (t - mt) * (y - my), den + (t - mt) * (t - mt))
    });
    if den == 0.0 {
        0.0
    } else {
        60.0 * num / den
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The clients' requests by kind and outcome.
fn print_requests(counters: &Counters) {
    println!(
        "\nrequests (client side):\n| kind | {} | all |",
        OUTCOMES.join(" | ")
    );
    println!("|---{}|---:|", "|---:".repeat(OUTCOMES.len()));
    for (k, kind) in KINDS.iter().enumerate() {
        let counts: Vec<u64> = (0..OUTCOMES.len()).map(|o| counters.get(k, o)).collect();
        let cells: Vec<String> = counts.iter().map(u64::to_string).collect();
        let all: u64 = counts.iter().sum();
        println!("| {kind} | {} | {all} |", cells.join(" | "));
    }
    use std::sync::atomic::Ordering::Relaxed;
    println!(
        "streams: {} value events read, {} upstream-error events, {} streams ended by the server",
        counters.events.load(Relaxed),
        counters.error_events.load(Relaxed),
        counters.ended_by_server.load(Relaxed)
    );
}

/// Client requests and upstream calls as the demo counted them, at the end
/// of the load.
fn print_upstream(load: &[&Sample]) {
    let Some(last) = load.iter().rev().find_map(|s| s.stats.as_ref()) else {
        println!("upstream: no stats document answered during the load");
        return;
    };
    let get = |name: &str| last.get(name).copied().unwrap_or(0.0);
    println!(
        "demo: {} client requests, {} upstream calls, memory_bytes {}, {} alerts firing",
        get("endpoints.requests"),
        get("endpoints.upstream_calls"),
        get("memory_bytes"),
        get("alerts")
    );
    for (name, value) in last.iter().filter(|(n, _)| n.starts_with("ep.")) {
        println!("  {name}: {value}");
    }
}

/// Each figure that must drain, at the end of the load and after the wait;
/// the check that they all reached zero.
fn print_drain(run: &Run<'_>, load: &[&Sample], criteria: &Criteria) -> Check {
    let drain = run.drain;
    let before = load.iter().rev().find_map(|s| s.stats.as_ref());
    println!(
        "\ndrain (waited {:.1} s of at most {:?}):\n| figure | end of load | after the wait | |\n|---|---:|---:|---|",
        drain.waited.as_secs_f64(),
        drain.limit
    );
    let empty = BTreeMap::new();
    let last = drain.last.as_ref().unwrap_or(&empty);
    for (name, value) in last {
        let checked = criteria.must_drain(name);
        if !(checked || name.starts_with("sizes.") || name.starts_with("memory")) {
            continue;
        }
        let was = before
            .and_then(|b| b.get(name))
            .map_or("".to_owned(), |v| v.to_string());
        let verdict = match (checked, *value == 0.0) {
            (true, true) => "drained",
            (true, false) => "NOT DRAINED",
            (false, _) => "reported",
        };
        println!("| {name} | {was} | {value} | {verdict} |");
    }
    Check {
        pass: drain.left.is_empty(),
        what: if drain.left.is_empty() {
            format!("every map drained to zero within {:?}", drain.limit)
        } else {
            format!(
                "maps drained within {:?}; left: {}",
                drain.limit,
                drain.left.join(", ")
            )
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slope_is_per_minute_and_the_median_takes_the_middle() {
        let line: Vec<(f64, f64)> = (0..60)
            .map(|t| (t as f64, 1000.0 + 2.0 * t as f64))
            .collect();
        assert!((slope_per_minute(&line) - 120.0).abs() < 1e-9);
        assert_eq!(slope_per_minute(&[(1.0, 5.0)]), 0.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn every_map_size_must_drain_but_the_cache_and_what_is_report_only() {
        let criteria = Criteria {
            max_slope_pct: 1.0,
            max_tail_pct: 10.0,
            require_cache_drain: false,
            report_only: vec!["sizes.rate_keys".to_owned()],
        };
        assert!(criteria.must_drain("sizes.registry_keys"));
        assert!(criteria.must_drain("sizes.some_new_map"));
        assert!(criteria.must_drain("endpoints.subscribers"));
        assert!(!criteria.must_drain("sizes.cache_entries"));
        assert!(!criteria.must_drain("sizes.rate_keys"));
        assert!(!criteria.must_drain("endpoints.requests"));
        let strict = Criteria {
            require_cache_drain: true,
            ..criteria
        };
        assert!(strict.must_drain("sizes.cache_entries"));
    }
}
