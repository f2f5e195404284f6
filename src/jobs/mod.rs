//! The jobs: one module per job, each a function from typed options to a typed report
//! that the command layer prints. [`run`] is the one entry of a scheduled run (timers,
//! launchd, the daemon's children); the bookkeeping every job shares is [`session`]'s.
//! Nothing here prints: trouble that does not fail a job goes to [`Ui::warn`], progress
//! to the [`Ui::progress`] display the caller gives.

pub mod backup;
pub mod check;
pub mod drill;
pub mod maintain;
pub mod offsite;
pub mod prune;
pub mod restore;
mod session;
pub mod verify;

pub use session::{
    CONFIG_CHECK, Done, JobError, Outcome, Session, Started, Tick, Warn, deliver, record_config,
    round,
};

use anyhow::Context;

use crate::backup::Progress;
use crate::catalog::RunStatus;
use crate::config::Config;
use crate::schedule::Job;

/// What a job needs from whoever runs it: where warnings go, and a progress display for
/// each long phase (a bar on a terminal, lines in a log, nothing for `--json`).
#[derive(Clone, Copy)]
pub struct Ui<'a> {
    pub warn: Warn<'a>,
    pub progress: &'a dyn Fn() -> Box<dyn Progress>,
    /// Wait for another job that holds the same lock instead of failing (scheduled runs:
    /// nobody is there to run it again).
    pub queue: bool,
}

/// What a scheduled run of a job did, for the caller to print.
pub enum Report {
    Backup(backup::BackupReport),
    Check(check::CheckReport),
    Maintain(maintain::MaintainReport),
    Verify(verify::VerifyReport),
    Offsite(offsite::PushReport),
    Prune(prune::PruneReports),
    Drill(drill::DrillReport),
    /// Nothing to do, and why.
    Idle(&'static str),
}

impl Report {
    /// How the job ended.
    pub fn done(&self) -> Done {
        match self {
            Report::Backup(r) => r.done(),
            Report::Check(r) => r.done,
            Report::Maintain(r) => r.done,
            Report::Verify(r) => r.done(),
            Report::Offsite(r) => r.done(),
            Report::Drill(r) => r.done(),
            Report::Prune(_) | Report::Idle(_) => Done::OK,
        }
    }
}

/// Runs `job` as its schedule does: through the same function as its direct command, with
/// the defaults a command line without flags has.
pub fn run(cfg: &Config, job: &Job, ui: Ui<'_>) -> anyhow::Result<Report> {
    Ok(match job {
        Job::Check => Report::Check(check::run(cfg, ui)?),
        Job::Backup => {
            let sets = backup::unscheduled_sets(cfg);
            if sets.is_empty() && !cfg.backup.sets.is_empty() {
                return Ok(Report::Idle(
                    "every set has its own schedule; nothing for the backup job",
                ));
            }
            Report::Backup(backup::run(
                cfg,
                &backup::BackupJob {
                    sets,
                    force: false,
                    full: false,
                },
                ui,
            )?)
        }
        Job::BackupSet(set) => Report::Backup(backup::run(
            cfg,
            &backup::BackupJob {
                sets: vec![set.clone()],
                force: false,
                full: false,
            },
            ui,
        )?),
        Job::Maintain(period) => Report::Maintain(maintain::run(cfg, *period, false, ui)?),
        Job::Verify => Report::Verify(verify::run(cfg, &verify::Choice::Latest, None, ui)?),
        Job::Offsite => Report::Offsite(offsite::push(
            cfg,
            &offsite::PushJob {
                target: None,
                set: None,
                all: false,
            },
            ui,
        )?),
        Job::Prune => Report::Prune(prune::run(cfg, None, false, ui)?),
        Job::Drill => Report::Drill(drill::run(
            cfg,
            &drill::DrillJob {
                sets: Vec::new(),
                from: drill::From::Local,
            },
            ui,
        )?),
        Job::DrillOffsite => Report::Drill(drill::run(
            cfg,
            &drill::DrillJob {
                sets: Vec::new(),
                from: drill::From::Offsite {
                    target: None,
                    identity: None,
                },
            },
            ui,
        )?),
        Job::Restore => anyhow::bail!("a restore is never scheduled; run `steward restore`"),
    })
}

/// `steward run JOB`: one scheduled tick of `job`, recorded around its run (`Skipped` when
/// another run holds the job's lock).
pub fn tick(cfg: &Config, job: &Job, ui: Ui<'_>) -> anyhow::Result<Report> {
    let tick = Tick::start(cfg, job)
        .with_context(|| format!("opening the catalog in {}", cfg.state_dir.display()))?;
    let result = run(cfg, job, Ui { queue: true, ..ui });
    let (status, summary) = match &result {
        Ok(r) => (r.done().status, r.done().status.word().to_string()),
        Err(e) if lock_held(e) => (RunStatus::Skipped, format!("{e:#}")),
        Err(e) => (RunStatus::Failed, format!("{e:#}")),
    };
    tick.end(cfg, status, &summary, ui.warn)?;
    result
}

/// Whether the error is another run holding the job's lock (a scheduled tick that meets
/// it is skipped, not failed).
pub fn lock_held(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        matches!(
            cause.downcast_ref(),
            Some(crate::lock::LockError::Held { .. })
        ) || cause
            .downcast_ref::<JobError>()
            .is_some_and(JobError::is_held)
    })
}

/// Leaves this host's signed status in the fleet's bucket (`[fleet]`). A failure is a
/// warning, not the job's: the peers then see this host go quiet, which is what the fleet
/// is for.
pub fn publish_fleet(cfg: &Config, catalog: &crate::catalog::Catalog, warn: Warn<'_>) {
    if cfg.fleet.is_some()
        && let Err(e) = crate::fleet::publish(cfg, catalog, crate::clock::now())
    {
        warn(&format!(
            "the fleet status was not written: {}",
            crate::error::chain(&e)
        ));
    }
}

/// A job's failures as one [`Done`]: failed when there is any.
fn done_by(failures: &[anyhow::Error]) -> Done {
    if failures.is_empty() {
        Done::OK
    } else {
        Done::FAILED
    }
}

/// Ends a job's session; a failing `after` (or `on-failure`) hook fails the job.
fn end(session: Session<'_>, failures: &mut Vec<anyhow::Error>) {
    if !session.end(failures.is_empty()) && failures.is_empty() {
        failures.push(anyhow::anyhow!("the job's after hook failed"));
    }
}
