//! Which processes hold files under the paths a restore replaces. A process that keeps a
//! database open across the swap goes on writing into the copy moved aside, and those
//! writes would be lost with it, so the swap is refused while one does.
//!
//! One mechanism for both hosts: `lsof -F pcfn` (it ships with macOS; Debian's `lsof`
//! package), so the code the Mac Mini runs is the code the tests run. Only where `lsof` is
//! not installed (a minimal Linux) is `/proc/PID/fd` and `maps` read instead.

use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

/// One open file under a restored path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
    /// lsof's descriptor: a number, `mem` (mapped), `txt` (the program), `cwd`...
    pub fd: String,
    pub file: PathBuf,
}

impl Holder {
    /// A working folder (or root folder) inside the data writes nothing; it is said,
    /// but it does not stop a restore.
    pub fn is_folder_only(&self) -> bool {
        matches!(self.fd.as_str(), "cwd" | "rtd")
    }
}

/// Looking for holders failed: the restore cannot say that nothing writes.
#[derive(Debug, thiserror::Error)]
#[error("looking for processes with files open under the restored paths: {0}")]
pub struct HoldersError(String);

/// The processes other than this one holding a file under any of `paths` open.
/// Paths that do not exist hold nothing.
pub fn holders(paths: &[PathBuf]) -> Result<Vec<Holder>, HoldersError> {
    // lsof names files by their real path: /var is /private/var on macOS.
    let roots: Vec<PathBuf> = paths
        .iter()
        .filter_map(|p| fs::canonicalize(p).ok())
        .collect();
    if roots.is_empty() {
        return Ok(Vec::new());
    }
    let all = if crate::fault::enabled("holders-proc") {
        proc_fds()?
    } else {
        match lsof() {
            Ok(all) => all,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && cfg!(target_os = "linux") => {
                proc_fds()?
            }
            Err(e) => {
                return Err(HoldersError(format!(
                    "running lsof: {e} (install lsof, or pass --ignore-open-files)"
                )));
            }
        }
    };
    let me = std::process::id();
    let mut found: Vec<Holder> = all
        .into_iter()
        .filter(|h| h.pid != me && roots.iter().any(|r| under(r, &h.file)))
        .collect();
    found.sort_by(|a, b| (a.pid, &a.file, &a.fd).cmp(&(b.pid, &b.file, &b.fd)));
    found.dedup_by(|a, b| a.pid == b.pid && a.file == b.file);
    Ok(found)
}

/// Holders for a message: `PID 12 python3 /srv/app/db.sqlite`, the first ten.
pub fn describe(holders: &[Holder]) -> String {
    let mut shown: Vec<String> = holders
        .iter()
        .take(10)
        .map(|h| format!("PID {} {} {}", h.pid, h.command, h.file.display()))
        .collect();
    if holders.len() > 10 {
        shown.push(format!("and {} more", holders.len() - 10));
    }
    shown.join("; ")
}

fn under(root: &Path, file: &Path) -> bool {
    // lsof may add " (deleted)" or similar after the name; a prefix still places it.
    file.starts_with(root)
        || file
            .to_str()
            .zip(root.to_str())
            .is_some_and(|(f, r)| f.strip_prefix(r).is_some_and(|rest| rest.starts_with(' ')))
}

