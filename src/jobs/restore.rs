//! The restore job's bookkeeping: the restore lock and the backup lock held together (no
//! backup or prune changes the destination while a restore reads it), each restore and
//! each resume recorded as a run of `restore` (a failure alerts, a finished resume is the
//! recovery), a backup fetched from offsite first when asked, and the choice of the
//! newest good backup. The conversation (picker, plan, confirmations) is the caller's.

use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};

use super::{Outcome, Session, Ui};
use crate::catalog::{BackupRecord, BackupStatus, Catalog, RunStatus};
use crate::config::Config;
use crate::lock::JobLock;
use crate::restore::{self, Guarded, Plan, RestoreOptions, Resumed};
use crate::schedule::Job;
use crate::services::SystemRunner;

/// A restore in progress: both locks held, the catalog open.
pub struct RestoreJob<'a> {
    session: Session<'a>,
    _backup_lock: JobLock,
}

/// Takes the restore job's lock, then the backup lock.
pub fn begin<'a>(cfg: &'a Config, ui: Ui<'a>) -> anyhow::Result<RestoreJob<'a>> {
    let session = Session::begin(cfg, Job::Restore, false, ui)?;
    let backup_lock = crate::lock::acquire(&cfg.state_dir, Job::Backup.lock())?;
    Ok(RestoreJob {
        session,
        _backup_lock: backup_lock,
    })
}

impl RestoreJob<'_> {
    /// The catalog, for choosing the backup.
    pub fn catalog(&self) -> &Catalog {
        &self.session.catalog
    }

    /// `--resume`: completes or rolls back an interrupted restore (`None`: there was
    /// none), recorded as a run of the restore job.
    pub fn resume(&mut self, cfg: &Config) -> anyhow::Result<Option<Resumed>> {
        let run = match restore::pending(&cfg.state_dir) {
            Ok(Some(j)) => Some(self.session.start(Job::Restore, Some(&j.id))?),
            _ => None,
        };
        let resumed =
            restore::resume(cfg, &SystemRunner).context("resuming the interrupted restore");
        // The failed restore's problem ends once its data is at rest and its services run
        // again: a finished (or undone) resume is the restore job's recovery.
        match (run, &resumed) {
            (None, _) | (_, Ok(None)) => {}
            (Some(run), Ok(Some(r))) => self.session.finish(
                run,
                &Outcome {
                    status: RunStatus::Ok,
                    summary: &format!("interrupted restore of {} {}", r.id, r.outcome),
                    alert_ok: true,
                    detail: "",
                },
            )?,
            (Some(run), Err(e)) => self.session.finish(
                run,
                &Outcome {
                    status: RunStatus::Failed,
                    summary: &format!("{e:#}"),
                    alert_ok: false,
                    detail: &format!("resuming the interrupted restore failed: {e:#}"),
                },
            )?,
        }
        resumed
    }

    /// `--from-offsite ID`: fetches and verifies backup `id` when the catalog does not
    /// have it; returns it and the target it came from (`None`: it was here).
    pub fn fetch_missing(
        &mut self,
        cfg: &Config,
        id: &str,
        from: &super::offsite::Source<'_>,
        ui: Ui<'_>,
    ) -> anyhow::Result<Option<(BackupRecord, String)>> {
        if self.session.catalog.backup(id)?.is_some() {
            return Ok(None);
        }
        super::offsite::fetch_verified(cfg, &mut self.session.catalog, id, from, ui).map(Some)
    }

    /// Restores `record` by `plan`, recorded as a run of the restore job (a failure alerts).
    pub fn restore(
        &mut self,
        cfg: &Config,
        record: &BackupRecord,
        plan: &Plan,
        opts: &RestoreOptions,
        interrupted: &AtomicBool,
        ui: Ui<'_>,
    ) -> anyhow::Result<restore::Report> {
        let run = self.session.start(Job::Restore, Some(&record.id))?;
        let progress = (ui.progress)();
        let result = restore::restore(
            cfg,
            record,
            plan,
            opts,
            &SystemRunner,
            progress.as_ref(),
            interrupted,
        );
        drop(progress);
        match result {
            Ok(r) => {
                // What the services' side of an incident costs, for the drills' estimate.
                if plan.in_place && !r.stopped.is_empty() {
                    let times = crate::catalog::RestoreTimes {
                        set: plan.set.clone(),
                        at: crate::clock::now(),
                        backup_id: r.id.clone(),
                        stop_ms: r.stop_ms,
                        start_ms: r.start_ms,
                    };
                    if let Err(e) = self.session.catalog.note_restore_times(&times) {
                        (ui.warn)(&format!(
                            "recording the restore's service times failed: {e:#}"
                        ));
                    }
                }
                self.session.finish(
                    run,
                    &Outcome {
                        status: RunStatus::Ok,
                        summary: &format!("{} restored", r.id),
                        alert_ok: true,
                        detail: "",
                    },
                )?;
                Ok(r)
            }
            Err(e) => {
                self.session.finish(
                    run,
                    &Outcome {
                        status: RunStatus::Failed,
                        summary: &format!("{e:#}"),
                        alert_ok: false,
                        detail: &format!("{} failed: {}", record.id, crate::error::chain(&e)),
                    },
                )?;
                Err(anyhow::Error::new(e).context(format!("restore of {} failed", record.id)))
            }
        }
    }
}

