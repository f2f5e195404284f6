//! The bucket is untrusted: an attacker with write access to it and no signing key
//! forges, injects, replays, deletes and swaps copies and descriptions. For each, the
//! disaster restore on a new machine refuses with its target untouched and nothing left
//! behind, `verify --offsite` on the host exits 2 naming the problem, and once the bucket
//! is repaired the real copy restores byte-identical. Also: two hosts with the same set
//! in the same second, a server that stalls mid-body, and object lock.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use sha2::{Digest, Sha256};

use crate::common::{Env, stderr, stdout};
use crate::offsite::signing_key;
use crate::s3::{Kind, S3Server, age_key};

/// A digest of every file (path and bytes) under `root`.
fn tree_hash(root: &Path) -> String {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().to_path_buf())
        .collect();
    files.sort();
    let mut h = Sha256::new();
    for f in files {
        h.update(f.strip_prefix(root).unwrap().to_string_lossy().as_bytes());
        h.update(fs::read(&f).unwrap());
    }
    hex::encode(h.finalize())
}

/// Every file under `root` (none when it does not exist).
fn files_under(root: &Path) -> Vec<String> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().display().to_string())
        .collect()
}

/// The disaster restore on `env` (a new machine): backup `id` fetched from the bucket
/// with `identity` and restored under `to`, with `extra` arguments (`--host H`).
fn offsite_restore(
    env: &Env,
    id: &str,
    identity: &Path,
    to: &Path,
    extra: &[&str],
) -> assert_cmd::assert::Assert {
    env.cmd()
        .args(["restore", id, "--from-offsite", "--yes", "--identity"])
        .arg(identity)
        .arg("--to")
        .arg(to)
        .args(extra)
        .assert()
}

/// The host with two copies of set `data`, and a new machine that has only the
/// config, the credentials, the identity and the signing key from the recovery kit.
struct World {
    host: Env,
    fresh: Env,
    server: S3Server,
    data: PathBuf,
    identity: PathBuf,
    /// Older and newer backup, their object keys, and the file's content in each.
    ids: [String; 2],
    keys: [String; 2],
    contents: [String; 2],
    /// Every object of the bucket as the host left it.
    saved: Vec<(String, Vec<u8>)>,
    /// The new machine's restore target, with a sibling tree that must stay as it is.
    to: PathBuf,
}

const BUCKET: &str = "attack";

fn world(kind: Kind) -> World {
    let host = Env::new();
    let server = S3Server::start_kind(kind, &host.root.join("s3"), &[BUCKET], false);
    let (identity, recipient) = age_key(&host.root);
    let data = host.root.join("data");
    fs::create_dir_all(&data).unwrap();
    let offsite = server.offsite_toml(&host.root, BUCKET, Some(&recipient), "");
    host.one_set("data", &[&data], &offsite);
    let start = 1_900_000_000u64;
    let mut contents = [String::new(), String::new()];
    for (i, c) in contents.iter_mut().enumerate() {
        *c = format!("version {i} of the data\n");
        fs::write(data.join("f.txt"), &*c).unwrap();
        host.cmd()
            .arg("backup")
            .env("STEWARD_NOW", (start + i as u64 * 3600).to_string())
            .assert()
            .success();
    }
    let db = Connection::open(host.state.join("state.db")).unwrap();
    let rows: Vec<(String, String)> = db
        .prepare("SELECT backup_id, key FROM offsite_copies ORDER BY created_at")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let ids = [rows[0].0.clone(), rows[1].0.clone()];
    let keys = [rows[0].1.clone(), rows[1].1.clone()];
    let mut saved = Vec::new();
    for k in &keys {
        for name in [k.clone(), format!("{k}.json"), format!("{k}.json.minisig")] {
            let bytes = server.object(BUCKET, &name);
            saved.push((name, bytes));
        }
    }
    let kit = signing_key(&host);
    let fresh = Env::new();
    let fresh_offsite = server.offsite_toml(
        &fresh.root,
        BUCKET,
        Some(&recipient),
        &format!("signing-keys = [\"{kit}\"]"),
    );
    fresh.one_set("data", &[&data], &fresh_offsite);
    let id_copy = fresh.root.join("identity.txt");
    fs::copy(&identity, &id_copy).unwrap();
    let to = fresh.root.join("restore-here");
    fs::create_dir_all(to.join("sibling")).unwrap();
    fs::write(to.join("sibling/keep.txt"), "do not touch\n").unwrap();
    World {
        host,
        fresh,
        server,
        data,
        identity: id_copy,
        ids,
        keys,
        contents,
        saved,
        to,
    }
}

