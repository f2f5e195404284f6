//! `steward restore`: choose (picker on a terminal), show the plan, confirm (typing the set
//! name for an in-place restore), restore; `--resume` and `--cleanup`.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};

use crate::catalog::{BackupRecord, Catalog};
use crate::cli::RestoreArgs;
use crate::config::Config;
use crate::jobs;
use crate::render::restore as render;
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
    let ui = super::ui();
    if let Some(name) = &args.guard {
        return guard(cfg, name, args.json);
    }
    let mut job = jobs::restore::begin(cfg, ui)?;
    if args.cleanup {
        return cleanup(cfg, &args);
    }
    if args.resume {
        match job.resume(cfg)? {
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
                    render::list(&r.started)
                );
                for p in r.rollbacks {
                    println!("{}", render::kept_line(cfg, &p));
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }

    if args.from_offsite
        && let Some(id) = &args.id
    {
        let from = jobs::offsite::Source {
            target: args.target.as_deref(),
            identity: args.identity.as_deref(),
            host: args.host.as_deref(),
        };
        if let Some((r, target)) = job.fetch_missing(cfg, id, &from, ui)? {
            eprintln!(
                "steward: fetched {} from offsite {target} and verified it",
                r.id
            );
        }
    }
    let record = choose(cfg, job.catalog(), &args)?;
    let opts = RestoreOptions {
        to: args.to.clone(),
        paths: args.paths.clone(),
        no_quiesce: args.no_quiesce,
        allow_external_symlinks: args.allow_external_symlinks,
        start_stopped: args.start_stopped,
        ignore_open_files: args.ignore_open_files,
        replace_excluded: args.replace_excluded,
    };
    let base = match &record.base {
        Some(b) => job.catalog().backup(b)?,
        None => None,
    };
    let plan = restore::plan(cfg, &record, base.as_ref(), &opts)
        .with_context(|| format!("planning the restore of {}", record.id))?;
    // Services the set names that are down already: they stay down unless asked.
    let down_now = if plan.stop.is_empty() {
        Vec::new()
    } else {
        crate::services::not_running_now(&cfg.services, &plan.stop, &SystemRunner)
            .context("asking the services whether they run")?
    };
    if args.json && args.dry_run {
        super::print_json(&plan)?;
    } else {
        let mut out = std::io::stdout().lock();
        render::plan(&mut out, &plan, &record)?;
        render::holders(&mut out, &plan)?;
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
    let r = job.restore(cfg, &record, &plan, &opts, &interrupted, ui)?;
    if args.json {
        super::print_json(&r)?;
    } else {
        crate::render::restore::restored(&mut std::io::stdout().lock(), cfg, &r)?;
    }
    Ok(ExitCode::SUCCESS)
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
            println!("rollback copy {}", render::kept(k));
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
                crate::render::bytes(total)
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
            crate::render::bytes(total)
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
    let g = jobs::restore::guard(cfg, name)?;
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
        let (passed, chosen) = jobs::restore::newest_good(&all)?;
        let said: Vec<String> = passed.iter().map(|b| b.id.clone()).collect();
        for b in passed {
            eprintln!(
                "steward: not {}: SUSPECT ({}); restore it by its ID with --suspect-ok if you \
                 are sure",
                b.id,
                b.suspect.join("; ")
            );
        }
        // Newer backups passed over for another reason are named too: a restore at 3 a.m.
        // must not silently go back further than the operator thinks.
        if let Ok(c) = &chosen {
            for b in all.iter().take_while(|b| b.id != c.id) {
                let why = match (b.status, &b.base) {
                    _ if said.contains(&b.id) => continue,
                    (crate::catalog::BackupStatus::Failed, _) => format!(
                        "it failed verification{}",
                        b.note
                            .as_deref()
                            .map(|n| format!(": {n}"))
                            .unwrap_or_default()
                    ),
                    (crate::catalog::BackupStatus::Unverified, _) => "not verified".into(),
                    (_, Some(base)) => {
                        format!("a differential whose base {base} is missing or failed")
                    }
                    _ => continue,
                };
                eprintln!("steward: not {}: {why}", b.id);
            }
        }
        return chosen;
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
            crate::render::time(b.created_at),
            crate::render::bytes(b.archive_bytes),
            if b.is_suspect() {
                "SUSPECT"
            } else {
                render::status(b.status)
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
