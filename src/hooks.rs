//! Running hooks: a command through `sh -c` in its own process group (killed with its
//! children at the timeout), with `STEWARD_JOB`, `STEWARD_SET`, `STEWARD_ARCHIVE` and
//! `STEWARD_STATUS` in its environment, output captured for the run record.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::schedule::Job;

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Before,
    After,
    OnFailure,
}

impl When {
    /// `before`, `after` or `on-failure`.
    pub fn name(self) -> &'static str {
        match self {
            When::Before => "before",
            When::After => "after",
            When::OnFailure => "on-failure",
        }
    }
}

/// A hook that failed (exit status, timeout, or could not start).
#[derive(Debug, thiserror::Error)]
#[error("{when} hook `{command}` failed{}", if output.trim().is_empty() { String::new() } else { format!(": {}", output.trim()) })]
pub struct HookError {
    pub when: &'static str,
    pub command: String,
    pub output: String,
}

/// What a hook run is about.
pub struct Context<'a> {
    pub job: &'a Job,
    pub set: Option<&'a str>,
    pub archive: Option<&'a Path>,
    /// `ok` or `failed` (after and on-failure), `running` (before).
    pub status: &'a str,
}

/// Runs `command` as the `when` hook; returns its output (a line for the run record).
pub fn run(
    when: When,
    command: &str,
    ctx: &Context<'_>,
    timeout: Duration,
) -> Result<String, HookError> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .env("STEWARD_JOB", ctx.job.to_string())
        .env("STEWARD_SET", ctx.set.unwrap_or(""))
        .env(
            "STEWARD_ARCHIVE",
            ctx.archive
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        )
        .env("STEWARD_STATUS", ctx.status);
    let fail = |output: String| HookError {
        when: when.name(),
        command: command.to_string(),
        output,
    };
    // A `before` hook gives way to SIGTERM and Ctrl-C (the work has not begun); `after`
    // and `on-failure` always run to their end or their timeout.
    let stop = (when == When::Before).then(|| crate::backup::stop_flag().as_ref());
    match crate::services::run_captured(cmd, timeout, true, stop) {
        Ok(o) if o.success => Ok(format!("{} hook: {}", when.name(), o.output.trim())),
        Ok(o) => Err(fail(o.output)),
        Err(e) => Err(fail(format!("cannot start sh: {e}"))),
    }
}

/// The hooks around one unit of work (a job, or one set of a backup), in one place for
/// both: `before` first (its failure stops the work), then `after` when the work went
/// well or `on-failure` when it did not, each line of what they printed kept for the run
/// record. `None` hooks (none configured, or a dry run) run nothing.
pub struct Hooked<'a> {
    hooks: Option<&'a crate::config::Hooks>,
    job: Job,
    set: Option<String>,
    /// What the hooks that ran printed (or why they failed), in order.
    pub log: Vec<String>,
}

impl<'a> Hooked<'a> {
    /// The hooks of `job` (and `set`, for a set's own hooks).
    pub fn new(hooks: Option<&'a crate::config::Hooks>, job: Job, set: Option<&str>) -> Self {
        Hooked {
            hooks,
            job,
            set: set.map(str::to_string),
            log: Vec::new(),
        }
    }

    /// Runs `before` (status `running`); the work does not start when it fails.
    pub fn before(&mut self) -> Result<(), HookError> {
        self.fire(When::Before, None, "running")
    }

    /// Runs `after` (status `ok`, with the new archive when there is one) when the work
    /// went well, `on-failure` (status `failed`) when it did not.
    pub fn after(&mut self, ok: bool, archive: Option<&Path>) -> Result<(), HookError> {
        if ok {
            self.fire(When::After, archive, "ok")
        } else {
            self.fire(When::OnFailure, None, "failed")
        }
    }

    fn fire(&mut self, when: When, archive: Option<&Path>, status: &str) -> Result<(), HookError> {
        let Some(hooks) = self.hooks else {
            return Ok(());
        };
        let command = match when {
            When::Before => hooks.before.as_deref(),
            When::After => hooks.after.as_deref(),
            When::OnFailure => hooks.on_failure.as_deref(),
        };
        let Some(command) = command else {
            return Ok(());
        };
        let ctx = Context {
            job: &self.job,
            set: self.set.as_deref(),
            archive,
            status,
        };
        match run(when, command, &ctx, hooks.timeout) {
            Ok(line) => {
                self.log.push(line);
                Ok(())
            }
            Err(e) => {
                self.log.push(e.to_string());
                Err(e)
            }
        }
    }
}
