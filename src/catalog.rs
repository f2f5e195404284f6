//! The state catalog (`<state>/state.db`): backups and run history. It is a cache of what
//! is on the backup disk; `backups reindex` rebuilds the backup table from the archives.
//!
//! WAL with a busy timeout so that the daemon, timers and manual runs can share it; the
//! schema version lives in `PRAGMA user_version` and migrations run in one transaction.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use crate::job::Job;
use crate::severity::Severity;

/// Catalog errors, naming the database file.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog {path}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "catalog {path} has schema version {found}, newer than this steward knows ({known}); upgrade steward"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("cannot create state directory {path}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Each entry upgrades the schema by one version.
const MIGRATIONS: &[&str] = &[
    // 1: backups and runs.
    "CREATE TABLE backups (
        id TEXT PRIMARY KEY,
        set_name TEXT NOT NULL,
        path TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        status TEXT NOT NULL,
        verified_at INTEGER,
        archive_bytes INTEGER NOT NULL,
        source_bytes INTEGER NOT NULL,
        files INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        host TEXT NOT NULL,
        note TEXT
     );
     CREATE INDEX backups_by_set ON backups (set_name, created_at);
     CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job TEXT NOT NULL,
        target TEXT,
        started_at INTEGER NOT NULL,
        finished_at INTEGER,
        status TEXT NOT NULL,
        summary TEXT
     );
     CREATE INDEX runs_by_job ON runs (job, started_at);",
    // 2: alert states and the mail outbox.
    "CREATE TABLE check_states (
        name TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        since INTEGER NOT NULL,
        history TEXT NOT NULL,
        last_notified INTEGER,
        value TEXT NOT NULL,
        threshold TEXT NOT NULL
     );
     CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at INTEGER NOT NULL,
        subject TEXT NOT NULL,
        body TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt INTEGER NOT NULL,
        last_error TEXT
     );",
    // 3: disk samples for the capacity forecast.
    "CREATE TABLE disk_samples (
        path TEXT NOT NULL,
        at INTEGER NOT NULL,
        used INTEGER NOT NULL,
        free INTEGER NOT NULL
     );
     CREATE INDEX disk_samples_by_path ON disk_samples (path, at);",
    // 4: suspect backups (the change guard's reasons), accepted by a human, pinned.
    "ALTER TABLE backups ADD COLUMN suspect TEXT;
     ALTER TABLE backups ADD COLUMN accepted INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE backups ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;",
    // 5: one spelling per job. A scheduled tick (`steward run JOB`, stored as `job JOB`)
    // becomes a flag; a set's backup (`backup` + set) is `backup:SET`, a period's
    // maintenance (`maintain` + period) is the period; alert states follow.
    "ALTER TABLE runs ADD COLUMN scheduled INTEGER NOT NULL DEFAULT 0;
     UPDATE runs SET scheduled = 1, job = substr(job, 5) WHERE substr(job, 1, 4) = 'job ';
     UPDATE runs SET job = 'backup:' || target, target = NULL
        WHERE scheduled = 0 AND job = 'backup' AND target IS NOT NULL;
     UPDATE runs SET job = target, target = NULL
        WHERE scheduled = 0 AND job = 'maintain' AND target IN ('daily', 'weekly', 'monthly');
     UPDATE OR REPLACE check_states SET name = 'job backup:' || substr(name, 12)
        WHERE substr(name, 1, 11) = 'job backup ';
     UPDATE OR REPLACE check_states SET name = 'job ' || substr(name, 14)
        WHERE substr(name, 1, 13) = 'job maintain ';
     CREATE INDEX runs_by_scheduled_job ON runs (scheduled, job, id);",
];

/// The state of a backup in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackupStatus {
    /// Read back in full and matched its sidecar and manifest.
    Verified,
    /// Known, not (yet) verified: e.g. reindexed without a sidecar.
    Unverified,
    /// A verification failed.
    Failed,
}

