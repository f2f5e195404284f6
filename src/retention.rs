//! Which backups a retention policy keeps, and why. Pure: no files, no catalog.
//!
//! The rules are restic's `forget` semantics, so that users who know restic get no
//! surprises: each rule is independent and a backup is kept if any rule keeps it. For
//! `daily = N` the newest backup of each of the N most recent days that have backups is
//! kept (days without backups do not count); likewise hourly, weekly (ISO weeks, Monday
//! first), monthly and yearly; `last = N` keeps the N newest; `within = 30d` keeps every
//! backup newer than the newest one minus 30 days (calendar days). A count of -1 means
//! unlimited. Periods are taken in the host's local time zone.
//!
//! steward adds safety that no policy can override: only good backups (verified, and not
//! suspect unless a human accepted them) count toward the rules; the newest good backup
//! of a set is always kept, together with every backup after it (suspect ones may hold
//! the only copy of new data), until a newer good one exists; when a set's newest backup
//! is not verified, or it has no good backup at all, nothing of that set is removed; and a
//! pinned backup is never removed.

use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use serde::Serialize;

/// A validated retention policy (`[backup.keep]` or `[backup.set.keep]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct KeepPolicy {
    pub last: Option<i64>,
    pub hourly: Option<i64>,
    pub daily: Option<i64>,
    pub weekly: Option<i64>,
    pub monthly: Option<i64>,
    pub yearly: Option<i64>,
    #[serde(serialize_with = "ser_within")]
    pub within: Option<Duration>,
}

fn ser_within<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        None => s.serialize_none(),
    }
}

impl KeepPolicy {
    /// The count rules by name, in the order they are documented.
    pub fn counts(&self) -> [(&'static str, Option<i64>); 6] {
        [
            ("last", self.last),
            ("hourly", self.hourly),
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
            ("yearly", self.yearly),
        ]
    }

    /// A policy with no rule keeps everything: nothing is ever removed without one.
    pub fn is_empty(&self) -> bool {
        self == &KeepPolicy::default()
    }
}

/// A backup as the policy sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    /// Unix seconds.
    pub time: i64,
    pub verified: bool,
    /// The change guard found it suspect and nobody accepted it.
    pub suspect: bool,
    /// Kept out of retention (`backups pin`).
    pub pinned: bool,
    /// A differential: the full backup it needs. Its `verified` must already say whether
    /// the pair restores (the base verified too).
    pub base: Option<String>,
}

/// The verdict on one backup.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub id: String,
    pub time: i64,
    pub keep: bool,
    /// Why it is kept (`daily 2026-11-20`, `newest verified`, ...) or removed.
    pub reasons: Vec<String>,
}

#[derive(Clone, Copy)]
enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    /// The period `z` falls in, as a label that is also its identity.
    fn label(self, z: &Zoned) -> String {
        match self {
            Period::Hourly => format!(
                "hourly {:04}-{:02}-{:02} {:02}h",
                z.year(),
                z.month(),
                z.day(),
                z.hour()
            ),
            Period::Daily => format!("daily {:04}-{:02}-{:02}", z.year(), z.month(), z.day()),
            Period::Weekly => {
                let w = z.date().iso_week_date();
                format!("weekly {:04}-W{:02}", w.year(), w.week())
            }
            Period::Monthly => format!("monthly {:04}-{:02}", z.year(), z.month()),
            Period::Yearly => format!("yearly {:04}", z.year()),
        }
    }
}

