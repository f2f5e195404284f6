//! `[maintenance]`: the daily, weekly and monthly tasks, one serde type per task kind
//! (tagged by `kind`), so each kind accepts only its own keys.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::services::RawService;
use super::values::{HumanDuration, Size, ser_duration, ser_opt_duration};
use super::{ConfigError, Validator, expand_path};
use crate::schedule::Period;

/// Maintenance tasks per period.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MaintenanceConfig {
    pub daily: Vec<Task>,
    pub weekly: Vec<Task>,
    pub monthly: Vec<Task>,
}

impl MaintenanceConfig {
    /// The tasks of one period.
    pub fn tasks(&self, period: Period) -> &[Task] {
        match period {
            Period::Daily => &self.daily,
            Period::Weekly => &self.weekly,
            Period::Monthly => &self.monthly,
        }
    }
}

/// One maintenance task.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Task {
    /// SQLite care, in the order given.
    Sqlite {
        databases: Vec<PathBuf>,
        actions: Vec<SqliteAction>,
        quiesce: Vec<String>,
        /// Free space wanted beyond the database's size before VACUUM (which may need a
        /// full copy).
        vacuum_margin: u64,
    },
    /// Log compression and pruning.
    Logs(LogsTask),
    /// Old files in scratch folders.
    Tmp {
        paths: Vec<PathBuf>,
        #[serde(serialize_with = "ser_duration")]
        max_age: Duration,
    },
    /// Read back a share of the verified backups (1.0: all), oldest-checked first.
    VerifyBackups { sample: f64 },
    /// Download a share of the offsite copies (1.0: all), oldest-checked first, and
    /// compare their digests with the upload's.
    VerifyOffsite { sample: f64 },
    /// Forget run history older than this.
    Catalog {
        #[serde(serialize_with = "ser_duration")]
        keep_runs: Duration,
    },
    /// The capacity and activity report (mailed when alerts are configured).
    Report,
}

/// What a SQLite task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SqliteAction {
    WalCheckpoint,
    Vacuum,
    Analyze,
    Optimize,
    IntegrityCheck,
}

/// Log rules.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct LogsTask {
    pub paths: Vec<PathBuf>,
    pub pattern: String,
    #[serde(serialize_with = "ser_opt_duration")]
    pub compress_after: Option<Duration>,
    #[serde(serialize_with = "ser_opt_duration")]
    pub delete_after: Option<Duration>,
    pub max_total_size: Option<u64>,
    pub keep_min_files: usize,
    /// Compress files another process holds open by copying and truncating them
    /// (logrotate's copytruncate); otherwise such files are left alone.
    pub copy_truncate: bool,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawMaintenance {
    #[serde(default)]
    pub(super) daily: RawPeriod,
    #[serde(default)]
    pub(super) weekly: RawPeriod,
    #[serde(default)]
    pub(super) monthly: RawPeriod,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawPeriod {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) task: Vec<Spanned<RawTask>>,
}

