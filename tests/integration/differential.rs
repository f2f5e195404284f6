//! Differential backups: only what changed since a full base, restorable with plain tar
//! from the two archives, verified against the base, never listed or restored without it,
//! and kept together by retention.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use crate::common::{Env, tool};

/// Restore the newest good backup of set `s`, without asking.
const RESTORE: [&str; 5] = ["restore", "--latest", "--set", "s", "--yes"];

const DIFF: &str = "[backup.set.differential]\nenabled = true\nfull-share = 100\n";

fn stdout(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).into_owned()
}

fn stderr(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

/// Every entry under `root`: files by content, symlinks by target, folders as `/`.
fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut m = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
        let t = e.file_type();
        let v = if t.is_symlink() {
            let mut v = b"-> ".to_vec();
            v.extend_from_slice(
                fs::read_link(e.path())
                    .unwrap()
                    .as_os_str()
                    .as_encoded_bytes(),
            );
            v
        } else if t.is_dir() {
            b"/".to_vec()
        } else {
            fs::read(e.path()).unwrap()
        };
        m.insert(rel, v);
    }
    m
}

/// A set `s` over `<root>/data` with differentials on: a large file that never changes,
/// odd file names, a folder that will go, a symlink and a SQLite database; backed up once
/// (the full base). Returns the env, the data folder and the base archive.
fn with_base() -> (Env, PathBuf, PathBuf) {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(data.join("gone/deeper")).unwrap();
    fs::create_dir_all(data.join("keep")).unwrap();
    crate::common::random_file(&data.join("keep/model.bin"), 3 << 20, 7);
    fs::write(data.join("keep/name with\nnewline"), "odd\n").unwrap();
    fs::write(data.join("gone/deeper/x"), "x\n").unwrap();
    fs::write(data.join("gone/y"), "y\n").unwrap();
    fs::write(data.join("notes.txt"), "v1\n").unwrap();
    symlink("notes.txt", data.join("link")).unwrap();
    let db = rusqlite::Connection::open(data.join("app.db")).unwrap();
    db.execute_batch("CREATE TABLE t (v); INSERT INTO t VALUES (1), (2);")
        .unwrap();
    drop(db);
    env.one_set("s", &[&data], DIFF);
    let a = env.cmd().arg("backup").assert().success();
    assert!(
        !stdout(&a).contains("differential on"),
        "the first backup is a full one: {}",
        stdout(&a)
    );
    let base = env.archives("s").pop().unwrap();
    (env, data, base)
}

/// Changes the data the way a day does: one file changed, a folder and an odd name
/// deleted, a file added, the symlink pointed elsewhere, rows added; then backs up (a
/// differential). Returns the differential archive.
fn change_and_back_up(env: &Env, data: &Path) -> PathBuf {
    fs::write(data.join("notes.txt"), "v2, longer\n").unwrap();
    fs::remove_dir_all(data.join("gone")).unwrap();
    fs::remove_file(data.join("keep/name with\nnewline")).unwrap();
    fs::write(data.join("keep/new file"), "new\n").unwrap();
    fs::remove_file(data.join("link")).unwrap();
    symlink("keep/new file", data.join("link")).unwrap();
    let db = rusqlite::Connection::open(data.join("app.db")).unwrap();
    db.execute_batch("INSERT INTO t VALUES (3);").unwrap();
    drop(db);
    let a = env.cmd().arg("backup").assert().success();
    assert!(stdout(&a).contains("differential on"), "{}", stdout(&a));
    env.archives("s").pop().unwrap()
}

fn listing(archive: &Path, dir: &Path) -> String {
    tool(
        "tar",
        &["--zstd".as_ref(), "-tf".as_ref(), archive.as_os_str()],
        dir,
    )
}

