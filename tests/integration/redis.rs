//! A set with a Redis source: the backup asks a real `redis-server` for a fresh RDB, so
//! keys written after the last save are in the archive; the restore stops Redis (without
//! letting it save over the restored file), swaps the RDB and starts it with the keys back.

use std::fs;
use std::process::Command;
use std::time::Duration;

use crate::common::{Env, stdout, wait_for};
use crate::mail::free_port;

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (tests/run installs redis-server)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Shuts the test's Redis down however the test ends.
struct Shutdown(u16);

impl Drop for Shutdown {
    fn drop(&mut self) {
        let _ = cli(self.0, &["shutdown", "nosave"]);
    }
}

#[test]
fn redis_keys_written_after_the_last_save_are_backed_up_and_restored() {
    let env = Env::new();
    let port = free_port();
    let dir = env.root.join("redis");
    fs::create_dir_all(&dir).unwrap();
    let start = format!(
        "redis-server --port {port} --bind 127.0.0.1 --dir '{}' --dbfilename dump.rdb --save '' \
         --appendonly no --daemonize yes --pidfile '{}/redis.pid' --logfile '{}/redis.log'",
        dir.display(),
        dir.display(),
        dir.display()
    );
    let service = format!(
        "[[service]]\nname = \"redis\"\nmanager = \"command\"\nstart = {start:?}\n\
         stop = \"redis-cli -p {port} shutdown nosave\"\nstatus = \"redis-cli -p {port} ping | grep -q PONG\"\n"
    );
    env.one_set(
        "redis",
        &[&dir],
        &format!(
            "quiesce = [\"redis\"]\n[backup.set.redis]\naddress = \"127.0.0.1:{port}\"\nrdb = \"{}/dump.rdb\"\n\n{service}",
            dir.display()
        ),
    );
    assert!(
        Command::new("sh")
            .args(["-c", &start])
            .status()
            .unwrap()
            .success()
    );
    let _guard = Shutdown(port);
    wait_for("redis", Duration::from_secs(20), || {
        cli(port, &["ping"]) == "PONG"
    });
    // No save has happened: only BGSAVE can put these keys in the archive.
    cli(port, &["set", "answer", "42"]);
    cli(port, &["set", "city", "Kyiv"]);
    assert!(!dir.join("dump.rdb").exists());
    let a = env.cmd().arg("backup").assert().success();
    let id = stdout(&a).split_whitespace().nth(1).unwrap().to_string();
    assert!(dir.join("dump.rdb").exists());
    // Later writes, then the incident restore.
    cli(port, &["set", "answer", "0"]);
    cli(port, &["set", "later", "x"]);
    env.cmd().args(["restore", &id, "--yes"]).assert().success();
    wait_for("redis back", Duration::from_secs(20), || {
        cli(port, &["ping"]) == "PONG"
    });
    assert_eq!(cli(port, &["get", "answer"]), "42");
    assert_eq!(cli(port, &["get", "city"]), "Kyiv");
    assert_eq!(cli(port, &["get", "later"]), "");
}

#[test]
fn an_unreachable_redis_fails_the_set_naming_it() {
    let env = Env::new();
    let port = free_port();
    let dir = env.root.join("redis");
    fs::create_dir_all(&dir).unwrap();
    env.one_set(
        "redis",
        &[&dir],
        &format!(
            "[backup.set.redis]\naddress = \"127.0.0.1:{port}\"\nrdb = \"{}/dump.rdb\"\n",
            dir.display()
        ),
    );
    let a = env.cmd().arg("backup").assert().code(2);
    let err = crate::common::stderr(&a);
    assert!(err.contains(&format!("redis 127.0.0.1:{port}")), "{err}");
    assert!(env.archives("redis").is_empty());
}
