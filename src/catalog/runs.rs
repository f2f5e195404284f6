//! The catalog's run history: one row per run of a job (a scheduled tick, or the work
//! itself), what catch-up, the overdue check, status, metrics and the report read.

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use super::{Catalog, CatalogError, now};
use crate::schedule::Job;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    Running,
    /// A scheduled tick found the job still running.
    Skipped,
    Ok,
    Unchanged,
    Warning,
    Failed,
}

impl RunStatus {
    fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Skipped => "skipped",
            RunStatus::Ok => "ok",
            RunStatus::Unchanged => "unchanged",
            RunStatus::Warning => "warning",
            RunStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "running" => RunStatus::Running,
            "skipped" => RunStatus::Skipped,
            "ok" => RunStatus::Ok,
            "unchanged" => RunStatus::Unchanged,
            "warning" => RunStatus::Warning,
            _ => RunStatus::Failed,
        }
    }

    /// The word stored and shown (`ok`, `failed`, ...).
    pub fn word(self) -> &'static str {
        self.as_str()
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// A command: `steward backup`, or the work inside a scheduled run.
    Direct,
    /// A scheduled tick (`steward run JOB`, from a timer, launchd or the daemon): what
    /// catch-up, the overdue check, status and metrics follow.
    Scheduled,
}

/// One recorded run of a job.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub job: Job,
    pub trigger: Trigger,
    pub target: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub status: RunStatus,
    pub summary: Option<String>,
    /// What its hooks printed, one `WHEN hook: ...` entry per hook.
    pub hooks: Option<String>,
}

impl Catalog {
    /// Starts a run of `job` (`target`: what it works on, a restore's backup ID) and
    /// returns its id.
    pub fn start_run(
        &self,
        job: &Job,
        target: Option<&str>,
        trigger: Trigger,
    ) -> Result<i64, CatalogError> {
        self.conn
            .execute(
                "INSERT INTO runs (job, target, started_at, status, scheduled)
                 VALUES (?1, ?2, ?3, 'running', ?4)",
                params![
                    job.to_string(),
                    target,
                    now(),
                    trigger == Trigger::Scheduled
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Adds what a hook printed to a run's record.
    pub fn add_run_hooks(&self, id: i64, text: &str) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE runs SET hooks = CASE WHEN hooks IS NULL THEN ?2 ELSE hooks || char(10) || ?2 END
                 WHERE id = ?1",
                params![id, text],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Ends a run.
    pub fn finish_run(
        &self,
        id: i64,
        status: RunStatus,
        summary: &str,
    ) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE runs SET finished_at = ?2, status = ?3, summary = ?4 WHERE id = ?1",
                params![id, now(), status.as_str(), summary],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Recent runs (all, or the scheduled ticks of one job), newest first.
    pub fn runs(&self, ticks_of: Option<&Job>, limit: u32) -> Result<Vec<RunRecord>, CatalogError> {
        self.rows(
            &format!(
                "SELECT {RUN_COLUMNS} FROM runs
                 WHERE (?1 IS NULL OR (scheduled = 1 AND job = ?1)) ORDER BY id DESC LIMIT ?2"
            ),
            params![ticks_of.map(Job::to_string), limit],
            run_from_row,
        )
    }

    /// The newest scheduled run of `job` that was not a skipped tick, however many ticks
    /// followed it.
    pub fn last_run(&self, job: &Job) -> Result<Option<RunRecord>, CatalogError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs
                     WHERE scheduled = 1 AND job = ?1 AND status != 'skipped'
                     ORDER BY id DESC LIMIT 1"
                ),
                [job.to_string()],
                run_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The newest run of `job` that ran, scheduled or by hand (what freshness counts: a
    /// manual `maintain daily` is as good as the timer's).
    pub fn last_run_any(&self, job: &Job) -> Result<Option<RunRecord>, CatalogError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs
                     WHERE job = ?1 AND status NOT IN ('skipped', 'running')
                     ORDER BY id DESC LIMIT 1"
                ),
                [job.to_string()],
                run_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// When steward first recorded anything here (its first run of a job, or its first
    /// check reading): where a job that never ran starts to count as late.
    pub fn first_run_at(&self) -> Result<Option<i64>, CatalogError> {
        self.conn
            .query_row(
                "SELECT min(t) FROM (SELECT min(started_at) AS t FROM runs
                 UNION ALL SELECT min(since) FROM check_states)",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map_err(|e| self.err(e))
    }

    /// When a backup run of `set` last found its data unchanged since backup `id` (so the
    /// archive was as good as new then): what backup freshness counts besides `id`'s own
    /// creation.
    pub fn last_unchanged(&self, set: &str, id: &str) -> Result<Option<i64>, CatalogError> {
        self.conn
            .query_row(
                "SELECT max(started_at) FROM runs
                 WHERE job = ?1 AND status = 'unchanged' AND summary = ?2",
                params![
                    Job::BackupSet(set.to_string()).to_string(),
                    unchanged_summary(id)
                ],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map_err(|e| self.err(e))
    }

    /// How many ticks of `job` were skipped because it was still running.
    pub fn skipped_runs(&self, job: &Job) -> Result<u64, CatalogError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM runs WHERE scheduled = 1 AND job = ?1 AND status = 'skipped'",
                [job.to_string()],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }
}

/// The summary of a backup run that found its set unchanged since backup `id`.
pub fn unchanged_summary(id: &str) -> String {
    format!("unchanged since {id}")
}

const RUN_COLUMNS: &str =
    "id, job, target, started_at, finished_at, status, summary, scheduled, hooks";

fn run_from_row(r: &Row<'_>) -> rusqlite::Result<RunRecord> {
    let job: String = r.get(1)?;
    Ok(RunRecord {
        id: r.get(0)?,
        job: job.parse().map_err(|e: crate::schedule::UnknownJob| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, e.into())
        })?,
        target: r.get(2)?,
        started_at: r.get(3)?,
        finished_at: r.get(4)?,
        status: RunStatus::parse(&r.get::<_, String>(5)?),
        summary: r.get(6)?,
        trigger: if r.get(7)? {
            Trigger::Scheduled
        } else {
            Trigger::Direct
        },
        hooks: r.get(8)?,
    })
}
