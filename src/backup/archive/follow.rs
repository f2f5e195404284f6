//! Writing an archive file and reading it back while it is being written. The writer
//! writes whole blocks with direct I/O (`O_DIRECT` on Linux, `F_NOCACHE` on macOS) and
//! publishes how many bytes reached the device; the follower reads up to there, also
//! around the page cache, and waits for more. So the read-back of a new archive sees the
//! bytes the device holds, not the copy the kernel kept, and neither side pays for a copy
//! through the page cache. Where a filesystem refuses direct I/O (tmpfs, some FUSE
//! mounts) both sides fall back to ordinary I/O, and the follower says so.

use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Offsets, lengths and buffer addresses of direct I/O are multiples of this, which
/// covers every logical block size in use (512 and 4096 bytes).
const ALIGN: usize = 4096;
/// Bytes per write and per read-back read.
const BLOCK: usize = 1 << 20;
/// Blocks the compressor can fill while the writing thread waits for the device.
const SPARE: usize = 2;
/// How far ahead of the writes the file's space is allocated.
const RESERVE: u64 = 64 << 20;

/// Where the read-back of a new archive read its bytes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Readback {
    /// Around the page cache, from the device (direct I/O).
    Device,
    /// Through the page cache: the filesystem refused direct I/O.
    PageCache,
}

#[derive(Default)]
struct State {
    len: u64,
    done: bool,
    failed: Option<String>,
    /// The follower had to read through the page cache.
    cached: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    more: Condvar,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut State)) {
        let mut s = self.lock();
        f(&mut s);
        self.more.notify_all();
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A heap buffer whose start is aligned for direct I/O, without unsafe allocation: a
/// little more is allocated and the aligned window used.
struct Aligned {
    raw: Vec<u8>,
    start: usize,
}

impl Aligned {
    fn new() -> Self {
        let raw = vec![0u8; BLOCK + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
        Aligned { raw, start }
    }
    fn get(&self) -> &[u8] {
        &self.raw[self.start..self.start + BLOCK]
    }
    fn get_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + BLOCK]
    }
}

/// Turns direct I/O on or off for `file` (`O_DIRECT` on Linux, `F_NOCACHE` on macOS).
/// Turned on after `open`, never at it: with `O_CREAT | O_EXCL` Linux creates the file
/// before it refuses the flag, and a fallback would find it existing. Where the
/// filesystem has no direct I/O (tmpfs before Linux 6.6, some FUSE mounts), turning it
/// on fails with `EINVAL`.
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let flags = rustix::fs::fcntl_getfl(file)?;
        let direct = rustix::fs::OFlags::DIRECT;
        rustix::fs::fcntl_setfl(file, if on { flags | direct } else { flags - direct })?;
    }
    #[cfg(target_os = "macos")]
    rustix::fs::fcntl_nocache(file, on)?;
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        let _ = file;
        if on {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
    }
    Ok(())
}

/// Whether direct I/O could be turned on for `file`.
fn try_direct(file: &File) -> bool {
    // Tests stand in for a filesystem without direct I/O.
    !crate::fault::enabled("no-direct-io") && set_direct(file, true).is_ok()
}

/// `SPARE` empty blocks ready to be taken, and the way to give them back.
fn pool() -> (SyncSender<Aligned>, Receiver<Aligned>) {
    let (back, take) = sync_channel(SPARE);
    for _ in 0..SPARE {
        let _ = back.send(Aligned::new());
    }
    (back, take)
}

