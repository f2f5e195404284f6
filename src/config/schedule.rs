//! `[schedule]` and `[pings]`: when each job runs, how long it may take, and the URLs it
//! pings.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::backup::RawSet;
use super::values::{HumanDuration, ser_duration};
use super::{ConfigError, Validator};
use crate::schedule::{Job, PING_KEYS, Period};

/// When jobs run (the daemon, and the timers packaging writes).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ScheduleConfig {
    /// Job name (`check`, `backup`, `backup:SET`, `daily`, `weekly`, `monthly`, `verify`,
    /// `prune`) and its schedule, in config order.
    #[serde(serialize_with = "ser_jobs")]
    pub jobs: Vec<(Job, crate::schedule::Cron)>,
    /// Run a job once at start (and after a clock jump) when its last run is older than its
    /// previous scheduled time.
    pub catch_up: bool,
    #[serde(serialize_with = "ser_duration")]
    pub job_timeout: Duration,
    /// How long a running job may finish after SIGTERM before it is killed.
    #[serde(serialize_with = "ser_duration")]
    pub grace_period: Duration,
    /// A Prometheus textfile rewritten after each run.
    pub metrics_file: Option<PathBuf>,
    pub log_json: bool,
}

fn ser_jobs<S: serde::Serializer>(
    jobs: &[(Job, crate::schedule::Cron)],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(jobs.len()))?;
    for (job, cron) in jobs {
        m.serialize_entry(job, &cron.source)?;
    }
    m.end()
}

#[derive(Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawSchedule {
    pub(super) check: Option<Spanned<String>>,
    pub(super) backup: Option<Spanned<String>>,
    pub(super) daily: Option<Spanned<String>>,
    pub(super) weekly: Option<Spanned<String>>,
    pub(super) monthly: Option<Spanned<String>>,
    pub(super) verify: Option<Spanned<String>>,
    pub(super) prune: Option<Spanned<String>>,
    pub(super) offsite: Option<Spanned<String>>,
    pub(super) drill: Option<Spanned<String>>,
    pub(super) drill_offsite: Option<Spanned<String>>,
    pub(super) catch_up: Option<bool>,
    pub(super) job_timeout: Option<HumanDuration>,
    pub(super) grace_period: Option<HumanDuration>,
    pub(super) metrics_file: Option<Spanned<String>>,
    pub(super) log_format: Option<Spanned<String>>,
}

impl Validator<'_> {
    pub(super) fn schedule(
        &self,
        raw: &RawSchedule,
        sets: &[RawSet],
    ) -> Result<ScheduleConfig, ConfigError> {
        let mut jobs = Vec::new();
        let mut add = |job: Job, s: &Spanned<String>, key: &str| -> Result<(), ConfigError> {
            let cron =
                crate::schedule::parse(s.get_ref()).map_err(|m| self.spanned_err(s, key, m))?;
            jobs.push((job, cron));
            Ok(())
        };
        for (job, v) in [
            (Job::Check, &raw.check),
            (Job::Backup, &raw.backup),
            (Job::Maintain(Period::Daily), &raw.daily),
            (Job::Maintain(Period::Weekly), &raw.weekly),
            (Job::Maintain(Period::Monthly), &raw.monthly),
            (Job::Verify, &raw.verify),
            (Job::Prune, &raw.prune),
            (Job::Offsite, &raw.offsite),
            (Job::Drill, &raw.drill),
            (Job::DrillOffsite, &raw.drill_offsite),
        ] {
            if let Some(s) = v {
                let key = format!("schedule.{job}");
                add(job, s, &key)?;
            }
        }
        for set in sets {
            if let Some(s) = &set.schedule {
                add(
                    Job::BackupSet(set.name.get_ref().clone()),
                    s,
                    "backup.set.schedule",
                )?;
            }
        }
        let log_json = match &raw.log_format {
            None => false,
            Some(f) => match f.get_ref().as_str() {
                "plain" => false,
                "json" => true,
                other => {
                    return Err(self.spanned_err(
                        f,
                        "schedule.log-format",
                        format!("{other:?} is not \"plain\" or \"json\""),
                    ));
                }
            },
        };
        Ok(ScheduleConfig {
            jobs,
            catch_up: raw.catch_up.unwrap_or(true),
            job_timeout: raw.job_timeout.map_or(Duration::from_hours(12), |d| d.0),
            grace_period: raw.grace_period.map_or(Duration::from_mins(1), |d| d.0),
            metrics_file: match &raw.metrics_file {
                Some(p) => Some(self.path(p, "schedule.metrics-file")?.value),
                None => None,
            },
            log_json,
        })
    }

    /// `[pings]`: each key a job that pings, each value an http(s) URL.
    pub(super) fn pings(
        &self,
        pings: &BTreeMap<Spanned<String>, Spanned<String>>,
    ) -> Result<(), ConfigError> {
        for (job, url) in pings {
            let key = format!("pings.{}", job.get_ref());
            if !PING_KEYS.contains(&job.get_ref().as_str()) {
                return Err(self.spanned_err(
                    job,
                    &key,
                    format!(
                        "no job {:?} pings; use one of {}",
                        job.get_ref(),
                        PING_KEYS.join(", ")
                    ),
                ));
            }
            let u = url.get_ref();
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(self.spanned_err(
                    url,
                    &key,
                    format!("{u:?} is not an http:// or https:// URL"),
                ));
            }
        }
        Ok(())
    }
}
