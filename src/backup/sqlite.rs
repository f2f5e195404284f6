//! Consistent copies of live SQLite databases through the online backup API, taken in one
//! step so that concurrent writers can never leave a torn copy.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

/// A snapshot that could not be taken.
#[derive(Debug, thiserror::Error)]
#[error("cannot snapshot SQLite database {path}")]
pub struct SnapshotError {
    pub path: PathBuf,
    #[source]
    pub source: rusqlite::Error,
}

/// Copies the database at `src` to the new file `dst`, retrying while writers hold locks
/// for at most `patience`.
pub fn snapshot(src: &Path, dst: &Path, patience: Duration) -> Result<(), SnapshotError> {
    let err = |source| SnapshotError {
        path: src.to_path_buf(),
        source,
    };
    let from = Connection::open_with_flags(
        src,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    from.busy_timeout(patience).map_err(err)?;
    let mut to = Connection::open(dst).map_err(err)?;
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
