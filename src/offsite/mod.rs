//! Offsite copies on S3-compatible storage. A verified local archive is streamed through
//! age (encrypted to the target's recipients: this host can write copies but not read
//! them) into a multipart upload under `<prefix>/<host>/<set>/`, its bytes checked against
//! the digest the archive was verified with while they are read; then the object's size is
//! checked against the server's, a small JSON description is written beside it, and the
//! catalog records the copy with the object's SHA-256. A copy without that description
//! is incomplete and never listed. Checking re-downloads and compares the object digest
//! (no identity needed); fetching decrypts a copy back into a local archive, which the
//! ordinary verify and restore then treat like any other.
//!
//! `upload.rs` sends, `fetch.rs` reads back, `s3.rs` speaks S3; this file owns the keys,
//! the descriptions, listing, remote retention and rebuilding the catalog's copies.

mod audit;
mod fetch;
mod s3;
mod sign;
mod upload;
mod xml;

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::catalog::{BackupRecord, Catalog, CatalogError, OffsiteCopy};
use crate::config::OffsiteConfig;
pub use audit::{Depth, Finding, adopt_unsigned, audit};
pub use fetch::{check, check_full, fetch};
pub use s3::{S3Error, Store};
pub use sign::{Signer, Trust, public_file};
pub use upload::{Pushed, abort_stale, push};

/// The most a description may be; a larger one is refused unread.
pub const DESCRIPTION_LIMIT: u64 = 64 * 1024;

/// The description format this version writes (signed, chained).
pub const FORMAT: u32 = 2;

/// What went wrong with an offsite copy.
#[derive(Debug, thiserror::Error)]
pub enum OffsiteError {
    #[error(transparent)]
    S3(#[from] S3Error),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Refused(String),
    #[error("offsite {target}: {key}: {message}")]
    Damaged {
        target: String,
        key: String,
        message: String,
    },
}

impl OffsiteError {
    /// The server did not answer (a timeout, a dropped connection, its own trouble): the
    /// next request to it would most likely wait as long again.
    pub fn unreachable(&self) -> bool {
        matches!(self, OffsiteError::S3(e) if e.transient())
    }
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> OffsiteError + '_ {
    move |source| OffsiteError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The copy before this one of the same set on the same target, when it was uploaded:
/// the descriptions form a chain, so a deleted or replayed copy shows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Link {
    pub backup_id: String,
    pub sha256: String,
}

/// The description kept beside each object (`<key>.json`, signed in `<key>.json.minisig`):
/// what a new machine needs to list, fetch and check a copy with nothing but the bucket
/// and the recovery kit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemoteCopy {
    #[serde(default)]
    pub format: u32,
    pub backup_id: String,
    pub set: String,
    pub host: String,
    pub created_at: i64,
    /// The object's key.
    pub key: String,
    /// The local archive's file name.
    pub archive: String,
    /// SHA-256 of the archive (the plaintext).
    pub archive_sha256: String,
    /// The object's size and SHA-256 (the ciphertext when encrypted).
    pub bytes: u64,
    pub sha256: String,
    pub encrypted: bool,
    /// The change guard found the backup suspect when it was copied.
    #[serde(default)]
    pub suspect: bool,
    /// age recipients it is encrypted to.
    pub recipients: Vec<String>,
    pub uploaded_at: i64,
    /// The previous copy of the set on this target (none for the first).
    #[serde(default)]
    pub previous: Option<Link>,
    /// The ID of the key that signed it.
    #[serde(default)]
    pub signed_by: String,
    /// A differential: its base (id and archive SHA-256), which remote retention keeps
    /// while it keeps the differential, also on a machine whose catalog never saw them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Link>,
}

