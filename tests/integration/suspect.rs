//! A damaged or wiped source never pushes out the last good backup: the change guard marks
//! such a backup suspect (with the reasons), `check` goes critical and a mail goes out,
//! retention keeps the last good backup, and `accept` / `pin` / `unpin` are a human's say,
//! surviving a `reindex` from the backup disk alone.

use std::fs;
use std::path::{Path, PathBuf};

use crate::alerts::{QUIET, mail_config};
use crate::common::{Env, random_file, stdout};
use crate::mail::{Smtp, free_port, test_ca};

/// The README's policy.
const POLICY: &str = "[backup.keep]\ndaily = 7\nweekly = 4\nmonthly = 12\n";

/// `data/` with a SQLite database and `files` text files of a few KiB each.
fn source(env: &Env, files: usize) -> PathBuf {
    let data = env.root.join("data");
    fs::create_dir_all(data.join("notes")).unwrap();
    let db = rusqlite::Connection::open(data.join("app.db")).unwrap();
    db.execute_batch(
        "CREATE TABLE t (v); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n \
         WHERE i < 500) INSERT INTO t SELECT 'row ' || i FROM n;",
    )
    .unwrap();
    drop(db);
    for i in 0..files {
        fs::write(
            data.join(format!("notes/{i:03}.txt")),
            format!("note {i}: the quick brown fox jumps over the lazy dog\n").repeat(100),
        )
        .unwrap();
    }
    data
}

fn configure(env: &Env, data: &Path, extra: &str) {
    env.write_config(&format!(
        "{extra}{QUIET}{POLICY}\n[[backup.set]]\nname = \"app\"\npaths = [\"{}\"]\n",
        data.display()
    ));
}

