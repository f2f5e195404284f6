//! The tree index of a full backup: for every entry it archived, the facts the
//! fingerprint is made of (size, mtime, inode, mode, owner, link target) and a file's
//! SHA-256. A differential backup against that full archives only the entries whose facts
//! changed and takes the others' digests from here for its whole-tree manifest.
//!
//! Kept in the state folder (`<state>/index/<id>`, zstd), never on the backup disk: the
//! disk is not trusted to say what is unchanged. Without the index (a new host after
//! `backups reindex`, a damaged file) the next backup is a full one.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The file's first line: its format.
const MAGIC: &[u8] = b"steward-index 1\n";

/// What an entry was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
}

impl EntryKind {
    fn byte(self) -> u8 {
        match self {
            EntryKind::Dir => b'd',
            EntryKind::File => b'f',
            EntryKind::Symlink => b'l',
        }
    }
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'd' => Some(EntryKind::Dir),
            b'f' => Some(EntryKind::File),
            b'l' => Some(EntryKind::Symlink),
            _ => None,
        }
    }
}

/// A file with more than one name: a differential always archives it again (its names
/// must come from one archive, tar links to the first).
pub const LINKED: u8 = 1;
/// A SQLite database: always archived whole from a fresh image.
pub const SQLITE: u8 = 2;
/// The change guard found its start high-entropy.
pub const RANDOM: u8 = 4;

/// One entry of the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Indexed {
    pub kind: EntryKind,
    pub flags: u8,
    /// The fingerprint's facts of the entry (see `walk::entry_facts`).
    pub facts: [u8; 16],
    /// A file's content digest (zero for folders and symlinks).
    pub sha256: [u8; 32],
    /// A file's size.
    pub size: u64,
}

/// A full backup's tree, by archive path (the absolute path without its leading `/`).
#[derive(Debug, Default)]
pub struct Index {
    /// The set's paths and rules when the index was written: a changed rule means a
    /// differential could not say what it left out, so the next backup is full.
    pub rules: [u8; 32],
    pub entries: HashMap<Vec<u8>, Indexed>,
}

/// Where the index of backup `id` is kept.
pub fn index_path(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join("index").join(id)
}

/// The digest of the set's paths and exclude rules, as the index records them.
pub fn rules_digest(paths: &[String], excludes: &[String]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in paths {
        h.update(b"p");
        h.update(p.as_bytes());
        h.update([0]);
    }
    for x in excludes {
        h.update(b"x");
        h.update(x.as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}

impl Index {
    /// Reads the index at `path`; `None` when it is missing or damaged (the caller takes a
    /// full backup instead).
    pub fn load(path: &Path) -> Option<Index> {
        let file = File::open(path).ok()?;
        let mut r = BufReader::new(zstd::stream::read::Decoder::new(file).ok()?);
        let mut magic = [0u8; MAGIC.len()];
        r.read_exact(&mut magic).ok()?;
        if magic != MAGIC {
            return None;
        }
        let mut index = Index::default();
        r.read_exact(&mut index.rules).ok()?;
        loop {
            let mut len = [0u8; 4];
            // The frame's checksum is checked at its end: a clean end is the only way out.
            match r.read(&mut len[..1]) {
                Ok(0) => break,
                Ok(_) => r.read_exact(&mut len[1..]).ok()?,
                Err(_) => return None,
            }
            let len = u32::from_le_bytes(len) as usize;
            if len > 1 << 16 {
                return None;
            }
            let mut name = vec![0u8; len];
            r.read_exact(&mut name).ok()?;
            let mut rec = [0u8; 2 + 16 + 32 + 8];
            r.read_exact(&mut rec).ok()?;
            let kind = EntryKind::from_byte(rec[0])?;
            let mut facts = [0u8; 16];
            facts.copy_from_slice(&rec[2..18]);
            let mut sha256 = [0u8; 32];
            sha256.copy_from_slice(&rec[18..50]);
            let size = u64::from_le_bytes(rec[50..58].try_into().ok()?);
            index.entries.insert(
                name,
                Indexed {
                    kind,
                    flags: rec[1],
                    facts,
                    sha256,
                    size,
                },
            );
        }
        Some(index)
    }
}

/// Writes an index as a full backup is taken, streaming into a zstd frame with a checksum
/// (a truncated file never reads as a shorter tree), at a partial name the caller renames
/// once the backup is published.
pub struct IndexWriter {
    path: PathBuf,
    out: Option<zstd::stream::write::Encoder<'static, BufWriter<File>>>,
    failed: bool,
}

impl IndexWriter {
    /// An index for a backup of a set with these rules, written to `path`. A failure here
    /// or later only costs the next differential (it becomes a full backup).
    pub fn new(path: &Path, rules: [u8; 32]) -> Self {
        let open = || -> io::Result<_> {
            if let Some(dir) = path.parent() {
                crate::fsutil::create_private_dir(dir)?;
            }
            let file = crate::fsutil::create_private(path)?;
            let mut z = zstd::stream::write::Encoder::new(BufWriter::new(file), 3)?;
            z.include_checksum(true)?;
            z.write_all(MAGIC)?;
            z.write_all(&rules)?;
            Ok(z)
        };
        let out = open().ok();
        IndexWriter {
            path: path.to_path_buf(),
            failed: out.is_none(),
            out,
        }
    }

    /// Adds one archived entry.
    pub fn add(&mut self, name: &[u8], e: &Indexed) {
        let Some(z) = self.out.as_mut() else { return };
        let r = (|| -> io::Result<()> {
            let len = u32::try_from(name.len()).map_err(io::Error::other)?;
            z.write_all(&len.to_le_bytes())?;
            z.write_all(name)?;
            z.write_all(&[e.kind.byte(), e.flags])?;
            z.write_all(&e.facts)?;
            z.write_all(&e.sha256)?;
            z.write_all(&e.size.to_le_bytes())
        })();
        if r.is_err() {
            self.failed = true;
            self.out = None;
        }
    }

    /// Ends and syncs the file; `None` when anything failed (the partial is removed).
    pub fn finish(mut self) -> Option<PathBuf> {
        let done = self.out.take().filter(|_| !self.failed).and_then(|z| {
            let file = z.finish().ok()?.into_inner().ok()?;
            file.sync_all().ok()
        });
        if done.is_none() {
            let _ = std::fs::remove_file(&self.path);
            return None;
        }
        Some(self.path.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_reads_back_as_written_and_a_damaged_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("index/s-1");
        let mut w = IndexWriter::new(&p, [7; 32]);
        let e = Indexed {
            kind: EntryKind::File,
            flags: SQLITE,
            facts: [1; 16],
            sha256: [2; 32],
            size: 42,
        };
        w.add(b"srv/a\nb", &e);
        w.add(
            b"srv",
            &Indexed {
                kind: EntryKind::Dir,
                ..e
            },
        );
        w.finish().unwrap();
        let i = Index::load(&p).unwrap();
        assert_eq!(i.rules, [7; 32]);
        assert_eq!(i.entries[b"srv/a\nb".as_slice()], e);
        assert_eq!(i.entries[b"srv".as_slice()].kind, EntryKind::Dir);
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
        assert!(Index::load(&p).is_none());
        assert!(Index::load(&dir.path().join("nothing")).is_none());
    }
}