/// A description in the bucket that is not believed, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The description's key.
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// A name safe in an object key: the host name as given, other bytes as `_`.
fn key_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Where the copy of archive `file` of `set` from `host` lives on `t`.
fn key_for(t: &OffsiteConfig, host: &str, set: &str, file: &str, encrypted: bool) -> String {
    let mut key = String::new();
    if !t.prefix.is_empty() {
        key.push_str(&t.prefix);
        key.push('/');
    }
    key.push_str(&format!(
        "{}/{}/{}",
        key_part(host),
        key_part(set),
        key_part(file)
    ));
    if encrypted {
        key.push_str(".age");
    }
    key
}

/// The name of a host's fleet status object, `<prefix>/<host>/status.json`.
pub const STATUS_OBJECT: &str = "status.json";

/// Where `host`'s fleet status object lives on `t`.
pub fn status_key(t: &OffsiteConfig, host: &str) -> String {
    format!("{}{STATUS_OBJECT}", host_prefix(t, Some(host)))
}

/// Whether `key` is a host's fleet status object (`<prefix>/<host>/status.json`), which
/// is not a copy's description.
pub fn is_status_key(t: &OffsiteConfig, key: &str) -> bool {
    key.strip_prefix(&host_prefix(t, None))
        .and_then(|rest| rest.strip_suffix(STATUS_OBJECT))
        .is_some_and(|host| host.len() > 1 && host.ends_with('/') && host.matches('/').count() == 1)
}

/// Where a backup's copy lives on `t`.
pub fn object_key(t: &OffsiteConfig, b: &BackupRecord) -> String {
    let file = b.path.file_name().map_or_else(
        || format!("{}.tar.zst", b.id),
        |n| n.to_string_lossy().into_owned(),
    );
    key_for(t, &b.host, &b.set, &file, t.encrypt)
}

/// The prefix that holds `host`'s copies (every host's when `None`).
pub fn host_prefix(t: &OffsiteConfig, host: Option<&str>) -> String {
    let base = if t.prefix.is_empty() {
        String::new()
    } else {
        format!("{}/", t.prefix)
    };
    match host {
        Some(h) => format!("{base}{}/", key_part(h)),
        None => base,
    }
}

/// The signature's key beside a description.
pub fn signature_key(description: &str) -> String {
    format!("{description}.minisig")
}