/// `--latest`: the newer verified backups passed over because they are suspect, and the
/// newest good backup among `all` (one set's, newest first) or why there is none.
pub type Latest<'a> = (Vec<&'a BackupRecord>, anyhow::Result<BackupRecord>);

/// The [`Latest`] of `all`; more than one set's backups is an error.
pub fn newest_good(all: &[BackupRecord]) -> anyhow::Result<Latest<'_>> {
    let sets: std::collections::BTreeSet<&str> = all.iter().map(|b| b.set.as_str()).collect();
    if sets.len() > 1 {
        bail!("--latest needs --set: backups of {} sets exist", sets.len());
    }
    // The newest good backup: a newer suspect one is said, never taken by default.
    // A differential counts only with its base verified beside it.
    let base_ok = |b: &BackupRecord| {
        b.base.as_ref().is_none_or(|id| {
            all.iter()
                .any(|x| &x.id == id && x.status == BackupStatus::Verified)
        })
    };
    let verified: Vec<&BackupRecord> = all
        .iter()
        .filter(|b| b.status == BackupStatus::Verified && base_ok(b))
        .collect();
    let passed: Vec<&BackupRecord> = verified
        .iter()
        .take_while(|b| !b.is_good())
        .copied()
        .collect();
    let chosen = match verified.iter().find(|b| b.is_good()) {
        Some(b) => Ok((*b).clone()),
        None if !verified.is_empty() => Err(anyhow::anyhow!(
            "no good backup to restore: every verified backup is SUSPECT; look at them \
             (`steward backups list`) and restore one by its ID with --suspect-ok"
        )),
        None => Err(anyhow::anyhow!("no verified backup to restore")),
    };
    Ok((passed, chosen))
}

/// `--guard NAME`: settles an interrupted restore's data before service `name` starts,
/// under the restore lock (a running restore holds it already). Light enough for a
/// service's start: no catalog, no hooks.
pub fn guard(cfg: &Config, name: &str) -> anyhow::Result<Guarded> {
    let (lock, running) = match crate::lock::acquire(&cfg.state_dir, Job::Restore.lock()) {
        Ok(l) => (Some(l), None),
        Err(e @ crate::lock::LockError::Held { .. }) => (None, Some(e)),
        Err(e) => return Err(e).context("taking the restore lock"),
    };
    let g = restore::guard(cfg, name, running)
        .with_context(|| format!("guarding the start of {name}"))?;
    drop(lock);
    Ok(g)
}
