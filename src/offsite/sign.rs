//! Who may write history: the host's minisign key (Ed25519, made at first offsite use and
//! kept private in the state dir) signs each copy's description, and only descriptions
//! signed by a trusted key are believed. The trusted keys are the host's own and those
//! the config names (`signing-keys`, from the recovery kit); never any from the bucket.
//! Signatures are minisign's own format, so `minisign -Vm X.json -P KEY` checks a copy
//! with no steward at all.

use std::path::{Path, PathBuf};

use minisign::{KeyPair, PublicKey, PublicKeyBox, SecretKey, SecretKeyBox, SignatureBox};

use super::OffsiteError;

/// The secret key's file name in the state dir.
const SECRET_FILE: &str = "offsite-signing.key";
/// The public key's file name in the state dir (minisign's `.pub` format).
const PUBLIC_FILE: &str = "offsite-signing.pub";

/// This host's signing key.
pub struct Signer {
    pk: PublicKey,
    sk: SecretKey,
}

fn key_err(path: &Path, e: impl std::fmt::Display) -> OffsiteError {
    OffsiteError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(format!("signing key: {e}")),
    }
}

/// A key's ID as minisign prints it (`untrusted comment: minisign public key 1A2B...`).
pub fn key_id(keynum: &[u8]) -> String {
    let mut n = [0u8; 8];
    let len = keynum.len().min(8);
    n[..len].copy_from_slice(&keynum[..len]);
    format!("{:016X}", u64::from_le_bytes(n))
}

impl Signer {
    fn paths(state_dir: &Path) -> (PathBuf, PathBuf) {
        (state_dir.join(SECRET_FILE), state_dir.join(PUBLIC_FILE))
    }

    /// The host's key, if it has one.
    pub fn load(state_dir: &Path) -> Result<Option<Signer>, OffsiteError> {
        let (secret, _) = Self::paths(state_dir);
        let text = match std::fs::read_to_string(&secret) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(super::io_err(&secret)(e)),
        };
        let sk = SecretKeyBox::from_string(&text)
            .and_then(SecretKeyBox::into_unencrypted_secret_key)
            .map_err(|e| key_err(&secret, e))?;
        let pk = PublicKey::from_secret_key(&sk).map_err(|e| key_err(&secret, e))?;
        Ok(Some(Signer { pk, sk }))
    }

    /// The host's key, made now (secret mode 0600, written whole or not at all) if it
    /// has none.
    pub fn load_or_create(state_dir: &Path) -> Result<Signer, OffsiteError> {
        if let Some(s) = Self::load(state_dir)? {
            return Ok(s);
        }
        let (secret, public) = Self::paths(state_dir);
        crate::fsutil::create_private_dir(state_dir).map_err(super::io_err(state_dir))?;
        let KeyPair { pk, sk } =
            KeyPair::generate_unencrypted_keypair().map_err(|e| key_err(&secret, e))?;
        let host = crate::fsutil::hostname();
        let sk_text = sk
            .to_box(Some(&format!("steward offsite signing key of {host}")))
            .map_err(|e| key_err(&secret, e))?
            .to_string();
        let pk_text = pk.to_box().map_err(|e| key_err(&public, e))?.to_string();
        for (path, text) in [(&public, &pk_text), (&secret, &sk_text)] {
            let partial = path.with_extension("partial");
            let _ = std::fs::remove_file(&partial);
            let write = || -> std::io::Result<()> {
                use std::io::Write as _;
                let mut f = crate::fsutil::create_private(&partial)?;
                f.write_all(text.as_bytes())?;
                f.sync_all()?;
                std::fs::rename(&partial, path)?;
                crate::fsutil::sync_dir(state_dir)
            };
            write().map_err(super::io_err(path))?;
        }
        Ok(Signer { pk, sk })
    }

    /// The public key as one base64 line (`RW...`), for `signing-keys` and
    /// `minisign -P`.
    pub fn public(&self) -> String {
        self.pk.to_base64()
    }

    /// The public key's ID.
    pub fn id(&self) -> String {
        key_id(self.pk.keynum())
    }

    /// A minisign signature of `data` (the `.minisig` file's text); `comment` is signed
    /// with it.
    pub fn sign(&self, data: &[u8], comment: &str) -> Result<String, OffsiteError> {
        minisign::sign(Some(&self.pk), &self.sk, data, Some(comment), None)
            .map(|b| b.to_string())
            .map_err(|e| OffsiteError::Refused(format!("signing a description: {e}")))
    }
}

