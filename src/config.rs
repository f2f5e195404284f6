//! The configuration: finding the file, parsing TOML into raw serde structs, and validating
//! it once into the typed [`Config`] every other module uses.
//!
//! Errors name the file, the line and column, and the dotted key (`backup.set.paths`), so
//! `steward config check` points at the exact place to fix.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::job::{Job, PING_KEYS, Period};
use crate::retention::KeepPolicy;

/// The configuration used when no file is found: state under `~/.local/state/steward`,
/// no backup sets, and the seed thresholds for checks (memory 80 %, CPU 80 %, disk 90 %).
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// The system-wide configuration file, tried after `--config` and `$STEWARD_CONFIG`.
pub const SYSTEM_CONFIG: &str = "/etc/steward/steward.toml";

/// A configuration problem, always naming where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}:{line}:{column}: {key}{message}")]
    Invalid {
        origin: String,
        line: usize,
        column: usize,
        /// Dotted key with a trailing `: `, or empty when the error is not about one key.
        key: String,
        message: String,
    },
}

/// Where the effective configuration came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "path")]
pub enum Origin {
    File(PathBuf),
    Embedded,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Embedded => f.write_str("<embedded default>"),
        }
    }
}

/// A value with the line it was written on, kept for errors found after parsing.
#[derive(Debug, Clone, Serialize)]
pub struct Located<T> {
    pub value: T,
    #[serde(skip)]
    pub line: usize,
    #[serde(skip)]
    pub column: usize,
}

/// The validated configuration.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Config {
    pub origin: Origin,
    pub state_dir: PathBuf,
    pub backup: BackupConfig,
    pub checks: ChecksConfig,
    /// Services, in start order (every service after those it names in `after`).
    pub services: Vec<ServiceConfig>,
    pub alerts: AlertsConfig,
    pub maintenance: MaintenanceConfig,
    pub schedule: ScheduleConfig,
    /// healthchecks.io-style ping URLs per job (`<url>/start`, `<url>`, `<url>/fail`).
    pub pings: std::collections::BTreeMap<String, String>,
    /// The configuration as written, normalized: a valid config that parses back to this
    /// one (what `config check` prints).
    #[serde(skip)]
    pub effective: String,
}

/// A service steward can stop and start around work on its data.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServiceConfig {
    pub name: String,
    pub manager: Manager,
    pub after: Vec<String>,
    pub health_url: Option<String>,
    #[serde(serialize_with = "ser_duration")]
    pub stop_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub start_timeout: Duration,
}

/// How a service is controlled.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Manager {
    /// `systemctl [--user] stop|start|is-active UNIT`.
    Systemd { unit: String, user: bool },
    /// `launchctl bootout|bootstrap|print` in `gui/<uid>` (user) or `system`.
    Launchd {
        label: String,
        user: bool,
        plist: PathBuf,
    },
    /// Shell commands; `status` exits 0 while the service runs.
    Command {
        start: String,
        stop: String,
        status: String,
    },
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

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
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            enabled: true,
            removed_files: 50.0,
            removed_bytes: 50.0,
            became_random: 30.0,
            sqlite_check: true,
        }
    }
}

/// What `steward check` measures, and its limits.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ChecksConfig {
    pub cpu: Limit,
    pub memory: Limit,
    pub swap: Limit,
    /// Load average (1 min) per core.
    pub load: Limit,
    pub disk: Limit,
    pub disk_paths: Vec<PathBuf>,
    /// Free bytes below which a disk path is critical, whatever its percentage.
    pub disk_min_free: Option<u64>,
    pub http: Vec<HttpCheck>,
    pub tcp: Vec<TcpCheck>,
    /// Databases checked with `PRAGMA quick_check`.
    pub sqlite: Vec<PathBuf>,
    pub paths_exist: Vec<PathBuf>,
    pub paths_writable: Vec<PathBuf>,
}

/// A warn/crit pair and how many bad cycles make a problem.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Limit {
    pub warn: f64,
    pub crit: f64,
    pub window: Window,
}

/// A check is in trouble when at least `n` of its last `m` cycles were bad (`for = N` is
/// N of N; the default 1 of 1 reacts at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    pub n: u32,
    pub m: u32,
}

impl Default for Window {
    fn default() -> Self {
        Window { n: 1, m: 1 }
    }
}

/// An HTTP endpoint to watch.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct HttpCheck {
    pub name: String,
    pub url: String,
    pub expect_status: u16,
    pub body_contains: Option<String>,
    #[serde(serialize_with = "ser_opt_duration")]
    pub warn_latency: Option<Duration>,
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    pub window: Window,
}

/// A TCP port that must accept connections.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct TcpCheck {
    pub name: String,
    pub address: String,
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    pub window: Window,
}

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

/// Where alerts go.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AlertsConfig {
    #[serde(serialize_with = "ser_duration")]
    pub remind_every: Duration,
    pub email: Option<EmailConfig>,
}

/// SMTP delivery of alert mails.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct EmailConfig {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: Option<String>,
    /// Where the password comes from; never the config body.
    pub password: Option<PasswordSource>,
    pub from: String,
    pub to: Vec<String>,
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// An extra CA to trust (a self-hosted mail server), besides the system's.
    pub ca_file: Option<PathBuf>,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Security {
    Starttls,
    Tls,
    /// Plain text: only to a server on loopback.
    None,
}

/// Where the SMTP password is read from, at send time.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PasswordSource {
    File(PathBuf),
    Env(String),
}

fn ser_opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        None => s.serialize_none(),
    }
}