impl World {
    fn saved(&self, key: &str) -> Vec<u8> {
        self.saved
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, b)| b.clone())
            .unwrap()
    }

    /// Puts every object back as the host left it and removes `extra` keys.
    fn repair(&self, extra: &[String]) {
        for k in extra {
            self.server.remove(BUCKET, k);
        }
        for (k, b) in &self.saved {
            self.server.tamper(BUCKET, k, b);
        }
    }

    /// Deletes a copy's three objects behind the host's back.
    fn drop_copy(&self, key: &str) {
        for suffix in ["", ".json", ".json.minisig"] {
            self.server.remove(BUCKET, &format!("{key}{suffix}"));
        }
    }

    /// Puts the saved objects of copy `from` (all three) at copy `at`.
    fn put_copy(&self, at: &str, from: &str) {
        for suffix in ["", ".json", ".json.minisig"] {
            let bytes = self.saved(&format!("{from}{suffix}"));
            self.server.tamper(BUCKET, &format!("{at}{suffix}"), &bytes);
        }
    }

    /// `steward ARGS` on the host, exiting `code`.
    fn host_run(&self, args: &[&str], code: i32) -> assert_cmd::assert::Assert {
        self.host.cmd().args(args).assert().code(code)
    }

    fn restore(&self, id: &str) -> assert_cmd::assert::Assert {
        offsite_restore(&self.fresh, id, &self.identity, &self.to, &[])
    }

    /// The disaster restore of `id` refuses, saying `why`; the target and the new
    /// machine's destination are as before.
    fn refused(&self, id: &str, why: &str) {
        let before = tree_hash(&self.to);
        let a = self.restore(id).code(2);
        let err = stderr(&a);
        assert!(
            err.contains(why),
            "restore {id}: expected {why:?} in: {err}"
        );
        assert_eq!(tree_hash(&self.to), before, "the restore target changed");
        assert_eq!(files_under(&self.fresh.dest), Vec::<String>::new());
        let folders: Vec<_> = walkdir::WalkDir::new(&self.fresh.dest)
            .min_depth(1)
            .into_iter()
            .filter_map(Result::ok)
            .map(|e| e.path().display().to_string())
            .collect();
        assert!(folders.is_empty(), "left behind: {folders:?}");
        let scratch = files_under(&self.fresh.state.join("offsite-check"));
        assert!(scratch.is_empty(), "{scratch:?}");
    }

    /// `verify --offsite` on the host exits 2, saying `why`.
    fn verify_fails(&self, why: &str) {
        let a = self
            .host
            .cmd()
            .args(["verify", "--offsite"])
            .assert()
            .code(2);
        let out = stdout(&a);
        assert!(out.contains(why), "verify: expected {why:?} in: {out}");
    }

    /// After the repair, backup `i` restores byte-identical.
    fn restores(&self, i: usize) {
        let a = self.restore(&self.ids[i]).success();
        assert!(stderr(&a).contains("verified it"), "{}", stderr(&a));
        let back = self.to.join(self.data.strip_prefix("/").unwrap());
        assert_eq!(
            fs::read_to_string(back.join("f.txt")).unwrap(),
            self.contents[i]
        );
        assert_eq!(
            fs::read_to_string(self.to.join("sibling/keep.txt")).unwrap(),
            "do not touch\n"
        );
        self.host
            .cmd()
            .args(["verify", "--offsite"])
            .assert()
            .success();
        // The new machine forgets it, so the next round fetches again.
        for d in [&self.fresh.dest, &self.fresh.state] {
            let _ = fs::remove_dir_all(d);
        }
        let top = self
            .data
            .strip_prefix("/")
            .unwrap()
            .components()
            .next()
            .unwrap();
        fs::remove_dir_all(self.to.join(top)).unwrap();
    }
}

/// A description edited as an attacker would (the signature left as it was).
fn edited(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    edit(&mut v);
    serde_json::to_vec_pretty(&v).unwrap()
}

