//! Incident restore: plan, check the archive (verification and entry safety in one read,
//! before anything is written), stage beside each target, verify the staged files,
//! quiesce the services, swap under a journal, resume the services.
//!
//! The swap is made of units (a whole set path, or single files with `--path`), each
//! moved in two renames: `live -> rollback`, then `staged -> live`. A unit's progress can
//! be read from the filesystem alone (which of staged, live and rollback exist), so after
//! a crash `resume` finishes every unit, and a failure rolls every unit back: data is
//! never left mixed. The services stopped are started again on every path out.

pub mod safety;

use std::fs::{self, File};
use std::io::{self, BufRead, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tar::EntryType;

use crate::backup::archive::{self, ArchiveError, MANIFEST_PATH, entry_key};
use crate::backup::{Progress, manifest};
use crate::catalog::BackupRecord;
use crate::config::Config;
use crate::services::{self, Runner, ServiceError};

/// Why a restore failed or was refused. Data is as it was before unless the message
/// says otherwise.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Refused(String),
    #[error("interrupted; nothing was changed")]
    Interrupted,
    #[error("{path}: SQLite integrity_check failed: {detail}")]
    Integrity { path: PathBuf, detail: String },
    #[error("invalid --path pattern {pattern:?}")]
    Pattern {
        pattern: String,
        #[source]
        source: globset::Error,
    },
    #[error("the data is restored, but services did not come back: {0}")]
    ServicesDown(String),
    #[error("{cause}; rolled back, data is as before{services}")]
    RolledBack { cause: String, services: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Options of a restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Restore under this folder instead of in place (no quiesce, no swap over data).
    pub to: Option<PathBuf>,
    /// Restore only entries whose absolute path matches one of these globs.
    pub paths: Vec<String>,
    /// Leave the services running.
    pub no_quiesce: bool,
    /// Accept absolute symlinks pointing outside the restored paths.
    pub allow_external_symlinks: bool,
}

/// One restored set path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// Its path inside the archive (the absolute path without the leading `/`).
    pub prefix: String,
    /// Where it goes.
    pub live: PathBuf,
    /// Where it is extracted first (beside `live`, same filesystem).
    pub staging: PathBuf,
    /// Where the current data is moved aside.
    pub rollback: PathBuf,
    /// Whether something is at `live` now.
    pub exists: bool,
}

/// What a restore will do.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub id: String,
    pub set: String,
    pub archive: PathBuf,
    pub created_at: i64,
    pub in_place: bool,
    pub targets: Vec<Target>,
    pub files: u64,
    pub bytes: u64,
    /// Services that will be stopped (if running) and started again.
    pub stop: Vec<String>,
    pub paths: Vec<String>,
    pub stamp: String,
}

/// A swap unit: `live` is replaced by `staged`, the old data kept at `rollback`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unit {
    pub live: PathBuf,
    pub staged: PathBuf,
    pub rollback: PathBuf,
}

/// What an interrupted restore needs to be finished: written before the first rename.
#[derive(Debug, Serialize, Deserialize)]
pub struct Journal {
    pub id: String,
    pub stamp: String,
    pub stopped: Vec<String>,
    pub units: Vec<Unit>,
    pub staging: Vec<PathBuf>,
    pub rollbacks: Vec<PathBuf>,
}

/// Where the journal of a restore in progress lives.
pub fn journal_path(state_dir: &Path) -> PathBuf {
    state_dir.join("restore-journal.json")
}

fn rollbacks_path(state_dir: &Path) -> PathBuf {
    state_dir.join("restore-rollbacks.json")
}

/// Writes `value` as JSON to `path` atomically (temp file, fsync, rename, fsync dir).
fn write_atomic(path: &Path, value: &impl Serialize) -> Result<(), RestoreError> {
    let tmp = path.with_extension("json.partial");
    let data = serde_json::to_vec_pretty(value).map_err(|e| io_err(path)(io::Error::other(e)))?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(&data).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(dir) = path.parent() {
        crate::fsutil::sync_dir(dir).map_err(io_err(dir))?;
    }
    Ok(())
}

