//! Checking a target against the host's own record: every copy the catalog knows must
//! be in the bucket, described as it was uploaded, signed by a trusted key, with its
//! bytes intact and its chain link to the copy before it accounted for; and nothing may
//! be in the bucket under this host that the host did not put there (an injected copy,
//! or an old one replayed after retention deleted it).

use std::path::Path;

use serde::Serialize;

use super::{OffsiteError, RemoteCopy, Signer, Store, Trust, host_prefix, list, shown};
use crate::backup::Progress;
use crate::catalog::{Catalog, OffsiteCopy};
use crate::config::OffsiteConfig;
use crate::retention::KeepPolicy;

/// One line of an audit.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub target: String,
    /// The backup, when the finding is about one.
    pub id: Option<String>,
    pub key: String,
    pub ok: bool,
    /// What is wrong (empty when ok).
    pub error: String,
}

/// How deep an audit reads.
pub struct Depth<'a> {
    /// Which of the catalog's copies are downloaded and their digests compared.
    pub download: &'a dyn Fn(&OffsiteCopy) -> bool,
    /// With an identity, each downloaded copy is also decrypted and read in full in
    /// `scratch`.
    pub identity: Option<&'a Path>,
    pub scratch: &'a Path,
    /// The retention policy of a set's copies on this target, if it has one: a copy
    /// missing from the bucket that the policy drops anyway was pruned elsewhere (the
    /// trusted machine of an append-only host), not lost.
    pub keep: &'a dyn Fn(&str) -> Option<&'a KeepPolicy>,
    pub tz: &'a jiff::tz::TimeZone,
}

/// Audits `host`'s copies on `t` against the catalog; downloaded copies that pass are
/// marked checked.
pub fn audit(
    t: &OffsiteConfig,
    store: &Store,
    catalog: &Catalog,
    trust: &Trust,
    host: &str,
    depth: &Depth<'_>,
    progress: &dyn Progress,
) -> Result<Vec<Finding>, OffsiteError> {
    let (bucket, problems) = list(t, store, trust, &host_prefix(t, Some(host)))?;
    let mut out = Vec::new();
    let finding = |id: Option<&str>, key: &str, error: String| Finding {
        target: t.name.clone(),
        id: id.map(str::to_string),
        key: key.to_string(),
        ok: error.is_empty(),
        error,
    };
    let known = catalog.offsite_copies(Some(&t.name))?;
    // A problem with a known copy's description is told once, on that copy.
    for p in problems
        .iter()
        .filter(|p| !known.iter().any(|c| format!("{}.json", c.key) == p.key))
    {
        out.push(finding(
            None,
            &shown(&p.key),
            format!("not believed: {}", shown(&p.message)),
        ));
    }
    for c in &known {
        let in_bucket = bucket.iter().find(|b| b.backup_id == c.backup_id);
        if in_bucket.is_none()
            && super::forget_if_retired(catalog, t, &known, c, depth.keep, depth.tz)?
        {
            continue;
        }
        let error = match in_bucket {
            None => {
                let desc = format!("{}.json", c.key);
                match problems.iter().find(|p| p.key == desc) {
                    Some(p) => format!(
                        "its description in the bucket is not believed any more: {}",
                        shown(&p.message)
                    ),
                    None => "missing from the bucket: deleted by someone other than this \
                             host's retention"
                        .to_string(),
                }
            }
            Some(b) if b.sha256 != c.sha256 || b.bytes != c.bytes || b.key != c.key => format!(
                "replaced: the bucket describes another object ({} bytes, SHA-256 {}) than \
                 the one uploaded ({} bytes, SHA-256 {})",
                b.bytes, b.sha256, c.bytes, c.sha256
            ),
            Some(b) => match chain_gap(catalog, t, &known, b)? {
                Some(gap) => gap,
                None if (depth.download)(c) => match download(store, t, b, c, depth, progress) {
                    Ok(()) => {
                        catalog.offsite_checked(&t.name, &c.backup_id)?;
                        String::new()
                    }
                    Err(e) => crate::error::chain(&e),
                },
                None => String::new(),
            },
        };
        out.push(finding(Some(&c.backup_id), &c.key, error));
    }
    for b in bucket
        .iter()
        .filter(|b| !known.iter().any(|c| c.backup_id == b.backup_id))
    {
        let error = "in the bucket under this host, but not in its catalog: injected or \
                     replayed (`steward backups reindex --offsite` adopts the copies this \
                     host really made)"
            .to_string();
        out.push(finding(Some(&b.backup_id), &b.key, error));
    }
    Ok(out)
}

