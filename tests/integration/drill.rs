//! Restore drills: the newest good backup restored into a scratch folder and proven there,
//! with the live tree byte-identical and no service stopped before and after every drill;
//! a database that fails `integrity_check`, row counts that disagree and a failing
//! `drill-command` each fail the drill (and alert); the scratch folder never outlives a
//! drill, killed or not; and a drill from the test S3 server.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{Env, wait_for};
use crate::mail::{Smtp, free_port, test_ca};

fn stdout(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).into_owned()
}

fn stderr(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

/// Every entry under `root` with its bytes (folders as `/`, links by target) and mode.
fn hashed(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut m = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        let meta = e.path().symlink_metadata().unwrap();
        let v = if meta.file_type().is_symlink() {
            fs::read_link(e.path())
                .unwrap()
                .as_os_str()
                .as_encoded_bytes()
                .to_vec()
        } else if meta.is_dir() {
            b"/".to_vec()
        } else {
            fs::read(e.path()).unwrap()
        };
        m.insert(
            e.path().strip_prefix(root).unwrap().to_path_buf(),
            (v, meta.permissions().mode()),
        );
    }
    m
}

/// A world: `data/` with a database, a file, a symlink and a folder; a `command` service
/// `app` that uses the set (quiesced around a restore) and leaves a mark when stopped.
struct World {
    env: Env,
    data: PathBuf,
    scratch: PathBuf,
}

impl World {
    fn new(set_extra: &str, extra: &str) -> World {
        let env = Env::new();
        let data = env.root.join("data");
        fs::create_dir_all(data.join("docs")).unwrap();
        fs::write(data.join("docs/readme.txt"), "hello\n").unwrap();
        crate::common::random_file(&data.join("model.bin"), 1 << 20, 3);
        std::os::unix::fs::symlink("docs/readme.txt", data.join("link")).unwrap();
        let db = rusqlite::Connection::open(data.join("app.db")).unwrap();
        db.execute_batch(
            "CREATE TABLE t (a, b); CREATE INDEX ti ON t (a);
             CREATE TABLE u (x); INSERT INTO u VALUES (1), (2);",
        )
        .unwrap();
        for i in 0..300 {
            db.execute("INSERT INTO t VALUES (?1, ?2)", (i, -i))
                .unwrap();
        }
        drop(db);
        let scratch = env.root.join("scratch");
        fs::write(env.root.join("running"), "").unwrap();
        let w = World { env, data, scratch };
        w.config(set_extra, extra);
        w
    }

    fn config(&self, set_extra: &str, extra: &str) {
        let (marks, running) = (self.env.root.join("marks"), self.env.root.join("running"));
        self.env.write_config(&format!(
            "[[backup.set]]\nname = \"s\"\npaths = [\"{data}\"]\nquiesce = [\"app\"]\n{set_extra}\n\n\
             [[service]]\nname = \"app\"\nmanager = \"command\"\n\
             start = \"touch {running}; echo start >> {marks}\"\n\
             stop = \"rm -f {running}; echo stop >> {marks}\"\n\
             status = \"test -f {running}\"\n\n\
             [drill]\nscratch = \"{scratch}\"\n\n{extra}",
            data = self.data.display(),
            running = running.display(),
            marks = marks.display(),
            scratch = self.scratch.display(),
        ));
    }

    /// The ID of the newest archive of set `s` on the disk.
    fn newest_id(&self) -> String {
        let newest = self.env.archives("s").pop().unwrap();
        newest
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".tar.zst", "")
    }

    /// What the service's commands did so far.
    fn marks(&self) -> String {
        fs::read_to_string(self.env.root.join("marks")).unwrap_or_default()
    }

    /// `steward drill --json`, with the live tree and the service checked untouched.
    fn drill(&self, args: &[&str], code: i32) -> serde_json::Value {
        let before = hashed(&self.data);
        let marks = self.marks();
        let a = self
            .env
            .cmd()
            .arg("drill")
            .args(args)
            .arg("--json")
            .assert()
            .code(code);
        assert_eq!(hashed(&self.data), before, "a drill changed the live tree");
        assert_eq!(self.marks(), marks, "a drill touched a service");
        assert!(
            self.env.root.join("running").exists(),
            "the service was stopped"
        );
        assert_eq!(
            crate::common::dir_names(&self.scratch),
            Vec::<String>::new(),
            "the drill's folder outlived it"
        );
        serde_json::from_str(&stdout(&a))
            .unwrap_or_else(|e| panic!("{e}: {} {}", stdout(&a), stderr(&a)))
    }
}

