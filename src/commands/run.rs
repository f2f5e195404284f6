//! `steward run JOB` (one job, recorded, for timers, launchd and the daemon) and
//! `steward status`.

use std::process::ExitCode;

use anyhow::bail;
use serde::Serialize;

use crate::catalog::RunStatus;
use crate::cli::{BackupArgs, Period, PruneArgs, VerifyArgs};
use crate::config::Config;

/// The jobs that can be scheduled or run.
pub const JOBS: &str = "check, backup, backup:SET, daily, weekly, monthly, verify, prune";

/// Runs `job` through the same function as its direct command.
fn dispatch(cfg: &Config, job: &str) -> anyhow::Result<ExitCode> {
    let own: Vec<String> = cfg
        .schedule
        .jobs
        .iter()
        .filter_map(|(j, _)| j.strip_prefix("backup:").map(str::to_string))
        .collect();
    match job {
        "check" => super::check::run(cfg, false),
        "backup" => {
            // Sets with a schedule of their own run as their own job.
            let sets: Vec<String> = cfg
                .backup
                .sets
                .iter()
                .map(|s| s.name.clone())
                .filter(|n| !own.contains(n))
                .collect();
            if sets.is_empty() && !cfg.backup.sets.is_empty() {
                println!("every set has its own schedule; nothing for the backup job");
                return Ok(ExitCode::SUCCESS);
            }
            super::backup::run(
                cfg,
                BackupArgs {
                    sets,
                    force: false,
                    json: false,
                },
            )
        }
        j if j.starts_with("backup:") => super::backup::run(
            cfg,
            BackupArgs {
                sets: vec![j["backup:".len()..].to_string()],
                force: false,
                json: false,
            },
        ),
        "daily" => super::maintain::run(cfg, Period::Daily, false, false),
        "weekly" => super::maintain::run(cfg, Period::Weekly, false, false),
        "monthly" => super::maintain::run(cfg, Period::Monthly, false, false),
        "verify" => super::verify::run(
            cfg,
            VerifyArgs {
                id: None,
                latest: true,
                all: false,
                set: None,
                json: false,
            },
        ),
        "prune" => super::prune::run(
            cfg,
            PruneArgs {
                set: None,
                dry_run: false,
                json: false,
            },
        ),
        other => bail!("unknown job {other:?}; jobs are: {JOBS}"),
    }
}

pub fn run(cfg: &Config, job: &str) -> anyhow::Result<ExitCode> {
    let catalog = super::open_catalog(cfg)?;
    let run_id = catalog.start_run(&crate::catalog::scheduled(job), None)?;
    let result = dispatch(cfg, job);
    let (status, summary) = match &result {
        Ok(c) if *c == ExitCode::SUCCESS => (RunStatus::Ok, "ok".to_string()),
        Ok(c) if *c == ExitCode::from(crate::error::WARNING) => {
            (RunStatus::Warning, "warning".to_string())
        }
        Ok(_) => (RunStatus::Failed, "failed".to_string()),
        Err(e) => match crate::exit_code(e) {
            c if c == ExitCode::from(crate::error::LOCKED) => {
                (RunStatus::Skipped, format!("{e:#}"))
            }
            _ => (RunStatus::Failed, format!("{e:#}")),
        },
    };
    catalog.finish_run(run_id, status, &summary)?;
    if let Some(path) = &cfg.schedule.metrics_file {
        match crate::metrics::render(cfg, &catalog) {
            Ok(text) => {
                if let Err(e) = crate::metrics::write(path, &text) {
                    eprintln!("steward: warning: metrics file {}: {e}", path.display());
                }
            }
            Err(e) => eprintln!("steward: warning: metrics: {e}"),
        }
    }
    result
}

#[derive(Serialize)]
struct JobStatus {
    job: String,
    schedule: String,
    last_run: Option<i64>,
    last_result: Option<crate::catalog::RunStatus>,
    last_seconds: Option<i64>,
    next_run: Option<i64>,
    skipped_ticks: u64,
}

