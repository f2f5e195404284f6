//! Offsite copies on S3-compatible storage. A verified local archive is streamed through
//! age (encrypted to the target's recipients: this host can write copies but not read
//! them) into a multipart upload under `<prefix>/<host>/<set>/`, its bytes checked against
//! the digest the archive was verified with while they are read; then the object's size is
//! checked against the server's, a small JSON description is written beside it, and the
//! catalog records the copy with the object's SHA-256. A copy without that description
//! is incomplete and never listed. Checking re-downloads and compares the object digest
//! (no identity needed); fetching decrypts a copy back into a local archive, which the
//! ordinary verify and restore then treat like any other.

mod s3;

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::backup::Progress;
use crate::catalog::{BackupRecord, Catalog, CatalogError, OffsiteCopy, PendingUpload};
use crate::config::OffsiteConfig;
pub use s3::{S3Error, Store};

/// What went wrong with an offsite copy.
#[derive(Debug, thiserror::Error)]
pub enum OffsiteError {
    #[error(transparent)]
    S3(#[from] S3Error),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Refused(String),
    #[error("offsite {target}: {key}: {message}")]
    Damaged {
        target: String,
        key: String,
        message: String,
    },
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> OffsiteError + '_ {
    move |source| OffsiteError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The description kept beside each object (`<key>.json`): what a new machine needs to
/// list, fetch and check a copy with nothing but the bucket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemoteCopy {
    pub backup_id: String,
    pub set: String,
    pub host: String,
    pub created_at: i64,
    /// The object's key.
    pub key: String,
    /// The local archive's file name.
    pub archive: String,
    /// SHA-256 of the archive (the plaintext).
    pub archive_sha256: String,
    /// The object's size and SHA-256 (the ciphertext when encrypted).
    pub bytes: u64,
    pub sha256: String,
    pub encrypted: bool,
    /// The change guard found the backup suspect when it was copied.
    #[serde(default)]
    pub suspect: bool,
    /// age recipients it is encrypted to.
    pub recipients: Vec<String>,
    pub uploaded_at: i64,
}

/// A name safe in an object key: the host name as given, other bytes as `_`.
fn key_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Where a backup's copy lives on `t`.
pub fn object_key(t: &OffsiteConfig, b: &BackupRecord) -> String {
    let file = b.path.file_name().map_or_else(
        || format!("{}.tar.zst", b.id),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut key = String::new();
    if !t.prefix.is_empty() {
        key.push_str(&t.prefix);
        key.push('/');
    }
    key.push_str(&format!(
        "{}/{}/{}",
        key_part(&b.host),
        key_part(&b.set),
        key_part(&file)
    ));
    if t.encrypt {
        key.push_str(".age");
    }
    key
}

/// The prefix that holds `host`'s copies (every host's when `None`).
pub fn host_prefix(t: &OffsiteConfig, host: Option<&str>) -> String {
    let base = if t.prefix.is_empty() {
        String::new()
    } else {
        format!("{}/", t.prefix)
    };
    match host {
        Some(h) => format!("{base}{}/", key_part(h)),
        None => base,
    }
}

/// What an upload did.
#[derive(Debug, Clone, Serialize)]
pub struct Pushed {
    pub target: String,
    pub backup_id: String,
    pub key: String,
    pub bytes: u64,
    pub seconds: f64,
    /// Already there: nothing was sent.
    pub already: bool,
}

/// Aborts the multipart uploads a crash left on `t` (their parts cost money and are
/// never a copy).
pub fn abort_stale(
    store: &Store,
    catalog: &Catalog,
    t: &OffsiteConfig,
) -> Result<usize, OffsiteError> {
    let pending = catalog.pending_uploads(&t.name)?;
    for u in &pending {
        store.abort(&u.key, &u.upload_id)?;
        catalog.end_upload(&t.name, &u.key)?;
    }
    Ok(pending.len())
}

/// Copies the verified backup `b` to `t`, unless it is already there.
pub fn push(
    t: &OffsiteConfig,
    store: &Store,
    catalog: &Catalog,
    b: &BackupRecord,
    progress: &dyn Progress,
) -> Result<Pushed, OffsiteError> {
    let key = object_key(t, b);
    if let Some(c) = catalog.offsite_copy(&t.name, &b.id)? {
        return Ok(Pushed {
            target: t.name.clone(),
            backup_id: b.id.clone(),
            key: c.key,
            bytes: c.bytes,
            seconds: 0.0,
            already: true,
        });
    }
    if !b.is_good() && !b.is_suspect() {
        return Err(OffsiteError::Refused(format!(
            "{} is not verified; only verified backups are copied offsite",
            b.id
        )));
    }
    let started = Instant::now();
    let mut file = File::open(&b.path).map_err(io_err(&b.path))?;
    let total = file.metadata().map_err(io_err(&b.path))?.len();
    progress.phase(&format!("uploading {} to {}", b.id, t.name), total);
    let upload_id = store.create_multipart(&key)?;
    catalog.begin_upload(&PendingUpload {
        target: t.name.clone(),
        key: key.clone(),
        upload_id: upload_id.clone(),
    })?;
    let parts = Parts {
        store,
        key: &key,
        upload_id: &upload_id,
        part_size: t.part_size as usize,
        buf: Vec::with_capacity(t.part_size as usize),
        etags: Vec::new(),
        hasher: Sha256::new(),
        bytes: 0,
        limit: t.bandwidth_limit,
        started,
        failure: None,
    };
    let result = stream(t, &mut file, parts, &b.path, progress);
    let (parts, plain_sha) = match result {
        Ok(r) => r,
        Err(e) => {
            // Best effort: a later run aborts what is still recorded.
            if store.abort(&key, &upload_id).is_ok() {
                let _ = catalog.end_upload(&t.name, &key);
            }
            return Err(e);
        }
    };
    if hex::encode(plain_sha) != b.sha256 {
        let _ = store.abort(&key, &upload_id);
        let _ = catalog.end_upload(&t.name, &key);
        return Err(OffsiteError::Refused(format!(
            "{} no longer matches the digest it was verified with; it was not copied \
             (run `steward verify {}`)",
            b.path.display(),
            b.id
        )));
    }
    let (etags, sha, bytes) = (parts.etags, parts.hasher.finalize(), parts.bytes);
    store.complete(&key, &upload_id, &etags)?;
    let reported = store.size(&key)?;
    if reported != bytes {
        return Err(OffsiteError::Damaged {
            target: t.name.clone(),
            key,
            message: format!("the server holds {reported} bytes, {bytes} were sent"),
        });
    }
    let remote = RemoteCopy {
        backup_id: b.id.clone(),
        set: b.set.clone(),
        host: b.host.clone(),
        created_at: b.created_at,
        key: key.clone(),
        archive: b
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        archive_sha256: b.sha256.clone(),
        bytes,
        sha256: hex::encode(sha),
        encrypted: t.encrypt,
        suspect: b.is_suspect(),
        recipients: if t.encrypt {
            t.recipients.clone()
        } else {
            Vec::new()
        },
        uploaded_at: crate::clock::now(),
    };
    let json =
        serde_json::to_vec_pretty(&remote).map_err(|e| OffsiteError::Refused(e.to_string()))?;
    store.put(&format!("{key}.json"), &json)?;
    catalog.put_offsite_copy(&OffsiteCopy {
        target: t.name.clone(),
        backup_id: b.id.clone(),
        set: b.set.clone(),
        created_at: b.created_at,
        key: key.clone(),
        bytes,
        sha256: remote.sha256.clone(),
        encrypted: t.encrypt,
        suspect: b.is_suspect(),
        uploaded_at: remote.uploaded_at,
        checked_at: None,
    })?;
    Ok(Pushed {
        target: t.name.clone(),
        backup_id: b.id.clone(),
        key,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
        already: false,
    })
}

/// Reads the archive through (age into) the part writer; returns the writer (all parts
/// sent) and the plaintext's SHA-256.
fn stream<'a>(
    t: &OffsiteConfig,
    file: &mut File,
    parts: Parts<'a>,
    path: &Path,
    progress: &dyn Progress,
) -> Result<(Parts<'a>, [u8; 32]), OffsiteError> {
    let mut plain = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut copy = |out: &mut dyn Write| -> Result<(), OffsiteError> {
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(path)(e)),
            };
            plain.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| sink_err(path, e))?;
            progress.advance(n as u64);
        }
    };
    let mut parts = parts;
    if t.encrypt {
        let recipients: Vec<age::x25519::Recipient> =
            t.recipients.iter().filter_map(|r| r.parse().ok()).collect();
        let encryptor =
            age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
                .map_err(|e| {
                    OffsiteError::Refused(format!("offsite {}: recipients: {e}", t.name))
                })?;
        let mut w = encryptor
            .wrap_output(&mut parts)
            .map_err(|e| sink_err(path, e))?;
        copy(&mut w)?;
        w.finish().map_err(|e| sink_err(path, e))?;
    } else {
        copy(&mut parts)?;
    }
    parts.flush_part().map_err(|e| sink_err(path, e))?;
    if let Some(e) = parts.failure.take() {
        return Err(e.into());
    }
    Ok((parts, plain.finalize().into()))
}

