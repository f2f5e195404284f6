//! Uploading a copy: the archive, re-read and checked against the digest it was verified
//! with, through age into a multipart upload whose parts are hashed as they are sent; then
//! the server's size, the description beside the object, and the catalog row.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Link, OffsiteError, RemoteCopy, S3Error, Signer, Store, io_err, object_key};
use crate::backup::Progress;
use crate::catalog::{BackupRecord, Catalog, OffsiteCopy, PendingUpload};
use crate::config::OffsiteConfig;

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
/// never a copy): those the catalog recorded, and any other under this host's prefix
/// (one whose ID was lost before it was recorded). The caller holds the offsite lock, so
/// none of them is running.
pub fn abort_stale(
    store: &Store,
    catalog: &Catalog,
    t: &OffsiteConfig,
    host: &str,
) -> Result<usize, OffsiteError> {
    let pending = catalog.pending_uploads(&t.name)?;
    for u in &pending {
        store.abort(&u.key, &u.upload_id)?;
        catalog.end_upload(&t.name, &u.key)?;
    }
    let mut n = pending.len();
    for (key, id) in store.uploads(&super::host_prefix(t, Some(host)))? {
        if !pending.iter().any(|p| p.upload_id == id) {
            store.abort(&key, &id)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Copies the verified backup `b` to `t`, unless it is already there.
pub fn push(
    t: &OffsiteConfig,
    store: &Store,
    catalog: &Catalog,
    signer: &Signer,
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
    let until = t
        .object_lock
        .as_ref()
        .map(|l| crate::clock::now() + l.lock_for.as_secs() as i64);
    let upload_id = store.create_multipart(&key, until)?;
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
    let head = store.head(&key)?;
    let reported = head.size;
    // Locked only if the server says so. Some servers ignore the lock of a multipart
    // upload (moto): then the retention is set on the object itself; a bucket without
    // object lock refuses that, and the copy stays unlocked (`check` warns).
    let until = match until {
        Some(u) if head.retain_until.is_none() => store.retain(&key, u).ok().map(|()| u),
        u => u,
    };
    if reported != bytes {
        return Err(OffsiteError::Damaged {
            target: t.name.clone(),
            key,
            message: format!("the server holds {reported} bytes, {bytes} were sent"),
        });
    }
    let remote = RemoteCopy {
        format: super::FORMAT,
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
        previous: catalog.newest_offsite_copy(&t.name, &b.set)?.map(|p| Link {
            backup_id: p.backup_id,
            sha256: p.sha256,
        }),
        signed_by: signer.id(),
        base: match &b.base {
            Some(id) => Some(Link {
                backup_id: id.clone(),
                sha256: catalog.backup(id)?.map(|r| r.sha256).unwrap_or_default(),
            }),
            None => None,
        },
    };
    let json =
        serde_json::to_vec_pretty(&remote).map_err(|e| OffsiteError::Refused(e.to_string()))?;
    let desc_key = format!("{key}.json");
    let sig = signer.sign(
        &json,
        &format!("steward offsite copy {}/{}/{}", b.host, b.set, b.id),
    )?;
    // The signature first: a description is listed only with it, so a crash between the
    // two leaves an unlisted, unsigned-looking copy the next push replaces.
    store.put(&super::signature_key(&desc_key), sig.as_bytes(), until)?;
    store.put(&desc_key, &json, until)?;
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
        locked_until: until,
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
    /// Sends what is buffered as the next part.
    fn flush_part(&mut self) -> io::Result<()> {
        if self.buf.is_empty() && !self.etags.is_empty() {
            return Ok(());
        }
        let number = u16::try_from(self.etags.len() + 1)
            .ok()
            .filter(|n| *n <= 10_000)
            .ok_or_else(|| io::Error::other("more than 10,000 parts; raise part-size"))?;
        self.hasher.update(&self.buf);
        // The store tries again after a dropped connection or a busy server.
        let etag = self
            .store
            .upload_part(self.key, self.upload_id, number, &self.buf)
            .map_err(io::Error::other)?;
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
