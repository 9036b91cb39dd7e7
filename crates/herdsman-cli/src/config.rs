//! `herdsman config check|show`.
//!
//! Both read what start-up reads: the profile of the environment (`--env`,
//! else detected as at start-up: `HERDSMAN_ENV`, container markers), the
//! file (`FILE`, else `HERDSMAN_CONFIG`, else `./herdsman.toml` if present)
//! and `HERDSMAN__SECTION__KEY` variables, and print problems exactly as
//! start-up reports them. Exit status: 0 valid, 1 invalid, 2 usage error.

use std::{io::Write, path::PathBuf, process::ExitCode};

use clap::{builder::PossibleValuesParser, Subcommand};
use herdsman::config::{Config, Environment, Loaded};

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Validates a configuration: prints "ok", or every problem (exit 1).
    Check(Target),
    /// Prints the effective configuration as TOML, secrets redacted.
    Show(Target),
}

#[derive(Debug, clap::Args)]
pub(crate) struct Target {
    /// The environment whose profile applies [default: detected, as at start-up]
    #[arg(long, value_parser = PossibleValuesParser::new(["development", "production", "docker", "test"]))]
    env: Option<String>,
    /// The configuration file [default: $HERDSMAN_CONFIG, else ./herdsman.toml if present]
    file: Option<PathBuf>,
}

pub(crate) fn run(command: ConfigCommand) -> ExitCode {
    let (target, show) = match command {
        ConfigCommand::Check(target) => (target, false),
        ConfigCommand::Show(target) => (target, true),
    };
    let env = match target
        .env
        .as_deref()
        .map(str::parse)
        .unwrap_or_else(Environment::detect)
    {
        Ok(env) => env,
        Err(err) => return fail(&err.to_string()),
    };
    let loader = Config::loader(env);
    let loaded = match &target.file {
        Some(file) => loader.file(file).load(),
        None => loader.load(),
    };
    match loaded {
        Ok(Loaded {
            config, warnings, ..
        }) => {
            let mut stderr = std::io::stderr().lock();
            for warning in &warnings {
                let _ = writeln!(stderr, "warning: {warning}");
            }
            if show {
                print!(
                    "# herdsman configuration for {env}\n{}",
                    config.redacted().to_toml()
                );
            } else {
                println!("ok");
            }
            ExitCode::SUCCESS
        }
        Err(err) => fail(&err.to_string()),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("{message}");
    ExitCode::FAILURE
}