/// A plain name of the shape steward writes (set names, archive names): nothing that
/// could climb out of a folder or start an option.
fn plain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && !s.starts_with(['.', '-'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Whether a description, read from `desc_key` and signed by `sig`, is one a trusted key
/// signed for exactly this place and this config; the copy, or why not.
pub fn authenticate(
    t: &OffsiteConfig,
    trust: &Trust,
    desc_key: &str,
    data: &[u8],
    sig: Option<&[u8]>,
) -> Result<RemoteCopy, String> {
    let Some(sig) = sig else {
        return Err("the description is not signed (no .minisig beside it)".into());
    };
    trust.check(data, sig)?;
    let c: RemoteCopy =
        serde_json::from_slice(data).map_err(|e| format!("unreadable description: {e}"))?;
    if !plain(&c.set)
        || !plain(&c.archive)
        || c.archive != format!("{}.tar.zst", c.backup_id)
        || !c.backup_id.starts_with(&format!("{}-", c.set))
    {
        return Err(format!(
            "the description names an unusable set {:?}, ID {:?} or archive {:?}",
            c.set, c.backup_id, c.archive
        ));
    }
    let expected = key_for(t, &c.host, &c.set, &c.archive, c.encrypted);
    if c.key != expected || format!("{}.json", c.key) != desc_key {
        return Err(format!(
            "the description belongs to {:?}, not to where it lies",
            c.key
        ));
    }
    if c.encrypted != t.encrypt {
        return Err(if t.encrypt {
            "the copy is not encrypted, but the config encrypts every copy".into()
        } else {
            "the copy is encrypted, but the config uploads in the clear (`encrypt = false`)".into()
        });
    }
    if let Some(r) = c.recipients.iter().find(|r| !t.recipients.contains(r)) {
        return Err(format!(
            "the copy is encrypted to {r}, which is not among the config's recipients"
        ));
    }
    if c.encrypted && c.recipients.is_empty() {
        return Err("the copy names no recipients".into());
    }
    Ok(c)
}

/// The descriptions under `prefix` whose key passes `read`: the believed copies (each
/// beside its complete object), and the problems with the others.
fn described(
    t: &OffsiteConfig,
    store: &Store,
    trust: &Trust,
    prefix: &str,
    read: impl Fn(&str) -> bool,
) -> Result<(Vec<RemoteCopy>, Vec<Problem>), OffsiteError> {
    let objects = store.list(prefix)?;
    let mut good = Vec::new();
    let mut problems = Vec::new();
    let size_of = |key: &str| objects.iter().find(|x| x.key == key).map(|x| x.size);
    // Descriptions are steward's own `<key>.json`, always lower case.
    #[allow(clippy::case_sensitive_file_extension_comparisons)]
    for o in objects
        .iter()
        .filter(|o| o.key.ends_with(".json") && !is_status_key(t, &o.key) && read(&o.key))
    {
        let problem = |message: String| Problem {
            key: o.key.clone(),
            message,
        };
        if o.size > DESCRIPTION_LIMIT {
            problems.push(problem(format!(
                "the description is {} bytes, more than a description ever is ({DESCRIPTION_LIMIT}); not read",
                o.size
            )));
            continue;
        }
        let data = match store.get_small(&o.key, DESCRIPTION_LIMIT) {
            Ok(d) => d,
            Err(e) if e.not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        let sig_key = signature_key(&o.key);
        let sig = match size_of(&sig_key) {
            Some(n) if n <= DESCRIPTION_LIMIT => match store.get_small(&sig_key, DESCRIPTION_LIMIT)
            {
                Ok(s) => Some(s),
                Err(e) if e.not_found() => None,
                Err(e) => return Err(e.into()),
            },
            Some(n) => {
                problems.push(problem(format!(
                    "its signature is {n} bytes, more than a signature ever is; not read"
                )));
                continue;
            }
            None => None,
        };
        match authenticate(t, trust, &o.key, &data, sig.as_deref()) {
            Ok(c) => match (trust.retired_at(&c.backup_id, &c.sha256), size_of(&c.key)) {
                // Back whole: a replay. Only a leftover description of a copy retention
                // dropped: litter, not a copy, and no alarm.
                (Some(at), Some(n)) if n == c.bytes => problems.push(problem(format!(
                    "replayed: this host's retention deleted {} at {}, and it is back",
                    c.backup_id,
                    s3::lock_date(at)
                ))),
                (Some(_), _) => {}
                (None, Some(n)) if n == c.bytes => good.push(c),
                (None, Some(n)) => problems.push(problem(format!(
                    "its object holds {n} bytes; the signed description says {}",
                    c.bytes
                ))),
                (None, None) => {
                    problems.push(problem(format!("its object {} is missing", c.key)));
                }
            },
            Err(m) => problems.push(problem(m)),
        }
    }
    good.sort_by(|a, b| (&a.host, &a.set, b.created_at).cmp(&(&b.host, &b.set, a.created_at)));
    Ok((good, problems))
}

/// The believed copies under `prefix`, and the problems with the other descriptions.
pub fn list(
    t: &OffsiteConfig,
    store: &Store,
    trust: &Trust,
    prefix: &str,
) -> Result<(Vec<RemoteCopy>, Vec<Problem>), OffsiteError> {
    described(t, store, trust, prefix, |_| true)
}

/// The copy of backup `id` under `prefix` (every host's when `host` is `None`), reading
/// only the descriptions whose key names its archive. An ID under two hosts is refused
/// without `host`, naming both; a description of it that is not believed is refused with
/// the reason.
pub fn find(
    t: &OffsiteConfig,
    store: &Store,
    trust: &Trust,
    host: Option<&str>,
    id: &str,
) -> Result<RemoteCopy, OffsiteError> {
    let archive = format!("/{}.tar.zst", key_part(id));
    let (good, problems) = described(t, store, trust, &host_prefix(t, host), |key| {
        key.contains(&archive)
    })?;
    let mut found: Vec<RemoteCopy> = good.into_iter().filter(|c| c.backup_id == id).collect();
    if found.len() > 1 {
        let hosts: Vec<String> = found.iter().map(|c| shown(&c.host)).collect();
        return Err(OffsiteError::Refused(format!(
            "{id} is a backup of more than one host ({}); choose one with --host",
            hosts.join(", ")
        )));
    }
    if let Some(c) = found.pop() {
        return Ok(c);
    }
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|p| shown(&p.to_string())).collect();
        return Err(OffsiteError::Refused(format!(
            "the copy of {id} on offsite {} is not trusted and was not fetched: {}",
            t.name,
            list.join("; ")
        )));
    }
    Err(OffsiteError::Refused(format!(
        "no complete copy of {id} on offsite {} (see `steward offsite list --all-hosts`)",
        t.name
    )))
}

/// A string from the bucket made safe for a terminal: control characters (escapes,
/// newlines) are shown escaped, not obeyed.
pub fn shown(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}') {
                c.escape_unicode().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// The catalog row for a believed copy.
fn catalog_row(t: &OffsiteConfig, c: &RemoteCopy) -> OffsiteCopy {
    OffsiteCopy {
        target: t.name.clone(),
        backup_id: c.backup_id.clone(),
        set: c.set.clone(),
        created_at: c.created_at,
        key: c.key.clone(),
        bytes: c.bytes,
        sha256: c.sha256.clone(),
        encrypted: c.encrypted,
        suspect: c.suspect,
        uploaded_at: c.uploaded_at,
        checked_at: None,
        locked_until: None,
    }
}

/// Rebuilds the catalog's copies on `t` from this host's signed descriptions in the
/// bucket; returns (found, dropped, the problems). A copy the catalog knows and the
/// bucket lacks is dropped only when its set's policy (`keep`) drops it anyway (pruned
/// here or elsewhere, remembered as pruned); otherwise it stays, named, for
/// `verify --offsite` to report: a rebuild never hides a deletion.
pub fn reindex<'k>(
    t: &OffsiteConfig,
    store: &Store,
    catalog: &Catalog,
    trust: &Trust,
    host: &str,
    keep: &dyn Fn(&str) -> Option<&'k crate::retention::KeepPolicy>,
    tz: &jiff::tz::TimeZone,
) -> Result<(usize, usize, Vec<Problem>), OffsiteError> {
    let (found, mut problems) = list(t, store, trust, &host_prefix(t, Some(host)))?;
    let known = catalog.offsite_copies(Some(&t.name))?;
    let mut dropped = 0;
    for c in known
        .iter()
        .filter(|c| !found.iter().any(|f| f.backup_id == c.backup_id))
    {
        if forget_if_retired(catalog, t, &known, c, keep, tz)? {
            dropped += 1;
        } else {
            problems.push(Problem {
                key: c.key.clone(),
                message: format!(
                    "{} is in the catalog but not (believed) in the bucket, and its retention \
                     keeps it: kept in the catalog; `steward verify --offsite` names it",
                    c.backup_id
                ),
            });
        }
    }
    for c in &found {
        let mut row = catalog_row(t, c);
        if let Some(old) = catalog.offsite_copy(&t.name, &c.backup_id)? {
            row.checked_at = old.checked_at;
        }
        if t.object_lock.is_some() {
            row.locked_until = store
                .head(&c.key)?
                .retain_until
                .as_deref()
                .and_then(parse_lock_date);
        }
        catalog.put_offsite_copy(&row)?;
    }
    Ok((found.len(), dropped, problems))
}

