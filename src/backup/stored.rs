//! Checking archives that exist (`verify`) and rebuilding the catalog from the archives'
//! own `backup.json` (`reindex`).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::archive;
use super::{BackupError, Dest, Progress};
use crate::catalog::{BackupRecord, BackupStatus, Catalog};

/// One archive's verification result.
#[derive(Debug, Serialize)]
pub struct VerifyOutcome {
    pub id: String,
    pub path: PathBuf,
    pub ok: bool,
    pub files: u64,
    pub bytes: u64,
    /// Why it failed, naming the archive and the file.
    pub error: Option<String>,
}

/// Reads `record`'s archive in full, checks it against sidecar and manifest, and records
/// the result in the catalog.
pub fn verify_backup(
    catalog: &Catalog,
    record: &BackupRecord,
    progress: &dyn Progress,
) -> Result<VerifyOutcome, BackupError> {
    let size = std::fs::metadata(&record.path).map_or(0, |m| m.len());
    progress.phase(&format!("verifying {}", record.id), size);
    let result = archive::verify(&record.path, archive::Expect::Sidecar, &mut |n| {
        progress.advance(n);
    })
    .and_then(|v| {
        // The catalog also knows the hash: a sidecar replaced along with the archive still
        // fails.
        archive::check_identity(&record.path, &v.meta)?;
        if v.meta.id != record.id || v.meta.set != record.set {
            return Err(archive::ArchiveError::Corrupt {
                path: record.path.clone(),
                message: format!(
                    "holds the backup {:?} of set {:?}, not {:?} of {:?}",
                    v.meta.id, v.meta.set, record.id, record.set
                ),
            });
        }
        if hex::encode(v.sha256) == record.sha256 {
            let base = match &record.base {
                Some(b) => catalog
                    .backup(b)
                    .map_err(|e| archive::ArchiveError::corrupt(&record.path, e.to_string()))?,
                None => None,
            };
            against_base(&record.path, &v, base.as_ref())?;
            Ok(v)
        } else {
            Err(archive::ArchiveError::Corrupt {
                path: record.path.clone(),
                message: format!(
                    "sha256 {} differs from the catalog's {}",
                    hex::encode(v.sha256),
                    record.sha256
                ),
            })
        }
    });
    let outcome = match result {
        Ok(v) => {
            catalog.set_status(&record.id, BackupStatus::Verified, None)?;
            VerifyOutcome {
                id: record.id.clone(),
                path: record.path.clone(),
                ok: true,
                files: v.files,
                bytes: v.size,
                error: None,
            }
        }
        Err(e) => {
            let message = crate::error::chain(&e);
            catalog.set_status(&record.id, BackupStatus::Failed, Some(&message))?;
            VerifyOutcome {
                id: record.id.clone(),
                path: record.path.clone(),
                ok: false,
                files: 0,
                bytes: 0,
                error: Some(message),
            }
        }
    };
    Ok(outcome)
}

/// A differential against its base (a full backup: nothing to do): the base must be the
/// very archive it was taken against, not failed, and hold exactly the files the
/// differential's manifest leaves to it. `base`: the catalog's record of it, if any.
pub fn against_base(
    path: &Path,
    v: &archive::Verified,
    base: Option<&BackupRecord>,
) -> Result<(), archive::ArchiveError> {
    let bad = |m: String| archive::ArchiveError::corrupt(path, m);
    let (Some(want), Some(diff)) = (&v.meta.base, &v.diff) else {
        return match (&v.meta.base, &v.diff) {
            (None, None) => Ok(()),
            _ => Err(bad(
                "backup.json and the archive disagree on its base".into()
            )),
        };
    };
    let base = base.ok_or_else(|| {
        bad(format!(
            "a differential that needs its base {}, which is gone (not in the catalog; \
             `steward backups reindex` finds it if it is still on the disk)",
            want.id
        ))
    })?;
    if base.base.is_some() {
        return Err(bad(format!(
            "its base {} is itself a differential",
            base.id
        )));
    }
    if base.sha256 != want.sha256 {
        return Err(bad(format!(
            "its base {} is another archive than the one it was taken against (sha256 {} \
             where {} was expected)",
            base.id, base.sha256, want.sha256
        )));
    }
    if base.status == BackupStatus::Failed {
        return Err(bad(format!(
            "its base {} failed verification{}",
            base.id,
            base.note
                .as_deref()
                .map(|n| format!(": {n}"))
                .unwrap_or_default()
        )));
    }
    archive::check_against_base(diff, &base.path, &base.id)?
        .map_err(|m| bad(format!("against its base {}: {m}", base.id)))
}

