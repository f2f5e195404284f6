//! Consistent images of live SQLite databases. A writer can never leave a torn copy:
//!
//! - Fast path: a read transaction is opened on the database. In rollback-journal mode it
//!   holds the SHARED lock, which keeps every writer out of the file; in WAL mode with an
//!   empty `-wal` the reader holds WAL read-slot 0, and SQLite's checkpointer must lock
//!   that slot exclusively before it copies anything into the file. Either way the file
//!   itself cannot change while the transaction is open, so it is streamed as it is.
//! - Otherwise (WAL frames not yet checkpointed): the online backup API copies all pages
//!   in one step to a temporary file, which is archived and deleted.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

/// A snapshot that could not be taken.
#[derive(Debug, thiserror::Error)]
#[error("cannot snapshot SQLite database {path}{note}")]
pub struct SnapshotError {
    pub path: PathBuf,
    /// Said after the path: which file and filesystem filled up, when the copy's
    /// destination did (the source has space; naming it alone sends the reader to the
    /// wrong disk).
    pub note: String,
    #[source]
    pub source: rusqlite::Error,
}

/// A consistent image of a database, valid while this value lives.
pub enum Image {
    /// The live file, frozen by the read transaction on `guard`.
    Live {
        guard: Connection,
        file: File,
        size: u64,
    },
    /// A snapshot copy (the caller deletes it).
    Copy { file: File, size: u64 },
}

fn wal_is_empty(db: &Path) -> bool {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(PathBuf::from(wal)).map_or(true, |m| m.len() == 0)
}

/// Opens a live database to read it: read-write (never created), so that when steward is
/// the last connection to close, SQLite removes the `-wal` and `-shm` files that opening
/// it made, as the application's own last close would; a read-only connection leaves
/// them beside the database for good. Read-only where steward may not write.
pub fn open_live(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .or_else(|_| {
        Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    })
}

/// Opens a consistent image of the database at `src`, snapshotting to `tmp` only when
/// the live file cannot be frozen.
pub fn image(src: &Path, tmp: &Path, patience: Duration) -> Result<Image, SnapshotError> {
    let err = |source| SnapshotError {
        path: src.to_path_buf(),
        note: String::new(),
        source,
    };
    let io_err = |e: std::io::Error| {
        err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
            Some(e.to_string()),
        ))
    };
    let guard = open_live(src).map_err(err)?;
    guard.busy_timeout(patience).map_err(err)?;
    let mode: String = guard
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .map_err(err)?;
    guard.execute_batch("BEGIN").map_err(err)?;
    // The first read takes the locks the module comment relies on.
    guard
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(err)?;
    // Checked after the read began: an empty WAL now means the reader holds slot 0.
    if !mode.eq_ignore_ascii_case("wal") || wal_is_empty(src) {
        let file = File::open(src).map_err(io_err)?;
        let size = file.metadata().map_err(io_err)?.len();
        return Ok(Image::Live { guard, file, size });
    }
    drop(guard);
    snapshot(src, tmp, patience)?;
    let file = File::open(tmp).map_err(io_err)?;
    let size = file.metadata().map_err(io_err)?.len();
    Ok(Image::Copy { file, size })
}

impl Image {
    /// The connection whose read transaction freezes a live image (`None` for a copy),
    /// the file to stream, and its size. The image stays frozen until the connection is
    /// dropped.
    pub fn into_parts(self) -> (Option<Connection>, File, u64) {
        match self {
            Image::Live { guard, file, size } => (Some(guard), file, size),
            Image::Copy { file, size } => (None, file, size),
        }
    }
}

/// Whether a live image was frozen all along: SQLite may end a transaction by itself (an
/// I/O error, no memory), and then what was streamed since is no snapshot at all. `held`
/// is the connection [`Image::into_parts`] gave (`None` for a copy, which cannot thaw).
pub fn still_frozen(held: Option<&Connection>, src: &Path) -> Result<(), SnapshotError> {
    match held {
        Some(c) if c.is_autocommit() => Err(SnapshotError {
            path: src.to_path_buf(),
            note: String::new(),
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                Some("its read transaction ended while it was archived".into()),
            ),
        }),
        _ => Ok(()),
    }
}

