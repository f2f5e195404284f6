//! The archive format on disk: constants, `backup.json`, sidecars, the identity check and
//! trailer-only reads. Writing is in [`write`], reading back in [`verify`].
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

mod follow;
pub mod manifest;
mod pipe;
mod pipeline;
mod read;
mod write;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use follow::Readback;
pub use read::{
    DiffFacts, EntryInfo, Expect, Inspector, Verified, check_against_base, decompressed, verify,
    verify_inspecting,
};
pub use write::{ArchiveWriter, FileOutcome, Written};

/// Archive paths of the trailer entries.
pub const MANIFEST_PATH: &str = ".steward/MANIFEST.sha256";
pub const META_PATH: &str = ".steward/backup.json";
/// A differential's list of the base's entries that no longer exist, NUL-separated,
/// archive paths (`xargs -0 rm -rf < .steward/DELETED` after extracting both).
pub const DELETED_PATH: &str = ".steward/DELETED";

/// `backup.json`'s format: 1 for a full backup, 2 for a differential (which older
/// versions must not take for a whole tree).
pub const FORMAT_FULL: u32 = 1;
pub const FORMAT_DIFFERENTIAL: u32 = 2;

const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
const TRAILER_TAG: &[u8; 8] = b"STEWARD1";
const TRAILER_FRAME_LEN: usize = 24;
const JOB_SIZE: u32 = 2 << 20;

/// How archives are written, taken once from the config.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveOptions {
    /// The zstd level of the data frame.
    pub level: i32,
    /// zstd workers (at least 1).
    pub threads: u32,
}

impl ArchiveOptions {
    /// From `[backup]`: `threads = 0` is one per available core.
    pub fn of(backup: &crate::config::BackupConfig) -> Self {
        ArchiveOptions {
            level: backup.compression_level,
            threads: match backup.threads {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
                n => n,
            },
        }
    }
}

/// Errors reading or writing an archive; each names the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
}

impl ArchiveError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
        move |source| ArchiveError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    /// A damaged or foreign archive at `path`, saying why.
    pub fn corrupt(path: &Path, message: impl Into<String>) -> ArchiveError {
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
    /// A differential: the full backup it builds on. `files`, `bytes` and the manifest
    /// describe the whole tree; `stored_files` are in this archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseRef>,
    /// A differential's files in this archive (the others come from its base).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_files: Option<u64>,
    /// A differential's count of base entries that no longer exist (in `DELETED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<u64>,
}

/// The full backup a differential builds on: its id and the SHA-256 of its archive file,
/// so that the very file is known from the disk alone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BaseRef {
    pub id: String,
    pub sha256: String,
}

impl BackupMeta {
    /// The files this archive holds (a differential holds only the changed ones).
    pub fn stored(&self) -> u64 {
        self.stored_files.unwrap_or(self.files)
    }

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
    /// Rows per table of the archived image (`SELECT count(*)`), for the change guard.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tables: std::collections::BTreeMap<String, u64>,
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
        .map(OsStrExt::as_bytes)
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
    let mut f = crate::fsutil::create_private(dest)?;
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
    match crate::clock::parse_stamp(stamp).map(jiff::Timestamp::as_second) {
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
    read_trailer(path, false).map(|t| t.meta)
}

/// What the trailer frame holds.
#[derive(Debug)]
pub struct Trailer {
    pub meta: BackupMeta,
    /// `MANIFEST.sha256`'s bytes, when asked for.
    pub manifest: Option<Vec<u8>>,
    /// A differential's `DELETED` list.
    pub deleted: Option<Vec<u8>>,
}

/// Reads the trailer frame (`backup.json`, with `manifest` the manifest too) without
/// decompressing the data.
pub fn read_trailer(path: &Path, manifest: bool) -> Result<Trailer, ArchiveError> {
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
    let (mut found_manifest, mut deleted) = (None, None);
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let name = entry.path_bytes().into_owned();
        if name == META_PATH.as_bytes() {
            let mut json = Vec::new();
            entry.read_to_end(&mut json).map_err(bad)?;
            let meta = serde_json::from_slice(&json).map_err(|e| {
                ArchiveError::corrupt(path, format!("{META_PATH} is not valid: {e}"))
            })?;
            return Ok(Trailer {
                meta,
                manifest: found_manifest,
                deleted,
            });
        } else if name == DELETED_PATH.as_bytes() {
            let mut d = Vec::new();
            entry.read_to_end(&mut d).map_err(bad)?;
            deleted = Some(d);
        } else if manifest && name == MANIFEST_PATH.as_bytes() {
            let mut m = Vec::new();
            entry.read_to_end(&mut m).map_err(bad)?;
            found_manifest = Some(m);
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
            base: None,
            stored_files: None,
            deleted: None,
        }
    }

    #[test]
    fn a_file_that_changes_size_keeps_its_header_promise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar.zst");
        let spool = dir.path().join("m");
        let fmeta = std::fs::metadata(dir.path()).unwrap();
        let mut w = ArchiveWriter::create(
            &path,
            &spool,
            ArchiveOptions {
                level: 3,
                threads: 2,
            },
        )
        .unwrap();
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
        let again = verify(&path, Expect::Digest(v.sha256), &mut |_| {}).unwrap();
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
        let mut w = ArchiveWriter::create(
            &path,
            &dir.join("m"),
            ArchiveOptions {
                level: 3,
                threads: 1,
            },
        )
        .unwrap();
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
