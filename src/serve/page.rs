//! What the status page and `/health` show, gathered from the catalog and the config in
//! one read, and the page itself (HTML by maud, checked at compile time and escaped by
//! default). No script, no request to anywhere: the CSS is inline (allowed by its hash in
//! the Content-Security-Policy), the chart inline SVG, and a meta refresh reloads it.

use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Serialize;

use crate::catalog::{BackupRecord, Catalog, CatalogError, CheckState, QueuedMail, RunRecord};
use crate::config::Config;
use crate::schedule::Job;
use crate::severity::Severity;

/// The window of disk samples the chart and its forecast use (the report's too).
const CHART_DAYS: i64 = 30;
/// A scheduled check this late makes every check state stale: the page and `/health` say
/// so (critical) rather than show the last states as current.
const CHECK_GRACE: i64 = 15 * 60;

/// The page's content.
pub struct Page {
    pub host: String,
    pub now: i64,
    pub refresh_secs: u64,
    /// The worst check state, or critical when the checks are stale.
    pub worst: Severity,
    /// Why the check states are not current, when they are not.
    pub stale: Option<String>,
    pub checks: Vec<CheckState>,
    pub sets: Vec<SetRow>,
    pub suspect: Vec<BackupRecord>,
    pub jobs: Vec<JobRow>,
    pub outbox: Vec<QueuedMail>,
    pub disks: Vec<DiskRow>,
    /// The fleet as the last check saw it, when `[fleet]` is configured.
    pub fleet: Option<Vec<crate::fleet::PeerView>>,
}

/// One backup set.
pub struct SetRow {
    pub set: String,
    pub newest_good: Option<BackupRecord>,
    /// The newest backup when it is not the newest good one (failed, unverified, suspect).
    pub newest_other: Option<BackupRecord>,
    pub proven: Option<String>,
    pub drill_failed: Option<String>,
    pub offsite: Vec<(String, Option<String>)>,
}

/// One scheduled job.
pub struct JobRow {
    pub job: Job,
    pub schedule: String,
    pub last: Option<RunRecord>,
    pub next: Option<i64>,
}

/// One watched disk.
pub struct DiskRow {
    pub path: String,
    pub samples: Vec<(i64, u64, u64)>,
    pub full_on: Option<String>,
}

/// `/health`'s body.
#[derive(Serialize)]
pub struct Health {
    pub status: &'static str,
    pub host: String,
    pub time: i64,
    /// Why the checks are stale, when they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale: Option<String>,
    /// Every check that is not OK.
    pub problems: Vec<HealthItem>,
}

/// A check in `/health`.
#[derive(Serialize)]
pub struct HealthItem {
    pub check: String,
    pub state: &'static str,
    pub since: i64,
    pub value: String,
}

/// Why the check states are out of date: the check job is scheduled and its next run
/// after the last one is more than [`CHECK_GRACE`] overdue (or it never ran and its first
/// run is).
fn stale_checks(cfg: &Config, catalog: &Catalog, now: i64) -> Result<Option<String>, CatalogError> {
    let Some((_, cron)) = cfg.schedule.jobs.iter().find(|(j, _)| *j == Job::Check) else {
        return Ok(None);
    };
    // Never ran: it counts from when steward first recorded anything here.
    let last = catalog.last_run_any(&Job::Check)?.map(|r| r.started_at);
    let Some(since) = last.or(catalog.first_run_at()?) else {
        return Ok(None);
    };
    let tz = jiff::tz::TimeZone::system();
    let Ok(after) = jiff::Timestamp::from_second(since) else {
        return Ok(None);
    };
    let Some(due) = cron.next_after(after, &tz) else {
        return Ok(None);
    };
    Ok((now > due.as_second() + CHECK_GRACE).then(|| match last {
        Some(at) => format!(
            "the check job last ran at {} and was due again at {}: these states are old",
            crate::render::time(at),
            crate::render::time(due.as_second())
        ),
        None => format!(
            "the check job has never run (it was due at {}): these states are not current",
            crate::render::time(due.as_second())
        ),
    }))
}