#[test]
fn a_drill_of_a_differential_passes_records_its_timings_and_leaves_live_data_and_services_alone() {
    let w = World::new("", "[schedule]\ndrill = \"0 5 * * 0\"\n");
    w.env.cmd().arg("backup").assert().success();
    fs::write(w.data.join("docs/new.txt"), "new\n").unwrap();
    let a = w.env.cmd().arg("backup").assert().success();
    assert!(stdout(&a).contains("differential on"), "{}", stdout(&a));
    let id = w.newest_id();

    let v = w.drill(&[], 0);
    let d = &v["drills"][0];
    assert_eq!(d["ok"], true, "{v:#}");
    assert_eq!(
        d["backup_id"],
        id.as_str(),
        "the newest good backup is drilled"
    );
    assert_eq!(d["source"], "local");
    assert_eq!(d["files"], 4, "{v:#}");
    assert!(d["phases"]["write_ms"].as_u64().is_some(), "{v:#}");
    let findings = d["findings"].to_string();
    assert!(
        findings.contains(&format!(
            "{}/app.db: PRAGMA integrity_check ok; rows of 2 tables as recorded",
            w.data.display()
        )),
        "{findings}"
    );

    // The catalog keeps it; status, check and the metrics say so.
    let conn = rusqlite::Connection::open(w.env.state.join("state.db")).unwrap();
    let (n, ok, verify): (i64, bool, i64) = conn
        .query_row(
            "SELECT count(*), max(ok), max(verify_ms) FROM drills WHERE set_name = 's'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((n, ok), (1, true));
    assert!(verify >= 0);
    let a = w.env.cmd().arg("status").assert().success();
    assert!(
        stdout(&a).contains("  proven restorable ") && stdout(&a).contains(" for 1.0 MiB"),
        "{}",
        stdout(&a)
    );
    let a = w.env.cmd().args(["check", "--json"]).assert();
    assert!(
        stdout(&a).contains("proven restorable"),
        "the drill s check: {}",
        stdout(&a)
    );
    let report = w.env.cmd().arg("report").assert().success();
    assert!(
        stdout(&report).contains("Restore drills (when did we last prove it):"),
        "{}",
        stdout(&report)
    );

    // A real restore measures the services' side; the next drill estimates the incident.
    w.env
        .cmd()
        .args(["restore", "--latest", "--set", "s", "--yes"])
        .assert()
        .success();
    assert_eq!(
        w.marks(),
        "stop\nstart\n",
        "the real restore quiesced the service"
    );
    let v = w.drill(&["s"], 0);
    assert!(v["incident_ms"]["s"].as_u64().is_some(), "{v:#}");
    let text = w.env.cmd().arg("drill").assert().success();
    assert!(
        stdout(&text).contains("s: a whole incident would take about"),
        "{}",
        stdout(&text)
    );
}

/// A database whose index disagrees with its table: `quick_check` passes it (so the backup
/// is verified), `integrity_check` does not.
fn break_index(db: &Path) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch(
        "PRAGMA writable_schema = ON;
         UPDATE sqlite_schema SET sql = 'CREATE INDEX ti ON t (b)' WHERE name = 'ti';",
    )
    .unwrap();
    drop(c);
    let c = rusqlite::Connection::open(db).unwrap();
    let quick: String = c.query_row("PRAGMA quick_check", [], |r| r.get(0)).unwrap();
    let full: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(quick, "ok");
    assert_ne!(full, "ok", "the index still agrees");
}

#[test]
fn a_database_that_passes_quick_check_but_fails_integrity_check_fails_the_drill_naming_it() {
    let w = World::new("", "");
    break_index(&w.data.join("app.db"));
    w.env.cmd().arg("backup").assert().success();
    let v = w.drill(&[], 2);
    let d = &v["drills"][0];
    assert_eq!(d["ok"], false, "{v:#}");
    let detail = d["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("{}/app.db: SQLite check failed", w.data.display())),
        "names the set's own path: {detail}"
    );
    assert!(detail.contains("missing from index ti"), "{detail}");
    assert!(!detail.contains("steward-drill-"), "{detail}");
}

