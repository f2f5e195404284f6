//! Incident restore, in visible steps:
//! - [`plan`]: which backup, checked to be what the catalog says, and where it goes (the
//!   configuration's paths in place, never the archive's);
//! - [`safety`]: every entry checked in the verification read, before anything is written
//!   (the early, readable refusal);
//! - [`stage`] through [`confine`]: extraction beside each target through directory
//!   handles that never follow a symlink (the refusal correctness rests on), every file
//!   checked against the manifest, every database checked;
//! - [`journal`]: quiesce and the swap, journaled from the first side effect;
//! - [`resume`]: finishing or undoing an interrupted restore, and cleaning up.

pub mod carry;
pub mod confine;
pub mod holders;
pub mod journal;
pub mod plan;
pub mod resume;
pub mod rollbacks;
pub mod safety;
pub mod stage;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::backup::Progress;
use crate::backup::archive::{self, ArchiveError};
use crate::catalog::BackupRecord;
use crate::config::Config;
use crate::patterns::PathFilter;
use crate::services::{self, Runner, ServiceError};

pub use journal::{Journal, Phase, Unit, journal_path, pending};
pub use plan::{Plan, RestoreOptions, Target};
pub use resume::{Guarded, Resumed, abandoned, cleanup, guard, resume};

/// Plans the restore of `record` (see [`plan::plan`]), with what an in-place swap carries
/// over counted.
pub fn plan(
    config: &Config,
    record: &BackupRecord,
    base: Option<&BackupRecord>,
    opts: &RestoreOptions,
) -> Result<Plan, RestoreError> {
    let mut p = plan::plan(config, record, base, opts)?;
    if p.in_place
        && let Some(set) = config.set(&p.set)
    {
        p.excluded = carry::count(&p, &set.excludes);
    }
    Ok(p)
}

/// What a process holding a plan's data open means for the swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The swap is refused while it stays open.
    Refused,
    /// Only its working folder is inside the data: not refused.
    FolderOnly,
    /// An entry the set excludes, carried over (its writes stay live): not refused.
    Carried,
}

/// Who holds an in-place plan's data open now, and what each means for the swap.
pub fn open_now(plan: &Plan) -> Result<Vec<(holders::Holder, Hold)>, holders::HoldersError> {
    let paths: Vec<PathBuf> = plan.targets.iter().map(|t| t.live.clone()).collect();
    let carried = if plan.carry_rules.is_empty() {
        None
    } else {
        crate::patterns::Excludes::new(&plan.carry_rules).ok()
    };
    Ok(holders::holders(&paths)?
        .into_iter()
        .map(|x| {
            let hold = if x.is_folder_only() {
                Hold::FolderOnly
            } else if carried
                .as_ref()
                .is_some_and(|ex| carry::is_carried(plan, ex, &x.file))
            {
                Hold::Carried
            } else {
                Hold::Refused
            };
            (x, hold)
        })
        .collect())
}

