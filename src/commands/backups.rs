//! `steward backups list`, `reindex`, `accept`, `pin` and `unpin`.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::BackupsCommand;
use crate::config::Config;

pub fn run(cfg: &Config, cmd: BackupsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BackupsCommand::List { set, json } => {
            let catalog = super::open_catalog(cfg)?;
            let list = catalog.backups(set.as_deref())?;
            if json {
                super::print_json(&list)?;
                return Ok(ExitCode::SUCCESS);
            }
            if list.is_empty() {
                println!("no backups");
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<36} {:<14} {:<21} {:>10} {:>10} {:>8}  STATUS",
                "ID", "SET", "CREATED", "SIZE", "DATA", "FILES"
            );
            for b in &list {
                println!(
                    "{:<36} {:<14} {:<21} {:>10} {:>10} {:>8}  {}{}",
                    b.id,
                    b.set,
                    crate::render::time(b.created_at),
                    crate::render::bytes(b.archive_bytes),
                    crate::render::bytes(b.source_bytes),
                    b.files,
                    status_word(b)?,
                    b.base
                        .as_ref()
                        .map(|base| format!(", differential on {base}"))
                        .unwrap_or_default(),
                );
            }
            for b in list.iter().filter(|b| b.is_suspect()) {
                println!("{} is SUSPECT: {}", b.id, b.suspect.join("; "));
            }
            Ok(ExitCode::SUCCESS)
        }
        BackupsCommand::Accept { id } => mark(cfg, &id, |b| b.accepted = true, "accepted"),
        BackupsCommand::Pin { id } => mark(cfg, &id, |b| b.pinned = true, "pinned"),
        BackupsCommand::Unpin { id } => mark(cfg, &id, |b| b.pinned = false, "unpinned"),
        BackupsCommand::Reindex {
            offsite: true,
            json,
        } => reindex_offsite(cfg, json),
        BackupsCommand::Reindex { json, .. } => {
            let _lock = crate::lock::acquire(&cfg.state_dir, crate::schedule::Job::Backup.lock())?;
            let mut catalog = super::open_catalog(cfg)?;
            let progress = super::progress::for_stderr();
            let report = crate::backup::reindex(
                crate::backup::Dest::of(cfg),
                &mut catalog,
                progress.as_ref(),
            )
            .with_context(|| format!("reindexing {}", cfg.backup.destination.display()))?;
            if json {
                super::print_json(&report)?;
            } else {
                println!(
                    "{} archives found, {} verified, {} added, {} dropped from the catalog",
                    report.archives,
                    report.verified,
                    report.added.len(),
                    report.dropped.len()
                );
                for p in &report.problems {
                    println!("problem: {p}");
                }
            }
            Ok(if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(crate::error::FAILED)
            })
        }
    }
}

/// The STATUS column: verification state, then SUSPECT / accepted and pinned.
fn status_word(b: &crate::catalog::BackupRecord) -> anyhow::Result<String> {
    let mut w = serde_json::to_value(b.status)?
        .as_str()
        .unwrap_or("?")
        .to_string();
    if b.is_suspect() {
        w.push_str(" SUSPECT");
    } else if !b.suspect.is_empty() {
        w.push_str(" accepted");
    }
    if b.pinned {
        w.push_str(" pinned");
    }
    Ok(w)
}

/// Applies a human's decision to backup `id`: the catalog, then the marker beside the
/// archive (so `reindex` on a rebuilt host keeps it).
fn mark(
    cfg: &Config,
    id: &str,
    change: impl FnOnce(&mut crate::catalog::BackupRecord),
    done: &str,
) -> anyhow::Result<ExitCode> {
    let _lock = crate::lock::acquire(&cfg.state_dir, crate::schedule::Job::Backup.lock())?;
    let catalog = super::open_catalog(cfg)?;
    let mut b = catalog
        .backup(id)?
        .with_context(|| format!("no backup {id:?} in the catalog (see `steward backups list`)"))?;
    change(&mut b);
    crate::backup::marks::write(&b.path, &b.id, &b.sha256, b.accepted, b.pinned).with_context(
        || {
            format!(
                "writing {}",
                crate::backup::marks::marks_path(&b.path).display()
            )
        },
    )?;
    catalog.set_marks(&b.id, b.accepted, b.pinned)?;
    println!("{} {done}", b.id);
    if done == "accepted" && b.suspect.is_empty() {
        println!("  (it was not suspect)");
    }
    Ok(ExitCode::SUCCESS)
}

/// `steward backups reindex --offsite`.
fn reindex_offsite(cfg: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let done = crate::jobs::offsite::reindex(cfg)?;
    let host = crate::fsutil::hostname();
    let refused: usize = done.iter().map(|r| r.problems.len()).sum();
    if json {
        let rows: Vec<serde_json::Value> = done
            .iter()
            .map(|r| {
                serde_json::json!({"target": r.target, "copies": r.found, "dropped": r.dropped,
                "not-believed": r.problems})
            })
            .collect();
        super::print_json(&rows)?;
    } else {
        for r in &done {
            println!(
                "offsite {}: {} copies of {host} found, {} dropped from the catalog",
                r.target, r.found, r.dropped
            );
            for p in &r.problems {
                println!(
                    "  not believed, not imported: {}",
                    crate::offsite::shown(&p.to_string())
                );
            }
        }
    }
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