/// The catalog's rows: (id, suspect reasons, accepted, pinned), newest first.
fn rows(env: &Env) -> Vec<(String, Vec<String>, bool, bool)> {
    env.list_json()
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["id"].as_str().unwrap().to_string(),
                b["suspect"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect(),
                b["accepted"].as_bool().unwrap(),
                b["pinned"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// Backs up (exit 0) and returns stdout.
fn backup(env: &Env) -> String {
    stdout(&env.cmd().arg("backup").assert().success())
}

/// The common shape of the three damage tests: a good backup, `damage`, a second backup
/// that must be suspect for `reason`; the good one kept by the README's policy; `check`
/// critical; one alert mail naming the reason.
fn damage_is_suspect(files: usize, damage: impl FnOnce(&Path), reason: &str) {
    let env = Env::new();
    let ca = test_ca(&env.root);
    let port = free_port();
    let smtp = Smtp::start(&env.root, port, &ca);
    let data = source(&env, files);
    configure(&env, &data, &mail_config(&env, port));
    backup(&env);
    let good = rows(&env)[0].0.clone();
    damage(&data);
    let out = backup(&env);
    assert!(out.contains("SUSPECT") && out.contains(reason), "{out}");
    let r = rows(&env);
    assert_eq!(r.len(), 2, "the good backup was pruned: {r:?}");
    assert_eq!(r[1].0, good);
    assert!(r[1].1.is_empty(), "the good backup is suspect: {r:?}");
    assert!(
        r[0].1.iter().any(|why| why.contains(reason)),
        "{:?} does not name {reason}",
        r[0].1
    );
    // Pruning again (the README's policy: both same day) still keeps the good one, and
    // says why.
    let p = stdout(&env.cmd().args(["prune", "--dry-run"]).assert().success());
    assert!(p.contains("last good before suspect"), "{p}");
    env.cmd().arg("prune").assert().success();
    assert_eq!(rows(&env).len(), 2);
    let c = env.cmd().arg("check").assert().code(2);
    let shown = stdout(&c);
    assert!(
        shown.contains("job backup:app") && shown.contains("SUSPECT"),
        "{shown}"
    );
    let mails = smtp.messages();
    assert!(
        mails.iter().any(|m| {
            // Quoted-printable: soft line breaks undone.
            let body = m["content"].as_str().unwrap().replace("=\r\n", "");
            body.contains("SUSPECT") && body.contains(reason)
        }),
        "no alert mail names {reason}: {mails:?}"
    );
    // The plain listing says so too.
    let l = stdout(&env.cmd().args(["backups", "list"]).assert().success());
    assert!(l.contains("verified SUSPECT"), "{l}");
}

#[test]
fn garbage_over_a_database_makes_the_backup_suspect_and_keeps_the_good_one() {
    damage_is_suspect(
        20,
        |data| random_file(&data.join("app.db"), 8192, 7),
        "app.db: was a SQLite database",
    );
}

#[test]
fn eighty_percent_of_the_files_deleted_makes_the_backup_suspect() {
    damage_is_suspect(
        50,
        |data| {
            for i in 0..40 {
                fs::remove_file(data.join(format!("notes/{i:03}.txt"))).unwrap();
            }
        },
        "of the files of",
    );
}

#[test]
fn most_files_replaced_by_random_bytes_makes_the_backup_suspect() {
    damage_is_suspect(
        50,
        |data| {
            for i in 0..40 {
                random_file(&data.join(format!("notes/{i:03}.txt")), 5400, i);
            }
        },
        "now look compressed or encrypted",
    );
}

#[test]
fn a_normal_day_and_a_small_deletion_are_not_suspect() {
    let env = Env::new();
    let data = source(&env, 50);
    configure(&env, &data, "");
    backup(&env);
    // A day's work: rows added, notes edited and added, one note deleted, a compressed
    // upload (high-entropy from the start: not a file that *became* random).
    let db = rusqlite::Connection::open(data.join("app.db")).unwrap();
    db.execute("INSERT INTO t VALUES ('new row')", []).unwrap();
    drop(db);
    for i in 0..5 {
        fs::write(
            data.join(format!("notes/{i:03}.txt")),
            "edited\n".repeat(50),
        )
        .unwrap();
    }
    fs::write(data.join("notes/new.txt"), "a new note\n").unwrap();
    random_file(&data.join("notes/upload.zst"), 20_000, 99);
    fs::remove_file(data.join("notes/049.txt")).unwrap();
    let out = backup(&env);
    assert!(!out.contains("SUSPECT"), "{out}");
    let r = rows(&env);
    assert!(r[0].1.is_empty(), "{r:?}");
    env.cmd().arg("check").assert().code(0);
}

#[test]
fn accept_and_pin_round_trip_and_survive_a_reindex() {
    let env = Env::new();
    let data = source(&env, 20);
    // Full backups: a differential would keep the older one as its base, which is
    // differential.rs's to test; here retention must decide on the pin alone.
    configure(&env, &data, "[backup.differential]\nenabled = false\n");
    backup(&env);
    random_file(&data.join("app.db"), 8192, 3);
    backup(&env);
    let r = rows(&env);
    let (good, bad) = (r[1].0.clone(), r[0].0.clone());
    assert!(!r[0].1.is_empty());
    // Pin the good one; accept the suspect one (say the database was meant to go).
    env.cmd().args(["backups", "pin", &good]).assert().success();
    env.cmd()
        .args(["backups", "accept", &bad])
        .assert()
        .success();
    let l = stdout(&env.cmd().args(["backups", "list"]).assert().success());
    assert!(
        l.contains("verified accepted") && l.contains("verified pinned"),
        "{l}"
    );
    env.cmd().arg("check").assert().code(0);
    // The accepted backup is now the newest good one: the older one of the same day is
    // kept only by its pin.
    let p = stdout(&env.cmd().args(["prune", "--dry-run"]).assert().success());
    assert!(p.contains("pinned"), "{p}");
    // A rebuilt host: the catalog is gone, only the backup disk is left.
    fs::remove_dir_all(&env.state).unwrap();
    env.cmd().args(["backups", "reindex"]).assert().success();
    let r = rows(&env);
    assert_eq!(r[0], (bad.clone(), r[0].1.clone(), true, false));
    assert!(!r[0].1.is_empty(), "the reasons come from backup.json");
    assert_eq!(r[1], (good.clone(), vec![], false, true));
    env.cmd().arg("prune").assert().success();
    assert_eq!(rows(&env).len(), 2, "the pinned backup was pruned");
    // Unpin: retention decides again, and the next prune removes it.
    env.cmd()
        .args(["backups", "unpin", &good])
        .assert()
        .success();
    env.cmd().arg("prune").assert().success();
    let r = rows(&env);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].0, bad);
    // A marker edited on the backup disk is not trusted.
    let marks = env.dest.join("app").join(format!("{bad}.tar.zst.marks"));
    let text = fs::read_to_string(&marks)
        .unwrap()
        .replace("\"pinned\": false", "\"pinned\": true");
    fs::write(&marks, text).unwrap();
    fs::remove_dir_all(&env.state).unwrap();
    let a = env.cmd().args(["backups", "reindex"]).assert().code(2);
    assert!(stdout(&a).contains("checksum"), "{}", stdout(&a));
    let r = rows(&env);
    assert!(!r[0].2 && !r[0].3, "a damaged marker was applied: {r:?}");
}

#[test]
fn a_database_failing_quick_check_on_its_image_makes_the_backup_suspect() {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    let db = data.join("app.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "PRAGMA page_size = 4096; CREATE TABLE t (v); CREATE INDEX tv ON t (v);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
         INSERT INTO t SELECT printf('row %08d', i) FROM n;",
    )
    .unwrap();
    drop(c);
    configure(&env, &data, "");
    backup(&env);
    // The header survives; a b-tree page in the middle does not.
    let mut bytes = fs::read(&db).unwrap();
    let page = 4096 * (bytes.len() / 4096 / 2);
    for b in &mut bytes[page + 8..page + 4000] {
        *b = 0xA5;
    }
    fs::write(&db, bytes).unwrap();
    let out = backup(&env);
    assert!(
        out.contains("SUSPECT") && out.contains("quick_check failed on the archived image"),
        "{out}"
    );
    assert_eq!(rows(&env).len(), 2);
}

/// Regression (issue 23): `restore --latest` and the picker's Enter chose the newest
/// backup although it was SUSPECT. The default is the newest good backup; a suspect one is
/// marked with its reasons and restored only by its ID with a confirmation that names
/// them (`--yes` alone is not enough).
#[test]
fn regression_a_suspect_newest_backup_is_never_the_default() {
    let env = Env::new();
    let data = source(&env, 20);
    configure(&env, &data, "");
    backup(&env);
    for i in 0..18 {
        fs::remove_file(data.join(format!("notes/{i:03}.txt"))).unwrap();
    }
    backup(&env);
    let r = rows(&env);
    let (suspect, good) = (r[0].0.clone(), r[1].0.clone());
    assert!(!r[0].1.is_empty() && r[1].1.is_empty(), "{r:?}");

    let a = env
        .cmd()
        .args(["restore", "--latest", "--set", "app", "--dry-run"])
        .assert()
        .success();
    assert!(
        stdout(&a).contains(&format!("Restore {good}")),
        "{}",
        stdout(&a)
    );
    let err = crate::common::stderr(&a);
    assert!(err.contains(&format!("not {suspect}: SUSPECT")), "{err}");

    // By its ID, --yes alone refuses, naming the reason; nothing is written.
    let to = env.root.join("to");
    let a = env
        .cmd()
        .args(["restore", &suspect, "--yes", "--to"])
        .arg(&to)
        .assert()
        .code(2);
    let err = crate::common::stderr(&a);
    assert!(
        err.contains("SUSPECT") && err.contains("of the files of") && err.contains("--suspect-ok"),
        "{err}"
    );
    assert!(!to.exists());
    // The plan shows why.
    let a = env
        .cmd()
        .args(["restore", &suspect, "--dry-run"])
        .assert()
        .success();
    assert!(stdout(&a).contains("SUSPECT: "), "{}", stdout(&a));

    // The picker marks it, and Enter takes the good one.
    let mut p =
        rexpect::session::spawn_command(env.std_cmd_with(&["restore", "--dry-run"]), Some(30_000))
            .unwrap();
    p.exp_string("SUSPECT").unwrap();
    p.exp_string("suspect: ").unwrap();
    p.exp_string("Enter = 2").unwrap();
    p.send_line("").unwrap();
    p.exp_string(&format!("Restore {good}")).unwrap();
    p.exp_eof().unwrap();
    // Picking it by number asks for its ID, and a wrong answer changes nothing.
    let mut p = rexpect::session::spawn_command(
        env.std_cmd_with(&["restore", "--to", &to.display().to_string()]),
        Some(30_000),
    )
    .unwrap();
    p.exp_string("Restore which backup?").unwrap();
    p.send_line("1").unwrap();
    p.exp_string("Type its ID to restore it anyway:").unwrap();
    p.send_line("yes").unwrap();
    p.exp_string("not confirmed").unwrap();
    p.exp_eof().unwrap();
    assert!(!to.exists());

    // On purpose, with its ID and --suspect-ok: restored.
    env.cmd()
        .args(["restore", &suspect, "--yes", "--suspect-ok", "--to"])
        .arg(&to)
        .assert()
        .success();
    assert!(
        to.join(data.strip_prefix("/").unwrap())
            .join("app.db")
            .exists()
    );

    // Regression: `--to` a file said only `File exists (os error 17)`.
    let file = env.root.join("a-file");
    fs::write(&file, "x").unwrap();
    let a = env
        .cmd()
        .args(["restore", &good, "--yes", "--to"])
        .arg(&file)
        .assert()
        .code(2);
    let err = crate::common::stderr(&a);
    assert!(
        err.contains("not a folder") && err.contains("a-file"),
        "{err}"
    );
    assert_eq!(fs::read(&file).unwrap(), b"x");
}

/// Regression (issue 24): `maintain daily` compressed the logs (`x.log` -> `x.log.zst`), and
/// the next backup of the logs set was SUSPECT ("... % of the files ... are gone") every
/// night. steward's own removals are expected now; a real mass deletion beside them is
/// still caught.
#[test]
fn regression_logs_compressed_by_maintenance_do_not_make_the_next_backup_suspect() {
    let env = Env::new();
    let logs = env.root.join("logs");
    fs::create_dir_all(&logs).unwrap();
    for i in 0..10 {
        let p = logs.join(format!("app-{i}.log"));
        fs::write(&p, format!("line {i}\n").repeat(200)).unwrap();
        let f = fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_hours(5 * 24))
            .unwrap();
    }
    env.write_config(&format!(
        "[[backup.set]]\nname = \"logs\"\npaths = [\"{0}\"]\n\n\
         [[maintenance.daily.task]]\nkind = \"logs\"\npaths = [\"{0}\"]\npattern = \"*.log*\"\n\
         compress-after = \"2d\"\nkeep-min-files = 0\n",
        logs.display()
    ));
    backup(&env);
    let a = env.cmd().args(["maintain", "daily"]).assert().success();
    assert!(stdout(&a).contains("10 compressed"), "{}", stdout(&a));
    backup(&env);
    let r = rows(&env);
    assert_eq!(r.len(), 2);
    assert!(r[0].1.is_empty(), "suspect after maintenance: {:?}", r[0].1);
    // Someone (not maintenance) deletes most of the compressed logs: caught.
    for i in 0..8 {
        fs::remove_file(logs.join(format!("app-{i}.log.zst"))).unwrap();
    }
    backup(&env);
    let r = rows(&env);
    assert!(
        r[0].1.iter().any(|why| why.contains("are gone")),
        "{:?}",
        r[0].1
    );
}

