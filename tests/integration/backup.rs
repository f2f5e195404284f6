//! Backups end to end: the archive restores with plain tar + sha256sum, SQLite is copied
//! consistently under a live writer, unchanged sets are skipped, the catalog rebuilds.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use rusqlite::Connection;

use crate::common::{Env, check_manifest, extract, random_file, stderr, stdout, tool, wait_for};

/// Builds a tree with every kind of entry the archive must keep.
fn odd_tree(root: &Path) -> PathBuf {
    let data = root.join("data");
    fs::create_dir_all(data.join("empty")).unwrap();
    fs::write(data.join("plain.txt"), "hello\n").unwrap();
    random_file(&data.join("blob.bin"), 3 << 20, 7);
    // Odd names: spaces, newline, backslash, carriage return, unicode, leading dash,
    // and bytes that are not UTF-8.
    for name in [
        &b"with space.txt"[..],
        b"new\nline.txt",
        b"back\\slash.txt",
        b"carriage\rreturn",
        "ünïcødé ✓.txt".as_bytes(),
        b"-leading-dash",
        b"latin1-\xe9\xff.bin",
    ] {
        fs::write(data.join(OsStr::from_bytes(name)), name).unwrap();
    }
    // A long path: several long directory names (well past tar's 100-byte name field).
    let mut long = data.clone();
    for i in 0..4 {
        long = long.join(format!("{}-{i}", "long-directory-name".repeat(4)));
    }
    fs::create_dir_all(&long).unwrap();
    fs::write(long.join(format!("{}.txt", "f".repeat(150))), "deep\n").unwrap();
    // Symlinks: relative, absolute, dangling; never followed.
    symlink("plain.txt", data.join("rel-link")).unwrap();
    symlink("/etc/hostname", data.join("abs-link")).unwrap();
    symlink("does-not-exist", data.join("dangling")).unwrap();
    // Hard links: stored once.
    fs::hard_link(data.join("plain.txt"), data.join("hard-link.txt")).unwrap();
    // Modes.
    let exe = data.join("script.sh");
    fs::write(&exe, "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o750)).unwrap();
    // A SQLite database in WAL mode with rows.
    let db = Connection::open(data.join("app.db")).unwrap();
    db.pragma_update(None, "journal_mode", "WAL").unwrap();
    db.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);")
        .unwrap();
    for i in 0..500 {
        db.execute("INSERT INTO t (v) VALUES (?1)", [format!("row {i}")])
            .unwrap();
    }
    drop(db);
    // Backdate a file so mtime preservation is visible.
    let old = data.join("plain.txt");
    let t = fs::File::options().write(true).open(&old).unwrap();
    t.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000))
        .unwrap();
    data
}

/// Compares two trees entry by entry: kind, content, link target, mode, mtime.
fn assert_same_tree(a: &Path, b: &Path) {
    let mut count = 0;
    for e in walkdir::WalkDir::new(a).follow_links(false) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(a).unwrap();
        let name = rel.as_os_str().as_bytes();
        if name.ends_with(b"-wal") || name.ends_with(b"-shm") {
            continue;
        }
        let other = b.join(rel);
        let ma = fs::symlink_metadata(e.path()).unwrap();
        let mb = fs::symlink_metadata(&other)
            .unwrap_or_else(|_| panic!("{} missing from the restore", rel.display()));
        assert_eq!(ma.file_type(), mb.file_type(), "{}", rel.display());
        if ma.file_type().is_symlink() {
            assert_eq!(
                fs::read_link(e.path()).unwrap(),
                fs::read_link(&other).unwrap()
            );
            continue;
        }
        assert_eq!(
            ma.mode() & 0o7777,
            mb.mode() & 0o7777,
            "mode of {}",
            rel.display()
        );
        if ma.is_file() {
            assert_eq!(ma.mtime(), mb.mtime(), "mtime of {}", rel.display());
            if !name.ends_with(b".db") {
                assert_eq!(
                    fs::read(e.path()).unwrap(),
                    fs::read(&other).unwrap(),
                    "{}",
                    rel.display()
                );
            }
        }
        count += 1;
    }
    assert!(count > 15, "walked only {count} entries");
}

