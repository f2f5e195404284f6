//! Differential backups: which full backup a new one builds on, and for each walked entry
//! whether it changed since that base (the fingerprint's facts against the base's
//! [`index`](super::index)). Depth one: a differential always builds on a full backup, so a
//! restore needs at most two archives.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::index::{self, EntryKind, Index, Indexed};
use super::walk::{Entry, Kind};
use crate::catalog::{BackupRecord, Catalog, CatalogError};
use crate::config::BackupSet;

/// A differential in the making: its base and what the base's tree held.
pub struct DiffBuild {
    pub base: BackupRecord,
    /// The base's entries not yet met by the walk; what is left at the end was deleted.
    pub index: Index,
    /// Files this archive holds (the others are carried from the base).
    pub stored: u64,
}

/// Why no differential was taken: said in the run's notes.
#[derive(Debug, PartialEq)]
pub enum WhyFull {
    /// Differentials are off for the set, or `--full`.
    Asked,
    /// No verified full backup of the set to build on.
    NoBase,
    /// The base is older than `full-age`.
    BaseTooOld(String),
    /// The base is dated after now: the clock went back.
    BaseInFuture(String),
    /// The base's index is missing or damaged (a new host after `reindex`).
    NoIndex(String),
    /// The set's paths or rules changed since the base.
    RulesChanged(String),
    /// This share of the set's bytes changed since the base, above `full-share`.
    TooMuchChanged(f64),
    /// An entry changed between folder and non-folder (plain `tar` cannot lay one over
    /// the other).
    KindChanged(String),
}

impl std::fmt::Display for WhyFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WhyFull::Asked => write!(f, "a full backup was asked for"),
            WhyFull::NoBase => write!(f, "no verified full backup to build on"),
            WhyFull::BaseTooOld(b) => write!(f, "the base {b} is older than full-age"),
            WhyFull::BaseInFuture(b) => write!(
                f,
                "the base {b} is dated after now: the clock went back (check the host's time)"
            ),
            WhyFull::NoIndex(b) => write!(f, "the base {b} has no tree index in the state dir"),
            WhyFull::RulesChanged(b) => {
                write!(f, "the set's paths or excludes changed since the base {b}")
            }
            WhyFull::TooMuchChanged(p) => {
                write!(
                    f,
                    "{p:.0} % of the set's bytes would go into a differential (changed since \
                     the base, or databases and hard-linked files, always archived again), \
                     above full-share"
                )
            }
            WhyFull::KindChanged(p) => {
                write!(f, "{p} changed between folder and file since the base")
            }
        }
    }
}

/// The archive path of an entry (its absolute path without the leading `/`).
pub fn archive_name(path: &Path) -> Option<&[u8]> {
    let b = path.as_os_str().as_bytes().strip_prefix(b"/")?;
    (!b.is_empty()).then_some(b)
}

/// The index's kind of a walked entry (`None`: not archived, e.g. a socket).
pub fn kind_of(e: &Entry) -> Option<EntryKind> {
    match &e.kind {
        Kind::Dir => Some(EntryKind::Dir),
        Kind::File => Some(EntryKind::File),
        Kind::Symlink(_) => Some(EntryKind::Symlink),
        Kind::Special(_) => None,
    }
}

/// Whether `e`, with its [`super::walk::entry_facts`] `facts`, is the same as its base entry:
/// same kind and facts, and not a file that is always archived again (a database, a file
/// with several names).
pub fn unchanged<'i>(index: &'i Index, e: &Entry, facts: Option<[u8; 16]>) -> Option<&'i Indexed> {
    let name = archive_name(&e.path)?;
    let was = index.entries.get(name)?;
    let same = Some(was.kind) == kind_of(e)
        && facts == Some(was.facts)
        && was.flags & (index::SQLITE | index::LINKED) == 0
        && (was.kind != EntryKind::File || e.meta.nlink() == 1);
    same.then_some(was)
}