/// `/health`: critical (503) when a check is critical or the checks are stale.
pub fn health(cfg: &Config) -> Result<(bool, Health), CatalogError> {
    let catalog = Catalog::open(&cfg.state_dir)?;
    let now = crate::clock::now();
    let stale = stale_checks(cfg, &catalog, now)?;
    let problems: Vec<HealthItem> = catalog
        .check_states()?
        .into_iter()
        .filter(|s| s.state != Severity::Ok)
        .map(|s| HealthItem {
            check: s.name,
            state: s.state.word(),
            since: s.since,
            value: s.value,
        })
        .collect();
    let crit = stale.is_some() || problems.iter().any(|p| p.state == Severity::Crit.word());
    let warn = problems.iter().any(|p| p.state == Severity::Warn.word());
    let status = if crit {
        "critical"
    } else if warn {
        "warning"
    } else {
        "ok"
    };
    Ok((
        crit,
        Health {
            status,
            host: crate::fsutil::hostname(),
            time: now,
            stale,
            problems,
        },
    ))
}

/// Reads everything the page shows.
pub fn gather(cfg: &Config) -> Result<Page, CatalogError> {
    let catalog = Catalog::open(&cfg.state_dir)?;
    let now = crate::clock::now();
    let stale = stale_checks(cfg, &catalog, now)?;
    let mut checks = catalog.check_states()?;
    // What needs a look first.
    checks.sort_by(|a, b| b.state.cmp(&a.state).then_with(|| a.name.cmp(&b.name)));
    let mut worst = checks.iter().map(|c| c.state).max().unwrap_or(Severity::Ok);
    if stale.is_some() {
        worst = Severity::Crit;
    }
    let mut sets = Vec::new();
    for s in &cfg.backup.sets {
        let newest_good = catalog.newest_good(&s.name)?;
        let newest_other = catalog
            .backups(Some(&s.name))?
            .into_iter()
            .next()
            .filter(|b| newest_good.as_ref().is_none_or(|g| g.id != b.id));
        let passed = crate::status::newest_drill(&catalog, &s.name, true);
        let newest_drill = crate::status::newest_drill(&catalog, &s.name, false);
        sets.push(SetRow {
            set: s.name.clone(),
            newest_good,
            newest_other,
            proven: passed.as_ref().map(|d| crate::checks::proven(d, now)),
            drill_failed: newest_drill
                .filter(|d| !d.ok)
                .map(|d| format!("{} ({}): {}", d.backup_id, d.source, d.detail)),
            offsite: crate::status::newest_copies(cfg, &catalog, &s.name)?,
        });
    }
    let suspect = catalog
        .suspect_backups()?
        .into_iter()
        .filter(BackupRecord::is_suspect)
        .collect();
    let tz = jiff::tz::TimeZone::system();
    let ts = jiff::Timestamp::from_second(now).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let mut jobs = Vec::new();
    for (job, cron) in &cfg.schedule.jobs {
        // The backup job's runs are recorded per set (`backup:SET`).
        let mut last = catalog.last_run_any(job)?;
        if *job == Job::Backup {
            for set in &cfg.backup.sets {
                if let Some(r) = catalog.last_run_any(&Job::BackupSet(set.name.clone()))?
                    && last.as_ref().is_none_or(|l| r.started_at > l.started_at)
                {
                    last = Some(r);
                }
            }
        }
        jobs.push(JobRow {
            job: job.clone(),
            schedule: cron.source.clone(),
            last,
            next: cron.next_after(ts, &tz).map(jiff::Timestamp::as_second),
        });
    }
    let mut disks = Vec::new();
    for path in &cfg.checks.disk_paths {
        let shown = path.to_string_lossy().into_owned();
        let samples = catalog.disk_samples(&shown, now - CHART_DAYS * 86_400)?;
        let free: Vec<(i64, u64)> = samples.iter().map(|s| (s.0, s.2)).collect();
        let full_on = crate::maintain::days_until_full(&free).map(|days| {
            let at = samples.last().map_or(now, |s| s.0) + (days * 86_400.0) as i64;
            format!("{} (in {days:.0} days)", crate::clock::show(at, "%Y-%m-%d"))
        });
        disks.push(DiskRow {
            path: shown,
            samples,
            full_on,
        });
    }
    let fleet = match &cfg.fleet {
        Some(f) => Some(crate::fleet::seen(&catalog, f, now)?),
        None => None,
    };
    Ok(Page {
        host: crate::fsutil::hostname(),
        now,
        refresh_secs: cfg.serve.refresh.as_secs(),
        worst,
        stale,
        checks,
        sets,
        suspect,
        jobs,
        outbox: catalog.queued()?,
        disks,
        fleet,
    })
}

