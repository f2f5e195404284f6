//! Staging: the archive is extracted into a fresh folder beside each target, every file,
//! folder, link and mode change made through [`confine::Dir`] handles (no symlink is ever
//! followed, hard links only to regular files this restore wrote), every file hashed
//! against the manifest and every SQLite database checked, before anything live changes.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tar::EntryType;

use super::confine::{ConfineError, Dir, split};
use super::journal::{StagedDb, Unit};
use super::plan::{Plan, Target};
use super::{RestoreError, io_err};
use crate::backup::Progress;
use crate::backup::archive::manifest;
use crate::backup::archive::{self, ArchiveError, DELETED_PATH, MANIFEST_PATH, entry_key};
use crate::patterns::PathFilter;

/// What staging produced.
#[derive(Default)]
pub struct Staged {
    pub files: u64,
    pub bytes: u64,
    pub databases: Vec<StagedDb>,
    /// Per-entry units, for `--path` restores.
    pub units: Vec<Unit>,
    /// Database dumps staged (by their first bytes), for a drill's checks:
    /// (kind, target, path below it).
    pub dumps: Vec<(Dump, usize, Vec<u8>)>,
}

/// A database dump known by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dump {
    /// A Redis RDB file (`REDIS0011...`).
    RedisRdb,
    /// A PostgreSQL custom-format dump (`PGDMP`).
    PgCustom,
}

impl Dump {
    fn of(first: &[u8]) -> Option<Dump> {
        if first.starts_with(b"REDIS") {
            Some(Dump::RedisRdb)
        } else if first.starts_with(b"PGDMP") {
            Some(Dump::PgCustom)
        } else {
            None
        }
    }
}

/// The index of the target holding `path` (the longest prefix).
pub fn target_of(targets: &[Target], path: &[u8]) -> Option<usize> {
    targets
        .iter()
        .enumerate()
        .filter(|(_, t)| super::safety::under(t.prefix.as_bytes(), path))
        .max_by_key(|(_, t)| t.prefix.len())
        .map(|(i, _)| i)
}

/// `path` below its target's prefix.
fn relative<'a>(t: &Target, path: &'a [u8]) -> &'a [u8] {
    let rel = &path[t.prefix.len()..];
    rel.strip_prefix(b"/").unwrap_or(rel)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The staging folders, created (they must not exist) and opened.
fn containers(plan: &Plan) -> Result<Vec<Dir>, RestoreError> {
    let mut out = Vec::new();
    for t in &plan.targets {
        if !plan.in_place {
            fs::create_dir_all(&t.base).map_err(io_err(&t.base))?;
        }
        let parent = Dir::open_trusted(&t.base)
            .and_then(|b| b.walk(t.rel_parent.as_bytes(), true))
            .map_err(RestoreError::Confined)?;
        out.push(
            parent
                .create_new_dir(t.staging.as_bytes())
                .map_err(RestoreError::Confined)?,
        );
    }
    Ok(out)
}

/// Folders opened so far, by (target, path below the staging folder): entries arrive
/// grouped by folder, and a folder once opened without following a symlink stays that
/// folder (staging never renames or removes anything).
struct Folders {
    containers: Vec<Dir>,
    open: HashMap<(usize, Vec<u8>), Dir>,
}

impl Folders {
    /// The folder `rel` of target `t`'s staged tree (`rel` empty: the target's own
    /// folder inside the staging folder).
    fn get(
        &mut self,
        t: usize,
        name: &str,
        rel: &[u8],
        create: bool,
    ) -> Result<&Dir, ConfineError> {
        let key = (t, rel.to_vec());
        if !self.open.contains_key(&key) {
            let c = &self.containers[t];
            let top = if create {
                c.create_dir(name.as_bytes())?
            } else {
                c.open_dir(name.as_bytes())?
            };
            let d = top.walk(rel, create)?;
            if self.open.len() > 64 {
                self.open.clear();
            }
            self.open.insert(key.clone(), d);
        }
        Ok(&self.open[&key])
    }

    /// The folder holding entry `rel` of target `t`, and the entry's own name there.
    fn parent_of<'r>(
        &mut self,
        t: &Target,
        ti: usize,
        rel: &'r [u8],
        create: bool,
    ) -> Result<(&Dir, &'r [u8]), ConfineError> {
        if rel.is_empty() {
            // The target's own entry, named like the target, in the staging folder.
            return Ok((&self.containers[ti], b""));
        }
        let (dir, leaf) = split(rel);
        let d = self.get(ti, &t.name, dir, create)?;
        Ok((d, leaf))
    }
}

