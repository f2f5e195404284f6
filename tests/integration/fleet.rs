//! The fleet (issue 29) on a real S3 server (SeaweedFS and moto): two hosts, each with its
//! own state directory and host name, sharing one bucket. One goes quiet: the other's
//! check raises `fleet HOST` after `max-silence` and mails it, and its return mails the
//! recovery. A status object forged in the bucket is shown as untrusted, never healthy.

use std::fs;

use crate::alerts::{QUIET, mail_config};
use crate::common::{Env, stdout};
use crate::mail::{Smtp, free_port, test_ca};
use crate::s3::{Kind, S3Server};

const BUCKET: &str = "fleet";

struct Host {
    env: Env,
    name: &'static str,
}

impl Host {
    fn cmd(&self, t: i64) -> assert_cmd::Command {
        let mut c = self.env.cmd();
        c.env("STEWARD_HOSTNAME", self.name)
            .env("STEWARD_NOW", t.to_string());
        c
    }

    /// `steward fleet --json` at `t`: the views, by host, and the exit code.
    fn fleet(&self, t: i64) -> (serde_json::Value, i32) {
        let out = self.cmd(t).args(["fleet", "--json"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        (v, out.status.code().unwrap())
    }
}

fn view<'a>(views: &'a serde_json::Value, host: &str) -> &'a serde_json::Value {
    views
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["host"] == host)
        .unwrap_or_else(|| panic!("{host} in {views:#}"))
}

/// A host named `name` with the shared bucket; `more` goes into its config.
fn host(server: &S3Server, name: &'static str) -> Host {
    let env = Env::new();
    let offsite = server.offsite_toml(&env.root, BUCKET, None, "");
    env.write_config(&format!("{QUIET}\n{offsite}"));
    Host { env, name }
}

/// The host's signing key, as `steward offsite key` prints it on that host.
fn key(h: &Host) -> String {
    let a = h
        .cmd(0)
        .args(["offsite", "key", "--json"])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    v["public-key"].as_str().unwrap().to_string()
}

fn configure(h: &Host, server: &S3Server, peer: &str, peer_key: &str, more: &str) {
    let offsite = server.offsite_toml(&h.env.root, BUCKET, None, "");
    h.env.write_config(&format!(
        "{QUIET}\n{more}\n{offsite}\n[fleet]\nmax-silence = \"30m\"\n[fleet.peers]\n{peer} = \"{peer_key}\"\n"
    ));
}

#[test]
fn a_quiet_peer_is_mailed_after_max_silence_and_its_return_mailed_as_recovered_on_seaweedfs() {
    quiet_peer(Kind::Seaweed);
}

#[test]
fn a_quiet_peer_is_mailed_after_max_silence_and_its_return_mailed_as_recovered_on_moto() {
    quiet_peer(Kind::Moto);
}

