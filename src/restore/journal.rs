//! The restore journal and the swap it governs. The journal is written before the first
//! side effect (the staging folders) and rewritten before each step that a crash could
//! interrupt: which services are about to be stopped, the swap, its undoing. So after a
//! SIGKILL or power loss at any moment, `restore --resume` knows whether to finish the
//! swap or undo it, and exactly which services to start again.
//!
//! The swap is made of units (a whole set path, single entries with `--path`, and the
//! `-wal`/`-shm`/`-journal` side files of a restored database, which only go aside). Each
//! unit moves in at most two renames, `live -> rollback` then `staged -> live`, and its
//! progress can be read from the filesystem alone, so forward and backward are both
//! idempotent.

use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::confine::{ConfineError, Dir, split};
use super::plan::{Plan, Target};
use super::{RestoreError, io_err};

/// How far a restore got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Extracting into the staging folders; nothing live touched.
    Staging,
    /// Stopping services; nothing live touched.
    Stopping,
    /// Renaming staged data into place: resume finishes it.
    Swapping,
    /// A failed swap being undone: resume finishes undoing it.
    RollingBack,
    /// The data is settled (new, or old after an undo); only services and clean-up remain.
    Settled,
}

/// The `-wal`, `-shm` and `-journal` files SQLite keeps beside a database: stale ones
/// would be applied to a restored database, so they go aside with the old data.
pub const SQLITE_SIDE_FILES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// A SQLite database the restore writes, with the digest the manifest promises for it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StagedDb {
    pub target: usize,
    /// Below the target (empty when the target is the database file).
    pub rel: Vec<u8>,
    pub sha256: String,
}

/// SHA-256 of an open file.
pub fn sha256(f: &mut std::fs::File) -> io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// A swap unit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unit {
    /// Index into the plan's targets.
    pub target: usize,
    /// Below the target; empty for the whole target.
    pub rel: Vec<u8>,
    /// For a database's side file: its suffix. Such a unit is only moved aside.
    pub side: Option<String>,
    /// The inode of the staged entry, recorded before the swap: the new data, wherever
    /// it is found.
    #[serde(default)]
    pub ino: Option<u64>,
}

impl Unit {
    /// A whole target.
    pub fn whole(target: usize) -> Unit {
        Unit {
            target,
            rel: Vec::new(),
            side: None,
            ino: None,
        }
    }

    /// One entry of a target (`--path`).
    pub fn entry(target: usize, rel: &[u8]) -> Unit {
        Unit {
            target,
            rel: rel.to_vec(),
            side: None,
            ino: None,
        }
    }
}

/// What an interrupted restore needs to be finished or undone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    pub id: String,
    pub phase: Phase,
    pub plan: Plan,
    pub units: Vec<Unit>,
    /// Services steward stopped, or was about to stop, in stop order.
    pub stopped: Vec<String>,
    /// Restored databases and the digests the manifest promises for them.
    pub databases: Vec<StagedDb>,
    /// Once an interruption was settled (by `--guard`): the outcome and why, for the
    /// `--resume` that starts the services after.
    #[serde(default)]
    pub settled: Option<(String, String)>,
}

/// Where the journal of a restore in progress lives.
pub fn journal_path(state_dir: &Path) -> PathBuf {
    state_dir.join("restore-journal.json")
}

/// Writes `value` as JSON to `path` atomically (temp file, fsync, rename, fsync dir).
pub fn write_atomic(path: &Path, value: &impl Serialize) -> Result<(), RestoreError> {
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

impl Journal {
    /// A journal for `plan`, before anything is written.
    pub fn new(plan: &Plan) -> Journal {
        Journal {
            id: plan.id.clone(),
            phase: Phase::Staging,
            plan: plan.clone(),
            units: Vec::new(),
            stopped: Vec::new(),
            databases: Vec::new(),
            settled: None,
        }
    }

    /// Makes this state durable.
    pub fn save(&self, state_dir: &Path) -> Result<(), RestoreError> {
        crate::fault::fail_point("restore-journal-save")
            .map_err(io_err(&journal_path(state_dir)))?;
        write_atomic(&journal_path(state_dir), self)
    }

    /// Removes the journal: the restore is over.
    pub fn remove(state_dir: &Path) -> Result<(), RestoreError> {
        let j = journal_path(state_dir);
        match fs::remove_file(&j) {
            Ok(()) => crate::fsutil::sync_dir(state_dir).map_err(io_err(state_dir)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&j)(e)),
        }
    }

    /// The rollback copies this restore made that still exist.
    pub fn rollbacks(&self) -> Vec<PathBuf> {
        self.rollback_pairs().into_iter().map(|(_, p)| p).collect()
    }

    /// (live path, rollback copy) for each copy this restore made that still exists.
    pub fn rollback_pairs(&self) -> Vec<(PathBuf, PathBuf)> {
        self.plan
            .targets
            .iter()
            .map(|t| (t.live.clone(), t.rollback_path()))
            .filter(|(_, p)| fs::symlink_metadata(p).is_ok())
            .collect()
    }

    /// Removes the staging folders (whatever is left in them).
    pub fn remove_staging(&self) {
        for t in &self.plan.targets {
            let p = t.staging_path();
            if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                // Never follows symlinks inside the tree, and never empties a mount.
                let _ = crate::fsutil::remove_tree(&p);
            }
        }
    }
}