fn unsafe_entry(path: &[u8]) -> impl FnOnce(ConfineError) -> RestoreError + '_ {
    move |source| RestoreError::Unsafe {
        entry: String::from_utf8_lossy(path).into_owned(),
        source,
    }
}

/// Extracts into the staging folders, checking every file against the manifest. A
/// differential is staged first, then its base where the differential neither holds nor
/// deleted an entry; every file of each is checked against its own archive's manifest
/// (the base's lines were checked against the differential's before, in
/// `check_archive`).
pub fn stage(
    plan: &Plan,
    filter: Option<&PathFilter>,
    progress: &dyn Progress,
    interrupted: &AtomicBool,
) -> Result<Staged, RestoreError> {
    let mut s = Stager {
        plan,
        filter,
        progress,
        interrupted,
        folders: Folders {
            containers: containers(plan)?,
            open: HashMap::new(),
        },
        dirs: Vec::new(),
        staged: Staged::default(),
        root: is_root(),
    };
    crate::fault::crash_point("restore-staging-created");
    match &plan.base {
        None => {
            s.archive(&plan.archive, &Layer::Whole)?;
        }
        Some(base) => {
            let top = s.archive(&plan.archive, &Layer::Top)?;
            s.archive(&base.archive, &Layer::Under(top))?;
        }
    }
    finish(plan, &mut s.folders, &s.dirs)?;
    Ok(s.staged)
}

/// Which archive of a restore point is being staged.
enum Layer {
    /// A full backup, alone.
    Whole,
    /// A differential, first.
    Top,
    /// Its base, after: what the differential met (`seen`) or deleted is not staged.
    Under(Seen),
}

/// What a differential held and deleted.
#[derive(Default)]
struct Seen {
    paths: std::collections::HashSet<Vec<u8>>,
    files: std::collections::HashSet<Vec<u8>>,
    deleted: std::collections::HashSet<Vec<u8>>,
}

impl Layer {
    /// Whether the entry at `path` of this layer's archive is staged (folders: only from
    /// the top, which holds every folder of the tree).
    fn stages(&self, path: &[u8], dir: bool) -> bool {
        match self {
            Layer::Whole | Layer::Top => true,
            Layer::Under(seen) => {
                !dir && !seen.paths.contains(path) && !seen.deleted.contains(path)
            }
        }
    }
}

/// A damaged-archive error about `path`.
fn corrupt_in(path: &Path) -> impl Fn(String) -> RestoreError + '_ {
    move |message| {
        RestoreError::Archive(ArchiveError::Corrupt {
            path: path.to_path_buf(),
            message,
        })
    }
}

/// Whether `--path` (if any) takes the entry at `path`.
fn included(filter: Option<&PathFilter>, path: &[u8]) -> bool {
    filter.is_none_or(|f| f.matches(path))
}

/// One restore's staging, over the archives of its restore point.
struct Stager<'a> {
    plan: &'a Plan,
    filter: Option<&'a PathFilter>,
    progress: &'a dyn Progress,
    interrupted: &'a AtomicBool,
    folders: Folders,
    /// (target, rel, owner) of every folder, for after their contents.
    dirs: Vec<(usize, Vec<u8>, Owner)>,
    staged: Staged,
    root: bool,
}

