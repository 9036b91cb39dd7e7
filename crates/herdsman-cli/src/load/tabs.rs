//! `herdsman load tabs`: the seed's bug at scale. Each simulated tab runs
//! `--hooks` hooks that poll one path on their own timers (every
//! `--interval`, their first polls spread evenly over the first interval),
//! with the tab's own identity (`Authorization: Bearer tab-N`). The report
//! sets the client requests against the upstream calls they caused.

use std::{
    sync::{atomic::Ordering, Arc, Mutex, PoisonError},
    time::Duration,
};

use bytes::Bytes;
use http::{header, HeaderValue, Method};
use tokio::time::{Instant, MissedTickBehavior};

use super::{
    chart,
    engine::{self, Budget, CpuWatch, Progress, Shared, UpstreamCounter},
    report::{self, Chart, Report},
    Common,
};
use crate::net::{self, HttpClient};

#[derive(Debug, clap::Args)]
pub(crate) struct TabsArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// The path every hook polls
    #[arg(long, default_value = "/api/active-users")]
    path: String,
    /// Simulated browser tabs
    #[arg(long, default_value_t = 500)]
    tabs: u64,
    /// Hooks per tab, each polling on its own timer
    #[arg(long, default_value_t = 2)]
    hooks: u64,
    /// How often each hook polls (at least 100ms)
    #[arg(long, default_value = "5s", value_parser = net::duration)]
    interval: Duration,
    /// How long the load runs
    #[arg(long, default_value = "60s", value_parser = net::duration)]
    duration: Duration,
    /// Count upstream calls from this URL (a JSON object of counts, such as
    /// the demo's `--upstream-only` `/upstream/calls`) instead of the app's
    /// stats
    #[arg(long, value_name = "URL")]
    upstream_calls: Option<String>,
}

pub(crate) async fn run(args: &TabsArgs) -> Result<Report, String> {
    let hooks = args.tabs.saturating_mul(args.hooks);
    engine::bounded(args.duration, hooks)?;
    if args.interval < Duration::from_millis(100) {
        return Err("--interval is at least 100ms".to_owned());
    }
    let base = args.common.base()?;
    let uri = net::join(&base, &args.path)?;
    let counter = UpstreamCounter::new(
        &base,
        args.upstream_calls.as_deref(),
        args.common.token.clone(),
        args.common.allow_remote,
    )?;
    let client = net::client(64);
    let before = counter.calls(&client).await.map_err(|e| {
        format!("cannot count upstream calls: {e} (give --token, or --upstream-calls URL)")
    })?;
    let cpu = CpuWatch::start(args.common.pid);
    let shared = Arc::new(Shared::default());
    let budget = Arc::new(Budget::default());
    let poll_interval = Arc::new(Mutex::new(None));
    let start = Instant::now();
    let deadline = start + args.duration;
    let sent = {
        let shared = shared.clone();
        Arc::new(move || shared.count.load(Ordering::Relaxed))
    };
    let series = engine::sample_series(client.clone(), counter.clone(), sent, before, deadline);
    let progress = {
        let shared = shared.clone();
        Progress::start("tabs", args.duration, move || {
            format!("{} requests", shared.count.load(Ordering::Relaxed))
        })
    };
    let hook = Hook {
        client: client.clone(),
        uri: uri.clone(),
        identity: HeaderValue::from_static("Bearer tab-0"),
        first: start,
        every: args.interval,
        deadline,
    };
    let tasks = hook.spawn_all(args.tabs, args.hooks, &shared, &budget, &poll_interval);
    for task in tasks {
        let _ = task.await;
    }
    progress.finish();
    let mut series = series.await.unwrap_or_default();
    let after = counter.calls(&client).await?;
    series.push(engine::Sample {
        at: start.elapsed().as_secs_f64(),
        requests: shared.count.load(Ordering::Relaxed),
        upstream: after.saturating_sub(before),
    });
    let recorder = Arc::into_inner(shared)
        .map(Shared::take)
        .unwrap_or_default();
    let poll_interval = *poll_interval.lock().unwrap_or_else(PoisonError::into_inner);
    let outcome = Outcome {
        args,
        uri: &uri.to_string(),
        recorder: &recorder,
        upstream: after.saturating_sub(before),
        source: counter.source(),
        poll_interval,
        cpu: cpu.markdown(),
    };
    Ok(Report {
        markdown: outcome.markdown(),
        charts: charts(args, &recorder, &series)?,
    })
}

fn charts(
    args: &TabsArgs,
    recorder: &engine::Recorder,
    series: &[engine::Sample],
) -> Result<Vec<Chart>, String> {
    let what = format!("{} tabs × {} hooks", args.tabs, args.hooks);
    Ok(vec![
        Chart {
            name: "latency",
            title: format!("tabs: latency of GET {}", args.path),
            svg: chart::latency(
                &format!("{what}: latency of GET {}", args.path),
                &[(args.path.as_str(), &recorder.latency)],
            )?,
        },
        Chart {
            name: "requests-upstream",
            title: "tabs: client requests against upstream calls".to_owned(),
            svg: chart::requests_and_upstream(
                &format!("{what}: client requests and upstream calls"),
                series,
            )?,
        },
    ])
}

/// One hook of one tab.
struct Hook {
    client: HttpClient,
    uri: http::Uri,
    identity: HeaderValue,
    first: Instant,
    every: Duration,
    deadline: Instant,
}