fn refused(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

/// The writing side: fills whole blocks and hands them to its own thread, which writes
/// them and publishes the length on the file, so the compressor never waits for the
/// device unless the device is the slower of the two.
pub struct Publisher {
    buf: Aligned,
    filled: usize,
    /// Bytes handed to the writing thread.
    handed: u64,
    full: Option<SyncSender<(Aligned, usize)>>,
    empty: Receiver<Aligned>,
    writer: Option<JoinHandle<io::Result<File>>>,
    shared: Arc<Shared>,
    finished: bool,
}

/// The writing thread's side: the file, and where the next block goes.
struct Disk {
    file: File,
    direct: bool,
    /// Bytes on the file: whole blocks until the last write.
    written: u64,
    /// Where the space allocated ahead of the writes ends (`u64::MAX`: stop allocating).
    reserved: u64,
    shared: Arc<Shared>,
}

impl Disk {
    /// Writes `len` bytes of `buf` at the end of the file, falling back to ordinary I/O if
    /// the filesystem refuses a direct write.
    fn write(&mut self, buf: &mut Aligned, len: usize) -> io::Result<()> {
        let padded = if self.direct {
            len.next_multiple_of(ALIGN)
        } else {
            len
        };
        buf.get_mut()[len..padded].fill(0);
        if self.direct && self.written + padded as u64 > self.reserved {
            self.reserve();
        }
        match self.file.write_all_at(&buf.get()[..padded], self.written) {
            Err(e) if self.direct && refused(&e) => {
                set_direct(&self.file, false)?;
                self.direct = false;
                self.file.write_all_at(&buf.get()[..len], self.written)?;
            }
            r => r?,
        }
        self.written += len as u64;
        let written = self.written;
        self.shared.update(|s| s.len = written);
        Ok(())
    }

    fn run(
        mut self,
        full: Receiver<(Aligned, usize)>,
        empty: SyncSender<Aligned>,
    ) -> io::Result<File> {
        for (mut buf, len) in full {
            self.write(&mut buf, len)?;
            let _ = empty.send(buf);
        }
        // Neither the zeros that filled the last direct write up to a block nor the space
        // reserved ahead are part of the file.
        if self.file.metadata()?.len() != self.written {
            self.file.set_len(self.written)?;
        }
        Ok(self.file)
    }

    /// Allocates the next stretch of the file ahead of the writes. A direct write past
    /// the end of a file takes the file's lock exclusively (the size changes), so it
    /// would wait for every read-back read and they for it; into allocated space within
    /// the size, both take it shared. Only a speed-up: where the filesystem cannot, or
    /// space runs short, the writes go on without it and report a real shortage.
    fn reserve(&mut self) {
        #[cfg(target_os = "linux")]
        {
            let r = rustix::fs::fallocate(
                &self.file,
                rustix::fs::FallocateFlags::empty(),
                self.reserved,
                RESERVE,
            );
            match r {
                Ok(()) => self.reserved += RESERVE,
                Err(_) => self.reserved = u64::MAX,
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            self.reserved = u64::MAX;
        }
    }
}

/// What the reading thread hands the follower.
enum Chunk {
    /// A block read from the file, and how much of it is the file's.
    Block(Aligned, usize),
    /// The end: the size and SHA-256 of every byte read.
    End(u64, [u8; 32]),
}

/// The reading side: its own thread reads what was published, block by block, and hashes
/// it, while the caller decodes the block before. Reads block until more arrives or the
/// writer is done.
pub struct Follower {
    cur: Option<Aligned>,
    start: usize,
    end: usize,
    full: Receiver<io::Result<Chunk>>,
    empty: SyncSender<Aligned>,
    digest: Option<(u64, [u8; 32])>,
}

/// The reading thread's side.
struct Reading {
    file: File,
    direct: bool,
    /// The file offset of the next read.
    pos: u64,
    shared: Arc<Shared>,
}

/// Tells, after the follower read, where its bytes came from.
#[derive(Clone)]
pub struct Probe(Arc<Shared>);

impl Probe {
    /// Where the follower read from.
    pub fn readback(&self) -> Readback {
        if self.0.lock().cached {
            Readback::PageCache
        } else {
            Readback::Device
        }
    }
}

impl super::read::Compressed for Follower {
    fn digest(self) -> io::Result<(u64, [u8; 32])> {
        Follower::digest(self)
    }
}

/// The two threads of a follow, not started yet (`archive::pipeline` starts them): the
/// writing side (gives the file back at the end) and the read-back.
pub struct Sides {
    pub write: Box<dyn FnOnce() -> io::Result<File> + Send>,
    pub readback: Box<dyn FnOnce() + Send>,
}

/// Creates `path` (which must not exist, private to its owner) and pairs a writer on it
/// with a follower reading it back; the writer's thread is attached with
/// [`Publisher::attach`] once started.
pub fn open(path: &Path) -> io::Result<(Publisher, Follower, Probe, Sides)> {
    let file = crate::fsutil::create_private(path)?;
    let direct = try_direct(&file);
    let reader = File::open(path)?;
    let read_direct = try_direct(&reader);
    let shared = Arc::new(Shared::default());
    shared.lock().cached = !read_direct;
    let (full_tx, full_rx) = sync_channel(1);
    let (empty_tx, empty_rx) = pool();
    let disk = Disk {
        file,
        direct,
        written: 0,
        reserved: 0,
        shared: shared.clone(),
    };
    let (read_tx, read_rx) = sync_channel(1);
    let (back_tx, back_rx) = pool();
    let reading = Reading {
        file: reader,
        direct: read_direct,
        pos: 0,
        shared: shared.clone(),
    };
    let sides = Sides {
        write: Box::new(move || disk.run(full_rx, empty_tx)),
        readback: Box::new(move || reading.run(&read_tx, &back_rx)),
    };
    Ok((
        Publisher {
            buf: Aligned::new(),
            filled: 0,
            handed: 0,
            full: Some(full_tx),
            empty: empty_rx,
            writer: None,
            shared: shared.clone(),
            finished: false,
        },
        Follower {
            cur: None,
            start: 0,
            end: 0,
            full: read_rx,
            empty: back_tx,
            digest: None,
        },
        Probe(shared),
        sides,
    ))
}

impl Publisher {
    /// The writing side's thread, joined at the end.
    pub fn attach(&mut self, writer: JoinHandle<io::Result<File>>) {
        self.writer = Some(writer);
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.handed + self.filled as u64
    }

    /// Closes the writing thread's queue and waits for it: the file, or its error.
    fn join_writer(&mut self) -> io::Result<File> {
        self.full = None;
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("the archive writing thread panicked")),
            None => Err(io::Error::other("the archive writing thread stopped")),
        }
    }

    /// The writing thread's error, once it stopped taking blocks.
    fn stopped(&mut self) -> io::Error {
        self.join_writer()
            .err()
            .unwrap_or_else(|| io::Error::other("the archive writing thread stopped"))
    }

    /// Hands the buffer's first `len` bytes to the writing thread and takes an empty one.
    fn hand_over(&mut self, len: usize) -> io::Result<()> {
        let Ok(next) = self.empty.recv() else {
            return Err(self.stopped());
        };
        let full = std::mem::replace(&mut self.buf, next);
        let sent = self.full.as_ref().map(|tx| tx.send((full, len)));
        if !matches!(sent, Some(Ok(()))) {
            return Err(self.stopped());
        }
        self.handed += len as u64;
        self.filled = 0;
        Ok(())
    }

    /// Writes what is buffered, waits for the writing thread and fsyncs the file.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.filled > 0 {
            self.hand_over(self.filled)?;
        }
        self.join_writer()?.sync_all()
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
        let _ = self.join_writer();
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
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(BLOCK - self.filled);
        self.buf.get_mut()[self.filled..self.filled + n].copy_from_slice(&data[..n]);
        self.filled += n;
        if self.filled == BLOCK {
            self.hand_over(BLOCK)?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn ends_early(at: u64, written: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the file ends at {at} bytes but {written} were written"),
    )
}