/// One copy's retention verdict.
#[derive(Debug, Clone, Serialize)]
pub struct PruneRow {
    pub target: String,
    pub host: String,
    pub backup_id: String,
    pub key: String,
    pub created_at: i64,
    pub keep: bool,
    /// Deleted (false on a dry run, when kept, or when left).
    pub deleted: bool,
    /// Not kept, but left in the bucket: locked, append-only, or the server refused.
    pub left: bool,
    /// Its object lock ends then (when the target locks, or the server reports one).
    pub locked_until: Option<i64>,
    pub reasons: Vec<String>,
}

/// A copy as retention sees it: suspect, pinned and its base as the local backup says,
/// when the catalog has it (else `suspect` and `base` from its description).
fn candidate(
    catalog: &Catalog,
    id: &str,
    time: i64,
    suspect: bool,
    base: Option<&str>,
) -> Result<crate::retention::Candidate, OffsiteError> {
    let local = catalog.backup(id)?;
    Ok(crate::retention::Candidate {
        id: id.to_string(),
        time,
        verified: true,
        suspect: local.as_ref().map_or(suspect, BackupRecord::is_suspect),
        pinned: local.as_ref().is_some_and(|b| b.pinned),
        base: match local {
            Some(b) => b.base,
            None => base.map(str::to_string),
        },
    })
}

