//! Reading an archive back in full: its bytes against the expected digest, every zstd
//! frame checksum, every file against the manifest, and `backup.json` against what was
//! found; the entry inspector a restore hooks in; the decompressed stream for staging.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};
use std::sync::mpsc;
use tar::EntryType;
use xxhash_rust::xxh3::Xxh3;

use super::manifest;
use super::pipe::{self, PipeReader};

use super::{
    ArchiveError, BackupMeta, DELETED_PATH, MANIFEST_PATH, META_PATH, entry_key, read_sidecar,
};

// ------------------------------------------------------------------ reading

/// What a full verification found.
#[derive(Debug)]
pub struct Verified {
    pub size: u64,
    pub sha256: [u8; 32],
    pub files: u64,
    pub meta: BackupMeta,
    /// A differential's facts, for the check against its base
    /// ([`super::check_against_base`]).
    pub diff: Option<DiffFacts>,
}

/// What a differential's read found: what its base must supply.
#[derive(Debug, Default)]
pub struct DiffFacts {
    /// `DELETED`, NUL-separated archive paths.
    pub deleted: Vec<u8>,
    /// The files the archive holds.
    pub stored: std::collections::HashSet<Vec<u8>>,
    /// The manifest's files the archive does not hold, with their digests: the base must
    /// hold exactly these (besides what was replaced or deleted).
    pub carried: std::collections::HashMap<Vec<u8>, [u8; 32]>,
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
    verify_file(path, expect, None, on_bytes)
}

/// [`verify`] of the archive file at `path`, its entries shown to `inspect`.
fn verify_file(
    path: &Path,
    expect: Expect,
    inspect: Option<Inspector<'_>>,
    on_bytes: &mut dyn FnMut(u64),
) -> Result<Verified, ArchiveError> {
    let file = File::open(path).map_err(ArchiveError::io(path))?;
    let checker = Checker::Manifest {
        keys: Vec::new(),
        checked: 0,
        diff: None,
    };
    verify_with(
        path,
        ReadAhead::spawn(file),
        expect,
        checker,
        inspect,
        on_bytes,
    )
}

/// What the writer recorded, in archive order, for the read-back that follows it.
pub(super) enum Record {
    /// [`quick_key`] of a regular file.
    File(u128),
    /// SHA-256 of the manifest's bytes.
    Manifest([u8; 32]),
}

/// XXH3-128 of a file's archive path and its content digest.
pub(super) fn quick_key(path: &[u8], content: u128) -> u128 {
    let mut h = Xxh3::new();
    h.update(path);
    h.update(&[0]);
    h.update(&content.to_le_bytes());
    h.digest128()
}

/// How a read-back checks file contents.
pub(super) enum Checker {
    /// Against the archive's own manifest: SHA-256 of every file, compared when the
    /// manifest entry arrives (`steward verify`). 16 bytes of memory per file.
    Manifest {
        keys: Vec<[u8; 16]>,
        checked: usize,
        /// A differential (its `DELETED` came first): the manifest lists the whole tree,
        /// the archive's files are a part of it, in the same order.
        diff: Option<DiffFacts>,
    },
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
    expect: Expect,
    inspect: Inspector<'_>,
    on_bytes: &mut dyn FnMut(u64),
) -> Result<Verified, ArchiveError> {
    verify_file(path, expect, Some(inspect), on_bytes)
}

/// The decompression thread of [`decompressed`]: joined, it reports zstd errors.
pub type Decoding = JoinHandle<io::Result<BufReader<File>>>;

/// The archive's decompressed tar stream, decompressed on another thread; the handle
/// reports zstd errors (checksums, truncation) once the stream has been read.
pub fn decompressed(path: &Path) -> Result<(PipeReader, Decoding), ArchiveError> {
    let file = File::open(path).map_err(ArchiveError::io(path))?;
    Ok(spawn_decoder(BufReader::with_capacity(1 << 20, file)))
}

