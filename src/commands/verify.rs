//! `steward verify [ID | --latest | --all]`.

use anyhow::{Context, bail};

use crate::catalog::BackupRecord;
use crate::cli::VerifyArgs;
use crate::config::Config;
use crate::job::Job;
use crate::jobs::{Done, Session};

pub fn run(cfg: &Config, args: VerifyArgs) -> anyhow::Result<Done> {
    if args.offsite {
        return super::offsite::verify(
            cfg,
            args.target.as_deref(),
            args.identity.as_deref(),
            args.json,
        );
    }
    let mut session = Session::begin(cfg, Job::Verify, false, &super::warn)?;
    let all = session.catalog.backups(args.set.as_deref())?;
    let chosen: Vec<BackupRecord> = if let Some(id) = &args.id {
        match all.into_iter().find(|b| &b.id == id) {
            Some(b) => vec![b],
            None => bail!("no backup {id:?} in the catalog (see `steward backups list`)"),
        }
    } else if args.all {
        all
    } else {
        // --latest, and the default: the newest backup of each set.
        let mut seen = std::collections::HashSet::new();
        all.into_iter()
            .filter(|b| seen.insert(b.set.clone()))
            .collect()
    };
    if chosen.is_empty() {
        bail!("no backups to verify");
    }
    let progress = super::progress::for_stderr();
    let mut outcomes = Vec::new();
    for b in &chosen {
        let o = crate::backup::verify_backup(&session.catalog, b, progress.as_ref())
            .with_context(|| format!("verifying {}", b.id))?;
        outcomes.push(o);
    }
    drop(progress);
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    let detail: Vec<String> = outcomes.iter().filter_map(|o| o.error.clone()).collect();
    session.alert(&Job::Verify, failed == 0, &detail.join("; "));
    let failed = if session.end(failed == 0) {
        failed
    } else {
        failed.max(1)
    };
    if args.json {
        super::print_json(&outcomes)?;
    } else {
        for o in &outcomes {
            match &o.error {
                None => println!(
                    "ok      {}  {} files, {}",
                    o.id,
                    o.files,
                    super::show_bytes(o.bytes)
                ),
                Some(e) => println!("FAILED  {}  {e}", o.id),
            }
        }
    }
    if failed > 0 {
        eprintln!(
            "steward: {failed} of {} backups failed verification",
            outcomes.len()
        );
        return Ok(Done::FAILED);
    }
    Ok(Done::OK)
}
