//! The drill job: for each set, the newest good backup (from the local disk, or the newest
//! trusted copy from an offsite target) restored into a fresh scratch folder and proven
//! there (`crate::drill`), each set's drill recorded with its timings, its run recorded,
//! and its `drill SET` check state fed at once (a failure mails now; the next passing
//! drill sends the recovery). Archives are read under the backup lock (no prune removes
//! one mid-read), released before the checks and the set's `drill-command` run.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};

use super::{Done, Outcome, Session, Ui};
use crate::catalog::{BackupRecord, BackupStatus, DrillRecord, RunStatus};
use crate::config::{Config, OffsiteConfig};
use crate::drill::{DrillError, Scratch, Verdict};
use crate::offsite::{self, RemoteCopy, Store};
use crate::schedule::Job;

/// Where the drilled backups come from.
pub enum From {
    /// The backup destination.
    Local,
    /// An offsite target (`None`: `[drill] offsite`, else the only one), decrypted with
    /// `identity` (`None`: `[drill] identity`).
    Offsite {
        target: Option<String>,
        identity: Option<PathBuf>,
    },
}

/// Options of a drill.
pub struct DrillJob {
    /// The sets (empty: every set).
    pub sets: Vec<String>,
    pub from: From,
}

/// What the drills found.
pub struct DrillReport {
    pub drills: Vec<DrillRecord>,
    /// Sets with nothing to drill, and why.
    pub skipped: Vec<(String, String)>,
    /// Folders of earlier, killed drills that were removed first.
    pub swept: Vec<PathBuf>,
    /// Estimates of a whole incident per set: (set, stop + restore + start in ms), where
    /// a real restore measured the services' part.
    pub incident: Vec<(String, u64)>,
    pub failed: usize,
    /// The job's after hook failed.
    pub hook_failed: bool,
}

impl DrillReport {
    /// Failed when any drill (or the job's hook) did.
    pub fn done(&self) -> Done {
        if self.failed > 0 {
            Done::FAILED
        } else {
            Done::OK
        }
    }
}

/// An offsite drill's source, opened once for every set.
struct Remote<'c> {
    target: &'c OffsiteConfig,
    store: Store,
    copies: Vec<RemoteCopy>,
    identity: Option<PathBuf>,
}

/// Runs the drills.
pub fn run(cfg: &Config, job: &DrillJob, ui: Ui<'_>) -> anyhow::Result<DrillReport> {
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, interrupted.clone())
            .context("installing signal handlers")?;
    }
    let offsite = matches!(job.from, From::Offsite { .. });
    let unit = if offsite {
        Job::DrillOffsite
    } else {
        Job::Drill
    };
    let sets = chosen_sets(cfg, &job.sets)?;
    crate::drill::apart(cfg).map_err(|m| anyhow::anyhow!(m))?;
    let mut session = Session::begin(cfg, unit.clone(), false, ui)?;
    // Under the drill lock: no other drill is using a folder swept here.
    let swept = Scratch::sweep(&cfg.drill.scratch);
    let remote = match &job.from {
        From::Local => None,
        From::Offsite { target, identity } => match open_remote(cfg, &session, target, identity) {
            Ok(r) => Some(r),
            Err(e) => {
                session.alert(&unit, false, &format!("{e:#}"));
                session.end(false);
                return Err(e);
            }
        },
    };
    let progress = (ui.progress)();
    let mut report = DrillReport {
        drills: Vec::new(),
        skipped: Vec::new(),
        swept,
        incident: Vec::new(),
        failed: 0,
        hook_failed: false,
    };
    for set in sets {
        let run = session.start(unit.clone(), Some(&set))?;
        let started_at = crate::clock::now();
        let drilled = match &remote {
            None => local(cfg, &session, &set, progress.as_ref(), &interrupted, ui),
            Some(r) => from_remote(cfg, r, &set, progress.as_ref(), &interrupted),
        };
        let (source, pair, verdict) = match drilled {
            Err(DrillError::Interrupted) => {
                session.finish(run, &outcome(RunStatus::Failed, "interrupted"))?;
                session.end(false);
                bail!("the drill was interrupted; its copy was removed");
            }
            Ok(Drilled::Nothing(why)) => {
                session.finish(run, &outcome(RunStatus::Ok, &why))?;
                // A set asked for by name and not drilled is not a success of the command.
                report.failed += usize::from(!job.sets.is_empty());
                report.skipped.push((set, why));
                continue;
            }
            Ok(Drilled::Done(source, id, v)) => (source, id, v),
        };
        let mut record = recorded(&set, &source, &pair, verdict);
        record.started_at = started_at;
        record.id = session.catalog.add_drill(&record)?;
        let summary = if record.ok {
            crate::checks::proven(&record, crate::clock::now())
        } else {
            format!("drill of {} failed: {}", record.backup_id, record.detail)
        };
        let status = if record.ok {
            RunStatus::Ok
        } else {
            RunStatus::Failed
        };
        if let Some(out) = &record.output {
            session.record_hooks(None, &[format!("drill-command: {}", out.trim_end())]);
        }
        session.finish(run, &outcome(status, &summary))?;
        session.record_hooks(None, &[]);
        let now = crate::clock::now();
        if let Some(r) = crate::checks::drill_reading(cfg, &session.catalog, &set, offsite, now) {
            session.record_readings(std::slice::from_ref(&r));
        }
        if let Ok(Some(t)) = session.catalog.restore_times(&set) {
            report
                .incident
                .push((set.clone(), t.incident_ms(&record.phases)));
        }
        report.failed += usize::from(!record.ok);
        report.drills.push(record);
    }
    drop(progress);
    // The job itself ran (what the drills found is in their `drill SET` checks).
    session.alert(&unit, true, "");
    // `end` says false for failed drills too: only a job that went well can tell its
    // hook failed.
    let ok = report.failed == 0;
    if !session.end(ok) && ok {
        report.hook_failed = true;
        report.failed = 1;
    }
    Ok(report)
}

