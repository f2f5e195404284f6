//! `steward run JOB` (one job, recorded, for timers, launchd and the daemon) and
//! `steward status`.

use std::process::ExitCode;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::config::Config;
use crate::schedule::Job;

/// `steward run JOB`: one scheduled tick of the job, recorded around its run; prints what
/// the job's own command prints.
pub fn run(cfg: &Config, job: &str) -> anyhow::Result<ExitCode> {
    let job = match job.parse::<Job>() {
        Ok(j) if j.schedulable() => j,
        _ => return Err(crate::schedule::UnknownJob(job.to_string()).into()),
    };
    let report = crate::jobs::tick(cfg, &job, super::ui())?;
    super::show::report(cfg, &report, false).map(super::exit)
}

/// `steward report`: the maintenance report of now, without mailing it.
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

/// `steward status`.
pub fn status(cfg: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let st = crate::status::gather(cfg)
        .with_context(|| format!("gathering the status from {}", cfg.state_dir.display()))?;
    if json {
        super::print_json(&st)?;
        return Ok(ExitCode::SUCCESS);
    }
    crate::render::status::status(&mut std::io::stdout().lock(), &st)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct ScheduledRun {
    at: i64,
    job: Job,
}

/// `steward schedule --between FROM TO`: the runs the schedule makes in the window.
pub fn schedule(
    cfg: &Config,
    between: &[jiff::Timestamp],
    only: &[String],
    json: bool,
) -> anyhow::Result<ExitCode> {
    let [from, to] = between else {
        bail!("--between takes two times");
    };
    if from > to {
        bail!("--between {from} {to}: the window ends before it starts");
    }
    let mut jobs = Vec::new();
    for name in only {
        let job: Job = name
            .parse()
            .map_err(|_| crate::schedule::UnknownJob(name.clone()))?;
        if !cfg.schedule.jobs.iter().any(|(j, _)| *j == job) {
            bail!("job {job} has no entry in [schedule]");
        }
    }
    for (job, cron) in &cfg.schedule.jobs {
        if only.is_empty()
            || only
                .iter()
                .any(|n| n.parse::<Job>().is_ok_and(|j| j == *job))
        {
            jobs.push((job.clone(), cron.clone()));
        }
    }
    let tz = jiff::tz::TimeZone::system();
    let limit = 1_000_000;
    let ticks = crate::schedule::between(&jobs, *from, *to, &tz, limit).with_context(|| {
        format!("more than {limit} runs in the window; narrow it or pick --job")
    })?;
    if json {
        let v: Vec<ScheduledRun> = ticks
            .iter()
            .map(|(t, j)| ScheduledRun {
                at: t.as_second(),
                job: (*j).clone(),
            })
            .collect();
        super::print_json(&v)?;
    } else {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for (t, j) in &ticks {
            use std::io::Write;
            writeln!(
                out,
                "{} {j}",
                t.to_zoned(tz.clone()).strftime("%Y-%m-%dT%H:%M:%S%:z")
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
