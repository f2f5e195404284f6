//! Packaging: OnCalendar agrees with the real `systemd-analyze calendar`, launchd's
//! StartCalendarInterval fires at the same minutes as steward's scheduler over a year,
//! generated units pass the real `systemd-analyze verify`, plists parse, snapshots hold,
//! and install/uninstall round-trip.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use jiff::tz::TimeZone;
use steward::config::{Config, Origin};
use steward::packaging::{self, LaunchdOptions, Mode, SystemdOptions};

use crate::common::{Env, STEWARD, stdout};

const EXPRESSIONS: &[&str] = &[
    "0 3 * * *",
    "30 2 * * *",
    "*/15 * * * *",
    "0 */6 * * *",
    "0 0 * * 0",
    "0 4 * * sun",
    "0 5 1 * *",
    "0 0 1 1 *",
    "15 14 1 * *",
    "0 22 * * 1-5",
    "5 4 * * sun",
    "0 0,12 1 */2 *",
    "23 0-20/2 * * *",
    "0 0 31 * *",
    "0 12 29 2 *",
    "*/5 * * * *",
    "0 9-17 * * mon-fri",
    "30 6 * jan,apr,jul,oct *",
    "0 0 15 * *",
    "45 23 * * 6",
    "0 1 * * 7",
    "10,20,30 * * * *",
    "0 3 1-7 * *",
    "0 8 * * 1,3,5",
    "59 23 31 12 *",
    "@hourly",
    "@daily",
    "@weekly",
    "@monthly",
    "@yearly",
    "0 */2 * * *",
    "1 2 3 4 *",
    "0 0 * feb *",
    "*/30 9 * * *",
    "30 */10 * * * *",
];

