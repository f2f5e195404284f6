//! Packaging: systemd units and timers, and launchd plists, generated from the config and
//! the templates in `packaging/` (embedded), plus the manifest that lets `uninstall`
//! remove exactly what `install` wrote.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::schedule::Cron;
use crate::schedule::Job;

pub mod install;

const JOB_SERVICE: &str = include_str!("../../packaging/systemd/job.service");
const JOB_TIMER: &str = include_str!("../../packaging/systemd/job.timer");
const DAEMON_SERVICE: &str = include_str!("../../packaging/systemd/daemon.service");
const GUARD_DROPIN: &str = include_str!("../../packaging/systemd/guard.conf");
const JOB_PLIST: &str = include_str!("../../packaging/launchd/job.plist");

/// How the jobs are driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One timer (or launchd job) per scheduled job, each running `steward run JOB`.
    Timers,
    /// One long-running `steward daemon`.
    Daemon,
}

/// A generated file.
#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub name: String,
    pub content: String,
}

/// What install writes and then enables.
#[derive(Debug, Clone)]
pub struct Generated {
    pub files: Vec<File>,
    /// systemd unit names, or launchd plist file names, to enable / bootstrap.
    pub enable: Vec<String>,
}

fn names(v: &[i8], all: &[&str]) -> String {
    v.iter()
        .map(|&d| all[d as usize])
        .collect::<Vec<_>>()
        .join(",")
}

