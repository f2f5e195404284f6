//! Running a job: the bookkeeping every job shares, in one place. A [`Session`] takes the
//! job's lock, opens the catalog and pings the start; each unit of work (the job, or one
//! set of a backup) is recorded as a run, its result feeds the job's alert state (a failure
//! mails at once, the next success mails the recovery) and due mail is sent; the end pings
//! success or failure; a scheduled [`Tick`] records the tick around it and rewrites the
//! metrics file. Never prints: what goes wrong around the job (a ping, a mail) is handed to
//! the caller's `warn`.

use crate::alerts::{Delivery, Flush, Round};
use crate::catalog::{Catalog, CatalogError, RunStatus, Trigger};
use crate::config::Config;
use crate::lock::{JobLock, LockError};
use crate::schedule::Job;

/// Where a caller hears about trouble around a job that does not fail it.
pub type Warn<'a> = &'a dyn Fn(&str);

/// Errors of the bookkeeping itself.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
}

impl JobError {
    /// Another run of the job holds its lock.
    pub fn is_held(&self) -> bool {
        matches!(self, JobError::Lock(LockError::Held { .. }))
    }
}

/// How a job ended, for the schedule's record and the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub status: RunStatus,
    /// The exit code of the command (see `error`).
    pub code: u8,
}

impl Done {
    /// A job that went well.
    pub const OK: Done = Done {
        status: RunStatus::Ok,
        code: crate::error::OK,
    };

    /// A job that failed in part, already reported.
    pub const FAILED: Done = Done {
        status: RunStatus::Failed,
        code: crate::error::FAILED,
    };
}

/// One unit's result, as recorded and alerted on.
pub struct Outcome<'s> {
    pub status: RunStatus,
    pub summary: &'s str,
    /// Whether it counts as a success for the alert state (a suspect backup does not).
    pub alert_ok: bool,
    /// What the failure mail says.
    pub detail: &'s str,
}

/// One job in progress.
pub struct Session<'a> {
    cfg: &'a Config,
    job: Job,
    /// The catalog, open for the job's own use.
    pub catalog: Catalog,
    warn: Warn<'a>,
    /// Dry runs neither ping nor record.
    quiet: bool,
    /// The job's own hooks; what they printed is written to a run record.
    hooks: crate::hooks::Hooked<'a>,
    /// The last unit recorded, for the hooks that run after it.
    last_run: Option<i64>,
    _lock: JobLock,
}

/// A unit of work started in the catalog.
#[must_use = "finish the run"]
pub struct Started {
    id: Option<i64>,
    job: Job,
}

impl<'a> Session<'a> {
    /// Takes the job's lock, opens the catalog, pings the start (unless `quiet`). With
    /// `ui.queue` (a scheduled run), a lock held by another job that shares it (prune
    /// behind a backup, weekly behind daily) is waited for; the job's own earlier run
    /// still makes this one a skipped tick.
    pub fn begin(
        cfg: &'a Config,
        job: Job,
        quiet: bool,
        ui: super::Ui<'a>,
    ) -> Result<Self, JobError> {
        let warn = ui.warn;
        let me = job.to_string();
        let lock = match crate::lock::acquire_for(&cfg.state_dir, job.lock(), &me, false) {
            Err(LockError::Held {
                holder: Some(other),
                ..
            }) if ui.queue && other != me => {
                warn(&format!(
                    "{me} waits for {other}, which holds the {} lock",
                    job.lock()
                ));
                crate::lock::acquire_for(&cfg.state_dir, job.lock(), &me, true)?
            }
            taken => taken?,
        };
        let catalog = Catalog::open(&cfg.state_dir)?;
        // A quiet (dry) run runs no hooks.
        let hooks =
            crate::hooks::Hooked::new(cfg.hooks.get(&job).filter(|_| !quiet), job.clone(), None);
        let mut s = Session {
            cfg,
            job,
            catalog,
            warn,
            quiet,
            hooks,
            last_run: None,
            _lock: lock,
        };
        s.ping(Phase::Start);
        // The job's `before` hook: when it fails the job does not run, and it alerts.
        if let Err(e) = s.hooks.before() {
            let text = e.to_string();
            s.alert(&s.job.clone(), false, &text);
            s.end(false);
            return Err(e.into());
        }
        Ok(s)
    }

    /// Adds hook output to the run record of `id` (or keeps it for the next one).
    pub fn record_hooks(&mut self, id: Option<i64>, lines: &[String]) {
        self.hooks.log.extend_from_slice(lines);
        let Some(id) = id.or(self.last_run) else {
            return;
        };
        if !self.hooks.log.is_empty() {
            let text = self.hooks.log.join("\n");
            match self.catalog.add_run_hooks(id, &text) {
                Ok(()) => self.hooks.log.clear(),
                Err(e) => (self.warn)(&format!("recording hook output failed: {e:#}")),
            }
        }
    }

