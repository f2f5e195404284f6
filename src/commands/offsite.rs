//! `steward offsite push|list|fetch`, `steward verify --offsite`, and the upload that
//! follows each backup.

use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::catalog::{BackupRecord, BackupStatus, Catalog, RunStatus};
use crate::cli::OffsiteCommand;
use crate::config::{Config, OffsiteConfig};
use crate::job::Job;
use crate::jobs::{Done, Outcome, Session};
use crate::offsite::{self, Pushed, RemoteCopy, Store};

pub fn run(cfg: &Config, cmd: OffsiteCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        OffsiteCommand::Push {
            target,
            set,
            all,
            json,
        } => push(cfg, target.as_deref(), set.as_deref(), all, json).map(super::exit),
        OffsiteCommand::Prune {
            target,
            dry_run,
            json,
        } => {
            let targets = targets(cfg, target.as_deref())?;
            let session = Session::begin(cfg, Job::Offsite, true, &super::warn)?;
            let rows = prune(&session.catalog, cfg, &targets, dry_run)?;
            if json {
                super::print_json(&rows)?;
            } else {
                print_pruned(&rows, dry_run);
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
        } => fetch(
            cfg,
            &id,
            target.as_deref(),
            identity.as_deref(),
            host.as_deref(),
        ),
    }
}

