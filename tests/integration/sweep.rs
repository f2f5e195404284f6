//! Every journal state can be left (issue 23): each step of staging, swap and rollback is
//! made to fail (an injected error, `STEWARD_FAIL_AT`) or to crash (an abort,
//! `STEWARD_CRASH_AT`), on a two-path set with a service, a one-file database set, `--to`
//! with `--path`, and an in-place `--path`. After each, the test does only what steward's
//! own messages say (`--resume`, `--cleanup`), and then the data is whole (as backed up, or
//! as before: never a mix), the service runs as before, and no journal or staging is left.
//! Run with `--nocapture` for the table of points and outcomes.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::common::{Env, dir_names};

/// Crash points (aborts) and failure points (errors) of a restore, in the order a
/// restore meets them.
const POINTS: &[(&str, &str)] = &[
    ("crash", "restore-journal-written"),
    ("crash", "restore-staging-created"),
    ("fail", "restore-stage-file@2"),
    ("crash", "restore-staged"),
    ("fail", "restore-record-inodes"),
    ("fail", "restore-journal-save@2"),
    ("fail", "restore-journal-save@3"),
    ("crash", "restore-service-recorded"),
    ("crash", "restore-services-stopped"),
    ("fail", "restore-carry"),
    ("fail", "restore-journal-save@4"),
    ("fail", "restore-forward@1"),
    ("crash", "restore-unit-exchanged"),
    ("crash", "restore-after-first-unit"),
    ("fail", "restore-forward@2"),
    ("fail", "restore-forward@3"),
    ("fail", "restore-check-db"),
    ("fail", "restore-forward@2,restore-backward"),
    ("fail", "restore-forward@3,restore-backward@2"),
    ("fail", "restore-check-db,restore-backward@3"),
    ("fail", "restore-journal-save@5"),
    ("crash", "restore-settled"),
    ("fail", "service-start@1"),
];

struct World {
    env: Env,
    data: PathBuf,
    more: PathBuf,
    solo: PathBuf,
    out: PathBuf,
    pidfile: PathBuf,
    start: String,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Ok(pid) = fs::read_to_string(&self.pidfile) {
            let _ = std::process::Command::new("kill").arg(pid.trim()).status();
        }
    }
}

fn db(path: &Path, value: &str) {
    let _ = fs::remove_file(path);
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(&format!(
        "CREATE TABLE t (v); INSERT INTO t VALUES ('{value}');"
    ))
    .unwrap();
}

/// Every file below `root` except the service's log, relative path -> bytes.
fn files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut m = BTreeMap::new();
    if root.is_file() {
        m.insert(PathBuf::new(), fs::read(root).unwrap());
        return m;
    }
    for e in walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
    {
        if e.file_type().is_file() && !e.path().to_string_lossy().ends_with(".log") {
            let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
            m.insert(rel, fs::read(e.path()).unwrap());
        }
    }
    m
}

impl World {
    fn new() -> World {
        let env = Env::new();
        let (data, more, solo) = (
            env.root.join("data"),
            env.root.join("more"),
            env.root.join("solo.db"),
        );
        fs::create_dir_all(data.join("static")).unwrap();
        fs::create_dir_all(data.join("sub")).unwrap();
        fs::create_dir_all(&more).unwrap();
        fs::write(data.join("static/index.html"), "<h1>hello</h1>\n").unwrap();
        fs::write(data.join("sub/a.txt"), "a").unwrap();
        fs::write(more.join("settings.json"), "{\"a\": 1}\n").unwrap();
        db(&data.join("app.db"), "kept");
        db(&solo, "solo kept");
        let pidfile = env.root.join("api.pid");
        let mut svc = crate::common::test_service(
            &env.root,
            "api",
            &pidfile,
            &format!("--data {}", data.join("api.log").display()),
        );
        // Its start is guarded, as the README says to: every restore must still start it.
        svc.start = format!(
            "{} --config {} restore --guard api && {}",
            crate::common::STEWARD,
            env.config.display(),
            svc.start
        );
        env.write_config(&format!(
            "[[backup.set]]\nname = \"s\"\npaths = [\"{}\", \"{}\"]\nexclude = [\"*.log\"]\n\
             quiesce = [\"api\"]\n\n[[backup.set]]\nname = \"solo\"\npaths = [\"{}\"]\n\n\
             [[service]]\nname = \"api\"\nmanager = \"command\"\nstart = \"{}\"\n\
             stop = \"{}\"\nstatus = \"{}\"\nstop-timeout = \"10s\"\nstart-timeout = \"10s\"\n\n\
             [[service]]\nname = \"other\"\nmanager = \"command\"\nstart = \"true\"\n\
             stop = \"true\"\nstatus = \"true\"\n",
            data.display(),
            more.display(),
            solo.display(),
            svc.start,
            svc.stop,
            svc.status
        ));
        let w = World {
            out: env.root.join("out"),
            env,
            data,
            more,
            solo,
            pidfile,
            start: svc.start,
        };
        w.ensure_service();
        w.env.cmd().arg("backup").assert().success();
        w
    }

