//! The catalog's offsite side: which backups have a complete copy on which target (with
//! the object's digest, to check the server against), and the multipart uploads in
//! flight, so that one a crash left behind is aborted rather than billed forever.

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use super::{Catalog, CatalogError, now};

/// A complete offsite copy of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OffsiteCopy {
    pub target: String,
    pub backup_id: String,
    pub set: String,
    /// When the backup was taken.
    pub created_at: i64,
    /// The object's key in the bucket.
    pub key: String,
    /// The object's size.
    pub bytes: u64,
    /// SHA-256 of the object as uploaded (the ciphertext when encrypted).
    pub sha256: String,
    pub encrypted: bool,
    /// The backup was suspect when it was copied (retention never counts it).
    pub suspect: bool,
    pub uploaded_at: i64,
    /// When its digest was last checked against a download.
    pub checked_at: Option<i64>,
    /// Its object lock ends then (targets with `object-lock`).
    pub locked_until: Option<i64>,
}

/// A multipart upload that was started and not yet completed or aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    pub target: String,
    pub key: String,
    pub upload_id: String,
}

const COPY_COLUMNS: &str = "target, backup_id, set_name, created_at, key, bytes, sha256, encrypted, \
     suspect, uploaded_at, checked_at, locked_until";

fn copy_from_row(r: &Row<'_>) -> rusqlite::Result<OffsiteCopy> {
    Ok(OffsiteCopy {
        target: r.get(0)?,
        backup_id: r.get(1)?,
        set: r.get(2)?,
        created_at: r.get(3)?,
        key: r.get(4)?,
        bytes: r.get::<_, i64>(5)? as u64,
        sha256: r.get(6)?,
        encrypted: r.get(7)?,
        suspect: r.get(8)?,
        uploaded_at: r.get(9)?,
        checked_at: r.get(10)?,
        locked_until: r.get(11)?,
    })
}

impl Catalog {
    /// Records a complete copy (and forgets its upload in flight).
    pub fn put_offsite_copy(&self, c: &OffsiteCopy) -> Result<(), CatalogError> {
        self.conn
            .execute(
                &format!(
                    "INSERT OR REPLACE INTO offsite_copies ({COPY_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                ),
                params![
                    c.target,
                    c.backup_id,
                    c.set,
                    c.created_at,
                    c.key,
                    c.bytes as i64,
                    c.sha256,
                    c.encrypted,
                    c.suspect,
                    c.uploaded_at,
                    c.checked_at,
                    c.locked_until
                ],
            )
            .map_err(|e| self.err(e))?;
        self.conn
            .execute(
                "DELETE FROM offsite_uploads WHERE target = ?1 AND key = ?2",
                params![c.target, c.key],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The copy of `backup_id` on `target`, if there is one.
    pub fn offsite_copy(
        &self,
        target: &str,
        backup_id: &str,
    ) -> Result<Option<OffsiteCopy>, CatalogError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {COPY_COLUMNS} FROM offsite_copies WHERE target = ?1 AND backup_id = ?2"
                ),
                params![target, backup_id],
                copy_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The copies of `set` on `target`, newest first.
    pub fn offsite_copies_of(
        &self,
        target: &str,
        set: &str,
    ) -> Result<Vec<OffsiteCopy>, CatalogError> {
        self.rows(
            &format!(
                "SELECT {COPY_COLUMNS} FROM offsite_copies WHERE target = ?1 AND set_name = ?2
                 ORDER BY created_at DESC, backup_id DESC"
            ),
            params![target, set],
            copy_from_row,
        )
    }

    /// Every copy on `target` (all targets when `None`), newest first.
    pub fn offsite_copies(&self, target: Option<&str>) -> Result<Vec<OffsiteCopy>, CatalogError> {
        self.rows(
            &format!(
                "SELECT {COPY_COLUMNS} FROM offsite_copies WHERE (?1 IS NULL OR target = ?1)
                 ORDER BY uploaded_at DESC, backup_id DESC"
            ),
            params![target],
            copy_from_row,
        )
    }

    /// The newest copy of `set` on `target`.
    pub fn newest_offsite_copy(
        &self,
        target: &str,
        set: &str,
    ) -> Result<Option<OffsiteCopy>, CatalogError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {COPY_COLUMNS} FROM offsite_copies WHERE target = ?1 AND set_name = ?2
                     ORDER BY created_at DESC, backup_id DESC LIMIT 1"
                ),
                params![target, set],
                copy_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Marks a copy checked now.
    pub fn offsite_checked(&self, target: &str, backup_id: &str) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE offsite_copies SET checked_at = ?3 WHERE target = ?1 AND backup_id = ?2",
                params![target, backup_id, now()],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Notes a copy's lock, extended to `until`.
    pub fn offsite_locked(
        &self,
        target: &str,
        backup_id: &str,
        until: i64,
    ) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE offsite_copies SET locked_until = ?3 WHERE target = ?1 AND backup_id = ?2",
                params![target, backup_id, until],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Remembers that remote retention deleted the copy of `backup_id` (object digest
    /// `sha256`) now.
    pub fn note_offsite_pruned(
        &self,
        target: &str,
        backup_id: &str,
        sha256: &str,
    ) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO offsite_pruned (target, backup_id, sha256, pruned_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![target, backup_id, sha256, now()],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Every copy remote retention deleted from `target`: (backup ID, object SHA-256, when).
    pub fn offsite_pruned(&self, target: &str) -> Result<Vec<(String, String, i64)>, CatalogError> {
        self.rows(
            "SELECT backup_id, sha256, pruned_at FROM offsite_pruned WHERE target = ?1",
            params![target],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
    }

    /// When remote retention deleted the copy of `backup_id` on `target`, if it did.
    pub fn offsite_pruned_at(
        &self,
        target: &str,
        backup_id: &str,
    ) -> Result<Option<i64>, CatalogError> {
        self.conn
            .query_row(
                "SELECT pruned_at FROM offsite_pruned WHERE target = ?1 AND backup_id = ?2",
                params![target, backup_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Forgets a copy (deleted by retention).
    pub fn delete_offsite_copy(&self, target: &str, backup_id: &str) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "DELETE FROM offsite_copies WHERE target = ?1 AND backup_id = ?2",
                params![target, backup_id],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Notes an upload in flight, before its first part is sent.
    pub fn begin_upload(&self, u: &PendingUpload) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO offsite_uploads (target, key, upload_id, started_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![u.target, u.key, u.upload_id, now()],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Forgets an upload in flight (completed or aborted).
    pub fn end_upload(&self, target: &str, key: &str) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "DELETE FROM offsite_uploads WHERE target = ?1 AND key = ?2",
                params![target, key],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Uploads in flight on `target`: left by a crash when no upload runs.
    pub fn pending_uploads(&self, target: &str) -> Result<Vec<PendingUpload>, CatalogError> {
        self.rows(
            "SELECT target, key, upload_id FROM offsite_uploads WHERE target = ?1",
            params![target],
            |r| {
                Ok(PendingUpload {
                    target: r.get(0)?,
                    key: r.get(1)?,
                    upload_id: r.get(2)?,
                })
            },
        )
    }
}