fn quiet_peer(kind: Kind) {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start_kind(kind, &root.path().join("s3"), &[BUCKET], false);
    let alpha = host(&server, "alpha");
    let beta = host(&server, "beta");
    let (ka, kb) = (key(&alpha), key(&beta));
    let ca = test_ca(&alpha.env.root);
    let port = free_port();
    let smtp = Smtp::start(&alpha.env.root, port, &ca);
    configure(&alpha, &server, "beta", &kb, &mail_config(&alpha.env, port));
    configure(&beta, &server, "alpha", &ka, "");
    let t0 = 1_900_000_000_i64;

    // Both run their checks: each reads the other and leaves its own status.
    beta.cmd(t0).arg("check").assert().code(0);
    alpha.cmd(t0 + 60).arg("check").assert().code(0);
    let (v, code) = alpha.fleet(t0 + 120);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(view(&v, "beta")["trust"]["trust"], "trusted", "{v:#}");
    assert_eq!(view(&v, "beta")["worst"], "OK", "{v:#}");
    assert_eq!(view(&v, "alpha")["own"], true);
    assert_eq!(smtp.messages().len(), 0);

    let first_beta = server.object(BUCKET, "steward/beta/status.json");
    // beta stops. Within max-silence nothing is said; after it, alpha mails.
    alpha.cmd(t0 + 20 * 60).arg("check").assert().code(0);
    assert_eq!(smtp.messages().len(), 0);
    let a = alpha
        .cmd(t0 + 31 * 60)
        .args(["check", "--json"])
        .assert()
        .code(2);
    assert!(stdout(&a).contains("beta silent"), "{}", stdout(&a));
    let m = smtp.messages();
    assert_eq!(m.len(), 1, "{m:#?}");
    let content = m[0]["content"].as_str().unwrap();
    assert!(
        content.contains("CRITICAL") && content.contains("fleet beta"),
        "{content}"
    );

    // beta is back: one recovery.
    beta.cmd(t0 + 32 * 60).arg("check").assert().code(0);
    alpha.cmd(t0 + 33 * 60).arg("check").assert().code(0);
    let m = smtp.messages();
    assert_eq!(m.len(), 2, "{m:#?}");
    let content = m[1]["content"].as_str().unwrap();
    assert!(
        content.contains("RECOVERED") && content.contains("fleet beta"),
        "{content}"
    );

    // beta's first status, genuine and signed, put back over its newer one: a replay.
    let newer_beta = server.object(BUCKET, "steward/beta/status.json");
    server.tamper(BUCKET, "steward/beta/status.json", &first_beta);
    let (v, code) = alpha.fleet(t0 + 33 * 60 + 30);
    assert_eq!(code, 2, "{v:#}");
    assert!(
        view(&v, "beta")["trust"]["detail"]
            .as_str()
            .unwrap()
            .contains("older status"),
        "{v:#}"
    );
    server.tamper(BUCKET, "steward/beta/status.json", &newer_beta);
    // Someone with write access to the bucket replaces beta's status with a healthy,
    // fresh, unsigned one, and plants a host of their own.
    let status = format!(
        "{{\"format\":1,\"host\":\"beta\",\"time\":{},\"worst\":\"OK\",\"problems\":[],\"sets\":[]}}",
        t0 + 34 * 60
    );
    let forged = serde_json::json!({ "status": status, "minisig": null }).to_string();
    server.tamper(BUCKET, "steward/beta/status.json", forged.as_bytes());
    let gamma = serde_json::json!({
        "status": status.replace("beta", "gamma"),
        "minisig": "untrusted comment: x\nRWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3Rbb2BI+LVwYWaHQeSd8SJrqVWSeYE1ik7b+9A/DbNQs=\ntrusted comment: x\nAAAA\n"
    })
    .to_string();
    server.tamper(BUCKET, "steward/gamma/status.json", gamma.as_bytes());
    let (v, code) = alpha.fleet(t0 + 35 * 60);
    assert_eq!(code, 2, "{v:#}");
    assert_eq!(view(&v, "beta")["trust"]["trust"], "unsigned", "{v:#}");
    assert_ne!(view(&v, "gamma")["trust"]["trust"], "trusted", "{v:#}");
    assert_eq!(view(&v, "gamma")["expected"], false);
    let a = alpha
        .cmd(t0 + 36 * 60)
        .args(["check", "--json"])
        .assert()
        .code(2);
    let out = stdout(&a);
    assert!(
        out.contains("fleet beta") && out.contains("not signed"),
        "{out}"
    );
    // Planted hosts are one item, however many.
    assert!(!out.contains("fleet gamma"), "{out}");
    assert!(
        out.contains("fleet (others)") && out.contains("gamma"),
        "{out}"
    );
    // The text table says so too, and the page.
    let a = alpha.cmd(t0 + 36 * 60).arg("fleet").assert().code(2);
    let table = stdout(&a);
    let line = table.lines().find(|l| l.starts_with("beta")).unwrap();
    assert!(line.contains("UNTRUSTED"), "{table}");
    let served = crate::serve::Served::start(
        &alpha.env,
        "127.0.0.1:0",
        &[
            ("STEWARD_HOSTNAME", "alpha"),
            ("STEWARD_NOW", &(t0 + 36 * 60).to_string()),
        ],
    );
    let (code, _, body) = crate::serve::get(served.port, "/", &[]);
    assert_eq!(code, 200);
    assert!(
        body.contains("data-host=\"beta\" data-trust=\"unsigned\""),
        "{body}"
    );
    assert!(!body.contains("data-host=\"beta\" data-trust=\"trusted\""));
    // An object too large to be a status is that host's problem, not the whole read's.
    server.tamper(BUCKET, "steward/gamma/status.json", &vec![b'x'; 100 << 10]);
    let (v, _) = alpha.fleet(t0 + 37 * 60);
    assert_eq!(view(&v, "gamma")["trust"]["trust"], "bad", "{v:#}");
    assert!(
        view(&v, "gamma")["trust"]["detail"]
            .as_str()
            .unwrap()
            .contains("larger than"),
        "{v:#}"
    );
    // A status forged in alpha's own folder is found by alpha's next check, and
    // replaced by its own.
    server.tamper(
        BUCKET,
        "steward/alpha/status.json",
        forged.replace("beta", "alpha").as_bytes(),
    );
    let a = alpha
        .cmd(t0 + 38 * 60)
        .args(["check", "--json"])
        .assert()
        .code(2);
    assert!(stdout(&a).contains("was not its own"), "{}", stdout(&a));
    let (v, _) = alpha.fleet(t0 + 39 * 60);
    assert_eq!(view(&v, "alpha")["trust"]["trust"], "trusted", "{v:#}");
    // The offsite listing is not confused by the status objects beside the copies.
    alpha
        .cmd(t0 + 39 * 60)
        .args(["offsite", "list"])
        .assert()
        .success();
    // The planted folder goes, and beta leaves the fleet: both items recover (mailed),
    // and are then forgotten.
    server.remove(BUCKET, "steward/gamma/status.json");
    // Retiring beta: out of [fleet.peers], its status object deleted (else it is a
    // status no configured peer signed, in `fleet (others)`).
    server.remove(BUCKET, "steward/beta/status.json");
    configure(
        &alpha,
        &server,
        "delta",
        &kb,
        &mail_config(&alpha.env, port),
    );
    let before = smtp.messages().len();
    let a = alpha.cmd(t0 + 40 * 60).args(["check", "--json"]).assert();
    let out = stdout(&a);
    assert!(out.contains("beta is no longer watched"), "{out}");
    let m = smtp.messages();
    let recovery = m[before..]
        .iter()
        .map(|x| x["content"].as_str().unwrap())
        .find(|c| c.contains("fleet beta"))
        .unwrap_or_else(|| panic!("{m:#?}"));
    assert!(
        recovery.contains("RECOVERED") && recovery.contains("fleet (others)"),
        "{recovery}"
    );
    alpha.cmd(t0 + 41 * 60).arg("check").assert().code(0);
    let a = alpha
        .cmd(t0 + 41 * 60)
        .args(["status", "--json"])
        .assert()
        .success();
    assert!(!stdout(&a).contains("fleet beta"), "{}", stdout(&a));
    fs::remove_dir_all(root.path().join("s3")).ok();
}