/// A copy `c` the catalog knows and the bucket lacks: when its set's policy (`keep`)
/// drops it anyway, among the catalog's copies of that set (`known`), it was pruned
/// here or elsewhere, not lost; the catalog forgets it as pruned (so its return is a
/// replay, and the chain through it is whole). Returns whether it did.
pub fn forget_if_retired<'k>(
    catalog: &Catalog,
    t: &OffsiteConfig,
    known: &[OffsiteCopy],
    c: &OffsiteCopy,
    keep: &dyn Fn(&str) -> Option<&'k crate::retention::KeepPolicy>,
    tz: &jiff::tz::TimeZone,
) -> Result<bool, OffsiteError> {
    let Some(policy) = keep(&c.set) else {
        return Ok(false);
    };
    let mut candidates = Vec::new();
    for k in known.iter().filter(|k| k.set == c.set) {
        candidates.push(candidate(
            catalog,
            &k.backup_id,
            k.created_at,
            k.suspect,
            None,
        )?);
    }
    let retired = crate::retention::decide(&candidates, policy, tz)
        .iter()
        .any(|v| v.id == c.backup_id && !v.keep);
    if retired {
        catalog.delete_offsite_copy(&t.name, &c.backup_id)?;
        catalog.note_offsite_pruned(&t.name, &c.backup_id, &c.sha256)?;
    }
    Ok(retired)
}

/// A retain-until date from the server, as seconds.
fn parse_lock_date(s: &str) -> Option<i64> {
    s.trim()
        .parse::<jiff::Timestamp>()
        .ok()
        .map(jiff::Timestamp::as_second)
}

/// The three objects of a copy: the archive, its description and the signature.
fn copy_objects(key: &str) -> [String; 3] {
    let desc = format!("{key}.json");
    [key.to_string(), signature_key(&desc), desc]
}