/// A task as written: the `kind` picks the variant, and each variant takes only its own
/// keys (`sample` on a sqlite task is an error, not ignored).
#[derive(Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub(super) enum RawTask {
    Sqlite(RawSqliteTask),
    Logs(RawLogsTask),
    Tmp(RawTmpTask),
    VerifyBackups(RawVerifyTask),
    VerifyOffsite(RawVerifyTask),
    Catalog(RawCatalogTask),
    Report(RawReportTask),
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawSqliteTask {
    #[serde(default)]
    databases: Vec<String>,
    #[serde(default)]
    actions: Vec<SqliteAction>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    quiesce: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vacuum_margin: Option<Size>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawLogsTask {
    #[serde(default)]
    paths: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pattern: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    compress_after: Option<HumanDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delete_after: Option<HumanDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_total_size: Option<Size>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keep_min_files: Option<usize>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    copy_truncate: bool,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawTmpTask {
    #[serde(default)]
    paths: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_age: Option<HumanDuration>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawVerifyTask {
    #[serde(skip_serializing_if = "Option::is_none")]
    sample: Option<f64>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawCatalogTask {
    #[serde(skip_serializing_if = "Option::is_none")]
    keep_runs: Option<HumanDuration>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReportTask {}

impl Validator<'_> {
    /// A period's tasks; errors point at the task's table, the keys inside a tagged
    /// table carry no spans of their own.
    pub(super) fn tasks(
        &self,
        raw: &RawPeriod,
        key: &str,
        services: &[RawService],
    ) -> Result<Vec<Task>, ConfigError> {
        let mut out = Vec::new();
        for t in &raw.task {
            let at = t.span().start;
            let bad =
                |field: &str, m: String| self.error_at(at, Some(&format!("{key}.{field}")), m);
            let paths = |kind: &str, list: &[String]| -> Result<Vec<PathBuf>, ConfigError> {
                let field = if kind == "sqlite" {
                    "databases"
                } else {
                    "paths"
                };
                if list.is_empty() {
                    return Err(bad(field, format!("a {kind} task needs `{field}`")));
                }
                list.iter()
                    .map(|p| expand_path(p).map_err(|m| bad(field, m)))
                    .collect()
            };
            let task = match t.get_ref() {
                RawTask::Sqlite(v) => {
                    for q in &v.quiesce {
                        if !services.iter().any(|s| s.name.get_ref() == q) {
                            return Err(bad("quiesce", format!("no [[service]] named {q:?}")));
                        }
                    }
                    if v.actions.is_empty() {
                        return Err(bad("actions", "a sqlite task needs `actions`".into()));
                    }
                    Task::Sqlite {
                        databases: paths("sqlite", &v.databases)?,
                        actions: v.actions.clone(),
                        quiesce: v.quiesce.clone(),
                        vacuum_margin: v.vacuum_margin.map_or(64 << 20, |s| s.0),
                    }
                }
                RawTask::Logs(v) => {
                    let pattern = v.pattern.clone().unwrap_or_else(|| "*.log*".into());
                    globset::Glob::new(&pattern)
                        .map_err(|e| bad("pattern", format!("{pattern:?}: {e}")))?;
                    if v.compress_after.is_none()
                        && v.delete_after.is_none()
                        && v.max_total_size.is_none()
                    {
                        return Err(bad(
                            "compress-after",
                            "a logs task needs compress-after, delete-after or max-total-size"
                                .into(),
                        ));
                    }
                    Task::Logs(LogsTask {
                        paths: paths("logs", &v.paths)?,
                        pattern,
                        compress_after: v.compress_after.map(|d| d.0),
                        delete_after: v.delete_after.map(|d| d.0),
                        max_total_size: v.max_total_size.map(|s| s.0),
                        keep_min_files: v.keep_min_files.unwrap_or(3),
                        copy_truncate: v.copy_truncate,
                    })
                }
                RawTask::Tmp(v) => Task::Tmp {
                    paths: paths("tmp", &v.paths)?,
                    max_age: v
                        .max_age
                        .map(|d| d.0)
                        .ok_or_else(|| bad("max-age", "a tmp task needs `max-age`".into()))?,
                },
                RawTask::VerifyBackups(v) | RawTask::VerifyOffsite(v) => {
                    let sample = v.sample.unwrap_or(1.0);
                    if !(sample > 0.0 && sample <= 1.0) {
                        return Err(bad("sample", format!("{sample} is not a share in (0, 1]")));
                    }
                    if matches!(t.get_ref(), RawTask::VerifyOffsite(_)) {
                        Task::VerifyOffsite { sample }
                    } else {
                        Task::VerifyBackups { sample }
                    }
                }
                RawTask::Catalog(v) => Task::Catalog {
                    keep_runs: v.keep_runs.map_or(Duration::from_hours(2160), |d| d.0),
                },
                RawTask::Report(RawReportTask {}) => Task::Report,
            };
            out.push(task);
        }
        Ok(out)
    }
}
