//! What a job is: the one typed name of everything steward runs on a schedule or by hand,
//! spelled one way (`check`, `backup`, `backup:SET`, `daily`, `weekly`, `monthly`,
//! `verify`, `prune`, `restore`, `drill`, `drill-offsite`) in the schedule, the catalog, alerts, pings, metrics,
//! unit names and logs. Imports nothing from the crate.

use std::fmt;
use std::str::FromStr;

/// A maintenance period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Period {
    Daily,
    Weekly,
    Monthly,
}

impl Period {
    /// Every period, shortest first.
    pub const ALL: [Period; 3] = [Period::Daily, Period::Weekly, Period::Monthly];

    /// `daily`, `weekly` or `monthly`.
    pub fn name(self) -> &'static str {
        match self {
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
        }
    }
}

/// A job.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Job {
    /// One check cycle.
    Check,
    /// Every backup set without a schedule of its own.
    Backup,
    /// One backup set.
    BackupSet(String),
    /// A period's maintenance tasks.
    Maintain(Period),
    /// Reading the newest backup of each set back.
    Verify,
    /// Retention over every set.
    Prune,
    /// Copies of the newest backups to the offsite targets.
    Offsite,
    /// An interactive restore (never scheduled).
    Restore,
    /// Restore drills: the newest good backup of each set restored into a scratch folder
    /// and checked there, from the local disk.
    Drill,
    /// The same from the `[drill]` offsite target.
    DrillOffsite,
}

/// The jobs `steward run` and `[schedule]` accept, for messages.
pub const SCHEDULABLE: &str = "check, backup, backup:SET, daily, weekly, monthly, verify, prune, offsite, drill, drill-offsite";

/// The `[pings]` keys: a job's own name, and `maintain` for every period.
pub const PING_KEYS: [&str; 9] = [
    "check", "backup", "verify", "maintain", "daily", "weekly", "monthly", "offsite", "drill",
];

/// A name that is no job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job {0:?}; jobs are: {SCHEDULABLE}")]
pub struct UnknownJob(pub String);

impl Job {
    /// Whether `[schedule]` and `steward run` may start it.
    pub fn schedulable(&self) -> bool {
        !matches!(self, Job::Restore)
    }

    /// The lock it runs under: jobs that write the backup destination share one.
    pub fn lock(&self) -> &'static str {
        match self {
            Job::Check => "check",
            Job::Backup | Job::BackupSet(_) | Job::Prune => "backup",
            Job::Maintain(_) => "maintain",
            Job::Verify => "verify",
            Job::Restore => "restore",
            Job::Offsite => "offsite",
            Job::Drill | Job::DrillOffsite => "drill",
        }
    }

    /// The `[pings]` keys it pings.
    pub fn ping_keys(&self) -> Vec<&'static str> {
        match self {
            Job::Check => vec!["check"],
            Job::Backup | Job::BackupSet(_) => vec!["backup"],
            Job::Maintain(p) => vec!["maintain", p.name()],
            Job::Verify => vec!["verify"],
            Job::Offsite => vec!["offsite"],
            Job::Drill | Job::DrillOffsite => vec!["drill"],
            Job::Prune | Job::Restore => vec![],
        }
    }

    /// Jobs that read or write a lot, run at low CPU and I/O priority.
    pub fn heavy(&self) -> bool {
        !matches!(self, Job::Check)
    }

    /// The name in file and unit names (`backup-SET`: a colon is awkward there).
    pub fn file_stem(&self) -> String {
        self.to_string().replace(':', "-")
    }

    /// The name of its alert state.
    pub fn alert_name(&self) -> String {
        format!("job {self}")
    }
}

impl fmt::Display for Job {
    /// Honours width and alignment (`{:<16}`), for tables.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set;
        f.pad(match self {
            Job::Check => "check",
            Job::Backup => "backup",
            Job::BackupSet(s) => {
                set = format!("backup:{s}");
                &set
            }
            Job::Maintain(p) => p.name(),
            Job::Verify => "verify",
            Job::Prune => "prune",
            Job::Restore => "restore",
            Job::Offsite => "offsite",
            Job::Drill => "drill",
            Job::DrillOffsite => "drill-offsite",
        })
    }
}

impl FromStr for Job {
    type Err = UnknownJob;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "check" => Job::Check,
            "backup" => Job::Backup,
            "daily" => Job::Maintain(Period::Daily),
            "weekly" => Job::Maintain(Period::Weekly),
            "monthly" => Job::Maintain(Period::Monthly),
            "verify" => Job::Verify,
            "prune" => Job::Prune,
            "restore" => Job::Restore,
            "offsite" => Job::Offsite,
            "drill" => Job::Drill,
            "drill-offsite" => Job::DrillOffsite,
            _ => match s.strip_prefix("backup:") {
                Some(set) if !set.is_empty() => Job::BackupSet(set.to_string()),
                _ => return Err(UnknownJob(s.to_string())),
            },
        })
    }
}

impl serde::Serialize for Job {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_parses_back_from_its_one_spelling() {
        let jobs = [
            Job::Check,
            Job::Backup,
            Job::BackupSet("models".into()),
            Job::Maintain(Period::Daily),
            Job::Maintain(Period::Weekly),
            Job::Maintain(Period::Monthly),
            Job::Verify,
            Job::Prune,
            Job::Restore,
            Job::Offsite,
            Job::Drill,
            Job::DrillOffsite,
        ];
        for j in jobs {
            assert_eq!(j.to_string().parse::<Job>(), Ok(j.clone()));
        }
        assert_eq!(Job::BackupSet("a".into()).file_stem(), "backup-a");
        assert_eq!(format!("{:<9}|", Job::BackupSet("a".into())), "backup:a |");
        assert!("backup:".parse::<Job>().is_err());
        assert!("maintain".parse::<Job>().is_err());
        assert!(!Job::Restore.schedulable());
    }
}