#[test]
fn round_trip_restores_with_plain_tar_and_sha256sum() {
    let env = Env::new();
    let data = odd_tree(&env.root);
    env.one_set("data", &[&data], "");
    let a = env.cmd().arg("backup").assert().success();
    let out = stdout(&a);
    assert!(out.contains("verified"), "{out}");
    let archives = env.archives("data");
    assert_eq!(archives.len(), 1);
    let archive = &archives[0];
    // The sidecar checks with sha256sum in the archive's folder.
    let sidecar = format!("{}.sha256", archive.file_name().unwrap().to_string_lossy());
    tool(
        "sha256sum",
        &["-c".as_ref(), "--strict".as_ref(), sidecar.as_ref()],
        archive.parent().unwrap(),
    );
    // zstd itself accepts the whole file (the skippable trailer frame included).
    tool(
        "zstd",
        &["-t".as_ref(), "-q".as_ref(), archive.as_os_str()],
        &env.root,
    );
    // Plain tar extracts it, and sha256sum checks every file against the manifest.
    let out_dir = env.root.join("restored");
    extract(archive, &out_dir);
    let listed = check_manifest(&out_dir);
    assert_eq!(listed, "", "sha256sum reported problems");
    let manifest = fs::read(out_dir.join(".steward/MANIFEST.sha256")).unwrap();
    let lines = manifest
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    // Every regular file once; the hard link is stored as a link, not a second copy.
    let files = walkdir::WalkDir::new(&data)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            !e.file_name().as_bytes().ends_with(b"-wal")
                && !e.file_name().as_bytes().ends_with(b"-shm")
        })
        .count();
    assert_eq!(lines, files - 1);
    let restored = out_dir.join(data.strip_prefix("/").unwrap());
    assert_same_tree(&data, &restored);
    // The hard link came back as a hard link.
    let m1 = fs::metadata(restored.join("plain.txt")).unwrap();
    let m2 = fs::metadata(restored.join("hard-link.txt")).unwrap();
    assert_eq!(m1.ino(), m2.ino());
    // The database restored whole.
    let db = Connection::open(restored.join("app.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let n: i64 = db
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 500);
    // backup.json describes it.
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(out_dir.join(".steward/backup.json")).unwrap()).unwrap();
    assert_eq!(meta["set"], "data");
    assert_eq!(meta["hardlinks"], 1);
    assert_eq!(meta["symlinks"], 3);
    assert_eq!(
        meta["sqlite"][0]["path"],
        data.join("app.db").to_string_lossy().as_ref()
    );
    // Archive and sidecar are private.
    assert_eq!(fs::metadata(archive).unwrap().mode() & 0o777, 0o600);
    let sc = archive.parent().unwrap().join(&sidecar);
    assert_eq!(fs::metadata(sc).unwrap().mode() & 0o777, 0o600);
}

