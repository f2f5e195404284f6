//! `[[service]]`: the programs that use the data, how steward stops and starts them, and
//! the order they start in.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::values::{HumanDuration, ser_duration};
use super::{ConfigError, Validator, expand_path};

/// A service steward can stop and start around work on its data.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServiceConfig {
    pub name: String,
    pub manager: Manager,
    pub after: Vec<String>,
    pub health_url: Option<String>,
    /// Self-healing: restart after this many failed health cycles in a row.
    pub restart: Option<RestartPolicy>,
    #[serde(serialize_with = "ser_duration")]
    pub stop_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub start_timeout: Duration,
}

/// When a failing service is restarted (monit's "if failed N cycles then restart", "M
/// restarts within W then give up").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RestartPolicy {
    /// Failed health cycles in a row before a restart.
    pub after: u32,
    /// Restarts at most within `window`; then steward gives up and says so.
    pub max: u32,
    #[serde(serialize_with = "ser_duration")]
    pub window: Duration,
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

/// The `manager` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum ManagerKind {
    Systemd,
    Launchd,
    Command,
}

impl ManagerKind {
    fn name(self) -> &'static str {
        match self {
            ManagerKind::Systemd => "systemd",
            ManagerKind::Launchd => "launchd",
            ManagerKind::Command => "command",
        }
    }
}

/// The `scope` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum Scope {
    System,
    User,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) name: Spanned<String>,
    pub(super) manager: Spanned<ManagerKind>,
    pub(super) unit: Option<String>,
    /// systemd: `--user`; launchd: `gui/<uid>`.
    pub(super) scope: Option<Scope>,
    pub(super) plist: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) after: Vec<Spanned<String>>,
    pub(super) health_url: Option<Spanned<String>>,
    pub(super) stop_timeout: Option<HumanDuration>,
    pub(super) start_timeout: Option<HumanDuration>,
    pub(super) start: Option<String>,
    pub(super) stop: Option<String>,
    pub(super) status: Option<String>,
    pub(super) restart_after: Option<Spanned<u32>>,
    pub(super) max_restarts: Option<u32>,
    pub(super) restart_window: Option<HumanDuration>,
}

impl Validator<'_> {
    /// Validates `[[service]]` entries and orders them so each starts after its `after`.
    pub(super) fn services(&self, raw: &[RawService]) -> Result<Vec<ServiceConfig>, ConfigError> {
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
            let kind = *r.manager.get_ref();
            let user = match r.scope {
                None => kind == ManagerKind::Launchd,
                Some(scope) => scope == Scope::User,
            };
            let need = |v: &Option<String>, key: &str| {
                v.clone().filter(|s| !s.trim().is_empty()).ok_or_else(|| {
                    self.spanned_err(
                        &r.manager,
                        &format!("service.{key}"),
                        format!("service {name:?} ({}) needs `{key}`", kind.name()),
                    )
                })
            };
            let manager = match kind {
                ManagerKind::Systemd => Manager::Systemd {
                    unit: need(&r.unit, "unit")?,
                    user,
                },
                ManagerKind::Launchd => {
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
                ManagerKind::Command => Manager::Command {
                    start: need(&r.start, "start")?,
                    stop: need(&r.stop, "stop")?,
                    status: need(&r.status, "status")?,
                },
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
            let restart = match &r.restart_after {
                Some(n) if *n.get_ref() == 0 => {
                    return Err(self.spanned_err(
                        n,
                        "service.restart-after",
                        "restart after at least 1 failed cycle".into(),
                    ));
                }
                Some(n) if r.health_url.is_none() => {
                    return Err(self.spanned_err(
                        n,
                        "service.restart-after",
                        format!("service {name:?} needs a `health-url` to know it failed"),
                    ));
                }
                Some(n) => Some(RestartPolicy {
                    after: *n.get_ref(),
                    max: r.max_restarts.unwrap_or(3),
                    window: r.restart_window.map_or(Duration::from_hours(1), |d| d.0),
                }),
                None => None,
            };
            out.push(ServiceConfig {
                restart,
                name: name.clone(),
                manager,
                after: r.after.iter().map(|a| a.get_ref().clone()).collect(),
                health_url: r.health_url.as_ref().map(|u| u.get_ref().clone()),
                stop_timeout: r.stop_timeout.map_or(Duration::from_secs(30), |d| d.0),
                start_timeout: r.start_timeout.map_or(Duration::from_mins(1), |d| d.0),
            });
        }
        // Order: each service after everything in its `after` (Kahn's algorithm, stable).
        let mut ordered: Vec<ServiceConfig> = Vec::new();
        let mut pending = out;
        while !pending.is_empty() {
            let ready = pending
                .iter()
                .position(|s| s.after.iter().all(|a| ordered.iter().any(|o| &o.name == a)));
            if let Some(i) = ready {
                ordered.push(pending.remove(i));
            } else {
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
        Ok(ordered)
    }
}
