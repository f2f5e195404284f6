//! The catalog's backups table: what each archive is, its state (verified, suspect,
//! accepted, pinned), and the queries retention, status and restore ask.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use super::{Catalog, CatalogError, now};

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
    /// A differential backup: the id of the full backup it builds on (a restore needs
    /// both). `None` for a full backup.
    pub base: Option<String>,
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

/// A full backup, or a differential whose base is in the catalog and verified: a
/// differential without its base restores nothing.
const BASE_VERIFIED: &str = "(base IS NULL OR EXISTS (SELECT 1 FROM backups AS b
        WHERE b.id = backups.base AND b.status = 'verified'))";

impl Catalog {
    /// Notes that backup `id` of `set` is about to be renamed into place at `path`. Until
    /// [`Catalog::commit_backup`] records it, the archive there belongs to no backup: a
    /// run killed in between leaves this note for the next run to clean up after.
    pub fn begin_publish(&self, id: &str, set: &str, path: &Path) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO publish_intents (id, set_name, path) VALUES (?1, ?2, ?3)",
                params![id, set, path.to_string_lossy()],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Records a published backup and clears its note, in one transaction.
    pub fn commit_backup(&self, b: &BackupRecord) -> Result<(), CatalogError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        put_backup(&tx, b).map_err(|e| self.err(e))?;
        tx.execute("DELETE FROM publish_intents WHERE id = ?1", [&b.id])
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// The notes of `set`'s archives that were renamed into place (or about to be) by a
    /// run that never recorded them: (id, path).
    pub fn publish_intents(&self, set: &str) -> Result<Vec<(String, PathBuf)>, CatalogError> {
        self.rows(
            "SELECT id, path FROM publish_intents WHERE set_name = ?1 ORDER BY id",
            params![set],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    PathBuf::from(r.get::<_, String>(1)?),
                ))
            },
        )
    }

    /// Forgets the note of `id`.
    pub fn drop_publish_intent(&self, id: &str) -> Result<(), CatalogError> {
        self.conn
            .execute("DELETE FROM publish_intents WHERE id = ?1", [id])
            .map(drop)
            .map_err(|e| self.err(e))
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

    /// The suspect backups nobody accepted, newest first.
    pub fn suspect_backups(&self) -> Result<Vec<BackupRecord>, CatalogError> {
        self.rows(
            "SELECT * FROM backups WHERE suspect IS NOT NULL AND accepted = 0
                 ORDER BY created_at DESC, id DESC",
            [],
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
                &format!(
                    "SELECT * FROM backups WHERE set_name = ?1 AND status = 'verified'
                         AND {BASE_VERIFIED}
                     ORDER BY created_at DESC, id DESC LIMIT 1"
                ),
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
                &format!(
                    "SELECT * FROM backups WHERE set_name = ?1 AND status = 'verified'
                         AND (suspect IS NULL OR accepted = 1) AND {BASE_VERIFIED}
                     ORDER BY created_at DESC, id DESC LIMIT 1"
                ),
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
}

fn put_backup(conn: &Connection, b: &BackupRecord) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO backups (id, set_name, path, created_at, status, verified_at,
            archive_bytes, source_bytes, files, sha256, fingerprint, host, note, suspect,
            accepted, pinned, base)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
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
            b.base,
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
        base: r.get("base")?,
    })
}
