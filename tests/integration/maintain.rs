//! Maintenance end to end: VACUUM shrinks a real database under a concurrent writer, logs
//! are compressed and pruned exactly as the rules say (and decompress with the real zstd),
//! a dry run changes nothing, and a VACUUM without room is skipped with an alert.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rusqlite::Connection;
use sha2::{Digest, Sha256};

use crate::common::{Env, stdout};
use crate::mail::{Smtp, free_port, test_ca};

fn bloated_db(path: &Path) {
    let db = Connection::open(path).unwrap();
    db.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 8000)
         INSERT INTO t (b) SELECT randomblob(1000) FROM n;
         DELETE FROM t WHERE id % 10 != 0;
         PRAGMA wal_checkpoint(TRUNCATE);",
    )
    .unwrap();
}

fn age(path: &Path, days: u64) {
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(days * 86_400))
        .unwrap();
}

/// A hash of every path, size, mtime and content under `root`.
fn tree_hash(root: &Path) -> String {
    let mut h = Sha256::new();
    let mut entries: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .map(walkdir::DirEntry::into_path)
        .collect();
    entries.sort();
    for p in entries {
        let m = fs::symlink_metadata(&p).unwrap();
        h.update(p.to_string_lossy().as_bytes());
        h.update(m.len().to_le_bytes());
        h.update(format!("{:?}", m.modified().unwrap()).as_bytes());
        if m.is_file() {
            h.update(fs::read(&p).unwrap());
        }
    }
    hex::encode(h.finalize())
}

#[test]
fn vacuum_shrinks_a_database_under_a_concurrent_writer() {
    let env = Env::new();
    let db = env.root.join("app.db");
    bloated_db(&db);
    let before = fs::metadata(&db).unwrap().len();
    env.write_config(&format!(
        "[[maintenance.weekly.task]]\nkind = \"sqlite\"\ndatabases = [\"{}\"]\n\
         actions = [\"wal-checkpoint\", \"analyze\", \"optimize\", \"vacuum\", \"integrity-check\"]\n",
        db.display()
    ));
    // A writer commits every few milliseconds throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written, db) = (stop.clone(), written.clone(), db.clone());
        std::thread::spawn(move || {
            let c = Connection::open(&db).unwrap();
            c.busy_timeout(Duration::from_secs(30)).unwrap();
            while !stop.load(Ordering::SeqCst) {
                c.execute("INSERT INTO t (b) VALUES (randomblob(100))", [])
                    .unwrap();
                written.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };
    crate::common::wait_for("the writer", Duration::from_secs(10), || {
        written.load(Ordering::SeqCst) > 5
    });
    let a = env.cmd().args(["maintain", "weekly"]).assert().success();
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let out = stdout(&a);
    assert!(
        out.contains("vacuumed") && out.contains("integrity ok"),
        "{out}"
    );
    let after = fs::metadata(&db).unwrap().len();
    assert!(after < before / 2, "{before} -> {after}");
    let c = Connection::open(&db).unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let rows: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows as u64, 800 + written.load(Ordering::SeqCst));
}

#[test]
fn logs_are_compressed_and_pruned_exactly_as_the_rules_say() {
    let env = Env::new();
    let logs = env.root.join("logs");
    fs::create_dir_all(&logs).unwrap();
    let body = |n: usize| format!("{n} GET /health 200\n").repeat(500 + n);
    let files = [
        ("app.log", 0),
        ("app.log.1", 3),
        ("app.log.2", 10),
        ("app.log.3", 40),
        ("app.log.4", 50),
        ("other.txt", 90),
    ];
    for (i, (name, days)) in files.iter().enumerate() {
        fs::write(logs.join(name), body(i)).unwrap();
        age(&logs.join(name), *days);
    }
    // Another process holds app.log.2 open: it is not compressed.
    let held = fs::File::open(logs.join("app.log.2")).unwrap();
    env.write_config(&format!(
        "[[maintenance.daily.task]]\nkind = \"logs\"\npaths = [\"{}\"]\npattern = \"app.log*\"\n\
         compress-after = \"2d\"\ndelete-after = \"30d\"\nkeep-min-files = 2\n",
        logs.display()
    ));
    let before = tree_hash(&logs);
    let a = env
        .cmd()
        .args(["maintain", "daily", "--dry-run"])
        .assert()
        .success();
    assert!(stdout(&a).contains("would remove"), "{}", stdout(&a));
    assert_eq!(tree_hash(&logs), before, "--dry-run changed the tree");
    let a = env
        .cmd()
        .args(["maintain", "daily", "--json"])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    let t = &v["tasks"][0];
    assert_eq!(t["files_removed"], 2, "{t}");
    assert_eq!(t["files_compressed"], 1, "{t}");
    assert!(
        t["warnings"][0]
            .as_str()
            .unwrap()
            .contains("app.log.2: open in another process"),
        "{t}"
    );
    let names = crate::common::dir_names(&logs);
    assert_eq!(
        names,
        ["app.log", "app.log.1.zst", "app.log.2", "other.txt"]
    );
    // The compressed file decompresses with the real zstd to the same bytes, same mtime.
    let zst = logs.join("app.log.1.zst");
    let out = std::process::Command::new("zstd")
        .args(["-d", "-c", "-q"])
        .arg(&zst)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, body(1).into_bytes());
    let mtime = fs::metadata(&zst).unwrap().modified().unwrap();
    let age_days = SystemTime::now().duration_since(mtime).unwrap().as_secs() / 86_400;
    assert_eq!(age_days, 3);
    drop(held);
}

