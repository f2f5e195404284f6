//! Database sources inside a backup set: `[backup.set.redis]` (a fresh RDB through
//! `BGSAVE` before the set is archived) and `[backup.set.postgresql]` (a `pg_dump` in
//! custom format written inside the set first).

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

/// A PostgreSQL database dumped into the set before it is archived.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PostgresSource {
    pub database: String,
    /// A host name or a socket folder (`/var/run/postgresql`); libpq's default when unset.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    /// Given to pg_dump as PGPASSWORD; never the config body.
    pub password: Option<PasswordSource>,
    /// Where the dump is written (custom format); must be inside the set.
    pub dump: PathBuf,
    /// The pg_dump program.
    pub pg_dump: String,
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawPostgres {
    pub(super) database: Spanned<String>,
    pub(super) host: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) user: Option<String>,
    pub(super) password_file: Option<Spanned<String>>,
    pub(super) password_env: Option<String>,
    pub(super) dump: Spanned<String>,
    pub(super) pg_dump: Option<String>,
    pub(super) timeout: Option<HumanDuration>,
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
        let rdb = self.inside(&r.rdb, paths, "backup.set.redis.rdb")?;
        let password = self.secret_source(
            r.password_file.as_ref(),
            r.password_env.as_ref(),
            "backup.set.redis",
            "password",
        )?;
        Ok(RedisSource {
            address: address.clone(),
            password,
            rdb,
            timeout: r.timeout.map_or(Duration::from_mins(2), |d| d.0),
        })
    }

    /// A set's PostgreSQL source; `paths` are the set's paths.
    pub(super) fn postgresql(
        &self,
        raw: &Spanned<RawPostgres>,
        paths: &[PathBuf],
    ) -> Result<PostgresSource, ConfigError> {
        let r = raw.get_ref();
        if r.database.get_ref().is_empty() {
            return Err(self.spanned_err(
                &r.database,
                "backup.set.postgresql.database",
                "an empty database name".into(),
            ));
        }
        let dump = self.inside(&r.dump, paths, "backup.set.postgresql.dump")?;
        let password = self.secret_source(
            r.password_file.as_ref(),
            r.password_env.as_ref(),
            "backup.set.postgresql",
            "password",
        )?;
        Ok(PostgresSource {
            database: r.database.get_ref().clone(),
            host: r.host.clone(),
            port: r.port,
            user: r.user.clone(),
            password,
            dump,
            pg_dump: r.pg_dump.clone().unwrap_or_else(|| "pg_dump".into()),
            timeout: r.timeout.map_or(Duration::from_hours(1), |d| d.0),
        })
    }

    /// A path that must lie inside the set's `paths` (the set archives it).
    fn inside(
        &self,
        s: &Spanned<String>,
        paths: &[PathBuf],
        key: &str,
    ) -> Result<PathBuf, ConfigError> {
        let p = self.path(s, key)?.value;
        if paths.iter().any(|root| p.starts_with(root)) {
            Ok(p)
        } else {
            Err(self.spanned_err(
                s,
                key,
                format!("{} is not inside the set's paths", p.display()),
            ))
        }
    }
}