#[test]
fn row_counts_that_disagree_with_those_recorded_at_backup_time_fail_the_drill() {
    let w = World::new("", "");
    w.env
        .cmd()
        .arg("backup")
        .env("STEWARD_TEST_BACKUP_MISCOUNT_ROWS", "1")
        .assert()
        .success();
    let v = w.drill(&[], 2);
    let detail = v["drills"][0]["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains(&format!(
            "{}/app.db: rows differ from those recorded at backup time: table t has 300 rows, recorded 301",
            w.data.display()
        )),
        "{detail}"
    );
}

#[test]
fn a_failing_drill_command_fails_the_drill_mails_an_alert_and_the_next_passing_drill_mails_the_recovery()
 {
    let w = World::new("", "");
    let ca = test_ca(&w.env.root);
    let port = free_port();
    let smtp = Smtp::start(&w.env.root, port, &ca);
    let command = format!(
        "drill-command = \"echo probing $STEWARD_DRILL_SET; test -e \\\"$STEWARD_DRILL_DIR{}/ready\\\"\"",
        w.data.display()
    );
    let mail = crate::alerts::mail_config(&w.env, port);
    w.config(&command, &format!("{mail}\n{}", crate::alerts::QUIET));
    w.env.cmd().arg("backup").assert().success();
    let v = w.drill(&[], 2);
    let d = &v["drills"][0];
    assert_eq!(d["ok"], false);
    assert!(
        d["detail"]
            .as_str()
            .unwrap()
            .contains("drill-command failed"),
        "{v:#}"
    );
    assert_eq!(d["output"], "probing s\n", "its output is kept");
    let m = smtp.messages();
    assert_eq!(m.len(), 1, "{m:#?}");
    let content = m[0]["content"].as_str().unwrap();
    assert!(content.contains("CRITICAL   drill s"), "{content}");
    // The run record keeps the command's output too.
    let conn = rusqlite::Connection::open(w.env.state.join("state.db")).unwrap();
    let hooks: String = conn
        .query_row(
            "SELECT hooks FROM runs WHERE job = 'drill' AND target = 's'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(hooks.contains("probing s"), "{hooks}");
    // A check cycle sees the same problem: no second mail.
    w.env.cmd().arg("check").assert().code(2);
    assert_eq!(smtp.messages().len(), 1);

    fs::write(w.data.join("ready"), "").unwrap();
    w.env.cmd().arg("backup").assert().success();
    let v = w.drill(&[], 0);
    assert_eq!(v["drills"][0]["ok"], true, "{v:#}");
    let m = smtp.messages();
    assert_eq!(m.len(), 2, "{m:#?}");
    let content = m[1]["content"].as_str().unwrap();
    assert!(
        content.contains("RECOVERED") && content.contains("drill s"),
        "{content}"
    );
}

#[test]
fn the_scratch_folder_is_removed_on_interruption_and_swept_after_sigkill() {
    let w = World::new("", "");
    let started = w.env.root.join("started");
    let command = format!("drill-command = \"touch {}; sleep 30\"", started.display());
    w.config(&command, "");
    w.env.cmd().arg("backup").assert().success();
    let before = hashed(&w.data);

    for signal in ["TERM", "KILL"] {
        let _ = fs::remove_file(&started);
        let mut child = w.env.std_cmd().arg("drill").spawn().unwrap();
        wait_for("the drill-command", Duration::from_mins(1), || {
            started.exists()
        });
        let copy = crate::common::dir_names(&w.scratch);
        assert_eq!(copy.len(), 1, "{copy:?}");
        assert!(
            w.scratch
                .join(&copy[0])
                .join("tree")
                .join(w.data.strip_prefix("/").unwrap())
                .join("app.db")
                .is_file(),
            "the copy is in the scratch folder"
        );
        std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success());
        if signal == "TERM" {
            assert_eq!(
                crate::common::dir_names(&w.scratch),
                Vec::<String>::new(),
                "an interrupted drill removes its copy"
            );
        } else {
            assert_eq!(
                crate::common::dir_names(&w.scratch),
                copy,
                "SIGKILL leaves the copy"
            );
        }
    }
    assert_eq!(hashed(&w.data), before);
    // The next drill sweeps what the killed one left, and passes.
    w.config("", "");
    let v = w.drill(&[], 0);
    assert_eq!(v["swept"].as_array().unwrap().len(), 1, "{v:#}");
    assert_eq!(v["drills"][0]["ok"], true, "{v:#}");
}

