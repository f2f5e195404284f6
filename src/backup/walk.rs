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
    /// The consumer of a walk on its own thread went away (an error, an interrupt).
    #[error("stopped by a signal; the partial archive was removed")]
    Stopped,
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
pub fn walk_set<E: From<WalkError>>(
    set: &BackupSet,
    mut visit: impl FnMut(Entry) -> Result<(), E>,
) -> Result<(), E> {
    let mut sqlite_cache = SqliteDetector::default();
    walk_raw(set, |mut e| {
        sqlite_cache.mark(&mut e);
        visit(e)
    })
}

/// [`walk_set`] without the SQLite side-file detection (`sqlite_side_file` is false):
/// that opens the database beside a `-wal` or `-journal` file, and closing any handle on
/// a file drops every POSIX lock the process holds on it, a snapshot's read lock
/// included. So it must run on the thread that takes the snapshots, never ahead of it.
fn walk_raw<E: From<WalkError>>(
    set: &BackupSet,
    mut visit: impl FnMut(Entry) -> Result<(), E>,
) -> Result<(), E> {
    let excludes = &set.excludes;
    // A database named as a set path on its own brings its `-wal` along, as a folder's
    // walk would: a live writer's changes can sit there for hours while the main file's
    // size and time stay the same, and the fingerprint must see them (or the backup is
    // skipped as unchanged). Marked as a side file like any other, it is not archived.
    let mut roots: Vec<PathBuf> = Vec::new();
    for root in &set.paths {
        roots.push(root.value.clone());
        if std::fs::symlink_metadata(&root.value).is_ok_and(|m| m.is_file()) {
            let mut wal = root.value.as_os_str().to_owned();
            wal.push("-wal");
            let wal = PathBuf::from(wal);
            if wal.is_file() && !set.paths.iter().any(|p| p.value == wal) {
                roots.push(wal);
            }
        }
    }
    for root in &roots {
        let mut it = walkdir::WalkDir::new(root)
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
            let meta = match dent.metadata() {
                Ok(m) => m,
                Err(e) => {
                    let source = e
                        .into_io_error()
                        .unwrap_or_else(|| std::io::Error::other("metadata"));
                    // Gone between the listing and the look (a SQLite `-journal` that a
                    // commit deletes, a temp file): nothing is there to back up, as
                    // for a file removed a moment before the walk.
                    if source.kind() == std::io::ErrorKind::NotFound {
                        continue;
                    }
                    return Err(WalkError::Io {
                        path: dent.path().to_path_buf(),
                        source,
                    }
                    .into());
                }
            };
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
            visit(Entry {
                path: dent.into_path(),
                kind,
                meta,
                sqlite_side_file: false,
            })?;
        }
    }
    Ok(())
}

/// What the reading thread of [`walk_set_ahead`] read of a small regular file.
pub enum Ahead {
    /// Its content: up to one byte more than the size it was walked with, so that a file
    /// that grew since shows.
    Content(Vec<u8>),
    /// It could not be opened (vanished, permissions): the archiver reports it.
    OpenFailed(std::io::Error),
}

/// Largest file the reading thread reads ahead.
const AHEAD_MAX: u64 = 32 << 10;
/// Entries handed from thread to thread at a time: one wake-up per batch, not per file.
const BATCH: usize = 32;
/// Batches in flight between the reading thread and the archiver: with [`AHEAD_MAX`],
/// at most 4 MiB of content (two queued, one being filled, one being archived).
const QUEUED: usize = 2;

type Batch<T> = Vec<Result<T, WalkError>>;

