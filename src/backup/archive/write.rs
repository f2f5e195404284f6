//! Writing an archive: tar entries into a pipe, compressed on one thread into the data
//! frame and the trailer frame, while the verifier reads the file back behind the writer.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use std::sync::mpsc;
use tar::{EntryType, Header};
use xxhash_rust::xxh3::Xxh3;

use super::follow::{self, Readback};
use super::manifest;
use super::pipe::PipeWriter;
use super::pipeline;
use super::read::{Record, Verified, quick_key};
use super::{ArchiveError, ArchiveOptions, BackupMeta, DELETED_PATH, MANIFEST_PATH, META_PATH};

/// What writing one file's content found.
#[derive(Debug, Default)]
pub struct FileOutcome {
    pub digest: [u8; 32],
    /// The file ended before the size in its header: the rest was padded with zeros.
    pub shrank: bool,
    /// The file had more bytes than its header's size: they were left out.
    pub grew: bool,
}

/// The finished archive, written, fsynced and read back.
#[derive(Debug)]
pub struct Written {
    pub size: u64,
    /// The read-back that followed the writing: content against the manifest, and the
    /// digest of the bytes in the file (for the sidecar).
    pub verified: Result<Verified, ArchiveError>,
    /// Whether the read-back came from the device or, where the filesystem refused
    /// direct I/O, from the page cache.
    pub readback: Readback,
    pub files: u64,
}

/// Streams entries into a `.partial` archive file.
pub struct ArchiveWriter {
    path: PathBuf,
    builder: tar::Builder<PipeWriter>,
    /// Taken when a broken pipe is explained by the compressor's own error.
    compressor: Option<std::thread::JoinHandle<io::Result<u64>>>,
    verifier: std::thread::JoinHandle<Result<Verified, ArchiveError>>,
    probe: follow::Probe,
    records: mpsc::Sender<Record>,
    manifest_path: PathBuf,
    manifest: BufWriter<File>,
    manifest_hasher: Sha256,
    manifest_len: u64,
    files: u64,
}

fn base_header(meta: &std::fs::Metadata, kind: EntryType) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(u64::from(meta.uid()));
    h.set_gid(u64::from(meta.gid()));
    h.set_mtime(meta.mtime().max(0) as u64);
    h.set_size(0);
    h
}

impl ArchiveWriter {
    /// Creates `path` (which must not exist) and the manifest spool beside it, and starts
    /// the pipeline's threads (see `archive::pipeline`).
    pub fn create(
        path: &Path,
        manifest_spool: &Path,
        options: ArchiveOptions,
    ) -> Result<Self, ArchiveError> {
        let p = pipeline::start(path, options)?;
        let mut builder = tar::Builder::new(p.input);
        builder.mode(tar::HeaderMode::Complete);
        let mf = crate::fsutil::create_private(manifest_spool)
            .map_err(ArchiveError::io(manifest_spool))?;
        Ok(ArchiveWriter {
            path: path.to_path_buf(),
            builder,
            compressor: Some(p.compressor),
            verifier: p.verifier,
            probe: p.probe,
            records: p.records,
            manifest_path: manifest_spool.to_path_buf(),
            manifest: BufWriter::new(mf),
            manifest_hasher: Sha256::new(),
            manifest_len: 0,
            files: 0,
        })
    }

    /// The error of a write into the stream. A broken pipe only means the compressor
    /// stopped: its own error (a full disk, say) is the one that explains it.
    fn explain(&mut self, e: io::Error) -> ArchiveError {
        if e.kind() == io::ErrorKind::BrokenPipe
            && let Some(h) = self.compressor.take()
            && let Ok(Err(real)) = h.join()
        {
            return ArchiveError::io(&self.path)(real);
        }
        ArchiveError::io(&self.path)(e)
    }

    pub fn append_dir(
        &mut self,
        name: &Path,
        meta: &std::fs::Metadata,
    ) -> Result<(), ArchiveError> {
        let mut h = base_header(meta, EntryType::Directory);
        let r = self.builder.append_data(&mut h, name, io::empty());
        r.map_err(|e| self.explain(e))
    }

    /// A symlink to `target` (stored as written, never followed), or with `hard`, a hard
    /// link to `target`, an archive path already written.
    pub fn append_link(
        &mut self,
        name: &Path,
        meta: &std::fs::Metadata,
        target: &Path,
        hard: bool,
    ) -> Result<(), ArchiveError> {
        let kind = if hard {
            EntryType::Link
        } else {
            EntryType::Symlink
        };
        let mut h = base_header(meta, kind);
        let r = self.builder.append_link(&mut h, name, target);
        r.map_err(|e| self.explain(e))
    }

