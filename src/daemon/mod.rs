//! The daemon (`steward daemon`): runs the jobs on their schedule, its log lines handed to
//! the caller's [`Log`].
//!
//! Each job's next local fire instant is computed by `crate::schedule` (DST-correct) and
//! armed as a one-shot job in tokio-cron-scheduler, which re-arms the next one when it
//! fires. A job runs as a child `steward run JOB`, the same entry point systemd timers and
//! launchd use, so every run takes the job's lock, is recorded and alerts the same way,
//! and the daemon's async threads never do heavy work. A tick that finds its job still
//! running is skipped and counted. SIGTERM/SIGINT: no new jobs, running ones get the grace
//! period, then are killed; exit 0. SIGHUP reloads the config, keeping the old one when
//! the new one is invalid. Under systemd: READY, STOPPING and WATCHDOG notifications.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio_cron_scheduler::{Job as CronJob, JobScheduler};

use crate::catalog::{Catalog, RunStatus, Trigger};
use crate::config::{Config, Origin};
use crate::schedule::Job;

struct Shared {
    config: Config,
    /// The config text the daemon runs on, given to every child, so that an edit that
    /// fails to reload cannot reach the jobs either.
    snapshot: PathBuf,
    /// Bumped on reload and stop: armed ticks of an older generation do nothing.
    generation: u64,
    stopping: bool,
    /// Job -> child PID.
    running: HashMap<Job, u32>,
    /// Jobs waiting for another job that takes the same lock (daily behind weekly after a
    /// catch-up, prune behind a long backup), with why they were started; each runs
    /// once when the lock's job ends, instead of meeting the lock and being skipped.
    waiting: Vec<(Job, String)>,
    log: Log,
}

type State = Arc<Mutex<Shared>>;

impl Shared {
    /// The running job that holds the lock `job` needs, if any.
    fn lock_holder(&self, job: &Job) -> Option<&Job> {
        self.running.keys().find(|r| r.lock() == job.lock())
    }
}

fn lock(s: &State) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where the daemon's log lines go: `(json, line)`, `json` when `log-format = "json"`.
pub type Log = fn(bool, &str);

/// Tells systemd (`NOTIFY_SOCKET`), when there is one.
fn notify(msg: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let p = path.to_string_lossy().into_owned();
    #[cfg(target_os = "linux")]
    if let Some(name) = p.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()) {
            let _ = sock.send_to_addr(msg.as_bytes(), &addr);
        }
        return;
    }
    let _ = sock.send_to(msg.as_bytes(), &p);
}

fn config_path(cfg: &Config) -> Option<PathBuf> {
    match &cfg.origin {
        Origin::File(p) => Some(p.clone()),
        Origin::Embedded => None,
    }
}

/// Reads and validates the config at `path` (or the embedded default), returning it with
/// its text.
fn load(path: Option<&std::path::Path>) -> anyhow::Result<(Config, String)> {
    let (text, origin) = match path {
        Some(p) => (
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            Origin::File(p.to_path_buf()),
        ),
        None => (
            crate::config::EMBEDDED_DEFAULT.to_string(),
            Origin::Embedded,
        ),
    };
    let cfg = crate::config::parse(&text, origin)?;
    Ok((cfg, text))
}

