//! Restore end to end with real services: two child processes that keep their data files
//! open and write to them, stopped before the swap and running after; failures that roll
//! everything back; a SIGKILL mid-swap finished by --resume; hostile archives refused
//! before any byte is written; the picker and confirmation on a pseudo-terminal.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{Env, extract, stderr, stdout, wait_for};

/// A world with two `command` services (web after api) writing into `data/`, plus a
/// second set path `more/`.
struct World {
    env: Env,
    data: PathBuf,
    more: PathBuf,
    events: PathBuf,
}

impl Drop for World {
    fn drop(&mut self) {
        for name in ["api", "web"] {
            if let Ok(pid) = fs::read_to_string(self.env.root.join(format!("{name}.pid"))) {
                let _ = std::process::Command::new("kill").arg(pid.trim()).status();
            }
        }
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.more)
            .status();
    }
}

/// The test service `name`, holding `<data>/<name>.log` open and writing to it.
fn service(root: &Path, data: &Path, name: &str) -> crate::common::ServiceCommands {
    let pid = root.join(format!("{name}.pid"));
    let log = data.join(format!("{name}.log"));
    crate::common::test_service(root, name, &pid, &format!("--data {}", log.display()))
}

/// A `[[service]]` block; `stop_first` runs before the stop (e.g. a sleep, to widen the
/// quiesce window).
fn service_block(root: &Path, data: &Path, name: &str, after: &str, stop_first: &str) -> String {
    let c = service(root, data, name);
    format!(
        "[[service]]\nname = \"{name}\"\nmanager = \"command\"\nafter = [{after}]\n\
         start = \"{}\"\nstop = \"{stop_first}{}\"\nstatus = \"{}\"\n\
         stop-timeout = \"10s\"\nstart-timeout = \"10s\"\n\n",
        c.start, c.stop, c.status
    )
}

impl World {
    fn new(extra_services: &str, quiesce: &str) -> World {
        World::with_stop(extra_services, quiesce, "")
    }

    fn with_stop(extra_services: &str, quiesce: &str, stop_first: &str) -> World {
        let env = Env::new();
        let data = env.root.join("data");
        let more = env.root.join("more");
        fs::create_dir_all(data.join("static")).unwrap();
        fs::create_dir_all(&more).unwrap();
        fs::write(data.join("static/index.html"), "<h1>hello</h1>\n").unwrap();
        fs::write(more.join("settings.json"), "{\"a\": 1}\n").unwrap();
        let db = rusqlite::Connection::open(data.join("app.db")).unwrap();
        db.execute_batch("CREATE TABLE t (v); INSERT INTO t VALUES ('kept');")
            .unwrap();
        drop(db);
        let services = format!(
            "{}{}{extra_services}",
            service_block(&env.root, &data, "api", "", stop_first),
            service_block(&env.root, &data, "web", "\"api\"", stop_first),
        );
        env.write_config(&format!(
            "[[backup.set]]\nname = \"s\"\npaths = [\"{}\", \"{}\"]\nquiesce = [{quiesce}]\n\n{services}",
            data.display(),
            more.display()
        ));
        let events = env.root.join("events.log");
        let w = World {
            env,
            data,
            more,
            events,
        };
        for name in ["api", "web"] {
            w.start(name);
        }
        w
    }

    fn start(&self, name: &str) {
        let root = &self.env.root;
        let cmd = service(root, &self.data, name).start;
        let pid = root.join(format!("{name}.pid"));
        crate::common::start_service(&cmd, "the service's pid file", || pid.exists());
    }

    fn pid(&self, name: &str) -> Option<u32> {
        fs::read_to_string(self.env.root.join(format!("{name}.pid")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    fn alive(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
            && !fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
    }

    /// (time, service, event, pid) from the services' own event log.
    fn events(&self) -> Vec<(f64, String, String, u32)> {
        fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: Vec<&str> = l.split_whitespace().collect();
                (
                    v[0].parse().unwrap(),
                    v[1].into(),
                    v[2].into(),
                    v[3].parse().unwrap(),
                )
            })
            .collect()
    }

    /// `steward restore --latest --set s --yes`, expected to fail with exit 2.
    fn restore_fails(&self) -> assert_cmd::assert::Assert {
        self.env
            .cmd()
            .args(["restore", "--latest", "--set", "s", "--yes"])
            .assert()
            .code(2)
    }

    fn backup(&self) -> PathBuf {
        self.env.cmd().arg("backup").assert().success();
        self.env.archives("s").pop().unwrap()
    }
}

/// Every file under `root` (relative path -> bytes), symlinks as their target.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut m = BTreeMap::new();
    for e in walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
    {
        let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
        if e.file_type().is_symlink() {
            m.insert(
                rel,
                fs::read_link(e.path())
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes(),
            );
        } else if e.file_type().is_file() {
            m.insert(rel, fs::read(e.path()).unwrap());
        } else {
            m.insert(rel, b"<dir>".to_vec());
        }
    }
    m
}

