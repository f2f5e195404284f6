//! Small filesystem helpers shared by the modules that write state or archives.

use std::fs::{DirBuilder, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Creates `dir` and its parents with mode 0700 (existing folders keep their mode).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Creates `path` (which must not exist), private to its owner.
pub fn create_private(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// fsyncs a directory so that a rename inside it survives a power cut.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Flushes everything written to the filesystem holding `path` (syncfs on Linux; a full
/// sync elsewhere).
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let f = File::open(path)?;
        // SAFETY: a valid descriptor we own for the duration of the call.
        if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        // SAFETY: sync has no preconditions.
        unsafe { libc::sync() };
        Ok(())
    }
}

/// Used percentage, used bytes and free bytes (available to unprivileged users) of the
/// filesystem holding `path`, as `df` counts them.
pub fn disk_usage(path: &Path) -> io::Result<(f64, u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string and st a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &raw mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    let used = (st.f_blocks as u64).saturating_sub(st.f_bfree as u64);
    let avail = st.f_bavail as u64;
    let pct = if used + avail == 0 {
        0.0
    } else {
        used as f64 * 100.0 / (used + avail) as f64
    };
    Ok((pct, used * frsize, avail * frsize))
}

/// Free bytes available to unprivileged users on the filesystem holding `path`.
pub fn free_space(path: &Path) -> io::Result<u64> {
    disk_usage(path).map(|(_, _, free)| free)
}

/// The host name, for archive metadata (debug builds: `STEWARD_HOSTNAME` when set).
pub fn hostname() -> String {
    // Debug (test) builds play several hosts on one machine.
    #[cfg(debug_assertions)]
    if let Some(h) = std::env::var("STEWARD_HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
    {
        return h;
    }
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Restores the default action of SIGPIPE (terminate), which Rust programs start with
/// ignored, so that writing to a closed pipe ends the process like any Unix filter.
pub fn default_sigpipe() {
    // SAFETY: signal() with SIG_DFL installs no handler; nothing else runs yet.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The mount point of the filesystem holding `path` (the longest mounted prefix of its
/// canonical form), for messages about a full disk; `None` when the table is unreadable.
pub fn filesystem_of(path: &Path) -> Option<PathBuf> {
    let abs = path
        .canonicalize()
        .or_else(|_| {
            path.parent()
                .map_or(Err(io::ErrorKind::NotFound.into()), Path::canonicalize)
        })
        .ok()?;
    mount_points()?
        .into_iter()
        .filter(|m| abs.starts_with(m))
        .max_by_key(|m| m.as_os_str().len())
}

/// Where filesystems are mounted, from the kernel's table (bind mounts included, which a
/// device number cannot tell apart); `None` when the table cannot be read.
fn mount_points() -> Option<Vec<PathBuf>> {
    #[cfg(target_os = "linux")]
    {
        let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        // "ID PARENT MAJ:MIN ROOT MOUNTPOINT ...", spaces in names as \040.
        Some(
            table
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .map(|m| PathBuf::from(unescape_octal(m)))
                .collect(),
        )
    }
    #[cfg(target_os = "macos")]
    {
        use std::os::unix::ffi::OsStrExt;
        let mut buf: *mut libc::statfs = std::ptr::null_mut();
        // SAFETY: getmntinfo points `buf` at `n` statfs records it owns (valid until the
        // next call on this thread); MNT_NOWAIT reads the cached table without blocking.
        let n = unsafe { libc::getmntinfo(&raw mut buf, libc::MNT_NOWAIT) };
        if n <= 0 || buf.is_null() {
            return None;
        }
        // SAFETY: as above, `n` records from `buf`.
        let all = unsafe { std::slice::from_raw_parts(buf, usize::try_from(n).ok()?) };
        Some(
            all.iter()
                .map(|m| {
                    // SAFETY: f_mntonname is a NUL-terminated C string inside the record.
                    let name = unsafe { std::ffi::CStr::from_ptr(m.f_mntonname.as_ptr()) };
                    PathBuf::from(std::ffi::OsStr::from_bytes(name.to_bytes()))
                })
                .collect(),
        )
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    None
}

#[cfg(target_os = "linux")]
fn unescape_octal(s: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    std::ffi::OsString::from_vec(out)
}

/// A mount point at `root` or anywhere below it, if any: the kernel's mount table where it
/// can be read, else a walk comparing device numbers. Symlinks are not followed.
pub fn mount_inside(root: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let real = std::fs::canonicalize(root).ok()?;
    if let Some(points) = mount_points() {
        let mut found: Vec<PathBuf> = points
            .into_iter()
            .filter(|m| m.starts_with(&real))
            .collect();
        found.sort();
        // Named as the caller knows the folder.
        return found
            .into_iter()
            .next()
            .map(|m| root.join(m.strip_prefix(&real).unwrap_or(&m)));
    }
    let dev = std::fs::symlink_metadata(root).ok()?.dev();
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .follow_root_links(false)
        .min_depth(1)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_dir())
        .find(|e| e.metadata().is_ok_and(|m| m.dev() != dev))
        .map(walkdir::DirEntry::into_path)
}

/// `p` made absolute and free of `.` and `..`, by the names alone (no link is followed):
/// what a configured path, or a symlink's target where the link is, means.
pub fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// Removes the tree at `path` (never following a symlink), unless a filesystem is mounted
/// at it or inside it: that one is not the tree's to empty.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    if let Some(m) = mount_inside(path) {
        return Err(io::Error::other(format!(
            "a filesystem is mounted at {}; unmount it first (nothing was removed)",
            m.display()
        )));
    }
    std::fs::remove_dir_all(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_read_by_their_names() {
        assert_eq!(lexical(Path::new("/a/b/../../../c/./d")), Path::new("/c/d"));
    }
}
