//! Offsite copies on S3-compatible storage. A verified local archive is streamed through
//! age (encrypted to the target's recipients: this host can write copies but not read
//! them) into a multipart upload under `<prefix>/<host>/<set>/`, its bytes checked against
//! the digest the archive was verified with while they are read; then the object's size is
//! checked against the server's, a small JSON description is written beside it, and the
//! catalog records the copy with the object's SHA-256. A copy without that description
//! is incomplete and never listed. Checking re-downloads and compares the object digest
//! (no identity needed); fetching decrypts a copy back into a local archive, which the
//! ordinary verify and restore then treat like any other.
//!
//! `upload.rs` sends, `fetch.rs` reads back, `s3.rs` speaks S3; this file owns the keys,
//! the descriptions, listing, remote retention and rebuilding the catalog's copies.

mod fetch;
mod s3;
mod upload;

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::catalog::{BackupRecord, Catalog, CatalogError, OffsiteCopy};
use crate::config::OffsiteConfig;
pub use fetch::{check, check_full, fetch};
pub use s3::{S3Error, Store};
pub use upload::{Pushed, abort_stale, push};

/// What went wrong with an offsite copy.
#[derive(Debug, thiserror::Error)]
pub enum OffsiteError {
    #[error(transparent)]
    S3(#[from] S3Error),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Refused(String),
    #[error("offsite {target}: {key}: {message}")]
    Damaged {
        target: String,
        key: String,
        message: String,
    },
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> OffsiteError + '_ {
    move |source| OffsiteError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The description kept beside each object (`<key>.json`): what a new machine needs to
/// list, fetch and check a copy with nothing but the bucket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemoteCopy {
    pub backup_id: String,
    pub set: String,
    pub host: String,
    pub created_at: i64,
    /// The object's key.
    pub key: String,
    /// The local archive's file name.
    pub archive: String,
    /// SHA-256 of the archive (the plaintext).
    pub archive_sha256: String,
    /// The object's size and SHA-256 (the ciphertext when encrypted).
    pub bytes: u64,
    pub sha256: String,
    pub encrypted: bool,
    /// The change guard found the backup suspect when it was copied.
    #[serde(default)]
    pub suspect: bool,
    /// age recipients it is encrypted to.
    pub recipients: Vec<String>,
    pub uploaded_at: i64,
}

/// A name safe in an object key: the host name as given, other bytes as `_`.
fn key_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Where a backup's copy lives on `t`.
pub fn object_key(t: &OffsiteConfig, b: &BackupRecord) -> String {
    let file = b.path.file_name().map_or_else(
        || format!("{}.tar.zst", b.id),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut key = String::new();
    if !t.prefix.is_empty() {
        key.push_str(&t.prefix);
        key.push('/');
    }
    key.push_str(&format!(
        "{}/{}/{}",
        key_part(&b.host),
        key_part(&b.set),
        key_part(&file)
    ));
    if t.encrypt {
        key.push_str(".age");
    }
    key
}

/// The prefix that holds `host`'s copies (every host's when `None`).
pub fn host_prefix(t: &OffsiteConfig, host: Option<&str>) -> String {
    let base = if t.prefix.is_empty() {
        String::new()
    } else {
        format!("{}/", t.prefix)
    };
    match host {
        Some(h) => format!("{base}{}/", key_part(h)),
        None => base,
    }
}

/// Rebuilds the catalog's copies on `t` from this host's descriptions in the bucket;
/// returns (found, dropped).
pub fn reindex(
    t: &OffsiteConfig,
    store: &Store,
    catalog: &Catalog,
    host: &str,
) -> Result<(usize, usize), OffsiteError> {
    let found = list(store, &host_prefix(t, Some(host)))?;
    for c in &found {
        catalog.put_offsite_copy(&OffsiteCopy {
            target: t.name.clone(),
            backup_id: c.backup_id.clone(),
            set: c.set.clone(),
            created_at: c.created_at,
            key: c.key.clone(),
            bytes: c.bytes,
            sha256: c.sha256.clone(),
            encrypted: c.encrypted,
            suspect: c.suspect,
            uploaded_at: c.uploaded_at,
            checked_at: None,
        })?;
    }
    let mut dropped = 0;
    for c in catalog.offsite_copies(Some(&t.name))? {
        if !found.iter().any(|f| f.backup_id == c.backup_id) {
            catalog.delete_offsite_copy(&t.name, &c.backup_id)?;
            dropped += 1;
        }
    }
    Ok((found.len(), dropped))
}

/// One copy's retention verdict.
#[derive(Debug, Clone, Serialize)]
pub struct PruneRow {
    pub target: String,
    pub backup_id: String,
    pub key: String,
    pub created_at: i64,
    pub keep: bool,
    /// Deleted (false on a dry run, or when kept).
    pub deleted: bool,
    pub reasons: Vec<String>,
}

/// Applies `policy` to the copies of `set` on `t` (the same rules as local retention:
/// the newest good copy is always kept, suspect copies never count, pinned backups stay)
/// and deletes what it does not keep: the description first (the copy is no longer
/// listed), then the object, then the catalog row. Only keys steward writes, under the
/// target's prefix, are ever deleted.
pub fn prune(
    t: &OffsiteConfig,
    store: &Store,
    catalog: &Catalog,
    set: &str,
    policy: &crate::retention::KeepPolicy,
    tz: &jiff::tz::TimeZone,
    dry_run: bool,
) -> Result<Vec<PruneRow>, OffsiteError> {
    let copies = catalog.offsite_copies_of(&t.name, set)?;
    let mut candidates = Vec::new();
    for c in &copies {
        let local = catalog.backup(&c.backup_id)?;
        candidates.push(crate::retention::Candidate {
            id: c.backup_id.clone(),
            time: c.created_at,
            verified: true,
            suspect: local.as_ref().map_or(c.suspect, BackupRecord::is_suspect),
            pinned: local.as_ref().is_some_and(|b| b.pinned),
        });
    }
    let mut rows = Vec::new();
    for v in crate::retention::decide(&candidates, policy, tz) {
        let Some(c) = copies.iter().find(|c| c.backup_id == v.id) else {
            continue;
        };
        let mut reasons = v.reasons;
        let ours = c.key.starts_with(&host_prefix(t, None))
            && (c.key.ends_with(".tar.zst") || c.key.ends_with(".tar.zst.age"));
        let mut deleted = false;
        if !v.keep && !ours {
            reasons.push(format!(
                "{} is not a key steward writes; not deleted",
                c.key
            ));
        } else if !v.keep && !dry_run {
            store.delete(&format!("{}.json", c.key))?;
            store.delete(&c.key)?;
            catalog.delete_offsite_copy(&t.name, &c.backup_id)?;
            deleted = true;
        }
        rows.push(PruneRow {
            target: t.name.clone(),
            backup_id: c.backup_id.clone(),
            key: c.key.clone(),
            created_at: c.created_at,
            keep: v.keep,
            deleted,
            reasons,
        });
    }
    Ok(rows)
}

/// The complete copies under `prefix` (those with their description).
pub fn list(store: &Store, prefix: &str) -> Result<Vec<RemoteCopy>, OffsiteError> {
    described(store, prefix, |_| true)
}

/// The complete copy of backup `id` under `prefix`, reading only the descriptions whose
/// key names its archive (`<id>.tar.zst...`), not every description in the bucket.
pub fn find(store: &Store, prefix: &str, id: &str) -> Result<Option<RemoteCopy>, OffsiteError> {
    let archive = format!("/{}.tar.zst", key_part(id));
    let copies = described(store, prefix, |key| key.contains(&archive))?;
    Ok(copies.into_iter().find(|c| c.backup_id == id))
}

/// The copies under `prefix` whose description key passes `read`.
fn described(
    store: &Store,
    prefix: &str,
    read: impl Fn(&str) -> bool,
) -> Result<Vec<RemoteCopy>, OffsiteError> {
    let objects = store.list(prefix)?;
    let mut out = Vec::new();
    // Descriptions are steward's own `<key>.json`, always lower case.
    #[allow(clippy::case_sensitive_file_extension_comparisons)]
    for o in objects
        .iter()
        .filter(|o| o.key.ends_with(".json") && read(&o.key))
    {
        let data = store.get_small(&o.key)?;
        let Ok(c) = serde_json::from_slice::<RemoteCopy>(&data) else {
            continue;
        };
        // The description must sit beside its own object, which must be complete.
        let beside = objects.iter().any(|x| x.key == c.key && x.size == c.bytes);
        if format!("{}.json", c.key) == o.key && beside {
            out.push(c);
        }
    }
    out.sort_by(|a, b| (&a.host, &a.set, b.created_at).cmp(&(&b.host, &b.set, a.created_at)));
    Ok(out)
}