/// The journal of an interrupted restore, if there is one.
pub fn pending(state_dir: &Path) -> Result<Option<Journal>, RestoreError> {
    let p = journal_path(state_dir);
    match fs::read(&p) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| io_err(&p)(io::Error::other(e))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&p)(e)),
    }
}

fn sibling(live: &Path, suffix: &str) -> PathBuf {
    let name = live
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    live.with_file_name(format!(".{name}.{suffix}"))
}

/// Works out what restoring `record` will do, reading only the archive's trailer.
pub fn plan(
    config: &Config,
    record: &BackupRecord,
    opts: &RestoreOptions,
) -> Result<Plan, RestoreError> {
    let meta = archive::read_meta(&record.path)?;
    let stamp = crate::clock::stamp(time::OffsetDateTime::now_utc());
    let mut targets = Vec::new();
    for p in &meta.paths {
        let prefix = p.trim_start_matches('/').to_string();
        if prefix.is_empty() {
            return Err(RestoreError::Refused(
                "the backup holds the root folder; restore it with --to".into(),
            ));
        }
        let live = match &opts.to {
            Some(dir) => dir.join(&prefix),
            None => PathBuf::from(p),
        };
        let exists = fs::symlink_metadata(&live).is_ok();
        if opts.to.is_some() && exists {
            return Err(RestoreError::Refused(format!(
                "{} exists; --to never overwrites, choose an empty folder",
                live.display()
            )));
        }
        targets.push(Target {
            staging: sibling(&live, &format!("steward-staging-{stamp}")),
            rollback: PathBuf::from(format!("{}.steward-rollback-{stamp}", live.display())),
            prefix,
            live,
            exists,
        });
    }
    let in_place = opts.to.is_none();
    let stop = match config.set(&meta.set) {
        Some(set) if in_place && !opts.no_quiesce => set.quiesce.clone(),
        _ => Vec::new(),
    };
    Ok(Plan {
        id: record.id.clone(),
        set: meta.set,
        archive: record.path.clone(),
        created_at: record.created_at,
        in_place,
        targets,
        files: meta.files,
        bytes: meta.bytes,
        stop,
        paths: opts.paths.clone(),
        stamp,
    })
}

/// What a finished restore did.
#[derive(Debug, Serialize)]
pub struct Report {
    pub id: String,
    pub files: u64,
    pub bytes: u64,
    pub stopped: Vec<String>,
    pub rollbacks: Vec<PathBuf>,
    pub sqlite_checked: Vec<PathBuf>,
}

fn path_filter(patterns: &[String]) -> Result<Option<GlobSet>, RestoreError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let g = Glob::new(p).map_err(|source| RestoreError::Pattern {
            pattern: p.clone(),
            source,
        })?;
        b.add(g);
    }
    b.build().map(Some).map_err(|source| RestoreError::Pattern {
        pattern: patterns.join(", "),
        source,
    })
}

