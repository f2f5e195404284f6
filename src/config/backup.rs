//! `[backup]` and its `[[backup.set]]`s: where archives go, what each set holds, its
//! retention and its change guard.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::services::RawService;
use super::values::{HumanDuration, Size, ser_opt_duration};
use super::{ConfigError, Located, Validator};
use crate::retention::KeepPolicy;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BackupConfig {
    pub destination: PathBuf,
    pub compression_level: i32,
    /// zstd worker threads; 0 means one per available core.
    pub threads: u32,
    /// A backup refuses to start when the destination has less free space than this.
    pub min_free_space: u64,
    /// Prune each set right after its new backup (default true).
    pub prune_after_backup: bool,
    pub sets: Vec<BackupSet>,
}

impl BackupConfig {
    /// The folder that holds the backups of `set`: the one place that says where.
    pub fn set_dir(&self, set: &str) -> PathBuf {
        self.destination.join(set)
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BackupSet {
    pub name: String,
    pub paths: Vec<Located<PathBuf>>,
    pub exclude: Vec<String>,
    /// `exclude`, compiled once.
    #[serde(skip)]
    pub excludes: crate::patterns::Excludes,
    /// Newest verified backup older than this is a failed freshness check.
    #[serde(serialize_with = "ser_opt_duration")]
    pub max_age: Option<Duration>,
    pub one_file_system: bool,
    /// The set's own `[backup.set.keep]`, else `[backup.keep]`; empty keeps everything.
    pub keep: KeepPolicy,
    /// The set's own `[backup.set.guard]`, else `[backup.guard]`, else the defaults.
    pub guard: GuardConfig,
    /// Services that use this set's data: stopped around a restore (and around the backup
    /// with `quiesce_on_backup`).
    pub quiesce: Vec<String>,
    pub quiesce_on_backup: bool,
    /// Commands around this set's backup.
    pub hooks: super::Hooks,
    /// A Redis server saved (`BGSAVE`) before the set is archived.
    pub redis: Option<super::RedisSource>,
    /// A PostgreSQL database dumped into the set before it is archived.
    pub postgresql: Option<super::PostgresSource>,
    /// When a backup is a differential against the newest full one, and when it is full.
    pub differential: DiffPolicy,
    /// The application's own proof in a restore drill: a shell command run with
    /// `STEWARD_DRILL_DIR` pointing at the restored copy (`[drill] command-timeout`).
    pub drill_command: Option<String>,
    /// Whether restore drills take this set (`drill = false`: data that is cheaper to
    /// fetch again than to prove, such as downloaded models).
    pub drill: bool,
}

/// Differential backups: only what changed since a full base, until the differential
/// passes `full_share` percent of the set's bytes or the base is older than `full_age`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DiffPolicy {
    pub enabled: bool,
    /// Percent of the set's bytes that changed since the base above which the next
    /// backup is a full one.
    pub full_share: f64,
    /// A base older than this is not built on: the next backup is a full one.
    #[serde(serialize_with = "super::values::ser_duration")]
    pub full_age: Duration,
}

impl Default for DiffPolicy {
    fn default() -> Self {
        DiffPolicy {
            enabled: true,
            full_share: 30.0,
            full_age: Duration::from_hours(30 * 24),
        }
    }
}

/// Limits of the change guard, in percent; a share above the limit makes the backup
/// suspect (so 100 never fires).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct GuardConfig {
    /// Off: no facts, no comparison (the SQLite check has its own switch).
    pub enabled: bool,
    /// Share of the last good backup's files that are gone.
    pub removed_files: f64,
    /// Share of the last good backup's bytes that are gone.
    pub removed_bytes: f64,
    /// Share of files present in both whose start turned high-entropy (compressed or
    /// encrypted looking) while it was not before.
    pub became_random: f64,
    /// `PRAGMA quick_check` on the image of every database that is archived.
    pub sqlite_check: bool,
    /// Share of a table's rows in the last good backup that are gone, at or above which
    /// the backup is suspect (a bad migration, a `DELETE` without `WHERE`); tables with
    /// fewer than `min_rows` rows are not judged.
    pub removed_rows: f64,
    pub min_rows: u64,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            enabled: true,
            removed_files: 50.0,
            removed_bytes: 50.0,
            became_random: 30.0,
            sqlite_check: true,
            // Half of a table deleted late in a day of growth is still caught: the
            // baseline is the morning's backup, and normal churn is a few % a day.
            removed_rows: 40.0,
            min_rows: 200,
        }
    }
}

