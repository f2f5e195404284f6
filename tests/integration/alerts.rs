//! Checks and alerts end to end: Nagios exit codes and JSON, HTTP checks against a real
//! server, mails over STARTTLS to a real SMTP server (problem, reminder, recovery), an
//! outage of SMTP survived across restarts, flapping damped, job failures, pings.

use std::fs;

use crate::common::{Env, stderr, stdout};
use crate::mail::{Http, Smtp, free_port, test_ca};

const T0: i64 = 1_800_000_000;

/// Limits no machine reaches, so only the checks a test sets up can fail.
pub const QUIET: &str = "[checks.cpu]\nwarn = 100\ncrit = 100\n[checks.memory]\nwarn = 100\ncrit = 100\n\
                     [checks.load]\nwarn = 1000\ncrit = 1000\n[checks.disk]\nwarn = 100\ncrit = 100\n";

pub fn mail_config(env: &Env, port: u16) -> String {
    fs::write(env.root.join("smtp-pass"), "s3cret\n").unwrap();
    format!(
        "[alerts]\nremind-every = \"6h\"\n[alerts.email]\nsmtp = \"localhost:{port}\"\nsecurity = \"starttls\"\n\
         username = \"steward\"\npassword-file = \"{root}/smtp-pass\"\nfrom = \"steward@example.com\"\n\
         to = [\"ops@example.com\", \"oncall@example.com\"]\nca-file = \"{root}/ca.pem\"\ntimeout = \"10s\"\n",
        root = env.root.display()
    )
}

fn check_at(env: &Env, t: i64) -> assert_cmd::assert::Assert {
    env.cmd()
        .arg("check")
        .env("STEWARD_NOW", t.to_string())
        .assert()
}

