//! The maintenance jobs (daily, weekly, monthly): the period's tasks (and, daily, the
//! expiry of restore rollback copies), the report mailed, one run record whose warnings
//! alert like failures.

use super::{Done, Outcome, Session, Ui};
use crate::catalog::RunStatus;
use crate::config::Config;
use crate::maintain::{TaskError, TaskReport};
use crate::schedule::{Job, Period};

/// What a period's maintenance did.
pub struct MaintainReport {
    pub period: Period,
    pub dry_run: bool,
    /// Whether the period has no task configured.
    pub no_tasks: bool,
    /// Each task's report, or why it failed.
    pub results: Vec<Result<TaskReport, TaskError>>,
    pub done: Done,
}

impl MaintainReport {
    /// The tasks that failed.
    pub fn errors(&self) -> impl Iterator<Item = &TaskError> {
        self.results.iter().filter_map(|r| r.as_ref().err())
    }
}

/// Runs `period`'s tasks (`dry_run`: says what they would do, records nothing).
pub fn run(
    cfg: &Config,
    period: Period,
    dry_run: bool,
    ui: Ui<'_>,
) -> anyhow::Result<MaintainReport> {
    let name = period.name();
    let tasks = cfg.maintenance.tasks(period);
    let job = Job::Maintain(period);
    let mut session = Session::begin(cfg, job.clone(), dry_run, ui)?;
    let run = session.start(job, None)?;
    let progress = (ui.progress)();
    let now = crate::clock::now();
    let mut results = crate::maintain::run(
        cfg,
        &session.catalog,
        tasks,
        dry_run,
        now,
        &crate::services::SystemRunner,
        progress.as_ref(),
    );
    if period == Period::Daily {
        results.push(crate::maintain::rollbacks_task(cfg, now, dry_run));
    }
    drop(progress);
    let mut report = MaintainReport {
        period,
        dry_run,
        no_tasks: tasks.is_empty(),
        results,
        done: Done::OK,
    };
    if dry_run {
        return Ok(report);
    }
    // Mail the report when alerts are configured.
    if let Some(email) = &cfg.alerts.email {
        for text in report
            .results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .filter_map(|r| r.report.as_ref())
        {
            let subject = format!("[steward] {}: {name} report", crate::fsutil::hostname());
            if let Err(e) = crate::alerts::send(email, &subject, text) {
                (ui.warn)(&format!("the report mail was not sent: {e}"));
            }
        }
    }
    let errors: Vec<String> = report.errors().map(ToString::to_string).collect();
    let warnings: Vec<String> = report
        .results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .flat_map(|r| r.warnings.clone())
        .collect();
    let ok = errors.is_empty();
    let detail = errors
        .iter()
        .chain(&warnings)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    let status = if !ok {
        RunStatus::Failed
    } else if warnings.is_empty() {
        RunStatus::Ok
    } else {
        RunStatus::Warning
    };
    // Warnings (a VACUUM skipped for lack of room) alert like failures do.
    session.finish(
        run,
        &Outcome {
            status,
            summary: &detail,
            alert_ok: ok && warnings.is_empty(),
            detail: &detail,
        },
    )?;
    report.done = if session.end(ok) {
        Done::OK
    } else {
        Done::FAILED
    };
    Ok(report)
}