/// Decompresses `compressed` on a thread of its own into a pipe (windows up to 2 GiB, as
/// written); the thread's result reports zstd errors once the pipe has been read, and
/// gives the source back.
fn spawn_decoder<R: BufRead + Send + 'static>(
    compressed: R,
) -> (PipeReader, JoinHandle<io::Result<R>>) {
    let (mut tx, rx) = pipe::pipe();
    let handle = std::thread::spawn(move || -> io::Result<R> {
        let mut decoder = zstd::stream::read::Decoder::with_buffer(compressed)?;
        decoder.window_log_max(31)?;
        while tx.fill_from(&mut decoder)? > 0 {}
        tx.close()?;
        Ok(decoder.finish())
    });
    (rx, handle)
}

/// The compressed bytes a verification decodes, hashed as they are read (on a thread of
/// their own, beside the decompression).
pub(super) trait Compressed: BufRead + Send + 'static {
    /// Reads what is left, then gives the size and SHA-256 of all the bytes.
    fn digest(self) -> io::Result<(u64, [u8; 32])>;
}

/// A file read and hashed ahead, on a thread of its own, into a pipe.
struct ReadAhead {
    pipe: PipeReader,
    reader: JoinHandle<io::Result<(u64, [u8; 32])>>,
}

impl ReadAhead {
    fn spawn(mut source: impl Read + Send + 'static) -> Self {
        let (mut tx, pipe) = pipe::pipe();
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
        ReadAhead { pipe, reader }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.pipe.read(out)
    }
}

impl BufRead for ReadAhead {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.pipe.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.pipe.consume(amt);
    }
}

impl Compressed for ReadAhead {
    fn digest(mut self) -> io::Result<(u64, [u8; 32])> {
        io::copy(&mut self.pipe, &mut io::sink())?;
        self.reader
            .join()
            .map_err(|_| io::Error::other("the reader thread panicked"))?
    }
}

pub(super) fn verify_with(
    path: &Path,
    source: impl Compressed,
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
    let (plain_rx, decompressor) = spawn_decoder(source);
    let content = verify_stream(path, plain_rx, checker, inspect, on_bytes);
    let decoded = decompressor
        .join()
        .map_err(|_| ArchiveError::corrupt(path, "the decompression thread panicked"))?;
    // A zstd error (bad checksum, truncation) explains a tar error that follows from it.
    let source = match decoded {
        Ok(source) => source,
        Err(e) => {
            let at = match &content {
                Err(ArchiveError::Corrupt { message, .. }) => format!(" ({message})"),
                _ => String::new(),
            };
            return Err(ArchiveError::corrupt(
                path,
                format!("zstd data is damaged: {e}{at}"),
            ));
        }
    };
    let (files, meta, diff) = content?;
    let (size, sha256) = source.digest().map_err(ArchiveError::io(path))?;
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
        diff,
    })
}

