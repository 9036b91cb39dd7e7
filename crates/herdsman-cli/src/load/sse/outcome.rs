//! The markdown report of `load sse`.

use std::{fmt::Write as _, sync::atomic::Ordering, time::Duration};

use super::{lock, Board, RssWatch, SseArgs};
use crate::load::{chart::FanOutPoint, report};

/// What the hold measured.
pub(super) struct Hold {
    pub(super) length: Duration,
    /// Upstream calls during the hold.
    pub(super) upstream: u64,
    pub(super) source: String,
    /// Changes made during the hold (each makes one poll of its own).
    pub(super) changes: u64,
}

pub(super) struct Outcome<'a> {
    pub(super) args: &'a SseArgs,
    pub(super) uri: String,
    /// The streams opened (fewer than asked when the open-file limit
    /// could not be raised).
    pub(super) connections: u64,
    pub(super) addresses: u64,
    pub(super) fd_note: String,
    pub(super) board: &'a Board,
    pub(super) points: &'a [FanOutPoint],
    pub(super) hold: Hold,
    pub(super) rss: RssWatch,
    pub(super) cpu: String,
}

fn mb(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "–".to_owned(), |b| format!("{:.1} MB", b as f64 / 1e6))
}

impl Outcome<'_> {
    pub(super) fn markdown(&self) -> String {
        let args = self.args;
        let mut out = format!(
            "# herdsman load sse\n\n`GET {}`: {} event streams, each with its own identity \
             (`Authorization: Bearer sse-N`), from {} source address(es), opened in {} steps, \
             then held for {} s",
            self.uri,
            self.connections,
            self.addresses,
            args.steps,
            args.duration.as_secs_f64()
        );
        match &args.change {
            Some(c) => {
                let _ = write!(
                    out,
                    "; a change (`{} {}`) after each step and every {} s while held.\n\n",
                    c[0],
                    c[1],
                    args.change_every.as_secs_f64()
                );
            }
            None => out.push_str("; no change made (no --change): no fan-out measured.\n\n"),
        }
        self.table(&mut out);
        out.push_str("\n## Fan-out of each change\n\nFrom the change's request to each open stream's next event.\n\n");
        out.push_str("| change | streams open | reached | p50 ms | p99 ms | max ms |\n|---:|---:|---:|---:|---:|---:|\n");
        for (k, p) in self.points.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.2} | {:.2} | {:.2} |",
                k + 1,
                p.connections,
                p.reached,
                p.p50,
                p.p99,
                p.max
            );
        }
        out.push_str("\nCPU, both processes on this machine:\n\n");
        out.push_str(&self.cpu);
        self.targets(&mut out);
        out
    }

    fn intervals(&self) -> Option<u64> {
        let retry = (*lock(&self.board.retry))?;
        Some((self.hold.length.as_secs_f64() / retry.as_secs_f64().max(1e-3)).ceil() as u64)
    }

    fn table(&self, out: &mut String) {
        let b = self.board;
        let first = lock(&b.first_event).clone();
        let failed = lock(&b.failed);
        let reasons: Vec<String> = failed
            .iter()
            .map(|(why, n)| format!("{why}: {n}"))
            .collect();
        let retry = *lock(&b.retry);
        let rows = [
            ("streams asked", self.args.connections.to_string()),
            ("open-file limit", self.fd_note.clone()),
            (
                "streams that got their first event",
                b.connected.load(Ordering::Relaxed).to_string(),
            ),
            (
                "failed before their first event",
                format!("{} {}", failed.values().sum::<u64>(), reasons.join(", "))
                    .trim_end()
                    .to_owned(),
            ),
            (
                "dropped while open",
                b.dropped.load(Ordering::Relaxed).to_string(),
            ),
            ("open at the end", b.live().to_string()),
            (
                "time to first event p50 / p99 / max",
                format!(
                    "{} / {} / {} ms",
                    report::ms(first.value_at_quantile(0.5)),
                    report::ms(first.value_at_quantile(0.99)),
                    report::ms(first.max())
                ),
            ),
            (
                "value events received",
                b.events.load(Ordering::Relaxed).to_string(),
            ),
            (
                "`upstream-error` events",
                b.error_events.load(Ordering::Relaxed).to_string(),
            ),
            (
                "server poll interval (`retry:`)",
                retry.map_or("–".to_owned(), |r| format!("{} ms", r.as_millis())),
            ),
        ];
        out.push_str("| | |\n|---|---:|\n");
        for (name, value) in rows.into_iter().chain(self.server_rows()) {
            let _ = writeln!(out, "| {name} | {value} |");
        }
        let _ = writeln!(out, "\nUpstream calls from {}.", self.hold.source);
    }

    /// The rows of what the server did: upstream calls and memory.
    fn server_rows(&self) -> [(&'static str, String); 4] {
        [
            (
                "upstream calls while held",
                format!(
                    "{} in {:.1} s ({} intervals, {} changes)",
                    self.hold.upstream,
                    self.hold.length.as_secs_f64(),
                    self.intervals().map_or("?".to_owned(), |n| n.to_string()),
                    self.hold.changes
                ),
            ),
            (
                "upstream calls per interval, the changes' own polls aside",
                self.per_interval()
                    .map_or("–".to_owned(), |v| format!("{v:.2}")),
            ),
            (
                "server RSS before / all open / peak",
                format!(
                    "{} / {} / {}",
                    mb(self.rss.before),
                    mb(self.rss.held),
                    mb(self.rss.peak)
                ),
            ),
            (
                "server RSS per stream",
                self.per_stream().map_or("– (give --pid)".to_owned(), |v| {
                    format!("{:.1} KB", v / 1e3)
                }),
            ),
        ]
    }

    fn per_interval(&self) -> Option<f64> {
        let n = self.intervals()?.max(1);
        Some(self.hold.upstream.saturating_sub(self.hold.changes) as f64 / n as f64)
    }

    /// The server's memory per stream: what holding them added.
    fn per_stream(&self) -> Option<f64> {
        let (before, held) = (self.rss.before?, self.rss.held?);
        let open = self.board.connected.load(Ordering::Relaxed).max(1);
        Some(held.saturating_sub(before) as f64 / open as f64)
    }

    fn targets(&self, out: &mut String) {
        let b = self.board;
        out.push_str("\n## Targets (issue 19)\n\n");
        let all = b.connected.load(Ordering::Relaxed) == self.args.connections
            && b.dropped.load(Ordering::Relaxed) == 0;
        let _ = writeln!(
            out,
            "- {} streams held for {} s, none dropped: {}",
            self.args.connections,
            self.args.duration.as_secs_f64(),
            report::verdict(all)
        );
        let full: Vec<&FanOutPoint> = self
            .points
            .iter()
            .filter(|p| p.connections >= self.args.connections)
            .collect();
        if full.is_empty() {
            out.push_str("- One change reaches all of them with p99 ≤ 1 s: not measured (no change with every stream open)\n");
        } else {
            let worst = full.iter().map(|p| p.p99).fold(0.0, f64::max);
            let reached = full.iter().all(|p| p.reached >= p.connections);
            let _ = writeln!(
                out,
                "- One change reaches all of them with p99 ≤ 1 s: {} ({} changes with every stream open; worst p99 {worst:.1} ms)",
                report::verdict(reached && worst <= 1000.0),
                full.len()
            );
        }
        if let (Some(n), Some(v)) = (self.intervals(), self.per_interval()) {
            let extra = self.hold.upstream.saturating_sub(self.hold.changes);
            let _ = writeln!(
                out,
                "- One upstream call per interval: {} ({v:.2}: {extra} calls over {n} intervals, at most {} allowed with the first)",
                report::verdict(extra <= n + 1),
                n + 1
            );
        }
        match (self.rss.peak, self.per_stream()) {
            (Some(peak), Some(per)) => {
                let _ = writeln!(
                    out,
                    "- Server RSS ≤ 150 MB: {} (peak {}); ≤ 15 KB per stream: {} ({:.1} KB)",
                    report::verdict(peak <= 150_000_000),
                    mb(Some(peak)),
                    report::verdict(per <= 15_000.0),
                    per / 1e3
                );
            }
            _ => out.push_str("- Server RSS: not measured (give the server's --pid)\n"),
        }
    }
}