#[derive(Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawBackup {
    pub(super) destination: Option<Spanned<String>>,
    pub(super) compression_level: Option<Spanned<i32>>,
    pub(super) threads: Option<u32>,
    pub(super) min_free_space: Option<Size>,
    pub(super) prune_after_backup: Option<bool>,
    pub(super) keep: Option<Spanned<RawKeep>>,
    pub(super) guard: Option<Spanned<RawGuard>>,
    pub(super) differential: Option<Spanned<RawDiff>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) set: Vec<RawSet>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawDiff {
    pub(super) enabled: Option<bool>,
    pub(super) full_share: Option<f64>,
    pub(super) full_age: Option<HumanDuration>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawGuard {
    pub(super) enabled: Option<bool>,
    pub(super) removed_files: Option<f64>,
    pub(super) removed_bytes: Option<f64>,
    pub(super) became_random: Option<f64>,
    pub(super) sqlite_check: Option<bool>,
    pub(super) removed_rows: Option<f64>,
    pub(super) min_rows: Option<u64>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawKeep {
    pub(super) last: Option<i64>,
    pub(super) hourly: Option<i64>,
    pub(super) daily: Option<i64>,
    pub(super) weekly: Option<i64>,
    pub(super) monthly: Option<i64>,
    pub(super) yearly: Option<i64>,
    pub(super) within: Option<HumanDuration>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawSet {
    pub(super) name: Spanned<String>,
    pub(super) paths: Spanned<Vec<Spanned<String>>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) exclude: Vec<Spanned<String>>,
    pub(super) max_age: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) one_file_system: bool,
    pub(super) keep: Option<Spanned<RawKeep>>,
    pub(super) guard: Option<Spanned<RawGuard>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) quiesce: Vec<Spanned<String>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) quiesce_on_backup: bool,
    /// This set's own backup schedule (job `backup:NAME`), instead of `[schedule] backup`.
    pub(super) schedule: Option<Spanned<String>>,
    pub(super) hooks: Option<super::hooks::RawHooks>,
    pub(super) redis: Option<Spanned<super::sources::RawRedis>>,
    pub(super) postgresql: Option<Spanned<super::sources::RawPostgres>>,
    pub(super) differential: Option<Spanned<RawDiff>>,
    pub(super) drill_command: Option<Spanned<String>>,
    pub(super) drill: Option<bool>,
}

