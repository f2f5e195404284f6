//! The archive format on disk: writing (tar entries into a multithreaded zstd frame, the
//! `.steward/` trailer in a frame of its own, a skippable frame pointing at the trailer) and
//! reading back (full verification against sidecar and manifest; trailer-only reads).
//!
//! Layout of `<set>-<stamp>.tar.zst`:
//! ```text
//! [zstd frame: tar entries of the data]
//! [zstd frame: .steward/MANIFEST.sha256, .steward/backup.json, tar end-of-archive]
//! [zstd skippable frame 0x184D2A5E: "STEWARD1" + u64 LE offset of the trailer frame]
//! ```
//! Concatenated frames are one stream to `zstd -d` and `tar --zstd`, and skippable frames
//! are ignored by them, so plain tools restore it; steward seeks to the trailer to read
//! `backup.json` without decompressing the data.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::mpsc;
use tar::{EntryType, Header};
use xxhash_rust::xxh3::Xxh3;

use super::follow::{self, Publisher};
use super::manifest;
use super::pipe::{self, PipeReader, PipeWriter};

/// Archive paths of the trailer entries.
pub const MANIFEST_PATH: &str = ".steward/MANIFEST.sha256";
pub const META_PATH: &str = ".steward/backup.json";

const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
const TRAILER_TAG: &[u8; 8] = b"STEWARD1";
const TRAILER_FRAME_LEN: usize = 24;
const JOB_SIZE: u32 = 2 << 20;

/// Errors reading or writing an archive; each names the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    // The cause is part of the message and deliberately not a `source`: anyhow would
    // print it twice ("x: x").
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
}

impl ArchiveError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
        move |error| ArchiveError::Io {
            path: path.to_path_buf(),
            error,
        }
    }
    fn corrupt(path: &Path, message: impl Into<String>) -> ArchiveError {
        ArchiveError::Corrupt {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// `.steward/backup.json`: what an archive holds, readable without steward's catalog.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackupMeta {
    pub format: u32,
    pub id: String,
    pub set: String,
    pub host: String,
    /// RFC 3339, UTC.
    pub created: String,
    pub created_unix: i64,
    pub tool: String,
    pub paths: Vec<String>,
    pub exclude: Vec<String>,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub skipped: u64,
    /// Bytes of file content archived (before compression).
    pub bytes: u64,
    pub sqlite: Vec<SqliteSnapshot>,
    pub fingerprint: String,
    pub compression_level: i32,
    pub warnings: Vec<String>,
    pub warnings_total: u64,
    /// The change guard's findings; a backup with reasons is suspect. Absent in archives
    /// of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<super::guard::GuardReport>,
}

impl BackupMeta {
    /// Why the change guard found this backup suspect (empty: it did not).
    pub fn suspect(&self) -> Vec<String> {
        self.guard
            .as_ref()
            .map(|g| g.reasons.clone())
            .unwrap_or_default()
    }
}

/// A SQLite database that was archived from an online-backup snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SqliteSnapshot {
    pub path: String,
    pub bytes: u64,
}

// ------------------------------------------------------------------ writing

/// The consumer thread: compresses the tar stream into the data frame up to the pipe's
/// mark, then the trailer frame, appends the skippable pointer frame and fsyncs. The
/// follower sees each byte as it reaches the file, and the end only after the fsync.
fn compress(input: PipeReader, sink: Publisher, level: i32, threads: u32) -> io::Result<u64> {
    let sink = compress_into(input, sink, level, threads)?;
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
    pub files: u64,
}

/// Streams entries into a `.partial` archive file.
pub struct ArchiveWriter {
    path: PathBuf,
    builder: tar::Builder<PipeWriter>,
    /// Taken when a broken pipe is explained by the compressor's own error.
    compressor: Option<std::thread::JoinHandle<io::Result<u64>>>,
    verifier: std::thread::JoinHandle<Result<Verified, ArchiveError>>,
    records: mpsc::Sender<Record>,
    manifest_path: PathBuf,
    manifest: BufWriter<File>,
    manifest_hasher: Sha256,
    manifest_len: u64,
    files: u64,
}

fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
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
    /// Creates `path` (which must not exist) and the manifest spool beside it.
    pub fn create(
        path: &Path,
        manifest_spool: &Path,
        level: i32,
        threads: u32,
    ) -> Result<Self, ArchiveError> {
        let file = create_private(path).map_err(ArchiveError::io(path))?;
        let reader = File::open(path).map_err(ArchiveError::io(path))?;
        let (publisher, follower) = follow::follow(file, reader);
        let (tx, rx) = pipe::pipe();
        let compressor = std::thread::Builder::new()
            .name("steward-zstd".into())
            .spawn(move || compress(rx, publisher, level, threads))
            .map_err(ArchiveError::io(path))?;
        let vpath = path.to_path_buf();
        let (records, written) = mpsc::channel();
        let verifier = std::thread::Builder::new()
            .name("steward-verify".into())
            .spawn(move || {
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
        let mut builder = tar::Builder::new(tx);
        builder.mode(tar::HeaderMode::Complete);
        let mf = create_private(manifest_spool).map_err(ArchiveError::io(manifest_spool))?;
        Ok(ArchiveWriter {
            path: path.to_path_buf(),
            builder,
            compressor: Some(compressor),
            verifier,
            records,
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

    /// Writes the trailer (manifest and `meta`) and ends the stream.
    pub fn finish(self, meta: &BackupMeta) -> Result<Written, ArchiveError> {
        let ArchiveWriter {
            path,
            mut builder,
            compressor,
            verifier,
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
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = if self.shrank {
            0
        } else {
            loop {
                match self.inner.read(&mut buf[..want]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
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

// ------------------------------------------------------------------ reading

/// What a full verification found.
#[derive(Debug)]
pub struct Verified {
    pub size: u64,
    pub sha256: [u8; 32],
    pub files: u64,
    pub meta: BackupMeta,
}

/// The sidecar path of an archive.
pub fn sidecar_path(archive: &Path) -> PathBuf {
    let mut s = archive.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// Reads `<archive>.sha256` and returns its digest.
pub fn read_sidecar(archive: &Path) -> Result<[u8; 32], ArchiveError> {
    let sc = sidecar_path(archive);
    let text = std::fs::read(&sc).map_err(ArchiveError::io(&sc))?;
    let line = text.strip_suffix(b"\n").unwrap_or(&text);
    let (digest, name) = manifest::parse_line(line)
        .ok_or_else(|| ArchiveError::corrupt(&sc, "not a sha256sum line"))?;
    let expected_name = archive
        .file_name()
        .map(|n| n.as_bytes())
        .unwrap_or_default();
    if name != expected_name {
        return Err(ArchiveError::corrupt(
            &sc,
            format!(
                "names {:?}, not {:?}",
                String::from_utf8_lossy(&name),
                String::from_utf8_lossy(expected_name)
            ),
        ));
    }
    Ok(digest)
}

/// Writes the sidecar for `archive` (at `dest`, which may be a partial name).
pub fn write_sidecar(dest: &Path, archive_name: &str, digest: &[u8; 32]) -> io::Result<()> {
    let mut f = create_private(dest)?;
    f.write_all(&manifest::format_line(digest, archive_name.as_bytes()))?;
    f.sync_all()
}

/// The 16-byte key comparing a file's path and SHA-256 with a manifest line.
pub fn entry_key(path: &[u8], digest: &[u8; 32]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(path);
    h.update([0]);
    h.update(digest);
    let d = h.finalize();
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
}

fn hash_entry(r: &mut impl Read, buf: &mut [u8]) -> io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    loop {
        let n = r.read(buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// What the archive's bytes must hash to.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// The digest in `<archive>.sha256`.
    Sidecar,
    /// A digest known from elsewhere (the catalog).
    Digest([u8; 32]),
    /// Nothing yet: a new archive, whose sidecar is written from this read once the
    /// content is proven to match the manifest.
    Nothing,
}

/// Reads the whole archive: its bytes against the expected digest, every zstd frame
/// checksum, every file's content against the manifest, and `backup.json` against what
/// was found. Reading and hashing the file runs on one thread, decompressing and hashing
/// the content on another. Memory stays small: 16 bytes per file.
pub fn verify(
    path: &Path,
    expect: Expect,
    on_bytes: &mut dyn FnMut(u64),
) -> Result<Verified, ArchiveError> {
    let file = File::open(path).map_err(ArchiveError::io(path))?;
    verify_from(path, file, expect, on_bytes)
}

/// [`verify`] over bytes from `source`, checking contents against the manifest.
fn verify_from(
    path: &Path,
    source: impl Read + Send + 'static,
    expect: Expect,
    on_bytes: &mut dyn FnMut(u64),
) -> Result<Verified, ArchiveError> {
    let checker = Checker::Manifest {
        keys: Vec::new(),
        checked: 0,
    };
    verify_with(path, source, expect, checker, None, on_bytes)
}

/// What the writer recorded, in archive order, for the read-back that follows it.
enum Record {
    /// [`quick_key`] of a regular file.
    File(u128),
    /// SHA-256 of the manifest's bytes.
    Manifest([u8; 32]),
}

/// XXH3-128 of a file's archive path and its content digest.
fn quick_key(path: &[u8], content: u128) -> u128 {
    let mut h = Xxh3::new();
    h.update(path);
    h.update(&[0]);
    h.update(&content.to_le_bytes());
    h.digest128()
}

/// How a read-back checks file contents.
enum Checker {
    /// Against the archive's own manifest: SHA-256 of every file, compared when the
    /// manifest entry arrives (`steward verify`). 16 bytes of memory per file.
    Manifest { keys: Vec<[u8; 16]>, checked: usize },
    /// Against what the writer recorded from the very source reads that fed the
    /// manifest: an XXH3-128 per file (end to end from source to disk, and ten times
    /// cheaper than SHA-256) and the manifest's own bytes. Used while writing.
    Written {
        records: mpsc::Receiver<Record>,
        files: u64,
    },
}

impl Checker {
    fn files(&self) -> u64 {
        match self {
            Checker::Manifest { keys, .. } => keys.len() as u64,
            Checker::Written { files, .. } => *files,
        }
    }
}

/// One archive entry as the safety checks of a restore see it.
pub struct EntryInfo<'a> {
    pub path: &'a [u8],
    pub kind: EntryType,
    pub link: Option<&'a [u8]>,
    pub mode: u32,
}

/// An entry check: `Err(reason)` refuses the archive.
pub type Inspector<'a> = &'a mut dyn FnMut(&EntryInfo<'_>) -> Result<(), String>;

/// [`verify`] that also shows every entry to `inspect` (for the safety checks of a restore,
/// done in the same read as the verification, before anything is written).
pub fn verify_inspecting(
    path: &Path,
    inspect: Inspector<'_>,
    on_bytes: &mut dyn FnMut(u64),
) -> Result<Verified, ArchiveError> {
    let file = File::open(path).map_err(ArchiveError::io(path))?;
    let checker = Checker::Manifest {
        keys: Vec::new(),
        checked: 0,
    };
    verify_with(
        path,
        file,
        Expect::Sidecar,
        checker,
        Some(inspect),
        on_bytes,
    )
}

/// The archive's decompressed tar stream, decompressed on another thread; the handle
/// reports zstd errors (checksums, truncation) once the stream has been read.
pub fn decompressed(
    path: &Path,
) -> Result<(PipeReader, std::thread::JoinHandle<io::Result<()>>), ArchiveError> {
    let file = File::open(path).map_err(ArchiveError::io(path))?;
    let (mut tx, rx) = pipe::pipe();
    let handle = std::thread::spawn(move || -> io::Result<()> {
        let mut decoder = zstd::stream::read::Decoder::new(file)?;
        decoder.window_log_max(31)?;
        while tx.fill_from(&mut decoder)? > 0 {}
        tx.close()
    });
    Ok((rx, handle))
}

fn verify_with(
    path: &Path,
    mut source: impl Read + Send + 'static,
    expect: Expect,
    checker: Checker,
    inspect: Option<Inspector<'_>>,
    on_bytes: &mut dyn FnMut(u64),
) -> Result<Verified, ArchiveError> {
    let expected = match expect {
        Expect::Sidecar => Some(read_sidecar(path)?),
        Expect::Digest(d) => Some(d),
        Expect::Nothing => None,
    };
    let (mut tx, rx) = pipe::pipe();
    let reader = std::thread::spawn(move || -> io::Result<(u64, [u8; 32])> {
        let mut h = Sha256::new();
        let mut total = 0u64;
        loop {
            let n = tx.fill_from(&mut source)?;
            if n == 0 {
                break;
            }
            let pending = tx.pending();
            h.update(&pending[pending.len() - n..]);
            total += n as u64;
        }
        tx.close()?;
        Ok((total, h.finalize().into()))
    });
    let (mut plain_tx, plain_rx) = pipe::pipe();
    let decompressor = std::thread::spawn(move || -> io::Result<()> {
        let mut decoder = zstd::stream::read::Decoder::with_buffer(rx)?;
        decoder.window_log_max(31)?;
        while plain_tx.fill_from(&mut decoder)? > 0 {}
        plain_tx.close()
    });
    let content = verify_stream(path, plain_rx, checker, inspect, on_bytes);
    let read = reader
        .join()
        .map_err(|_| ArchiveError::corrupt(path, "the reader thread panicked"));
    let decoded = decompressor
        .join()
        .map_err(|_| ArchiveError::corrupt(path, "the decompression thread panicked"))?;
    // A zstd error (bad checksum, truncation) explains a tar error that follows from it.
    if let Err(e) = decoded {
        let at = match &content {
            Err(ArchiveError::Corrupt { message, .. }) => format!(" ({message})"),
            _ => String::new(),
        };
        return Err(ArchiveError::corrupt(
            path,
            format!("zstd data is damaged: {e}{at}"),
        ));
    }
    let (files, meta) = content?;
    let (size, sha256) = read?.map_err(ArchiveError::io(path))?;
    if let Some(expected) = expected
        && sha256 != expected
    {
        return Err(ArchiveError::corrupt(
            path,
            format!(
                "sha256 {} does not match the sidecar's {}",
                hex::encode(sha256),
                hex::encode(expected)
            ),
        ));
    }
    Ok(Verified {
        size,
        sha256,
        files,
        meta,
    })
}

fn verify_stream(
    path: &Path,
    mut decoder: PipeReader,
    mut checker: Checker,
    mut inspect: Option<Inspector<'_>>,
    on_bytes: &mut dyn FnMut(u64),
) -> Result<(u64, BackupMeta), ArchiveError> {
    let mut meta: Option<BackupMeta> = None;
    let mut manifest_seen = false;
    let mut buf = vec![0u8; 256 * 1024];
    let mut current = String::from("(archive start)");
    let at = |current: &str, e: io::Error| {
        ArchiveError::corrupt(path, format!("reading entry {current}: {e}"))
    };
    let bad = |message: String| ArchiveError::corrupt(path, message);
    {
        let mut archive = tar::Archive::new(&mut decoder);
        let entries = archive.entries().map_err(|e| at(&current, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| at(&current, e))?;
            let name = entry.path_bytes().into_owned();
            current = String::from_utf8_lossy(&name).into_owned();
            let kind = entry.header().entry_type();
            on_bytes(entry.size() + 512);
            if let Some(inspect) = inspect.as_mut() {
                let link = entry.link_name_bytes().map(|l| l.into_owned());
                let info = EntryInfo {
                    path: &name,
                    kind,
                    link: link.as_deref(),
                    mode: entry.header().mode().unwrap_or(0),
                };
                inspect(&info)
                    .map_err(|reason| bad(format!("unsafe entry {current}: {reason}")))?;
            }
            if name == MANIFEST_PATH.as_bytes() {
                manifest_seen = true;
                check_manifest(&mut entry, &mut checker, &current, &bad)?;
            } else if name == META_PATH.as_bytes() {
                let mut json = Vec::new();
                entry.read_to_end(&mut json).map_err(|e| at(&current, e))?;
                let m: BackupMeta = serde_json::from_slice(&json)
                    .map_err(|e| bad(format!("{META_PATH} is not valid: {e}")))?;
                meta = Some(m);
            } else if matches!(kind, EntryType::Regular | EntryType::Continuous) {
                match &mut checker {
                    Checker::Manifest { keys, .. } => {
                        let digest =
                            hash_entry(&mut entry, &mut buf).map_err(|e| at(&current, e))?;
                        keys.push(entry_key(&name, &digest));
                    }
                    Checker::Written { records, files } => {
                        let digest =
                            quick_entry(&mut entry, &mut buf).map_err(|e| at(&current, e))?;
                        match records.recv() {
                            Ok(Record::File(k)) if k == quick_key(&name, digest) => {}
                            _ => {
                                return Err(bad(format!(
                                    "file {current}: read back differs from what was archived"
                                )));
                            }
                        }
                        *files += 1;
                    }
                }
            }
        }
    }
    // Drain to the end so the trailer frame's checksum is checked too.
    io::copy(&mut decoder, &mut io::sink()).map_err(|e| at("(end of archive)", e))?;
    let meta = meta.ok_or_else(|| bad(format!("{META_PATH} is missing")))?;
    if !manifest_seen {
        return Err(bad(format!("{MANIFEST_PATH} is missing")));
    }
    let files = checker.files();
    if meta.files != files {
        return Err(bad(format!(
            "{META_PATH} says {} files, the archive holds {files}",
            meta.files
        )));
    }
    Ok((files, meta))
}

/// Checks the manifest entry: line by line against the files' SHA-256 (`Manifest`), or
/// its bytes against what the writer produced (`Written`).
fn check_manifest(
    entry: &mut impl Read,
    checker: &mut Checker,
    current: &str,
    bad: &dyn Fn(String) -> ArchiveError,
) -> Result<(), ArchiveError> {
    let read_err = |e: io::Error| bad(format!("reading entry {current}: {e}"));
    match checker {
        Checker::Written { records, .. } => {
            let mut h = Sha256::new();
            let mut buf = [0u8; 64 * 1024];
            loop {
                let n = entry.read(&mut buf).map_err(read_err)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            let digest: [u8; 32] = h.finalize().into();
            match records.recv() {
                Ok(Record::Manifest(d)) if d == digest => Ok(()),
                _ => Err(bad(format!(
                    "{MANIFEST_PATH}: read back differs from what was written"
                ))),
            }
        }
        Checker::Manifest { keys, checked } => {
            for line in BufReader::new(entry).split(b'\n') {
                let line = line.map_err(read_err)?;
                let (digest, file) = manifest::parse_line(&line)
                    .ok_or_else(|| bad(format!("manifest line {} is malformed", *checked + 1)))?;
                let shown = String::from_utf8_lossy(&file);
                match keys.get(*checked) {
                    Some(k) if *k == entry_key(&file, &digest) => {}
                    Some(_) => {
                        return Err(bad(format!(
                            "file {shown}: content does not match the manifest"
                        )));
                    }
                    None => {
                        return Err(bad(format!(
                            "file {shown}: in the manifest but not in the archive"
                        )));
                    }
                }
                *checked += 1;
            }
            if *checked != keys.len() {
                return Err(bad(format!(
                    "the archive holds {} files but the manifest lists {checked}",
                    keys.len()
                )));
            }
            Ok(())
        }
    }
}

fn quick_entry(r: &mut impl Read, buf: &mut [u8]) -> io::Result<u128> {
    let mut h = Xxh3::new();
    loop {
        let n = r.read(buf)?;
        if n == 0 {
            return Ok(h.digest128());
        }
        h.update(&buf[..n]);
    }
}

/// How far the stamp in an archive's name may lie after the time in its `backup.json`: a
/// second run in the same second takes the next free second for its name.
const NAME_SLACK_SECS: i64 = 3600;

/// Checks that an archive's `backup.json` agrees with where it lies: the file is
/// `<id>.tar.zst` in the folder `<set>`, and the ID is `<set>-<stamp>` with the stamp at or
/// shortly after `created_unix`. An archive copied under another name (to pass for a good
/// backup) is refused, naming both.
pub fn check_identity(path: &Path, meta: &BackupMeta) -> Result<(), ArchiveError> {
    let bad = |m: String| Err(ArchiveError::corrupt(path, m));
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    if file != format!("{}.tar.zst", meta.id) {
        return bad(format!(
            "backup.json names the backup {:?}, but the file is {file:?}",
            meta.id
        ));
    }
    let folder = path
        .parent()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    if folder != meta.set {
        return bad(format!(
            "backup.json names the set {:?}, but the archive lies in the folder {folder:?}",
            meta.set
        ));
    }
    let stamp = meta
        .id
        .strip_prefix(&meta.set)
        .and_then(|r| r.strip_prefix('-'))
        .unwrap_or_default();
    match crate::clock::parse_stamp(stamp).map(|t| t.as_second()) {
        Some(t) if (0..=NAME_SLACK_SECS).contains(&(t - meta.created_unix)) => Ok(()),
        Some(_) => bad(format!(
            "the ID {:?} does not match the creation time {} in backup.json",
            meta.id, meta.created
        )),
        None => bad(format!(
            "the ID {:?} is not <set>-<YYYYMMDDTHHMMSSZ>",
            meta.id
        )),
    }
}

/// Reads `backup.json` from the trailer frame without decompressing the data.
pub fn read_meta(path: &Path) -> Result<BackupMeta, ArchiveError> {
    let mut f = File::open(path).map_err(ArchiveError::io(path))?;
    let len = f.metadata().map_err(ArchiveError::io(path))?.len();
    if len < TRAILER_FRAME_LEN as u64 {
        return Err(ArchiveError::corrupt(
            path,
            "too short to be a steward archive",
        ));
    }
    f.seek(SeekFrom::Start(len - TRAILER_FRAME_LEN as u64))
        .map_err(ArchiveError::io(path))?;
    let mut frame = [0u8; TRAILER_FRAME_LEN];
    f.read_exact(&mut frame).map_err(ArchiveError::io(path))?;
    let magic = u32::from_le_bytes(frame[0..4].try_into().expect("4 bytes"));
    if magic != SKIPPABLE_MAGIC || &frame[8..16] != TRAILER_TAG {
        return Err(ArchiveError::corrupt(
            path,
            "no steward trailer at the end (truncated, or not written by steward)",
        ));
    }
    let offset = u64::from_le_bytes(frame[16..24].try_into().expect("8 bytes"));
    if offset >= len {
        return Err(ArchiveError::corrupt(
            path,
            "trailer offset is past the end",
        ));
    }
    f.seek(SeekFrom::Start(offset))
        .map_err(ArchiveError::io(path))?;
    let dec = zstd::stream::read::Decoder::new(f)
        .map_err(ArchiveError::io(path))?
        .single_frame();
    let mut archive = tar::Archive::new(dec);
    let bad = |e: io::Error| ArchiveError::corrupt(path, format!("reading the trailer: {e}"));
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if entry.path_bytes().as_ref() == META_PATH.as_bytes() {
            let mut json = Vec::new();
            entry.read_to_end(&mut json).map_err(bad)?;
            return serde_json::from_slice(&json).map_err(|e| {
                ArchiveError::corrupt(path, format!("{META_PATH} is not valid: {e}"))
            });
        }
    }
    Err(ArchiveError::corrupt(
        path,
        format!("{META_PATH} is missing"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(files: u64) -> BackupMeta {
        BackupMeta {
            format: 1,
            id: "t-20260101T000000Z".into(),
            set: "t".into(),
            host: "h".into(),
            created: "2026-01-01T00:00:00Z".into(),
            created_unix: 0,
            tool: "test".into(),
            paths: vec![],
            exclude: vec![],
            files,
            dirs: 0,
            symlinks: 0,
            hardlinks: 0,
            skipped: 0,
            bytes: 0,
            sqlite: vec![],
            fingerprint: "f".into(),
            compression_level: 3,
            warnings: vec![],
            warnings_total: 0,
            guard: None,
        }
    }

    #[test]
    fn a_file_that_changes_size_keeps_its_header_promise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar.zst");
        let spool = dir.path().join("m");
        let fmeta = std::fs::metadata(dir.path()).unwrap();
        let mut w = ArchiveWriter::create(&path, &spool, 3, 2).unwrap();
        // Header says 10 bytes, the file now has 4: padded with zeros.
        let shrank = w
            .append_file(Path::new("x/short"), &fmeta, 10, &b"abcd"[..], &mut |_| {})
            .unwrap();
        assert!(shrank.shrank && !shrank.grew);
        // Header says 3 bytes, the file now has 6: cut at 3.
        let grew = w
            .append_file(Path::new("x/long"), &fmeta, 3, &b"abcdef"[..], &mut |_| {})
            .unwrap();
        assert!(grew.grew && !grew.shrank);
        let written = w.finish(&meta(2)).unwrap();
        let v = written.verified.unwrap();
        assert_eq!(v.files, 2);
        // The manifest hashes what was archived, so a later full verify agrees.
        let again = verify_from(
            &path,
            File::open(&path).unwrap(),
            Expect::Digest(v.sha256),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(again.files, 2);
        let expected: [u8; 32] = Sha256::digest(b"abcd\0\0\0\0\0\0").into();
        assert_eq!(shrank.digest, expected);
        let expected: [u8; 32] = Sha256::digest(b"abc").into();
        assert_eq!(grew.digest, expected);
    }

    /// An archive holding one file `f`, finished with a `backup.json` claiming `claimed`
    /// files.
    fn one_file_archive(dir: &Path, claimed: u64) -> (PathBuf, Written) {
        let path = dir.join("a.tar.zst");
        let fmeta = std::fs::metadata(dir).unwrap();
        let mut w = ArchiveWriter::create(&path, &dir.join("m"), 3, 1).unwrap();
        w.append_file(Path::new("f"), &fmeta, 5, &b"hello"[..], &mut |_| {})
            .unwrap();
        let written = w.finish(&meta(claimed)).unwrap();
        (path, written)
    }

    #[test]
    fn trailer_is_readable_without_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let (path, written) = one_file_archive(dir.path(), 1);
        written.verified.unwrap();
        assert_eq!(read_meta(&path).unwrap(), meta(1));
        // A truncated file has no trailer: said plainly.
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let e = read_meta(&path).unwrap_err().to_string();
        assert!(e.contains("no steward trailer"), "{e}");
    }

    #[test]
    fn verify_counts_a_manifest_that_disagrees_with_backup_json() {
        let dir = tempfile::tempdir().unwrap();
        // backup.json claims two files: the read-back refuses it.
        let e = one_file_archive(dir.path(), 2)
            .1
            .verified
            .unwrap_err()
            .to_string();
        assert!(e.contains("says 2 files"), "{e}");
    }
}
