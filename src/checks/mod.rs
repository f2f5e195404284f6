//! One check cycle: measure, compare with the limits, return a reading per check. Pure of
//! alerting: `crate::alerts` turns readings into states and mails.

mod heal;

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::Serialize;

use crate::catalog::Catalog;
use crate::config::{Config, Limit, Window};
use crate::schedule::Job;
use crate::services::{Controller, Runner, http_get};

pub use crate::severity::Severity;
pub use heal::heal;

/// One check's result in one cycle.
#[derive(Debug, Clone, Serialize)]
pub struct Reading {
    pub name: String,
    pub severity: Severity,
    pub value: String,
    pub threshold: String,
    #[serde(skip)]
    pub window: Window,
}

fn reading(
    name: impl Into<String>,
    severity: Severity,
    value: String,
    threshold: String,
    window: Window,
) -> Reading {
    Reading {
        name: name.into(),
        severity,
        value,
        threshold,
        window,
    }
}

/// Above `crit` is critical, above `warn` a warning (so a limit of 100 % never fires).
fn against(limit: &Limit, value: f64) -> Severity {
    if value > limit.crit {
        Severity::Crit
    } else if value > limit.warn {
        Severity::Warn
    } else {
        Severity::Ok
    }
}

fn pct(name: &str, limit: &Limit, value: f64) -> Reading {
    reading(
        name,
        against(limit, value),
        format!("{value:.1} %"),
        format!("warn {} % / crit {} %", limit.warn, limit.crit),
        limit.window,
    )
}

/// A disk measured by the cycle, kept for the capacity forecast.
#[derive(Debug, Clone)]
pub struct DiskSample {
    pub path: std::path::PathBuf,
    pub used: u64,
    pub free: u64,
}

/// What one cycle found.
#[derive(Debug)]
pub struct Cycle {
    pub readings: Vec<Reading>,
    pub disks: Vec<DiskSample>,
}