impl Validator<'_> {
    /// `[backup]` and its sets, below `state_dir` unless a destination is given.
    pub(super) fn backup(
        &self,
        raw: &RawBackup,
        state_dir: &Path,
        services: &[RawService],
    ) -> Result<BackupConfig, ConfigError> {
        let destination = match &raw.destination {
            Some(s) => self.path(s, "backup.destination")?.value,
            None => state_dir.join("backups"),
        };
        let compression_level = match &raw.compression_level {
            Some(l) if !(1..=19).contains(l.get_ref()) => {
                return Err(self.spanned_err(
                    l,
                    "backup.compression-level",
                    format!("{} is out of range; zstd levels 1 to 19", l.get_ref()),
                ));
            }
            Some(l) => *l.get_ref(),
            None => 3,
        };
        let global_keep = match &raw.keep {
            Some(k) => self.keep(k, "backup.keep")?,
            None => KeepPolicy::default(),
        };
        let global_guard = match &raw.guard {
            Some(g) => self.guard(g, "backup.guard", &GuardConfig::default())?,
            None => GuardConfig::default(),
        };
        let global_diff = match &raw.differential {
            Some(d) => self.differential(d, "backup.differential", &DiffPolicy::default())?,
            None => DiffPolicy::default(),
        };
        let mut sets: Vec<BackupSet> = Vec::new();
        for s in &raw.set {
            let name = s.name.get_ref();
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !name.starts_with('-');
            if !valid_name {
                return Err(self.spanned_err(
                    &s.name,
                    "backup.set.name",
                    format!("{name:?} is not a valid set name; use letters, digits, '-' and '_'"),
                ));
            }
            if sets.iter().any(|o| &o.name == name) {
                return Err(self.spanned_err(
                    &s.name,
                    "backup.set.name",
                    format!("set {name:?} is defined twice"),
                ));
            }
            if s.paths.get_ref().is_empty() {
                return Err(self.spanned_err(
                    &s.paths,
                    "backup.set.paths",
                    format!("set {name:?} has no paths"),
                ));
            }
            let mut paths = Vec::new();
            for p in s.paths.get_ref() {
                let lp = self.path(p, "backup.set.paths")?;
                if lp.value.starts_with(&destination) || destination.starts_with(&lp.value) {
                    return Err(self.spanned_err(
                        p,
                        "backup.set.paths",
                        format!(
                            "{} overlaps the backup destination {}; a backup would archive itself",
                            lp.value.display(),
                            destination.display()
                        ),
                    ));
                }
                paths.push(lp);
            }
            let mut exclude = Vec::new();
            for e in &s.exclude {
                crate::patterns::Excludes::new(std::slice::from_ref(e.get_ref())).map_err(|m| {
                    self.spanned_err(e, "backup.set.exclude", crate::error::chain(&m))
                })?;
                exclude.push(e.get_ref().clone());
            }
            let excludes = crate::patterns::Excludes::new(&exclude).map_err(|m| {
                self.spanned_err(&s.name, "backup.set.exclude", crate::error::chain(&m))
            })?;
            let roots: Vec<PathBuf> = paths.iter().map(|p| p.value.clone()).collect();
            sets.push(BackupSet {
                name: name.clone(),
                paths,
                exclude,
                excludes,
                max_age: s.max_age.map(|d| d.0),
                one_file_system: s.one_file_system,
                keep: match &s.keep {
                    Some(k) => self.keep(k, "backup.set.keep")?,
                    None => global_keep.clone(),
                },
                guard: match &s.guard {
                    Some(g) => self.guard(g, "backup.set.guard", &global_guard)?,
                    None => global_guard.clone(),
                },
                quiesce: {
                    for q in &s.quiesce {
                        if !services.iter().any(|r| r.name.get_ref() == q.get_ref()) {
                            return Err(self.spanned_err(
                                q,
                                "backup.set.quiesce",
                                format!("no [[service]] named {:?}", q.get_ref()),
                            ));
                        }
                    }
                    s.quiesce.iter().map(|q| q.get_ref().clone()).collect()
                },
                quiesce_on_backup: s.quiesce_on_backup,
                hooks: match &s.hooks {
                    Some(h) => self.hooks(h, "backup.set.hooks")?,
                    None => super::Hooks::default(),
                },
                redis: match &s.redis {
                    Some(r) => Some(self.redis(r, &roots)?),
                    None => None,
                },
                postgresql: match &s.postgresql {
                    Some(p) => Some(self.postgresql(p, &roots)?),
                    None => None,
                },
                differential: match &s.differential {
                    Some(d) => self.differential(d, "backup.set.differential", &global_diff)?,
                    None => global_diff.clone(),
                },
                drill_command: match &s.drill_command {
                    Some(c) if c.get_ref().trim().is_empty() => {
                        return Err(self.spanned_err(
                            c,
                            "backup.set.drill-command",
                            "is empty; remove it, or give the command".into(),
                        ));
                    }
                    Some(c) => Some(c.get_ref().clone()),
                    None => None,
                },
                drill: s.drill.unwrap_or(true),
            });
        }
        Ok(BackupConfig {
            destination,
            compression_level,
            threads: raw.threads.unwrap_or(0),
            min_free_space: raw.min_free_space.map_or(0, |s| s.0),
            prune_after_backup: raw.prune_after_backup.unwrap_or(true),
            sets,
        })
    }

    /// `[backup.differential]` or a set's own, over `base`.
    pub(super) fn differential(
        &self,
        d: &Spanned<RawDiff>,
        key: &str,
        base: &DiffPolicy,
    ) -> Result<DiffPolicy, ConfigError> {
        let r = d.get_ref();
        let full_share = match r.full_share {
            None => base.full_share,
            Some(x) if x > 0.0 && x <= 100.0 => x,
            Some(x) => {
                return Err(self.spanned_err(
                    d,
                    &format!("{key}.full-share"),
                    format!("{x} is not a percentage above 0 and at most 100"),
                ));
            }
        };
        Ok(DiffPolicy {
            enabled: r.enabled.unwrap_or(base.enabled),
            full_share,
            full_age: r.full_age.map_or(base.full_age, |a| a.0),
        })
    }

    /// `[backup.guard]` or a set's own, over `base` (keys left out keep base's value).
    pub(super) fn guard(
        &self,
        g: &Spanned<RawGuard>,
        key: &str,
        base: &GuardConfig,
    ) -> Result<GuardConfig, ConfigError> {
        let r = g.get_ref();
        let limit = |v: Option<f64>, name: &str, dflt: f64| -> Result<f64, ConfigError> {
            match v {
                None => Ok(dflt),
                Some(x) if (0.0..=100.0).contains(&x) => Ok(x),
                Some(x) => Err(self.spanned_err(
                    g,
                    &format!("{key}.{name}"),
                    format!("{x} is not a percentage from 0 to 100 (100 turns the limit off)"),
                )),
            }
        };
        Ok(GuardConfig {
            enabled: r.enabled.unwrap_or(base.enabled),
            removed_files: limit(r.removed_files, "removed-files", base.removed_files)?,
            removed_bytes: limit(r.removed_bytes, "removed-bytes", base.removed_bytes)?,
            became_random: limit(r.became_random, "became-random", base.became_random)?,
            sqlite_check: r.sqlite_check.unwrap_or(base.sqlite_check),
            removed_rows: limit(r.removed_rows, "removed-rows", base.removed_rows)?,
            min_rows: r.min_rows.unwrap_or(base.min_rows),
        })
    }

    pub(super) fn keep(&self, k: &Spanned<RawKeep>, key: &str) -> Result<KeepPolicy, ConfigError> {
        let r = k.get_ref();
        let policy = KeepPolicy {
            last: r.last,
            hourly: r.hourly,
            daily: r.daily,
            weekly: r.weekly,
            monthly: r.monthly,
            yearly: r.yearly,
            within: r.within.map(|d| d.0),
        };
        for (name, v) in policy.counts() {
            if let Some(n) = v
                && n < -1
            {
                return Err(self.spanned_err(
                    k,
                    &format!("{key}.{name}"),
                    format!("{n} is not a count; use 0 or more, or -1 for unlimited"),
                ));
            }
        }
        if policy.within.is_some_and(|d| d.is_zero()) {
            return Err(self.spanned_err(
                k,
                &format!("{key}.within"),
                "must be longer than zero".into(),
            ));
        }
        Ok(policy)
    }
}
