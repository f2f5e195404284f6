//! The configuration: finding the file, parsing TOML into raw serde structs, and validating
//! it once into the typed [`Config`] every other module uses.
//!
//! Errors name the file, the line and column, and the dotted key (`backup.set.paths`), so
//! `steward config check` points at the exact place to fix.
//!
//! One module per concern ([`backup`], [`services`], [`checks`], [`alerts`],
//! [`maintenance`], [`schedule`], [`offsite`]), each owning its raw serde types, their validation and the
//! typed result; this file owns finding, reading and locating (every error by its span).

mod alerts;
mod backup;
mod checks;
mod drill;
mod hooks;
mod maintenance;
mod offsite;
mod schedule;
mod serve;
mod services;
mod sources;
mod values;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

pub use alerts::{AlertsConfig, EmailConfig, PasswordSource, PushConfig, Security};
pub use backup::{BackupConfig, BackupSet, GuardConfig};
pub use checks::{ChecksConfig, HttpCheck, Limit, NOISY_WINDOW, TcpCheck, Window};
pub use drill::DrillConfig;
pub use hooks::Hooks;
pub use maintenance::{LogsTask, MaintenanceConfig, SqliteAction, Task};
pub use offsite::{CredentialSource, LockMode, ObjectLock, OffsiteConfig};
pub use schedule::ScheduleConfig;
pub use serve::{DEFAULT_LISTEN, FleetConfig, ServeConfig, is_loopback, read_token};
pub use services::{Manager, RestartPolicy, ServiceConfig};
pub use sources::{PostgresSource, RedisSource};
pub use values::{parse_duration, parse_size};

use alerts::RawAlerts;
use backup::RawBackup;
use checks::RawChecks;
use maintenance::RawMaintenance;
use offsite::RawOffsite;
use schedule::RawSchedule;
use services::RawService;

use crate::schedule::Job;

/// The configuration used when no file is found: state under `~/.local/state/steward`,
/// no backup sets, and the seed thresholds for checks (memory 80 %, CPU 80 %, disk 90 %).
pub const EMBEDDED_DEFAULT: &str = include_str!("../default.toml");

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
    /// Offsite targets (`[[offsite]]`), each receiving a copy of the sets it covers.
    pub offsite: Vec<OffsiteConfig>,
    /// `[restore]`: how long the data a restore replaced is kept aside.
    pub restore: RestoreConfig,
    /// `[drill]`: restore drills.
    pub drill: DrillConfig,
    /// `[serve]`: the status page (served by the daemon when the section is there).
    pub serve: ServeConfig,
    /// `[fleet]`: this host's status in a shared bucket, and its peers'.
    pub fleet: Option<FleetConfig>,
    /// Commands around jobs (`[hooks.JOB]`).
    pub hooks: std::collections::BTreeMap<Job, Hooks>,
    /// healthchecks.io-style ping URLs per job (`<url>/start`, `<url>`, `<url>/fail`).
    pub pings: std::collections::BTreeMap<String, String>,
    /// The configuration as written, normalized: a valid config that parses back to this
    /// one (what `config check` prints).
    #[serde(skip)]
    pub effective: String,
}

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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    offsite: Vec<Spanned<RawOffsite>>,
    #[serde(default)]
    restore: RawRestore,
    #[serde(default)]
    drill: drill::RawDrill,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    serve: Option<Spanned<serve::RawServe>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fleet: Option<Spanned<serve::RawFleet>>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    hooks: std::collections::BTreeMap<Spanned<String>, hooks::RawHooks>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pings: std::collections::BTreeMap<Spanned<String>, Spanned<String>>,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawState {
    dir: Option<Spanned<String>>,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawRestore {
    keep_rollbacks: Option<values::HumanDuration>,
}

/// `[restore]`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RestoreConfig {
    /// The copy of the data a restore replaced is kept this long, then daily maintenance
    /// removes it (unless something wrote into it after the swap). Default a week.
    #[serde(serialize_with = "values::ser_duration")]
    pub keep_rollbacks: std::time::Duration,
}

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

/// What is left of a configuration file that does not validate, to tell about it: its
/// `[state]` and `[alerts]` alone, when those still parse and validate (a typo in a
/// backup set must not also silence the mail that says so). `None` when even they do not.
pub fn salvage(path: &Path) -> Option<Config> {
    let text = std::fs::read_to_string(path).ok()?;
    let all: toml::Table = toml::from_str(&text).ok()?;
    let mut kept = toml::Table::new();
    for key in ["state", "alerts"] {
        if let Some(v) = all.get(key) {
            kept.insert(key.into(), v.clone());
        }
    }
    parse(
        &toml::to_string(&kept).ok()?,
        Origin::File(path.to_path_buf()),
    )
    .ok()
}