#[test]
fn attacks_with_write_access_to_the_bucket_are_refused_and_named() {
    let w = world(Kind::Moto);
    let [old_key, new_key] = w.keys.clone();
    let new_id = w.ids[1].clone();
    let new_desc = format!("{new_key}.json");
    let new_sig = format!("{new_desc}.minisig");
    let sha = |b: &[u8]| hex::encode(Sha256::digest(b));

    // A forged replacement: other bytes, a description that matches them, the old
    // signature.
    let forged = b"age-encryption.org/v1 not really\n".repeat(1000);
    w.server.tamper(BUCKET, &new_key, &forged);
    w.server.tamper(
        BUCKET,
        &new_desc,
        &edited(&w.saved(&new_desc), |v| {
            v["bytes"] = forged.len().into();
            v["sha256"] = sha(&forged).into();
        }),
    );
    w.refused(&new_id, "signature does not verify");
    w.verify_fails("signature does not verify");
    w.repair(&[]);
    w.restores(1);

    // An injected newer ID, with a copied signature, and one with none.
    let fake_id = "data-20991231T000000Z";
    let fake_key = new_key.replace(&new_id, fake_id);
    let fake_desc = edited(&w.saved(&new_desc), |v| {
        v["backup_id"] = fake_id.into();
        v["key"] = fake_key.clone().into();
        v["archive"] = format!("{fake_id}.tar.zst").into();
    });
    w.server.tamper(BUCKET, &fake_key, &w.saved(&new_key));
    w.server
        .tamper(BUCKET, &format!("{fake_key}.json"), &fake_desc);
    w.refused(fake_id, "is not signed");
    w.verify_fails("is not signed");
    w.server.tamper(
        BUCKET,
        &format!("{fake_key}.json.minisig"),
        &w.saved(&new_sig),
    );
    w.refused(fake_id, "signature does not verify");
    w.verify_fails("signature does not verify");
    let injected = [
        fake_key.clone(),
        format!("{fake_key}.json"),
        format!("{fake_key}.json.minisig"),
    ];
    w.repair(&injected);
    w.restores(1);

    // A replay: the older copy, signature and all, put where the newer one was.
    w.put_copy(&new_key, &old_key);
    w.refused(&new_id, "not to where it lies");
    w.verify_fails("not believed any more");
    w.repair(&[]);
    w.restores(1);

    // The newest copy deleted (all of it, or only its description).
    w.drop_copy(&new_key);
    w.refused(&new_id, "no complete copy");
    w.verify_fails("missing from the bucket");
    w.repair(&[]);
    w.server.remove(BUCKET, &new_desc);
    w.refused(&new_id, "no complete copy");
    w.verify_fails("missing from the bucket");
    w.repair(&[]);
    w.restores(1);

    // A cleartext swap: the plain archive, described as not encrypted.
    let plain = fs::read(&w.host.archives("data")[1]).unwrap();
    w.server.tamper(BUCKET, &new_key, &plain);
    w.server.tamper(
        BUCKET,
        &new_desc,
        &edited(&w.saved(&new_desc), |v| {
            v["encrypted"] = false.into();
            v["recipients"] = serde_json::json!([]);
            v["bytes"] = plain.len().into();
            v["sha256"] = sha(&plain).into();
        }),
    );
    w.refused(&new_id, "signature does not verify");
    w.verify_fails("signature does not verify");
    w.repair(&[]);

    // Another host's copy under this host's name: a real steward with its own key (a
    // second machine, or an attacker's) uploads a newer backup as if it were this host.
    let host_name = new_key.split('/').nth(1).unwrap().to_string();
    let intruder = Env::new();
    let evil_data = intruder.root.join("data");
    fs::create_dir_all(&evil_data).unwrap();
    fs::write(evil_data.join("f.txt"), "not yours\n").unwrap();
    let recipient =
        serde_json::from_slice::<serde_json::Value>(&w.saved(&new_desc)).unwrap()["recipients"][0]
            .as_str()
            .unwrap()
            .to_string();
    intruder.one_set(
        "data",
        &[&evil_data],
        &w.server
            .offsite_toml(&intruder.root, BUCKET, Some(&recipient), ""),
    );
    intruder
        .cmd()
        .arg("backup")
        .env("STEWARD_HOSTNAME", &host_name)
        .env("STEWARD_NOW", "1900090000")
        .assert()
        .success();
    let evil_key: String = Connection::open(intruder.state.join("state.db"))
        .unwrap()
        .query_row("SELECT key FROM offsite_copies", [], |r| r.get(0))
        .unwrap();
    assert!(
        evil_key.starts_with(&format!("steward/{host_name}/")),
        "{evil_key}"
    );
    let evil_id = "data-20300318T184640Z";
    w.refused(evil_id, "which is not trusted");
    w.verify_fails("which is not trusted");
    w.repair(&[
        evil_key.clone(),
        format!("{evil_key}.json"),
        format!("{evil_key}.json.minisig"),
    ]);
    w.restores(1);

    // Damaged and huge descriptions.
    w.server.tamper(BUCKET, &new_desc, b"{\"backup_id\": ");
    w.refused(&new_id, "signature does not verify");
    w.verify_fails("signature does not verify");
    let mut huge = w.saved(&new_desc);
    huge.extend(std::iter::repeat_n(b' ', 17 << 20));
    w.server.tamper(BUCKET, &new_desc, &huge);
    w.refused(&new_id, "more than a description ever is");
    w.verify_fails("more than a description ever is");
    w.repair(&[]);
    w.restores(1);
    w.restores(0);
}

