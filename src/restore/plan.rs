//! What a restore will do. The backup must be what the catalog says it is (ID, set and
//! time agree with the file), and the targets come from the configuration for an
//! in-place restore, never from the archive: an archive whose recorded paths differ from
//! the set's is refused, naming both. `--to DIR` takes the archive's paths, confined to DIR.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::RestoreError;
use crate::backup::archive;
use crate::catalog::BackupRecord;
use crate::config::Config;

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
    /// Also start the quiesced services that were not running before the restore.
    pub start_stopped: bool,
    /// Swap although processes hold files under the restored paths open.
    pub ignore_open_files: bool,
    /// Replace live entries the set's exclude rules leave out too, instead of carrying
    /// them over (they go to the rollback copy with the rest).
    pub replace_excluded: bool,
}

/// One restored set path. Every operation on it starts from `base`, a trusted folder, and
/// walks `rel_parent` without following symlinks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// Its path inside the archive (the absolute path without the leading `/`).
    pub prefix: String,
    /// Where it goes (shown to people; never resolved again as a whole).
    pub live: PathBuf,
    /// The configured path's parent, or `--to DIR`.
    pub base: PathBuf,
    /// Folders from `base` to the parent of `live` (empty in place).
    pub rel_parent: String,
    /// The last name of `live`.
    pub name: String,
    /// The staging folder's name beside `live`: unique per restore, owned by the journal.
    pub staging: String,
    /// The name the current data is moved aside to, beside `live`.
    pub rollback: String,
    /// Whether something was at `live` when the restore was planned.
    pub exists: bool,
}

impl Target {
    fn beside(&self, name: &str) -> PathBuf {
        self.live.with_file_name(name)
    }

    /// The staging folder's path.
    pub fn staging_path(&self) -> PathBuf {
        self.beside(&self.staging)
    }

    /// Where the current data is kept after the swap.
    pub fn rollback_path(&self) -> PathBuf {
        self.beside(&self.rollback)
    }
}

/// What a restore will do.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Live entries the set's exclude rules leave out, which an in-place restore carries
    /// over (none with `--replace-excluded` or `--to`).
    #[serde(default)]
    pub excluded: Carried,
    /// The exclude rules whose live entries are carried over (the set's, at plan time);
    /// empty with `--replace-excluded` or `--to`.
    #[serde(default)]
    pub carry_rules: Vec<String>,
    /// A differential's base: staged first where the differential does not replace or
    /// delete an entry. `None`: a full backup, restored alone.
    #[serde(default)]
    pub base: Option<PlanBase>,
}

/// The full backup under a differential.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanBase {
    pub id: String,
    pub archive: PathBuf,
    /// The base archive's SHA-256, as the differential recorded it.
    pub sha256: String,
}

/// Checks a path recorded in `backup.json`: absolute, no `.`, `..` or empty parts, not `/`.
fn plain_absolute(p: &str) -> Option<&str> {
    let rel = p.strip_prefix('/')?;
    let ok = !rel.is_empty()
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    ok.then_some(rel)
}

fn overlapping(paths: &[String]) -> Option<(&String, &String)> {
    for a in paths {
        for b in paths {
            if a != b && b.starts_with(a.as_str()) && b.as_bytes().get(a.len()) == Some(&b'/') {
                return Some((a, b));
            }
        }
    }
    None
}

/// A name no earlier restore used: the time, the process and a counter of nanoseconds.
pub fn unique_suffix(stamp: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{stamp}-{}-{nanos:x}", std::process::id())
}

fn split_last(prefix: &str) -> (&str, &str) {
    match prefix.rsplit_once('/') {
        Some((parent, name)) => (parent, name),
        None => ("", prefix),
    }
}