/// Parses and validates configuration text; `origin` is used in errors.
pub fn parse(text: &str, origin: Origin) -> Result<Config, ConfigError> {
    let v = Validator {
        text,
        origin: &origin,
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
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

    /// `WHAT-file` or `WHAT-env` under `key` (not both): where a secret is read from.
    fn secret_source(
        &self,
        file: Option<&Spanned<String>>,
        env: Option<&String>,
        key: &str,
        what: &str,
    ) -> Result<Option<PasswordSource>, ConfigError> {
        match (file, env) {
            (Some(f), Some(_)) => Err(self.spanned_err(
                f,
                &format!("{key}.{what}-file"),
                format!("give {what}-file or {what}-env, not both"),
            )),
            (Some(f), None) => Ok(Some(PasswordSource::File(
                self.path(f, &format!("{key}.{what}-file"))?.value,
            ))),
            (None, Some(e)) => Ok(Some(PasswordSource::Env(e.clone()))),
            (None, None) => Ok(None),
        }
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
        let backup = self.backup(&raw.backup, &state_dir, &raw.service)?;
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
        self.pings(&raw.pings)?;
        let services = self.services(&raw.service)?;
        let set_names: Vec<String> = backup.sets.iter().map(|s| s.name.clone()).collect();
        let offsite = self.offsite(&raw.offsite, &set_names)?;
        let drill = self.drill(
            &raw.drill,
            &state_dir,
            &backup,
            &offsite,
            raw.schedule.drill_offsite.as_ref(),
        )?;
        let serve = self.serve(raw.serve.as_ref())?;
        let fleet = self.fleet(raw.fleet.as_ref(), &offsite)?;
        let mut job_hooks = std::collections::BTreeMap::new();
        for (name, h) in &raw.hooks {
            let job: Job = name
                .get_ref()
                .parse()
                .map_err(|e: crate::schedule::UnknownJob| {
                    self.spanned_err(name, &format!("hooks.{}", name.get_ref()), e.to_string())
                })?;
            job_hooks.insert(job, self.hooks(h, &format!("hooks.{}", name.get_ref()))?);
        }
        Ok(Config {
            origin: self.origin.clone(),
            restore: RestoreConfig {
                keep_rollbacks: raw
                    .restore
                    .keep_rollbacks
                    .map_or(std::time::Duration::from_hours(24 * 7), |d| d.0),
            },
            drill,
            serve,
            fleet,
            services,
            alerts,
            maintenance,
            schedule,
            offsite,
            hooks: job_hooks,
            pings: raw
                .pings
                .iter()
                .map(|(k, v)| (k.get_ref().clone(), v.get_ref().clone()))
                .collect(),
            effective: String::new(),
            state_dir,
            backup,
            checks,
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
    Ok(crate::fsutil::lexical(&p))
}

impl Config {
    /// The set with this name, or an error listing the known ones.
    pub fn set(&self, name: &str) -> Option<&BackupSet> {
        self.backup.sets.iter().find(|s| s.name == name)
    }

    /// The retention policy of `set`'s copies on offsite target `t`: the target's own,
    /// else the set's; none when it keeps everything.
    pub fn offsite_keep<'a>(
        &'a self,
        t: &'a OffsiteConfig,
        set: &str,
    ) -> Option<&'a crate::retention::KeepPolicy> {
        t.keep
            .as_ref()
            .or_else(|| self.set(set).map(|s| &s.keep))
            .filter(|k| !k.is_empty())
    }

    /// The paths of `set` that cannot be read, each said with its place in the file. A
    /// missing path fails its own set only (an unmounted volume must not stop the other
    /// sets' backups, nor unrelated jobs such as checks).
    pub fn missing_set_paths(&self, set: &BackupSet) -> Vec<String> {
        set.paths
            .iter()
            .filter_map(|p| {
                let e = std::fs::symlink_metadata(&p.value).err()?;
                Some(
                    ConfigError::Invalid {
                        origin: self.origin.to_string(),
                        line: p.line,
                        column: p.column,
                        key: "backup.set.paths: ".into(),
                        message: format!(
                            "set {:?}: path {} cannot be read: {e} (not mounted, or renamed?)",
                            set.name,
                            p.value.display()
                        ),
                    }
                    .to_string(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        assert_eq!(parse_duration("26h").unwrap(), Duration::from_hours(26));
        assert_eq!(parse_duration("30d").unwrap(), Duration::from_hours(720));
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
        assert_eq!(c.backup.sets[0].keep.within, Some(Duration::from_hours(48)));
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

    /// Regression: every task kind's keys were merged into one struct, so `sample` on a
    /// sqlite task was accepted and ignored.
    #[test]
    fn regression_a_task_takes_only_its_own_kinds_keys() {
        let e = err(
            "[[maintenance.daily.task]]\nkind = \"sqlite\"\ndatabases = [\"/d.db\"]\nactions = [\"analyze\"]\nsample = 0.5\n",
        );
        assert!(
            e.starts_with("/x/s.toml:1:1: maintenance.daily.task: unknown field `sample`"),
            "{e}"
        );
        let e = err("[[maintenance.weekly.task]]\nkind = \"defrag\"\n");
        assert!(
            e.starts_with("/x/s.toml:2:8: maintenance.weekly.task.kind: unknown variant `defrag`"),
            "{e}"
        );
    }

    /// Regression: `log-format` and `[pings]` errors were located by searching the text,
    /// which found a commented-out line first.
    #[test]
    fn regression_errors_are_located_by_span_not_by_search() {
        let e = err("[schedule]\n# log-format = \"x\"\nlog-format = \"xml\"\n");
        assert!(e.starts_with("/x/s.toml:3:14: schedule.log-format:"), "{e}");
        let e = err("[pings]\n# x = \"ftp://a\"\ncheck = \"ftp://a\"\n");
        assert!(e.starts_with("/x/s.toml:3:9: pings.check:"), "{e}");
        let e = err("[pings]\n# nightly\nnightly = \"http://a\"\n");
        assert!(e.starts_with("/x/s.toml:3:1: pings.nightly: no job"), "{e}");
    }
}