#[test]
fn a_scratch_folder_inside_live_data_an_unknown_key_or_a_drill_that_can_only_fail_is_refused_naming_it()
 {
    let w = World::new("", "");
    let text = fs::read_to_string(&w.env.config).unwrap().replace(
        &format!("scratch = \"{}\"", w.scratch.display()),
        &format!("scratch = \"{}/tmp\"", w.data.display()),
    );
    fs::write(&w.env.config, text).unwrap();
    let a = w.env.cmd().arg("drill").assert().code(78);
    assert!(
        stderr(&a).contains("drill.scratch:") && stderr(&a).contains("of set \"s\""),
        "{}",
        stderr(&a)
    );
    w.config("", "");
    let text = fs::read_to_string(&w.env.config)
        .unwrap()
        .replace("scratch = ", "scratch-dir = ");
    fs::write(&w.env.config, text).unwrap();
    let a = w.env.cmd().arg("drill").assert().code(78);
    assert!(stderr(&a).contains("scratch-dir"), "{}", stderr(&a));
    // A monthly offsite drill that could only fail is refused when the config is read.
    w.config("", "[schedule]\ndrill-offsite = \"0 7 2 * *\"\n");
    let a = w.env.cmd().arg("check").assert().code(78);
    assert!(
        stderr(&a).contains("schedule.drill-offsite: needs an [[offsite]] target"),
        "{}",
        stderr(&a)
    );
    w.config("", "");
    let a = w.env.cmd().args(["drill", "nope"]).assert().code(2);
    assert!(stderr(&a).contains("no set \"nope\""), "{}", stderr(&a));
}

#[test]
fn a_drill_from_seaweedfs_fetches_the_differential_and_its_base_and_passes() {
    offsite_drill(crate::s3::Kind::Seaweed);
}

#[test]
fn a_drill_from_moto_fetches_the_differential_and_its_base_and_passes() {
    offsite_drill(crate::s3::Kind::Moto);
}

fn offsite_drill(kind: crate::s3::Kind) {
    let w = World::new("", "");
    let server = crate::s3::S3Server::start_kind(kind, &w.env.root.join("s3"), &["far"], false);
    let (identity, recipient) = crate::s3::age_key(&w.env.root);
    let offsite = server.offsite_toml(&w.env.root, "far", Some(&recipient), "");
    w.config("", &offsite);
    w.env.cmd().arg("backup").assert().success();
    fs::write(w.data.join("docs/new.txt"), "new\n").unwrap();
    w.env.cmd().arg("backup").assert().success();
    let local = crate::common::dir_names(&w.env.dest.join("s"));

    // Without the identity the copies cannot be read: the drill fails and says why.
    let v = w.drill(&["--offsite", "offsite"], 2);
    assert!(
        v["drills"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("give the age identity file"),
        "{v:#}"
    );
    let key = identity.display().to_string();
    let v = w.drill(&["--offsite", "offsite", "--identity", &key], 0);
    let d = &v["drills"][0];
    assert_eq!(d["ok"], true, "{v:#}");
    assert_eq!(d["source"], "offsite offsite");
    assert_eq!(d["files"], 4);
    assert!(d["phases"]["fetch_ms"].as_u64().unwrap() > 0, "{v:#}");
    assert_eq!(
        crate::common::dir_names(&w.env.dest.join("s")),
        local,
        "an offsite drill adds nothing to the backup disk"
    );
    // Its own check item.
    let a = w.env.cmd().args(["check", "--json"]).assert();
    assert!(stdout(&a).contains("drill s offsite"), "{}", stdout(&a));
}

#[test]
fn a_scratch_disk_without_room_for_the_copy_fails_the_drill_before_anything_is_restored() {
    let w = World::new("", "");
    let _disk = crate::common::SmallDisk::mount(&w.scratch, "256k");
    w.env.cmd().arg("backup").assert().success();
    let v = w.drill(&[], 2);
    let detail = v["drills"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!(
            "the drill's scratch folder {} has",
            w.scratch.display()
        )) && detail.contains("nothing was restored"),
        "{detail}"
    );
    assert_eq!(v["drills"][0]["files"], 0);
}

