//! The four reference hosts, end to end. Each example config in `schedules/` is moved into
//! a temp dir (absolute and `~` paths re-rooted; every `[[service]]` becomes a real local
//! HTTP service with `/health` behind a `command` adapter, keeping its name and `after`
//! order; alerts go to a loopback SMTP server; machine-dependent limits are neutralised)
//! and plays a day and an incident: last night's backup, check green, maintain daily,
//! backup, prune, damage, check red with an alert mail, restore through the runbook's own
//! commands (services quiesced in dependency order and back), check green, the data
//! byte-identical, the recovery mail.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{Env, wait_for};
use crate::mail::{Smtp, free_port, test_ca};

/// Re-roots absolute and `~` paths under `root` / `home` (exclude patterns stay).
fn relocate(v: &mut toml::Value, root: &Path, home: &Path, key: &str) {
    match v {
        toml::Value::Table(t) => {
            for (k, child) in t.iter_mut() {
                relocate(child, root, home, k);
            }
        }
        toml::Value::Array(a) => a.iter_mut().for_each(|c| relocate(c, root, home, key)),
        toml::Value::String(s) if key != "exclude" => {
            if let Some(rest) = s.strip_prefix("~/") {
                *s = home.join(rest).to_string_lossy().into_owned();
            } else if s.starts_with('/') {
                *s = root.join(&s[1..]).to_string_lossy().into_owned();
            }
        }
        _ => {}
    }
}

pub fn strings(v: &toml::Value, path: &[&str]) -> Vec<String> {
    let mut cur = vec![v];
    for p in path {
        let mut next = Vec::new();
        for c in cur {
            match c {
                toml::Value::Table(t) => next.extend(t.get(*p)),
                toml::Value::Array(a) => next.extend(a.iter().filter_map(|x| x.get(*p))),
                _ => {}
            }
        }
        cur = next;
    }
    let mut out = Vec::new();
    for c in cur {
        match c {
            toml::Value::String(s) => out.push(s.clone()),
            toml::Value::Array(a) => {
                out.extend(a.iter().filter_map(|x| x.as_str().map(str::to_string)));
            }
            _ => {}
        }
    }
    out
}

pub struct Host {
    pub env: Env,
    pub smtp: Smtp,
    pub services: Vec<(String, String)>, // (name, start command)
    events: PathBuf,
    pub config: toml::Value,
    pub smtp_port: u16,
    pub ca: crate::mail::TestCa,
}

impl Drop for Host {
    fn drop(&mut self) {
        for (name, _) in &self.services {
            if let Ok(pid) = fs::read_to_string(self.env.root.join(format!("pids/{name}.pid"))) {
                let _ = std::process::Command::new("kill").arg(pid.trim()).status();
            }
        }
    }
}

impl Host {
    fn new(example: &str, socket_for: &[(&str, &str)]) -> Host {
        // No scheduled jobs in these scenes: a set's own schedule goes too.
        Host::build(example, socket_for, |t, _| {
            t.remove("schedule");
            for set in t["backup"]["set"].as_array_mut().into_iter().flatten() {
                set.as_table_mut().unwrap().remove("schedule");
            }
        })
    }

