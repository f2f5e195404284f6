//! `[[offsite]]`: S3-compatible buckets that receive a copy of each verified backup,
//! encrypted to age recipients (the host holds only public keys), under
//! `<prefix>/<host>/<set>/`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::backup::RawKeep;
use super::values::{HumanDuration, Size};
use super::{ConfigError, Validator};

/// One offsite target.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct OffsiteConfig {
    /// Its name in commands, the catalog and alerts (`offsite NAME`).
    pub name: String,
    /// `https://s3.eu-central-003.backblazeb2.com`, `http://127.0.0.1:9000`.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Objects live under `<prefix>/<host>/<set>/` (no leading or trailing `/`).
    pub prefix: String,
    /// `bucket` in the path (MinIO, SeaweedFS, Garage) rather than the host name.
    pub path_style: bool,
    /// Where the access key comes from; never the config body.
    pub credentials: CredentialSource,
    /// age recipients (`age1...`) the copies are encrypted to; empty only with
    /// `encrypt = false`.
    pub recipients: Vec<String>,
    pub encrypt: bool,
    /// The sets copied; empty: all.
    pub sets: Vec<String>,
    /// Bytes per second at most, when set.
    pub bandwidth_limit: Option<u64>,
    /// The multipart part size.
    pub part_size: u64,
    /// Its own retention policy (`[offsite.keep]`); else each set's.
    pub keep: Option<crate::retention::KeepPolicy>,
    /// minisign public keys (`RW...`) whose signed descriptions are trusted, besides this
    /// host's own key: from the recovery kit, never from the bucket.
    pub signing_keys: Vec<String>,
    /// The idle timeout of every request: connecting, and no byte sent or received.
    #[serde(serialize_with = "super::values::ser_duration")]
    pub timeout: Duration,
    /// Tries again after a timeout, a dropped connection or a busy server.
    pub retries: u32,
    /// Upload every object locked (S3 object lock) for `lock-for`, extended while the
    /// retention policy keeps the copy.
    pub object_lock: Option<ObjectLock>,
    /// The host never deletes: remote retention runs elsewhere, with other credentials.
    pub append_only: bool,
}

/// S3 object lock on every object steward uploads.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ObjectLock {
    pub mode: LockMode,
    /// How long each lock lasts from the upload (or the last extension).
    #[serde(serialize_with = "super::values::ser_duration")]
    pub lock_for: Duration,
}

/// The two S3 object lock modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockMode {
    /// Nobody, not even the account's root, shortens or removes the lock.
    Compliance,
    /// Users with `s3:BypassGovernanceRetention` may.
    Governance,
}

impl LockMode {
    /// As S3 spells it in headers.
    pub fn header(self) -> &'static str {
        match self {
            LockMode::Compliance => "COMPLIANCE",
            LockMode::Governance => "GOVERNANCE",
        }
    }
}

impl OffsiteConfig {
    /// Whether `set` is copied to this target.
    pub fn covers(&self, set: &str) -> bool {
        self.sets.is_empty() || self.sets.iter().any(|s| s == set)
    }
}

