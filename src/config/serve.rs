//! `[serve]` (the read-only status page, `/metrics` and `/health`) and `[fleet]` (the
//! signed status objects hosts leave in a shared bucket, and who is trusted to write them).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::values::{HumanDuration, ser_duration};
use super::{ConfigError, OffsiteConfig, Validator};

/// Where `steward serve` listens when neither `--listen` nor `[serve] listen` says.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9910";

/// `[serve]`, validated.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServeConfig {
    /// The address; `None` when the config has no `[serve]` (then the daemon serves
    /// nothing, and `steward serve` uses [`DEFAULT_LISTEN`]).
    pub listen: Option<SocketAddr>,
    /// The file holding the token a request must carry (bearer, or as a basic-auth
    /// password). Required for any address that is not loopback.
    pub token_file: Option<PathBuf>,
    /// How often the page reloads itself.
    #[serde(serialize_with = "ser_duration")]
    pub refresh: Duration,
}

/// `[fleet]`, validated.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct FleetConfig {
    /// The offsite target whose bucket holds `<prefix>/<host>/status.json`.
    pub target: String,
    /// A peer whose newest trusted status is older than this is silent (`fleet HOST`).
    #[serde(serialize_with = "ser_duration")]
    pub max_silence: Duration,
    /// Host name -> its minisign public key (`RW...`, what `steward offsite key` prints on
    /// that host). Only a status signed by its own host's key is believed.
    pub peers: BTreeMap<String, String>,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawServe {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) token_file: Option<Spanned<String>>,
    pub(super) refresh: Option<Spanned<HumanDuration>>,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawFleet {
    pub(super) target: Option<Spanned<String>>,
    pub(super) max_silence: Option<Spanned<HumanDuration>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) peers: BTreeMap<String, Spanned<String>>,
}

/// Reads a `[serve] token-file`: one token of 16 or more characters without spaces, in
/// a file neither its group nor others can read. The error says what is wrong.
pub fn read_token(path: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("is not a file".into());
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "can be read by its group or others (mode {:o}); chmod 600 it",
            meta.permissions().mode() & 0o777
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let token = text.trim();
    if token.len() < 16 || token.contains(char::is_whitespace) {
        return Err(
            "must hold one token of 16 or more characters without spaces (e.g. \
                    `openssl rand -hex 24`)"
                .into(),
        );
    }
    Ok(token.to_string())
}

/// Whether `addr` only this machine can reach.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

impl Validator<'_> {
    /// `[serve]`: an address anyone else can reach needs a token file.
    pub(super) fn serve(
        &self,
        raw: Option<&Spanned<RawServe>>,
    ) -> Result<ServeConfig, ConfigError> {
        let Some(raw) = raw else {
            return Ok(ServeConfig {
                listen: None,
                token_file: None,
                refresh: Duration::from_mins(1),
            });
        };
        let r = raw.get_ref();
        // The file itself is read where the page is served (and by `config check`): a
        // token file with the wrong mode must cost the page, never the backups.
        let token_file = r
            .token_file
            .as_ref()
            .map(|t| self.path(t, "serve.token-file").map(|l| l.value))
            .transpose()?;
        let listen = match &r.listen {
            Some(l) => Some(l.get_ref().parse::<SocketAddr>().map_err(|e| {
                self.spanned_err(
                    l,
                    "serve.listen",
                    format!(
                        "{:?} is not an address and port ({e}), e.g. {DEFAULT_LISTEN}",
                        l.get_ref()
                    ),
                )
            })?),
            None => Some(DEFAULT_LISTEN.parse().map_err(|_| {
                self.spanned_err(raw, "serve.listen", "the default address".into())
            })?),
        };
        if let Some(addr) = &listen
            && !is_loopback(addr)
            && token_file.is_none()
        {
            let at = r
                .listen
                .as_ref()
                .map_or(raw.span().start, |l| l.span().start);
            return Err(self.error_at(
                at,
                Some("serve.listen"),
                format!(
                    "{addr} is reachable from other machines; set serve.token-file so that \
                     only those with the token see the page, or listen on 127.0.0.1 and use \
                     an SSH tunnel"
                ),
            ));
        }
        let refresh = match &r.refresh {
            Some(t) if t.get_ref().0 < Duration::from_secs(5) => {
                return Err(self.spanned_err(t, "serve.refresh", "must be 5s or longer".into()));
            }
            Some(t) => t.get_ref().0,
            None => Duration::from_mins(1),
        };
        Ok(ServeConfig {
            listen,
            token_file,
            refresh,
        })
    }

    /// `[fleet]`: the target must be an `[[offsite]]` one (the only one when unset), and
    /// every peer key a minisign public key.
    pub(super) fn fleet(
        &self,
        raw: Option<&Spanned<RawFleet>>,
        offsite: &[OffsiteConfig],
    ) -> Result<Option<FleetConfig>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let r = raw.get_ref();
        let target = match &r.target {
            Some(t) => {
                if !offsite.iter().any(|o| &o.name == t.get_ref()) {
                    return Err(self.spanned_err(
                        t,
                        "fleet.target",
                        format!("no [[offsite]] target is named {:?}", t.get_ref()),
                    ));
                }
                t.get_ref().clone()
            }
            None => match offsite {
                [one] => one.name.clone(),
                [] => {
                    return Err(self.spanned_err(
                        raw,
                        "fleet.target",
                        "the fleet's status objects live in an offsite bucket; add an \
                         [[offsite]] target"
                            .into(),
                    ));
                }
                _ => {
                    return Err(self.spanned_err(
                        raw,
                        "fleet.target",
                        "there are several [[offsite]] targets; name the one the fleet shares"
                            .into(),
                    ));
                }
            },
        };
        let max_silence = match &r.max_silence {
            Some(t) if t.get_ref().0.is_zero() => {
                return Err(self.spanned_err(
                    t,
                    "fleet.max-silence",
                    "must be longer than 0s".into(),
                ));
            }
            Some(t) if t.get_ref().0 < Duration::from_mins(5) => {
                return Err(self.spanned_err(
                    t,
                    "fleet.max-silence",
                    "must be 5m or longer (a peer is heard at its check cycle)".into(),
                ));
            }
            Some(t) => t.get_ref().0,
            None => Duration::from_hours(1),
        };
        let mut peers = BTreeMap::new();
        for (host, key) in &r.peers {
            let k = format!("fleet.peers.{host}");
            let folder_name = !host.is_empty()
                && host != "."
                && host != ".."
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !folder_name {
                return Err(self.spanned_err(
                    key,
                    &k,
                    format!(
                        "{host:?} is not a host name as steward writes it (letters, digits, \
                         '-', '_' and '.')"
                    ),
                ));
            }
            if minisign::PublicKey::from_base64(key.get_ref().trim()).is_err() {
                return Err(self.spanned_err(
                    key,
                    &k,
                    "is not a minisign public key (the RW... line `steward offsite key` \
                     prints on that host)"
                        .into(),
                ));
            }
            peers.insert(host.clone(), key.get_ref().trim().to_string());
        }
        Ok(Some(FleetConfig {
            target,
            max_silence,
            peers,
        }))
    }
}
