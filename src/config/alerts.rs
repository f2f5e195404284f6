//! `[alerts]`: how often a problem is repeated and the SMTP account alerts are mailed
//! through.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::values::{HumanDuration, ser_duration};
use super::{ConfigError, Validator};

/// Where alerts go.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AlertsConfig {
    #[serde(serialize_with = "ser_duration")]
    pub remind_every: Duration,
    pub email: Option<EmailConfig>,
    /// ntfy: the topic URL (`https://ntfy.sh/my-topic`), with an optional token.
    pub ntfy: Option<PushConfig>,
    /// A JSON webhook (Slack, Discord, Matrix bridges, or your own).
    pub webhook: Option<PushConfig>,
}

impl AlertsConfig {
    /// The channels alerts are queued for, in delivery order.
    pub fn channels(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.email.is_some() {
            v.push("email");
        }
        if self.ntfy.is_some() {
            v.push("ntfy");
        }
        if self.webhook.is_some() {
            v.push("webhook");
        }
        v
    }
}

/// An HTTP push channel.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PushConfig {
    pub url: String,
    /// A bearer token, read at send time; never the config body.
    pub token: Option<PasswordSource>,
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
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

/// Where a password or token is read from, when it is used (never the config body).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PasswordSource {
    File(PathBuf),
    Env(String),
}

impl PasswordSource {
    /// The secret: the file's content without its final line break, or the variable.
    pub fn read(&self) -> Result<String, String> {
        match self {
            PasswordSource::File(p) => std::fs::read_to_string(p)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| format!("password file {}: {e}", p.display())),
            PasswordSource::Env(v) => std::env::var(v).map_err(|_| format!("${v} is not set")),
        }
    }
}

#[derive(Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawAlerts {
    pub(super) remind_every: Option<HumanDuration>,
    pub(super) email: Option<Spanned<RawEmail>>,
    pub(super) ntfy: Option<Spanned<RawPush>>,
    pub(super) webhook: Option<Spanned<RawPush>>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawPush {
    pub(super) url: Spanned<String>,
    pub(super) token_file: Option<Spanned<String>>,
    pub(super) token_env: Option<String>,
    pub(super) timeout: Option<HumanDuration>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawEmail {
    pub(super) smtp: String,
    pub(super) security: Option<Security>,
    pub(super) username: Option<String>,
    pub(super) password_file: Option<Spanned<String>>,
    pub(super) password_env: Option<String>,
    pub(super) from: String,
    pub(super) to: Vec<String>,
    pub(super) timeout: Option<HumanDuration>,
    pub(super) ca_file: Option<Spanned<String>>,
}

impl Validator<'_> {
    pub(super) fn alerts(&self, raw: &RawAlerts) -> Result<AlertsConfig, ConfigError> {
        let remind_every = raw.remind_every.map_or(Duration::from_hours(6), |d| d.0);
        let ntfy = match &raw.ntfy {
            Some(p) => Some(self.push(p, "alerts.ntfy")?),
            None => None,
        };
        let webhook = match &raw.webhook {
            Some(p) => Some(self.push(p, "alerts.webhook")?),
            None => None,
        };
        let Some(e) = &raw.email else {
            return Ok(AlertsConfig {
                remind_every,
                email: None,
                ntfy,
                webhook,
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
            ntfy,
            webhook,
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

    fn push(&self, p: &Spanned<RawPush>, key: &str) -> Result<PushConfig, ConfigError> {
        let v = p.get_ref();
        let url = v.url.get_ref();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(self.spanned_err(
                &v.url,
                &format!("{key}.url"),
                format!("{url:?} is not an http:// or https:// URL"),
            ));
        }
        let token =
            self.secret_source(v.token_file.as_ref(), v.token_env.as_ref(), key, "token")?;
        Ok(PushConfig {
            url: url.clone(),
            token,
            timeout: v.timeout.map_or(Duration::from_secs(15), |d| d.0),
        })
    }
}