/// Writes the text children run on (mode 0600: it may name secrets' locations).
fn write_snapshot(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("toml.partial");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Runs the daemon until SIGTERM or SIGINT, under the daemon's lock.
pub fn run(cfg: Config, log: Log) -> anyhow::Result<()> {
    let _lock = crate::lock::acquire(&cfg.state_dir, "daemon")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(daemon(cfg, log))
}

async fn daemon(cfg: Config, log: Log) -> anyhow::Result<()> {
    let json = cfg.schedule.log_json;
    let (cfg, text) = load(config_path(&cfg).as_deref())?;
    let snapshot = cfg.state_dir.join("daemon-config.toml");
    write_snapshot(&snapshot, &text).with_context(|| format!("writing {}", snapshot.display()))?;
    let state: State = Arc::new(Mutex::new(Shared {
        config: cfg,
        snapshot,
        generation: 0,
        stopping: false,
        running: HashMap::new(),
        waiting: Vec::new(),
        log,
    }));
    // `[serve]`: the status page in the daemon's own runtime, answering with the config
    // the daemon runs on (reloads included; a new address needs a restart).
    let (stop_serving, serving) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let s = lock(&state);
        match s.config.serve.listen {
            Some(addr) => {
                let shared = state.clone();
                let source: crate::serve::ConfigSource =
                    Arc::new(move || lock(&shared).config.clone());
                // The page is not worth the schedule: without it, the jobs still run.
                match crate::serve::bind(addr, s.config.serve.token_file.as_deref(), source) {
                    Ok(bound) => {
                        log(
                            json,
                            &format!(
                                "serving the status page on http://{}/",
                                bound.local_addr().unwrap_or(addr)
                            ),
                        );
                        Some(tokio::spawn(crate::serve::serve(bound, async {
                            let _ = serving.await;
                        })))
                    }
                    Err(e) => {
                        log(
                            json,
                            &format!(
                                "the status page is not served ([serve] listen = {addr}): {}",
                                crate::error::chain(&e)
                            ),
                        );
                        None
                    }
                }
            }
            None => None,
        }
    };
    let sched = JobScheduler::new()
        .await
        .context("starting the scheduler")?;
    sched.start().await.context("starting the scheduler")?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;

    arm_all(&sched, &state).await;
    catch_up(&state, "start");
    {
        let s = lock(&state);
        let jobs: Vec<String> = s
            .config
            .schedule
            .jobs
            .iter()
            .map(|(j, c)| format!("{j} ({})", c.source))
            .collect();
        log(
            json,
            &format!(
                "daemon started; jobs: {}",
                if jobs.is_empty() {
                    "none".into()
                } else {
                    jobs.join(", ")
                }
            ),
        );
    }
    notify("READY=1");

    // Watchdog at half systemd's interval; clock-jump detection every 10 s.
    let watchdog = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(|us| Duration::from_micros(us / 2));
    let mut tick = tokio::time::interval(
        watchdog
            .unwrap_or(Duration::from_secs(10))
            .min(Duration::from_secs(10)),
    );
    let (mut wall, mut mono) = (SystemTime::now(), Instant::now());
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&sched, &state).await,
            _ = tick.tick() => {
                if watchdog.is_some() {
                    notify("WATCHDOG=1");
                }
                let (w, m) = (SystemTime::now(), Instant::now());
                let wall_gap = w.duration_since(wall).map_or(-1.0, |d| d.as_secs_f64());
                let mono_gap = m.duration_since(mono).as_secs_f64();
                if (wall_gap - mono_gap).abs() > 30.0 {
                    // Sleep/wake or a clock change: schedules from now, and missed runs.
                    log(json, &format!("the clock jumped by {:.0} s; rescheduling", wall_gap - mono_gap));
                    arm_all(&sched, &state).await;
                    catch_up(&state, "clock jump");
                }
                (wall, mono) = (w, m);
            }
        }
    }

    notify("STOPPING=1");
    let (pids, grace) = {
        let mut s = lock(&state);
        s.stopping = true;
        s.generation += 1;
        (s.running.clone(), s.config.schedule.grace_period)
    };
    if !pids.is_empty() {
        log(
            json,
            &format!("stopping; asking {} running job(s) to finish", pids.len()),
        );
        for (job, pid) in &pids {
            log(json, &format!("SIGTERM to {job} (pid {pid})"));
            // SAFETY: signalling our own child.
            unsafe { libc::kill(*pid as i32, libc::SIGTERM) };
        }
        let started = Instant::now();
        while !lock(&state).running.is_empty() && started.elapsed() < grace {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for (job, pid) in lock(&state).running.clone() {
            log(
                json,
                &format!("{job} did not stop within {grace:?}; killing pid {pid}"),
            );
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
    let mut sched = sched;
    let _ = sched.shutdown().await;
    let _ = stop_serving.send(());
    // A browser's open connection may not hold the stop for long.
    if let Some(server) = server
        && let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(5), server).await
    {
        log(json, &format!("the status page stopped with an error: {e}"));
    }
    log(json, "daemon stopped");
    Ok(())
}

async fn reload(sched: &JobScheduler, state: &State) {
    // The file the daemon was started with (the snapshot keeps its origin's path).
    let (path, json, snapshot, log) = {
        let s = lock(state);
        (
            config_path(&s.config),
            s.config.schedule.log_json,
            s.snapshot.clone(),
            s.log,
        )
    };
    // The children run on the snapshot: it is rewritten with the new text, or the jobs
    // would keep the configuration the daemon started with.
    let loaded = load(path.as_deref()).and_then(|(new, text)| {
        write_snapshot(&snapshot, &text)
            .with_context(|| format!("writing {}", snapshot.display()))?;
        Ok(new)
    });
    match loaded {
        Ok(new) => {
            {
                let mut s = lock(state);
                s.config = new;
            }
            log(json, "configuration reloaded");
            arm_all(sched, state).await;
        }
        Err(e) => log(
            json,
            &format!("configuration reload failed, keeping the running one: {e:#}"),
        ),
    }
}

/// Arms every job's next tick under a new generation (older ticks become no-ops).
async fn arm_all(sched: &JobScheduler, state: &State) {
    let (jobs, generation) = {
        let mut s = lock(state);
        s.generation += 1;
        let jobs: Vec<Job> = s
            .config
            .schedule
            .jobs
            .iter()
            .map(|(j, _)| j.clone())
            .collect();
        (jobs, s.generation)
    };
    for job in jobs {
        arm(sched.clone(), state.clone(), job, generation, None).await;
    }
}

static SKIPS: AtomicU64 = AtomicU64::new(0);

fn arm(
    sched: JobScheduler,
    state: State,
    job: Job,
    generation: u64,
    fired: Option<jiff::Timestamp>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let (delay, json, log, next) = {
            let s = lock(&state);
            if s.stopping || s.generation != generation {
                return;
            }
            let Some((_, cron)) = s.config.schedule.jobs.iter().find(|(j, _)| *j == job) else {
                return;
            };
            let tz = jiff::tz::TimeZone::system();
            let now = jiff::Timestamp::now();
            // The scheduler fires a one-shot up to a second early: the next run comes
            // after the instant just served, not after "now", or one tick runs twice.
            let after = fired.map_or(now, |f| f.max(now));
            let Some(next) = cron.next_after(after, &tz) else {
                (s.log)(
                    s.config.schedule.log_json,
                    &format!("{job}: the schedule never fires again"),
                );
                return;
            };
            // Whole seconds from the current whole second: the scheduler adds the
            // delay's seconds to the current second, so a fractional delay fires early.
            let delay =
                Duration::from_secs(u64::try_from(next.as_second() - now.as_second()).unwrap_or(0));
            (delay, s.config.schedule.log_json, s.log, next)
        };
        let (st, jb, sc) = (state.clone(), job.clone(), sched.clone());
        let one_shot = CronJob::new_one_shot_async(delay, move |_id, _l| {
            let (st, jb, sc) = (st.clone(), jb.clone(), sc.clone());
            Box::pin(async move {
                {
                    let s = lock(&st);
                    if s.stopping || s.generation != generation {
                        return;
                    }
                }
                start_job(&st, &jb, "schedule");
                arm(sc, st, jb, generation, Some(next)).await;
            })
        });
        match one_shot {
            Ok(j) => {
                if let Err(e) = sched.add(j).await {
                    log(json, &format!("{job}: cannot arm the next run: {e}"));
                }
            }
            Err(e) => log(json, &format!("{job}: cannot arm the next run: {e}")),
        }
    })
}

