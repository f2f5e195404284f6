//! Reading copies back: the ciphertext digest check (no identity needed), the full chain
//! with the identity, and fetching a copy into the backup destination.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{OffsiteError, RemoteCopy, Store, io_err};
use crate::backup::Progress;

/// Downloads a copy and compares its digest with the one recorded at upload (no
/// identity needed: the ciphertext is checked).
pub fn check(
    store: &Store,
    target: &str,
    key: &str,
    sha256: &str,
    bytes: u64,
) -> Result<(), OffsiteError> {
    let mut r = store.get(key, bytes);
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
    copy: &RemoteCopy,
    identity: &Path,
    scratch: &Path,
    progress: &dyn Progress,
) -> Result<(), OffsiteError> {
    let key = &copy.key;
    let _ = std::fs::remove_dir_all(scratch);
    let result = fetch(store, target, copy, Some(identity), scratch, progress).and_then(|path| {
        let damaged = |message: String| OffsiteError::Damaged {
            target: target.to_string(),
            key: key.clone(),
            message,
        };
        let v = crate::backup::archive::verify(
            &path,
            crate::backup::archive::Expect::Sidecar,
            &mut |n| progress.advance(n),
        )
        .map_err(|e| damaged(crate::error::chain(&e)))?;
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
    // The description was authenticated, and its names checked there; again here, as
    // they become a path below the destination.
    if !super::plain(&copy.set)
        || !super::plain(&copy.archive)
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
    let raw = store.get(&copy.key, copy.bytes);
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
    // The folder is made only now, so that a copy refused before its first byte leaves
    // nothing, not even an empty set folder.
    crate::fsutil::create_private_dir(dest_dir).map_err(io_err(dest_dir))?;
    let mut out = crate::fsutil::create_private(&partial).map_err(io_err(&partial))?;
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
        // Only when empty: the set folder this fetch made.
        let _ = std::fs::remove_dir(dest_dir);
        OffsiteError::Damaged {
            target: target.to_string(),
            key: copy.key.clone(),
            message: m,
        }
    };
    copied.map_err(|e| {
        fail(format!(
            "reading the copy failed: {e} (changed or damaged since it was uploaded, or the \
             wrong identity?)"
        ))
    })?;
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
    let sidecar = crate::backup::archive::sidecar_path(&dest);
    let placed = crate::backup::archive::write_sidecar(&sidecar, &copy.archive, &digest)
        .and_then(|()| std::fs::rename(&partial, &dest));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&partial);
        let _ = std::fs::remove_file(&sidecar);
        let _ = std::fs::remove_dir(dest_dir);
        return Err(io_err(&dest)(e));
    }
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