/// An error from writing into the upload: the S3 error it carries, when it is one.
fn sink_err(path: &Path, e: io::Error) -> OffsiteError {
    match e
        .into_inner()
        .map(<dyn std::error::Error + Send + Sync>::downcast::<S3Error>)
    {
        Some(Ok(s3)) => OffsiteError::S3(*s3),
        Some(Err(other)) => io_err(path)(io::Error::other(other)),
        None => io_err(path)(io::Error::other("write failed")),
    }
}

/// A `Write` that sends every `part_size` bytes as one part, hashing what it sends.
struct Parts<'a> {
    store: &'a Store,
    key: &'a str,
    upload_id: &'a str,
    part_size: usize,
    buf: Vec<u8>,
    etags: Vec<String>,
    hasher: Sha256,
    bytes: u64,
    limit: Option<u64>,
    started: Instant,
    failure: Option<S3Error>,
}

impl Parts<'_> {
    /// Sends what is buffered as the next part, retrying a dropped connection or a busy
    /// server a few times.
    fn flush_part(&mut self) -> io::Result<()> {
        if self.buf.is_empty() && !self.etags.is_empty() {
            return Ok(());
        }
        let number = u16::try_from(self.etags.len() + 1)
            .ok()
            .filter(|n| *n <= 10_000)
            .ok_or_else(|| io::Error::other("more than 10,000 parts; raise part-size"))?;
        self.hasher.update(&self.buf);
        let mut wait = Duration::from_millis(500);
        let etag = loop {
            match self
                .store
                .upload_part(self.key, self.upload_id, number, &self.buf)
            {
                Ok(e) => break e,
                Err(e) if e.transient() && wait <= Duration::from_secs(8) => {
                    std::thread::sleep(wait);
                    wait *= 2;
                }
                Err(e) => return Err(io::Error::other(e)),
            }
        };
        self.etags.push(etag);
        self.bytes += self.buf.len() as u64;
        self.buf.clear();
        if let Some(limit) = self.limit {
            // Stay under the limit on average: wait until the bytes sent fit the time.
            let due = Duration::from_secs_f64(self.bytes as f64 / limit as f64);
            if let Some(rest) = due.checked_sub(self.started.elapsed()) {
                std::thread::sleep(rest);
            }
        }
        Ok(())
    }
}