#[test]
fn a_differential_holds_only_what_changed_and_plain_tools_restore_it_byte_identical() {
    let (env, data, base) = with_base();
    let diff = change_and_back_up(&env, &data);
    let want = tree(&data);
    // Only the changed entries (and the folders) are in it; the 3 MiB model is not.
    let list = listing(&diff, &env.root);
    assert!(!list.contains("model.bin"), "{list}");
    assert!(
        list.contains("notes.txt") && list.contains("new file"),
        "{list}"
    );
    assert!(list.contains(".steward/DELETED"), "{list}");
    assert!(
        fs::metadata(&diff).unwrap().len() * 10 < fs::metadata(&base).unwrap().len(),
        "the differential is not much smaller than its base"
    );
    // The README's recipe, with nothing but tar, xargs, rm and sha256sum.
    let r = env.root.join("plain");
    fs::create_dir_all(&r).unwrap();
    for a in [&base, &diff] {
        tool(
            "tar",
            &["--zstd".as_ref(), "-xf".as_ref(), a.as_os_str()],
            &r,
        );
    }
    tool(
        "sh",
        &["-c".as_ref(), "xargs -0 rm -rf < .steward/DELETED".as_ref()],
        &r,
    );
    tool(
        "sha256sum",
        &[
            "-c".as_ref(),
            "--quiet".as_ref(),
            ".steward/MANIFEST.sha256".as_ref(),
        ],
        &r,
    );
    let got = tree(&r.join(data.strip_prefix("/").unwrap()));
    assert_eq!(got, want);
    // The DELETED list is NUL-separated: the name with a newline is one entry.
    let deleted = fs::read(r.join(".steward/DELETED")).unwrap();
    let names: Vec<&[u8]> = deleted
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.ends_with(b"keep/name with\nnewline")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.ends_with(b"gone/deeper/x")),
        "{names:?}"
    );

    // The runbook's block for a differential, as written.
    let runbook =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/restore/README.md")).unwrap();
    let from = runbook.find("**A differential**").unwrap();
    let start = runbook[from..].find("```sh\n").unwrap() + from + 6;
    let end = runbook[start..].find("```").unwrap() + start;
    let staging = env.root.join("staging");
    let id = diff
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace(".tar.zst", "");
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &runbook[start..end]])
        .env("DEST", &env.dest)
        .env("SET", "s")
        .env("ID", &id)
        .env("LIVE", &data)
        .env("STAGING", &staging)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the runbook's block failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree(&staging.join(data.strip_prefix("/").unwrap())), want);
}

#[test]
fn steward_restores_a_differential_in_place_to_a_folder_and_by_path() {
    let (env, data, _) = with_base();
    change_and_back_up(&env, &data);
    let want = tree(&data);
    // Damage, then restore in place: the tree of the differential, whole.
    fs::write(data.join("keep/model.bin"), "ransom").unwrap();
    fs::write(data.join("stray"), "not in the backup").unwrap();
    let a = env.cmd().args(RESTORE).assert().success();
    assert!(stdout(&a).contains("SQLite checked: 1"), "{}", stdout(&a));
    assert_eq!(tree(&data), want);
    // --to a folder, and --path of a file only the base holds.
    let to = env.root.join("elsewhere");
    env.cmd()
        .args(RESTORE)
        .arg("--to")
        .arg(&to)
        .assert()
        .success();
    assert_eq!(tree(&to.join(data.strip_prefix("/").unwrap())), want);
    fs::write(data.join("keep/model.bin"), "damaged again").unwrap();
    env.cmd()
        .args(RESTORE)
        .args(["--path", "keep/model.bin"])
        .assert()
        .success();
    assert_eq!(tree(&data), want);
}

#[test]
fn one_flipped_byte_in_the_base_or_the_differential_is_caught_and_refuses_the_restore() {
    for damaged in ["base", "differential"] {
        let (env, data, base) = with_base();
        let diff = change_and_back_up(&env, &data);
        // A service whose stop leaves a mark: the refusal comes before any stop.
        let mark = env.root.join("stopped");
        let text = fs::read_to_string(&env.config)
            .unwrap()
            .replace("name = \"s\"", "name = \"s\"\nquiesce = [\"app\"]");
        fs::write(
            &env.config,
            format!(
                "{text}\n[[service]]\nname = \"app\"\nmanager = \"command\"\n\
                 start = \"true\"\nstop = \"touch {}\"\nstatus = \"true\"\n",
                mark.display()
            ),
        )
        .unwrap();
        let victim = if damaged == "base" { &base } else { &diff };
        let mut bytes = fs::read(victim).unwrap();
        let at = bytes.len() / 3;
        bytes[at] ^= 0x40;
        fs::write(victim, bytes).unwrap();
        let before = tree(&data);
        let a = env.cmd().args(RESTORE).assert().code(2);
        assert!(
            !mark.exists(),
            "{damaged}: a service was stopped: {}",
            stderr(&a)
        );
        assert_eq!(tree(&data), before, "{damaged}: live data changed");
        // verify names the damaged archive, and a damaged base fails the differential.
        let a = env.cmd().args(["verify", "--latest"]).assert().code(2);
        let out = format!("{}{}", stdout(&a), stderr(&a));
        let base_id = base
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".tar.zst", "");
        if damaged == "base" {
            assert!(out.contains(&format!("its base {base_id} failed")), "{out}");
        }
        assert!(out.contains("FAIL") || out.contains("fail"), "{out}");
    }
}