/// Applies `policy` to one set's backups in time zone `tz`; returns a verdict per backup,
/// newest first. The policy counts restore points (a full backup, or a differential with
/// its base); then every kept differential keeps its base, and a differential whose base
/// is gone is removed (it restores nothing alone), unless the newest backup is not
/// verified: then nothing is removed, as ever (a base deleted by hand may still be
/// fetched from offsite; an attacker who deletes one must not make steward delete more).
pub fn decide(backups: &[Candidate], policy: &KeepPolicy, tz: &TimeZone) -> Vec<Verdict> {
    let mut verdicts = decide_points(backups, policy, tz);
    let newest_unverified = backups
        .iter()
        .max_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)))
        .is_some_and(|c| !c.verified);
    let present: std::collections::HashSet<&str> = backups.iter().map(|c| c.id.as_str()).collect();
    let base_of: std::collections::HashMap<&str, &str> = backups
        .iter()
        .filter_map(|c| c.base.as_deref().map(|b| (c.id.as_str(), b)))
        .collect();
    for v in &mut verdicts {
        if let Some(base) = base_of.get(v.id.as_str())
            && !present.contains(base)
        {
            if newest_unverified {
                v.reasons.push(format!("its base {base} is gone"));
            } else {
                v.keep = false;
                v.reasons = vec![format!(
                    "its base {base} is gone: a differential restores nothing alone"
                )];
            }
        }
    }
    let mut needed: std::collections::HashMap<String, Vec<String>> = Default::default();
    for v in verdicts.iter().filter(|v| v.keep) {
        if let Some(base) = base_of.get(v.id.as_str()) {
            needed
                .entry((*base).to_string())
                .or_default()
                .push(v.id.clone());
        }
    }
    for v in &mut verdicts {
        if let Some(users) = needed.get(&v.id) {
            if !v.keep {
                v.keep = true;
                v.reasons.clear();
            }
            v.reasons.push(format!("base of {}", users.join(", ")));
        }
    }
    verdicts
}

fn decide_points(backups: &[Candidate], policy: &KeepPolicy, tz: &TimeZone) -> Vec<Verdict> {
    let mut sorted: Vec<&Candidate> = backups.iter().collect();
    sorted.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
    let verdict = |c: &Candidate, keep: bool, reason: &str| Verdict {
        id: c.id.clone(),
        time: c.time,
        keep,
        reasons: vec![reason.to_string()],
    };
    if policy.is_empty() {
        return sorted
            .into_iter()
            .map(|c| verdict(c, true, "no retention policy"))
            .collect();
    }
    if sorted.first().is_some_and(|c| !c.verified) {
        return sorted
            .into_iter()
            .map(|c| verdict(c, true, "newest backup not verified: nothing is removed"))
            .collect();
    }

    let verified: Vec<&Candidate> = sorted
        .iter()
        .copied()
        .filter(|c| c.verified && !c.suspect)
        .collect();
    let Some(last_good) = verified.first() else {
        return sorted
            .into_iter()
            .map(|c| verdict(c, true, "no good backup yet: nothing is removed"))
            .collect();
    };
    // Every backup after the last good one stays until a newer good one exists.
    let after_good: Vec<&str> = sorted
        .iter()
        .take_while(|c| c.id != last_good.id)
        .map(|c| c.id.as_str())
        .collect();
    let zoned = |c: &Candidate| {
        Timestamp::from_second(c.time)
            .unwrap_or(Timestamp::UNIX_EPOCH)
            .to_zoned(tz.clone())
    };
    let within_after = match (policy.within, verified.first()) {
        (Some(d), Some(newest)) => within_threshold(&zoned(newest), d),
        _ => None,
    };
    let mut buckets: Vec<(Period, i64, Option<String>)> = [
        (Period::Hourly, policy.hourly),
        (Period::Daily, policy.daily),
        (Period::Weekly, policy.weekly),
        (Period::Monthly, policy.monthly),
        (Period::Yearly, policy.yearly),
    ]
    .into_iter()
    .filter_map(|(p, n)| n.map(|n| (p, n, None)))
    .collect();

    let mut kept: std::collections::HashMap<&str, Vec<String>> = Default::default();
    for (nr, c) in verified.iter().enumerate() {
        let mut reasons = Vec::new();
        if nr == 0 {
            reasons.push("newest verified".to_string());
            if let Some(first) = after_good.last() {
                reasons.push(format!("last good before suspect {first}"));
            }
        }
        if let Some(last) = policy.last
            && (last == -1 || (nr as i64) < last)
        {
            reasons.push(format!("last {}", nr + 1));
        }
        let z = zoned(c);
        if let Some(t) = &within_after
            && z.timestamp() > *t
        {
            reasons.push(format!(
                "within {}",
                humantime::format_duration(policy.within.unwrap_or_default())
            ));
        }
        for (period, count, last) in &mut buckets {
            if *count == -1 || *count > 0 {
                let label = period.label(&z);
                if last.as_deref() != Some(label.as_str()) {
                    *last = Some(label.clone());
                    if *count > 0 {
                        *count -= 1;
                    }
                    reasons.push(label);
                }
            }
        }
        if !reasons.is_empty() {
            kept.insert(c.id.as_str(), reasons);
        }
    }

    sorted
        .into_iter()
        .map(|c| {
            let mut v = decided(c, kept.remove(c.id.as_str()), &after_good, last_good);
            if c.pinned {
                v.keep = true;
                v.reasons.push("pinned".into());
            }
            v
        })
        .collect()
}

