//! The daemon end to end with fast (per-second) schedules: jobs run and never overlap (a
//! slow job's next ticks are skipped and counted), SIGTERM mid-backup leaves no partial
//! archive and exits 0, SIGHUP with a broken config keeps the old one, missed runs catch up.

use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use rusqlite::Connection;

use crate::common::{Env, partial_over, slow_set, stdout, wait_for};

struct Daemon {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(env: &Env) -> Daemon {
        Self::start_with(env, |_| {})
    }
    fn start_with(env: &Env, tweak: impl FnOnce(&mut std::process::Command)) -> Daemon {
        let log = env.root.join("daemon.log");
        let mut cmd = env.std_cmd();
        tweak(&mut cmd);
        let child = cmd
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon {
            child: Some(child),
            log,
        };
        wait_for("the daemon to start", Duration::from_secs(30), || {
            d.log().contains("daemon started")
        });
        d
    }
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.as_ref().unwrap().id() as i32, sig) };
    }
    fn stop(mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        self.child.take().unwrap().wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// (started, finished, status) of the scheduled runs of `job`, oldest first.
fn runs(state: &Path, job: &str) -> Vec<(i64, Option<i64>, String)> {
    let db = Connection::open(state.join("state.db")).unwrap();
    let mut stmt = db
        .prepare("SELECT started_at, finished_at, status FROM runs WHERE scheduled = 1 AND job = ?1 ORDER BY id")
        .unwrap();
    stmt.query_map([job], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn slow_backup_env(schedule: &str) -> Env {
    let env = Env::new();
    // Level 19 on incompressible data: a backup takes seconds.
    slow_set(
        &env,
        "s",
        &[6 << 20; 3],
        &format!("\n[schedule]\nbackup = \"{schedule}\"\ngrace-period = \"30s\"\n"),
    );
    env
}

#[test]
fn a_slow_job_never_overlaps_its_skipped_ticks_are_counted_and_sigterm_leaves_no_partial() {
    let env = slow_backup_env("* * * * * *");
    let d = Daemon::start(&env);
    wait_for("a skipped tick", Duration::from_mins(1), || {
        runs(&env.state, "backup").iter().any(|r| r.2 == "skipped")
    });
    // Stop while a backup runs (they run back to back at this schedule).
    wait_for("a backup in progress", Duration::from_mins(1), || {
        fs::read_dir(env.dest.join("s")).is_ok_and(|rd| {
            rd.filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        })
    });
    let status = d.stop();
    assert!(status.success(), "daemon exit {status:?}");
    let names = env.set_dir_names("s");
    assert!(
        names.iter().all(|n| !n.ends_with(".partial")),
        "partial left: {names:?}"
    );
    // Runs never overlapped: each started after the previous one finished.
    let done: Vec<_> = runs(&env.state, "backup")
        .into_iter()
        .filter(|r| r.2 != "skipped")
        .collect();
    for w in done.windows(2) {
        assert!(w[1].0 >= w[0].1.unwrap_or(i64::MAX), "overlap: {w:?}");
    }
    let a = env.cmd().args(["status", "--json"]).assert().success();
    let v: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    let job = &v["jobs"][0];
    assert_eq!(job["job"], "backup");
    assert!(job["skipped_ticks"].as_u64().unwrap() >= 1, "{v}");
    assert!(job["next_run"].as_i64().is_some(), "{v}");
    // Every archive that exists is complete and verifies.
    if !env.archives("s").is_empty() {
        env.cmd().args(["verify", "--all"]).assert().success();
    }
}

#[test]
fn sighup_with_a_broken_config_keeps_the_running_one() {
    let env = Env::new();
    env.write_config(
        "[schedule]\ncheck = \"*/1 * * * * *\"\n[checks.cpu]\nwarn = 100\ncrit = 100\n",
    );
    // A stand-in for systemd's notify socket.
    let sock_path = env.root.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let d = Daemon::start_with(&env, |c| {
        c.env("NOTIFY_SOCKET", &sock_path);
    });
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    let good = fs::read_to_string(&env.config).unwrap();
    fs::write(&env.config, format!("{good}\nthis is not toml = = =\n")).unwrap();
    d.signal(libc::SIGHUP);
    wait_for("the reload to be refused", Duration::from_secs(30), || {
        d.log()
            .contains("configuration reload failed, keeping the running one")
    });
    let before = runs(&env.state, "check").len();
    wait_for(
        "more checks on the old config",
        Duration::from_secs(30),
        || runs(&env.state, "check").len() >= before + 2,
    );
    // A good config is taken.
    fs::write(&env.config, good.replace("*/1 * * * * *", "*/2 * * * * *")).unwrap();
    d.signal(libc::SIGHUP);
    wait_for("the reload", Duration::from_secs(30), || {
        d.log().contains("configuration reloaded")
    });
    assert!(d.stop().success());
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
}

#[test]
fn a_missed_run_catches_up_once_at_start() {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("f"), "x").unwrap();
    // Daily at 03:00: it last ran never, so it is overdue.
    env.write_config(&format!(
        "[[backup.set]]\nname = \"s\"\npaths = [\"{}\"]\n\n[schedule]\nbackup = \"0 3 * * *\"\n",
        data.display()
    ));
    let d = Daemon::start(&env);
    wait_for("the catch-up backup", Duration::from_secs(30), || {
        runs(&env.state, "backup").iter().any(|r| r.1.is_some())
    });
    assert!(d.log().contains("missed its run"), "{}", d.log());
    assert!(d.stop().success());
    assert_eq!(env.archives("s").len(), 1);
    // Started again, it is not overdue any more.
    let d = Daemon::start(&env);
    let log = d.log();
    assert!(d.stop().success());
    assert!(!log.contains("missed its run"), "{log}");
    assert_eq!(runs(&env.state, "backup").len(), 1);
}

/// Regression: SIGHUP reloaded the daemon's config and re-armed the schedule, but the jobs
/// (child processes) still ran on the snapshot written at start-up.
#[test]
fn regression_sighup_after_editing_a_sets_paths_reaches_the_next_backup() {
    let env = Env::new();
    let (a, b) = (env.root.join("a"), env.root.join("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(a.join("fa"), "in a").unwrap();
    fs::write(b.join("fb"), "in b").unwrap();
    let write = |paths: &str| {
        env.write_config(&format!(
            "[[backup.set]]\nname = \"s\"\npaths = [{paths}]\n\n[schedule]\nbackup = \"* * * * * *\"\n"
        ));
    };
    write(&format!("\"{}\"", a.display()));
    let d = Daemon::start(&env);
    wait_for("the first backup", Duration::from_mins(1), || {
        env.archives("s").len() == 1
    });
    write(&format!("\"{}\", \"{}\"", a.display(), b.display()));
    d.signal(libc::SIGHUP);
    wait_for("the reload", Duration::from_secs(30), || {
        d.log().contains("configuration reloaded")
    });
    wait_for("a backup of the new paths", Duration::from_mins(1), || {
        env.archives("s").len() >= 2
    });
    assert!(d.stop().success());
    let newest = env.archives("s").pop().unwrap();
    let out = env.root.join("x");
    crate::common::extract(&newest, &out);
    assert!(out.join(b.strip_prefix("/").unwrap()).join("fb").is_file());
}

/// Regression (issue 26's review): a catch-up started every missed job at once, so of two
/// jobs that share a lock (backup and prune; daily and weekly) the second met the lock and
/// was skipped until its next scheduled time: a week, for weekly maintenance. It now waits
/// for the first and runs after it.
#[test]
fn regression_catch_up_runs_jobs_that_share_a_lock_one_after_another() {
    let env = slow_backup_env("0 3 * * *");
    let text = fs::read_to_string(&env.config).unwrap().replace(
        "backup = \"0 3 * * *\"",
        "backup = \"0 3 * * *\"\nprune = \"0 4 * * *\"",
    );
    fs::write(&env.config, text).unwrap();
    let d = Daemon::start(&env);
    wait_for("the catch-up prune", Duration::from_mins(2), || {
        runs(&env.state, "prune").iter().any(|r| r.1.is_some())
    });
    let log = d.log();
    assert!(d.stop().success());
    assert!(log.contains("prune: waits for backup"), "{log}");
    let backup = runs(&env.state, "backup");
    let prune = runs(&env.state, "prune");
    assert_eq!(backup.len(), 1, "{backup:?}");
    assert_eq!(prune.len(), 1, "{prune:?}");
    assert_eq!(prune[0].2, "ok", "{prune:?}\n{log}");
    // After the backup, not beside it.
    assert!(prune[0].0 >= backup[0].1.unwrap(), "{backup:?} {prune:?}");
}

/// Regression (issue 26's review), the timers' and launchd's side of the same loss: two
/// `steward run` of jobs that share a lock (launchd firing daily and weekly together after
/// a wake) skipped the second. A scheduled run now waits for another job's lock; its own
/// earlier run still makes it a skipped tick.
#[test]
fn regression_a_scheduled_run_waits_for_another_job_that_shares_its_lock() {
    let env = slow_backup_env("0 3 * * *");
    let lock = env.state.join("locks/backup.lock");
    let mut backup = env.std_cmd();
    let mut backup = backup
        .args(["run", "backup"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        "the backup to hold its lock",
        Duration::from_secs(30),
        || {
            // `run backup` of the one set is the unit `backup:s`.
            fs::read_to_string(&lock).is_ok_and(|s| s.trim_end().ends_with(" backup:s"))
        },
    );
    // The same job again: a skipped tick, at once (exit 75).
    let again = env.cmd().args(["run", "backup"]).output().unwrap();
    assert_eq!(again.status.code(), Some(75), "{again:?}");
    // Another job on the same lock: waits, then runs.
    let prune = env.cmd().args(["run", "prune"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&prune.stderr);
    assert!(prune.status.success(), "{prune:?}");
    assert!(
        stderr.contains("prune waits for backup:s, which holds the backup lock"),
        "{stderr}"
    );
    assert!(backup.wait().unwrap().success());
    let backups = runs(&env.state, "backup");
    let prunes = runs(&env.state, "prune");
    assert_eq!(
        backups.iter().map(|r| r.2.as_str()).collect::<Vec<_>>(),
        ["ok", "skipped"],
        "{backups:?}"
    );
    assert_eq!(prunes.len(), 1, "{prunes:?}");
    assert_eq!(prunes[0].2, "ok", "{prunes:?}");
    assert!(
        prunes[0].1.unwrap() >= backups[0].1.unwrap(),
        "{backups:?} {prunes:?}"
    );
}

/// Regression (issue 26's review): SIGTERM was read only between entries, so inside one
/// large file at level 19 a backup went on for about a minute, the daemon's whole grace
/// period, before it stopped. It now stops inside the file.
#[test]
fn regression_sigterm_stops_a_backup_inside_a_large_file() {
    let env = Env::new();
    // One incompressible file at level 19: compressing it whole takes far longer than the
    // bound below on this kind of machine.
    slow_set(&env, "m", &[256 << 20], "");
    let mut child = env
        .std_cmd()
        .arg("backup")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let dir = env.dest.join("m");
    // Inside the file: its compressed bytes are reaching the partial archive.
    wait_for("the archive to grow", Duration::from_mins(1), || {
        partial_over(&dir, 1 << 20)
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let signalled = std::time::Instant::now();
    let status = child.wait().unwrap();
    let waited = signalled.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("stopped by a signal"), "{stderr}");
    assert!(waited < Duration::from_secs(20), "stopped after {waited:?}");
    assert!(env.archives("m").is_empty());
    let left: Vec<_> = fs::read_dir(&dir).unwrap().filter_map(Result::ok).collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Regression: the scheduler fires a one-shot up to a second early, and the next run was
/// armed after "now", which was still before the instant just served: one tick ran the
/// job two or three times (`check: started` at :59, :59 and :00).
#[test]
fn regression_one_tick_runs_its_job_once() {
    let env = Env::new();
    env.write_config(
        "[schedule]\ncheck = \"*/3 * * * * *\"\ncatch-up = false\n[checks.cpu]\nwarn = 100\ncrit = 100\n",
    );
    // Start late in a second, so the first run is armed with a fractional delay (the
    // moment is fault injection, not synchronisation).
    let frac = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_millis()
    };
    while frac() < 700 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let d = Daemon::start(&env);
    wait_for("five scheduled checks", Duration::from_mins(1), || {
        d.log().matches("check: started").count() >= 5
    });
    let log = d.log();
    assert!(d.stop().success());
    let starts: Vec<i64> = log
        .lines()
        // A second fire of one tick either starts the job again or, while the first
        // still runs, is skipped: both are ticks.
        .filter(|l| l.contains("check: started") || l.contains("check: still running"))
        .map(|l| {
            let stamp = l.split_whitespace().next().unwrap();
            stamp.parse::<jiff::Timestamp>().unwrap().as_second()
        })
        .collect();
    for w in starts.windows(2) {
        assert!(
            w[1] - w[0] >= 2,
            "two starts of one tick: {starts:?}\n{log}"
        );
    }
}
