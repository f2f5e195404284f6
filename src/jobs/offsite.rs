//! The offsite job and the workflows around the bucket that record runs or span targets:
//! `offsite push` (and the upload after each backup), remote retention, `verify
//! --offsite`, fetching a copy back into the catalog, listing and reindexing. What speaks
//! S3, signs and checks copies is `crate::offsite`'s; this module decides what to send
//! where and records it.

use anyhow::{Context, bail};

use super::{Done, Outcome, Session, Ui, Warn};
use crate::catalog::{BackupRecord, BackupStatus, Catalog, RunStatus};
use crate::config::{Config, OffsiteConfig};
use crate::offsite::{self, Pushed, RemoteCopy, Store};
use crate::schedule::Job;

/// What `offsite push` is asked to do.
pub struct PushJob {
    /// One target, or every one.
    pub target: Option<String>,
    /// One set, or every covered one.
    pub set: Option<String>,
    /// Every verified backup without a copy, not only the newest (and copies the bucket
    /// lost are sent again).
    pub all: bool,
}

/// What the push did.
pub struct PushReport {
    pub pushed: Vec<Pushed>,
    /// Whether every upload went well (before retention and the job's hooks).
    pub uploads_clean: bool,
    /// Remote retention after the upload (when anything new was sent).
    pub pruned: Vec<offsite::PruneRow>,
    pub failures: Vec<anyhow::Error>,
}

impl PushReport {
    /// Failed when anything did.
    pub fn done(&self) -> Done {
        super::done_by(&self.failures)
    }
}

/// What followed a backup offsite.
#[derive(Default)]
pub struct AfterBackup {
    pub pushed: Vec<Pushed>,
    /// The copies remote retention deleted.
    pub deleted: Vec<offsite::PruneRow>,
    pub failures: Vec<anyhow::Error>,
}

/// `verify --offsite`: every finding, and whether the job failed.
pub struct OffsiteVerifyReport {
    pub findings: Vec<offsite::Finding>,
    /// One line per problem (a failing hook counts).
    pub failed: Vec<String>,
}

/// One target's copies, as `offsite list` shows them.
pub struct Listing {
    pub copies: Vec<(String, RemoteCopy)>,
    /// Objects that are not believed: (target, problem).
    pub problems: Vec<(String, offsite::Problem)>,
}

/// Where a fetch looks for a copy: one target (else the first), the identity that
/// decrypts it, another host's copies.
pub struct Source<'a> {
    pub target: Option<&'a str>,
    pub identity: Option<&'a std::path::Path>,
    pub host: Option<&'a str>,
}

/// One target's reindex.
pub struct Reindexed {
    pub target: String,
    pub found: usize,
    pub dropped: usize,
    pub problems: Vec<offsite::Problem>,
}

/// The keys whose signed descriptions are believed on `t` (the config's and this
/// host's own), and the copies retention deleted there (their return is a replay).
pub fn trust(cfg: &Config, t: &OffsiteConfig, catalog: &Catalog) -> anyhow::Result<offsite::Trust> {
    let own = offsite::Signer::load(&cfg.state_dir).context("reading the signing key")?;
    Ok(offsite::Trust::new(&t.signing_keys, own.as_ref())
        .with_retired(catalog.offsite_pruned(&t.name)?))
}

/// The targets a command works on: the one named, or all.
pub fn targets<'c>(cfg: &'c Config, name: Option<&str>) -> anyhow::Result<Vec<&'c OffsiteConfig>> {
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
    ui: Ui<'_>,
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
        Err(e) => (ui.warn)(&format!("aborting unfinished uploads: {e:#}")),
        Ok(_) => {}
    }
    match offsite::adopt_unsigned(t, &store, &session.catalog, &signer, &host) {
        Ok(0) => {}
        Ok(n) => (ui.warn)(&format!(
            "offsite {}: signed {n} descriptions written before descriptions were signed",
            t.name
        )),
        Err(e) if e.unreachable() => {
            failed.push(gone(session, e, "signing older descriptions"));
            return (done, failed);
        }
        Err(e) => (ui.warn)(&format!("signing older descriptions: {e:#}")),
    }
    let progress = (ui.progress)();
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
    bases_first(catalog, t, out)
}

/// `todo` with the base of every differential in it put before it, unless the target
/// has a copy of that base already: a bucket never holds a differential it cannot
/// restore from.
fn bases_first(
    catalog: &Catalog,
    t: &OffsiteConfig,
    todo: Vec<BackupRecord>,
) -> anyhow::Result<Vec<BackupRecord>> {
    let mut out: Vec<BackupRecord> = Vec::new();
    for b in todo {
        if out.iter().any(|o| o.id == b.id) {
            continue;
        }
        if let Some(base) = &b.base
            && !out.iter().any(|o| &o.id == base)
            && catalog.offsite_copy(&t.name, base)?.is_none()
        {
            match catalog.backup(base)? {
                Some(r) => out.push(r),
                None => anyhow::bail!(
                    "{} is a differential on {base}, which the catalog does not have; \
                     not copied to {} (it could not be restored from there)",
                    b.id,
                    t.name
                ),
            }
        }
        out.push(b);
    }
    Ok(out)
}

