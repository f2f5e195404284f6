//! Reading a file back while another thread is still writing it: the writer publishes how
//! many bytes reached the file, the follower reads up to there and waits for more. Used to
//! verify an archive during its writing instead of after it, on otherwise idle cores.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};

#[derive(Default)]
struct State {
    len: u64,
    done: bool,
    failed: Option<String>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    more: Condvar,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut State)) {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut s);
        self.more.notify_all();
    }
}

/// The writing side: writes straight to the file and publishes its length.
pub struct Publisher {
    file: File,
    len: u64,
    shared: Arc<Shared>,
    finished: bool,
}

/// The reading side: reads only what was published, blocking until more arrives or the
/// writer is done.
pub struct Follower {
    file: File,
    pos: u64,
    shared: Arc<Shared>,
}

/// Pairs a writer on `file` with a follower reading the same file through `reader`.
pub fn follow(file: File, reader: File) -> (Publisher, Follower) {
    let shared = Arc::new(Shared::default());
    (
        Publisher {
            file,
            len: 0,
            shared: shared.clone(),
            finished: false,
        },
        Follower {
            file: reader,
            pos: 0,
            shared,
        },
    )
}

impl Publisher {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// fsyncs the file.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// The writer finished (`Ok`) or failed: the follower sees the end, or the error.
    pub fn finish(mut self, result: &io::Result<()>) {
        self.finished = true;
        self.shared.update(|s| {
            s.done = true;
            if let Err(e) = result {
                s.failed = Some(e.to_string());
            }
        });
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        // Dropped on an error path without `finish`: never leave the follower waiting.
        if !self.finished {
            self.shared.update(|s| {
                s.done = true;
                s.failed.get_or_insert_with(|| "the writer stopped".into());
            });
        }
    }
}

impl Write for Publisher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.len += n as u64;
        let len = self.len;
        self.shared.update(|s| s.len = len);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Follower {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let available = {
            let mut s = self
                .shared
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            while s.len <= self.pos && !s.done {
                s = self
                    .shared
                    .more
                    .wait(s)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if let Some(e) = &s.failed {
                return Err(io::Error::other(format!("writing the archive failed: {e}")));
            }
            s.len - self.pos
        };
        if available == 0 {
            return Ok(0);
        }
        let want = buf.len().min(available.min(usize::MAX as u64) as usize);
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the file ends at {} bytes but {} were written",
                    self.pos,
                    self.pos + available
                ),
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follower_reads_everything_the_writer_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let w = File::create(&path).unwrap();
        let r = File::open(&path).unwrap();
        let (mut p, mut f) = follow(w, r);
        let t = std::thread::spawn(move || {
            let mut got = Vec::new();
            f.read_to_end(&mut got).unwrap();
            got
        });
        let data: Vec<u8> = (0..500_000u32).map(|i| (i % 251) as u8).collect();
        for c in data.chunks(7777) {
            p.write_all(c).unwrap();
        }
        p.finish(&Ok(()));
        assert_eq!(t.join().unwrap(), data);
    }

    #[test]
    fn follower_sees_writer_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let (p, mut f) = follow(File::create(&path).unwrap(), File::open(&path).unwrap());
        p.finish(&Err(io::Error::other("disk full")));
        let e = f.read(&mut [0u8; 8]).unwrap_err();
        assert!(e.to_string().contains("disk full"), "{e}");
    }
}
