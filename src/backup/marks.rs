//! What a human decided about a backup (`backups accept`, `pin`, `unpin`), kept in the
//! catalog and in a small marker file beside the archive, `<archive>.marks`, so that it
//! survives `backups reindex` on a rebuilt host. The marker names the archive's ID and
//! SHA-256 and carries a checksum of its own content: it applies to exactly that archive
//! and a damaged marker is ignored (reported, never trusted).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The marker's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Marks {
    pub id: String,
    /// The archive's SHA-256 (hex), as in its sidecar.
    pub sha256: String,
    pub accepted: bool,
    pub pinned: bool,
    /// SHA-256 of the fields above, joined by newlines.
    pub check: String,
}

fn checksum(id: &str, sha256: &str, accepted: bool, pinned: bool) -> String {
    hex::encode(Sha256::digest(format!(
        "{id}\n{sha256}\n{accepted}\n{pinned}"
    )))
}

/// The marker path of an archive.
pub fn marks_path(archive: &Path) -> PathBuf {
    let mut s = archive.as_os_str().to_owned();
    s.push(".marks");
    PathBuf::from(s)
}

/// Writes (or, when neither mark is set, removes) the marker beside `archive`, atomically.
pub fn write(
    archive: &Path,
    id: &str,
    sha256: &str,
    accepted: bool,
    pinned: bool,
) -> std::io::Result<()> {
    let path = marks_path(archive);
    if !accepted && !pinned {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let marks = Marks {
        id: id.to_string(),
        sha256: sha256.to_string(),
        accepted,
        pinned,
        check: checksum(id, sha256, accepted, pinned),
    };
    let tmp = path.with_extension("marks.partial");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(&marks).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    if let Some(d) = path.parent() {
        crate::fsutil::sync_dir(d)?;
    }
    Ok(())
}

/// The marks for the archive `id` with digest `sha256`: `Ok(None)` when there is no
/// marker, `Err` (the reason) when one exists but does not belong to this archive or is
/// damaged.
pub fn read(archive: &Path, id: &str, sha256: &str) -> Result<Option<Marks>, String> {
    let path = marks_path(archive);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let m: Marks = serde_json::from_slice(&data)
        .map_err(|e| format!("{}: not a marker: {e}", path.display()))?;
    if m.check != checksum(&m.id, &m.sha256, m.accepted, m.pinned) {
        return Err(format!(
            "{}: its checksum does not match; ignored",
            path.display()
        ));
    }
    if m.id != id || m.sha256 != sha256 {
        return Err(format!(
            "{}: belongs to another archive ({}); ignored",
            path.display(),
            m.id
        ));
    }
    Ok(Some(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_applies_only_to_its_own_undamaged_archive() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("s-1.tar.zst");
        write(&a, "s-1", "aa", true, false).unwrap();
        assert!(read(&a, "s-1", "aa").unwrap().unwrap().accepted);
        assert!(
            read(&a, "s-1", "bb")
                .unwrap_err()
                .contains("another archive")
        );
        let text = std::fs::read_to_string(marks_path(&a))
            .unwrap()
            .replace("\"pinned\": false", "\"pinned\": true");
        std::fs::write(marks_path(&a), text).unwrap();
        assert!(read(&a, "s-1", "aa").unwrap_err().contains("checksum"));
        write(&a, "s-1", "aa", false, false).unwrap();
        assert_eq!(read(&a, "s-1", "aa").unwrap(), None);
    }
}
