//! Hooks: shell commands run `before`, `after` and `on-failure` of a backup set
//! (`[backup.set.hooks]`) or of a job (`[hooks.JOB]`), each with a timeout.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::values::{HumanDuration, ser_duration};
use super::{ConfigError, Validator};

/// The commands around a set's backup or a job (`sh -c`), each optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Hooks {
    /// Runs first; when it fails the work does not run and the job fails.
    pub before: Option<String>,
    /// Runs after the work succeeded.
    pub after: Option<String>,
    /// Runs after the work failed (or was interrupted).
    pub on_failure: Option<String>,
    /// How long each command may run before it is killed (with its children).
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
}

impl Hooks {
    /// No command at all.
    pub fn is_empty(&self) -> bool {
        self.before.is_none() && self.after.is_none() && self.on_failure.is_none()
    }
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawHooks {
    pub(super) before: Option<Spanned<String>>,
    pub(super) after: Option<Spanned<String>>,
    pub(super) on_failure: Option<Spanned<String>>,
    pub(super) timeout: Option<HumanDuration>,
}

impl Validator<'_> {
    pub(super) fn hooks(&self, raw: &RawHooks, key: &str) -> Result<Hooks, ConfigError> {
        let cmd = |c: &Option<Spanned<String>>,
                   name: &str|
         -> Result<Option<String>, ConfigError> {
            match c {
                Some(s) if s.get_ref().trim().is_empty() => {
                    Err(self.spanned_err(s, &format!("{key}.{name}"), "an empty command".into()))
                }
                Some(s) => Ok(Some(s.get_ref().clone())),
                None => Ok(None),
            }
        };
        Ok(Hooks {
            before: cmd(&raw.before, "before")?,
            after: cmd(&raw.after, "after")?,
            on_failure: cmd(&raw.on_failure, "on-failure")?,
            timeout: raw.timeout.map_or(Duration::from_mins(5), |d| d.0),
        })
    }
}
