//! Self-healing services: a service whose health check failed `restart-after` cycles in a
//! row is restarted (stop, then start), at most `max-restarts` times within
//! `restart-window`; then steward gives up and says so. Each decision is a reading
//! (`restart NAME`) that goes through the same alerts as any check, so a restart is
//! announced and a give-up is critical. A service is never restarted while a backup,
//! restore or maintenance run holds its lock (it may have stopped the service on purpose)
//! or an interrupted restore waits to be resumed; those locks are held during the restart
//! so none can begin in the middle of it.

use super::{Reading, Severity, reading};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::schedule::{Job, Period};
use crate::services::{Controller, Runner};

/// The `restart NAME` readings of this cycle, restarting what is due.
pub fn heal(
    config: &Config,
    catalog: &Catalog,
    readings: &[Reading],
    runner: &dyn Runner,
    now: i64,
) -> Vec<Reading> {
    let mut out = Vec::new();
    for svc in &config.services {
        let Some(policy) = svc.restart else { continue };
        let Some(health) = readings
            .iter()
            .find(|r| r.name == format!("health {}", svc.name))
        else {
            continue;
        };
        let name = format!("restart {}", svc.name);
        let window = humantime::format_duration(policy.window);
        let threshold = format!(
            "restart after {} failed checks, at most {} within {window}",
            policy.after, policy.max
        );
        let mut push = |sev, value: String| {
            out.push(reading(
                name.clone(),
                sev,
                value,
                threshold.clone(),
                Default::default(),
            ));
        };
        let (fails, mut restarts) = match catalog.restart_state(&svc.name) {
            Ok(s) => s,
            Err(e) => {
                push(Severity::Crit, e.to_string());
                continue;
            }
        };
        restarts.retain(|t| now - t < i64::try_from(policy.window.as_secs()).unwrap_or(i64::MAX));
        let save =
            |fails: u32, restarts: &[i64]| catalog.set_restart_state(&svc.name, fails, restarts);
        if health.severity == Severity::Ok {
            let _ = save(0, &restarts);
            push(Severity::Ok, "healthy".into());
            continue;
        }
        let fails = fails + 1;
        if fails < policy.after {
            let _ = save(fails, &restarts);
            push(
                Severity::Ok,
                format!("{fails} of {} failed checks", policy.after),
            );
            continue;
        }
        if restarts.len() >= policy.max as usize {
            let _ = save(fails, &restarts);
            push(
                Severity::Crit,
                format!(
                    "gave up: restarted {} times within {window} and still failing ({})",
                    restarts.len(),
                    health.value
                ),
            );
            continue;
        }
        let guard = match busy_guard(config) {
            Ok(g) => g,
            Err(why) => {
                let _ = save(fails, &restarts);
                push(Severity::Warn, format!("not restarted: {why}"));
                continue;
            }
        };
        let control = Controller { runner };
        let result = control.stop(svc).and_then(|()| control.start(svc));
        drop(guard);
        restarts.push(now);
        let _ = save(0, &restarts);
        match result {
            Ok(()) => push(
                Severity::Warn,
                format!(
                    "restarted {} after {} failed health checks ({} of {} within {window})",
                    svc.name,
                    policy.after,
                    restarts.len(),
                    policy.max
                ),
            ),
            Err(e) => push(Severity::Crit, format!("restart failed: {e}")),
        }
    }
    out
}

/// Holds the locks of the jobs that stop services, or says which one runs.
fn busy_guard(config: &Config) -> Result<Vec<crate::lock::JobLock>, String> {
    if let Ok(Some(j)) = crate::restore::pending(&config.state_dir) {
        return Err(format!(
            "the restore of {} was interrupted; resume it first",
            j.id
        ));
    }
    let mut held = Vec::new();
    let quiescing = [Job::Restore, Job::Backup, Job::Maintain(Period::Daily)];
    for job in quiescing.iter().map(Job::lock) {
        match crate::lock::acquire(&config.state_dir, job) {
            Ok(l) => held.push(l),
            Err(crate::lock::LockError::Held { .. }) => {
                return Err(format!("a {job} run may have stopped it on purpose"));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(held)
}