/// A set's run record: the job's own alert state stays OK (what a drill found is in its
/// `drill SET` check).
fn outcome(status: RunStatus, summary: &str) -> Outcome<'_> {
    Outcome {
        status,
        summary,
        alert_ok: true,
        detail: "",
    }
}

/// The named sets (each must be configured), or every set that drills take.
fn chosen_sets(cfg: &Config, named: &[String]) -> anyhow::Result<Vec<String>> {
    let known: Vec<String> = cfg.backup.sets.iter().map(|s| s.name.clone()).collect();
    if named.is_empty() {
        if known.is_empty() {
            bail!(
                "no backup sets are configured in {}; nothing to drill",
                cfg.origin
            );
        }
        return Ok(cfg
            .backup
            .sets
            .iter()
            .filter(|s| s.drill)
            .map(|s| s.name.clone())
            .collect());
    }
    let mut out: Vec<String> = Vec::new();
    for n in named {
        if !known.contains(n) {
            bail!(
                "no set {n:?} in {} (sets: {})",
                cfg.origin,
                known.join(", ")
            );
        }
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    Ok(out)
}

/// One set's drill: where from, which backup, and the verdict; or why there was nothing
/// to drill.
enum Drilled {
    Nothing(String),
    Done(String, String, Verdict),
}

/// The newest good backup of `set` on the backup disk, drilled.
fn local(
    cfg: &Config,
    session: &Session<'_>,
    set: &str,
    progress: &dyn crate::backup::Progress,
    interrupted: &AtomicBool,
    ui: Ui<'_>,
) -> Result<Drilled, DrillError> {
    let source = "local".to_string();
    // Under the backup lock from the choice to the last read: a prune must not remove the
    // archive, and a backup that was running is done and may be the one to drill.
    let held = crate::lock::acquire_for(&cfg.state_dir, Job::Backup.lock(), "drill", false);
    let mut lock = match held {
        Ok(l) => Some(l),
        Err(crate::lock::LockError::Held { .. }) => {
            (ui.warn)("the drill waits for the backup lock (a backup, prune or restore runs)");
            crate::lock::acquire_for(&cfg.state_dir, Job::Backup.lock(), "drill", true).ok()
        }
        Err(_) => None,
    };
    let Ok(Some(record)) = session.catalog.newest_good(set) else {
        return Ok(Drilled::Nothing(
            "no good backup to drill yet (see `steward backups list`)".into(),
        ));
    };
    let base = match &record.base {
        Some(id) => session.catalog.backup(id).ok().flatten(),
        None => None,
    };
    let need = crate::drill::size_of(&record);
    let scratch = match Scratch::create(&cfg.drill.scratch, need) {
        Ok(s) => s,
        Err(why) => return Ok(Drilled::Done(source, record.id, Verdict::refused(why))),
    };
    let v = crate::drill::drill(
        cfg,
        (&record, base.as_ref()),
        &scratch,
        progress,
        interrupted,
        &mut || drop(lock.take()),
    )?;
    if v.damaged {
        // A damaged archive is the backup's failure too: read back as `verify` does (the
        // base first), which records it, so neither restore --latest nor the next backup's
        // unchanged check trusts it any longer.
        for b in base.iter().chain(std::iter::once(&record)) {
            let _ = crate::backup::verify_backup(&session.catalog, b, progress);
        }
    }
    Ok(Drilled::Done(source, record.id, v))
}

/// The offsite target and identity, and the trusted copies of this host there.
fn open_remote<'c>(
    cfg: &'c Config,
    session: &Session<'_>,
    target: &Option<String>,
    identity: &Option<PathBuf>,
) -> anyhow::Result<Remote<'c>> {
    let name = target.as_deref().or(cfg.drill.offsite.as_deref());
    let t = match name {
        Some(n) => super::offsite::targets(cfg, Some(n))?[0],
        None => match cfg.offsite.as_slice() {
            [one] => one,
            [] => bail!("no [[offsite]] target is configured in {}", cfg.origin),
            _ => bail!(
                "several offsite targets are configured: name one with --offsite NAME or \
                 [drill] offsite"
            ),
        },
    };
    let store = Store::open(t).with_context(|| format!("opening offsite {}", t.name))?;
    let trust = super::offsite::trust(cfg, t, &session.catalog)?;
    let host = crate::fsutil::hostname();
    let (copies, _problems) =
        offsite::list(t, &store, &trust, &offsite::host_prefix(t, Some(&host)))
            .with_context(|| format!("listing offsite {}", t.name))?;
    Ok(Remote {
        target: t,
        store,
        copies,
        identity: identity.clone().or_else(|| cfg.drill.identity.clone()),
    })
}

