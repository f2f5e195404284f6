//! The status page, `/metrics` and `/health` (issue 29): the page in a real headless
//! Chromium (rows and states, one chart point per disk sample, no console error, no request
//! leaving the host), `/metrics` through `promtool check metrics`, `/health`'s 200 and 503,
//! the token rules, and the page inside the daemon.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rusqlite::Connection;

use crate::common::{Env, wait_for};

/// A running `steward serve`; killed when dropped.
pub struct Served {
    child: Child,
    pub port: u16,
}

impl Served {
    /// `steward serve --listen ADDR` (port 0: any), once it says where it listens.
    pub fn start(env: &Env, listen: &str, envs: &[(&str, &str)]) -> Served {
        let mut cmd = env.std_cmd();
        cmd.args(["serve", "--listen", listen])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let mut err = String::new();
                let _ = child.stderr.as_mut().unwrap().read_to_string(&mut err);
                panic!("steward serve did not start: {line:?} {err}")
            });
        Served { child, port }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 GET with `headers` (a Host header is added unless given): (status, head,
/// body).
pub fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_mins(1))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_string(), body.to_string())
}

/// `chromium --headless` on `url` with `args` (`--dump-dom`, `--screenshot=...`), its net
/// log in `dir`: (stdout, stderr, the URLs the page itself requested).
fn chromium(dir: &Path, url: &str, args: &[&str]) -> (String, String, Vec<String>) {
    let netlog = dir.join("net.json");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--log-net-log={}", netlog.display()))
        .args(args)
        .arg(url)
        .env("HOME", dir)
        .output()
        .expect("chromium (tests/run installs it)");
    assert!(out.status.success(), "chromium failed: {out:?}");
    let log: serde_json::Value = serde_json::from_slice(&fs::read(&netlog).unwrap()).unwrap();
    let start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].clone();
    // The page's own requests carry its site in their network isolation key; the
    // browser's background traffic (updates, sign-in) does not, and is not the page's.
    let page = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == start)
        .filter(|e| {
            e["params"]["network_isolation_key"]
                .as_str()
                .is_some_and(|k| k.starts_with("http://127.0.0.1"))
        })
        .filter_map(|e| e["params"]["url"].as_str().map(str::to_string))
        .collect();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        page,
    )
}

/// Writes check states, disk samples and a waiting mail straight into the catalog.
fn seed(env: &Env, disk: &Path, now: i64, samples: usize) {
    let c = Connection::open(env.state.join("state.db")).unwrap();
    c.execute("DELETE FROM check_states", []).unwrap();
    for (name, state, since, value) in [
        ("service web", "C", now - 3_600, "not running"),
        ("memory", "W", now - 600, "91.0 %"),
        ("backup app", "O", now - 86_400, "2h old"),
    ] {
        c.execute(
            "INSERT INTO check_states (name, state, since, history, value, threshold)
             VALUES (?1, ?2, ?3, ?2, ?4, 'seeded')",
            rusqlite::params![name, state, since, value],
        )
        .unwrap();
    }
    let total: i64 = 100 << 30;
    for i in 0..samples as i64 {
        let used = (40 << 30) + i * (100 << 20);
        c.execute(
            "INSERT INTO disk_samples (path, at, used, free) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![
                disk.to_string_lossy(),
                now - (samples as i64 - i) * 3_600,
                used,
                total - used
            ],
        )
        .unwrap();
    }
    c.execute(
        "INSERT INTO outbox (created_at, subject, body, attempts, next_attempt, last_error,
             channel, level)
         VALUES (?1, 'steward on vm: CRITICAL service web', 'b', 3, ?1, 'connection refused',
             'email', 'CRITICAL')",
        [now - 300],
    )
    .unwrap();
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A set `app` over `<root>/data`, its disk watched, backed up twice (the second marked
/// suspect by hand).
fn world(extra: &str) -> (Env, PathBuf, String) {
    let env = Env::new();
    let data = env.root.join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("notes.txt"), "hello\n").unwrap();
    let disk = env.root.clone();
    env.write_config(&format!(
        "[[backup.set]]\nname = \"app\"\npaths = [\"{}\"]\n\n[checks.disk]\npaths = [\"{}\"]\n\
         [schedule]\ncheck = \"*/5 * * * *\"\n{extra}\n",
        data.display(),
        disk.display()
    ));
    env.cmd().arg("backup").assert().success();
    fs::write(data.join("notes.txt"), "changed\n").unwrap();
    env.cmd()
        .arg("backup")
        .env("STEWARD_NOW", (now() + 2).to_string())
        .assert()
        .success();
    let list = env.list_json();
    let newest = list[0]["id"].as_str().unwrap().to_string();
    let c = Connection::open(env.state.join("state.db")).unwrap();
    c.execute(
        "UPDATE backups SET suspect = '[\"4 of 5 files changed\"]' WHERE id = ?1",
        [&newest],
    )
    .unwrap();
    (env, disk, newest)
}

