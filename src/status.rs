//! What `steward status` shows, gathered in one place: each scheduled job's last and next
//! run, each set's newest (good, suspect) backup and offsite copies, the open problems and
//! the rollback copies restores kept. The terminal table and the JSON are the caller's.

use serde::Serialize;

use crate::catalog::{BackupRecord, Catalog, CatalogError, RunStatus};
use crate::config::Config;
use crate::schedule::Job;

/// Why the status could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Restore(#[from] crate::restore::RestoreError),
    #[error("the clock")]
    Clock(#[from] jiff::Error),
}

/// A scheduled job.
#[derive(Serialize)]
pub struct JobStatus {
    pub job: Job,
    pub schedule: String,
    pub last_run: Option<i64>,
    pub last_result: Option<RunStatus>,
    pub last_seconds: Option<i64>,
    pub next_run: Option<i64>,
    pub skipped_ticks: u64,
}

/// A backup set.
#[derive(Serialize)]
pub struct SetStatus {
    pub set: String,
    pub newest: Option<String>,
    pub created_at: Option<i64>,
    /// The newest good backup (verified, not suspect unless accepted).
    pub newest_good: Option<String>,
    /// The newest backup, when it is suspect, and why.
    pub suspect: Option<(String, Vec<String>)>,
    /// Per offsite target covering the set: the newest copy's backup ID.
    pub offsite: Vec<(String, Option<String>)>,
    /// The newest drills (local, and from offsite), newest first.
    pub drills: Vec<crate::catalog::DrillRecord>,
    /// "proven restorable 3 days ago: 41 s for 1.2 GiB", from the newest passing drill.
    pub proven: Option<String>,
    /// The whole incident's estimate (ms): stopping and starting the services as the last
    /// real restore measured them, plus the newest passing drill's time to restore.
    pub incident_ms: Option<u64>,
}

/// A check or job that is not OK.
#[derive(Serialize)]
pub struct Problem {
    pub check: String,
    pub state: String,
    pub value: String,
    pub since: i64,
}

/// The host's status.
#[derive(Serialize)]
pub struct Status {
    pub jobs: Vec<JobStatus>,
    pub sets: Vec<SetStatus>,
    pub problems: Vec<Problem>,
    /// The data restores replaced, kept aside.
    pub rollbacks: Vec<crate::restore::rollbacks::Kept>,
}

impl Status {
    /// Whether `p` is a backup check's finding older than its set's newest good backup:
    /// stale (the next check clears it).
    pub fn is_stale(&self, p: &Problem) -> bool {
        self.sets.iter().any(|s| {
            p.check == format!("backup {}", s.set)
                && s.newest_good.is_some()
                && s.newest_good == s.newest
                && s.created_at.is_some_and(|t| t >= p.since)
        })
    }
}

/// Per offsite target covering `set`: the newest copy's backup ID.
pub fn newest_copies(
    cfg: &Config,
    catalog: &Catalog,
    set: &str,
) -> Result<Vec<(String, Option<String>)>, CatalogError> {
    cfg.offsite
        .iter()
        .filter(|t| t.covers(set))
        .map(|t| {
            catalog
                .newest_offsite_copy(&t.name, set)
                .map(|c| (t.name.clone(), c.map(|c| c.backup_id)))
        })
        .collect()
}

/// The newest drill of `set` from either source (the newest passing one with `passed`).
pub fn newest_drill(
    catalog: &Catalog,
    set: &str,
    passed: bool,
) -> Option<crate::catalog::DrillRecord> {
    [false, true]
        .into_iter()
        .filter_map(|o| catalog.newest_drill(set, o, passed).ok().flatten())
        .max_by_key(|d| d.started_at)
}

/// Gathers the status from the catalog and the config.
pub fn gather(cfg: &Config) -> Result<Status, StatusError> {
    let catalog = Catalog::open(&cfg.state_dir)?;
    let tz = jiff::tz::TimeZone::system();
    let now = jiff::Timestamp::from_second(crate::clock::now())?;
    let mut jobs = Vec::new();
    for (job, cron) in &cfg.schedule.jobs {
        let last = catalog.last_run(job)?;
        let last = last.as_ref();
        jobs.push(JobStatus {
            job: job.clone(),
            schedule: cron.source.clone(),
            last_run: last.map(|r| r.started_at),
            last_result: last.map(|r| r.status),
            last_seconds: last.and_then(|r| r.finished_at.map(|f| f - r.started_at)),
            next_run: cron.next_after(now, &tz).map(jiff::Timestamp::as_second),
            skipped_ticks: catalog.skipped_runs(job)?,
        });
    }
    let mut sets = Vec::new();
    let now_s = now.as_second();
    for s in &cfg.backup.sets {
        let drills: Vec<_> = [false, true]
            .into_iter()
            .filter_map(|o| catalog.newest_drill(&s.name, o, false).transpose())
            .collect::<Result<_, _>>()?;
        let passed = newest_drill(&catalog, &s.name, true);
        let times = catalog.restore_times(&s.name)?;
        let b = catalog.newest_verified(&s.name)?;
        let suspect = catalog
            .backups(Some(&s.name))?
            .into_iter()
            .next()
            .filter(BackupRecord::is_suspect)
            .map(|n| (n.id, n.suspect));
        sets.push(SetStatus {
            set: s.name.clone(),
            newest: b.as_ref().map(|b| b.id.clone()),
            created_at: b.map(|b| b.created_at),
            newest_good: catalog.newest_good(&s.name)?.map(|g| g.id),
            suspect,
            offsite: newest_copies(cfg, &catalog, &s.name)?,
            proven: passed.as_ref().map(|d| crate::checks::proven(d, now_s)),
            incident_ms: passed
                .as_ref()
                .zip(times)
                .map(|(d, t)| t.incident_ms(&d.phases)),
            drills,
        });
    }
    let problems: Vec<Problem> = catalog
        .check_states()?
        .into_iter()
        .filter(|s| s.state != crate::severity::Severity::Ok)
        .map(|s| Problem {
            check: s.name,
            state: s.state.word().to_string(),
            value: s.value,
            since: s.since,
        })
        .collect();
    Ok(Status {
        jobs,
        sets,
        problems,
        rollbacks: crate::restore::rollbacks::kept(cfg)?,
    })
}