/// Restores according to `plan`. `interrupted` is set by Ctrl-C / SIGTERM: before the swap
/// it aborts cleanly; once the swap has begun it is finished first.
pub fn restore(
    config: &Config,
    record: &BackupRecord,
    plan: &Plan,
    opts: &RestoreOptions,
    runner: &dyn Runner,
    progress: &dyn Progress,
    interrupted: &AtomicBool,
) -> Result<Report, RestoreError> {
    if pending(&config.state_dir)?.is_some() {
        return Err(RestoreError::Refused(
            "an interrupted restore is pending; run `steward restore --resume` first".into(),
        ));
    }
    let filter = path_filter(&opts.paths)?;
    let prefixes: Vec<Vec<u8>> = plan
        .targets
        .iter()
        .map(|t| t.prefix.as_bytes().to_vec())
        .collect();
    let rules = safety::Rules::new(prefixes, opts.allow_external_symlinks);

    // 1. The whole archive, verified and every entry checked, before anything is written.
    let size = fs::metadata(&record.path).map(|m| m.len()).unwrap_or(0);
    progress.phase(&format!("checking {}", record.id), size);
    let verified = archive::verify_inspecting(&record.path, &mut |e| rules.check(e), &mut |n| {
        progress.advance(n)
    })?;
    if hex::encode(verified.sha256) != record.sha256 && !record.sha256.is_empty() {
        return Err(RestoreError::Refused(format!(
            "{}: its bytes differ from the catalog's record",
            record.path.display()
        )));
    }
    if interrupted.load(Ordering::SeqCst) {
        return Err(RestoreError::Interrupted);
    }

    // 2. Stage and check every staged file; on any failure remove what was staged.
    progress.phase("staging", plan.bytes);
    let staged = match stage(plan, filter.as_ref(), progress, interrupted) {
        Ok(s) => s,
        Err(e) => {
            remove_staging(plan);
            return Err(e);
        }
    };
    let units: Vec<Unit> = match &filter {
        None => plan
            .targets
            .iter()
            .map(|t| Unit {
                live: t.live.clone(),
                staged: t.staging.clone(),
                rollback: t.rollback.clone(),
            })
            .collect(),
        Some(_) => staged.units.clone(),
    };
    if interrupted.load(Ordering::SeqCst) {
        remove_staging(plan);
        return Err(RestoreError::Interrupted);
    }

    // 3. Stop the services that use the data.
    let quiesced = if plan.stop.is_empty() {
        services::Quiesced::none(runner)
    } else {
        progress.phase("stopping services", 0);
        match services::quiesce(&config.services, &plan.stop, runner, |m| progress.note(m)) {
            Ok(q) => q,
            Err(e) => {
                remove_staging(plan);
                return Err(e.into());
            }
        }
    };
    if interrupted.load(Ordering::SeqCst) {
        remove_staging(plan);
        let down = quiesced.resume();
        return Err(with_services(RestoreError::Interrupted, down));
    }

    // 4. Swap under the journal.
    let rollbacks: Vec<PathBuf> = match &filter {
        None => plan
            .targets
            .iter()
            .filter(|t| t.exists)
            .map(|t| t.rollback.clone())
            .collect(),
        Some(_) => plan.targets.iter().map(|t| t.rollback.clone()).collect(),
    };
    let journal = Journal {
        id: plan.id.clone(),
        stamp: plan.stamp.clone(),
        stopped: quiesced.stopped(),
        units: units.clone(),
        staging: plan.targets.iter().map(|t| t.staging.clone()).collect(),
        rollbacks: rollbacks.clone(),
    };
    progress.phase("swapping", 0);
    let swapped =
        write_atomic(&journal_path(&config.state_dir), &journal).and_then(|()| swap(&units));
    if let Err(e) = swapped {
        let undone = roll_back(&units);
        remove_staging(plan);
        let _ = fs::remove_file(journal_path(&config.state_dir));
        let down = quiesced.resume();
        let cause = match undone {
            Ok(()) => crate::error::chain(&e),
            Err(r) => format!("{}; rolling back also failed: {r}", crate::error::chain(&e)),
        };
        return Err(with_services(
            RestoreError::RolledBack {
                cause,
                services: String::new(),
            },
            down,
        ));
    }
    finish(config, &journal)?;

    // 5. Start the services again.
    let stopped = quiesced.stopped();
    progress.phase("starting services", 0);
    let down = quiesced.resume();
    if !down.is_empty() {
        return Err(RestoreError::ServicesDown(join_errors(&down)));
    }
    Ok(Report {
        id: plan.id.clone(),
        files: staged.files,
        bytes: staged.bytes,
        stopped,
        rollbacks: rollbacks.into_iter().filter(|r| r.exists()).collect(),
        sqlite_checked: staged.sqlite,
    })
}