/// Before `offsite push --all`: a copy the bucket lost (deleted, or no longer believed)
/// while its verified backup is still here is forgotten, so that it is uploaded again.
fn forget_lost(
    cfg: &Config,
    catalog: &Catalog,
    t: &OffsiteConfig,
    warn: Warn<'_>,
) -> anyhow::Result<()> {
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
            warn(&format!(
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
pub fn prune(
    catalog: &Catalog,
    cfg: &Config,
    targets: &[&OffsiteConfig],
    dry_run: bool,
    host: Option<&str>,
    warn: Warn<'_>,
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
            warn(&format!(
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

/// `steward offsite push` (and the `offsite` job).
pub fn push(cfg: &Config, job: &PushJob, ui: Ui<'_>) -> anyhow::Result<PushReport> {
    let chosen = targets(cfg, job.target.as_deref())?;
    if let Some(s) = &job.set
        && cfg.set(s).is_none()
    {
        bail!("no backup set {s:?} in {}", cfg.origin);
    }
    let mut session = Session::begin(cfg, Job::Offsite, false, ui)?;
    let mut report = PushReport {
        pushed: Vec::new(),
        uploads_clean: true,
        pruned: Vec::new(),
        failures: Vec::new(),
    };
    for t in &chosen {
        if job.all {
            forget_lost(cfg, &session.catalog, t, ui.warn)?;
        }
        let todo = missing(&session.catalog, t, cfg, job.set.as_deref(), job.all)?;
        let (done, failed) = upload(cfg, &mut session, ui, t, &todo);
        report.pushed.extend(done);
        report.failures.extend(failed);
    }
    report.uploads_clean = report.failures.is_empty();
    if cfg.backup.prune_after_backup && !report.pushed.iter().all(|p| p.already) {
        let host = crate::fsutil::hostname();
        match prune(&session.catalog, cfg, &chosen, false, Some(&host), ui.warn) {
            Ok(rows) => report.pruned = rows,
            Err(e) => report
                .failures
                .push(e.context("remote retention after the upload")),
        }
    }
    super::end(session, &mut report.failures);
    Ok(report)
}

/// After a backup: copies the new backups to every target that covers their set, under
/// the offsite lock (a running `offsite push` copies them instead).
pub fn after_backup(
    session: &mut Session<'_>,
    cfg: &Config,
    created: &[String],
    ui: Ui<'_>,
) -> AfterBackup {
    let mut out = AfterBackup::default();
    if cfg.offsite.is_empty() || created.is_empty() {
        return out;
    }
    let _lock = match crate::lock::acquire(&cfg.state_dir, Job::Offsite.lock()) {
        Ok(l) => l,
        Err(e) => {
            (ui.warn)(&format!(
                "{e}; the new backups are copied offsite by the next `steward offsite push`"
            ));
            return out;
        }
    };
    for t in &cfg.offsite {
        let mut todo = Vec::new();
        for id in created {
            match session.catalog.backup(id) {
                Ok(Some(b)) if t.covers(&b.set) => todo.push(b),
                Ok(_) => {}
                Err(e) => out.failures.push(e.into()),
            }
        }
        let todo = match bases_first(&session.catalog, t, todo) {
            Ok(todo) => todo,
            Err(e) => {
                out.failures.push(e);
                continue;
            }
        };
        let (done, failed) = upload(cfg, session, ui, t, &todo);
        out.pushed.extend(done);
        out.failures.extend(failed);
    }
    if cfg.backup.prune_after_backup && !out.pushed.is_empty() {
        let all: Vec<&OffsiteConfig> = cfg.offsite.iter().collect();
        let host = crate::fsutil::hostname();
        match prune(&session.catalog, cfg, &all, false, Some(&host), ui.warn) {
            Ok(rows) => out.deleted = rows.into_iter().filter(|r| r.deleted).collect(),
            Err(e) => out
                .failures
                .push(e.context("remote retention after the upload")),
        }
    }
    out
}

/// `steward offsite prune`: remote retention without an upload (`hosts`: one host's
/// copies, or every host's with `None`).
pub fn prune_job(
    cfg: &Config,
    target: Option<&str>,
    dry_run: bool,
    host: Option<&str>,
    ui: Ui<'_>,
) -> anyhow::Result<Vec<offsite::PruneRow>> {
    let targets = targets(cfg, target)?;
    let session = Session::begin(cfg, Job::Offsite, true, ui)?;
    prune(&session.catalog, cfg, &targets, dry_run, host, ui.warn)
}

/// `steward offsite list`: the believed copies of this host (every host's with
/// `all_hosts`) on the target named, or on all.
pub fn list(cfg: &Config, target: Option<&str>, all_hosts: bool) -> anyhow::Result<Listing> {
    let host = crate::fsutil::hostname();
    let catalog = Catalog::open(&cfg.state_dir)
        .with_context(|| format!("opening the catalog in {}", cfg.state_dir.display()))?;
    let mut out = Listing {
        copies: Vec::new(),
        problems: Vec::new(),
    };
    for t in targets(cfg, target)? {
        let store = Store::open(t)?;
        let prefix = offsite::host_prefix(t, (!all_hosts).then_some(host.as_str()));
        let (good, bad) = offsite::list(t, &store, &trust(cfg, t, &catalog)?, &prefix)?;
        out.copies
            .extend(good.into_iter().map(|c| (t.name.clone(), c)));
        out.problems
            .extend(bad.into_iter().map(|p| (t.name.clone(), p)));
    }
    Ok(out)
}

/// `steward offsite fetch ID`: the backup lock held, a backup the catalog does not know
/// downloaded, added and verified. Returns the record and the target's name.
pub fn fetch(
    cfg: &Config,
    id: &str,
    from: &Source<'_>,
    ui: Ui<'_>,
) -> anyhow::Result<(BackupRecord, String)> {
    let _lock = crate::lock::acquire(&cfg.state_dir, Job::Backup.lock())?;
    let mut catalog = Catalog::open(&cfg.state_dir)
        .with_context(|| format!("opening the catalog in {}", cfg.state_dir.display()))?;
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
    fetch_verified(cfg, &mut catalog, id, from, ui)
}

/// Downloads backup `id` from an offsite target into the destination, adds it to the
/// catalog and reads it back in full; the caller holds the backup lock. Returns the
/// record and the target's name.
pub fn fetch_verified(
    cfg: &Config,
    catalog: &mut Catalog,
    id: &str,
    from: &Source<'_>,
    ui: Ui<'_>,
) -> anyhow::Result<(BackupRecord, String)> {
    let t = targets(cfg, from.target)?[0];
    let store = Store::open(t)?;
    let copy = offsite::find(t, &store, &trust(cfg, t, catalog)?, from.host, id)?;
    if cfg.set(&copy.set).is_none() {
        bail!(
            "{id} is a backup of set {:?}, which {} does not configure; add the set first",
            copy.set,
            cfg.origin
        );
    }
    let progress = (ui.progress)();
    let dest = crate::backup::Dest::of(cfg);
    let dir = cfg.backup.set_dir(&copy.set);
    let path = offsite::fetch(
        &store,
        &t.name,
        &copy,
        from.identity,
        &dir,
        progress.as_ref(),
    )
    .with_context(|| format!("fetching {id} from offsite {}", t.name))?;
    // The archive is in place with its sidecar: the catalog learns it as any archive on
    // the disk, then it is read back in full like any backup.
    let added = (|| -> anyhow::Result<BackupRecord> {
        crate::backup::reindex(dest, catalog, progress.as_ref())
            .context("adding the fetched archive to the catalog")?;
        let record = catalog.backup(id)?.with_context(|| {
            format!(
                "{} was fetched but is not a backup of this config",
                path.display()
            )
        })?;
        // A differential is verified against its base: fetched first when not here.
        if let Some(base) = &record.base
            && catalog.backup(base)?.is_none()
        {
            fetch_verified(cfg, catalog, base, from, ui)
                .with_context(|| format!("fetching {base}, the base of the differential {id}"))?;
        }
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
            let _ = crate::backup::reindex(dest, catalog, progress.as_ref());
            Err(e)
        }
    }
}

/// `steward verify --offsite`: downloads each recorded copy and compares digests.
pub fn verify(
    cfg: &Config,
    target: Option<&str>,
    identity: Option<&std::path::Path>,
    ui: Ui<'_>,
) -> anyhow::Result<OffsiteVerifyReport> {
    let targets = targets(cfg, target)?;
    let mut session = Session::begin(cfg, Job::Verify, false, ui)?;
    let scratch = cfg.state_dir.join("offsite-check");
    let host = crate::fsutil::hostname();
    let progress = (ui.progress)();
    let mut findings = Vec::new();
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
            findings.push(f);
        }
    }
    drop(progress);
    session.alert(&Job::Verify, failed.is_empty(), &failed.join("; "));
    if !session.end(failed.is_empty()) && failed.is_empty() {
        failed.push("the job's after hook failed".into());
    }
    Ok(OffsiteVerifyReport { findings, failed })
}

/// `steward backups reindex --offsite`: the catalog's copies rebuilt from each target's
/// believed descriptions.
pub fn reindex(cfg: &Config) -> anyhow::Result<Vec<Reindexed>> {
    let chosen = targets(cfg, None)?;
    let _lock = crate::lock::acquire(&cfg.state_dir, Job::Offsite.lock())?;
    let catalog = Catalog::open(&cfg.state_dir)
        .with_context(|| format!("opening the catalog in {}", cfg.state_dir.display()))?;
    let host = crate::fsutil::hostname();
    let mut out = Vec::new();
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
        out.push(Reindexed {
            target: t.name.clone(),
            found,
            dropped,
            problems,
        });
    }
    Ok(out)
}
