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
    let host = crate::fsutil::hostname();
    let round = super::round(cfg, &host, now);
    // The peers' status objects: who has gone quiet (`fleet HOST`). Each request has a
    // short timeout, so a bucket that does not answer delays this cycle by seconds.
    let mut views = None;
    if let Some(fleet) = &cfg.fleet {
        match crate::fleet::read(cfg, catalog, now) {
            Ok(v) => {
                let mut r = crate::fleet::readings(&v, fleet);
                let (recover, forget) = crate::fleet::gone(&catalog.check_states()?, &r, &host);
                catalog.forget_states(&forget)?;
                r.extend(recover);
                readings.extend(r);
                views = Some(v);
            }
            Err(e) => readings.extend(crate::fleet::unreadable(fleet, &crate::error::chain(&e))),
        }
    }
    // One record (and one mail) for the cycle.
    let (mut states, mut events) = crate::alerts::record(catalog, &readings, &round)?;
    if cfg.fleet.is_some() {
        // This host's own status, with the states just recorded; whether that worked is
        // its own item, recorded after the write (it changes only when writing fails or
        // someone else wrote this host's folder).
        let published = crate::fleet::publish(cfg, catalog, now);
        let own = crate::fleet::own_reading(views.as_deref(), &published);
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
