//! The capacity and activity report over the last 30 days: runs and failures, the slowest
//! runs, backup growth per set, and when each disk fills at the current rate.

use serde::Serialize;

use super::{TaskError, fail};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::schedule::Job;

/// Days until the filesystem fills at the current rate: a least-squares line through the
/// (time, free bytes) samples; `None` when free space is not shrinking.
pub fn days_until_full(samples: &[(i64, u64)]) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let n = samples.len() as f64;
    let mx = samples.iter().map(|s| s.0 as f64).sum::<f64>() / n;
    let my = samples.iter().map(|s| s.1 as f64).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, y) in samples {
        sxy += (*x as f64 - mx) * (*y as f64 - my);
        sxx += (*x as f64 - mx).powi(2);
    }
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx; // bytes per second
    if slope >= 0.0 {
        return None;
    }
    let last = samples.last()?;
    // Free space on the fitted line at the last sample, over the loss per day.
    let free_now = my + slope * (last.0 as f64 - mx);
    Some((free_now / -slope) / 86_400.0)
}

/// The report's content (`steward report --json`); [`report`] renders it as text.
#[derive(Debug, Serialize)]
pub struct ReportData {
    pub host: String,
    /// The period covered, in days up to `now`.
    pub days: u32,
    pub runs: usize,
    pub failed: usize,
    /// Up to ten failed runs: (job, target, summary).
    pub failures: Vec<(Job, Option<String>, Option<String>)>,
    /// The five slowest runs: (seconds, job, target).
    pub slowest: Vec<(i64, Job, Option<String>)>,
    pub sets: Vec<SetGrowth>,
    pub disks: Vec<DiskForecast>,
    pub drills: Vec<DrillSummary>,
}

/// A set's restore drills: the newest passing one, the failures in the period, and the
/// estimate of a whole incident.
#[derive(Debug, Serialize)]
pub struct DrillSummary {
    pub set: String,
    /// "proven restorable 3days ago: 41.0 s for 1.2 GiB" (None: never).
    pub proven: Option<String>,
    pub drills: usize,
    pub failed: usize,
    /// The newest drill failed: what failed (a passing one before it does not hide it).
    pub newest_failed: Option<String>,
    /// Stopping the services as the last real restore did, the drill's time to restore,
    /// and starting them again (ms).
    pub incident_ms: Option<u64>,
}

/// A set's newest backup in the period and its data growth over it.
#[derive(Debug, Serialize)]
pub struct SetGrowth {
    pub set: String,
    /// None: no backup in the period.
    pub newest: Option<String>,
    pub archive_bytes: u64,
    pub data_bytes: u64,
    pub data_growth: i64,
    pub since: Option<String>,
}

/// A disk's use now and when it fills at the current rate.
#[derive(Debug, Serialize)]
pub struct DiskForecast {
    pub path: String,
    pub used_pct: Option<f64>,
    pub free_bytes: Option<u64>,
    pub days_until_full: Option<f64>,
    pub samples: usize,
}

/// Gathers the report of the last 30 days.
pub fn report_data(config: &Config, catalog: &Catalog, now: i64) -> Result<ReportData, TaskError> {
    let name = "report";
    let days = 30;
    let since = now - i64::from(days) * 86_400;
    let runs = catalog.runs(None, 10_000).map_err(|e| fail(name, e))?;
    let recent: Vec<_> = runs.iter().filter(|r| r.started_at >= since).collect();
    let failed: Vec<_> = recent
        .iter()
        .filter(|r| r.status == crate::catalog::RunStatus::Failed)
        .collect();
    let mut slow: Vec<_> = recent
        .iter()
        .filter_map(|r| r.finished_at.map(|f| (f - r.started_at, *r)))
        .collect();
    slow.sort_by_key(|s| std::cmp::Reverse(s.0));
    let mut sets = Vec::new();
    for set in &config.backup.sets {
        let b = catalog
            .backups(Some(&set.name))
            .map_err(|e| fail(name, e))?;
        let in_period: Vec<_> = b.iter().filter(|x| x.created_at >= since).collect();
        sets.push(match (in_period.first(), in_period.last()) {
            (Some(newest), Some(oldest)) => SetGrowth {
                set: set.name.clone(),
                newest: Some(newest.id.clone()),
                archive_bytes: newest.archive_bytes,
                data_bytes: newest.source_bytes,
                data_growth: newest.source_bytes as i64 - oldest.source_bytes as i64,
                since: Some(oldest.id.clone()),
            },
            _ => SetGrowth {
                set: set.name.clone(),
                newest: None,
                archive_bytes: 0,
                data_bytes: 0,
                data_growth: 0,
                since: None,
            },
        });
    }
    let mut disks = Vec::new();
    for path in &config.checks.disk_paths {
        let shown = path.to_string_lossy().into_owned();
        let samples = catalog
            .disk_samples(&shown, since)
            .map_err(|e| fail(name, e))?;
        let usage = crate::fsutil::disk_usage(path).ok();
        disks.push(DiskForecast {
            days_until_full: days_until_full(
                &samples.iter().map(|s| (s.0, s.2)).collect::<Vec<_>>(),
            ),
            samples: samples.len(),
            used_pct: usage.map(|u| u.0),
            free_bytes: usage.map(|u| u.2),
            path: shown,
        });
    }
    let mut drills = Vec::new();
    for set in &config.backup.sets {
        let all = catalog
            .drills(Some(&set.name), 1000)
            .map_err(|e| fail(name, e))?;
        let recent: Vec<_> = all.iter().filter(|d| d.started_at >= since).collect();
        let passed = all.iter().find(|d| d.ok);
        let times = catalog
            .restore_times(&set.name)
            .map_err(|e| fail(name, e))?;
        drills.push(DrillSummary {
            set: set.name.clone(),
            proven: passed.map(|d| crate::checks::proven(d, now)),
            drills: recent.len(),
            failed: recent.iter().filter(|d| !d.ok).count(),
            newest_failed: all
                .first()
                .filter(|d| !d.ok)
                .map(|d| format!("{} ({}): {}", d.backup_id, d.source, d.detail)),
            incident_ms: passed.zip(times).map(|(d, t)| t.incident_ms(&d.phases)),
        });
    }
    Ok(ReportData {
        drills,
        host: crate::fsutil::hostname(),
        days,
        runs: recent.len(),
        failed: failed.len(),
        failures: failed
            .iter()
            .take(10)
            .map(|r| (r.job.clone(), r.target.clone(), r.summary.clone()))
            .collect(),
        slowest: slow
            .iter()
            .take(5)
            .map(|(secs, r)| (*secs, r.job.clone(), r.target.clone()))
            .collect(),
        sets,
        disks,
    })
}