/// Runs every job whose last run is older than its previous scheduled time, once.
fn catch_up(state: &State, why: &str) {
    let (cfg_jobs, catch, json, state_dir, log) = {
        let s = lock(state);
        (
            s.config.schedule.jobs.clone(),
            s.config.schedule.catch_up,
            s.config.schedule.log_json,
            s.config.state_dir.clone(),
            s.log,
        )
    };
    if !catch {
        return;
    }
    let Ok(catalog) = Catalog::open(&state_dir) else {
        return;
    };
    let tz = jiff::tz::TimeZone::system();
    let now = jiff::Timestamp::now();
    for (job, cron) in cfg_jobs {
        let Some(prev) = cron.prev_at_or_before(now, &tz) else {
            continue;
        };
        let last = catalog.last_run(&job).ok().flatten().map(|r| r.started_at);
        if last.is_none_or(|l| l < prev.as_second()) {
            log(
                json,
                &format!("{job}: missed its run at {prev} ({why}); running it now"),
            );
            start_job(state, &job, "catch-up");
        }
    }
}

/// Starts `steward run JOB` as a child unless the job is still running (then the tick is
/// skipped, logged and counted).
fn start_job(state: &State, job: &Job, why: &str) {
    let mut s = lock(state);
    let (json, log) = (s.config.schedule.log_json, s.log);
    if s.stopping {
        return;
    }
    if s.running.contains_key(job) {
        let n = SKIPS.fetch_add(1, Ordering::SeqCst) + 1;
        log(
            json,
            &format!("{job}: still running; this tick is skipped ({n} skipped so far)"),
        );
        if let Ok(catalog) = Catalog::open(&s.config.state_dir)
            && let Ok(id) = catalog.start_run(job, None, Trigger::Scheduled)
        {
            let _ = catalog.finish_run(id, RunStatus::Skipped, "the previous run was still going");
        }
        return;
    }
    if let Some(other) = s.lock_holder(job).cloned() {
        if !s.waiting.iter().any(|(w, _)| w == job) {
            log(
                json,
                &format!("{job}: waits for {other} (they share a lock); runs when it ends"),
            );
            s.waiting.push((job.clone(), why.to_string()));
        }
        return;
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            log(
                json,
                &format!("{job}: cannot find steward's own binary: {e}"),
            );
            return;
        }
    };
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("--config")
        .arg(&s.snapshot)
        .arg("run")
        .arg(job.to_string())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(false);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            log(json, &format!("{job}: cannot start: {e}"));
            return;
        }
    };
    let pid = child.id().unwrap_or(0);
    s.running.insert(job.clone(), pid);
    let (timeout, grace) = (
        s.config.schedule.job_timeout,
        s.config.schedule.grace_period,
    );
    drop(s);
    log(json, &format!("{job}: started ({why}, pid {pid})"));
    let (state, job) = (state.clone(), job.clone());
    tokio::spawn(async move {
        let started = Instant::now();
        let status = tokio::select! {
            st = child.wait() => st,
            () = tokio::time::sleep(timeout) => {
                log(json, &format!("{job}: timed out after {timeout:?}; stopping it"));
                // SAFETY: signalling our own child.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                if let Ok(st) = tokio::time::timeout(grace, child.wait()).await { st } else {
                    let _ = child.kill().await;
                    child.wait().await
                }
            }
        };
        let secs = started.elapsed().as_secs_f64();
        let outcome = match status {
            Ok(st) if st.success() => "succeeded".to_string(),
            Ok(st) => format!("failed ({st})"),
            Err(e) => format!("failed ({e})"),
        };
        log(json, &format!("{job}: {outcome} in {secs:.1} s"));
        let next = {
            let mut s = lock(&state);
            s.running.remove(&job);
            let at = s
                .waiting
                .iter()
                .position(|(w, _)| s.lock_holder(w).is_none());
            at.map(|i| s.waiting.remove(i))
        };
        if let Some((waiting, why)) = next {
            start_job(&state, &waiting, &format!("{why}, after {job}"));
        }
    });
}