/// What `reindex` found.
#[derive(Debug, Default, Serialize)]
pub struct ReindexReport {
    pub archives: usize,
    pub verified: usize,
    pub added: Vec<String>,
    pub dropped: Vec<String>,
    pub problems: Vec<String>,
}

fn sha256_file(path: &Path, progress: &dyn Progress) -> std::io::Result<[u8; 32]> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finalize().into());
        }
        h.update(&buf[..n]);
        progress.advance(n as u64);
    }
}

/// Rebuilds the catalog's backup table from the archives under the destination. An archive
/// counts as verified when its bytes match its sidecar (already-known archives with the
/// same hash keep their state without being re-read).
pub fn reindex(
    dest: Dest<'_>,
    catalog: &mut Catalog,
    progress: &dyn Progress,
) -> Result<ReindexReport, BackupError> {
    let dest = &dest.backup.destination;
    let known: std::collections::HashMap<String, BackupRecord> = catalog
        .backups(None)?
        .into_iter()
        .map(|b| (b.id.clone(), b))
        .collect();
    let mut report = ReindexReport::default();
    let mut records: Vec<BackupRecord> = Vec::new();
    let mut bases: HashMap<String, archive::BaseRef> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let sets = match std::fs::read_dir(dest) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            catalog.replace_backups(&[])?;
            report.dropped = known.keys().cloned().collect();
            return Ok(report);
        }
        Err(e) => return Err(BackupError::io(dest)(e)),
    };
    for set_dir in sets {
        let set_dir = set_dir.map_err(BackupError::io(dest))?.path();
        if !set_dir.is_dir() {
            continue;
        }
        let entries = std::fs::read_dir(&set_dir).map_err(BackupError::io(&set_dir))?;
        let mut archives: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                let n = p
                    .file_name()
                    .map(std::os::unix::ffi::OsStrExt::as_bytes)
                    .unwrap_or_default();
                n.ends_with(b".tar.zst") && !n.starts_with(b".")
            })
            .collect();
        archives.sort();
        for path in archives {
            report.archives += 1;
            let meta = match archive::read_meta(&path) {
                Ok(m) => m,
                Err(e) => {
                    report.problems.push(crate::error::chain(&e));
                    continue;
                }
            };
            // A file passing for another backup (renamed, or a second copy of an ID) is not
            // imported: the catalog must never map an ID to the wrong bytes.
            if let Err(e) = archive::check_identity(&path, &meta) {
                report
                    .problems
                    .push(format!("{}; not imported", crate::error::chain(&e)));
                continue;
            }
            if !seen.insert(meta.id.clone()) {
                report.problems.push(format!(
                    "{}: a second archive with the ID {}; not imported",
                    path.display(),
                    meta.id
                ));
                continue;
            }
            let size = std::fs::metadata(&path).map_or(0, |m| m.len());
            let (status, sha, note) =
                status_of(&path, &meta.id, known.get(&meta.id), &mut report, progress)?;
            if status == BackupStatus::Verified {
                report.verified += 1;
            }
            if !known.contains_key(&meta.id) {
                report.added.push(meta.id.clone());
            }
            // What a human decided: the catalog's own record, else the marker beside the
            // archive (bound to its ID and digest).
            let (accepted, pinned) = match known.get(&meta.id) {
                Some(k) if k.sha256 == sha => (k.accepted, k.pinned),
                _ => match super::marks::read(&path, &meta.id, &sha) {
                    Ok(Some(m)) => (m.accepted, m.pinned),
                    Ok(None) => (false, false),
                    Err(why) => {
                        report.problems.push(why);
                        (false, false)
                    }
                },
            };
            records.push(BackupRecord {
                id: meta.id.clone(),
                set: meta.set.clone(),
                path: path.clone(),
                created_at: meta.created_unix,
                status,
                verified_at: known.get(&meta.id).and_then(|k| k.verified_at),
                archive_bytes: size,
                source_bytes: meta.bytes,
                files: meta.files,
                sha256: sha,
                fingerprint: meta.fingerprint.clone(),
                host: meta.host.clone(),
                note,
                suspect: meta.suspect(),
                accepted,
                pinned,
                base: meta.base.as_ref().map(|b| b.id.clone()),
            });
            if let Some(b) = meta.base {
                bases.insert(meta.id.clone(), b);
            }
        }
    }
    check_bases(&mut records, &bases, &mut report);
    let found: std::collections::HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    report.dropped = known
        .keys()
        .filter(|k| !found.contains(k.as_str()))
        .cloned()
        .collect();
    report.dropped.sort();
    catalog.replace_backups(&records)?;
    Ok(report)
}