fn systemd_fires(calendar: &str, base: &str, n: usize) -> Vec<String> {
    let out = Command::new("systemd-analyze")
        .args([
            "calendar",
            &format!("--iterations={n}"),
            &format!("--base-time={base}"),
            calendar,
        ])
        .env("TZ", "UTC")
        .output()
        .expect("systemd-analyze");
    assert!(
        out.status.success(),
        "{calendar}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("Next elapse:") || l.contains("Iter. #"))
        .map(|l| {
            // "    Iter. #2: Fri 2026-01-02 03:00:00 UTC"
            let parts: Vec<&str> = l.split_whitespace().collect();
            let n = parts.len();
            format!("{}T{}Z", parts[n - 3], parts[n - 2])
        })
        .collect()
}

#[test]
fn on_calendar_gives_the_same_next_50_fires_as_systemd() {
    let utc = TimeZone::UTC;
    for expr in EXPRESSIONS {
        let cron = steward::schedule::parse(expr).unwrap();
        let calendar = packaging::on_calendar(&cron);
        let theirs = systemd_fires(&calendar, "2026-01-01 00:00:00 UTC", 50);
        // Both count strictly after the base time.
        let mut t: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut ours = Vec::new();
        for _ in 0..50 {
            t = cron.next_after(t, &utc).unwrap();
            ours.push(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
        }
        // systemd's calendar ends with the year 2199 (the leap-day case reaches it).
        assert!(
            theirs.len() >= 40,
            "{expr}: systemd gave {} times",
            theirs.len()
        );
        assert_eq!(
            ours[..theirs.len()],
            theirs[..],
            "{expr} as OnCalendar={calendar}"
        );
    }
}

#[test]
fn start_calendar_interval_fires_at_the_same_minutes_over_a_year() {
    let utc = TimeZone::UTC;
    for expr in [
        "0 3 * * *",
        "*/15 9-17 * * mon-fri",
        "0 0 31 * *",
        "30 6 * jan,jul *",
        "0 4 * * sun",
        "0 12 29 2 *",
    ] {
        let cron = steward::schedule::parse(expr).unwrap();
        let dicts = packaging::calendar_intervals(&cron).unwrap();
        let start: jiff::civil::DateTime = "2028-01-01T00:00".parse().unwrap();
        let end: jiff::civil::DateTime = "2029-01-01T00:00".parse().unwrap();
        let mut ours = std::collections::BTreeSet::new();
        let mut t = start.to_zoned(utc.clone()).unwrap().timestamp();
        t = t.checked_sub(jiff::SignedDuration::from_secs(1)).unwrap();
        let end_ts = end.to_zoned(utc.clone()).unwrap().timestamp();
        while let Some(n) = cron.next_after(t, &utc) {
            if n >= end_ts {
                break;
            }
            ours.insert(n.as_second());
            t = n;
        }
        let mut theirs = std::collections::BTreeSet::new();
        let mut m = start;
        while m < end {
            if packaging::launchd_fires(&dicts, &m) {
                theirs.insert(m.to_zoned(utc.clone()).unwrap().timestamp().as_second());
            }
            m = m.checked_add(jiff::Span::new().minutes(1)).unwrap();
        }
        assert!(!ours.is_empty(), "{expr}");
        assert_eq!(ours, theirs, "{expr}");
    }
}

fn examples() -> Vec<(String, Config)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schedules");
    let mut v: Vec<(String, Config)> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            let text = fs::read_to_string(&p).unwrap();
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (
                name,
                steward::config::parse(&text, Origin::File(p)).unwrap(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn systemd_units(cfg: &Config, binary: &Path, mode: Mode) -> packaging::Generated {
    packaging::systemd(
        cfg,
        &SystemdOptions {
            binary,
            config_path: Path::new("/etc/steward/steward.toml"),
            mode,
            user: false,
            randomized_delay: "5min",
        },
    )
    .unwrap()
}

fn plists(cfg: &Config, mode: Mode) -> packaging::Generated {
    packaging::launchd(
        cfg,
        &LaunchdOptions {
            binary: Path::new("/usr/local/bin/steward"),
            config_path: Path::new("/etc/steward/steward.toml"),
            mode,
            agent: true,
            log_dir: Path::new("/Users/me/Library/Logs/steward"),
        },
    )
    .unwrap()
}

#[test]
fn generated_units_pass_systemd_analyze_verify() {
    let binary = PathBuf::from(STEWARD);
    for (name, cfg) in examples() {
        for mode in [Mode::Timers, Mode::Daemon] {
            let dir = tempfile::tempdir().unwrap();
            let g = systemd_units(&cfg, &binary, mode);
            let mut paths = Vec::new();
            for f in &g.files {
                let p = dir.path().join(&f.name);
                // A restore-guard drop-in: verified with the unit it extends (a stub
                // here), which systemd-analyze loads it for.
                if let Some((unit, _)) = f.name.split_once(".d/") {
                    fs::create_dir_all(p.parent().unwrap()).unwrap();
                    fs::write(&p, &f.content).unwrap();
                    let stub = dir.path().join(unit);
                    fs::write(&stub, "[Service]\nExecStart=/bin/true\n").unwrap();
                    paths.push(stub);
                } else {
                    fs::write(&p, &f.content).unwrap();
                    paths.push(p);
                }
            }
            let out = Command::new("systemd-analyze")
                .arg("verify")
                .args(&paths)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && err.trim().is_empty(),
                "{name} {mode:?}: {err}"
            );
        }
    }
}

#[test]
fn plists_parse_with_plistlib() {
    for (name, cfg) in examples() {
        for mode in [Mode::Timers, Mode::Daemon] {
            for f in plists(&cfg, mode).files {
                // Python's plistlib, the same parser family launchd's tools accept.
                let out = Command::new("python3")
                    .args([
                        "-c",
                        "import plistlib,sys; print(plistlib.loads(sys.stdin.buffer.read())['Label'])",
                    ])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .and_then(|mut c| {
                        use std::io::Write;
                        c.stdin.take().unwrap().write_all(f.content.as_bytes())?;
                        c.wait_with_output()
                    })
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{name} {}: {}",
                    f.name,
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(
                    String::from_utf8_lossy(&out.stdout).trim(),
                    f.name.trim_end_matches(".plist"),
                    "{name}: the Label differs from the file name"
                );
            }
        }
    }
}

#[test]
fn snapshots_of_the_generated_files_for_each_example() {
    let home = std::env::var("HOME").unwrap_or_default();
    for (name, cfg) in examples() {
        let mut all = String::new();
        for f in systemd_units(&cfg, Path::new("/usr/local/bin/steward"), Mode::Timers)
            .files
            .iter()
            .chain(&plists(&cfg, Mode::Timers).files)
        {
            all.push_str(&format!("===== {}\n{}\n", f.name, f.content));
        }
        let all = if home.is_empty() {
            all
        } else {
            all.replace(&home, "$HOME")
        };
        insta::assert_snapshot!(name, all);
    }
}

#[test]
fn install_then_uninstall_leaves_nothing_and_dry_run_writes_nothing() {
    let env = Env::new();
    env.write_config("[schedule]\ncheck = \"*/5 * * * *\"\nbackup = \"0 3 * * *\"\n");
    let units = env.root.join("units");
    let a = env
        .cmd()
        .args(["install", "systemd", "--dry-run", "--unit-dir"])
        .arg(&units)
        .assert()
        .success();
    assert!(
        stdout(&a)
            .contains("would run: systemctl enable --now steward-check.timer steward-backup.timer"),
        "{}",
        stdout(&a)
    );
    assert!(!units.exists(), "--dry-run wrote something");
    let a = env
        .cmd()
        .args(["install", "systemd", "--unit-dir"])
        .arg(&units)
        .assert()
        .success();
    assert!(stdout(&a).contains("wrote"), "{}", stdout(&a));
    let names = crate::common::dir_names(&units);
    assert_eq!(
        names,
        [
            "steward-backup.service",
            "steward-backup.timer",
            "steward-check.service",
            "steward-check.timer"
        ]
    );
    env.cmd()
        .args(["uninstall", "systemd", "--dry-run"])
        .assert()
        .success();
    assert_eq!(
        fs::read_dir(&units).unwrap().count(),
        4,
        "uninstall --dry-run removed something"
    );
    // Regression (issue 24): switching to the daemon mode replaced the install record, and
    // uninstall then left the four timer files behind.
    let a = env
        .cmd()
        .args(["install", "systemd", "--mode", "daemon", "--unit-dir"])
        .arg(&units)
        .assert()
        .success();
    assert!(
        stdout(&a).contains("(from the earlier install)"),
        "{}",
        stdout(&a)
    );
    assert_eq!(crate::common::dir_names(&units), ["steward.service"]);
    env.cmd().args(["uninstall", "systemd"]).assert().success();
    assert_eq!(fs::read_dir(&units).unwrap().count(), 0);
    assert!(!env.state.join("installed-systemd.json").exists());
    // launchd the same way.
    let plists = env.root.join("agents");
    env.cmd()
        .args(["install", "launchd", "--mode", "daemon", "--plist-dir"])
        .arg(&plists)
        .assert()
        .success();
    assert_eq!(fs::read_dir(&plists).unwrap().count(), 1);
    env.cmd().args(["uninstall", "launchd"]).assert().success();
    assert_eq!(fs::read_dir(&plists).unwrap().count(), 0);
    // Without a schedule there is nothing to time.
    env.write_config("");
    let a = env
        .cmd()
        .args(["install", "systemd", "--unit-dir"])
        .arg(&units)
        .assert()
        .code(2);
    assert!(String::from_utf8_lossy(&a.get_output().stderr).contains("no jobs in [schedule]"));
}

/// Every systemd service a set stops around a restore gets a drop-in that runs
/// `steward restore --guard NAME` before it starts; systemd really reads it (a bad key in
/// it fails the verify), and launchd and `command` services get none.
#[test]
fn restore_guard_drop_ins_are_generated_for_quiesced_systemd_services_and_pass_verify() {
    let cfg = steward::config::parse(
        "[backup]\ndestination = \"/b\"\n[[backup.set]]\nname = \"a\"\npaths = [\"/srv/a\"]\n\
         quiesce = [\"app\", \"db\", \"tool\"]\n\
         [[service]]\nname = \"app\"\nmanager = \"systemd\"\nunit = \"app.service\"\n\
         [[service]]\nname = \"db\"\nmanager = \"systemd\"\nunit = \"pg\"\n\
         [[service]]\nname = \"tool\"\nmanager = \"command\"\nstart = \"true\"\n\
         stop = \"true\"\nstatus = \"true\"\n\
         [[service]]\nname = \"other\"\nmanager = \"systemd\"\nunit = \"other.service\"\n\
         [schedule]\nbackup = \"0 3 * * *\"\n",
        Origin::Embedded,
    )
    .unwrap();
    let binary = PathBuf::from(STEWARD);
    let g = systemd_units(&cfg, &binary, Mode::Timers);
    let dropins: Vec<&packaging::File> =
        g.files.iter().filter(|f| f.name.contains(".d/")).collect();
    let names: Vec<&str> = dropins.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "app.service.d/steward-restore-guard.conf",
            "pg.service.d/steward-restore-guard.conf"
        ]
    );
    assert!(dropins[0].content.contains(&format!(
        "ExecStartPre=+{} --config /etc/steward/steward.toml restore --guard app",
        binary.display()
    )));
    let verify = |extra: &str| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("app.service.d");
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join("steward-restore-guard.conf"),
            format!("{}{extra}", dropins[0].content),
        )
        .unwrap();
        let unit = dir.path().join("app.service");
        fs::write(&unit, "[Service]\nExecStart=/bin/true\n").unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = verify("");
    assert!(ok && err.trim().is_empty(), "{err}");
    let (_, err) = verify("NoSuchKey=1\n");
    assert!(err.contains("NoSuchKey"), "the drop-in was not read: {err}");
}

