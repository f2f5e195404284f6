//! Services: stopping and starting the programs that use the data, through systemd,
//! launchd or plain commands, and the quiesce guard that always brings them back.
//!
//! Every external command goes through a [`Runner`], so tests check the exact `systemctl`
//! and `launchctl` command lines, and run `command` services as real processes.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::{Manager, ServiceConfig};

/// A service that could not be stopped, started or asked about.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("service {name}: `{command}` failed: {detail}")]
    Command {
        name: String,
        command: String,
        detail: String,
    },
    #[error("service {name} did not stop within {timeout:?}")]
    DidNotStop { name: String, timeout: Duration },
    #[error("service {name} was not stopped: recording it first failed: {detail}")]
    NotRecorded { name: String, detail: String },
    #[error("service {name} did not come back within {timeout:?}: {detail}")]
    DidNotStart {
        name: String,
        timeout: Duration,
        detail: String,
    },
}

/// What a command did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub success: bool,
    /// stdout and stderr, for error messages.
    pub output: String,
}

/// Runs external commands: the real one spawns processes; tests record them.
pub trait Runner: Sync {
    /// Runs `argv`, waiting at most `timeout`.
    fn run(&self, argv: &[String], timeout: Duration) -> std::io::Result<Outcome>;
    /// The user id for launchd's `gui/<uid>` domain.
    fn uid(&self) -> u32 {
        // SAFETY: getuid has no preconditions.
        unsafe { libc::getuid() }
    }
}

/// Runs commands as real processes. Output goes to a temporary file rather than a pipe,
/// because a `start` command that leaves a daemon behind would hold a pipe open forever.
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(&self, argv: &[String], timeout: Duration) -> std::io::Result<Outcome> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| std::io::Error::other("empty command"))?;
        let mut cmd = Command::new(program);
        cmd.args(args);
        run_captured(cmd, timeout, false, None)
    }
}

/// Runs `cmd` with stdin closed and stdout+stderr captured (the first 64 KiB), waiting at
/// most `timeout`; then it is killed (with its whole process group when `group`, for shell
/// hooks whose children would outlive `sh`).
pub fn run_captured(
    cmd: Command,
    timeout: Duration,
    group: bool,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> std::io::Result<Outcome> {
    captured(cmd, timeout, group, stop, false)
}

/// [`run_captured`] in a process group of its own that is killed when the command ends,
/// also after it succeeded: nothing it started in the background outlives it (a drill's
/// app started on a spare port).
pub fn run_captured_reaped(
    cmd: Command,
    timeout: Duration,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> std::io::Result<Outcome> {
    captured(cmd, timeout, true, stop, true)
}

fn captured(
    mut cmd: Command,
    timeout: Duration,
    group: bool,
    stop: Option<&std::sync::atomic::AtomicBool>,
    reap: bool,
) -> std::io::Result<Outcome> {
    let mut out = tempfile::tempfile()?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out.try_clone()?);
    if group {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn()?;
    let started = Instant::now();
    let mut interrupted = false;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        let stopped = stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst));
        interrupted = stopped;
        if started.elapsed() >= timeout || stopped {
            if group && let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: signalling the process group this child leads.
                unsafe { libc::killpg(pid, libc::SIGKILL) };
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if reap && let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: signalling the process group this child led (gone already, or its
        // leftovers).
        unsafe { libc::killpg(pid, libc::SIGKILL) };
    }
    let mut output = String::new();
    use std::io::Seek;
    out.seek(std::io::SeekFrom::Start(0))?;
    let _ = out.take(64 * 1024).read_to_string(&mut output);
    match status {
        // A failure that printed nothing still says why: the exit code, or the signal
        // (a Ctrl-C on the terminal reaches the command too).
        Some(s) if !s.success() && output.trim().is_empty() => {
            use std::os::unix::process::ExitStatusExt;
            let why = match (s.code(), s.signal()) {
                (Some(c), _) => format!("exit code {c}, no output"),
                (None, Some(libc::SIGINT)) => "killed by SIGINT (Ctrl-C)".to_string(),
                (None, Some(libc::SIGTERM)) => "killed by SIGTERM".to_string(),
                (None, Some(n)) => format!("killed by signal {n}"),
                (None, None) => "failed, no output".to_string(),
            };
            Ok(Outcome {
                success: false,
                output: why,
            })
        }
        Some(s) => Ok(Outcome {
            success: s.success(),
            output,
        }),
        None if interrupted => Ok(Outcome {
            success: false,
            output: format!("interrupted (SIGTERM or Ctrl-C); {output}"),
        }),
        None => Ok(Outcome {
            success: false,
            output: format!("timed out after {timeout:?}; {output}"),
        }),
    }
}

/// A stop or start command must not outlive a steward that was killed: a `stop` still
/// running after `restore --resume` started the service again would stop it behind the
/// resume's back. Linux only (macOS has no parent-death signal).
fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // The parent may die between the fork and the prctl (a loaded host can leave the
        // child unscheduled for milliseconds): then no signal ever comes, and the child
        // would run on as an orphan. prctl(2) says to compare getppid() afterwards.
        let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
        // SAFETY: prctl and getppid are async-signal-safe, touch only the child being set
        // up, and the error is built without allocating.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// What to do to a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Stop,
    Start,
    Status,
}