/// Where an offsite target's access key is read from, when it is used.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialSource {
    /// `KEY=VALUE` lines: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (an
    /// `EnvironmentFile`).
    File(PathBuf),
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` in the environment.
    Env,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawOffsite {
    pub(super) name: Option<Spanned<String>>,
    pub(super) endpoint: Spanned<String>,
    pub(super) region: Option<String>,
    pub(super) bucket: Spanned<String>,
    pub(super) prefix: Option<Spanned<String>>,
    pub(super) path_style: Option<bool>,
    pub(super) credentials_file: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) recipients: Vec<Spanned<String>>,
    pub(super) recipients_file: Option<Spanned<String>>,
    pub(super) encrypt: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) sets: Vec<Spanned<String>>,
    pub(super) bandwidth_limit: Option<Size>,
    pub(super) part_size: Option<Spanned<Size>>,
    pub(super) keep: Option<Spanned<RawKeep>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) signing_keys: Vec<Spanned<String>>,
    pub(super) timeout: Option<Spanned<HumanDuration>>,
    pub(super) retries: Option<u32>,
    pub(super) object_lock: Option<LockMode>,
    pub(super) lock_for: Option<Spanned<HumanDuration>>,
    pub(super) append_only: Option<bool>,
}

/// The smallest part S3 accepts (but the last).
const MIN_PART: u64 = 5 << 20;

impl Validator<'_> {
    /// `[[offsite]]` targets; `sets` are the configured set names.
    pub(super) fn offsite(
        &self,
        raw: &[Spanned<RawOffsite>],
        sets: &[String],
    ) -> Result<Vec<OffsiteConfig>, ConfigError> {
        let mut out: Vec<OffsiteConfig> = Vec::new();
        for t in raw {
            let r = t.get_ref();
            let name = match &r.name {
                Some(n) => {
                    let v = n.get_ref();
                    let ok = !v.is_empty()
                        && v.len() <= 64
                        && v.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                    if !ok {
                        return Err(self.spanned_err(
                            n,
                            "offsite.name",
                            format!("{v:?} is not a valid name; use letters, digits, '-' and '_'"),
                        ));
                    }
                    v.clone()
                }
                None => "offsite".to_string(),
            };
            if out.iter().any(|o| o.name == name) {
                return Err(self.spanned_err(
                    t,
                    "offsite.name",
                    format!("offsite target {name:?} is defined twice; give each a `name`"),
                ));
            }
            let endpoint = r.endpoint.get_ref();
            let parsed = endpoint
                .parse::<url::Url>()
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if parsed.is_none() {
                return Err(self.spanned_err(
                    &r.endpoint,
                    "offsite.endpoint",
                    format!("{endpoint:?} is not an http:// or https:// URL"),
                ));
            }
            let bucket = r.bucket.get_ref();
            let bucket_ok = (3..=63).contains(&bucket.len())
                && bucket
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !bucket_ok {
                return Err(self.spanned_err(
                    &r.bucket,
                    "offsite.bucket",
                    format!("{bucket:?} is not a bucket name (3 to 63 of a-z, 0-9, '-', '.')"),
                ));
            }
            let prefix = match &r.prefix {
                Some(p) => {
                    let v = p.get_ref().trim_matches('/').to_string();
                    if v.split('/').any(|c| c == "." || c == "..") {
                        return Err(self.spanned_err(
                            p,
                            "offsite.prefix",
                            format!("{:?} has a '.' or '..' component", p.get_ref()),
                        ));
                    }
                    v
                }
                None => "steward".to_string(),
            };
            let encrypt = r.encrypt.unwrap_or(true);
            let mut recipients: Vec<String> = Vec::new();
            for rc in &r.recipients {
                recipients.push(
                    Self::recipient(rc.get_ref())
                        .map_err(|m| self.spanned_err(rc, "offsite.recipients", m))?,
                );
            }
            if let Some(f) = &r.recipients_file {
                let path = self.path(f, "offsite.recipients-file")?.value;
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    self.spanned_err(
                        f,
                        "offsite.recipients-file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                for (n, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    recipients.push(Self::recipient(line).map_err(|m| {
                        self.spanned_err(
                            f,
                            "offsite.recipients-file",
                            format!("{} line {}: {m}", path.display(), n + 1),
                        )
                    })?);
                }
            }
            if encrypt && recipients.is_empty() {
                return Err(self.spanned_err(
                    t,
                    "offsite.recipients",
                    "copies are encrypted: give `recipients` (age1... public keys) or \
                     `recipients-file`, or `encrypt = false` to upload them in the clear"
                        .into(),
                ));
            }
            let mut covered = Vec::new();
            for s in &r.sets {
                if !sets.contains(s.get_ref()) {
                    return Err(self.spanned_err(
                        s,
                        "offsite.sets",
                        format!("no [[backup.set]] named {:?}", s.get_ref()),
                    ));
                }
                covered.push(s.get_ref().clone());
            }
            let part_size = match &r.part_size {
                Some(p) if p.get_ref().0 < MIN_PART || p.get_ref().0 > (5 << 30) => {
                    return Err(self.spanned_err(
                        p,
                        "offsite.part-size",
                        "S3 parts are 5 MiB to 5 GiB".into(),
                    ));
                }
                Some(p) => p.get_ref().0,
                None => 16 << 20,
            };
            let mut signing_keys = Vec::new();
            for k in &r.signing_keys {
                let v = k.get_ref().trim();
                if minisign::PublicKey::from_base64(v).is_err() {
                    return Err(self.spanned_err(
                        k,
                        "offsite.signing-keys",
                        format!(
                            "{v:?} is not a minisign public key (the RW... line of \
                             `steward offsite key`)"
                        ),
                    ));
                }
                signing_keys.push(v.to_string());
            }
            let timeout = match &r.timeout {
                Some(d) if d.get_ref().0 < Duration::from_secs(1) => {
                    return Err(self.spanned_err(
                        d,
                        "offsite.timeout",
                        "at least 1s: a shorter idle timeout gives up on a healthy link".into(),
                    ));
                }
                Some(d) if d.get_ref().0 > Duration::from_hours(1) => {
                    return Err(self.spanned_err(
                        d,
                        "offsite.timeout",
                        "at most 1h: a stalled server would hold the job's lock for hours".into(),
                    ));
                }
                Some(d) => d.get_ref().0,
                None => Duration::from_mins(1),
            };
            let lock_for = match &r.lock_for {
                Some(d) if r.object_lock.is_none() => {
                    return Err(self.spanned_err(
                        d,
                        "offsite.lock-for",
                        "lock-for needs `object-lock = \"compliance\"` or \"governance\"".into(),
                    ));
                }
                Some(d) if d.get_ref().0 < Duration::from_hours(24) => {
                    return Err(self.spanned_err(
                        d,
                        "offsite.lock-for",
                        "at least 1d (S3 locks whole days)".into(),
                    ));
                }
                Some(d) => d.get_ref().0,
                None => Duration::from_hours(24 * 30),
            };
            out.push(OffsiteConfig {
                signing_keys,
                timeout,
                retries: match r.retries {
                    Some(n) if n > 20 => {
                        return Err(self.spanned_err(
                            t,
                            "offsite.retries",
                            format!("{n} is more than 20 tries; a dead server would hold the job for long"),
                        ));
                    }
                    n => n.unwrap_or(4),
                },
                object_lock: r.object_lock.map(|mode| ObjectLock { mode, lock_for }),
                append_only: r.append_only.unwrap_or(false),
                name,
                endpoint: endpoint.trim_end_matches('/').to_string(),
                region: r.region.clone().unwrap_or_else(|| "us-east-1".into()),
                bucket: bucket.clone(),
                prefix,
                path_style: r.path_style.unwrap_or(true),
                credentials: match &r.credentials_file {
                    Some(f) => {
                        CredentialSource::File(self.path(f, "offsite.credentials-file")?.value)
                    }
                    None => CredentialSource::Env,
                },
                recipients,
                encrypt,
                sets: covered,
                bandwidth_limit: r.bandwidth_limit.map(|s| s.0).filter(|n| *n > 0),
                part_size,
                keep: match &r.keep {
                    Some(k) => Some(self.keep(k, "offsite.keep")?),
                    None => None,
                },
            });
        }
        Ok(out)
    }

    /// An age X25519 recipient, checked.
    fn recipient(s: &str) -> Result<String, String> {
        let s = s.trim();
        s.parse::<age::x25519::Recipient>()
            .map(|_| s.to_string())
            .map_err(|e| format!("{s:?} is not an age recipient (age1...): {e}"))
    }
}
