//! `steward restore`: choose (picker on a terminal), show the plan, confirm (typing the set
//! name for an in-place restore), restore; `--resume` and `--cleanup`.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};

use crate::catalog::{BackupRecord, BackupStatus, Catalog, RunStatus};
use crate::cli::RestoreArgs;
use crate::config::Config;
use crate::job::Job;
use crate::jobs::{Outcome, Session};
use crate::restore::{self, Plan, RestoreOptions};
use crate::services::SystemRunner;

/// Prompts go to stderr and answers come from stdin, so both must be a terminal.
fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

fn ask(prompt: &str) -> anyhow::Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line)? == 0 {
        bail!("no answer (end of input); nothing was changed");
    }
    Ok(line.trim().to_string())
}

pub fn run(cfg: &Config, args: RestoreArgs) -> anyhow::Result<ExitCode> {
    if let Some(name) = &args.guard {
        return guard(cfg, name, args.json);
    }
    let mut session = Session::begin(cfg, Job::Restore, false, &super::warn)?;
    // No backup or prune may change the destination while a restore reads it.
    let _backup_lock = crate::lock::acquire(&cfg.state_dir, Job::Backup.lock())?;
    let runner = SystemRunner;
    if args.cleanup {
        return cleanup(cfg, &args);
    }
    if args.resume {
        let run = match restore::pending(&cfg.state_dir) {
            Ok(Some(j)) => Some(session.start(Job::Restore, Some(&j.id))?),
            _ => None,
        };
        let resumed = restore::resume(cfg, &runner).context("resuming the interrupted restore");
        // The failed restore's problem ends once its data is at rest and its services run
        // again: a finished (or undone) resume is the restore job's recovery.
        match (run, &resumed) {
            (None, _) | (_, Ok(None)) => {}
            (Some(run), Ok(Some(r))) => session.finish(
                run,
                &Outcome {
                    status: RunStatus::Ok,
                    summary: &format!("interrupted restore of {} {}", r.id, r.outcome),
                    alert_ok: true,
                    detail: "",
                },
            )?,
            (Some(run), Err(e)) => session.finish(
                run,
                &Outcome {
                    status: RunStatus::Failed,
                    summary: &format!("{e:#}"),
                    alert_ok: false,
                    detail: &format!("resuming the interrupted restore failed: {e:#}"),
                },
            )?,
        }
        match resumed? {
            None => {
                println!("no interrupted restore to resume");
                let left = restore::abandoned(cfg);
                for p in &left {
                    println!(
                        "  abandoned staging folder {} (steward restore --cleanup removes it)",
                        p.display()
                    );
                }
            }
            Some(r) if args.json => super::print_json(&r)?,
            Some(r) => {
                println!(
                    "restore of {} {}: {}; services started: {}",
                    r.id,
                    r.outcome.replace('-', " "),
                    r.why,
                    list(&r.started)
                );
                for p in r.rollbacks {
                    println!("{}", kept_line(cfg, &p));
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }

    if args.from_offsite
        && let Some(id) = &args.id
        && session.catalog.backup(id)?.is_none()
    {
        let (r, target) = super::offsite::fetch_verified(
            cfg,
            &mut session.catalog,
            id,
            args.target.as_deref(),
            args.identity.as_deref(),
            args.host.as_deref(),
        )?;
        eprintln!(
            "steward: fetched {} from offsite {target} and verified it",
            r.id
        );
    }
    let record = choose(cfg, &session.catalog, &args)?;
    let opts = RestoreOptions {
        to: args.to.clone(),
        paths: args.paths.clone(),
        no_quiesce: args.no_quiesce,
        allow_external_symlinks: args.allow_external_symlinks,
        start_stopped: args.start_stopped,
        ignore_open_files: args.ignore_open_files,
        replace_excluded: args.replace_excluded,
    };
    let plan = restore::plan(cfg, &record, &opts)
        .with_context(|| format!("planning the restore of {}", record.id))?;
    // Services the set names that are down already: they stay down unless asked.
    let down_now = if plan.stop.is_empty() {
        Vec::new()
    } else {
        crate::services::not_running_now(&cfg.services, &plan.stop, &runner)
            .context("asking the services whether they run")?
    };
    if args.json && args.dry_run {
        super::print_json(&plan)?;
    } else {
        print_plan(&plan, &record);
        print_holders(&plan);
        if !down_now.is_empty() {
            println!(
                "  not running now, and left stopped after: {}{}",
                down_now.join(", "),
                if args.start_stopped {
                    " (--start-stopped: started after)"
                } else {
                    " (--start-stopped starts them after)"
                }
            );
        }
    }
    if args.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    if record.is_suspect() {
        confirm_suspect(&record, args.suspect_ok)?;
    }
    confirm(&plan, args.yes)?;
    let mut opts = opts;
    if !down_now.is_empty() && !opts.start_stopped && !args.yes && interactive() {
        let answer = ask(&format!(
            "{} not running now; start them after the restore too? [y/N]: ",
            down_now.join(", ")
        ))?;
        opts.start_stopped = matches!(answer.as_str(), "y" | "Y" | "yes");
    }

    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, interrupted.clone())
            .context("installing signal handlers")?;
    }
    let run = session.start(Job::Restore, Some(&record.id))?;
    let progress = super::progress::for_stderr();
    let result = restore::restore(
        cfg,
        &record,
        &plan,
        &opts,
        &runner,
        progress.as_ref(),
        &interrupted,
    );
    drop(progress);
    match result {
        Ok(r) => {
            session.finish(
                run,
                &Outcome {
                    status: RunStatus::Ok,
                    summary: &format!("{} restored", r.id),
                    alert_ok: true,
                    detail: "",
                },
            )?;
            if args.json {
                super::print_json(&r)?;
            } else {
                println!(
                    "restored {}: {} files, {}; SQLite checked: {}; services stopped and started: {}",
                    r.id,
                    r.files,
                    super::show_bytes(r.bytes),
                    r.sqlite_checked.len(),
                    list(&r.stopped)
                );
                for p in &r.removed_abandoned {
                    println!("  removed the abandoned staging folder {}", p.display());
                }
                for p in &r.rollbacks {
                    println!("{}", kept_line(cfg, p));
                }
                if r.carried.entries > 0 {
                    println!(
                        "  kept {} the set excludes ({})",
                        entries(r.carried.entries),
                        super::show_bytes(r.carried.bytes)
                    );
                }
                if r.carried.backup_has > 0 {
                    println!(
                        "  restored from the backup: {} the set excludes now but the backup \
                         holds",
                        entries(r.carried.backup_has)
                    );
                }
                if !r.open_ignored.is_empty() {
                    println!(
                        "  open during the swap (--ignore-open-files): {}; their later writes \
                         are in the copy kept aside",
                        restore::holders::describe(&r.open_ignored)
                    );
                }
                if !r.also_started.is_empty() {
                    println!(
                        "  also started (they were not running before): {}",
                        r.also_started.join(", ")
                    );
                }
                // Last, so it is what a tired eye reads: what is still down, and how to
                // bring it up.
                if !r.left_stopped.is_empty() {
                    let names: Vec<&str> = r.left_stopped.iter().map(|(n, _)| n.as_str()).collect();
                    println!(
                        "still down (not running before the restore, left so): {}",
                        names.join(", ")
                    );
                    for (n, how) in &r.left_stopped {
                        println!("  start {n}: {how}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            session.finish(
                run,
                &Outcome {
                    status: RunStatus::Failed,
                    summary: &format!("{e:#}"),
                    alert_ok: false,
                    detail: &format!("{} failed: {}", record.id, e),
                },
            )?;
            Err(anyhow::Error::new(e).context(format!("restore of {} failed", record.id)))
        }
    }
}

/// Where the replaced data went, and for how long.
fn kept_line(cfg: &Config, p: &std::path::Path) -> String {
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
fn show_kept(k: &restore::rollbacks::Kept) -> String {
    let now = crate::clock::now();
    let days = |s: i64| format!("{:.1} days", s as f64 / 86_400.0);
    format!(
        "{}  {}, {} old, from the restore of {}{}",
        k.path.display(),
        super::show_bytes(k.bytes),
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

/// `--cleanup`: every rollback copy listed with size, age and whether it changed after
/// the swap, then removed only when confirmed (a terminal's y, or `--yes`).
fn cleanup(cfg: &Config, args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    let kept = restore::rollbacks::kept(cfg).context("listing the rollback copies")?;
    let staging = restore::abandoned(cfg);
    if kept.is_empty() && staging.is_empty() {
        if args.json {
            super::print_json(&restore::resume::Cleaned {
                rollbacks: Vec::new(),
                staging: Vec::new(),
            })?;
        } else {
            println!("no rollback copies or staging folders to remove");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !args.json {
        for k in &kept {
            println!("rollback copy {}", show_kept(k));
        }
        for p in &staging {
            println!("abandoned staging folder {}", p.display());
        }
    }
    if !kept.is_empty() && !args.yes {
        let total: u64 = kept.iter().map(|k| k.bytes).sum();
        if !interactive() {
            bail!(
                "not removing {} rollback cop{} ({}) without confirmation: no terminal; pass \
                 --yes (nothing was removed)",
                kept.len(),
                if kept.len() == 1 { "y" } else { "ies" },
                super::show_bytes(total)
            );
        }
        let changed = kept.iter().filter(|k| k.changed).count();
        let warn = if changed > 0 {
            format!(", {changed} CHANGED after the swap")
        } else {
            String::new()
        };
        let answer = ask(&format!(
            "Remove these {} rollback cop{} ({}{warn})? [y/N]: ",
            kept.len(),
            if kept.len() == 1 { "y" } else { "ies" },
            super::show_bytes(total)
        ))?;
        if !matches!(answer.as_str(), "y" | "Y" | "yes") {
            bail!("not confirmed; nothing was removed");
        }
    }
    let cleaned = restore::cleanup(cfg).context("cleaning up after restores")?;
    if args.json {
        super::print_json(&cleaned)?;
    } else {
        for r in cleaned.rollbacks.iter().chain(&cleaned.staging) {
            println!("removed {}", r.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--guard NAME`: light enough for a service's start (no catalog, no hooks, no
/// confirmation), and plain on stdout for the service manager's log.
fn guard(cfg: &Config, name: &str, json: bool) -> anyhow::Result<ExitCode> {
    // Held for the settle, so no restore begins in the middle of it; a running restore
    // holds it already.
    let (lock, running) = match crate::lock::acquire(&cfg.state_dir, Job::Restore.lock()) {
        Ok(l) => (Some(l), None),
        Err(e @ crate::lock::LockError::Held { .. }) => (None, Some(e)),
        Err(e) => return Err(e).context("taking the restore lock"),
    };
    let g = restore::guard(cfg, name, running)
        .with_context(|| format!("guarding the start of {name}"))?;
    drop(lock);
    if json {
        super::print_json(&g)?;
        return Ok(ExitCode::SUCCESS);
    }
    match g {
        restore::Guarded::NoRestore => {}
        restore::Guarded::Whole { id } => {
            println!("steward: {name} may start: the running restore of {id} has its data whole");
        }
        restore::Guarded::NotConcerned { id } => {
            println!("steward: {name} may start: the pending restore of {id} does not stop it");
        }
        restore::Guarded::Settled { id, outcome, why } => {
            println!(
                "steward: {name} may start: the interrupted restore of {id} was settled \
                 before it ({}: {why}); `steward restore --resume` starts the other services \
                 it stopped",
                outcome.replace('-', " ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// The backup to restore: the ID given, the newest verified one with --latest, or the
/// one picked on a terminal.
fn choose(cfg: &Config, catalog: &Catalog, args: &RestoreArgs) -> anyhow::Result<BackupRecord> {
    if let Some(id) = &args.id {
        return catalog.backup(id)?.with_context(|| {
            format!("no backup {id:?} in the catalog (see `steward backups list`)")
        });
    }
    if let Some(set) = &args.set
        && cfg.set(set).is_none()
        && catalog.backups(Some(set))?.is_empty()
    {
        bail!("no backup set {set:?}");
    }
    let all = catalog.backups(args.set.as_deref())?;
    if args.latest {
        let sets: std::collections::BTreeSet<&str> = all.iter().map(|b| b.set.as_str()).collect();
        if sets.len() > 1 {
            bail!("--latest needs --set: backups of {} sets exist", sets.len());
        }
        // The newest good backup: a newer suspect one is said, never taken by default.
        let verified: Vec<&BackupRecord> = all
            .iter()
            .filter(|b| b.status == BackupStatus::Verified)
            .collect();
        for b in verified.iter().take_while(|b| !b.is_good()) {
            eprintln!(
                "steward: not {}: SUSPECT ({}); restore it by its ID with --suspect-ok if you \
                 are sure",
                b.id,
                b.suspect.join("; ")
            );
        }
        return match verified.iter().find(|b| b.is_good()) {
            Some(b) => Ok((*b).clone()),
            None if !verified.is_empty() => bail!(
                "no good backup to restore: every verified backup is SUSPECT; look at them \
                 (`steward backups list`) and restore one by its ID with --suspect-ok"
            ),
            None => bail!("no verified backup to restore"),
        };
    }
    if !interactive() {
        bail!("no backup chosen: give an ID, or --latest with --set (the picker needs a terminal)");
    }
    if all.is_empty() {
        bail!("no backups to restore");
    }
    let shown: Vec<&BackupRecord> = all.iter().take(30).collect();
    eprintln!("Backups, newest first:");
    for (i, b) in shown.iter().enumerate() {
        eprintln!(
            "  {:>2}) {:<14} {}  {:>10}  {:<10} {}",
            i + 1,
            b.set,
            super::show_time(b.created_at),
            super::show_bytes(b.archive_bytes),
            if b.is_suspect() {
                "SUSPECT"
            } else {
                status(b.status)
            },
            b.id
        );
        if b.is_suspect() {
            eprintln!("        suspect: {}", b.suspect.join("; "));
        }
    }
    // Enter takes the newest good backup, never a suspect or unverified one.
    let default = shown.iter().position(|b| b.is_good()).map(|i| i + 1);
    let hint = default.map_or_else(
        || "no good backup: choose by number".to_string(),
        |d| format!("Enter = {d}"),
    );
    loop {
        let answer = ask(&format!(
            "Restore which backup? [1-{}, {hint}, q = quit]: ",
            shown.len()
        ))?;
        if answer == "q" {
            bail!("cancelled; nothing was changed");
        }
        let n: usize = if answer.is_empty() {
            default.unwrap_or(0)
        } else {
            answer.parse().unwrap_or(0)
        };
        if (1..=shown.len()).contains(&n) {
            return Ok(shown[n - 1].clone());
        }
        eprintln!("Please answer with a number from 1 to {}.", shown.len());
    }
}

fn status(s: BackupStatus) -> &'static str {
    match s {
        BackupStatus::Verified => "verified",
        BackupStatus::Unverified => "unverified",
        BackupStatus::Failed => "FAILED",
    }
}

fn print_plan(plan: &Plan, record: &BackupRecord) {
    println!(
        "Restore {} (set {}, {}, {} files, {}, {})",
        plan.id,
        plan.set,
        super::show_time(plan.created_at),
        plan.files,
        super::show_bytes(plan.bytes),
        status(record.status)
    );
    if record.is_suspect() {
        println!("  SUSPECT: {}", record.suspect.join("; "));
    }
    for t in &plan.targets {
        if plan.in_place && t.exists && !plan.paths.is_empty() {
            println!(
                "  replace what matches under {}  (current entries kept under {})",
                t.live.display(),
                t.rollback_path().display()
            );
        } else if plan.in_place && t.exists {
            println!(
                "  replace {}  (current data kept at {})",
                t.live.display(),
                t.rollback_path().display()
            );
        } else {
            println!("  create  {}", t.live.display());
        }
    }
    if !plan.paths.is_empty() {
        println!("  only paths matching: {}", plan.paths.join(", "));
    }
    if plan.excluded.entries > 0 && plan.carry_rules.is_empty() {
        println!(
            "  move aside too: {} ({}) the set excludes (never backed up), with \
             --replace-excluded",
            entries(plan.excluded.entries),
            super::show_bytes(plan.excluded.bytes),
        );
    } else if plan.excluded.entries > 0 {
        println!(
            "  keep {} ({}) the set excludes (never backed up): carried over unchanged{} \
             (--replace-excluded moves them aside instead)",
            entries(plan.excluded.entries),
            super::show_bytes(plan.excluded.bytes),
            if plan.paths.is_empty() {
                ", unless the backup holds one by the same name"
            } else {
                ", where a replaced folder holds them"
            }
        );
    }
    if plan.stop.is_empty() {
        println!("  services: none stopped");
    } else {
        println!(
            "  services stopped first, started after: {}",
            plan.stop.join(", ")
        );
    }
}

/// Who holds the data open now: the swap is refused while anyone but the set's own
/// services (stopped first) still does.
fn print_holders(plan: &Plan) {
    if !plan.in_place {
        return;
    }
    let paths: Vec<std::path::PathBuf> = plan.targets.iter().map(|t| t.live.clone()).collect();
    match restore::holders::holders(&paths) {
        Ok(h) if h.is_empty() => {}
        Ok(h) => {
            println!(
                "  open now (the swap is refused while files stay open after the services \
                 are stopped, unless --ignore-open-files):"
            );
            let carried = if plan.carry_rules.is_empty() {
                None
            } else {
                crate::patterns::Excludes::new(&plan.carry_rules).ok()
            };
            for x in &h {
                let excluded = carried
                    .as_ref()
                    .is_some_and(|ex| restore::carry::is_carried(plan, ex, &x.file));
                let what = if x.is_folder_only() {
                    " (working folder only: not refused)"
                } else if excluded {
                    " (excluded, carried over: its writes stay live, not refused)"
                } else {
                    ""
                };
                println!("    PID {} {} {}{what}", x.pid, x.command, x.file.display());
            }
        }
        Err(e) => println!("  open files: {e}"),
    }
}

/// A suspect backup is restored only on purpose: its ID typed on a terminal, or
/// `--suspect-ok` (`--yes` alone is not enough), with the reasons said either way.
fn confirm_suspect(record: &BackupRecord, suspect_ok: bool) -> anyhow::Result<()> {
    let reasons = record.suspect.join("; ");
    if suspect_ok {
        eprintln!("steward: restoring SUSPECT {} ({reasons})", record.id);
        return Ok(());
    }
    if !interactive() {
        bail!(
            "{} is SUSPECT ({reasons}); --yes alone does not restore it: add --suspect-ok \
             after looking at it, or `steward backups accept {}` (nothing was changed)",
            record.id,
            record.id
        );
    }
    eprintln!("{} is SUSPECT: {reasons}", record.id);
    let answer = ask("Type its ID to restore it anyway: ")?;
    if answer != record.id {
        bail!("not confirmed; nothing was changed");
    }
    Ok(())
}

fn confirm(plan: &Plan, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !interactive() {
        bail!(
            "refusing to restore without confirmation: no terminal; pass --yes (nothing was changed)"
        );
    }
    if plan.in_place {
        let answer = ask(&format!(
            "Type the set name ({}) to restore in place: ",
            plan.set
        ))?;
        if answer != plan.set {
            bail!("not confirmed; nothing was changed");
        }
    } else {
        let answer = ask("Restore into the new folder? [y/N]: ")?;
        if !matches!(answer.as_str(), "y" | "Y" | "yes") {
            bail!("not confirmed; nothing was changed");
        }
    }
    Ok(())
}