    fn ensure_service(&self) {
        if self.alive() {
            return;
        }
        crate::common::start_service(&self.start, "the service", || self.alive());
    }

    fn alive(&self) -> bool {
        fs::read_to_string(&self.pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
    }

    /// Ready for the next restore: the last one's copies removed, the service up, the
    /// data damaged.
    fn reset(&self) {
        self.env
            .cmd()
            .args(["restore", "--cleanup", "--yes"])
            .assert()
            .success();
        self.ensure_service();
        self.damage();
    }

    /// The state before each restore: every set damaged.
    fn damage(&self) {
        fs::write(self.data.join("app.db"), b"garbage").unwrap();
        fs::write(self.data.join("static/index.html"), "broken").unwrap();
        let _ = fs::remove_file(self.data.join("sub/a.txt"));
        fs::write(self.more.join("settings.json"), "{bad}").unwrap();
        db(&self.solo, "solo damaged");
        let _ = fs::remove_dir_all(&self.out);
    }

    fn state(&self) -> Vec<BTreeMap<PathBuf, Vec<u8>>> {
        vec![
            files(&self.data),
            files(&self.more),
            files(&self.solo),
            if self.out.exists() {
                files(&self.out)
            } else {
                BTreeMap::new()
            },
        ]
    }

    fn leftovers(&self) -> Vec<String> {
        let mut left: Vec<String> = dir_names(&self.env.root)
            .into_iter()
            .filter(|n| n.contains("steward-staging"))
            .collect();
        if self.env.state.join("restore-journal.json").exists() {
            left.push("restore-journal.json".into());
        }
        if self.out.exists() {
            for e in walkdir::WalkDir::new(&self.out).into_iter().flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.contains("steward-") {
                    left.push(n);
                }
            }
        }
        left
    }

    /// Runs `args` and follows what steward says until it says nothing more: the
    /// messages and warnings name `--resume` or `--cleanup`. Returns the steps taken.
    fn follow(&self, first: &std::process::Output) -> Vec<&'static str> {
        let text = |o: &std::process::Output| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        };
        let mut said = text(first);
        let mut steps = Vec::new();
        let mut looked = false;
        for _ in 0..8 {
            let action: Option<(&'static str, &[&str])> = if said.contains("restore --resume") {
                Some(("--resume", &["restore", "--resume"]))
            } else if said.contains("abandoned") {
                Some(("--cleanup", &["restore", "--cleanup", "--yes"]))
            } else {
                None
            };
            match action {
                Some((name, args)) => {
                    let o = self.env.std_cmd().args(args).output().unwrap();
                    steps.push(name);
                    said = text(&o);
                    if std::env::var_os("SWEEP_DEBUG").is_some() {
                        eprintln!("after {name}: {said}");
                    }
                    looked = false;
                }
                None if looked => break,
                None => {
                    // What every next command would tell the human.
                    let o = self.env.std_cmd().arg("status").output().unwrap();
                    said = text(&o);
                    if std::env::var_os("SWEEP_DEBUG").is_some() {
                        eprintln!("status: {said}");
                    }
                    looked = true;
                }
            }
        }
        steps
    }
}

