//! Regression tests for the robustness round: no panic on any input, closed pipes,
//! messages that name the real cause, documentation that runs.

use std::fs;
use std::os::fd::FromRawFd;
use std::os::unix::process::ExitStatusExt;

use crate::common::{Env, stderr};

/// Regression: `steward backups list --json | head -1` panicked in println! on the broken
/// pipe (exit 101).
#[test]
fn regression_a_closed_stdout_ends_the_command_quietly() {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("f"), "x").unwrap();
    env.one_set("s", &[&data], "");
    env.cmd().arg("backup").assert().success();
    // A pipe whose reading end is closed before steward writes a byte.
    let mut fds = [0; 2];
    // SAFETY: pipe() fills two fresh descriptors; each is owned once below.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fds[0] is ours and closed exactly once.
    unsafe { libc::close(fds[0]) };
    // SAFETY: fds[1] is ours; Stdio takes ownership.
    let stdout = unsafe { std::process::Stdio::from_raw_fd(fds[1]) };
    let out = env
        .std_cmd()
        .args(["backups", "list", "--json"])
        .stdout(stdout)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?} {err}",
        out.status
    );
    // The same command to a reader still prints everything.
    let a = env
        .cmd()
        .args(["backups", "list", "--json"])
        .assert()
        .success();
    assert!(stderr(&a).is_empty(), "{}", stderr(&a));
}