/// Applies `policy` to `host`'s believed copies of `set` on `t` (`copies`, as listed):
/// the same rules as local retention (the newest good copy is always kept, suspect
/// copies never count, pinned backups stay). What it keeps has its object lock extended
/// while it is kept; what it does not keep is deleted (description and signature first,
/// so the copy is no longer listed, then the object) unless it is still locked or the
/// target is append-only, which is said. Only keys steward writes are ever deleted.
/// Without a policy every copy is kept, and said (a trusted machine whose config lacks
/// a host's set).
#[allow(clippy::too_many_arguments)]
pub fn prune(
    t: &OffsiteConfig,
    store: &Store,
    catalog: &Catalog,
    copies: &[RemoteCopy],
    set: &str,
    policy: Option<&crate::retention::KeepPolicy>,
    tz: &jiff::tz::TimeZone,
    dry_run: bool,
) -> Result<Vec<PruneRow>, OffsiteError> {
    let now = crate::clock::now();
    let mine: Vec<&RemoteCopy> = copies.iter().filter(|c| c.set == set).collect();
    let row = |c: &RemoteCopy, keep: bool, reasons: Vec<String>| PruneRow {
        target: t.name.clone(),
        host: c.host.clone(),
        backup_id: c.backup_id.clone(),
        key: c.key.clone(),
        created_at: c.created_at,
        keep,
        deleted: false,
        left: false,
        locked_until: None,
        reasons,
    };
    let Some(policy) = policy else {
        let why = format!(
            "no retention policy for set {set:?} here (define the set, or [offsite.keep]): kept"
        );
        return Ok(mine
            .iter()
            .map(|c| row(c, true, vec![why.clone()]))
            .collect());
    };
    let mut candidates = Vec::new();
    for c in &mine {
        let base = c.base.as_ref().map(|l| l.backup_id.as_str());
        candidates.push(candidate(
            catalog,
            &c.backup_id,
            c.created_at,
            c.suspect,
            base,
        )?);
    }
    let mut rows = Vec::new();
    for v in crate::retention::decide(&candidates, policy, tz) {
        let Some(c) = mine.iter().find(|c| c.backup_id == v.id) else {
            continue;
        };
        let mut reasons = v.reasons;
        let known = catalog.offsite_copy(&t.name, &c.backup_id)?;
        let mut locked_until = known.as_ref().and_then(|k| k.locked_until);
        if v.keep && known.is_none() && t.object_lock.is_some() {
            // Not this host's copy (a trusted machine pruning): the server's word.
            locked_until = store
                .head(&c.key)?
                .retain_until
                .as_deref()
                .and_then(parse_lock_date);
        }
        let mut deleted = false;
        let mut left = false;
        if v.keep {
            if let Some(lock) = &t.object_lock {
                let span = lock.lock_for.as_secs() as i64;
                // Only what the server did lock: a bucket without object lock refuses
                // retention (and `check` warns about it).
                if !dry_run && locked_until.is_some_and(|u| u < now + span / 2) {
                    let until = now + span;
                    for k in copy_objects(&c.key) {
                        store.retain(&k, until)?;
                    }
                    locked_until = Some(until);
                    if known.is_some() {
                        catalog.offsite_locked(&t.name, &c.backup_id, until)?;
                    }
                    reasons.push(format!("lock extended to {}", s3::lock_date(until)));
                }
            }
        } else {
            let ours = c.key.starts_with(&host_prefix(t, None))
                && (c.key.ends_with(".tar.zst") || c.key.ends_with(".tar.zst.age"));
            if !ours {
                reasons.push(format!(
                    "{} is not a key steward writes; not deleted",
                    c.key
                ));
            } else if t.append_only {
                left = true;
                reasons.push(
                    "append-only: this host never deletes; prune from the trusted machine \
                     (`steward offsite prune`)"
                        .into(),
                );
            } else {
                // The server's word on the lock, not only the catalog's.
                let head = store.head(&c.key)?;
                if let Some(u) = head.retain_until.as_deref().and_then(parse_lock_date) {
                    locked_until = Some(u);
                }
                match locked_until {
                    Some(u) if u > now => {
                        left = true;
                        reasons.push(format!("locked until {}; left", s3::lock_date(u)));
                    }
                    _ if dry_run => {}
                    _ => {
                        let [object, sig, desc] = copy_objects(&c.key);
                        for k in [&desc, &sig, &object] {
                            match store.delete(k) {
                                Err(e) if e.denied() => {
                                    left = true;
                                    reasons.push(format!(
                                        "the server refused to delete {k} (locked?): {e}"
                                    ));
                                    break;
                                }
                                r => r?,
                            }
                        }
                        if !left {
                            catalog.delete_offsite_copy(&t.name, &c.backup_id)?;
                            catalog.note_offsite_pruned(&t.name, &c.backup_id, &c.sha256)?;
                            deleted = true;
                        }
                    }
                }
            }
        }
        rows.push(PruneRow {
            deleted,
            left,
            locked_until,
            ..row(c, v.keep, reasons)
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    const R1: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
    const R2: &str = "age1lggyhqrw2nlhcxprm67z43rta597azn8gknawjehu9d9dl0jq3yqqvfafg";

    /// A target encrypting to R1, and a description of a copy on it signed by `signer`.
    fn setup(
        signer: &Signer,
        edit: impl FnOnce(&mut RemoteCopy),
    ) -> (OffsiteConfig, Vec<u8>, String) {
        let cfg = crate::config::parse(
            &format!(
                "[state]\ndir = \"/var/lib/x\"\n[[backup.set]]\nname = \"data\"\npaths = [\"/srv/data\"]\n\
                 [[offsite]]\nendpoint = \"http://127.0.0.1:1\"\nbucket = \"bkt\"\n\
                 recipients = [\"{R1}\"]\n"
            ),
            crate::config::Origin::Embedded,
        )
        .unwrap();
        let t = cfg.offsite[0].clone();
        let mut c = RemoteCopy {
            format: FORMAT,
            backup_id: "data-20261202T000000Z".into(),
            set: "data".into(),
            host: "h".into(),
            created_at: 0,
            key: "steward/h/data/data-20261202T000000Z.tar.zst.age".into(),
            archive: "data-20261202T000000Z.tar.zst".into(),
            archive_sha256: "a".repeat(64),
            bytes: 10,
            sha256: "b".repeat(64),
            encrypted: true,
            suspect: false,
            recipients: vec![R1.into()],
            uploaded_at: 0,
            previous: None,
            signed_by: signer.id(),
            base: None,
        };
        edit(&mut c);
        let data = serde_json::to_vec(&c).unwrap();
        let sig = signer.sign(&data, "t").unwrap();
        (t, data, sig)
    }

    #[test]
    fn a_signed_description_that_disagrees_with_the_config_or_its_place_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::load_or_create(dir.path()).unwrap();
        let trust = Trust::new(&[], Some(&signer));
        let desc = "steward/h/data/data-20261202T000000Z.tar.zst.age.json";
        let run = |edit: fn(&mut RemoteCopy), at: &str| {
            let (t, data, sig) = setup(&signer, edit);
            authenticate(&t, &trust, at, &data, Some(sig.as_bytes()))
        };
        assert!(run(|_| {}, desc).is_ok());
        // Signed, but for another place.
        let err = run(|_| {}, "steward/h/data/other.json").unwrap_err();
        assert!(err.contains("not to where it lies"), "{err}");
        // A cleartext copy where the config encrypts.
        let err = run(
            |c| {
                c.encrypted = false;
                c.recipients.clear();
                c.key = c.key.trim_end_matches(".age").into();
            },
            "steward/h/data/data-20261202T000000Z.tar.zst.json",
        )
        .unwrap_err();
        assert!(err.contains("not encrypted"), "{err}");
        // Encrypted to a recipient the config does not name.
        let err = run(|c| c.recipients.push(R2.into()), desc).unwrap_err();
        assert!(err.contains(R2), "{err}");
        // Names that could climb out of the destination.
        let err = run(|c| c.set = "../x".into(), desc).unwrap_err();
        assert!(err.contains("unusable"), "{err}");
        // Unsigned.
        let (t, data, _) = setup(&signer, |_| {});
        let err = authenticate(&t, &trust, desc, &data, None).unwrap_err();
        assert!(err.contains("not signed"), "{err}");
    }

    #[test]
    fn bucket_strings_cannot_drive_the_terminal() {
        assert_eq!(shown("host\u{1b}[2J\nx"), "host\\u{1b}[2J\\u{a}x");
        assert_eq!(shown("plain-host.local"), "plain-host.local");
        assert_eq!(shown("a\u{202e}b"), "a\\u{202e}b");
    }
}
