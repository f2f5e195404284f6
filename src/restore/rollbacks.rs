//! The copies of replaced data that restores keep aside (`NAME.steward-rollback-STAMP`):
//! they are data, not litter. Each is recorded with the backup that replaced it, when,
//! and a print of its contents taken right after the swap, so a copy that something wrote
//! into later (a process that kept its database open) is told apart. Kept for
//! `[restore] keep-rollbacks` (a week by default), then daily maintenance removes it,
//! except a changed one, which stays and is warned about until a human looks.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::journal::{self, write_atomic};
use super::{RestoreError, io_err};
use crate::config::Config;

/// What a copy held right after the swap, or holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Print {
    pub entries: u64,
    pub bytes: u64,
    /// The newest modification time inside, in nanoseconds since the epoch.
    pub newest_mtime_ns: i64,
}

/// A rollback copy as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rollback {
    pub path: PathBuf,
    /// The backup whose restore moved this data aside.
    #[serde(default)]
    pub id: String,
    /// When (steward's clock).
    pub made_at: i64,
    /// Its contents right after the swap.
    #[serde(default)]
    pub print: Option<Print>,
    /// The live path it was replaced at.
    #[serde(default)]
    pub live: Option<PathBuf>,
    /// The exclude rules whose entries the restore carried over (shared with the live
    /// data, so left out of the print).
    #[serde(default)]
    pub carried_rules: Vec<String>,
}

/// A recorded copy as it is now.
#[derive(Debug, Clone, Serialize)]
pub struct Kept {
    pub path: PathBuf,
    pub id: String,
    pub made_at: i64,
    pub bytes: u64,
    /// When maintenance removes it (unless changed).
    pub expires_at: i64,
    /// Something wrote into it after the swap.
    pub changed: bool,
}

/// Records of earlier versions were bare paths.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    Full(Rollback),
    Path(PathBuf),
}

fn registry(state_dir: &Path) -> PathBuf {
    state_dir.join("restore-rollbacks.json")
}

fn load(config: &Config) -> Result<Vec<Rollback>, RestoreError> {
    let path = registry(&config.state_dir);
    let stored: Vec<Stored> = match fs::read(&path) {
        Ok(d) => serde_json::from_slice(&d).map_err(|e| io_err(&path)(io::Error::other(e)))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let now = crate::clock::now();
    Ok(stored
        .into_iter()
        .map(|s| match s {
            Stored::Full(r) => r,
            // Age unknown: counted from now, so nothing older is removed unseen.
            Stored::Path(path) => Rollback {
                path,
                id: String::new(),
                made_at: now,
                print: None,
                live: None,
                carried_rules: Vec::new(),
            },
        })
        .collect())
}

fn save(config: &Config, all: &[Rollback]) -> Result<(), RestoreError> {
    write_atomic(&registry(&config.state_dir), &all)
}

/// A copy and the side files of a database kept beside it.
fn with_sides(path: &Path) -> Vec<PathBuf> {
    let mut v = vec![path.to_path_buf()];
    for side in journal::SQLITE_SIDE_FILES {
        v.push(PathBuf::from(format!("{}{side}", path.display())));
    }
    v
}

/// What the copy holds now. Entries the restore carried over (left out by `rules`, the
/// exclude rules of its set when it ran) are not counted: they are shared with the live
/// data by hard link, so writes to them show on both sides and say nothing about the copy.
pub fn print(path: &Path, live: Option<&Path>, rules: &[String]) -> Print {
    let excludes = if rules.is_empty() {
        None
    } else {
        crate::patterns::Excludes::new(rules).ok()
    };
    let mut p = Print::default();
    for top in with_sides(path) {
        let mut walk = walkdir::WalkDir::new(&top)
            .follow_links(false)
            .follow_root_links(false)
            .into_iter();
        while let Some(Ok(e)) = walk.next() {
            if let (Some(ex), Some(l)) = (&excludes, live)
                && let Ok(rel) = e.path().strip_prefix(path)
                && !rel.as_os_str().is_empty()
                && ex.excluded(&l.join(rel), e.file_type().is_dir())
            {
                if e.file_type().is_dir() {
                    walk.skip_current_dir();
                }
                continue;
            }
            let Ok(m) = e.metadata() else { continue };
            p.entries += 1;
            if m.is_file() {
                p.bytes += m.len();
            }
            let t = m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec();
            p.newest_mtime_ns = p.newest_mtime_ns.max(t);
        }
    }
    p
}

/// Records the copies a restore of `id` just made (live path, copy path).
pub fn remember(
    config: &Config,
    id: &str,
    made: &[(PathBuf, PathBuf)],
    carried_rules: &[String],
) -> Result<(), RestoreError> {
    if made.is_empty() {
        return Ok(());
    }
    let mut all = load(config)?;
    let now = crate::clock::now();
    for (live, path) in made {
        // Already recorded (a resume after the guard settled it): its print stays the
        // one taken right after the swap.
        if all.iter().any(|r| &r.path == path) {
            continue;
        }
        all.push(Rollback {
            path: path.clone(),
            id: id.to_string(),
            made_at: now,
            print: Some(print(path, Some(live), carried_rules)),
            live: Some(live.clone()),
            carried_rules: carried_rules.to_vec(),
        });
    }
    save(config, &all)
}

/// Only what a restore made: the name says so.
fn ours(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().contains(".steward-rollback-"))
}