/// Regression: a bad migration that deleted half the rows of a table left a valid
/// database of about the same size, which passed the guard. Rows per table are now in
/// `backup.json`, and a table that lost half of them makes the backup suspect, naming the
/// table and the counts; small tables and normal churn do not.
#[test]
fn regression_half_of_a_table_deleted_makes_the_backup_suspect() {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    let db = data.join("app.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE mail (id INTEGER PRIMARY KEY, subject TEXT);
         CREATE TABLE tiny (id INTEGER PRIMARY KEY);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 1000)
         INSERT INTO mail (subject) SELECT 'subject ' || i FROM n;
         INSERT INTO tiny VALUES (1), (2), (3), (4);",
    )
    .unwrap();
    // The database itself as the set path, as the reference plans name it.
    env.one_set("s", &[&db], POLICY);
    env.cmd()
        .env("STEWARD_NOW", "1800000000")
        .arg("backup")
        .assert()
        .success();
    let meta = crate::common::tool(
        "tar",
        &[
            "--zstd".as_ref(),
            "-xOf".as_ref(),
            env.archives("s")[0].as_os_str(),
            ".steward/backup.json".as_ref(),
        ],
        &env.root,
    );
    assert!(
        meta.contains("\"mail\": 1000") || meta.contains("\"mail\":1000"),
        "{meta}"
    );
    // Normal churn and a small table emptied: not suspect.
    c.execute_batch("DELETE FROM mail WHERE id <= 100; DELETE FROM tiny;")
        .unwrap();
    let a = env
        .cmd()
        .env("STEWARD_NOW", "1800003600")
        .arg("backup")
        .assert()
        .success();
    assert!(!stdout(&a).contains("SUSPECT"), "{}", stdout(&a));
    // Half of the rest.
    c.execute_batch("DELETE FROM mail WHERE id % 2 = 0 OR id <= 110;")
        .unwrap();
    drop(c);
    let a = env
        .cmd()
        .env("STEWARD_NOW", "1800007200")
        .arg("backup")
        .assert()
        .success();
    let out = stdout(&a);
    assert!(
        out.contains("SUSPECT") && out.contains("table mail has 445 rows, 900 in s-"),
        "{out}"
    );
}