#[test]
fn a_differential_whose_base_was_deleted_by_hand_is_reported_and_never_restored() {
    let (env, data, base) = with_base();
    let diff = change_and_back_up(&env, &data);
    let base_id = base
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace(".tar.zst", "");
    let diff_id = diff
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace(".tar.zst", "");
    fs::remove_file(&base).unwrap();
    fs::remove_file(base.with_extension("zst.sha256")).unwrap();
    let a = env.cmd().args(["backups", "reindex"]).assert();
    let out = format!("{}{}", stdout(&a), stderr(&a));
    assert!(
        out.contains(&format!("base {base_id} is not on the disk")),
        "reindex: {out}"
    );
    let a = env.cmd().args(["verify", &diff_id]).assert().code(2);
    let out = format!("{}{}", stdout(&a), stderr(&a));
    assert!(
        out.contains(&format!("needs its base {base_id}")),
        "verify: {out}"
    );
    let a = env.cmd().arg("check").assert().code(2);
    let out = format!("{}{}", stdout(&a), stderr(&a));
    assert!(
        out.contains(&format!("cannot be restored: its base {base_id} is gone")),
        "check: {out}"
    );
    let a = env.cmd().args(["backups", "list"]).assert().success();
    assert!(
        stdout(&a).contains(&format!("differential on {base_id}")),
        "{}",
        stdout(&a)
    );
    let before = tree(&data);
    let a = env.cmd().args(RESTORE).assert().failure();
    assert!(stderr(&a).contains("no verified backup"), "{}", stderr(&a));
    let a = env
        .cmd()
        .args(["restore", &diff_id, "--yes"])
        .assert()
        .failure();
    assert!(stderr(&a).contains(&base_id), "{}", stderr(&a));
    assert_eq!(tree(&data), before);
    // Retention does not finish the job of whoever deleted the base: the newest backup is
    // not restorable, so nothing is removed (the base may still be offsite).
    let text = fs::read_to_string(&env.config).unwrap();
    fs::write(&env.config, format!("{text}\n[backup.keep]\nlast = 1\n")).unwrap();
    env.cmd().arg("prune").assert().success();
    assert!(
        diff.exists(),
        "prune removed the newest backup after its base was deleted"
    );
}

