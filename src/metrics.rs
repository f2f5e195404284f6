//! The Prometheus textfile (node_exporter's textfile collector): job results, backup
//! sizes and check states, rewritten atomically after each run.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use crate::catalog::{Catalog, CatalogError, RunStatus};
use crate::config::Config;
use crate::severity::Severity;

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: its help, its type and every sample together, as the exposition
/// format wants (promtool refuses a sample without its family's HELP, or a family split).
fn family(out: &mut String, name: &str, help: &str, samples: &[(String, String)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// The textfile's content (and `steward serve`'s `/metrics`).
pub fn render(config: &Config, catalog: &Catalog) -> Result<String, CatalogError> {
    let mut out = String::new();
    let (mut success, mut durations) = (Vec::new(), Vec::new());
    for (job, _) in &config.schedule.jobs {
        let runs = catalog.runs(Some(job), 200)?;
        if let Some(ok) = runs
            .iter()
            .find(|r| matches!(r.status, RunStatus::Ok | RunStatus::Warning))
        {
            success.push((
                format!("job=\"{}\"", label(&job.to_string())),
                ok.finished_at.unwrap_or(ok.started_at).to_string(),
            ));
        }
        if let Some(last) = runs
            .iter()
            .find(|r| r.finished_at.is_some() && r.status != RunStatus::Skipped)
        {
            durations.push((
                format!(
                    "job=\"{}\",status=\"{}\"",
                    label(&job.to_string()),
                    label(last.status.word())
                ),
                (last.finished_at.unwrap_or(last.started_at) - last.started_at).to_string(),
            ));
        }
    }
    family(
        &mut out,
        "steward_job_last_success_timestamp_seconds",
        "When the job last succeeded.",
        &success,
    );
    family(
        &mut out,
        "steward_job_last_duration_seconds",
        "How long the last run took.",
        &durations,
    );
    let (mut bytes, mut times) = (Vec::new(), Vec::new());
    for set in &config.backup.sets {
        if let Some(b) = catalog.newest_verified(&set.name)? {
            let l = format!("set=\"{}\"", label(&set.name));
            bytes.push((l.clone(), b.archive_bytes.to_string()));
            times.push((l, b.created_at.to_string()));
        }
    }
    family(
        &mut out,
        "steward_backup_bytes",
        "Size of the newest verified archive per set.",
        &bytes,
    );
    family(
        &mut out,
        "steward_backup_timestamp_seconds",
        "When the newest verified backup per set was taken.",
        &times,
    );
    let mut copies = Vec::new();
    for t in &config.offsite {
        for set in config.backup.sets.iter().filter(|s| t.covers(&s.name)) {
            if let Some(c) = catalog.newest_offsite_copy(&t.name, &set.name)? {
                copies.push((
                    format!("set=\"{}\",target=\"{}\"", label(&set.name), label(&t.name)),
                    c.created_at.to_string(),
                ));
            }
        }
    }
    family(
        &mut out,
        "steward_offsite_timestamp_seconds",
        "When the backup of the newest offsite copy per set and target was taken.",
        &copies,
    );
    drills(config, catalog, &mut out)?;
    let states: Vec<(String, String)> = catalog
        .check_states()?
        .into_iter()
        .map(|s| {
            let v = match s.state {
                Severity::Ok => 0,
                Severity::Warn => 1,
                Severity::Crit => 2,
            };
            (format!("check=\"{}\"", label(&s.name)), v.to_string())
        })
        .collect();
    family(
        &mut out,
        "steward_check_state",
        "0 OK, 1 warning, 2 critical.",
        &states,
    );
    Ok(out)
}

/// The newest drill of each set, local and from offsite: when, its time to restore, and
/// whether it passed.
fn drills(config: &Config, catalog: &Catalog, out: &mut String) -> Result<(), CatalogError> {
    let mut newest = Vec::new();
    for set in &config.backup.sets {
        for offsite in [false, true] {
            if let Some(d) = catalog.newest_drill(&set.name, offsite, false)? {
                newest.push((if offsite { "offsite" } else { "local" }, d));
            }
        }
    }
    type Value<'a> = &'a dyn Fn(&crate::catalog::DrillRecord) -> String;
    let series: [(&str, &str, Value<'_>); 3] = [
        (
            "steward_drill_timestamp_seconds",
            "When the newest restore drill per set and source ran.",
            &|d| d.started_at.to_string(),
        ),
        (
            "steward_drill_duration_seconds",
            "The newest drill's time to restore (fetch, verify, write) per set and source.",
            &|d| format!("{:.3}", d.phases.restore_ms() as f64 / 1000.0),
        ),
        (
            "steward_drill_ok",
            "1 when the newest drill per set and source passed, else 0.",
            &|d| u8::from(d.ok).to_string(),
        ),
    ];
    for (name, help, value) in series {
        let samples: Vec<(String, String)> = newest
            .iter()
            .map(|(source, d)| {
                (
                    format!("set=\"{}\",source=\"{source}\"", label(&d.set)),
                    value(d),
                )
            })
            .collect();
        family(out, name, help, &samples);
    }
    Ok(())
}

/// Writes the textfile atomically (temp file, rename), so the collector never reads half.
pub fn write(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("prom.partial");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