/// A writer commits a row every few milliseconds while steward backs the database up.
fn live_writer_test(journal_mode: &str) {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    let db_path = data.join("live.db");
    let db = Connection::open(&db_path).unwrap();
    db.pragma_update(None, "journal_mode", journal_mode)
        .unwrap();
    db.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, payload BLOB NOT NULL);
         CREATE INDEX t_payload ON t (payload);",
    )
    .unwrap();
    // Enough data that the copy takes a while, and a WAL that is never empty.
    for _ in 0..2000 {
        db.execute("INSERT INTO t (payload) VALUES (randomblob(1000))", [])
            .unwrap();
    }
    drop(db);
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicI64::new(0));
    let writer = {
        let (stop, committed, db_path) = (stop.clone(), committed.clone(), db_path.clone());
        std::thread::spawn(move || {
            let db = Connection::open(&db_path).unwrap();
            db.busy_timeout(Duration::from_secs(30)).unwrap();
            db.pragma_update(None, "wal_autocheckpoint", 0).ok();
            while !stop.load(Ordering::SeqCst) {
                db.execute("INSERT INTO t (payload) VALUES (randomblob(1000))", [])
                    .unwrap();
                committed.store(db.last_insert_rowid(), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    wait_for(
        "the writer's first commits",
        Duration::from_secs(10),
        || committed.load(Ordering::SeqCst) > 2010,
    );
    env.one_set("db", &[&data], "");
    let before = committed.load(Ordering::SeqCst);
    env.cmd().arg("backup").assert().success();
    let during = committed.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert!(
        during > before,
        "the writer made no progress during the backup"
    );

    let out = env.root.join("out");
    let archive = env.archives("db").pop().unwrap();
    extract(&archive, &out);
    let copy = out.join(db_path.strip_prefix("/").unwrap());
    // Side files were not archived: the copy stands alone.
    let mut wal = copy.as_os_str().to_owned();
    wal.push("-wal");
    assert!(!Path::new(&wal).exists(), "-wal was archived");
    let c = Connection::open(&copy).unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let max: i64 = c
        .query_row("SELECT max(id) FROM t", [], |r| r.get(0))
        .unwrap();
    let count: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert!(
        max >= before,
        "rows committed before the backup are missing: max {max} < {before}"
    );
    assert_eq!(count, max, "the copy has gaps: {count} rows up to id {max}");
}

#[test]
fn sqlite_wal_database_with_live_writer_is_copied_consistently() {
    live_writer_test("WAL");
}

#[test]
fn sqlite_rollback_database_with_live_writer_is_copied_consistently() {
    live_writer_test("DELETE");
}

/// An env with one set `s` over a folder holding `a.txt`, backed up once.
fn one_small_backup() -> (Env, PathBuf) {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("a.txt"), "one").unwrap();
    env.one_set("s", &[&data], "");
    env.cmd().arg("backup").assert().success();
    (env, data)
}

#[test]
fn unchanged_rerun_writes_no_new_archive_until_something_changes() {
    let (env, data) = one_small_backup();
    let a = env.cmd().args(["backup", "--json"]).assert().success();
    let json: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    assert_eq!(json[0]["result"], "unchanged");
    assert_eq!(env.archives("s").len(), 1);
    fs::write(data.join("a.txt"), "two!").unwrap();
    env.cmd().arg("backup").assert().success();
    assert_eq!(env.archives("s").len(), 2);
    env.cmd().args(["backup", "--force"]).assert().success();
    assert_eq!(env.archives("s").len(), 3);
    // Names stay unique and sortable even within one second.
    let names: std::collections::HashSet<_> = env.archives("s").into_iter().collect();
    assert_eq!(names.len(), 3);
}

#[test]
fn excludes_sockets_and_named_sets() {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(data.join("cache/deep")).unwrap();
    fs::create_dir_all(data.join("keep")).unwrap();
    fs::write(data.join("cache/deep/x"), "cached").unwrap();
    fs::write(data.join("keep/a.tmp"), "tmp").unwrap();
    fs::write(data.join("keep/a.txt"), "kept").unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(data.join("app.sock")).unwrap();
    let other = env.root.join("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("o.txt"), "o").unwrap();
    env.write_config(&format!(
        "[[backup.set]]\nname = \"main\"\npaths = [\"{}\"]\nexclude = [\"*.tmp\", \"cache/\"]\n\n\
         [[backup.set]]\nname = \"other\"\npaths = [\"{}\"]\n",
        data.display(),
        other.display()
    ));
    let a = env.cmd().args(["backup", "main"]).assert().success();
    assert!(stderr(&a).contains("skipped socket"), "{}", stderr(&a));
    assert!(
        env.archives("other").is_empty(),
        "a set not named was backed up"
    );
    let listing = tool(
        "tar",
        &[
            "--zstd".as_ref(),
            "-tf".as_ref(),
            env.archives("main")[0].as_os_str(),
        ],
        &env.root,
    );
    assert!(listing.contains("keep/a.txt"), "{listing}");
    assert!(!listing.contains("a.tmp"), "{listing}");
    assert!(!listing.contains("cache"), "{listing}");
    assert!(!listing.contains("app.sock"), "{listing}");
    // An unknown set name is an error that names it.
    let a = env.cmd().args(["backup", "nope"]).assert().code(2);
    assert!(stderr(&a).contains("\"nope\""), "{}", stderr(&a));
}

#[test]
fn reindex_rebuilds_the_catalog_from_the_backup_disk() {
    let (env, data) = one_small_backup();
    fs::write(data.join("a.txt"), "two").unwrap();
    env.cmd().arg("backup").assert().success();
    let listed = env.list_json().to_string();
    let before: serde_json::Value = serde_json::from_str(&listed).unwrap();
    // The host is lost: only the backup disk remains.
    fs::remove_dir_all(&env.state).unwrap();
    let a = env
        .cmd()
        .args(["backups", "reindex", "--json"])
        .assert()
        .success();
    let report: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    assert_eq!(report["archives"], 2);
    assert_eq!(report["verified"], 2);
    let after: serde_json::Value = env.list_json();
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&before), ids(&after));
    assert!(
        after
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["status"] == "verified")
    );
    // An archive deleted by hand drops out; one without its sidecar is not verified.
    let archives = env.archives("s");
    fs::remove_file(&archives[0]).unwrap();
    fs::remove_file(format!("{}.sha256", archives[1].display())).unwrap();
    let a = env
        .cmd()
        .args(["backups", "reindex", "--json"])
        .assert()
        .success();
    let report: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    assert_eq!(report["dropped"].as_array().unwrap().len(), 1);
    let after: serde_json::Value = env.list_json();
    assert_eq!(after.as_array().unwrap().len(), 1);
    assert_eq!(after[0]["status"], "unverified");
}

#[test]
fn embedded_default_runs_without_any_config_file() {
    let env = Env::new();
    let a = env.bare_cmd().arg("backup").assert().success();
    assert!(
        stdout(&a).contains("no backup sets configured"),
        "{}",
        stdout(&a)
    );
    // The default state lives under the (test's) home.
    assert!(env.home.join(".local/state/steward/state.db").is_file());
    let a = env.bare_cmd().args(["config", "check"]).assert().success();
    assert!(stdout(&a).contains("<embedded default>"), "{}", stdout(&a));
    // $STEWARD_CONFIG is honoured before the user's file.
    let data = env.root.join("d");
    fs::create_dir_all(&data).unwrap();
    env.one_set("via-env", &[&data], "");
    let a = env
        .bare_cmd()
        .env("STEWARD_CONFIG", &env.config)
        .args(["config", "check", "--json"])
        .assert()
        .success();
    assert!(stdout(&a).contains("via-env"), "{}", stdout(&a));
}

/// Regression: steward's own read of a WAL database creates an empty `-wal` and a `-shm`
/// beside it, which used to count as a change, so the second run wrote a new archive.
#[test]
fn regression_snapshot_side_files_do_not_defeat_the_unchanged_skip() {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    let db = Connection::open(data.join("app.db")).unwrap();
    db.pragma_update(None, "journal_mode", "WAL").unwrap();
    db.execute_batch("CREATE TABLE t (v); INSERT INTO t VALUES (1);")
        .unwrap();
    drop(db); // the last connection checkpoints and removes -wal and -shm
    assert!(!data.join("app.db-wal").exists());
    env.one_set("db", &[&data], "");
    env.cmd().arg("backup").assert().success();
    let a = env.cmd().args(["backup", "--json"]).assert().success();
    assert!(stdout(&a).contains("\"unchanged\""), "{}", stdout(&a));
    assert_eq!(env.archives("db").len(), 1);
    // A real write is a change.
    let db = Connection::open(data.join("app.db")).unwrap();
    db.execute("INSERT INTO t VALUES (2)", []).unwrap();
    drop(db);
    env.cmd().arg("backup").assert().success();
    assert_eq!(env.archives("db").len(), 2);
}

/// Whether files in `dir` can be opened for direct I/O (most disk filesystems; not tmpfs
/// before Linux 6.6).
fn takes_direct_io(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let probe = dir.join(".direct-probe");
    fs::write(&probe, b"x").unwrap();
    let ok = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .is_ok();
    fs::remove_file(&probe).unwrap();
    ok
}

#[test]
fn the_read_back_comes_from_the_device_or_says_it_did_not() {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    // More than a few 1 MiB blocks of poorly compressible bytes, and a tail.
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(fs::File::open("/dev/urandom").unwrap(), (3 << 20) + 12_345),
        &mut bytes,
    )
    .unwrap();
    fs::write(data.join("model.bin"), &bytes).unwrap();
    env.one_set("s", &[&data], "");
    let a = env.cmd().args(["backup", "--json"]).assert().success();
    let json: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    let expected = if takes_direct_io(&env.root) {
        "device"
    } else {
        "page-cache"
    };
    assert_eq!(json[0]["readback"], expected, "{json}");

    // A filesystem that refuses direct I/O: the backup still verifies, and says where its
    // read-back came from.
    fs::write(data.join("more.txt"), "more").unwrap();
    let a = env
        .cmd()
        .env("STEWARD_TEST_NO_DIRECT_IO", "1")
        .args(["backup", "--json"])
        .assert()
        .success();
    let json: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    assert_eq!(json[0]["readback"], "page-cache", "{json}");
    let err = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
    assert!(err.contains("read back from the page cache"), "{err}");

    // Both archives are whole to plain tools, the sidecars match.
    assert_eq!(env.archives("s").len(), 2);
    for archive in env.archives("s") {
        let name = archive.file_name().unwrap().to_string_lossy().into_owned();
        let st = std::process::Command::new("sha256sum")
            .arg("-c")
            .arg(format!("{name}.sha256"))
            .current_dir(archive.parent().unwrap())
            .status()
            .unwrap();
        assert!(st.success(), "{name}");
    }
    env.cmd().args(["verify", "--all"]).assert().success();
}