/// The command line that does `verb` to `service` (for `command` services, `sh -c ...`).
pub fn command_line(service: &ServiceConfig, verb: Verb, uid: u32) -> Vec<String> {
    let s = |x: &str| x.to_string();
    match &service.manager {
        Manager::Systemd { unit, user } => {
            let mut v = vec![s("systemctl")];
            if *user {
                v.push(s("--user"));
            }
            match verb {
                Verb::Stop => v.extend([s("stop"), unit.clone()]),
                Verb::Start => v.extend([s("start"), unit.clone()]),
                Verb::Status => v.extend([s("is-active"), s("--quiet"), unit.clone()]),
            }
            v
        }
        Manager::Launchd { label, user, plist } => {
            let domain = if *user {
                format!("gui/{uid}")
            } else {
                s("system")
            };
            match verb {
                // bootout, not kill: a KeepAlive job that is only killed comes right back.
                Verb::Stop => vec![s("launchctl"), s("bootout"), format!("{domain}/{label}")],
                Verb::Start => vec![
                    s("launchctl"),
                    s("bootstrap"),
                    domain,
                    plist.to_string_lossy().into_owned(),
                ],
                Verb::Status => vec![s("launchctl"), s("print"), format!("{domain}/{label}")],
            }
        }
        Manager::Command {
            start,
            stop,
            status,
        } => {
            let cmd = match verb {
                Verb::Stop => stop,
                Verb::Start => start,
                Verb::Status => status,
            };
            vec![s("sh"), s("-c"), cmd.clone()]
        }
    }
}

/// Controls services through a runner.
pub struct Controller<'a> {
    pub runner: &'a dyn Runner,
}

