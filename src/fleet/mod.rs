//! The fleet: after each check and backup run a host leaves one small signed status object
//! in its offsite bucket (`<prefix>/<host>/status.json`: its worst state, newest good
//! backup per set, the time), and reads its peers' to see who has gone quiet, a dead
//! man's switch without a third-party service.
//!
//! The bucket is not trusted. A status is believed only when it is signed by the key the
//! config gives for that very host (`[fleet.peers]`; this host's own key for itself) and
//! names that host; anything else is shown as untrusted, never as healthy. The signature
//! travels inside the object (one PUT), so a reader never sees a status beside the
//! signature of the one before it.

use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, CatalogError};
use crate::config::{Config, FleetConfig, OffsiteConfig};
use crate::offsite::{Signer, Store, Trust as Keys};
use crate::severity::Severity;

/// A status object larger than this is not read.
const STATUS_LIMIT: u64 = 64 << 10;
/// Hosts read besides the configured peers, at most.
const MAX_UNEXPECTED: usize = 100;
/// A status from further in the future than this is not believed as current.
const CLOCK_SLACK: i64 = 5 * 60;

/// Why the fleet could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Offsite(#[from] crate::offsite::OffsiteError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("[fleet] target {0:?} is not an [[offsite]] target")]
    NoTarget(String),
}

impl From<crate::offsite::S3Error> for FleetError {
    fn from(e: crate::offsite::S3Error) -> Self {
        FleetError::Offsite(e.into())
    }
}

/// What a host says about itself (the signed part).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostStatus {
    pub format: u32,
    pub host: String,
    /// Unix seconds when it was written.
    pub time: i64,
    /// `OK`, `WARNING` or `CRITICAL`.
    pub worst: String,
    /// The checks that are not OK: (name, state).
    pub problems: Vec<(String, String)>,
    /// Per set: its newest good backup, if any.
    pub sets: Vec<(String, Option<String>)>,
}

/// The object in the bucket: the status's exact bytes and their minisign signature.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    status: String,
    minisig: Option<String>,
}

/// How far a peer's status is to be believed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "trust", content = "detail")]
pub enum Trust {
    /// Signed by that host's configured key and naming that host.
    Trusted,
    /// Nothing under its folder yet.
    Missing,
    /// Not signed.
    Unsigned,
    /// Signed, but not by the key configured for the host (or no key is configured).
    UnknownKey(String),
    /// The signature or the object does not hold up.
    Bad(String),
}

impl Trust {
    /// Whether what the status says may be shown as the host's state.
    pub fn trusted(&self) -> bool {
        matches!(self, Trust::Trusted)
    }

    /// One word, for the page and JSON.
    pub fn word(&self) -> &'static str {
        match self {
            Trust::Trusted => "trusted",
            Trust::Missing => "missing",
            Trust::Unsigned => "unsigned",
            Trust::UnknownKey(_) => "unknown-key",
            Trust::Bad(_) => "bad",
        }
    }

    /// A sentence.
    pub fn describe(&self) -> String {
        match self {
            Trust::Trusted => "signed by its key".into(),
            Trust::Missing => "no status object".into(),
            Trust::Unsigned => "not signed: untrusted".into(),
            Trust::UnknownKey(m) | Trust::Bad(m) => format!("untrusted: {m}"),
        }
    }
}

/// One host of the fleet as this host last read it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerView {
    pub host: String,
    /// This host itself.
    pub own: bool,
    /// A peer named in `[fleet.peers]` (others were only found in the bucket).
    pub expected: bool,
    pub trust: Trust,
    /// When its trusted status was written.
    pub time: Option<i64>,
    pub worst: Option<Severity>,
    pub problems: Vec<(String, String)>,
    pub sets: Vec<(String, Option<String>)>,
    /// When this host read it.
    pub read_at: i64,
    /// The newest trusted status time this host has seen from it: an older one put back
    /// later is a replay, not news.
    #[serde(default)]
    pub newest_seen: Option<i64>,
    /// When this host first looked for it (a peer that never wrote is silent only once
    /// `max-silence` has passed since, so setting up two hosts one after the other does
    /// not alert).
    #[serde(default)]
    pub looking_since: i64,
    /// No trusted status newer than `max-silence` (filled in when shown).
    #[serde(default)]
    pub silent: bool,
}