/// Runs one cycle of every configured check. `now` is Unix seconds (for backup ages).
pub fn cycle(config: &Config, catalog: &Catalog, runner: &dyn Runner, now: i64) -> Cycle {
    let c = &config.checks;
    let mut out = Vec::new();
    let mut disks = Vec::new();
    let one = Window::default();

    // CPU over sysinfo's minimum interval, the same System refreshed twice.
    match sysinfo::System::new() {
        Ok(mut sys) => {
            if c.cpu.enabled {
                sys.refresh_cpu_usage();
                std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
                sys.refresh_cpu_usage();
                out.push(pct("cpu", &c.cpu, f64::from(sys.global_cpu_usage())));
            }
            sys.refresh_memory();
            let total = sys.total_memory().max(1);
            if c.memory.enabled {
                out.push(pct(
                    "memory",
                    &c.memory,
                    sys.used_memory() as f64 * 100.0 / total as f64,
                ));
            }
            if sys.total_swap() > 0 && c.swap.enabled {
                out.push(pct(
                    "swap",
                    &c.swap,
                    sys.used_swap() as f64 * 100.0 / sys.total_swap() as f64,
                ));
            }
            if let Ok(load) = sysinfo::System::load_average()
                && c.load.enabled
            {
                let cores = sys.cpus().len().max(1) as f64;
                let per_core = load.one / cores;
                out.push(reading(
                    "load",
                    against(&c.load, per_core),
                    format!("{per_core:.2} per core"),
                    format!("warn {} / crit {}", c.load.warn, c.load.crit),
                    c.load.window,
                ));
            }
        }
        Err(e) => out.push(reading(
            "system",
            Severity::Crit,
            e.to_string(),
            "readable".into(),
            one,
        )),
    }

    for path in &c.disk_paths {
        let name = format!("disk {}", path.display());
        match crate::fsutil::disk_usage(path) {
            Ok((used, used_bytes, free)) => {
                disks.push(DiskSample {
                    path: path.clone(),
                    used: used_bytes,
                    free,
                });
                let mut r = pct(&name, &c.disk, used);
                r.value = format!(
                    "{used:.1} % ({} free)",
                    bytesize::ByteSize(free).display().iec()
                );
                if let Some(min) = c.disk_min_free
                    && free < min
                {
                    r.severity = Severity::Crit;
                    r.threshold = format!(
                        "{}, min free {}",
                        r.threshold,
                        bytesize::ByteSize(min).display().iec()
                    );
                }
                out.push(r);
            }
            Err(e) => out.push(reading(
                name,
                Severity::Crit,
                e.to_string(),
                "readable".into(),
                c.disk.window,
            )),
        }
    }

    let services = Controller { runner };
    for svc in &config.services {
        let (sev, value) = match services.is_running(svc) {
            Ok(true) => (Severity::Ok, "running".to_string()),
            Ok(false) => (Severity::Crit, "not running".to_string()),
            Err(e) => (Severity::Crit, e.to_string()),
        };
        out.push(reading(
            format!("service {}", svc.name),
            sev,
            value,
            "running".into(),
            one,
        ));
        if let Some(url) = &svc.health_url {
            let (sev, value) = match http_get(url, Duration::from_secs(10)) {
                Ok((s, _, lat)) if (200..300).contains(&s) => {
                    (Severity::Ok, format!("HTTP {s} in {} ms", lat.as_millis()))
                }
                Ok((s, _, _)) => (Severity::Crit, format!("HTTP {s}")),
                Err(e) => (Severity::Crit, e),
            };
            out.push(reading(
                format!("health {}", svc.name),
                sev,
                value,
                "2xx".into(),
                one,
            ));
        }
    }

    for h in &c.http {
        let threshold = format!(
            "HTTP {}{}{}",
            h.expect_status,
            h.body_contains
                .as_ref()
                .map(|b| format!(", body has {b:?}"))
                .unwrap_or_default(),
            h.warn_latency
                .map(|l| format!(", under {} ms", l.as_millis()))
                .unwrap_or_default()
        );
        let (sev, value) = match http_get(&h.url, h.timeout) {
            Err(e) => (Severity::Crit, e),
            Ok((s, _, _)) if s != h.expect_status => (Severity::Crit, format!("HTTP {s}")),
            Ok((s, body, _))
                if h.body_contains
                    .as_ref()
                    .is_some_and(|b| !body.contains(b.as_str())) =>
            {
                (Severity::Crit, format!("HTTP {s}, expected text missing"))
            }
            Ok((s, _, lat)) if h.warn_latency.is_some_and(|l| lat > l) => (
                Severity::Warn,
                format!("HTTP {s} in {} ms", lat.as_millis()),
            ),
            Ok((s, _, lat)) => (Severity::Ok, format!("HTTP {s} in {} ms", lat.as_millis())),
        };
        out.push(reading(
            format!("http {}", h.name),
            sev,
            value,
            threshold,
            h.window,
        ));
    }

    for t in &c.tcp {
        let connected = t
            .address
            .to_socket_addrs()
            .map_err(|e| e.to_string())
            .and_then(|mut a| a.next().ok_or_else(|| "no address".to_string()))
            .and_then(|a| TcpStream::connect_timeout(&a, t.timeout).map_err(|e| e.to_string()));
        let (sev, value) = match connected {
            Ok(_) => (Severity::Ok, "accepts connections".to_string()),
            Err(e) => (Severity::Crit, e),
        };
        out.push(reading(
            format!("tcp {}", t.name),
            sev,
            value,
            "connect".into(),
            t.window,
        ));
    }

    for db in &c.sqlite {
        let name = format!("sqlite {}", db.display());
        let result = crate::backup::open_live(db).and_then(|conn| {
            conn.busy_timeout(Duration::from_secs(10))?;
            conn.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0))
        });
        let (sev, value) = match result {
            Ok(s) if s == "ok" => (Severity::Ok, "ok".to_string()),
            Ok(s) => (Severity::Crit, s),
            Err(e) => (Severity::Crit, e.to_string()),
        };
        out.push(reading(name, sev, value, "quick_check ok".into(), one));
    }

    for p in &c.paths_exist {
        let ok = std::fs::symlink_metadata(p).is_ok();
        out.push(reading(
            format!("exists {}", p.display()),
            if ok { Severity::Ok } else { Severity::Crit },
            if ok { "present" } else { "missing" }.into(),
            "exists".into(),
            one,
        ));
    }
    for p in &c.paths_writable {
        use std::os::unix::ffi::OsStrExt;
        let ok = std::ffi::CString::new(p.as_os_str().as_bytes())
            // SAFETY: a valid C string.
            .is_ok_and(|c| unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0);
        out.push(reading(
            format!("writable {}", p.display()),
            if ok { Severity::Ok } else { Severity::Crit },
            if ok { "writable" } else { "not writable" }.into(),
            "writable".into(),
            one,
        ));
    }

    // The tool watches itself: a scheduled job that has not run within 1.5 times its
    // period (measured on its own schedule) is a failure of its own.
    let tz = jiff::tz::TimeZone::system();
    if let Ok(now_ts) = jiff::Timestamp::from_second(now) {
        for (job, cron) in &config.schedule.jobs {
            let Some(prev) = cron.prev_at_or_before(now_ts, &tz) else {
                continue;
            };
            let Some(before) =
                cron.prev_at_or_before(prev - jiff::SignedDuration::from_secs(1), &tz)
            else {
                continue;
            };
            let period = prev.as_second() - before.as_second();
            let limit = period + period / 2;
            let last = freshest_run(config, catalog, job);
            let threshold = format!("ran within {}", show_age(limit, false));
            let (sev, value) = match last {
                Some(t) if now - t <= limit => (
                    Severity::Ok,
                    format!("last run {} ago", show_age(now - t, false)),
                ),
                // Rounded up, so an overdue age never reads as within the limit.
                Some(t) => (
                    Severity::Crit,
                    format!("overdue: last run {} ago", show_age(now - t, true)),
                ),
                None => match pending(catalog, cron, &tz, now) {
                    Some(first_due) => (
                        Severity::Ok,
                        format!("pending: not run yet, first due {first_due}"),
                    ),
                    None => (Severity::Crit, "never ran".into()),
                },
            };
            out.push(reading(
                format!("schedule {job}"),
                sev,
                value,
                threshold,
                one,
            ));
        }
    }

    for set in &config.backup.sets {
        let name = format!("backup {}", set.name);
        // What the set's next backup will meet, under the name its job's alert has: the
        // check, the failed backup and the suspect backup are one problem with one alert,
        // its reminders and one recovery (the next good backup), not three.
        let job_alert = Job::BackupSet(set.name.clone()).alert_name();
        let missing = config.missing_set_paths(set);
        if !missing.is_empty() {
            out.push(reading(
                job_alert.clone(),
                Severity::Crit,
                missing.join("; "),
                "every set path readable".into(),
                one,
            ));
        }
        // The newest backup being suspect is critical whatever its age: the set's data
        // may be damaged and only older backups are good.
        let newest = catalog
            .backups(Some(&set.name))
            .map(|v| v.into_iter().next());
        if let Ok(Some(b)) = &newest
            && b.is_suspect()
        {
            let good = match catalog.newest_good(&set.name) {
                Ok(Some(g)) => format!("last good: {}", g.id),
                _ => "no good backup".into(),
            };
            out.push(reading(
                job_alert,
                Severity::Crit,
                format!("{} is SUSPECT ({good}): {}", b.id, b.suspect.join("; ")),
                "newest backup not suspect".into(),
                one,
            ));
            continue;
        }
        // A differential without a sound base restores nothing, however fresh: critical
        // at once (a damaged base spoils every restore point built on it).
        if let Ok(Some(b)) = &newest
            && let Some(base) = &b.base
        {
            let why = match catalog.backup(base) {
                Ok(None) => Some(format!("its base {base} is gone")),
                Ok(Some(r)) if r.status == crate::catalog::BackupStatus::Failed => {
                    Some(format!("its base {base} failed verification"))
                }
                _ => None,
            };
            if let Some(why) = why {
                out.push(reading(
                    job_alert,
                    Severity::Crit,
                    format!("{} is a differential that cannot be restored: {why}", b.id),
                    "newest backup restorable".into(),
                    one,
                ));
                continue;
            }
        }
        let Some(max) = set.max_age else { continue };
        let threshold = format!(
            "newest verified younger than {}",
            humantime::format_duration(max)
        );
        let (sev, value) = match catalog.newest_verified(&set.name) {
            // A set whose data did not change since its newest archive is as fresh as the
            // run that found so (a Redis dump or a config folder that stays the same for
            // days is not a late backup).
            Ok(Some(b)) => match catalog.last_unchanged(&set.name, &b.id) {
                Ok(Some(seen)) if seen > b.created_at => match freshness(now, seen, &b.id, max) {
                    (Severity::Ok, v) => (Severity::Ok, format!("{v}, same as {}", b.id)),
                    late => late,
                },
                _ => freshness(now, b.created_at, &b.id, max),
            },
            // Before the set's first scheduled backup is due (plus grace), a fresh install
            // is pending, not critical.
            Ok(None) => match backup_cron(config, &set.name)
                .and_then(|cron| pending(catalog, cron, &tz, now))
            {
                Some(first_due) => (
                    Severity::Ok,
                    format!("pending: no backup yet, first due {first_due}"),
                ),
                None => (Severity::Crit, "no verified backup".into()),
            },
            Err(e) => (Severity::Crit, e.to_string()),
        };
        out.push(reading(name, sev, value, threshold, one));
    }
    offsite_freshness(config, catalog, now, &mut out);
    for set in config.backup.sets.iter().filter(|s| s.drill) {
        for offsite in [false, true] {
            out.extend(drill_reading(config, catalog, &set.name, offsite, now));
        }
    }
    Cycle {
        readings: out,
        disks,
    }
}