/// The newest trusted copy of `set` (and its base) fetched into a scratch folder and
/// drilled there.
fn from_remote(
    cfg: &Config,
    r: &Remote<'_>,
    set: &str,
    progress: &dyn crate::backup::Progress,
    interrupted: &AtomicBool,
) -> Result<Drilled, DrillError> {
    let source = format!("offsite {}", r.target.name);
    // The newest; a suspect copy is never the one a disaster restore would take. Two
    // backups in one second share a time: their IDs still sort (the later takes the next
    // free second).
    let Some(copy) = r
        .copies
        .iter()
        .filter(|c| c.set == set && !c.suspect)
        .max_by(|a, b| (a.created_at, &a.backup_id).cmp(&(b.created_at, &b.backup_id)))
    else {
        return Ok(Drilled::Nothing(format!(
            "no trusted copy on offsite {} to drill",
            r.target.name
        )));
    };
    let id = copy.backup_id.clone();
    let base = match &copy.base {
        None => None,
        Some(link) => {
            let found = r
                .copies
                .iter()
                .find(|c| c.backup_id == link.backup_id && c.archive_sha256 == link.sha256);
            let Some(b) = found else {
                let why = format!(
                    "{id} is a differential on {}, which offsite {} does not hold (or not \
                     as the one it was taken against)",
                    link.backup_id, r.target.name
                );
                return Ok(Drilled::Done(source, id, Verdict::refused(why)));
            };
            Some(b)
        }
    };
    let need = copy.bytes + base.map_or(0, |b| b.bytes);
    let scratch = match Scratch::create(&cfg.drill.scratch, need) {
        Ok(s) => s,
        Err(why) => return Ok(Drilled::Done(source, id, Verdict::refused(why))),
    };
    let t = std::time::Instant::now();
    let fetched = (|| -> Result<(BackupRecord, Option<BackupRecord>), String> {
        let mut one = |c: &RemoteCopy| {
            offsite::fetch(
                &r.store,
                &r.target.name,
                c,
                r.identity.as_deref(),
                // In a folder named after the set, as on the backup disk (the archive's
                // identity check wants it so).
                &scratch.archives().join(&c.set),
                progress,
            )
            .map(|path| remote_record(c, path))
            .map_err(|e| crate::error::chain(&e))
        };
        let b = base.map(&mut one).transpose()?;
        let rec = one(copy)?;
        Ok((rec, b))
    })();
    let fetch_ms = crate::restore::millis(t.elapsed());
    let (record, base) = match fetched {
        Ok(x) => x,
        Err(why) => {
            let why = format!("fetching from offsite {} failed: {why}", r.target.name);
            let mut v = Verdict::refused(why);
            v.phases.fetch_ms = fetch_ms;
            return Ok(Drilled::Done(source, id, v));
        }
    };
    if let Err(why) = scratch.room(crate::drill::size_of(&record)) {
        return Ok(Drilled::Done(source, id, Verdict::refused(why)));
    }
    let mut v = crate::drill::drill(
        cfg,
        (&record, base.as_ref()),
        &scratch,
        progress,
        interrupted,
        &mut || {},
    )?;
    v.phases.fetch_ms = fetch_ms;
    Ok(Drilled::Done(source, id, v))
}

/// A fetched copy as a backup record: what its signed description says.
fn remote_record(c: &RemoteCopy, path: PathBuf) -> BackupRecord {
    BackupRecord {
        id: c.backup_id.clone(),
        set: c.set.clone(),
        archive_bytes: std::fs::metadata(&path).map_or(0, |m| m.len()),
        path,
        created_at: c.created_at,
        status: BackupStatus::Verified,
        verified_at: None,
        source_bytes: 0,
        files: 0,
        sha256: c.archive_sha256.clone(),
        fingerprint: String::new(),
        host: c.host.clone(),
        note: None,
        suspect: Vec::new(),
        accepted: false,
        pinned: false,
        base: c.base.as_ref().map(|l| l.backup_id.clone()),
    }
}

/// The catalog's record of one set's drill.
fn recorded(set: &str, source: &str, backup_id: &str, v: Verdict) -> DrillRecord {
    DrillRecord {
        id: 0,
        set: set.to_string(),
        backup_id: backup_id.to_string(),
        source: source.to_string(),
        started_at: crate::clock::now(),
        ok: v.failures.is_empty(),
        bytes: v.bytes,
        files: v.files,
        phases: v.phases,
        detail: v.failures.join("; "),
        findings: v.findings,
        output: v.output,
    }
}
