//! What the backup never had stays: before an in-place swap, every live entry the set's
//! exclude rules leave out (logs, caches, anything `exclude` names) is carried into the
//! staged data, by hard link where it can be (no bytes copied, the very same file lives
//! on) and by copy across filesystems. Without this, restoring a backup would move those
//! files into the rollback copy, and removing that copy would destroy data that no
//! backup holds.
//!
//! Only the staging side is written, through confined handles (a staged symlink where
//! the live tree has a folder is refused, never followed); the live tree is read only.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::confine::{ConfineError, Dir, split};
use super::journal::{Unit, unit_path};
use super::plan::{Carried, Plan};
use crate::patterns::Excludes;

/// Visits every live entry below `root` that `excludes` leaves out: an excluded folder
/// once (`true`: its whole tree goes), an excluded file or link inside a kept folder once.
fn excluded_below(
    root: &Path,
    excludes: &Excludes,
    mut visit: impl FnMut(&walkdir::DirEntry) -> Result<(), ConfineError>,
) -> Result<(), ConfineError> {
    let mut walk = walkdir::WalkDir::new(root)
        .follow_links(false)
        .follow_root_links(false)
        .min_depth(1)
        .into_iter();
    while let Some(e) = walk.next() {
        let Ok(e) = e else { continue };
        let is_dir = e.file_type().is_dir();
        if excludes.excluded(e.path(), is_dir) {
            visit(&e)?;
            if is_dir {
                walk.skip_current_dir();
            }
        }
    }
    Ok(())
}

fn tree_size(path: &Path) -> Carried {
    let mut c = Carried::default();
    for e in walkdir::WalkDir::new(path)
        .follow_links(false)
        .follow_root_links(false)
        .into_iter()
        .flatten()
    {
        c.entries += 1;
        if e.file_type().is_file() {
            c.bytes += e.metadata().map_or(0, |m| m.len());
        }
    }
    c
}

/// Whether the live `path` (below `root`) is left out by `excludes`, itself or through a
/// folder above it: such an entry is carried over, so a process writing to it writes to
/// the restored data too.
fn is_excluded(root: &Path, path: &Path, excludes: &Excludes) -> bool {
    let Ok(rel) = path.strip_prefix(root) else {
        return false;
    };
    let mut p = root.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for (i, c) in parts.iter().enumerate() {
        p.push(c);
        let last = i + 1 == parts.len();
        let is_dir = !last || fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
        if excludes.excluded(&p, is_dir) {
            return true;
        }
    }
    false
}

/// Whether `file`, a real path as `lsof` names it, lies under one of `plan`'s targets and
/// is carried over by `excludes` (so a process writing to it writes to the restored data).
pub fn is_carried(plan: &Plan, excludes: &Excludes, file: &Path) -> bool {
    plan.targets.iter().any(|t| {
        fs::canonicalize(&t.live).is_ok_and(|real| {
            file.strip_prefix(&real)
                .is_ok_and(|rel| is_excluded(&t.live, &t.live.join(rel), excludes))
        })
    })
}

/// What an in-place restore of `plan` will carry over, counted for the plan.
pub fn count(plan: &Plan, excludes: &Excludes) -> Carried {
    let mut total = Carried::default();
    for t in plan.targets.iter().filter(|t| t.exists) {
        if !fs::symlink_metadata(&t.live).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let _ = excluded_below(&t.live, excludes, |e| {
            let c = tree_size(e.path());
            total.entries += c.entries;
            total.bytes += c.bytes;
            Ok(())
        });
    }
    total
}

/// Carries the excluded live entries under each folder unit into its staged copy. An
/// entry the staged data already has (the rules changed since the backup) is left to
/// the backup.
pub fn carry(plan: &Plan, units: &[Unit], excludes: &Excludes) -> Result<Carried, ConfineError> {
    let mut total = Carried::default();
    if let Some(t) = plan.targets.first() {
        crate::fault::fail_point("restore-carry").map_err(|source| ConfineError::Io {
            path: t.live.clone(),
            source,
        })?;
    }
    for u in units.iter().filter(|u| u.side.is_none()) {
        let live = unit_path(plan, u);
        if !fs::symlink_metadata(&live).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let t = &plan.targets[u.target];
        let parent = Dir::open_trusted(&t.base)?.walk(t.rel_parent.as_bytes(), false)?;
        let staging = parent.open_dir(t.staging.as_bytes())?;
        let staged = if u.rel.is_empty() {
            staging.open_dir(t.name.as_bytes())
        } else {
            staging
                .open_dir(t.name.as_bytes())
                .and_then(|d| d.walk(&u.rel, false))
        };
        // The backup has no folder here (a file, or nothing): nothing to carry into.
        let Ok(staged) = staged else { continue };
        excluded_below(&live, excludes, |e| {
            let rel = e.path().strip_prefix(&live).unwrap_or(e.path());
            let c = carry_tree(&live, rel.as_os_str().as_bytes(), &staged)?;
            total.entries += c.entries;
            total.bytes += c.bytes;
            total.backup_has += c.backup_has;
            Ok(())
        })?;
    }
    Ok(total)
}