impl Write for Parts<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.part_size - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.part_size {
            self.flush_part()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Rebuilds the catalog's copies on `t` from this host's descriptions in the bucket;
/// returns (found, dropped).
pub fn reindex(
    t: &OffsiteConfig,
    store: &Store,
    catalog: &Catalog,
    host: &str,
) -> Result<(usize, usize), OffsiteError> {
    let found = list(store, &host_prefix(t, Some(host)))?;
    for c in &found {
        catalog.put_offsite_copy(&OffsiteCopy {
            target: t.name.clone(),
            backup_id: c.backup_id.clone(),
            set: c.set.clone(),
            created_at: c.created_at,
            key: c.key.clone(),
            bytes: c.bytes,
            sha256: c.sha256.clone(),
            encrypted: c.encrypted,
            suspect: c.suspect,
            uploaded_at: c.uploaded_at,
            checked_at: None,
        })?;
    }
    let mut dropped = 0;
    for c in catalog.offsite_copies(Some(&t.name))? {
        if !found.iter().any(|f| f.backup_id == c.backup_id) {
            catalog.delete_offsite_copy(&t.name, &c.backup_id)?;
            dropped += 1;
        }
    }
    Ok((found.len(), dropped))
}

/// One copy's retention verdict.
#[derive(Debug, Clone, Serialize)]
pub struct PruneRow {
    pub target: String,
    pub backup_id: String,
    pub key: String,
    pub created_at: i64,
    pub keep: bool,
    /// Deleted (false on a dry run, or when kept).
    pub deleted: bool,
    pub reasons: Vec<String>,
}

/// Applies `policy` to the copies of `set` on `t` (the same rules as local retention:
/// the newest good copy is always kept, suspect copies never count, pinned backups stay)
/// and deletes what it does not keep: the description first (the copy is no longer
/// listed), then the object, then the catalog row. Only keys steward writes, under the
/// target's prefix, are ever deleted.
pub fn prune(
    t: &OffsiteConfig,
    store: &Store,
    catalog: &Catalog,
    set: &str,
    policy: &crate::retention::KeepPolicy,
    tz: &jiff::tz::TimeZone,
    dry_run: bool,
) -> Result<Vec<PruneRow>, OffsiteError> {
    let copies = catalog.offsite_copies_of(&t.name, set)?;
    let mut candidates = Vec::new();
    for c in &copies {
        let local = catalog.backup(&c.backup_id)?;
        candidates.push(crate::retention::Candidate {
            id: c.backup_id.clone(),
            time: c.created_at,
            verified: true,
            suspect: local.as_ref().map_or(c.suspect, BackupRecord::is_suspect),
            pinned: local.as_ref().is_some_and(|b| b.pinned),
        });
    }
    let mut rows = Vec::new();
    for v in crate::retention::decide(&candidates, policy, tz) {
        let Some(c) = copies.iter().find(|c| c.backup_id == v.id) else {
            continue;
        };
        let mut reasons = v.reasons;
        let ours = c.key.starts_with(&host_prefix(t, None))
            && (c.key.ends_with(".tar.zst") || c.key.ends_with(".tar.zst.age"));
        let mut deleted = false;
        if !v.keep && !ours {
            reasons.push(format!(
                "{} is not a key steward writes; not deleted",
                c.key
            ));
        } else if !v.keep && !dry_run {
            store.delete(&format!("{}.json", c.key))?;
            store.delete(&c.key)?;
            catalog.delete_offsite_copy(&t.name, &c.backup_id)?;
            deleted = true;
        }
        rows.push(PruneRow {
            target: t.name.clone(),
            backup_id: c.backup_id.clone(),
            key: c.key.clone(),
            created_at: c.created_at,
            keep: v.keep,
            deleted,
            reasons,
        });
    }
    Ok(rows)
}

/// The complete copies under `prefix` (those with their description).
pub fn list(store: &Store, prefix: &str) -> Result<Vec<RemoteCopy>, OffsiteError> {
    let objects = store.list(prefix)?;
    let mut out = Vec::new();
    // Descriptions are steward's own `<key>.json`, always lower case.
    #[allow(clippy::case_sensitive_file_extension_comparisons)]
    for o in objects.iter().filter(|o| o.key.ends_with(".json")) {
        let data = store.get_small(&o.key)?;
        let Ok(c) = serde_json::from_slice::<RemoteCopy>(&data) else {
            continue;
        };
        // The description must sit beside its own object, which must be complete.
        let beside = objects.iter().any(|x| x.key == c.key && x.size == c.bytes);
        if format!("{}.json", c.key) == o.key && beside {
            out.push(c);
        }
    }
    out.sort_by(|a, b| (&a.host, &a.set, b.created_at).cmp(&(&b.host, &b.set, a.created_at)));
    Ok(out)
}

/// Downloads a copy and compares its digest with the one recorded at upload (no
/// identity needed: the ciphertext is checked).
pub fn check(
    store: &Store,
    target: &str,
    key: &str,
    sha256: &str,
    bytes: u64,
) -> Result<(), OffsiteError> {
    let mut r = store.get(key)?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let got = r.read(&mut buf).map_err(|e| OffsiteError::Damaged {
            target: target.to_string(),
            key: key.to_string(),
            message: format!("download broke off: {e}"),
        })?;
        if got == 0 {
            break;
        }
        h.update(&buf[..got]);
        n += got as u64;
    }
    let digest = hex::encode(h.finalize());
    if n != bytes || digest != sha256 {
        return Err(OffsiteError::Damaged {
            target: target.to_string(),
            key: key.to_string(),
            message: format!(
                "the object does not match its upload ({n} bytes, SHA-256 {digest}; \
                 uploaded {bytes} bytes, SHA-256 {sha256})"
            ),
        });
    }
    Ok(())
}