/// A token file of `mode` and the config `text` with `[serve]` on every address using it.
fn with_token(env: &Env, text: &str, mode: u32) -> PathBuf {
    let token = env.root.join("token");
    fs::write(&token, "0123456789abcdef0123\n").unwrap();
    fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    fs::write(
        &env.config,
        format!(
            "{text}\n[serve]\nlisten = \"0.0.0.0:9910\"\ntoken-file = \"{}\"\n",
            token.display()
        ),
    )
    .unwrap();
    token
}

/// The points of the capacity chart's line.
fn chart_points(dom: &str) -> (usize, usize) {
    let at = dom.find("class=\"used\"").expect("the chart's line");
    let tag = &dom[at..at
        + dom[at..]
            .find("/>")
            .or(dom[at..].find("</polyline>"))
            .unwrap()];
    let attr = |name: &str| {
        let start = tag.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        tag[start..start + tag[start..].find('"').unwrap()].to_string()
    };
    (
        attr("data-samples").parse().unwrap(),
        attr("points").split_whitespace().count(),
    )
}

#[test]
fn the_page_in_headless_chromium_shows_the_seeded_rows_one_point_per_sample_and_asks_nothing_of_anyone_else()
 {
    let (env, disk, suspect) = world("");
    seed(&env, &disk, now(), 48);
    let served = Served::start(&env, "127.0.0.1:0", &[]);
    let url = format!("http://127.0.0.1:{}/", served.port);
    let dir = env.root.join("chromium");
    fs::create_dir_all(&dir).unwrap();
    let (dom, log, requests) = chromium(&dir, &url, &["--dump-dom"]);

    // The checks, each with its state.
    for (check, state) in [
        ("service web", "critical"),
        ("memory", "warning"),
        ("backup app", "ok"),
    ] {
        assert!(
            dom.contains(&format!("data-check=\"{check}\" data-state=\"{state}\"")),
            "{check} {state}: {dom}"
        );
    }
    assert!(
        dom.contains("id=\"worst\" class=\"state critical\""),
        "{dom}"
    );
    // The set: its newest good backup (the first), and the suspect one, also listed alone.
    assert!(dom.contains("data-set=\"app\""));
    assert!(dom.contains(&format!("data-backup=\"{suspect}\"")), "{dom}");
    assert!(dom.contains("4 of 5 files changed"));
    // The mail waiting, and the jobs.
    assert!(dom.contains("connection refused"), "{dom}");
    assert!(dom.contains("data-job=\"backup\"") || dom.contains("data-job=\"check\""));
    // One point per sample, and the day the disk fills.
    assert_eq!(chart_points(&dom), (48, 48));
    assert!(dom.contains("full on "), "{dom}");

    // No console message at all (a CSP violation is one), and the page asked only its own
    // server for anything.
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "{console:#?}");
    assert!(!requests.is_empty(), "the net log saw the page's request");
    for r in &requests {
        assert!(r.starts_with(&url), "the page requested {r}");
    }

    // A screenshot renders.
    let png = dir.join("page.png");
    chromium(
        &dir,
        &url,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,1600",
            "--hide-scrollbars",
        ],
    );
    let bytes = fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "{}",
        bytes.len()
    );
}

#[test]
fn a_year_of_disk_samples_is_merged_to_the_charts_width_with_the_spike_kept() {
    let (env, disk, _) = world("");
    seed(&env, &disk, now(), 24 * 365);
    let served = Served::start(&env, "127.0.0.1:0", &[]);
    let (code, _, body) = get(served.port, "/", &[]);
    assert_eq!(code, 200);
    // 30 days of hourly samples are 720: more than the chart shows.
    let (samples, points) = chart_points(&body);
    assert_eq!(samples, points);
    assert!(points <= 600 && points > 300, "{points}");
}