impl PeerView {
    /// What the host's state column says: `UNTRUSTED` (a status is there, but not
    /// believed), `SILENT` (none, or too old), else the state its status gives.
    pub fn label(&self) -> &'static str {
        match (&self.trust, self.silent) {
            (Trust::Missing, _) if !self.silent => "PENDING",
            (Trust::Missing, _) | (Trust::Trusted, true) => "SILENT",
            (Trust::Trusted, false) => self.worst.map_or("?", Severity::word),
            _ => "UNTRUSTED",
        }
    }
}

/// The fleet's target, with short timeouts: its objects are small, and a check cycle
/// must not wait minutes on a bucket that does not answer.
fn target(cfg: &Config, fleet: &FleetConfig) -> Result<OffsiteConfig, FleetError> {
    let mut t = cfg
        .offsite
        .iter()
        .find(|t| t.name == fleet.target)
        .cloned()
        .ok_or_else(|| FleetError::NoTarget(fleet.target.clone()))?;
    t.timeout = t.timeout.min(std::time::Duration::from_secs(10));
    t.retries = 0;
    Ok(t)
}

/// Whether `name` is a folder steward could have written (`<prefix>/<host>/`).
fn host_folder_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn severity(word: &str) -> Option<Severity> {
    [Severity::Ok, Severity::Warn, Severity::Crit]
        .into_iter()
        .find(|s| s.word() == word)
}

/// This host's status now, from the catalog.
pub fn own_status(cfg: &Config, catalog: &Catalog, now: i64) -> Result<HostStatus, CatalogError> {
    let states = catalog.check_states()?;
    let worst = states.iter().map(|s| s.state).max().unwrap_or(Severity::Ok);
    let mut sets = Vec::new();
    for s in &cfg.backup.sets {
        sets.push((s.name.clone(), catalog.newest_good(&s.name)?.map(|b| b.id)));
    }
    Ok(HostStatus {
        format: 1,
        host: crate::fsutil::hostname(),
        time: now,
        worst: worst.word().to_string(),
        problems: states
            .into_iter()
            .filter(|s| s.state != Severity::Ok)
            .map(|s| (s.name, s.state.word().to_string()))
            .collect(),
        sets,
    })
}

/// Writes this host's signed status to the fleet's bucket.
///
/// Skipped (`Ok(false)`) while the status in the bucket, as the last read found it, says
/// the same and is younger than a quarter of `max-silence`: a check every minute need not
/// write every minute (each write costs a request, and a version in a locked bucket).
pub fn publish(cfg: &Config, catalog: &Catalog, now: i64) -> Result<bool, FleetError> {
    let Some(fleet) = &cfg.fleet else {
        return Ok(false);
    };
    let t = &target(cfg, fleet)?;
    let status = own_status(cfg, catalog, now)?;
    let fresh = fleet.max_silence.as_secs() as i64 / 4;
    let unchanged = catalog
        .fleet()?
        .iter()
        .filter_map(|row| serde_json::from_str::<PeerView>(row).ok())
        .find(|v| v.own)
        .is_some_and(|v| {
            v.trust.trusted()
                && v.time.is_some_and(|at| at <= now && now - at < fresh)
                && v.worst.map(Severity::word) == Some(status.worst.as_str())
                && v.problems == status.problems
                && v.sets == status.sets
        });
    if unchanged {
        return Ok(false);
    }
    let text = serde_json::to_string(&status).unwrap_or_default();
    let signer = Signer::load_or_create(&cfg.state_dir)?;
    let minisig = signer.sign(
        text.as_bytes(),
        &format!("steward fleet status of {} at {now}", status.host),
    )?;
    let body = serde_json::to_vec(&Envelope {
        status: text,
        minisig: Some(minisig),
    })
    .unwrap_or_default();
    let store = Store::open_small(t)?;
    store.put(&crate::offsite::status_key(t, &status.host), &body, None)?;
    Ok(true)
}