#[test]
fn a_walking_thread_that_dies_fails_the_backup_instead_of_cutting_it_short() {
    let (env, data) = one_small_backup();
    fs::write(data.join("b.txt"), "new").unwrap();
    let a = env
        .cmd()
        .env("STEWARD_TEST_WALK_THREAD_PANICS", "1")
        .arg("backup")
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
    assert!(err.contains("the walk stopped unexpectedly"), "{err}");
    // Nothing was published: still the one archive of the first run.
    assert_eq!(env.archives("s").len(), 1);
}

/// Regression (issue 24): every backup of a WAL-mode database left the guard's
/// `.SET-ID.sqlite.partial-wal`/`-shm` in the set's folder, and a killed run's
/// `<state>/facts/.ID.partial` stayed forever. After a backup only archives and sidecars
/// are in the set's folder, and the next run sweeps what a killed one left.
#[test]
fn regression_no_litter_in_the_set_folder_or_the_state_after_backups() {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    let c = rusqlite::Connection::open(data.join("app.db")).unwrap();
    // Held open with rows only in the WAL: the backup takes a copy, which the guard checks.
    c.execute_batch(
        "PRAGMA journal_mode=wal; PRAGMA wal_autocheckpoint=0; CREATE TABLE t (x); \
         INSERT INTO t VALUES (1);",
    )
    .unwrap();
    env.one_set("s", &[&data], "");
    let only_archives = |env: &Env| {
        let names = env.set_dir_names("s");
        assert!(
            names
                .iter()
                .all(|n| n.ends_with(".tar.zst") || n.ends_with(".tar.zst.sha256")),
            "{names:?}"
        );
        let facts = crate::common::dir_names(&env.state.join("facts"));
        assert!(facts.iter().all(|n| !n.starts_with('.')), "{facts:?}");
    };
    env.cmd().arg("backup").assert().success();
    only_archives(&env);
    drop(c);
    // What a run killed mid-way leaves behind.
    fs::write(
        env.dest.join("s/.s-20260101T000000Z.sqlite.partial-wal"),
        "",
    )
    .unwrap();
    fs::write(
        env.dest.join("s/.s-20260101T000000Z.sqlite.partial-shm"),
        "",
    )
    .unwrap();
    fs::create_dir_all(env.state.join("facts")).unwrap();
    fs::write(env.state.join("facts/.s-20260101T000000Z.partial"), "x").unwrap();
    env.cmd().args(["backup", "--force"]).assert().success();
    only_archives(&env);
}

/// `backup --json` carries the prune decisions that followed each set's backup: every
/// backup of the set, kept or removed and why.
#[test]
fn backup_json_includes_the_prune_that_followed() {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("a.txt"), "one").unwrap();
    env.one_set("s", &[&data], "[backup.set.keep]\nlast = 1\n");
    env.cmd()
        .env("STEWARD_NOW", "1800000000")
        .arg("backup")
        .assert()
        .success();
    fs::write(data.join("a.txt"), "two").unwrap();
    let a = env
        .cmd()
        .env("STEWARD_NOW", "1800003600")
        .args(["backup", "--json"])
        .assert()
        .success();
    let json: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    assert_eq!(json[0]["result"], "created", "{json}");
    let prune = &json[0]["prune"];
    assert_eq!(prune["set"], "s", "{json}");
    assert_eq!(prune["removed"], 1, "{json}");
    assert_eq!(prune["rows"].as_array().unwrap().len(), 2, "{json}");
    assert_eq!(env.archives("s").len(), 1);
}