#[test]
fn metrics_pass_promtool_and_health_answers_200_until_something_is_critical_or_stale() {
    let (env, _, _) = world("");
    let served = Served::start(&env, "127.0.0.1:0", &[]);
    let (code, head, body) = get(served.port, "/metrics", &[]);
    assert_eq!(code, 200, "{head}");
    assert!(body.contains("steward_backup_bytes{set=\"app\"}"), "{body}");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (tests/run installs prometheus)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(out.status.success(), "promtool: {out:?}");

    let c = Connection::open(env.state.join("state.db")).unwrap();
    let set_state = |s: &str| {
        c.execute("DELETE FROM check_states", []).unwrap();
        c.execute(
            "INSERT INTO check_states (name, state, since, history, value, threshold)
             VALUES ('service web', ?1, 0, ?1, 'v', 't')",
            [s],
        )
        .unwrap();
    };
    let health = |want: u16, status: &str| {
        let (code, _, body) = get(served.port, "/health", &[]);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (code, v["status"].as_str().unwrap()),
            (want, status),
            "{body}"
        );
        v
    };
    // A fresh check run, so the states are current.
    c.execute(
        "INSERT INTO runs (job, started_at, finished_at, status, scheduled)
         VALUES ('check', ?1, ?1, 'ok', 1)",
        [now()],
    )
    .unwrap();
    set_state("O");
    health(200, "ok");
    set_state("W");
    health(200, "warning");
    set_state("C");
    let v = health(503, "critical");
    assert_eq!(v["problems"][0]["check"], "service web");
    // All OK, but the check job has not run for an hour on a 5-minute schedule: the
    // states are old, which is not healthy.
    set_state("O");
    c.execute(
        "UPDATE runs SET started_at = ?1, finished_at = ?1 WHERE job = 'check'",
        [now() - 3_600],
    )
    .unwrap();
    let v = health(503, "critical");
    assert!(
        v["stale"]
            .as_str()
            .unwrap()
            .contains("the check job last ran"),
        "{v}"
    );
}

#[test]
fn a_reachable_address_without_a_token_is_refused_and_with_one_a_request_without_it_gets_401() {
    let (env, _, _) = world("");
    // Not loopback, no token: refused at start, naming the setting.
    let a = env
        .cmd()
        .args(["serve", "--listen", "0.0.0.0:0"])
        .assert()
        .code(78);
    assert!(
        crate::common::stderr(&a).contains("token-file"),
        "{}",
        crate::common::stderr(&a)
    );
    let text = fs::read_to_string(&env.config).unwrap();
    fs::write(
        &env.config,
        format!("{text}\n[serve]\nlisten = \"0.0.0.0:9910\"\n"),
    )
    .unwrap();
    let a = env.cmd().args(["config", "check"]).assert().code(78);
    assert!(
        crate::common::stderr(&a).contains("serve.listen"),
        "{}",
        crate::common::stderr(&a)
    );

    // A token others can read is refused too.
    let token = with_token(&env, &text, 0o644);
    let a = env
        .cmd()
        .args(["serve", "--listen", "0.0.0.0:0"])
        .assert()
        .code(78);
    assert!(crate::common::stderr(&a).contains("chmod 600"));
    fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    let served = Served::start(&env, "0.0.0.0:0", &[]);
    let (code, head, _) = get(served.port, "/", &[]);
    assert_eq!(code, 401);
    assert!(
        head.to_lowercase().contains("www-authenticate: basic"),
        "{head}"
    );
    for path in ["/metrics", "/health"] {
        assert_eq!(get(served.port, path, &[]).0, 401, "{path}");
    }
    let bearer = ("Authorization", "Bearer 0123456789abcdef0123");
    assert_eq!(get(served.port, "/", &[bearer]).0, 200);
    assert_eq!(get(served.port, "/health", &[bearer]).0, 200);
    assert_eq!(
        get(
            served.port,
            "/",
            &[("Authorization", "Bearer 0123456789abcdef0124")]
        )
        .0,
        401
    );
    // Basic auth, any user, the token as the password: what a browser sends.
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("me:0123456789abcdef0123")
    );
    assert_eq!(get(served.port, "/", &[("Authorization", &basic)]).0, 200);
}