/// The page's stylesheet, inline; its hash goes into the Content-Security-Policy.
pub const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:72em;\
padding:0 1em;color:#222}h1{font-size:1.5em;margin:0}h2{font-size:1.15em;margin:1.6em 0 .4em}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.25em .6em;\
border-bottom:1px solid #e4e4e4;vertical-align:top}th{font-weight:600;background:#f6f6f6}\
.state{font-weight:700;padding:0 .4em;border-radius:3px}.ok{color:#0a6b2d}.warning{color:#8a5a00;\
background:#fff4d6}.critical{color:#fff;background:#b00020}.untrusted{color:#fff;background:#6a1b9a}\
.muted{color:#666}.chart{width:100%;max-width:600px;height:auto;display:block}\
header{display:flex;gap:1em;align-items:baseline;flex-wrap:wrap}pre{white-space:pre-wrap;margin:0}";

fn state_class(s: Severity) -> &'static str {
    match s {
        Severity::Ok => "ok",
        Severity::Warn => "warning",
        Severity::Crit => "critical",
    }
}

fn state(s: Severity) -> Markup {
    html! { span class={ "state " (state_class(s)) } { (s.word()) } }
}

fn run_class(s: crate::catalog::RunStatus) -> &'static str {
    use crate::catalog::RunStatus;
    match s {
        RunStatus::Ok | RunStatus::Unchanged => "ok",
        RunStatus::Warning | RunStatus::Running | RunStatus::Skipped => "warning",
        RunStatus::Failed => "critical",
    }
}

fn ago(now: i64, t: i64) -> String {
    if t > now {
        format!("in {}", crate::checks::show_age(t - now, false))
    } else {
        format!("{} ago", crate::checks::show_age(now - t, false))
    }
}

fn when(now: i64, t: i64) -> Markup {
    html! { time datetime=(crate::clock::show(t, "%Y-%m-%dT%H:%M:%SZ")) title=(crate::render::time(t)) { (ago(now, t)) } }
}

fn backup_cell(now: i64, b: &BackupRecord) -> Markup {
    html! {
        (b.id) br;
        span class="muted" { (when(now, b.created_at)) ", " (crate::render::bytes(b.archive_bytes))
            " (" (crate::render::bytes(b.source_bytes)) " of data)" }
    }
}