/// Why a restore failed or was refused. Data is as it was before unless the message
/// says otherwise.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Refused(String),
    #[error("unsafe entry {entry}")]
    Unsafe {
        entry: String,
        #[source]
        source: confine::ConfineError,
    },
    #[error(transparent)]
    Confined(confine::ConfineError),
    #[error("interrupted; nothing was changed")]
    Interrupted,
    #[error("{path}: SQLite check failed: {detail}")]
    Integrity { path: PathBuf, detail: String },
    #[error("invalid --path pattern {pattern:?}")]
    Pattern {
        pattern: String,
        #[source]
        source: crate::patterns::PatternError,
    },
    #[error(
        "the data is restored, but services did not come back: {0}; \
         `steward restore --resume` tries again"
    )]
    ServicesDown(String),
    #[error("{cause}; rolled back, data is as before{services}")]
    RolledBack { cause: String, services: String },
    #[error(
        "{cause}; rolling back also failed: {undo}; part of the data may be new and part \
         old, so {} and the journal is kept: run `steward restore --resume` to finish \
         undoing it",
        if left_stopped.is_empty() {
            "nothing was started".to_string()
        } else {
            format!("{} left stopped", left_stopped.join(", "))
        }
    )]
    RollbackFailed {
        cause: String,
        undo: String,
        left_stopped: Vec<String>,
    },
    #[error(
        "files under the restored paths are open, so the swap was refused (writes into \
         them would land in the copy moved aside and be lost with it): {}; nothing was \
         changed. Stop those processes, or name the service that runs them in the set's \
         quiesce list ([[backup.set]] name = \"{set}\", quiesce = [\"NAME\"] with a \
         [[service]] NAME), then restore again; --ignore-open-files swaps anyway",
        holders::describe(.holders)
    )]
    OpenFiles {
        set: String,
        holders: Vec<holders::Holder>,
    },
    #[error(transparent)]
    Holders(#[from] holders::HoldersError),
    #[error(
        "a restore is running and has this service stopped; it starts the service itself \
         when it is done"
    )]
    Locked(#[source] crate::lock::LockError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a finished restore did.
#[derive(Debug, Serialize)]
pub struct Report {
    pub id: String,
    pub files: u64,
    pub bytes: u64,
    pub stopped: Vec<String>,
    /// Services the set names that were not running before the restore and stay
    /// stopped: (name, how to start it).
    pub left_stopped: Vec<(String, String)>,
    /// Of those, the ones `start_stopped` started too.
    pub also_started: Vec<String>,
    pub rollbacks: Vec<PathBuf>,
    /// Live entries the exclude rules leave out, carried into the restored data.
    pub carried: plan::Carried,
    /// Processes that held files open and were let be (`--ignore-open-files`).
    pub open_ignored: Vec<holders::Holder>,
    pub sqlite_checked: Vec<PathBuf>,
    /// Staging folders of earlier, abandoned restores that were removed first.
    pub removed_abandoned: Vec<PathBuf>,
    /// How long stopping the services took, and starting them again (milliseconds): with
    /// a drill's time to restore, the estimate of a whole incident.
    pub stop_ms: u64,
    pub start_ms: u64,
}

/// The `--path` filter: relative patterns are taken below the restored set paths.
fn path_filter(patterns: &[String], plan: &Plan) -> Result<Option<PathFilter>, RestoreError> {
    let roots: Vec<&str> = plan.targets.iter().map(|t| t.prefix.as_str()).collect();
    PathFilter::new(patterns, &roots).map_err(|e| RestoreError::Pattern {
        pattern: e.pattern.clone(),
        source: e,
    })
}

fn join_errors(errors: &[ServiceError]) -> String {
    errors
        .iter()
        .map(std::string::ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn with_services(e: RestoreError, down: Vec<ServiceError>) -> RestoreError {
    if down.is_empty() {
        return e;
    }
    let extra = format!("; services did not come back: {}", join_errors(&down));
    match e {
        RestoreError::RolledBack { cause, .. } => RestoreError::RolledBack {
            cause,
            services: extra,
        },
        other => RestoreError::Refused(format!("{other}{extra}")),
    }
}

/// Ends a restore that changed no live data: staging removed, services started, journal
/// removed (kept when a service stays down, so every command warns and `--resume` retries).
fn abandon(
    config: &Config,
    journal: &mut Journal,
    quiesced: Option<services::Quiesced<'_>>,
    e: RestoreError,
) -> RestoreError {
    journal.remove_staging();
    // Settled before the services start: their start guards see whole data.
    journal.phase = Phase::Settled;
    journal.settled = Some((
        "rolled-back".into(),
        "the restore stopped before any data was replaced, or its swap was undone; the \
         data is as before"
            .into(),
    ));
    let _ = journal.save(&config.state_dir);
    let down = quiesced
        .map(super::services::Quiesced::resume)
        .unwrap_or_default();
    if down.is_empty() {
        let _ = Journal::remove(&config.state_dir);
    }
    with_services(e, down)
}

/// The units of a restore: the whole targets (or the staged entries with `--path`), each
/// database's side files first so a stale `-wal` never meets a restored database.
fn units(plan: &Plan, staged: &stage::Staged, filtered: bool) -> Vec<Unit> {
    // Entry by entry only into a live folder that is there to receive them; elsewhere
    // (`--to`, or a set path that is gone) the filtered staging moves in whole, as the
    // entries' parent folders exist nowhere else.
    let by_entry = |ti: usize| filtered && plan.in_place && plan.targets[ti].exists;
    let mut units = Vec::new();
    for db in &staged.databases {
        // A database inside a whole folder moves with its folder.
        if by_entry(db.target) || db.rel.is_empty() {
            for side in journal::SQLITE_SIDE_FILES {
                let mut u = Unit::entry(db.target, &db.rel);
                u.side = Some(side.to_string());
                units.push(u);
            }
        }
    }
    for ti in 0..plan.targets.len() {
        if by_entry(ti) {
            units.extend(staged.units.iter().filter(|u| u.target == ti).cloned());
        } else if !filtered || staged.units.iter().any(|u| u.target == ti) {
            // (A target the --path filter matched nothing in has nothing staged to move.)
            units.push(Unit::whole(ti));
        }
    }
    units
}

/// Restores according to `plan`. `interrupted` is set by Ctrl-C / SIGTERM: before the swap
/// it aborts cleanly; once the swap has begun it is finished first.
pub fn restore(
    config: &Config,
    record: &BackupRecord,
    plan: &Plan,
    opts: &RestoreOptions,
    runner: &dyn Runner,
    progress: &dyn Progress,
    interrupted: &AtomicBool,
) -> Result<Report, RestoreError> {
    journal::refuse_if_pending(&config.state_dir)?;
    let filter = path_filter(&opts.paths, plan)?;

    // 1. The whole archive, verified and every entry checked, before anything is written.
    check_archive(record, plan, opts, filter.as_ref(), progress, interrupted)?;
    let removed_abandoned = resume::remove_abandoned(config, Some(plan));

    // 2. The journal, then staging: every staged file and database checked.
    let mut journal = Journal::new(plan);
    journal.save(&config.state_dir)?;
    crate::fault::crash_point("restore-journal-written");
    progress.phase("staging", plan.bytes);
    let staged = match stage::stage(plan, filter.as_ref(), progress, interrupted) {
        Ok(s) => s,
        Err(e) => return Err(abandon(config, &mut journal, None, e)),
    };
    crate::fault::crash_point("restore-staged");
    if interrupted.load(Ordering::SeqCst) {
        return Err(abandon(
            config,
            &mut journal,
            None,
            RestoreError::Interrupted,
        ));
    }
    journal.units = units(plan, &staged, filter.is_some());
    if let Err(e) = journal::record_inodes(plan, &mut journal.units) {
        return Err(abandon(
            config,
            &mut journal,
            None,
            RestoreError::Confined(e),
        ));
    }
    journal.databases.clone_from(&staged.databases);
    journal.phase = Phase::Stopping;
    if let Err(e) = journal.save(&config.state_dir) {
        return Err(abandon(config, &mut journal, None, e));
    }

    // 3. Stop the services that use the data, each recorded in the journal first.
    let stopping = std::time::Instant::now();
    let quiesced = match stop_recorded(config, plan, &journal, runner, progress) {
        Ok(q) => q,
        Err(e) => return Err(abandon(config, &mut journal, None, e)),
    };
    journal.stopped = quiesced.stopped();
    let stop_ms = millis(stopping.elapsed());
    crate::fault::crash_point("restore-services-stopped");
    if interrupted.load(Ordering::SeqCst) {
        return Err(abandon(
            config,
            &mut journal,
            Some(quiesced),
            RestoreError::Interrupted,
        ));
    }

    // 4. Nothing may hold the data open any more (after quiescing, so the set's own
    // services are gone by now); what the backup never had is carried over.
    let (open_ignored, carried) = match open_and_carry(plan, opts, &journal, progress) {
        Ok(r) => r,
        Err(e) => return Err(abandon(config, &mut journal, Some(quiesced), e)),
    };

    // 5. Swap under the journal, then check the databases in their final place.
    progress.phase("swapping", 0);
    journal.phase = Phase::Swapping;
    if let Err(e) = journal.save(&config.state_dir) {
        return Err(abandon(config, &mut journal, Some(quiesced), e));
    }
    let swapped = journal::swap(&journal).and_then(|()| journal::check_databases(&journal));
    if let Err(e) = swapped {
        journal.phase = Phase::RollingBack;
        let saved = journal.save(&config.state_dir);
        let undone = saved.and_then(|()| journal::roll_back(&journal));
        if let Err(r) = undone {
            // Keep the journal: `--resume` finishes undoing it, then starts the services.
            return Err(RestoreError::RollbackFailed {
                cause: crate::error::chain(&e),
                undo: crate::error::chain(&r),
                left_stopped: quiesced.leave_stopped(),
            });
        }
        let err = RestoreError::RolledBack {
            cause: crate::error::chain(&e),
            services: String::new(),
        };
        return Err(abandon(config, &mut journal, Some(quiesced), err));
    }
    journal.phase = Phase::Settled;
    journal.save(&config.state_dir)?;
    crate::fault::crash_point("restore-settled");
    journal.remove_staging();
    let rollbacks = journal.rollbacks();
    rollbacks::remember(
        config,
        &plan.id,
        &journal.rollback_pairs(),
        &plan.carry_rules,
    )?;

    // 6. Start the services again; the journal goes only once they run.
    let starting = std::time::Instant::now();
    let started = restart(config, opts, quiesced, runner, progress)?;
    let start_ms = millis(starting.elapsed());
    Ok(Report {
        id: plan.id.clone(),
        files: staged.files,
        bytes: staged.bytes,
        stopped: started.stopped,
        left_stopped: started.left_stopped,
        also_started: started.also_started,
        rollbacks,
        carried,
        open_ignored,
        sqlite_checked: journal
            .databases
            .iter()
            .map(|d| {
                let t = &plan.targets[d.target];
                if d.rel.is_empty() {
                    t.live.clone()
                } else {
                    t.live
                        .join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&d.rel))
                }
            })
            .collect(),
        removed_abandoned,
        stop_ms,
        start_ms,
    })
}

/// A duration in whole milliseconds.
pub fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Step 1: the whole archive verified and every entry checked against the plan's safety
/// rules; `--path` must match something, the bytes and the identity must be the catalog's.
/// `interrupted` ends the read early.
pub fn check_archive(
    record: &BackupRecord,
    plan: &Plan,
    opts: &RestoreOptions,
    filter: Option<&PathFilter>,
    progress: &dyn Progress,
    interrupted: &AtomicBool,
) -> Result<(), RestoreError> {
    let checked = check_read(record, plan, opts, filter, progress, interrupted);
    if interrupted.load(Ordering::SeqCst) {
        return Err(RestoreError::Interrupted);
    }
    checked
}

fn check_read(
    record: &BackupRecord,
    plan: &Plan,
    opts: &RestoreOptions,
    filter: Option<&PathFilter>,
    progress: &dyn Progress,
    interrupted: &AtomicBool,
) -> Result<(), RestoreError> {
    let prefixes: Vec<Vec<u8>> = plan
        .targets
        .iter()
        .map(|t| t.prefix.as_bytes().to_vec())
        .collect();
    let skip_rules = crate::fault::enabled("restore-skip-safety-pass");
    let mut matched = 0u64;
    // Each archive read in full with every entry checked (a differential's base too).
    let mut check_one = |path: &Path, expect: archive::Expect, id: &str| {
        let mut rules = safety::Rules::new(prefixes.clone(), opts.allow_external_symlinks);
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        progress.phase(&format!("checking {id}"), size);
        archive::verify_inspecting(
            path,
            expect,
            &mut |e| {
                if interrupted.load(Ordering::SeqCst) {
                    return Err("interrupted".into());
                }
                if filter.is_some_and(|f| f.matches(e.path)) {
                    matched += 1;
                }
                if skip_rules { Ok(()) } else { rules.check(e) }
            },
            &mut |n| progress.advance(n),
        )
    };
    let verified = check_one(&record.path, archive::Expect::Sidecar, &record.id)?;
    if let Some(base) = &plan.base {
        let mut digest = [0u8; 32];
        let expect = match hex::decode_to_slice(&base.sha256, &mut digest) {
            Ok(()) => archive::Expect::Digest(digest),
            Err(_) => archive::Expect::Sidecar,
        };
        check_one(&base.archive, expect, &base.id)?;
        let refused = |why: String| {
            RestoreError::Refused(format!(
                "{} is a differential on {}, and {why}; nothing was changed",
                plan.id, base.id
            ))
        };
        let diff = verified
            .diff
            .as_ref()
            .ok_or_else(|| refused("it has no list of deleted entries".into()))?;
        archive::check_against_base(diff, &base.archive, &base.id)?.map_err(refused)?;
    }
    if filter.is_some() && matched == 0 {
        return Err(RestoreError::Refused(format!(
            "--path {} matches nothing in {}; nothing was changed (patterns are absolute \
             paths as backed up, like {}/..., or relative to the set's paths)",
            opts.paths.join(" "),
            plan.id,
            plan.targets
                .first()
                .map(|t| format!("/{}", t.prefix))
                .unwrap_or_default()
        )));
    }
    if hex::encode(verified.sha256) != record.sha256 && !record.sha256.is_empty() {
        return Err(RestoreError::Refused(format!(
            "{}: its bytes differ from the catalog's record",
            record.path.display()
        )));
    }
    if verified.meta.id != plan.id || verified.meta.set != plan.set {
        return Err(RestoreError::Refused(format!(
            "{}: holds the backup {} of set {}, not {} of {}",
            record.path.display(),
            verified.meta.id,
            verified.meta.set,
            plan.id,
            plan.set
        )));
    }
    Ok(())
}

/// Step 3: the plan's services stopped, each recorded in the journal before it stops.
fn stop_recorded<'r>(
    config: &Config,
    plan: &Plan,
    journal: &Journal,
    runner: &'r dyn Runner,
    progress: &dyn Progress,
) -> Result<services::Quiesced<'r>, RestoreError> {
    if plan.stop.is_empty() {
        return Ok(services::Quiesced::none(runner));
    }
    progress.phase("stopping services", 0);
    let state_dir = config.state_dir.clone();
    let mut j = journal.clone();
    services::quiesce_recorded(
        &config.services,
        &plan.stop,
        runner,
        |m| progress.note(m),
        |names| {
            j.stopped = names.to_vec();
            j.save(&state_dir).map_err(|e| crate::error::chain(&e))?;
            crate::fault::crash_point("restore-service-recorded");
            Ok(())
        },
    )
    .map_err(Into::into)
}