fn join_errors(errors: &[ServiceError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

fn with_services(e: RestoreError, down: Vec<ServiceError>) -> RestoreError {
    if down.is_empty() {
        return e;
    }
    let extra = format!("; services did not come back: {}", join_errors(&down));
    match e {
        RestoreError::RolledBack { cause, .. } => RestoreError::RolledBack {
            cause,
            services: extra,
        },
        other => RestoreError::Refused(format!("{other}{extra}")),
    }
}

/// After a complete swap: staging leftovers removed, rollbacks recorded, journal gone.
fn finish(config: &Config, journal: &Journal) -> Result<(), RestoreError> {
    for s in &journal.staging {
        remove_tree(s);
    }
    let path = rollbacks_path(&config.state_dir);
    let mut known: Vec<PathBuf> = fs::read(&path)
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or_default();
    known.extend(journal.rollbacks.iter().filter(|r| r.exists()).cloned());
    write_atomic(&path, &known)?;
    let j = journal_path(&config.state_dir);
    fs::remove_file(&j).map_err(io_err(&j))
}

fn remove_tree(p: &Path) {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = fs::remove_file(p);
        }
        Err(_) => {}
    }
}

fn remove_staging(plan: &Plan) {
    for t in &plan.targets {
        remove_tree(&t.staging);
    }
}

fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

fn sync_parent(p: &Path) -> io::Result<()> {
    match p.parent() {
        Some(d) => crate::fsutil::sync_dir(d),
        None => Ok(()),
    }
}

/// Brings one unit all the way forward, from whatever state it is in.
fn forward(u: &Unit) -> io::Result<()> {
    if !exists(&u.staged) {
        return Ok(()); // already swapped
    }
    if exists(&u.live) {
        if let Some(d) = u.rollback.parent() {
            fs::create_dir_all(d)?;
        }
        fs::rename(&u.live, &u.rollback)?;
    }
    if let Some(d) = u.live.parent() {
        fs::create_dir_all(d)?;
    }
    fs::rename(&u.staged, &u.live)?;
    sync_parent(&u.live)?;
    if exists(&u.rollback) {
        sync_parent(&u.rollback)?;
    }
    Ok(())
}

fn swap(units: &[Unit]) -> Result<(), RestoreError> {
    for (i, u) in units.iter().enumerate() {
        forward(u).map_err(io_err(&u.live))?;
        if i == 0 {
            crate::fault::crash_point("restore-after-first-unit");
        }
    }
    Ok(())
}

/// Undoes the units, newest first: new data back to staging, old data back in place.
fn roll_back(units: &[Unit]) -> io::Result<()> {
    for u in units.iter().rev() {
        if exists(&u.staged) {
            // Not swapped, or only moved aside.
            if !exists(&u.live) && exists(&u.rollback) {
                fs::rename(&u.rollback, &u.live)?;
            }
            continue;
        }
        if exists(&u.live) {
            fs::rename(&u.live, &u.staged)?;
        }
        if exists(&u.rollback) {
            fs::rename(&u.rollback, &u.live)?;
        }
        sync_parent(&u.live)?;
    }
    Ok(())
}

/// What staging produced.
struct Staged {
    files: u64,
    bytes: u64,
    sqlite: Vec<PathBuf>,
    /// Per-file units, for `--path` restores.
    units: Vec<Unit>,
}

fn target_of<'a>(plan: &'a Plan, path: &[u8]) -> Option<&'a Target> {
    plan.targets
        .iter()
        .filter(|t| safety::under(t.prefix.as_bytes(), path))
        .max_by_key(|t| t.prefix.len())
}

fn staged_path(t: &Target, path: &[u8], base: &Path) -> PathBuf {
    let rel = &path[t.prefix.len()..];
    let rel = rel.strip_prefix(b"/").unwrap_or(rel);
    if rel.is_empty() {
        base.to_path_buf()
    } else {
        base.join(std::ffi::OsStr::from_bytes(rel))
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn chown(path: &Path, uid: u64, gid: u64) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid as u32), Some(gid as u32))
}

