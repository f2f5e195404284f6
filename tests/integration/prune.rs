//! Retention end to end: the table explains itself, removal is exact and crash-safe, and
//! no policy removes the newest verified backup or anything outside the destination.

use std::fs;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::common::{Env, stderr, stdout};

const DAY: i64 = 86_400;

/// A set `s` with `n` real backups (a change between each), whose catalog times are then
/// set to one a day going back from 2026-11-20 12:00 UTC (newest first).
fn daily_backups(n: usize, keep: &str) -> (Env, Vec<String>) {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    env.one_set("s", &[&data], keep);
    // The fixture's backups all happen now; pruning is what the tests do afterwards.
    env.backup_option("prune-after-backup = false");
    for i in 0..n {
        fs::write(data.join("f.txt"), format!("version {i}")).unwrap();
        env.cmd()
            .args(["backup", "--force"])
            .env("TZ", "UTC")
            .assert()
            .success();
    }
    let db = Connection::open(env.state.join("state.db")).unwrap();
    let mut ids: Vec<String> = db
        .prepare("SELECT id FROM backups ORDER BY id DESC")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    ids.truncate(n);
    let newest = 1_795_176_000; // 2026-11-20T12:00:00Z
    for (i, id) in ids.iter().enumerate() {
        db.execute(
            "UPDATE backups SET created_at = ?1 WHERE id = ?2",
            rusqlite::params![newest - i as i64 * DAY, id],
        )
        .unwrap();
    }
    (env, ids)
}

fn prune_json(env: &Env, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["prune", "--json"];
    args.extend_from_slice(extra);
    let a = env.cmd().args(&args).env("TZ", "UTC").assert().success();
    serde_json::from_str(&stdout(&a)).unwrap()
}

fn action_of(report: &serde_json::Value, id: &str) -> String {
    report[0]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .map_or_else(
            || panic!("{id} not in the prune table"),
            |r| r["action"].as_str().unwrap().to_string(),
        )
}

fn archive_of(env: &Env, id: &str) -> PathBuf {
    env.dest.join("s").join(format!("{id}.tar.zst"))
}

fn sidecar(p: &Path) -> PathBuf {
    PathBuf::from(format!("{}.sha256", p.display()))
}

#[test]
fn dry_run_explains_and_prune_removes_exactly_what_it_said() {
    let (env, ids) = daily_backups(6, "[backup.set.keep]\ndaily = 3\n");
    // The table, in plain text, names actions and reasons.
    let a = env
        .cmd()
        .args(["prune", "--dry-run"])
        .env("TZ", "UTC")
        .assert()
        .success();
    let text = stdout(&a);
    assert!(text.contains("policy daily 3 (dry run)"), "{text}");
    assert!(text.contains("newest verified, daily 2026-11-20"), "{text}");
    assert!(text.contains("would remove 3 backups"), "{text}");
    assert_eq!(env.archives("s").len(), 6, "a dry run removed something");

    let report = prune_json(&env, &[]);
    for id in &ids[..3] {
        assert_eq!(action_of(&report, id), "keep");
        assert!(archive_of(&env, id).is_file());
    }
    for id in &ids[3..] {
        assert_eq!(action_of(&report, id), "removed");
        assert!(!archive_of(&env, id).exists());
        assert!(!sidecar(&archive_of(&env, id)).exists());
    }
    let listed = env.list_json();
    assert_eq!(listed.as_array().unwrap().len(), 3);
    env.cmd().args(["verify", "--all"]).assert().success();
}

#[test]
fn a_failed_newest_backup_protects_the_whole_set() {
    let (env, ids) = daily_backups(4, "[backup.set.keep]\nlast = 1\n");
    // Damage the newest archive; verify marks it failed.
    let newest = archive_of(&env, &ids[0]);
    let mut bytes = fs::read(&newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&newest, bytes).unwrap();
    env.cmd().args(["verify", &ids[0]]).assert().code(2);
    let report = prune_json(&env, &[]);
    for id in &ids {
        assert_eq!(action_of(&report, id), "keep", "{report}");
    }
    assert!(report.to_string().contains("newest backup not verified"));
    assert_eq!(env.archives("s").len(), 4);
}

#[test]
fn a_failed_older_backup_is_removed_and_does_not_count() {
    let (env, ids) = daily_backups(4, "[backup.set.keep]\ndaily = 2\n");
    let second = archive_of(&env, &ids[1]);
    fs::OpenOptions::new()
        .write(true)
        .open(&second)
        .unwrap()
        .set_len(100)
        .unwrap();
    env.cmd().args(["verify", "--all"]).assert().code(2);
    let report = prune_json(&env, &[]);
    // The broken one is removed, and the two daily slots go to the intact newest ones.
    assert_eq!(action_of(&report, &ids[0]), "keep");
    assert_eq!(action_of(&report, &ids[1]), "removed");
    assert_eq!(action_of(&report, &ids[2]), "keep");
    assert_eq!(action_of(&report, &ids[3]), "removed");
}