/// `offsite SET`: the newest offsite copy of each set with a `max-age` is younger than it
/// (on every target that covers the set; the target is named when there are several).
fn offsite_freshness(config: &Config, catalog: &Catalog, now: i64, out: &mut Vec<Reading>) {
    let one = Window::default();
    for t in &config.offsite {
        for set in config.backup.sets.iter().filter(|s| t.covers(&s.name)) {
            let Some(max) = set.max_age else { continue };
            let name = if config.offsite.len() == 1 {
                format!("offsite {}", set.name)
            } else {
                format!("offsite {} {}", set.name, t.name)
            };
            let threshold = format!(
                "newest copy younger than {}",
                humantime::format_duration(max)
            );
            let (sev, value) = match catalog.newest_offsite_copy(&t.name, &set.name) {
                Ok(Some(c)) => freshness(now, c.created_at, &c.backup_id, max),
                Ok(None) => (Severity::Crit, "no offsite copy".into()),
                Err(e) => (Severity::Crit, e.to_string()),
            };
            out.push(reading(name, sev, value, threshold, one));
        }
        if t.object_lock.is_some() {
            let unlocked: Vec<String> = config
                .backup
                .sets
                .iter()
                .filter(|s| t.covers(&s.name))
                .filter_map(|s| catalog.newest_offsite_copy(&t.name, &s.name).ok().flatten())
                .filter(|c| c.locked_until.is_none())
                .map(|c| c.backup_id)
                .collect();
            let (sev, value) = if unlocked.is_empty() {
                (Severity::Ok, "newest copies locked".to_string())
            } else {
                (
                    Severity::Warn,
                    format!(
                        "the bucket did not lock {} (object lock not enabled on it?)",
                        unlocked.join(", ")
                    ),
                )
            };
            out.push(reading(
                format!("offsite lock {}", t.name),
                sev,
                value,
                "every new copy under object lock".into(),
                one,
            ));
        }
    }
}