/// Whether an entry turned from folder to non-folder or back since the base.
pub fn kind_flipped(index: &Index, e: &Entry) -> bool {
    let Some(name) = archive_name(&e.path) else {
        return false;
    };
    match (index.entries.get(name), kind_of(e)) {
        (Some(was), Some(now)) => (was.kind == EntryKind::Dir) != (now == EntryKind::Dir),
        _ => false,
    }
}

/// Chooses the base of the set's next backup, or says why it is a full one. `asked_full`:
/// `--full`. The survey (a stat-only walk) measures how much changed since the base.
pub fn choose(
    state_dir: &Path,
    catalog: &Catalog,
    set: &BackupSet,
    asked_full: bool,
) -> Result<Result<DiffBuild, WhyFull>, CatalogError> {
    let policy = &set.differential;
    if !policy.enabled || asked_full {
        return Ok(Err(WhyFull::Asked));
    }
    let Some(base) = newest_full(catalog, &set.name)? else {
        return Ok(Err(WhyFull::NoBase));
    };
    let age = crate::clock::now() - base.created_at;
    if age < 0 {
        return Ok(Err(WhyFull::BaseInFuture(base.id)));
    }
    if age as u64 > policy.full_age.as_secs() {
        return Ok(Err(WhyFull::BaseTooOld(base.id)));
    }
    let Some(index) = Index::load(&index::index_path(state_dir, &base.id)) else {
        return Ok(Err(WhyFull::NoIndex(base.id)));
    };
    if index.rules != rules(set) {
        return Ok(Err(WhyFull::RulesChanged(base.id)));
    }
    Ok(Ok(DiffBuild {
        base,
        index,
        stored: 0,
    }))
}

/// The set's rules as the index records them.
pub fn rules(set: &BackupSet) -> [u8; 32] {
    let paths: Vec<String> = set
        .paths
        .iter()
        .map(|p| p.value.to_string_lossy().into_owned())
        .collect();
    index::rules_digest(&paths, &set.exclude)
}

/// The newest good full backup of `set`, the only kind a differential builds on.
fn newest_full(catalog: &Catalog, set: &str) -> Result<Option<BackupRecord>, CatalogError> {
    Ok(catalog
        .backups(Some(set))?
        .into_iter()
        .find(|b| b.base.is_none() && b.is_good() && b.path.is_file()))
}

/// What the survey found against a base: the share of bytes that changed (percent), or
/// the first entry whose kind flipped.
#[derive(Default)]
pub struct Measure {
    pub changed_bytes: u64,
    pub total_bytes: u64,
    pub flipped: Option<String>,
}

impl Measure {
    /// Counts one surveyed entry, with its facts.
    pub fn add(&mut self, index: &Index, e: &Entry, facts: Option<[u8; 16]>) {
        if e.kind == Kind::File && !e.sqlite_side_file {
            let size = e.meta.size();
            self.total_bytes += size;
            if unchanged(index, e, facts).is_none() {
                self.changed_bytes += size;
            }
        }
        if self.flipped.is_none() && kind_flipped(index, e) {
            self.flipped = Some(e.path.display().to_string());
        }
    }

    /// The verdict under the set's `full-share`.
    pub fn verdict(&self, full_share: f64) -> Result<(), WhyFull> {
        if let Some(p) = &self.flipped {
            return Err(WhyFull::KindChanged(p.clone()));
        }
        let share = if self.total_bytes == 0 {
            0.0
        } else {
            self.changed_bytes as f64 * 100.0 / self.total_bytes as f64
        };
        if share > full_share {
            return Err(WhyFull::TooMuchChanged(share));
        }
        Ok(())
    }
}

/// The base's entries the walk did not meet, NUL-separated and sorted, and their count.
pub fn deleted(index: &Index) -> (Vec<u8>, u64) {
    let mut names: Vec<&Vec<u8>> = index.entries.keys().collect();
    names.sort();
    let mut out = Vec::new();
    for n in &names {
        out.extend_from_slice(n);
        out.push(0);
    }
    (out, names.len() as u64)
}
