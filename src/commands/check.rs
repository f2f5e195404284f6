//! `steward check`: one cycle of every check, states and alerts updated, a table (or
//! JSON), and the Nagios exit code of the worst state.

use serde::Serialize;

use crate::alerts::{Event, State};
use crate::catalog::RunStatus;
use crate::checks::Severity;
use crate::config::Config;
use crate::job::Job;
use crate::jobs::{Done, Session};

#[derive(Serialize)]
struct CheckRow<'a> {
    name: &'a str,
    state: Severity,
    value: &'a str,
    threshold: &'a str,
    since: i64,
}

#[derive(Serialize)]
struct CheckJson<'a> {
    status: Severity,
    checks: Vec<CheckRow<'a>>,
    events: &'a [Event],
    mail: Option<crate::alerts::Delivery>,
}

pub fn run(cfg: &Config, json: bool) -> anyhow::Result<Done> {
    let mut session = Session::begin(cfg, Job::Check, false, &super::warn)?;
    let catalog = &mut session.catalog;
    let now = crate::clock::now();
    let cycle = crate::checks::cycle(cfg, catalog, &crate::services::SystemRunner, now);
    let mut readings = cycle.readings;
    let healed = crate::checks::heal(cfg, catalog, &readings, &crate::services::SystemRunner, now);
    readings.extend(healed);
    let host = crate::fsutil::hostname();
    let (states, events) =
        crate::alerts::record(catalog, &readings, &crate::jobs::round(cfg, &host, now))?;
    // The disks the cycle measured feed the capacity forecast of the report.
    for d in &cycle.disks {
        catalog.add_disk_sample(&d.path.to_string_lossy(), now, d.used, d.free)?;
    }
    let mail = session.deliver(now);
    let hooks_ok = session.end(true);
    let worst = states.iter().map(|s| s.state).max().unwrap_or(Severity::Ok);
    if json {
        let checks = states.iter().map(row).collect();
        super::print_json(&CheckJson {
            status: worst,
            checks,
            events: &events,
            mail,
        })?;
    } else {
        println!(
            "{:<34} {:<9} {:<30} {:<34} SINCE",
            "CHECK", "STATE", "VALUE", "THRESHOLD"
        );
        for s in &states {
            println!(
                "{:<34} {:<9} {:<30} {:<34} {}",
                s.name,
                s.state.word(),
                s.value,
                s.threshold,
                super::show_time(s.since)
            );
        }
        for e in &events {
            println!("alert: {:?} {} -> {}", e.kind, e.name, e.to.word());
        }
        if let Some(m) = &mail
            && m.sent > 0
        {
            println!(
                "alert mail sent ({} message{})",
                m.sent,
                if m.sent == 1 { "" } else { "s" }
            );
        }
    }
    if !hooks_ok {
        return Ok(Done::FAILED);
    }
    Ok(match worst {
        Severity::Ok => Done::OK,
        Severity::Warn => Done {
            status: RunStatus::Warning,
            code: crate::error::WARNING,
        },
        // The job ran; what it found is in the checks (and their alerts), not a failure
        // of the job: the run is recorded as a warning, the exit code stays 2.
        Severity::Crit => Done {
            status: RunStatus::Warning,
            code: crate::error::FAILED,
        },
    })
}

fn row(s: &State) -> CheckRow<'_> {
    CheckRow {
        name: &s.name,
        state: s.state,
        value: &s.value,
        threshold: &s.threshold,
        since: s.since,
    }
}
