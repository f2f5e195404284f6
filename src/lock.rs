//! Per-job locks: an OS file lock on `<state>/locks/<job>.lock`, shared by the daemon,
//! timers and manual runs. The kernel drops the lock when the holder dies, so no stale
//! lock survives a crash; the file keeps the holder's PID only to name it in errors.

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
    take(state_dir, job, false)
}

/// Takes the lock for `job`, waiting while another process holds it.
pub fn acquire_waiting(state_dir: &Path, job: &str) -> Result<JobLock, LockError> {
    take(state_dir, job, true)
}

fn take(state_dir: &Path, job: &str, wait: bool) -> Result<JobLock, LockError> {
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
            writeln!(file, "{}", std::process::id()).map_err(io)?;
            Ok(JobLock { _file: file, path })
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut s = String::new();
            let _ = file.read_to_string(&mut s);
            Err(LockError::Held {
                job: job.to_string(),
                pid: s.trim().parse().ok(),
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
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        // Other jobs are independent.
        let _verify = acquire(dir.path(), "verify").unwrap();
        drop(first);
        acquire(dir.path(), "backup").unwrap();
    }
}