#[test]
fn without_a_token_only_loopback_host_names_are_answered_and_nothing_can_be_changed() {
    let (env, _, _) = world("");
    let served = Served::start(&env, "127.0.0.1:0", &[]);
    // A DNS-rebinding page reaches 127.0.0.1 under its own name.
    let (code, _, body) = get(served.port, "/", &[("Host", "attacker.example:9910")]);
    assert_eq!(code, 421, "{body}");
    assert_eq!(get(served.port, "/", &[("Host", "localhost")]).0, 200);
    // Only GET (and HEAD).
    let mut s = TcpStream::connect(("127.0.0.1", served.port)).unwrap();
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    // Every answer says what the browser may load: nothing from anywhere.
    let (_, head, _) = get(served.port, "/", &[]);
    let head = head.to_lowercase();
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"));
    assert_eq!(get(served.port, "/../etc/passwd", &[]).0, 404);
}

#[test]
fn the_daemon_serves_the_page_when_serve_listen_is_set_and_stops_it_with_itself() {
    let port = crate::mail::free_port();
    let (env, _, _) = world(&format!("\n[serve]\nlisten = \"127.0.0.1:{port}\"\n"));
    let mut daemon = env
        .std_cmd()
        .arg("daemon")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the daemon's status page", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let (code, _, body) = get(port, "/", &[]);
    assert_eq!(code, 200);
    assert!(body.contains("data-set=\"app\""));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = daemon.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// Regression: a status page that cannot bind (its port taken) must not stop the daemon,
/// or a busy port would silence every backup and check.
#[test]
fn regression_a_taken_port_leaves_the_daemon_running_its_jobs_without_the_page() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (env, _, _) = world(&format!("\n[serve]\nlisten = \"127.0.0.1:{port}\"\n"));
    let mut daemon = env
        .std_cmd()
        .arg("daemon")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    let mut err = BufReader::new(daemon.stderr.take().unwrap());
    let mut out = BufReader::new(daemon.stdout.take().unwrap());
    // The daemon's log goes to one of them; read both until it says it started.
    let reader = std::thread::spawn(move || {
        let mut seen = String::new();
        let mut line = String::new();
        while out.read_line(&mut line).unwrap_or(0) > 0 {
            seen.push_str(&line);
            line.clear();
        }
        seen
    });
    let mut line = String::new();
    while err.read_line(&mut line).unwrap_or(0) > 0 {
        lines.push(line.clone());
        line.clear();
        if lines.iter().any(|l| l.contains("daemon started")) {
            break;
        }
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let rest: String = err
        .lines()
        .map_while(Result::ok)
        .collect::<Vec<_>>()
        .join("\n");
    let status = daemon.wait().unwrap();
    let all = format!("{}{rest}{}", lines.concat(), reader.join().unwrap());
    assert!(status.success(), "{status:?}: {all}");
    assert!(all.contains("the status page is not served"), "{all}");
    assert!(all.contains("daemon started"), "{all}");
    drop(taken);
}

/// Regression (review): idle connections were held without limit before any
/// authentication, until the daemon had no file descriptor left to start a job. Now a
/// connection gets 10 s for its headers and 30 s in all, and at most 32 are served at once.
#[test]
fn regression_idle_connections_are_dropped_and_never_keep_the_page_from_answering() {
    let (env, _, _) = world("");
    let served = Served::start(&env, "127.0.0.1:0", &[]);
    let idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(("127.0.0.1", served.port)).unwrap())
        .collect();
    // A real request is answered (after the idle ones' header timeout at worst).
    let (code, _, _) = get(served.port, "/health", &[]);
    assert_eq!(code, 200);
    // The first idle connections were closed by the server: a read sees the end.
    let mut first = &idle[0];
    first
        .set_read_timeout(Some(Duration::from_secs(40)))
        .unwrap();
    let mut buf = [0u8; 64];
    let n = first
        .read(&mut buf)
        .expect("an idle connection still open after 40 s");
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer:?}");
}

#[test]
fn a_token_file_its_group_can_read_is_refused_by_config_check_naming_it() {
    let (env, _, _) = world("");
    let text = fs::read_to_string(&env.config).unwrap();
    let token = with_token(&env, &text, 0o640);
    let a = env.cmd().args(["config", "check"]).assert().code(78);
    let err = crate::common::stderr(&a);
    assert!(
        err.contains("serve.token-file") && err.contains("chmod 600"),
        "{err}"
    );
    fs::write(&token, "short\n").unwrap();
    fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let a = env.cmd().args(["config", "check"]).assert().code(78);
    assert!(crate::common::stderr(&a).contains("16 or more"));
    fs::remove_file(&token).unwrap();
    env.cmd().args(["config", "check"]).assert().code(78);
}
