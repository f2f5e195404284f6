//! The backup job: each chosen set under the backup lock, between its own hooks, recorded
//! as a run of `backup:SET` (a failure or a suspect backup alerts), pruned after when the
//! config says so; then the new archives are copied offsite.

use anyhow::{Context, bail};

use super::{Done, Outcome, Session, Ui};
use crate::backup::{BackupOptions, PruneReport, SetOutcome};
use crate::catalog::RunStatus;
use crate::config::{BackupSet, Config};
use crate::hooks::Hooked;
use crate::schedule::Job;

/// Which sets, and how.
pub struct BackupJob {
    /// The sets by name; empty: every set.
    pub sets: Vec<String>,
    /// A new archive even when nothing changed.
    pub force: bool,
    /// Full backups, not differentials (`backup --full`).
    pub full: bool,
}

/// What the job did.
pub struct BackupReport {
    /// Whether the config has no set at all.
    pub no_sets: bool,
    /// Each set's outcome, in config order (failed sets are in `failures`).
    pub outcomes: Vec<SetOutcome>,
    /// The retention that followed each backup.
    pub prunes: Vec<PruneReport>,
    /// The copies of the new archives offsite.
    pub offsite: super::offsite::AfterBackup,
    /// What failed, a set's backup or what followed it.
    pub failures: Vec<anyhow::Error>,
}

impl BackupReport {
    /// Failed when anything did.
    pub fn done(&self) -> Done {
        super::done_by(&self.failures)
    }
}

