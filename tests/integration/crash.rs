//! Crashes and concurrency: SIGKILL mid-backup leaves nothing visible and no stale lock;
//! a second run while one holds the lock exits 75 naming the holder.

use std::fs;
use std::time::Duration;

use crate::common::{Env, partial_over, slow_set, stderr, wait_for};

#[test]
fn sigkill_mid_backup_leaves_no_archive_and_the_next_run_cleans_up() {
    let env = Env::new();
    // Level 19 on incompressible data is slow: the kill lands mid-archive.
    slow_set(&env, "s", &[8 << 20; 4], "");

    let mut child = env
        .std_cmd()
        .arg("backup")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let set_dir = env.dest.join("s");
    wait_for("a growing .partial archive", Duration::from_mins(1), || {
        partial_over(&set_dir, 0)
    });
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());

    // Nothing listed, nothing visible but the hidden partial.
    let listed = env.list_json().to_string();
    assert_eq!(listed.trim(), "[]");
    assert!(env.archives("s").is_empty());
    assert!(
        env.set_dir_names("s")
            .iter()
            .all(|n| n.starts_with('.') && n.ends_with(".partial"))
    );

    // The kernel dropped the lock with the process; the next run removes the partial.
    let text = fs::read_to_string(&env.config)
        .unwrap()
        .replace("compression-level = 19", "compression-level = 1");
    fs::write(&env.config, text).unwrap();
    let a = env.cmd().arg("backup").assert().success();
    assert!(
        stderr(&a).contains("left by an interrupted run"),
        "{}",
        stderr(&a)
    );
    let names = env.set_dir_names("s");
    assert!(names.iter().all(|n| !n.ends_with(".partial")), "{names:?}");
    assert_eq!(env.archives("s").len(), 1);
    env.cmd().args(["verify", "--all"]).assert().success();
}

#[test]
fn a_second_backup_while_one_holds_the_lock_exits_75_naming_the_pid() {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("a"), "a").unwrap();
    env.one_set("s", &[&data], "");
    // This test process holds the job lock, exactly as a running backup would.
    let held = steward::lock::acquire(&env.state, "backup").unwrap();
    let a = env.cmd().arg("backup").assert().code(75);
    let err = stderr(&a);
    assert!(
        err.contains(&format!("PID {}", std::process::id())),
        "{err}"
    );
    assert!(env.archives("s").is_empty());
    // Other jobs are not blocked by it.
    env.cmd().args(["backups", "list"]).assert().success();
    drop(held);
    env.cmd().arg("backup").assert().success();
}