/// Judges one status object's bytes found under `host`'s folder.
fn judge(
    host: &str,
    data: &[u8],
    key: Option<&str>,
    own: Option<&Signer>,
) -> (Trust, Option<HostStatus>) {
    let Ok(env) = serde_json::from_slice::<Envelope>(data) else {
        return (Trust::Bad("not a steward status object".into()), None);
    };
    let Some(sig) = env.minisig else {
        return (Trust::Unsigned, None);
    };
    let keys = match (own, key) {
        (Some(signer), _) => Keys::new(&[], Some(signer)),
        (None, Some(k)) => Keys::new(&[k.to_string()], None),
        (None, None) => {
            return (
                Trust::UnknownKey(format!("no key is configured for {host} ([fleet.peers])")),
                None,
            );
        }
    };
    if let Err(m) = keys.check(env.status.as_bytes(), sig.as_bytes()) {
        return if m.contains("not trusted") {
            let whose = if own.is_some() {
                "this host's own key".to_string()
            } else {
                format!("{host}'s key in [fleet.peers]")
            };
            let id = m.split_whitespace().nth(3).unwrap_or("?");
            (
                Trust::UnknownKey(format!("signed by key {id}, which is not {whose}")),
                None,
            )
        } else {
            (Trust::Bad(m), None)
        };
    }
    match serde_json::from_str::<HostStatus>(&env.status) {
        Ok(s) if s.host != host => (
            Trust::Bad(format!("it says it is {:?}, under {host}'s folder", s.host)),
            None,
        ),
        Ok(s) if s.format != 1 || severity(&s.worst).is_none() => {
            (Trust::Bad("an unknown status format".into()), None)
        }
        Ok(s) => (Trust::Trusted, Some(s)),
        Err(e) => (Trust::Bad(format!("unreadable status: {e}")), None),
    }
}