/// A differential restores only with the very base it was taken against: one whose base
/// is not on the disk, or is another archive, is failed and reported.
fn check_bases(
    records: &mut [BackupRecord],
    bases: &HashMap<String, archive::BaseRef>,
    report: &mut ReindexReport,
) {
    let mut replaced: Vec<(String, String)> = Vec::new();
    let digests: HashMap<String, String> = records
        .iter()
        .map(|r| (r.id.clone(), r.sha256.clone()))
        .collect();
    for r in records.iter_mut() {
        let Some(b) = bases.get(&r.id) else { continue };
        let why = match digests.get(&b.id) {
            None => format!(
                "{}: a differential whose base {} is not on the disk; it cannot be restored",
                r.path.display(),
                b.id
            ),
            Some(d) if *d != b.sha256 => format!(
                "{}: a differential whose base {} is another archive than the one it was \
                 taken against; it cannot be restored",
                r.path.display(),
                b.id
            ),
            Some(_) => continue,
        };
        report.problems.push(why.clone());
        r.status = BackupStatus::Failed;
        r.note = Some(why);
        if digests.contains_key(&b.id) {
            replaced.push((b.id.clone(), r.id.clone()));
        }
    }
    // Either the base or the differential was replaced, and nothing here says which (the
    // catalog is gone): neither is restored without a human looking.
    for (base, diff) in replaced {
        if let Some(r) = records.iter_mut().find(|r| r.id == base) {
            let why = format!(
                "{}: the differential {diff} records other bytes for this base: one of \
                 them was replaced",
                r.path.display()
            );
            report.problems.push(why.clone());
            r.status = BackupStatus::Failed;
            r.note = Some(why);
        }
    }
}

/// An archive's state as reindex finds it: (status, sha256, note). Its sidecar must
/// agree with its bytes, and a backup the catalog knew must still be the bytes it
/// recorded.
fn status_of(
    path: &Path,
    id: &str,
    known: Option<&BackupRecord>,
    report: &mut ReindexReport,
    progress: &dyn Progress,
) -> Result<(BackupStatus, String, Option<String>), BackupError> {
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    Ok(match archive::read_sidecar(path) {
        Err(e) => (
            BackupStatus::Unverified,
            String::new(),
            Some(format!("no usable sidecar: {}", crate::error::chain(&e))),
        ),
        Ok(digest) => {
            let digest = hex::encode(digest);
            match known {
                Some(k) if k.sha256 == digest && k.archive_bytes == size => {
                    (k.status, digest, k.note.clone())
                }
                // An archive never changes under its ID: other bytes than the
                // catalog recorded, even with a sidecar that agrees, were put
                // there by someone else.
                Some(k) if !k.sha256.is_empty() && k.sha256 != digest => {
                    let msg = format!(
                        "{}: its bytes (sha256 {digest}) are not those the catalog \
                                 recorded ({}): replaced since it was written",
                        path.display(),
                        k.sha256
                    );
                    report.problems.push(msg.clone());
                    (BackupStatus::Failed, k.sha256.clone(), Some(msg))
                }
                _ => {
                    progress.phase(&format!("hashing {id}"), size);
                    let actual = sha256_file(path, progress).map_err(BackupError::io(path))?;
                    if hex::encode(actual) == digest {
                        (BackupStatus::Verified, digest, None)
                    } else {
                        let msg = format!("{}: does not match its sidecar", path.display());
                        report.problems.push(msg.clone());
                        (BackupStatus::Failed, hex::encode(actual), Some(msg))
                    }
                }
            }
        }
    })
}