    /// Archives exactly `size` bytes read from `data` (padding with zeros if it ends early,
    /// leaving out what goes beyond), hashing them on the way into the manifest.
    pub fn append_file(
        &mut self,
        name: &Path,
        meta: &std::fs::Metadata,
        size: u64,
        data: impl Read,
        on_bytes: &mut dyn FnMut(u64),
    ) -> Result<FileOutcome, ArchiveError> {
        let mut h = base_header(meta, EntryType::Regular);
        h.set_size(size);
        let mut reader = ExactReader {
            inner: data,
            remaining: size,
            hasher: Sha256::new(),
            quick: Xxh3::new(),
            shrank: false,
            on_bytes,
        };
        let r = self.builder.append_data(&mut h, name, &mut reader);
        if let Err(e) = r {
            drop(reader);
            return Err(self.explain(e));
        }
        let mut probe = [0u8; 1];
        let grew = matches!(reader.inner.read(&mut probe), Ok(n) if n > 0);
        let shrank = reader.shrank;
        let digest: [u8; 32] = reader.hasher.finalize().into();
        let quick = reader.quick.digest128();
        // The read-back during writing compares against this (see Checker::Written); it
        // may have finished already when the writer is ahead, so a send error is fine.
        let _ = self
            .records
            .send(Record::File(quick_key(name.as_os_str().as_bytes(), quick)));
        let line = manifest::format_line(&digest, name.as_os_str().as_bytes());
        self.manifest_hasher.update(&line);
        self.manifest_len += line.len() as u64;
        let r = self.manifest.write_all(&line);
        r.map_err(ArchiveError::io(&self.manifest_path))?;
        self.files += 1;
        Ok(FileOutcome {
            digest,
            shrank,
            grew,
        })
    }

    /// A file a differential leaves to its base: only its manifest line, with the digest
    /// the base's index holds, so the manifest still lists the whole tree.
    pub fn carry(&mut self, name: &Path, digest: &[u8; 32]) -> Result<(), ArchiveError> {
        let line = manifest::format_line(digest, name.as_os_str().as_bytes());
        self.manifest_hasher.update(&line);
        self.manifest_len += line.len() as u64;
        self.manifest
            .write_all(&line)
            .map_err(ArchiveError::io(&self.manifest_path))
    }

    /// Writes the trailer (manifest and `meta`) and ends the stream.
    pub fn finish(self, meta: &BackupMeta) -> Result<Written, ArchiveError> {
        self.finish_with(meta, None)
    }

    /// [`finish`](Self::finish) of a differential: `deleted` (NUL-separated archive
    /// paths) goes into the trailer before the manifest, which tells a reader early that
    /// the manifest lists files this archive does not hold.
    pub fn finish_with(
        self,
        meta: &BackupMeta,
        deleted: Option<&[u8]>,
    ) -> Result<Written, ArchiveError> {
        let ArchiveWriter {
            path,
            mut builder,
            compressor,
            verifier,
            probe,
            records,
            manifest_path,
            manifest,
            manifest_hasher,
            manifest_len,
            files,
        } = self;
        let mfile = manifest
            .into_inner()
            .map_err(|e| ArchiveError::io(&manifest_path)(e.into_error()));
        let manifest_sha256: [u8; 32] = manifest_hasher.finalize().into();
        let _ = records.send(Record::Manifest(manifest_sha256));
        drop(records);
        let produced = mfile.and_then(|mfile| {
            drop(mfile);
            (|| -> io::Result<()> {
                builder.get_mut().mark()?;
                let now = crate::clock::now().max(0) as u64;
                let mut h = Header::new_gnu();
                h.set_entry_type(EntryType::Regular);
                h.set_mode(0o600);
                h.set_mtime(now);
                if let Some(deleted) = deleted {
                    h.set_size(deleted.len() as u64);
                    builder.append_data(&mut h, DELETED_PATH, deleted)?;
                }
                h.set_size(manifest_len);
                let spool = File::open(&manifest_path)?;
                builder.append_data(&mut h, MANIFEST_PATH, BufReader::new(spool))?;
                let json = serde_json::to_vec_pretty(meta).map_err(io::Error::other)?;
                h.set_size(json.len() as u64);
                builder.append_data(&mut h, META_PATH, json.as_slice())?;
                builder.into_inner()?.close()
            })()
            .map_err(ArchiveError::io(&path))
        });
        let _ = std::fs::remove_file(&manifest_path);
        // The compressor's own error (a full disk, say) explains a broken pipe better.
        let size = match compressor {
            Some(h) => join(h, &path)?,
            None => return Err(ArchiveError::corrupt(&path, "the compressor had stopped")),
        };
        produced?;
        let verified = verifier
            .join()
            .map_err(|_| ArchiveError::corrupt(&path, "the verification thread panicked"))
            .and_then(|v| v);
        Ok(Written {
            size,
            verified,
            readback: probe.readback(),
            files,
        })
    }
}

fn join<T>(handle: std::thread::JoinHandle<io::Result<T>>, path: &Path) -> Result<T, ArchiveError> {
    handle
        .join()
        .map_err(|_| ArchiveError::corrupt(path, "the compression thread panicked"))?
        .map_err(ArchiveError::io(path))
}

struct ExactReader<'a, R> {
    inner: R,
    remaining: u64,
    hasher: Sha256,
    quick: Xxh3,
    shrank: bool,
    on_bytes: &'a mut dyn FnMut(u64),
}

impl<R: Read> Read for ExactReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        // A signal stops a backup inside a large file too, not only between entries: at
        // level 19 one 400 MiB file took a minute, the daemon's whole grace period.
        if crate::backup::stop_flag().load(std::sync::atomic::Ordering::Relaxed) {
            return Err(io::Error::other("stopped by a signal"));
        }
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = if self.shrank {
            0
        } else {
            loop {
                match self.inner.read(&mut buf[..want]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    r => break r?,
                }
            }
        };
        let n = if n == 0 {
            // The file shrank while being read: keep the header's promise with zeros.
            self.shrank = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.hasher.update(&buf[..n]);
        self.quick.update(&buf[..n]);
        self.remaining -= n as u64;
        (self.on_bytes)(n as u64);
        Ok(n)
    }
}
