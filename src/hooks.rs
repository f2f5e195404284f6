//! Running hooks: a command through `sh -c` in its own process group (killed with its
//! children at the timeout), with `STEWARD_JOB`, `STEWARD_SET`, `STEWARD_ARCHIVE` and
//! `STEWARD_STATUS` in its environment, output captured for the run record.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::job::Job;

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

/// Runs `hooks`' command for `when`, if it has one.
pub fn run_if(
    hooks: &crate::config::Hooks,
    when: When,
    ctx: &Context<'_>,
) -> Option<Result<String, HookError>> {
    let command = match when {
        When::Before => hooks.before.as_deref(),
        When::After => hooks.after.as_deref(),
        When::OnFailure => hooks.on_failure.as_deref(),
    }?;
    Some(run(when, command, ctx, hooks.timeout))
}
