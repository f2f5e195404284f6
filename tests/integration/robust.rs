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

/// Regression: a full destination during the data phase was reported as "the other side
/// of the pipe stopped: the other side of the pipe stopped".
#[test]
fn regression_a_full_disk_is_reported_as_no_space_left() {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    // Far more than the pipe between archiver and compressor holds: the disk fills while
    // files are still being archived.
    for i in 0..16 {
        crate::common::random_file(&data.join(format!("blob{i}")), 4 << 20, i);
    }
    let _disk = crate::common::SmallDisk::mount(&env.dest, "3m");
    env.one_set("s", &[&data], "");
    let a = env.cmd().arg("backup").assert().code(2);
    let err = stderr(&a);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!err.contains("other side of the pipe"), "{err}");
    // Nothing half-written is left.
    let left: Vec<String> = crate::common::dir_names(&env.dest.join("s"));
    assert!(left.is_empty(), "{left:?}");
}

/// Regression: the destination filled up during a WAL database's snapshot and the error
/// named the source database (whose disk has room) as if it were the one that was full.
#[test]
fn regression_a_full_destination_during_a_sqlite_snapshot_names_the_destination() {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    let db = data.join("app.db");
    // A writer holding the database open with its changes still in the WAL: the backup
    // must copy it through the online backup API into the destination's folder.
    let live = rusqlite::Connection::open(&db).unwrap();
    live.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
         CREATE TABLE t (x BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 3000)
         INSERT INTO t SELECT randomblob(1000) FROM n;",
    )
    .unwrap();
    let _disk = crate::common::SmallDisk::mount(&env.dest, "1m");
    env.one_set("s", &[&data], "");
    let a = env.cmd().arg("backup").assert().code(2);
    let err = stderr(&a);
    assert!(
        err.contains("filled the disk")
            && err.contains(&env.dest.display().to_string())
            && err.contains("full"),
        "{err}"
    );
    drop(live);
}

/// Regression: the README said every reporting command takes `--json`; `report` did not.
#[test]
fn regression_report_has_json() {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("f"), "x").unwrap();
    env.one_set("s", &[&data], "");
    env.cmd().arg("backup").assert().success();
    let a = env.cmd().args(["report", "--json"]).assert().success();
    let v: serde_json::Value = serde_json::from_str(&crate::common::stdout(&a)).unwrap();
    assert_eq!(v["days"], 30);
    assert!(v["runs"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["sets"][0]["set"], "s");
    assert!(v["sets"][0]["newest"].as_str().unwrap().starts_with("s-"));
    let text = crate::common::stdout(&env.cmd().arg("report").assert().success());
    assert!(text.contains("Backups per set"), "{text}");
}

#[test]
fn completions_and_man_page_need_no_config_and_load_in_bash() {
    let env = Env::new();
    // Even a broken config does not stand in the way.
    fs::write(&env.config, "this is not toml = = =").unwrap();
    let a = env.cmd().args(["completions", "bash"]).assert().success();
    let script = env.root.join("steward.bash");
    fs::write(&script, crate::common::stdout(&a)).unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(". {} && complete -p steward", script.display()))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("_steward"),
        "{out:?}"
    );
    for shell in ["zsh", "fish"] {
        env.cmd().args(["completions", shell]).assert().success();
    }
    let man = crate::common::stdout(&env.cmd().arg("man").assert().success());
    assert!(
        man.contains(".TH steward 1") && man.contains("restore"),
        "{man}"
    );
    // `run JOB` lists what each job does.
    let help = crate::common::stdout(&env.bare_cmd().args(["run", "--help"]).assert().success());
    assert!(
        help.contains("backup:SET  back up the one set SET"),
        "{help}"
    );
}

/// `run` takes only schedulable jobs, by their one spelling, and records nothing for a
/// name that is none (it used to record a tick of `job restore`).
#[test]
fn run_refuses_unknown_and_unschedulable_jobs_before_recording() {
    let env = Env::new();
    env.write_config("");
    for bad in ["restore", "maintain", "backup:", "nightly"] {
        let a = env.cmd().args(["run", bad]).assert().code(2);
        let err = stderr(&a);
        assert!(
            err.contains(&format!("unknown job {bad:?}")) && err.contains("backup:SET"),
            "{bad}: {err}"
        );
    }
    let db = env.state.join("state.db");
    if db.exists() {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }
}
