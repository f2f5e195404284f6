//! steward: checks, maintenance, verified compressed backups and incident restores for
//! small self-hosted servers. `run` dispatches a parsed command line.

pub mod alerts;
pub mod backup;
pub mod catalog;
pub mod checks;
pub mod cli;
pub mod clock;
mod commands;
pub mod config;
pub mod daemon;
pub mod drill;
pub mod error;
mod fault;
pub mod fleet;
pub mod fsutil;
pub mod hooks;
pub mod jobs;
pub mod lock;
pub mod maintain;
pub mod metrics;
pub mod offsite;
pub mod packaging;
pub mod patterns;
pub mod render;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod serve;
pub mod services;
pub mod severity;
pub mod status;

use std::process::ExitCode;

/// Runs one parsed command line and returns its exit code.
pub fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    commands::dispatch(cli)
}

/// The exit code for an error: the most specific cause in its chain decides.
pub fn exit_code(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if cause.is::<config::ConfigError>()
            || cause
                .downcast_ref::<serve::ServeError>()
                .is_some_and(serve::ServeError::is_config)
        {
            return ExitCode::from(error::CONFIG);
        }
    }
    if jobs::lock_held(err) {
        return ExitCode::from(error::LOCKED);
    }
    ExitCode::from(error::FAILED)
}
