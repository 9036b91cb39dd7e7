//! `herdsman load tabs|sse|http`: a small HTTP load engine on hyper-util,
//! and three scenarios that measure what a user of herdsman judges: the
//! upstream calls of many polling tabs, the fan-out of one change to many
//! event streams, and the cost of the coordinated route over HTTP against
//! a bare one.
//!
//! Every load is bounded: in time (`--duration`, at most an hour, and each
//! request at most 10 s), in count (at most 20 million requests and 100,000
//! concurrent connections or hooks), and in place: it targets loopback
//! addresses only unless `--allow-remote` is given. Each prints a markdown
//! report (or writes it with `--out FILE`, the SVG charts beside it), and
//! shows a progress line while it runs when stderr is a terminal.

mod chart;
mod engine;
mod http;
mod report;
mod sse;
mod tabs;

use std::{path::PathBuf, process::ExitCode};

use clap::Subcommand;

use crate::{net, CANNOT};

#[derive(Debug, Subcommand)]
pub(crate) enum LoadCommand {
    /// Many browser tabs, each with hooks polling one path on their own
    /// timers: client requests against upstream calls (the seed's bug at
    /// scale).
    Tabs(tabs::TabsArgs),
    /// Many event streams, each with its own identity: time to first event,
    /// the fan-out latency of each change, upstream calls per interval, the
    /// server's memory, dropped streams.
    Sse(sse::SseArgs),
    /// Closed-loop requests on N connections: throughput and latency, and
    /// with --compare the ratio to another route, in interleaved rounds.
    Http(http::HttpArgs),
}

/// What every scenario takes.
#[derive(Debug, clap::Args)]
pub(crate) struct Common {
    /// The server's base URL
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    target: String,
    /// Write the markdown report to this file, and the SVG charts beside it
    /// (FILE's stem, then `-<chart>.svg`), instead of printing it
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// The server's process id: its CPU time and memory (RSS) from /proc
    #[arg(long)]
    pid: Option<u32>,
    /// The admin token for the app's stats (`Authorization: Bearer T`)
    #[arg(long, env = "HERDSMAN_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Allow targets that are not loopback addresses
    #[arg(long)]
    allow_remote: bool,
}

impl Common {
    /// The target's base URL, checked ([`net::target`]).
    fn base(&self) -> Result<::http::Uri, String> {
        net::target(&self.target, self.allow_remote)
    }
}

pub(crate) fn run(command: LoadCommand) -> ExitCode {
    let (common, scenario) = match &command {
        LoadCommand::Tabs(args) => (&args.common, "tabs"),
        LoadCommand::Sse(args) => (&args.common, "sse"),
        LoadCommand::Http(args) => (&args.common, "http"),
    };
    let result = net::runtime().and_then(|runtime| {
        runtime.block_on(async {
            match &command {
                LoadCommand::Tabs(args) => tabs::run(args).await,
                LoadCommand::Sse(args) => sse::run(args).await,
                LoadCommand::Http(args) => http::run(args).await,
            }
        })
    });
    match result.and_then(|report| report.emit(common.out.as_deref())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("herdsman load {scenario}: {err}");
            ExitCode::from(CANNOT)
        }
    }
}