impl Reading {
    /// Reads and hashes blocks until the end of what the writer wrote, or the first error.
    fn run(mut self, full: &SyncSender<io::Result<Chunk>>, empty: &Receiver<Aligned>) {
        let mut hash = Sha256::new();
        // Both ends closing (the follower was dropped) stops the thread.
        while let Ok(mut buf) = empty.recv() {
            let chunk = match self.next(&mut buf) {
                Ok(0) => {
                    let _ = full.send(Ok(Chunk::End(self.pos, hash.finalize().into())));
                    return;
                }
                Ok(n) => {
                    hash.update(&buf.get()[..n]);
                    Ok(Chunk::Block(buf, n))
                }
                Err(e) => Err(e),
            };
            let failed = chunk.is_err();
            if full.send(chunk).is_err() || failed {
                return;
            }
        }
    }

    /// Waits until the writer published more than `pos` (or is done), then reads the next
    /// block into `buf`; 0 at the end.
    fn next(&mut self, buf: &mut Aligned) -> io::Result<usize> {
        let available = {
            let mut s = self.shared.lock();
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
        let want = available.min(BLOCK as u64) as usize;
        // A direct read must cover whole aligned blocks; the tail's block ends at the end
        // of the file, so the read comes back short there.
        let ask = if self.direct {
            want.next_multiple_of(ALIGN)
        } else {
            want
        };
        let mut got = 0;
        while got < want {
            let r = self
                .file
                .read_at(&mut buf.get_mut()[got..ask], self.pos + got as u64);
            let n = match r {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if self.direct && got == 0 && refused(&e) => {
                    set_direct(&self.file, false)?;
                    self.direct = false;
                    self.shared.update(|s| s.cached = true);
                    return self.next(buf);
                }
                r => r?,
            };
            if n == 0 {
                return Err(ends_early(self.pos + got as u64, self.pos + available));
            }
            got += n;
            if self.direct && got < want && got % ALIGN != 0 {
                // A direct read comes back short only at the end of the file.
                return Err(ends_early(self.pos + got as u64, self.pos + available));
            }
        }
        self.pos += want as u64;
        Ok(want)
    }
}

impl Follower {
    /// Reads what is left, then gives the size and SHA-256 of all the bytes, as read back.
    pub fn digest(mut self) -> io::Result<(u64, [u8; 32])> {
        loop {
            let n = self.fill_buf()?.len();
            if n == 0 {
                break;
            }
            self.consume(n);
        }
        self.digest
            .ok_or_else(|| io::Error::other("the read-back ended without a digest"))
    }
}

impl BufRead for Follower {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.start == self.end && self.digest.is_none() {
            if let Some(done) = self.cur.take() {
                let _ = self.empty.send(done);
            }
            match self.full.recv() {
                Ok(Ok(Chunk::Block(buf, n))) => {
                    self.cur = Some(buf);
                    self.start = 0;
                    self.end = n;
                }
                Ok(Ok(Chunk::End(size, sha256))) => self.digest = Some((size, sha256)),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(io::Error::other("the read-back thread stopped")),
            }
        }
        Ok(match &self.cur {
            Some(cur) => &cur.get()[self.start..self.end],
            None => &[],
        })
    }
    fn consume(&mut self, amt: usize) {
        self.start = (self.start + amt).min(self.end);
    }
}

