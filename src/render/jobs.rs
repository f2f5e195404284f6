//! Each job's report as people read it (the tables and lines its command prints) or as
//! JSON: the same for a direct command and for `steward run JOB`.

use std::io::{self, Write};

use serde::Serialize;

use crate::alerts::{Event, State};
use crate::backup::{Action, PruneReport, SetOutcome};
use crate::checks::Severity;
use crate::config::Config;
use crate::jobs::Report;
use crate::jobs::backup::BackupReport;
use crate::jobs::check::CheckReport;
use crate::jobs::maintain::MaintainReport;
use crate::jobs::offsite::{AfterBackup, PushReport};
use crate::jobs::verify::VerifyReport;
use crate::offsite::{self, Pushed};

/// Writes `report` to `out` (`json`: as JSON).
pub fn report(out: &mut dyn Write, cfg: &Config, report: &Report, json: bool) -> io::Result<()> {
    match report {
        Report::Backup(r) => backup(out, cfg, r, json),
        Report::Check(r) => check(out, r, json),
        Report::Maintain(r) => maintain(out, r, json),
        Report::Verify(r) => verify(out, r, json),
        Report::Offsite(r) => push(out, r, json),
        Report::Prune(reports) if json => super::json(out, reports),
        Report::Prune(reports) => {
            let tz = jiff::tz::TimeZone::system();
            for r in reports {
                prune_table(out, r, &tz)?;
            }
            Ok(())
        }
        Report::Drill(r) => drill(out, r, json),
        Report::Idle(why) => writeln!(out, "{why}"),
    }
}

/// `drill --json`.
#[derive(Serialize)]
struct DrillJson<'a> {
    drills: &'a [crate::catalog::DrillRecord],
    skipped: Vec<Skipped<'a>>,
    swept: &'a [std::path::PathBuf],
    /// Per set: stopping services + restoring + starting them, in ms.
    incident_ms: std::collections::BTreeMap<&'a str, u64>,
    failed: usize,
}

#[derive(Serialize)]
struct Skipped<'a> {
    set: &'a str,
    why: &'a str,
}

/// Each set's drill: the verdict and time to restore, then every check on its own line.
fn drill(out: &mut dyn Write, r: &crate::jobs::drill::DrillReport, json: bool) -> io::Result<()> {
    if json {
        return super::json(
            out,
            &DrillJson {
                drills: &r.drills,
                skipped: r
                    .skipped
                    .iter()
                    .map(|(set, why)| Skipped { set, why })
                    .collect(),
                swept: &r.swept,
                incident_ms: r.incident.iter().map(|(s, ms)| (s.as_str(), *ms)).collect(),
                failed: r.failed,
            },
        );
    }
    let ms = crate::drill::show_ms;
    for p in &r.swept {
        writeln!(
            out,
            "removed {}, left by a drill that was killed",
            p.display()
        )?;
    }
    for d in &r.drills {
        let p = &d.phases;
        let fetch = if p.fetch_ms > 0 {
            format!("fetch {}, ", ms(p.fetch_ms))
        } else {
            String::new()
        };
        let verdict = if d.ok {
            "proven restorable"
        } else {
            "DRILL FAILED"
        };
        writeln!(
            out,
            "{}: {verdict}: {} ({}), {} files, {}; time to restore {} ({fetch}verify {}, \
             write {}); checks {}{}",
            d.set,
            d.backup_id,
            d.source,
            d.files,
            super::bytes(d.bytes),
            ms(p.restore_ms()),
            ms(p.verify_ms),
            ms(p.write_ms),
            ms(p.check_ms),
            if p.command_ms > 0 {
                format!(", drill-command {}", ms(p.command_ms))
            } else {
                String::new()
            }
        )?;
        for f in &d.findings {
            writeln!(out, "  {f}")?;
        }
    }
    for (set, why) in &r.skipped {
        writeln!(out, "{set}: not drilled: {why}")?;
    }
    for (set, total) in &r.incident {
        writeln!(
            out,
            "{set}: a whole incident would take about {} (stopping and starting its services \
             as measured at its last restore, plus this time to restore)",
            ms(*total)
        )?;
    }
    Ok(())
}