/// The staged folder for `rel_dir` below `staged`, created (with the live folder's mode)
/// where the backup has none.
fn staged_folder(live_root: &Path, rel_dir: &[u8], staged: &Dir) -> Result<Dir, ConfineError> {
    let mut dir = staged.walk(b"", false)?;
    let mut sofar = Vec::new();
    for c in rel_dir.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        let existed = dir.exists(c);
        dir = dir.create_dir(c)?;
        if !sofar.is_empty() {
            sofar.push(b'/');
        }
        sofar.extend_from_slice(c);
        if !existed {
            copy_mode(&live_root.join(std::ffi::OsStr::from_bytes(&sofar)), &dir)?;
        }
    }
    Ok(dir)
}

fn copy_mode(live: &Path, dir: &Dir) -> Result<(), ConfineError> {
    if let Ok(m) = fs::symlink_metadata(live) {
        dir.as_file()?
            .set_permissions(fs::Permissions::from_mode(m.mode() & 0o7777))
            .map_err(|source| ConfineError::Io {
                path: dir.path().to_path_buf(),
                source,
            })?;
    }
    Ok(())
}

/// Carries the live entry `rel` (and, for a folder, all below it) into `staged`.
fn carry_tree(live_root: &Path, rel: &[u8], staged: &Dir) -> Result<Carried, ConfineError> {
    let mut c = Carried::default();
    let top = live_root.join(std::ffi::OsStr::from_bytes(rel));
    for e in walkdir::WalkDir::new(&top)
        .follow_links(false)
        .follow_root_links(false)
    {
        let Ok(e) = e else { continue };
        let Ok(r) = e.path().strip_prefix(live_root) else {
            continue;
        };
        let r = r.as_os_str().as_bytes();
        let (dir, name) = split(r);
        // A folder the backup has as a file or link, or a link where the live data has
        // a folder: said about the live entry, not the staging folder.
        let clash = |err: ConfineError| match err {
            ConfineError::Refused { what, .. } => ConfineError::Refused {
                path: e.path().to_path_buf(),
                what: format!(
                    "is excluded, so it is kept over a restore, but the backup has something \
                     else in the way ({what}); move it aside, or restore with \
                     --replace-excluded"
                ),
            },
            other @ ConfineError::Io { .. } => other,
        };
        let into = staged_folder(live_root, dir, staged).map_err(clash)?;
        if into.exists(name) && !e.file_type().is_dir() {
            c.backup_has += 1;
            continue;
        }
        let ft = e.file_type();
        if ft.is_dir() {
            let existed = into.exists(name);
            let d = into.create_dir(name).map_err(clash)?;
            if !existed {
                copy_mode(e.path(), &d)?;
            }
        } else if ft.is_symlink() {
            let target = fs::read_link(e.path()).map_err(|source| ConfineError::Io {
                path: e.path().to_path_buf(),
                source,
            })?;
            into.symlink(target.as_os_str().as_bytes(), name)?;
        } else {
            // A file, or what a running program made (a FIFO, a socket): the same inode.
            let from = Dir::open_trusted(e.path().parent().unwrap_or(live_root))?;
            match into.link_carried(&from, name, name) {
                Err(ConfineError::Io { source, .. })
                    if ft.is_file() && source.raw_os_error() == Some(libc::EXDEV) =>
                {
                    copy_file(e.path(), &from, name, &into)?;
                }
                other => other?,
            }
            if ft.is_file() {
                c.bytes += e.metadata().map_or(0, |m| m.len());
            }
        }
        c.entries += 1;
    }
    Ok(c)
}

/// A copy where a hard link cannot reach (another filesystem mounted inside the set).
fn copy_file(live: &Path, from: &Dir, name: &[u8], into: &Dir) -> Result<(), ConfineError> {
    let io_err = |source: io::Error| ConfineError::Io {
        path: live.to_path_buf(),
        source,
    };
    let mut src = from.open_file(name)?;
    let mut dst = into.create_file(name)?;
    io::copy(&mut src, &mut dst).map_err(io_err)?;
    let m = src.metadata().map_err(io_err)?;
    dst.set_permissions(fs::Permissions::from_mode(m.mode() & 0o7777))
        .map_err(io_err)?;
    let mtime = m.modified().map_err(io_err)?;
    dst.set_modified(mtime).map_err(io_err)?;
    Ok(())
}