/// The keys whose signatures are believed, and the copies this machine's retention
/// deleted (a validly signed copy that comes back is a replay).
pub struct Trust {
    keys: Vec<PublicKey>,
    retired: Vec<(String, String, i64)>,
}

impl Trust {
    /// The config's `signing-keys` and the host's own key, when it has one.
    pub fn new(configured: &[String], own: Option<&Signer>) -> Trust {
        let mut keys: Vec<PublicKey> = configured
            .iter()
            .filter_map(|k| PublicKey::from_base64(k).ok())
            .collect();
        if let Some(s) = own {
            keys.push(s.pk.clone());
        }
        Trust {
            keys,
            retired: Vec::new(),
        }
    }

    /// Remembers the copies retention deleted: (backup ID, object SHA-256, when).
    #[must_use]
    pub fn with_retired(mut self, retired: Vec<(String, String, i64)>) -> Trust {
        self.retired = retired;
        self
    }

    /// When retention deleted this very copy (same ID, same object), if it did.
    pub fn retired_at(&self, backup_id: &str, sha256: &str) -> Option<i64> {
        self.retired
            .iter()
            .find(|(id, sha, _)| id == backup_id && sha == sha256)
            .map(|(_, _, at)| *at)
    }

    /// Whether any key is trusted at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks `sig` (a `.minisig` file's text) over `data`; the error says why not.
    pub fn check(&self, data: &[u8], sig: &[u8]) -> Result<(), String> {
        if self.keys.is_empty() {
            return Err(
                "no signing key is trusted: add this host's public key (from the \
                        recovery kit, `steward offsite key` on the host) to `signing-keys`"
                    .into(),
            );
        }
        let text = std::str::from_utf8(sig).map_err(|_| "the signature is not text".to_string())?;
        let sig =
            SignatureBox::from_string(text).map_err(|e| format!("unreadable signature: {e}"))?;
        let Some(pk) = self.keys.iter().find(|k| k.keynum() == sig.keynum()) else {
            return Err(format!(
                "signed by key {}, which is not trusted (`signing-keys`)",
                key_id(sig.keynum())
            ));
        };
        minisign::verify(pk, &sig, std::io::Cursor::new(data), true, false, false)
            .map_err(|e| format!("the signature does not verify: {e}"))
    }
}

/// The public key as minisign's `.pub` file text, from its base64 line.
pub fn public_file(base64: &str) -> Option<String> {
    let pk = PublicKey::from_base64(base64).ok()?;
    pk.to_box().ok().map(|b: PublicKeyBox| b.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_with_its_key_and_data() {
        let dir = tempfile::tempdir().unwrap();
        let a = Signer::load_or_create(&dir.path().join("a")).unwrap();
        let b = Signer::load_or_create(&dir.path().join("b")).unwrap();
        let sig = a.sign(b"{\"x\":1}", "steward").unwrap();
        assert!(
            Trust::new(&[a.public()], None)
                .check(b"{\"x\":1}", sig.as_bytes())
                .is_ok()
        );
        let err = Trust::new(&[a.public()], None)
            .check(b"{\"x\":2}", sig.as_bytes())
            .unwrap_err();
        assert!(err.contains("does not verify"), "{err}");
        let err = Trust::new(&[b.public()], None)
            .check(b"{\"x\":1}", sig.as_bytes())
            .unwrap_err();
        assert!(
            err.contains(&a.id()) && err.contains("not trusted"),
            "{err}"
        );
        assert!(Trust::new(&[], None).check(b"", b"").is_err());
        // The key is kept: loading again gives the same one.
        let again = Signer::load(&dir.path().join("a")).unwrap().unwrap();
        assert_eq!(again.public(), a.public());
    }
}
