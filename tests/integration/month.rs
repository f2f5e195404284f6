//! A month in the life (issue 24): each reference plan in `schedules/`, moved into a temp
//! dir like `hosts.rs` does (services are real local processes, alerts go to a loopback
//! SMTP server, the destination is a small tmpfs so the disk check measures a real
//! filesystem), runs 60 simulated days of exactly the jobs its schedule starts, at their
//! times, as `steward schedule --between` lists them. A generator shaped like the host
//! changes the data every simulated day: rows added, updated and deleted, logs appended and
//! rotated, vector-store files rewritten, models left alone; file times follow the
//! simulated clock.
//!
//! Thinned, said here: a check scheduled more often than hourly runs once per simulated
//! hour: the plan's `[schedule] check` becomes `0 * * * *`, so the check's own freshness
//! (it ran within one and a half periods) is judged against what runs. The CPU check is off (`enabled = false`):
//! this machine's CPU load is not the simulated host's, and its 200 ms sample per check
//! would be most of the runtime. Memory, swap and load limits are neutralised as in
//! `hosts.rs`; the disk check keeps the plan's limits on the tmpfs destination.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::SmallDisk;
use crate::hosts::{Host, strings};

const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;
/// 2027-01-04T00:00:00Z, a Monday.
const T0: i64 = 1_799_020_800;

/// A mail as the test sees it: subject and body.
#[derive(Debug, Clone)]
struct Mail {
    subject: String,
    body: String,
}

impl Mail {
    fn is_recovery_only(&self) -> bool {
        self.body.lines().any(|l| l.starts_with("RECOVERED"))
            && !self
                .body
                .lines()
                .any(|l| l.starts_with("CRITICAL") || l.starts_with("WARNING"))
    }
    fn is_reminder_only(&self) -> bool {
        let events: Vec<&str> = self
            .body
            .lines()
            .take_while(|l| !l.starts_with("Not OK now"))
            .skip(2)
            .filter(|l| !l.trim().is_empty())
            .collect();
        !events.is_empty() && events.iter().all(|l| l.starts_with("STILL"))
    }
}

/// A quoted-printable body as text (soft line breaks joined, `=XX` decoded).
fn quoted_printable(s: &str) -> String {
    let s = s.replace("=\n", "");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'='
            && let Some(Ok(v)) = s.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16))
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One simulated host.
struct Sim {
    // Dropped first: the tmpfs goes before the temp dir holding its mount point.
    _disk: SmallDisk,
    h: Host,
    dest: PathBuf,
    dbs: Vec<PathBuf>,
    log_dirs: Vec<PathBuf>,
    /// Set folders the host rewrites (vector stores) or adds to (uploads, attachments).
    dirs: Vec<PathBuf>,
    /// Runs that did not exit as expected: (time, job, code, stderr).
    bad: Vec<(i64, String, i32, String)>,
    runs: usize,
    /// Every run but the checks, for a failing window's message.
    log: Vec<(i64, String, i32, String)>,
    /// Wall time spent per job, for the note.
    spent: std::collections::BTreeMap<String, (usize, std::time::Duration)>,
    day_done: i64,
}

fn plan(example: &str) -> toml::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schedules")
        .join(example);
    toml::from_str(&fs::read_to_string(p).unwrap()).unwrap()
}

/// Sets a file's modification time to simulated time `t`.
fn stamp(path: &Path, t: i64) {
    let ft = filetime::FileTime::from_unix_time(t, 0);
    filetime::set_file_mtime(path, ft).unwrap();
}