/// Step 4: who holds the data open (refused unless `--ignore-open-files`; returned when
/// ignored), then the live entries the set excludes carried into the staged data, now that
/// nothing writes to them.
fn open_and_carry(
    plan: &Plan,
    opts: &RestoreOptions,
    journal: &Journal,
    progress: &dyn Progress,
) -> Result<(Vec<holders::Holder>, plan::Carried), RestoreError> {
    // The rules of what is carried over, compiled once (they were valid when planned).
    let carry_rules = if plan.in_place && !plan.carry_rules.is_empty() {
        Some(
            crate::patterns::Excludes::new(&plan.carry_rules).map_err(|e| {
                RestoreError::Pattern {
                    pattern: e.pattern.clone(),
                    source: e,
                }
            })?,
        )
    } else {
        None
    };
    // Open data's writes would go to the copy moved aside. Entries carried over are not
    // moved aside: writing to them is harmless.
    let mut open_ignored = Vec::new();
    if plan.in_place {
        let paths: Vec<PathBuf> = journal
            .units
            .iter()
            .map(|u| journal::unit_path(plan, u))
            .collect();
        let found = match holders::holders(&paths) {
            Ok(h) => h,
            Err(e) if opts.ignore_open_files => {
                progress.note(&format!("{e}; --ignore-open-files: going on"));
                Vec::new()
            }
            Err(e) => return Err(e.into()),
        };
        let carried_over = |h: &holders::Holder| {
            carry_rules
                .as_ref()
                .is_some_and(|x| carry::is_carried(plan, x, &h.file))
        };
        let found: Vec<holders::Holder> = found
            .into_iter()
            .filter(|h| !h.is_folder_only() && !carried_over(h))
            .collect();
        if !found.is_empty() {
            if !opts.ignore_open_files {
                return Err(RestoreError::OpenFiles {
                    set: plan.set.clone(),
                    holders: found,
                });
            }
            progress.note(&format!(
                "--ignore-open-files: swapping although {} are open",
                holders::describe(&found)
            ));
            open_ignored = found;
        }
    }

    // What the backup never had stays: carried into the staged data, now that nothing
    // writes to it any more.
    let mut carried = plan::Carried::default();
    if let Some(excludes) = &carry_rules {
        match carry::carry(plan, &journal.units, excludes) {
            Ok(c) => carried = c,
            Err(e) => {
                return Err(RestoreError::Refused(format!(
                    "carrying over the live entries the set excludes failed: {}; nothing \
                     was changed (--replace-excluded leaves them in the rollback copy instead)",
                    crate::error::chain(&e)
                )));
            }
        }
    }

    Ok((open_ignored, carried))
}