/// The targets a command works on: the one named, or all.
fn targets<'c>(cfg: &'c Config, name: Option<&str>) -> anyhow::Result<Vec<&'c OffsiteConfig>> {
    if cfg.offsite.is_empty() {
        bail!(
            "no [[offsite]] target in {}; add one to copy backups offsite",
            cfg.origin
        );
    }
    match name {
        None => Ok(cfg.offsite.iter().collect()),
        Some(n) => match cfg.offsite.iter().find(|t| t.name == n) {
            Some(t) => Ok(vec![t]),
            None => bail!(
                "no offsite target {n:?} in {} (configured: {})",
                cfg.origin,
                cfg.offsite
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    }
}

/// Uploads `backups` to `t`, each recorded as a run of the offsite job (its failure
/// alerts, the next success recovers). Returns what was sent and what failed.
fn upload(
    session: &mut Session<'_>,
    t: &OffsiteConfig,
    backups: &[BackupRecord],
) -> (Vec<Pushed>, Vec<anyhow::Error>) {
    let mut done = Vec::new();
    let mut failed = Vec::new();
    if backups.is_empty() {
        return (done, failed);
    }
    let store = match Store::open(t) {
        Ok(s) => s,
        Err(e) => {
            let text = format!("{e:#}");
            session.alert(&Job::Offsite, false, &text);
            failed.push(anyhow::Error::new(e));
            return (done, failed);
        }
    };
    if let Err(e) = offsite::abort_stale(&store, &session.catalog, t) {
        super::warn(&format!("aborting unfinished uploads: {e:#}"));
    }
    let progress = super::progress::for_stderr();
    for b in backups {
        let run = match session.start(Job::Offsite, Some(&b.id)) {
            Ok(r) => r,
            Err(e) => {
                failed.push(e.into());
                continue;
            }
        };
        let result = offsite::push(t, &store, &session.catalog, b, progress.as_ref())
            .with_context(|| format!("copying {} to offsite {}", b.id, t.name));
        let (status, summary) = match &result {
            Ok(p) if p.already => (RunStatus::Unchanged, format!("{} already there", p.key)),
            Ok(p) => (RunStatus::Ok, format!("{} uploaded", p.key)),
            Err(e) => (RunStatus::Failed, format!("{e:#}")),
        };
        let recorded = session.finish(
            run,
            &Outcome {
                status,
                summary: &summary,
                alert_ok: result.is_ok(),
                detail: &summary,
            },
        );
        if let Err(e) = recorded {
            failed.push(e.into());
        }
        match result {
            Ok(p) => done.push(p),
            Err(e) => failed.push(e),
        }
    }
    (done, failed)
}

/// The verified backups of `t`'s sets without a copy there: the newest of each set, or
/// all with `all`.
fn missing(
    catalog: &Catalog,
    t: &OffsiteConfig,
    cfg: &Config,
    set: Option<&str>,
    all: bool,
) -> anyhow::Result<Vec<BackupRecord>> {
    let mut out = Vec::new();
    for s in cfg
        .backup
        .sets
        .iter()
        .filter(|s| t.covers(&s.name) && set.is_none_or(|n| n == s.name))
    {
        let verified: Vec<BackupRecord> = catalog
            .backups(Some(&s.name))?
            .into_iter()
            .filter(|b| b.status == BackupStatus::Verified)
            .collect();
        for b in verified.into_iter().take(if all { usize::MAX } else { 1 }) {
            if catalog.offsite_copy(&t.name, &b.id)?.is_none() {
                out.push(b);
            }
        }
    }
    Ok(out)
}

/// Remote retention over `targets`: the target's own policy, else each set's (sets
/// without one keep every copy).
fn prune(
    catalog: &Catalog,
    cfg: &Config,
    targets: &[&OffsiteConfig],
    dry_run: bool,
) -> anyhow::Result<Vec<offsite::PruneRow>> {
    let tz = jiff::tz::TimeZone::system();
    let mut rows = Vec::new();
    for t in targets {
        let sets: Vec<_> = cfg
            .backup
            .sets
            .iter()
            .filter(|s| t.covers(&s.name) && !t.keep.as_ref().unwrap_or(&s.keep).is_empty())
            .collect();
        if sets.is_empty() {
            continue;
        }
        let store = Store::open(t)?;
        for s in sets {
            rows.extend(
                offsite::prune(
                    t,
                    &store,
                    catalog,
                    &s.name,
                    t.keep.as_ref().unwrap_or(&s.keep),
                    &tz,
                    dry_run,
                )
                .with_context(|| format!("pruning set {:?} on offsite {}", s.name, t.name))?,
            );
        }
    }
    Ok(rows)
}

fn print_pruned(rows: &[offsite::PruneRow], dry_run: bool) {
    for r in rows {
        let what = match (r.keep, r.deleted) {
            (true, _) => "KEEP",
            (false, true) => "DELETED",
            (false, false) if dry_run => "DELETE",
            (false, false) => "LEFT",
        };
        println!(
            "{:<8} {:<10} {:<36} {}",
            what,
            r.target,
            r.backup_id,
            r.reasons.join(", ")
        );
    }
}

/// `steward offsite push` (and the `offsite` job).
pub fn push(
    cfg: &Config,
    target: Option<&str>,
    set: Option<&str>,
    all: bool,
    json: bool,
) -> anyhow::Result<Done> {
    let chosen = targets(cfg, target)?;
    if let Some(s) = set
        && cfg.set(s).is_none()
    {
        bail!("no backup set {s:?} in {}", cfg.origin);
    }
    let mut session = Session::begin(cfg, Job::Offsite, false, &super::warn)?;
    let mut pushed = Vec::new();
    let mut failures = Vec::new();
    for t in &chosen {
        let todo = missing(&session.catalog, t, cfg, set, all)?;
        let (done, failed) = upload(&mut session, t, &todo);
        pushed.extend(done);
        failures.extend(failed);
    }
    print_pushed(&pushed, json)?;
    if cfg.backup.prune_after_backup && !pushed.iter().all(|p| p.already) {
        match prune(&session.catalog, cfg, &chosen, false) {
            Ok(rows) if !json => print_pruned(&rows, false),
            Ok(_) => {}
            Err(e) => failures.push(e.context("remote retention after the upload")),
        }
    }
    super::end(session, &mut failures);
    Ok(super::report(&failures))
}

/// After a backup: copies the new backups to every target that covers their set, under
/// the offsite lock (a running `offsite push` copies them instead). Returns the failures.
pub fn after_backup(
    session: &mut Session<'_>,
    cfg: &Config,
    created: &[String],
) -> Vec<anyhow::Error> {
    if cfg.offsite.is_empty() || created.is_empty() {
        return Vec::new();
    }
    let _lock = match crate::lock::acquire(&cfg.state_dir, Job::Offsite.lock()) {
        Ok(l) => l,
        Err(e) => {
            super::warn(&format!(
                "{e}; the new backups are copied offsite by the next `steward offsite push`"
            ));
            return Vec::new();
        }
    };
    let mut failures = Vec::new();
    let mut pushed = Vec::new();
    for t in &cfg.offsite {
        let mut todo = Vec::new();
        for id in created {
            match session.catalog.backup(id) {
                Ok(Some(b)) if t.covers(&b.set) => todo.push(b),
                Ok(_) => {}
                Err(e) => failures.push(e.into()),
            }
        }
        let (done, failed) = upload(session, t, &todo);
        pushed.extend(done);
        failures.extend(failed);
    }
    for p in &pushed {
        println!(
            "  offsite {}: {} ({}, {:.1} s)",
            p.target,
            p.key,
            super::show_bytes(p.bytes),
            p.seconds
        );
    }
    if cfg.backup.prune_after_backup && !pushed.is_empty() {
        let all: Vec<&OffsiteConfig> = cfg.offsite.iter().collect();
        match prune(&session.catalog, cfg, &all, false) {
            Ok(rows) => {
                for r in rows.iter().filter(|r| r.deleted) {
                    println!(
                        "  offsite {}: {} deleted ({})",
                        r.target,
                        r.key,
                        r.reasons.join(", ")
                    );
                }
            }
            Err(e) => failures.push(e.context("remote retention after the upload")),
        }
    }
    failures
}

fn print_pushed(pushed: &[Pushed], json: bool) -> anyhow::Result<()> {
    if json {
        return super::print_json(&pushed);
    }
    if pushed.is_empty() {
        println!("nothing to upload: every covered set's newest verified backup has a copy");
    }
    for p in pushed {
        if p.already {
            println!("{}: {} already there", p.target, p.key);
        } else {
            println!(
                "{}: {} uploaded, {} in {:.1} s ({:.1} MiB/s)",
                p.target,
                p.key,
                super::show_bytes(p.bytes),
                p.seconds,
                p.bytes as f64 / 1_048_576.0 / p.seconds.max(1e-3)
            );
        }
    }
    Ok(())
}

fn list(
    cfg: &Config,
    target: Option<&str>,
    all_hosts: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let host = crate::fsutil::hostname();
    let mut rows: Vec<(String, RemoteCopy)> = Vec::new();
    for t in targets(cfg, target)? {
        let store = Store::open(t)?;
        let prefix = offsite::host_prefix(t, (!all_hosts).then_some(host.as_str()));
        for c in offsite::list(&store, &prefix)? {
            rows.push((t.name.clone(), c));
        }
    }
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(t, c)| serde_json::json!({ "target": t, "copy": c }))
            .collect();
        super::print_json(&v)?;
        return Ok(ExitCode::SUCCESS);
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
            c.backup_id,
            c.host,
            c.set,
            super::show_time(c.created_at),
            super::show_bytes(c.bytes),
            if c.encrypted { "yes" } else { "no" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn fetch(
    cfg: &Config,
    id: &str,
    target: Option<&str>,
    identity: Option<&std::path::Path>,
    host: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let _lock = crate::lock::acquire(&cfg.state_dir, Job::Backup.lock())?;
    let mut catalog = super::open_catalog(cfg)?;
    if let Some(b) = catalog.backup(id)? {
        bail!(
            "{id} is already in the catalog at {}; `steward restore {id}` restores it",
            b.path.display()
        );
    }
    let (record, target) = fetch_verified(cfg, &mut catalog, id, target, identity, host)?;
    println!(
        "fetched {id} from offsite {target} into {}: verified, {} files; `steward restore {id}` restores it",
        record.path.display(),
        record.files
    );
    Ok(ExitCode::SUCCESS)
}

/// Downloads backup `id` from an offsite target into the destination, adds it to the
/// catalog and reads it back in full; the caller holds the backup lock. Returns the
/// record and the target's name.
pub fn fetch_verified(
    cfg: &Config,
    catalog: &mut Catalog,
    id: &str,
    target: Option<&str>,
    identity: Option<&std::path::Path>,
    host: Option<&str>,
) -> anyhow::Result<(BackupRecord, String)> {
    let t = targets(cfg, target)?[0];
    let store = Store::open(t)?;
    let Some(copy) = offsite::find(&store, &offsite::host_prefix(t, host), id)? else {
        bail!(
            "no complete copy of {id} on offsite {} (see `steward offsite list --all-hosts`)",
            t.name
        );
    };
    if cfg.set(&copy.set).is_none() {
        bail!(
            "{id} is a backup of set {:?}, which {} does not configure; add the set first",
            copy.set,
            cfg.origin
        );
    }
    let progress = super::progress::for_stderr();
    let dir = cfg.backup.destination.join(&copy.set);
    let path = offsite::fetch(&store, &t.name, &copy, identity, &dir, progress.as_ref())
        .with_context(|| format!("fetching {id} from offsite {}", t.name))?;
    // The archive is in place with its sidecar: the catalog learns it as any archive on
    // the disk, then it is read back in full like any backup.
    crate::backup::reindex(cfg, catalog, progress.as_ref())
        .context("adding the fetched archive to the catalog")?;
    let record = catalog.backup(id)?.with_context(|| {
        format!(
            "{} was fetched but is not a backup of this config",
            path.display()
        )
    })?;
    let outcome = crate::backup::verify_backup(catalog, &record, progress.as_ref())
        .with_context(|| format!("verifying {id}"))?;
    if let Some(e) = outcome.error {
        bail!("{id} was fetched but does not verify: {e}");
    }
    let record = catalog.backup(id)?.unwrap_or(record);
    Ok((record, t.name.clone()))
}

/// `steward verify --offsite`: downloads each recorded copy and compares digests.
pub fn verify(
    cfg: &Config,
    target: Option<&str>,
    identity: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<Done> {
    let targets = targets(cfg, target)?;
    let mut session = Session::begin(cfg, Job::Verify, false, &super::warn)?;
    let scratch = cfg.state_dir.join("offsite-check");
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for t in targets {
        let store = Store::open(t)?;
        for c in session.catalog.offsite_copies(Some(&t.name))? {
            let checked =
                offsite::check(&store, &t.name, &c.key, &c.sha256, c.bytes).and_then(|()| {
                    match identity {
                        Some(id) => {
                            let progress = super::progress::for_stderr();
                            offsite::check_full(
                                &store,
                                &t.name,
                                &c.key,
                                id,
                                &scratch,
                                progress.as_ref(),
                            )
                        }
                        None => Ok(()),
                    }
                });
            match checked {
                Ok(()) => {
                    session.catalog.offsite_checked(&t.name, &c.backup_id)?;
                    rows.push(serde_json::json!({"target": t.name, "id": c.backup_id, "key": c.key, "ok": true}));
                }
                Err(e) => {
                    let text = format!("{e:#}");
                    rows.push(serde_json::json!({"target": t.name, "id": c.backup_id, "key": c.key, "ok": false, "error": text}));
                    failed.push(text);
                }
            }
        }
    }
    session.alert(&Job::Verify, failed.is_empty(), &failed.join("; "));
    if !session.end(failed.is_empty()) && failed.is_empty() {
        failed.push("the job's after hook failed".into());
    }
    if json {
        super::print_json(&rows)?;
    } else {
        for r in &rows {
            match r.get("error").and_then(|e| e.as_str()) {
                None => println!(
                    "ok      {}  {}",
                    r["id"].as_str().unwrap_or(""),
                    r["key"].as_str().unwrap_or("")
                ),
                Some(e) => println!("FAILED  {}  {e}", r["id"].as_str().unwrap_or("")),
            }
        }
    }
    if failed.is_empty() {
        Ok(Done::OK)
    } else {
        eprintln!("steward: {} offsite copies failed the check", failed.len());
        Ok(Done::FAILED)
    }
}

/// `steward backups reindex --offsite`.
pub fn reindex(cfg: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let chosen = targets(cfg, None)?;
    let _lock = crate::lock::acquire(&cfg.state_dir, Job::Offsite.lock())?;
    let catalog = super::open_catalog(cfg)?;
    let host = crate::fsutil::hostname();
    let mut rows = Vec::new();
    for t in chosen {
        let store = Store::open(t)?;
        let (found, dropped) = offsite::reindex(t, &store, &catalog, &host)
            .with_context(|| format!("reindexing offsite {}", t.name))?;
        rows.push(serde_json::json!({"target": t.name, "copies": found, "dropped": dropped}));
        if !json {
            println!(
                "offsite {}: {found} copies of {host} found, {dropped} dropped from the catalog",
                t.name
            );
        }
    }
    if json {
        super::print_json(&rows)?;
    }
    Ok(ExitCode::SUCCESS)
}
