//! The verify job: backups read back in full against their manifests, the result feeding
//! the verify job's alert state.

use anyhow::{Context, bail};

use super::{Done, Session, Ui};
use crate::backup::VerifyOutcome;
use crate::catalog::BackupRecord;
use crate::config::Config;
use crate::schedule::Job;

/// Which backups.
pub enum Choice {
    /// One by its ID.
    Id(String),
    /// Every one (of the set).
    All,
    /// The newest of each set (of the set).
    Latest,
}

/// What was read back.
pub struct VerifyReport {
    pub outcomes: Vec<VerifyOutcome>,
    /// How many failed (at least 1 when the job's hook failed).
    pub failed: usize,
}

impl VerifyReport {
    /// Failed when any backup (or the job's hook) did.
    pub fn done(&self) -> Done {
        if self.failed > 0 {
            Done::FAILED
        } else {
            Done::OK
        }
    }
}

/// Verifies the `choice` of backups (of `set`, or of every set).
pub fn run(
    cfg: &Config,
    choice: &Choice,
    set: Option<&str>,
    ui: Ui<'_>,
) -> anyhow::Result<VerifyReport> {
    let mut session = Session::begin(cfg, Job::Verify, false, ui)?;
    let all = session.catalog.backups(set)?;
    let mut chosen: Vec<BackupRecord> = match choice {
        Choice::Id(id) => match all.into_iter().find(|b| &b.id == id) {
            Some(b) => vec![b],
            None => bail!("no backup {id:?} in the catalog (see `steward backups list`)"),
        },
        Choice::All => all,
        Choice::Latest => {
            let mut seen = std::collections::HashSet::new();
            all.into_iter()
                .filter(|b| seen.insert(b.set.clone()))
                .collect()
        }
    };
    if chosen.is_empty() {
        bail!("no backups to verify");
    }
    // A differential is only as good as its base: the base is read too, and first, so
    // that a damaged base fails every restore point built on it in this same run.
    let mut bases = Vec::new();
    for b in &chosen {
        if let Some(id) = &b.base
            && !chosen
                .iter()
                .chain(&bases)
                .any(|c: &BackupRecord| &c.id == id)
            && let Some(base) = session.catalog.backup(id)?
        {
            bases.push(base);
        }
    }
    chosen.extend(bases);
    chosen.sort_by_key(|b| b.base.is_some());
    let progress = (ui.progress)();
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
    Ok(VerifyReport { outcomes, failed })
}