/// Regression: a base replaced on the disk by another valid archive under its name (with
/// a sidecar that agrees) was taken back as verified by `backups reindex`, and the pair
/// then restored the attacker's data.
#[test]
fn regression_reindex_never_takes_a_replaced_base_back_as_verified() {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("a"), "the real content\n").unwrap();
    fs::write(data.join("b"), "b\n").unwrap();
    env.one_set("s", &[&data], DIFF);
    let t = "1800000000";
    env.cmd()
        .arg("backup")
        .env("STEWARD_NOW", t)
        .assert()
        .success();
    fs::write(data.join("b"), "b changed\n").unwrap();
    env.cmd()
        .arg("backup")
        .env("STEWARD_NOW", "1800003600")
        .assert()
        .success();
    let want = tree(&data);
    // The forgery: the same set and paths, other content, the same clock second, so the
    // same ID and a sidecar of its own; then laid over the real base.
    let forger = Env::new();
    forger.write_config(&format!(
        "[[backup.set]]\nname = \"s\"\npaths = [\"{}\"]\n",
        data.display()
    ));
    fs::write(data.join("a"), "the attacker's content\n").unwrap();
    forger
        .cmd()
        .arg("backup")
        .env("STEWARD_NOW", t)
        .assert()
        .success();
    fs::write(data.join("a"), "the real content\n").unwrap();
    let base = env.archives("s").remove(0);
    let forged = forger.archives("s").remove(0);
    assert_eq!(base.file_name(), forged.file_name(), "the same ID");
    fs::copy(&forged, &base).unwrap();
    fs::copy(
        forged.with_extension("zst.sha256"),
        base.with_extension("zst.sha256"),
    )
    .unwrap();
    let a = env.cmd().args(["backups", "reindex"]).assert();
    let out = format!("{}{}", stdout(&a), stderr(&a));
    assert!(out.contains("replaced since it was written"), "{out}");
    env.cmd().args(["verify", "--latest"]).assert().code(2);
    fs::write(data.join("b"), "damaged\n").unwrap();
    env.cmd().args(RESTORE).assert().failure();
    let mut now = want.clone();
    now.insert(PathBuf::from("b"), b"damaged\n".to_vec());
    assert_eq!(tree(&data), now, "live data changed");
}

#[test]
fn retention_keeps_the_base_a_kept_differential_needs_and_says_so() {
    let (env, data, base) = with_base();
    let base_id = base
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace(".tar.zst", "");
    change_and_back_up(&env, &data);
    fs::write(data.join("notes.txt"), "v3\n").unwrap();
    env.cmd().arg("backup").assert().success();
    // Keep only the newest: it is a differential, so its base stays too, and says why.
    let text = fs::read_to_string(&env.config).unwrap();
    fs::write(&env.config, format!("{text}\n[backup.keep]\nlast = 1\n")).unwrap();
    let a = env
        .cmd()
        .args(["prune", "--dry-run", "--json"])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    let rows = v[0]["rows"]
        .as_array()
        .or(v["rows"].as_array())
        .cloned()
        .unwrap_or_default();
    let row = |id: &str| rows.iter().find(|r| r["id"] == id).cloned().unwrap();
    let b = row(&base_id);
    assert_eq!(b["action"], "keep", "{b}");
    assert!(b["reasons"].to_string().contains("base of"), "{b}");
    let removed: Vec<_> = rows.iter().filter(|r| r["action"] == "remove").collect();
    assert_eq!(removed.len(), 1, "{rows:?}");
    env.cmd().arg("prune").assert().success();
    assert!(base.exists());
    env.cmd().args(["verify", "--latest"]).assert().success();
}

#[test]
fn sigkill_at_20_moments_of_a_differential_backup_lists_nothing_torn() {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    for i in 0..6 {
        crate::common::random_file(&data.join(format!("blob{i}")), 1 << 20, i);
    }
    env.one_set("s", &[&data], DIFF);
    env.cmd().arg("backup").assert().success();
    let base = env.archives("s").pop().unwrap();
    // Each round changes half the tree, so each differential has bytes to write.
    let change = |round: u64| {
        for i in 0..3 {
            crate::common::random_file(
                &data.join(format!("blob{i}")),
                1 << 20,
                100 + round * 7 + i,
            );
        }
    };
    change(0);
    let t0 = std::time::Instant::now();
    let a = env.cmd().arg("backup").assert().success();
    let normal = t0.elapsed();
    assert!(stdout(&a).contains("differential on"), "{}", stdout(&a));
    let mut finished = 0;
    for k in 1..=20u32 {
        change(u64::from(k));
        let mut child = env
            .std_cmd()
            .arg("backup")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Fault injection at a chosen moment, not synchronisation.
        std::thread::sleep(normal * k / 21);
        child.kill().unwrap();
        if child.wait().unwrap().success() {
            finished += 1;
        }
        // Nothing torn is listed: every listed backup is whole and verifies, and no
        // partial is visible.
        let listed: Vec<serde_json::Value> = serde_json::from_str(&stdout(
            &env.cmd()
                .args(["backups", "list", "--json"])
                .assert()
                .success(),
        ))
        .unwrap();
        for b in &listed {
            assert_eq!(b["status"], "verified", "kill {k}: {b}");
        }
        // A kill between the rename and the catalog's row leaves one archive that no
        // backup owns (yet): at most one, and the next run removes it.
        let on_disk = env.archives("s").len();
        assert!(
            on_disk == listed.len() || on_disk == listed.len() + 1,
            "kill {k}: {on_disk} archives, {} listed",
            listed.len()
        );
        env.cmd().args(["verify", "--latest"]).assert().success();
        // The next run cleans up and takes a whole differential on the same base.
        let a = env.cmd().arg("backup").args(["--force"]).assert().success();
        assert!(
            stdout(&a).contains("differential on"),
            "kill {k}: {}",
            stdout(&a)
        );
        let names = env.set_dir_names("s");
        assert!(
            names.iter().all(|n| !n.ends_with(".partial")),
            "kill {k}: {names:?}"
        );
        assert_eq!(
            env.list_json().as_array().unwrap().len(),
            env.archives("s").len(),
            "kill {k}: an archive on the disk that no backup lists"
        );
    }
    assert!(base.exists());
    assert!(finished < 20, "no kill landed before the end of the run");
    // The newest restores byte-identical.
    let want = tree(&data);
    fs::remove_dir_all(&data).unwrap();
    env.cmd().args(RESTORE).assert().success();
    assert_eq!(tree(&data), want);
}