fn list(v: &[i8], full: usize, width: usize) -> String {
    if v.len() == full {
        return "*".into();
    }
    v.iter()
        .map(|x| format!("{x:0width$}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The systemd `OnCalendar=` expression for a schedule.
pub fn on_calendar(cron: &Cron) -> String {
    let ([sec, min, hour, days, months, weekdays], days_r, weekdays_r) = cron.fields();
    let dow = if weekdays_r {
        format!(
            "{} ",
            names(weekdays, &["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"])
        )
    } else {
        String::new()
    };
    let dom = if days_r {
        list(days, 31, 2)
    } else {
        "*".into()
    };
    format!(
        "{dow}*-{}-{dom} {}:{}:{}",
        list(months, 12, 2),
        list(hour, 24, 2),
        list(min, 60, 2),
        list(sec, 60, 2)
    )
}

/// launchd's `StartCalendarInterval`: one dict per combination of the restricted fields
/// (a missing key matches anything). Seconds and very dense schedules cannot be said.
pub fn calendar_intervals(cron: &Cron) -> Result<Vec<BTreeMap<&'static str, i64>>, String> {
    let ([sec, min, hour, days, months, weekdays], days_r, weekdays_r) = cron.fields();
    if sec != [0] {
        return Err(format!(
            "{:?}: launchd starts jobs on whole minutes; it cannot run at seconds",
            cron.source
        ));
    }
    let fields: Vec<(&'static str, &[i8], bool)> = vec![
        ("Minute", min, min.len() < 60),
        ("Hour", hour, hour.len() < 24),
        ("Day", days, days_r),
        ("Month", months, months.len() < 12),
        ("Weekday", weekdays, weekdays_r),
    ];
    let mut dicts: Vec<BTreeMap<&'static str, i64>> = vec![BTreeMap::new()];
    for (key, values, restricted) in fields {
        if !restricted {
            continue;
        }
        let mut next = Vec::with_capacity(dicts.len() * values.len());
        for d in &dicts {
            for &v in values {
                let mut d = d.clone();
                d.insert(key, i64::from(v));
                next.push(d);
            }
        }
        dicts = next;
        if dicts.len() > 1000 {
            return Err(format!(
                "{:?} expands to more than 1000 launchd calendar entries; use a simpler schedule or the daemon mode",
                cron.source
            ));
        }
    }
    Ok(dicts)
}

/// True when launchd would start a job with `dicts` at local time `t`.
pub fn launchd_fires(dicts: &[BTreeMap<&'static str, i64>], t: &jiff::civil::DateTime) -> bool {
    dicts.iter().any(|d| {
        d.iter().all(|(k, v)| match *k {
            "Minute" => i64::from(t.minute()) == *v,
            "Hour" => i64::from(t.hour()) == *v,
            "Day" => i64::from(t.day()) == *v,
            "Month" => i64::from(t.month()) == *v,
            "Weekday" => i64::from(t.weekday().to_sunday_zero_offset()) == *v,
            _ => false,
        })
    })
}

fn unit_name(job: &Job) -> String {
    format!("steward-{}", job.file_stem())
}

/// The folders steward writes to: state, destination, the parents of backed-up paths
/// (restore stages beside them), databases, logs, scratch folders, the metrics file.
pub fn writable_paths(config: &Config) -> Vec<PathBuf> {
    let mut v = vec![
        config.state_dir.clone(),
        config.backup.destination.clone(),
        // Restore drills make their copy there (its parent: the folder is made on first use).
        config
            .drill
            .scratch
            .parent()
            .unwrap_or(&config.drill.scratch)
            .to_path_buf(),
    ];
    for s in &config.backup.sets {
        for p in &s.paths {
            v.push(p.value.parent().unwrap_or(&p.value).to_path_buf());
        }
    }
    for tasks in [
        &config.maintenance.daily,
        &config.maintenance.weekly,
        &config.maintenance.monthly,
    ] {
        for t in tasks {
            match t {
                crate::config::Task::Sqlite { databases, .. } => {
                    v.extend(
                        databases
                            .iter()
                            .filter_map(|d| d.parent().map(Path::to_path_buf)),
                    );
                }
                crate::config::Task::Logs(l) => v.extend(l.paths.iter().cloned()),
                crate::config::Task::Tmp { paths, .. } => v.extend(paths.iter().cloned()),
                _ => {}
            }
        }
    }
    if let Some(m) = &config.schedule.metrics_file
        && let Some(d) = m.parent()
    {
        v.push(d.to_path_buf());
    }
    v.sort();
    v.dedup();
    // A folder inside another listed one adds nothing.
    let all = v.clone();
    v.retain(|p| !all.iter().any(|o| o != p && p.starts_with(o)));
    v
}

/// Every path the config names that a job reads or writes: what the sandbox must not
/// hide.
fn configured_paths(config: &Config) -> Vec<PathBuf> {
    let mut v = writable_paths(config);
    for s in &config.backup.sets {
        v.extend(s.paths.iter().map(|p| p.value.clone()));
    }
    let c = &config.checks;
    for list in [&c.sqlite, &c.paths_exist, &c.paths_writable, &c.disk_paths] {
        v.extend(list.iter().cloned());
    }
    v
}

/// The unit's sandbox; `runs` are the binary and the config file the unit starts, which it
/// must not hide from itself either.
fn hardening(config: &Config, runs: &[&Path]) -> String {
    let paths = writable_paths(config);
    let mut seen = configured_paths(config);
    seen.extend(runs.iter().map(|p| p.to_path_buf()));
    // A directive that would hide a configured path is left out, and the unit says which
    // path kept it out (a backup of /home with ProtectHome=yes archives an empty tree).
    let hidden_by = |roots: &[&str]| {
        seen.iter()
            .find(|p| roots.iter().any(|r| p.starts_with(r)))
            .cloned()
    };
    let mut h = String::from("NoNewPrivileges=yes\n");
    match hidden_by(&["/tmp", "/var/tmp"]) {
        None => h.push_str("PrivateTmp=yes\n"),
        Some(p) => {
            let _ = writeln!(h, "# PrivateTmp= left out: it would hide {}", p.display());
        }
    }
    h.push_str(
        "ProtectSystem=strict\n\
         ProtectKernelTunables=yes\nProtectKernelModules=yes\nProtectControlGroups=yes\n\
         RestrictSUIDSGID=yes\nLockPersonality=yes\nRestrictRealtime=yes\n",
    );
    // Missing folders must not stop the unit from starting ("-"); quoted for spaces.
    let rw: Vec<String> = paths
        .iter()
        .map(|p| quote(&format!("-{}", p.display())))
        .collect();
    let _ = writeln!(h, "ReadWritePaths={}", rw.join(" "));
    match hidden_by(&["/home", "/root", "/run/user"]) {
        None => h.push_str("ProtectHome=yes\n"),
        Some(p) => {
            let _ = writeln!(h, "# ProtectHome= left out: it would hide {}", p.display());
        }
    }
    h
}

/// Quotes a word for a unit file when it holds spaces or quotes.
fn quote(s: &str) -> String {
    if s.contains([' ', '"', '\'', '\\']) {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s.to_string()
    }
}

fn fill(template: &str, pairs: &[(&str, &str)]) -> String {
    let mut s = template.to_string();
    for (k, v) in pairs {
        s = s.replace(&format!("{{{{{k}}}}}"), v);
    }
    s
}

/// Options of the systemd units.
pub struct SystemdOptions<'a> {
    pub binary: &'a Path,
    pub config_path: &'a Path,
    pub mode: Mode,
    pub user: bool,
    pub randomized_delay: &'a str,
}

/// systemd units for `config`.
pub fn systemd(config: &Config, o: &SystemdOptions<'_>) -> Result<Generated, String> {
    let (binary, config_path) = (
        o.binary.display().to_string(),
        o.config_path.display().to_string(),
    );
    let hardening = hardening(config, &[o.binary, o.config_path]);
    let mut files = Vec::new();
    let mut enable = Vec::new();
    match o.mode {
        Mode::Daemon => {
            files.push(File {
                name: "steward.service".into(),
                content: fill(
                    DAEMON_SERVICE,
                    &[
                        ("BINARY", &binary),
                        ("CONFIG", &config_path),
                        ("HARDENING", hardening.trim_end()),
                        (
                            "WANTED_BY",
                            if o.user {
                                "default.target"
                            } else {
                                "multi-user.target"
                            },
                        ),
                    ],
                ),
            });
            enable.push("steward.service".into());
        }
        Mode::Timers => {
            if config.schedule.jobs.is_empty() {
                return Err("no jobs in [schedule]: nothing to install timers for".into());
            }
            for (job, cron) in &config.schedule.jobs {
                let unit = unit_name(job);
                let name = job.to_string();
                let priority = if job.heavy() {
                    "Nice=10\nIOSchedulingClass=idle"
                } else {
                    ""
                };
                let timeout = format!("{}s", config.schedule.job_timeout.as_secs());
                let service = fill(
                    JOB_SERVICE,
                    &[
                        ("JOB", &name),
                        ("BINARY", &binary),
                        ("CONFIG", &config_path),
                        ("TIMEOUT", &timeout),
                        ("PRIORITY", priority),
                        ("HARDENING", hardening.trim_end()),
                    ],
                );
                let calendar = on_calendar(cron);
                // Per-second schedules need a finer accuracy than systemd's default minute.
                let accuracy = if cron.fields().0[0] == [0] {
                    "1min"
                } else {
                    "1s"
                };
                let timer = fill(
                    JOB_TIMER,
                    &[
                        ("JOB", &name),
                        ("CRON", &cron.source),
                        ("CALENDAR", &calendar),
                        ("DELAY", o.randomized_delay),
                        ("ACCURACY", accuracy),
                        ("UNIT", &unit),
                    ],
                );
                files.push(File {
                    name: format!("{unit}.service"),
                    content: squeeze(&service),
                });
                files.push(File {
                    name: format!("{unit}.timer"),
                    content: timer,
                });
                enable.push(format!("{unit}.timer"));
            }
        }
    }
    files.extend(guard_dropins(config, o, &binary, &config_path));
    Ok(Generated { files, enable })
}

/// For each systemd service a set stops around a restore (of the same manager, system or
/// user, as this install): a drop-in `UNIT.d/steward-restore-guard.conf` whose
/// `ExecStartPre=` runs `steward restore --guard NAME`, so that after a power loss mid-swap
/// the service does not start on mixed data before anyone runs `--resume`.
fn guard_dropins(
    config: &Config,
    o: &SystemdOptions<'_>,
    binary: &str,
    config_path: &str,
) -> Vec<File> {
    let mut names: Vec<&str> = config
        .backup
        .sets
        .iter()
        .flat_map(|s| s.quiesce.iter().map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        let Some(svc) = config.services.iter().find(|s| s.name == name) else {
            continue;
        };
        let crate::config::Manager::Systemd { unit, user } = &svc.manager else {
            continue;
        };
        if *user != o.user {
            continue;
        }
        let unit = if unit.contains('.') {
            unit.clone()
        } else {
            format!("{unit}.service")
        };
        out.push(File {
            name: format!("{unit}.d/steward-restore-guard.conf"),
            content: fill(
                GUARD_DROPIN,
                &[("BINARY", binary), ("CONFIG", config_path), ("NAME", name)],
            ),
        });
    }
    out
}

/// Drops the blank lines left by empty placeholders.
fn squeeze(s: &str) -> String {
    let mut out = String::new();
    let mut blank = false;
    for line in s.lines() {
        if line.trim().is_empty() {
            if !blank {
                out.push('\n');
            }
            blank = true;
        } else {
            out.push_str(line);
            out.push('\n');
            blank = false;
        }
    }
    out.trim_end().to_string() + "\n"
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Options of the launchd plists.
pub struct LaunchdOptions<'a> {
    pub binary: &'a Path,
    pub config_path: &'a Path,
    pub mode: Mode,
    /// Agent (a user's GUI session) or daemon (system).
    pub agent: bool,
    pub log_dir: &'a Path,
}

/// launchd plists for `config`.
pub fn launchd(config: &Config, o: &LaunchdOptions<'_>) -> Result<Generated, String> {
    let binary = xml(&o.binary.display().to_string());
    let config_path = xml(&o.config_path.display().to_string());
    let mut files = Vec::new();
    // (file stem, cron, heavy): the daemon is one always-on agent, a timer runs one job.
    let jobs: Vec<(String, Option<&Cron>, bool)> = match o.mode {
        Mode::Daemon => vec![("daemon".to_string(), None, false)],
        Mode::Timers => {
            if config.schedule.jobs.is_empty() {
                return Err("no jobs in [schedule]: nothing to install".into());
            }
            config
                .schedule
                .jobs
                .iter()
                .map(|(j, c)| (j.to_string(), Some(c), j.heavy()))
                .collect()
        }
    };
    for (job, cron, heavy) in jobs {
        let stem = job.replace(':', "-");
        let label = format!("com.steward.{stem}");
        let args = match cron {
            None => "\t\t<string>daemon</string>\n".to_string(),
            Some(_) => format!(
                "\t\t<string>run</string>\n\t\t<string>{}</string>\n",
                xml(&job)
            ),
        };
        let schedule = match cron {
            None => {
                "\t<key>RunAtLoad</key>\n\t<true/>\n\t<key>KeepAlive</key>\n\t<true/>\n".to_string()
            }
            Some(c) => {
                let dicts = calendar_intervals(c)?;
                let mut s = String::from("\t<key>StartCalendarInterval</key>\n\t<array>\n");
                for d in dicts {
                    s.push_str("\t\t<dict>\n");
                    for (k, v) in d {
                        let _ = writeln!(s, "\t\t\t<key>{k}</key>\n\t\t\t<integer>{v}</integer>");
                    }
                    s.push_str("\t\t</dict>\n");
                }
                s.push_str("\t</array>\n");
                s
            }
        };
        let priority = if heavy {
            "\t<key>ProcessType</key>\n\t<string>Background</string>\n\t<key>LowPriorityIO</key>\n\t<true/>\n"
        } else {
            ""
        };
        let log = xml(&o.log_dir.join(format!("{stem}.log")).display().to_string());
        files.push(File {
            name: format!("{label}.plist"),
            content: fill(
                JOB_PLIST,
                &[
                    ("LABEL", &label),
                    ("BINARY", &binary),
                    ("CONFIG", &config_path),
                    ("ARGS", &args),
                    ("SCHEDULE", &schedule),
                    ("LOG", &log),
                    ("PRIORITY", priority),
                ],
            ),
        });
    }
    let enable = files.iter().map(|f| f.name.clone()).collect();
    Ok(Generated { files, enable })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_calendar_forms() {
        let c = |s: &str| on_calendar(&crate::schedule::parse(s).unwrap());
        assert_eq!(c("0 3 * * *"), "*-*-* 03:00:00");
        assert_eq!(c("*/15 * * * *"), "*-*-* *:00,15,30,45:00");
        assert_eq!(c("0 4 * * 0"), "Sun *-*-* 04:00:00");
        assert_eq!(c("0 5 1 * *"), "*-*-01 05:00:00");
        assert_eq!(
            c("30 2 * jan,jul mon-fri"),
            "Mon,Tue,Wed,Thu,Fri *-01,07-* 02:30:00"
        );
    }

    #[test]
    fn launchd_cannot_say_seconds_or_too_much() {
        let p = |s: &str| calendar_intervals(&crate::schedule::parse(s).unwrap());
        assert_eq!(p("0 3 * * *").unwrap().len(), 1);
        assert_eq!(p("*/15 * * * *").unwrap().len(), 4);
        assert!(p("*/10 * * * * *").unwrap_err().contains("seconds"));
        assert!(p("0-58 0-22 * * *").unwrap_err().contains("more than 1000"));
    }
}