impl Stager<'_> {
    /// Stages the archive at `archive_path` as `layer`; returns what it held and deleted.
    fn archive(&mut self, archive_path: &Path, layer: &Layer) -> Result<Seen, RestoreError> {
        let corrupt = corrupt_in(archive_path);
        let (plan, filter) = (self.plan, self.filter);
        let (stream, decoder) = archive::decompressed(archive_path)?;
        let included = |path: &[u8]| included(filter, path);
        let mut seen = Seen::default();
        let mut keys: Vec<[u8; 16]> = Vec::new();
        let mut manifest_checked = false;
        let mut buf = vec![0u8; 256 * 1024];
        let mut tar = tar::Archive::new(stream);
        let entries = tar.entries().map_err(io_err(archive_path))?;
        for entry in entries {
            if self.interrupted.load(Ordering::SeqCst) {
                return Err(RestoreError::Interrupted);
            }
            let mut entry = entry.map_err(|e| corrupt(format!("reading the archive: {e}")))?;
            let path = entry_path(&entry);
            let kind = entry.header().entry_type();
            if path == DELETED_PATH.as_bytes() {
                let mut list = Vec::new();
                entry
                    .read_to_end(&mut list)
                    .map_err(|e| corrupt(format!("reading {DELETED_PATH}: {e}")))?;
                seen.deleted = list
                    .split(|b| *b == 0)
                    .filter(|p| !p.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect();
                continue;
            }
            if path == MANIFEST_PATH.as_bytes() {
                manifest_checked = true;
                // Each archive's files against its own lines: a differential's manifest
                // lists the whole tree, a base's the files the differential left to it.
                let checked = |f: &[u8]| {
                    included(f)
                        && match layer {
                            Layer::Whole => true,
                            Layer::Top => seen.files.contains(f),
                            Layer::Under(_) => layer.stages(f, false),
                        }
                };
                check_manifest(&mut entry, &keys, &checked).map_err(&corrupt)?;
                continue;
            }
            // Anything outside the targets (`.steward/backup.json`, or what a hostile
            // archive adds) is never written.
            let Some(ti) = target_of(&plan.targets, &path) else {
                continue;
            };
            if matches!(layer, Layer::Top) {
                seen.paths.insert(path.clone());
                if matches!(kind, EntryType::Regular | EntryType::Continuous) {
                    seen.files.insert(path.clone());
                }
            }
            if !layer.stages(&path, kind == EntryType::Directory)
                || (!included(&path) && kind != EntryType::Directory)
            {
                continue;
            }
            if let Some(key) = self.entry(archive_path, (ti, &path), &mut entry, &mut buf)? {
                keys.push(key);
            }
        }
        drop(tar);
        decoder
            .join()
            .map_err(|_| corrupt("the decompression thread panicked".into()))?
            .map_err(|e| corrupt(format!("zstd data is damaged: {e}")))?;
        if !manifest_checked {
            return Err(corrupt(format!("{MANIFEST_PATH} is missing")));
        }
        Ok(seen)
    }

    /// Stages one entry of target `ti`; a file's manifest key.
    fn entry<R: Read>(
        &mut self,
        archive_path: &Path,
        (ti, path): (usize, &[u8]),
        entry: &mut tar::Entry<'_, R>,
        buf: &mut [u8],
    ) -> Result<Option<[u8; 16]>, RestoreError> {
        let corrupt = corrupt_in(archive_path);
        let (plan, filter) = (self.plan, self.filter);
        let included = |path: &[u8]| included(filter, path);
        let kind = entry.header().entry_type();
        let t = &plan.targets[ti];
        let rel = relative(t, path).to_vec();
        let owner = Owner::of(entry.header(), self.root);
        self.progress.advance(entry.size());
        let name_in = |leaf: &[u8]| -> Vec<u8> {
            if rel.is_empty() {
                t.name.as_bytes().to_vec()
            } else {
                leaf.to_vec()
            }
        };
        let mut key = None;
        match kind {
            EntryType::Directory => {
                if filter.is_none() || included(path) {
                    let (d, leaf) = self
                        .folders
                        .parent_of(t, ti, &rel, true)
                        .map_err(unsafe_entry(path))?;
                    d.create_dir(&name_in(leaf)).map_err(unsafe_entry(path))?;
                    self.dirs.push((ti, rel.clone(), owner));
                }
            }
            EntryType::Regular | EntryType::Continuous => {
                let (d, leaf) = self
                    .folders
                    .parent_of(t, ti, &rel, true)
                    .map_err(unsafe_entry(path))?;
                let dest = d.path().join(std::ffi::OsStr::from_bytes(&name_in(leaf)));
                crate::fault::fail_point("restore-stage-file").map_err(io_err(archive_path))?;
                let mut f = d.create_file(&name_in(leaf)).map_err(unsafe_entry(path))?;
                let (digest, first, total) =
                    copy_hashed(entry, &mut f, buf).map_err(|e| match e {
                        CopySide::Read(e) => {
                            corrupt(format!("reading {}: {e}", String::from_utf8_lossy(path)))
                        }
                        CopySide::Write(e) => io_err(&dest)(e),
                    })?;
                key = Some(entry_key(path, &digest));
                owner.apply(&f, &dest)?;
                drop(f);
                if &first == crate::backup::walk::SQLITE_HEADER {
                    check_sqlite(&dest)?;
                    self.staged.databases.push(StagedDb {
                        target: ti,
                        rel: rel.clone(),
                        sha256: hex::encode(digest),
                    });
                } else if let Some(kind) = Dump::of(&first) {
                    self.staged.dumps.push((kind, ti, rel.clone()));
                }
                self.staged.files += 1;
                self.staged.bytes += total;
                if filter.is_some() {
                    self.staged.units.push(Unit::entry(ti, &rel));
                }
            }
            EntryType::Symlink => {
                let link = link_target(entry, "symlink", archive_path)?;
                symlink(
                    &mut self.folders,
                    (ti, &rel, path),
                    &link,
                    owner,
                    &plan.targets,
                )?;
                if filter.is_some() {
                    self.staged.units.push(Unit::entry(ti, &rel));
                }
            }
            EntryType::Link => {
                let link = link_target(entry, "hard link", archive_path)?;
                let link = link.strip_suffix(b"/").unwrap_or(&link).to_vec();
                if hard_link(
                    plan,
                    &mut self.folders,
                    (ti, &rel, path),
                    &link,
                    filter.is_some(),
                )? && filter.is_some()
                {
                    self.staged.units.push(Unit::entry(ti, &rel));
                }
            }
            _ => {
                return Err(corrupt(format!(
                    "entry {} has an unsupported type",
                    String::from_utf8_lossy(path)
                )));
            }
        }
        Ok(key)
    }
}