#[test]
fn a_replayed_copy_after_retention_is_named() {
    let w = world(Kind::Seaweed);
    // Keep one: the older copy is deleted by this host's retention.
    let mut text = fs::read_to_string(&w.host.config).unwrap();
    text.push_str("\n[offsite.keep]\nlast = 1\n");
    fs::write(&w.host.config, text).unwrap();
    w.host.cmd().args(["offsite", "prune"]).assert().success();
    assert!(w.server.try_object(BUCKET, &w.keys[0]).is_none());
    // The newer copy's chain link points at a pruned copy: fine.
    w.host_run(&["verify", "--offsite"], 0);
    // An attacker puts the old, validly signed copy back.
    w.put_copy(&w.keys[0], &w.keys[0]);
    w.verify_fails("replayed: this host's retention deleted");
    // Not listed, not fetched, not imported by a rebuild of the catalog, which does not
    // erase what the host remembers either.
    let a = w.host.cmd().args(["offsite", "list"]).assert().success();
    assert!(!stdout(&a).contains(&w.ids[0]), "{}", stdout(&a));
    assert!(stderr(&a).contains("replayed"), "{}", stderr(&a));
    fs::remove_file(&w.host.archives("data")[0]).unwrap();
    w.host.cmd().args(["backups", "reindex"]).assert().success();
    let a = w.host_run(&["offsite", "fetch", &w.ids[0]], 2);
    assert!(stderr(&a).contains("replayed"), "{}", stderr(&a));
    let a = w.host_run(&["backups", "reindex", "--offsite"], 2);
    assert!(stdout(&a).contains("replayed"), "{}", stdout(&a));
    w.verify_fails("replayed: this host's retention deleted");
    // Deleting the newest leaves the replayed one as the newest the bucket shows: the
    // host notices that too.
    w.drop_copy(&w.keys[1]);
    w.verify_fails("missing from the bucket");
    // A rebuild of the catalog keeps the deleted copy its policy keeps, and says so.
    let a = w.host_run(&["backups", "reindex", "--offsite"], 2);
    assert!(stdout(&a).contains("kept in the catalog"), "{}", stdout(&a));
    w.verify_fails("missing from the bucket");
}

#[test]
fn two_hosts_same_set_same_second_each_restores_its_own() {
    let tmp = Env::new();
    let server = S3Server::start_kind(Kind::Moto, &tmp.root.join("s3"), &["shared"], false);
    let (identity, recipient) = age_key(&tmp.root);
    let data = tmp.root.join("data");
    fs::create_dir_all(&data).unwrap();
    let now = "1900000000";
    let mut kit = Vec::new();
    for host in ["alpha", "beta"] {
        let env = Env::new();
        env.one_set(
            "data",
            &[&data],
            &server.offsite_toml(&env.root, "shared", Some(&recipient), ""),
        );
        fs::write(data.join("f.txt"), format!("{host}'s data\n")).unwrap();
        env.cmd()
            .arg("backup")
            .env("STEWARD_HOSTNAME", host)
            .env("STEWARD_NOW", now)
            .assert()
            .success();
        let a = env
            .cmd()
            .args(["offsite", "key", "--json"])
            .env("STEWARD_HOSTNAME", host)
            .assert()
            .success();
        let v: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
        kit.push(v["public-key"].as_str().unwrap().to_string());
    }
    let id = "data-20300317T174640Z";
    // A new machine trusting both hosts' keys.
    let fresh = |keys: &[String]| {
        let env = Env::new();
        let list: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
        env.one_set(
            "data",
            &[&data],
            &server.offsite_toml(
                &env.root,
                "shared",
                Some(&recipient),
                &format!("signing-keys = [{}]", list.join(", ")),
            ),
        );
        env
    };
    let both = fresh(&kit);
    let a = offsite_restore(&both, id, &identity, &both.root.join("to"), &[]).code(2);
    let err = stderr(&a);
    assert!(
        err.contains("alpha") && err.contains("beta") && err.contains("--host"),
        "{err}"
    );
    assert!(files_under(&both.dest).is_empty());
    for host in ["alpha", "beta"] {
        let env = fresh(&kit);
        let to = env.root.join("to");
        offsite_restore(&env, id, &identity, &to, &["--host", host]).success();
        let back = to.join(data.strip_prefix("/").unwrap()).join("f.txt");
        assert_eq!(
            fs::read_to_string(back).unwrap(),
            format!("{host}'s data\n")
        );
    }
    // A machine that trusts only alpha's key restores alpha's without --host, and names
    // beta's copy as signed by a key it does not trust when asked for it.
    let alpha_only = fresh(&kit[..1]);
    let to = alpha_only.root.join("to");
    offsite_restore(&alpha_only, id, &identity, &to, &[]).success();
    let back = to.join(data.strip_prefix("/").unwrap()).join("f.txt");
    assert_eq!(fs::read_to_string(back).unwrap(), "alpha's data\n");
    let other = fresh(&kit[..1]);
    let a = other
        .cmd()
        .args(["offsite", "fetch", id, "--host", "beta", "--identity"])
        .arg(&identity)
        .assert()
        .code(2);
    assert!(
        stderr(&a).contains("which is not trusted"),
        "{}",
        stderr(&a)
    );
}

/// A loopback proxy in front of an S3 server that, once `stall` is set, stops sending in
/// the middle of any object body (after 64 KiB) and holds the connection open; with
/// `trickle` too, it goes on sending the rest a byte every 200 ms instead (never idle
/// for long, never done).
struct StallProxy {
    port: u16,
    stall: Arc<AtomicBool>,
    trickle: Arc<AtomicBool>,
    /// Every answer trickles from its first byte, not only object bodies.
    everything: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
}

