//! A restore as people read it: the plan before it (what is replaced, kept, stopped, held
//! open), the result after it, and the lines about the rollback copies it keeps.

use std::io::{self, Write};

use crate::catalog::{BackupRecord, BackupStatus};
use crate::config::Config;
use crate::restore::{self, Plan};

/// What the restore did; what is still down comes last.
pub fn restored(out: &mut dyn Write, cfg: &Config, r: &restore::Report) -> io::Result<()> {
    writeln!(
        out,
        "restored {}: {} files, {}; SQLite checked: {}; services stopped and started: {}",
        r.id,
        r.files,
        super::bytes(r.bytes),
        r.sqlite_checked.len(),
        list(&r.stopped)
    )?;
    for p in &r.removed_abandoned {
        writeln!(
            out,
            "  removed the abandoned staging folder {}",
            p.display()
        )?;
    }
    for p in &r.rollbacks {
        writeln!(out, "{}", kept_line(cfg, p))?;
    }
    if r.carried.entries > 0 {
        writeln!(
            out,
            "  kept {} the set excludes ({})",
            entries(r.carried.entries),
            super::bytes(r.carried.bytes)
        )?;
    }
    if r.carried.backup_has > 0 {
        writeln!(
            out,
            "  restored from the backup: {} the set excludes now but the backup holds",
            entries(r.carried.backup_has)
        )?;
    }
    if !r.open_ignored.is_empty() {
        writeln!(
            out,
            "  open during the swap (--ignore-open-files): {}; their later writes are in the \
             copy kept aside",
            restore::holders::describe(&r.open_ignored)
        )?;
    }
    if !r.also_started.is_empty() {
        writeln!(
            out,
            "  also started (they were not running before): {}",
            r.also_started.join(", ")
        )?;
    }
    // Last, so it is what a tired eye reads: what is still down, and how to bring it up.
    if !r.left_stopped.is_empty() {
        let names: Vec<&str> = r.left_stopped.iter().map(|(n, _)| n.as_str()).collect();
        writeln!(
            out,
            "still down (not running before the restore, left so): {}",
            names.join(", ")
        )?;
        for (n, how) in &r.left_stopped {
            writeln!(out, "  start {n}: {how}")?;
        }
    }
    Ok(())
}

pub fn status(s: BackupStatus) -> &'static str {
    match s {
        BackupStatus::Verified => "verified",
        BackupStatus::Unverified => "unverified",
        BackupStatus::Failed => "FAILED",
    }
}

pub fn plan(out: &mut dyn Write, plan: &Plan, record: &BackupRecord) -> io::Result<()> {
    writeln!(
        out,
        "Restore {} (set {}, {}, {} files, {}, {})",
        plan.id,
        plan.set,
        super::time(plan.created_at),
        plan.files,
        super::bytes(plan.bytes),
        status(record.status)
    )?;
    if record.is_suspect() {
        writeln!(out, "  SUSPECT: {}", record.suspect.join("; "))?;
    }
    for t in &plan.targets {
        if plan.in_place && t.exists && !plan.paths.is_empty() {
            writeln!(
                out,
                "  replace what matches under {}  (current entries kept under {})",
                t.live.display(),
                t.rollback_path().display()
            )?;
        } else if plan.in_place && t.exists {
            writeln!(
                out,
                "  replace {}  (current data kept at {})",
                t.live.display(),
                t.rollback_path().display()
            )?;
        } else {
            writeln!(out, "  create  {}", t.live.display())?;
        }
    }
    if !plan.paths.is_empty() {
        writeln!(out, "  only paths matching: {}", plan.paths.join(", "))?;
    }
    if plan.excluded.entries > 0 && plan.carry_rules.is_empty() {
        writeln!(
            out,
            "  move aside too: {} ({}) the set excludes (never backed up), with \
             --replace-excluded",
            entries(plan.excluded.entries),
            super::bytes(plan.excluded.bytes),
        )?;
    } else if plan.excluded.entries > 0 {
        writeln!(
            out,
            "  keep {} ({}) the set excludes (never backed up): carried over unchanged{} \
             (--replace-excluded moves them aside instead)",
            entries(plan.excluded.entries),
            super::bytes(plan.excluded.bytes),
            if plan.paths.is_empty() {
                ", unless the backup holds one by the same name"
            } else {
                ", where a replaced folder holds them"
            }
        )?;
    }
    if plan.stop.is_empty() {
        writeln!(out, "  services: none stopped")?;
    } else {
        writeln!(
            out,
            "  services stopped first, started after: {}",
            plan.stop.join(", ")
        )?;
    }
    Ok(())
}

/// Who holds the data open now: the swap is refused while anyone but the set's own
/// services (stopped first) still does.
pub fn holders(out: &mut dyn Write, plan: &Plan) -> io::Result<()> {
    if !plan.in_place {
        return Ok(());
    }
    match restore::open_now(plan) {
        Ok(h) if h.is_empty() => {}
        Ok(h) => {
            writeln!(
                out,
                "  open now (the swap is refused while files stay open after the services \
                 are stopped, unless --ignore-open-files):"
            )?;
            for (x, hold) in &h {
                let what = match hold {
                    restore::Hold::FolderOnly => " (working folder only: not refused)",
                    restore::Hold::Carried => {
                        " (excluded, carried over: its writes stay live, not refused)"
                    }
                    restore::Hold::Refused => "",
                };
                writeln!(
                    out,
                    "    PID {} {} {}{what}",
                    x.pid,
                    x.command,
                    x.file.display()
                )?;
            }
        }
        Err(e) => writeln!(out, "  open files: {e}")?,
    }
    Ok(())
}

/// Where the replaced data went, and for how long.
pub fn kept_line(cfg: &Config, p: &std::path::Path) -> String {
    let how_long = if cfg.restore.keep_rollbacks.is_zero() {
        "until the next daily maintenance removes it".to_string()
    } else {
        format!(
            "for {} (then daily maintenance removes it)",
            show_days(cfg.restore.keep_rollbacks)
        )
    };
    format!(
        "  previous data kept at {} {how_long}; `steward restore --cleanup` lists and \
         removes it sooner",
        p.display(),
    )
}

/// A keep time as people say it: `7 days`, `1 day 12h`, `36m`.
fn show_days(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let (days, rest) = (s / 86_400, s % 86_400);
    let rest = humantime::format_duration(std::time::Duration::from_secs(rest)).to_string();
    match days {
        0 => rest,
        1 if rest == "0s" => "1 day".into(),
        n if rest == "0s" => format!("{n} days"),
        1 => format!("1 day {rest}"),
        n => format!("{n} days {rest}"),
    }
}

/// `1 live entry`, `3 live entries`.
fn entries(n: u64) -> String {
    if n == 1 {
        "1 live entry".into()
    } else {
        format!("{n} live entries")
    }
}

/// A copy's age and state, as a line under the list.
pub fn kept(k: &restore::rollbacks::Kept) -> String {
    let now = crate::clock::now();
    let days = |s: i64| format!("{:.1} days", s as f64 / 86_400.0);
    format!(
        "{}  {}, {} old, from the restore of {}{}",
        k.path.display(),
        super::bytes(k.bytes),
        days(now - k.made_at),
        if k.id.is_empty() { "?" } else { &k.id },
        if k.changed {
            "; CHANGED after the swap (something wrote into it: look before removing)"
        } else if k.expires_at > now {
            ""
        } else {
            "; past its keep time"
        }
    )
}

/// Names, or `none`.
pub fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
