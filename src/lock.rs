//! Per-job locks: an OS file lock on `<state>/locks/<job>.lock`, shared by the daemon,
//! timers and manual runs. The kernel drops the lock when the holder dies, so no stale
//! lock survives a crash; the file keeps the holder's PID and job (`1234 weekly`) to name
//! them in errors, and so that a scheduled job can tell its own earlier run (skipped) from
//! another job that shares the lock (waited for).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Lock errors.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("job {job:?} is already running (held by PID {}; lock {path})", pid.map_or("unknown".to_string(), |p| p.to_string()))]
    Held {
        job: String,
        pid: Option<u32>,
        path: PathBuf,
        /// The job that holds it, when the holder wrote one.
        holder: Option<String>,
    },
    #[error("cannot take lock {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A held job lock; released when dropped.
#[derive(Debug)]
pub struct JobLock {
    _file: File,
    pub path: PathBuf,
}

/// Takes the lock for `job` without waiting.
pub fn acquire(state_dir: &Path, job: &str) -> Result<JobLock, LockError> {
    acquire_for(state_dir, job, job, false)
}

/// Takes the lock for `job`, waiting while another process holds it.
pub fn acquire_waiting(state_dir: &Path, job: &str) -> Result<JobLock, LockError> {
    acquire_for(state_dir, job, job, true)
}

/// Takes lock `job` on behalf of `holder` (one of the jobs that share it), waiting while
/// another process holds it when `wait`.
pub fn acquire_for(
    state_dir: &Path,
    job: &str,
    holder: &str,
    wait: bool,
) -> Result<JobLock, LockError> {
    let dir = state_dir.join("locks");
    let path = dir.join(format!("{job}.lock"));
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    crate::fsutil::create_private_dir(&dir).map_err(io)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    let locked = if wait {
        file.lock().map_err(std::fs::TryLockError::Error)
    } else {
        file.try_lock()
    };
    match locked {
        Ok(()) => {
            file.set_len(0).map_err(io)?;
            file.seek(SeekFrom::Start(0)).map_err(io)?;
            writeln!(file, "{} {holder}", std::process::id()).map_err(io)?;
            Ok(JobLock { _file: file, path })
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut s = String::new();
            let _ = file.read_to_string(&mut s);
            let mut words = s.split_whitespace();
            Err(LockError::Held {
                job: job.to_string(),
                pid: words.next().and_then(|p| p.parse().ok()),
                holder: words.next().map(str::to_string),
                path,
            })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_and_release_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path(), "backup").unwrap();
        match acquire(dir.path(), "backup") {
            Err(LockError::Held { pid, holder, .. }) => {
                assert_eq!(pid, Some(std::process::id()));
                assert_eq!(holder.as_deref(), Some("backup"));
            }
            other => panic!("expected Held, got {other:?}"),
        }
        // Other jobs are independent.
        let _verify = acquire(dir.path(), "verify").unwrap();
        drop(first);
        acquire(dir.path(), "backup").unwrap();
    }
}
