//! The check job: one cycle of every check, the restarts self-healing makes, states and
//! alerts recorded, the disks sampled for the capacity forecast, due mail sent.

use super::{Done, Session, Ui};
use crate::alerts::{Delivery, Event, State};
use crate::catalog::RunStatus;
use crate::checks::Severity;
use crate::config::Config;
use crate::schedule::Job;

/// What the cycle found.
pub struct CheckReport {
    /// Every check's state after the cycle.
    pub states: Vec<State>,
    /// What changed (problems, recoveries, reminders).
    pub events: Vec<Event>,
    /// The mail sent, when alerts are configured.
    pub mail: Option<Delivery>,
    /// The worst state.
    pub worst: Severity,
    pub done: Done,
}

/// Runs one check cycle.
pub fn run(cfg: &Config, ui: Ui<'_>) -> anyhow::Result<CheckReport> {
    let mut session = Session::begin(cfg, Job::Check, false, ui)?;
    let catalog = &mut session.catalog;
    let now = crate::clock::now();
    let cycle = crate::checks::cycle(cfg, catalog, &crate::services::SystemRunner, now);
    let mut readings = cycle.readings;
    let healed = crate::checks::heal(cfg, catalog, &readings, &crate::services::SystemRunner, now);
    readings.extend(healed);
    // The peers' status objects: who has gone quiet (`fleet HOST`).
    let mut fleet_views = None;
    if let Some(fleet) = &cfg.fleet {
        match crate::fleet::read(cfg, catalog, now) {
            Ok(views) => {
                readings.extend(crate::fleet::readings(&views, fleet));
                fleet_views = Some(views);
            }
            Err(e) => readings.extend(crate::fleet::unreadable(fleet, &crate::error::chain(&e))),
        }
    }
    let host = crate::fsutil::hostname();
    let round = super::round(cfg, &host, now);
    let (mut states, mut events) = crate::alerts::record(catalog, &readings, &round)?;
    // This host's own status, with the states just recorded; whether that worked is its
    // own item, recorded once per cycle after the write.
    if cfg.fleet.is_some() {
        let published = crate::fleet::publish(cfg, catalog, now);
        let own = crate::fleet::own_reading(fleet_views.as_deref(), &published);
        let (s, e) = crate::alerts::record(catalog, &[own], &round)?;
        states.retain(|x| !s.iter().any(|n| n.name == x.name));
        states.extend(s);
        events.extend(e);
    }
    // The disks the cycle measured feed the capacity forecast of the report.
    for d in &cycle.disks {
        catalog.add_disk_sample(&d.path.to_string_lossy(), now, d.used, d.free)?;
    }
    let mail = session.deliver(now);
    let hooks_ok = session.end(true);
    let worst = states.iter().map(|s| s.state).max().unwrap_or(Severity::Ok);
    let done = if hooks_ok {
        match worst {
            Severity::Ok => Done::OK,
            Severity::Warn => Done {
                status: RunStatus::Warning,
                code: crate::error::WARNING,
            },
            // The job ran; what it found is in the checks (and their alerts), not a
            // failure of the job: the run is recorded as a warning, the exit code stays 2.
            Severity::Crit => Done {
                status: RunStatus::Warning,
                code: crate::error::FAILED,
            },
        }
    } else {
        Done::FAILED
    };
    Ok(CheckReport {
        states,
        events,
        mail,
        worst,
        done,
    })
}