/// Reads every host's status under the fleet's prefix (and each configured peer's, found
/// there or not), judges it, and keeps the result in the catalog for the page.
pub fn read(cfg: &Config, catalog: &Catalog, now: i64) -> Result<Vec<PeerView>, FleetError> {
    let Some(fleet) = &cfg.fleet else {
        return Ok(Vec::new());
    };
    let t = &target(cfg, fleet)?;
    let store = Store::open_small(t)?;
    let me = crate::fsutil::hostname();
    let signer = Signer::load(&cfg.state_dir)?;
    let base = crate::offsite::host_prefix(t, None);
    let mut hosts: Vec<String> = store
        .folders(&base)?
        .into_iter()
        .filter_map(|f| {
            f.strip_prefix(&base)
                .and_then(|h| h.strip_suffix('/'))
                .map(str::to_string)
        })
        // A folder steward cannot have written holds no status of a host.
        .filter(|h| host_folder_name(h))
        .collect();
    // Folders planted by whoever can write the bucket must not make each check read
    // without end: the configured peers and this host, then at most this many others.
    let unexpected = hosts
        .iter()
        .filter(|h| !fleet.peers.contains_key(*h))
        .count();
    let mut skipped = 0;
    if unexpected > MAX_UNEXPECTED {
        let mut others = 0;
        hosts.retain(|h| {
            let keep = fleet.peers.contains_key(h) || {
                others += 1;
                others <= MAX_UNEXPECTED
            };
            skipped += usize::from(!keep);
            keep
        });
    }
    for h in fleet.peers.keys().chain(std::iter::once(&me)) {
        let folder = crate::offsite::host_prefix(t, Some(h));
        let h = folder
            .strip_prefix(&base)
            .and_then(|x| x.strip_suffix('/'))
            .unwrap_or(h)
            .to_string();
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    hosts.sort();
    let before: std::collections::HashMap<String, (i64, Option<i64>)> = catalog
        .fleet()?
        .iter()
        .filter_map(|row| serde_json::from_str::<PeerView>(row).ok())
        .map(|v| (v.host, (v.looking_since, v.newest_seen)))
        .collect();
    let mut views = Vec::new();
    let my_folder = crate::offsite::host_prefix(t, Some(&me));
    let mine = my_folder
        .strip_prefix(&base)
        .and_then(|x| x.strip_suffix('/'))
        .unwrap_or(&me)
        .to_string();
    for host in hosts {
        let own = host == mine;
        let key = fleet.peers.get(&host).map(String::as_str);
        let (trust, status) =
            match store.get_small(&crate::offsite::status_key(t, &host), STATUS_LIMIT) {
                Ok(data) => judge(&host, &data, key, if own { signer.as_ref() } else { None }),
                Err(e) if e.not_found() => (Trust::Missing, None),
                // The bucket not answering is not this object's fault: nothing is known.
                Err(e) if e.transient() => return Err(e.into()),
                // Too large, refused, garbled: what is there is not a status to believe.
                Err(e) => (
                    Trust::Bad(format!("unreadable: {}", crate::error::chain(&e))),
                    None,
                ),
            };
        // A signed status from the future is not evidence that the host is alive now.
        let (trust, status) = match status {
            Some(s) if s.time > now + CLOCK_SLACK => (
                Trust::Bad(format!(
                    "written at {}, in the future",
                    crate::clock::show(s.time, "%Y-%m-%d %H:%M:%SZ")
                )),
                None,
            ),
            Some(s)
                if before
                    .get(&host)
                    .and_then(|b| b.1)
                    .is_some_and(|seen| s.time < seen) =>
            {
                (
                    Trust::Bad(format!(
                        "an older status (written {}) than one already read: put back by someone",
                        crate::clock::show(s.time, "%Y-%m-%d %H:%M:%SZ")
                    )),
                    None,
                )
            }
            other => (trust, other),
        };
        let newest_seen = status
            .as_ref()
            .map(|s| s.time)
            .max(before.get(&host).and_then(|b| b.1));
        views.push(PeerView {
            expected: own || key.is_some(),
            own,
            worst: status.as_ref().and_then(|s| severity(&s.worst)),
            time: status.as_ref().map(|s| s.time),
            problems: status
                .as_ref()
                .map(|s| s.problems.clone())
                .unwrap_or_default(),
            sets: status.map(|s| s.sets).unwrap_or_default(),
            trust,
            newest_seen,
            looking_since: before.get(&host).map_or(now, |b| b.0).min(now),
            host,
            read_at: now,
            silent: false,
        });
    }
    if skipped > 0 {
        views.push(PeerView {
            host: "(more folders)".into(),
            own: false,
            expected: false,
            trust: Trust::Bad(format!(
                "{skipped} more folders under the prefix were not read (at most \
                 {MAX_UNEXPECTED} hosts besides the configured peers)"
            )),
            time: None,
            worst: None,
            problems: Vec::new(),
            sets: Vec::new(),
            read_at: now,
            looking_since: now,
            newest_seen: None,
            silent: true,
        });
    }
    let rows: Vec<(String, String)> = views
        .iter()
        .map(|v| (v.host.clone(), serde_json::to_string(v).unwrap_or_default()))
        .collect();
    catalog.save_fleet(&rows)?;
    Ok(mark_silent(views, fleet, now))
}

fn mark_silent(mut views: Vec<PeerView>, fleet: &FleetConfig, now: i64) -> Vec<PeerView> {
    let max = fleet.max_silence.as_secs() as i64;
    for v in &mut views {
        v.silent = match (&v.trust, v.time) {
            (Trust::Missing, _) => now - v.looking_since > max,
            (Trust::Trusted, Some(t)) => now - t > max,
            _ => true,
        };
    }
    views
}

/// The fleet as the last read left it (for the page), silence judged at `now`.
pub fn seen(
    catalog: &Catalog,
    fleet: &FleetConfig,
    now: i64,
) -> Result<Vec<PeerView>, CatalogError> {
    let views = catalog
        .fleet()?
        .iter()
        .filter_map(|row| serde_json::from_str(row).ok())
        .collect();
    Ok(mark_silent(views, fleet, now))
}

/// The `fleet HOST` check readings of the other hosts: a configured peer, or any host
/// found in the bucket with an untrusted status, is critical when it is silent or
/// untrusted. (This host's own item is [`own_reading`], after its status is written.)
pub fn readings(views: &[PeerView], fleet: &FleetConfig) -> Vec<crate::checks::Reading> {
    let max = crate::checks::show_age(fleet.max_silence.as_secs() as i64, false);
    views
        .iter()
        .filter(|v| !v.own && v.expected)
        .map(|v| {
            let (severity, value) = if v.trust == Trust::Missing && !v.silent {
                (
                    Severity::Ok,
                    format!("{}: no status yet; silent after {max} without one", v.host),
                )
            } else if !v.trust.trusted() {
                (
                    Severity::Crit,
                    format!("{}: {}", v.host, v.trust.describe()),
                )
            } else if v.silent {
                (
                    Severity::Crit,
                    format!(
                        "{} silent: last heard {} ago",
                        v.host,
                        crate::checks::show_age(v.read_at - v.time.unwrap_or(0), true)
                    ),
                )
            } else {
                (
                    Severity::Ok,
                    format!(
                        "{} heard {} ago ({})",
                        v.host,
                        crate::checks::show_age(v.read_at - v.time.unwrap_or(0), false),
                        v.worst.map_or("?", Severity::word)
                    ),
                )
            };
            reading(
                &v.host,
                severity,
                value,
                format!("heard within {max}, signed"),
            )
        })
        .chain(std::iter::once(others(views)))
        .collect()
}

/// The name of the one item for every host under the prefix that is not a configured
/// peer (a name no host folder can have).
pub const OTHERS: &str = "(others)";

/// `fleet (others)`: critical while any folder under the prefix that belongs to no
/// configured peer holds a status that is not believed (someone else writes the bucket).
/// One item however many such folders, so a bucket writer cannot fill the alerts.
fn others(views: &[PeerView]) -> crate::checks::Reading {
    let bad: Vec<&PeerView> = views
        .iter()
        .filter(|v| !v.expected && !matches!(v.trust, Trust::Trusted | Trust::Missing))
        .collect();
    let (severity, value) = if bad.is_empty() {
        (
            Severity::Ok,
            "no status under the prefix that a configured peer did not sign".to_string(),
        )
    } else {
        let names: Vec<&str> = bad.iter().take(5).map(|v| v.host.as_str()).collect();
        (
            Severity::Crit,
            format!(
                "{} folder(s) that are no configured peer's hold an untrusted status: {}{}",
                bad.len(),
                names.join(", "),
                if bad.len() > names.len() { ", ..." } else { "" }
            ),
        )
    };
    reading(
        OTHERS,
        severity,
        value,
        "only configured peers write".into(),
    )
}

/// The `fleet ...` items in `states` that no reading of this cycle names any more (a
/// peer taken out of `[fleet.peers]`, a host name changed): recovered with a note while
/// not OK, so the alert that was raised is answered, then forgotten.
pub fn gone(
    states: &[crate::catalog::CheckState],
    readings: &[crate::checks::Reading],
    own: &str,
) -> (Vec<crate::checks::Reading>, Vec<String>) {
    let mut recover = Vec::new();
    let mut forget = Vec::new();
    for s in states.iter().filter(|s| s.name.starts_with("fleet ")) {
        if s.name == check_name(own) || readings.iter().any(|r| r.name == s.name) {
            continue;
        }
        if s.state == Severity::Ok {
            forget.push(s.name.clone());
        } else {
            let host = s.name.trim_start_matches("fleet ");
            recover.push(reading(
                host,
                Severity::Ok,
                format!("{host} is no longer watched"),
                "-".into(),
            ));
        }
    }
    (recover, forget)
}

/// The check item of peer `host`.
pub fn check_name(host: &str) -> String {
    format!("fleet {host}")
}

fn reading(
    host: &str,
    severity: Severity,
    value: String,
    threshold: String,
) -> crate::checks::Reading {
    crate::checks::Reading {
        name: check_name(host),
        severity,
        value,
        threshold,
        window: crate::config::Window::default(),
    }
}

/// This host's own `fleet HOST` item, once its status was (or was not) written: a
/// warning when it could not be (the peers will see this host go quiet), critical when
/// the status found in its folder before was not its own (someone else writes there).
pub fn own_reading(
    views: Option<&[PeerView]>,
    published: &Result<bool, FleetError>,
) -> crate::checks::Reading {
    let me = crate::fsutil::hostname();
    let own = views.and_then(|v| v.iter().find(|v| v.own));
    let (severity, value) = match (published, own) {
        (Err(e), _) => (
            Severity::Warn,
            format!(
                "{me} (this host): its status could not be written: {}",
                crate::error::chain(e)
            ),
        ),
        (Ok(_), Some(v)) if !matches!(v.trust, Trust::Trusted | Trust::Missing) => (
            Severity::Crit,
            format!(
                "{me} (this host): the status in its folder was not its own ({}); \
                 written again",
                v.trust.describe()
            ),
        ),
        (Ok(true), _) => (Severity::Ok, format!("{me} (this host): status written")),
        (Ok(false), _) => (
            Severity::Ok,
            format!("{me} (this host): the status in the bucket is current"),
        ),
    };
    reading(&me, severity, value, "written, signed".into())
}

/// The reading when the bucket could not be read at all: every configured peer unknown.
pub fn unreadable(fleet: &FleetConfig, why: &str) -> Vec<crate::checks::Reading> {
    fleet
        .peers
        .keys()
        .map(|h| {
            reading(
                h,
                Severity::Warn,
                format!("the fleet's bucket could not be read: {why}"),
                "readable".into(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_hosts_own_key_makes_a_status_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let a = Signer::load_or_create(&dir.path().join("a")).unwrap();
        let b = Signer::load_or_create(&dir.path().join("b")).unwrap();
        let status = |host: &str| HostStatus {
            format: 1,
            host: host.into(),
            time: 100,
            worst: "OK".into(),
            problems: vec![],
            sets: vec![],
        };
        let wrap = |s: &HostStatus, signer: Option<&Signer>| {
            let text = serde_json::to_string(s).unwrap();
            serde_json::to_vec(&Envelope {
                minisig: signer.map(|k| k.sign(text.as_bytes(), "t").unwrap()),
                status: text,
            })
            .unwrap()
        };
        let ka = a.public();
        assert_eq!(
            judge("a", &wrap(&status("a"), Some(&a)), Some(&ka), None).0,
            Trust::Trusted
        );
        assert_eq!(
            judge("a", &wrap(&status("a"), None), Some(&ka), None).0,
            Trust::Unsigned
        );
        // b signs a status for a: b's key is not a's.
        assert!(matches!(
            judge("a", &wrap(&status("a"), Some(&b)), Some(&ka), None).0,
            Trust::UnknownKey(_)
        ));
        // a's status copied under b's folder, signed by a and checked with a's key: the
        // host inside does not match the folder.
        assert!(matches!(
            judge("b", &wrap(&status("a"), Some(&a)), Some(&ka), None).0,
            Trust::Bad(_)
        ));
        // A body changed after signing.
        let mut forged = wrap(&status("a"), Some(&a));
        let pos = forged.windows(4).position(|w| w == b"100,").unwrap();
        forged[pos] = b'9';
        assert!(matches!(
            judge("a", &forged, Some(&ka), None).0,
            Trust::Bad(_)
        ));
        assert!(matches!(
            judge("a", b"garbage", Some(&ka), None).0,
            Trust::Bad(_)
        ));
        assert!(matches!(
            judge("c", &wrap(&status("c"), Some(&a)), None, None).0,
            Trust::UnknownKey(_)
        ));
    }
}
