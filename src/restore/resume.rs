//! After an interruption: `restore --resume` finishes the swap or undoes it (and says which
//! and why), then starts exactly the services the restore had stopped. Staging folders a
//! journal no longer owns are found beside the configured paths, reported by every
//! command, and removed by the next restore or `restore --cleanup`, which also removes the
//! rollback copies earlier restores kept.

use std::fs;
use std::path::PathBuf;

use serde::Serialize;

use super::journal::{self, Journal, Phase};
use super::plan::{Plan, is_staging_name, parent_and_name};
use super::{RestoreError, join_errors};
use crate::config::Config;
use crate::services::{self, Runner};

/// What `resume` did.
#[derive(Debug, Serialize)]
pub struct Resumed {
    pub id: String,
    /// `completed` (the backup's data is in place) or `rolled-back` (the data is as it was
    /// before the restore began).
    pub outcome: String,
    /// Why that way.
    pub why: String,
    pub units: usize,
    pub started: Vec<String>,
    pub rollbacks: Vec<PathBuf>,
}

/// Brings the data of an interrupted restore to rest: the swap finished, or undone; the
/// journal then says `settled` and how, and only services are left. Returns the outcome
/// (`completed` or `rolled-back`) and why.
fn settle(config: &Config, j: &mut Journal) -> Result<(String, String), RestoreError> {
    let (outcome, why) = match j.phase {
        Phase::Staging | Phase::Stopping => (
            "rolled-back",
            "it was interrupted before any data was replaced; nothing live changed, \
             run the restore again"
                .to_string(),
        ),
        Phase::Swapping => {
            // The staged data was verified before the swap began: finish it.
            match journal::swap(j).and_then(|()| journal::check_databases(j)) {
                Ok(()) => (
                    "completed",
                    "the swap had begun with verified data; it was finished".to_string(),
                ),
                Err(e) => {
                    j.phase = Phase::RollingBack;
                    j.save(&config.state_dir)?;
                    journal::roll_back(j)?;
                    (
                        "rolled-back",
                        format!(
                            "finishing the swap failed ({}); the data is as it was before",
                            crate::error::chain(&e)
                        ),
                    )
                }
            }
        }
        Phase::RollingBack => {
            journal::roll_back(j)?;
            (
                "rolled-back",
                "a failed swap was being undone; undoing it was finished".to_string(),
            )
        }
        Phase::Settled => match j.settled.clone() {
            Some((outcome, why)) => (
                if outcome == "completed" {
                    "completed"
                } else {
                    "rolled-back"
                },
                why,
            ),
            None => (
                "completed",
                "the data was already in place; only the services were left".to_string(),
            ),
        },
    };
    j.phase = Phase::Settled;
    j.settled = Some((outcome.to_string(), why.clone()));
    j.save(&config.state_dir)?;
    j.remove_staging();
    if outcome == "completed" {
        super::rollbacks::remember(config, &j.id, &j.rollback_pairs(), &j.plan.carry_rules)?;
    }
    Ok((outcome.to_string(), why))
}

/// Finishes or undoes an interrupted restore from its journal, then starts the services it
/// had stopped. `None` when no restore was interrupted.
pub fn resume(config: &Config, runner: &dyn Runner) -> Result<Option<Resumed>, RestoreError> {
    let Some(mut j) = journal::pending(&config.state_dir)? else {
        return Ok(None);
    };
    let (outcome, why) = settle(config, &mut j)?;
    let rollbacks = if outcome == "completed" {
        j.rollbacks()
    } else {
        Vec::new()
    };
    let down = services::start_named(&config.services, &j.stopped, runner);
    if !down.is_empty() {
        return Err(RestoreError::ServicesDown(join_errors(&down)));
    }
    Journal::remove(&config.state_dir)?;
    Ok(Some(Resumed {
        id: j.id,
        outcome,
        why,
        units: j.units.len(),
        started: j.stopped,
        rollbacks,
    }))
}

