//! `[drill]`: restore drills. Where a drill puts its copy, how old the newest passing
//! drill of a set may be, how long a set's `drill-command` may run, and which offsite
//! target (with which age identity) the scheduled `drill-offsite` reads.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::values::{HumanDuration, ser_duration};
use super::{BackupConfig, ConfigError, OffsiteConfig, Validator};

/// `[drill]`, validated.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DrillConfig {
    /// The folder a drill restores into: each drill makes a fresh `steward-drill-*`
    /// folder there and removes it after; the next drill sweeps one a killed run left.
    pub scratch: PathBuf,
    /// The newest passing drill of a set older than this is a warning (`drill SET`).
    #[serde(serialize_with = "ser_duration")]
    pub max_age: Duration,
    /// The same for drills from offsite (`drill SET offsite`), which run less often.
    #[serde(serialize_with = "ser_duration")]
    pub offsite_max_age: Duration,
    /// How long a set's `drill-command` may run before it is killed (and the drill fails).
    #[serde(serialize_with = "ser_duration")]
    pub command_timeout: Duration,
    /// The offsite target `drill-offsite` reads (the only one when unset).
    pub offsite: Option<String>,
    /// The age identity file that decrypts the copies for `drill-offsite`.
    pub identity: Option<PathBuf>,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawDrill {
    pub(super) scratch: Option<Spanned<String>>,
    pub(super) max_age: Option<Spanned<HumanDuration>>,
    pub(super) offsite_max_age: Option<Spanned<HumanDuration>>,
    pub(super) command_timeout: Option<Spanned<HumanDuration>>,
    pub(super) offsite: Option<Spanned<String>>,
    pub(super) identity: Option<Spanned<String>>,
}

impl Validator<'_> {
    /// `[drill]`: the scratch folder may neither hold nor sit inside a set's data or the
    /// backup destination (a drill's copy must never be backed up, nor replace anything).
    pub(super) fn drill(
        &self,
        raw: &RawDrill,
        state_dir: &std::path::Path,
        backup: &BackupConfig,
        offsite: &[OffsiteConfig],
        scheduled_offsite: Option<&Spanned<String>>,
    ) -> Result<DrillConfig, ConfigError> {
        let scratch = match &raw.scratch {
            Some(s) => {
                let p = self.path(s, "drill.scratch")?.value;
                let clash = backup
                    .sets
                    .iter()
                    .flat_map(|set| set.paths.iter().map(move |p| (set, &p.value)))
                    .find(|(_, sp)| p.starts_with(sp) || sp.starts_with(&p));
                if let Some((set, sp)) = clash {
                    return Err(self.spanned_err(
                        s,
                        "drill.scratch",
                        format!(
                            "{} overlaps {} of set {:?}; a drill's copy must stay apart from \
                             live data",
                            p.display(),
                            sp.display(),
                            set.name
                        ),
                    ));
                }
                if p.starts_with(&backup.destination) || backup.destination.starts_with(&p) {
                    return Err(self.spanned_err(
                        s,
                        "drill.scratch",
                        format!(
                            "{} overlaps the backup destination {}",
                            p.display(),
                            backup.destination.display()
                        ),
                    ));
                }
                if p.parent().is_none() {
                    return Err(self.spanned_err(
                        s,
                        "drill.scratch",
                        "is the root folder; give drills a folder of their own".into(),
                    ));
                }
                p
            }
            None => state_dir.join("drill"),
        };
        let positive = |d: &Option<Spanned<HumanDuration>>, key: &str, default: Duration| match d {
            Some(t) if t.get_ref().0.is_zero() => {
                Err(self.spanned_err(t, key, "must be longer than 0s".into()))
            }
            Some(t) => Ok(t.get_ref().0),
            None => Ok(default),
        };
        let max_age = positive(&raw.max_age, "drill.max-age", Duration::from_hours(15 * 24))?;
        let offsite_max_age = positive(
            &raw.offsite_max_age,
            "drill.offsite-max-age",
            Duration::from_hours(40 * 24),
        )?;
        let command_timeout = positive(
            &raw.command_timeout,
            "drill.command-timeout",
            Duration::from_mins(10),
        )?;
        let target = match &raw.offsite {
            Some(name) => {
                if !offsite.iter().any(|t| &t.name == name.get_ref()) {
                    let known: Vec<&str> = offsite.iter().map(|t| t.name.as_str()).collect();
                    return Err(self.spanned_err(
                        name,
                        "drill.offsite",
                        format!(
                            "no [[offsite]] named {:?} (configured: {})",
                            name.get_ref(),
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                }
                Some(name.get_ref().clone())
            }
            None => None,
        };
        let identity = match &raw.identity {
            Some(i) => Some(self.path(i, "drill.identity")?.value),
            None => None,
        };
        // A monthly job that can only fail is refused now, not found out in a month.
        if let Some(when) = scheduled_offsite {
            let chosen = match (&target, offsite) {
                (Some(name), _) => offsite.iter().find(|t| &t.name == name),
                (None, [one]) => Some(one),
                (None, []) => {
                    return Err(self.spanned_err(
                        when,
                        "schedule.drill-offsite",
                        "needs an [[offsite]] target to drill from".into(),
                    ));
                }
                (None, _) => {
                    return Err(self.spanned_err(
                        when,
                        "schedule.drill-offsite",
                        "several [[offsite]] targets are configured: name one with [drill] \
                         offsite"
                            .into(),
                    ));
                }
            };
            if chosen.is_some_and(|t| t.encrypt) && identity.is_none() {
                return Err(self.spanned_err(
                    when,
                    "schedule.drill-offsite",
                    "the copies are encrypted: give [drill] identity, the age identity file \
                     that decrypts them"
                        .into(),
                ));
            }
        }
        Ok(DrillConfig {
            scratch,
            max_age,
            offsite_max_age,
            command_timeout,
            offsite: target,
            identity,
        })
    }
}
