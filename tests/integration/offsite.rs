//! Offsite copies against a real S3 server on loopback (SeaweedFS): encrypted round trip
//! readable with the `age` CLI and tar, tampering caught, wrong keys and a missing bucket
//! named, a server killed mid-upload, and the disaster restore on a fresh machine.

use std::fs;
use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::common::{Env, check_manifest, random_file, stderr, stdout, tool, wait_for};
use crate::s3::{Kind, S3Server, age_key};

/// A small data tree with a SQLite database.
fn data_tree(root: &Path) -> std::path::PathBuf {
    let data = root.join("data");
    fs::create_dir_all(data.join("sub")).unwrap();
    random_file(&data.join("model.bin"), 7 << 20, 3);
    fs::write(data.join("sub/notes.txt"), "keep me\n").unwrap();
    let db = Connection::open(data.join("app.db")).unwrap();
    db.execute_batch("CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('a'), ('b');")
        .unwrap();
    data
}

/// The host's signing public key, as `steward offsite key` prints it for the recovery kit.
pub fn signing_key(env: &Env) -> String {
    let a = env
        .cmd()
        .args(["offsite", "key", "--json"])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    v["public-key"].as_str().unwrap().to_string()
}

fn only_key(env: &Env) -> String {
    let conn = Connection::open(env.state.join("state.db")).unwrap();
    conn.query_row("SELECT key FROM offsite_copies", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn encrypted_copy_round_trips_and_opens_with_the_age_cli_and_tar_on_seaweedfs() {
    encrypted_copy_round_trips_and_opens_with_the_age_cli_and_tar(Kind::Seaweed);
}

#[test]
fn encrypted_copy_round_trips_and_opens_with_the_age_cli_and_tar_on_moto() {
    encrypted_copy_round_trips_and_opens_with_the_age_cli_and_tar(Kind::Moto);
}

fn encrypted_copy_round_trips_and_opens_with_the_age_cli_and_tar(kind: Kind) {
    let env = Env::new();
    let server = S3Server::start_kind(kind, &env.root.join("s3"), &["round-trip"], false);
    let (identity, recipient) = age_key(&env.root);
    let data = data_tree(&env.root);
    env.one_set(
        "data",
        &[&data],
        &server.offsite_toml(&env.root, "round-trip", Some(&recipient), ""),
    );
    let a = env.cmd().arg("backup").assert().success();
    assert!(
        stdout(&a).contains("offsite offsite: steward/"),
        "{}",
        stdout(&a)
    );
    let key = only_key(&env);
    assert!(
        key.ends_with(".tar.zst.age") && key.contains("/data/"),
        "{key}"
    );

    // The object is age ciphertext: the plain tools open it.
    let object = server.object("round-trip", &key);
    assert!(object.starts_with(b"age-encryption.org/v1"));
    let enc = env.root.join("copy.age");
    fs::write(&enc, &object).unwrap();
    let out = env.root.join("opened");
    fs::create_dir_all(&out).unwrap();
    let script = format!(
        "age -d -i '{}' '{}' | tar --zstd -x -C '{}'",
        identity.display(),
        enc.display(),
        out.display()
    );
    tool("sh", &["-c".as_ref(), script.as_ref()], &env.root);
    let listed = check_manifest(&out);
    assert_eq!(listed, "");
    let inside = out.join(data.strip_prefix("/").unwrap());
    assert_eq!(
        fs::read(inside.join("model.bin")).unwrap(),
        fs::read(data.join("model.bin")).unwrap()
    );

    // The description beside it, listing and checking.
    let desc: serde_json::Value =
        serde_json::from_slice(&server.object("round-trip", &format!("{key}.json"))).unwrap();
    assert_eq!(desc["encrypted"], true);
    assert_eq!(desc["recipients"][0], recipient.as_str());
    let a = env.cmd().args(["offsite", "list"]).assert().success();
    assert!(
        stdout(&a).contains("data") && stdout(&a).contains("yes"),
        "{}",
        stdout(&a)
    );
    env.cmd().args(["verify", "--offsite"]).assert().success();
    // The description is signed: minisign alone checks it with the recovery kit's key.
    let desc_file = env.root.join("copy.json");
    let sig_file = env.root.join("copy.json.minisig");
    fs::write(
        &desc_file,
        server.object("round-trip", &format!("{key}.json")),
    )
    .unwrap();
    fs::write(
        &sig_file,
        server.object("round-trip", &format!("{key}.json.minisig")),
    )
    .unwrap();
    let kit = signing_key(&env);
    tool(
        "minisign",
        &[
            "-V".as_ref(),
            "-m".as_ref(),
            desc_file.as_os_str(),
            "-x".as_ref(),
            sig_file.as_os_str(),
            "-P".as_ref(),
            kit.as_ref(),
        ],
        &env.root,
    );
    // With the identity the whole chain is checked: decrypt, zstd, tar, manifest.
    let a = env
        .cmd()
        .args(["verify", "--offsite", "--identity"])
        .arg(&identity)
        .assert()
        .success();
    assert!(stdout(&a).contains("ok "), "{}", stdout(&a));
    assert!(!env.state.join("offsite-check").exists());
    // A second push finds nothing to do.
    let a = env.cmd().args(["offsite", "push"]).assert().success();
    assert!(stdout(&a).contains("nothing to upload"), "{}", stdout(&a));
}

#[test]
fn a_tampered_object_fails_verify_naming_it_on_seaweedfs() {
    a_tampered_object_fails_verify_naming_it(Kind::Seaweed);
}

#[test]
fn a_tampered_object_fails_verify_naming_it_on_moto() {
    a_tampered_object_fails_verify_naming_it(Kind::Moto);
}

fn a_tampered_object_fails_verify_naming_it(kind: Kind) {
    let env = Env::new();
    let server = S3Server::start_kind(kind, &env.root.join("s3"), &["tamper"], false);
    let (_, recipient) = age_key(&env.root);
    let data = data_tree(&env.root);
    env.one_set(
        "data",
        &[&data],
        &server.offsite_toml(&env.root, "tamper", Some(&recipient), ""),
    );
    env.cmd().arg("backup").assert().success();
    let key = only_key(&env);
    let mut bytes = server.object("tamper", &key);
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    server.tamper("tamper", &key, &bytes);
    let a = env.cmd().args(["verify", "--offsite"]).assert().code(2);
    let out = stdout(&a);
    assert!(out.contains("FAILED") && out.contains(&key), "{out}");
    assert!(out.contains("does not match its upload"), "{out}");
}

#[test]
fn wrong_keys_and_a_missing_bucket_are_named() {
    let env = Env::new();
    let server = S3Server::start(&env.root.join("s3"), &["real"]);
    let data = data_tree(&env.root);
    env.one_set(
        "data",
        &[&data],
        &server.offsite_toml(&env.root, "missing", None, ""),
    );
    // The backup itself is kept; the failed copy fails the run and names the cause.
    let a = env.cmd().arg("backup").assert().code(2);
    assert!(stderr(&a).contains("404 NoSuchBucket"), "{}", stderr(&a));
    assert_eq!(env.archives("data").len(), 1);
    env.one_set(
        "data",
        &[&data],
        &server.offsite_toml(&env.root, "real", None, ""),
    );
    fs::write(
        env.root.join("s3.env"),
        "AWS_ACCESS_KEY_ID=AKSTEWARDTEST\nAWS_SECRET_ACCESS_KEY=wrong\n",
    )
    .unwrap();
    let a = env.cmd().args(["offsite", "push"]).assert().code(2);
    assert!(
        stderr(&a).contains("403 SignatureDoesNotMatch"),
        "{}",
        stderr(&a)
    );
    // The secret never appears in messages or in `config check`.
    let a = env.cmd().args(["config", "check"]).assert().success();
    assert!(!stdout(&a).contains("wrong") && !stderr(&a).contains("wrong"));
}

#[test]
fn a_server_killed_mid_upload_leaves_no_copy_and_the_next_push_completes() {
    let env = Env::new();
    let mut server = S3Server::start(&env.root.join("s3"), &["crash"]);
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    random_file(&data.join("big.bin"), 24 << 20, 11);
    // Slow enough (4 MiB/s over 5 MiB parts) to be caught in the middle.
    env.one_set(
        "data",
        &[&data],
        &server.offsite_toml(&env.root, "crash", None, "bandwidth-limit = \"4MiB\""),
    );
    let mut child = env.std_cmd_with(&["backup"]);
    let mut child = child.spawn().unwrap();
    let db = env.state.join("state.db");
    wait_for("an upload in flight", Duration::from_mins(1), || {
        Connection::open(&db)
            .and_then(|c| {
                c.query_row("SELECT count(*) FROM offsite_uploads", [], |r| {
                    r.get::<_, i64>(0)
                })
            })
            .is_ok_and(|n| n == 1)
    });
    server.kill();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(2));
    let count = |sql: &str| -> i64 {
        Connection::open(&db)
            .unwrap()
            .query_row(sql, [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count("SELECT count(*) FROM offsite_copies"), 0);
    server.restart();
    // Nothing half-written is listed.
    let a = env.cmd().args(["offsite", "list"]).assert().success();
    assert!(stdout(&a).contains("no offsite copies"), "{}", stdout(&a));
    env.cmd().args(["offsite", "push"]).assert().success();
    assert_eq!(count("SELECT count(*) FROM offsite_copies"), 1);
    assert_eq!(count("SELECT count(*) FROM offsite_uploads"), 0);
    env.cmd().args(["verify", "--offsite"]).assert().success();
}

#[test]
fn disaster_restore_on_a_fresh_machine_is_byte_identical_on_seaweedfs() {
    disaster_restore_on_a_fresh_machine_is_byte_identical(Kind::Seaweed);
}

#[test]
fn disaster_restore_on_a_fresh_machine_is_byte_identical_on_moto() {
    disaster_restore_on_a_fresh_machine_is_byte_identical(Kind::Moto);
}

fn disaster_restore_on_a_fresh_machine_is_byte_identical(kind: Kind) {
    let old = Env::new();
    let server = S3Server::start_kind(kind, &old.root.join("s3"), &["disaster"], false);
    let (identity, recipient) = age_key(&old.root);
    let data = data_tree(&old.root);
    let offsite = server.offsite_toml(&old.root, "disaster", Some(&recipient), "");
    old.one_set("data", &[&data], &offsite);
    old.cmd().arg("backup").assert().success();
    let id: String = Connection::open(old.state.join("state.db"))
        .unwrap()
        .query_row("SELECT backup_id FROM offsite_copies", [], |r| r.get(0))
        .unwrap();

    // The new machine: the config (with the old host's signing key from the recovery
    // kit), the credentials and the identity; no state, no disk.
    let kit = signing_key(&old);
    let new = Env::new();
    fs::copy(old.root.join("s3.env"), new.root.join("s3.env")).unwrap();
    new.one_set(
        "data",
        &[&data],
        &format!(
            "{}signing-keys = [\"{kit}\"]\n",
            offsite.replace(
                &old.root.display().to_string(),
                &new.root.display().to_string(),
            )
        ),
    );
    let a = new
        .cmd()
        .args(["offsite", "list", "--all-hosts"])
        .assert()
        .success();
    assert!(stdout(&a).contains(&id), "{}", stdout(&a));
    // Without the identity nothing is written.
    let a = new.cmd().args(["offsite", "fetch", &id]).assert().code(2);
    assert!(stderr(&a).contains("--identity"), "{}", stderr(&a));
    assert!(new.archives("data").is_empty());
    let key = new.root.join("key.txt");
    fs::copy(&identity, &key).unwrap();
    // One command at 3 a.m.: fetched, decrypted and verified before anything is touched.
    let to = new.root.join("restored");
    let a = new
        .cmd()
        .args(["restore", &id, "--from-offsite", "--identity"])
        .arg(&key)
        .arg("--to")
        .arg(&to)
        .arg("--yes")
        .assert()
        .success();
    assert!(stderr(&a).contains("verified it"), "{}", stderr(&a));
    assert_eq!(new.archives("data").len(), 1);
    let back = to.join(data.strip_prefix("/").unwrap());
    for f in ["model.bin", "sub/notes.txt", "app.db"] {
        assert_eq!(
            fs::read(back.join(f)).unwrap(),
            fs::read(data.join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn remote_retention_follows_the_set_policy_and_the_catalog_rebuilds_from_the_bucket_on_seaweedfs() {
    remote_retention_follows_the_set_policy_and_the_catalog_rebuilds_from_the_bucket(Kind::Seaweed);
}

#[test]
fn remote_retention_follows_the_set_policy_and_the_catalog_rebuilds_from_the_bucket_on_moto() {
    remote_retention_follows_the_set_policy_and_the_catalog_rebuilds_from_the_bucket(Kind::Moto);
}

fn remote_retention_follows_the_set_policy_and_the_catalog_rebuilds_from_the_bucket(kind: Kind) {
    let env = Env::new();
    let server = S3Server::start_kind(kind, &env.root.join("s3"), &["retention"], false);
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    let offsite = server.offsite_toml(&env.root, "retention", None, "");
    env.one_set(
        "s",
        &[&data],
        &format!("max-age = \"1d\"\n[backup.set.keep]\nlast = 2\n\n{offsite}"),
    );
    let mut keys = Vec::new();
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for i in 0..4 {
        fs::write(data.join("f"), format!("version {i}")).unwrap();
        // An hour apart on steward's clock, so the names order as the backups do.
        let a = env
            .cmd()
            .arg("backup")
            .env("STEWARD_NOW", (start + i * 3600).to_string())
            .assert()
            .success();
        let out = stdout(&a);
        let key = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("offsite offsite: "))
            .and_then(|l| l.split(' ').next())
            .unwrap_or_else(|| panic!("{out}"))
            .to_string();
        keys.push(key);
    }
    let db = Connection::open(env.state.join("state.db")).unwrap();
    let copies = |db: &Connection| -> Vec<String> {
        db.prepare("SELECT key FROM offsite_copies ORDER BY created_at DESC, backup_id DESC")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(copies(&db), [keys[3].clone(), keys[2].clone()]);
    // The two oldest are gone from the bucket, object and description.
    let a = env.cmd().args(["offsite", "list"]).assert().success();
    let listed = stdout(&a);
    assert_eq!(
        listed.lines().filter(|l| l.starts_with("offsite ")).count(),
        2,
        "{listed}"
    );
    for gone in &keys[..2] {
        assert!(server.try_object("retention", gone).is_none(), "{gone}");
    }
    // The check watches the newest copy's age.
    let a = env.cmd().arg("check").assert();
    let out = stdout(&a);
    let line = out
        .lines()
        .find(|l| l.starts_with("offsite s"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("OK"), "{line}");
    // A lost catalog learns the copies back from the descriptions in the bucket.
    db.execute("DELETE FROM offsite_copies", []).unwrap();
    let a = env
        .cmd()
        .args(["backups", "reindex", "--offsite"])
        .assert()
        .success();
    assert!(stdout(&a).contains("2 copies"), "{}", stdout(&a));
    assert_eq!(copies(&db), [keys[3].clone(), keys[2].clone()]);
    // A target's own policy wins over the set's.
    let mut text = fs::read_to_string(&env.config).unwrap();
    text.push_str("\n[offsite.keep]\nlast = 1\n");
    fs::write(&env.config, text).unwrap();
    let a = env
        .cmd()
        .args(["offsite", "prune", "--dry-run"])
        .assert()
        .success();
    assert!(stdout(&a).contains("DELETE "), "{}", stdout(&a));
    assert_eq!(copies(&db).len(), 2);
    env.cmd().args(["offsite", "prune"]).assert().success();
    assert_eq!(copies(&db), [keys[3].clone()]);
}

/// The bucket is untrusted: a description that names a path outside the destination is
/// refused before anything is written.
#[test]
fn a_hostile_description_cannot_write_outside_the_destination_on_seaweedfs() {
    a_hostile_description_cannot_write_outside_the_destination(Kind::Seaweed);
}

#[test]
fn a_hostile_description_cannot_write_outside_the_destination_on_moto() {
    a_hostile_description_cannot_write_outside_the_destination(Kind::Moto);
}

fn a_hostile_description_cannot_write_outside_the_destination(kind: Kind) {
    let env = Env::new();
    let server = S3Server::start_kind(kind, &env.root.join("s3"), &["hostile"], false);
    let data = data_tree(&env.root);
    env.one_set(
        "data",
        &[&data],
        &server.offsite_toml(&env.root, "hostile", None, ""),
    );
    env.cmd().arg("backup").assert().success();
    let key = only_key(&env);
    let desc_key = format!("{key}.json");
    let good: serde_json::Value =
        serde_json::from_slice(&server.object("hostile", &desc_key)).unwrap();
    let id = good["backup_id"].as_str().unwrap().to_string();
    let fresh = Env::new();
    let kit = format!("signing-keys = [\"{}\"]", signing_key(&env));
    fresh.one_set(
        "data",
        &[&data],
        &server.offsite_toml(&fresh.root, "hostile", None, &kit),
    );
    for (field, value) in [
        ("archive", "../../../escaped.tar.zst"),
        ("set", "../../escape"),
        ("archive", "data-x/../../y.tar.zst"),
    ] {
        let mut evil = good.clone();
        evil[field] = serde_json::Value::String(value.into());
        server.tamper("hostile", &desc_key, &serde_json::to_vec(&evil).unwrap());
        let a = fresh.cmd().args(["offsite", "fetch", &id]).assert().code(2);
        let err = stderr(&a);
        assert!(
            err.contains("unusable")
                || err.contains("does not configure")
                || err.contains("signature does not verify"),
            "{field}: {err}"
        );
        assert!(!fresh.root.join("escaped.tar.zst").exists());
        assert!(fresh.archives("data").is_empty());
    }
    // Where the names would have led, from <root>/backups/data.
    let above = fresh.root.parent().unwrap();
    for p in [
        above.join("escaped.tar.zst"),
        above.join("escape"),
        fresh.root.join("y.tar.zst"),
    ] {
        assert!(!p.exists(), "{}", p.display());
    }
}