/// A staged entry's mode (never setuid/setgid, whatever the safety pass let through),
/// modification time and, for root, owner.
#[derive(Clone, Copy)]
struct Owner {
    mode: u32,
    mtime: u64,
    uid: u64,
    gid: u64,
    root: bool,
}

impl Owner {
    fn of(h: &tar::Header, root: bool) -> Owner {
        Owner {
            mode: h.mode().unwrap_or(0o600) & 0o1777,
            mtime: h.mtime().unwrap_or(0),
            uid: h.uid().unwrap_or(0),
            gid: h.gid().unwrap_or(0),
            root,
        }
    }

    /// Sets them on the open entry `f` (at `path`, for errors).
    fn apply(&self, f: &File, path: &Path) -> Result<(), RestoreError> {
        f.set_permissions(fs::Permissions::from_mode(self.mode))
            .map_err(io_err(path))?;
        f.set_modified(UNIX_EPOCH + Duration::from_secs(self.mtime))
            .map_err(io_err(path))?;
        if self.root {
            std::os::unix::fs::fchown(f, Some(self.uid as u32), Some(self.gid as u32))
                .map_err(io_err(path))?;
        }
        Ok(())
    }
}

/// Which side of a copy failed.
enum CopySide {
    Read(io::Error),
    Write(io::Error),
}

/// Copies `from` into `to` through `buf`, hashing: the SHA-256, the first 16 bytes (a
/// SQLite header?) and the length.
fn copy_hashed(
    from: &mut impl Read,
    to: &mut File,
    buf: &mut [u8],
) -> Result<([u8; 32], [u8; 16], u64), CopySide> {
    let mut h = Sha256::new();
    let mut first = [0u8; 16];
    let mut total = 0u64;
    loop {
        let n = from.read(buf).map_err(CopySide::Read)?;
        if n == 0 {
            break;
        }
        if total < 16 {
            let k = (16 - total as usize).min(n);
            first[total as usize..total as usize + k].copy_from_slice(&buf[..k]);
        }
        h.update(&buf[..n]);
        to.write_all(&buf[..n]).map_err(CopySide::Write)?;
        total += n as u64;
    }
    Ok((h.finalize().into(), first, total))
}

/// Folders last, deepest first, so adding files did not change their times; then every
/// staged byte made durable.
fn finish(
    plan: &Plan,
    folders: &mut Folders,
    dirs: &[(usize, Vec<u8>, Owner)],
) -> Result<(), RestoreError> {
    folders.open.clear();
    for (ti, rel, owner) in dirs.iter().rev() {
        let t = &plan.targets[*ti];
        let c = &folders.containers[*ti];
        let d = if rel.is_empty() {
            c.open_dir(t.name.as_bytes())
        } else {
            c.open_dir(t.name.as_bytes())
                .and_then(|d| d.walk(rel, false))
        }
        .map_err(RestoreError::Confined)?;
        let f = d.as_file().map_err(RestoreError::Confined)?;
        owner.apply(&f, d.path())?;
    }
    // Durable before the swap can expose it: one flush per filesystem instead of an
    // fsync per file.
    for c in &folders.containers {
        crate::fsutil::sync_filesystem(c.path()).map_err(io_err(c.path()))?;
    }
    Ok(())
}

/// The target of a link entry; a link without one is a damaged archive.
fn link_target<R: Read>(
    entry: &tar::Entry<'_, R>,
    what: &str,
    archive: &Path,
) -> Result<Vec<u8>, RestoreError> {
    entry
        .link_name_bytes()
        .map(std::borrow::Cow::into_owned)
        .ok_or_else(|| {
            RestoreError::Archive(ArchiveError::Corrupt {
                path: archive.to_path_buf(),
                message: format!(
                    "{what} {} has no target",
                    String::from_utf8_lossy(&entry.path_bytes())
                ),
            })
        })
}