/// The journal of an interrupted restore, if there is one.
pub fn pending(state_dir: &Path) -> Result<Option<Journal>, RestoreError> {
    let p = journal_path(state_dir);
    match fs::read(&p) {
        Ok(data) => serde_json::from_slice(&data).map(Some).map_err(|e| {
            io_err(&p)(io::Error::other(format!(
                "{e}; the restore journal is unreadable (written by another version?)"
            )))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&p)(e)),
    }
}

/// Refuses to begin what would meet an interrupted restore's data or copies.
pub fn refuse_if_pending(state_dir: &Path) -> Result<(), RestoreError> {
    if pending(state_dir)?.is_some() {
        return Err(RestoreError::Refused(
            "an interrupted restore is pending; run `steward restore --resume` first".into(),
        ));
    }
    Ok(())
}

/// Where a unit's three names live, each as (folder, name).
struct Places {
    live: (Dir, Vec<u8>),
    staged: Option<(Dir, Vec<u8>)>,
    rollback: Option<(Dir, Vec<u8>)>,
}

fn with_suffix(name: &[u8], side: &Option<String>) -> Vec<u8> {
    let mut n = name.to_vec();
    if let Some(s) = side {
        n.extend_from_slice(s.as_bytes());
    }
    n
}

/// Opens the folders of `u`. `create_rollback` makes the rollback folders a `--path`
/// unit needs; the live folders of a `--path` unit are created when missing.
fn places(t: &Target, u: &Unit, create_rollback: bool) -> Result<Places, ConfineError> {
    let parent = Dir::open_trusted(&t.base)?.walk(t.rel_parent.as_bytes(), false)?;
    if u.rel.is_empty() {
        let staged = match (&u.side, parent.open_dir(t.staging.as_bytes())) {
            (None, Ok(d)) => Some((d, t.name.as_bytes().to_vec())),
            _ => None,
        };
        return Ok(Places {
            live: (
                parent.walk(b"", false)?,
                with_suffix(t.name.as_bytes(), &u.side),
            ),
            staged,
            rollback: Some((parent, with_suffix(t.rollback.as_bytes(), &u.side))),
        });
    }
    let (dir, leaf) = split(&u.rel);
    let leaf = with_suffix(leaf, &u.side);
    let live = parent.open_dir(t.name.as_bytes())?.walk(dir, true)?;
    let staged = if u.side.is_some() {
        None
    } else {
        parent
            .open_dir(t.staging.as_bytes())
            .and_then(|c| c.open_dir(t.name.as_bytes()))
            .and_then(|d| d.walk(dir, false))
            .ok()
            .map(|d| (d, leaf.clone()))
    };
    let rollback = if create_rollback {
        Some(parent.create_dir(t.rollback.as_bytes())?.walk(dir, true)?)
    } else {
        parent
            .open_dir(t.rollback.as_bytes())
            .and_then(|d| d.walk(dir, false))
            .ok()
    };
    Ok(Places {
        live: (live, leaf.clone()),
        staged,
        rollback: rollback.map(|d| (d, leaf)),
    })
}

/// The live path of `u`.
pub fn unit_path(plan: &Plan, u: &Unit) -> PathBuf {
    let t = &plan.targets[u.target];
    let mut p = t.live.clone();
    if !u.rel.is_empty() {
        p = p.join(std::ffi::OsStr::from_bytes(&u.rel));
    }
    match &u.side {
        Some(s) => PathBuf::from(format!("{}{s}", p.display())),
        None => p,
    }
}

