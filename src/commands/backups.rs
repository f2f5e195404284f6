//! `steward backups list` and `steward backups reindex`.

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
            for b in list {
                println!(
                    "{:<36} {:<14} {:<21} {:>10} {:>10} {:>8}  {}",
                    b.id,
                    b.set,
                    super::show_time(b.created_at),
                    super::show_bytes(b.archive_bytes),
                    super::show_bytes(b.source_bytes),
                    b.files,
                    serde_json::to_value(b.status)?.as_str().unwrap_or("?"),
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        BackupsCommand::Reindex { json } => {
            let _lock = crate::lock::acquire(&cfg.state_dir, "backup")?;
            let mut catalog = super::open_catalog(cfg)?;
            let progress = super::progress::for_stderr();
            let report = crate::backup::reindex(cfg, &mut catalog, progress.as_ref())
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