/// Works out what restoring `record` will do, reading only the archive's trailer.
pub fn plan(
    config: &Config,
    record: &BackupRecord,
    base: Option<&BackupRecord>,
    opts: &RestoreOptions,
) -> Result<Plan, RestoreError> {
    let meta = archive::read_meta(&record.path)?;
    archive::check_identity(&record.path, &meta)?;
    let plan_base = match &meta.base {
        None => None,
        Some(want) => Some(plan_base(record, want, base)?),
    };
    if meta.id != record.id || meta.set != record.set {
        return Err(RestoreError::Refused(format!(
            "{}: holds the backup {} of set {}, but the catalog says {} of {}",
            record.path.display(),
            meta.id,
            meta.set,
            record.id,
            record.set
        )));
    }
    let stamp = crate::clock::stamp(crate::clock::now_ts());
    let suffix = unique_suffix(&stamp);
    let mut recorded = Vec::new();
    for p in &meta.paths {
        if plain_absolute(p).is_none() {
            return Err(RestoreError::Refused(format!(
                "{}: backup.json lists the path {p:?}, which is not a plain absolute path",
                record.path.display()
            )));
        }
        recorded.push(p.clone());
    }
    if let Some((a, b)) = overlapping(&recorded) {
        return Err(RestoreError::Refused(format!(
            "{}: backup.json lists {a} and {b}, one inside the other",
            record.path.display()
        )));
    }
    let places = match &opts.to {
        None => in_place(config, record, &meta.set, &recorded)?,
        Some(dir) => into_folder(dir, &recorded)?,
    };
    let targets: Vec<Target> = places
        .into_iter()
        .map(|(prefix, base, rel_parent, name, live)| Target {
            exists: fs::symlink_metadata(&live).is_ok(),
            staging: format!(".{name}.steward-staging-{suffix}"),
            rollback: free_name(&live, &format!("{name}.steward-rollback-{stamp}")),
            prefix,
            live,
            base,
            rel_parent,
            name,
        })
        .collect();
    let in_place = opts.to.is_none();
    let stop = match config.set(&meta.set) {
        Some(set) if in_place && !opts.no_quiesce => set.quiesce.clone(),
        _ => Vec::new(),
    };
    let set = config.set(&meta.set).filter(|_| in_place);
    if in_place && opts.paths.is_empty() {
        refuse_mounts(&targets)?;
    }
    let mut plan = Plan {
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
        excluded: Carried::default(),
        carry_rules: Vec::new(),
        base: plan_base,
    };
    if let Some(set) = set
        && !opts.replace_excluded
    {
        plan.carry_rules.clone_from(&set.exclude);
    }
    Ok(plan)
}

/// A differential's base, which must be the very full backup it was taken against, known
/// to the catalog and not failed.
fn plan_base(
    record: &BackupRecord,
    want: &archive::BaseRef,
    base: Option<&BackupRecord>,
) -> Result<PlanBase, RestoreError> {
    let refuse = |why: String| {
        Err(RestoreError::Refused(format!(
            "{} is a differential on {}, {why}; nothing was changed",
            record.id, want.id
        )))
    };
    let Some(b) = base.filter(|b| b.id == want.id) else {
        return refuse(
            "which is gone (`steward backups reindex` finds it if it is still on the disk; \
             `restore --from-offsite` fetches both)"
                .into(),
        );
    };
    if b.sha256 != want.sha256 || b.base.is_some() {
        return refuse(format!(
            "but {} is another archive than the one it was taken against",
            b.path.display()
        ));
    }
    if b.status == crate::catalog::BackupStatus::Failed {
        return refuse("which failed verification, so neither can be restored".into());
    }
    Ok(PlanBase {
        id: b.id.clone(),
        archive: b.path.clone(),
        sha256: b.sha256.clone(),
    })
}

/// Where a recorded path goes: (prefix, base, rel_parent, name, live).
type Place = (String, PathBuf, String, String, PathBuf);