fn sync(p: &Places) -> Result<(), ConfineError> {
    p.live.0.sync()?;
    if let Some((d, _)) = &p.rollback {
        d.sync()?;
    }
    Ok(())
}

fn refused(plan: &Plan, u: &Unit, what: &str) -> ConfineError {
    ConfineError::Refused {
        path: unit_path(plan, u),
        what: what.into(),
    }
}

/// The staged place of `u`, its folders created when missing (an undo may need them).
fn staged_place(t: &Target, u: &Unit) -> Result<(Dir, Vec<u8>), ConfineError> {
    let parent = Dir::open_trusted(&t.base)?.walk(t.rel_parent.as_bytes(), false)?;
    let c = parent.create_dir(t.staging.as_bytes())?;
    if u.rel.is_empty() {
        return Ok((c, t.name.as_bytes().to_vec()));
    }
    let (dir, leaf) = split(&u.rel);
    Ok((
        c.create_dir(t.name.as_bytes())?.walk(dir, true)?,
        leaf.to_vec(),
    ))
}

/// Records the inode of each unit's staged entry: wherever it is later found, it is the
/// new data, so a unit's state can be read from the filesystem whatever step was cut.
pub fn record_inodes(plan: &Plan, units: &mut [Unit]) -> Result<(), ConfineError> {
    injected("restore-record-inodes", &plan.targets[0].live)?;
    for u in units.iter_mut().filter(|u| u.side.is_none()) {
        let (d, n) = staged_place(&plan.targets[u.target], u)?;
        u.ino = d.ino(&n);
    }
    Ok(())
}

/// The rollback place of `u`, which must be free: old data is never overwritten.
fn free_rollback<'p>(
    plan: &Plan,
    u: &Unit,
    p: &'p Places,
) -> Result<(&'p Dir, &'p [u8]), ConfineError> {
    let (rd, rn) = p
        .rollback
        .as_ref()
        .ok_or_else(|| refused(plan, u, "no place to keep the current data"))?;
    if rd.exists(rn) {
        return Err(refused(plan, u, "its rollback name is taken"));
    }
    Ok((rd, rn))
}

/// Moves the old data that an exchange left at the staged name to the rollback name.
fn old_to_rollback(plan: &Plan, u: &Unit, p: &Places) -> Result<(), ConfineError> {
    if let Some((sd, sn)) = &p.staged
        && sd.exists(sn)
    {
        let (rd, rn) = free_rollback(plan, u, p)?;
        sd.rename(sn, rd, rn)?;
        sd.sync()?;
    }
    Ok(())
}

/// Brings one unit all the way forward, from whatever state it is in. Where the
/// filesystem can, staged and live data are exchanged in one step, so the live name is
/// never missing; the old data then goes to the rollback name.
fn forward(plan: &Plan, u: &Unit) -> Result<(), ConfineError> {
    injected("restore-forward", &unit_path(plan, u))?;
    let t = &plan.targets[u.target];
    let p = places(t, u, !u.rel.is_empty())?;
    let (live_dir, live_name) = &p.live;
    if u.side.is_some() {
        if live_dir.exists(live_name)
            && let Some((rd, rn)) = &p.rollback
            && !rd.exists(rn)
        {
            live_dir.rename(live_name, rd, rn)?;
            sync(&p)?;
        }
        return Ok(());
    }
    let live_is_new = u.ino.is_some() && live_dir.ino(live_name) == u.ino;
    if !live_is_new {
        let (sd, sn) = p
            .staged
            .as_ref()
            .filter(|(d, n)| d.exists(n) && (u.ino.is_none() || d.ino(n) == u.ino))
            .ok_or_else(|| refused(plan, u, "its staged data is gone"))?;
        if !live_dir.exists(live_name) {
            sd.rename(sn, live_dir, live_name)?;
            sd.sync()?;
            return sync(&p);
        }
        if !plan.in_place {
            return Err(refused(
                plan,
                u,
                "appeared since the restore was planned; --to never overwrites",
            ));
        }
        if !sd.exchange(sn, live_dir, live_name)? {
            // No atomic exchange here: aside, then in.
            let (rd, rn) = free_rollback(plan, u, &p)?;
            live_dir.rename(live_name, rd, rn)?;
            crate::fault::crash_point("restore-unit-moved-aside");
            sd.rename(sn, live_dir, live_name)?;
            sd.sync()?;
            return sync(&p);
        }
        crate::fault::crash_point("restore-unit-exchanged");
    }
    old_to_rollback(plan, u, &p)?;
    sync(&p)
}

