//! steward's retention gives the same kept set as `restic forget --dry-run` for the same
//! timeline and policy: real restic snapshots made with `restic backup --time`, in a zone
//! with DST, over 400 days of irregular backups with gaps and midnight neighbours.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use jiff::tz::TimeZone;
use steward::retention::{Candidate, KeepPolicy, decide};

pub const ZONE: &str = "Europe/Berlin";

/// `restic ARGS` on `repo` in [`ZONE`], its cache and HOME beside the repository.
pub fn restic(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("restic")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", repo.parent().unwrap())
        .env("TZ", ZONE)
        .env("RESTIC_REPOSITORY", repo)
        .env("RESTIC_PASSWORD", "test")
        .env("RESTIC_CACHE_DIR", repo.parent().unwrap().join("cache"))
        .output()
        .expect("restic must be installed (tests/run installs it)");
    assert!(
        out.status.success(),
        "restic {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Local wall-clock times of the timeline: 400 days, irregular, with gaps, pairs around
/// midnight, and backups on both DST change days.
fn timeline() -> Vec<String> {
    let mut v = Vec::new();
    let start: jiff::civil::DateTime = "2025-10-01T03:00:00".parse().unwrap();
    let mut day = 0i64;
    let mut i = 0u64;
    while day < 400 {
        i += 1;
        let d = start.checked_add(jiff::Span::new().days(day)).unwrap();
        let (h, m) = ((i * 7) % 24, (i * 13) % 60);
        v.push(format!("{} {:02}:{:02}:00", d.date(), h, m));
        if i.is_multiple_of(9) {
            v.push(format!("{} 23:59:00", d.date()));
            let next = d.checked_add(jiff::Span::new().days(1)).unwrap();
            v.push(format!("{} 00:01:00", next.date()));
        }
        // Gaps of one to six days, some long ones.
        day += 1 + ((i * 5) % 6) as i64 + if i.is_multiple_of(17) { 12 } else { 0 };
    }
    for t in [
        "2026-03-29 01:30:00",
        "2026-03-29 03:30:00",
        "2026-10-25 01:30:00",
        "2026-10-25 03:30:00",
    ] {
        v.push(t.into());
    }
    v.sort();
    v.dedup();
    v
}

#[test]
fn retention_matches_restic_forget() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), "x").unwrap();
    restic(&repo, &["init", "-q"]);
    let times = timeline();
    assert!(times.len() > 100, "{}", times.len());
    // Two streams of `restic backup` at once (restic allows concurrent backups).
    let halves: Vec<Vec<String>> = vec![
        times.iter().step_by(2).cloned().collect(),
        times.iter().skip(1).step_by(2).cloned().collect(),
    ];
    std::thread::scope(|s| {
        for half in &halves {
            let (repo, data) = (&repo, &data);
            s.spawn(move || {
                for t in half {
                    let d = data.to_str().unwrap();
                    restic(repo, &["backup", "-q", "--host", "h", "--time", t, d]);
                }
            });
        }
    });
    // The instants restic recorded are the timeline both sides decide over.
    let snaps: serde_json::Value =
        serde_json::from_str(&restic(&repo, &["snapshots", "--json"])).unwrap();
    let unix = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_second();
    let candidates: Vec<Candidate> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Candidate {
            id: s["id"].as_str().unwrap().to_string(),
            time: unix(s["time"].as_str().unwrap()),
            verified: true,
            suspect: false,
            pinned: false,
            base: None,
        })
        .collect();
    assert_eq!(candidates.len(), times.len());

    let tz = TimeZone::get(ZONE).unwrap();
    let policies: Vec<(KeepPolicy, Vec<&str>)> = vec![
        (
            KeepPolicy {
                daily: Some(7),
                weekly: Some(4),
                monthly: Some(12),
                ..Default::default()
            },
            vec![
                "--keep-daily",
                "7",
                "--keep-weekly",
                "4",
                "--keep-monthly",
                "12",
            ],
        ),
        (
            KeepPolicy {
                last: Some(5),
                hourly: Some(30),
                yearly: Some(2),
                ..Default::default()
            },
            vec![
                "--keep-last",
                "5",
                "--keep-hourly",
                "30",
                "--keep-yearly",
                "2",
            ],
        ),
        (
            KeepPolicy {
                within: Some(Duration::from_hours(1080)),
                monthly: Some(6),
                ..Default::default()
            },
            vec!["--keep-within", "45d", "--keep-monthly", "6"],
        ),
        // Debian's restic 0.14 predates `-1` for unlimited (steward follows later restic;
        // the unit tests cover -1), so unlimited is spelled as a count beyond the timeline.
        (
            KeepPolicy {
                weekly: Some(1000),
                ..Default::default()
            },
            vec!["--keep-weekly", "1000"],
        ),
        (
            KeepPolicy {
                within: Some(Duration::from_hours(4805)),
                daily: Some(3),
                ..Default::default()
            },
            vec!["--keep-within", "200d5h", "--keep-daily", "3"],
        ),
    ];
    for (policy, flags) in policies {
        let ours: BTreeSet<i64> = decide(&candidates, &policy, &tz)
            .into_iter()
            .filter(|v| v.keep)
            .map(|v| v.time)
            .collect();
        let mut args = vec!["forget", "--dry-run", "--json"];
        args.extend(flags.iter().copied());
        let out: serde_json::Value = serde_json::from_str(&restic(&repo, &args)).unwrap();
        let theirs: BTreeSet<i64> = out[0]["keep"]
            .as_array()
            .unwrap_or_else(|| panic!("{flags:?}: {}", &out.to_string()[..300]))
            .iter()
            .map(|s| unix(s["time"].as_str().unwrap()))
            .collect();
        assert_eq!(ours, theirs, "policy {flags:?} differs from restic");
    }
}