impl Controller<'_> {
    fn run(
        &self,
        svc: &ServiceConfig,
        verb: Verb,
        timeout: Duration,
    ) -> Result<Outcome, ServiceError> {
        let argv = command_line(svc, verb, self.runner.uid());
        self.runner
            .run(&argv, timeout)
            .map_err(|e| ServiceError::Command {
                name: svc.name.clone(),
                command: argv.join(" "),
                detail: e.to_string(),
            })
    }

    /// Whether the service runs now.
    pub fn is_running(&self, svc: &ServiceConfig) -> Result<bool, ServiceError> {
        let out = self.run(svc, Verb::Status, Duration::from_secs(30))?;
        Ok(match &svc.manager {
            // `launchctl print` succeeds for a loaded job; only `state = running` runs.
            Manager::Launchd { .. } => out.success && out.output.contains("state = running"),
            _ => out.success,
        })
    }

    /// Runs `verb`, failing with the command line and its output when it exits non-zero.
    fn run_checked(
        &self,
        svc: &ServiceConfig,
        verb: Verb,
        timeout: Duration,
    ) -> Result<(), ServiceError> {
        let out = self.run(svc, verb, timeout)?;
        if out.success {
            return Ok(());
        }
        Err(ServiceError::Command {
            name: svc.name.clone(),
            command: command_line(svc, verb, self.runner.uid()).join(" "),
            detail: out.output.trim().to_string(),
        })
    }

    /// Stops the service and waits until it is down, for at most its stop timeout.
    pub fn stop(&self, svc: &ServiceConfig) -> Result<(), ServiceError> {
        self.run_checked(svc, Verb::Stop, svc.stop_timeout)?;
        let started = Instant::now();
        while self.is_running(svc)? {
            if started.elapsed() >= svc.stop_timeout {
                return Err(ServiceError::DidNotStop {
                    name: svc.name.clone(),
                    timeout: svc.stop_timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Starts the service and waits until it runs and its health URL answers 2xx, for at
    /// most its start timeout.
    pub fn start(&self, svc: &ServiceConfig) -> Result<(), ServiceError> {
        crate::fault::fail_point("service-start").map_err(|e| ServiceError::Command {
            name: svc.name.clone(),
            command: "start".into(),
            detail: e.to_string(),
        })?;
        self.run_checked(svc, Verb::Start, svc.start_timeout)?;
        let started = Instant::now();
        let mut last = String::from("not running");
        loop {
            if self.is_running(svc)? {
                match &svc.health_url {
                    None => return Ok(()),
                    Some(url) => match health(url, Duration::from_secs(5)) {
                        Ok(()) => return Ok(()),
                        Err(e) => last = format!("{url}: {e}"),
                    },
                }
            }
            if started.elapsed() >= svc.start_timeout {
                return Err(ServiceError::DidNotStart {
                    name: svc.name.clone(),
                    timeout: svc.start_timeout,
                    detail: last,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// GETs `url` (no proxy: these are the host's own endpoints), giving the status, the
/// start of the body and the latency.
pub fn http_get(url: &str, timeout: Duration) -> Result<(u16, String, Duration), String> {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .proxy(None)
            .build(),
    );
    let started = Instant::now();
    let mut resp = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(256 * 1024)
        .read_to_string()
        .unwrap_or_default();
    Ok((status, body, started.elapsed()))
}

/// GETs `url`; Ok on a 2xx answer.
pub fn health(url: &str, timeout: Duration) -> Result<(), String> {
    match http_get(url, timeout)? {
        (s, _, _) if (200..300).contains(&s) => Ok(()),
        (s, _, _) => Err(format!("HTTP {s}")),
    }
}

/// Services stopped for some work; started again by [`Quiesced::resume`], or when
/// dropped, so no early return or panic can leave them down.
pub struct Quiesced<'a> {
    controller: Controller<'a>,
    /// In stop order; restarted in reverse of it.
    stopped: Vec<ServiceConfig>,
    /// Named to be stopped but not running when the quiesce began: left as they were.
    not_running: Vec<String>,
    done: bool,
}

impl<'a> Quiesced<'a> {
    /// Nothing stopped (for `--no-quiesce` and restores elsewhere).
    pub fn none(runner: &'a dyn Runner) -> Self {
        Quiesced {
            controller: Controller { runner },
            stopped: Vec::new(),
            not_running: Vec::new(),
            done: false,
        }
    }

    /// Names of the services that were stopped, in stop order.
    pub fn stopped(&self) -> Vec<String> {
        self.stopped.iter().map(|s| s.name.clone()).collect()
    }

    /// The services that were not running when the quiesce began (not started again).
    pub fn not_running(&self) -> Vec<String> {
        self.not_running.clone()
    }

    /// Leaves what was stopped down (the data is in between: starting a service on it
    /// would be worse); returns their names for the message.
    pub fn leave_stopped(mut self) -> Vec<String> {
        self.done = true;
        self.stopped()
    }

    /// Starts what was stopped, in start order; returns every failure.
    pub fn resume(mut self) -> Vec<ServiceError> {
        self.resume_inner()
    }

    fn resume_inner(&mut self) -> Vec<ServiceError> {
        self.done = true;
        let mut errors = Vec::new();
        while let Some(svc) = self.stopped.pop() {
            if let Err(e) = self.controller.start(&svc) {
                errors.push(e);
            }
        }
        errors
    }
}

impl Drop for Quiesced<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.resume_inner();
        }
    }
}

/// Stops the named services that are running, in reverse start order, each waited for up
/// to its stop timeout. On failure the ones already stopped are started again and the
/// error returned. `all` is the configured list, already in start order.
pub fn quiesce<'a>(
    all: &[ServiceConfig],
    names: &[String],
    runner: &'a dyn Runner,
    note: impl FnMut(&str),
) -> Result<Quiesced<'a>, ServiceError> {
    quiesce_recorded(all, names, runner, note, |_| Ok(()))
}

/// [`quiesce`] that calls `record` with the names stopped so far plus the next one
/// *before* stopping it, so a journal always lists every service that may be down (a
/// crash during the stop leaves nothing unaccounted for).
pub fn quiesce_recorded<'a>(
    all: &[ServiceConfig],
    names: &[String],
    runner: &'a dyn Runner,
    mut note: impl FnMut(&str),
    mut record: impl FnMut(&[String]) -> Result<(), String>,
) -> Result<Quiesced<'a>, ServiceError> {
    let mut q = Quiesced::none(runner);
    for svc in all.iter().rev().filter(|s| names.contains(&s.name)) {
        let running = match q.controller.is_running(svc) {
            Ok(r) => r,
            Err(e) => {
                let _ = q.resume_inner();
                return Err(e);
            }
        };
        if !running {
            note(&format!(
                "service {} is not running; left as it is",
                svc.name
            ));
            q.not_running.push(svc.name.clone());
            continue;
        }
        let mut upcoming = q.stopped();
        upcoming.push(svc.name.clone());
        if let Err(detail) = record(&upcoming) {
            let _ = q.resume_inner();
            return Err(ServiceError::NotRecorded {
                name: svc.name.clone(),
                detail,
            });
        }
        note(&format!("stopping service {}", svc.name));
        if let Err(e) = q.controller.stop(svc) {
            // Whatever state it is in, try to bring it back with the others.
            q.stopped.push(svc.clone());
            let _ = q.resume_inner();
            return Err(e);
        }
        q.stopped.push(svc.clone());
    }
    Ok(q)
}

/// Of `names`, the services that are not running now, in start order.
pub fn not_running_now(
    all: &[ServiceConfig],
    names: &[String],
    runner: &dyn Runner,
) -> Result<Vec<String>, ServiceError> {
    let c = Controller { runner };
    let mut out = Vec::new();
    for s in all.iter().filter(|s| names.contains(&s.name)) {
        if !c.is_running(s)? {
            out.push(s.name.clone());
        }
    }
    Ok(out)
}

/// How a person starts `svc` by hand: the exact command steward would run.
pub fn start_hint(svc: &ServiceConfig, runner: &dyn Runner) -> String {
    match &svc.manager {
        Manager::Command { start, .. } => start.clone(),
        _ => command_line(svc, Verb::Start, runner.uid()).join(" "),
    }
}

/// Starts `names` (a journal's record of what an interrupted run had stopped), in start
/// order; returns every failure.
pub fn start_named(
    all: &[ServiceConfig],
    names: &[String],
    runner: &dyn Runner,
) -> Vec<ServiceError> {
    let c = Controller { runner };
    all.iter()
        .filter(|s| names.contains(&s.name))
        .filter_map(|s| match c.is_running(s) {
            Ok(true) => None,
            _ => c.start(s).err(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::Mutex;

    fn svc(name: &str, manager: Manager) -> ServiceConfig {
        ServiceConfig {
            name: name.into(),
            manager,
            after: vec![],
            health_url: None,
            restart: None,
            stop_timeout: Duration::from_millis(300),
            start_timeout: Duration::from_millis(300),
        }
    }

    /// Records every command and answers from a script of (prefix, success, output).
    struct Recorder {
        calls: Mutex<Vec<String>>,
        running: Mutex<std::collections::HashMap<String, bool>>,
    }

    impl Runner for Recorder {
        fn run(&self, argv: &[String], _: Duration) -> std::io::Result<Outcome> {
            let line = argv.join(" ");
            self.calls.lock().unwrap().push(line.clone());
            let mut running = self.running.lock().unwrap();
            let target = argv.last().cloned().unwrap_or_default();
            let ok = |output: &str| Outcome {
                success: true,
                output: output.into(),
            };
            Ok(if line.contains(" stop ") || line.contains(" bootout ") {
                running.insert(target.rsplit('/').next().unwrap().into(), false);
                ok("")
            } else if line.contains(" start ") {
                running.insert(target, true);
                ok("")
            } else if line.contains(" bootstrap ") {
                let label = target
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .trim_end_matches(".plist");
                running.insert(label.into(), true);
                ok("")
            } else {
                let name = target.rsplit('/').next().unwrap().to_string();
                let up = *running.get(&name).unwrap_or(&true);
                if line.starts_with("launchctl print") {
                    ok(if up {
                        "state = running"
                    } else {
                        "state = waiting"
                    })
                } else {
                    Outcome {
                        success: up,
                        output: String::new(),
                    }
                }
            })
        }
        fn uid(&self) -> u32 {
            501
        }
    }

    #[test]
    fn systemd_and_launchd_adapters_run_the_exact_commands() {
        let rec = Recorder {
            calls: Mutex::new(vec![]),
            running: Mutex::new(Default::default()),
        };
        let all = vec![
            svc(
                "api",
                Manager::Systemd {
                    unit: "api.service".into(),
                    user: false,
                },
            ),
            svc(
                "worker",
                Manager::Systemd {
                    unit: "worker.service".into(),
                    user: true,
                },
            ),
            svc(
                "ollama",
                Manager::Launchd {
                    label: "com.ollama.ollama".into(),
                    user: true,
                    plist: PathBuf::from("/Users/me/Library/LaunchAgents/com.ollama.ollama.plist"),
                },
            ),
            svc(
                "db",
                Manager::Launchd {
                    label: "org.db".into(),
                    user: false,
                    plist: PathBuf::from("/Library/LaunchDaemons/org.db.plist"),
                },
            ),
        ];
        let names: Vec<String> = all.iter().map(|s| s.name.clone()).collect();
        let q = quiesce(&all, &names, &rec, |_| {}).unwrap();
        assert_eq!(q.stopped(), ["db", "ollama", "worker", "api"]);
        assert!(q.resume().is_empty());
        let calls = rec.calls.lock().unwrap().clone();
        let expected = [
            "launchctl print system/org.db",
            "launchctl bootout system/org.db",
            "launchctl print system/org.db",
            "launchctl print gui/501/com.ollama.ollama",
            "launchctl bootout gui/501/com.ollama.ollama",
            "launchctl print gui/501/com.ollama.ollama",
            "systemctl --user is-active --quiet worker.service",
            "systemctl --user stop worker.service",
            "systemctl --user is-active --quiet worker.service",
            "systemctl is-active --quiet api.service",
            "systemctl stop api.service",
            "systemctl is-active --quiet api.service",
            // Started again in start order.
            "systemctl start api.service",
            "systemctl is-active --quiet api.service",
            "systemctl --user start worker.service",
            "systemctl --user is-active --quiet worker.service",
            "launchctl bootstrap gui/501 /Users/me/Library/LaunchAgents/com.ollama.ollama.plist",
            "launchctl print gui/501/com.ollama.ollama",
        ];
        assert_eq!(&calls[..expected.len()], expected);
        assert!(
            calls[expected.len()]
                .starts_with("launchctl bootstrap system /Library/LaunchDaemons/org.db.plist")
        );
    }

    #[test]
    fn a_service_that_will_not_stop_restarts_the_ones_already_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("b-up");
        let a_up = dir.path().join("a-up");
        std::fs::write(&flag, "").unwrap();
        std::fs::write(&a_up, "").unwrap();
        let cmd = |up: &std::path::Path, stop: &str| Manager::Command {
            start: format!("touch {}", up.display()),
            stop: stop.to_string(),
            status: format!("test -e {}", up.display()),
        };
        let all = vec![
            svc("b", cmd(&flag, "true")), // "stops" but stays up
            svc("a", cmd(&a_up, &format!("rm {}", a_up.display()))),
        ];
        let names = vec!["a".to_string(), "b".to_string()];
        let e = quiesce(&all, &names, &SystemRunner, |_| {}).err().unwrap();
        assert!(
            matches!(e, ServiceError::DidNotStop { ref name, .. } if name == "b"),
            "{e}"
        );
        assert!(a_up.exists(), "a was stopped and not started again");
    }

    #[test]
    fn dropping_the_guard_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let up = dir.path().join("up");
        std::fs::write(&up, "").unwrap();
        let all = vec![svc(
            "a",
            Manager::Command {
                start: format!("touch {}", up.display()),
                stop: format!("rm {}", up.display()),
                status: format!("test -e {}", up.display()),
            },
        )];
        {
            let q = quiesce(&all, &["a".to_string()], &SystemRunner, |_| {}).unwrap();
            assert!(!up.exists());
            assert_eq!(q.stopped(), ["a"]);
        }
        assert!(up.exists());
    }

    /// Regression (issue 23): Ctrl-C during a service's `stop` printed "`sh -c ...`
    /// failed:" and nothing after it.
    #[test]
    fn regression_a_silent_failure_says_its_exit_code_or_signal() {
        let run = |script: &str| {
            let mut c = Command::new("sh");
            c.args(["-c", script]);
            run_captured(c, Duration::from_secs(10), false, None).unwrap()
        };
        let o = run("kill -INT $$");
        assert!(!o.success);
        assert_eq!(o.output, "killed by SIGINT (Ctrl-C)");
        assert_eq!(run("exit 3").output, "exit code 3, no output");
        assert_eq!(run("echo why; exit 3").output.trim(), "why");
    }
}
