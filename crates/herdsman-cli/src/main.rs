//! `herdsman`: check configuration, audit a running app, load it.
//!
//! ```text
//! herdsman config check [--env ENV] [FILE]   # "ok", or every problem; exit 1
//! herdsman config show  [--env ENV] [FILE]   # the effective configuration, as TOML
//! herdsman audit URL [--token T]             # a running app's stats; exit 1 when unhealthy
//! herdsman load tabs|sse|http [OPTIONS]      # a bounded load on a loopback server
//! ```
//!
//! Each subcommand's module says what it reads and prints; `--help` lists
//! the options. Exit status: 0 success (valid, healthy, load done), 1 the
//! thing checked is not (invalid configuration, a runaway key or an alert),
//! 2 usage error, or what was asked could not be done (stats unreadable, a
//! load refused).

mod audit;
mod config;
mod load;
mod net;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Checks herdsman configuration, audits a running app, loads it.
#[derive(Debug, Parser)]
#[command(name = "herdsman", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Configuration files and variables.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Reads a running app's stats: savings per class, runaway keys, layers
    /// switched off, alerts firing. Exits 1 on a runaway key or an alert.
    Audit(audit::AuditArgs),
    /// Loads a running server (loopback only, unless --allow-remote) and
    /// reports what it did, in markdown.
    #[command(subcommand)]
    Load(load::LoadCommand),
}

/// Exit status 2: usage error, or the command could not do what it was
/// asked.
const CANNOT: u8 = 2;

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Config(command) => config::run(command),
        Command::Audit(args) => audit::run(&args),
        Command::Load(command) => load::run(command),
    }
}