impl StallProxy {
    fn start(upstream: u16) -> StallProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stall = Arc::new(AtomicBool::new(false));
        let trickle = Arc::new(AtomicBool::new(false));
        let everything = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (s, d, tr, ev) = (
            stall.clone(),
            done.clone(),
            trickle.clone(),
            everything.clone(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                if d.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (s, d, tr, ev) = (s.clone(), d.clone(), tr.clone(), ev.clone());
                let object_get = Arc::new(AtomicBool::new(false));
                let seen = object_get.clone();
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                // Requests: watch for a GET of an archive object.
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = c_in.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let text = String::from_utf8_lossy(&buf[..n]);
                        if text.starts_with("GET ")
                            && text
                                .lines()
                                .next()
                                .is_some_and(|l| l.contains(".tar.zst") && !l.contains(".json"))
                        {
                            seen.store(true, Ordering::SeqCst);
                        }
                        if s_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
                let (mut s_in, mut c_out) = (server, client);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    let mut sent_of_object = 0usize;
                    while let Ok(n) = s_in.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let all = ev.load(Ordering::SeqCst);
                        if all || (s.load(Ordering::SeqCst) && object_get.load(Ordering::SeqCst)) {
                            sent_of_object += n;
                            if all || (sent_of_object > 64 * 1024 && tr.load(Ordering::SeqCst)) {
                                for b in &buf[..n] {
                                    if d.load(Ordering::SeqCst)
                                        || c_out.write_all(std::slice::from_ref(b)).is_err()
                                    {
                                        return;
                                    }
                                    std::thread::park_timeout(Duration::from_millis(200));
                                }
                                continue;
                            }
                            if sent_of_object > 64 * 1024 {
                                // Stop sending; hold the connection until the test ends.
                                while !d.load(Ordering::SeqCst) {
                                    std::thread::park_timeout(Duration::from_millis(50));
                                }
                                break;
                            }
                        }
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        StallProxy {
            port,
            stall,
            trickle,
            everything,
            done,
        }
    }
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

#[test]
fn a_server_that_stalls_mid_body_fails_within_the_timeout_and_releases_the_lock() {
    let host = Env::new();
    let server = S3Server::start_kind(Kind::Moto, &host.root.join("s3"), &["stall"], false);
    let proxy = StallProxy::start(server.s3);
    let (identity, recipient) = age_key(&host.root);
    let data = host.root.join("data");
    fs::create_dir_all(&data).unwrap();
    crate::common::random_file(&data.join("big.bin"), 3 << 20, 5);
    let offsite = server
        .offsite_toml(
            &host.root,
            "stall",
            Some(&recipient),
            "timeout = \"2s\"\nretries = 1",
        )
        .replace(
            &format!("127.0.0.1:{}", server.s3),
            &format!("127.0.0.1:{}", proxy.port),
        );
    host.one_set("data", &[&data], &offsite);
    host.cmd().arg("backup").assert().success();
    host.cmd().args(["verify", "--offsite"]).assert().success();
    let id: String = Connection::open(host.state.join("state.db"))
        .unwrap()
        .query_row("SELECT backup_id FROM offsite_copies", [], |r| r.get(0))
        .unwrap();

    proxy.stall.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let a = host.cmd().args(["verify", "--offsite"]).assert().code(2);
    let took = started.elapsed();
    assert!(
        stdout(&a).contains("sent nothing for 2s"),
        "{}\n{}",
        stdout(&a),
        stderr(&a)
    );
    // Two tries of 2 s idle each, a 0.5 s pause between: well under the limit.
    assert!(took < Duration::from_secs(30), "{took:?}");
    // A server that trickles a byte now and then is never idle for 2 s: the request's
    // deadline ends it.
    proxy.trickle.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let a = host.cmd().args(["verify", "--offsite"]).assert().code(2);
    let took = started.elapsed();
    assert!(stdout(&a).contains("too slowly"), "{}", stdout(&a));
    assert!(took < Duration::from_secs(40), "{took:?}");
    proxy.trickle.store(false, Ordering::SeqCst);
    proxy.stall.store(false, Ordering::SeqCst);
    // A server that trickles every answer: a backup of two sets gives up on it at its
    // first request instead of waiting once per step and per set.
    fs::write(data.join("more.txt"), "changed\n").unwrap();
    let mut text = fs::read_to_string(&host.config).unwrap();
    text = text.replace(
        "[[offsite]]",
        &format!(
            "[[backup.set]]\nname = \"second\"\npaths = [\"{}\"]\n\n[[offsite]]",
            host.root.join("home").display()
        ),
    );
    fs::write(&host.config, text).unwrap();
    fs::write(host.root.join("home/h.txt"), "h\n").unwrap();
    proxy.everything.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let a = host.cmd().arg("backup").assert().code(2);
    let took = started.elapsed();
    proxy.everything.store(false, Ordering::SeqCst);
    assert!(stderr(&a).contains("too slowly"), "{}", stderr(&a));
    // Two tries of a 6 s deadline and a pause, once: not once per set and step.
    assert!(took < Duration::from_secs(25), "{took:?}");
    assert_eq!(host.archives("data").len(), 2, "the backup itself is kept");
    proxy.stall.store(true, Ordering::SeqCst);

    // The new machine's disaster restore through the same stalling server.
    let fresh = Env::new();
    fresh.one_set(
        "data",
        &[&data],
        &format!(
            "{}signing-keys = [\"{}\"]\n",
            offsite.replace(
                &host.root.display().to_string(),
                &fresh.root.display().to_string()
            ),
            signing_key(&host)
        ),
    );
    fs::copy(host.root.join("s3.env"), fresh.root.join("s3.env")).unwrap();
    let to = fresh.root.join("to");
    let a = offsite_restore(&fresh, &id, &identity, &to, &[]).code(2);
    assert!(stderr(&a).contains("sent nothing for 2s"), "{}", stderr(&a));
    assert!(
        files_under(&fresh.dest).is_empty(),
        "{:?}",
        files_under(&fresh.dest)
    );
    assert!(!to.exists());

    // The lock was released: with the server well again, both run to the end.
    proxy.stall.store(false, Ordering::SeqCst);
    host.cmd().args(["verify", "--offsite"]).assert().success();
    offsite_restore(&fresh, &id, &identity, &to, &[]).success();
    let back = to.join(data.strip_prefix("/").unwrap()).join("big.bin");
    assert_eq!(
        fs::read(back).unwrap(),
        fs::read(data.join("big.bin")).unwrap()
    );
}

/// A request to moto signed with the host's own key (what ransomware on the host could
/// send): `query` added to a bucket or object URL.
fn signed(
    method: &str,
    server: &S3Server,
    bucket: &str,
    key: &str,
    query: &[(&str, &str)],
) -> ureq::http::Response<ureq::Body> {
    use rusty_s3::S3Action;
    let (b, creds) = server.signer(bucket);
    let hour = Duration::from_hours(1);
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    match method {
        "DELETE" => {
            let mut a = b.delete_object(Some(&creds), key);
            for (k, v) in query {
                a.query_mut().insert(*k, *v);
            }
            agent.delete(a.sign(hour).as_str()).call().unwrap()
        }
        "HEAD" => {
            let a = b.head_object(Some(&creds), key);
            agent.head(a.sign(hour).as_str()).call().unwrap()
        }
        _ => {
            let mut a = rusty_s3::actions::ListObjectsV2::new(&b, Some(&creds));
            a.query_mut().remove("list-type");
            a.query_mut().remove("encoding-type");
            for (k, v) in query {
                a.query_mut().insert(*k, *v);
            }
            agent.get(a.sign(hour).as_str()).call().unwrap()
        }
    }
}

/// A host with set `data` on a fresh moto `bucket` (`locked`: with object lock), its
/// `[[offsite]]` table ending in `extra`, and two backups a minute apart from `now`.
fn two_copies(bucket: &str, locked: bool, extra: &str, now: u64) -> (Env, S3Server, PathBuf) {
    let env = Env::new();
    let server = S3Server::start_kind(Kind::Moto, &env.root.join("s3"), &[bucket], locked);
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    let offsite = server.offsite_toml(&env.root, bucket, None, extra);
    env.one_set("data", &[&data], &offsite);
    for i in 0..2u64 {
        fs::write(data.join("f"), format!("v{i}")).unwrap();
        env.cmd()
            .arg("backup")
            .env("STEWARD_NOW", (now + i * 60).to_string())
            .assert()
            .success();
    }
    (env, server, data)
}

#[test]
fn locked_copies_survive_the_hosts_own_delete_and_prune_leaves_them() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (env, server, _) = two_copies(
        "locked",
        true,
        "object-lock = \"compliance\"\nlock-for = \"2d\"\n[offsite.keep]\nlast = 1",
        now,
    );
    let db = Connection::open(env.state.join("state.db")).unwrap();
    let copies: Vec<(String, Option<i64>)> = db
        .prepare("SELECT key, locked_until FROM offsite_copies ORDER BY created_at")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    // Retention wanted the older one gone, but it is locked: left, and still recorded.
    assert_eq!(copies.len(), 2, "{copies:?}");
    assert!(copies.iter().all(|(_, l)| l.is_some()), "{copies:?}");
    let old = &copies[0].0;
    assert!(server.try_object("locked", old).is_some());
    let a = env
        .cmd()
        .args(["offsite", "prune", "--dry-run"])
        .env("STEWARD_NOW", (now + 120).to_string())
        .assert()
        .success();
    assert!(
        stdout(&a).contains("LEFT") && stdout(&a).contains("locked until"),
        "{}",
        stdout(&a)
    );
    // The host's own credentials cannot delete any version of a locked object.
    let versions = signed(
        "GET",
        &server,
        "locked",
        "",
        &[("versions", ""), ("prefix", old)],
    );
    let mut body = String::new();
    versions
        .into_body()
        .into_reader()
        .read_to_string(&mut body)
        .unwrap();
    // Each version of the copy's three objects, as the server lists them.
    let tag = |x: &str, t: &str| {
        x.split(&format!("<{t}>"))
            .nth(1)
            .and_then(|s| s.split('<').next())
            .map(str::to_string)
    };
    let listed: Vec<(String, String)> = body
        .split("<Version>")
        .skip(1)
        .filter_map(|v| Some((tag(v, "Key")?, tag(v, "VersionId")?)))
        .collect();
    assert_eq!(listed.len(), 3, "{body}");
    for (k, version) in &listed {
        let r = signed("DELETE", &server, "locked", k, &[("versionId", version)]);
        assert_eq!(r.status().as_u16(), 403, "{k}");
    }
    assert!(server.try_object("locked", old).is_some());
    env.cmd().args(["verify", "--offsite"]).assert().success();

    // A day and a half later the kept copy's lock is extended (the policy still keeps
    // it); the old one is left to expire.
    let later = now + 36 * 3600;
    let newest = &copies[1].0;
    let before = copies[1].1.unwrap();
    let head = |k: &str| {
        signed("HEAD", &server, "locked", k, &[])
            .headers()
            .get("x-amz-object-lock-retain-until-date")
            .map(|v| v.to_str().unwrap().to_string())
    };
    let server_before = head(newest);
    let a = env
        .cmd()
        .args(["offsite", "prune"])
        .env("STEWARD_NOW", later.to_string())
        .assert()
        .success();
    assert!(stdout(&a).contains("lock extended"), "{}", stdout(&a));
    let after: i64 = db
        .query_row(
            "SELECT locked_until FROM offsite_copies WHERE key = ?1",
            [newest],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(after, later as i64 + 2 * 86400);
    assert!(after > before);
    assert_ne!(
        head(newest),
        server_before,
        "the server's lock did not move"
    );
    // `check` is content: the newest copies are locked.
    let a = env.cmd().arg("check").assert();
    let out = stdout(&a);
    let line = out
        .lines()
        .find(|l| l.starts_with("offsite lock"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("OK"), "{line}");
}

#[test]
fn a_bucket_without_object_lock_is_warned_about() {
    let env = Env::new();
    let server = S3Server::start_kind(Kind::Moto, &env.root.join("s3"), &["unlocked"], false);
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("f"), "x").unwrap();
    env.one_set(
        "data",
        &[&data],
        &server.offsite_toml(
            &env.root,
            "unlocked",
            None,
            "object-lock = \"governance\"\n[offsite.keep]\nlast = 1",
        ),
    );
    // Backups and retention go on (nothing locked to extend); the check says why.
    for i in 0..2u64 {
        fs::write(data.join("f"), format!("v{i}")).unwrap();
        env.cmd()
            .arg("backup")
            .env("STEWARD_NOW", (1_900_000_000 + i * 60).to_string())
            .assert()
            .success();
    }
    let a = env.cmd().arg("check").assert();
    let out = stdout(&a);
    let line = out
        .lines()
        .find(|l| l.starts_with("offsite lock"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("WARN") && line.contains("did not lock"),
        "{line}"
    );
}

#[test]
fn an_append_only_host_never_deletes() {
    let (env, server, data) = two_copies(
        "append",
        false,
        "append-only = true\n[offsite.keep]\nlast = 1",
        1_900_000_000,
    );
    let a = env.cmd().args(["offsite", "prune"]).assert().success();
    assert!(stdout(&a).contains("append-only"), "{}", stdout(&a));
    let a = env.cmd().args(["offsite", "list"]).assert().success();
    assert_eq!(
        stdout(&a)
            .lines()
            .filter(|l| l.starts_with("offsite "))
            .count(),
        2
    );
    // The trusted machine, with its own config (not append-only) and the host's key,
    // prunes for it.
    let trusted = Env::new();
    trusted.one_set(
        "data",
        &[&data],
        &server.offsite_toml(
            &trusted.root,
            "append",
            None,
            &format!(
                "signing-keys = [\"{}\"]\n[offsite.keep]\nlast = 1",
                signing_key(&env)
            ),
        ),
    );
    let a = trusted
        .cmd()
        .args(["offsite", "prune", "--all-hosts"])
        .assert()
        .success();
    assert!(stdout(&a).contains("DELETED"), "{}", stdout(&a));
    let a = env.cmd().args(["offsite", "list"]).assert().success();
    assert_eq!(
        stdout(&a)
            .lines()
            .filter(|l| l.starts_with("offsite "))
            .count(),
        1,
        "{}",
        stdout(&a)
    );
    // The host's audit takes a copy its own policy drops as pruned elsewhere, not lost:
    // no false alarm, now or on the next run.
    for _ in 0..2 {
        env.cmd().args(["verify", "--offsite"]).assert().success();
    }
    let db = Connection::open(env.state.join("state.db")).unwrap();
    let known: i64 = db
        .query_row("SELECT count(*) FROM offsite_copies", [], |r| r.get(0))
        .unwrap();
    assert_eq!(known, 1);
    // But the copy it keeps, deleted by someone, is missed.
    let kept: String = db
        .query_row("SELECT key FROM offsite_copies", [], |r| r.get(0))
        .unwrap();
    server.remove("append", &format!("{kept}.json"));
    let a = env.cmd().args(["verify", "--offsite"]).assert().code(2);
    assert!(
        stdout(&a).contains("missing from the bucket"),
        "{}",
        stdout(&a)
    );
}

#[test]
fn an_upload_whose_id_was_lost_is_found_and_aborted() {
    use rusty_s3::S3Action;
    let (env, server, _) = two_copies("stale", false, "", 1_900_000_000);
    let (bucket, creds) = server.signer("stale");
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    // An upload a crash left before its ID reached the catalog, under this host's
    // prefix, and another host's, which is not this host's to abort.
    let key: String = Connection::open(env.state.join("state.db"))
        .unwrap()
        .query_row("SELECT key FROM offsite_copies LIMIT 1", [], |r| r.get(0))
        .unwrap();
    let host = key.split('/').nth(1).unwrap().to_string();
    let mine = format!("steward/{host}/data/data-20991231T000000Z.tar.zst");
    let theirs = "steward/other-host/data/data-20991231T000000Z.tar.zst".to_string();
    for key in [&mine, &theirs] {
        let a = bucket.create_multipart_upload(Some(&creds), key);
        let r = agent
            .post(a.sign(Duration::from_hours(1)).as_str())
            .send_empty()
            .unwrap();
        assert!(r.status().is_success(), "{:?}", r.status());
    }
    let uploads = || {
        let mut body = String::new();
        signed("GET", &server, "stale", "", &[("uploads", "")])
            .into_body()
            .into_reader()
            .read_to_string(&mut body)
            .unwrap();
        body
    };
    assert!(uploads().contains(&mine));
    let a = env.cmd().args(["offsite", "push"]).assert().success();
    assert!(stdout(&a).contains("nothing to upload"), "{}", stdout(&a));
    let left = uploads();
    assert!(!left.contains(&mine), "{left}");
    assert!(left.contains(&theirs), "{left}");
}

#[test]
fn a_copy_whose_object_alone_was_deleted_does_not_flip_verify_into_a_false_replay() {
    let w = world(Kind::Moto);
    let mut text = fs::read_to_string(&w.host.config).unwrap();
    text.push_str("\n[offsite.keep]\nlast = 1\n");
    fs::write(&w.host.config, text).unwrap();
    // The older copy's object goes; its description and signature stay behind.
    w.server.remove(BUCKET, &w.keys[0]);
    // Its policy drops it anyway: pruned elsewhere, not lost; and the leftover
    // description of a pruned copy is litter, not a replay, on every later run.
    for _ in 0..3 {
        w.host_run(&["verify", "--offsite"], 0);
    }
    w.host.cmd().args(["offsite", "prune"]).assert().success();
    w.host_run(&["verify", "--offsite"], 0);
}

#[test]
fn push_all_uploads_again_what_the_bucket_lost() {
    let w = world(Kind::Moto);
    w.drop_copy(&w.keys[1]);
    w.verify_fails("missing from the bucket");
    let a = w.host_run(&["offsite", "push", "--all"], 0);
    assert!(stderr(&a).contains("uploading it again"), "{}", stderr(&a));
    w.host_run(&["verify", "--offsite"], 0);
    w.restores(1);
}

#[test]
fn a_trusted_machine_without_a_hosts_set_says_it_keeps_its_copies() {
    let (env, server, data) = two_copies("nopolicy", false, "append-only = true", 1_900_000_000);
    // The trusted machine's config names another set (with a policy), not `data`.
    let trusted = Env::new();
    let offsite = server.offsite_toml(
        &trusted.root,
        "nopolicy",
        None,
        &format!("signing-keys = [\"{}\"]", signing_key(&env)),
    );
    trusted.one_set(
        "other",
        &[&data],
        &format!("[backup.set.keep]\nlast = 1\n\n{offsite}"),
    );
    let a = trusted
        .cmd()
        .args(["offsite", "prune", "--all-hosts", "--dry-run"])
        .assert()
        .success();
    let out = stdout(&a);
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("no retention policy for set \"data\""))
            .count(),
        2,
        "{out}"
    );
}