#[derive(Serialize)]
struct SetStatus {
    set: String,
    newest: Option<String>,
    created_at: Option<i64>,
    /// The newest good backup (verified, not suspect unless accepted).
    newest_good: Option<String>,
    /// The newest backup, when it is suspect, and why.
    suspect: Option<(String, Vec<String>)>,
}

#[derive(Serialize)]
struct Problem {
    check: String,
    state: String,
    value: String,
    since: i64,
}

#[derive(Serialize)]
struct Status {
    jobs: Vec<JobStatus>,
    sets: Vec<SetStatus>,
    problems: Vec<Problem>,
}

pub fn status(cfg: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let catalog = super::open_catalog(cfg)?;
    let tz = jiff::tz::TimeZone::system();
    let now = jiff::Timestamp::from_second(crate::clock::now())?;
    let mut jobs = Vec::new();
    for (job, cron) in &cfg.schedule.jobs {
        let name = crate::catalog::scheduled(job);
        let last = catalog.last_run(&name)?;
        let last = last.as_ref();
        jobs.push(JobStatus {
            job: job.clone(),
            schedule: cron.source.clone(),
            last_run: last.map(|r| r.started_at),
            last_result: last.map(|r| r.status),
            last_seconds: last.and_then(|r| r.finished_at.map(|f| f - r.started_at)),
            next_run: cron.next_after(now, &tz).map(|t| t.as_second()),
            skipped_ticks: catalog.skipped_runs(&name)?,
        });
    }
    let mut sets = Vec::new();
    for s in &cfg.backup.sets {
        let b = catalog.newest_verified(&s.name)?;
        let suspect = catalog
            .backups(Some(&s.name))?
            .into_iter()
            .next()
            .filter(|n| n.is_suspect())
            .map(|n| (n.id, n.suspect));
        sets.push(SetStatus {
            set: s.name.clone(),
            newest: b.as_ref().map(|b| b.id.clone()),
            created_at: b.map(|b| b.created_at),
            newest_good: catalog.newest_good(&s.name)?.map(|g| g.id),
            suspect,
        });
    }
    let problems: Vec<Problem> = catalog
        .check_states()?
        .into_iter()
        .filter(|s| s.state != "O")
        .map(|s| Problem {
            check: s.name,
            state: if s.state == "C" {
                "CRITICAL".into()
            } else {
                "WARNING".into()
            },
            value: s.value,
            since: s.since,
        })
        .collect();
    let st = Status {
        jobs,
        sets,
        problems,
    };
    if json {
        super::print_json(&st)?;
        return Ok(ExitCode::SUCCESS);
    }
    let t = |x: Option<i64>| x.map(super::show_time).unwrap_or_else(|| "never".into());
    println!(
        "{:<16} {:<16} {:<21} {:<9} {:>7} {:<21} SKIPPED",
        "JOB", "SCHEDULE", "LAST RUN", "RESULT", "SECONDS", "NEXT RUN"
    );
    for j in &st.jobs {
        println!(
            "{:<16} {:<16} {:<21} {:<9} {:>7} {:<21} {}",
            j.job,
            j.schedule,
            t(j.last_run),
            j.last_result.map_or("-", |s| s.word()),
            j.last_seconds
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            t(j.next_run),
            j.skipped_ticks
        );
    }
    for s in &st.sets {
        println!(
            "set {:<12} newest verified backup: {}",
            s.set,
            s.newest.as_deref().unwrap_or("none")
        );
        if let Some((id, why)) = &s.suspect {
            println!(
                "  {id} is SUSPECT ({}); last good: {}",
                why.join("; "),
                s.newest_good.as_deref().unwrap_or("none")
            );
        }
    }
    for p in &st.problems {
        println!(
            "problem: {} {} {} since {}",
            p.state,
            p.check,
            p.value,
            super::show_time(p.since)
        );
    }
    Ok(ExitCode::SUCCESS)
}