/// What `restore --guard NAME` found, before NAME starts.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum Guarded {
    /// No restore is pending: start.
    NoRestore,
    /// A restore is pending that does not involve NAME: start.
    NotConcerned { id: String },
    /// A running restore involves NAME, but its data is whole now (not yet swapped, or
    /// settled): start (that restore may be the one starting it).
    Whole { id: String },
    /// A restore that stopped NAME was interrupted; its data is now at rest (finished or
    /// undone), so NAME may start on whole data. The journal stays (settled) so that
    /// `--resume` starts the other services it stopped and every command says so.
    Settled {
        id: String,
        outcome: String,
        why: String,
    },
}

/// The start guard of a service a restore stops (systemd `ExecStartPre=`, a launchd or
/// shell wrapper): NAME never starts on half-swapped data. `running` is the lock error
/// when a restore holds the restore lock now (the caller holds the lock otherwise, so no
/// restore begins meanwhile).
///
/// A running restore's data is whole before its swap and once it is settled, and that
/// restore starts its services itself at those moments (after a refusal, or at the end):
/// only a start in the middle of its swap or undo is refused.
pub fn guard(
    config: &Config,
    name: &str,
    running: Option<crate::lock::LockError>,
) -> Result<Guarded, RestoreError> {
    if !config.services.iter().any(|s| s.name == name) {
        return Err(RestoreError::Refused(format!(
            "no [[service]] named {name:?} in the configuration, so nothing guards it \
             (the name in the drop-in or wrapper must be the service's name)"
        )));
    }
    let Some(mut j) = journal::pending(&config.state_dir)? else {
        return Ok(Guarded::NoRestore);
    };
    let involved = j.stopped.iter().chain(&j.plan.stop).any(|s| s == name);
    if !involved {
        return Ok(Guarded::NotConcerned { id: j.id });
    }
    if let Some(lock) = running {
        return match j.phase {
            Phase::Staging | Phase::Stopping | Phase::Settled => Ok(Guarded::Whole { id: j.id }),
            Phase::Swapping | Phase::RollingBack => Err(RestoreError::Locked(lock)),
        };
    }
    let (outcome, why) = settle(config, &mut j)?;
    Ok(Guarded::Settled {
        id: j.id,
        outcome,
        why,
    })
}

/// Staging folders beside the configured set paths that no pending restore owns: left by
/// a restore that was killed in a way its journal could not record, or by an older
/// version.
pub fn abandoned(config: &Config) -> Vec<PathBuf> {
    let owned: Vec<PathBuf> = journal::pending(&config.state_dir)
        .ok()
        .flatten()
        .map(|j| {
            j.plan
                .targets
                .iter()
                .map(super::plan::Target::staging_path)
                .collect()
        })
        .unwrap_or_default();
    let mut found = Vec::new();
    for set in &config.backup.sets {
        for p in &set.paths {
            let Some((parent, name)) = parent_and_name(&p.value) else {
                continue;
            };
            let Ok(rd) = fs::read_dir(parent) else {
                continue;
            };
            for e in rd.filter_map(Result::ok) {
                let n = e.file_name().to_string_lossy().into_owned();
                let path = e.path();
                if is_staging_name(&n, &name) && !owned.contains(&path) {
                    found.push(path);
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Removes abandoned staging folders (all, or only those beside `plan`'s targets).
pub fn remove_abandoned(config: &Config, plan: Option<&Plan>) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for p in abandoned(config) {
        let ours = plan.is_none_or(|plan| {
            plan.targets
                .iter()
                .any(|t| Some(p.parent()) == Some(t.live.parent()))
        });
        if ours
            && fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir())
            && crate::fsutil::remove_tree(&p).is_ok()
        {
            removed.push(p);
        }
    }
    removed
}

/// What `--cleanup` removed.
#[derive(Debug, Serialize)]
pub struct Cleaned {
    pub rollbacks: Vec<PathBuf>,
    pub staging: Vec<PathBuf>,
}

/// Removes the rollback copies earlier restores kept and abandoned staging folders.
/// Refused while a restore is pending: its rollback copies may still be needed.
pub fn cleanup(config: &Config) -> Result<Cleaned, RestoreError> {
    let rollbacks = super::rollbacks::remove_all(config)?;
    let staging = remove_abandoned(config, None);
    Ok(Cleaned { rollbacks, staging })
}