impl Sim {
    fn new(example: &str) -> Sim {
        // The daemon's socket, made by its service as in `hosts.rs`.
        let sockets: &[(&str, &str)] = if example == "goxel-daemon.toml" {
            &[("goxel", "/run/goxel/goxel.sock")]
        } else {
            &[]
        };
        let original = plan(example);
        let mut disk = None;
        let h = Host::build(example, sockets, |t, _env| {
            let backup = t["backup"].as_table_mut().unwrap();
            let dest = PathBuf::from(backup["destination"].as_str().unwrap());
            if backup.contains_key("min-free-space") {
                // A 64 MiB disk cannot keep the plan's gigabytes free.
                backup.insert("min-free-space".into(), "1MiB".into());
            }
            disk = Some(SmallDisk::mount(&dest, "64m"));
            t["schedule"]
                .as_table_mut()
                .unwrap()
                .insert("check".into(), "0 * * * *".into());
            let checks = t["checks"].as_table_mut().unwrap();
            checks.insert("cpu".into(), toml::toml! { enabled = false }.into());
            let limit = |k: &str, default: f64| {
                original
                    .get("checks")
                    .and_then(|c| c.get("disk"))
                    .and_then(|d| d.get(k))
                    .and_then(toml::Value::as_integer)
                    .map_or(default, |v| v as f64)
            };
            let mut d = toml::Table::new();
            d.insert("warn".into(), limit("warn", 90.0).into());
            d.insert("crit".into(), limit("crit", 95.0).into());
            d.insert(
                "paths".into(),
                vec![toml::Value::from(dest.to_string_lossy().into_owned())].into(),
            );
            checks.insert("disk".into(), d.into());
        });
        let v = &h.config;
        // node_exporter's textfile folder exists on a host that sets a metrics file.
        if let Some(m) = v.get("schedule").and_then(|s| s.get("metrics-file")) {
            fs::create_dir_all(Path::new(m.as_str().unwrap()).parent().unwrap()).unwrap();
        }
        let dest = PathBuf::from(v["backup"]["destination"].as_str().unwrap());
        let mut dbs: Vec<PathBuf> = strings(v, &["checks", "sqlite"])
            .into_iter()
            .map(PathBuf::from)
            .collect();
        let mut log_dirs = Vec::new();
        for period in ["daily", "weekly", "monthly"] {
            let tasks = v
                .get("maintenance")
                .and_then(|m| m.get(period))
                .and_then(|p| p.get("task"))
                .and_then(toml::Value::as_array)
                .cloned()
                .unwrap_or_default();
            for task in tasks {
                let paths: Vec<PathBuf> = task
                    .get("paths")
                    .and_then(toml::Value::as_array)
                    .into_iter()
                    .flatten()
                    .chain(
                        task.get("databases")
                            .and_then(toml::Value::as_array)
                            .into_iter()
                            .flatten(),
                    )
                    .map(|p| PathBuf::from(p.as_str().unwrap()))
                    .collect();
                match task["kind"].as_str().unwrap() {
                    "logs" => log_dirs.extend(paths),
                    "sqlite" => dbs.extend(paths),
                    _ => {}
                }
            }
        }
        let mut dirs = Vec::new();
        for p in strings(v, &["backup", "set", "paths"]) {
            let p = PathBuf::from(p);
            let name = p.to_string_lossy().into_owned();
            if name.ends_with(".db") || name.ends_with(".sqlite3") {
                dbs.push(p);
            } else if p.is_dir() && !log_dirs.contains(&p) && !name.contains("models") {
                dirs.push(p);
            }
        }
        dbs.sort();
        dbs.dedup();
        log_dirs.sort();
        log_dirs.dedup();
        let sim = Sim {
            _disk: disk.unwrap(),
            h,
            dest,
            dbs,
            log_dirs,
            dirs,
            bad: Vec::new(),
            runs: 0,
            log: Vec::new(),
            spent: Default::default(),
            day_done: -1,
        };
        // The host as it was the evening before the first simulated day.
        for e in walkdir::WalkDir::new(&sim.h.env.root)
            .into_iter()
            .filter_map(Result::ok)
        {
            let p = e.path();
            if e.file_type().is_file()
                && !p.starts_with(&sim.h.env.state)
                && !p.starts_with(&sim.dest)
                && !p.starts_with(sim.h.env.root.join("mail"))
            {
                stamp(p, T0 - 12 * HOUR);
            }
        }
        sim
    }