/// Extracts into the staging folders, checking every file against the manifest.
fn stage(
    plan: &Plan,
    filter: Option<&GlobSet>,
    progress: &dyn Progress,
    interrupted: &AtomicBool,
) -> Result<Staged, RestoreError> {
    let archive_path = &plan.archive;
    let corrupt = |m: String| {
        RestoreError::Archive(ArchiveError::Corrupt {
            path: archive_path.clone(),
            message: m,
        })
    };
    let (stream, decoder) = archive::decompressed(archive_path)?;
    let included = |path: &[u8]| match filter {
        None => true,
        Some(g) => {
            let mut abs = b"/".to_vec();
            abs.extend_from_slice(path);
            g.is_match(Path::new(std::ffi::OsStr::from_bytes(&abs)))
        }
    };
    let root = is_root();
    let mut keys: Vec<[u8; 16]> = Vec::new();
    let mut dirs: Vec<(PathBuf, u32, u64, u64, u64)> = Vec::new();
    let mut staged = Staged {
        files: 0,
        bytes: 0,
        sqlite: Vec::new(),
        units: Vec::new(),
    };
    let mut manifest_checked = false;
    let mut buf = vec![0u8; 256 * 1024];
    let mut tar = tar::Archive::new(stream);
    let entries = tar.entries().map_err(io_err(archive_path))?;
    for entry in entries {
        if interrupted.load(Ordering::SeqCst) {
            return Err(RestoreError::Interrupted);
        }
        let mut entry = entry.map_err(|e| corrupt(format!("reading the archive: {e}")))?;
        let raw = entry.path_bytes().into_owned();
        let path: Vec<u8> = {
            let mut p = raw.as_slice();
            while let Some(r) = p.strip_suffix(b"/") {
                p = r;
            }
            p.to_vec()
        };
        let kind = entry.header().entry_type();
        if path == MANIFEST_PATH.as_bytes() {
            manifest_checked = true;
            check_manifest(&mut entry, &keys, &included).map_err(corrupt)?;
            continue;
        }
        let Some(t) = target_of(plan, &path) else {
            continue; // .steward/backup.json
        };
        if !included(&path) && kind != EntryType::Directory {
            continue;
        }
        let dest = staged_path(t, &path, &t.staging);
        let h = entry.header();
        let mode = h.mode().unwrap_or(0o600) & 0o7777;
        let (uid, gid) = (h.uid().unwrap_or(0), h.gid().unwrap_or(0));
        let mtime = h.mtime().unwrap_or(0);
        progress.advance(entry.size());
        match kind {
            EntryType::Directory => {
                if filter.is_none() || included(&path) {
                    fs::create_dir_all(&dest).map_err(io_err(&dest))?;
                    dirs.push((dest, mode, mtime, uid, gid));
                }
            }
            EntryType::Regular | EntryType::Continuous => {
                if let Some(d) = dest.parent() {
                    fs::create_dir_all(d).map_err(io_err(d))?;
                }
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&dest)
                    .map_err(io_err(&dest))?;
                let mut h = Sha256::new();
                let mut first = [0u8; 16];
                let mut total = 0u64;
                loop {
                    let n = entry.read(&mut buf).map_err(|e| {
                        corrupt(format!("reading {}: {e}", String::from_utf8_lossy(&path)))
                    })?;
                    if n == 0 {
                        break;
                    }
                    if total < 16 {
                        let k = (16 - total as usize).min(n);
                        first[total as usize..total as usize + k].copy_from_slice(&buf[..k]);
                    }
                    h.update(&buf[..n]);
                    f.write_all(&buf[..n]).map_err(io_err(&dest))?;
                    total += n as u64;
                }
                keys.push(entry_key(&path, &h.finalize().into()));
                f.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(io_err(&dest))?;
                f.set_modified(UNIX_EPOCH + Duration::from_secs(mtime))
                    .map_err(io_err(&dest))?;
                drop(f);
                if root {
                    chown(&dest, uid, gid).map_err(io_err(&dest))?;
                }
                if &first == crate::backup::walk::SQLITE_HEADER {
                    staged.sqlite.push(dest.clone());
                }
                staged.files += 1;
                staged.bytes += total;
                if filter.is_some() {
                    staged.units.push(unit_for(t, &path));
                }
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| {
                        corrupt(format!(
                            "symlink {} has no target",
                            String::from_utf8_lossy(&path)
                        ))
                    })?
                    .into_owned();
                if let Some(d) = dest.parent() {
                    fs::create_dir_all(d).map_err(io_err(d))?;
                }
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&link), &dest)
                    .map_err(io_err(&dest))?;
                if root {
                    chown(&dest, uid, gid).map_err(io_err(&dest))?;
                }
                if filter.is_some() {
                    staged.units.push(unit_for(t, &path));
                }
            }
            EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| {
                        corrupt(format!(
                            "hard link {} has no target",
                            String::from_utf8_lossy(&path)
                        ))
                    })?
                    .into_owned();
                let src_t = target_of(plan, &link).ok_or_else(|| {
                    corrupt(format!(
                        "hard link {} leaves the restore",
                        String::from_utf8_lossy(&path)
                    ))
                })?;
                let src = staged_path(src_t, &link, &src_t.staging);
                if !exists(&src) {
                    // With --path the link's first name may be filtered out: copy it then.
                    continue;
                }
                if let Some(d) = dest.parent() {
                    fs::create_dir_all(d).map_err(io_err(d))?;
                }
                fs::hard_link(&src, &dest).map_err(io_err(&dest))?;
                if filter.is_some() {
                    staged.units.push(unit_for(t, &path));
                }
            }
            _ => {
                return Err(corrupt(format!(
                    "entry {} has an unsupported type",
                    String::from_utf8_lossy(&path)
                )));
            }
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
    // Folders last, deepest first, so adding files did not change their times.
    for (d, mode, mtime, uid, gid) in dirs.iter().rev() {
        fs::set_permissions(d, fs::Permissions::from_mode(*mode)).map_err(io_err(d))?;
        let f = File::open(d).map_err(io_err(d))?;
        f.set_modified(UNIX_EPOCH + Duration::from_secs(*mtime))
            .map_err(io_err(d))?;
        if root {
            chown(d, *uid, *gid).map_err(io_err(d))?;
        }
    }
    for db in &staged.sqlite {
        check_sqlite(db)?;
    }
    // Durable before the swap can expose it: one flush per filesystem instead of an
    // fsync per file.
    for t in &plan.targets {
        if exists(&t.staging) {
            crate::fsutil::sync_filesystem(&t.staging).map_err(io_err(&t.staging))?;
        }
    }
    Ok(staged)
}