/// The job's report: each set's summary, what went offsite, the retention that followed.
fn backup(out: &mut dyn Write, cfg: &Config, r: &BackupReport, json: bool) -> io::Result<()> {
    let tz = jiff::tz::TimeZone::system();
    if r.no_sets {
        if json {
            super::json(out, &Vec::<SetOutcome>::new())?;
        } else {
            writeln!(
                out,
                "no backup sets configured in {}; add a [[backup.set]] to back something up",
                cfg.origin
            )?;
        }
        return Ok(());
    }
    if json {
        // Each set's outcome with the prune decisions that followed it.
        let v: Vec<SetJson<'_>> = r
            .outcomes
            .iter()
            .map(|o| SetJson {
                outcome: o,
                prune: r.prunes.iter().find(|p| p.set == o.set()),
            })
            .collect();
        return super::json(out, &v);
    }
    for o in &r.outcomes {
        outcome(out, o)?;
    }
    after_backup(out, &r.offsite)?;
    for p in &r.prunes {
        prune_table(out, p, &tz)?;
    }
    Ok(())
}

/// `backup --json`: a set's outcome and, when it was pruned after its backup, the prune
/// report (every backup, KEEP or REMOVE and why).
#[derive(serde::Serialize)]
struct SetJson<'a> {
    #[serde(flatten)]
    outcome: &'a SetOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    prune: Option<&'a crate::backup::PruneReport>,
}

fn outcome(out: &mut dyn Write, o: &SetOutcome) -> io::Result<()> {
    match o {
        SetOutcome::Unchanged { set, newest } => {
            writeln!(out, "{set}: unchanged since {newest}, no new archive")?;
        }
        SetOutcome::Created(s) => {
            let ratio = if s.bytes_in > 0 {
                s.bytes_out as f64 / s.bytes_in as f64
            } else {
                0.0
            };
            writeln!(
                out,
                "{}: {} verified: {} files, {} dirs, {} symlinks, {} hard links; {} in, {} out (ratio {:.2}); {:.1} s; {} warnings",
                s.set,
                s.id,
                s.files,
                s.dirs,
                s.symlinks,
                s.hardlinks,
                super::bytes(s.bytes_in),
                super::bytes(s.bytes_out),
                ratio,
                s.seconds,
                s.warnings.len()
            )?;
            writeln!(out, "  {}", s.path.display())?;
            match (&s.base, &s.why_full) {
                (Some(base), _) => writeln!(
                    out,
                    "  differential on {base}: {} of the {} files changed and are in it",
                    s.stored_files.unwrap_or(s.files),
                    s.files
                )?,
                (None, Some(why)) => writeln!(out, "  full backup: {why}")?,
                (None, None) => {}
            }
            for w in &s.warnings {
                writeln!(out, "  warning: {w}")?;
            }
            if !s.suspect.is_empty() {
                writeln!(
                    out,
                    "  SUSPECT (kept, but retention keeps the last good backup too; \
                     `steward backups accept {}` once you have looked):",
                    s.id
                )?;
                for r in &s.suspect {
                    writeln!(out, "    {r}")?;
                }
            }
        }
    }
    Ok(())
}
/// What was uploaded; "nothing to upload" only when nothing also failed.
fn pushed(out: &mut dyn Write, pushed: &[Pushed], clean: bool, json: bool) -> io::Result<()> {
    if json {
        return super::json(out, &pushed);
    }
    if pushed.is_empty() && clean {
        writeln!(
            out,
            "nothing to upload: every covered set's newest verified backup has a copy"
        )?;
    }
    for p in pushed {
        if p.already {
            writeln!(out, "{}: {} already there", p.target, p.key)?;
        } else {
            writeln!(
                out,
                "{}: {} uploaded, {} in {:.1} s ({:.1} MiB/s)",
                p.target,
                p.key,
                super::bytes(p.bytes),
                p.seconds,
                p.bytes as f64 / 1_048_576.0 / p.seconds.max(1e-3)
            )?;
        }
    }
    Ok(())
}

/// The push's report: what was sent, then what remote retention decided.
fn push(out: &mut dyn Write, r: &PushReport, json: bool) -> io::Result<()> {
    pushed(out, &r.pushed, r.uploads_clean, json)?;
    if !json {
        pruned(out, &r.pruned, false)?;
    }
    Ok(())
}