/// `PRAGMA quick_check` on the image itself (the frozen live file under `live`'s read
/// transaction, or the copy at `tmp`), so it costs the application no extra lock.
/// `Err` says what SQLite found.
pub fn quick_check(live: Option<&Connection>, tmp: &Path) -> Result<(), String> {
    on_image(live, tmp, |c| {
        let mut stmt = c.prepare("PRAGMA quick_check").map_err(|e| e.to_string())?;
        let rows: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| e.to_string())?;
        if rows.len() == 1 && rows[0] == "ok" {
            Ok(())
        } else {
            Err(rows.into_iter().take(3).collect::<Vec<_>>().join("; "))
        }
    })
}

/// Rows per table of the image (as [`quick_check`] reads it): an exact `count(*)` of
/// every ordinary table (SQLite counts through the smallest index, so this reads a
/// fraction of a table's pages). Virtual and internal (`sqlite_*`) tables are left out.
pub fn row_counts(
    live: Option<&Connection>,
    tmp: &Path,
) -> Result<std::collections::BTreeMap<String, u64>, String> {
    on_image(live, tmp, |c| {
        let names: Vec<String> = c
            .prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'table'
                 AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND sql NOT LIKE 'CREATE VIRTUAL%'",
            )
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(|e| e.to_string())?;
        let mut out = std::collections::BTreeMap::new();
        for n in names {
            let q = format!("SELECT count(*) FROM \"{}\"", n.replace('"', "\"\""));
            let rows: i64 = c
                .query_row(&q, [], |r| r.get(0))
                .map_err(|e| format!("{n}: {e}"))?;
            out.insert(n, rows.max(0) as u64);
        }
        Ok(out)
    })
}

/// Runs `f` on the frozen live image (under `live`'s read transaction) or on the copy
/// at `tmp`, opened read-only.
fn on_image<T>(
    live: Option<&Connection>,
    tmp: &Path,
    f: impl Fn(&Connection) -> Result<T, String>,
) -> Result<T, String> {
    if let Some(c) = live {
        return f(c);
    }
    let c = Connection::open_with_flags(
        tmp,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| e.to_string())?;
    f(&c)
}

/// Copies the database at `src` to the new file `dst`, retrying while writers hold locks
/// for at most `patience`.
pub fn snapshot(src: &Path, dst: &Path, patience: Duration) -> Result<(), SnapshotError> {
    let err = |source: rusqlite::Error| {
        let full = source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull);
        let note = if full {
            let fs = crate::fsutil::filesystem_of(dst)
                .map(|m| format!(" on the filesystem mounted at {}", m.display()))
                .unwrap_or_default();
            let free = crate::fsutil::free_space(dst.parent().unwrap_or(dst))
                .map(|b| format!(", {} free", bytesize::ByteSize(b).display().iec()))
                .unwrap_or_default();
            format!(": its copy {} filled the disk{fs}{free}", dst.display())
        } else {
            String::new()
        };
        SnapshotError {
            path: src.to_path_buf(),
            note,
            source,
        }
    };
    let from = open_live(src).map_err(err)?;
    from.busy_timeout(patience).map_err(err)?;
    let mut to = Connection::open(dst).map_err(err)?;
    // The copy is read once into the archive and deleted: it needs no journal and no
    // fsync, which would otherwise write a large database to disk twice.
    to.pragma_update(None, "journal_mode", "OFF").map_err(err)?;
    to.pragma_update(None, "synchronous", "OFF").map_err(err)?;
    let started = Instant::now();
    let backup = Backup::new(&from, &mut to).map_err(err)?;
    loop {
        // -1: all pages in one step, under one read transaction: a consistent snapshot.
        match backup.step(-1).map_err(err)? {
            StepResult::Done => break,
            StepResult::Busy | StepResult::Locked if started.elapsed() < patience => {
                std::thread::sleep(Duration::from_millis(20));
            }
            StepResult::Busy | StepResult::Locked => {
                return Err(err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                    Some(format!("still locked after {patience:?}")),
                )));
            }
            // Any other progress value: keep stepping.
            _ => {}
        }
    }
    drop(backup);
    to.close().map_err(|(_, e)| err(e))?;
    Ok(())
}
