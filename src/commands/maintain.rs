//! `steward maintain daily|weekly|monthly` and `steward report`.

use std::process::ExitCode;

use crate::catalog::RunStatus;
use crate::config::Config;
use crate::job::{Job, Period};
use crate::jobs::{Done, Outcome, Session};

pub fn run(cfg: &Config, period: Period, dry_run: bool, json: bool) -> anyhow::Result<Done> {
    let name = period.name();
    let tasks = cfg.maintenance.tasks(period);
    let job = Job::Maintain(period);
    let mut session = Session::begin(cfg, job.clone(), dry_run, &super::warn)?;
    let run = session.start(job, None)?;
    let progress = super::progress::for_stderr();
    let now = crate::clock::now();
    let mut results = crate::maintain::run(
        cfg,
        &session.catalog,
        tasks,
        dry_run,
        now,
        &crate::services::SystemRunner,
        progress.as_ref(),
    );
    if period == Period::Daily {
        results.push(crate::maintain::rollbacks_task(cfg, now, dry_run));
    }
    drop(progress);
    let errors: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(std::string::ToString::to_string))
        .collect();
    let warnings: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .flat_map(|r| r.warnings.clone())
        .collect();
    if json {
        let shown: Vec<serde_json::Value> = results
            .iter()
            .map(|r| match r {
                Ok(t) => serde_json::to_value(t).unwrap_or_default(),
                Err(e) => serde_json::json!({ "task": e.task, "error": e.message }),
            })
            .collect();
        super::print_json(
            &serde_json::json!({ "period": name, "dry_run": dry_run, "tasks": shown }),
        )?;
    } else {
        if tasks.is_empty() {
            println!("no {name} maintenance tasks configured");
        }
        // The built-in rollback task says nothing when there is nothing to say.
        let quiet = |t: &crate::maintain::TaskReport| {
            t.task == "restore rollback copies" && t.done.is_empty() && t.warnings.is_empty()
        };
        for r in &results {
            match r {
                Ok(t) if quiet(t) => {}
                Ok(t) => {
                    println!(
                        "{}: {} compressed, {} removed, {} reclaimed",
                        t.task,
                        t.files_compressed,
                        t.files_removed,
                        super::show_bytes(t.bytes_reclaimed)
                    );
                    for d in &t.done {
                        println!("  {d}");
                    }
                    for w in &t.warnings {
                        println!("  warning: {w}");
                    }
                    if let Some(text) = &t.report {
                        println!("{text}");
                    }
                }
                Err(e) => println!("FAILED {e}"),
            }
        }
    }
    if dry_run {
        return Ok(Done::OK);
    }
    // Mail the report when alerts are configured.
    if let Some(email) = &cfg.alerts.email {
        for text in results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .filter_map(|r| r.report.as_ref())
        {
            let subject = format!("[steward] {}: {name} report", crate::fsutil::hostname());
            if let Err(e) = crate::alerts::send(email, &subject, text) {
                eprintln!("steward: warning: the report mail was not sent: {e}");
            }
        }
    }
    let ok = errors.is_empty();
    let detail = errors
        .iter()
        .chain(&warnings)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    let status = if !ok {
        RunStatus::Failed
    } else if warnings.is_empty() {
        RunStatus::Ok
    } else {
        RunStatus::Warning
    };
    // Warnings (a VACUUM skipped for lack of room) alert like failures do.
    session.finish(
        run,
        &Outcome {
            status,
            summary: &detail,
            alert_ok: ok && warnings.is_empty(),
            detail: &detail,
        },
    )?;
    let ok = session.end(ok);
    for e in &errors {
        eprintln!("steward: error: {e}");
    }
    Ok(if ok { Done::OK } else { Done::FAILED })
}

pub fn report(cfg: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let catalog = super::open_catalog(cfg)?;
    let now = crate::clock::now();
    if json {
        super::print_json(&crate::maintain::report_data(cfg, &catalog, now)?)?;
    } else {
        println!("{}", crate::maintain::report(cfg, &catalog, now)?);
    }
    Ok(ExitCode::SUCCESS)
}