/// Why the link from `b` to the copy before it is broken, if it is: that copy must be
/// one the catalog knows (with the same digest), or one this host's retention deleted.
fn chain_gap(
    catalog: &Catalog,
    t: &OffsiteConfig,
    known: &[OffsiteCopy],
    b: &RemoteCopy,
) -> Result<Option<String>, OffsiteError> {
    let Some(link) = &b.previous else {
        return Ok(None);
    };
    if let Some(k) = known.iter().find(|k| k.backup_id == link.backup_id) {
        return Ok((k.sha256 != link.sha256).then(|| {
            format!(
                "the chain is broken: the copy before it, {}, was uploaded with SHA-256 {}, \
                 not the {} the catalog has",
                link.backup_id, link.sha256, k.sha256
            )
        }));
    }
    if catalog
        .offsite_pruned_at(&t.name, &link.backup_id)?
        .is_some()
    {
        return Ok(None);
    }
    Ok(Some(format!(
        "the chain is broken: the copy before it, {}, is gone, and this host's retention \
         did not delete it",
        link.backup_id
    )))
}

/// The download check of one copy (and the whole chain with an identity).
fn download(
    store: &Store,
    t: &OffsiteConfig,
    b: &RemoteCopy,
    c: &OffsiteCopy,
    depth: &Depth<'_>,
    progress: &dyn Progress,
) -> Result<(), OffsiteError> {
    super::check(store, &t.name, &c.key, &c.sha256, c.bytes)?;
    if let Some(identity) = depth.identity {
        super::check_full(store, &t.name, b, identity, depth.scratch, progress)?;
    }
    Ok(())
}

/// Signs the descriptions this host wrote before descriptions were signed: those under
/// its prefix with no signature whose every field the catalog confirms (the catalog is
/// the host's own record of what it uploaded). Returns how many were signed.
pub fn adopt_unsigned(
    t: &OffsiteConfig,
    store: &Store,
    catalog: &Catalog,
    signer: &Signer,
    host: &str,
) -> Result<usize, OffsiteError> {
    let objects = store.list(&host_prefix(t, Some(host)))?;
    let mut n = 0;
    for c in catalog.offsite_copies(Some(&t.name))? {
        let desc = format!("{}.json", c.key);
        let sig = super::signature_key(&desc);
        let listed = |k: &str| objects.iter().find(|o| o.key == k).map(|o| o.size);
        if listed(&sig).is_some() || listed(&desc).is_none_or(|s| s > super::DESCRIPTION_LIMIT) {
            continue;
        }
        let data = store.get_small(&desc, super::DESCRIPTION_LIMIT)?;
        let Ok(r) = serde_json::from_slice::<RemoteCopy>(&data) else {
            continue;
        };
        let confirmed = r.backup_id == c.backup_id
            && r.key == c.key
            && r.sha256 == c.sha256
            && r.bytes == c.bytes
            && r.encrypted == c.encrypted
            && r.set == c.set
            && listed(&c.key) == Some(c.bytes);
        if confirmed {
            let text = signer.sign(
                &data,
                &format!("steward offsite copy {}/{}/{}", r.host, r.set, r.backup_id),
            )?;
            store.put(&sig, text.as_bytes(), c.locked_until)?;
            n += 1;
        }
    }
    Ok(n)
}