/// The lines under a backup's summary: copies made, copies remote retention deleted.
fn after_backup(out: &mut dyn Write, a: &AfterBackup) -> io::Result<()> {
    for p in &a.pushed {
        writeln!(
            out,
            "  offsite {}: {} ({}, {:.1} s)",
            p.target,
            p.key,
            super::bytes(p.bytes),
            p.seconds
        )?;
    }
    for r in &a.deleted {
        writeln!(
            out,
            "  offsite {}: {} deleted ({})",
            r.target,
            r.key,
            r.reasons.join(", ")
        )?;
    }
    Ok(())
}

/// Remote retention's verdicts, one line per copy.
pub fn pruned(out: &mut dyn Write, rows: &[offsite::PruneRow], dry_run: bool) -> io::Result<()> {
    for r in rows {
        let what = match (r.keep, r.deleted) {
            (true, _) => "KEEP",
            (false, true) => "DELETED",
            (false, false) if r.left => "LEFT",
            (false, false) if dry_run => "DELETE",
            (false, false) => "LEFT",
        };
        writeln!(
            out,
            "{:<8} {:<10} {:<16} {:<36} {}",
            what,
            r.target,
            offsite::shown(&r.host),
            r.backup_id,
            r.reasons.join(", ")
        )?;
    }
    Ok(())
}

/// The policy in one line, as written in the config.
fn policy_line(r: &PruneReport) -> String {
    let p = &r.policy;
    let mut parts = Vec::new();
    for (name, v) in p.counts() {
        if let Some(n) = v {
            parts.push(format!(
                "{name} {}",
                if n == -1 { "all".into() } else { n.to_string() }
            ));
        }
    }
    if let Some(w) = p.within {
        parts.push(format!("within {}", humantime::format_duration(w)));
    }
    if parts.is_empty() {
        "none (everything is kept)".into()
    } else {
        parts.join(", ")
    }
}

/// Prints one set's table.
fn prune_table(out: &mut dyn Write, r: &PruneReport, tz: &jiff::tz::TimeZone) -> io::Result<()> {
    writeln!(
        out,
        "{}: policy {}{}",
        r.set,
        policy_line(r),
        if r.dry_run { " (dry run)" } else { "" }
    )?;
    if r.rows.is_empty() {
        writeln!(out, "  no backups")?;
        return Ok(());
    }
    writeln!(
        out,
        "  {:<34} {:<22} {:<10} {:<8} REASONS",
        "ID", "CREATED", "STATUS", "ACTION"
    )?;
    for row in &r.rows {
        let created = jiff::Timestamp::from_second(row.created_at)
            .map(|t| {
                t.to_zoned(tz.clone())
                    .strftime("%Y-%m-%d %H:%M %Z")
                    .to_string()
            })
            .unwrap_or_default();
        let action = match row.action {
            Action::Keep => "KEEP",
            Action::Remove => "REMOVE",
            Action::Removed => "REMOVED",
            Action::Missing => "MISSING",
            Action::Refused => "REFUSED",
        };
        writeln!(
            out,
            "  {:<34} {:<22} {:<10} {:<8} {}",
            row.id,
            created,
            serde_json::to_value(row.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            action,
            row.reasons.join(", ")
        )?;
    }
    if r.removed > 0 || r.dry_run {
        let n = r
            .rows
            .iter()
            .filter(|x| matches!(x.action, Action::Remove | Action::Removed))
            .count();
        let bytes: u64 = r
            .rows
            .iter()
            .filter(|x| matches!(x.action, Action::Remove | Action::Removed))
            .map(|x| x.bytes)
            .sum();
        writeln!(
            out,
            "  {} {n} backups, {}",
            if r.dry_run { "would remove" } else { "removed" },
            super::bytes(bytes)
        )?;
    }
    Ok(())
}
#[derive(Serialize)]
struct CheckRow<'a> {
    name: &'a str,
    state: Severity,
    value: &'a str,
    threshold: &'a str,
    since: i64,
}

#[derive(Serialize)]
struct CheckJson<'a> {
    status: Severity,
    checks: Vec<CheckRow<'a>>,
    events: &'a [Event],
    mail: Option<&'a crate::alerts::Delivery>,
}