    /// The runs of the window as steward lists them, checks thinned to the hour.
    fn ticks(&self, from: i64, to: i64) -> Vec<(i64, String)> {
        let a = self
            .h
            .env
            .cmd()
            .env("TZ", "UTC")
            .args(["schedule", "--between"])
            .arg(format!("@{from}"))
            .arg(format!("@{to}"))
            .arg("--json")
            .assert()
            .success();
        let v: serde_json::Value = serde_json::from_slice(&a.get_output().stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["at"].as_i64().unwrap(),
                    t["job"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// `steward run JOB` at simulated time `at`: its exit code and stderr.
    fn run(&mut self, at: i64, job: &str) -> (i32, String) {
        let started = std::time::Instant::now();
        let out = self
            .h
            .env
            .std_cmd()
            .env("TZ", "UTC")
            .env("STEWARD_NOW", at.to_string())
            .args(["run", job])
            .output()
            .unwrap();
        self.runs += 1;
        if job != "check" {
            self.log.push((
                at,
                job.to_string(),
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            ));
        }
        let e = self.spent.entry(job.to_string()).or_default();
        e.0 += 1;
        e.1 += started.elapsed();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ),
        )
    }

    /// Runs a tick, expecting exit code `want`; records it otherwise.
    fn tick(&mut self, at: i64, job: &str, want: i32) {
        let (code, err) = self.run(at, job);
        if code != want {
            self.bad.push((at, job.to_string(), code, err));
        }
    }

    /// The host's day: at noon of each simulated day, the data changes.
    fn live_until(&mut self, at: i64) {
        while (self.day_done + 1) * DAY + T0 + 12 * HOUR <= at {
            self.day_done += 1;
            let day = self.day_done;
            self.change_data(day, T0 + day * DAY + 12 * HOUR);
        }
    }

    fn change_data(&self, day: i64, t: i64) {
        for db in &self.dbs {
            if !db.exists() {
                continue;
            }
            let c = rusqlite::Connection::open(db).unwrap();
            c.execute_batch(&format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 40)
                 INSERT INTO mail (subject) SELECT 'day {day} mail ' || i FROM n;
                 UPDATE mail SET subject = subject || ' (read)' WHERE id % 31 = {m};
                 DELETE FROM mail WHERE id IN (SELECT id FROM mail ORDER BY id LIMIT 10);",
                m = day % 31
            ))
            .unwrap();
            drop(c);
            stamp(db, t);
        }
        let date = crate::common::day_name(t);
        for dir in &self.log_dirs {
            fs::create_dir_all(dir).unwrap();
            let live = dir.join("app.log");
            // Rotated at midnight (yesterday's lines), then today's appended.
            if live.exists() {
                let rotated = dir.join(format!("app-{date}.log"));
                fs::rename(&live, &rotated).unwrap();
            }
            fs::write(&live, format!("{date} GET /health 200\n").repeat(200)).unwrap();
            stamp(&live, t);
        }
        for dir in &self.dirs {
            if !dir.exists() {
                continue;
            }
            let name = dir.to_string_lossy();
            if name.contains("vector") {
                // An index rewritten whole every day.
                let f = dir.join("index.bin");
                crate::common::random_file(&f, 64 << 10, day as u64);
                stamp(&f, t);
            } else if day % 3 == 0 {
                let f = dir.join(format!("item-{day}.json"));
                fs::write(&f, format!("{{\"day\": {day}}}\n")).unwrap();
                stamp(&f, t);
            }
        }
    }

    fn mails(&self) -> Vec<Mail> {
        self.h
            .smtp
            .messages()
            .iter()
            .map(|m| {
                let c = quoted_printable(&m["content"].as_str().unwrap().replace("\r\n", "\n"));
                let subject = c
                    .lines()
                    .find_map(|l| l.strip_prefix("Subject: "))
                    .unwrap_or_default()
                    .to_string();
                let body = c.split_once("\n\n").map_or("", |b| b.1).to_string();
                Mail { subject, body }
            })
            .collect()
    }

    fn assert_ran_clean(&self, what: &str) {
        assert!(
            self.bad.is_empty(),
            "{what}: {} of {} runs did not exit as expected; the first:\n{}",
            self.bad.len(),
            self.runs,
            self.bad
                .iter()
                .take(8)
                .map(|(t, j, c, e)| format!(
                    "  {} {j}: exit {c}: {}",
                    jiff::Timestamp::from_second(*t).unwrap(),
                    e.trim()
                ))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// No partial or side file in the destination or the state dir, and nothing but the
    /// host's own files beside its live databases.
    fn assert_no_litter(&self) {
        for root in [&self.dest, &self.h.env.state] {
            for e in walkdir::WalkDir::new(root)
                .into_iter()
                .filter_map(Result::ok)
            {
                let n = e.file_name().to_string_lossy().into_owned();
                assert!(
                    !n.contains("partial") && !n.ends_with("-wal") && !n.ends_with("-shm")
                        || root == &self.h.env.state && n.starts_with("catalog.db"),
                    "litter: {}",
                    e.path().display()
                );
            }
        }
        for db in &self.dbs {
            for side in ["-wal", "-shm", "-journal"] {
                let p = PathBuf::from(format!("{}{side}", db.display()));
                assert!(
                    !p.exists(),
                    "left beside the live database: {}",
                    p.display()
                );
            }
        }
    }
}

/// Runs the 60 healthy days of `example`: every run exits 0 and no mail is sent.
fn healthy(example: &str) {
    let mut sim = Sim::new(example);
    sim.h.start_services();
    let ticks = sim.ticks(T0, T0 + 60 * DAY);
    assert!(
        ticks.iter().any(|(_, j)| j.starts_with("backup")),
        "{example}: no backup in the schedule"
    );
    for (at, job) in &ticks {
        sim.live_until(*at);
        sim.tick(*at, job, 0);
    }
    sim.assert_ran_clean(example);
    // The plan's monthly `report` task mails a report: asked for, not an alert.
    let (reports, mails): (Vec<Mail>, Vec<Mail>) = sim
        .mails()
        .into_iter()
        .partition(|m| m.subject.ends_with(": monthly report"));
    let monthly_reports = if sim
        .h
        .config
        .get("maintenance")
        .and_then(|m| m.get("monthly"))
        .and_then(|m| m.get("task"))
        .and_then(toml::Value::as_array)
        .is_some_and(|t| t.iter().any(|t| t["kind"].as_str() == Some("report")))
    {
        ticks.iter().filter(|(_, j)| j == "monthly").count()
    } else {
        0
    };
    assert_eq!(reports.len(), monthly_reports, "{example}: report mails");
    assert!(
        mails.is_empty(),
        "{example}: {} mails on a healthy host; the first: {} {}",
        mails.len(),
        mails[0].subject,
        mails[0].body
    );
    sim.assert_no_litter();
    // Every set was backed up on its schedule and the newest of each verifies.
    sim.h.steward(&["verify", "--latest"]).success();
    eprintln!(
        "{example}: {} runs in 60 simulated days: {:?}",
        sim.runs, sim.spent
    );
}

#[test]
fn month_in_the_life_mac_mini_m4() {
    healthy("mac-mini-m4.toml");
}

#[test]
fn month_in_the_life_linux_email_pipeline() {
    healthy("linux-email-pipeline.toml");
}

#[test]
fn month_in_the_life_rpi_deploy_server() {
    healthy("rpi-deploy-server.toml");
}

#[test]
fn month_in_the_life_goxel_daemon() {
    healthy("goxel-daemon.toml");
}

/// A change the fault test makes to the host at a simulated time.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Act {
    /// Where a fault's mails start being counted.
    Begin(&'static str),
    /// Where they end; the whole window's mails are judged.
    End(&'static str),
    Unmount,
    Remount,
    FillDisk,
    FreeDisk,
    StopService,
    StartService,
    Garbage,
    DeleteHalf,
    /// The tired human restores the newest good backup of the database.
    Restore,
    SmtpDown,
    SmtpUp,
}

impl Sim {
    fn act(&mut self, act: Act, at: i64) {
        let root = self.h.env.root.clone();
        let attachments = root.join("var/lib/email-pipeline/attachments");
        let away = root.join("var/lib/email-pipeline/attachments.unmounted");
        let db = root.join("var/lib/email-pipeline/app.db");
        let filler = self.dest.join("filler.bin");
        match act {
            Act::Begin(_) | Act::End(_) => {}
            Act::Unmount => fs::rename(&attachments, &away).unwrap(),
            Act::Remount => fs::rename(&away, &attachments).unwrap(),
            Act::FillDisk => {
                // To 97 % used: past the plan's critical 95 %, with room for the night's
                // backup above `min-free-space`.
                let out = std::process::Command::new("df")
                    .args(["-B1", "--output=size,used"])
                    .arg(&self.dest)
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let v: Vec<u64> = text
                    .lines()
                    .nth(1)
                    .unwrap()
                    .split_whitespace()
                    .map(|x| x.parse().unwrap())
                    .collect();
                let want = v[0] * 97 / 100 - v[1];
                fs::write(&filler, vec![0u8; want as usize]).unwrap();
            }
            Act::FreeDisk => fs::remove_file(&filler).unwrap(),
            Act::StopService => {
                let pid = root.join("pids/email-pipeline.pid");
                let n = fs::read_to_string(&pid).unwrap();
                assert!(
                    std::process::Command::new("kill")
                        .arg(n.trim())
                        .status()
                        .unwrap()
                        .success()
                );
                crate::common::wait_for(
                    "the service to stop",
                    std::time::Duration::from_secs(10),
                    || !pid.exists(),
                );
            }
            Act::StartService => {
                let (name, start) = self
                    .h
                    .services
                    .iter()
                    .find(|(n, _)| n == "email-pipeline")
                    .unwrap()
                    .clone();
                let pid = root.join(format!("pids/{name}.pid"));
                crate::common::start_service(&start, "email-pipeline", || pid.exists());
            }
            Act::Garbage => {
                fs::write(&db, "this is not a database any more\n".repeat(100)).unwrap();
                stamp(&db, at);
            }
            Act::DeleteHalf => {
                let c = rusqlite::Connection::open(&db).unwrap();
                // Half of the rows, after the day's growth (the guard compares with the
                // morning's backup: about 49 % of its rows are gone).
                c.execute_batch(
                    "DELETE FROM mail WHERE id IN (SELECT id FROM mail ORDER BY random()
                     LIMIT (SELECT (count(*) + 1) / 2 FROM mail));",
                )
                .unwrap();
                drop(c);
                stamp(&db, at);
            }
            Act::Restore => {
                let list = self
                    .h
                    .env
                    .cmd()
                    .env("STEWARD_NOW", at.to_string())
                    .args(["backups", "list", "--set", "database", "--json"])
                    .assert()
                    .success();
                let v: serde_json::Value =
                    serde_json::from_slice(&list.get_output().stdout).unwrap();
                let good = v
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|b| b["suspect"].as_array().is_none_or(Vec::is_empty))
                    .unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string();
                self.h
                    .env
                    .cmd()
                    .env("TZ", "UTC")
                    .env("STEWARD_NOW", at.to_string())
                    .args(["restore", &good, "--yes"])
                    .assert()
                    .success();
            }
            Act::SmtpDown => self.h.smtp.stop(),
            Act::SmtpUp => {
                self.h.smtp = crate::mail::Smtp::start(&root, self.h.smtp_port, &self.h.ca);
            }
        }
    }
}