/// A set `s` with differentials on over one small file, not backed up yet.
fn one_file_set() -> Env {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("a"), "a\n").unwrap();
    env.one_set("s", &[&data], DIFF);
    env
}

/// Regression (CI, kill 18 of 20): a run killed after renaming its archive into place but
/// before recording it left an archive no backup listed, which no prune would ever remove.
#[test]
fn regression_a_run_killed_between_publishing_and_recording_leaves_no_unlisted_archive() {
    let env = one_file_set();
    let a = env
        .cmd()
        .arg("backup")
        .env("STEWARD_NOW", "1800000000")
        .env("STEWARD_CRASH_AT", "backup-after-publish")
        .assert()
        .failure();
    assert!(a.get_output().status.code().is_none(), "expected an abort");
    let orphan = env.archives("s").pop().expect("the published archive");
    let id = orphan
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace(".tar.zst", "");
    assert!(env.state.join("index").join(&id).exists(), "its tree index");
    assert_eq!(env.list_json().as_array().unwrap().len(), 0);
    // The next run (a minute later, so under another name) removes it, with its sidecar
    // and index, and says so.
    let a = env
        .cmd()
        .arg("backup")
        .env("STEWARD_NOW", "1800000060")
        .assert()
        .success();
    assert!(
        stderr(&a).contains("its run was killed before it recorded the backup")
            || stdout(&a).contains("its run was killed before it recorded the backup"),
        "{}{}",
        stdout(&a),
        stderr(&a)
    );
    assert!(!orphan.exists());
    assert!(!PathBuf::from(format!("{}.sha256", orphan.display())).exists());
    assert!(!env.state.join("index").join(&id).exists());
    let listed = env.list_json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(env.archives("s").len(), 1);
    // A note the catalog no longer needs leaves nothing behind either.
    let a = env
        .cmd()
        .args(["backup", "--force"])
        .env("STEWARD_NOW", "1800000120")
        .assert()
        .success();
    assert!(!stdout(&a).contains("was killed") && !stderr(&a).contains("was killed"));
    assert_eq!(env.archives("s").len(), 2);
}

/// What `backups reindex` adopted after such a kill is a backup like any other: the next
/// run keeps it.
#[test]
fn an_unrecorded_archive_adopted_by_reindex_is_kept_by_the_next_run() {
    let env = one_file_set();
    env.cmd()
        .arg("backup")
        .env("STEWARD_CRASH_AT", "backup-after-publish")
        .assert()
        .failure();
    let orphan = env.archives("s").pop().unwrap();
    env.cmd().args(["backups", "reindex"]).assert().success();
    env.cmd().args(["backup", "--force"]).assert().success();
    assert!(orphan.exists());
    let listed = env.list_json().to_string();
    let id = orphan
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace(".tar.zst", "");
    assert!(listed.contains(&id), "{listed}");
    assert_eq!(env.archives("s").len(), 2);
}