impl Read for Follower {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        super::pipe::read_buffered(self, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    #[cfg(target_os = "linux")]
    use std::os::unix::fs::OpenOptionsExt;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn round_trip(dir: &Path, len: usize) {
        let path = dir.join(format!("f{len}"));
        let (mut p, mut f, probe) = super::super::pipeline::follow(&path).unwrap();
        let t = std::thread::spawn(move || {
            let mut got = Vec::new();
            f.read_to_end(&mut got).unwrap();
            got
        });
        let data = pattern(len);
        for c in data.chunks(7777) {
            p.write_all(c).unwrap();
        }
        assert_eq!(p.len(), len as u64);
        let synced = p.sync();
        p.finish(&synced);
        synced.unwrap();
        assert_eq!(t.join().unwrap(), data, "{len} bytes");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            data,
            "{len} bytes on the file"
        );
        // Where the filesystem takes direct I/O, the read-back must have used it.
        #[cfg(target_os = "linux")]
        if OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .is_ok()
        {
            assert_eq!(probe.readback(), Readback::Device);
        }
        let _ = probe;
    }

    #[test]
    fn follower_reads_everything_the_writer_wrote() {
        let dir = tempfile::tempdir().unwrap();
        // Empty, a partial block, exactly a block, blocks and a tail.
        for len in [0, 1, 5000, BLOCK, 3 * BLOCK + 12345] {
            round_trip(dir.path(), len);
        }
    }

    #[test]
    fn follower_sees_writer_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (p, mut f, _) = super::super::pipeline::follow(&dir.path().join("f")).unwrap();
        p.finish(&Err(io::Error::other("disk full")));
        let e = f.read(&mut [0u8; 8]).unwrap_err();
        assert!(e.to_string().contains("disk full"), "{e}");
    }

    #[test]
    fn follower_names_a_file_cut_short_behind_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let (mut p, mut f, _) = super::super::pipeline::follow(&path).unwrap();
        p.write_all(&pattern(4 * BLOCK + 100)).unwrap();
        let synced = p.sync();
        synced.unwrap();
        // Something else cuts the file after the writer wrote it. The reading thread has
        // SPARE buffers, so it cannot have read past them before the first `read`.
        const { assert!(SPARE < 3) };
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(3 * BLOCK as u64 + 10)
            .unwrap();
        p.finish(&Ok(()));
        let e = std::io::copy(&mut f, &mut std::io::sink()).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("ends at {} bytes", 3 * BLOCK + 10)),
            "{e}"
        );
    }

    #[test]
    fn an_existing_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"keep").unwrap();
        assert!(super::super::pipeline::follow(&path).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"keep");
    }
}