/// The documented reminders of a problem alerted at `first` that hourly checks find until
/// `until`: one `remind-every` after the last mail, on a cycle that still finds it.
fn reminders(first: i64, until: i64, every: i64) -> usize {
    let mut n = 0;
    let mut last = first;
    let mut t = first + HOUR;
    while t < until {
        if t - last >= every {
            n += 1;
            last = t;
        }
        t += HOUR;
    }
    n
}

/// Injected faults on the linux-email-pipeline plan, each in its own window: exactly one
/// alert, the reminders `remind-every` documents, one recovery, and nothing else; while
/// SMTP is down for a day the mails wait in the outbox and arrive afterwards, once each.
#[test]
fn month_in_the_life_faults_each_alert_once_remind_and_recover() {
    let mut sim = Sim::new("linux-email-pipeline.toml");
    sim.h.start_services();
    let every = 6 * HOUR; // the plan's `remind-every`
    let at = |day: i64, h: i64, m: i64| T0 + day * DAY + h * HOUR + m * 60;
    // (time, act); the expected mails of each window: (problem time, recovery time).
    let plan: Vec<(i64, Act)> = vec![
        (
            at(5, 11, 0),
            Act::Begin("a set path unmounted for two days"),
        ),
        (at(5, 12, 0), Act::Unmount),
        (at(7, 12, 0), Act::Remount),
        (at(8, 4, 0), Act::End("a set path unmounted for two days")),
        (at(12, 11, 0), Act::Begin("the disk past critical")),
        (at(12, 12, 0), Act::FillDisk),
        (at(13, 12, 0), Act::FreeDisk),
        (at(13, 13, 0), Act::End("the disk past critical")),
        (
            at(18, 12, 0),
            Act::Begin("the service down for three checks"),
        ),
        (at(18, 12, 30), Act::StopService),
        (at(18, 15, 30), Act::StartService),
        (at(18, 17, 0), Act::End("the service down for three checks")),
        (
            at(24, 11, 0),
            Act::Begin("a database overwritten with garbage"),
        ),
        (at(24, 12, 0), Act::Garbage),
        (at(24, 14, 30), Act::Restore),
        (
            at(24, 16, 0),
            Act::End("a database overwritten with garbage"),
        ),
        (at(30, 11, 0), Act::Begin("half of a table deleted")),
        (at(30, 12, 0), Act::DeleteHalf),
        (at(31, 9, 30), Act::Restore),
        (at(32, 4, 0), Act::End("half of a table deleted")),
        (at(40, 0, 0), Act::Begin("SMTP down for a day")),
        (at(40, 0, 0), Act::SmtpDown),
        (at(40, 10, 30), Act::StopService),
        (at(40, 13, 30), Act::StartService),
        (at(41, 0, 0), Act::SmtpUp),
        (at(41, 2, 0), Act::End("SMTP down for a day")),
    ];
    // (window, alerted at, reminded until, recovered at): the check or job run that sees
    // each change. An unmounted path is reminded of while a check still finds it missing;
    // its recovery is the set's next good backup.
    let expect: Vec<(&str, i64, i64, i64)> = vec![
        (
            "a set path unmounted for two days",
            at(5, 12, 0),
            at(7, 12, 0),
            at(8, 3, 0),
        ),
        (
            "the disk past critical",
            at(12, 12, 0),
            at(13, 12, 0),
            at(13, 12, 0),
        ),
        (
            "the service down for three checks",
            at(18, 13, 0),
            at(18, 16, 0),
            at(18, 16, 0),
        ),
        (
            "a database overwritten with garbage",
            at(24, 12, 0),
            at(24, 15, 0),
            at(24, 15, 0),
        ),
        (
            "half of a table deleted",
            at(31, 3, 0),
            at(32, 3, 1), // the 03:00 check (first in [schedule]) still finds it; then the backup mends it
            at(32, 3, 0),
        ),
        (
            "SMTP down for a day",
            at(40, 11, 0),
            at(40, 14, 0),
            at(40, 14, 0),
        ),
    ];
    let ticks = sim.ticks(T0, T0 + 60 * DAY);
    let plan_times = plan.clone();
    let mut acts = plan.into_iter().peekable();
    let mut windows: Vec<(&str, usize, usize)> = Vec::new();
    let mut outside = Vec::new();
    let mut mark = 0usize;
    for (t, job) in &ticks {
        sim.live_until(*t);
        while let Some((when, act)) = acts.peek().copied() {
            if when > *t {
                break;
            }
            acts.next();
            let n = sim.mails().len();
            match act {
                Act::Begin(_) => {
                    if n != mark {
                        outside.push((when, n - mark));
                    }
                    mark = n;
                }
                Act::End(w) => {
                    windows.push((w, mark, n));
                    mark = n;
                }
                other => sim.act(other, when),
            }
        }
        let _ = sim.run(*t, job);
    }
    let mails = sim.mails();
    // And after the last window.
    if mails.len() > mark {
        outside.push((T0 + 60 * DAY, mails.len() - mark));
    }
    let mut report = Vec::new();
    for (name, from, to) in &windows {
        let got = &mails[*from..*to];
        let (_, first, until, recovered) = expect.iter().find(|e| e.0 == *name).unwrap();
        let stamp = |t: i64| {
            jiff::Timestamp::from_second(t)
                .unwrap()
                .strftime("%Y-%m-%d %H:%MZ")
                .to_string()
        };
        let want_reminders = reminders(*first, *until, every);
        report.push(format!("{name}: {} mails", got.len()));
        let shown = got
            .iter()
            .map(|m| format!("{}\n{}", m.subject, m.body))
            .collect::<Vec<_>>()
            .join("\n----\n");
        let (w0, w1) = (
            plan_times
                .iter()
                .find(|p| p.1 == Act::Begin(name))
                .unwrap()
                .0,
            plan_times.iter().find(|p| p.1 == Act::End(name)).unwrap().0,
        );
        let runs: Vec<String> = sim
            .log
            .iter()
            .filter(|r| r.0 >= w0 && r.0 <= w1)
            .map(|r| format!("{} {} exit {}:\n{}", r.0, r.1, r.2, r.3))
            .collect();
        let runs = runs.join("");
        let shown = format!("{shown}\n==== the window's runs:\n{runs}");
        assert!(got.len() >= 2, "{name}: {} mails:\n{shown}", got.len());
        assert!(
            !got[0].is_reminder_only() && !got[0].is_recovery_only(),
            "{name}: the first mail is not the alert:\n{shown}"
        );
        assert!(
            got.last().unwrap().is_recovery_only(),
            "{name}: the last mail is not the recovery:\n{shown}"
        );
        assert!(
            got[0].body.lines().next().unwrap().contains(&stamp(*first))
                && got
                    .last()
                    .unwrap()
                    .body
                    .lines()
                    .next()
                    .unwrap()
                    .contains(&stamp(*recovered)),
            "{name}: alerted or recovered at the wrong time (want {} and {}):\n{shown}",
            stamp(*first),
            stamp(*recovered)
        );
        let middle = &got[1..got.len() - 1];
        assert!(
            middle.iter().all(Mail::is_reminder_only),
            "{name}: a mail between the alert and the recovery is not a reminder:\n{shown}"
        );
        assert_eq!(middle.len(), want_reminders, "{name}: reminders:\n{shown}");
    }
    assert_eq!(windows.len(), expect.len());
    // Nothing between the windows but the plan's monthly reports.
    let stray: usize = outside.iter().map(|o| o.1).sum();
    let reports = mails
        .iter()
        .filter(|m| m.subject.ends_with(": monthly report"))
        .count();
    assert_eq!(
        stray, reports,
        "mails outside the fault windows: {outside:?}"
    );
    sim.assert_no_litter();
    eprintln!("faults: {} runs; {}", sim.runs, report.join("; "));
}