/// Regression: a file of the base that is a FIFO now (skipped, as a full backup would)
/// was neither stored, carried nor deleted, so the pair failed its check against the
/// base and could not be restored.
#[test]
fn regression_an_entry_skipped_now_is_deleted_from_the_base_not_left_stale() {
    let (env, data, _) = with_base();
    fs::remove_file(data.join("notes.txt")).unwrap();
    tool("mkfifo", &["notes.txt".as_ref()], &data);
    let a = env.cmd().arg("backup").assert().success();
    assert!(stdout(&a).contains("differential on"), "{}", stdout(&a));
    env.cmd().args(["verify", "--latest"]).assert().success();
    let diff = env.archives("s").pop().unwrap();
    let r = env.root.join("look");
    fs::create_dir_all(&r).unwrap();
    tool(
        "tar",
        &[
            "--zstd".as_ref(),
            "-xf".as_ref(),
            diff.as_os_str(),
            ".steward/DELETED".as_ref(),
        ],
        &r,
    );
    let deleted = fs::read(r.join(".steward/DELETED")).unwrap();
    assert!(
        deleted
            .split(|b| *b == 0)
            .any(|n| n.ends_with(b"data/notes.txt")),
        "{}",
        String::from_utf8_lossy(&deleted)
    );
}

#[test]
fn offsite_pushes_the_base_first_and_a_disaster_restore_of_a_differential_is_byte_identical_on_seaweedfs()
 {
    offsite_round_trip(crate::s3::Kind::Seaweed);
}

#[test]
fn offsite_pushes_the_base_first_and_a_disaster_restore_of_a_differential_is_byte_identical_on_moto()
 {
    offsite_round_trip(crate::s3::Kind::Moto);
}

fn offsite_round_trip(kind: crate::s3::Kind) {
    let (old, data, base) = with_base();
    let server = crate::s3::S3Server::start_kind(kind, &old.root.join("s3"), &["far"], false);
    let (identity, recipient) = crate::s3::age_key(&old.root);
    // The base was taken before the target existed: the differential's push carries it.
    let offsite = server.offsite_toml(&old.root, "far", Some(&recipient), "");
    old.one_set("s", &[&data], &format!("{DIFF}{offsite}"));
    let diff = change_and_back_up(&old, &data);
    let want = tree(&data);
    let id_of = |p: &Path| {
        p.file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".tar.zst", "")
    };
    let (base_id, diff_id) = (id_of(&base), id_of(&diff));
    let conn = rusqlite::Connection::open(old.state.join("state.db")).unwrap();
    let mut q = conn
        .prepare("SELECT backup_id FROM offsite_copies ORDER BY rowid")
        .unwrap();
    let pushed: Vec<String> = q
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(pushed, vec![base_id.clone(), diff_id.clone()], "base first");

    // A fresh machine: the config, the old host's signing key, the credentials and the
    // identity; no state, no backup disk.
    let kit = crate::offsite::signing_key(&old);
    let new = Env::new();
    fs::copy(old.root.join("s3.env"), new.root.join("s3.env")).unwrap();
    let moved = offsite.replace(
        &old.root.display().to_string(),
        &new.root.display().to_string(),
    );
    new.one_set(
        "s",
        &[&data],
        &format!("{DIFF}{moved}signing-keys = [\"{kit}\"]\n"),
    );
    let key = new.root.join("key.txt");
    fs::copy(&identity, &key).unwrap();
    let to = new.root.join("restored");
    new.cmd()
        .args(["restore", &diff_id, "--from-offsite", "--identity"])
        .arg(&key)
        .arg("--to")
        .arg(&to)
        .arg("--yes")
        .assert()
        .success();
    assert_eq!(new.archives("s").len(), 2, "the base was fetched with it");
    assert_eq!(tree(&to.join(data.strip_prefix("/").unwrap())), want);
}