    /// Records the start of a unit of work: `unit` is the job itself or one of its parts.
    pub fn start(&self, unit: Job, target: Option<&str>) -> Result<Started, JobError> {
        let id = if self.quiet {
            None
        } else {
            Some(self.catalog.start_run(&unit, target, Trigger::Direct)?)
        };
        Ok(Started { id, job: unit })
    }

    /// Records how a unit ended, updates its alert state and sends the mail that is due.
    pub fn finish(&mut self, run: Started, o: &Outcome<'_>) -> Result<(), JobError> {
        let Some(id) = run.id else {
            return Ok(());
        };
        self.catalog.finish_run(id, o.status, o.summary)?;
        self.last_run = Some(id);
        self.record_hooks(Some(id), &[]);
        self.alert(&run.job, o.alert_ok, o.detail);
        Ok(())
    }

    /// Feeds a job's alert state (without a run record: the run is the caller's) and
    /// sends due mail.
    pub fn alert(&mut self, unit: &Job, ok: bool, detail: &str) {
        let now = crate::clock::now();
        let host = crate::fsutil::hostname();
        let round = round(self.cfg, &host, now);
        if let Err(e) = crate::alerts::record_job(&mut self.catalog, unit, ok, detail, &round) {
            (self.warn)(&format!("recording the job's alert state failed: {e:#}"));
            return;
        }
        self.deliver(now);
    }

    /// Records readings the job measured itself (a drill's `drill SET`) as a check cycle
    /// would, and sends due mail.
    pub fn record_readings(&mut self, readings: &[crate::checks::Reading]) {
        let now = crate::clock::now();
        let host = crate::fsutil::hostname();
        let round = round(self.cfg, &host, now);
        if let Err(e) = crate::alerts::record(&mut self.catalog, readings, &round) {
            (self.warn)(&format!("recording the job's check states failed: {e:#}"));
            return;
        }
        self.deliver(now);
    }

    /// Sends what waits in the outbox; `None` when no mail is configured or it failed.
    pub fn deliver(&self, now: i64) -> Option<Delivery> {
        deliver(self.cfg, &self.catalog, now, self.warn)
    }

    /// Runs the job's `after` (or `on-failure`) hook, records what hooks printed, pings
    /// success (`ok`) or failure; the lock is released when the session drops. A failing
    /// `after` hook fails the job.
    pub fn end(mut self, ok: bool) -> bool {
        let hook_ok = self.hooks.after(ok, None).is_ok();
        let ok = ok && hook_ok;
        if !hook_ok {
            let text = self.hooks.log.last().cloned().unwrap_or_default();
            (self.warn)(&text);
            let job = self.job.clone();
            self.alert(&job, false, &text);
        }
        if !self.hooks.log.is_empty() && !self.quiet {
            // A job with no unit of its own (check, verify) gets a run record for them.
            if self.last_run.is_none()
                && let Ok(id) = self.catalog.start_run(&self.job, None, Trigger::Direct)
            {
                let status = if ok { RunStatus::Ok } else { RunStatus::Failed };
                let _ = self.catalog.finish_run(id, status, "hooks");
                self.last_run = Some(id);
            }
            self.record_hooks(None, &[]);
        }
        self.ping(if ok { Phase::Success } else { Phase::Fail });
        ok
    }

    fn ping(&self, phase: Phase) {
        if self.quiet {
            return;
        }
        for key in self.job.ping_keys() {
            ping(self.cfg, key, phase, self.warn);
        }
    }
}

/// A scheduled tick of a job in progress (`steward run JOB`): a run of the job with the
/// scheduled trigger, what catch-up, the overdue check, status and metrics follow.
#[must_use = "end the tick"]
pub struct Tick {
    catalog: Catalog,
    id: i64,
}

impl Tick {
    /// Records the tick's start.
    pub fn start(cfg: &Config, job: &Job) -> Result<Tick, CatalogError> {
        let catalog = Catalog::open(&cfg.state_dir)?;
        let id = catalog.start_run(job, None, Trigger::Scheduled)?;
        Ok(Tick { catalog, id })
    }

    /// Records its end (`Skipped` when the job's lock was held) and rewrites the metrics
    /// file.
    pub fn end(
        self,
        cfg: &Config,
        status: RunStatus,
        summary: &str,
        warn: Warn<'_>,
    ) -> Result<(), CatalogError> {
        self.catalog.finish_run(self.id, status, summary)?;
        if let Some(path) = &cfg.schedule.metrics_file {
            match crate::metrics::render(cfg, &self.catalog) {
                Ok(text) => {
                    if let Err(e) = crate::metrics::write(path, &text) {
                        warn(&format!("metrics file {}: {e}", path.display()));
                    }
                }
                Err(e) => warn(&format!("metrics: {e}")),
            }
        }
        Ok(())
    }
}

/// Where a job is, for pings.
#[derive(Clone, Copy)]
enum Phase {
    Start,
    Success,
    Fail,
}