/// The lighter loop: 400 simulated days of the nightly backup (which prunes after itself)
/// under the linux-email-pipeline plan's policy (7 daily, 4 weekly, 12 monthly). The
/// destination then holds exactly the backups `restic forget --dry-run` keeps of the same
/// instants (both in Europe/Berlin, across its DST changes), each verifies, and no partial or
/// side file is left anywhere.
#[test]
fn retention_over_400_days_matches_restic_forget() {
    let env = crate::common::Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    env.one_set(
        "app",
        &[&data],
        "[backup.keep]\ndaily = 7\nweekly = 4\nmonthly = 12\n\n[schedule]\nbackup = \"0 3 * * *\"\n",
    );
    let list = env
        .cmd()
        .env("TZ", crate::restic::ZONE)
        .args(["schedule", "--between"])
        .arg(format!("@{T0}"))
        .arg(format!("@{}", T0 + 400 * DAY))
        .args(["--job", "backup", "--json"])
        .assert()
        .success();
    let ticks: Vec<i64> = serde_json::from_slice::<serde_json::Value>(&list.get_output().stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["at"].as_i64().unwrap())
        .collect();
    assert_eq!(ticks.len(), 400);
    for (day, at) in ticks.iter().enumerate() {
        let f = data.join("ledger.txt");
        fs::write(&f, format!("day {day}\n").repeat(20)).unwrap();
        stamp(&f, at - 3 * HOUR);
        let out = env
            .std_cmd()
            .env("TZ", crate::restic::ZONE)
            .env("STEWARD_NOW", at.to_string())
            .args(["run", "backup"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "day {day}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // What is left, by the instant in each archive's name.
    let kept: std::collections::BTreeSet<String> = env
        .archives("app")
        .iter()
        .map(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.trim_start_matches("app-")
                .trim_end_matches(".tar.zst")
                .to_string()
        })
        .collect();
    // restic over the same instants, in two streams.
    let repo = env.root.join("restic");
    let restic = |args: &[&str]| crate::restic::restic(&repo, args);
    restic(&["init", "-q"]);
    let one = env.root.join("one");
    fs::write(&one, "x").unwrap();
    // restic takes local times: both sides decide in the same zone (with DST).
    let zone = jiff::tz::TimeZone::get(crate::restic::ZONE).unwrap();
    let when = |t: i64| {
        jiff::Timestamp::from_second(t)
            .unwrap()
            .to_zoned(zone.clone())
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    std::thread::scope(|s| {
        for half in [0, 1] {
            let (ticks, one, restic, when) = (&ticks, &one, &restic, &when);
            s.spawn(move || {
                for t in ticks.iter().skip(half).step_by(2) {
                    restic(&[
                        "backup",
                        "-q",
                        "--host",
                        "h",
                        "--time",
                        &when(*t),
                        one.to_str().unwrap(),
                    ]);
                }
            });
        }
    });
    let out: serde_json::Value = serde_json::from_str(&restic(&[
        "forget",
        "--dry-run",
        "--json",
        "--keep-daily",
        "7",
        "--keep-weekly",
        "4",
        "--keep-monthly",
        "12",
    ]))
    .unwrap();
    let theirs: std::collections::BTreeSet<String> = out[0]["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["time"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .unwrap()
                .strftime("%Y%m%dT%H%M%SZ")
                .to_string()
        })
        .collect();
    assert_eq!(
        kept, theirs,
        "the destination differs from restic's keep set"
    );
    env.cmd().args(["verify", "--all"]).assert().success();
    for root in [&env.dest, &env.state] {
        for e in walkdir::WalkDir::new(root)
            .into_iter()
            .filter_map(Result::ok)
        {
            let n = e.file_name().to_string_lossy().into_owned();
            assert!(
                !n.contains("partial") && !n.starts_with(".app"),
                "litter: {}",
                e.path().display()
            );
        }
    }
    let names = crate::common::dir_names(&env.dest.join("app"));
    assert!(
        names.iter().all(|n| kept
            .iter()
            .any(|k| n.starts_with(&format!("app-{k}.tar.zst")))),
        "a file in the set's folder that is no kept backup's: {names:?}"
    );
}