fn verify_stream(
    path: &Path,
    mut decoder: PipeReader,
    mut checker: Checker,
    mut inspect: Option<Inspector<'_>>,
    on_bytes: &mut dyn FnMut(u64),
) -> Result<(u64, BackupMeta, Option<DiffFacts>), ArchiveError> {
    let mut meta: Option<BackupMeta> = None;
    let mut manifest_seen = false;
    let mut deleted_seen = false;
    // The folders the archive holds: a differential's deletions must lie in them.
    let mut dirs: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
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
                let link = entry.link_name_bytes().map(std::borrow::Cow::into_owned);
                let info = EntryInfo {
                    path: &name,
                    kind,
                    link: link.as_deref(),
                    mode: entry.header().mode().unwrap_or(0),
                };
                inspect(&info)
                    .map_err(|reason| bad(format!("unsafe entry {current}: {reason}")))?;
            }
            if name == DELETED_PATH.as_bytes() {
                if manifest_seen || deleted_seen {
                    return Err(bad(format!("{DELETED_PATH} is out of place")));
                }
                deleted_seen = true;
                let mut list = Vec::new();
                entry.read_to_end(&mut list).map_err(|e| at(&current, e))?;
                if let Checker::Manifest { diff, .. } = &mut checker {
                    *diff = Some(DiffFacts {
                        deleted: list,
                        ..DiffFacts::default()
                    });
                }
            } else if name == MANIFEST_PATH.as_bytes() {
                manifest_seen = true;
                check_manifest(&mut entry, &mut checker, &current, &bad)?;
            } else if name == META_PATH.as_bytes() {
                let mut json = Vec::new();
                entry.read_to_end(&mut json).map_err(|e| at(&current, e))?;
                let m: BackupMeta = serde_json::from_slice(&json)
                    .map_err(|e| bad(format!("{META_PATH} is not valid: {e}")))?;
                meta = Some(m);
            } else if kind == EntryType::Directory {
                let mut d = name.as_slice();
                while let Some(r) = d.strip_suffix(b"/") {
                    d = r;
                }
                dirs.insert(d.to_vec());
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
    if meta.stored() != files {
        return Err(bad(format!(
            "{META_PATH} says {} files, the archive holds {files}",
            meta.stored()
        )));
    }
    if deleted_seen != meta.base.is_some() {
        return Err(bad(format!(
            "{META_PATH} and {DELETED_PATH} disagree on whether this is a differential"
        )));
    }
    let diff = match checker {
        Checker::Manifest { diff, .. } => diff,
        Checker::Written { .. } => None,
    };
    if let Some(d) = &diff {
        check_deleted(d, &dirs, &meta).map_err(bad)?;
    }
    Ok((files, meta, diff))
}

