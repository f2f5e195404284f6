//! `steward offsite push|prune|list|fetch|key`, `steward verify --offsite` and
//! `steward backups reindex --offsite`: arguments to `jobs::offsite`, results printed.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::OffsiteCommand;
use crate::config::Config;
use crate::jobs::offsite::{self as job, PushJob};
use crate::jobs::{Done, Report};
use crate::offsite;

pub fn run(cfg: &Config, cmd: OffsiteCommand) -> anyhow::Result<ExitCode> {
    let ui = super::ui();
    match cmd {
        OffsiteCommand::Push {
            target,
            set,
            all,
            json,
        } => {
            let r = job::push(cfg, &PushJob { target, set, all }, ui)?;
            Ok(super::exit(super::show::report(
                cfg,
                &Report::Offsite(r),
                json,
            )?))
        }
        OffsiteCommand::Prune {
            target,
            host,
            all_hosts,
            dry_run,
            json,
        } => {
            let own = crate::fsutil::hostname();
            let hosts = if all_hosts {
                None
            } else {
                Some(host.unwrap_or(own))
            };
            let rows = job::prune_job(cfg, target.as_deref(), dry_run, hosts.as_deref(), ui)?;
            if json {
                super::print_json(&rows)?;
            } else {
                crate::render::jobs::pruned(&mut std::io::stdout().lock(), &rows, dry_run)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        OffsiteCommand::List {
            target,
            all_hosts,
            json,
        } => list(cfg, target.as_deref(), all_hosts, json),
        OffsiteCommand::Fetch {
            id,
            target,
            identity,
            host,
        } => {
            let from = job::Source {
                target: target.as_deref(),
                identity: identity.as_deref(),
                host: host.as_deref(),
            };
            let (record, target) = job::fetch(cfg, &id, &from, ui)?;
            println!(
                "fetched {id} from offsite {target} into {}: verified, {} files; `steward restore {id}` restores it",
                record.path.display(),
                record.files
            );
            Ok(ExitCode::SUCCESS)
        }
        OffsiteCommand::Key { json } => key(cfg, json),
    }
}

/// `steward offsite key`: the recovery kit's signing key.
fn key(cfg: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let signer = offsite::Signer::load_or_create(&cfg.state_dir)
        .context("making this host's signing key")?;
    let host = crate::fsutil::hostname();
    if json {
        super::print_json(&serde_json::json!({
            "host": host, "id": signer.id(), "public-key": signer.public(),
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("signing key of {host} (ID {}):", signer.id());
    println!("  {}", signer.public());
    println!();
    println!("Keep this line in the recovery kit, and in the config you would restore with:");
    println!("  signing-keys = [\"{}\"]", signer.public());
    println!("Check a copy's description with plain tools:");
    println!(
        "  minisign -V -m COPY.json -x COPY.json.minisig -P {}",
        signer.public()
    );
    Ok(ExitCode::SUCCESS)
}

fn list(
    cfg: &Config,
    target: Option<&str>,
    all_hosts: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let job::Listing {
        copies: rows,
        problems,
    } = job::list(cfg, target, all_hosts)?;
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(t, c)| serde_json::json!({ "target": t, "copy": c }))
            .collect();
        let p: Vec<serde_json::Value> = problems
            .iter()
            .map(|(t, p)| serde_json::json!({ "target": t, "key": p.key, "problem": p.message }))
            .collect();
        super::print_json(&serde_json::json!({"copies": v, "not-believed": p}))?;
        return Ok(ExitCode::SUCCESS);
    }
    for (t, p) in &problems {
        super::warn(&format!(
            "offsite {t}: not believed, not listed: {}",
            offsite::shown(&p.to_string())
        ));
    }
    if rows.is_empty() {
        println!("no offsite copies");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<10} {:<36} {:<16} {:<14} {:<21} {:>10}  ENCRYPTED",
        "TARGET", "ID", "HOST", "SET", "CREATED", "SIZE"
    );
    for (t, c) in &rows {
        println!(
            "{:<10} {:<36} {:<16} {:<14} {:<21} {:>10}  {}",
            t,
            offsite::shown(&c.backup_id),
            offsite::shown(&c.host),
            offsite::shown(&c.set),
            crate::render::time(c.created_at),
            crate::render::bytes(c.bytes),
            if c.encrypted { "yes" } else { "no" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `steward verify --offsite`.
pub fn verify(
    cfg: &Config,
    target: Option<&str>,
    identity: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<Done> {
    let r = job::verify(cfg, target, identity, super::ui())?;
    if json {
        super::print_json(&r.findings)?;
    } else {
        for f in &r.findings {
            let what = match &f.id {
                Some(id) => format!("{id}  {}", f.key),
                None => f.key.clone(),
            };
            if f.ok {
                println!("ok      {what}");
            } else {
                println!("FAILED  {what}  {}", f.error);
            }
        }
    }
    if r.failed.is_empty() {
        Ok(Done::OK)
    } else {
        eprintln!(
            "steward: {} problems with the offsite copies",
            r.failed.len()
        );
        Ok(Done::FAILED)
    }
}