/// Undoes one unit: new data back to the staged name, old data back in place.
fn backward(plan: &Plan, u: &Unit) -> Result<(), ConfineError> {
    injected("restore-backward", &unit_path(plan, u))?;
    let t = &plan.targets[u.target];
    let p = places(t, u, false)?;
    let (live_dir, live_name) = &p.live;
    if u.side.is_some() {
        if !live_dir.exists(live_name)
            && let Some((rd, rn)) = &p.rollback
            && rd.exists(rn)
        {
            rd.rename(rn, live_dir, live_name)?;
            sync(&p)?;
        }
        return Ok(());
    }
    let live_is_new = u.ino.is_some() && live_dir.ino(live_name) == u.ino;
    if !live_is_new {
        // Not swapped, or only moved aside.
        if !live_dir.exists(live_name)
            && let Some((rd, rn)) = &p.rollback
            && rd.exists(rn)
        {
            rd.rename(rn, live_dir, live_name)?;
        }
        return sync(&p);
    }
    let p = places(t, u, !u.rel.is_empty())?;
    old_to_rollback(plan, u, &p)?;
    let (live_dir, live_name) = &p.live;
    let (sd, sn) = staged_place(t, u)?;
    match &p.rollback {
        Some((rd, rn)) if rd.exists(rn) => {
            if rd.exchange(rn, live_dir, live_name)? {
                rd.rename(rn, &sd, &sn)?;
            } else {
                live_dir.rename(live_name, &sd, &sn)?;
                rd.rename(rn, live_dir, live_name)?;
            }
        }
        _ => live_dir.rename(live_name, &sd, &sn)?,
    }
    sd.sync()?;
    sync(&p)
}

/// A test's injected failure (`STEWARD_FAIL_AT`), as the error of the step it stands for.
fn injected(point: &str, path: &Path) -> Result<(), ConfineError> {
    crate::fault::fail_point(point).map_err(|source| ConfineError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Brings every unit forward, in order.
pub fn swap(journal: &Journal) -> Result<(), RestoreError> {
    for (i, u) in journal.units.iter().enumerate() {
        forward(&journal.plan, u).map_err(RestoreError::Confined)?;
        if i == 0 {
            crate::fault::crash_point("restore-after-first-unit");
        }
    }
    Ok(())
}

/// Undoes every unit, newest first.
pub fn roll_back(journal: &Journal) -> Result<(), RestoreError> {
    for u in journal.units.iter().rev() {
        backward(&journal.plan, u).map_err(RestoreError::Confined)?;
    }
    Ok(())
}

/// After the swap: every restored database holds exactly the bytes the manifest promises
/// and has no side file beside it that SQLite would apply.
pub fn check_databases(journal: &Journal) -> Result<(), RestoreError> {
    if let Some(t) = journal.plan.targets.first() {
        injected("restore-check-db", &t.live).map_err(RestoreError::Confined)?;
    }
    for db in &journal.databases {
        let t = &journal.plan.targets[db.target];
        let shown = unit_path(&journal.plan, &Unit::entry(db.target, &db.rel));
        let parent = Dir::open_trusted(&t.base)
            .and_then(|b| b.walk(t.rel_parent.as_bytes(), false))
            .map_err(RestoreError::Confined)?;
        let (dir, leaf) = if db.rel.is_empty() {
            (parent, t.name.as_bytes().to_vec())
        } else {
            let (d, leaf) = split(&db.rel);
            let dir = parent
                .open_dir(t.name.as_bytes())
                .and_then(|p| p.walk(d, false))
                .map_err(RestoreError::Confined)?;
            (dir, leaf.to_vec())
        };
        let mut f = dir.open_file(&leaf).map_err(RestoreError::Confined)?;
        let digest = sha256(&mut f).map_err(io_err(&shown))?;
        if digest != db.sha256 {
            return Err(RestoreError::Integrity {
                path: shown,
                detail: format!(
                    "after the swap its sha256 is {digest}, the manifest says {}",
                    db.sha256
                ),
            });
        }
        for side in SQLITE_SIDE_FILES {
            if dir.exists(&with_suffix(&leaf, &Some(side.to_string()))) {
                return Err(RestoreError::Integrity {
                    path: shown,
                    detail: format!("a {side} file is still beside it"),
                });
            }
        }
    }
    Ok(())
}