/// The services after step 6.
struct ServicesAfter {
    stopped: Vec<String>,
    also_started: Vec<String>,
    left_stopped: Vec<(String, String)>,
}

/// Step 6: the stopped services started again, the journal removed once they run; with
/// `--start-stopped`, those that were down before too.
fn restart(
    config: &Config,
    opts: &RestoreOptions,
    quiesced: services::Quiesced<'_>,
    runner: &dyn Runner,
    progress: &dyn Progress,
) -> Result<ServicesAfter, RestoreError> {
    let stopped = quiesced.stopped();
    let not_running = quiesced.not_running();
    progress.phase("starting services", 0);
    let down = quiesced.resume();
    if !down.is_empty() {
        return Err(RestoreError::ServicesDown(join_errors(&down)));
    }
    Journal::remove(&config.state_dir)?;
    // Services that were already down stay down unless asked; either way they are named.
    let mut also_started = Vec::new();
    if opts.start_stopped {
        let c = services::Controller { runner };
        for s in config
            .services
            .iter()
            .filter(|s| not_running.contains(&s.name))
        {
            progress.note(&format!("starting service {} (it was not running)", s.name));
            if c.start(s).is_ok() {
                also_started.push(s.name.clone());
            }
        }
    }
    let left_stopped = config
        .services
        .iter()
        .filter(|s| not_running.contains(&s.name) && !also_started.contains(&s.name))
        .map(|s| (s.name.clone(), services::start_hint(s, runner)))
        .collect();
    Ok(ServicesAfter {
        stopped,
        also_started,
        left_stopped,
    })
}
