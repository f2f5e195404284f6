//! `[checks]`: the resource, service and endpoint checks, their limits and how many
//! cycles a limit must be broken before it alerts.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::values::{HumanDuration, Size, ser_duration, ser_opt_duration};
use super::{ConfigError, Validator};

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
    /// `enabled = false` leaves the measurement out (a VM whose CPU is the host's
    /// business, not this box's).
    pub enabled: bool,
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

#[derive(Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawChecks {
    pub(super) cpu: Option<Spanned<RawLimit>>,
    pub(super) memory: Option<Spanned<RawLimit>>,
    pub(super) swap: Option<Spanned<RawLimit>>,
    pub(super) load: Option<Spanned<RawLimit>>,
    pub(super) disk: Option<Spanned<RawDisk>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) http: Vec<Spanned<RawHttp>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) tcp: Vec<Spanned<RawTcp>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) sqlite: Vec<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) paths_exist: Vec<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) paths_writable: Vec<Spanned<String>>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawLimit {
    pub(super) warn: Option<f64>,
    pub(super) crit: Option<f64>,
    #[serde(rename = "for")]
    pub(super) for_cycles: Option<u32>,
    pub(super) within: Option<String>,
    pub(super) enabled: Option<bool>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawDisk {
    pub(super) warn: Option<f64>,
    pub(super) crit: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) paths: Vec<Spanned<String>>,
    pub(super) min_free: Option<Size>,
    #[serde(rename = "for")]
    pub(super) for_cycles: Option<u32>,
    pub(super) within: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) name: String,
    pub(super) url: String,
    pub(super) expect_status: Option<u16>,
    pub(super) body_contains: Option<String>,
    pub(super) warn_latency: Option<HumanDuration>,
    pub(super) timeout: Option<HumanDuration>,
    #[serde(rename = "for")]
    pub(super) for_cycles: Option<u32>,
    pub(super) within: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawTcp {
    pub(super) name: String,
    pub(super) address: String,
    pub(super) timeout: Option<HumanDuration>,
    #[serde(rename = "for")]
    pub(super) for_cycles: Option<u32>,
    pub(super) within: Option<String>,
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

impl Validator<'_> {
    pub(super) fn window(
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
    pub(super) fn limit_values(
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
            enabled: true,
        })
    }

    pub(super) fn limit(
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
                enabled: true,
            }),
            Some(r) => {
                let v = r.get_ref();
                let limit = self.limit_values(
                    v.warn,
                    v.crit,
                    v.for_cycles,
                    &v.within,
                    r.span().start,
                    key,
                    percent,
                    default,
                )?;
                Ok(Limit {
                    enabled: v.enabled.unwrap_or(true),
                    ..limit
                })
            }
        }
    }

    pub(super) fn checks(&self, raw: &RawChecks) -> Result<ChecksConfig, ConfigError> {
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
                    enabled: true,
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
}