/// The name of a set's drill check: `drill SET`, `drill SET offsite`.
pub fn drill_check_name(set: &str, offsite: bool) -> String {
    if offsite {
        format!("drill {set} offsite")
    } else {
        format!("drill {set}")
    }
}

/// `drill SET` (or `drill SET offsite`): critical when the newest drill failed, a warning
/// when the newest passing one is older than `[drill] max-age` or there never was one.
/// `None` while drills are neither scheduled nor ever run for the set (nothing to watch).
/// The drill job feeds the same reading as soon as it ends, so its failure alerts at once
/// and the check cycle after it finds the same state (one alert, one recovery).
pub fn drill_reading(
    config: &Config,
    catalog: &Catalog,
    set: &str,
    offsite: bool,
    now: i64,
) -> Option<Reading> {
    let job = if offsite {
        Job::DrillOffsite
    } else {
        Job::Drill
    };
    let cron = job_cron(config, &job);
    let newest = catalog.newest_drill(set, offsite, false).ok().flatten();
    if cron.is_none() && newest.is_none() {
        return None;
    }
    let max = if offsite {
        config.drill.offsite_max_age
    } else {
        config.drill.max_age
    };
    let threshold = format!(
        "newest drill passed, within {}",
        humantime::format_duration(max)
    );
    let one = Window::default();
    let (sev, value) = match &newest {
        Some(d) if !d.ok => (
            Severity::Crit,
            format!(
                "the drill of {} at {} failed: {}",
                d.backup_id,
                crate::clock::show(d.started_at, "%Y-%m-%d %H:%M:%SZ"),
                d.detail
            ),
        ),
        // Stale only matters where drills are scheduled: one run by hand (the runbook's,
        // before a restore) is not a promise to run them every week.
        Some(d)
            if cron.is_some() && now.saturating_sub(d.started_at).max(0) as u64 > max.as_secs() =>
        {
            (
                Severity::Warn,
                format!(
                    "last proven restorable {} ago ({})",
                    show_age(now - d.started_at, true),
                    d.backup_id
                ),
            )
        }
        Some(d) => (Severity::Ok, proven(d, now)),
        None => match cron.and_then(|c| pending(catalog, c, &jiff::tz::TimeZone::system(), now)) {
            Some(first_due) => (
                Severity::Ok,
                format!("pending: no drill yet, first due {first_due}"),
            ),
            None => (
                Severity::Warn,
                "never proven restorable: no drill ran".into(),
            ),
        },
    };
    Some(reading(
        drill_check_name(set, offsite),
        sev,
        value,
        threshold,
        one,
    ))
}