fn check(out: &mut dyn Write, r: &CheckReport, json: bool) -> io::Result<()> {
    let (states, events, mail, worst) = (&r.states, &r.events, &r.mail, r.worst);
    if json {
        let checks = states.iter().map(row).collect();
        super::json(
            out,
            &CheckJson {
                status: worst,
                checks,
                events,
                mail: mail.as_ref(),
            },
        )?;
    } else {
        writeln!(
            out,
            "{:<34} {:<9} {:<30} {:<34} SINCE",
            "CHECK", "STATE", "VALUE", "THRESHOLD"
        )?;
        for s in states {
            writeln!(
                out,
                "{:<34} {:<9} {:<30} {:<34} {}",
                s.name,
                s.state.word(),
                s.value,
                s.threshold,
                super::time(s.since)
            )?;
        }
        for e in events {
            writeln!(out, "alert: {:?} {} -> {}", e.kind, e.name, e.to.word())?;
        }
        if let Some(m) = mail
            && m.sent > 0
        {
            writeln!(
                out,
                "alert mail sent ({} message{})",
                m.sent,
                if m.sent == 1 { "" } else { "s" }
            )?;
        }
    }
    Ok(())
}

fn row(s: &State) -> CheckRow<'_> {
    CheckRow {
        name: &s.name,
        state: s.state,
        value: &s.value,
        threshold: &s.threshold,
        since: s.since,
    }
}

fn maintain(out: &mut dyn Write, r: &MaintainReport, json: bool) -> io::Result<()> {
    let (results, dry_run, name) = (&r.results, r.dry_run, r.period.name());
    if json {
        let shown: Vec<serde_json::Value> = results
            .iter()
            .map(|r| match r {
                Ok(t) => serde_json::to_value(t).unwrap_or_default(),
                Err(e) => serde_json::json!({ "task": e.task, "error": e.message }),
            })
            .collect();
        super::json(
            out,
            &serde_json::json!({ "period": name, "dry_run": dry_run, "tasks": shown }),
        )?;
    } else {
        if r.no_tasks {
            writeln!(out, "no {name} maintenance tasks configured")?;
        }
        // The built-in rollback task says nothing when there is nothing to say.
        let quiet = |t: &crate::maintain::TaskReport| {
            t.task == "restore rollback copies" && t.done.is_empty() && t.warnings.is_empty()
        };
        for t in results {
            match t {
                Ok(t) if quiet(t) => {}
                Ok(t) => {
                    writeln!(
                        out,
                        "{}: {} compressed, {} removed, {} reclaimed",
                        t.task,
                        t.files_compressed,
                        t.files_removed,
                        super::bytes(t.bytes_reclaimed)
                    )?;
                    for d in &t.done {
                        writeln!(out, "  {d}")?;
                    }
                    for w in &t.warnings {
                        writeln!(out, "  warning: {w}")?;
                    }
                    if let Some(text) = &t.report {
                        writeln!(out, "{text}")?;
                    }
                }
                Err(e) => writeln!(out, "FAILED {e}")?,
            }
        }
    }
    Ok(())
}

fn verify(out: &mut dyn Write, r: &VerifyReport, json: bool) -> io::Result<()> {
    let outcomes = &r.outcomes;
    if json {
        super::json(out, outcomes)?;
    } else {
        for o in outcomes {
            match &o.error {
                None => writeln!(
                    out,
                    "ok      {}  {} files, {}",
                    o.id,
                    o.files,
                    super::bytes(o.bytes)
                )?,
                Some(e) => writeln!(out, "FAILED  {}  {e}", o.id)?,
            }
        }
    }
    Ok(())
}

/// What a job's report says on stderr: its failures, each a line.
pub fn errors(report: &Report) -> Vec<String> {
    match report {
        Report::Backup(BackupReport { failures, .. })
        | Report::Offsite(PushReport { failures, .. }) => {
            failures.iter().map(|e| format!("error: {e:#}")).collect()
        }
        Report::Maintain(r) if !r.dry_run => r.errors().map(|e| format!("error: {e}")).collect(),
        Report::Drill(r) if r.failed > 0 => r
            .drills
            .iter()
            .filter(|d| !d.ok)
            .map(|d| format!("drill of {} ({}) failed: {}", d.set, d.backup_id, d.detail))
            .chain(
                r.skipped
                    .iter()
                    .map(|(set, why)| format!("{set} was not drilled: {why}")),
            )
            .chain(
                r.hook_failed
                    .then(|| "the job's after hook failed".to_string()),
            )
            .collect(),
        Report::Verify(r) if r.failed > 0 => vec![format!(
            "{} of {} backups failed verification",
            r.failed,
            r.outcomes.len()
        )],
        _ => Vec::new(),
    }
}