    /// The host with its relocated config changed by `adjust` before it is written.
    pub fn build(
        example: &str,
        socket_for: &[(&str, &str)],
        adjust: impl FnOnce(&mut toml::Table, &Env),
    ) -> Host {
        let env = Env::new();
        let ca = test_ca(&env.root);
        let smtp_port = free_port();
        let smtp = Smtp::start(&env.root, smtp_port, &ca);
        let text = fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("schedules")
                .join(example),
        )
        .unwrap();
        let mut v: toml::Value = toml::from_str(&text).unwrap();
        relocate(&mut v, &env.root, &env.home, "");
        let t = v.as_table_mut().unwrap();
        t.insert("state".into(), toml::toml! { dir = "x" }.into());
        t["state"]["dir"] = env.state.to_string_lossy().into_owned().into();
        t.remove("pings");
        // The examples' hooks check the real host (its backup volume is mounted).
        t.remove("hooks");
        if let Some(sets) = t
            .get_mut("backup")
            .and_then(|b| b.get_mut("set"))
            .and_then(|s| s.as_array_mut())
        {
            for set in sets {
                let set = set.as_table_mut().unwrap();
                // No Redis or PostgreSQL server in these scenes (tests/integration/redis.rs
                // and postgres.rs drive the sources against real ones).
                set.remove("redis");
                set.remove("postgresql");
            }
        }
        let checks = t
            .entry("checks")
            .or_insert(toml::Value::Table(Default::default()));
        for k in ["cpu", "memory", "swap"] {
            checks
                .as_table_mut()
                .unwrap()
                .insert(k.into(), toml::toml! { warn = 100.0 crit = 100.0 }.into());
        }
        checks.as_table_mut().unwrap().insert(
            "load".into(),
            toml::toml! { warn = 1000.0 crit = 1000.0 }.into(),
        );
        if let Some(d) = checks.get_mut("disk").and_then(|d| d.as_table_mut()) {
            d.insert("warn".into(), 100.0.into());
            d.insert("crit".into(), 100.0.into());
        }
        // Services: real local processes behind command adapters.
        let events = env.root.join("events.log");
        fs::create_dir_all(env.root.join("pids")).unwrap();
        let mut services = Vec::new();
        let mut ports = HashMap::new();
        if let Some(list) = t.get_mut("service").and_then(|s| s.as_array_mut()) {
            for s in list.iter_mut() {
                let s = s.as_table_mut().unwrap();
                let name = s["name"].as_str().unwrap().to_string();
                let port = free_port();
                ports.insert(name.clone(), port);
                let pid = env.root.join(format!("pids/{name}.pid"));
                let mut options = format!("--port {port}");
                if let Some((_, p)) = socket_for.iter().find(|(n, _)| *n == name) {
                    options.push_str(&format!(" --sock {}", env.root.join(&p[1..]).display()));
                }
                let c = crate::common::test_service(&env.root, &name, &pid, &options);
                let start = c.start;
                for k in ["unit", "scope", "plist"] {
                    s.remove(k);
                }
                s.insert("manager".into(), "command".into());
                s.insert("start".into(), start.clone().into());
                s.insert("stop".into(), c.stop.into());
                s.insert("status".into(), c.status.into());
                s.insert(
                    "health-url".into(),
                    format!("http://127.0.0.1:{port}/health").into(),
                );
                s.insert("stop-timeout".into(), "10s".into());
                s.insert("start-timeout".into(), "10s".into());
                services.push((name, start));
            }
        }
        let first_port = services.first().map(|(n, _)| ports[n]);
        if let Some(checks) = t.get_mut("checks").and_then(|c| c.as_table_mut()) {
            for h in checks
                .get_mut("http")
                .and_then(|h| h.as_array_mut())
                .into_iter()
                .flatten()
            {
                h.as_table_mut().unwrap().insert(
                    "url".into(),
                    format!("http://127.0.0.1:{}/", first_port.unwrap()).into(),
                );
            }
            for c in checks
                .get_mut("tcp")
                .and_then(|h| h.as_array_mut())
                .into_iter()
                .flatten()
            {
                c.as_table_mut().unwrap().insert(
                    "address".into(),
                    format!("127.0.0.1:{}", first_port.unwrap()).into(),
                );
            }
        }
        fs::write(env.root.join("smtp-pass"), "s3cret\n").unwrap();
        let email = format!(
            "smtp = \"localhost:{smtp_port}\"\nsecurity = \"starttls\"\nusername = \"steward\"\n\
             password-file = \"{root}/smtp-pass\"\nfrom = \"steward@example.com\"\nto = [\"ops@example.com\"]\n\
             ca-file = \"{root}/ca.pem\"\n",
            root = env.root.display()
        );
        let alerts = t
            .entry("alerts")
            .or_insert(toml::Value::Table(Default::default()));
        alerts.as_table_mut().unwrap().insert(
            "email".into(),
            toml::from_str::<toml::Value>(&email).unwrap(),
        );
        adjust(v.as_table_mut().unwrap(), &env);
        let out = toml::to_string(&v).unwrap();
        fs::write(&env.config, &out).unwrap();
        let host = Host {
            env,
            smtp,
            services,
            events,
            config: v,
            smtp_port,
            ca,
        };
        host.make_data();
        host
    }

    /// Builds the host's data: every backed-up path, the databases the config names, logs.
    pub fn make_data(&self) {
        let v = &self.config;
        let mut dbs: Vec<String> = strings(v, &["checks", "sqlite"]);
        for period in ["daily", "weekly", "monthly"] {
            dbs.extend(strings(v, &["maintenance", period, "task", "databases"]));
        }
        for p in strings(v, &["backup", "set", "paths"]) {
            let path = PathBuf::from(&p);
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".db") || name.ends_with(".sqlite3") {
                dbs.push(p.clone());
            } else if name.contains('.') {
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(&path, format!("{name} contents\n").repeat(20)).unwrap();
            } else {
                fs::create_dir_all(path.join("sub")).unwrap();
                fs::write(path.join("notes.txt"), "notes\n".repeat(100)).unwrap();
                fs::write(path.join("sub/item.json"), "{\"k\": 1}\n").unwrap();
            }
        }
        for db in dbs {
            let p = PathBuf::from(&db);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            if !p.exists() {
                let c = rusqlite::Connection::open(&p).unwrap();
                c.execute_batch(
                    "PRAGMA journal_mode=WAL; CREATE TABLE mail (id INTEGER PRIMARY KEY, subject TEXT);
                     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 500)
                     INSERT INTO mail (subject) SELECT 'subject ' || i FROM n;",
                )
                .unwrap();
            }
        }
        for period in ["daily", "weekly", "monthly"] {
            for dir in strings(v, &["maintenance", period, "task", "paths"]) {
                fs::create_dir_all(&dir).unwrap();
                fs::write(
                    Path::new(&dir).join("app.log"),
                    "GET /health 200\n".repeat(50),
                )
                .unwrap();
            }
        }
        for p in strings(v, &["checks", "paths-exist"]) {
            let path = PathBuf::from(&p);
            if !p.ends_with(".sock") && !path.exists() {
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(&path, "{\"scene\": \"default\"}\n").unwrap();
            }
        }
        for p in strings(v, &["checks", "paths-writable"])
            .into_iter()
            .chain(strings(v, &["checks", "disk", "paths"]))
        {
            fs::create_dir_all(p).unwrap();
        }
    }

    pub fn start_services(&self) {
        for (name, start) in &self.services {
            assert!(
                std::process::Command::new("sh")
                    .args(["-c", start])
                    .status()
                    .unwrap()
                    .success()
            );
            let pid = self.env.root.join(format!("pids/{name}.pid"));
            wait_for("a service", Duration::from_secs(10), || pid.exists());
        }
    }

    pub fn steward(&self, args: &[&str]) -> assert_cmd::assert::Assert {
        self.env.cmd().args(args).assert()
    }

    pub fn events(&self) -> Vec<(f64, String, String)> {
        fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: Vec<&str> = l.split_whitespace().collect();
                (v[0].parse().unwrap(), v[1].to_string(), v[2].to_string())
            })
            .collect()
    }

    #[allow(clippy::unused_self)] // a method, so a scene reads as a host's own steps
    pub fn tree(&self, paths: &[String]) -> BTreeMap<String, Vec<u8>> {
        let mut m = BTreeMap::new();
        for p in paths {
            for e in walkdir::WalkDir::new(p).into_iter().filter_map(Result::ok) {
                let n = e.path().to_string_lossy().into_owned();
                if n.ends_with("-wal") || n.ends_with("-shm") {
                    continue;
                }
                let data = if e.file_type().is_file() {
                    fs::read(e.path()).unwrap()
                } else {
                    b"<dir>".to_vec()
                };
                m.insert(n, data);
            }
        }
        m
    }

    pub fn set_paths(&self, set: &str) -> Vec<String> {
        let sets = self.config["backup"]["set"].as_array().unwrap();
        let s = sets
            .iter()
            .find(|s| s["name"].as_str() == Some(set))
            .unwrap();
        s["paths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect()
    }

    pub fn quiesce(&self, set: &str) -> Vec<String> {
        let sets = self.config["backup"]["set"].as_array().unwrap();
        let s = sets
            .iter()
            .find(|s| s["name"].as_str() == Some(set))
            .unwrap();
        s.get("quiesce")
            .and_then(|q| q.as_array())
            .map(|q| q.iter().map(|x| x.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }
}

/// Plays the day on `example`, damaging `set` by corrupting `corrupt` and deleting `delete`
/// (paths as written in the example, before relocation).
fn play(example: &str, set: &str, corrupt: &str, delete: Option<&str>, sockets: &[(&str, &str)]) {
    let h = Host::new(example, sockets);
    h.start_services();
    let reroot = |p: &str| -> PathBuf {
        if let Some(r) = p.strip_prefix("~/") {
            h.env.home.join(r)
        } else {
            h.env.root.join(&p[1..])
        }
    };
    // Last night's backup, then the day.
    h.steward(&["backup"]).success();
    let a = h.steward(&["check"]);
    let out = String::from_utf8_lossy(&a.get_output().stdout).into_owned();
    assert_eq!(
        a.get_output().status.code(),
        Some(0),
        "{example}: check is not green:\n{out}"
    );
    h.steward(&["maintain", "daily"]).success();
    h.steward(&["backup"]).success();
    h.steward(&["prune"]).success();
    let paths = h.set_paths(set);
    let before = h.tree(&paths);
    assert!(!before.is_empty(), "{example}: the set is empty");
    // The incident.
    fs::write(reroot(corrupt), "this is not a database any more").unwrap();
    if let Some(d) = delete {
        let gone = reroot(d);
        if gone.is_dir() {
            fs::remove_dir_all(&gone).unwrap();
        } else {
            fs::remove_file(&gone).unwrap();
        }
    }
    h.steward(&["check"]).code(2);
    let m = h.smtp.messages();
    assert!(
        m.iter()
            .any(|x| x["content"].as_str().unwrap().contains("CRITICAL")),
        "{example}: no alert mail: {m:?}"
    );
    // The runbook's own steward block restores it.
    let dest = PathBuf::from(h.config["backup"]["destination"].as_str().unwrap()).join(set);
    let archives: Vec<String> = crate::common::dir_names(&dest)
        .into_iter()
        .filter(|n| n.ends_with(".tar.zst"))
        .collect();
    let id = archives
        .last()
        .unwrap()
        .trim_end_matches(".tar.zst")
        .to_string();
    let stopped_before = h.events().len();
    crate::runbook::run_runbook_block(&h.env, 0, set, &id, &reroot(corrupt));
    // The set's services were stopped in reverse start order and started in order.
    let quiesce = h.quiesce(set);
    let ev: Vec<(f64, String, String)> = h.events().into_iter().skip(stopped_before).collect();
    let order: Vec<&str> = h
        .services
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| quiesce.iter().any(|q| q == n))
        .collect();
    let stops: Vec<&str> = ev
        .iter()
        .filter(|e| e.2 == "stopping")
        .map(|e| e.1.as_str())
        .collect();
    let starts: Vec<&str> = ev
        .iter()
        .filter(|e| e.2 == "started")
        .map(|e| e.1.as_str())
        .collect();
    let mut rev = order.clone();
    rev.reverse();
    assert_eq!(stops, rev, "{example}: stop order");
    assert_eq!(starts, order, "{example}: start order");
    h.steward(&["check"]).code(0);
    assert_eq!(
        h.tree(&paths),
        before,
        "{example}: restored data differs from the backup"
    );
    let m = h.smtp.messages();
    assert!(
        m.iter()
            .any(|x| x["content"].as_str().unwrap().contains("RECOVERED")),
        "{example}: no recovery mail"
    );
}

#[test]
fn mac_mini_m4() {
    play(
        "mac-mini-m4.toml",
        "gardener-data",
        "~/.codebase-gardener/data/gardener.db",
        Some("~/.codebase-gardener/conversations/sub"),
        &[],
    );
}

#[test]
fn linux_email_pipeline() {
    play(
        "linux-email-pipeline.toml",
        "database",
        "/var/lib/email-pipeline/app.db",
        None,
        &[],
    );
}

#[test]
fn rpi_deploy_server() {
    play(
        "rpi-deploy-server.toml",
        "api",
        "/srv/flask-api/instance/app.db",
        Some("/srv/flask-api/instance/sub"),
        &[],
    );
}

#[test]
fn goxel_daemon() {
    play(
        "goxel-daemon.toml",
        "goxel",
        "/var/lib/goxel/notes.txt",
        Some("/etc/goxel/config.json"),
        &[("goxel", "/run/goxel/goxel.sock")],
    );
}