fn lsof() -> std::io::Result<Vec<Holder>> {
    // -n -P: no name lookups; -w: no warnings (lsof exits 1 for unreadable /proc
    // entries and when it finds nothing, so its status says nothing useful).
    let mut child = Command::new("lsof")
        .args(["-F", "pcfn", "-n", "-P", "-w"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut out = Vec::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_end(&mut out)?;
    }
    let status = child.wait()?;
    if out.is_empty() && !status.success() && status.code() != Some(1) {
        return Err(std::io::Error::other(format!("lsof failed: {status}")));
    }
    Ok(parse_lsof(&out))
}

/// Parses `lsof -F pcfn` output: a `p` line starts a process, `c` names it, and each file
/// is an `f` line followed by its `n` line.
pub fn parse_lsof(out: &[u8]) -> Vec<Holder> {
    let mut found = Vec::new();
    let (mut pid, mut command, mut fd) = (0u32, String::new(), String::new());
    for line in out.split(|&b| b == b'\n') {
        let Some((&tag, rest)) = line.split_first() else {
            continue;
        };
        let text = String::from_utf8_lossy(rest);
        match tag {
            b'p' => {
                pid = text.parse().unwrap_or(0);
                command.clear();
                fd.clear();
            }
            b'c' => command = text.into_owned(),
            b'f' => fd = text.into_owned(),
            b'n' if pid != 0 => found.push(Holder {
                pid,
                command: command.clone(),
                fd: fd.clone(),
                file: PathBuf::from(std::ffi::OsStr::from_bytes(rest)),
            }),
            _ => {}
        }
    }
    found
}

/// Linux without lsof: every process's descriptors, mapped files and working folder.
fn proc_fds() -> Result<Vec<Holder>, HoldersError> {
    let rd = fs::read_dir("/proc").map_err(|e| HoldersError(format!("/proc: {e}")))?;
    let mut found = Vec::new();
    for e in rd.filter_map(Result::ok) {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let dir = e.path();
        let command = fs::read_to_string(dir.join("comm"))
            .map(|c| c.trim_end().to_string())
            .unwrap_or_default();
        let mut push = |fd: String, file: PathBuf| {
            found.push(Holder {
                pid,
                command: command.clone(),
                fd,
                file,
            });
        };
        // A process that exits meanwhile, or one we may not look into, holds nothing we
        // can name: skipped.
        if let Ok(fds) = fs::read_dir(dir.join("fd")) {
            for f in fds.filter_map(Result::ok) {
                if let Ok(target) = fs::read_link(f.path()) {
                    push(f.file_name().to_string_lossy().into_owned(), target);
                }
            }
        }
        if let Ok(maps) = fs::read_to_string(dir.join("maps")) {
            for line in maps.lines() {
                // address perms offset dev inode path
                if let Some(path) = line.splitn(6, ' ').nth(5).map(str::trim_start)
                    && path.starts_with('/')
                {
                    push("mem".into(), PathBuf::from(path));
                }
            }
        }
        if let Ok(cwd) = fs::read_link(dir.join("cwd")) {
            push("cwd".into(), cwd);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lsof_fields_per_process() {
        let out = b"p12\ncpython3\nfcwd\nn/srv/app\nf3\nn/srv/app/db.sqlite\nfmem\nn/srv/app/db.sqlite-shm\np40\ncnode\nf7\nn/var/log/x.log\n";
        let h = parse_lsof(out);
        assert_eq!(h.len(), 4);
        assert_eq!(
            h[1],
            Holder {
                pid: 12,
                command: "python3".into(),
                fd: "3".into(),
                file: "/srv/app/db.sqlite".into()
            }
        );
        assert!(h[0].is_folder_only() && !h[2].is_folder_only());
        assert_eq!((h[3].pid, h[3].command.as_str()), (40, "node"));
    }

    #[test]
    fn a_name_that_only_shares_a_prefix_is_not_under_the_root() {
        assert!(under(Path::new("/srv/app"), Path::new("/srv/app/db")));
        assert!(under(
            Path::new("/srv/app/db"),
            Path::new("/srv/app/db (deleted)")
        ));
        assert!(!under(Path::new("/srv/app"), Path::new("/srv/apple/db")));
    }

    #[test]
    fn finds_this_test_s_child_holding_a_file_open() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("held");
        fs::write(&file, b"x").unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("exec 3<\"$0\"; echo open; read _")
            .arg(&file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let want = fs::canonicalize(&file).unwrap();
        // Once it says so, the child holds the file open.
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let seen = holders(&[dir.path().to_path_buf()]).unwrap();
        drop(child.stdin.take());
        let _ = child.wait();
        assert!(
            seen.iter()
                .any(|h| h.pid == pid && h.file == want && h.fd == "3"),
            "{seen:?}"
        );
    }
}