#[test]
fn check_exit_codes_follow_nagios_and_json_has_the_documented_shape() {
    let env = Env::new();
    env.write_config(QUIET);
    let a = env.cmd().args(["check", "--json"]).assert().code(0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    assert_eq!(v["status"], "OK");
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for n in ["cpu", "memory", "load", "disk /"] {
        assert!(names.contains(&n), "{names:?}");
    }
    for key in ["name", "state", "value", "threshold", "since"] {
        assert!(v["checks"][0].get(key).is_some(), "missing {key}");
    }
    // The cycle's disk measurements are kept for the report's forecast.
    let db = rusqlite::Connection::open(env.state.join("state.db")).unwrap();
    let samples: i64 = db
        .query_row(
            "SELECT count(*) FROM disk_samples WHERE path = '/' AND free > 0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(samples, 1);
    env.write_config(&QUIET.replace("[checks.memory]\nwarn = 100", "[checks.memory]\nwarn = 0"));
    env.cmd().arg("check").assert().code(1);
    env.write_config(&QUIET.replace(
        "[checks.memory]\nwarn = 100\ncrit = 100",
        "[checks.memory]\nwarn = 0\ncrit = 0",
    ));
    let a = env.cmd().arg("check").assert().code(2);
    assert!(stdout(&a).contains("memory"), "{}", stdout(&a));
}

#[test]
fn http_checks_against_a_real_server() {
    let env = Env::new();
    let http = Http::start();
    let closed = free_port();
    env.write_config(&format!(
        "{QUIET}\n[[checks.http]]\nname = \"ok\"\nurl = \"{}\"\nbody-contains = \"good\"\n\
         [[checks.http]]\nname = \"fail\"\nurl = \"{}\"\n\
         [[checks.http]]\nname = \"slow\"\nurl = \"{}\"\ntimeout = \"1s\"\n\
         [[checks.http]]\nname = \"laggy\"\nurl = \"{}\"\ntimeout = \"10s\"\nwarn-latency = \"1s\"\n\
         [[checks.http]]\nname = \"refused\"\nurl = \"http://127.0.0.1:{closed}/\"\n\
         [[checks.tcp]]\nname = \"port\"\naddress = \"127.0.0.1:{}\"\n",
        http.url("/ok"),
        http.url("/fail"),
        http.url("/slow"),
        http.url("/slow"),
        http.port
    ));
    let a = env.cmd().args(["check", "--json"]).assert().code(2);
    let v: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    let state = |name: &str| {
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map_or_else(
                || panic!("no check {name}"),
                |c| {
                    (
                        c["state"].as_str().unwrap().to_string(),
                        c["value"].as_str().unwrap().to_string(),
                    )
                },
            )
    };
    assert_eq!(state("http ok").0, "OK");
    assert_eq!(state("http fail"), ("CRIT".into(), "HTTP 500".into()));
    assert_eq!(state("http slow").0, "CRIT");
    assert!(
        state("http slow").1.to_lowercase().contains("timeout")
            || state("http slow").1.contains("timed out"),
        "{:?}",
        state("http slow")
    );
    assert_eq!(state("http laggy").0, "WARN");
    assert_eq!(state("http refused").0, "CRIT");
    assert!(
        state("http refused").1.to_lowercase().contains("refused"),
        "{:?}",
        state("http refused")
    );
    assert_eq!(state("tcp port").0, "OK");
}

#[test]
fn a_problem_mails_once_reminds_and_mails_the_recovery_over_starttls() {
    let env = Env::new();
    let ca = test_ca(&env.root);
    let port = free_port();
    let smtp = Smtp::start(&env.root, port, &ca);
    let flag = env.root.join("flag");
    env.write_config(&format!(
        "{}\n[checks]\npaths-exist = [\"{}\"]\n{QUIET}",
        mail_config(&env, port),
        flag.display()
    ));
    check_at(&env, T0).code(2);
    let m = smtp.messages();
    assert_eq!(m.len(), 1);
    assert_eq!(
        m[0]["to"],
        serde_json::json!(["ops@example.com", "oncall@example.com"])
    );
    assert_eq!(m[0]["tls"], true, "not sent over STARTTLS");
    let content = m[0]["content"].as_str().unwrap();
    assert!(
        content.contains("CRITICAL - 1 critical, 0 warning"),
        "{content}"
    );
    assert!(
        content.contains(&format!("CRITICAL   exists {}: missing", flag.display())),
        "{content}"
    );
    // The same state a cycle later: nothing.
    check_at(&env, T0 + 60).code(2);
    assert_eq!(smtp.messages().len(), 1);
    // Six hours on: one reminder.
    check_at(&env, T0 + 6 * 3600 + 60).code(2);
    let m = smtp.messages();
    assert_eq!(m.len(), 2);
    assert!(
        m[1]["content"].as_str().unwrap().contains("STILL"),
        "{}",
        m[1]["content"]
    );
    // Fixed: one recovery.
    fs::write(&flag, "").unwrap();
    check_at(&env, T0 + 6 * 3600 + 120).code(0);
    let m = smtp.messages();
    assert_eq!(m.len(), 3);
    let content = m[2]["content"].as_str().unwrap();
    assert!(
        content.contains("OK - 0 critical, 0 warning, 1 recovered"),
        "{content}"
    );
    assert!(content.contains("RECOVERED"), "{content}");
    check_at(&env, T0 + 6 * 3600 + 180).code(0);
    assert_eq!(smtp.messages().len(), 3);
}

#[test]
fn smtp_down_then_up_delivers_the_alert_once_across_restarts() {
    let env = Env::new();
    let ca = test_ca(&env.root);
    let port = free_port();
    env.write_config(&format!(
        "{}\n[checks]\npaths-exist = [\"{}/missing\"]\n{QUIET}",
        mail_config(&env, port),
        env.root.display()
    ));
    // SMTP is down: the alert waits in the outbox.
    let a = check_at(&env, T0).code(2);
    assert!(stderr(&a).contains("alert mail not sent"), "{}", stderr(&a));
    // steward runs again (a new process) while SMTP is still down.
    check_at(&env, T0 + 120).code(2);
    let smtp = Smtp::start(&env.root, port, &ca);
    check_at(&env, T0 + 1200).code(2);
    let m = smtp.messages();
    assert_eq!(m.len(), 1, "expected the one problem mail");
    assert!(m[0]["content"].as_str().unwrap().contains("missing"));
    check_at(&env, T0 + 1260).code(2);
    assert_eq!(smtp.messages().len(), 1);
}

#[test]
fn a_flapping_check_within_3_of_5_mails_twice() {
    let env = Env::new();
    let ca = test_ca(&env.root);
    let port = free_port();
    let smtp = Smtp::start(&env.root, port, &ca);
    let http = Http::start();
    env.write_config(&format!(
        "{}\n{QUIET}\n[[checks.http]]\nname = \"flappy\"\nurl = \"{}\"\nwithin = \"3 of 5\"\n",
        mail_config(&env, port),
        http.url("/flap")
    ));
    // Failing every other cycle for ten cycles, then healthy.
    for i in 0..10 {
        // Exit 0 or 2 depending on the cycle; the mails are what is asserted.
        let _ = env
            .cmd()
            .arg("check")
            .env("STEWARD_NOW", (T0 + i * 60).to_string())
            .assert();
    }
    http.flap_ok
        .store(true, std::sync::atomic::Ordering::SeqCst);
    for i in 10..14 {
        // Exit 0 or 2 depending on the cycle; the mails are what is asserted.
        let _ = env
            .cmd()
            .arg("check")
            .env("STEWARD_NOW", (T0 + i * 60).to_string())
            .assert();
    }
    let m = smtp.messages();
    let subjects: Vec<String> = m
        .iter()
        .map(|x| {
            x["content"]
                .as_str()
                .unwrap()
                .lines()
                .find(|l| l.starts_with("Subject:"))
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(m.len(), 2, "{subjects:?}");
    assert!(subjects[0].contains("CRITICAL"), "{subjects:?}");
    assert!(subjects[1].contains("recovered"), "{subjects:?}");
}

#[test]
fn a_failed_backup_job_alerts_and_its_success_recovers() {
    let env = Env::new();
    let ca = test_ca(&env.root);
    let port = free_port();
    let smtp = Smtp::start(&env.root, port, &ca);
    let http = Http::start();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("f"), "x").unwrap();
    let base = format!(
        "[[backup.set]]\nname = \"s\"\npaths = [\"{}\"]\n\n{}\n[pings]\nbackup = \"{}\"\n",
        data.display(),
        mail_config(&env, port),
        http.url("/ping/abc")
    );
    env.write_config(&base);
    env.backup_option("min-free-space = \"1000TiB\"");
    env.cmd().arg("backup").assert().code(2);
    let m = smtp.messages();
    assert_eq!(m.len(), 1);
    let content = m[0]["content"].as_str().unwrap();
    assert!(
        content.contains("job backup:s") && content.contains("min-free-space"),
        "{content}"
    );
    env.write_config(&base);
    env.cmd().arg("backup").assert().success();
    let m = smtp.messages();
    assert_eq!(m.len(), 2);
    assert!(
        m[1]["content"]
            .as_str()
            .unwrap()
            .contains("RECOVERED  job backup:s")
    );
    let hits = http.hits.lock().unwrap().clone();
    assert_eq!(
        hits,
        [
            "/ping/abc/start",
            "/ping/abc/fail",
            "/ping/abc/start",
            "/ping/abc"
        ]
    );
}

#[test]
fn alert_test_reports_the_smtp_outcome_and_never_the_password() {
    let env = Env::new();
    let ca = test_ca(&env.root);
    let port = free_port();
    let smtp = Smtp::start(&env.root, port, &ca);
    env.write_config(&mail_config(&env, port));
    let a = env.cmd().args(["alert", "test"]).assert().success();
    assert!(stdout(&a).contains("test mail accepted"), "{}", stdout(&a));
    assert_eq!(smtp.messages().len(), 1);
    fs::write(env.root.join("smtp-pass"), "wrong-password\n").unwrap();
    let a = env.cmd().args(["alert", "test"]).assert().code(2);
    let err = stderr(&a);
    assert!(err.contains(&format!("SMTP localhost:{port}")), "{err}");
    assert!(
        !err.contains("wrong-password"),
        "the password leaked: {err}"
    );
}

#[test]
fn plain_text_smtp_is_refused_to_anything_but_loopback() {
    let env = Env::new();
    env.write_config(
        "[alerts.email]\nsmtp = \"mail.example.com:25\"\nsecurity = \"none\"\nfrom = \"a@example.com\"\nto = [\"b@example.com\"]\n",
    );
    let a = env.cmd().arg("check").assert().code(78);
    assert!(
        stderr(&a).contains("alerts.email.security"),
        "{}",
        stderr(&a)
    );
}

fn schedule_check(env: &Env, at: Option<i64>) -> serde_json::Value {
    let mut c = env.cmd();
    c.args(["check", "--json"]);
    if let Some(t) = at {
        c.env("STEWARD_NOW", t.to_string());
    }
    let out = c.output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "schedule backup")
        .unwrap()
        .clone()
}

/// Regression (issue 24): a fresh install was CRITICAL "never ran" for every job until it
/// first ran (a month for the monthly one). Now a job that never ran is pending until its
/// first due time plus half a period, then critical; once it ran, 1.5 periods without a run
/// is overdue, and the age in the message is never rounded into the limit.
#[test]
fn a_scheduled_job_that_has_not_run_within_1_5_periods_is_a_failure() {
    let env = Env::new();
    env.write_config(&format!("{QUIET}\n[schedule]\nbackup = \"0 * * * *\"\n"));
    let t0 = steward::clock::now();
    // Just installed: pending, not an alert.
    let job = schedule_check(&env, None);
    assert_eq!(job["state"], "OK", "{job}");
    assert!(
        job["value"].as_str().unwrap().starts_with("pending"),
        "{job}"
    );
    env.cmd().arg("check").assert().code(0);
    // Still never ran three hours later: critical.
    let job = schedule_check(&env, Some(t0 + 3 * 3600));
    assert_eq!(
        (job["state"].as_str(), job["value"].as_str()),
        (Some("CRIT"), Some("never ran"))
    );
    // It runs (steward run is the entry point the timers and the daemon use): OK.
    env.cmd().args(["run", "backup"]).assert().success();
    env.cmd().arg("check").assert().code(0);
    // 90 min 5 s later it has missed more than 1.5 hourly periods, and says so without
    // rounding the age down into the limit.
    let job = schedule_check(&env, Some(steward::clock::now() + 5405));
    assert_eq!(job["state"], "CRIT", "{job}");
    assert_eq!(job["threshold"], "ran within 1h 30m", "{job}");
    assert_eq!(job["value"], "overdue: last run 1h 31m ago", "{job}");
}

/// Regression (issue 24): manual runs did not count, so a host backed up by hand every day
/// still read "never ran" for the scheduled backup job.
#[test]
fn regression_a_manual_backup_of_every_set_counts_as_the_backup_job_running() {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("f"), "x").unwrap();
    env.write_config(&format!(
        "{QUIET}\n[schedule]\nbackup = \"0 3 * * *\"\n\n[[backup.set]]\nname = \"s\"\npaths = [\"{}\"]\n",
        data.display()
    ));
    env.cmd().arg("backup").assert().success();
    // Two days later without the timer, but backed up by hand an hour ago: fresh.
    let t = steward::clock::now();
    env.cmd()
        .arg("backup")
        .arg("--force")
        .env("STEWARD_NOW", (t + 2 * 86_400).to_string())
        .assert()
        .success();
    let job = schedule_check(&env, Some(t + 2 * 86_400 + 3600));
    assert_eq!(job["state"], "OK", "{job}");
    assert!(
        job["value"].as_str().unwrap().starts_with("last run 1h"),
        "{job}"
    );
}

/// Queues three alert mails while SMTP is down: a problem, its recovery, the problem again.
fn three_queued_mails(env: &Env, port: u16) {
    let flag = env.root.join("flag");
    env.write_config(&format!(
        "{}\n[checks]\npaths-exist = [\"{}\"]\n{QUIET}",
        mail_config(env, port),
        flag.display()
    ));
    check_at(env, T0).code(2);
    fs::write(&flag, "").unwrap();
    check_at(env, T0 + 60).code(0);
    fs::remove_file(&flag).unwrap();
    check_at(env, T0 + 120).code(2);
}

/// Regression: `alert flush` with SMTP down set the rows' next attempt to i64::MAX plus
/// the backoff, so no later check ever retried them.
#[test]
fn regression_a_failed_flush_does_not_park_the_mail_forever() {
    let env = Env::new();
    let ca = test_ca(&env.root);
    let port = free_port();
    three_queued_mails(&env, port);
    let a = env
        .cmd()
        .args(["alert", "flush"])
        .env("STEWARD_NOW", (T0 + 180).to_string())
        .assert()
        .code(2);
    assert!(stdout(&a).contains("0 sent, 3 failed"), "{}", stdout(&a));
    let smtp = Smtp::start(&env.root, port, &ca);
    // The ordinary job runs deliver once the backoff has passed; no manual flush.
    check_at(&env, T0 + 7200).code(2);
    assert_eq!(smtp.messages().len(), 3);
}

#[test]
fn concurrent_flushes_and_checks_send_each_queued_mail_exactly_once() {
    let env = Env::new();
    let ca = test_ca(&env.root);
    let port = free_port();
    three_queued_mails(&env, port);
    let smtp = Smtp::start_slow(&env.root, port, &ca, 0.4);
    let later = (T0 + 7200).to_string();
    let mut children: Vec<std::process::Child> = Vec::new();
    for args in [
        &["alert", "flush"][..],
        &["check"],
        &["alert", "flush"],
        &["check"],
        &["alert", "flush"],
    ] {
        children.push(
            env.std_cmd()
                .args(args)
                .env("STEWARD_NOW", &later)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    for mut c in children {
        c.wait().unwrap();
    }
    let m = smtp.messages();
    let mut bodies: Vec<String> = m
        .iter()
        .map(|x| x["content"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        bodies.len(),
        3,
        "each queued mail exactly once: {bodies:#?}"
    );
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 3, "a mail arrived twice");
    let a = env.cmd().args(["alert", "flush"]).assert().success();
    assert!(
        stdout(&a).contains("0 sent, 0 failed, 0 waiting"),
        "{}",
        stdout(&a)
    );
}

/// Regression: `[pings]` keys were never checked (a typo pinged nothing, silently) and
/// `pings.daily` could never fire, since maintenance pinged only as `maintain`.
#[test]
fn regression_ping_keys_are_checked_and_daily_maintenance_pings() {
    let env = Env::new();
    let http = Http::start();
    env.write_config(&format!("[pings]\nbakcup = \"{}\"\n", http.url("/p")));
    let a = env.cmd().args(["config", "check"]).assert().code(78);
    let err = stderr(&a);
    let line = fs::read_to_string(&env.config)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("bakcup"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("{}:{line}:", env.config.display())) && err.contains("pings.bakcup"),
        "{err}"
    );
    env.write_config(&format!("[pings]\ndaily = \"{}\"\n", http.url("/daily")));
    env.cmd().args(["maintain", "daily"]).assert().success();
    env.cmd().args(["maintain", "weekly"]).assert().success();
    let hits = http.hits.lock().unwrap().clone();
    assert_eq!(hits, ["/daily/start", "/daily"]);
}

/// Regression (issue 24): `status` printed "newest verified backup: s-..." next to a stale
/// "CRITICAL backup s no verified backup" from the last check, and a check that found a
/// problem was recorded as a failed job.
#[test]
fn regression_status_never_contradicts_itself_and_a_check_that_finds_problems_is_no_failed_job() {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("f"), "x").unwrap();
    env.write_config(&format!(
        "{QUIET}\n[schedule]\ncheck = \"*/5 * * * *\"\n\n[[backup.set]]\nname = \"s\"\npaths = [\"{}\"]\nmax-age = \"26h\"\n",
        data.display()
    ));
    // The scheduled check finds no backup: critical, exit 2, but the job ran.
    env.cmd().args(["run", "check"]).assert().code(2);
    let a = env.cmd().args(["status", "--json"]).assert().success();
    let v: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    let check = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "check")
        .unwrap()
        .clone();
    assert_eq!(check["last_result"], "warning", "{check}");
    env.cmd().arg("backup").assert().success();
    let a = env.cmd().arg("status").assert().success();
    let out = stdout(&a);
    let line = out
        .lines()
        .find(|l| l.contains("problem: CRITICAL backup s"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("as of the last check"), "{out}");
    env.cmd().arg("check").assert().code(0);
    let a = env.cmd().arg("status").assert().success();
    assert!(!stdout(&a).contains("problem:"), "{}", stdout(&a));
}

/// Regression: a configuration that no longer validated made every timer run exit 78 with
/// nothing but a line on stderr nobody reads. A scheduled run now alerts through the
/// file's `[state]` and `[alerts]`, reminds on later runs, and the first run that loads
/// the file again sends the recovery; a manual command only prints the error.
#[test]
fn regression_a_broken_config_alerts_from_scheduled_runs_and_recovers() {
    let env = Env::new();
    let ca = test_ca(&env.root);
    let port = free_port();
    let smtp = Smtp::start(&env.root, port, &ca);
    let good = format!("{QUIET}\n{}", mail_config(&env, port));
    env.write_config(&good);
    env.cmd()
        .args(["run", "check"])
        .env("STEWARD_NOW", T0.to_string())
        .assert()
        .success();
    // A typo in a key the jobs need.
    env.write_config(&format!("{good}\n[checks.swap]\nwran = 3\n"));
    env.cmd().arg("check").assert().code(78);
    assert!(smtp.messages().is_empty(), "a manual command mailed");
    let a = env
        .cmd()
        .args(["run", "check"])
        .env("STEWARD_NOW", (T0 + 60).to_string())
        .assert()
        .code(78);
    assert!(stderr(&a).contains("wran"), "{}", stderr(&a));
    let m = smtp.messages();
    assert_eq!(m.len(), 1, "{m:?}");
    let body = m[0]["content"].as_str().unwrap().replace("=\r\n", "");
    assert!(
        body.contains("CRITICAL   configuration: broken:") && body.contains("wran"),
        "{body}"
    );
    // Within remind-every: quiet; after it: one reminder.
    env.cmd()
        .args(["run", "check"])
        .env("STEWARD_NOW", (T0 + 120).to_string())
        .assert()
        .code(78);
    assert_eq!(smtp.messages().len(), 1);
    env.cmd()
        .args(["run", "check"])
        .env("STEWARD_NOW", (T0 + 60 + 6 * 3600).to_string())
        .assert()
        .code(78);
    assert_eq!(smtp.messages().len(), 2);
    env.write_config(&good);
    env.cmd()
        .args(["run", "check"])
        .env("STEWARD_NOW", (T0 + 7 * 3600).to_string())
        .assert()
        .success();
    let m = smtp.messages();
    assert_eq!(m.len(), 3, "{m:?}");
    assert!(
        m[2]["content"]
            .as_str()
            .unwrap()
            .contains("RECOVERED  configuration"),
        "{}",
        m[2]["content"]
    );
}