/// In place: the set's configured paths, which must be the archive's.
fn in_place(
    config: &Config,
    record: &BackupRecord,
    set_name: &str,
    recorded: &[String],
) -> Result<Vec<Place>, RestoreError> {
    let mut places = Vec::new();
    let set = config.set(set_name).ok_or_else(|| {
        RestoreError::Refused(format!(
            "the set {set_name} is not in the configuration, so it has nowhere to go in \
             place; look at it with --to DIR"
        ))
    })?;
    let mut configured: Vec<String> = set
        .paths
        .iter()
        .map(|p| p.value.to_string_lossy().into_owned())
        .collect();
    configured.sort();
    let mut archived = recorded.to_vec();
    archived.sort();
    if archived != configured {
        return Err(RestoreError::Refused(format!(
            "{}: the archive records the paths {archived:?}, but the set {} is \
             configured with {configured:?}; an in-place restore only replaces the \
             configured paths (use --to DIR to look at this archive)",
            record.path.display(),
            set_name
        )));
    }
    for p in configured {
        let live = PathBuf::from(&p);
        let (parent, name) = split_last(p.trim_start_matches('/'));
        places.push((
            p.trim_start_matches('/').to_string(),
            PathBuf::from(format!("/{parent}")),
            String::new(),
            name.to_string(),
            live,
        ));
    }
    Ok(places)
}

/// `--to DIR`: every recorded path under a new or empty folder, nothing overwritten.
fn into_folder(dir: &Path, recorded: &[String]) -> Result<Vec<Place>, RestoreError> {
    let mut places = Vec::new();
    let dir = std::path::absolute(dir).map_err(|source| RestoreError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    // A file (or a link to one) where the folder should be: said plainly, not as
    // the bare EEXIST the staging would meet.
    if fs::metadata(&dir).is_ok_and(|m| !m.is_dir())
        || fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink())
    {
        return Err(RestoreError::Refused(format!(
            "--to {}: not a folder (a file or a link is there); give a new or empty \
             folder",
            dir.display()
        )));
    }
    for p in recorded {
        let prefix = p.trim_start_matches('/');
        let (parent, name) = split_last(prefix);
        let live = dir.join(prefix);
        if fs::symlink_metadata(&live).is_ok() {
            return Err(RestoreError::Refused(format!(
                "{} exists; --to never overwrites, choose an empty folder",
                live.display()
            )));
        }
        places.push((
            prefix.to_string(),
            dir.clone(),
            parent.to_string(),
            name.to_string(),
            live,
        ));
    }
    Ok(places)
}

/// Moving a folder moves what is mounted inside it: the mounted filesystem would end up
/// in the rollback copy, and the restored folder would lack it.
fn refuse_mounts(targets: &[Target]) -> Result<(), RestoreError> {
    for t in targets.iter().filter(|t| t.exists) {
        if let Some(m) = crate::fsutil::mount_inside(&t.live) {
            return Err(RestoreError::Refused(format!(
                "{} is a mount point inside the set path {} (or the path itself): an \
                 in-place restore would move the mounted filesystem aside with the old \
                 data; unmount it first, or restore --to DIR and copy back what you need \
                 (nothing was changed)",
                m.display(),
                t.live.display()
            )));
        }
    }
    Ok(())
}

/// `wanted`, or `wanted-2`, `-3`... when a restore earlier in the same second kept its
/// copy under that name.
fn free_name(live: &Path, wanted: &str) -> String {
    let mut name = wanted.to_string();
    let mut n = 1;
    while fs::symlink_metadata(live.with_file_name(&name)).is_ok() {
        n += 1;
        name = format!("{wanted}-{n}");
    }
    name
}

/// Whether `name` (a file name beside a set path) is a staging folder of a restore.
pub fn is_staging_name(name: &str, of: &str) -> bool {
    name.starts_with(&format!(".{of}.steward-staging-"))
}

/// The parent folder and last name of a configured path.
pub fn parent_and_name(p: &Path) -> Option<(&Path, String)> {
    Some((p.parent()?, p.file_name()?.to_string_lossy().into_owned()))
}

/// How much live data the exclude rules leave out (and a restore keeps).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Carried {
    pub entries: u64,
    pub bytes: u64,
    /// Excluded now, but the backup has an entry by that name: the backup's is restored.
    #[serde(default)]
    pub backup_has: u64,
}
