//! Confined filesystem operations for restore. Every folder is reached one name at a time
//! from an open directory handle with `O_NOFOLLOW`, so no symlink is ever followed, `..`
//! and absolute names are refused, and whatever an archive holds can only create things
//! beneath the handle it started from. Correctness does not depend on the up-front
//! safety pass: that pass only makes the refusal early and readable.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// Why a confined operation was refused or failed; names the path as far as it got.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("{path}: {what}")]
    Refused { path: PathBuf, what: String },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// An open directory and the path it was reached by (for messages only: no operation
/// resolves that path again).
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

fn io_at(path: &Path) -> impl FnOnce(rustix::io::Errno) -> ConfineError + '_ {
    move |e| ConfineError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// Checks that `name` is one plain path component.
fn component(parent: &Path, name: &[u8]) -> Result<(), ConfineError> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(ConfineError::Refused {
            path: parent.join(OsStr::from_bytes(name)),
            what: "not a plain name".into(),
        });
    }
    Ok(())
}

/// Splits `rel` into its folder components and its last name.
pub fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (b"", rel),
    }
}

impl Dir {
    /// Opens a folder named by a trusted path: one from the configuration or the command
    /// line, never one from an archive.
    pub fn open_trusted(path: &Path) -> Result<Dir, ConfineError> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_at(path))?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The path this folder was reached by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn child_path(&self, name: &[u8]) -> PathBuf {
        self.path.join(OsStr::from_bytes(name))
    }

    /// Opens the folder `name` inside this one; a symlink or anything but a folder is
    /// refused.
    pub fn open_dir(&self, name: &[u8]) -> Result<Dir, ConfineError> {
        component(&self.path, name)?;
        let path = self.child_path(name);
        match rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(Dir { fd, path }),
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                let what = match self.kind(name) {
                    Some(FileType::Symlink) => "is a symlink; restore never follows one",
                    _ => "is not a folder",
                };
                Err(ConfineError::Refused {
                    path,
                    what: what.into(),
                })
            }
            Err(e) => Err(io_at(&path)(e)),
        }
    }

    /// Opens the folder `name`, creating it (mode 0700 until its own mode is applied)
    /// when it does not exist.
    pub fn create_dir(&self, name: &[u8]) -> Result<Dir, ConfineError> {
        component(&self.path, name)?;
        match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => self.open_dir(name),
            Err(e) => Err(io_at(&self.child_path(name))(e)),
        }
    }

    /// Creates the folder `name`, which must not exist yet.
    pub fn create_new_dir(&self, name: &[u8]) -> Result<Dir, ConfineError> {
        component(&self.path, name)?;
        rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o700))
            .map_err(io_at(&self.child_path(name)))?;
        self.open_dir(name)
    }

    /// Walks `rel` (components separated by `/`) below this folder, never following a
    /// symlink; creates missing folders when `create`.
    pub fn walk(&self, rel: &[u8], create: bool) -> Result<Dir, ConfineError> {
        let mut parts = rel.split(|&b| b == b'/').filter(|c| !c.is_empty());
        let Some(first) = parts.next() else {
            return self.reopen();
        };
        let step = |d: &Dir, c: &[u8]| {
            if create {
                d.create_dir(c)
            } else {
                d.open_dir(c)
            }
        };
        let mut dir = step(self, first)?;
        for c in parts {
            dir = step(&dir, c)?;
        }
        Ok(dir)
    }

    fn reopen(&self) -> Result<Dir, ConfineError> {
        let fd = self.fd.try_clone().map_err(|source| ConfineError::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok(Dir {
            fd,
            path: self.path.clone(),
        })
    }

    /// What `name` is, without following it; `None` when it does not exist.
    pub fn kind(&self, name: &[u8]) -> Option<FileType> {
        rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .ok()
            .map(|s| FileType::from_raw_mode(s.st_mode as _))
    }

    /// Whether `name` exists (a dangling symlink counts).
    pub fn exists(&self, name: &[u8]) -> bool {
        self.kind(name).is_some()
    }

    /// Creates the regular file `name`, which must not exist (no symlink is followed).
    pub fn create_file(&self, name: &[u8]) -> Result<File, ConfineError> {
        component(&self.path, name)?;
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(io_at(&self.child_path(name)))?;
        Ok(File::from(fd))
    }

    /// Opens the regular file `name` for reading, refusing a symlink.
    pub fn open_file(&self, name: &[u8]) -> Result<File, ConfineError> {
        component(&self.path, name)?;
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_at(&self.child_path(name)))?;
        Ok(File::from(fd))
    }

    /// Creates the symlink `name` pointing at `target` (recreated, never followed).
    pub fn symlink(&self, target: &[u8], name: &[u8]) -> Result<(), ConfineError> {
        component(&self.path, name)?;
        rustix::fs::symlinkat(target, &self.fd, name).map_err(io_at(&self.child_path(name)))
    }

    /// Hard-links `src/src_name` as `name` here. Only a regular file can be linked to.
    pub fn hard_link(&self, src: &Dir, src_name: &[u8], name: &[u8]) -> Result<(), ConfineError> {
        component(&self.path, name)?;
        component(&src.path, src_name)?;
        if src.kind(src_name) != Some(FileType::RegularFile) {
            return Err(ConfineError::Refused {
                path: self.child_path(name),
                what: format!(
                    "hard link to {}, which is not a regular file this restore wrote",
                    src.child_path(src_name).display()
                ),
            });
        }
        // No AT_SYMLINK_FOLLOW: the name itself is linked, never what it points at.
        rustix::fs::linkat(&src.fd, src_name, &self.fd, name, AtFlags::empty())
            .map_err(io_at(&self.child_path(name)))
    }

    /// Hard-links the live entry `src/src_name` (anything but a folder: a file, a FIFO, a
    /// socket) as `name` here, carrying it over as the very same inode.
    pub fn link_carried(
        &self,
        src: &Dir,
        src_name: &[u8],
        name: &[u8],
    ) -> Result<(), ConfineError> {
        component(&self.path, name)?;
        component(&src.path, src_name)?;
        rustix::fs::linkat(&src.fd, src_name, &self.fd, name, AtFlags::empty())
            .map_err(io_at(&self.child_path(name)))
    }

    /// Renames `name` here to `to/to_name`.
    pub fn rename(&self, name: &[u8], to: &Dir, to_name: &[u8]) -> Result<(), ConfineError> {
        component(&self.path, name)?;
        component(&to.path, to_name)?;
        rustix::fs::renameat(&self.fd, name, &to.fd, to_name).map_err(io_at(&self.child_path(name)))
    }

    /// Swaps `name` here and `other/other_name` (errors name the latter) in one atomic step, so that neither name
    /// is ever missing. `Ok(false)` when the filesystem cannot (the caller then renames).
    pub fn exchange(
        &self,
        name: &[u8],
        other: &Dir,
        other_name: &[u8],
    ) -> Result<bool, ConfineError> {
        component(&self.path, name)?;
        component(&other.path, other_name)?;
        match rustix::fs::renameat_with(
            &self.fd,
            name,
            &other.fd,
            other_name,
            rustix::fs::RenameFlags::EXCHANGE,
        ) {
            Ok(()) => Ok(true),
            Err(
                rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::NOTSUP,
            ) => Ok(false),
            // Named by the other side: the live path the caller is replacing.
            Err(e) => Err(io_at(&other.child_path(other_name))(e)),
        }
    }

    /// The inode number of `name`, without following it.
    pub fn ino(&self, name: &[u8]) -> Option<u64> {
        rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .ok()
            // `st_ino` is not u64 on every platform.
            .map(|s| {
                #[allow(clippy::unnecessary_cast)]
                let ino = s.st_ino as u64;
                ino
            })
    }

    /// Sets the owner of `name` without following it.
    pub fn lchown(&self, name: &[u8], uid: u32, gid: u32) -> Result<(), ConfineError> {
        rustix::fs::chownat(
            &self.fd,
            name,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(io_at(&self.child_path(name)))
    }

    /// This folder as a `File`, for its mode, times and owner.
    pub fn as_file(&self) -> Result<File, ConfineError> {
        let fd = self.fd.try_clone().map_err(|source| ConfineError::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok(File::from(fd))
    }

    /// Makes the names in this folder durable.
    pub fn sync(&self) -> Result<(), ConfineError> {
        rustix::fs::fsync(self.fd.as_fd()).map_err(io_at(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_reached_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let d = Dir::open_trusted(&root).unwrap();
        let e = d.walk(b"link/sub", true).err().unwrap().to_string();
        assert!(e.contains("is a symlink"), "{e}");
        assert!(d.open_dir(b"..").is_err());
        assert!(d.create_file(b"link").is_err());
        assert!(d.walk(b"a/../../x", true).is_err());
        // A hard link may only name a regular file.
        let e = d.hard_link(&d, b"link", b"h").err().unwrap().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        // Ordinary work still works.
        let sub = d.walk(b"a/b", true).unwrap();
        drop(sub.create_file(b"f").unwrap());
        d.walk(b"a/b", false).unwrap();
        assert!(root.join("a/b/f").is_file());
    }
}