/// The verdict on `c` from the rules' `reasons` (if any kept it).
fn decided(
    c: &Candidate,
    reasons: Option<Vec<String>>,
    after_good: &[&str],
    last_good: &Candidate,
) -> Verdict {
    let verdict = |keep: bool, reason: String| Verdict {
        id: c.id.clone(),
        time: c.time,
        keep,
        reasons: vec![reason],
    };
    match reasons {
        Some(reasons) => Verdict {
            id: c.id.clone(),
            time: c.time,
            keep: true,
            reasons,
        },
        None if after_good.contains(&c.id.as_str()) => verdict(
            true,
            format!(
                "{}after the last good backup {}: kept until a newer good one exists",
                if c.suspect { "suspect, " } else { "" },
                last_good.id
            ),
        ),
        None if !c.verified => verdict(false, "not verified".into()),
        None if c.suspect => verdict(false, "suspect: counts toward no rule".into()),
        None => verdict(false, "no rule keeps it".into()),
    }
}

/// The instant after which `within` keeps backups: the newest backup's local time minus
/// the duration, whole days counted as calendar days (so across a DST change "30d" still
/// means thirty local days, as in restic).
fn within_threshold(newest: &Zoned, within: Duration) -> Option<Timestamp> {
    let secs = within.as_secs() as i64;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let z = newest.checked_sub(jiff::Span::new().days(days)).ok()?;
    z.timestamp()
        .checked_sub(jiff::SignedDuration::from_secs(rest))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tz() -> TimeZone {
        TimeZone::get("Europe/Berlin").expect("tzdata")
    }

    /// Unix seconds of a local Berlin wall-clock time (the earlier one if ambiguous).
    fn at(s: &str) -> i64 {
        let dt: jiff::civil::DateTime = s.parse().unwrap();
        tz().to_zoned(dt).unwrap().timestamp().as_second()
    }

    fn cands(times: &[&str]) -> Vec<Candidate> {
        times
            .iter()
            .map(|t| Candidate {
                id: t.to_string(),
                time: at(t),
                verified: true,
                suspect: false,
                pinned: false,
                base: None,
            })
            .collect()
    }

    fn kept(v: &[Verdict]) -> Vec<String> {
        v.iter().filter(|v| v.keep).map(|v| v.id.clone()).collect()
    }

    struct Case {
        name: &'static str,
        times: &'static [&'static str],
        policy: KeepPolicy,
        keep: &'static [&'static str],
    }

    #[test]
    fn table_of_policies_over_small_timelines() {
        let cases = [
            Case {
                name: "daily counts days that have backups, newest of each day",
                times: &[
                    "2026-11-20T23:59:00",
                    "2026-11-21T00:01:00",
                    "2026-11-21T12:00:00",
                    "2026-11-17T08:00:00",
                    "2026-11-10T08:00:00",
                ],
                policy: KeepPolicy {
                    daily: Some(3),
                    ..Default::default()
                },
                keep: &[
                    "2026-11-21T12:00:00",
                    "2026-11-20T23:59:00",
                    "2026-11-17T08:00:00",
                ],
            },
            Case {
                name: "weekly uses ISO weeks with Monday first",
                times: &[
                    "2026-11-22T10:00:00", // Sunday, W47
                    "2026-11-23T10:00:00", // Monday, W48
                    "2026-11-16T10:00:00", // Monday, W47
                    "2026-11-15T10:00:00", // Sunday, W46
                ],
                policy: KeepPolicy {
                    weekly: Some(2),
                    ..Default::default()
                },
                keep: &["2026-11-23T10:00:00", "2026-11-22T10:00:00"],
            },
            Case {
                name: "rules are independent; any rule keeps",
                times: &[
                    "2026-11-21T10:00:00",
                    "2026-11-21T09:00:00",
                    "2026-10-31T10:00:00",
                    "2026-09-30T10:00:00",
                ],
                policy: KeepPolicy {
                    last: Some(2),
                    monthly: Some(3),
                    ..Default::default()
                },
                keep: &[
                    "2026-11-21T10:00:00",
                    "2026-11-21T09:00:00",
                    "2026-10-31T10:00:00",
                    "2026-09-30T10:00:00",
                ],
            },
            Case {
                name: "within counts calendar days across the October DST change",
                times: &[
                    "2026-11-01T12:00:00",
                    "2026-10-02T12:00:01",
                    "2026-10-02T12:00:00",
                    "2026-10-02T11:59:59",
                ],
                policy: KeepPolicy {
                    within: Some(Duration::from_hours(720)),
                    ..Default::default()
                },
                keep: &["2026-11-01T12:00:00", "2026-10-02T12:00:01"],
            },
            Case {
                name: "hourly in local time around the spring-forward gap",
                times: &[
                    "2026-03-29T03:30:00",
                    "2026-03-29T03:10:00",
                    "2026-03-29T01:59:00",
                    "2026-03-29T01:30:00",
                ],
                policy: KeepPolicy {
                    hourly: Some(10),
                    ..Default::default()
                },
                keep: &["2026-03-29T03:30:00", "2026-03-29T01:59:00"],
            },
            Case {
                name: "unlimited yearly",
                times: &[
                    "2026-01-01T00:01:00",
                    "2025-12-31T23:59:00",
                    "2024-06-01T00:00:00",
                ],
                policy: KeepPolicy {
                    yearly: Some(-1),
                    ..Default::default()
                },
                keep: &[
                    "2026-01-01T00:01:00",
                    "2025-12-31T23:59:00",
                    "2024-06-01T00:00:00",
                ],
            },
        ];
        for c in cases {
            let got = kept(&decide(&cands(c.times), &c.policy, &tz()));
            assert_eq!(got, c.keep, "{}", c.name);
        }
    }

    /// The worked example in README.md ("Retention"), verdict by verdict.
    #[test]
    fn readme_worked_example() {
        let b = cands(&[
            "2026-11-21T03:00:00",
            "2026-11-21T00:01:00",
            "2026-11-20T23:59:00",
            "2026-11-20T03:00:00",
            "2026-11-19T03:00:00",
            "2026-11-16T03:00:00",
            "2026-11-15T03:00:00",
        ]);
        let p = KeepPolicy {
            daily: Some(3),
            weekly: Some(2),
            ..Default::default()
        };
        let got: Vec<(bool, String)> = decide(&b, &p, &tz())
            .into_iter()
            .map(|v| (v.keep, v.reasons.join(", ")))
            .collect();
        let want = [
            (true, "newest verified, daily 2026-11-21, weekly 2026-W47"),
            (false, "no rule keeps it"),
            (true, "daily 2026-11-20"),
            (false, "no rule keeps it"),
            (true, "daily 2026-11-19"),
            (false, "no rule keeps it"),
            (true, "weekly 2026-W46"),
        ];
        let want: Vec<(bool, String)> = want.iter().map(|(k, r)| (*k, r.to_string())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn the_newest_verified_backup_is_always_kept() {
        let mut b = cands(&["2026-11-21T10:00:00", "2026-11-20T10:00:00"]);
        let p = KeepPolicy {
            daily: Some(0),
            ..Default::default()
        };
        let v = decide(&b, &p, &tz());
        assert_eq!(kept(&v), vec!["2026-11-21T10:00:00"]);
        assert!(v[0].reasons.contains(&"newest verified".to_string()));
        // An unverified newest protects the whole set.
        b.push(Candidate {
            id: "broken".into(),
            time: at("2026-11-22T10:00:00"),
            verified: false,
            suspect: false,
            pinned: false,
            base: None,
        });
        let v = decide(&b, &p, &tz());
        assert!(v.iter().all(|v| v.keep), "{v:?}");
        assert!(v[0].reasons[0].contains("not verified"));
    }

    #[test]
    fn unverified_backups_do_not_count_and_are_removed() {
        let mut b = cands(&["2026-11-21T10:00:00", "2026-11-19T10:00:00"]);
        b.push(Candidate {
            id: "failed".into(),
            time: at("2026-11-20T10:00:00"),
            verified: false,
            suspect: false,
            pinned: false,
            base: None,
        });
        let p = KeepPolicy {
            daily: Some(2),
            ..Default::default()
        };
        let v = decide(&b, &p, &tz());
        // The failed one neither is kept nor uses up a daily slot.
        assert_eq!(kept(&v), vec!["2026-11-21T10:00:00", "2026-11-19T10:00:00"]);
        let failed = v.iter().find(|v| v.id == "failed").unwrap();
        assert_eq!(failed.reasons, vec!["not verified"]);
    }

    #[test]
    fn no_policy_keeps_everything() {
        let b = cands(&["2026-11-21T10:00:00", "2020-01-01T10:00:00"]);
        let v = decide(&b, &KeepPolicy::default(), &tz());
        assert!(v.iter().all(|v| v.keep));
    }

    /// 400 days of backups at irregular times with gaps: the policy keeps exactly the
    /// expected number per rule, and the kept set is stable under input order.
    #[test]
    fn four_hundred_days_with_gaps() {
        let start = at("2025-10-20T03:00:00");
        let mut b = Vec::new();
        let mut t = start;
        let mut i = 0u64;
        while t < start + 400 * 86400 {
            // Skip some days entirely; otherwise one to three backups a day.
            i += 1;
            let step = 3600 * (5 + (i * 7919 % 37)) as i64;
            t += step;
            if (t / 86400) % 11 == 3 {
                continue;
            }
            b.push(Candidate {
                id: format!("b{t}"),
                time: t,
                verified: true,
                suspect: false,
                pinned: false,
                base: None,
            });
        }
        let p = KeepPolicy {
            daily: Some(7),
            weekly: Some(4),
            monthly: Some(12),
            ..Default::default()
        };
        let v = decide(&b, &p, &tz());
        let days: Vec<_> = v
            .iter()
            .filter(|v| v.reasons.iter().any(|r| r.starts_with("daily")))
            .collect();
        assert_eq!(days.len(), 7);
        let weeks = v
            .iter()
            .filter(|v| v.reasons.iter().any(|r| r.starts_with("weekly")))
            .count();
        assert_eq!(weeks, 4);
        let months = v
            .iter()
            .filter(|v| v.reasons.iter().any(|r| r.starts_with("monthly")))
            .count();
        assert_eq!(months, 12);
        let mut reversed = b.clone();
        reversed.reverse();
        assert_eq!(kept(&decide(&reversed, &p, &tz())), kept(&v));
    }

    #[test]
    fn suspect_backups_never_push_out_the_last_good_one() {
        let policy = KeepPolicy {
            daily: Some(7),
            weekly: Some(4),
            monthly: Some(12),
            ..Default::default()
        };
        // Ten days of good daily backups, then three suspect ones the same day as the last
        // good one and after it.
        let mut b = Vec::new();
        for d in 1..=10 {
            b.push(Candidate {
                id: format!("good-{d:02}"),
                time: at(&format!("2026-03-{d:02}T03:00:00")),
                verified: true,
                suspect: false,
                pinned: false,
                base: None,
            });
        }
        for (i, t) in [
            "2026-03-10T12:00:00",
            "2026-03-11T03:00:00",
            "2026-03-12T03:00:00",
        ]
        .iter()
        .enumerate()
        {
            b.push(Candidate {
                id: format!("bad-{i}"),
                time: at(t),
                verified: true,
                suspect: true,
                pinned: false,
                base: None,
            });
        }
        let v = decide(&b, &policy, &tz());
        let get = |id: &str| v.iter().find(|x| x.id == id).unwrap();
        // The same-day good backup would lose "daily 2026-03-10" to a newer backup of that
        // day if suspect ones counted; it is the newest good one and stays.
        let last = get("good-10");
        assert!(last.keep);
        assert!(
            last.reasons
                .iter()
                .any(|r| r == "last good before suspect bad-0"),
            "{:?}",
            last.reasons
        );
        for id in ["bad-0", "bad-1", "bad-2"] {
            assert!(get(id).keep, "{id}");
            assert!(get(id).reasons[0].contains("after the last good backup good-10"));
        }
        // Dailies are counted over good backups only: the seven good days 4..10 are kept
        // by their daily rule (suspect days 11 and 12 took none of the seven).
        for d in 4..=10 {
            let g = get(&format!("good-{d:02}"));
            assert!(
                g.reasons.iter().any(|r| r.starts_with("daily")),
                "good-{d:02}: {:?}",
                g.reasons
            );
        }
        assert!(!get("good-03").keep);
        // A suspect backup older than a good one counts toward no rule; a pinned one stays.
        let mut b2 = b.clone();
        b2.push(Candidate {
            id: "good-13".into(),
            time: at("2026-03-13T03:00:00"),
            verified: true,
            suspect: false,
            pinned: false,
            base: None,
        });
        b2.iter_mut().find(|c| c.id == "bad-1").unwrap().pinned = true;
        let v = decide(&b2, &policy, &tz());
        let get = |id: &str| v.iter().find(|x| x.id == id).unwrap();
        assert!(!get("bad-0").keep && get("bad-0").reasons[0].contains("suspect"));
        assert!(get("bad-1").keep && get("bad-1").reasons.contains(&"pinned".to_string()));
        // Nothing good at all: nothing is removed.
        let only_bad: Vec<Candidate> = b.iter().filter(|c| c.suspect).cloned().collect();
        assert!(decide(&only_bad, &policy, &tz()).iter().all(|x| x.keep));
    }

    proptest::proptest! {
        /// Random histories of full backups and differentials (each on one of the fulls
        /// before it, or on one deleted by hand), random policies, pins, suspect and
        /// unverified backups: a kept differential always keeps its base, and no
        /// differential is kept without it.
        #[test]
        fn retention_never_separates_a_differential_from_its_base(
            kinds in proptest::collection::vec((0u8..4, 0usize..6, proptest::bool::ANY, 0u8..10), 1..60),
            daily in proptest::option::of(0i64..8),
            weekly in proptest::option::of(0i64..5),
            monthly in proptest::option::of(0i64..4),
            last in proptest::option::of(0i64..4),
        ) {
            let mut b: Vec<Candidate> = Vec::new();
            let mut fulls: Vec<String> = Vec::new();
            let start = at("2026-01-01T03:00:00");
            for (i, (kind, pick, pinned, state)) in kinds.iter().enumerate() {
                let id = format!("b{i:03}");
                let base = match kind {
                    0 => None,
                    // A base deleted by hand: not among the candidates.
                    1 if fulls.is_empty() => Some("gone".to_string()),
                    _ if fulls.is_empty() => None,
                    _ => Some(fulls[fulls.len() - 1 - pick % fulls.len()].clone()),
                };
                if base.is_none() {
                    fulls.push(id.clone());
                }
                b.push(Candidate {
                    id,
                    time: start + i as i64 * 86_400 / 2,
                    verified: *state != 0,
                    suspect: *state == 1,
                    pinned: *pinned && *state > 7,
                    base,
                });
            }
            let policy = KeepPolicy { last, daily, weekly, monthly, ..Default::default() };
            let v = decide(&b, &policy, &tz());
            proptest::prop_assert_eq!(v.len(), b.len());
            let kept: std::collections::HashSet<&str> =
                v.iter().filter(|x| x.keep).map(|x| x.id.as_str()).collect();
            // A base deleted by hand is not among the candidates: its differential is
            // kept only while the newest backup is unverified (nothing is removed then).
            let newest_unverified = b.last().is_some_and(|c| !c.verified);
            for c in &b {
                if let Some(base) = &c.base && kept.contains(c.id.as_str()) {
                    proptest::prop_assert!(
                        kept.contains(base.as_str())
                            || (base == "gone" && newest_unverified),
                        "{} kept without its base {}", c.id, base
                    );
                }
            }
            // Retention itself never removes a base a kept differential needs.
            for x in v.iter().filter(|x| !x.keep) {
                proptest::prop_assert!(
                    !b.iter().any(|c| c.base.as_deref() == Some(x.id.as_str())
                        && kept.contains(c.id.as_str())),
                    "{} removed while a kept differential needs it", x.id
                );
            }
        }
    }
}