impl Hook {
    /// Spawns `hooks` hooks in each of `tabs` tabs like `self`, each with
    /// its tab's identity, their first polls spread over the interval.
    fn spawn_all(
        &self,
        tabs: u64,
        hooks: u64,
        shared: &Arc<Shared>,
        budget: &Arc<Budget>,
        poll_interval: &Arc<Mutex<Option<u64>>>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let all = tabs * hooks;
        (0..all)
            .map(|i| {
                let hook = Hook {
                    client: self.client.clone(),
                    uri: self.uri.clone(),
                    identity: HeaderValue::try_from(format!("Bearer tab-{}", i / hooks))
                        .expect("a valid header value"),
                    first: self.first + self.every.mul_f64(i as f64 / all as f64),
                    every: self.every,
                    deadline: self.deadline,
                };
                let (shared, budget, poll) =
                    (shared.clone(), budget.clone(), poll_interval.clone());
                tokio::spawn(hook.run(shared, budget, poll))
            })
            .collect()
    }

    async fn run(
        self,
        shared: Arc<Shared>,
        budget: Arc<Budget>,
        poll_interval: Arc<Mutex<Option<u64>>>,
    ) {
        let mut tick = tokio::time::interval_at(self.first, self.every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let headers = [(header::AUTHORIZATION, self.identity.clone())];
        loop {
            // The load ends at the deadline, not at a hook's next tick after it.
            let next = tokio::select! {
                next = tick.tick() => next,
                () = tokio::time::sleep_until(self.deadline) => return,
            };
            if next >= self.deadline || !budget.take() {
                return;
            }
            let sent = Instant::now();
            let result = net::send(
                &self.client,
                Method::GET,
                self.uri.clone(),
                &headers,
                Bytes::new(),
            )
            .await;
            shared.record(&result, sent.elapsed());
            if let Ok(answer) = &result {
                let ms = answer
                    .headers
                    .get("x-poll-interval")
                    .and_then(|v| v.to_str().ok()?.parse().ok());
                if ms.is_some() {
                    *poll_interval.lock().unwrap_or_else(PoisonError::into_inner) = ms;
                }
            }
        }
    }
}

/// What the report is made of.
struct Outcome<'a> {
    args: &'a TabsArgs,
    uri: &'a str,
    recorder: &'a engine::Recorder,
    upstream: u64,
    source: String,
    /// The server's poll interval (`X-Poll-Interval`), in ms.
    poll_interval: Option<u64>,
    cpu: String,
}

impl Outcome<'_> {
    fn markdown(&self) -> String {
        let (args, r) = (self.args, self.recorder);
        let requests = r.requests();
        let mut out = format!(
            "# herdsman load tabs\n\n`GET {}`: {} tabs × {} hooks, each hook every {} ms, for {} s.\n\n",
            self.uri,
            args.tabs,
            args.hooks,
            args.interval.as_millis(),
            args.duration.as_secs_f64()
        );
        out.push_str("| | |\n|---|---:|\n");
        out.push_str(&format!("| client requests | {requests} |\n"));
        out.push_str(&format!("| answered 2xx or 304 | {} |\n", r.ok()));
        out.push_str(&format!("| errors | {} |\n", r.errors()));
        out.push_str(&format!("| upstream calls | {} |\n", self.upstream));
        out.push_str(&format!(
            "| reduction | {} |\n",
            report::percent(
                requests.saturating_sub(self.upstream) as f64,
                requests as f64
            )
        ));
        let intervals = self.poll_interval.map(|ms| {
            let ms = ms.max(1) as f64;
            (args.duration.as_millis() as f64 / ms).ceil() as u64
        });
        if let (Some(ms), Some(n)) = (self.poll_interval, intervals) {
            out.push_str(&format!(
                "| server poll interval (`X-Poll-Interval`) | {ms} ms |\n"
            ));
            out.push_str(&format!(
                "| upstream calls per poll interval | {:.2} ({} over {n}) |\n",
                self.upstream as f64 / n as f64,
                self.upstream
            ));
        }
        out.push_str(&format!(
            "\nOutcomes: {}. Upstream calls from {}.\n\n",
            report::outcomes(r),
            self.source
        ));
        out.push_str(report::LATENCY_HEADER);
        out.push_str(&report::latency_row(&args.path, &r.latency));
        out.push_str("\nCPU, both processes on this machine:\n\n");
        out.push_str(&self.cpu);
        out.push_str("\n## Targets (issue 19)\n\n");
        if let Some(n) = intervals {
            // A loop polls at its start and once per interval after: n + 1.
            out.push_str(&format!(
                "- At most one upstream call per interval for the key: {} ({} calls, at most {} allowed: {n} intervals and the first poll)\n",
                report::verdict(self.upstream <= n + 1),
                self.upstream,
                n + 1
            ));
        } else {
            out.push_str(
                "- At most one upstream call per interval: unknown (no `X-Poll-Interval` answer)\n",
            );
        }
        let reduction = 1.0 - self.upstream as f64 / requests.max(1) as f64;
        out.push_str(&format!(
            "- A reduction of at least 99.8 %: {}\n- No errors: {}\n",
            report::verdict(requests > 0 && reduction >= 0.998),
            report::verdict(r.errors() == 0)
        ));
        out
    }
}