/// Pings the `[pings]` URL of `key` (healthchecks.io style), best effort.
fn ping(cfg: &Config, key: &str, phase: Phase, warn: Warn<'_>) {
    let Some(base) = cfg.pings.get(key) else {
        return;
    };
    let Some(url) = ping_url(base, key, phase) else {
        return;
    };
    if let Err(e) = crate::services::health(&url, std::time::Duration::from_secs(10)) {
        warn(&format!("ping {url} failed: {e}"));
    }
}

/// The URL to call for `phase`: healthchecks.io style (`<url>/start`, `<url>`,
/// `<url>/fail`), or Uptime Kuma's push form (`.../api/push/TOKEN`: `?status=up|down&msg=`;
/// Kuma has no start signal).
fn ping_url(base: &str, job: &str, phase: Phase) -> Option<String> {
    if base.contains("/api/push/") {
        let (status, msg) = match phase {
            Phase::Start => return None,
            Phase::Success => ("up", "OK"),
            Phase::Fail => ("down", "failed"),
        };
        let sep = if base.contains('?') { '&' } else { '?' };
        return Some(format!("{base}{sep}status={status}&msg={job}%20{msg}"));
    }
    Some(match phase {
        Phase::Start => format!("{}/start", base.trim_end_matches('/')),
        Phase::Success => base.to_string(),
        Phase::Fail => format!("{}/fail", base.trim_end_matches('/')),
    })
}

/// The alert state of the configuration itself: a scheduled run (timer, daemon) that
/// cannot load it still alerts through what is left of it, and the first run that loads
/// it again sends the recovery.
pub const CONFIG_CHECK: &str = "configuration";

/// Records whether the configuration loaded for a scheduled run (`error` when it did
/// not: `cfg` is then [`crate::config::salvage`]'s remains), and sends due mail. A
/// loaded configuration touches the catalog only to end an open problem.
pub fn record_config(cfg: &Config, error: Option<&str>, warn: Warn<'_>) {
    let Ok(mut catalog) = Catalog::open(&cfg.state_dir) else {
        return;
    };
    let open = catalog
        .check_states()
        .ok()
        .into_iter()
        .flatten()
        .any(|s| s.name == CONFIG_CHECK && s.state != crate::severity::Severity::Ok);
    if error.is_none() && !open {
        return;
    }
    let now = crate::clock::now();
    let host = crate::fsutil::hostname();
    let r = crate::checks::Reading {
        name: CONFIG_CHECK.into(),
        severity: if error.is_some() {
            crate::severity::Severity::Crit
        } else {
            crate::severity::Severity::Ok
        },
        value: error.map_or_else(|| "loads".into(), |e| format!("broken: {e}")),
        threshold: "loads and validates".into(),
        window: crate::config::Window::default(),
    };
    if let Err(e) = crate::alerts::record(&mut catalog, &[r], &round(cfg, &host, now)) {
        warn(&format!("cannot record the configuration's state: {e}"));
        return;
    }
    deliver(cfg, &catalog, now, warn);
}

/// Sends what waits in the outbox, telling `warn` when it could not.
pub fn deliver(cfg: &Config, catalog: &Catalog, now: i64, warn: Warn<'_>) -> Option<Delivery> {
    if cfg.alerts.channels().is_empty() {
        return None;
    }
    let how = Flush {
        wait: false,
        now_or_never: false,
    };
    match crate::alerts::deliver(catalog, &cfg.alerts, &cfg.state_dir, now, how) {
        Ok(d) => {
            if let Some(e) = &d.last_error {
                warn(&format!(
                    "alert mail not sent ({e}); {} waiting, retried later",
                    d.waiting
                ));
            }
            Some(d)
        }
        Err(e) => {
            warn(&format!("alert delivery failed: {e:#}"));
            None
        }
    }
}

/// The alerting context of this run.
pub fn round<'h>(cfg: &Config, host: &'h str, now: i64) -> Round<'h> {
    Round {
        remind_every: cfg.alerts.remind_every,
        host,
        channels: cfg.alerts.channels(),
        now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_speak_healthchecks_and_uptime_kuma() {
        let hc = "https://hc-ping.com/abc/";
        assert_eq!(
            ping_url(hc, "backup", Phase::Start).unwrap(),
            "https://hc-ping.com/abc/start"
        );
        assert_eq!(
            ping_url(hc, "backup", Phase::Fail).unwrap(),
            "https://hc-ping.com/abc/fail"
        );
        let kuma = "https://kuma.lan/api/push/Tk3n";
        assert_eq!(ping_url(kuma, "backup", Phase::Start), None);
        assert_eq!(
            ping_url(kuma, "backup", Phase::Success).unwrap(),
            "https://kuma.lan/api/push/Tk3n?status=up&msg=backup%20OK"
        );
        assert_eq!(
            ping_url(kuma, "backup", Phase::Fail).unwrap(),
            "https://kuma.lan/api/push/Tk3n?status=down&msg=backup%20failed"
        );
    }
}