/// Regression: the units set `PrivateTmp=yes` and `ProtectHome=yes` while configured paths
/// lay under /tmp and /home, which the sandbox then hid from the jobs (a backup of an empty
/// tree); and with `--unit-dir` outside systemd's search path the printed `enable` could
/// not find the units.
#[test]
fn regression_hardening_never_hides_a_configured_path_and_units_off_the_search_path_are_linked() {
    let env = Env::new();
    let dry = |config: &str| {
        fs::write(&env.config, config).unwrap();
        let a = env
            .cmd()
            .args([
                "install",
                "systemd",
                "--dry-run",
                "--binary",
                "/usr/local/bin/steward",
                "--unit-dir",
            ])
            .arg(env.root.join("units"))
            .assert()
            .success();
        (stdout(&a), crate::common::stderr(&a))
    };
    let (sandboxed, _) = dry(
        "[state]\ndir = \"/var/lib/steward-x\"\n[backup]\ndestination = \"/srv/backups-x\"\n\
         [[backup.set]]\nname = \"a\"\npaths = [\"/srv/data-x\"]\n\
         [schedule]\nbackup = \"0 3 * * *\"\n",
    );
    // Only the unit's own config file lies under /tmp (a test's temp dir): the sandbox
    // must not hide it from the unit itself.
    assert!(
        !sandboxed.contains("PrivateTmp=yes")
            && sandboxed.contains(&format!(
                "# PrivateTmp= left out: it would hide {}",
                env.config.display()
            ))
            && sandboxed.contains("ProtectHome=yes\n"),
        "{sandboxed}"
    );
    let (open, err) = dry(
        "[state]\ndir = \"/var/lib/steward-x\"\n[backup]\ndestination = \"/srv/backups-x\"\n\
         [[backup.set]]\nname = \"a\"\npaths = [\"/home/alice/project\"]\n\
         [checks]\nsqlite = [\"/tmp/scratch/app.db\"]\n\
         [schedule]\nbackup = \"0 3 * * *\"\n",
    );
    assert!(
        !open.contains("PrivateTmp=yes")
            && open.contains("# PrivateTmp= left out: it would hide /tmp/scratch/app.db")
            && !open.contains("ProtectHome=yes")
            && open.contains("# ProtectHome= left out: it would hide /home/alice"),
        "{open}"
    );
    assert!(
        err.contains("is not on systemd's unit search path"),
        "{err}"
    );
    let units = env.root.join("units");
    assert!(
        open.contains(&format!(
            "would run: systemctl link {}",
            units.join("steward-backup.service").display()
        )),
        "{open}"
    );
}

/// Regression: `install.sh --dry-run` without `--binary` ran `cargo build`: a dry run
/// changes nothing, a build included.
#[test]
fn regression_install_sh_dry_run_builds_nothing() {
    let env = Env::new();
    let bin = env.root.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let marker = env.root.join("cargo-ran");
    let fake = bin.join("cargo");
    fs::write(&fake, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("sh")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/install.sh"))
        .arg("--dry-run")
        .env("PATH", path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("would run: (cd ") && text.contains("cargo build --release"),
        "{text}"
    );
    assert!(!marker.exists(), "the dry run ran cargo");
}
