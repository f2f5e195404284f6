//! Database sources inside a backup set: `[backup.set.redis]` (a fresh RDB through
//! `BGSAVE` before the set is archived).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::values::{HumanDuration, ser_duration};
use super::{ConfigError, PasswordSource, Validator};

/// A Redis server whose RDB file the set holds.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RedisSource {
    /// `host:port`, or a Unix socket path (starting with `/`).
    pub address: String,
    /// Read at backup time; never the config body.
    pub password: Option<PasswordSource>,
    /// The RDB file `BGSAVE` writes (`dir` + `dbfilename`); must lie inside the set.
    pub rdb: PathBuf,
    /// How long the save may take.
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawRedis {
    pub(super) address: Spanned<String>,
    pub(super) password_file: Option<Spanned<String>>,
    pub(super) password_env: Option<String>,
    pub(super) rdb: Spanned<String>,
    pub(super) timeout: Option<HumanDuration>,
}

impl Validator<'_> {
    /// A set's Redis source; `paths` are the set's paths.
    pub(super) fn redis(
        &self,
        raw: &Spanned<RawRedis>,
        paths: &[PathBuf],
    ) -> Result<RedisSource, ConfigError> {
        let r = raw.get_ref();
        let address = r.address.get_ref();
        let ok = address.starts_with('/')
            || address
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !ok {
            return Err(self.spanned_err(
                &r.address,
                "backup.set.redis.address",
                format!("{address:?} is not host:port or a socket path"),
            ));
        }
        let rdb = self.path(&r.rdb, "backup.set.redis.rdb")?.value;
        if !paths.iter().any(|p| rdb.starts_with(p)) {
            return Err(self.spanned_err(
                &r.rdb,
                "backup.set.redis.rdb",
                format!("{} is not inside the set's paths", rdb.display()),
            ));
        }
        let password = match (&r.password_file, &r.password_env) {
            (Some(f), Some(_)) => {
                return Err(self.spanned_err(
                    f,
                    "backup.set.redis.password-file",
                    "give password-file or password-env, not both".into(),
                ));
            }
            (Some(f), None) => Some(PasswordSource::File(
                self.path(f, "backup.set.redis.password-file")?.value,
            )),
            (None, Some(e)) => Some(PasswordSource::Env(e.clone())),
            (None, None) => None,
        };
        Ok(RedisSource {
            address: address.clone(),
            password,
            rdb,
            timeout: r.timeout.map_or(Duration::from_mins(2), |d| d.0),
        })
    }
}