impl BackupStatus {
    fn as_str(self) -> &'static str {
        match self {
            BackupStatus::Verified => "verified",
            BackupStatus::Unverified => "unverified",
            BackupStatus::Failed => "failed",
        }
    }
    fn parse(s: &str) -> Self {
        match s {
            "verified" => BackupStatus::Verified,
            "failed" => BackupStatus::Failed,
            _ => BackupStatus::Unverified,
        }
    }
}

/// One backup archive as the catalog knows it.
#[derive(Debug, Clone, Serialize)]
pub struct BackupRecord {
    pub id: String,
    pub set: String,
    pub path: PathBuf,
    /// Unix seconds, UTC.
    pub created_at: i64,
    pub status: BackupStatus,
    pub verified_at: Option<i64>,
    pub archive_bytes: u64,
    pub source_bytes: u64,
    pub files: u64,
    pub sha256: String,
    pub fingerprint: String,
    pub host: String,
    pub note: Option<String>,
    /// Why the change guard found this backup suspect (empty: it did not).
    pub suspect: Vec<String>,
    /// A human looked at the suspect backup and accepted it (`backups accept`).
    pub accepted: bool,
    /// Kept out of retention (`backups pin`).
    pub pinned: bool,
}

impl BackupRecord {
    /// Verified, and not suspect unless accepted: what retention counts and restore
    /// picks by default.
    pub fn is_good(&self) -> bool {
        self.status == BackupStatus::Verified && (self.suspect.is_empty() || self.accepted)
    }

    /// Suspect and not accepted.
    pub fn is_suspect(&self) -> bool {
        !self.suspect.is_empty() && !self.accepted
    }
}

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
}

/// An open catalog.
pub struct Catalog {
    conn: Connection,
    path: PathBuf,
}

fn now() -> i64 {
    crate::clock::now()
}