/// The sets the `backup` job covers: those without a schedule of their own.
pub fn unscheduled_sets(cfg: &Config) -> Vec<String> {
    let own: Vec<&str> = cfg
        .schedule
        .jobs
        .iter()
        .filter_map(|(j, _)| match j {
            Job::BackupSet(s) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    cfg.backup
        .sets
        .iter()
        .map(|s| s.name.clone())
        .filter(|n| !own.contains(&n.as_str()))
        .collect()
}

/// Backs up the sets `job` names (every set when it names none).
pub fn run(cfg: &Config, job: &BackupJob, ui: Ui<'_>) -> anyhow::Result<BackupReport> {
    for name in &job.sets {
        if cfg.set(name).is_none() {
            let known: Vec<_> = cfg.backup.sets.iter().map(|s| s.name.as_str()).collect();
            bail!(
                "no backup set {name:?} in {} (configured: {})",
                cfg.origin,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
    }
    let sets: Vec<_> = cfg
        .backup
        .sets
        .iter()
        .filter(|s| job.sets.is_empty() || job.sets.contains(&s.name))
        .collect();
    let unit = match job.sets.as_slice() {
        [one] => Job::BackupSet(one.clone()),
        _ => Job::Backup,
    };
    // Before the job's hooks: SIGTERM and Ctrl-C stop the work and run `on-failure`.
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, crate::backup::stop_flag().clone())?;
    }
    // Nothing to back up: the state is set up, but nothing pings or is recorded.
    let mut session = Session::begin(cfg, unit, sets.is_empty(), ui)?;
    let mut report = BackupReport {
        no_sets: sets.is_empty(),
        outcomes: Vec::new(),
        prunes: Vec::new(),
        offsite: super::offsite::AfterBackup::default(),
        failures: Vec::new(),
    };
    if sets.is_empty() {
        return Ok(report);
    }
    let progress = (ui.progress)();
    let each = Each {
        dest: crate::backup::Dest::of(cfg),
        options: BackupOptions {
            force: job.force,
            full: job.full,
        },
        tz: jiff::tz::TimeZone::system(),
        progress: progress.as_ref(),
    };
    for set in sets {
        one_set(cfg, &mut session, set, &each, &mut report)?;
    }
    drop(each);
    drop(progress);
    let created: Vec<String> = report
        .outcomes
        .iter()
        .filter_map(|o| match o {
            SetOutcome::Created(s) => Some(s.id.clone()),
            SetOutcome::Unchanged { .. } => None,
        })
        .collect();
    report.offsite = super::offsite::after_backup(&mut session, cfg, &created, ui);
    report.failures.append(&mut report.offsite.failures);
    super::publish_fleet(cfg, &session.catalog, ui.warn);
    super::end(session, &mut report.failures);
    Ok(report)
}

/// What every set's backup in one run shares, taken once.
struct Each<'r> {
    dest: crate::backup::Dest<'r>,
    options: BackupOptions,
    /// The time zone retention counts days in.
    tz: jiff::tz::TimeZone,
    progress: &'r dyn crate::backup::Progress,
}

/// One set: its hooks around its backup, its run record and alert state, its retention.
fn one_set(
    cfg: &Config,
    session: &mut Session<'_>,
    set: &BackupSet,
    each: &Each<'_>,
    report: &mut BackupReport,
) -> anyhow::Result<()> {
    let unit = Job::BackupSet(set.name.clone());
    let run = session.start(unit.clone(), None)?;
    let mut hooks = Hooked::new(Some(&set.hooks), unit, Some(&set.name));
    // A path that cannot be read fails this set alone; the others run.
    let missing = cfg.missing_set_paths(set);
    let outcome = if !missing.is_empty() {
        Err(anyhow::anyhow!("{}", missing.join("; ")))
            .with_context(|| format!("backup of set {:?} not started", set.name))
    } else if let Err(e) = hooks.before() {
        Err(anyhow::Error::new(e))
            .with_context(|| format!("backup of set {:?} not started", set.name))
    } else {
        crate::backup::backup_quiesced(
            each.dest,
            &cfg.services,
            &session.catalog,
            set,
            each.options,
            &crate::services::SystemRunner,
            each.progress,
        )
        .with_context(|| format!("backup of set {:?} failed", set.name))
    };
    // `after` on success (with the new archive), `on-failure` otherwise; a failing
    // `after` fails the run (recorded and alerted like any failure) but keeps the archive.
    let archive = match &outcome {
        Ok(SetOutcome::Created(s)) => Some(s.path.clone()),
        _ => None,
    };
    let after_failed = match hooks.after(outcome.is_ok(), archive.as_deref()) {
        Err(e) if outcome.is_ok() => {
            let text = e.to_string();
            report
                .failures
                .push(anyhow::Error::new(e).context(format!("set {:?}", set.name)));
            Some(text)
        }
        _ => None,
    };
    let o = match outcome {
        Ok(o) => o,
        Err(e) => {
            let text = format!("{e:#}");
            session.finish(
                run,
                &Outcome {
                    status: RunStatus::Failed,
                    summary: &text,
                    alert_ok: false,
                    detail: &text,
                },
            )?;
            session.record_hooks(None, &hooks.log);
            report.failures.push(e);
            return Ok(());
        }
    };
    let (mut status, mut summary) = summary(&o);
    if let Some(e) = &after_failed {
        status = RunStatus::Failed;
        summary = format!("{summary}, but {e}");
    }
    // A suspect backup alerts at once, like a failure; the next good one sends the
    // recovery. Data unchanged since a suspect backup is still suspect: no recovery (and
    // no second alert after it).
    let suspect = match &o {
        SetOutcome::Created(s) => !s.suspect.is_empty(),
        SetOutcome::Unchanged { newest, .. } => session
            .catalog
            .backup(newest)?
            .is_some_and(|b| b.is_suspect()),
    };
    session.finish(
        run,
        &Outcome {
            status,
            summary: &summary,
            alert_ok: !suspect && after_failed.is_none(),
            detail: &summary,
        },
    )?;
    session.record_hooks(None, &hooks.log);
    report.outcomes.push(o);
    if cfg.backup.prune_after_backup && !set.keep.is_empty() {
        match crate::backup::prune_set(each.dest, &session.catalog, set, &each.tz, false) {
            Ok(r) => report.prunes.push(r),
            Err(e) => report.failures.push(
                anyhow::Error::new(e)
                    .context(format!("pruning set {:?} after its backup", set.name)),
            ),
        }
    }
    Ok(())
}

/// A set's run status and the line its run record keeps.
fn summary(o: &SetOutcome) -> (RunStatus, String) {
    match o {
        SetOutcome::Created(s) if !s.suspect.is_empty() => (
            RunStatus::Warning,
            format!(
                "{} written but SUSPECT, the last good backup is kept: {}",
                s.id,
                s.suspect.join("; ")
            ),
        ),
        SetOutcome::Created(s) if s.warnings.is_empty() => {
            (RunStatus::Ok, format!("{} written", s.id))
        }
        SetOutcome::Created(s) => (
            RunStatus::Warning,
            format!("{} written with {} warnings", s.id, s.warnings.len()),
        ),
        SetOutcome::Unchanged { newest, .. } => (
            RunStatus::Unchanged,
            crate::catalog::unchanged_summary(newest),
        ),
    }
}