/// One scenario over every point: returns table rows.
fn sweep(scenario: &str, args: &[&str]) -> Vec<String> {
    let w = World::new();
    // What each restore leads to, whole: the state as backed up and as before.
    w.damage();
    let before = w.state();
    let o = w.env.std_cmd().args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{scenario}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let restored = w.state();
    assert_ne!(before, restored, "{scenario}: the restore changed nothing");
    let mut rows = Vec::new();
    for (kind, point) in POINTS {
        w.reset();
        let var = if *kind == "crash" {
            "STEWARD_CRASH_AT"
        } else {
            "STEWARD_FAIL_AT"
        };
        let o = w.env.std_cmd().args(args).env(var, point).output().unwrap();
        let first = match o.status.code() {
            Some(0) => "exit 0".to_string(),
            Some(c) => format!("exit {c}"),
            None => "killed".to_string(),
        };
        let steps = w.follow(&o);
        let now = w.state();
        let end = if now == restored {
            "as backed up"
        } else if now == before {
            "as before"
        } else {
            panic!(
                "{scenario} {point}: data is neither as backed up nor as before after {first} \
                 then {steps:?}:\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        assert!(
            w.alive(),
            "{scenario} {point}: the service is down after {first} then {steps:?}"
        );
        let left = w.leftovers();
        assert!(
            left.is_empty(),
            "{scenario} {point}: left {left:?} after {first} then {steps:?}"
        );
        let row = format!(
            "| {scenario} | {kind} {point} | {first} | {} | {end} |",
            if steps.is_empty() {
                "-".to_string()
            } else {
                steps.join(", ")
            }
        );
        eprintln!("{row}");
        rows.push(row);
    }
    rows
}

#[test]
fn every_failure_point_of_a_two_path_restore_with_a_service_can_be_left_clean() {
    let rows = sweep(
        "two paths + service",
        &["restore", "--latest", "--set", "s", "--yes"],
    );
    // Both ends are reached: some points finish the restore, others undo it.
    assert!(rows.iter().any(|r| r.ends_with("as backed up |")));
    assert!(rows.iter().any(|r| r.ends_with("as before |")));
    assert!(rows.iter().any(|r| r.contains("--resume")));
}

#[test]
fn every_failure_point_of_a_one_file_database_restore_can_be_left_clean() {
    sweep(
        "one database file",
        &["restore", "--latest", "--set", "solo", "--yes"],
    );
}

#[test]
fn every_failure_point_of_a_to_dir_path_restore_can_be_left_clean() {
    sweep(
        "--to DIR --path FILE",
        &[
            "restore",
            "--latest",
            "--set",
            "s",
            "--yes",
            "--to",
            "out",
            "--path",
            "static/index.html",
        ],
    );
}

#[test]
fn every_failure_point_of_an_in_place_path_restore_can_be_left_clean() {
    sweep(
        "in place --path",
        &[
            "restore",
            "--latest",
            "--set",
            "s",
            "--yes",
            "--path",
            "static/**",
            "--path",
            "app.db",
        ],
    );
}

/// A process holding the restore lock, as a running restore does, until its stdin closes.
fn hold_restore_lock(w: &World) -> std::process::Child {
    let mut holder = std::process::Command::new("flock")
        .arg(w.env.state.join("locks/restore.lock"))
        .args(["sh", "-c", "echo held; read _"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(crate::common::first_line(&mut holder).trim(), "held");
    holder
}

/// `restore --guard NAME` in each journal state: what a service's `ExecStartPre=` gets.
#[test]
fn restore_guard_exit_codes_in_every_journal_state() {
    let w = World::new();
    let restore = ["restore", "--latest", "--set", "s", "--yes"];
    w.damage();
    let before = w.state();
    w.env.cmd().args(restore).assert().success();
    let restored = w.state();
    let guard = |name: &str, fail: Option<&str>| {
        let mut c = w.env.cmd();
        c.args(["restore", "--guard", name]);
        if let Some(f) = fail {
            c.env("STEWARD_FAIL_AT", f);
        }
        c.assert()
    };
    let crash_at = |point: &str| {
        w.reset();
        let o = w
            .env
            .std_cmd()
            .args(restore)
            .env("STEWARD_CRASH_AT", point)
            .output()
            .unwrap();
        assert!(o.status.code().is_none(), "{point}: not aborted");
        assert!(!w.alive(), "{point}: the service runs");
    };
    let journal = w.env.state.join("restore-journal.json");
    let resume_then_up = || {
        w.env.cmd().args(["restore", "--resume"]).assert().success();
        assert!(w.alive() && !journal.exists());
    };

    // No restore pending: start, silently.
    let a = guard("api", None).success();
    assert_eq!(crate::common::stdout(&a), "");

    // Interrupted with the services stopped, before the swap: nothing live changed; the
    // start may go on.
    crash_at("restore-services-stopped");
    let a = guard("api", None).success();
    assert!(
        crate::common::stdout(&a).contains("api may start")
            && crate::common::stdout(&a).contains("rolled back"),
        "{}",
        crate::common::stdout(&a)
    );
    assert_eq!(w.state(), before);
    // The journal stays, settled, so every command still says to run --resume, which
    // starts the services it stopped.
    assert!(journal.exists());
    let a = w.env.cmd().arg("status").assert().success();
    assert!(crate::common::stderr(&a).contains("restore --resume"));
    resume_then_up();

    // Half swapped (one of two paths new): a service the restore does not stop starts;
    // while the restore runs (its lock held) NAME's start is refused with 75; a settle that
    // can neither finish nor undo fails it with 2.
    crash_at("restore-after-first-unit");
    let mixed = w.state();
    assert!(mixed != before && mixed != restored);
    let a = guard("other", None).success();
    assert!(crate::common::stdout(&a).contains("does not stop it"));
    let mut holder = hold_restore_lock(&w);
    let a = guard("api", None).code(75);
    assert!(
        crate::common::stderr(&a).contains("a restore is running"),
        "{}",
        crate::common::stderr(&a)
    );
    assert_eq!(
        w.state(),
        mixed,
        "the guard touched a running restore's data"
    );
    drop(holder.stdin.take());
    holder.wait().unwrap();
    // A name no [[service]] has guards nothing: said, not a silent 0.
    let a = guard("nosuch", None).code(2);
    assert!(crate::common::stderr(&a).contains("no [[service]] named"));
    let a = guard("api", Some("restore-forward,restore-backward")).code(2);
    assert!(
        crate::common::stderr(&a).contains("guarding the start of api"),
        "{}",
        crate::common::stderr(&a)
    );
    // That settle had begun undoing the swap: the next start finishes undoing it.
    let a = guard("api", None).success();
    assert!(crate::common::stdout(&a).contains("rolled back"));
    assert_eq!(w.state(), before);
    resume_then_up();
    // Half swapped again, and nothing in the way: the guard finishes the swap.
    crash_at("restore-after-first-unit");
    let a = guard("api", None).success();
    assert!(crate::common::stdout(&a).contains("completed"));
    assert_eq!(w.state(), restored);
    resume_then_up();

    // A failed swap whose undoing failed: the guard finishes undoing it.
    w.reset();
    let a = w
        .env
        .cmd()
        .args(restore)
        .env("STEWARD_FAIL_AT", "restore-forward@2,restore-backward")
        .assert()
        .code(2);
    assert!(
        crate::common::stderr(&a).contains("api left stopped"),
        "{}",
        crate::common::stderr(&a)
    );
    assert!(!w.alive());
    let a = guard("api", None).success();
    assert!(crate::common::stdout(&a).contains("rolled back"));
    assert_eq!(w.state(), before);
    resume_then_up();

    // Settled (only the services were left): the start goes on, data as backed up, also
    // while a restore holds the lock (the one starting its services at its end).
    crash_at("restore-settled");
    let mut holder = hold_restore_lock(&w);
    let a = guard("api", None).success();
    assert!(crate::common::stdout(&a).contains("has its data whole"));
    drop(holder.stdin.take());
    holder.wait().unwrap();
    guard("api", None).success();
    assert_eq!(w.state(), restored);
    resume_then_up();
}