#[test]
fn an_archive_deleted_by_hand_heals_the_catalog_and_is_reported() {
    let (env, ids) = daily_backups(3, "[backup.set.keep]\nlast = 5\n");
    fs::remove_file(archive_of(&env, &ids[1])).unwrap();
    let report = prune_json(&env, &[]);
    assert_eq!(action_of(&report, &ids[1]), "missing");
    let listed = env.list_json().to_string();
    assert!(!listed.contains(&ids[1]), "{listed}");
    assert_eq!(action_of(&report, &ids[0]), "keep");
}

#[test]
fn a_crash_between_deleting_the_row_and_the_file_leaves_only_an_unverified_orphan() {
    let (env, ids) = daily_backups(3, "[backup.set.keep]\nlast = 1\n");
    let a = env
        .cmd()
        .arg("prune")
        .env("TZ", "UTC")
        .env("STEWARD_CRASH_AT", "prune-after-row")
        .assert()
        .failure();
    assert!(a.get_output().status.code().is_none(), "expected an abort");
    // The first removal got as far as the row: the file is there, without its sidecar.
    let victim = archive_of(&env, &ids[1]);
    assert!(victim.is_file());
    assert!(!sidecar(&victim).exists());
    let listed = env.list_json().to_string();
    assert!(
        !listed.contains(&ids[1]),
        "catalog still lists the removed backup"
    );
    // Reindex can only bring it back as unverified; the next prune removes it.
    env.cmd().args(["backups", "reindex"]).assert().success();
    let listed = env.list_json();
    let back = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == ids[1].as_str())
        .unwrap();
    assert_eq!(back["status"], "unverified");
    let report = prune_json(&env, &[]);
    assert_eq!(action_of(&report, &ids[1]), "removed");
    assert_eq!(env.archives("s").len(), 1);
    assert_eq!(env.archives("s")[0], archive_of(&env, &ids[0]));
}

#[test]
fn a_crash_after_deleting_the_sidecar_is_finished_by_the_next_prune() {
    let (env, ids) = daily_backups(2, "[backup.set.keep]\nlast = 1\n");
    env.cmd()
        .arg("prune")
        .env("TZ", "UTC")
        .env("STEWARD_CRASH_AT", "prune-after-sidecar")
        .assert()
        .failure();
    let victim = archive_of(&env, &ids[1]);
    assert!(victim.is_file() && !sidecar(&victim).exists());
    let report = prune_json(&env, &[]);
    assert_eq!(action_of(&report, &ids[1]), "removed");
    assert!(!victim.exists());
}

#[test]
fn nothing_outside_the_destination_is_deleted() {
    let (env, ids) = daily_backups(2, "[backup.set.keep]\nlast = 1\n");
    // A catalog row that points elsewhere (edited, or from an old destination).
    let outside = env.root.join("precious.tar.zst");
    fs::write(&outside, "not a backup").unwrap();
    let db = Connection::open(env.state.join("state.db")).unwrap();
    db.execute(
        "UPDATE backups SET path = ?1 WHERE id = ?2",
        rusqlite::params![outside.to_string_lossy(), ids[1]],
    )
    .unwrap();
    let report = prune_json(&env, &[]);
    assert_eq!(action_of(&report, &ids[1]), "refused");
    assert!(outside.is_file());
}

#[test]
fn prune_runs_after_each_backup_by_default() {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    env.one_set("s", &[&data], "[backup.set.keep]\nlast = 2\n");
    for i in 0..4 {
        fs::write(data.join("f"), format!("{i}")).unwrap();
        let a = env.cmd().arg("backup").assert().success();
        if i == 3 {
            assert!(stdout(&a).contains("REMOVED"), "{}", stdout(&a));
        }
    }
    assert_eq!(env.archives("s").len(), 2);
    // prune-after-backup = false turns it off.
    env.backup_option("prune-after-backup = false");
    fs::write(data.join("f"), "again").unwrap();
    env.cmd().arg("backup").assert().success();
    assert_eq!(env.archives("s").len(), 3);
    // An unknown set is named.
    let a = env.cmd().args(["prune", "--set", "zz"]).assert().code(2);
    assert!(stderr(&a).contains("\"zz\""));
}
