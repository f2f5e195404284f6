//! Applying retention to a set: heal catalog rows whose archive is gone, decide with the
//! policy, and remove what it does not keep, in an order that a crash cannot turn into a
//! catalog row without its file or a file that reindex would bring back as verified.

use std::path::Path;

use jiff::tz::TimeZone;
use serde::Serialize;

use super::archive::sidecar_path;
use super::{BackupError, Dest};
use crate::catalog::{BackupStatus, Catalog};
use crate::config::{BackupConfig, BackupSet};
use crate::retention::{self, Candidate};

/// What happens to one backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Keep,
    /// Would be removed (`--dry-run`).
    Remove,
    Removed,
    /// Its archive was already gone (deleted by hand); the catalog row was dropped.
    Missing,
    /// The policy would remove it, but its path is outside the set's folder: left alone.
    Refused,
}

/// One line of the prune table.
#[derive(Debug, Serialize)]
pub struct PruneRow {
    pub id: String,
    pub created_at: i64,
    pub status: BackupStatus,
    pub action: Action,
    pub reasons: Vec<String>,
    pub bytes: u64,
}

/// A set's prune result.
#[derive(Debug, Serialize)]
pub struct PruneReport {
    pub set: String,
    pub policy: crate::retention::KeepPolicy,
    pub dry_run: bool,
    pub rows: Vec<PruneRow>,
    pub removed: usize,
    pub bytes_freed: u64,
}

pub(super) fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// True when `archive` is `<destination>/<set>/<set>-*.tar.zst`: prune never deletes
/// anything else, whatever the catalog says.
pub(super) fn inside_set_folder(backup: &BackupConfig, set: &str, archive: &Path) -> bool {
    let folder = backup.set_dir(set);
    let name = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    archive.parent() == Some(folder.as_path())
        && name.starts_with(&format!("{set}-"))
        && name.ends_with(".tar.zst")
        && !archive
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
}

/// Prunes one set in time zone `tz`. The caller holds the backup lock.
pub fn prune_set(
    dest: Dest<'_>,
    catalog: &Catalog,
    set: &BackupSet,
    tz: &TimeZone,
    dry_run: bool,
) -> Result<PruneReport, BackupError> {
    let mut rows = Vec::new();
    let mut candidates = Vec::new();
    let mut known = std::collections::HashMap::new();
    let all = catalog.backups(Some(&set.name))?;
    // A differential is a restore point only with its base on the disk and verified.
    let base_ok = |id: &str| {
        all.iter()
            .any(|x| x.id == id && x.status == BackupStatus::Verified && x.path.exists())
    };
    for b in all.iter().cloned() {
        if !b.path.exists() {
            if !dry_run {
                catalog.delete_backup(&b.id)?;
            }
            rows.push(PruneRow {
                id: b.id.clone(),
                created_at: b.created_at,
                status: b.status,
                action: Action::Missing,
                reasons: vec![format!(
                    "archive {} is gone (deleted outside steward)",
                    b.path.display()
                )],
                bytes: 0,
            });
            continue;
        }
        candidates.push(Candidate {
            id: b.id.clone(),
            time: b.created_at,
            verified: b.status == BackupStatus::Verified && b.base.as_deref().is_none_or(base_ok),
            suspect: b.is_suspect(),
            pinned: b.pinned,
            base: b.base.clone(),
        });
        known.insert(b.id.clone(), b);
    }
    let mut removed = 0;
    let mut bytes_freed = 0;
    let mut removed_any = false;
    for v in retention::decide(&candidates, &set.keep, tz) {
        let Some(b) = known.get(&v.id) else { continue };
        let mut reasons = v.reasons;
        let action = if v.keep {
            Action::Keep
        } else if !inside_set_folder(dest.backup, &set.name, &b.path) {
            reasons.push(format!(
                "{} is outside {}; not deleted",
                b.path.display(),
                dest.backup.set_dir(&set.name).display()
            ));
            Action::Refused
        } else if dry_run {
            Action::Remove
        } else {
            // Sidecar first: from here on no reindex can call the archive verified. Then
            // the row, then the file: a crash leaves at worst an orphan that reindex
            // brings back as unverified, which the next prune removes.
            remove_if_present(&sidecar_path(&b.path)).map_err(BackupError::io(&b.path))?;
            crate::fault::crash_point("prune-after-sidecar");
            catalog.delete_backup(&b.id)?;
            crate::fault::crash_point("prune-after-row");
            remove_if_present(&b.path).map_err(BackupError::io(&b.path))?;
            let marks = super::marks::marks_path(&b.path);
            remove_if_present(&marks).map_err(BackupError::io(&marks))?;
            let facts = super::guard::facts_path(dest.state_dir, &b.id);
            remove_if_present(&facts).map_err(BackupError::io(&facts))?;
            let index = super::index::index_path(dest.state_dir, &b.id);
            remove_if_present(&index).map_err(BackupError::io(&index))?;
            removed += 1;
            bytes_freed += b.archive_bytes;
            removed_any = true;
            Action::Removed
        };
        rows.push(PruneRow {
            id: b.id.clone(),
            created_at: b.created_at,
            status: b.status,
            action,
            reasons,
            bytes: b.archive_bytes,
        });
    }
    if removed_any {
        let folder = dest.backup.set_dir(&set.name);
        crate::fsutil::sync_dir(&folder).map_err(BackupError::io(&folder))?;
    }
    rows.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| b.id.cmp(&a.id))
    });
    Ok(PruneReport {
        set: set.name.clone(),
        policy: set.keep.clone(),
        dry_run,
        rows,
        removed,
        bytes_freed,
    })
}