/// The whole chain of one copy: download, decrypt with `identity`, and read the archive
/// back in full (zstd frames, tar, every file against the manifest) in `scratch`, which
/// is emptied before and after.
pub fn check_full(
    store: &Store,
    target: &str,
    key: &str,
    identity: &Path,
    scratch: &Path,
    progress: &dyn Progress,
) -> Result<(), OffsiteError> {
    let desc = store.get_small(&format!("{key}.json"))?;
    let copy: RemoteCopy = serde_json::from_slice(&desc).map_err(|e| OffsiteError::Damaged {
        target: target.to_string(),
        key: key.to_string(),
        message: format!("unreadable description: {e}"),
    })?;
    let _ = std::fs::remove_dir_all(scratch);
    let result = fetch(store, target, &copy, Some(identity), scratch, progress).and_then(|path| {
        let damaged = |message: String| OffsiteError::Damaged {
            target: target.to_string(),
            key: key.to_string(),
            message,
        };
        let v = crate::backup::archive::verify(
            &path,
            crate::backup::archive::Expect::Sidecar,
            &mut |n| progress.advance(n),
        )
        .map_err(|e| damaged(format!("{e:#}")))?;
        if v.meta.id != copy.backup_id {
            return Err(damaged(format!(
                "holds the backup {:?}, not {:?}",
                v.meta.id, copy.backup_id
            )));
        }
        Ok(())
    });
    let _ = std::fs::remove_dir_all(scratch);
    result
}