fn unit_for(t: &Target, path: &[u8]) -> Unit {
    Unit {
        live: staged_path(t, path, &t.live),
        staged: staged_path(t, path, &t.staging),
        rollback: staged_path(t, path, &t.rollback),
    }
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
    let uri = format!("file:{}?immutable=1", db.display());
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

/// What `resume` did.
#[derive(Debug, Serialize)]
pub struct Resumed {
    pub id: String,
    pub units: usize,
    pub started: Vec<String>,
    pub rollbacks: Vec<PathBuf>,
}

/// Finishes an interrupted restore from its journal: every unit is brought forward (the
/// staged data was verified before the journal was written), then the services it had
/// stopped are started.
pub fn resume(config: &Config, runner: &dyn Runner) -> Result<Option<Resumed>, RestoreError> {
    let Some(journal) = pending(&config.state_dir)? else {
        return Ok(None);
    };
    for u in &journal.units {
        forward(u).map_err(io_err(&u.live))?;
    }
    finish(config, &journal)?;
    let down = services::start_named(&config.services, &journal.stopped, runner);
    if !down.is_empty() {
        return Err(RestoreError::ServicesDown(join_errors(&down)));
    }
    Ok(Some(Resumed {
        id: journal.id,
        units: journal.units.len(),
        started: journal.stopped,
        rollbacks: journal
            .rollbacks
            .into_iter()
            .filter(|r| r.exists())
            .collect(),
    }))
}

/// Removes the rollback copies earlier restores kept; returns them.
pub fn cleanup(config: &Config) -> Result<Vec<PathBuf>, RestoreError> {
    let path = rollbacks_path(&config.state_dir);
    let known: Vec<PathBuf> = match fs::read(&path) {
        Ok(d) => serde_json::from_slice(&d).map_err(|e| io_err(&path)(io::Error::other(e)))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let mut removed = Vec::new();
    for r in known {
        // Only what a restore made: the name says so.
        if r.to_string_lossy().contains(".steward-rollback-") && exists(&r) {
            remove_tree(&r);
            removed.push(r);
        }
    }
    write_atomic(&path, &Vec::<PathBuf>::new())?;
    Ok(removed)
}