#[test]
fn max_total_size_removes_the_oldest_beyond_it_but_keeps_the_minimum() {
    let env = Env::new();
    let logs = env.root.join("logs");
    fs::create_dir_all(&logs).unwrap();
    for i in 0..6 {
        let p = logs.join(format!("x.log.{i}"));
        fs::write(&p, vec![b'a'; 1000]).unwrap();
        age(&p, i);
    }
    env.write_config(&format!(
        "[[maintenance.daily.task]]\nkind = \"logs\"\npaths = [\"{}\"]\nmax-total-size = 2500\nkeep-min-files = 3\n",
        logs.display()
    ));
    env.cmd().args(["maintain", "daily"]).assert().success();
    let names = crate::common::dir_names(&logs);
    // 2,500 bytes would allow two files, but the three newest are always kept.
    assert_eq!(names, ["x.log.0", "x.log.1", "x.log.2"]);
}

#[test]
fn vacuum_without_room_is_skipped_with_a_warning_and_an_alert() {
    let env = Env::new();
    let ca = test_ca(&env.root);
    let port = free_port();
    let smtp = Smtp::start(&env.root, port, &ca);
    fs::write(env.root.join("smtp-pass"), "s3cret\n").unwrap();
    let db = env.root.join("app.db");
    bloated_db(&db);
    let before = fs::metadata(&db).unwrap().len();
    env.write_config(&format!(
        "[[maintenance.weekly.task]]\nkind = \"sqlite\"\ndatabases = [\"{db}\"]\nactions = [\"vacuum\"]\nvacuum-margin = \"1000TiB\"\n\n\
         [alerts.email]\nsmtp = \"localhost:{port}\"\nusername = \"steward\"\npassword-file = \"{root}/smtp-pass\"\n\
         from = \"steward@example.com\"\nto = [\"ops@example.com\"]\nca-file = \"{root}/ca.pem\"\n",
        db = db.display(),
        root = env.root.display()
    ));
    let a = env.cmd().args(["maintain", "weekly"]).assert().success();
    assert!(
        stdout(&a).contains("warning: ") && stdout(&a).contains("VACUUM skipped"),
        "{}",
        stdout(&a)
    );
    assert_eq!(
        fs::metadata(&db).unwrap().len(),
        before,
        "the database was touched"
    );
    let m = smtp.messages();
    assert_eq!(m.len(), 1);
    let content = m[0]["content"].as_str().unwrap();
    assert!(
        content.contains("job weekly") && content.contains("VACUUM skipped"),
        "{content}"
    );
}

#[test]
fn tmp_and_catalog_tasks_and_the_report() {
    let env = Env::new();
    let tmp = env.root.join("scratch");
    fs::create_dir_all(tmp.join("old-dir")).unwrap();
    fs::write(tmp.join("old-dir/x"), "x").unwrap();
    age(&tmp.join("old-dir/x"), 10);
    fs::write(tmp.join("new"), "n").unwrap();
    env.write_config(&format!(
        "[[maintenance.monthly.task]]\nkind = \"tmp\"\npaths = [\"{}\"]\nmax-age = \"7d\"\n\
         [[maintenance.monthly.task]]\nkind = \"catalog\"\nkeep-runs = \"30d\"\n\
         [[maintenance.monthly.task]]\nkind = \"report\"\n",
        tmp.display()
    ));
    let a = env.cmd().args(["maintain", "monthly"]).assert().success();
    let out = stdout(&a);
    assert!(
        !tmp.join("old-dir/x").exists() && tmp.join("new").exists(),
        "{out}"
    );
    assert!(
        out.contains("steward report for") && out.contains("Disks:"),
        "{out}"
    );
    env.cmd().arg("report").assert().success();
}
