//! `steward run JOB` (one job, recorded, for timers, launchd and the daemon) and
//! `steward status`.

use std::process::ExitCode;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::catalog::RunStatus;
use crate::cli::{BackupArgs, PruneArgs, VerifyArgs};
use crate::config::Config;
use crate::job::Job;
use crate::jobs::{Done, Tick};

/// Runs `job` through the same function as its direct command.
fn dispatch(cfg: &Config, job: &Job) -> anyhow::Result<Done> {
    let (force, json) = (false, false);
    match job {
        Job::Check => super::check::run(cfg, json),
        Job::Backup => {
            // Sets with a schedule of their own run as their own job.
            let own: Vec<&str> = cfg
                .schedule
                .jobs
                .iter()
                .filter_map(|(j, _)| match j {
                    Job::BackupSet(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect();
            let sets: Vec<String> = cfg
                .backup
                .sets
                .iter()
                .map(|s| s.name.clone())
                .filter(|n| !own.contains(&n.as_str()))
                .collect();
            if sets.is_empty() && !cfg.backup.sets.is_empty() {
                println!("every set has its own schedule; nothing for the backup job");
                return Ok(Done::OK);
            }
            super::backup::run(cfg, BackupArgs { sets, force, json })
        }
        Job::BackupSet(set) => super::backup::run(
            cfg,
            BackupArgs {
                sets: vec![set.clone()],
                force,
                json,
            },
        ),
        Job::Maintain(period) => super::maintain::run(cfg, *period, false, json),
        Job::Verify => super::verify::run(
            cfg,
            VerifyArgs {
                id: None,
                latest: true,
                all: false,
                set: None,
                offsite: false,
                target: None,
                identity: None,
                json,
            },
        ),
        Job::Offsite => super::offsite::push(cfg, None, None, false, json),
        Job::Prune => super::prune::run(
            cfg,
            PruneArgs {
                set: None,
                dry_run: false,
                json,
            },
        ),
        Job::Restore => bail!("a restore is never scheduled; run `steward restore`"),
    }
}

/// `steward run JOB`: one scheduled tick of the job, recorded around its run.
pub fn run(cfg: &Config, job: &str) -> anyhow::Result<Done> {
    let job = match job.parse::<Job>() {
        Ok(j) if j.schedulable() => j,
        _ => return Err(crate::job::UnknownJob(job.to_string()).into()),
    };
    let tick = Tick::start(cfg, &job)
        .with_context(|| format!("opening the catalog in {}", cfg.state_dir.display()))?;
    let result = dispatch(cfg, &job);
    let (status, summary) = match &result {
        Ok(d) => (d.status, d.status.word().to_string()),
        // Another run holds the job's lock: this tick is skipped.
        Err(e) if crate::lock_held(e) => (RunStatus::Skipped, format!("{e:#}")),
        Err(e) => (RunStatus::Failed, format!("{e:#}")),
    };
    tick.end(cfg, status, &summary, &super::warn)?;
    result
}

#[derive(Serialize)]
struct JobStatus {
    job: Job,
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
    /// Per offsite target covering the set: the newest copy's backup ID.
    offsite: Vec<(String, Option<String>)>,
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
    /// The data restores replaced, kept aside.
    rollbacks: Vec<crate::restore::rollbacks::Kept>,
}

pub fn status(cfg: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let catalog = super::open_catalog(cfg)?;
    let tz = jiff::tz::TimeZone::system();
    let now = jiff::Timestamp::from_second(crate::clock::now())?;
    let mut jobs = Vec::new();
    for (job, cron) in &cfg.schedule.jobs {
        let last = catalog.last_run(job)?;
        let last = last.as_ref();
        jobs.push(JobStatus {
            job: job.clone(),
            schedule: cron.source.clone(),
            last_run: last.map(|r| r.started_at),
            last_result: last.map(|r| r.status),
            last_seconds: last.and_then(|r| r.finished_at.map(|f| f - r.started_at)),
            next_run: cron.next_after(now, &tz).map(jiff::Timestamp::as_second),
            skipped_ticks: catalog.skipped_runs(job)?,
        });
    }
    let mut sets = Vec::new();
    for s in &cfg.backup.sets {
        let b = catalog.newest_verified(&s.name)?;
        let suspect = catalog
            .backups(Some(&s.name))?
            .into_iter()
            .next()
            .filter(super::super::catalog::BackupRecord::is_suspect)
            .map(|n| (n.id, n.suspect));
        sets.push(SetStatus {
            set: s.name.clone(),
            newest: b.as_ref().map(|b| b.id.clone()),
            created_at: b.map(|b| b.created_at),
            newest_good: catalog.newest_good(&s.name)?.map(|g| g.id),
            suspect,
            offsite: cfg
                .offsite
                .iter()
                .filter(|t| t.covers(&s.name))
                .map(|t| {
                    catalog
                        .newest_offsite_copy(&t.name, &s.name)
                        .map(|c| (t.name.clone(), c.map(|c| c.backup_id)))
                })
                .collect::<Result<_, _>>()?,
        });
    }
    let problems: Vec<Problem> = catalog
        .check_states()?
        .into_iter()
        .filter(|s| s.state != crate::severity::Severity::Ok)
        .map(|s| Problem {
            check: s.name,
            state: s.state.word().to_string(),
            value: s.value,
            since: s.since,
        })
        .collect();
    let st = Status {
        jobs,
        sets,
        problems,
        rollbacks: crate::restore::rollbacks::kept(cfg)?,
    };
    if json {
        super::print_json(&st)?;
        return Ok(ExitCode::SUCCESS);
    }
    let t = |x: Option<i64>| x.map_or_else(|| "never".into(), super::show_time);
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
            j.last_seconds.map_or_else(|| "-".into(), |s| s.to_string()),
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
        for (target, id) in &s.offsite {
            println!(
                "  offsite {target}: newest copy {}",
                id.as_deref().unwrap_or("none")
            );
        }
        if let Some((id, why)) = &s.suspect {
            println!(
                "  {id} is SUSPECT ({}); last good: {}",
                why.join("; "),
                s.newest_good.as_deref().unwrap_or("none")
            );
        }
    }
    for k in &st.rollbacks {
        let left = k.expires_at - crate::clock::now();
        println!(
            "rollback copy {}: {}, from the restore of {} at {}; {}",
            k.path.display(),
            super::show_bytes(k.bytes),
            if k.id.is_empty() { "?" } else { &k.id },
            super::show_time(k.made_at),
            if k.changed {
                "CHANGED after the swap: kept until `steward restore --cleanup`".to_string()
            } else if left > 0 {
                format!(
                    "removed by daily maintenance in {:.1} days",
                    left as f64 / 86_400.0
                )
            } else {
                "removed by the next daily maintenance".to_string()
            }
        );
    }
    for p in &st.problems {
        // A backup check's finding older than the set's newest good backup is stale (the
        // next check clears it): said so, rather than beside the line it contradicts.
        let stale = st.sets.iter().any(|s| {
            p.check == format!("backup {}", s.set)
                && s.newest_good.is_some()
                && s.newest_good == s.newest
                && s.created_at.is_some_and(|t| t >= p.since)
        });
        println!(
            "problem: {} {} {} since {}{}",
            p.state,
            p.check,
            p.value,
            super::show_time(p.since),
            if stale {
                " (as of the last check; a good backup was made since: the next check \
                 clears it)"
            } else {
                ""
            }
        );
    }
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
            .map_err(|_| crate::job::UnknownJob(name.clone()))?;
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