/// A differential's `DELETED` is run through `xargs -0 rm -rf` by the plain-tools
/// recipe, so every entry must be a plain relative path under one of the set's paths,
/// inside a folder this archive holds (or one it deletes too): never absolute, never
/// `..`, never through a symlink. And `backup.json`'s counts must be what the lists hold.
fn check_deleted(
    d: &DiffFacts,
    dirs: &std::collections::HashSet<Vec<u8>>,
    meta: &BackupMeta,
) -> Result<(), String> {
    let entries: Vec<&[u8]> = d
        .deleted
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .collect();
    let listed: std::collections::HashSet<&[u8]> = entries.iter().copied().collect();
    let roots: Vec<Vec<u8>> = meta
        .paths
        .iter()
        .map(|p| p.trim_start_matches('/').as_bytes().to_vec())
        .collect();
    for e in &entries {
        let shown = String::from_utf8_lossy(e);
        let plain = !e.starts_with(b"/")
            && e.split(|b| *b == b'/')
                .all(|c| !c.is_empty() && c != b"." && c != b"..");
        let under = roots
            .iter()
            .any(|r| e.len() > r.len() + 1 && e.starts_with(r) && e[r.len()] == b'/');
        if !plain || !under {
            return Err(format!(
                "{DELETED_PATH} lists {shown:?}, which is not a path under the set's paths"
            ));
        }
        let parent = &e[..e.iter().rposition(|b| *b == b'/').unwrap_or(0)];
        if !dirs.contains(parent) && !listed.contains(parent) {
            return Err(format!(
                "{DELETED_PATH} lists {shown:?}, whose folder is not in the archive"
            ));
        }
        if dirs.contains(*e) {
            return Err(format!(
                "{DELETED_PATH} lists {shown:?}, a folder the archive holds"
            ));
        }
    }
    // `rm -rf` of a listed folder takes what is below it: no file of the tree may be.
    for f in d.stored.iter().chain(d.carried.keys()) {
        let mut at = f.len();
        while let Some(i) = f[..at].iter().rposition(|b| *b == b'/') {
            if listed.contains(&f[..i]) {
                return Err(format!(
                    "{DELETED_PATH} lists {:?}, which holds {:?} of the manifest",
                    String::from_utf8_lossy(&f[..i]),
                    String::from_utf8_lossy(f)
                ));
            }
            at = i;
        }
    }
    if meta.deleted != Some(entries.len() as u64) {
        return Err(format!(
            "{META_PATH} says {} deleted entries, {DELETED_PATH} lists {}",
            meta.deleted.unwrap_or(0),
            entries.len()
        ));
    }
    let tree = (d.stored.len() + d.carried.len()) as u64;
    if meta.files != tree {
        return Err(format!(
            "{META_PATH} says the tree has {} files, the manifest lists {tree}",
            meta.files
        ));
    }
    Ok(())
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
            let mut buf = vec![0u8; 64 * 1024];
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
        Checker::Manifest {
            keys,
            checked,
            diff: Some(diff),
        } => check_diff_manifest(entry, keys, checked, diff, current, bad),
        Checker::Manifest {
            keys,
            checked,
            diff: None,
        } => {
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

/// A differential's manifest: the whole tree, of which the archive's files are a part in
/// the same order. Every archived file must match its line; the other lines are what the
/// base must supply (checked against it later); no line may be in `DELETED`.
fn check_diff_manifest(
    entry: &mut impl Read,
    keys: &[[u8; 16]],
    checked: &mut usize,
    diff: &mut DiffFacts,
    current: &str,
    bad: &dyn Fn(String) -> ArchiveError,
) -> Result<(), ArchiveError> {
    let read_err = |e: io::Error| bad(format!("reading entry {current}: {e}"));
    let deleted: std::collections::HashSet<&[u8]> = diff
        .deleted
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .collect();
    let mut carried = std::collections::HashMap::new();
    let mut stored = std::collections::HashSet::new();
    for (n, line) in BufReader::new(entry).split(b'\n').enumerate() {
        let line = line.map_err(read_err)?;
        let lines = n + 1;
        let (digest, file) = manifest::parse_line(&line)
            .ok_or_else(|| bad(format!("manifest line {lines} is malformed")))?;
        let shown = || String::from_utf8_lossy(&file).into_owned();
        if deleted.contains(file.as_slice()) {
            return Err(bad(format!(
                "file {}: in the manifest and in {DELETED_PATH}",
                shown()
            )));
        }
        if keys.get(*checked) == Some(&entry_key(&file, &digest)) {
            *checked += 1;
            stored.insert(file);
        } else if carried.contains_key(&file) || stored.contains(&file) {
            return Err(bad(format!(
                "file {}: listed twice in the manifest",
                shown()
            )));
        } else {
            carried.insert(file, digest);
        }
    }
    if *checked != keys.len() {
        return Err(bad(format!(
            "{} of the archive's {} files do not match the manifest (a file's content \
             differs from its line, or the lines are out of order)",
            keys.len() - *checked,
            keys.len()
        )));
    }
    diff.carried = carried;
    diff.stored = stored;
    Ok(())
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

/// Checks a differential against the full backup `base_id` at `base`: the file must hold
/// that full backup (its trailer says so), and its manifest must supply exactly what the
/// differential leaves to it. The outer error: the trailer could not be read; the inner
/// one: why the pair does not restore.
pub fn check_against_base(
    diff: &DiffFacts,
    base: &Path,
    base_id: &str,
) -> Result<Result<(), String>, ArchiveError> {
    let trailer = super::read_trailer(base, true)?;
    if trailer.meta.id != base_id || trailer.meta.base.is_some() {
        return Ok(Err(format!(
            "{} does not hold the full backup {base_id}",
            base.display()
        )));
    }
    Ok(against_manifest(
        diff,
        &trailer.manifest.unwrap_or_default(),
    ))
}

/// The base's files, less those the differential holds itself or deleted, must be exactly
/// the files it carries, with the same digests. Then extracting the base, then the
/// differential, then deleting `DELETED` gives the tree of the differential's manifest.
fn against_manifest(diff: &DiffFacts, base_manifest: &[u8]) -> Result<(), String> {
    let deleted: std::collections::HashSet<&[u8]> = diff
        .deleted
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .collect();
    let mut supplied = 0usize;
    for (n, line) in base_manifest.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let (digest, file) = manifest::parse_line(line)
            .ok_or_else(|| format!("the base's manifest line {} is malformed", n + 1))?;
        if deleted.contains(file.as_slice()) || diff.stored.contains(&file) {
            continue;
        }
        let shown = || String::from_utf8_lossy(&file).into_owned();
        match diff.carried.get(&file) {
            Some(d) if *d == digest => supplied += 1,
            Some(_) => {
                return Err(format!(
                    "file {}: the base holds other content than the differential's \
                     manifest says",
                    shown()
                ));
            }
            None => {
                return Err(format!(
                    "file {}: in the base, but neither in the differential's manifest nor \
                     in its {DELETED_PATH}",
                    shown()
                ));
            }
        }
    }
    if supplied != diff.carried.len() {
        let in_base: std::collections::HashSet<Vec<u8>> = base_manifest
            .split(|b| *b == b'\n')
            .filter_map(manifest::parse_line)
            .map(|(_, p)| p)
            .collect();
        let missing = diff
            .carried
            .keys()
            .find(|f| !in_base.contains(*f))
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .unwrap_or_default();
        return Err(format!(
            "file {missing}: in the differential's manifest, but neither in it nor in its base"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_with(paths: &[&str], files: u64, deleted: u64) -> BackupMeta {
        let mut m: BackupMeta = serde_json::from_value(serde_json::json!({
            "format": 2, "id": "s-1", "set": "s", "host": "h", "created": "", "created_unix": 0,
            "tool": "t", "paths": paths, "exclude": [], "files": files, "dirs": 0,
            "symlinks": 0, "hardlinks": 0, "skipped": 0, "bytes": 0, "sqlite": [],
            "fingerprint": "", "compression_level": 3, "warnings": [], "warnings_total": 0
        }))
        .unwrap();
        m.deleted = Some(deleted);
        m
    }

    /// The plain-tools recipe runs `DELETED` through `rm -rf`: an entry outside the set's
    /// folders, absolute, with `..`, or below a folder the archive does not hold (a
    /// symlink in the base, say) is refused, as are counts that disagree.
    #[test]
    fn a_deleted_list_naming_anything_outside_the_sets_folders_is_refused() {
        let dirs: std::collections::HashSet<Vec<u8>> =
            [b"srv/data".to_vec(), b"srv/data/sub".to_vec()].into();
        let facts = |list: &[u8]| DiffFacts {
            deleted: list.to_vec(),
            ..DiffFacts::default()
        };
        let ok = |list: &[u8], n: u64| {
            check_deleted(&facts(list), &dirs, &meta_with(&["/srv/data"], 0, n))
        };
        assert!(
            ok(
                b"srv/data/a\0srv/data/sub/b\0srv/data/gone\0srv/data/gone/c\0",
                4
            )
            .is_ok()
        );
        for bad in [
            b"/etc/passwd\0".as_slice(),
            b"srv/data/../../etc\0",
            b"srv/other/x\0",
            b"srv/data\0",
            b"srv/data/link/x\0",
            b"srv/data/./a\0",
        ] {
            let e = ok(bad, 1).unwrap_err();
            assert!(e.contains(DELETED_PATH), "{e}");
        }
        // A folder the archive holds, or one holding a file of the manifest.
        let e = ok(b"srv/data/sub\0", 1).unwrap_err();
        assert!(e.contains("a folder the archive holds"), "{e}");
        let mut holding = facts(b"srv/data/gone\0");
        holding
            .carried
            .insert(b"srv/data/gone/kept".to_vec(), [0; 32]);
        let e = check_deleted(&holding, &dirs, &meta_with(&["/srv/data"], 1, 1)).unwrap_err();
        assert!(e.contains("which holds"), "{e}");
        let e = ok(b"srv/data/a\0", 2).unwrap_err();
        assert!(e.contains("deleted entries"), "{e}");
        let e = check_deleted(&facts(b""), &dirs, &meta_with(&["/srv/data"], 3, 0)).unwrap_err();
        assert!(e.contains("the manifest lists 0"), "{e}");
    }
}
