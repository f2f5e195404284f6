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

/// The textfile's content.
pub fn render(config: &Config, catalog: &Catalog) -> Result<String, CatalogError> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP steward_job_last_success_timestamp_seconds When the job last succeeded."
    );
    let _ = writeln!(
        out,
        "# TYPE steward_job_last_success_timestamp_seconds gauge"
    );
    let mut durations = String::new();
    for (job, _) in &config.schedule.jobs {
        let runs = catalog.runs(Some(job), 200)?;
        if let Some(ok) = runs
            .iter()
            .find(|r| matches!(r.status, RunStatus::Ok | RunStatus::Warning))
        {
            let _ = writeln!(
                out,
                "steward_job_last_success_timestamp_seconds{{job=\"{}\"}} {}",
                label(&job.to_string()),
                ok.finished_at.unwrap_or(ok.started_at)
            );
        }
        if let Some(last) = runs
            .iter()
            .find(|r| r.finished_at.is_some() && r.status != RunStatus::Skipped)
        {
            let _ = writeln!(
                durations,
                "steward_job_last_duration_seconds{{job=\"{}\",status=\"{}\"}} {}",
                label(&job.to_string()),
                label(last.status.word()),
                last.finished_at.unwrap_or(last.started_at) - last.started_at
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP steward_job_last_duration_seconds How long the last run took."
    );
    let _ = writeln!(out, "# TYPE steward_job_last_duration_seconds gauge");
    out.push_str(&durations);
    let _ = writeln!(
        out,
        "# HELP steward_backup_bytes Size of the newest verified archive per set."
    );
    let _ = writeln!(out, "# TYPE steward_backup_bytes gauge");
    for set in &config.backup.sets {
        if let Some(b) = catalog.newest_verified(&set.name)? {
            let _ = writeln!(
                out,
                "steward_backup_bytes{{set=\"{}\"}} {}",
                label(&set.name),
                b.archive_bytes
            );
            let _ = writeln!(
                out,
                "steward_backup_timestamp_seconds{{set=\"{}\"}} {}",
                label(&set.name),
                b.created_at
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP steward_offsite_timestamp_seconds When the backup of the newest offsite copy per set and target was taken."
    );
    let _ = writeln!(out, "# TYPE steward_offsite_timestamp_seconds gauge");
    for t in &config.offsite {
        for set in config.backup.sets.iter().filter(|s| t.covers(&s.name)) {
            if let Some(c) = catalog.newest_offsite_copy(&t.name, &set.name)? {
                let _ = writeln!(
                    out,
                    "steward_offsite_timestamp_seconds{{set=\"{}\",target=\"{}\"}} {}",
                    label(&set.name),
                    label(&t.name),
                    c.created_at
                );
            }
        }
    }
    drills(config, catalog, &mut out)?;
    let _ = writeln!(
        out,
        "# HELP steward_check_state 0 OK, 1 warning, 2 critical."
    );
    let _ = writeln!(out, "# TYPE steward_check_state gauge");
    for s in catalog.check_states()? {
        let v = match s.state {
            Severity::Ok => 0,
            Severity::Warn => 1,
            Severity::Crit => 2,
        };
        let _ = writeln!(
            out,
            "steward_check_state{{check=\"{}\"}} {v}",
            label(&s.name)
        );
    }
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
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (source, d) in &newest {
            let _ = writeln!(
                out,
                "{name}{{set=\"{}\",source=\"{source}\"}} {}",
                label(&d.set),
                value(d)
            );
        }
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