/// [`walk_set`] on a thread of its own, with a second thread that opens and reads small
/// regular files ahead: on a tree of many small files, the walk's system calls (read the
/// folder, stat), the reads' (open, read, close) and the archiving each run on their own
/// core. `visit` gets the entries in walk order, with what was read ahead (`None`: read it
/// yourself; also for a file that failed mid-read, so the archiver meets the error
/// itself).
pub fn walk_set_ahead<E: From<WalkError>>(
    set: &BackupSet,
    skip_ahead: &(dyn Fn(&Entry) -> bool + Sync),
    mut visit: impl FnMut(Entry, Option<Ahead>) -> Result<(), E>,
) -> Result<(), E> {
    let thread_error = |source| WalkError::Io {
        path: PathBuf::from("(walking thread)"),
        source,
    };
    std::thread::scope(|s| {
        let (walked_tx, walked_rx) = std::sync::mpsc::sync_channel::<Batch<Entry>>(QUEUED * 2);
        let (read_tx, read_rx) =
            std::sync::mpsc::sync_channel::<Batch<(Entry, Option<Ahead>)>>(QUEUED);
        let walker = std::thread::Builder::new()
            .name("steward-walk".into())
            .spawn_scoped(s, move || {
                // Tests make the thread die to see that the archive is not cut short.
                let die = crate::fault::enabled("walk-thread-panics");
                let mut batch = Vec::with_capacity(BATCH);
                let walked = walk_raw::<WalkError>(set, |e| {
                    assert!(!die, "the walking thread panics (test)");
                    batch.push(Ok(e));
                    if batch.len() == BATCH {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                        // The archiver stopped (an error, an interrupt): so does the walk.
                        walked_tx.send(full).map_err(|_| WalkError::Stopped)?;
                    }
                    Ok(())
                });
                if let Err(e) = walked {
                    batch.push(Err(e));
                }
                let _ = walked_tx.send(batch);
            })
            .map_err(|e| E::from(thread_error(e)))?;
        let reader = std::thread::Builder::new()
            .name("steward-read".into())
            .spawn_scoped(s, move || {
                for batch in walked_rx {
                    let read = batch
                        .into_iter()
                        .map(|item| {
                            item.map(|e| {
                                // What a differential leaves to its base is never read.
                                let ahead = if skip_ahead(&e) { None } else { read_ahead(&e) };
                                (e, ahead)
                            })
                        })
                        .collect();
                    if read_tx.send(read).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| E::from(thread_error(e)))?;
        let mut sqlite_cache = SqliteDetector::default();
        let result = read_rx.iter().flatten().try_for_each(|item| {
            let (mut e, ahead) = item.map_err(E::from)?;
            // Here, on the archiving thread: see walk_raw.
            sqlite_cache.mark(&mut e);
            visit(e, ahead)
        });
        // Unblocks the threads waiting to send, before the scope joins them.
        drop(read_rx);
        let read = reader.join();
        let walked = walker.join();
        // A thread that panicked ended the stream early: never a shorter archive.
        if result.is_ok() && (read.is_err() || walked.is_err()) {
            return Err(E::from(thread_error(std::io::Error::other(
                "the walk stopped unexpectedly",
            ))));
        }
        result
    })
}

fn read_ahead(e: &Entry) -> Option<Ahead> {
    let size = e.meta.size();
    // Hard links are archived once, as the archiver decides; big files are streamed; a
    // file named like a SQLite side file is never opened here (closing it would drop the
    // locks a snapshot holds on it, see walk_raw).
    let name = e
        .path
        .file_name()
        .map(OsStrExt::as_bytes)
        .unwrap_or_default();
    if e.kind != Kind::File
        || e.meta.nlink() > 1
        || size > AHEAD_MAX
        || side_file_base(name).is_some()
    {
        return None;
    }
    let file = match File::open(&e.path) {
        Ok(f) => f,
        Err(err) => return Some(Ahead::OpenFailed(err)),
    };
    let mut content = Vec::with_capacity(size as usize + 1);
    file.take(size + 1)
        .read_to_end(&mut content)
        .ok()
        .map(|_| Ahead::Content(content))
}

/// Remembers which `X` of an `X-wal` sibling were SQLite databases.
#[derive(Default)]
struct SqliteDetector {
    checked: HashSet<PathBuf>,
    databases: HashSet<PathBuf>,
}

/// The length of `X` when `name` is `X-wal`, `X-shm` or `X-journal`.
fn side_file_base(name: &[u8]) -> Option<usize> {
    [b"-wal".as_slice(), b"-shm", b"-journal"]
        .iter()
        .find(|s| name.ends_with(s))
        .map(|s| name.len() - s.len())
}

impl SqliteDetector {
    /// Sets `e.sqlite_side_file`.
    fn mark(&mut self, e: &mut Entry) {
        e.sqlite_side_file = e.kind == Kind::File && self.is_side_file(&e.path);
    }

    fn is_side_file(&mut self, path: &Path) -> bool {
        let name = path
            .file_name()
            .map(std::os::unix::ffi::OsStrExt::as_bytes)
            .unwrap_or_default();
        let Some(base_len) = side_file_base(name) else {
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

/// An entry's facts as the fingerprint counts them (path, kind, link target; size,
/// mtime and inode for all but folders; mode and owner), 16 bytes of their SHA-256.
/// `None` for what never means a change: a `-shm` file, an empty `-wal`.
pub fn entry_facts(e: &Entry) -> Option<[u8; 16]> {
    if e.sqlite_side_file {
        // `-shm` is a memory index readers rewrite, and an empty `-wal` (which any
        // reader, steward's own snapshot included, may create) holds no data: neither
        // means the database changed.
        let name = e.path.as_os_str().as_bytes();
        if name.ends_with(b"-shm") || e.meta.size() == 0 {
            return None;
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
        // A file rewritten in place at the same size with its mtime put back (`cp -p`,
        // `rsync -t`, `touch -r`) changes only its ctime, which nobody can set: without it
        // a differential would carry the base's old content for it (restic and borg look
        // at ctime too).
        h.update(m.ctime().to_le_bytes());
        h.update(m.ctime_nsec().to_le_bytes());
    }
    h.update(m.mode().to_le_bytes());
    h.update(m.uid().to_le_bytes());
    h.update(m.gid().to_le_bytes());
    let d = h.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&d[..16]);
    Some(first)
}

impl Fingerprint {
    pub fn add(&mut self, e: &Entry) {
        self.add_facts(entry_facts(e));
    }

    /// [`add`](Self::add) of an entry whose [`entry_facts`] the caller has already.
    pub fn add_facts(&mut self, facts: Option<[u8; 16]>) {
        if let Some(first) = facts {
            self.sum = self.sum.wrapping_add(u128::from_le_bytes(first));
            self.count += 1;
        }
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
pub fn survey(set: &BackupSet) -> Result<(String, u64, u64), WalkError> {
    survey_with(set, &mut |_, _| {})
}

/// [`survey`] that also shows every entry, with its [`entry_facts`], to `each`.
pub fn survey_with(
    set: &BackupSet,
    each: &mut dyn FnMut(&Entry, Option<[u8; 16]>),
) -> Result<(String, u64, u64), WalkError> {
    let mut fp = Fingerprint::default();
    let (mut files, mut bytes) = (0u64, 0u64);
    walk_set(set, |e| {
        let facts = entry_facts(&e);
        each(&e, facts);
        fp.add_facts(facts);
        if e.kind == Kind::File && !e.sqlite_side_file {
            files += 1;
            bytes += e.meta.size();
        }
        Ok(())
    })?;
    Ok((fp.finish(set), files, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Origin, parse};

    fn set_of(root: &Path) -> BackupSet {
        let text = format!(
            "[backup]\ndestination = \"{}/dest\"\n[[backup.set]]\nname = \"s\"\npaths = [\"{}\"]\n",
            root.display(),
            root.join("tree").display()
        );
        let config = parse(&text, Origin::File("/x/s.toml".into())).unwrap();
        config.set("s").unwrap().clone()
    }

    /// Regression: a live writer's `-journal` deleted between the folder listing and its
    /// `lstat` failed the whole backup with "cannot read ...-journal: No such file".
    #[test]
    fn regression_a_file_that_vanishes_during_the_walk_is_skipped_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        for n in ["a", "b", "c"] {
            std::fs::write(tree.join(n), n).unwrap();
        }
        let set = set_of(dir.path());
        let mut seen = Vec::new();
        walk_raw::<WalkError>(&set, |e| {
            if e.kind == Kind::File && seen.is_empty() {
                // The listing was read already: the others vanish before their lstat.
                for n in ["a", "b", "c"] {
                    if tree.join(n) != e.path {
                        std::fs::remove_file(tree.join(n)).unwrap();
                    }
                }
            }
            if e.kind == Kind::File {
                seen.push(e.path);
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
    }

    /// More entries than the threads can hold in flight, small and big files, links.
    fn tree(root: &Path) {
        let tree = root.join("tree");
        for d in 0..5 {
            let dir = tree.join(format!("d{d}"));
            std::fs::create_dir_all(&dir).unwrap();
            for f in 0..100 {
                std::fs::write(dir.join(format!("f{f}")), format!("{d}/{f}").repeat(f)).unwrap();
            }
        }
        std::fs::write(tree.join("big"), vec![7u8; AHEAD_MAX as usize + 1]).unwrap();
        std::fs::write(tree.join("edge"), vec![8u8; AHEAD_MAX as usize]).unwrap();
        std::os::unix::fs::symlink("big", tree.join("link")).unwrap();
        std::fs::hard_link(tree.join("edge"), tree.join("edge2")).unwrap();
    }

    #[test]
    fn reading_ahead_keeps_the_walk_order_and_reads_only_small_single_files() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        let set = set_of(dir.path());
        let mut plain = Vec::new();
        walk_set::<WalkError>(&set, |e| {
            plain.push(e.path);
            Ok(())
        })
        .unwrap();
        let mut ahead = Vec::new();
        walk_set_ahead::<WalkError>(&set, &|_| false, |e, read| {
            let name = e.path.file_name().unwrap().to_string_lossy().into_owned();
            match read {
                Some(Ahead::Content(c)) => {
                    assert_eq!(c, std::fs::read(&e.path).unwrap(), "{name}");
                    assert!(e.meta.size() <= AHEAD_MAX && e.meta.nlink() == 1, "{name}");
                }
                Some(Ahead::OpenFailed(err)) => panic!("{name}: {err}"),
                None => assert!(
                    e.kind != Kind::File || name == "big" || name.starts_with("edge"),
                    "{name} was not read ahead"
                ),
            }
            ahead.push(e.path);
            Ok(())
        })
        .unwrap();
        assert!(plain.len() > BATCH * (QUEUED + 3), "{}", plain.len());
        assert_eq!(ahead, plain);
    }

    #[test]
    fn an_archiver_that_stops_stops_the_threads_and_keeps_its_error() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        let set = set_of(dir.path());
        let mut seen = 0;
        let r = walk_set_ahead::<crate::backup::BackupError>(&set, &|_| false, |_, _| {
            seen += 1;
            if seen == 3 {
                return Err(crate::backup::BackupError::Interrupted);
            }
            Ok(())
        });
        assert!(matches!(r, Err(crate::backup::BackupError::Interrupted)));
        assert_eq!(seen, 3);
    }

    /// `tree/app.db`, a database whose `-journal` stays (PERSIST).
    fn db_with_journal(root: &Path) -> PathBuf {
        let tree = root.join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        let c = rusqlite::Connection::open(tree.join("app.db")).unwrap();
        c.execute_batch("PRAGMA journal_mode=PERSIST; CREATE TABLE t(x);")
            .unwrap();
        tree
    }

    /// Closing any handle on a file drops the process's POSIX locks on it, a snapshot's
    /// read lock included: the walking thread, which runs ahead of the snapshots, must not
    /// open the database beside a `-journal` to tell whether it is one.
    #[test]
    fn regression_the_walking_thread_never_opens_a_database_beside_its_journal() {
        let dir = tempfile::tempdir().unwrap();
        db_with_journal(dir.path());
        let set = set_of(dir.path());
        let mut journal = None;
        walk_raw::<WalkError>(&set, |e| {
            if e.path.ends_with("app.db-journal") {
                journal = Some(e.sqlite_side_file);
            }
            Ok(())
        })
        .unwrap();
        // What the walking thread runs decides nothing about side files.
        assert_eq!(journal, Some(false));
    }

    #[test]
    fn side_files_are_told_apart_on_the_archiving_thread_and_never_read_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let tree = db_with_journal(dir.path());
        std::fs::write(tree.join("notes-journal"), "not a database's").unwrap();
        let set = set_of(dir.path());
        let mut seen = std::collections::HashMap::new();
        walk_set_ahead::<WalkError>(&set, &|_| false, |e, ahead| {
            let name = e.path.file_name().unwrap().to_string_lossy().into_owned();
            seen.insert(name, (e.sqlite_side_file, ahead.is_some()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen["app.db-journal"], (true, false));
        assert_eq!(seen["notes-journal"], (false, false));
        assert_eq!(seen["app.db"], (false, true));
    }

    #[test]
    fn a_walk_error_reaches_the_archiver() {
        let dir = tempfile::tempdir().unwrap();
        let set = set_of(dir.path());
        // The set's folder does not exist: the walk's first step fails.
        let r = walk_set_ahead::<WalkError>(&set, &|_| false, |_, _| Ok(()));
        let err = format!("{:#}", r.unwrap_err());
        assert!(err.contains("tree"), "{err}");
    }
}