/// A real RDB file: what `redis-server` writes on SAVE.
fn real_rdb(dir: &Path) -> Vec<u8> {
    let port = free_port();
    let run = |args: &[&str]| {
        std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli (tests/run installs redis-server)")
    };
    fs::create_dir_all(dir).unwrap();
    let started = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--daemonize", "yes", "--dir"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(started.success());
    wait_for("redis", Duration::from_secs(20), || {
        String::from_utf8_lossy(&run(&["ping"]).stdout).contains("PONG")
    });
    run(&["set", "answer", "42"]);
    run(&["save"]);
    run(&["shutdown", "nosave"]);
    fs::read(dir.join("dump.rdb")).unwrap()
}

#[test]
fn dumps_are_checked_with_their_own_tools_and_said_skipped_where_those_are_missing() {
    let w = World::new("", "");
    let rdb = real_rdb(&w.env.root.join("redis"));
    fs::write(w.data.join("good.rdb"), &rdb).unwrap();
    let mut broken = rdb.clone();
    let mid = broken.len() / 2;
    broken[mid] ^= 0xff;
    fs::write(w.data.join("broken.rdb"), &broken).unwrap();
    fs::write(
        w.data.join("app.dump"),
        b"PGDMP\x01\x0e\x00 not a dump at all",
    )
    .unwrap();
    w.env.cmd().arg("backup").assert().success();

    let v = w.drill(&[], 2);
    let d = &v["drills"][0];
    let findings = d["findings"].to_string();
    let detail = d["detail"].as_str().unwrap();
    let at = |name: &str| format!("{}/{name}", w.data.display());
    assert!(
        findings.contains(&format!("{}: redis-check-rdb: ok", at("good.rdb"))),
        "{findings}"
    );
    assert!(
        detail.contains(&format!("{}: redis-check-rdb failed", at("broken.rdb"))),
        "{detail}"
    );
    assert!(
        detail.contains(&format!("{}: pg_restore failed", at("app.dump"))),
        "{detail}"
    );

    // Without the tools the dumps are not proven, and the drill says so.
    let empty = w.env.root.join("no-tools");
    fs::create_dir_all(&empty).unwrap();
    let a = w
        .env
        .cmd()
        .args(["drill", "--json"])
        .env("PATH", &empty)
        .assert()
        .code(0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    let findings = v["drills"][0]["findings"].to_string();
    assert!(
        findings.contains(&format!(
            "{}: skipped: redis-check-rdb is not installed",
            at("broken.rdb")
        )) && findings.contains(&format!(
            "{}: skipped: pg_restore is not installed",
            at("app.dump")
        )),
        "{findings}"
    );
}

#[test]
fn regression_an_absolute_link_into_the_set_never_leads_a_drill_command_into_live_data() {
    let w = World::new("", "");
    std::os::unix::fs::symlink(w.data.join("docs"), w.data.join("current")).unwrap();
    let write = format!(
        "drill-command = \"echo from-drill > \\\"$STEWARD_DRILL_DIR{}/current/from-drill.txt\\\"\"",
        w.data.display()
    );
    w.config(&write, "");
    w.env.cmd().arg("backup").assert().success();
    // (The helper asserts the live tree byte-identical after the drill.)
    let v = w.drill(&[], 0);
    assert_eq!(v["drills"][0]["ok"], true, "{v:#}");
    assert!(
        v["drills"][0]["findings"]
            .to_string()
            .contains("1 absolute links into the set's data point into the copy"),
        "{v:#}"
    );
    assert!(!w.data.join("docs/from-drill.txt").exists());
}

#[test]
fn regression_a_drill_that_waits_for_a_backup_drills_the_backup_it_waited_for() {
    let w = World::new("", "");
    let (started, go) = (w.env.root.join("started"), w.env.root.join("go"));
    let hook = format!(
        "[backup.set.hooks]\nbefore = \"touch {}; while [ ! -e {} ]; do sleep 0.05; done\"\n",
        started.display(),
        go.display()
    );
    // Only the newest backup is kept: the one chosen before the wait would be pruned.
    w.config(&hook, "[backup.keep]\nlast = 1\n");
    fs::write(&go, "").unwrap();
    w.env.cmd().arg("backup").assert().success();
    fs::remove_file(&go).unwrap();
    fs::remove_file(&started).unwrap();
    fs::write(w.data.join("docs/new.txt"), "new\n").unwrap();
    let mut backup = w.env.std_cmd().arg("backup").spawn().unwrap();
    wait_for("the backup's hook", Duration::from_mins(1), || {
        started.exists()
    });
    let log = w.env.root.join("drill.err");
    let drill = w
        .env
        .std_cmd()
        .args(["drill", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for("the drill to wait", Duration::from_mins(1), || {
        fs::read_to_string(&log).is_ok_and(|t| t.contains("waits for the backup lock"))
    });
    fs::write(&go, "").unwrap();
    assert!(backup.wait().unwrap().success());
    let out = drill.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        fs::read_to_string(&log).unwrap()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = w.newest_id();
    assert_eq!(v["drills"][0]["backup_id"], id.as_str(), "{v:#}");
    assert_eq!(v["drills"][0]["ok"], true, "{v:#}");
}

#[test]
fn regression_a_damaged_archive_a_drill_finds_is_marked_failed_like_verify_does() {
    let w = World::new("", "");
    w.env.cmd().arg("backup").assert().success();
    let archive = w.env.archives("s").pop().unwrap();
    let mut bytes = fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&archive, bytes).unwrap();
    let v = w.drill(&[], 2);
    assert_eq!(v["drills"][0]["ok"], false);
    let list = w.env.list_json();
    assert_eq!(list[0]["status"], "failed", "{list:#}");
    // So the next backup is no "unchanged" skip over a damaged archive.
    let a = w.env.cmd().arg("backup").assert().success();
    assert!(!stdout(&a).contains("unchanged"), "{}", stdout(&a));
}

#[test]
fn regression_a_drill_run_by_hand_without_a_drill_schedule_never_goes_stale() {
    let w = World::new("", "");
    w.env.cmd().arg("backup").assert().success();
    w.drill(&[], 0);
    let later = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 40 * 86_400)
        .to_string();
    let a = w
        .env
        .cmd()
        .args(["check", "--json"])
        .env("STEWARD_NOW", &later)
        .assert();
    let v: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    let text = v.to_string();
    assert!(text.contains("drill s"), "{text}");
    assert!(!text.contains("last proven restorable"), "{text}");
}

#[test]
fn regression_a_scratch_folder_that_is_a_link_into_live_data_is_refused() {
    let w = World::new("", "");
    w.env.cmd().arg("backup").assert().success();
    std::os::unix::fs::symlink(w.data.join("docs"), &w.scratch).unwrap();
    let a = w.env.cmd().arg("drill").assert().code(2);
    assert!(
        stderr(&a).contains("through a link, which overlaps")
            && stderr(&a).contains("of set \"s\""),
        "{}",
        stderr(&a)
    );
    assert_eq!(
        crate::common::dir_names(&w.data.join("docs")),
        vec!["readme.txt".to_string()]
    );
}

#[test]
fn regression_what_a_drill_command_starts_in_the_background_ends_with_the_drill() {
    let w = World::new("", "");
    let pid = w.env.root.join("bg.pid");
    w.config(
        &format!(
            "drill-command = \"sleep 300 >/dev/null 2>&1 & echo $! > {}\"",
            pid.display()
        ),
        "",
    );
    w.env.cmd().arg("backup").assert().success();
    w.drill(&[], 0);
    let pid = fs::read_to_string(&pid).unwrap().trim().to_string();
    wait_for(
        "the background sleep to end",
        Duration::from_secs(10),
        || {
            !Path::new(&format!("/proc/{pid}")).exists()
                || fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z"))
        },
    );
}
