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
            host,
            all_hosts,
            dry_run,
            json,
        } => {
            let targets = targets(cfg, target.as_deref())?;
            let session = Session::begin(cfg, Job::Offsite, true, &super::warn)?;
            let own = crate::fsutil::hostname();
            let hosts = if all_hosts {
                None
            } else {
                Some(host.unwrap_or(own))
            };
            let rows = prune(&session.catalog, cfg, &targets, dry_run, hosts.as_deref())?;
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
        OffsiteCommand::Key { json } => key(cfg, json),
    }
}

/// The keys whose signed descriptions are believed on `t` (the config's and this
/// host's own), and the copies retention deleted there (their return is a replay).
fn trust(cfg: &Config, t: &OffsiteConfig, catalog: &Catalog) -> anyhow::Result<offsite::Trust> {
    let own = offsite::Signer::load(&cfg.state_dir).context("reading the signing key")?;
    Ok(offsite::Trust::new(&t.signing_keys, own.as_ref())
        .with_retired(catalog.offsite_pruned(&t.name)?))
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
    cfg: &Config,
    session: &mut Session<'_>,
    t: &OffsiteConfig,
    backups: &[BackupRecord],
) -> (Vec<Pushed>, Vec<anyhow::Error>) {
    let mut done = Vec::new();
    let mut failed = Vec::new();
    // Even with nothing to send: the unfinished uploads of an earlier failure are
    // aborted, and older descriptions signed.
    let store = match Store::open(t) {
        Ok(s) => s,
        Err(e) => {
            let text = format!("{e:#}");
            session.alert(&Job::Offsite, false, &text);
            failed.push(anyhow::Error::new(e));
            return (done, failed);
        }
    };
    let signer = match offsite::Signer::load_or_create(&cfg.state_dir) {
        Ok(s) => s,
        Err(e) => {
            failed.push(anyhow::Error::new(e).context("this host's signing key"));
            return (done, failed);
        }
    };
    let host = crate::fsutil::hostname();
    // A server that does not answer is given up on at its first timeout, not once per
    // step and per set: the job ends within one request's deadline and retries.
    let gone = |session: &mut Session<'_>, e: offsite::OffsiteError, what: &str| {
        let e = anyhow::Error::new(e).context(format!("offsite {}: {what}", t.name));
        session.alert(&Job::Offsite, false, &format!("{e:#}"));
        e
    };
    match offsite::abort_stale(&store, &session.catalog, t, &host) {
        Err(e) if e.unreachable() => {
            failed.push(gone(session, e, "aborting unfinished uploads"));
            return (done, failed);
        }
        Err(e) => super::warn(&format!("aborting unfinished uploads: {e:#}")),
        Ok(_) => {}
    }
    match offsite::adopt_unsigned(t, &store, &session.catalog, &signer, &host) {
        Ok(0) => {}
        Ok(n) => super::warn(&format!(
            "offsite {}: signed {n} descriptions written before descriptions were signed",
            t.name
        )),
        Err(e) if e.unreachable() => {
            failed.push(gone(session, e, "signing older descriptions"));
            return (done, failed);
        }
        Err(e) => super::warn(&format!("signing older descriptions: {e:#}")),
    }
    let progress = super::progress::for_stderr();
    for (i, b) in backups.iter().enumerate() {
        let run = match session.start(Job::Offsite, Some(&b.id)) {
            Ok(r) => r,
            Err(e) => {
                failed.push(e.into());
                continue;
            }
        };
        let result = offsite::push(t, &store, &session.catalog, &signer, b, progress.as_ref())
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
            Err(e) => {
                let unreachable = e
                    .downcast_ref::<offsite::OffsiteError>()
                    .is_some_and(offsite::OffsiteError::unreachable);
                failed.push(e);
                let rest = &backups[i + 1..];
                if unreachable && !rest.is_empty() {
                    let ids: Vec<&str> = rest.iter().map(|b| b.id.as_str()).collect();
                    failed.push(anyhow::anyhow!(
                        "offsite {}: not tried, the server did not answer: {}",
                        t.name,
                        ids.join(", ")
                    ));
                    break;
                }
            }
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

/// Before `offsite push --all`: a copy the bucket lost (deleted, or no longer believed)
/// while its verified backup is still here is forgotten, so that it is uploaded again.
fn forget_lost(cfg: &Config, catalog: &Catalog, t: &OffsiteConfig) -> anyhow::Result<()> {
    let store = Store::open(t)?;
    let host = crate::fsutil::hostname();
    let (present, _) = offsite::list(
        t,
        &store,
        &trust(cfg, t, catalog)?,
        &offsite::host_prefix(t, Some(&host)),
    )?;
    for c in catalog.offsite_copies(Some(&t.name))? {
        let here = catalog
            .backup(&c.backup_id)?
            .is_some_and(|b| b.status == BackupStatus::Verified);
        if here && !present.iter().any(|p| p.backup_id == c.backup_id) {
            super::warn(&format!(
                "offsite {}: {} is gone from the bucket; uploading it again",
                t.name, c.backup_id
            ));
            catalog.delete_offsite_copy(&t.name, &c.backup_id)?;
        }
    }
    Ok(())
}

/// Remote retention over `targets`, for `host`'s copies (every host's when `None`): the
/// target's own policy, else each set's (sets without one keep every copy).
fn prune(
    catalog: &Catalog,
    cfg: &Config,
    targets: &[&OffsiteConfig],
    dry_run: bool,
    host: Option<&str>,
) -> anyhow::Result<Vec<offsite::PruneRow>> {
    let tz = jiff::tz::TimeZone::system();
    let mut rows = Vec::new();
    for t in targets {
        let policy = |set: &str| cfg.offsite_keep(t, set);
        if t.keep.is_none()
            && !cfg
                .backup
                .sets
                .iter()
                .any(|s| t.covers(&s.name) && policy(&s.name).is_some())
        {
            continue;
        }
        let store = Store::open(t)?;
        let trust = trust(cfg, t, catalog)?;
        let (copies, problems) = offsite::list(t, &store, &trust, &offsite::host_prefix(t, host))
            .with_context(|| format!("listing offsite {}", t.name))?;
        for p in &problems {
            super::warn(&format!(
                "offsite {}: left alone, not believed: {}",
                t.name,
                offsite::shown(&p.to_string())
            ));
        }
        let mut groups: Vec<(String, String)> = copies
            .iter()
            .map(|c| (c.host.clone(), c.set.clone()))
            .collect();
        groups.dedup();
        for (h, set) in groups {
            let theirs: Vec<RemoteCopy> = copies.iter().filter(|c| c.host == h).cloned().collect();
            rows.extend(
                offsite::prune(
                    t,
                    &store,
                    catalog,
                    &theirs,
                    &set,
                    policy(&set),
                    &tz,
                    dry_run,
                )
                .with_context(|| format!("pruning set {set:?} of {h} on offsite {}", t.name))?,
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
            (false, false) if r.left => "LEFT",
            (false, false) if dry_run => "DELETE",
            (false, false) => "LEFT",
        };
        println!(
            "{:<8} {:<10} {:<16} {:<36} {}",
            what,
            r.target,
            offsite::shown(&r.host),
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
        if all {
            forget_lost(cfg, &session.catalog, t)?;
        }
        let todo = missing(&session.catalog, t, cfg, set, all)?;
        let (done, failed) = upload(cfg, &mut session, t, &todo);
        pushed.extend(done);
        failures.extend(failed);
    }
    print_pushed(&pushed, failures.is_empty(), json)?;
    if cfg.backup.prune_after_backup && !pushed.iter().all(|p| p.already) {
        let host = crate::fsutil::hostname();
        match prune(&session.catalog, cfg, &chosen, false, Some(&host)) {
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
        let (done, failed) = upload(cfg, session, t, &todo);
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
        let host = crate::fsutil::hostname();
        match prune(&session.catalog, cfg, &all, false, Some(&host)) {
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

/// What was uploaded; "nothing to upload" only when nothing also failed.
fn print_pushed(pushed: &[Pushed], clean: bool, json: bool) -> anyhow::Result<()> {
    if json {
        return super::print_json(&pushed);
    }
    if pushed.is_empty() && clean {
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
    let catalog = super::open_catalog(cfg)?;
    let mut rows: Vec<(String, RemoteCopy)> = Vec::new();
    let mut problems = Vec::new();
    for t in targets(cfg, target)? {
        let store = Store::open(t)?;
        let prefix = offsite::host_prefix(t, (!all_hosts).then_some(host.as_str()));
        let (good, bad) = offsite::list(t, &store, &trust(cfg, t, &catalog)?, &prefix)?;
        rows.extend(good.into_iter().map(|c| (t.name.clone(), c)));
        problems.extend(bad.into_iter().map(|p| (t.name.clone(), p)));
    }
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
        if b.path.exists() {
            bail!(
                "{id} is already in the catalog at {}; `steward restore {id}` restores it",
                b.path.display()
            );
        }
        bail!(
            "{id} is in the catalog, but its archive {} is gone; `steward backups reindex` \
             forgets it, then fetch it again",
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
    let copy = offsite::find(t, &store, &trust(cfg, t, catalog)?, host, id)?;
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
    let added = (|| -> anyhow::Result<BackupRecord> {
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
        Ok(catalog.backup(id)?.unwrap_or(record))
    })();
    match added {
        Ok(record) => Ok((record, t.name.clone())),
        Err(e) => {
            // A refused fetch leaves nothing behind: a retry after the bucket is repaired
            // starts clean.
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(crate::backup::archive::sidecar_path(&path));
            if let Some(dir) = path.parent() {
                let _ = std::fs::remove_dir(dir);
            }
            let _ = crate::backup::reindex(cfg, catalog, progress.as_ref());
            Err(e)
        }
    }
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
    let host = crate::fsutil::hostname();
    let progress = super::progress::for_stderr();
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for t in targets {
        let store = Store::open(t)?;
        let tz = jiff::tz::TimeZone::system();
        let keep = |set: &str| cfg.offsite_keep(t, set);
        let depth = offsite::Depth {
            download: &|_| true,
            identity,
            scratch: &scratch,
            keep: &keep,
            tz: &tz,
        };
        let found = offsite::audit(
            t,
            &store,
            &session.catalog,
            &trust(cfg, t, &session.catalog)?,
            &host,
            &depth,
            progress.as_ref(),
        )
        .with_context(|| format!("checking offsite {}", t.name))?;
        for f in found {
            if !f.ok {
                failed.push(format!(
                    "offsite {}: {}: {}",
                    f.target,
                    f.id.as_deref().unwrap_or(&f.key),
                    f.error
                ));
            }
            rows.push(f);
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
            let what = match &r.id {
                Some(id) => format!("{id}  {}", r.key),
                None => r.key.clone(),
            };
            if r.ok {
                println!("ok      {what}");
            } else {
                println!("FAILED  {what}  {}", r.error);
            }
        }
    }
    if failed.is_empty() {
        Ok(Done::OK)
    } else {
        eprintln!("steward: {} problems with the offsite copies", failed.len());
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
    let mut refused = 0;
    for t in chosen {
        let store = Store::open(t)?;
        let (found, dropped, problems) = offsite::reindex(
            t,
            &store,
            &catalog,
            &trust(cfg, t, &catalog)?,
            &host,
            &|set| cfg.offsite_keep(t, set),
            &jiff::tz::TimeZone::system(),
        )
        .with_context(|| format!("reindexing offsite {}", t.name))?;
        refused += problems.len();
        rows.push(
            serde_json::json!({"target": t.name, "copies": found, "dropped": dropped,
            "not-believed": problems}),
        );
        if !json {
            println!(
                "offsite {}: {found} copies of {host} found, {dropped} dropped from the catalog",
                t.name
            );
            for p in &problems {
                println!(
                    "  not believed, not imported: {}",
                    offsite::shown(&p.to_string())
                );
            }
        }
    }
    if json {
        super::print_json(&rows)?;
    }
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