/// The page as HTML.
pub fn html(p: &Page) -> String {
    let now = p.now;
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content=(p.refresh_secs);
                link rel="icon" href="data:,";
                title { "steward · " (p.host) " · " (p.worst.word()) }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    h1 { (p.host) }
                    span id="worst" class={ "state " (state_class(p.worst)) } { (p.worst.word()) }
                    span class="muted" { "as of " (crate::render::time(now)) "; reloads every " (p.refresh_secs) " s" }
                }
                @if let Some(why) = &p.stale {
                    p id="stale" class="state critical" { (why) }
                }
                section id="checks" {
                    h2 { "Checks" }
                    @if p.checks.is_empty() {
                        p class="muted" { "No check has run yet." }
                    } @else {
                        table {
                            tr { th { "Check" } th { "State" } th { "Since" } th { "Value" } th { "Threshold" } }
                            @for c in &p.checks {
                                tr data-check=(c.name) data-state=(state_class(c.state)) {
                                    td { (c.name) } td { (state(c.state)) } td { (when(now, c.since)) }
                                    td { (c.value) } td class="muted" { (c.threshold) }
                                }
                            }
                        }
                    }
                }
                section id="backups" {
                    h2 { "Backups" }
                    table {
                        tr { th { "Set" } th { "Newest good backup" } th { "Newer, not good" } th { "Restore drill" } th { "Offsite" } }
                        @for s in &p.sets {
                            tr data-set=(s.set) {
                                td { (s.set) }
                                td {
                                    @if let Some(b) = &s.newest_good { (backup_cell(now, b)) " " span class="state ok" { "verified" } }
                                    @else { span class="state critical" { "none" } }
                                }
                                td {
                                    @if let Some(b) = &s.newest_other {
                                        (backup_cell(now, b)) " "
                                        span class="state warning" { @if b.is_suspect() { "suspect" } @else { (crate::render::restore::status(b.status)) } }
                                    }
                                }
                                td {
                                    @if let Some(f) = &s.drill_failed { span class="state critical" { "failed" } " " (f) br; }
                                    @if let Some(pr) = &s.proven { (pr) } @else { span class="muted" { "never drilled" } }
                                }
                                td {
                                    @for (t, id) in &s.offsite {
                                        (t) ": " @if let Some(id) = id { (id) } @else { span class="state warning" { "no copy" } } br;
                                    }
                                }
                            }
                        }
                    }
                }
                @if !p.suspect.is_empty() {
                    section id="suspect" {
                        h2 { "Suspect backups" }
                        table {
                            tr { th { "Backup" } th { "Why" } }
                            @for b in &p.suspect {
                                tr data-backup=(b.id) { td { (b.id) } td { (b.suspect.join("; ")) } }
                            }
                        }
                    }
                }
                section id="jobs" {
                    h2 { "Jobs" }
                    table {
                        tr { th { "Job" } th { "Schedule" } th { "Last run" } th { "Result" } th { "What it said" } th { "Next" } }
                        @for j in &p.jobs {
                            tr data-job=(j.job.to_string()) {
                                td { (j.job.to_string()) } td class="muted" { (j.schedule) }
                                @if let Some(r) = &j.last {
                                    td { (when(now, r.started_at)) @if let Some(f) = r.finished_at { span class="muted" { ", took " (crate::checks::show_age(f - r.started_at, false)) } } }
                                    td { span class={ "state " (run_class(r.status)) } { (r.status.word()) } }
                                    td { pre { (r.summary.clone().unwrap_or_default()) } }
                                } @else {
                                    td class="muted" { "never" } td {} td {}
                                }
                                td { @if let Some(n) = j.next { (when(now, n)) } }
                            }
                        }
                    }
                }
                section id="outbox" {
                    h2 { "Mail waiting" }
                    @if p.outbox.is_empty() {
                        p class="muted" { "Nothing waiting: every alert was delivered." }
                    } @else {
                        table {
                            tr { th { "Queued" } th { "Channel" } th { "Subject" } th { "Tries" } th { "Last error" } }
                            @for m in &p.outbox {
                                tr { td { (when(now, m.created_at)) } td { (m.channel) } td { (m.subject) } td { (m.attempts) } td { (m.last_error.clone().unwrap_or_default()) } }
                            }
                        }
                    }
                }
                section id="capacity" {
                    h2 { "Capacity (last " (CHART_DAYS) " days)" }
                    @for d in &p.disks {
                        figure data-disk=(d.path) {
                            figcaption { (d.path) ": "
                                @if let Some(f) = &d.full_on { "full on " (f) " at this rate" }
                                @else if d.samples.len() < 2 { span class="muted" { "not enough samples yet" } }
                                @else { "not filling up" } }
                            (PreEscaped(super::chart::svg(&d.path, &d.samples)))
                        }
                    }
                    @if p.disks.is_empty() { p class="muted" { "No disk is watched ([checks.disk] paths)." } }
                }
                @if let Some(fleet) = &p.fleet {
                    section id="fleet" {
                        h2 { "Fleet" }
                        table {
                            tr { th { "Host" } th { "State" } th { "Last heard" } th { "Signature" } th { "Newest good backups" } }
                            @for h in fleet {
                                tr data-host=(h.host) data-trust=(h.trust.word()) {
                                    td { (h.host) @if h.own { span class="muted" { " (this host)" } } }
                                    td {
                                        @match (h.label(), h.worst) {
                                            ("UNTRUSTED", _) => span class="state untrusted" { "UNTRUSTED" },
                                            ("SILENT", _) => span class="state critical" { "SILENT" },
                                            (_, Some(w)) => (state(w)),
                                            _ => span class="muted" { "?" },
                                        }
                                    }
                                    td { @if let Some(t) = h.time { (when(now, t)) } @else { span class="muted" { "never" } } }
                                    td { (h.trust.describe()) }
                                    td { @for (set, id) in &h.sets { (set) ": " (id.clone().unwrap_or_else(|| "none".into())) br; } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    markup.into_string()
}