/// The capacity and activity report over the last 30 days.
pub fn report(config: &Config, catalog: &Catalog, now: i64) -> Result<String, TaskError> {
    let d = report_data(config, catalog, now)?;
    let iec = |n: u64| bytesize::ByteSize(n).display().iec().to_string();
    let mut out = format!("steward report for {}, last {} days\n\n", d.host, d.days);
    out.push_str(&format!("Runs: {} ({} failed)\n", d.runs, d.failed));
    for (job, target, summary) in &d.failures {
        out.push_str(&format!(
            "  failed {job} {}: {}\n",
            target.as_deref().unwrap_or(""),
            summary.as_deref().unwrap_or("")
        ));
    }
    out.push_str("\nSlowest runs:\n");
    for (secs, job, target) in &d.slowest {
        out.push_str(&format!(
            "  {secs:>6} s  {job} {}\n",
            target.as_deref().unwrap_or("")
        ));
    }
    out.push_str("\nBackups per set (newest, growth over the period):\n");
    for g in &d.sets {
        match (&g.newest, &g.since) {
            (Some(_), Some(since)) => out.push_str(&format!(
                "  {:<16} {} archive, {} data; {:+} bytes of data since {since}\n",
                g.set,
                iec(g.archive_bytes),
                iec(g.data_bytes),
                g.data_growth,
            )),
            _ => out.push_str(&format!("  {:<16} no backup in the period\n", g.set)),
        }
    }
    out.push_str("\nRestore drills (when did we last prove it):\n");
    for r in &d.drills {
        out.push_str(&format!(
            "  {:<16} {}; {} drills in the period, {} failed{}\n",
            r.set,
            r.proven.as_deref().unwrap_or("never proven restorable"),
            r.drills,
            r.failed,
            r.incident_ms
                .map(|ms| format!(
                    "; a whole incident about {} (services stopped and started as at the \
                     last restore)",
                    crate::drill::show_ms(ms)
                ))
                .unwrap_or_default()
        ));
        if let Some(f) = &r.newest_failed {
            out.push_str(&format!("  {:<16} the NEWEST drill FAILED: {f}\n", ""));
        }
    }
    out.push_str("\nDisks:\n");
    for k in &d.disks {
        out.push_str(&format!(
            "  {:<20} {}; {}\n",
            k.path,
            match (k.used_pct, k.free_bytes) {
                (Some(p), Some(f)) => format!("{p:.1} % used, {} free", iec(f)),
                _ => "unreadable".into(),
            },
            match k.days_until_full {
                Some(days) => format!("full in about {days:.0} days at the current rate"),
                None if k.samples < 2 => "not enough samples for a forecast yet".into(),
                None => "not filling up".into(),
            }
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forecast_on_injected_samples() {
        // 1 GiB a day of growth, 10 GiB free at the last sample: ten days.
        let gib = 1u64 << 30;
        let samples: Vec<(i64, u64)> = (0..8)
            .map(|d| (d * 86_400, (17 - d as u64) * gib))
            .collect();
        let days = days_until_full(&samples).unwrap();
        assert!((days - 10.0).abs() < 1e-6, "{days}");
        // Shrinking use, or no change: no forecast.
        assert!(days_until_full(&[(0, gib), (86_400, 2 * gib)]).is_none());
        assert!(days_until_full(&[(0, gib), (86_400, gib)]).is_none());
        assert!(days_until_full(&[(0, gib)]).is_none());
    }
}
