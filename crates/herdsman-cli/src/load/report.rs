//! The markdown every scenario prints, and where it goes (`--out`).

use std::{fmt::Write as _, path::Path};

use hdrhistogram::Histogram;

use super::engine::Recorder;

/// A scenario's report: markdown, and SVG charts to write beside it.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) markdown: String,
    pub(crate) charts: Vec<Chart>,
}

/// One SVG chart.
#[derive(Debug)]
pub(crate) struct Chart {
    /// Its file name's suffix: `<out stem>-<name>.svg`.
    pub(crate) name: &'static str,
    pub(crate) title: String,
    pub(crate) svg: String,
}

impl Report {
    /// Prints the report, or with `out` writes it there and the charts
    /// beside it (`report.md`, `report-latency.svg`, ...), linked at its end.
    pub(crate) fn emit(mut self, out: Option<&Path>) -> Result<(), String> {
        let Some(out) = out else {
            if !self.charts.is_empty() {
                self.markdown
                    .push_str("\n(Charts are written with --out, beside the report.)\n");
            }
            print!("{}", self.markdown);
            return Ok(());
        };
        let stem = out
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| format!("{}: not a file name", out.display()))?;
        let dir = out.parent().unwrap_or(Path::new(""));
        if !self.charts.is_empty() {
            self.markdown.push_str("\n## Charts\n");
        }
        for chart in &self.charts {
            let file = format!("{stem}-{}.svg", chart.name);
            let path = dir.join(&file);
            std::fs::write(&path, &chart.svg).map_err(|e| format!("{}: {e}", path.display()))?;
            let _ = write!(self.markdown, "\n![{}]({file})\n", chart.title);
        }
        std::fs::write(out, &self.markdown).map_err(|e| format!("{}: {e}", out.display()))?;
        eprintln!("report written to {}", out.display());
        Ok(())
    }
}

/// Milliseconds from microseconds, as a report prints them.
pub(crate) fn ms(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

/// The header of a [`latency_row`] table.
pub(crate) const LATENCY_HEADER: &str =
    "| | answered | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |\n|---|---:|---:|---:|---:|---:|---:|\n";

/// One line of latency percentiles.
pub(crate) fn latency_row(name: &str, h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return format!("| {name} | 0 | | | | | |\n");
    }
    format!(
        "| {name} | {} | {} | {} | {} | {} | {} |\n",
        h.len(),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max())
    )
}

/// What the requests got: `200: 11990, 429: 10; no answer: ...: 3`.
pub(crate) fn outcomes(r: &Recorder) -> String {
    let mut parts: Vec<String> = r
        .statuses
        .iter()
        .map(|(status, n)| format!("{status}: {n}"))
        .collect();
    parts.extend(
        r.failures
            .iter()
            .map(|(why, n)| format!("no answer ({why}): {n}")),
    );
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

/// `met` or `missed`, for a target line.
pub(crate) fn verdict(met: bool) -> &'static str {
    if met {
        "**met**"
    } else {
        "**missed**"
    }
}

/// `part / whole` as a percentage with two decimals, or a dash.
pub(crate) fn percent(part: f64, whole: f64) -> String {
    if whole == 0.0 {
        "–".to_owned()
    } else {
        format!("{:.2} %", 100.0 * part / whole)
    }
}