// ---------------------------------------------------------------- raw (serde) layer

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    backup: RawBackup,
    #[serde(default)]
    checks: RawChecks,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    service: Vec<RawService>,
    #[serde(default)]
    alerts: RawAlerts,
    #[serde(default)]
    maintenance: RawMaintenance,
    #[serde(default)]
    schedule: RawSchedule,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pings: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawService {
    name: Spanned<String>,
    manager: Spanned<String>,
    unit: Option<String>,
    /// "system" or "user" (systemd: `--user`; launchd: `gui/<uid>`).
    scope: Option<Spanned<String>>,
    plist: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    after: Vec<Spanned<String>>,
    health_url: Option<Spanned<String>>,
    stop_timeout: Option<HumanDuration>,
    start_timeout: Option<HumanDuration>,
    start: Option<String>,
    stop: Option<String>,
    status: Option<String>,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawState {
    dir: Option<Spanned<String>>,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawBackup {
    destination: Option<Spanned<String>>,
    compression_level: Option<Spanned<i32>>,
    threads: Option<u32>,
    min_free_space: Option<Size>,
    prune_after_backup: Option<bool>,
    keep: Option<Spanned<RawKeep>>,
    guard: Option<Spanned<RawGuard>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    set: Vec<RawSet>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawGuard {
    enabled: Option<bool>,
    removed_files: Option<f64>,
    removed_bytes: Option<f64>,
    became_random: Option<f64>,
    sqlite_check: Option<bool>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawKeep {
    last: Option<i64>,
    hourly: Option<i64>,
    daily: Option<i64>,
    weekly: Option<i64>,
    monthly: Option<i64>,
    yearly: Option<i64>,
    within: Option<HumanDuration>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawSet {
    name: Spanned<String>,
    paths: Spanned<Vec<Spanned<String>>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    exclude: Vec<Spanned<String>>,
    max_age: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    one_file_system: bool,
    keep: Option<Spanned<RawKeep>>,
    guard: Option<Spanned<RawGuard>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    quiesce: Vec<Spanned<String>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    quiesce_on_backup: bool,
    /// This set's own backup schedule (job `backup:NAME`), instead of `[schedule] backup`.
    schedule: Option<Spanned<String>>,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawChecks {
    cpu: Option<Spanned<RawLimit>>,
    memory: Option<Spanned<RawLimit>>,
    swap: Option<Spanned<RawLimit>>,
    load: Option<Spanned<RawLimit>>,
    disk: Option<Spanned<RawDisk>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    http: Vec<Spanned<RawHttp>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tcp: Vec<Spanned<RawTcp>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sqlite: Vec<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    paths_exist: Vec<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    paths_writable: Vec<Spanned<String>>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawLimit {
    warn: Option<f64>,
    crit: Option<f64>,
    #[serde(rename = "for")]
    for_cycles: Option<u32>,
    within: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawDisk {
    warn: Option<f64>,
    crit: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    paths: Vec<Spanned<String>>,
    min_free: Option<Size>,
    #[serde(rename = "for")]
    for_cycles: Option<u32>,
    within: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawHttp {
    name: String,
    url: String,
    expect_status: Option<u16>,
    body_contains: Option<String>,
    warn_latency: Option<HumanDuration>,
    timeout: Option<HumanDuration>,
    #[serde(rename = "for")]
    for_cycles: Option<u32>,
    within: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawTcp {
    name: String,
    address: String,
    timeout: Option<HumanDuration>,
    #[serde(rename = "for")]
    for_cycles: Option<u32>,
    within: Option<String>,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawSchedule {
    check: Option<Spanned<String>>,
    backup: Option<Spanned<String>>,
    daily: Option<Spanned<String>>,
    weekly: Option<Spanned<String>>,
    monthly: Option<Spanned<String>>,
    verify: Option<Spanned<String>>,
    prune: Option<Spanned<String>>,
    catch_up: Option<bool>,
    job_timeout: Option<HumanDuration>,
    grace_period: Option<HumanDuration>,
    metrics_file: Option<Spanned<String>>,
    log_format: Option<String>,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawMaintenance {
    #[serde(default)]
    daily: RawPeriod,
    #[serde(default)]
    weekly: RawPeriod,
    #[serde(default)]
    monthly: RawPeriod,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawPeriod {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    task: Vec<Spanned<RawTask>>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawTask {
    kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    databases: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    actions: Vec<SqliteAction>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    quiesce: Vec<String>,
    vacuum_margin: Option<Size>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    paths: Vec<String>,
    pattern: Option<String>,
    compress_after: Option<HumanDuration>,
    delete_after: Option<HumanDuration>,
    max_total_size: Option<Size>,
    keep_min_files: Option<usize>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    copy_truncate: bool,
    max_age: Option<HumanDuration>,
    sample: Option<f64>,
    keep_runs: Option<HumanDuration>,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawAlerts {
    remind_every: Option<HumanDuration>,
    email: Option<Spanned<RawEmail>>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawEmail {
    smtp: String,
    security: Option<Security>,
    username: Option<String>,
    password_file: Option<Spanned<String>>,
    password_env: Option<String>,
    from: String,
    to: Vec<String>,
    timeout: Option<HumanDuration>,
    ca_file: Option<Spanned<String>>,
}

/// A duration written like `26h`, `30d` or `1h 30m`.
#[derive(Debug, Clone, Copy)]
struct HumanDuration(Duration);

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses `26h`, `30d`, `90s`, `1h 30m` into a duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("invalid duration {s:?} ({e}); write it like \"90s\", \"26h\", \"30d\"")
    })
}

/// A byte size written like `10GiB`, `500 MB` or a plain number of bytes.
#[derive(Debug, Clone, Copy)]
struct Size(u64);

impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            N(u64),
            S(String),
        }
        match Either::deserialize(d)? {
            Either::N(n) => Ok(Size(n)),
            Either::S(s) => parse_size(&s).map(Size).map_err(serde::de::Error::custom),
        }
    }
}

/// Parses `10GiB`, `1.5 GB`, `512k` into bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    match s.trim().parse::<bytesize::ByteSize>().map(|b| b.as_u64()) {
        // bytesize saturates instead of failing.
        Ok(u64::MAX) => Err(format!(
            "size {s:?} is larger than the largest steward handles (16 EiB)"
        )),
        Ok(n) => Ok(n),
        Err(e) => Err(format!(
            "invalid size {s:?} ({e}); write it like \"10GiB\" or \"500MB\""
        )),
    }
}

// ---------------------------------------------------------------- loading

/// Which file to load: `--config`, else `$STEWARD_CONFIG`, else the system file, else the
/// user's file, else the embedded default. `home` is `$HOME` as the caller sees it.
pub fn locate(
    explicit: Option<&Path>,
    env_config: Option<&str>,
    home: Option<&Path>,
) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = env_config.filter(|s| !s.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let system = Path::new(SYSTEM_CONFIG);
    if system.is_file() {
        return Some(system.to_path_buf());
    }
    let user = home?.join(".config/steward/steward.toml");
    user.is_file().then_some(user)
}

/// Reads and validates the configuration at `path`, or the embedded default when `None`.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => {
            let bytes = std::fs::read(p).map_err(|source| ConfigError::Read {
                path: p.to_path_buf(),
                source,
            })?;
            let origin = Origin::File(p.to_path_buf());
            match String::from_utf8(bytes) {
                Ok(text) => parse(&text, origin),
                Err(e) => {
                    // Located like any other error: the line and column of the first byte
                    // that is not UTF-8.
                    let at = e.utf8_error().valid_up_to();
                    let bytes = e.into_bytes();
                    let valid = String::from_utf8_lossy(&bytes[..at]).into_owned();
                    let v = Validator {
                        text: &valid,
                        origin: &origin,
                    };
                    Err(v.error_at(
                        at,
                        None,
                        format!(
                            "the file is not UTF-8 text (byte 0x{:02x}); save it as UTF-8",
                            bytes[at]
                        ),
                    ))
                }
            }
        }
        None => parse(EMBEDDED_DEFAULT, Origin::Embedded),
    }
}

/// Parses and validates configuration text; `origin` is used in errors.
pub fn parse(text: &str, origin: Origin) -> Result<Config, ConfigError> {
    let v = Validator {
        text,
        origin: &origin,
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        v.error_at(offset, None, e.message().to_string())
    })?;
    let effective = toml::to_string_pretty(&raw)
        .unwrap_or_else(|e| format!("# the configuration cannot be printed: {e}\n"));
    let mut cfg = v.validate(raw)?;
    cfg.effective = effective;
    Ok(cfg)
}

/// The table name of a header line: `[backup]   # note` and `[[backup.set]]` give
/// `backup` and `backup.set` (a trailing comment is not part of it).
fn header_name(line: &str) -> String {
    let inner = line.trim_start_matches('[');
    inner
        .split(']')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The default window of the checks whose readings jump from one sample to the next (CPU
/// over one sampling interval, load): 3 of the last 5 cycles, so one busy minute does not
/// mail. An explicit `for` or `within` replaces it.
pub const NOISY_WINDOW: Window = Window { n: 3, m: 5 };

fn noisy(mut l: Limit, raw: Option<&Spanned<RawLimit>>) -> Limit {
    let given =
        raw.is_some_and(|r| r.get_ref().for_cycles.is_some() || r.get_ref().within.is_some());
    if !given {
        l.window = NOISY_WINDOW;
    }
    l
}

struct Validator<'a> {
    text: &'a str,
    origin: &'a Origin,
}

impl Validator<'_> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    /// The dotted key written at `offset`: the nearest table header above it plus the key
    /// on that line, so a type error deep in serde still names `backup.set.paths`.
    fn key_at(&self, offset: usize) -> Option<String> {
        let offset = offset.min(self.text.len());
        let line_start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[offset..]
            .find('\n')
            .map_or(self.text.len(), |i| offset + i);
        let line = &self.text[line_start..line_end];
        // An error on a header line (a table missing a field) is about that table.
        if line.trim_start().starts_with('[') {
            return Some(header_name(line.trim()));
        }
        let header = self.text[..line_start]
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(header_name);
        let key = line
            .split_once('=')
            .map(|(k, _)| k.trim().trim_matches('"').to_string())
            .filter(|k| !k.is_empty() && !k.starts_with('#') && !k.starts_with('['));
        match (header, key) {
            (Some(h), Some(k)) => Some(format!("{h}.{k}")),
            (None, Some(k)) => Some(k),
            (Some(h), None) => Some(h),
            (None, None) => None,
        }
    }

    fn error_at(&self, offset: usize, key: Option<&str>, message: String) -> ConfigError {
        let (line, column) = self.line_col(offset);
        let key = key.map(str::to_string).or_else(|| self.key_at(offset));
        ConfigError::Invalid {
            origin: self.origin.to_string(),
            line,
            column,
            key: key.map(|k| format!("{k}: ")).unwrap_or_default(),
            message,
        }
    }

    fn spanned_err<T>(&self, s: &Spanned<T>, key: &str, message: String) -> ConfigError {
        self.error_at(s.span().start, Some(key), message)
    }

    fn path(&self, s: &Spanned<String>, key: &str) -> Result<Located<PathBuf>, ConfigError> {
        let p = expand_path(s.get_ref()).map_err(|m| self.spanned_err(s, key, m))?;
        let (line, column) = self.line_col(s.span().start);
        Ok(Located {
            value: p,
            line,
            column,
        })
    }

    fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let state_dir = match &raw.state.dir {
            Some(s) => {
                let p = self.path(s, "state.dir")?.value;
                // The catalog, locks and journals go there: it must be a folder of its own.
                let why = if p.parent().is_none() {
                    Some("is the root folder; give steward a folder of its own".to_string())
                } else {
                    match std::fs::metadata(&p) {
                        Ok(m) if !m.is_dir() => Some("exists and is not a folder".to_string()),
                        _ => None,
                    }
                };
                if let Some(why) = why {
                    return Err(self.spanned_err(s, "state.dir", format!("{} {why}", p.display())));
                }
                p
            }
            None => expand_path("~/.local/state/steward")
                .map_err(|m| self.error_at(0, Some("state.dir"), m))?,
        };
        let destination = match &raw.backup.destination {
            Some(s) => self.path(s, "backup.destination")?.value,
            None => state_dir.join("backups"),
        };
        let compression_level = match &raw.backup.compression_level {
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
        let global_keep = match &raw.backup.keep {
            Some(k) => self.keep(k, "backup.keep")?,
            None => KeepPolicy::default(),
        };
        let global_guard = match &raw.backup.guard {
            Some(g) => self.guard(g, "backup.guard", &GuardConfig::default())?,
            None => GuardConfig::default(),
        };
        let mut sets: Vec<BackupSet> = Vec::new();
        for s in &raw.backup.set {
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
                        if !raw.service.iter().any(|r| r.name.get_ref() == q.get_ref()) {
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
            });
        }
        let checks = self.checks(&raw.checks)?;
        let alerts = self.alerts(&raw.alerts)?;
        let schedule = self.schedule(&raw.schedule, &raw.backup.set)?;
        let maintenance = MaintenanceConfig {
            daily: self.tasks(
                &raw.maintenance.daily,
                "maintenance.daily.task",
                &raw.service,
            )?,
            weekly: self.tasks(
                &raw.maintenance.weekly,
                "maintenance.weekly.task",
                &raw.service,
            )?,
            monthly: self.tasks(
                &raw.maintenance.monthly,
                "maintenance.monthly.task",
                &raw.service,
            )?,
        };
        for (job, url) in &raw.pings {
            if !PING_KEYS.contains(&job.as_str()) {
                let at = self.text.find(&format!("\n{job}")).map_or(0, |i| i + 1);
                return Err(self.error_at(
                    at,
                    Some(&format!("pings.{job}")),
                    format!("no job {job:?} pings; use one of {}", PING_KEYS.join(", ")),
                ));
            }
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(self.error_at(
                    self.text.find(url.as_str()).unwrap_or(0),
                    Some(&format!("pings.{job}")),
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
        }
        let services = self.services(&raw.service)?;
        Ok(Config {
            origin: self.origin.clone(),
            services,
            alerts,
            maintenance,
            schedule,
            pings: raw.pings.clone(),
            effective: String::new(),
            state_dir,
            backup: BackupConfig {
                destination,
                compression_level,
                threads: raw.backup.threads.unwrap_or(0),
                min_free_space: raw.backup.min_free_space.map_or(0, |s| s.0),
                prune_after_backup: raw.backup.prune_after_backup.unwrap_or(true),
                sets,
            },
            checks,
        })
    }

    /// Validates `[[service]]` entries and orders them so each starts after its `after`.
    fn services(&self, raw: &[RawService]) -> Result<Vec<ServiceConfig>, ConfigError> {
        let mut out: Vec<ServiceConfig> = Vec::new();
        for r in raw {
            let name = r.name.get_ref();
            if name.is_empty() || raw.iter().filter(|o| o.name.get_ref() == name).count() > 1 {
                return Err(self.spanned_err(
                    &r.name,
                    "service.name",
                    format!("service name {name:?} is empty or defined twice"),
                ));
            }
            let user = match r.scope.as_ref().map(|s| s.get_ref().as_str()) {
                None => r.manager.get_ref() == "launchd",
                Some("user") => true,
                Some("system") => false,
                Some(other) => {
                    return Err(self.spanned_err(
                        r.scope.as_ref().expect("scope present"),
                        "service.scope",
                        format!("{other:?} is not \"system\" or \"user\""),
                    ));
                }
            };
            let need = |v: &Option<String>, key: &str| {
                v.clone().filter(|s| !s.trim().is_empty()).ok_or_else(|| {
                    self.spanned_err(
                        &r.manager,
                        &format!("service.{key}"),
                        format!("service {name:?} ({}) needs `{key}`", r.manager.get_ref()),
                    )
                })
            };
            let manager = match r.manager.get_ref().as_str() {
                "systemd" => Manager::Systemd {
                    unit: need(&r.unit, "unit")?,
                    user,
                },
                "launchd" => {
                    let label = need(&r.unit, "unit")?;
                    let plist = match &r.plist {
                        Some(p) => self.path(p, "service.plist")?.value,
                        None if user => {
                            expand_path(&format!("~/Library/LaunchAgents/{label}.plist"))
                                .map_err(|m| self.spanned_err(&r.manager, "service.plist", m))?
                        }
                        None => PathBuf::from(format!("/Library/LaunchDaemons/{label}.plist")),
                    };
                    Manager::Launchd { label, user, plist }
                }
                "command" => Manager::Command {
                    start: need(&r.start, "start")?,
                    stop: need(&r.stop, "stop")?,
                    status: need(&r.status, "status")?,
                },
                other => {
                    return Err(self.spanned_err(
                        &r.manager,
                        "service.manager",
                        format!("{other:?} is not one of \"systemd\", \"launchd\", \"command\""),
                    ));
                }
            };
            for a in &r.after {
                if !raw.iter().any(|o| o.name.get_ref() == a.get_ref()) {
                    return Err(self.spanned_err(
                        a,
                        "service.after",
                        format!("no [[service]] named {:?}", a.get_ref()),
                    ));
                }
            }
            if let Some(u) = &r.health_url
                && !(u.get_ref().starts_with("http://") || u.get_ref().starts_with("https://"))
            {
                return Err(self.spanned_err(
                    u,
                    "service.health-url",
                    format!("{:?} is not an http:// or https:// URL", u.get_ref()),
                ));
            }
            out.push(ServiceConfig {
                name: name.clone(),
                manager,
                after: r.after.iter().map(|a| a.get_ref().clone()).collect(),
                health_url: r.health_url.as_ref().map(|u| u.get_ref().clone()),
                stop_timeout: r.stop_timeout.map_or(Duration::from_secs(30), |d| d.0),
                start_timeout: r.start_timeout.map_or(Duration::from_secs(60), |d| d.0),
            });
        }
        // Order: each service after everything in its `after` (Kahn's algorithm, stable).
        let mut ordered: Vec<ServiceConfig> = Vec::new();
        let mut pending = out;
        while !pending.is_empty() {
            let ready = pending
                .iter()
                .position(|s| s.after.iter().all(|a| ordered.iter().any(|o| &o.name == a)));
            match ready {
                Some(i) => ordered.push(pending.remove(i)),
                None => {
                    let names: Vec<_> = pending.iter().map(|s| s.name.as_str()).collect();
                    let first = raw
                        .iter()
                        .find(|r| r.name.get_ref() == names[0])
                        .expect("pending service is configured");
                    return Err(self.spanned_err(
                        &first.name,
                        "service.after",
                        format!(
                            "services {} depend on each other in a cycle",
                            names.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(ordered)
    }

    /// `[backup.guard]` or a set's own, over `base` (keys left out keep base's value).
    fn guard(
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
        })
    }

    fn keep(&self, k: &Spanned<RawKeep>, key: &str) -> Result<KeepPolicy, ConfigError> {
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

    fn window(
        &self,
        for_cycles: Option<u32>,
        within: &Option<String>,
        at: usize,
        key: &str,
    ) -> Result<Window, ConfigError> {
        let bad = |m: String| self.error_at(at, Some(key), m);
        match (for_cycles, within) {
            (Some(_), Some(_)) => Err(bad("give `for` or `within`, not both".into())),
            (Some(0), None) => Err(bad("`for` must be at least 1".into())),
            (Some(n), None) if n > 32 => Err(bad("`for` must be at most 32".into())),
            (Some(n), None) => Ok(Window { n, m: n }),
            (None, Some(s)) => {
                let parsed = s.split_once(" of ").and_then(|(n, m)| {
                    Some((n.trim().parse::<u32>().ok()?, m.trim().parse::<u32>().ok()?))
                });
                match parsed {
                    Some((n, m)) if n >= 1 && n <= m && m <= 32 => Ok(Window { n, m }),
                    _ => Err(bad(format!(
                        "within {s:?} must read \"N of M\" with 1 <= N <= M <= 32"
                    ))),
                }
            }
            (None, None) => Ok(Window::default()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn limit_values(
        &self,
        warn: Option<f64>,
        crit: Option<f64>,
        for_cycles: Option<u32>,
        within: &Option<String>,
        at: usize,
        key: &str,
        percent: bool,
        default: (f64, f64),
    ) -> Result<Limit, ConfigError> {
        let (warn, crit) = (warn.unwrap_or(default.0), crit.unwrap_or(default.1));
        let in_range = |x: f64| x >= 0.0 && (!percent || x <= 100.0);
        if !in_range(warn) || !in_range(crit) || warn > crit {
            return Err(self.error_at(
                at,
                Some(key),
                format!(
                    "warn {warn} and crit {crit} must be {}with warn <= crit",
                    if percent {
                        "percentages "
                    } else {
                        "zero or more "
                    }
                ),
            ));
        }
        Ok(Limit {
            warn,
            crit,
            window: self.window(for_cycles, within, at, key)?,
        })
    }

    fn limit(
        &self,
        raw: Option<&Spanned<RawLimit>>,
        key: &str,
        percent: bool,
        default: (f64, f64),
    ) -> Result<Limit, ConfigError> {
        match raw {
            None => Ok(Limit {
                warn: default.0,
                crit: default.1,
                window: Window::default(),
            }),
            Some(r) => {
                let v = r.get_ref();
                self.limit_values(
                    v.warn,
                    v.crit,
                    v.for_cycles,
                    &v.within,
                    r.span().start,
                    key,
                    percent,
                    default,
                )
            }
        }
    }

    fn checks(&self, raw: &RawChecks) -> Result<ChecksConfig, ConfigError> {
        let paths = |v: &[Spanned<String>], key: &str| -> Result<Vec<PathBuf>, ConfigError> {
            v.iter()
                .map(|p| self.path(p, key).map(|l| l.value))
                .collect()
        };
        let (disk, disk_paths, disk_min_free) = match &raw.disk {
            None => (
                Limit {
                    warn: 90.0,
                    crit: 95.0,
                    window: Window::default(),
                },
                vec![PathBuf::from("/")],
                None,
            ),
            Some(d) => {
                let v = d.get_ref();
                let limit = self.limit_values(
                    v.warn,
                    v.crit,
                    v.for_cycles,
                    &v.within,
                    d.span().start,
                    "checks.disk",
                    true,
                    (90.0, 95.0),
                )?;
                let p = paths(&v.paths, "checks.disk.paths")?;
                let p = if p.is_empty() {
                    vec![PathBuf::from("/")]
                } else {
                    p
                };
                (limit, p, v.min_free.map(|s| s.0))
            }
        };
        let mut http = Vec::new();
        for h in &raw.http {
            let v = h.get_ref();
            if !(v.url.starts_with("http://") || v.url.starts_with("https://")) {
                return Err(self.spanned_err(
                    h,
                    "checks.http.url",
                    format!("{:?} is not an http:// or https:// URL", v.url),
                ));
            }
            http.push(HttpCheck {
                name: v.name.clone(),
                url: v.url.clone(),
                expect_status: v.expect_status.unwrap_or(200),
                body_contains: v.body_contains.clone(),
                warn_latency: v.warn_latency.map(|d| d.0),
                timeout: v.timeout.map_or(Duration::from_secs(10), |d| d.0),
                window: self.window(v.for_cycles, &v.within, h.span().start, "checks.http")?,
            });
        }
        let mut tcp = Vec::new();
        for t in &raw.tcp {
            let v = t.get_ref();
            if !v.address.contains(':') {
                return Err(self.spanned_err(
                    t,
                    "checks.tcp.address",
                    format!("{:?} is not host:port", v.address),
                ));
            }
            tcp.push(TcpCheck {
                name: v.name.clone(),
                address: v.address.clone(),
                timeout: v.timeout.map_or(Duration::from_secs(5), |d| d.0),
                window: self.window(v.for_cycles, &v.within, t.span().start, "checks.tcp")?,
            });
        }
        Ok(ChecksConfig {
            cpu: noisy(
                self.limit(raw.cpu.as_ref(), "checks.cpu", true, (80.0, 95.0))?,
                raw.cpu.as_ref(),
            ),
            memory: self.limit(raw.memory.as_ref(), "checks.memory", true, (80.0, 95.0))?,
            swap: self.limit(raw.swap.as_ref(), "checks.swap", true, (50.0, 80.0))?,
            load: noisy(
                self.limit(raw.load.as_ref(), "checks.load", false, (2.0, 4.0))?,
                raw.load.as_ref(),
            ),
            disk,
            disk_paths,
            disk_min_free,
            http,
            tcp,
            sqlite: paths(&raw.sqlite, "checks.sqlite")?,
            paths_exist: paths(&raw.paths_exist, "checks.paths-exist")?,
            paths_writable: paths(&raw.paths_writable, "checks.paths-writable")?,
        })
    }

    fn schedule(&self, raw: &RawSchedule, sets: &[RawSet]) -> Result<ScheduleConfig, ConfigError> {
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
        let log_json = match raw.log_format.as_deref() {
            None | Some("plain") => false,
            Some("json") => true,
            Some(other) => {
                return Err(self.error_at(
                    self.text.find("log-format").unwrap_or(0),
                    Some("schedule.log-format"),
                    format!("{other:?} is not \"plain\" or \"json\""),
                ));
            }
        };
        Ok(ScheduleConfig {
            jobs,
            catch_up: raw.catch_up.unwrap_or(true),
            job_timeout: raw
                .job_timeout
                .map_or(Duration::from_secs(12 * 3600), |d| d.0),
            grace_period: raw.grace_period.map_or(Duration::from_secs(60), |d| d.0),
            metrics_file: match &raw.metrics_file {
                Some(p) => Some(self.path(p, "schedule.metrics-file")?.value),
                None => None,
            },
            log_json,
        })
    }

    fn tasks(
        &self,
        raw: &RawPeriod,
        key: &str,
        services: &[RawService],
    ) -> Result<Vec<Task>, ConfigError> {
        let mut out = Vec::new();
        for t in &raw.task {
            let v = t.get_ref();
            let at = t.span().start;
            let bad =
                |field: &str, m: String| self.error_at(at, Some(&format!("{key}.{field}")), m);
            let paths = |list: &[String], field: &str| -> Result<Vec<PathBuf>, ConfigError> {
                if list.is_empty() {
                    return Err(bad(field, format!("a {} task needs `{field}`", v.kind)));
                }
                list.iter()
                    .map(|p| expand_path(p).map_err(|m| bad(field, m)))
                    .collect()
            };
            for q in &v.quiesce {
                if !services.iter().any(|s| s.name.get_ref() == q) {
                    return Err(bad("quiesce", format!("no [[service]] named {q:?}")));
                }
            }
            let task = match v.kind.as_str() {
                "sqlite" => {
                    if v.actions.is_empty() {
                        return Err(bad("actions", "a sqlite task needs `actions`".into()));
                    }
                    Task::Sqlite {
                        databases: paths(&v.databases, "databases")?,
                        actions: v.actions.clone(),
                        quiesce: v.quiesce.clone(),
                        vacuum_margin: v.vacuum_margin.map_or(64 << 20, |s| s.0),
                    }
                }
                "logs" => {
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
                        paths: paths(&v.paths, "paths")?,
                        pattern,
                        compress_after: v.compress_after.map(|d| d.0),
                        delete_after: v.delete_after.map(|d| d.0),
                        max_total_size: v.max_total_size.map(|s| s.0),
                        keep_min_files: v.keep_min_files.unwrap_or(3),
                        copy_truncate: v.copy_truncate,
                    })
                }
                "tmp" => Task::Tmp {
                    paths: paths(&v.paths, "paths")?,
                    max_age: v
                        .max_age
                        .map(|d| d.0)
                        .ok_or_else(|| bad("max-age", "a tmp task needs `max-age`".into()))?,
                },
                "verify-backups" => {
                    let sample = v.sample.unwrap_or(1.0);
                    if !(sample > 0.0 && sample <= 1.0) {
                        return Err(bad("sample", format!("{sample} is not a share in (0, 1]")));
                    }
                    Task::VerifyBackups { sample }
                }
                "catalog" => Task::Catalog {
                    keep_runs: v.keep_runs.map_or(Duration::from_secs(90 * 86400), |d| d.0),
                },
                "report" => Task::Report,
                other => {
                    return Err(bad(
                        "kind",
                        format!(
                            "{other:?} is not one of sqlite, logs, tmp, verify-backups, catalog, report"
                        ),
                    ));
                }
            };
            out.push(task);
        }
        Ok(out)
    }

    fn alerts(&self, raw: &RawAlerts) -> Result<AlertsConfig, ConfigError> {
        let remind_every = raw
            .remind_every
            .map_or(Duration::from_secs(6 * 3600), |d| d.0);
        let Some(e) = &raw.email else {
            return Ok(AlertsConfig {
                remind_every,
                email: None,
            });
        };
        let v = e.get_ref();
        let bad = |key: &str, m: String| self.spanned_err(e, &format!("alerts.email.{key}"), m);
        let (host, port) = match v.smtp.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() => (
                h.trim_matches(|c| c == '[' || c == ']').to_string(),
                p.parse::<u16>()
                    .map_err(|_| bad("smtp", format!("{:?} has no valid port", v.smtp)))?,
            ),
            _ => return Err(bad("smtp", format!("{:?} is not host:port", v.smtp))),
        };
        let security = v.security.unwrap_or(Security::Starttls);
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if security == Security::None && !loopback {
            return Err(bad(
                "security",
                format!(
                    "\"none\" sends mail and passwords in clear text: only allowed to a server on loopback, not {host}"
                ),
            ));
        }
        if v.to.is_empty() {
            return Err(bad("to", "no recipients".into()));
        }
        for addr in v.to.iter().chain(std::iter::once(&v.from)) {
            if addr.parse::<lettre::message::Mailbox>().is_err() {
                return Err(bad("to", format!("{addr:?} is not a mail address")));
            }
        }
        let password = match (&v.password_file, &v.password_env) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "password-file",
                    "give password-file or password-env, not both".into(),
                ));
            }
            (Some(f), None) => Some(PasswordSource::File(
                self.path(f, "alerts.email.password-file")?.value,
            )),
            (None, Some(env)) => Some(PasswordSource::Env(env.clone())),
            (None, None) => None,
        };
        if password.is_some() != v.username.is_some() {
            return Err(bad(
                "username",
                "username and a password source go together".into(),
            ));
        }
        Ok(AlertsConfig {
            remind_every,
            email: Some(EmailConfig {
                host,
                port,
                security,
                username: v.username.clone(),
                password,
                from: v.from.clone(),
                to: v.to.clone(),
                timeout: v.timeout.map_or(Duration::from_secs(30), |d| d.0),
                ca_file: match &v.ca_file {
                    Some(f) => Some(self.path(f, "alerts.email.ca-file")?.value),
                    None => None,
                },
            }),
        })
    }
}

/// Expands `~` and `$VAR` and makes the path absolute and free of `.`/`..`.
pub fn expand_path(s: &str) -> Result<PathBuf, String> {
    let expanded = shellexpand::full(s).map_err(|e| format!("cannot expand {s:?}: {e}"))?;
    let p = PathBuf::from(expanded.as_ref());
    if !p.is_absolute() {
        return Err(format!(
            "{s:?} is not an absolute path (start it with '/', '~' or a $VARIABLE)"
        ));
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

impl Config {
    /// The set with this name, or an error listing the known ones.
    pub fn set(&self, name: &str) -> Option<&BackupSet> {
        self.backup.sets.iter().find(|s| s.name == name)
    }

    /// Checks that every backup path exists; done by the commands that back up, so that a
    /// missing external volume does not stop unrelated jobs such as checks.
    pub fn check_set_paths(&self, sets: &[&BackupSet]) -> Result<(), ConfigError> {
        for set in sets {
            for p in &set.paths {
                if let Err(e) = std::fs::symlink_metadata(&p.value) {
                    return Err(ConfigError::Invalid {
                        origin: self.origin.to_string(),
                        line: p.line,
                        column: p.column,
                        key: "backup.set.paths: ".into(),
                        message: format!(
                            "set {:?}: path {} cannot be read: {e}",
                            set.name,
                            p.value.display()
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text, Origin::File("/x/s.toml".into()))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn embedded_default_parses_with_seed_thresholds() {
        let c = parse(EMBEDDED_DEFAULT, Origin::Embedded).unwrap();
        assert!(c.backup.sets.is_empty());
        assert_eq!(c.checks.memory.warn, 80.0);
        assert_eq!(c.checks.cpu.warn, 80.0);
        assert_eq!(c.checks.disk.warn, 90.0);
        assert_eq!(c.checks.disk_paths, [PathBuf::from("/")]);
        assert!(c.alerts.email.is_none());
        assert!(c.state_dir.ends_with(".local/state/steward"));
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = err("[backup]\ndestination = \"/b\"\ncolour = 3\n");
        assert!(e.starts_with("/x/s.toml:3:"), "{e}");
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn wrong_type_names_dotted_key() {
        let e = err("[backup]\ncompression-level = \"high\"\n");
        assert!(e.starts_with("/x/s.toml:2:"), "{e}");
        assert!(e.contains("backup.compression-level"), "{e}");
    }

    #[test]
    fn bad_duration_and_size_are_explained() {
        let e = err(
            "[backup]\ndestination = \"/b\"\n[[backup.set]]\nname = \"a\"\npaths = [\"/a\"]\nmax-age = \"soon\"\n",
        );
        assert!(e.starts_with("/x/s.toml:6:"), "{e}");
        assert!(e.contains("invalid duration"), "{e}");
        let e = err("[backup]\nmin-free-space = \"lots\"\n");
        assert!(e.contains("invalid size"), "{e}");
    }

    #[test]
    fn durations_sizes_and_paths_expand() {
        assert_eq!(
            parse_duration("26h").unwrap(),
            Duration::from_secs(26 * 3600)
        );
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86400)
        );
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(expand_path("/a/./b/../c").unwrap(), PathBuf::from("/a/c"));
        assert!(expand_path("relative/x").is_err());
    }

    #[test]
    fn guard_limits_default_merge_per_set_and_are_checked() {
        let c = parse(
            "[backup]\ndestination = \"/b\"\n[backup.guard]\nremoved-files = 70\n\
             [[backup.set]]\nname = \"a\"\npaths = [\"/a\"]\n\
             [[backup.set]]\nname = \"b\"\npaths = [\"/c\"]\n[backup.set.guard]\nbecame-random = 90\n",
            Origin::Embedded,
        )
        .unwrap();
        let (a, b) = (&c.backup.sets[0].guard, &c.backup.sets[1].guard);
        assert_eq!(
            (a.removed_files, a.became_random, a.removed_bytes),
            (70.0, 30.0, 50.0)
        );
        assert_eq!((b.removed_files, b.became_random), (70.0, 90.0));
        let e = err("[backup.guard]\nremoved-bytes = 150\n");
        assert!(
            e.contains("backup.guard.removed-bytes") && e.contains(":1:"),
            "{e}"
        );
        let e = err("[backup.guard]\nsample = 3\n");
        assert!(e.contains("sample"), "{e}");
    }

    /// Regression: CPU and load alerted on a single sample by default, so one busy minute
    /// (CPU read 0 % and 100 % seconds apart on an idle machine) mailed.
    #[test]
    fn regression_noisy_checks_default_to_three_of_five_cycles() {
        let c = parse("", Origin::Embedded).unwrap();
        assert_eq!(c.checks.cpu.window, NOISY_WINDOW);
        assert_eq!(c.checks.load.window, NOISY_WINDOW);
        assert_eq!(c.checks.memory.window, Window::default());
        let c = parse("[checks.cpu]\nfor = 1\n", Origin::Embedded).unwrap();
        assert_eq!(c.checks.cpu.window, Window { n: 1, m: 1 });
    }

    #[test]
    fn set_keep_overrides_the_global_policy() {
        let c = parse(
            "[backup]\ndestination = \"/b\"\n[backup.keep]\ndaily = 7\nwithin = \"2d\"\n\
             [[backup.set]]\nname = \"a\"\npaths = [\"/a\"]\n\
             [[backup.set]]\nname = \"b\"\npaths = [\"/c\"]\n[backup.set.keep]\nlast = 3\n",
            Origin::Embedded,
        )
        .unwrap();
        assert_eq!(c.backup.sets[0].keep.daily, Some(7));
        assert_eq!(
            c.backup.sets[0].keep.within,
            Some(Duration::from_secs(2 * 86400))
        );
        assert_eq!(c.backup.sets[1].keep.last, Some(3));
        assert_eq!(c.backup.sets[1].keep.daily, None);
        assert!(c.backup.prune_after_backup);
        let e = err("[backup.keep]\ndaily = -5\n");
        assert!(e.contains("backup.keep.daily"), "{e}");
    }

    #[test]
    fn services_are_ordered_and_validated() {
        let c = parse(
            "[[service]]\nname = \"web\"\nmanager = \"systemd\"\nunit = \"web.service\"\nafter = [\"api\"]\n\
             [[service]]\nname = \"api\"\nmanager = \"command\"\nstart = \"a\"\nstop = \"b\"\nstatus = \"c\"\n\
             [[service]]\nname = \"ollama\"\nmanager = \"launchd\"\nunit = \"com.ollama.ollama\"\n",
            Origin::Embedded,
        )
        .unwrap();
        let names: Vec<_> = c.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["api", "web", "ollama"]);
        assert!(matches!(
            c.services[2].manager,
            Manager::Launchd { user: true, .. }
        ));
        assert!(matches!(
            c.services[1].manager,
            Manager::Systemd { user: false, .. }
        ));
        let e = err("[[service]]\nname = \"a\"\nmanager = \"command\"\nstart = \"x\"\n");
        assert!(e.contains("needs `stop`"), "{e}");
        let e = err(
            "[[service]]\nname = \"a\"\nmanager = \"systemd\"\nunit = \"a\"\nafter = [\"b\"]\n\
             [[service]]\nname = \"b\"\nmanager = \"systemd\"\nunit = \"b\"\nafter = [\"a\"]\n",
        );
        assert!(e.contains("cycle"), "{e}");
        let e = err(
            "[backup]\ndestination = \"/b\"\n[[backup.set]]\nname = \"s\"\npaths = [\"/a\"]\nquiesce = [\"ghost\"]\n",
        );
        assert!(e.starts_with("/x/s.toml:6:") && e.contains("ghost"), "{e}");
    }

    #[test]
    fn set_inside_destination_is_rejected() {
        let e = err(
            "[backup]\ndestination = \"/b\"\n[[backup.set]]\nname = \"a\"\npaths = [\"/b/x\"]\n",
        );
        assert!(e.contains("overlaps the backup destination"), "{e}");
    }
}
