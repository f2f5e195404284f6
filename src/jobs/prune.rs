//! The prune job: each set's retention, every backup's verdict explained.

use anyhow::{Context, bail};

use super::{Session, Ui};
use crate::backup::PruneReport;
use crate::config::Config;
use crate::schedule::Job;

/// Every pruned set's report.
pub type PruneReports = Vec<PruneReport>;

/// Retention over `set` (or every set); `dry_run` decides without removing.
pub fn run(
    cfg: &Config,
    set: Option<&str>,
    dry_run: bool,
    ui: Ui<'_>,
) -> anyhow::Result<PruneReports> {
    if let Some(name) = set
        && cfg.set(name).is_none()
    {
        bail!("no backup set {name:?} in {}", cfg.origin);
    }
    let session = Session::begin(cfg, Job::Prune, dry_run, ui)?;
    let tz = jiff::tz::TimeZone::system();
    let dest = crate::backup::Dest::of(cfg);
    let mut reports = Vec::new();
    for s in cfg
        .backup
        .sets
        .iter()
        .filter(|s| set.is_none_or(|n| n == s.name))
    {
        let report = crate::backup::prune_set(dest, &session.catalog, s, &tz, dry_run)
            .with_context(|| format!("pruning set {:?}", s.name))?;
        reports.push(report);
    }
    Ok(reports)
}