/// The backup's content of `live`, extracted with plain tar.
fn from_backup(env: &Env, archive: &Path, live: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let out = env.root.join(format!(
        "expected-{}",
        live.file_name().unwrap().to_string_lossy()
    ));
    if !out.exists() {
        extract(archive, &out);
    }
    snapshot(&out.join(live.strip_prefix("/").unwrap()))
}

/// Compares a restored tree with the backup: equal, except that the services' logs may
/// have grown after the restore, by lines of the services' new processes only.
fn assert_restored(
    restored: &BTreeMap<PathBuf, Vec<u8>>,
    backup: &BTreeMap<PathBuf, Vec<u8>>,
    new_pids: &[u32],
) {
    assert_eq!(
        restored.keys().collect::<Vec<_>>(),
        backup.keys().collect::<Vec<_>>(),
        "restored tree has other entries than the backup"
    );
    for (path, want) in backup {
        let got = &restored[path];
        if path.to_string_lossy().ends_with(".log") {
            assert!(
                got.starts_with(want),
                "{} lost backed-up bytes",
                path.display()
            );
            let tail = String::from_utf8_lossy(&got[want.len()..]).into_owned();
            for line in tail.lines() {
                let pid: u32 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
                assert!(
                    new_pids.contains(&pid),
                    "{}: line from old pid {pid}",
                    path.display()
                );
            }
        } else {
            assert_eq!(got, want, "{} differs from the backup", path.display());
        }
    }
}

fn damage(w: &World) {
    fs::remove_dir_all(w.data.join("static")).unwrap();
    fs::write(w.data.join("app.db"), "garbage").unwrap();
    fs::write(w.more.join("settings.json"), "{broken").unwrap();
}

fn ctime(p: &Path) -> f64 {
    let m = fs::symlink_metadata(p).unwrap();
    m.ctime() as f64 + m.ctime_nsec() as f64 / 1e9
}