#[test]
fn restore_latest_names_the_newer_points_it_passes_over_when_a_base_failed() {
    let (env, data, _) = with_base();
    change_and_back_up(&env, &data);
    let older = tree(&data);
    fs::write(data.join("notes.txt"), "v3\n").unwrap();
    env.cmd().args(["backup", "--full"]).assert().success();
    let base2 = env.archives("s").pop().unwrap();
    fs::write(data.join("notes.txt"), "v4, the newest\n").unwrap();
    env.cmd().arg("backup").assert().success();
    let id = |p: &Path| {
        p.file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".tar.zst", "")
    };
    let diff2 = id(&env.archives("s").pop().unwrap());
    let mut bytes = fs::read(&base2).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    fs::write(&base2, bytes).unwrap();
    env.cmd().args(["verify", "--latest"]).assert().code(2);
    let a = env.cmd().args(RESTORE).assert().success();
    let err = stderr(&a);
    assert!(
        err.contains(&format!("not {diff2}: it failed verification"))
            && err.contains(&format!("its base {} failed", id(&base2))),
        "{err}"
    );
    assert!(
        err.contains(&format!("not {}: it failed verification", id(&base2))),
        "{err}"
    );
    assert_eq!(
        tree(&data),
        older,
        "the newest good point is the first differential"
    );
}

/// The runbook's deletion step, run on a hostile `DELETED`: a plain entry below the data
/// goes, an absolute one, a `..` one and one through a symlink stop it, and nothing
/// outside the staging folder is touched.
#[test]
fn the_runbooks_deletion_step_refuses_a_hostile_deleted_list() {
    let runbook =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/restore/README.md")).unwrap();
    let start = runbook.find("xargs -0 -n 1 sh -c").unwrap();
    let end = runbook[start..].find("< .steward/DELETED").unwrap() + start + 18;
    let step = &runbook[start..end];
    let env = Env::new();
    let outside = env.root.join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("victim"), "keep me").unwrap();
    for (hostile, name) in [
        (outside.join("victim").display().to_string(), "absolute"),
        ("srv/data/../../outside/victim".to_string(), "dot-dot"),
        ("srv/data/ln/victim".to_string(), "symlink"),
        ("srv/other/x".to_string(), "outside the data"),
    ] {
        let staging = env.root.join(format!("staging-{}", name.replace(' ', "-")));
        fs::create_dir_all(staging.join("srv/data")).unwrap();
        fs::create_dir_all(staging.join(".steward")).unwrap();
        fs::create_dir_all(staging.join("srv/other")).unwrap();
        fs::write(staging.join("srv/other/x"), "x").unwrap();
        fs::write(staging.join("srv/data/gone"), "old").unwrap();
        symlink(&outside, staging.join("srv/data/ln")).unwrap();
        let list = format!("srv/data/gone\0{hostile}\0");
        fs::write(staging.join(".steward/DELETED"), list).unwrap();
        let out = std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", step])
            .env("LIVE", "/srv/data")
            .current_dir(&staging)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name}: the step went on");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("refusing"),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !staging.join("srv/data/gone").exists(),
            "{name}: the plain entry stayed"
        );
        assert!(
            outside.join("victim").exists(),
            "{name}: deleted outside the staging"
        );
        assert!(
            staging.join("srv/other/x").exists(),
            "{name}: deleted outside the data"
        );
    }
}

/// Regression: a file rewritten in place at the same size with its mtime put back
/// (`cp -p`, `touch -r`) looked unchanged, and the differential carried the base's old
/// content for it: the restore brought back AAAA where the file held BBBB.
#[test]
fn regression_a_same_size_rewrite_with_its_mtime_put_back_is_stored_again() {
    let (env, data, _) = with_base();
    let f = data.join("notes.txt");
    let reference = env.root.join("ref");
    fs::write(&reference, "").unwrap();
    tool(
        "touch",
        &["-r".as_ref(), f.as_os_str(), reference.as_os_str()],
        &env.root,
    );
    fs::write(&f, "v9\n").unwrap();
    tool(
        "touch",
        &["-r".as_ref(), reference.as_os_str(), f.as_os_str()],
        &env.root,
    );
    let a = env.cmd().arg("backup").assert().success();
    assert!(stdout(&a).contains("differential on"), "{}", stdout(&a));
    let want = tree(&data);
    fs::write(&f, "damaged").unwrap();
    env.cmd().args(RESTORE).assert().success();
    assert_eq!(tree(&data), want);
    assert_eq!(fs::read(&f).unwrap(), b"v9\n");
}