/// The recorded copies that still exist, oldest first.
pub fn kept(config: &Config) -> Result<Vec<Kept>, RestoreError> {
    let keep = i64::try_from(config.restore.keep_rollbacks.as_secs()).unwrap_or(i64::MAX);
    let mut out: Vec<Kept> = load(config)?
        .into_iter()
        .filter(|r| ours(&r.path) && fs::symlink_metadata(&r.path).is_ok())
        .map(|r| {
            let now = print(&r.path, r.live.as_deref(), &r.carried_rules);
            Kept {
                changed: r.print.is_some_and(|p| p != now),
                bytes: now.bytes,
                expires_at: r.made_at.saturating_add(keep),
                path: r.path,
                id: r.id,
                made_at: r.made_at,
            }
        })
        .collect();
    out.sort_by_key(|k| k.made_at);
    Ok(out)
}

fn remove_copy(path: &Path) -> Result<Vec<PathBuf>, RestoreError> {
    let mut removed = Vec::new();
    for p in with_sides(path) {
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        // A filesystem mounted inside is not this copy's to empty.
        let r = if m.is_dir() {
            crate::fsutil::remove_tree(&p)
        } else {
            fs::remove_file(&p)
        };
        r.map_err(io_err(&p))?;
        removed.push(p);
    }
    Ok(removed)
}

/// Removes every recorded copy (the caller has shown them and asked). Refused while a
/// restore is pending: its copies may still be needed.
pub fn remove_all(config: &Config) -> Result<Vec<PathBuf>, RestoreError> {
    journal::refuse_if_pending(&config.state_dir)?;
    let mut removed = Vec::new();
    let mut left = Vec::new();
    let mut failed = Vec::new();
    for r in load(config)? {
        if !ours(&r.path) {
            continue;
        }
        // One copy that cannot go does not keep the others: each is tried, and every one
        // not removed stays recorded.
        match remove_copy(&r.path) {
            Ok(mut v) => removed.append(&mut v),
            Err(e) => {
                failed.push(crate::error::chain(&e));
                left.push(r);
            }
        }
    }
    save(config, &left)?;
    if failed.is_empty() {
        Ok(removed)
    } else {
        Err(RestoreError::Refused(format!(
            "not removed (still listed; the others were): {}",
            failed.join("; ")
        )))
    }
}

/// What maintenance did with the copies.
#[derive(Debug, Default, Serialize)]
pub struct Expired {
    pub removed: Vec<Kept>,
    /// Past their time but written into after the swap: kept for a human.
    pub changed: Vec<Kept>,
    /// Past their time, but removing them failed (each with its cause); still recorded.
    pub failed: Vec<String>,
    pub kept: usize,
}

/// Removes the copies older than `[restore] keep-rollbacks` that nothing changed since
/// the swap; changed ones stay and are returned to be warned about.
pub fn expire(config: &Config, now: i64, dry_run: bool) -> Result<Expired, RestoreError> {
    if journal::pending(&config.state_dir)?.is_some() {
        return Ok(Expired::default());
    }
    let mut out = Expired::default();
    let mut gone = Vec::new();
    for k in kept(config)? {
        if k.expires_at > now {
            out.kept += 1;
        } else if k.changed {
            out.changed.push(k);
        } else if dry_run {
            out.removed.push(k);
        } else {
            match remove_copy(&k.path) {
                Ok(_) => {
                    gone.push(k.path.clone());
                    out.removed.push(k);
                }
                Err(e) => out.failed.push(crate::error::chain(&e)),
            }
        }
    }
    if !dry_run {
        let left: Vec<Rollback> = load(config)?
            .into_iter()
            .filter(|r| !gone.contains(&r.path) && fs::symlink_metadata(&r.path).is_ok())
            .collect();
        save(config, &left)?;
    }
    Ok(out)
}
