//! The state catalog (`<state>/state.db`): opening, the schema and its migrations. The
//! tables have a file each: `backups` (a cache of what is on the backup disk; `backups
//! reindex` rebuilds it from the archives), `runs` (run history), `states` (alert states,
//! the mail outbox, disk samples), `drills` (restore drills and restore times).
//!
//! WAL with a busy timeout so that the daemon, timers and manual runs can share it; the
//! schema version lives in `PRAGMA user_version` and migrations run in one transaction.

mod backups;
mod copies;
mod drills;
mod runs;
mod states;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, Row};

pub use backups::{BackupRecord, BackupStatus};
pub use copies::{OffsiteCopy, PendingUpload};
pub use drills::{DrillPhases, DrillRecord, RestoreTimes};
pub use runs::{RunRecord, RunStatus, Trigger, unchanged_summary};
pub use states::{CheckState, Notice, QueuedMail};

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
    // 6: offsite copies, and the multipart uploads in flight (aborted if a crash left one).
    "CREATE TABLE offsite_copies (
        target TEXT NOT NULL,
        backup_id TEXT NOT NULL,
        set_name TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        key TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        encrypted INTEGER NOT NULL,
        suspect INTEGER NOT NULL,
        uploaded_at INTEGER NOT NULL,
        checked_at INTEGER,
        PRIMARY KEY (target, backup_id)
     );
     CREATE TABLE offsite_uploads (
        target TEXT NOT NULL,
        key TEXT NOT NULL,
        upload_id TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        PRIMARY KEY (target, key)
     );",
    // 7: what the hooks around a run printed.
    "ALTER TABLE runs ADD COLUMN hooks TEXT;",
    // 8: the outbox serves several channels (email, ntfy, webhook), each in order.
    "ALTER TABLE outbox ADD COLUMN channel TEXT NOT NULL DEFAULT 'email';
     ALTER TABLE outbox ADD COLUMN level TEXT NOT NULL DEFAULT 'OK';",
    // 9: self-healing services: failed cycles in a row, and the restarts done.
    "CREATE TABLE service_restarts (
        service TEXT PRIMARY KEY,
        fails INTEGER NOT NULL,
        restarts TEXT NOT NULL
     );",
    // 10: offsite copies under object lock, and the copies remote retention deleted (so
    // that a copy that comes back is known as a replay, and a chain gap as pruning).
    "ALTER TABLE offsite_copies ADD COLUMN locked_until INTEGER;
     CREATE TABLE offsite_pruned (
        target TEXT NOT NULL,
        backup_id TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        pruned_at INTEGER NOT NULL,
        PRIMARY KEY (target, backup_id)
     );",
    // 11: differential backups name the full backup they build on.
    "ALTER TABLE backups ADD COLUMN base TEXT;",
    // 12: restore drills, and how long the last real restore of each set kept its
    // services stopping and starting.
    "CREATE TABLE drills (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        set_name TEXT NOT NULL,
        backup_id TEXT NOT NULL,
        source TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        ok INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        files INTEGER NOT NULL,
        fetch_ms INTEGER NOT NULL,
        verify_ms INTEGER NOT NULL,
        write_ms INTEGER NOT NULL,
        check_ms INTEGER NOT NULL,
        command_ms INTEGER NOT NULL,
        detail TEXT NOT NULL,
        findings TEXT NOT NULL,
        output TEXT
     );
     CREATE INDEX drills_by_set ON drills (set_name, started_at);
     CREATE TABLE restore_times (
        set_name TEXT PRIMARY KEY,
        at INTEGER NOT NULL,
        backup_id TEXT NOT NULL,
        stop_ms INTEGER NOT NULL,
        start_ms INTEGER NOT NULL
     );",
    // 13: archives about to be renamed into place, so a run killed between the rename
    // and the backup's row leaves a note the next run finds, not an unlisted archive.
    "CREATE TABLE publish_intents (
        id TEXT PRIMARY KEY,
        set_name TEXT NOT NULL,
        path TEXT NOT NULL
     );",
    // 14: the fleet as the last check read it from the bucket, for the status page.
    "CREATE TABLE fleet_peers (
        host TEXT PRIMARY KEY,
        view TEXT NOT NULL
     );",
    // 15: a job's newest run without sorting all its runs (a year of checks is 100,000).
    "CREATE INDEX runs_by_job_id ON runs (job, id);",
];

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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Job;

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