#[test]
fn services_are_stopped_before_the_swap_and_running_after_with_data_as_backed_up() {
    let w = World::new("", "\"api\", \"web\"");
    let (api0, web0) = (w.pid("api").unwrap(), w.pid("web").unwrap());
    let archive = w.backup();
    let want_data = from_backup(&w.env, &archive, &w.data);
    let want_more = from_backup(&w.env, &archive, &w.more);
    damage(&w);
    let a = w
        .env
        .cmd()
        .args(["restore", "--latest", "--set", "s", "--yes"])
        .assert()
        .success();
    let out = stdout(&a);
    assert!(
        out.contains("services stopped and started: web, api"),
        "{out}"
    );
    let swapped_at = ctime(&w.data);
    let (api1, web1) = (w.pid("api").unwrap(), w.pid("web").unwrap());
    assert!(api1 != api0 && web1 != web0, "services were not restarted");
    assert!(
        !World::alive(api0) && !World::alive(web0),
        "old processes still run"
    );
    assert!(
        World::alive(api1) && World::alive(web1),
        "services are not running after"
    );
    let ev = w.events();
    let at = |name: &str, what: &str, pid: u32| {
        ev.iter()
            .find(|e| e.1 == name && e.2 == what && e.3 == pid)
            .unwrap_or_else(|| panic!("no {what} event for {name} {pid}: {ev:?}"))
            .0
    };
    // web stops first (reverse order), both before the swap; api starts first, after it.
    assert!(at("web", "stopping", web0) < at("api", "stopping", api0));
    assert!(at("api", "stopping", api0) < swapped_at);
    assert!(swapped_at < at("api", "started", api1));
    assert!(at("api", "started", api1) < at("web", "started", web1));
    assert_restored(&snapshot(&w.data), &want_data, &[api1, web1]);
    assert_restored(&snapshot(&w.more), &want_more, &[]);
    // The replaced data is kept, and no longer written to by the old processes.
    let kept: Vec<PathBuf> = fs::read_dir(&w.env.root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("data.steward-rollback-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(fs::read(kept[0].join("app.db")).unwrap(), b"garbage");
    w.env
        .cmd()
        .args(["restore", "--cleanup", "--yes"])
        .assert()
        .success();
    assert!(!kept[0].exists());
}

#[test]
fn a_target_that_cannot_be_replaced_rolls_everything_back() {
    let w = World::new("", "\"api\", \"web\"");
    w.backup();
    damage(&w);
    let (api0, web0) = (w.pid("api").unwrap(), w.pid("web").unwrap());
    let before_data = snapshot(&w.data);
    let before_more = snapshot(&w.more);
    // Root can rename anything, but not an immutable folder: the second unit fails after
    // the first was swapped.
    assert!(
        std::process::Command::new("chattr")
            .arg("+i")
            .arg(&w.more)
            .status()
            .unwrap()
            .success()
    );
    let a = w.restore_fails();
    let err = stderr(&a);
    assert!(
        err.contains("rolled back") && err.contains(&w.more.display().to_string()),
        "{err}"
    );
    std::process::Command::new("chattr")
        .arg("-i")
        .arg(&w.more)
        .status()
        .unwrap();
    let (api, web) = (w.pid("api").unwrap(), w.pid("web").unwrap());
    assert!(
        World::alive(api) && World::alive(web),
        "services not running after the failure"
    );
    // The old processes wrote on until they were stopped, the new ones since.
    assert_restored(&snapshot(&w.data), &before_data, &[api0, web0, api, web]);
    assert_eq!(snapshot(&w.more), before_more);
    let leftovers: Vec<_> = fs::read_dir(&w.env.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("steward-staging") || n.contains("steward-rollback"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_corrupt_archive_is_refused_before_anything_stops_or_changes() {
    let w = World::new("", "\"api\", \"web\"");
    let archive = w.backup();
    damage(&w);
    let mut bytes = fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    fs::write(&archive, bytes).unwrap();
    let before = snapshot(&w.data);
    let a = w.restore_fails();
    assert!(
        stderr(&a).contains(&archive.display().to_string()),
        "{}",
        stderr(&a)
    );
    assert!(
        !w.events().iter().any(|e| e.2 == "stopping"),
        "a service was stopped"
    );
    let (api, web) = (w.pid("api").unwrap(), w.pid("web").unwrap());
    assert_restored(&snapshot(&w.data), &before, &[api, web]);
}

#[test]
fn a_service_that_will_not_stop_aborts_and_restarts_the_others() {
    let stubborn = "[[service]]\nname = \"stubborn\"\nmanager = \"command\"\n\
                    start = \"true\"\nstop = \"true\"\nstatus = \"true\"\nstop-timeout = \"1s\"\n\n";
    let w = World::new(stubborn, "\"api\", \"web\", \"stubborn\"");
    w.backup();
    damage(&w);
    let before = snapshot(&w.data);
    let (api0, web0) = (w.pid("api").unwrap(), w.pid("web").unwrap());
    let a = w.restore_fails();
    assert!(
        stderr(&a).contains("stubborn did not stop"),
        "{}",
        stderr(&a)
    );
    let (api1, web1) = (w.pid("api").unwrap(), w.pid("web").unwrap());
    assert!(
        World::alive(api1) && World::alive(web1),
        "services were left down"
    );
    // Stop order: stubborn is last in start order, so it is asked first; nothing else was
    // stopped, or what was stopped is back.
    let _ = (api0, web0);
    assert_restored(&snapshot(&w.data), &before, &[api0, web0, api1, web1]);
}

#[test]
fn sigkill_during_the_swap_then_resume_leaves_data_wholly_new() {
    let w = World::new("", "\"api\", \"web\"");
    let archive = w.backup();
    let want_data = from_backup(&w.env, &archive, &w.data);
    let want_more = from_backup(&w.env, &archive, &w.more);
    damage(&w);
    w.env
        .cmd()
        .args(["restore", "--latest", "--set", "s", "--yes"])
        .env("STEWARD_CRASH_AT", "restore-after-first-unit")
        .assert()
        .failure();
    // Mid-swap: the next command says so.
    let a = w.env.cmd().args(["backups", "list"]).assert().success();
    assert!(stderr(&a).contains("restore --resume"), "{}", stderr(&a));
    let a = w.restore_fails();
    assert!(stderr(&a).contains("--resume"), "{}", stderr(&a));
    let a = w.env.cmd().args(["restore", "--resume"]).assert().success();
    assert!(stdout(&a).contains("completed"), "{}", stdout(&a));
    let (api, web) = (w.pid("api").unwrap(), w.pid("web").unwrap());
    assert!(World::alive(api) && World::alive(web));
    assert_restored(&snapshot(&w.data), &want_data, &[api, web]);
    assert_restored(&snapshot(&w.more), &want_more, &[]);
    let a = w.env.cmd().args(["restore", "--resume"]).assert().success();
    assert!(stdout(&a).contains("no interrupted restore"));
}

#[test]
fn restore_to_another_folder_and_a_partial_restore() {
    let w = World::new("", "\"api\", \"web\"");
    let archive = w.backup();
    let want = from_backup(&w.env, &archive, &w.data);
    let elsewhere = w.env.root.join("elsewhere");
    w.env
        .cmd()
        .args(["restore", "--latest", "--set", "s", "--yes", "--to"])
        .arg(&elsewhere)
        .assert()
        .success();
    let copy = snapshot(&elsewhere.join(w.data.strip_prefix("/").unwrap()));
    assert_eq!(copy, want);
    assert!(
        !w.events().iter().any(|e| e.2 == "stopping"),
        "--to stopped a service"
    );
    // --to never overwrites.
    let a = w
        .env
        .cmd()
        .args(["restore", "--latest", "--set", "s", "--yes", "--to"])
        .arg(&elsewhere)
        .assert()
        .code(2);
    assert!(stderr(&a).contains("never overwrites"), "{}", stderr(&a));
    // Only the static folder, in place: the database stays as damaged.
    damage(&w);
    let pattern = format!("{}/static/**", w.data.display());
    w.env
        .cmd()
        .args([
            "restore",
            "--latest",
            "--set",
            "s",
            "--yes",
            "--no-quiesce",
            "--path",
            &pattern,
        ])
        .assert()
        .success();
    assert_eq!(
        fs::read(w.data.join("static/index.html")).unwrap(),
        b"<h1>hello</h1>\n"
    );
    assert_eq!(fs::read(w.data.join("app.db")).unwrap(), b"garbage");
}

#[test]
fn without_a_terminal_or_yes_nothing_happens() {
    let w = World::new("", "\"api\", \"web\"");
    w.backup();
    damage(&w);
    let a = w
        .env
        .cmd()
        .args(["restore", "--latest", "--set", "s"])
        .assert()
        .code(2);
    assert!(stderr(&a).contains("pass --yes"), "{}", stderr(&a));
    let a = w.env.cmd().arg("restore").assert().code(2);
    assert!(
        stderr(&a).contains("picker needs a terminal"),
        "{}",
        stderr(&a)
    );
    assert_eq!(fs::read(w.data.join("app.db")).unwrap(), b"garbage");
    // --dry-run prints the plan and changes nothing.
    let a = w
        .env
        .cmd()
        .args(["restore", "--latest", "--set", "s", "--dry-run"])
        .assert()
        .success();
    assert!(
        stdout(&a).contains("services stopped first, started after: api, web"),
        "{}",
        stdout(&a)
    );
    assert_eq!(fs::read(w.data.join("app.db")).unwrap(), b"garbage");
}

/// A set `s` over `data/` holding `f` = "v1", backed up once.
fn one_file_backed_up() -> (Env, PathBuf) {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("f"), "v1").unwrap();
    env.one_set("s", &[&data], "");
    env.cmd().arg("backup").assert().success();
    (env, data)
}

#[test]
fn picker_and_confirmation_on_a_pseudo_terminal() {
    let (env, data) = one_file_backed_up();
    fs::write(data.join("f"), "v2").unwrap();
    env.cmd().arg("backup").assert().success();
    fs::write(data.join("f"), "damaged").unwrap();
    let ids: Vec<String> = env
        .archives("s")
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches(".tar.zst")
                .to_string()
        })
        .collect();
    // A wrong set name: nothing happens.
    let mut p =
        rexpect::session::spawn_command(env.std_cmd_with(&["restore"]), Some(30_000)).unwrap();
    p.exp_string("Restore which backup?").unwrap();
    p.send_line("2").unwrap();
    p.exp_string(&format!("Restore {}", ids[0])).unwrap();
    p.exp_string("Type the set name (s) to restore in place:")
        .unwrap();
    p.send_line("nope").unwrap();
    p.exp_string("not confirmed").unwrap();
    p.exp_eof().unwrap();
    assert_eq!(fs::read(data.join("f")).unwrap(), b"damaged");
    // The older backup, picked by number and confirmed by name.
    let mut p =
        rexpect::session::spawn_command(env.std_cmd_with(&["restore"]), Some(30_000)).unwrap();
    p.exp_string("1) s").unwrap();
    p.exp_string("Restore which backup?").unwrap();
    p.send_line("2").unwrap();
    p.exp_string("Type the set name (s) to restore in place:")
        .unwrap();
    p.send_line("s").unwrap();
    p.exp_string(&format!("restored {}", ids[0])).unwrap();
    p.exp_eof().unwrap();
    assert_eq!(fs::read(data.join("f")).unwrap(), b"v1");
}

#[test]
fn quiesce_on_backup_stops_the_services_around_the_backup_and_starts_them_after() {
    let w = World::new("", "\"api\", \"web\"");
    let text = fs::read_to_string(&w.env.config)
        .unwrap()
        .replace("quiesce = [", "quiesce-on-backup = true\nquiesce = [");
    fs::write(&w.env.config, text).unwrap();
    let (api0, web0) = (w.pid("api").unwrap(), w.pid("web").unwrap());
    let archive = w.backup();
    let (api1, web1) = (w.pid("api").unwrap(), w.pid("web").unwrap());
    assert!(
        api1 != api0 && web1 != web0,
        "services were not stopped around the backup"
    );
    assert!(World::alive(api1) && World::alive(web1));
    // Stopped before the archive was written, started after it was published.
    let written = fs::metadata(&archive).unwrap().modified().unwrap();
    let written = written
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let ev = w.events();
    let stop = ev
        .iter()
        .find(|e| e.2 == "stopping" && e.3 == api0)
        .unwrap()
        .0;
    let start = ev
        .iter()
        .find(|e| e.2 == "started" && e.3 == api1)
        .unwrap()
        .0;
    assert!(
        stop < written && written < start,
        "{stop} < {written} < {start}"
    );
    // At rest, the logs in the archive end with a complete line from the old processes.
    let want = from_backup(&w.env, &archive, &w.data);
    let log = String::from_utf8(want[Path::new("api.log")].clone()).unwrap();
    assert!(log.ends_with('\n'));
    assert!(log.lines().all(|l| l.contains(&format!(" {api0} "))));
}

#[test]
fn ctrl_c_during_staging_changes_nothing() {
    let w = World::new("", "\"api\", \"web\"");
    // Big enough that staging takes a moment to interrupt.
    fs::write(w.more.join("big.bin"), vec![7u8; 100 << 20]).unwrap();
    w.backup();
    damage(&w);
    let before = snapshot(&w.more);
    let child = w
        .env
        .std_cmd_with(&["restore", "--latest", "--set", "s", "--yes"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let staging_started = || {
        fs::read_dir(&w.env.root).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .contains("steward-staging")
        })
    };
    wait_for("staging to begin", Duration::from_mins(1), staging_started);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"));
    assert_eq!(snapshot(&w.more), before);
    assert!(!staging_started(), "staging left behind");
    let (api, web) = (w.pid("api").unwrap(), w.pid("web").unwrap());
    assert!(World::alive(api) && World::alive(web));
}

#[test]
fn a_stale_wal_is_not_applied_to_the_restored_database() {
    let env = Env::new();
    let db = env.root.join("app.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE t (v);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
         INSERT INTO t SELECT i FROM n;",
    )
    .unwrap();
    drop(c);
    env.one_set("db", &[&db], "");
    env.cmd().arg("backup").assert().success();
    // A writer adds 500 rows and is killed: its -wal stays beside the database.
    let script = "import sqlite3, sys, time\n\
                  c = sqlite3.connect(sys.argv[1])\n\
                  c.execute('pragma wal_autocheckpoint=0')\n\
                  c.executemany('insert into t values (?)', [(i,) for i in range(500)])\n\
                  c.commit()\n\
                  print('committed', flush=True)\n\
                  time.sleep(600)\n";
    let mut writer = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&db)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let line = crate::common::first_line(&mut writer);
    assert_eq!(line.trim(), "committed");
    writer.kill().unwrap();
    writer.wait().unwrap();
    let wal = env.root.join("app.db-wal");
    assert!(wal.metadata().unwrap().len() > 0, "the writer left no -wal");
    fs::write(&db, vec![0x5a; 8192]).unwrap();
    let a = env
        .cmd()
        .args(["restore", "--latest", "--set", "db", "--yes"])
        .assert()
        .success();
    assert!(stdout(&a).contains("SQLite checked: 1"), "{}", stdout(&a));
    assert!(!wal.exists(), "the stale -wal is still beside the database");
    let c = rusqlite::Connection::open(&db).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        n, 1000,
        "the stale WAL was applied to the restored database"
    );
    drop(c);
    // The replaced database went aside together with its side files.
    let kept: Vec<String> = crate::common::dir_names(&env.root)
        .into_iter()
        .filter(|n| n.contains("steward-rollback"))
        .collect();
    assert!(
        kept.iter().any(|n| n.ends_with("-wal"))
            && kept.iter().any(|n| !n.contains('-') || n.ends_with('Z')),
        "{kept:?}"
    );
    env.cmd()
        .args(["restore", "--cleanup", "--yes"])
        .assert()
        .success();
    let left: Vec<String> = crate::common::dir_names(&env.root)
        .into_iter()
        .filter(|n| n.contains("steward-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A set path's files without the services' logs (appended to at any moment).
fn without_logs(m: BTreeMap<PathBuf, Vec<u8>>) -> BTreeMap<PathBuf, Vec<u8>> {
    m.into_iter()
        .filter(|(p, _)| !p.to_string_lossy().ends_with(".log"))
        .collect()
}

#[test]
fn a_stop_command_in_flight_dies_with_a_killed_steward_and_never_stops_a_resumed_service() {
    // The stop writes its shell's PID, then waits before it kills: a steward killed in
    // that wait must take the shell with it, or its `kill` would land after the resume
    // found the service running (a flake of the kill campaign on a loaded host).
    let w = World::new("", "\"api\", \"web\"");
    w.backup();
    // Slow stops only for the restore (the backup quiesces the same services).
    let text = fs::read_to_string(&w.env.config).unwrap();
    fs::write(
        &w.env.config,
        text.replace("stop = \"", "stop = \"echo $$ > stop-sh.pid; sleep 30; "),
    )
    .unwrap();
    damage(&w);
    let sh_pid = w.env.root.join("stop-sh.pid");
    let mut child = w
        .env
        .std_cmd_with(&["restore", "--latest", "--set", "s", "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let read_pid = || {
        fs::read_to_string(&sh_pid)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
    };
    crate::common::wait_for("the stop command to begin", Duration::from_secs(30), || {
        read_pid().is_some()
    });
    let sh = read_pid().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    crate::common::wait_for(
        "the stop command's shell to die with steward",
        Duration::from_secs(10),
        || !World::alive(sh),
    );
    let a = w.env.cmd().args(["restore", "--resume"]).assert().success();
    assert!(stdout(&a).contains("rolled back"), "{}", stdout(&a));
    for name in ["api", "web"] {
        let pid = w
            .pid(name)
            .unwrap_or_else(|| panic!("{name} has no pid file"));
        assert!(World::alive(pid), "{name} is down after the resume");
    }
    let stops: Vec<_> = w
        .events()
        .into_iter()
        .filter(|e| e.2 == "stopping")
        .collect();
    assert!(stops.is_empty(), "a service was stopped: {stops:?}");
}

#[test]
fn sigkill_at_any_moment_then_following_steward_ends_with_the_backup_and_services_up() {
    // A slow stop makes the window in which services are going down wide.
    let w = World::with_stop("", "\"api\", \"web\"", "sleep 0.3; ");
    let archive = w.backup();
    let want_data = from_backup(&w.env, &archive, &w.data);
    let want_more = from_backup(&w.env, &archive, &w.more);
    let (new_data, new_more) = (
        without_logs(want_data.clone()),
        without_logs(want_more.clone()),
    );
    let restore = ["restore", "--latest", "--set", "s", "--yes"];
    let services_up = |when: &str| {
        let (api, web) = (w.pid("api"), w.pid("web"));
        // The services' own last events say who stopped them, when.
        let recent: Vec<_> = w.events().into_iter().rev().take(12).collect();
        assert!(
            api.is_some_and(World::alive) && web.is_some_and(World::alive),
            "{when}: exit 0 while a service is down (api {api:?}, web {web:?}); \
             newest events first: {recent:?}"
        );
    };
    // A normal run, timed, to spread the kills over it.
    damage(&w);
    let t0 = std::time::Instant::now();
    w.env.cmd().args(restore).assert().success();
    let normal = t0.elapsed();
    w.env
        .cmd()
        .args(["restore", "--cleanup", "--yes"])
        .assert()
        .success();
    let mut outcomes: BTreeMap<&str, u32> = BTreeMap::new();
    // SIGKILL at 16 moments spread over a normal run, then an abort at each step boundary
    // (debug builds' crash points), so the boundaries are hit whatever the timing.
    let kills = 16u32;
    let points = [
        "restore-journal-written",
        "restore-staging-created",
        "restore-staged",
        "restore-service-recorded",
        "restore-services-stopped",
        "restore-unit-exchanged",
        "restore-after-first-unit",
        "restore-settled",
    ];
    let moments: Vec<(Option<Duration>, Option<&str>)> = (1..=kills)
        .map(|k| (Some(normal * k / (kills + 1)), None))
        .chain(points.iter().map(|p| (None, Some(*p))))
        .collect();
    for (k, (after, point)) in moments.into_iter().enumerate() {
        damage(&w);
        let old_data = without_logs(snapshot(&w.data));
        let old_more = without_logs(snapshot(&w.more));
        let mut cmd = w.env.std_cmd_with(&restore);
        if let Some(p) = point {
            cmd.env("STEWARD_CRASH_AT", p);
        }
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        if let Some(after) = after {
            // Fault injection at a chosen moment, not synchronisation.
            std::thread::sleep(after);
            child.kill().unwrap();
        }
        let status = child.wait().unwrap();
        // A timed kill may come after a fast run ended; an abort always interrupts.
        assert!(
            after.is_some() || !status.success(),
            "{point:?} did not interrupt the restore"
        );
        let at = match (after, point) {
            (Some(t), _) => format!("SIGKILL {} at {t:?}", k + 1),
            (_, p) => format!("abort at {}", p.unwrap_or_default()),
        };
        for (path, old, new) in [
            (&w.data, &old_data, &new_data),
            (&w.more, &old_more, &new_more),
        ] {
            let now = without_logs(snapshot(path));
            assert!(
                now == *old || now == *new,
                "{at}: {} is neither wholly old nor wholly new",
                path.display()
            );
        }
        // Follow what steward says.
        let a = w.env.cmd().args(["backups", "list"]).assert().success();
        let said = stderr(&a);
        let step = if said.contains("restore --resume") {
            let a = w.env.cmd().args(["restore", "--resume"]).assert().success();
            services_up(&at);
            let out = stdout(&a);
            if out.contains("rolled back") {
                w.env.cmd().args(restore).assert().success();
                services_up(&at);
                "resumed: rolled back, then re-run"
            } else {
                assert!(out.contains("completed"), "{at}: {out}");
                "resumed: completed"
            }
        } else if without_logs(snapshot(&w.data)) != new_data
            || without_logs(snapshot(&w.more)) != new_more
        {
            w.env.cmd().args(restore).assert().success();
            services_up(&at);
            "no journal yet: re-run"
        } else {
            "finished before the kill"
        };
        eprintln!("{at}: {step}");
        *outcomes.entry(step).or_default() += 1;
        w.env
            .cmd()
            .args(["restore", "--cleanup", "--yes"])
            .assert()
            .success();
        let (api, web) = (w.pid("api").unwrap(), w.pid("web").unwrap());
        assert!(
            World::alive(api) && World::alive(web),
            "{at}: services down"
        );
        assert_restored(&snapshot(&w.data), &want_data, &[api, web]);
        assert_restored(&snapshot(&w.more), &want_more, &[]);
        let left: Vec<String> = crate::common::dir_names(&w.env.root)
            .into_iter()
            .filter(|n| n.contains("steward-staging") || n.contains("steward-rollback"))
            .collect();
        assert!(left.is_empty(), "{at}: left {left:?}");
    }
    eprintln!(
        "kill campaign: a normal restore took {normal:?}; after {kills} kills and {} aborts: \
         {outcomes:?}",
        points.len()
    );
    assert!(
        outcomes.keys().any(|k| k.starts_with("resumed")),
        "no kill landed while the journal was open: {outcomes:?}"
    );
    assert!(
        outcomes.contains_key("resumed: completed")
            && outcomes.contains_key("resumed: rolled back, then re-run"),
        "{outcomes:?}"
    );
}

#[test]
fn a_restore_rerun_within_the_same_second_does_not_collide_on_its_names() {
    let (env, data) = one_file_backed_up();
    // The same clock second for both runs.
    for _ in 0..2 {
        fs::write(data.join("f"), "damaged").unwrap();
        env.cmd()
            .args(["restore", "--latest", "--set", "s", "--yes"])
            .env("STEWARD_NOW", "1800000000")
            .assert()
            .success();
        assert_eq!(fs::read(data.join("f")).unwrap(), b"v1");
    }
    let kept: Vec<String> = crate::common::dir_names(&env.root)
        .into_iter()
        .filter(|n| n.contains("steward-rollback"))
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
}

#[test]
fn an_abandoned_staging_folder_is_reported_and_removed_by_cleanup() {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    env.one_set("s", &[&data], "");
    // What a killed restore of an older version left: no journal owns it.
    let staging = env.root.join(".data.steward-staging-20261101T000000Z");
    fs::create_dir_all(staging.join("data")).unwrap();
    fs::write(staging.join("data/big"), vec![1u8; 4096]).unwrap();
    let a = env.cmd().args(["backups", "list"]).assert().success();
    assert!(
        stderr(&a).contains(&staging.display().to_string())
            && stderr(&a).contains("restore --cleanup"),
        "{}",
        stderr(&a)
    );
    let a = env.cmd().args(["restore", "--resume"]).assert().success();
    assert!(
        stdout(&a).contains(&staging.display().to_string()),
        "{}",
        stdout(&a)
    );
    let a = env
        .cmd()
        .args(["restore", "--cleanup", "--yes"])
        .assert()
        .success();
    assert!(stdout(&a).contains("removed"), "{}", stdout(&a));
    assert!(!staging.exists());
    let a = env.cmd().args(["backups", "list"]).assert().success();
    assert!(!stderr(&a).contains("staging"), "{}", stderr(&a));
}

/// Regression: a relative `restore --path 'static/**'` matched nothing and exited 0 with
/// "0 files".
#[test]
fn regression_a_relative_path_pattern_is_taken_below_the_set_paths() {
    let w = World::new("", "");
    w.backup();
    damage(&w);
    let a = w
        .env
        .cmd()
        .args([
            "restore",
            "--latest",
            "--set",
            "s",
            "--yes",
            "--path",
            "static/**",
        ])
        .assert()
        .success();
    assert!(stdout(&a).contains("restored"), "{}", stdout(&a));
    assert_eq!(
        fs::read(w.data.join("static/index.html")).unwrap(),
        b"<h1>hello</h1>\n"
    );
    assert_eq!(fs::read(w.data.join("app.db")).unwrap(), b"garbage");
    // A pattern that matches nothing is an error, and nothing changes.
    let a = w
        .env
        .cmd()
        .args([
            "restore", "--latest", "--set", "s", "--yes", "--path", "nope/**",
        ])
        .assert()
        .code(2);
    assert!(stderr(&a).contains("matches nothing"), "{}", stderr(&a));
    assert_eq!(fs::read(w.data.join("app.db")).unwrap(), b"garbage");
}

/// Regression (issue 23): `restore ID --to DIR --path FILE` on a folder set failed with
/// `No such file or directory` (the entry's parent folder exists nowhere under DIR) and
/// left a journal every later restore stumbled on; the same in place when the set's
/// folder itself is gone.
#[test]
fn regression_path_filter_into_a_new_folder_or_a_missing_set_folder() {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(data.join("sub")).unwrap();
    fs::write(data.join("a.txt"), "a").unwrap();
    fs::write(data.join("sub/b.txt"), "b").unwrap();
    env.one_set("d", &[&data], "");
    env.cmd().arg("backup").assert().success();
    let id = env.archives("d")[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_end_matches(".tar.zst")
        .to_string();
    let wanted = data.join("sub/b.txt").display().to_string();
    let to = env.root.join("look");
    env.cmd()
        .args(["restore", &id, "--yes", "--path", &wanted, "--to"])
        .arg(&to)
        .assert()
        .success();
    let back = to.join(data.strip_prefix("/").unwrap());
    assert_eq!(fs::read(back.join("sub/b.txt")).unwrap(), b"b");
    assert!(!back.join("a.txt").exists());
    let a = env.cmd().args(["restore", "--resume"]).assert().success();
    assert!(
        stdout(&a).contains("no interrupted restore"),
        "{}",
        stdout(&a)
    );
    // In place, the set's folder gone: the matching entry comes back, with its folders.
    fs::remove_dir_all(&data).unwrap();
    env.cmd()
        .args(["restore", &id, "--yes", "--path", &wanted])
        .assert()
        .success();
    assert_eq!(fs::read(data.join("sub/b.txt")).unwrap(), b"b");
    assert!(!data.join("a.txt").exists());
}

/// Regression (issue 23): a service the set names that was already stopped when the
/// restore began stayed stopped, and the result said only "services stopped and started:
/// none". The plan and the last lines name it with the command that starts it;
/// `--start-stopped` starts it too.
#[test]
fn regression_services_that_were_down_are_named_and_can_be_started() {
    let w = World::new("", "\"api\", \"web\"");
    w.backup();
    let stop = service(&w.env.root, &w.data, "web").stop;
    assert!(
        std::process::Command::new("sh")
            .args(["-c", &stop])
            .status()
            .unwrap()
            .success()
    );
    wait_for("web to stop", Duration::from_secs(10), || {
        w.pid("web").is_none_or(|p| !World::alive(p))
    });
    let a = w
        .env
        .cmd()
        .args(["restore", "--latest", "--set", "s", "--dry-run"])
        .assert()
        .success();
    assert!(
        stdout(&a).contains("not running now, and left stopped after: web"),
        "{}",
        stdout(&a)
    );
    let a = w
        .env
        .cmd()
        .args(["restore", "--latest", "--set", "s", "--yes"])
        .assert()
        .success();
    let out = stdout(&a);
    let last: Vec<&str> = out.lines().rev().take(2).collect();
    let start = service(&w.env.root, &w.data, "web").start;
    assert_eq!(last[0], format!("  start web: {start}"), "{out}");
    assert!(
        last[1].starts_with("still down") && last[1].contains("web"),
        "{out}"
    );
    assert!(
        w.pid("web").is_none_or(|p| !World::alive(p)),
        "web was started"
    );
    // Asked to, it starts them after the restore.
    let a = w
        .env
        .cmd()
        .args([
            "restore",
            "--latest",
            "--set",
            "s",
            "--yes",
            "--start-stopped",
        ])
        .assert()
        .success();
    assert!(
        stdout(&a).contains("also started (they were not running before): web"),
        "{}",
        stdout(&a)
    );
    assert!(!stdout(&a).contains("still down"), "{}", stdout(&a));
    assert!(w.pid("web").is_some_and(World::alive));
}
