//! Shared by the custom-harness benchmarks: settings, runtimes, formatting.

use std::{fmt::Display, time::Duration};

use tokio::runtime::{Builder, Runtime};

/// How big a run is, and which cases to run.
pub(crate) struct Settings {
    pub(crate) callers: usize,
    pub(crate) runs: usize,
    /// Words that a case's "runtime peer" name must all contain, e.g.
    /// `cargo bench -p herdsman-bench --bench storm -- multi herdsman`.
    filters: Vec<String>,
}

impl Settings {
    /// The full benchmark under `cargo bench` (which passes `--bench`), a
    /// small smoke run otherwise (`cargo test --benches`).
    pub(crate) fn from_args() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let filters = args
            .iter()
            .filter(|arg| !arg.starts_with("--"))
            .cloned()
            .collect();
        if args.iter().any(|arg| arg == "--bench") {
            Settings {
                callers: 10_000,
                runs: 7,
                filters,
            }
        } else {
            Settings {
                callers: 100,
                runs: 1,
                filters,
            }
        }
    }

    /// Whether the case `name` was asked for.
    pub(crate) fn wants(&self, name: &str) -> bool {
        self.filters.iter().all(|word| name.contains(word.as_str()))
    }
}

/// The runtimes each scenario runs on.
#[derive(Clone, Copy)]
pub(crate) enum Flavor {
    CurrentThread,
    MultiThread2,
}

impl Flavor {
    pub(crate) const ALL: [Flavor; 2] = [Flavor::CurrentThread, Flavor::MultiThread2];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Flavor::CurrentThread => "current_thread",
            Flavor::MultiThread2 => "multi_thread, 2 workers",
        }
    }

    pub(crate) fn runtime(self) -> Runtime {
        let mut builder = match self {
            Flavor::CurrentThread => Builder::new_current_thread(),
            Flavor::MultiThread2 => {
                let mut builder = Builder::new_multi_thread();
                builder.worker_threads(2);
                builder
            }
        };
        builder.enable_time().build().expect("runtime")
    }
}

/// Median, min and max of a non-empty sample.
pub(crate) fn median_min_max(sample: &[Duration]) -> (Duration, Duration, Duration) {
    let mut sorted = sample.to_vec();
    sorted.sort();
    (
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1],
    )
}

/// `a` if every value is `a`, else `min–max`.
pub(crate) fn range<T: Ord + Copy + Display>(values: impl Iterator<Item = T>) -> String {
    let values: Vec<T> = values.collect();
    let min = values.iter().min().expect("at least one run");
    let max = values.iter().max().expect("at least one run");
    if min == max {
        min.to_string()
    } else {
        format!("{min}–{max}")
    }
}

/// Milliseconds with one decimal.
pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Milliseconds with one decimal, comma-separated, unit once at the end.
pub(crate) fn ms_list(sample: &[Duration]) -> String {
    let values: Vec<String> = sample
        .iter()
        .map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
        .collect();
    format!("{} ms", values.join(", "))
}