/// An entry's path as written, without the trailing slashes of a folder.
fn entry_path<R: Read>(entry: &tar::Entry<'_, R>) -> Vec<u8> {
    let raw = entry.path_bytes();
    let mut path: &[u8] = &raw;
    while let Some(r) = path.strip_suffix(b"/") {
        path = r;
    }
    path.to_vec()
}

/// A symlink entry `(target, rel, path)` to `link`, stored as written, never followed.
fn symlink(
    folders: &mut Folders,
    (ti, rel, path): (usize, &[u8], &[u8]),
    link: &[u8],
    owner: Owner,
    targets: &[Target],
) -> Result<(), RestoreError> {
    if rel.is_empty() {
        return Err(RestoreError::Refused(format!(
            "unsafe entry {}: the set path itself is a symlink in the archive",
            String::from_utf8_lossy(path)
        )));
    }
    let (d, leaf) = folders
        .parent_of(&targets[ti], ti, rel, true)
        .map_err(unsafe_entry(path))?;
    d.symlink(link, leaf).map_err(unsafe_entry(path))?;
    if owner.root {
        d.lchown(leaf, owner.uid as u32, owner.gid as u32)
            .map_err(unsafe_entry(path))?;
    }
    Ok(())
}

/// A hard link entry `(target, rel, path)` to `link`, an archive path this restore wrote
/// before; anything else is refused. `false`: skipped, its first name filtered out by
/// `--path` (`filtered`).
fn hard_link(
    plan: &Plan,
    folders: &mut Folders,
    (ti, rel, path): (usize, &[u8], &[u8]),
    link: &[u8],
    filtered: bool,
) -> Result<bool, RestoreError> {
    let t = &plan.targets[ti];
    let refused = || {
        RestoreError::Refused(format!(
            "unsafe entry {}: hard link to {}, which is not a file this restore wrote",
            String::from_utf8_lossy(path),
            String::from_utf8_lossy(link)
        ))
    };
    let si = target_of(&plan.targets, link).ok_or_else(refused)?;
    let st = &plan.targets[si];
    let src_rel = relative(st, link).to_vec();
    if rel.is_empty() || src_rel.is_empty() {
        return Err(refused());
    }
    let (src_dir, src_leaf) = split(&src_rel);
    let src = match folders.get(si, &st.name, src_dir, false) {
        Ok(d) => d.walk(b"", false).map_err(unsafe_entry(path))?,
        // With --path the link's first name may be filtered out.
        Err(_) if filtered => return Ok(false),
        Err(e) => return Err(unsafe_entry(path)(e)),
    };
    if !src.exists(src_leaf) && filtered {
        return Ok(false);
    }
    let (d, leaf) = folders
        .parent_of(t, ti, rel, true)
        .map_err(unsafe_entry(path))?;
    d.hard_link(&src, src_leaf, leaf)
        .map_err(unsafe_entry(path))?;
    Ok(true)
}

/// Compares the manifest with the staged files' SHA-256, in archive order (files left out
/// by `--path` are skipped on both sides).
fn check_manifest(
    entry: &mut impl Read,
    keys: &[[u8; 16]],
    included: &dyn Fn(&[u8]) -> bool,
) -> Result<(), String> {
    let mut i = 0;
    for line in io::BufReader::new(entry).split(b'\n') {
        let line = line.map_err(|e| format!("reading {MANIFEST_PATH}: {e}"))?;
        let (digest, file) = manifest::parse_line(&line)
            .ok_or_else(|| format!("{MANIFEST_PATH} has a malformed line"))?;
        if !included(&file) {
            continue;
        }
        let shown = String::from_utf8_lossy(&file);
        match keys.get(i) {
            Some(k) if *k == entry_key(&file, &digest) => i += 1,
            _ => {
                return Err(format!(
                    "file {shown}: restored content does not match the manifest"
                ));
            }
        }
    }
    if i != keys.len() {
        return Err(format!(
            "{} files restored, the manifest lists {i}",
            keys.len()
        ));
    }
    Ok(())
}

/// `PRAGMA integrity_check` on a staged database, opened immutable (no side files made).
fn check_sqlite(db: &Path) -> Result<(), RestoreError> {
    let fail = |detail: String| RestoreError::Integrity {
        path: db.to_path_buf(),
        detail,
    };
    let uri = format!(
        "file:{}?immutable=1",
        db.display()
            .to_string()
            .replace('%', "%25")
            .replace('?', "%3f")
            .replace('#', "%23")
    );
    let conn = rusqlite::Connection::open_with_flags(
        &uri,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| fail(e.to_string()))?;
    let result: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| fail(e.to_string()))?;
    if result == "ok" {
        Ok(())
    } else {
        Err(fail(result))
    }
}
