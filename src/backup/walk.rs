//! Walking a backup set: which entries it holds (exclude rules, file kinds, SQLite side
//! files), and the set's fingerprint, computed the same way by the quick "unchanged?" walk
//! and by the archiving walk.

use std::collections::HashSet;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::BackupSet;

/// The 16-byte header every SQLite 3 database starts with.
pub const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Errors while walking a set.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What one walked entry is, as far as the archive cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink(PathBuf),
    /// A socket, FIFO or device: noted and skipped; restore would refuse it anyway.
    Special(&'static str),
}

/// One entry of the set.
#[derive(Debug)]
pub struct Entry {
    pub path: PathBuf,
    pub kind: Kind,
    pub meta: Metadata,
    /// A `-wal`, `-shm` or `-journal` file of a SQLite database in the set: it counts for the
    /// fingerprint (a WAL write changes the data) but is not archived, the snapshot holds it.
    pub sqlite_side_file: bool,
}

/// Visits every entry of `set` in walk order, calling `visit` for each one. Configured paths
/// that are themselves excluded are still skipped. Symlinks are never followed.
pub fn walk_set(
    set: &BackupSet,
    mut visit: impl FnMut(Entry) -> Result<(), crate::backup::BackupError>,
) -> Result<(), crate::backup::BackupError> {
    let excludes = &set.excludes;
    let mut sqlite_cache = SqliteDetector::default();
    for root in &set.paths {
        let mut it = walkdir::WalkDir::new(&root.value)
            .follow_links(false)
            .same_file_system(set.one_file_system)
            .into_iter();
        loop {
            let dent = match it.next() {
                None => break,
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    let path = e.path().map(Path::to_path_buf).unwrap_or_default();
                    let source = e
                        .into_io_error()
                        .unwrap_or_else(|| std::io::Error::other("filesystem loop"));
                    return Err(WalkError::Io { path, source }.into());
                }
            };
            let is_dir = dent.file_type().is_dir();
            if excludes.excluded(dent.path(), is_dir) {
                if is_dir {
                    it.skip_current_dir();
                }
                continue;
            }
            let meta = dent.metadata().map_err(|e| WalkError::Io {
                path: dent.path().to_path_buf(),
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("metadata")),
            })?;
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                Kind::Dir
            } else if ft.is_file() {
                Kind::File
            } else if ft.is_symlink() {
                let target = std::fs::read_link(dent.path()).map_err(|source| WalkError::Io {
                    path: dent.path().to_path_buf(),
                    source,
                })?;
                Kind::Symlink(target)
            } else if ft.is_socket() {
                Kind::Special("socket")
            } else if ft.is_fifo() {
                Kind::Special("fifo")
            } else {
                Kind::Special("device")
            };
            let sqlite_side_file = kind == Kind::File && sqlite_cache.is_side_file(dent.path());
            visit(Entry {
                path: dent.into_path(),
                kind,
                meta,
                sqlite_side_file,
            })?;
        }
    }
    Ok(())
}

/// Remembers which `X` of an `X-wal` sibling were SQLite databases.
#[derive(Default)]
struct SqliteDetector {
    checked: HashSet<PathBuf>,
    databases: HashSet<PathBuf>,
}

impl SqliteDetector {
    fn is_side_file(&mut self, path: &Path) -> bool {
        let name = path
            .file_name()
            .map(std::os::unix::ffi::OsStrExt::as_bytes)
            .unwrap_or_default();
        let base_len = [b"-wal".as_slice(), b"-shm", b"-journal"]
            .iter()
            .find(|s| name.ends_with(s))
            .map(|s| name.len() - s.len());
        let Some(base_len) = base_len else {
            return false;
        };
        let base = path.with_file_name(std::ffi::OsStr::from_bytes(&name[..base_len]));
        if self.checked.insert(base.clone()) && is_sqlite(&base) {
            self.databases.insert(base.clone());
        }
        self.databases.contains(&base)
    }
}

/// True when the file at `path` starts with the SQLite 3 header.
pub fn is_sqlite(path: &Path) -> bool {
    let mut head = [0u8; 16];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head == SQLITE_HEADER
}

/// An order-independent digest of a tree's metadata (paths, kinds, sizes, mtimes, modes,
/// owners, link targets), plus the set's own rules: two walks of an unchanged tree give the
/// same value whatever order the directory listing returns.
#[derive(Default)]
pub struct Fingerprint {
    sum: u128,
    count: u64,
}

impl Fingerprint {
    pub fn add(&mut self, e: &Entry) {
        if e.sqlite_side_file {
            // `-shm` is a memory index readers rewrite, and an empty `-wal` (which any
            // reader, steward's own snapshot included, may create) holds no data: neither
            // means the database changed.
            let name = e.path.as_os_str().as_bytes();
            if name.ends_with(b"-shm") || e.meta.size() == 0 {
                return;
            }
        }
        let mut h = Sha256::new();
        h.update(e.path.as_os_str().as_bytes());
        h.update([0]);
        let tag: &[u8] = match &e.kind {
            Kind::Dir => b"d",
            Kind::File => b"f",
            Kind::Symlink(t) => {
                h.update(t.as_os_str().as_bytes());
                b"l"
            }
            Kind::Special(s) => s.as_bytes(),
        };
        h.update(tag);
        let m = &e.meta;
        if !matches!(e.kind, Kind::Dir) {
            // A directory's mtime changes when a file is added inside it, which its own
            // entries already show; leaving it out keeps excluded churn (a *.tmp file
            // appearing) from forcing a new backup.
            h.update(m.size().to_le_bytes());
            h.update(m.mtime().to_le_bytes());
            h.update(m.mtime_nsec().to_le_bytes());
            h.update(m.ino().to_le_bytes());
        }
        h.update(m.mode().to_le_bytes());
        h.update(m.uid().to_le_bytes());
        h.update(m.gid().to_le_bytes());
        let d = h.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&d[..16]);
        self.sum = self.sum.wrapping_add(u128::from_le_bytes(first));
        self.count += 1;
    }

    /// The final value; the set's paths and excludes are mixed in so that a changed rule
    /// also counts as a change.
    pub fn finish(&self, set: &BackupSet) -> String {
        let mut h = Sha256::new();
        h.update(self.sum.to_le_bytes());
        h.update(self.count.to_le_bytes());
        for p in &set.paths {
            h.update(p.value.as_os_str().as_bytes());
            h.update([0]);
        }
        h.update([1]);
        for e in &set.exclude {
            h.update(e.as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())
    }
}

/// Walks the set for its fingerprint and total size without reading any file content.
pub fn survey(set: &BackupSet) -> Result<(String, u64, u64), crate::backup::BackupError> {
    let mut fp = Fingerprint::default();
    let (mut files, mut bytes) = (0u64, 0u64);
    walk_set(set, |e| {
        fp.add(&e);
        if e.kind == Kind::File && !e.sqlite_side_file {
            files += 1;
            bytes += e.meta.size();
        }
        Ok(())
    })?;
    Ok((fp.finish(set), files, bytes))
}
