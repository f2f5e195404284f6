//! `steward backup [SET...]`: back up each set under the backup lock, record each run,
//! print a summary per set; exit 2 when any set failed.

use anyhow::{Context, bail};

use crate::backup::{BackupOptions, SetOutcome};
use crate::catalog::RunStatus;
use crate::cli::BackupArgs;
use crate::config::Config;
use crate::hooks::When;
use crate::job::Job;
use crate::jobs::{Done, Outcome, Session};

pub fn run(cfg: &Config, args: BackupArgs) -> anyhow::Result<Done> {
    for name in &args.sets {
        if cfg.set(name).is_none() {
            let known: Vec<_> = cfg.backup.sets.iter().map(|s| s.name.as_str()).collect();
            bail!(
                "no backup set {name:?} in {} (configured: {})",
                cfg.origin,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
    }
    let sets: Vec<_> = cfg
        .backup
        .sets
        .iter()
        .filter(|s| args.sets.is_empty() || args.sets.contains(&s.name))
        .collect();
    let job = match args.sets.as_slice() {
        [one] => Job::BackupSet(one.clone()),
        _ => Job::Backup,
    };
    // Before the job's hooks: SIGTERM and Ctrl-C stop the work and run `on-failure`.
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, crate::backup::stop_flag().clone())?;
    }
    // Nothing to back up: the state is set up, but nothing pings or is recorded.
    let mut session = Session::begin(cfg, job, sets.is_empty(), &super::warn)?;
    if sets.is_empty() {
        if args.json {
            super::print_json(&Vec::<SetOutcome>::new())?;
        } else {
            println!(
                "no backup sets configured in {}; add a [[backup.set]] to back something up",
                cfg.origin
            );
        }
        return Ok(Done::OK);
    }
    let progress = super::progress::for_stderr();
    let options = BackupOptions { force: args.force };
    let tz = jiff::tz::TimeZone::system();
    let mut results = Vec::new();
    let mut prunes = Vec::new();
    let mut failures = Vec::new();
    for set in sets {
        let unit = Job::BackupSet(set.name.clone());
        let run = session.start(unit.clone(), None)?;
        let mut hook_lines = Vec::new();
        let ctx = |archive, status| crate::hooks::Context {
            job: &unit,
            set: Some(&set.name),
            archive,
            status,
        };
        // A path that cannot be read fails this set alone; the others run.
        let missing = cfg.missing_set_paths(set);
        let before = if missing.is_empty() {
            crate::hooks::run_if(&set.hooks, When::Before, &ctx(None, "running"))
        } else {
            None
        };
        let outcome = match before {
            _ if !missing.is_empty() => Err(anyhow::anyhow!("{}", missing.join("; ")))
                .with_context(|| format!("backup of set {:?} not started", set.name)),
            Some(Err(e)) => {
                hook_lines.push(e.to_string());
                Err(anyhow::Error::new(e))
                    .with_context(|| format!("backup of set {:?} not started", set.name))
            }
            before => {
                hook_lines.extend(before.and_then(Result::ok));
                crate::backup::backup_quiesced(
                    cfg,
                    &session.catalog,
                    set,
                    options,
                    &crate::services::SystemRunner,
                    progress.as_ref(),
                )
                .with_context(|| format!("backup of set {:?} failed", set.name))
            }
        };
        // `after` on success (with the new archive), `on-failure` otherwise; a failing
        // `after` fails the run but keeps the archive.
        let (when, archive, status) = match &outcome {
            Ok(SetOutcome::Created(s)) => (When::After, Some(s.path.as_path()), "ok"),
            Ok(SetOutcome::Unchanged { .. }) => (When::After, None, "ok"),
            Err(_) => (When::OnFailure, None, "failed"),
        };
        let outcome = match crate::hooks::run_if(&set.hooks, when, &ctx(archive, status)) {
            Some(Ok(line)) => {
                hook_lines.push(line);
                outcome
            }
            Some(Err(e)) => {
                hook_lines.push(e.to_string());
                match outcome {
                    Ok(o) => {
                        failures.push(anyhow::Error::new(e).context(format!("set {:?}", set.name)));
                        Ok(o)
                    }
                    Err(err) => Err(err),
                }
            }
            None => outcome,
        };
        match outcome {
            Ok(o) => {
                let (status, summary) = match &o {
                    SetOutcome::Created(s) if !s.suspect.is_empty() => (
                        RunStatus::Warning,
                        format!(
                            "{} written but SUSPECT, the last good backup is kept: {}",
                            s.id,
                            s.suspect.join("; ")
                        ),
                    ),
                    SetOutcome::Created(s) if s.warnings.is_empty() => {
                        (RunStatus::Ok, format!("{} written", s.id))
                    }
                    SetOutcome::Created(s) => (
                        RunStatus::Warning,
                        format!("{} written with {} warnings", s.id, s.warnings.len()),
                    ),
                    SetOutcome::Unchanged { newest, .. } => (
                        RunStatus::Unchanged,
                        crate::catalog::unchanged_summary(newest),
                    ),
                };
                // A suspect backup alerts at once, like a failure; the next good one
                // sends the recovery. Data unchanged since a suspect backup is still
                // suspect: no recovery (and no second alert after it).
                let suspect = match &o {
                    SetOutcome::Created(s) => !s.suspect.is_empty(),
                    SetOutcome::Unchanged { newest, .. } => session
                        .catalog
                        .backups(Some(&set.name))?
                        .iter()
                        .any(|b| b.id == *newest && b.is_suspect()),
                };
                session.finish(
                    run,
                    &Outcome {
                        status,
                        summary: &summary,
                        alert_ok: !suspect,
                        detail: &summary,
                    },
                )?;
                session.record_hooks(None, &hook_lines);
                results.push(o);
                if cfg.backup.prune_after_backup && !set.keep.is_empty() {
                    match crate::backup::prune_set(cfg, &session.catalog, set, &tz, false) {
                        Ok(r) => prunes.push(r),
                        Err(e) => failures.push(
                            anyhow::Error::new(e)
                                .context(format!("pruning set {:?} after its backup", set.name)),
                        ),
                    }
                }
            }
            Err(e) => {
                let text = format!("{e:#}");
                session.finish(
                    run,
                    &Outcome {
                        status: RunStatus::Failed,
                        summary: &text,
                        alert_ok: false,
                        detail: &text,
                    },
                )?;
                session.record_hooks(None, &hook_lines);
                failures.push(e);
            }
        }
    }
    drop(progress);
    let created: Vec<String> = results
        .iter()
        .filter_map(|o| match o {
            SetOutcome::Created(s) => Some(s.id.clone()),
            SetOutcome::Unchanged { .. } => None,
        })
        .collect();
    if !args.json {
        for o in &results {
            print_outcome(o);
        }
    }
    failures.extend(super::offsite::after_backup(&mut session, cfg, &created));
    super::end(session, &mut failures);
    if args.json {
        // Each set's outcome with the prune decisions that followed it.
        let v: Vec<SetJson<'_>> = results
            .iter()
            .map(|o| SetJson {
                outcome: o,
                prune: prunes.iter().find(|p| p.set == o.set()),
            })
            .collect();
        super::print_json(&v)?;
    } else {
        for r in &prunes {
            super::prune::print_report(r, &tz);
        }
    }
    Ok(super::report(&failures))
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

fn print_outcome(o: &SetOutcome) {
    match o {
        SetOutcome::Unchanged { set, newest } => {
            println!("{set}: unchanged since {newest}, no new archive");
        }
        SetOutcome::Created(s) => {
            let ratio = if s.bytes_in > 0 {
                s.bytes_out as f64 / s.bytes_in as f64
            } else {
                0.0
            };
            println!(
                "{}: {} verified: {} files, {} dirs, {} symlinks, {} hard links; {} in, {} out (ratio {:.2}); {:.1} s; {} warnings",
                s.set,
                s.id,
                s.files,
                s.dirs,
                s.symlinks,
                s.hardlinks,
                super::show_bytes(s.bytes_in),
                super::show_bytes(s.bytes_out),
                ratio,
                s.seconds,
                s.warnings.len()
            );
            println!("  {}", s.path.display());
            for w in &s.warnings {
                println!("  warning: {w}");
            }
            if !s.suspect.is_empty() {
                println!(
                    "  SUSPECT (kept, but retention keeps the last good backup too; \
                     `steward backups accept {}` once you have looked):",
                    s.id
                );
                for r in &s.suspect {
                    println!("    {r}");
                }
            }
        }
    }
}