/// A check every minute writes the status only when it changed or a quarter of
/// `max-silence` has passed: a month of minutes is not 43,000 writes.
#[test]
fn the_status_is_written_when_it_changes_or_ages_not_on_every_check() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(&root.path().join("s3"), &[BUCKET]);
    let alpha = host(&server, "alpha");
    let other = host(&server, "other");
    let data = alpha.env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("a"), "1\n").unwrap();
    let set = format!(
        "[[backup.set]]\nname = \"s\"\npaths = [\"{}\"]\n",
        data.display()
    );
    configure(&alpha, &server, "other", &key(&other), &set);
    let t0 = 1_900_000_000_i64;
    let object = || server.object(BUCKET, "steward/alpha/status.json");
    alpha.cmd(t0).arg("backup").assert().success();
    alpha.cmd(t0 + 10).arg("check").assert().code(0);
    let first = object();
    alpha.cmd(t0 + 70).arg("check").assert().code(0);
    assert_eq!(object(), first, "rewritten a minute later, unchanged");
    // Something changed: a new newest good backup is written at once.
    fs::write(data.join("a"), "2\n").unwrap();
    alpha.cmd(t0 + 130).arg("backup").assert().success();
    let changed = object();
    assert_ne!(changed, first);
    // Unchanged but older than max-silence / 4 (30m / 4): written again.
    alpha.cmd(t0 + 190).arg("check").assert().code(0);
    assert_eq!(object(), changed);
    alpha.cmd(t0 + 10 * 60).arg("check").assert().code(0);
    assert_ne!(object(), changed);
}