impl Catalog {
    /// Opens (creating if needed) `<state_dir>/state.db` and brings its schema up to date.
    pub fn open(state_dir: &Path) -> Result<Self, CatalogError> {
        crate::fsutil::create_private_dir(state_dir).map_err(|source| CatalogError::StateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join("state.db");
        let sq = |source| CatalogError::Sqlite {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(sq)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(sq)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sq)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sq)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sq)?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(CatalogError::TooNew {
                path,
                found: version,
                known,
            });
        }
        if version < known {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(sq)?;
            // Re-read inside the write lock: another process may have migrated meanwhile.
            let version: i64 = tx
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .map_err(sq)?;
            for m in &MIGRATIONS[version.clamp(0, known) as usize..] {
                tx.execute_batch(m).map_err(sq)?;
            }
            tx.pragma_update(None, "user_version", known).map_err(sq)?;
            tx.commit().map_err(sq)?;
        }
        Ok(Catalog { conn, path })
    }

    /// The schema version this catalog is at.
    pub fn schema_version(&self) -> Result<i64, CatalogError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    fn err(&self, source: rusqlite::Error) -> CatalogError {
        CatalogError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// All rows of a query, mapped.
    fn rows<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, CatalogError> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let rows = stmt.query_map(params, map).map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Adds or replaces a backup.
    pub fn put_backup(&self, b: &BackupRecord) -> Result<(), CatalogError> {
        put_backup(&self.conn, b).map_err(|e| self.err(e))
    }

    /// Backups, newest first, optionally of one set.
    pub fn backups(&self, set: Option<&str>) -> Result<Vec<BackupRecord>, CatalogError> {
        self.rows(
            "SELECT * FROM backups WHERE (?1 IS NULL OR set_name = ?1)
                 ORDER BY created_at DESC, id DESC",
            params![set],
            backup_from_row,
        )
    }

    /// One backup by id.
    pub fn backup(&self, id: &str) -> Result<Option<BackupRecord>, CatalogError> {
        self.conn
            .query_row("SELECT * FROM backups WHERE id = ?1", [id], backup_from_row)
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The newest verified backup of `set`.
    pub fn newest_verified(&self, set: &str) -> Result<Option<BackupRecord>, CatalogError> {
        self.conn
            .query_row(
                "SELECT * FROM backups WHERE set_name = ?1 AND status = 'verified'
                 ORDER BY created_at DESC, id DESC LIMIT 1",
                [set],
                backup_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The newest good backup of `set` (verified; not suspect, or accepted).
    pub fn newest_good(&self, set: &str) -> Result<Option<BackupRecord>, CatalogError> {
        self.conn
            .query_row(
                "SELECT * FROM backups WHERE set_name = ?1 AND status = 'verified'
                     AND (suspect IS NULL OR accepted = 1)
                 ORDER BY created_at DESC, id DESC LIMIT 1",
                [set],
                backup_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Marks a backup accepted (a human looked at its suspect reasons) and/or pinned.
    pub fn set_marks(&self, id: &str, accepted: bool, pinned: bool) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE backups SET accepted = ?2, pinned = ?3 WHERE id = ?1",
                params![id, accepted, pinned],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Records the result of a verification.
    pub fn set_status(
        &self,
        id: &str,
        status: BackupStatus,
        note: Option<&str>,
    ) -> Result<(), CatalogError> {
        let verified_at = (status == BackupStatus::Verified).then(now);
        self.conn
            .execute(
                "UPDATE backups SET status = ?2, verified_at = COALESCE(?3, verified_at), note = ?4
                 WHERE id = ?1",
                params![id, status.as_str(), verified_at, note],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Removes one backup's row.
    pub fn delete_backup(&self, id: &str) -> Result<(), CatalogError> {
        self.conn
            .execute("DELETE FROM backups WHERE id = ?1", [id])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Replaces every backup row with `records`, in one transaction.
    pub fn replace_backups(&mut self, records: &[BackupRecord]) -> Result<(), CatalogError> {
        let path = self.path.clone();
        let sq = |source| CatalogError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sq)?;
        tx.execute("DELETE FROM backups", []).map_err(sq)?;
        for r in records {
            put_backup(&tx, r).map_err(sq)?;
        }
        tx.commit().map_err(sq)
    }

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

const RUN_COLUMNS: &str = "id, job, target, started_at, finished_at, status, summary, scheduled";

fn run_from_row(r: &Row<'_>) -> rusqlite::Result<RunRecord> {
    let job: String = r.get(1)?;
    Ok(RunRecord {
        id: r.get(0)?,
        job: job.parse().map_err(|e: crate::job::UnknownJob| {
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
    })
}

/// A check's alert state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckState {
    pub name: String,
    pub state: Severity,
    pub since: i64,
    /// Raw results, oldest first, one letter each (O, W, C), at most 32.
    pub history: String,
    pub last_notified: Option<i64>,
    pub value: String,
    pub threshold: String,
}

/// A mail waiting to be sent.
#[derive(Debug, Clone, Serialize)]
pub struct QueuedMail {
    pub id: i64,
    pub created_at: i64,
    pub subject: String,
    pub body: String,
    pub attempts: i64,
    pub next_attempt: i64,
    pub last_error: Option<String>,
}

impl Catalog {
    /// Every stored check state.
    pub fn check_states(&self) -> Result<Vec<CheckState>, CatalogError> {
        self.rows(
            "SELECT name, state, since, history, last_notified, value, threshold FROM check_states ORDER BY name",
            [], |r| {
                Ok(CheckState {
                    name: r.get(0)?,
                    state: Severity::from_letter(
                        r.get::<_, String>(1)?.chars().next().unwrap_or('O'),
                    ),
                    since: r.get(2)?,
                    history: r.get(3)?,
                    last_notified: r.get(4)?,
                    value: r.get(5)?,
                    threshold: r.get(6)?,
                })
            },
        )
    }

    /// Saves check states and queues `mail` in one transaction, so a crash never records
    /// a change without its alert.
    pub fn save_states(
        &mut self,
        states: &[CheckState],
        mail: Option<(&str, &str)>,
        now: i64,
    ) -> Result<(), CatalogError> {
        let path = self.path.clone();
        let sq = |source| CatalogError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sq)?;
        for s in states {
            tx.execute(
                "INSERT OR REPLACE INTO check_states (name, state, since, history, last_notified, value, threshold)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![s.name, s.state.letter().to_string(), s.since, s.history, s.last_notified, s.value, s.threshold],
            )
            .map_err(sq)?;
        }
        if let Some((subject, body)) = mail {
            tx.execute(
                "INSERT INTO outbox (created_at, subject, body, next_attempt) VALUES (?1, ?2, ?3, ?1)",
                params![now, subject, body],
            )
            .map_err(sq)?;
        }
        tx.commit().map_err(sq)
    }

    /// Mails due at `now`, oldest first.
    pub fn due_mail(&self, now: i64) -> Result<Vec<QueuedMail>, CatalogError> {
        self.rows(
            "SELECT id, created_at, subject, body, attempts, next_attempt, last_error FROM outbox
                 WHERE next_attempt <= ?1 ORDER BY id",
            [now],
            |r| {
                Ok(QueuedMail {
                    id: r.get(0)?,
                    created_at: r.get(1)?,
                    subject: r.get(2)?,
                    body: r.get(3)?,
                    attempts: r.get(4)?,
                    next_attempt: r.get(5)?,
                    last_error: r.get(6)?,
                })
            },
        )
    }

    /// How many mails wait.
    pub fn outbox_len(&self) -> Result<i64, CatalogError> {
        self.conn
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// A mail went out.
    pub fn mail_sent(&self, id: i64) -> Result<(), CatalogError> {
        self.conn
            .execute("DELETE FROM outbox WHERE id = ?1", [id])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// A mail failed; try again at `next`.
    pub fn mail_failed(&self, id: i64, next: i64, error: &str) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt = ?2, last_error = ?3 WHERE id = ?1",
                params![id, next, error],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}

impl Catalog {
    /// Records a disk sample (the check cycle does, for the forecast).
    pub fn add_disk_sample(
        &self,
        path: &str,
        at: i64,
        used: u64,
        free: u64,
    ) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT INTO disk_samples (path, at, used, free) VALUES (?1, ?2, ?3, ?4)",
                params![path, at, used as i64, free as i64],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Samples of `path` since `from`, oldest first: (at, used, free).
    pub fn disk_samples(
        &self,
        path: &str,
        from: i64,
    ) -> Result<Vec<(i64, u64, u64)>, CatalogError> {
        self.rows(
            "SELECT at, used, free FROM disk_samples WHERE path = ?1 AND at >= ?2 ORDER BY at",
            params![path, from],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            },
        )
    }

    /// Forgets runs and disk samples older than `before`; returns how many rows went.
    pub fn forget_before(&self, before: i64) -> Result<usize, CatalogError> {
        let runs = self
            .conn
            .execute("DELETE FROM runs WHERE started_at < ?1", [before])
            .map_err(|e| self.err(e))?;
        let samples = self
            .conn
            .execute("DELETE FROM disk_samples WHERE at < ?1", [before])
            .map_err(|e| self.err(e))?;
        Ok(runs + samples)
    }
}

fn put_backup(conn: &Connection, b: &BackupRecord) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO backups (id, set_name, path, created_at, status, verified_at,
            archive_bytes, source_bytes, files, sha256, fingerprint, host, note, suspect,
            accepted, pinned)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        params![
            b.id,
            b.set,
            b.path.to_string_lossy(),
            b.created_at,
            b.status.as_str(),
            b.verified_at,
            b.archive_bytes as i64,
            b.source_bytes as i64,
            b.files as i64,
            b.sha256,
            b.fingerprint,
            b.host,
            b.note,
            (!b.suspect.is_empty()).then(|| serde_json::to_string(&b.suspect).unwrap_or_default()),
            b.accepted,
            b.pinned,
        ],
    )
    .map(|_| ())
}

fn backup_from_row(r: &Row<'_>) -> rusqlite::Result<BackupRecord> {
    Ok(BackupRecord {
        id: r.get("id")?,
        set: r.get("set_name")?,
        path: PathBuf::from(r.get::<_, String>("path")?),
        created_at: r.get("created_at")?,
        status: BackupStatus::parse(&r.get::<_, String>("status")?),
        verified_at: r.get("verified_at")?,
        archive_bytes: r.get::<_, i64>("archive_bytes")? as u64,
        source_bytes: r.get::<_, i64>("source_bytes")? as u64,
        files: r.get::<_, i64>("files")? as u64,
        sha256: r.get("sha256")?,
        fingerprint: r.get("fingerprint")?,
        host: r.get("host")?,
        note: r.get("note")?,
        suspect: r
            .get::<_, Option<String>>("suspect")?
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default(),
        accepted: r.get("accepted")?,
        pinned: r.get("pinned")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_set_version_and_wal() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        assert_eq!(c.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let mode: String = c
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(c);
        // Reopening is a no-op.
        let c = Catalog::open(dir.path()).unwrap();
        assert_eq!(c.schema_version().unwrap(), MIGRATIONS.len() as i64);
    }

    /// Regression: the overdue check and the daemon's catch-up searched only the newest 50
    /// runs, so more than 50 skipped ticks after a real run looked like "never ran".
    #[test]
    fn regression_last_run_is_found_behind_many_skipped_ticks() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        let job = Job::Backup;
        let id = c.start_run(&job, None, Trigger::Scheduled).unwrap();
        c.finish_run(id, RunStatus::Ok, "ok").unwrap();
        // A direct run is no tick.
        c.start_run(&job, None, Trigger::Direct).unwrap();
        for _ in 0..60 {
            let s = c.start_run(&job, None, Trigger::Scheduled).unwrap();
            c.finish_run(s, RunStatus::Skipped, "still running")
                .unwrap();
        }
        assert_eq!(c.last_run(&job).unwrap().unwrap().id, id);
        assert_eq!(c.skipped_runs(&job).unwrap(), 60);
        assert!(c.last_run(&Job::Check).unwrap().is_none());
    }

    /// Migration 5 gives every job its one spelling in catalogs written before it.
    #[test]
    fn old_job_spellings_are_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("state.db")).unwrap();
        for m in &MIGRATIONS[..4] {
            conn.execute_batch(m).unwrap();
        }
        conn.pragma_update(None, "user_version", 4).unwrap();
        conn.execute_batch(
            "INSERT INTO runs (job, target, started_at, status) VALUES
               ('job backup:s', NULL, 1, 'ok'), ('backup', 's', 2, 'ok'),
               ('maintain', 'weekly', 3, 'warning'), ('restore', 'id-1', 4, 'ok');
             INSERT INTO check_states VALUES
               ('job backup s', 'C', 1, 'C', NULL, 'x', 'y'),
               ('job maintain weekly', 'O', 1, 'O', NULL, 'x', 'y');",
        )
        .unwrap();
        drop(conn);
        let c = Catalog::open(dir.path()).unwrap();
        let runs = c.runs(None, 10).unwrap();
        let seen: Vec<_> = runs
            .iter()
            .rev()
            .map(|r| (r.job.to_string(), r.target.clone(), r.trigger))
            .collect();
        assert_eq!(
            seen,
            [
                ("backup:s".to_string(), None, Trigger::Scheduled),
                ("backup:s".to_string(), None, Trigger::Direct),
                ("weekly".to_string(), None, Trigger::Direct),
                (
                    "restore".to_string(),
                    Some("id-1".to_string()),
                    Trigger::Direct
                ),
            ]
        );
        let names: Vec<_> = c
            .check_states()
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["job backup:s", "job weekly"]);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Catalog::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join("state.db")).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let e = Catalog::open(dir.path()).err().unwrap();
        assert!(
            e.to_string().contains("newer than this steward knows"),
            "{e}"
        );
    }
}