/// "proven restorable 3days ago: 41.0 s for 1.2 GiB".
pub fn proven(d: &crate::catalog::DrillRecord, now: i64) -> String {
    format!(
        "proven restorable {} ago: {} for {} ({})",
        show_age(now - d.started_at, false),
        crate::drill::show_ms(d.phases.restore_ms()),
        bytesize::ByteSize(d.bytes).display().iec(),
        d.backup_id
    )
}

/// A backup's age against `max`: critical, naming it, when it is older.
fn freshness(now: i64, created_at: i64, id: &str, max: Duration) -> (Severity, String) {
    let age = now.saturating_sub(created_at).max(0);
    if age as u64 > max.as_secs() {
        (
            Severity::Crit,
            format!("{} old ({id})", show_age(age, true)),
        )
    } else {
        (Severity::Ok, format!("{} old", show_age(age, false)))
    }
}

/// The schedule that backs up `set`: its own, else the `backup` job's.
fn backup_cron<'a>(config: &'a Config, set: &str) -> Option<&'a crate::schedule::Cron> {
    job_cron(config, &Job::BackupSet(set.to_string())).or_else(|| job_cron(config, &Job::Backup))
}

/// `job`'s own schedule, when it has one.
fn job_cron<'a>(config: &'a Config, job: &Job) -> Option<&'a crate::schedule::Cron> {
    config
        .schedule
        .jobs
        .iter()
        .find(|(j, _)| j == job)
        .map(|(_, c)| c)
}

/// For a job that never ran: its first due time (shown) while it is still pending, i.e.
/// until half a period after its first due time after steward started keeping records
/// here; `None` once that grace has passed.
fn pending(
    catalog: &Catalog,
    cron: &crate::schedule::Cron,
    tz: &jiff::tz::TimeZone,
    now: i64,
) -> Option<String> {
    let since = catalog.first_run_at().ok().flatten().unwrap_or(now);
    let first_due = cron.next_after(jiff::Timestamp::from_second(since).ok()?, tz)?;
    let after = cron.next_after(first_due, tz)?;
    let period = after.as_second() - first_due.as_second();
    (now <= first_due.as_second() + period / 2)
        .then(|| crate::clock::show(first_due.as_second(), "%Y-%m-%d %H:%M:%SZ"))
}

/// When `job` last ran, by its timer or by hand. The backup job is as fresh as its
/// stalest set: each set's own runs (`steward backup`, one set at a time) count too.
fn freshest_run(config: &Config, catalog: &Catalog, job: &Job) -> Option<i64> {
    let own = catalog
        .last_run_any(job)
        .ok()
        .flatten()
        .map(|r| r.started_at);
    if *job != Job::Backup || config.backup.sets.is_empty() {
        return own;
    }
    // The sets this job backs up: those without a schedule of their own (a weekly set
    // with its own timer is not part of the nightly `backup`).
    let mut stalest: Option<i64> = None;
    for s in &config.backup.sets {
        let own_schedule = Job::BackupSet(s.name.clone());
        if config.schedule.jobs.iter().any(|(j, _)| *j == own_schedule) {
            continue;
        }
        let Some(t) = catalog
            .last_run_any(&own_schedule)
            .ok()
            .flatten()
            .map(|r| r.started_at)
        else {
            // A set never backed up alone: the job's own runs are what counts.
            return own;
        };
        stalest = Some(stalest.map_or(t, |m: i64| m.min(t)));
    }
    own.max(stalest)
}

/// An age for a message, one way everywhere.
pub fn show_age(secs: i64, up: bool) -> String {
    let secs = secs.max(0) as u64;
    // Exact below an hour, to the minute below a day, to the hour above: the precision
    // a reader needs, rounded down when it is within a limit and up when overdue, so an
    // age never reads as the other side of its limit.
    let unit = match secs {
        0..3_600 => 1,
        3_600..86_400 => 60,
        _ => 3_600,
    };
    let shown = if up {
        secs.div_ceil(unit) * unit
    } else {
        secs / unit * unit
    };
    // Days, not humantime's 30.44-day months ("1month 16days 1h 26m 24s").
    let (d, h, m, s) = (
        shown / 86_400,
        shown % 86_400 / 3_600,
        shown % 3_600 / 60,
        shown % 60,
    );
    let mut parts = Vec::new();
    if d > 0 {
        parts.push(format!("{d}day{}", if d == 1 { "" } else { "s" }));
    }
    for (n, u) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            parts.push(format!("{n}{u}"));
        }
    }
    if parts.is_empty() {
        "0s".into()
    } else {
        parts.join(" ")
    }
}