/// Downloads `copy`, decrypts it with the identities in `identity` (when encrypted) and
/// writes the archive to `dest` (a `.partial` file renamed once its digest matches the
/// one the backup was verified with), with its `.sha256` sidecar. Returns the path.
pub fn fetch(
    store: &Store,
    target: &str,
    copy: &RemoteCopy,
    identity: Option<&Path>,
    dest_dir: &Path,
    progress: &dyn Progress,
) -> Result<PathBuf, OffsiteError> {
    // The description comes from the bucket: untrusted. Its names become a path below
    // the destination only when they are plain names of the expected shape.
    let plain = |s: &str| {
        !s.is_empty()
            && s.len() <= 200
            && !s.starts_with(['.', '-'])
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if !plain(&copy.set)
        || !plain(&copy.archive)
        || !copy.archive.starts_with(&format!("{}-", copy.set))
        || !copy.archive.ends_with(".tar.zst")
    {
        return Err(OffsiteError::Damaged {
            target: target.to_string(),
            key: copy.key.clone(),
            message: format!(
                "the description names an unusable set {:?} or archive {:?}",
                copy.set, copy.archive
            ),
        });
    }
    crate::fsutil::create_private_dir(dest_dir).map_err(io_err(dest_dir))?;
    let dest = dest_dir.join(&copy.archive);
    if dest.exists() {
        return Err(OffsiteError::Refused(format!(
            "{} is already there; `steward backups reindex` lists it",
            dest.display()
        )));
    }
    let partial = dest_dir.join(format!("{}.partial", copy.archive));
    // A partial file is what an interrupted fetch left.
    let _ = std::fs::remove_file(&partial);
    let _ = std::fs::remove_file(crate::backup::archive::sidecar_path(&dest));
    progress.phase(&format!("downloading {}", copy.backup_id), copy.bytes);
    let raw = store.get(&copy.key)?;
    let mut cipher_hash = Sha256::new();
    let counted = HashingReader {
        inner: raw,
        hasher: &mut cipher_hash,
        progress,
    };
    let mut plain: Box<dyn Read + '_> = if copy.encrypted {
        let path = identity.ok_or_else(|| {
            OffsiteError::Refused(format!(
                "{} is encrypted: give the age identity file with --identity",
                copy.key
            ))
        })?;
        let ids = age::IdentityFile::from_file(path.to_string_lossy().into_owned())
            .map_err(io_err(path))?
            .into_identities()
            .map_err(|e| OffsiteError::Refused(format!("{}: {e}", path.display())))?;
        let d = age::Decryptor::new(io::BufReader::new(counted)).map_err(|e| {
            OffsiteError::Damaged {
                target: target.to_string(),
                key: copy.key.clone(),
                message: format!("not an age file: {e}"),
            }
        })?;
        Box::new(
            d.decrypt(ids.iter().map(|i| i.as_ref() as &dyn age::Identity))
                .map_err(|e| {
                    OffsiteError::Refused(format!(
                        "{}: cannot decrypt with {}: {e}",
                        copy.key,
                        path.display()
                    ))
                })?,
        )
    } else {
        Box::new(counted)
    };
    let mut out = crate::backup::archive::create_private(&partial).map_err(io_err(&partial))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let copied = (|| -> io::Result<()> {
        loop {
            let n = plain.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n])?;
        }
        out.sync_all()
    })();
    drop(plain);
    let fail = |m: String| {
        let _ = std::fs::remove_file(&partial);
        OffsiteError::Damaged {
            target: target.to_string(),
            key: copy.key.clone(),
            message: m,
        }
    };
    copied.map_err(|e| fail(format!("reading the copy failed: {e}")))?;
    let cipher = hex::encode(cipher_hash.finalize());
    if cipher != copy.sha256 {
        return Err(fail(format!(
            "the object does not match its upload (SHA-256 {cipher}, uploaded {})",
            copy.sha256
        )));
    }
    let digest: [u8; 32] = h.finalize().into();
    if hex::encode(digest) != copy.archive_sha256 {
        return Err(fail(format!(
            "the decrypted archive does not match the backup's digest {}",
            copy.archive_sha256
        )));
    }
    crate::backup::archive::write_sidecar(
        &crate::backup::archive::sidecar_path(&dest),
        &copy.archive,
        &digest,
    )
    .map_err(io_err(&dest))?;
    std::fs::rename(&partial, &dest).map_err(io_err(&dest))?;
    crate::fsutil::sync_dir(dest_dir).map_err(io_err(dest_dir))?;
    Ok(dest)
}

struct HashingReader<'h, R> {
    inner: R,
    hasher: &'h mut Sha256,
    progress: &'h dyn Progress,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.progress.advance(n as u64);
        Ok(n)
    }
}
