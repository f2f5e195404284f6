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
pub mod error;
mod fault;
pub mod fsutil;
pub mod hooks;
pub mod job;
pub mod jobs;
pub mod lock;
pub mod maintain;
pub mod metrics;
pub mod offsite;
pub mod packaging;
pub mod patterns;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod services;
pub mod severity;

use std::process::ExitCode;

/// Runs one parsed command line and returns its exit code.
pub fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    commands::dispatch(cli)
}

/// The exit code for an error: the most specific cause in its chain decides.
pub fn exit_code(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if cause.is::<config::ConfigError>() {
            return ExitCode::from(error::CONFIG);
        }
    }
    if lock_held(err) {
        return ExitCode::from(error::LOCKED);
    }
    ExitCode::from(error::FAILED)
}

/// Whether the error is another run holding the job's lock (a scheduled tick that meets
/// it is skipped, not failed).
pub fn lock_held(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        matches!(cause.downcast_ref(), Some(lock::LockError::Held { .. }))
            || cause
                .downcast_ref::<jobs::JobError>()
                .is_some_and(jobs::JobError::is_held)
    })
}
