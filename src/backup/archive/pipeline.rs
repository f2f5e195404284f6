//! The threads that write one archive, all started here ([`start`]), and the path a byte
//! of a backup takes through them, from the set to the disk:
//!
//! 1. `steward-walk` (in `backup::walk`) lists the set; `steward-read` reads its files up to
//!    32 KiB ahead, in batches, so the walk's system calls overlap the reads.
//! 2. The calling thread ([`super::ArchiveWriter`]) hashes every byte (SHA-256 for the
//!    manifest, XXH3 for the read-back) as it writes tar entries into a [`pipe`](super::pipe).
//! 3. `steward-zstd` compresses the pipe's stream into the data frame and the trailer frame
//!    and appends the skippable pointer frame, into the [`follow`](super::follow) publisher's
//!    1 MiB blocks, then fsyncs.
//! 4. `steward-write` puts each block on the `.partial` file with direct I/O, space
//!    allocated 64 MiB ahead.
//! 5. `steward-readback` re-reads each block from the device behind the writer, hashing the
//!    file's bytes (the sidecar's SHA-256).
//! 6. `steward-verify` decompresses those same blocks and re-hashes the content against the
//!    records step 2 sent: the archive is published only when this and the fsync succeeded.
//!
//! Reading an archive back later (`verify`, `restore`) has one thread of its own, the
//! decoder in `super::verify`.

use std::io::{self, Write};
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::follow::{self, Follower, Probe, Publisher};
use super::pipe::{self, PipeReader, PipeWriter};
use super::read::{Checker, Expect, Record, Verified, verify_with};
use super::{
    ArchiveError, ArchiveOptions, JOB_SIZE, SKIPPABLE_MAGIC, TRAILER_FRAME_LEN, TRAILER_TAG,
};

/// A started pipeline: where the tar stream goes in, and the threads to join.
pub struct Started {
    /// The tar stream's way in (to `steward-zstd`).
    pub input: PipeWriter,
    /// `steward-zstd`: the archive's size once fsynced.
    pub compressor: JoinHandle<io::Result<u64>>,
    /// `steward-verify`: the read-back's verdict.
    pub verifier: JoinHandle<Result<Verified, ArchiveError>>,
    /// Where the read-back read from.
    pub probe: Probe,
    /// The records the calling thread sends `steward-verify` (one per file, then the
    /// manifest's digest).
    pub records: mpsc::Sender<Record>,
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<JoinHandle<T>> {
    std::thread::Builder::new().name(name.into()).spawn(f)
}

/// Creates `path` and starts steps 3 to 6 on it.
pub fn start(path: &Path, options: ArchiveOptions) -> Result<Started, ArchiveError> {
    let (publisher, follower, probe) = follow(path).map_err(ArchiveError::io(path))?;
    let (input, rx) = pipe::pipe();
    let (level, threads) = (options.level, options.threads);
    let compressor = spawn("steward-zstd", move || {
        compress(rx, publisher, level, threads)
    })
    .map_err(ArchiveError::io(path))?;
    let vpath = path.to_path_buf();
    let (records, written) = mpsc::channel();
    let verifier = spawn("steward-verify", move || {
        let checker = Checker::Written {
            records: written,
            files: 0,
        };
        verify_with(
            &vpath,
            follower,
            Expect::Nothing,
            checker,
            None,
            &mut |_| {},
        )
    })
    .map_err(ArchiveError::io(path))?;
    Ok(Started {
        input,
        compressor,
        verifier,
        probe,
        records,
    })
}

/// Creates `path` with steps 4 and 5 running on it: the publisher to write into, the
/// follower reading it back.
pub fn follow(path: &Path) -> io::Result<(Publisher, Follower, Probe)> {
    let (mut publisher, follower, probe, sides) = follow::open(path)?;
    publisher.attach(spawn("steward-write", sides.write)?);
    spawn("steward-readback", sides.readback)?;
    Ok((publisher, follower, probe))
}

/// The consumer thread: compresses the tar stream into the data frame up to the pipe's
/// mark, then the trailer frame, appends the skippable pointer frame and fsyncs. The
/// follower sees each byte as it reaches the file, and the end only after the fsync.
fn compress(input: PipeReader, sink: Publisher, level: i32, threads: u32) -> io::Result<u64> {
    let mut sink = compress_into(input, sink, level, threads)?;
    let len = sink.len();
    let synced = sink.sync();
    sink.finish(&synced);
    synced.map(|()| len)
}

fn compress_into(
    mut input: PipeReader,
    sink: Publisher,
    level: i32,
    threads: u32,
) -> io::Result<Publisher> {
    let mut enc = zstd::stream::write::Encoder::new(sink, level)?;
    enc.include_checksum(true)?;
    if threads > 0 {
        enc.multithread(threads)?;
        // zstd's default job for level 3 is 8 MiB, with several jobs in flight that alone
        // exceeds the 64 MiB memory budget; 4 MiB jobs cost well under 1 % in ratio.
        enc.set_parameter(zstd::zstd_safe::CParameter::JobSize(JOB_SIZE))?;
    }
    pipe::copy_to_mark(&mut input, &mut enc)?;
    let sink = enc.finish()?;
    let trailer_offset = sink.len();
    let mut enc = zstd::stream::write::Encoder::new(sink, 3)?;
    enc.include_checksum(true)?;
    pipe::copy_to_mark(&mut input, &mut enc)?;
    let mut sink = enc.finish()?;
    let mut frame = Vec::with_capacity(TRAILER_FRAME_LEN);
    frame.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
    frame.extend_from_slice(&16u32.to_le_bytes());
    frame.extend_from_slice(TRAILER_TAG);
    frame.extend_from_slice(&trailer_offset.to_le_bytes());
    sink.write_all(&frame)?;
    Ok(sink)
}
