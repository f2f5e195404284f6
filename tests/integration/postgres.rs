//! A set with a PostgreSQL source against a real server (Debian's postgresql, started by
//! the test as an unprivileged user): dump, drop the table, restore the set, pg_restore,
//! the rows are back; a failing pg_dump fails the set and leaves no partial dump.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::{Env, stderr, stdout};
use crate::mail::free_port;

const USER: &str = "stewardpg";

struct Pg {
    base: PathBuf,
    bin: PathBuf,
    port: u16,
}

fn as_user(bin: &Path, prog: &str) -> Command {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", USER, "--"]).arg(bin.join(prog));
        c
    } else {
        Command::new(bin.join(prog))
    }
}

fn run(mut c: Command) -> String {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Pg {
    fn start() -> Pg {
        static N: AtomicUsize = AtomicUsize::new(0);
        let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("postgresql (tests/run installs it)")
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .collect();
        bins.sort();
        let bin = bins.pop().unwrap();
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } == 0 {
            let _ = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    USER,
                ])
                .output();
        }
        let base = PathBuf::from(format!(
            "/tmp/steward-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let _ = Command::new("chown")
            .args([USER, &base.display().to_string()])
            .output();
        let data = base.join("data");
        let mut init = as_user(&bin, "initdb");
        init.args(["-A", "trust", "-U", USER, "--no-sync", "-D"])
            .arg(&data);
        run(init);
        let port = free_port();
        let mut ctl = as_user(&bin, "pg_ctl");
        ctl.arg("-D")
            .arg(&data)
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=''",
                base.display()
            ))
            .arg("-l")
            .arg(base.join("log"))
            .args(["-w", "start"]);
        run(ctl);
        Pg { base, bin, port }
    }

    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(self.bin.join(prog));
        c.arg("-h")
            .arg(&self.base)
            .args(["-p", &self.port.to_string(), "-U", USER]);
        c
    }

    fn sql(&self, db: &str, sql: &str) -> String {
        let mut c = self.cmd("psql");
        c.args(["-d", db, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql]);
        run(c)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let mut ctl = as_user(&self.bin, "pg_ctl");
        ctl.arg("-D")
            .arg(self.base.join("data"))
            .args(["-m", "immediate", "stop"]);
        let _ = ctl.output();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

#[test]
fn postgresql_dump_restores_the_rows_and_a_failed_dump_fails_the_set() {
    let env = Env::new();
    let pg = Pg::start();
    pg.sql("postgres", "CREATE DATABASE app");
    pg.sql(
        "app",
        "CREATE TABLE notes (id int PRIMARY KEY, body text); \
         INSERT INTO notes SELECT g, md5(g::text) FROM generate_series(1, 1000) g",
    );
    let before = pg.sql(
        "app",
        "SELECT count(*), md5(string_agg(body, ',' ORDER BY id)) FROM notes",
    );
    let dumps = env.root.join("dumps");
    std::fs::create_dir_all(&dumps).unwrap();
    let config = |db: &str| {
        format!(
            "[backup.set.postgresql]\ndatabase = \"{db}\"\nhost = \"{}\"\nport = {}\nuser = \"{USER}\"\n\
             dump = \"{}/app.pgdump\"\npg-dump = \"{}\"\n",
            pg.base.display(),
            pg.port,
            dumps.display(),
            pg.bin.join("pg_dump").display()
        )
    };
    env.one_set("db", &[&dumps], &config("app"));
    let a = env.cmd().arg("backup").assert().success();
    let id = stdout(&a).split_whitespace().nth(1).unwrap().to_string();
    // The incident: the table is gone.
    pg.sql("app", "DROP TABLE notes");
    let to = env.root.join("restored");
    env.cmd()
        .args(["restore", &id, "--to"])
        .arg(&to)
        .arg("--yes")
        .assert()
        .success();
    let dump = to.join(dumps.strip_prefix("/").unwrap()).join("app.pgdump");
    let mut restore = pg.cmd("pg_restore");
    restore.args(["-d", "app"]).arg(&dump);
    run(restore);
    let after = pg.sql(
        "app",
        "SELECT count(*), md5(string_agg(body, ',' ORDER BY id)) FROM notes",
    );
    assert_eq!(after, before);
    assert!(before.starts_with("1000|"), "{before}");

    // A database that does not exist: the set fails naming it; the last dump stays whole.
    let good = std::fs::read(dumps.join("app.pgdump")).unwrap();
    env.one_set("db", &[&dumps], &config("nope"));
    let a = env.cmd().args(["backup", "--force"]).assert().code(2);
    let err = stderr(&a);
    assert!(
        err.contains("postgresql nope: pg_dump failed") && err.contains("nope"),
        "{err}"
    );
    assert_eq!(std::fs::read(dumps.join("app.pgdump")).unwrap(), good);
    assert!(!dumps.join("app.pgdump.partial").exists());
}
